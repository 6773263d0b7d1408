//! The kernel's own TCP counters in every network namespace (`/proc/net/netstat` and
//! `/proc/net/snmp` as that namespace sees them), sampled by one background thread.
//!
//! Two uses. The run's summary compares what the kernel counted (`TCPSynRetrans`) with what
//! the retransmit hook reported: the kernel counts a SYN retransmit in `__tcp_retransmit_skb`
//! before handing it to `tcp_transmit_skb`, and until the `tcp_retransmit_skb` tracepoint
//! gained an `err` field it fired only when that send succeeded (README, "What the kernel
//! counts that no probe sees"). And a SYN refused for a full accept queue is consumed in `tcp_conn_request`,
//! never freed with a drop reason: the listener namespace's `ListenOverflows`/`ListenDrops`
//! rising while a connect waited is the only evidence of `listen-overflow`.
//!
//! Nothing here runs on the event loop: the thread enters each namespace itself (setns(2),
//! or `/proc/<pid>/net` when the way in is a process) and keeps a short history of changes;
//! the verdict's question is answered from that history under a lock.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        mpsc::{self, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

use netlat_core::{facts::ListenEvidence, report::KernelCounts};

use crate::node::netns::NetnsIndex;

/// How often every namespace's counters are read: any attempt that waited for a SYN retry
/// (at least 1 s) has a reading inside its window.
const PERIOD: Duration = Duration::from_millis(500);
/// How often the namespaces themselves are looked for again (a scan stats every process).
const SCAN_EVERY: Duration = Duration::from_secs(2);
/// History kept per namespace: longer than the longest SYN ladder (127 s with 6 retries).
const HISTORY_NS: u64 = 300 * 1_000_000_000;
/// Changes kept per namespace at most (older ones are dropped and counted).
const MAX_CHANGES: usize = 1024;
/// Processes looked at when naming a listener's owner.
const MAX_PROCESS_SCAN: usize = 16_384;
/// How long the end-of-run reading may take.
const FINAL_WAIT: Duration = Duration::from_secs(3);

/// The counters read from one namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounters {
    pub syn_retrans: u64,
    pub retrans_segs: u64,
    pub retrans_fail: u64,
    pub listen_overflows: u64,
    pub listen_drops: u64,
}

impl TcpCounters {
    fn since(self, base: TcpCounters) -> TcpCounters {
        TcpCounters {
            syn_retrans: self.syn_retrans.saturating_sub(base.syn_retrans),
            retrans_segs: self.retrans_segs.saturating_sub(base.retrans_segs),
            retrans_fail: self.retrans_fail.saturating_sub(base.retrans_fail),
            listen_overflows: self.listen_overflows.saturating_sub(base.listen_overflows),
            listen_drops: self.listen_drops.saturating_sub(base.listen_drops),
        }
    }
}

/// One counter of a `/proc/net/netstat` or `/proc/net/snmp` text: a header row `Proto: names`
/// followed by a value row `Proto: values`.
fn counter(text: &str, proto: &str, name: &str) -> Option<u64> {
    let prefix = format!("{proto}:");
    let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
    while let (Some(names), Some(values)) = (rows.next(), rows.next()) {
        if let Some(col) = names.split_whitespace().position(|c| c == name) {
            return values.split_whitespace().nth(col)?.parse().ok();
        }
    }
    None
}

/// The counters from the texts of `/proc/net/netstat` and `/proc/net/snmp`; `None` when the
/// texts lack `TCPSynRetrans` or `RetransSegs` (not those files).
pub fn parse(netstat: &str, snmp: &str) -> Option<TcpCounters> {
    Some(TcpCounters {
        syn_retrans: counter(netstat, "TcpExt", "TCPSynRetrans")?,
        retrans_segs: counter(snmp, "Tcp", "RetransSegs")?,
        retrans_fail: counter(netstat, "TcpExt", "TCPRetransFail").unwrap_or(0),
        listen_overflows: counter(netstat, "TcpExt", "ListenOverflows").unwrap_or(0),
        listen_drops: counter(netstat, "TcpExt", "ListenDrops").unwrap_or(0),
    })
}

/// A listening TCP socket as `/proc/net/tcp{,6}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// Connections waiting in the accept queue (a listener's `rx_queue`; its backlog is not
    /// shown there).
    pub queued: u32,
    pub inode: u64,
}

