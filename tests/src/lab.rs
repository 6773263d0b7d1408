//! Lab topologies for the known issues netlat names: B, the SNAT source-port clash (conntrack
//! insertion race behind a masquerade), and C, the VXLAN outer-UDP checksum broken by the double
//! NAT of an encapsulated packet. Both follow the scripts in the research notes that were run on
//! this kernel (`b_setup.sh`, `race.c`, `c_matrix.sh`).
//!
//! Every namespace, process and temporary file is removed on drop, also when a test panics.
//! Names carry the PID (through [`Netns::new`]) and a per-lab number, so labs built by parallel
//! tests or parallel runs never collide; each lab also gets its own address block.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::Stdio,
    sync::atomic::{AtomicU8, Ordering},
};

use crate::{ChildGuard, Netns, TempDir, connect_times, python_server, sh, tcp_server, veth};

/// A connection attempt at least this slow counts as slow (one lost SYN costs the 1 s RTO).
pub const SLOW_S: f64 = 0.9;

/// Per-lab number: keeps names and address blocks of labs in one test binary apart.
static NEXT_LAB: AtomicU8 = AtomicU8::new(0);

fn next_lab() -> u8 {
    NEXT_LAB.fetch_add(1, Ordering::Relaxed) % 100
}

/// An interface name holding the PID: `n<pid>-<lab><role>`, at most 15 bytes.
fn ifname(lab: u8, role: &str) -> String {
    let name = format!("n{}-{lab}{role}", std::process::id());
    assert!(name.len() <= 15, "interface name {name} too long");
    name
}

/// Sum of the `column` of `/proc/net/stat/nf_conntrack` over CPUs (hex rows, one per CPU), as
/// seen inside `ns`.
pub fn conntrack_stat(ns: &Netns, column: &str) -> u64 {
    let out = ns.run(&["cat", "/proc/net/stat/nf_conntrack"]);
    sum_stat_column(&String::from_utf8_lossy(&out.stdout), column)
        .unwrap_or_else(|| panic!("no {column} column in /proc/net/stat/nf_conntrack"))
}

fn sum_stat_column(text: &str, column: &str) -> Option<u64> {
    let mut rows = text.lines();
    let col = rows.next()?.split_whitespace().position(|c| c == column)?;
    Some(
        rows.filter_map(|r| r.split_whitespace().nth(col))
            .filter_map(|v| u64::from_str_radix(v, 16).ok())
            .sum(),
    )
}

/// A counter of `/proc/net/snmp` (`proto` is the row prefix without the colon, e.g. `Udp`), as
/// seen inside `ns`.
pub fn snmp_counter(ns: &Netns, proto: &str, column: &str) -> u64 {
    let out = ns.run(&["cat", "/proc/net/snmp"]);
    snmp_value(&String::from_utf8_lossy(&out.stdout), proto, column)
        .unwrap_or_else(|| panic!("no {proto}: {column} in /proc/net/snmp"))
}

fn snmp_value(text: &str, proto: &str, column: &str) -> Option<u64> {
    let prefix = format!("{proto}:");
    let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
    let names = rows.next()?;
    let values = rows.next()?;
    let col = names.split_whitespace().position(|c| c == column)?;
    values.split_whitespace().nth(col)?.parse().ok()
}

/// The verdict id of each connect line (`"none"` when netlat gave none).
pub fn verdicts(lines: &[&serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["verdict"]["issue"].as_str().unwrap_or("none").to_string())
        .collect()
}

/// A TCP accept-and-close loop on `ip:port` with a listen backlog large enough for a race round
/// (a full accept queue drops SYNs, which would look like the issue under test).
fn accept_server(ns: &Netns, ip: &str, port: u16) -> ChildGuard {
    let script = format!(
        "import socket\n\
         s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('{ip}',{port})); s.listen(4096)\n\
         print('ready',flush=True)\n\
         while True:\n\
         \x20 c,_=s.accept(); c.close()\n"
    );
    python_server(ns, &script)
}

