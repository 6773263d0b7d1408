//! A kit for driving the engine without a kernel: synthetic ring-buffer items in the wire
//! format the eBPF programs write, and a [`Reports`] port that collects the lines as JSON values.
//! Used by the engine's own tests, the shell's tests and the benchmarks (feature `testkit`).

use std::{
    cell::RefCell,
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    rc::Rc,
};

use netlat_common::{Addrs, DropEvent, EventHeader, RetransmitEvent, SockStateEvent, kind};

use crate::{
    enrich::CtTupleLayout,
    event,
    facts::{NoEndpointRule, RealServer},
    pods::{PodAnswer, PodRef, PodView},
    report::{ConnectReport, DropReport, Reports, RetryReport},
    verdict::NodeView,
};

/// The x86-64 layout of `struct nf_conntrack_tuple` (pahole on 6.18), as the kernel's BTF
/// gives it.
pub const CT_TUPLE_X86_64: CtTupleLayout = CtTupleLayout {
    src_addr: 0,
    src_port: 16,
    src_l3num: 18,
    dst_addr: 20,
    dst_port: 36,
    dst_protonum: 38,
};

/// Node facts as a table, for verdicts and the engine without a node: every answer is what the
/// test put there (`None`: not known), and the prefetches the engine announces are kept.
#[derive(Debug, Default)]
pub struct FakeNode {
    pub masq: Option<(usize, usize)>,
    pub vxlan: Option<Vec<String>>,
    pub udp_timeout: Option<u64>,
    /// The real servers of the IPVS service at `ipvs_vip` (netns, VIP).
    pub ipvs: Option<Vec<RealServer>>,
    pub ipvs_vip: Option<(u32, SocketAddr)>,
    /// One known Service: (netns, destination, `namespace/name:port`).
    pub service: Option<(u32, SocketAddr, String)>,
    /// One kube-proxy no-endpoint rule: (netns of the rules, destination, the rule).
    pub no_endpoint: Option<(u32, SocketAddr, NoEndpointRule)>,
    /// One IPVS virtual service no rule names: (netns, VIP).
    pub ipvs_unnamed: Option<(u32, SocketAddr)>,
    /// Every (netns, tgid) the engine offered for prefetch.
    pub prefetched: Rc<RefCell<Vec<(u32, u32)>>>,
    /// A listener whose refusal counters rose, answered for its port and any window that
    /// contains `listen_at_ns` (the time of the rise).
    pub listen: Option<(crate::facts::ListenEvidence, u64)>,
    /// The node's namespace DNATs the connects of every other namespace.
    pub node_dnat: bool,
}

impl NodeView for FakeNode {
    fn masquerade(&self, _: u32) -> Option<(usize, usize)> {
        self.masq
    }
    fn vxlan_offloaded(&self, _: u32) -> Option<Vec<String>> {
        self.vxlan.clone()
    }
    fn udp_timeout_s(&self, _: u32) -> Option<u64> {
        self.udp_timeout
    }
    fn service(&self, netns: u32, dst: SocketAddr) -> Option<String> {
        self.service
            .as_ref()
            .filter(|(n, d, _)| *n == netns && *d == dst)
            .map(|(_, _, name)| name.clone())
    }
    fn unnamed_ipvs_service(&self, netns: u32, dst: SocketAddr) -> bool {
        self.ipvs_unnamed == Some((netns, dst))
    }
    fn no_endpoint_rule(&self, netns: u32, dst: SocketAddr) -> Option<NoEndpointRule> {
        self.no_endpoint
            .as_ref()
            .filter(|(n, d, _)| *n == netns && *d == dst)
            .map(|(_, _, rule)| rule.clone())
    }
    fn ipvs_real_servers(&self, netns: u32, vip: SocketAddr) -> Option<Vec<RealServer>> {
        (self.ipvs_vip == Some((netns, vip)))
            .then(|| self.ipvs.clone())
            .flatten()
    }
    fn node_dnat(&self, _: u32) -> bool {
        self.node_dnat
    }
    fn prefetch(&self, netns: u32, tgid: u32) {
        self.prefetched.borrow_mut().push((netns, tgid));
    }
    fn listen_overflow(
        &self,
        dst: SocketAddr,
        from_ns: u64,
        to_ns: u64,
    ) -> Option<crate::facts::ListenEvidence> {
        self.listen
            .as_ref()
            .filter(|(l, at)| l.listener.port() == dst.port() && (from_ns..=to_ns).contains(at))
            .map(|(l, _)| l.clone())
    }
}

/// Pods as a table: sandboxes by netns, containers by process, pods by IP; a netns listed in
/// `unknown` answers as a runtime that is down would. Prefetches are kept.
#[derive(Debug, Default)]
pub struct FakePods {
    pub by_netns: HashMap<u32, PodRef>,
    /// Container name of a process (tgid).
    pub containers: HashMap<u32, String>,
    pub by_ip: HashMap<IpAddr, PodRef>,
    pub unknown: HashMap<u32, String>,
    pub prefetched: Rc<RefCell<Vec<(u32, u32)>>>,
}

/// A pod reference for tests.
pub fn pod(namespace: &str, name: &str, container: Option<&str>) -> PodRef {
    PodRef {
        namespace: namespace.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        container: container.map(Into::into),
    }
}