/// `0100007F:1F90` (IPv4) or 32 hex digits + port (IPv6), in the kernel's word order.
fn hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The LISTEN sockets (state 0A) of a `/proc/net/tcp` or `/proc/net/tcp6` text.
pub fn parse_listeners(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(3) != Some(&"0A") {
                return None;
            }
            let (_, rx) = f.get(4)?.split_once(':')?;
            Some(Listener {
                addr: hex_addr(f.get(1)?)?,
                queued: u32::from_str_radix(rx, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The local IPv4 addresses of a `/proc/net/fib_trie` text (`/32 host LOCAL` leaves).
pub fn parse_local_v4(fib_trie: &str) -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    let mut last: Option<Ipv4Addr> = None;
    for l in fib_trie.lines() {
        let t = l.trim_start();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(a) = last
        {
            out.insert(IpAddr::V4(a));
        }
    }
    out
}

/// The local IPv6 addresses of a `/proc/net/if_inet6` text.
pub fn parse_local_v6(if_inet6: &str) -> HashSet<IpAddr> {
    if_inet6
        .lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().next()?;
            let n = u128::from_str_radix(hex, 16).ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(n)))
        })
        .collect()
}

/// Where a listener bound to `addr` takes connects to `dst`, given the namespace's local
/// addresses.
fn serves(addr: SocketAddr, dst: SocketAddr, locals: &HashSet<IpAddr>) -> bool {
    if addr.port() != dst.port() {
        return false;
    }
    if addr.ip() == dst.ip() {
        return true;
    }
    let dst_ip = match dst.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    addr.ip().is_unspecified() && locals.contains(&dst_ip)
}

/// What was read of a namespace's listeners after its refusal counters rose.
#[derive(Debug, Clone, Default)]
struct Listeners {
    list: Vec<Listener>,
    locals: HashSet<IpAddr>,
    /// `comm[pid]` per socket inode, for the listeners whose owner was found.
    owners: HashMap<u64, String>,
}

#[derive(Debug)]
struct NsHistory {
    /// Changes, oldest first: (monotonic ns, counters). The first is the baseline.
    changes: VecDeque<(u64, TcpCounters)>,
    /// The latest reading.
    last: TcpCounters,
    listeners: Option<Listeners>,
}

impl NsHistory {
    /// The counters as they stood at `t` (the baseline when `t` is older than every change).
    fn at(&self, t: u64) -> TcpCounters {
        self.changes
            .iter()
            .rev()
            .find(|(ts, _)| *ts <= t)
            .or(self.changes.front())
            .map_or(TcpCounters::default(), |(_, c)| *c)
    }

    fn baseline(&self) -> TcpCounters {
        self.changes.front().map_or(self.last, |(_, c)| *c)
    }
}

#[derive(Debug, Default)]
struct State {
    ns: HashMap<u32, NsHistory>,
    /// Older changes dropped past [`MAX_CHANGES`].
    changes_dropped: u64,
    /// Namespaces whose counters could not be read at least once.
    unreadable: HashSet<u32>,
}

impl State {
    fn record(&mut self, netns: u32, now: u64, c: TcpCounters, first_ns: u64) {
        let h = self.ns.entry(netns).or_insert_with(|| NsHistory {
            // Found after the start: the namespace is new since the previous scan and its
            // counters started at zero then.
            changes: VecDeque::from([(first_ns, TcpCounters::default())]),
            last: TcpCounters::default(),
            listeners: None,
        });
        if h.changes.back().is_none_or(|(_, last)| *last != c) {
            h.changes.push_back((now, c));
        }
        h.last = c;
        // Keep one change older than the horizon: it is the value at the horizon.
        let horizon = now.saturating_sub(HISTORY_NS);
        while h.changes.len() > 2 && h.changes.get(1).is_some_and(|(ts, _)| *ts < horizon) {
            h.changes.pop_front();
        }
        while h.changes.len() > MAX_CHANGES {
            h.changes.pop_front();
            self.changes_dropped += 1;
        }
    }