// ---------------------------------------------------------------------------------------------
// B: SNAT port clash
// ---------------------------------------------------------------------------------------------

/// Race client (after the research `race.c`): two copies, one per pod, meet at a barrier in a
/// shared file before each connect, so both send their SYN from the same source port at the same
/// instant. Connects are non-blocking; completions are harvested with epoll between rounds and
/// after the last one. Prints `<sport> <seconds>` or `<sport> fail` per connect.
const RACE_C: &str = r#"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static int ep, left;
static double *t1;
static int *err;

static void harvest(int timeout_ms) {
  struct epoll_event ev[64];
  int k = epoll_wait(ep, ev, 64, timeout_ms);
  for (int j = 0; j < k; j++) {
    int i = (int)(ev[j].data.u64 & 0xffffffffu), fd = (int)(ev[j].data.u64 >> 32), e = 0;
    socklen_t l = sizeof e;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l);
    t1[i] = now();
    err[i] = e;
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    left--;
  }
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: race SHM DST DPORT BASE N WAIT_S\n");
    return 2;
  }
  const char *dst = argv[2];
  int dport = atoi(argv[3]), base = atoi(argv[4]), n = atoi(argv[5]);
  double wait_s = atof(argv[6]);
  struct rlimit rl = {n + 64, n + 64};
  setrlimit(RLIMIT_NOFILE, &rl);
  int fd = open(argv[1], O_RDWR);
  if (fd < 0) { perror("open"); return 2; }
  _Atomic long *cnt = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (cnt == MAP_FAILED) { perror("mmap"); return 2; }
  struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons(dport)};
  inet_pton(AF_INET, dst, &d.sin_addr);
  ep = epoll_create1(0);
  int *s = calloc(n, sizeof *s);
  double *t0 = calloc(n, sizeof *t0);
  t1 = calloc(n, sizeof *t1);
  err = calloc(n, sizeof *err);
  left = n;
  for (int i = 0; i < n; i++) {
    s[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s[i] < 0) { perror("socket"); return 2; }
    int one = 1;
    struct linger lg = {1, 0};
    setsockopt(s[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(s[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons(base + i)};
    if (bind(s[i], (void *)&src, sizeof src) < 0) { perror("bind"); return 2; }
    atomic_fetch_add(cnt, 1);
    double spin = now();
    while (atomic_load(cnt) < 2L * (i + 1))
      if (now() - spin > 10) { fprintf(stderr, "barrier timeout\n"); return 3; }
    t0[i] = now();
    if (connect(s[i], (void *)&d, sizeof d) == 0) {
      t1[i] = now();
      left--;
    } else if (errno != EINPROGRESS) {
      t1[i] = now();
      err[i] = errno;
      left--;
    } else {
      struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = ((unsigned long long)s[i] << 32) | (unsigned)i};
      epoll_ctl(ep, EPOLL_CTL_ADD, s[i], &ev);
    }
    harvest(0);
  }
  double end = now() + wait_s;
  while (left > 0 && now() < end) harvest(50);
  for (int i = 0; i < n; i++) {
    if (t1[i] > 0 && !err[i]) printf("%d %.6f\n", base + i, t1[i] - t0[i]);
    else printf("%d fail\n", base + i);
  }
  return 0;
}
"#;

/// One connect of a race round.
#[derive(Debug, Clone, PartialEq)]
pub struct RaceConnect {
    /// 1 or 2.
    pub pod: u8,
    pub sport: u16,
    /// Time to established; `None` when it failed or was still pending at the round's end.
    pub seconds: Option<f64>,
}

impl RaceConnect {
    /// Slow (≥ [`SLOW_S`]) or never established.
    pub fn is_slow(&self) -> bool {
        self.seconds.is_none_or(|s| s >= SLOW_S)
    }
}

#[derive(Debug, Clone)]
pub struct RaceResult {
    pub connects: Vec<RaceConnect>,
    /// Connects that were slow (≥ [`SLOW_S`]) or never established.
    pub slow: usize,
    /// Router conntrack `insert_failed` delta over the round (all CPUs).
    pub insert_failed: u64,
    /// Router conntrack `drop` delta over the round (all CPUs).
    pub drop: u64,
    /// The pods' `Tcp RetransSegs` delta over the round: the kernel's own count of the
    /// retransmits netlat should have seen.
    pub retrans_segs: u64,
}

impl RaceResult {
    pub fn slow_connects(&self) -> impl Iterator<Item = &RaceConnect> {
        self.connects.iter().filter(|c| c.is_slow())
    }
}

/// Outcome of [`SnatLab::single_port_snat`].
#[derive(Debug, Clone)]
pub struct SinglePortResult {
    /// pod1's connect, held open (seconds; `None` if it failed).
    pub hold: Option<f64>,
    /// pod2's connect while pod1 holds the only NAT port (`None`: timed out).
    pub clash: Option<f64>,
    /// pod2's connect timeout, seconds.
    pub clash_timeout_s: f64,
    pub insert_failed: u64,
    pub drop: u64,
}

/// Issue B: pods `pod1`/`pod2` on a bridge in `router`, which masquerades out an uplink veth to
/// `server` (accept loop on port [`SnatLab::PORT`]). `fully_random` picks `masquerade
/// fully-random` (the fix) instead of plain `masquerade`.
pub struct SnatLab {
    // Processes first: fields drop in order, so the server dies before its namespace.
    _server: ChildGuard,
    pub pods: [Netns; 2],
    pub router: Netns,
    pub server: Netns,
    /// Pod addresses (pod1, pod2).
    pub pod_ips: [String; 2],
    /// The router's uplink address (the masquerade source).
    pub router_ip: String,
    pub server_ip: String,
    uplink: String,
    pod_net: String,
    race_bin: PathBuf,
    dir: TempDir,
}

impl SnatLab {
    pub const PORT: u16 = 8080;

    pub fn new(fully_random: bool) -> SnatLab {
        let k = next_lab();
        // 10.235.<2k>.0/24 for the pods, 10.235.<2k+1>.0/24 for the uplink.
        let (pn, un) = (2 * u16::from(k), 2 * u16::from(k) + 1);
        let pod_net = format!("10.235.{pn}.0/24");
        let gw = format!("10.235.{pn}.1");
        let pod_ips = [format!("10.235.{pn}.11"), format!("10.235.{pn}.12")];
        let router_ip = format!("10.235.{un}.1");
        let server_ip = format!("10.235.{un}.2");

        let pods = [
            Netns::new(&format!("s{k}p1")),
            Netns::new(&format!("s{k}p2")),
        ];
        let router = Netns::new(&format!("s{k}r"));
        let server = Netns::new(&format!("s{k}s"));

        let br = ifname(k, "br");
        router.ip(&["link", "add", &br, "type", "bridge"]);
        router.ip(&["addr", "add", &format!("{gw}/24"), "dev", &br]);
        router.ip(&["link", "set", &br, "up"]);
        for (i, pod) in pods.iter().enumerate() {
            let (pod_if, br_if) = (ifname(k, &format!("e{i}")), ifname(k, &format!("v{i}")));
            sh(&[
                "ip",
                "link",
                "add",
                &pod_if,
                "netns",
                &pod.name,
                "type",
                "veth",
                "peer",
                "name",
                &br_if,
                "netns",
                &router.name,
            ]);
            router.ip(&["link", "set", &br_if, "master", &br]);
            router.ip(&["link", "set", &br_if, "up"]);
            pod.ip(&["addr", "add", &format!("{}/24", pod_ips[i]), "dev", &pod_if]);
            pod.ip(&["link", "set", &pod_if, "up"]);
            pod.ip(&["route", "add", "default", "via", &gw]);
        }
        let uplink = ifname(k, "up");
        veth(
            &router,
            &uplink,
            &format!("{router_ip}/24"),
            &server,
            &ifname(k, "sv"),
            &format!("{server_ip}/24"),
        );
        router.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);

        let dir = TempDir::new(&format!("snat{k}"));
        let src = dir.0.join("race.c");
        let race_bin = dir.0.join("race");
        std::fs::write(&src, RACE_C).expect("write race.c");
        sh(&[
            "gcc",
            "-O2",
            "-o",
            race_bin.to_str().expect("utf-8 path"),
            src.to_str().expect("utf-8 path"),
        ]);

        let server_guard = accept_server(&server, &server_ip, Self::PORT);
        let lab = SnatLab {
            _server: server_guard,
            pods,
            router,
            server,
            pod_ips,
            router_ip,
            server_ip,
            uplink,
            pod_net,
            race_bin,
            dir,
        };
        let flags = if fully_random { " fully-random" } else { "" };
        lab.set_nat(&format!("masquerade{flags}"));
        lab
    }

    /// `ip:port` of the server, as netlat prints the connect's destination.
    pub fn server_addr(&self) -> String {
        format!("{}:{}", self.server_ip, Self::PORT)
    }

    /// Replace the router's NAT rule with `ip saddr <pods> oifname <uplink> tcp <stmt>`.
    fn set_nat(&self, stmt: &str) {
        let _ = self
            .router
            .cmd(&["nft", "delete", "table", "ip", "labnat"])
            .output();
        self.router.nft(&format!(
            "table ip labnat {{\n\
             \x20 chain post {{\n\
             \x20   type nat hook postrouting priority 100;\n\
             \x20   ip saddr {} oifname \"{}\" meta l4proto tcp {stmt}\n\
             \x20 }}\n\
             }}\n",
            self.pod_net, self.uplink
        ));
    }

    fn ct(&self) -> (u64, u64) {
        (
            conntrack_stat(&self.router, "insert_failed"),
            conntrack_stat(&self.router, "drop"),
        )
    }

    /// One race round: a client per pod, pinned to CPU 0 and CPU 1, connects from source ports
    /// `base_port..base_port+n` to the server, both meeting at a barrier before every connect.
    /// Waits up to 4 s for the last ones (a clash costs the 1 s RTO).
    pub fn race(&self, n: usize, base_port: u16) -> RaceResult {
        assert!(cpus() >= 2, "the race needs CPU 0 and CPU 1");
        assert!(
            usize::from(base_port) + n <= 65535,
            "ports {base_port}+{n} out of range"
        );
        let shm = self.dir.0.join("barrier");
        std::fs::write(&shm, [0u8; 4096]).expect("barrier file");
        let (if0, drop0) = self.ct();
        let retrans = || -> u64 {
            self.pods
                .iter()
                .map(|p| snmp_counter(p, "Tcp", "RetransSegs"))
                .sum()
        };
        let retrans0 = retrans();
        let children: Vec<_> = self
            .pods
            .iter()
            .enumerate()
            .map(|(cpu, pod)| {
                pod.cmd(&[
                    "taskset",
                    "-c",
                    &cpu.to_string(),
                    self.race_bin.to_str().expect("utf-8 path"),
                    shm.to_str().expect("utf-8 path"),
                    &self.server_ip,
                    &Self::PORT.to_string(),
                    &base_port.to_string(),
                    &n.to_string(),
                    "4",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start race client")
            })
            .collect();
        let mut connects = Vec::with_capacity(2 * n);
        for (i, c) in children.into_iter().enumerate() {
            let out = c.wait_with_output().expect("race client");
            assert!(
                out.status.success(),
                "race client in pod{} failed: {}",
                i + 1,
                String::from_utf8_lossy(&out.stderr)
            );
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                let mut f = l.split_whitespace();
                let sport = f.next().and_then(|p| p.parse().ok()).expect("sport");
                let seconds = f.next().and_then(|s| s.parse().ok());
                connects.push(RaceConnect {
                    pod: i as u8 + 1,
                    sport,
                    seconds,
                });
            }
        }
        assert_eq!(connects.len(), 2 * n, "race clients printed {connects:?}");
        let (if1, drop1) = self.ct();
        let slow = connects.iter().filter(|c| c.is_slow()).count();
        RaceResult {
            connects,
            slow,
            insert_failed: if1 - if0,
            drop: drop1 - drop0,
            retrans_segs: retrans() - retrans0,
        }
    }

    /// The deterministic variant: SNAT to the single port `<router_ip>:40000`. pod1 connects and
    /// holds its connection; then pod2 connects with a 4 s timeout. Every pod2 SYN clashes with
    /// pod1's conntrack entry at confirm and is dropped.
    pub fn single_port_snat(&self) -> SinglePortResult {
        self.set_nat(&format!("snat to {}:40000", self.router_ip));
        let (if0, drop0) = self.ct();
        let script = format!(
            "import socket,time\n\
             t=time.time()\n\
             try:\n\
             \x20 s=socket.create_connection(('{}',{}),timeout=4); print('%.4f'%(time.time()-t),flush=True)\n\
             except Exception: print('fail',flush=True)\n\
             time.sleep(60)\n",
            self.server_ip,
            Self::PORT
        );
        let mut child = self.pods[0]
            .cmd(&["python3", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start holder");
        let stdout = child.stdout.take().expect("stdout");
        let holder = ChildGuard(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("holder");
        let hold = line.trim().parse().ok();
        let clash_timeout_s = 4.0;
        let clash = connect_times(
            &self.pods[1],
            &[(&self.server_ip, Self::PORT)],
            clash_timeout_s,
        )
        .first()
        .copied()
        .flatten();
        let (if1, drop1) = self.ct();
        drop(holder);
        SinglePortResult {
            hold,
            clash,
            clash_timeout_s,
            insert_failed: if1 - if0,
            drop: drop1 - drop0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// C: VXLAN outer checksum broken by the double NAT
// ---------------------------------------------------------------------------------------------

/// Settings of [`VxlanLab`] that decide whether the issue shows.
#[derive(Debug, Clone, Copy)]
pub struct VxlanConfig {
    /// `udpcsum` (outer UDP checksum on; the 6.x default) or `noudpcsum` on both vxlan devices.
    pub udpcsum: bool,
    /// `ethtool -K <vxlan> tx on|off` on the sender.
    pub tx_offload: bool,
    /// `net.core.txrehash` in the sender: 1 re-randomises the outer source port on every RTO
    /// (escape after ~1 s), 0 keeps it (escape only when the outer conntrack expires, ~67 s).
    pub txrehash: bool,
}

/// Issue C: `sender` and `receiver` joined by a veth underlay (tx offload off on the sender's
/// end so the receiver really verifies UDP checksums), a vxlan device on each (id 42, dstport
/// 4789), and in the sender kube-proxy's double NAT: an nat-output rule marks the service flow
/// 0x4000, and a postrouting `masquerade fully-random` on that mark hits the inner packet *and*
/// the encapsulated outer one. An accept loop in the receiver on [`VxlanLab::PORT`].
pub struct VxlanLab {
    _server: ChildGuard,
    pub sender: Netns,
    pub receiver: Netns,
    /// Overlay addresses.
    pub sender_ip: String,
    pub receiver_ip: String,
    /// The vxlan device's name (the same in both namespaces).
    pub vxlan_if: String,
}

impl VxlanLab {
    pub const PORT: u16 = 8080;

    pub fn new(cfg: VxlanConfig) -> VxlanLab {
        let k = next_lab();
        let (ua, ub) = (format!("10.236.{k}.1"), format!("10.236.{k}.2"));
        let (oa, ob) = (format!("10.237.{k}.1"), format!("10.237.{k}.2"));
        let sender = Netns::new(&format!("x{k}a"));
        let receiver = Netns::new(&format!("x{k}b"));
        let (ifa, ifb) = (ifname(k, "ua"), ifname(k, "ub"));
        veth(
            &sender,
            &ifa,
            &format!("{ua}/24"),
            &receiver,
            &ifb,
            &format!("{ub}/24"),
        );
        sender.run(&[
            "sysctl",
            "-qw",
            &format!("net.core.txrehash={}", u8::from(cfg.txrehash)),
        ]);
        let vx = ifname(k, "vx");
        let csum = if cfg.udpcsum { "udpcsum" } else { "noudpcsum" };
        for (ns, dev, me, peer, ov) in [
            (&sender, &ifa, &ua, &ub, &oa),
            (&receiver, &ifb, &ub, &ua, &ob),
        ] {
            ns.ip(&[
                "link", "add", &vx, "type", "vxlan", "id", "42", "dstport", "4789", "local", me,
                "remote", peer, "dev", dev, csum,
            ]);
            ns.ip(&["addr", "add", &format!("{ov}/24"), "dev", &vx]);
            ns.ip(&["link", "set", &vx, "up"]);
        }
        // veth trusts CHECKSUM_PARTIAL across the pair; with tx off on the sender's underlay the
        // checksum is computed before it crosses, so the receiver verifies it.
        sender.run(&["ethtool", "-K", &ifa, "tx", "off"]);
        let tx = if cfg.tx_offload { "on" } else { "off" };
        sender.run(&["ethtool", "-K", &vx, "tx", tx]);
        sender.nft(&format!(
            "table ip labvx {{\n\
             \x20 chain out_nat {{\n\
             \x20   type nat hook output priority -100;\n\
             \x20   ip daddr {ob} tcp dport {} meta mark set 0x4000\n\
             \x20 }}\n\
             \x20 chain post_nat {{\n\
             \x20   type nat hook postrouting priority 100;\n\
             \x20   meta mark & 0x4000 == 0x4000 masquerade fully-random\n\
             \x20 }}\n\
             }}\n",
            Self::PORT
        ));
        let server = tcp_server(&receiver, &[Self::PORT]);
        VxlanLab {
            _server: server,
            sender,
            receiver,
            sender_ip: oa,
            receiver_ip: ob,
            vxlan_if: vx,
        }
    }

    /// `ip:port` of the server, as netlat prints the connect's destination.
    pub fn server_addr(&self) -> String {
        format!("{}:{}", self.receiver_ip, Self::PORT)
    }

    /// `n` connects, one after another, from the sender to the receiver's server across the
    /// vxlan; each connect's time in seconds (`None`: failed or timed out after `timeout_s`).
    pub fn connect(&self, n: usize, timeout_s: f64) -> Vec<Option<f64>> {
        let targets = vec![(self.receiver_ip.as_str(), Self::PORT); n];
        connect_times(&self.sender, &targets, timeout_s)
    }

    /// The receiver's `Udp: InCsumErrors`.
    pub fn csum_errors(&self) -> u64 {
        snmp_counter(&self.receiver, "Udp", "InCsumErrors")
    }
}

/// CPUs this process may run on ([`SnatLab::race`] pins its clients to CPU 0 and CPU 1).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_columns_are_summed_over_cpus_by_name() {
        let t = "entries  clashres found new invalid ignore delete chainlength insert \
                 insert_failed drop early_drop\n\
                 0000000a  00000000 00000000 00000000 00000001 00000000 00000000 00000000 \
                 00000000 0000001c 0000001d 00000000\n\
                 0000000a  00000000 00000000 00000000 00000000 00000000 00000000 00000000 \
                 00000000 00000004 00000004 00000000\n";
        assert_eq!(sum_stat_column(t, "insert_failed"), Some(0x20));
        assert_eq!(sum_stat_column(t, "drop"), Some(0x21));
        assert_eq!(sum_stat_column(t, "nope"), None);
    }

    #[test]
    fn snmp_value_reads_the_named_column() {
        let t = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                 Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors \
                 InCsumErrors IgnoredMulti MemErrors\n\
                 Udp: 10 0 3 12 0 0 3 0 0\n";
        assert_eq!(snmp_value(t, "Udp", "InCsumErrors"), Some(3));
        assert_eq!(snmp_value(t, "Udp", "InDatagrams"), Some(10));
        assert_eq!(snmp_value(t, "Tcp", "InSegs"), None);
    }
}
