//! Prepares and loads the eBPF programs in three steps: [`gather`] reads what the kernel offers
//! (tracefs formats, BTF, kallsyms, environment) into [`KernelFacts`]; [`plan`] decides, without
//! a syscall, the `CONFIG` and a ladder of attach rungs per evidence source; [`apply`] loads and
//! attaches, falling a rung when the kernel refuses one. Each evidence source that cannot work
//! on this kernel is reported as a missing [`Hook`]; only the connect tracepoint is essential.

pub mod apply;
pub mod gather;
pub mod plan;
#[cfg(test)]
mod tests;

use std::{fs, os::fd::AsFd as _};

use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData, MapError, PerCpuArray},
    sys::SyscallError,
};
use netlat_common::{
    EventHeader, PendingAttempt, SockStateEvent, attempt_flag, attempt_stat, kind,
};
use netlat_core::{enrich::Names, report::Hook};

pub use self::{
    apply::AttachError,
    gather::KernelFacts,
    plan::{AttachPlan, Placement, Rung, Unusable},
};
use crate::kernel::tracefs;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "netlat needs root (or CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) to load its eBPF \
         programs; missing: {missing}. Run it with sudo"
    )]
    Privileges { missing: String },
    #[error(
        "this netlat binary was built without its eBPF programs (AYA_BUILD_SKIP); rebuild \
         with `cargo build --release` after `cargo xtask setup`"
    )]
    NoObject,
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    /// No rung of the connect ladder can be used (the reason is the lowest rung's).
    #[error("the connect tracepoint sock:inet_sock_set_state cannot be used: {why}")]
    Essential { why: Unusable },
    #[error("loading the eBPF programs failed: {0}")]
    Load(#[source] aya::EbpfError),
    /// The load failed while the locked-memory limit could not be lifted (kernels < 5.11
    /// charge maps to it): likely the cause, so it is named.
    #[error("loading the eBPF programs failed: {source}; {kept}")]
    Memlock {
        #[source]
        source: aya::EbpfError,
        kept: Box<crate::kernel::privs::MemlockKept>,
    },
}

/// Everything `watch` needs after a successful load.
pub struct Loaded {
    pub ebpf: Ebpf,
    /// `uname -r` of the running kernel.
    pub kernel: String,
    pub hooks: Vec<Hook>,
    pub names: Names,
    pub has_reasons: bool,
}

/// `NETLAT_TRACEPOINTS_ONLY=1`: use the classic tracepoint programs even where tp_btf works
/// (the rung below, for a kernel whose BTF misleads, and for testing that rung).
pub const TRACEPOINTS_ONLY_VAR: &str = "NETLAT_TRACEPOINTS_ONLY";

/// Check privileges, gather, plan, apply. `verbose` turns on the programs' aya-log diagnostics;
/// attempts faster than `connect_threshold_ns` with no SYN retransmit stay in the kernel.
pub fn load(verbose: bool, connect_threshold_ns: u64) -> Result<Loaded, LoadError> {
    check_privileges()?;
    let memlock = crate::kernel::privs::raise_memlock();
    if !apply::has_object() {
        return Err(LoadError::NoObject);
    }
    let (facts, aya_btf) = gather::gather()?;
    let mut plan = plan::plan(
        &facts,
        &plan::Options {
            verbose,
            connect_threshold_ns,
        },
    )
    .map_err(|why| LoadError::Essential { why })?;
    let ebpf = apply::apply(&mut plan, aya_btf.as_ref()).map_err(|e| match (e, memlock) {
        (LoadError::Load(source), Err(kept)) => LoadError::Memlock {
            source,
            kept: Box::new(kept),
        },
        (e, _) => e,
    })?;
    let hooks = plan.hooks();
    let mut names = plan.names;
    names.kallsyms = facts.kallsyms;
    Ok(Loaded {
        ebpf,
        kernel: facts.release,
        hooks,
        names,
        has_reasons: plan.has_reasons,
    })
}

/// Capability bits of /proc/self/status `CapEff`.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Parse the effective capability mask from /proc/self/status text.
pub fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The capabilities missing for loading and attaching tracepoint programs, empty when fine.
pub fn missing_caps(cap_eff: u64) -> Vec<&'static str> {
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Vec::new();
    }
    let mut v = Vec::new();
    if !has(CAP_BPF) {
        v.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        v.push("CAP_PERFMON");
    }
    v
}

fn check_privileges() -> Result<(), LoadError> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let missing = match cap_eff(&status) {
        Some(c) => missing_caps(c),
        None => vec!["CAP_BPF", "CAP_PERFMON"],
    };
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LoadError::Privileges {
            missing: missing.join(", "),
        })
    }
}

/// Events the kernel could not reserve in the ring buffer, summed over CPUs, per kind name.
pub fn lost_events(ebpf: &Ebpf) -> Vec<(&'static str, u64)> {
    let Some(map) = ebpf.map("LOST") else {
        return Vec::new();
    };
    let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else {
        return Vec::new();
    };
    [
        ("connect", kind::SOCK_STATE),
        ("retransmit", kind::RETRANSMIT),
        ("drop", kind::DROP),
        ("hook_drop", kind::HOOK_DROP),
        ("ipvs_expire", kind::IPVS_EXPIRE),
    ]
    .into_iter()
    .map(|(name, k)| {
        let n = arr.get(&k, 0).map_or(0, |v| v.iter().sum());
        (name, n)
    })
    .collect()
}