    fn listen(&self, dst: SocketAddr, from_ns: u64, to_ns: u64) -> Option<ListenEvidence> {
        self.ns
            .iter()
            .filter_map(|(netns, h)| {
                let rise = h.at(to_ns).since(h.at(from_ns));
                if rise.listen_overflows == 0 && rise.listen_drops == 0 {
                    return None;
                }
                let ls = h.listeners.as_ref()?;
                let l = ls.list.iter().find(|l| serves(l.addr, dst, &ls.locals))?;
                Some(ListenEvidence {
                    netns: *netns,
                    listener: l.addr,
                    overflows: rise.listen_overflows,
                    drops: rise.listen_drops,
                    accept_queue: Some(l.queued),
                    process: ls.owners.get(&l.inode).cloned(),
                })
            })
            .max_by_key(|e| (e.overflows + e.drops, e.netns))
    }

    fn totals(&self) -> KernelCounts {
        let mut k = KernelCounts::default();
        for h in self.ns.values() {
            let d = h.last.since(h.baseline());
            k.syn_retransmits += d.syn_retrans;
            k.retrans_segs += d.retrans_segs;
            k.retrans_fail += d.retrans_fail;
            k.listen_overflows += d.listen_overflows;
            k.listen_drops += d.listen_drops;
            k.namespaces += 1;
        }
        k
    }
}

enum Request {
    /// Read every namespace now and answer when done.
    Final(mpsc::SyncSender<()>),
}

/// The sampling thread and its history; dropping it stops the thread.
pub struct TcpCounterSampler {
    state: Arc<Mutex<State>>,
    tx: mpsc::Sender<Request>,
}

/// The shared read side, for the verdicts' [`NodeView`](netlat_core::verdict::NodeView).
#[derive(Clone)]
pub struct TcpCounterView(Arc<Mutex<State>>);

impl TcpCounterView {
    /// See [`netlat_core::verdict::NodeView::listen_overflow`].
    pub fn listen_overflow(
        &self,
        dst: SocketAddr,
        from_ns: u64,
        to_ns: u64,
    ) -> Option<ListenEvidence> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .listen(dst, from_ns, to_ns)
    }
}

impl TcpCounterSampler {
    /// Start the thread; its first pass (the baseline of every namespace there now) is done
    /// before this returns, so the run's counts start here. `clock` is the monotonic clock of
    /// the kernel events.
    pub fn start(clock: fn() -> u64) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let shared = state.clone();
        std::thread::Builder::new()
            .name("netlat-tcp-counters".into())
            .spawn(move || sample_loop(&shared, &rx, clock, &ready_tx))?;
        // A hung first pass must not hold up the start: the counts then start later.
        let _ = ready_rx.recv_timeout(FINAL_WAIT);
        Ok(Self { state, tx })
    }

    pub fn view(&self) -> TcpCounterView {
        TcpCounterView(self.state.clone())
    }

    /// Read every namespace once more and sum what each counted since its baseline.
    pub fn totals(&self) -> KernelCounts {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if self.tx.send(Request::Final(done_tx)).is_ok()
            && done_rx.recv_timeout(FINAL_WAIT).is_err()
        {
            tracing::warn!("the last reading of the TCP counters took over {FINAL_WAIT:?}");
        }
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.changes_dropped > 0 {
            tracing::warn!(
                "{} older TCP counter changes were dropped (history limit)",
                s.changes_dropped
            );
        }
        if !s.unreadable.is_empty() {
            tracing::warn!(
                "the TCP counters of {} namespace(s) could not be read; the kernel's counts \
                 leave them out",
                s.unreadable.len()
            );
        }
        s.totals()
    }
}

