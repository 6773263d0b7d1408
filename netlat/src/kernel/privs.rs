//! Least privilege after attach. Loading and attaching the eBPF programs needs CAP_BPF and
//! CAP_PERFMON (or CAP_SYS_ADMIN); once they are attached, `watch` only still needs what its
//! per-namespace lookups use, and drops everything else from the effective, permitted,
//! inheritable, ambient and bounding sets. It also sets `no_new_privs`: netlat runs no other
//! program, so nothing it could ever execute may gain privileges.
//!
//! What stays, and why ([`KEEP`]):
//! - `CAP_SYS_ADMIN`: `setns(2)` into a pod's network namespace to read its conntrack counters,
//!   NAT entries and node facts (`netns`, `node`).
//! - `CAP_NET_ADMIN`: the netlink dumps made there — nfnetlink (nftables rules, conntrack), IPVS
//!   generic netlink, iptables-legacy `getsockopt`.
//! - `CAP_SYS_PTRACE`: opening `/proc/PID/ns/net` of processes of other users.
//! - `CAP_DAC_READ_SEARCH`: opening `/run/netns/NAME`, which `ip netns` creates with mode 0.
//!
//! Capabilities are per thread: the drop applies to the calling thread and to threads it
//! creates afterwards, so it must run before any other thread is started; [`drop_after_attach`]
//! reports threads that still hold more.

use std::{fs, io};

/// `CAP_DAC_READ_SEARCH`, `CAP_NET_ADMIN`, `CAP_SYS_PTRACE`, `CAP_SYS_ADMIN` and why each stays.
pub const KEEP: &[(u32, &str)] = &[
    (2, "open /run/netns/* (mode 0)"),
    (12, "netlink dumps of nftables, conntrack and IPVS"),
    (19, "open /proc/PID/ns/net of other users' processes"),
    (21, "setns into pod network namespaces"),
];

/// Names of capability numbers 0..=40 (linux/capability.h).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The name of capability `cap` (`CAP_<n>` for numbers newer than this table).
pub fn cap_name(cap: u32) -> String {
    NAMES
        .get(cap as usize)
        .map_or_else(|| format!("CAP_{cap}"), |n| (*n).to_string())
}

/// The capabilities set in `mask`, by name, in number order.
pub fn cap_names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|c| mask & (1u64 << c) != 0)
        .map(cap_name)
        .collect()
}

/// The mask of [`KEEP`].
pub fn keep_mask() -> u64 {
    KEEP.iter().fold(0, |m, (c, _)| m | (1u64 << c))
}

/// A capability mask line (`CapEff:`, `CapBnd:`, …) of a /proc status text.
pub fn status_mask(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// What the drop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Effective set before.
    pub before: u64,
    /// Effective set after.
    pub after: u64,
    /// Other threads (`/proc/self/task/TID`) still holding capabilities outside [`KEEP`].
    pub stray_threads: Vec<u32>,
}

impl Dropped {
    /// One line for `--verbose`.
    pub fn describe(&self) -> String {
        let dropped = cap_names(self.before & !self.after);
        let kept = cap_names(self.after);
        let mut s = format!(
            "netlat: dropped capabilities {}; keeping {} (no_new_privs set)",
            if dropped.is_empty() {
                "none".to_string()
            } else {
                dropped.join(",")
            },
            if kept.is_empty() {
                "none".to_string()
            } else {
                kept.join(",")
            }
        );
        if !self.stray_threads.is_empty() {
            s.push_str(&format!(
                "; threads started before the drop keep more: {:?}",
                self.stray_threads
            ));
        }
        s
    }
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capget() -> io::Result<[CapData; 2]> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: v3 header and a two-element data array, as capget(2) requires.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

fn capset(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |m: u64| [m as u32, (m >> 32) as u32];
    let (e, p, i) = (split(effective), split(permitted), split(inheritable));
    let data = [
        CapData {
            effective: e[0],
            permitted: p[0],
            inheritable: i[0],
        },
        CapData {
            effective: e[1],
            permitted: p[1],
            inheritable: i[1],
        },
    ];
    // SAFETY: v3 header and a two-element data array, as capset(2) requires.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn prctl(op: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the prctl operations used here take integer arguments only.
    let rc = unsafe { libc::prctl(op, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn last_cap() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
        .min(63)
}

/// Keep only [`KEEP`] (those of it the process has) in every capability set of this thread and
/// of the threads it creates from now on, and set `no_new_privs`.
pub fn drop_after_attach() -> io::Result<Dropped> {
    let data = capget()?;
    let join = |f: fn(&CapData) -> u32| u64::from(f(&data[0])) | (u64::from(f(&data[1])) << 32);
    let before = join(|d| d.effective);
    let permitted = join(|d| d.permitted);
    let keep = keep_mask() & permitted;

    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)?;
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    for cap in 0..=last_cap() {
        if keep & (1u64 << cap) == 0 {
            match prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap)) {
                // EPERM: no CAP_SETPCAP (not root); EINVAL: the kernel has no such capability.
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    // Ambient capabilities would survive an execve; clearing them needs no privilege.
    match prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    ) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    capset(keep, keep, 0)?;

    let after = capget().map(|d| u64::from(d[0].effective) | (u64::from(d[1].effective) << 32))?;
    Ok(Dropped {
        before,
        after,
        stray_threads: stray_threads(after),
    })
}

/// Threads of this process whose effective set holds more than `allowed`.
fn stray_threads(allowed: u64) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut v: Vec<u32> = dir
        .flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let status = fs::read_to_string(e.path().join("status")).ok()?;
            let eff = status_mask(&status, "CapEff")?;
            (eff & !allowed != 0).then_some(tid)
        })
        .collect();
    v.sort_unstable();
    v
}