/// Runs of each loaded program that the kernel skipped, by program name: a run of the same
/// program was already in progress on that CPU (an interrupt's softirq nested it), so
/// `__bpf_trace_run`'s recursion guard (kprobes and classic tracepoints: the per-CPU
/// `bpf_prog_active`) dropped the event before any program saw it. No ring-buffer count
/// includes them. Read from `recursion_misses` in the program's fdinfo (5.12+); a program
/// whose kernel does not count them is left out.
pub fn skipped_runs(ebpf: &Ebpf) -> Vec<(String, u64)> {
    use std::os::fd::AsRawFd as _;
    ebpf.programs()
        .filter_map(|(name, prog)| {
            let fd = prog.fd().ok()?.as_fd().as_raw_fd();
            let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
            Some((name.to_owned(), recursion_misses(&info)?))
        })
        .collect()
}

/// The `recursion_misses:` count of a program's fdinfo text.
fn recursion_misses(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("recursion_misses:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The kernel's attempt-table counters, summed over CPUs, by name (see
/// `netlat_core::flow::TrackerStats::set_kernel`).
pub fn attempt_stats(ebpf: &Ebpf) -> Vec<(&'static str, u64)> {
    let Some(arr) = ebpf
        .map("ATTEMPT_STATS")
        .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok())
    else {
        return Vec::new();
    };
    [
        ("fast", attempt_stat::FAST),
        ("table_full", attempt_stat::TABLE_FULL),
        ("replaced", attempt_stat::REPLACED),
    ]
    .into_iter()
    .map(|(name, i)| (name, arr.get(&i, 0).map_or(0, |v| v.iter().sum())))
    .collect()
}

/// The kernel's `PROC_CGROUP` map: the cgroup id each process last connected from.
pub struct ProcCgroups(HashMap<MapData, u32, u64>);

impl crate::node::pods::CgroupIds for ProcCgroups {
    fn of(&self, tgid: u32) -> Option<u64> {
        self.0.get(&tgid, 0).ok()
    }
}

/// Takes `PROC_CGROUP` out of the object for the pod lookups (`None`: the object has none).
pub fn proc_cgroups(ebpf: &mut Ebpf) -> Option<ProcCgroups> {
    let m = ebpf.take_map("PROC_CGROUP")?;
    HashMap::try_from(m).ok().map(ProcCgroups)
}

/// Every entry of the attempt table (by socket address), shipped or not; `None` when the table
/// cannot be read. An entry is an attempt in SYN_SENT, unless the programs missed its end.
pub fn attempt_table(ebpf: &Ebpf) -> Option<Vec<(u64, PendingAttempt)>> {
    Some(attempts(ebpf)?.iter().filter_map(Result::ok).collect())
}

/// The attempt table, borrowed from the loaded object (`None`: the object has none).
fn attempts(ebpf: &Ebpf) -> Option<HashMap<&MapData, u64, PendingAttempt>> {
    ebpf.map("ATTEMPTS").and_then(|m| HashMap::try_from(m).ok())
}

/// User space's own handle on the attempt table.
pub type AttemptMap = HashMap<MapData, u64, PendingAttempt>;

/// A handle of user space's own on the attempt table (its fd duplicated), for a sweep on another
/// thread while the object stays here; `Ok(None)` when the object has no such table.
pub fn attempt_map(ebpf: &Ebpf) -> Result<Option<AttemptMap>, MapError> {
    let Some(Map::HashMap(data)) = ebpf.map("ATTEMPTS") else {
        return Ok(None);
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|io_error| SyscallError {
            call: "dup",
            io_error,
        })?;
    HashMap::try_from(Map::HashMap(MapData::from_fd(fd)?)).map(Some)
}

/// How many of `skaddrs` the attempt table still holds.
pub fn still_in_table(ebpf: &Ebpf, skaddrs: &[u64]) -> u64 {
    let Some(map) = attempts(ebpf) else {
        return 0;
    };
    skaddrs
        .iter()
        .map(|k| u64::from(map.get(k, 0).is_ok()))
        .sum()
}

/// The attempts of `table` that the kernel never shipped, as the start events it would have
/// shipped (flagged `AT_STOP`), oldest first: at stop they are fed to the engine like ring
/// items, so a slow one still waiting is reported and a recording holds it.
pub fn pending_attempts(table: &[(u64, PendingAttempt)]) -> Vec<SockStateEvent> {
    let mut v: Vec<SockStateEvent> = table
        .iter()
        .filter(|(_, a)| a.flags & attempt_flag::SHIPPED == 0)
        .map(|(skaddr, a)| pending_start(*skaddr, a))
        .collect();
    v.sort_unstable_by_key(|e| (e.header.ts_ns, e.skaddr));
    v
}

/// The start event of a table entry, as the programs ship a deferred start.
pub fn pending_start(skaddr: u64, a: &PendingAttempt) -> SockStateEvent {
    SockStateEvent {
        header: EventHeader {
            kind: kind::SOCK_STATE,
            cpu: a.cpu,
            ts_ns: a.start_ns,
        },
        skaddr,
        netns: a.netns,
        tgid: a.tgid,
        // connect() moves a socket from TCP_CLOSE into TCP_SYN_SENT (tcp_states.h).
        oldstate: 7,
        newstate: 2,
        addrs: a.addrs,
        comm: a.comm,
        start_ns: a.start_ns,
        flags: (a.flags & !attempt_flag::SHIPPED) | attempt_flag::DEFERRED | attempt_flag::AT_STOP,
        _pad: 0,
    }
}
