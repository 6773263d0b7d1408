//! What netlat knows about a node (kernel, sysctls, kube-proxy, NAT rules, VXLAN devices,
//! conntrack counters, IPVS services), as plain data: the shell gathers it, the catalog reads it
//! through [`NodeView`], `doctor` prints it.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::Serialize;

use crate::verdict::NodeView;

/// What netlat knows about the node before it watches anything.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NodeFacts {
    /// The running kernel (uname release, parsed).
    pub kernel: KernelVersion,
    /// The values of the sysctls the shell reads, trimmed; `None` when this kernel (or its loaded modules) has no
    /// such sysctl, e.g. `net.ipv4.vs.*` without ip_vs.
    pub sysctls: BTreeMap<String, Option<String>>,
    /// Which kube-proxy mode programs this namespace, and why netlat thinks so.
    pub kube_proxy: KubeProxy,
    /// Every MASQUERADE/SNAT rule, from nftables (native and iptables-nft) and iptables-legacy.
    pub nat_rules: Vec<NatRule>,
    /// Every VXLAN device.
    pub vxlan: Vec<VxlanDev>,
    /// Evidence that Calico runs here (empty = none seen).
    pub calico: Vec<String>,
    /// Per-CPU conntrack counters; `None` when nf_conntrack is not loaded or the file is
    /// unreadable (then a note says why).
    pub conntrack: Option<Vec<CtCpuStats>>,
    /// IPVS virtual services with their real servers (empty when IPVS is not loaded).
    pub ipvs: Vec<IpvsService>,
    /// One line per fact that could not be read, saying what and why.
    pub notes: Vec<String>,
}

/// The kernel release and its leading version numbers.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct KernelVersion {
    /// `uname -r`, as is (e.g. `6.1.0-28-amd64`).
    pub release: String,
    /// First number of the release.
    pub major: u32,
    /// Second number of the release.
    pub minor: u32,
    /// Third number of the release (0 when the release has only two).
    pub patch: u32,
}

impl KernelVersion {
    /// Parses a uname release: `MAJOR.MINOR[.PATCH]` followed by anything (`-28-amd64`, `+`).
    pub fn parse(release: &str) -> Result<Self, KernelReleaseError> {
        let bad = || KernelReleaseError {
            release: release.to_string(),
        };
        let numeric = release
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .next()
            .unwrap_or("");
        let mut parts = numeric.split('.');
        let mut next = |required: bool| -> Result<u32, KernelReleaseError> {
            match parts.next() {
                Some(p) if !p.is_empty() => p.parse().map_err(|_| bad()),
                _ if required => Err(bad()),
                _ => Ok(0),
            }
        };
        Ok(Self {
            release: release.to_string(),
            major: next(true)?,
            minor: next(true)?,
            patch: next(false)?,
        })
    }

    /// Whether this kernel's version is `major.minor.patch` or newer. Backports are invisible
    /// here: distribution kernels often carry fixes from later versions.
    pub fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        (self.major, self.minor, self.patch) >= (major, minor, patch)
    }
}

/// The kube-proxy mode seen in the namespace.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KubeProxyMode {
    /// No trace of kube-proxy.
    #[default]
    None,
    /// `KUBE-SERVICES` in an iptables nat table (legacy or nft).
    Iptables,
    /// The `kube-ipvs0` device.
    Ipvs,
    /// An nftables table named `kube-proxy`.
    Nftables,
}

/// kube-proxy's mode and the evidence for it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct KubeProxy {
    /// The mode, chosen as IPVS > nftables > iptables when traces of several are present
    /// (IPVS mode also keeps iptables chains, and a mode switch can leave the old one's behind).
    pub mode: KubeProxyMode,
    /// What was seen, one item per trace (device, table, chain, IPVS services).
    pub evidence: Vec<String>,
    /// IPVS virtual services in this namespace; `None` when IPVS is not loaded or unreadable.
    pub ipvs_services: Option<u32>,
    /// Service ports kube-proxy's iptables- or nftables-mode rules name here (what connect
    /// lines can be labelled with); `None` when the rules could not be read.
    pub services: Option<usize>,
    /// kube-proxy's own no-endpoint rules (what `service-no-endpoints` needs); empty when
    /// none or unreadable.
    pub no_endpoint_rules: Vec<NoEndpointRule>,
}

/// What kube-proxy does with new connects to a Service port it has no endpoint for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoEndpointAction {
    /// Silently dropped: the client retries its SYN (1 s, 2 s, ...) until it gives up.
    Drop,
    /// Rejected (ICMP port unreachable): the connect fails at once.
    Reject,
}

