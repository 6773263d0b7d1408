//! The kernel's attempt table (`ATTEMPTS`) of a running netlat, read and written with bpftool:
//! tests put in it the entries the kernel leaves when no program sees an attempt's end (the
//! kernel skips a tracing program that fires while the same one runs on that CPU), which no
//! lab can provoke on demand.

use std::process::Stdio;

use crate::{ChildGuard, Netns, tcp_server, veth};

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`, which the attempt table keeps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) },
        0
    );
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The id of the `ATTEMPTS` map the process `pid` holds open.
pub fn attempts_map_of(pid: u32) -> u64 {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo");
    let ids = dir.flatten().filter_map(|e| {
        let text = std::fs::read_to_string(e.path()).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    for id in ids {
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "show", "id", &id.to_string()])
            .output()
            .expect("run bpftool (apt package bpftool)");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["name"] == "ATTEMPTS" {
            return id;
        }
    }
    panic!("netlat (pid {pid}) holds no ATTEMPTS map");
}

/// Bytes as `bpftool map update` takes them.
fn hex_words(b: &[u8]) -> Vec<String> {
    b.iter().map(|x| format!("0x{x:02x}")).collect()
}

/// A never-shipped attempt's entry (`PendingAttempt`, 80 bytes) as the kernel writes it: started
/// at monotonic `start_ns` in netns `netns` by `comm`, from `src` (source port not chosen yet,
/// as at every start) to `dst`:`dport`, IPv4.
pub fn entry(
    start_ns: u64,
    netns: u64,
    src: [u8; 4],
    dst: [u8; 4],
    dport: u16,
    comm: &str,
) -> Vec<u8> {
    let mut value = Vec::with_capacity(80);
    value.extend_from_slice(&start_ns.to_ne_bytes());
    value.extend_from_slice(&u32::try_from(netns).unwrap_or(0).to_ne_bytes());
    value.extend_from_slice(&std::process::id().to_ne_bytes()); // tgid
    value.extend_from_slice(&0u32.to_ne_bytes()); // cpu
    value.extend_from_slice(&0u32.to_ne_bytes()); // flags: not shipped
    let mut saddr = [0u8; 16];
    saddr[..4].copy_from_slice(&src);
    let mut daddr = [0u8; 16];
    daddr[..4].copy_from_slice(&dst);
    value.extend_from_slice(&saddr);
    value.extend_from_slice(&daddr);
    value.extend_from_slice(&0u16.to_ne_bytes()); // sport: not chosen at the start
    value.extend_from_slice(&dport.to_ne_bytes());
    value.extend_from_slice(&2u16.to_ne_bytes()); // AF_INET
    value.extend_from_slice(&0u16.to_ne_bytes());
    let mut name = [0u8; 16];
    name[..comm.len().min(15)].copy_from_slice(&comm.as_bytes()[..comm.len().min(15)]);
    value.extend_from_slice(&name);
    assert_eq!(value.len(), 80, "PendingAttempt is 80 bytes");
    value
}

/// A kernel address no live socket has (the top of the direct map, 8-aligned), `n`-th of them.
pub fn fake_socket(n: u64) -> u64 {
    0xffff_8880_dead_bee8 + 8 * n
}

/// Write `value` under socket address `skaddr` into the map `map`.
pub fn insert(map: u64, skaddr: u64, value: &[u8]) {
    let mut args = vec![
        "map".to_owned(),
        "update".to_owned(),
        "id".to_owned(),
        map.to_string(),
        "key".to_owned(),
    ];
    args.extend(hex_words(&skaddr.to_ne_bytes()));
    args.push("value".to_owned());
    args.extend(hex_words(value));
    let out = std::process::Command::new("bpftool")
        .args(&args)
        .output()
        .expect("run bpftool");
    assert!(out.status.success(), "bpftool map update: {out:?}");
}

/// Whether the map `map` holds an entry for socket address `skaddr` (bpftool prints `null`
/// for a missing key, and some versions also fail).
pub fn holds(map: u64, skaddr: u64) -> bool {
    let mut args = vec![
        "-j".to_owned(),
        "map".to_owned(),
        "lookup".to_owned(),
        "id".to_owned(),
        map.to_string(),
        "key".to_owned(),
    ];
    args.extend(hex_words(&skaddr.to_ne_bytes()));
    let out = std::process::Command::new("bpftool")
        .args(&args)
        .output()
        .expect("run bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    out.status.success() && v.is_object()
}

/// The port whose SYNs a [`WaitLab`]'s server drops.
pub const WAIT_PORT: u16 = 8090;

/// Two namespaces on a veth, client `10.232.<block>.1` and server `.2`: the server answers on
/// 8080 and drops every SYN to [`WAIT_PORT`], so connects there stay in SYN_SENT.
pub struct WaitLab {
    pub client: Netns,
    pub server: Netns,
    /// `[10, 232, block, 1]` and `.2`.
    pub client_ip: [u8; 4],
    pub server_ip: [u8; 4],
    _srv: ChildGuard,
}

impl WaitLab {
    /// `tag`: one letter, unique among the tests (names carry it and the PID).
    pub fn new(tag: &str, block: u8) -> WaitLab {
        let client = Netns::new(&format!("{tag}a"));
        let server = Netns::new(&format!("{tag}b"));
        let pid = std::process::id();
        veth(
            &client,
            &format!("n{tag}{pid}a"),
            &format!("10.232.{block}.1/24"),
            &server,
            &format!("n{tag}{pid}b"),
            &format!("10.232.{block}.2/24"),
        );
        server.nft(&format!(
            "table inet labwait {{\n  chain in {{\n    type filter hook input priority 0; \
             policy accept;\n    tcp dport {WAIT_PORT} drop\n  }}\n}}\n"
        ));
        let srv = tcp_server(&server, &[8080]);
        WaitLab {
            client,
            server,
            client_ip: [10, 232, block, 1],
            server_ip: [10, 232, block, 2],
            _srv: srv,
        }
    }

    /// `ip:port` of the server.
    pub fn server_at(&self, port: u16) -> String {
        let [a, b, c, d] = self.server_ip;
        format!("{a}.{b}.{c}.{d}:{port}")
    }

    /// A connect from the client to [`WAIT_PORT`] that waits (up to 30 s) until killed.
    pub fn waiting_connect(&self) -> ChildGuard {
        let [a, b, c, d] = self.server_ip;
        self.client
            .cmd(&[
                "python3",
                "-c",
                &format!(
                    "import socket\n\
                     try: socket.create_connection(('{a}.{b}.{c}.{d}',{WAIT_PORT}),timeout=30)\n\
                     except Exception: pass\n"
                ),
            ])
            .stdout(Stdio::null())
            .spawn()
            .map(ChildGuard)
            .expect("start a waiting connect")
    }

    /// A never-shipped entry of the client's namespace (see [`entry`]) to the server's `port`.
    pub fn entry(&self, start_ns: u64, port: u16, comm: &str) -> Vec<u8> {
        entry(
            start_ns,
            self.client.inode(),
            self.client_ip,
            self.server_ip,
            port,
            comm,
        )
    }
}

/// The bit of an entry's flags saying its start was shipped (`attempt_flag::SHIPPED`).
pub const SHIPPED: u32 = 1 << 31;

/// Byte offsets in an entry: start, netns, flags, destination address and port.
const START: usize = 0;
const NETNS: usize = 8;
const FLAGS: usize = 20;
const DADDR: usize = 40;
const DPORT: usize = 58;

fn field<const N: usize>(value: &[u8], at: usize) -> [u8; N] {
    value[at..at + N].try_into().expect("an 80-byte entry")
}

/// An entry's start (monotonic ns).
pub fn start_of(value: &[u8]) -> u64 {
    u64::from_ne_bytes(field(value, START))
}

/// An entry's flags.
pub fn flags_of(value: &[u8]) -> u32 {
    u32::from_ne_bytes(field(value, FLAGS))
}

/// `value` with its start set to `start_ns`.
pub fn with_start(value: &[u8], start_ns: u64) -> Vec<u8> {
    let mut v = value.to_vec();
    v[START..START + 8].copy_from_slice(&start_ns.to_ne_bytes());
    v
}

/// `value` with its destination port set to `port`.
pub fn with_dport(value: &[u8], port: u16) -> Vec<u8> {
    let mut v = value.to_vec();
    v[DPORT..DPORT + 2].copy_from_slice(&port.to_ne_bytes());
    v
}

/// The entries of map `map` for attempts from netns `netns` to `dst`:`dport`, as (socket
/// address, value).
pub fn entries_to(map: u64, netns: u64, dst: [u8; 4], dport: u16) -> Vec<(u64, Vec<u8>)> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "id", &map.to_string()])
        .output()
        .expect("run bpftool");
    assert!(out.status.success(), "bpftool map dump: {out:?}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let bytes = |v: &serde_json::Value| -> Vec<u8> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
            .collect()
    };
    rows.iter()
        .map(|r| (bytes(&r["key"]), bytes(&r["value"])))
        .filter(|(k, v)| {
            k.len() == 8
                && v.len() == 80
                && u32::from_ne_bytes(field(v, NETNS)) == u32::try_from(netns).unwrap_or(0)
                && field::<4>(v, DADDR) == dst
                && u16::from_ne_bytes(field(v, DPORT)) == dport
        })
        .map(|(k, v)| (u64::from_ne_bytes(field(&k, 0)), v))
        .collect()
}
