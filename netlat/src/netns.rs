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
    time::{Duration, Instant},
};

use crate::{
    engine::Counters,
    node::{self, CtCpuStats},
    symbols::CounterEvidence,
};

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

impl NetnsIndex {
    /// Rescan named namespaces and every process's namespace.
    pub fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let mut add = |p: PathBuf| {
            if let Some(ino) = inode(&p) {
                self.paths.entry(ino).or_insert(p);
            }
        };
        add(PathBuf::from("/proc/self/ns/net"));
        if let Ok(dir) = fs::read_dir("/run/netns") {
            for e in dir.flatten() {
                add(e.path());
            }
        }
        if let Ok(dir) = fs::read_dir("/proc") {
            for e in dir.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                {
                    add(e.path().join("ns/net"));
                }
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
        use std::os::fd::AsRawFd;
        // SAFETY: a valid fd of a netns file; setns only changes this thread's namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| std::io::Error::other("netns worker thread panicked"))?
}

/// Per-CPU conntrack statistics of a netns, read from inside it.
pub fn ct_stats(path: &Path) -> Option<Vec<CtCpuStats>> {
    in_netns(path, || {
        fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack")
            .ok()
            .and_then(|t| node::parse_ct_stats(&t).ok())
    })
    .ok()
    .flatten()
}

/// Conntrack counters read live: increments since the previous reading form a per-CPU budget
/// that drops claim one at a time, so a burst of drops read in one go is still attributed
/// one increment per drop.
#[derive(Debug, Default)]
pub struct ProcCounters {
    index: NetnsIndex,
    /// Last reading per netns: cpu → (insert_failed, drop).
    last: HashMap<u32, HashMap<u32, (u64, u64)>>,
    /// Unclaimed increments per (netns, cpu).
    budget: HashMap<(u32, u32), (u64, u64)>,
}

impl ProcCounters {
    /// Take a baseline of every namespace known now.
    pub fn new() -> Self {
        let mut c = ProcCounters::default();
        c.index.scan();
        c.baseline_new();
        c
    }

    /// Read namespaces that have no baseline yet.
    pub fn baseline_new(&mut self) {
        for ns in self.index.known() {
            if !self.last.contains_key(&ns) {
                self.read(ns);
            }
        }
    }

    fn read(&mut self, netns: u32) {
        let Some(path) = self.index.path(netns) else {
            return;
        };
        let Some(stats) = ct_stats(&path) else {
            return;
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
        self.index.scan();
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

/// NAT lookups over ctnetlink in the connect's own namespace.
#[derive(Debug, Default)]
pub struct CtNatLookup {
    index: NetnsIndex,
}

impl crate::engine::NatLookup for CtNatLookup {
    fn wire_tuple(
        &mut self,
        netns: u32,
        tuple: crate::packet::FiveTuple,
    ) -> Option<crate::packet::FiveTuple> {
        let path = self.index.path(netns)?;
        let entry = match in_netns(&path, move || crate::ctnl::lookup(&tuple)) {
            Ok(Ok(e)) => e?,
            Ok(Err(e)) => {
                tracing::debug!("conntrack lookup of {tuple} in netns {netns}: {e}");
                return None;
            }
            Err(e) => {
                tracing::debug!("entering netns {netns}: {e}");
                return None;
            }
        };
        let wire = entry.wire_tuple();
        (wire != tuple).then_some(wire)
    }
}