impl PodView for FakePods {
    fn prefetch(&mut self, netns: u32, tgid: u32) {
        self.prefetched.borrow_mut().push((netns, tgid));
    }
    fn pod(&mut self, netns: u32, tgid: Option<u32>) -> PodAnswer {
        if let Some(why) = self.unknown.get(&netns) {
            return PodAnswer::Unknown(why.clone());
        }
        match self.by_netns.get(&netns) {
            Some(p) => PodAnswer::Pod(PodRef {
                container: tgid.and_then(|t| self.containers.get(&t).cloned()),
                ..p.clone()
            }),
            None => PodAnswer::NotAPod,
        }
    }
    fn pod_by_ip(&mut self, ip: IpAddr) -> Option<PodRef> {
        self.by_ip.get(&ip).cloned()
    }
}

/// A real server of an IPVS service.
pub fn real_server(addr: &str, weight: u32) -> RealServer {
    RealServer {
        addr: addr.parse().expect("a socket address"),
        weight,
        active_conns: 0,
        inactive_conns: 0,
    }
}

/// One second in the kernel's nanoseconds.
pub const S: u64 = 1_000_000_000;

/// Collects every report as the JSON value its line would print.
#[derive(Debug, Default)]
pub struct Collect {
    pub lines: Vec<serde_json::Value>,
    /// Progress lines, apart: most tests are about the lines at an attempt's end.
    pub retries: Vec<serde_json::Value>,
}

impl Collect {
    fn push(&mut self, line: &impl serde::Serialize) -> io::Result<()> {
        self.lines
            .push(serde_json::to_value(line).map_err(io::Error::other)?);
        Ok(())
    }
}

impl Reports for Collect {
    fn connect(&mut self, line: &ConnectReport) -> io::Result<()> {
        self.push(line)
    }
    fn drop_line(&mut self, line: &DropReport) -> io::Result<()> {
        self.push(line)
    }
    fn retry(&mut self, line: &RetryReport) -> io::Result<()> {
        self.retries
            .push(serde_json::to_value(line).map_err(io::Error::other)?);
        Ok(())
    }
}

/// Appends the bytes of a wire struct to `buf`, as the kernel writes it into the ring buffer
/// (into a reused buffer, so a benchmark's stream of millions allocates nothing).
pub fn put<T: Copy>(buf: &mut Vec<u8>, v: &T) {
    buf.extend_from_slice(event::bytes_of(v));
}

/// IPv4 addresses `src`:`sport` → `dst`:`dport`.
pub fn v4(sport: u16, dport: u16, src: [u8; 4], dst: [u8; 4]) -> Addrs {
    let mut a = Addrs {
        family: 2,
        sport,
        dport,
        ..Addrs::default()
    };
    a.saddr[..4].copy_from_slice(&src);
    a.daddr[..4].copy_from_slice(&dst);
    a
}

/// An IPv4 header (20 bytes, no options) for `proto`, `total` bytes long, at the start of `out`.
pub fn ipv4(out: &mut [u8], proto: u8, total: u16, src: [u8; 4], dst: [u8; 4]) {
    out[..20].copy_from_slice(&[
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    out[2..4].copy_from_slice(&total.to_be_bytes());
    out[12..16].copy_from_slice(&src);
    out[16..20].copy_from_slice(&dst);
}

/// A 20-byte TCP header with only SYN set, at the start of `out`.
pub fn tcp_syn(out: &mut [u8], sport: u16, dport: u16) {
    out[..20].fill(0);
    out[..2].copy_from_slice(&sport.to_be_bytes());
    out[2..4].copy_from_slice(&dport.to_be_bytes());
    out[12] = 0x50;
    out[13] = 0x02;
}

/// The kit's client and server.
pub const CLIENT: [u8; 4] = [10, 231, 0, 1];
pub const SERVER: [u8; 4] = [10, 231, 0, 2];

/// The kit's one flow: 10.231.0.1:`sport` → 10.231.0.2:8080.
pub fn addrs(sport: u16) -> Addrs {
    v4(sport, 8080, CLIENT, SERVER)
}

/// A socket state change of the kit's socket (netns 111, pid 9, `python3`).
pub fn state(ts: u64, old: u32, new: u32, sport: u16) -> Vec<u8> {
    event::encode(&SockStateEvent {
        header: EventHeader {
            kind: kind::SOCK_STATE,
            cpu: 0,
            ts_ns: ts,
        },
        skaddr: 0xabc,
        netns: 111,
        tgid: 9,
        oldstate: old,
        newstate: new,
        addrs: addrs(sport),
        comm: *b"python3\0\0\0\0\0\0\0\0\0",
        start_ns: 0,
        flags: 0,
        _pad: 0,
    })
}

/// A retransmit of the kit's socket.
pub fn retrans(ts: u64, sport: u16) -> Vec<u8> {
    event::encode(&RetransmitEvent {
        header: EventHeader {
            kind: kind::RETRANSMIT,
            cpu: 0,
            ts_ns: ts,
        },
        skaddr: 0xabc,
        netns: 111,
        state: 2,
        addrs: addrs(sport),
        start_ns: 0,
    })
}

/// An IPv4 TCP SYN dropped with reason 12 at `location`.
pub fn syn_drop(ts: u64, sport: u16, location: u64) -> Vec<u8> {
    let mut d = DropEvent {
        header: EventHeader {
            kind: kind::DROP,
            cpu: 1,
            ts_ns: ts,
        },
        location,
        netns: 222,
        ifindex: 2,
        reason: 12,
        len: 60,
        protocol: 0x0800,
        cap_len: 40,
        ..DropEvent::default()
    };
    ipv4(&mut d.data, 6, 60, CLIENT, SERVER);
    tcp_syn(&mut d.data[20..], sport, 8080);
    event::encode(&d)
}