/// Which of kube-proxy's no-endpoint cases a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoEndpointWhy {
    /// The Service has no ready endpoint at all (kube-proxy rejects).
    NoEndpoints,
    /// internalTrafficPolicy=Local and no ready endpoint on this node (ClusterIP traffic).
    NoLocalInternal,
    /// externalTrafficPolicy=Local and no ready endpoint on this node (external IP,
    /// LoadBalancer IP or NodePort traffic).
    NoLocalExternal,
    /// Traffic policy Local and no ready endpoint on this node, for an address whose kind the
    /// rule does not tell (nftables mode keeps internal and external in one map).
    NoLocal,
}

impl NoEndpointWhy {
    /// Why, in words, for a verdict's evidence.
    pub fn text(self) -> &'static str {
        match self {
            Self::NoEndpoints => "the Service has no ready endpoint",
            Self::NoLocalInternal => {
                "internalTrafficPolicy=Local and no ready endpoint of the Service on this node"
            }
            Self::NoLocalExternal => {
                "externalTrafficPolicy=Local and no ready endpoint of the Service on this node"
            }
            Self::NoLocal => {
                "the Service's traffic policy is Local (internalTrafficPolicy for its ClusterIP, \
                 externalTrafficPolicy for external IPs, LoadBalancer IPs and NodePorts) and no \
                 ready endpoint of it is on this node"
            }
        }
    }
}

/// One of kube-proxy's no-endpoint rules: new connects to `dst` (any local address when
/// `None`: a NodePort) on `port` go nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NoEndpointRule {
    /// `namespace/name:port` (`namespace/name` for an unnamed port).
    pub service: String,
    pub action: NoEndpointAction,
    pub why: NoEndpointWhy,
    /// Where the rule is: `nftables ip kube-proxy map no-endpoint-services`,
    /// `iptables-nft filter KUBE-EXTERNAL-SERVICES`, ...
    pub rule: String,
}

/// What a NAT rule does to the source.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NatKind {
    /// MASQUERADE / `masquerade`: the outgoing interface's address.
    #[default]
    Masquerade,
    /// SNAT / `snat`: a given address.
    Snat,
}

/// One MASQUERADE or SNAT rule.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NatRule {
    /// Where the rule lives: `nftables` (native expressions), `iptables-nft` (an xtables target
    /// inside the nft ruleset), `iptables-legacy` or `ip6tables-legacy`.
    pub backend: String,
    /// The table: `FAMILY NAME` for nftables backends (`ip nat`, `inet kube-proxy`), the xtables
    /// table name (`nat`) for the legacy ones.
    pub table: String,
    /// The chain holding the rule.
    pub chain: String,
    /// Masquerade or SNAT.
    pub kind: NatKind,
    /// `NF_NAT_RANGE_PROTO_RANDOM_FULLY` (`--random-fully`, `fully-random`): the mitigation for
    /// the SNAT port clash (issue B).
    pub fully_random: bool,
    /// `NF_NAT_RANGE_PROTO_RANDOM` (`--random`, `random`).
    pub random: bool,
    /// The SNAT target `ADDR[-ADDR][:PORT[-PORT]]`, or masquerade's port range `:PORT[-PORT]`.
    pub to: Option<String>,
    /// The rule in its backend's own syntax (nft for nftables backends, iptables-save otherwise).
    pub text: String,
}

/// One VXLAN device and the settings issue C depends on.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct VxlanDev {
    /// Interface name (`vxlan.calico`, `flannel.1`, ...).
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// VXLAN network identifier.
    pub vni: Option<u32>,
    /// Destination UDP port of the outer packets (4789, 8472, ...).
    pub port: Option<u16>,
    /// Whether outer IPv4 UDP checksums are computed (`udpcsum`), as the kernel reports it.
    pub udp_csum: Option<bool>,
    /// Whether the ethtool feature `tx-checksum-ip-generic` is active (tx checksum offload on).
    pub tx_csum_offload: Option<bool>,
}

/// One CPU's line of /proc/net/stat/nf_conntrack.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CtCpuStats {
    /// CPU number (the file's rows follow the possible CPUs in order).
    pub cpu: u32,
    /// Lookups that found an entry.
    pub found: u64,
    /// Packets conntrack could not track.
    pub invalid: u64,
    /// Entries inserted.
    pub insert: u64,
    /// Entries that could not be inserted (clash on confirm, and on 6.x also `chaintoolong`).
    pub insert_failed: u64,
    /// Packets dropped for conntrack's sake (clash, full table).
    pub drop: u64,
    /// Entries evicted early because the table was full.
    pub early_drop: u64,
    /// `icmp_error`: ICMP errors that did not match an entry.
    pub error: u64,
    /// Hash lookups restarted because of a concurrent resize (0 where the column is missing).
    pub search_restart: u64,
    /// `clashres`: clashes resolved instead of dropped (UDP); kernels since 5.9 only.
    pub clash_resolve: Option<u64>,
    /// `chainlength`: insertions refused because a hash chain grew too long; 5.17+ only.
    pub chaintoolong: Option<u64>,
}