/// [`drop_after_attach`] for `watch`: a failure is a warning (netlat keeps working with what it
/// has); with `verbose` the outcome is one line on stderr.
pub fn drop_for_watch(verbose: bool) {
    match drop_after_attach() {
        Ok(d) => {
            if !d.stray_threads.is_empty() {
                tracing::warn!("{}", d.describe());
            } else if verbose {
                eprintln!("{}", d.describe());
            }
        }
        Err(e) => tracing::warn!("could not drop capabilities after attaching: {e}"),
    }
}

/// Why the locked-memory limit stayed where it was.
#[derive(Debug)]
pub struct MemlockKept {
    /// The soft limit in force, in words.
    pub limit: String,
    pub why: String,
}

impl std::fmt::Display for MemlockKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the locked-memory limit is {} and could not be lifted ({}): kernels before 5.11 \
             charge eBPF maps to it, so run netlat with `ulimit -l unlimited` (or \
             CAP_SYS_RESOURCE)",
            self.limit, self.why
        )
    }
}

/// Lifts the locked-memory limit before anything is loaded: kernels before 5.11 charge eBPF maps
/// to `RLIMIT_MEMLOCK`, and a container's usual 64 KiB would refuse the 4 MiB ring buffer
/// (<https://lwn.net/Articles/837122/>, as aya's template does). Later kernels charge the memory
/// cgroup instead, so a failure is said only if the load then fails (the loader names it).
pub fn raise_memlock() -> Result<(), MemlockKept> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) } == 0 {
        return Ok(());
    }
    let why = io::Error::last_os_error().to_string();
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a valid rlimit into `now`.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut now) } != 0 {
        "unknown".to_string()
    } else if now.rlim_cur == libc::RLIM_INFINITY {
        return Ok(());
    } else {
        format!("{} KiB", now.rlim_cur / 1024)
    };
    tracing::debug!("RLIMIT_MEMLOCK stays at {limit}: {why}");
    Err(MemlockKept { limit, why })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_masks() {
        assert_eq!(cap_name(21), "CAP_SYS_ADMIN");
        assert_eq!(cap_name(39), "CAP_BPF");
        assert_eq!(cap_name(45), "CAP_45");
        assert_eq!(
            cap_names(keep_mask()),
            [
                "CAP_DAC_READ_SEARCH",
                "CAP_NET_ADMIN",
                "CAP_SYS_PTRACE",
                "CAP_SYS_ADMIN"
            ]
        );
        let status = "Name:\tnetlat\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n\
                      CapBnd:\t0000000000281004\n";
        assert_eq!(status_mask(status, "CapEff"), Some(0x1ff_ffff_ffff));
        assert_eq!(status_mask(status, "CapBnd"), Some(keep_mask()));
        assert_eq!(status_mask(status, "CapAmb"), None);
    }

    #[test]
    fn describe_names_both_sides() {
        let d = Dropped {
            before: (1 << 39) | (1 << 38) | (1 << 21),
            after: 1 << 21,
            stray_threads: vec![],
        };
        assert_eq!(
            d.describe(),
            "netlat: dropped capabilities CAP_PERFMON,CAP_BPF; keeping CAP_SYS_ADMIN \
             (no_new_privs set)"
        );
    }
}
