//! Network namespaces seen by inode number, and work done inside one of them.
//!
//! Kernel events name a netns by its inode; node facts and conntrack counters must be read
//! *inside* that netns. This module maps inodes to a path that can be entered (`/run/netns/*`,
//! `/proc/<pid>/ns/net`) and runs a closure on a short-lived thread that `setns`es into it, so
//! the caller's own namespace never changes.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError},
    time::{Duration, Instant},
};

use netlat_core::facts::CtCpuStats;
use netlat_core::{
    engine::{Counters, NatWhere},
    enrich::CounterEvidence,
    event::SockKey,
    packet::FiveTuple,
};

use crate::node;

/// Inode → a path whose open fd enters that netns.
#[derive(Debug, Default)]
pub struct NetnsIndex {
    paths: HashMap<u32, PathBuf>,
    last_scan: Option<Instant>,
}

fn inode(path: &Path) -> Option<u32> {
    fs::metadata(path)
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
}

/// Every path that may enter a netns: netlat's own, the named ones, every process's.
fn candidates() -> impl Iterator<Item = PathBuf> {
    let named = fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let processes = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"));
    std::iter::once(PathBuf::from("/proc/self/ns/net"))
        .chain(named)
        .chain(processes)
}

/// A path into `netns`, found by one scan (for a worker thread that has no index; a pod's
/// namespace outlives its short-lived processes, held by its pause container).
pub fn find(netns: u32) -> Option<PathBuf> {
    candidates().find(|p| inode(p) == Some(netns))
}

impl NetnsIndex {
    /// Rescan named namespaces and every process's namespace.
    pub fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        for p in candidates() {
            if let Some(ino) = inode(&p) {
                self.paths.entry(ino).or_insert(p);
            }
        }
        // Forget paths that no longer lead to the same namespace (a process exited).
        self.paths.retain(|ino, p| inode(p) == Some(*ino));
    }

    /// Path for `netns`, rescanning at most once a second on a miss.
    pub fn path(&mut self, netns: u32) -> Option<PathBuf> {
        if let Some(p) = self.paths.get(&netns)
            && inode(p) == Some(netns)
        {
            return Some(p.clone());
        }
        let stale = self
            .last_scan
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        if stale {
            self.scan();
        }
        self.paths.get(&netns).cloned()
    }

    pub fn known(&self) -> Vec<u32> {
        self.paths.keys().copied().collect()
    }
}

/// Run `f` on a thread that has entered the netns at `path`.
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let file = fs::File::open(path)?;
    std::thread::spawn(move || {
        enter(&file)?;
        Ok(f())
    })
    .join()
    .map_err(|_| std::io::Error::other("netns worker thread panicked"))?
}

/// Move the calling thread (only it) into the netns of `file`.
pub(crate) fn enter_this_thread(file: &fs::File) -> std::io::Result<()> {
    enter(file)
}

/// Move the calling thread into the netns of `file`.
fn enter(file: &fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd of a netns file; setns only changes this thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

type Job = Box<dyn FnOnce() + Send>;

/// Jobs a worker may have queued; past this, new work is refused rather than delayed.
const WORKER_QUEUE: usize = 256;
/// Idle workers kept at most (one thread each); the least recently used one goes first.
const MAX_WORKERS: usize = 64;

struct Worker {
    tx: SyncSender<Job>,
    last_used: Instant,
}

/// Why work could not be handed to a namespace's worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("no path enters netns {0} (the namespace is gone)")]
    UnknownNetns(u32),
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spawning a worker thread: {0}")]
    Spawn(std::io::Error),
    #[error("the worker of netns {0} has {WORKER_QUEUE} jobs queued")]
    Busy(u32),
    #[error("the worker of netns {0} is gone (setns failed or the thread exited)")]
    Gone(u32),
    #[error("no answer from netns {0} within {1:?}")]
    Timeout(u32, Duration),
}

/// Long-lived threads, one per network namespace in use, each already inside its namespace:
/// work there costs a channel round trip instead of a thread spawn and a `setns` (milliseconds
/// on a busy node: BENCHMARKS.md), which is what kept the event loop waiting.
#[derive(Default)]
pub struct NetnsWorkers {
    index: NetnsIndex,
    workers: HashMap<u32, Worker>,
}