/// The uname release does not start with `MAJOR.MINOR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel release {release:?} does not start with MAJOR.MINOR")]
pub struct KernelReleaseError {
    pub release: String,
}

/// One IPVS virtual service and its real servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpvsService {
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// IP protocol (6 TCP, 17 UDP, 132 SCTP); 0 for a firewall-mark service.
    pub protocol: u16,
    /// VIP:port; `None` for a firewall-mark service.
    pub vip: Option<SocketAddr>,
    /// Firewall mark of a mark-based service (0 otherwise).
    pub fwmark: u32,
    pub real_servers: Vec<RealServer>,
}

/// One real server (IPVS destination) of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RealServer {
    pub addr: SocketAddr,
    /// 0 = no new connections (kube-proxy's graceful termination).
    pub weight: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
}

/// A listening socket in a namespace of this node whose namespace counted refused SYNs
/// (`TcpExt: ListenOverflows`/`ListenDrops`) while a connect to it waited. On current kernels a
/// SYN refused for a full accept queue is consumed in `tcp_conn_request`, not freed with a drop
/// reason, so these counters are the only trace of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ListenEvidence {
    pub netns: u32,
    /// The listener's bound address (`0.0.0.0:port` for a wildcard bind).
    pub listener: SocketAddr,
    /// How much `ListenOverflows` and `ListenDrops` rose in the attempt's window.
    pub overflows: u64,
    pub drops: u64,
    /// Connections waiting in the listener's accept queue when the rise was read (the backlog
    /// itself is not in procfs).
    pub accept_queue: Option<u32>,
    /// A process of that namespace (`comm[pid]`), when one is known.
    pub process: Option<String>,
}

/// The sysctl holding the unreplied-UDP conntrack timeout.
pub const UDP_TIMEOUT: &str = "net.netfilter.nf_conntrack_udp_timeout";

/// VXLAN devices where the outer UDP checksum is computed and tx checksum offload is on: the
/// combination that a second NAT of the tunnel packet breaks.
pub fn offloaded_vxlan(f: &NodeFacts) -> Vec<String> {
    f.vxlan
        .iter()
        .filter(|v| v.udp_csum == Some(true) && v.tx_csum_offload == Some(true))
        .map(|v| v.name.clone())
        .collect()
}

pub fn sysctl<'a>(f: &'a NodeFacts, name: &str) -> Option<&'a str> {
    f.sysctls.get(name).and_then(|v| v.as_deref())
}

impl NodeView for NodeFacts {
    fn masquerade(&self, _: u32) -> Option<(usize, usize)> {
        let n = self.nat_rules.len();
        Some((n, self.nat_rules.iter().filter(|r| !r.fully_random).count()))
    }
    fn vxlan_offloaded(&self, _: u32) -> Option<Vec<String>> {
        Some(offloaded_vxlan(self))
    }
    fn udp_timeout_s(&self, _: u32) -> Option<u64> {
        sysctl(self, UDP_TIMEOUT).and_then(|v| v.parse().ok())
    }
    fn ipvs_real_servers(&self, _: u32, vip: SocketAddr) -> Option<Vec<RealServer>> {
        tcp_service(&self.ipvs, vip)
    }
}

/// The real servers of the TCP virtual service at `vip` (IPPROTO_TCP = 6).
pub fn tcp_service(services: &[IpvsService], vip: SocketAddr) -> Option<Vec<RealServer>> {
    services
        .iter()
        .find(|s| s.protocol == 6 && s.vip == Some(vip))
        .map(|s| s.real_servers.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::real_server as rs;

    fn svc(protocol: u16, vip: &str, servers: Vec<RealServer>) -> IpvsService {
        IpvsService {
            family: 2,
            protocol,
            vip: Some(vip.parse().unwrap()),
            fwmark: 0,
            real_servers: servers,
        }
    }

    #[test]
    fn ipvs_real_servers_of_the_tcp_service_at_the_vip() {
        let f = NodeFacts {
            ipvs: vec![
                svc(17, "10.96.0.10:53", vec![rs("10.0.0.5:53", 0)]),
                svc(6, "10.96.0.10:53", vec![rs("10.0.0.5:53", 1)]),
                svc(6, "10.96.0.1:443", vec![rs("10.0.0.9:6443", 0)]),
            ],
            ..NodeFacts::default()
        };
        let vip: SocketAddr = "10.96.0.10:53".parse().unwrap();
        // The TCP service, not the UDP one at the same address.
        assert_eq!(
            f.ipvs_real_servers(0, vip),
            Some(vec![rs("10.0.0.5:53", 1)])
        );
        assert_eq!(
            f.ipvs_real_servers(0, "10.96.0.2:80".parse().unwrap()),
            None
        );
    }
}