fn sample_loop(
    state: &Mutex<State>,
    rx: &mpsc::Receiver<Request>,
    clock: fn() -> u64,
    ready: &mpsc::SyncSender<()>,
) {
    let mut index = NetnsIndex::default();
    let mut scanned: Option<Instant> = None;
    // Namespaces seen at the first scan are baselined at their first reading; later ones
    // count from zero, stamped at the scan before they were found.
    let mut first = true;
    let mut prev_scan_ns = clock();
    let mut done: Option<mpsc::SyncSender<()>> = None;
    loop {
        let now = clock();
        if scanned.is_none_or(|t| t.elapsed() >= SCAN_EVERY) || done.is_some() {
            index.scan();
            scanned = Some(Instant::now());
        }
        for netns in index.known() {
            let Some(path) = index.path(netns) else {
                continue;
            };
            let read = read_in(&path);
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(c) = read else {
                s.unreadable.insert(netns);
                continue;
            };
            if first && !s.ns.contains_key(&netns) {
                s.ns.insert(
                    netns,
                    NsHistory {
                        changes: VecDeque::from([(now, c)]),
                        last: c,
                        listeners: None,
                    },
                );
                continue;
            }
            let before = s.ns.get(&netns).map(|h| h.last);
            s.record(netns, now, c, prev_scan_ns);
            let rose = before.is_none_or(|b| {
                c.listen_overflows > b.listen_overflows || c.listen_drops > b.listen_drops
            });
            if rose && (c.listen_overflows > 0 || c.listen_drops > 0) {
                // Rare: who listens there, read outside the lock (owners already named are
                // not looked for again: a storm keeps the counters rising).
                let known =
                    s.ns.get(&netns)
                        .and_then(|h| h.listeners.as_ref())
                        .map(|l| l.owners.clone())
                        .unwrap_or_default();
                drop(s);
                let ls = read_listeners(&path, netns, known);
                let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                if let (Some(h), Some(ls)) = (s.ns.get_mut(&netns), ls) {
                    h.listeners = Some(ls);
                }
            }
        }
        if first {
            first = false;
            let _ = ready.try_send(());
        }
        prev_scan_ns = now;
        if let Some(d) = done.take() {
            let _ = d.try_send(());
        }
        match rx.recv_timeout(PERIOD) {
            Ok(Request::Final(d)) => done = Some(d),
            Err(RecvTimeoutError::Timeout) => {}
            // The sampler was dropped: netlat is ending.
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// `/proc/<pid>/net` when `path` is `/proc/<pid>/ns/net` (no namespace switch needed).
fn proc_net_of(path: &Path) -> Option<PathBuf> {
    let pid = path
        .strip_prefix("/proc")
        .ok()?
        .to_str()?
        .strip_suffix("/ns/net")?;
    (pid.bytes().all(|b| b.is_ascii_digit()) || pid == "self")
        .then(|| PathBuf::from(format!("/proc/{pid}/net")))
}

/// Run `f` on `/proc/.../net` of the namespace at `path`: through a process's own `net`
/// directory, or after entering the namespace (this thread only).
fn with_proc_net<T>(path: &Path, f: impl FnOnce(&Path) -> Option<T>) -> Option<T> {
    if let Some(dir) = proc_net_of(path) {
        return f(&dir);
    }
    let file = fs::File::open(path).ok()?;
    crate::node::netns::enter_this_thread(&file).ok()?;
    f(Path::new("/proc/thread-self/net"))
}

fn read_in(path: &Path) -> Option<TcpCounters> {
    with_proc_net(path, |dir| {
        let netstat = fs::read_to_string(dir.join("netstat")).ok()?;
        let snmp = fs::read_to_string(dir.join("snmp")).ok()?;
        parse(&netstat, &snmp)
    })
}

fn read_listeners(path: &Path, netns: u32, known: HashMap<u64, String>) -> Option<Listeners> {
    let mut ls = with_proc_net(path, |dir| {
        let mut list = Vec::new();
        for f in ["tcp", "tcp6"] {
            if let Ok(t) = fs::read_to_string(dir.join(f)) {
                list.extend(parse_listeners(&t));
            }
        }
        let mut locals = fs::read_to_string(dir.join("fib_trie"))
            .map(|t| parse_local_v4(&t))
            .unwrap_or_default();
        if let Ok(t) = fs::read_to_string(dir.join("if_inet6")) {
            locals.extend(parse_local_v6(&t));
        }
        Some(Listeners {
            list,
            locals,
            owners: HashMap::new(),
        })
    })?;
    let wanted: HashSet<u64> = ls
        .list
        .iter()
        .map(|l| l.inode)
        .filter(|i| !known.contains_key(i))
        .collect();
    ls.owners = known;
    if !wanted.is_empty() {
        ls.owners.extend(owners(netns, &wanted));
    }
    Some(ls)
}

/// `comm[pid]` of the processes in `netns` holding one of the socket `inodes`.
fn owners(netns: u32, inodes: &HashSet<u64>) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten().take(MAX_PROCESS_SCAN) {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let in_ns = fs::metadata(e.path().join("ns/net"))
            .ok()
            .is_some_and(|m| m.ino() == u64::from(netns));
        if !in_ns {
            continue;
        }
        let Ok(fds) = fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(ino) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if inodes.contains(&ino) {
                let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                out.insert(ino, format!("{}[{pid}]", comm.trim()));
            }
        }
        if out.len() == inodes.len() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETSTAT: &str = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPSynRetrans \
                           TCPRetransFail\nTcpExt: 0 4 5 7 1\n\
                           IpExt: InNoRoutes\nIpExt: 0\n";
    const SNMP: &str = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                        Tcp: RtoAlgorithm ActiveOpens RetransSegs InErrs\nTcp: 1 10 9 0\n";

    #[test]
    fn counters_are_read_by_name() {
        assert_eq!(
            parse(NETSTAT, SNMP),
            Some(TcpCounters {
                syn_retrans: 7,
                retrans_segs: 9,
                retrans_fail: 1,
                listen_overflows: 4,
                listen_drops: 5,
            })
        );
        // The files swapped: not what netlat reads.
        assert_eq!(parse(SNMP, NETSTAT), None);
    }

    #[test]
    fn listeners_from_proc_net_tcp() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  \x20  0: 00000000:1F90 00000000:0000 0A 00000001:00000002 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n\
                  \x20  1: 0100007F:0277 0100007F:A0B2 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0 20 4 30 10 -1\n";
        let l = parse_listeners(v4);
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0].addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!((l[0].queued, l[0].inode), (2, 4242));
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  \x20  0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000080:00000000 00:00000000 00000000     0        0 99 1 0 100 0 0 10 0\n";
        let l = parse_listeners(v6);
        assert_eq!(l[0].addr, "[::1]:8081".parse().unwrap());
    }

    #[test]
    fn local_addresses() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.231.0.0\n        /24 link UNICAST\n\
                    \x20    |-- 10.231.0.2\n        /32 host LOCAL\n";
        let l = parse_local_v4(trie);
        assert!(l.contains(&"10.231.0.2".parse::<IpAddr>().unwrap()));
        assert!(!l.contains(&"10.231.0.0".parse::<IpAddr>().unwrap()));
        let v6 = parse_local_v6("00000000000000000000000000000001 01 80 10 80       lo\n");
        assert!(v6.contains(&"::1".parse::<IpAddr>().unwrap()));
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(serves(any, "10.231.0.2:8080".parse().unwrap(), &l));
        assert!(!serves(any, "10.231.0.9:8080".parse().unwrap(), &l));
        assert!(!serves(any, "10.231.0.2:8081".parse().unwrap(), &l));
    }

    fn counters(overflows: u64) -> TcpCounters {
        TcpCounters {
            listen_overflows: overflows,
            listen_drops: overflows,
            ..TcpCounters::default()
        }
    }

    #[test]
    fn a_rise_is_evidence_only_inside_the_window_and_for_the_listener() {
        const S: u64 = 1_000_000_000;
        let mut s = State::default();
        s.ns.insert(
            7,
            NsHistory {
                changes: VecDeque::from([(0, counters(3))]),
                last: counters(3),
                listeners: None,
            },
        );
        s.record(7, 10 * S, counters(3), 0);
        s.record(7, 11 * S, counters(5), 0);
        let dst: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        // Nothing known about the listeners yet.
        assert_eq!(s.listen(dst, 10 * S, 12 * S), None);
        let h = s.ns.get_mut(&7).unwrap();
        h.listeners = Some(Listeners {
            list: vec![Listener {
                addr: "0.0.0.0:8080".parse().unwrap(),
                queued: 2,
                inode: 5,
            }],
            locals: HashSet::from(["10.0.0.2".parse().unwrap()]),
            owners: HashMap::from([(5, "srv[9]".to_string())]),
        });
        let e = s.listen(dst, 10 * S, 12 * S).expect("the rise at 11 s");
        assert_eq!((e.netns, e.overflows, e.drops), (7, 2, 2));
        assert_eq!(e.accept_queue, Some(2));
        assert_eq!(e.process.as_deref(), Some("srv[9]"));
        // Before the rise, or after it: not this attempt's.
        assert_eq!(s.listen(dst, 2 * S, 9 * S), None);
        assert_eq!(s.listen(dst, 11 * S, 20 * S), None);
        // Another port.
        assert_eq!(
            s.listen("10.0.0.2:9".parse().unwrap(), 10 * S, 12 * S),
            None
        );
        // A namespace found later counts from zero.
        s.record(
            8,
            12 * S,
            TcpCounters {
                syn_retrans: 4,
                ..TcpCounters::default()
            },
            11 * S,
        );
        let k = s.totals();
        assert_eq!(
            (k.syn_retransmits, k.listen_overflows, k.namespaces),
            (4, 2, 2)
        );
    }
}