impl NetnsWorkers {
    pub fn index_mut(&mut self) -> &mut NetnsIndex {
        &mut self.index
    }

    fn spawn(&mut self, netns: u32) -> Result<SyncSender<Job>, WorkerError> {
        let path = self
            .index
            .path(netns)
            .ok_or(WorkerError::UnknownNetns(netns))?;
        let file = fs::File::open(&path).map_err(|source| WorkerError::Open {
            path: path.clone(),
            source,
        })?;
        if self.workers.len() >= MAX_WORKERS
            && let Some(oldest) = self
                .workers
                .iter()
                .min_by_key(|(_, w)| w.last_used)
                .map(|(ns, _)| *ns)
        {
            // Dropping the sender ends that thread once its queue is empty.
            self.workers.remove(&oldest);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(WORKER_QUEUE);
        std::thread::Builder::new()
            .name(format!("netns-{netns}"))
            .spawn(move || {
                if let Err(e) = enter(&file) {
                    tracing::debug!("entering netns {netns}: {e}");
                    return;
                }
                drop(file);
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .map_err(WorkerError::Spawn)?;
        self.workers.insert(
            netns,
            Worker {
                tx: tx.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(tx)
    }

    /// Queue `job` in `netns` without waiting for it.
    pub fn submit(
        &mut self,
        netns: u32,
        job: impl FnOnce() + Send + 'static,
    ) -> Result<(), WorkerError> {
        let tx = match self.workers.get_mut(&netns) {
            Some(w) => {
                w.last_used = Instant::now();
                w.tx.clone()
            }
            None => self.spawn(netns)?,
        };
        match tx.try_send(Box::new(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(WorkerError::Busy(netns)),
            Err(TrySendError::Disconnected(_)) => {
                // The namespace went away or setns failed: forget it; a later call retries.
                self.workers.remove(&netns);
                Err(WorkerError::Gone(netns))
            }
        }
    }

    /// Run `f` in `netns` and wait for its result at most `deadline`.
    pub fn run<T: Send + 'static>(
        &mut self,
        netns: u32,
        deadline: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkerError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(netns, move || {
            // The caller may have given up waiting; its answer is then not needed.
            let _ = tx.send(f());
        })?;
        rx.recv_timeout(deadline).map_err(|e| match e {
            RecvTimeoutError::Timeout => WorkerError::Timeout(netns, deadline),
            RecvTimeoutError::Disconnected => WorkerError::Gone(netns),
        })
    }
}

/// Per-CPU conntrack statistics of the calling thread's netns.
fn ct_stats_here() -> Option<Vec<CtCpuStats>> {
    fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack")
        .ok()
        .and_then(|t| node::parse_ct_stats(&t).ok())
}

/// How long the event loop waits for a namespace's conntrack counters.
const COUNTER_DEADLINE: Duration = Duration::from_millis(20);

/// Conntrack counters read live: increments since the previous reading form a per-CPU budget
/// that drops claim one at a time, so a burst of drops read in one go is still attributed
/// one increment per drop.
#[derive(Default)]
pub struct ProcCounters {
    workers: NetnsWorkers,
    /// Last reading per netns: cpu → (insert_failed, drop).
    last: HashMap<u32, HashMap<u32, (u64, u64)>>,
    /// Unclaimed increments per (netns, cpu).
    budget: HashMap<(u32, u32), (u64, u64)>,
}

impl ProcCounters {
    /// Take a baseline of every namespace known now.
    pub fn new() -> Self {
        let mut c = ProcCounters::default();
        c.workers.index_mut().scan();
        c.baseline_new();
        c
    }

    /// Read namespaces that have no baseline yet.
    pub fn baseline_new(&mut self) {
        for ns in self.workers.index_mut().known() {
            if !self.last.contains_key(&ns) {
                self.read(ns);
            }
        }
    }

    fn read(&mut self, netns: u32) {
        let stats = match self.workers.run(netns, COUNTER_DEADLINE, ct_stats_here) {
            Ok(Some(stats)) => stats,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("conntrack counters: {e}");
                return;
            }
        };
        let now: HashMap<u32, (u64, u64)> = stats
            .iter()
            .map(|s| (s.cpu, (s.insert_failed, s.drop)))
            .collect();
        if let Some(prev) = self.last.get(&netns) {
            for (cpu, (inf, drop)) in &now {
                let (pi, pd) = prev.get(cpu).copied().unwrap_or((*inf, *drop));
                let b = self.budget.entry((netns, *cpu)).or_default();
                b.0 += inf.saturating_sub(pi);
                b.1 += drop.saturating_sub(pd);
            }
        }
        self.last.insert(netns, now);
    }

    /// Periodic: notice namespaces created since the start.
    pub fn tick(&mut self) {
        self.workers.index_mut().scan();
        self.baseline_new();
    }
}

impl Counters for ProcCounters {
    fn claim(&mut self, netns: u32, cpu: u32) -> Option<CounterEvidence> {
        let had_baseline = self.last.contains_key(&netns);
        self.read(netns);
        if !had_baseline {
            // First sight: the increments happened before any reading, so none can be shown.
            return None;
        }
        let b = self.budget.entry((netns, cpu)).or_default();
        let ev = CounterEvidence {
            insert_failed: b.0.min(1),
            drop: b.1.min(1),
        };
        b.0 -= ev.insert_failed;
        b.1 -= ev.drop;
        Some(ev)
    }

    fn tick(&mut self) {
        ProcCounters::tick(self);
    }
}

/// NAT lookups over ctnetlink in the connect's own namespace and/or the node's, done by that
/// namespace's worker while the event loop goes on; answers are collected by
/// [`NatLookup::answers`].
pub struct CtNatLookup {
    workers: NetnsWorkers,
    /// The node's namespace (netlat's own), where a pod's forwarded packets are DNATed.
    node: Option<u32>,
    tx: Sender<(SockKey, Option<FiveTuple>)>,
    rx: Receiver<(SockKey, Option<FiveTuple>)>,
    /// Questions without all their answers yet: when they were asked, answers still due.
    outstanding: HashMap<SockKey, (Instant, usize)>,
    /// Questions refused because a worker was busy or gone.
    skipped: u64,
}

/// How long after its question an attempt about to be judged may wait for its NAT answer. A
/// ctnetlink GET answers in well under a millisecond, but the first question in a namespace
/// also starts its worker (a thread and a setns: tens of ms on a slow VM), and the attempt's end
/// often arrives with its first retransmit, when the question is asked. Counted from the
/// question, not from the wait: many attempts ending at once wait for the slowest answer once,
/// not each in turn.
const NAT_SETTLE: Duration = Duration::from_millis(50);
/// Outstanding questions older than this are forgotten (their worker died with them).
const NAT_FORGET: Duration = Duration::from_secs(2);

/// The inode of netlat's own network namespace (the node's, in the DaemonSet). Read once: the
/// process never changes namespace (only short-lived worker threads enter others).
pub(crate) fn own_netns() -> Option<u32> {
    static OWN: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| {
        std::fs::metadata("/proc/self/ns/net")
            .ok()
            .and_then(|m| u32::try_from(m.ino()).ok())
    })
}

impl Default for CtNatLookup {
    fn default() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        Self {
            workers: NetnsWorkers::default(),
            node: own_netns(),
            tx,
            rx,
            outstanding: HashMap::new(),
            skipped: 0,
        }
    }
}

/// The namespaces whose conntrack is asked about a connect from `netns`: its own, and the
/// node's (`node`, when known) unless that is the same one.
fn lookup_netns(netns: u32, node: Option<u32>, at: NatWhere) -> Vec<u32> {
    let mut out = Vec::with_capacity(2);
    if at.own {
        out.push(netns);
    }
    if at.node
        && let Some(node) = node
        && !out.contains(&node)
    {
        out.push(node);
    }
    out
}

/// What a namespace's conntrack says about a connect's tuple.
enum Entry {
    /// No entry (or the lookup failed).
    Absent,
    /// An entry; the wire tuple when NAT changed it.
    Found(Option<FiveTuple>),
}

fn wire_here(tuple: &FiveTuple) -> Entry {
    match crate::node::ctnl::lookup(tuple) {
        Ok(Some(e)) => Entry::Found(Some(e.wire_tuple()).filter(|w| w != tuple)),
        Ok(None) => Entry::Absent,
        Err(e) => {
            tracing::debug!("conntrack lookup of {tuple}: {e}");
            Entry::Absent
        }
    }
}

/// The retried SYN that prompted a question about a pod's connect may still be on its way
/// through the pod's veth to the node, whose conntrack then has no entry yet: one more look
/// this much later (on the worker, never the event loop).
const NODE_SECOND_LOOK: Duration = Duration::from_millis(2);

impl CtNatLookup {
    fn take(&mut self, out: &mut Vec<(SockKey, FiveTuple)>, answer: (SockKey, Option<FiveTuple>)) {
        if let Some((_, due)) = self.outstanding.get_mut(&answer.0) {
            *due = due.saturating_sub(1);
            if *due == 0 {
                self.outstanding.remove(&answer.0);
            }
        }
        if let Some(wire) = answer.1 {
            out.push((answer.0, wire));
        }
    }
}

impl netlat_core::engine::NatLookup for CtNatLookup {
    fn ask(&mut self, sock: SockKey, tuple: FiveTuple, at: NatWhere) -> Option<FiveTuple> {
        for netns in lookup_netns(sock.netns, self.node, at) {
            let tx = self.tx.clone();
            let forwarded = netns != sock.netns;
            let job = move || {
                let mut entry = wire_here(&tuple);
                if matches!(entry, Entry::Absent) && forwarded {
                    std::thread::sleep(NODE_SECOND_LOOK);
                    entry = wire_here(&tuple);
                }
                let wire = match entry {
                    Entry::Found(wire) => wire,
                    Entry::Absent => None,
                };
                // The loop may have stopped; nothing then waits for the answer.
                let _ = tx.send((sock, wire));
            };
            match self.workers.submit(netns, job) {
                Ok(()) => {
                    self.outstanding
                        .entry(sock)
                        .or_insert((Instant::now(), 0))
                        .1 += 1;
                }
                Err(e) => {
                    self.skipped += 1;
                    if self.skipped.is_power_of_two() {
                        tracing::warn!(
                            "conntrack NAT lookup skipped ({e}); {} skipped so far: drops of \
                             those connects seen after NAT are not matched, nor their pod \
                             behind a Service",
                            self.skipped
                        );
                    }
                }
            }
        }
        None
    }

    fn answers(&mut self, wait_for: Option<&SockKey>) -> Vec<(SockKey, FiveTuple)> {
        // Called for every event: nothing asked, nothing to collect.
        if self.outstanding.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        while let Ok(a) = self.rx.try_recv() {
            self.take(&mut out, a);
        }
        if let Some(sock) = wait_for
            && let Some((asked, _)) = self.outstanding.get(sock)
        {
            let until = *asked + NAT_SETTLE;
            while self.outstanding.contains_key(sock) {
                let left = until.saturating_duration_since(Instant::now());
                let Ok(a) = self.rx.recv_timeout(left) else {
                    tracing::debug!("NAT answer for {sock:?} not in {NAT_SETTLE:?} after asking");
                    break;
                };
                self.take(&mut out, a);
            }
        }
        if self.outstanding.len() > WORKER_QUEUE {
            self.outstanding
                .retain(|_, (t, _)| t.elapsed() < NAT_FORGET);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_go_to_the_connects_namespace_and_the_nodes() {
        let at = |own, node| NatWhere { own, node };
        assert_eq!(lookup_netns(5, Some(1), at(true, false)), [5]);
        // A pod's ClusterIP connect, DNATed by the node.
        assert_eq!(lookup_netns(5, Some(1), at(false, true)), [1]);
        assert_eq!(lookup_netns(5, Some(1), at(true, true)), [5, 1]);
        // A connect in the node's own namespace is asked about once.
        assert_eq!(lookup_netns(1, Some(1), at(true, true)), [1]);
        assert_eq!(lookup_netns(1, Some(1), at(false, true)), [1]);
        // The node's namespace unknown: only the connect's own can be asked.
        assert_eq!(lookup_netns(5, None, at(true, true)), [5]);
        assert!(lookup_netns(5, None, at(false, true)).is_empty());
    }

    #[test]
    fn find_locates_a_namespace_by_inode() {
        let own = inode(Path::new("/proc/self/ns/net")).expect("netlat's own netns");
        let path = find(own).expect("a path into it");
        assert_eq!(inode(&path), Some(own));
        // No namespace has inode 0.
        assert_eq!(find(0), None);
    }
}
