//! Limits and endings: the size of the kernel's ring buffer and of the flow tracker (operator
//! knobs read from the environment once, at start), the loss monitor that turns rising kernel
//! loss counters into `{"type":"loss",…}` lines while `watch` runs, and the watcher that notices
//! a reader of stdout going away.
//!
//! - `NETLAT_RING_BYTES`: bytes of the `EVENTS` ring buffer (default 4 MiB); a power of two and
//!   a multiple of the page size. Larger rides out longer consumer stalls.
//! - `NETLAT_MAX_FLOWS`: connection attempts tracked at once (default 100 000); beyond it the
//!   oldest is evicted and counted (`tracker.evicted` in the summary).
//! - `NETLAT_SWEEP_SECS`: seconds between two sweeps of the kernel's attempt table (default 30,
//!   `kernel::sweep`). Undocumented for users: lab tests set 1 so that a sweep shows within a
//!   test's few seconds, as they shrink the ring; an environment variable, like those, so the
//!   command line and `--help` stay the user's.

use std::{collections::BTreeMap, time::Duration};

use netlat_core::flow::TrackerConfig;
use serde::Serialize;

pub const RING_BYTES_VAR: &str = "NETLAT_RING_BYTES";
pub const MAX_FLOWS_VAR: &str = "NETLAT_MAX_FLOWS";
pub const SWEEP_SECS_VAR: &str = "NETLAT_SWEEP_SECS";

/// The operator's limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Ring-buffer bytes, when not the object's default.
    pub ring_bytes: Option<u32>,
    /// Tracked attempts at most, when not the default.
    pub max_flows: Option<usize>,
    /// Time between two sweeps of the attempt table, when not the default
    /// (`kernel::sweep::SWEEP_EVERY`).
    pub sweep_every: Option<Duration>,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Validate a `NETLAT_RING_BYTES` value for pages of `page` bytes.
pub fn parse_ring_bytes(s: &str, page: u64) -> Result<u32, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{RING_BYTES_VAR}={s:?} is not a number of bytes"))?;
    if !n.is_power_of_two() || n < page || n > 1 << 30 {
        return Err(format!(
            "{RING_BYTES_VAR}={s:?} must be a power of two from the page size ({page}) to 1 GiB"
        ));
    }
    Ok(n as u32)
}

/// Validate a `NETLAT_MAX_FLOWS` value.
pub fn parse_max_flows(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=10_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{MAX_FLOWS_VAR}={s:?} must be a number of flows from 1 to 10000000"
        )),
    }
}

/// Validate a `NETLAT_SWEEP_SECS` value.
pub fn parse_sweep_secs(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "{SWEEP_SECS_VAR}={s:?} must be a number of seconds from 1 to 3600"
        )),
    }
}

impl Limits {
    /// Read the knobs; a set but invalid value is an error naming the variable.
    pub fn from_env() -> Result<Limits, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(Limits {
            ring_bytes: var(RING_BYTES_VAR)
                .map(|v| parse_ring_bytes(&v, page_size()))
                .transpose()?,
            max_flows: var(MAX_FLOWS_VAR)
                .map(|v| parse_max_flows(&v))
                .transpose()?,
            sweep_every: var(SWEEP_SECS_VAR)
                .map(|v| parse_sweep_secs(&v))
                .transpose()?,
        })
    }

    /// The tracker's configuration under these limits.
    pub fn tracker(&self) -> TrackerConfig {
        let mut t = TrackerConfig::default();
        if let Some(n) = self.max_flows {
            t.max_flows = n;
        }
        t
    }
}

/// The ring size the loader should set, if the environment asks for a valid one (an invalid
/// value was already refused by [`Limits::from_env`] in `watch`).
pub fn ring_bytes() -> Option<u32> {
    Limits::from_env().ok()?.ring_bytes
}

/// `{"type":"loss","kind":"drop","lost":N,"total":M}`: `lost` more events of `kind` could not
/// be reserved in the ring buffer since the previous line; `total` since the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LossLine {
    #[serde(rename = "type")]
    pub kind_tag: &'static str,
    pub kind: String,
    pub lost: u64,
    pub total: u64,
}

/// Remembers the kernel's loss counters and reports each rise once.
#[derive(Debug, Default)]
pub struct LossMonitor {
    seen: BTreeMap<String, u64>,
}

impl LossMonitor {
    /// The lines for counters (per kind name, as `loader::lost_events` returns them) that rose.
    pub fn update(&mut self, counts: &[(&str, u64)]) -> Vec<LossLine> {
        let mut lines = Vec::new();
        for &(kind, total) in counts {
            let prev = self.seen.entry(kind.to_string()).or_insert(0);
            if total > *prev {
                lines.push(LossLine {
                    kind_tag: "loss",
                    kind: kind.to_string(),
                    lost: total - *prev,
                    total,
                });
                *prev = total;
            }
        }
        lines
    }
}

/// Completes when nobody reads stdout any more: the read end of the pipe it writes into was
/// closed (`netlat watch | head -1`), so netlat can stop at once instead of at its next write.
/// Never completes for a file, a terminal or anything `epoll` cannot watch.
pub async fn stdout_closed() {
    use std::os::fd::{FromRawFd as _, OwnedFd};

    use tokio::io::{Interest, unix::AsyncFd};

    // A duplicate, so the watcher owns its descriptor and stdout itself is left alone.
    // SAFETY: F_DUPFD_CLOEXEC on fd 1 returns a new descriptor or -1.
    let fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return std::future::pending().await;
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A pipe's write end reports EPOLLERR once its last reader is gone.
    // SAFETY: the AsyncFd owns the descriptor, so it stays open while it is registered.
    let Ok(watch) = (unsafe { AsyncFd::register_with_interest(fd, Interest::ERROR) }) else {
        return std::future::pending().await;
    };
    loop {
        match watch.ready(Interest::ERROR).await {
            Ok(g) if g.ready().is_error() => return,
            Ok(mut g) => g.clear_ready(),
            Err(_) => return std::future::pending().await,
        }
    }
}

/// Hand back to the kernel the heap that start-up used and freed (the parsed kernel BTF, the
/// kallsyms text: tens of MiB, see BENCHMARKS.md): glibc keeps freed small blocks in the heap, so without this the
/// resident size stays at its start-up peak for the whole run.
pub fn release_startup_memory() {
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_bytes_must_be_a_page_multiple_power_of_two() {
        assert_eq!(parse_ring_bytes("65536", 4096), Ok(65536));
        assert_eq!(parse_ring_bytes("4096", 4096), Ok(4096));
        for bad in ["", "64k", "-4096", "2048", "12288", "4294967296"] {
            let e = parse_ring_bytes(bad, 4096).unwrap_err();
            assert!(e.starts_with("NETLAT_RING_BYTES="), "{e}");
        }
    }

    #[test]
    fn max_flows_bounds() {
        assert_eq!(parse_max_flows("1000"), Ok(1000));
        assert!(parse_max_flows("0").is_err());
        assert!(parse_max_flows("lots").is_err());
        let t = Limits {
            max_flows: Some(7),
            ..Limits::default()
        }
        .tracker();
        assert_eq!(t.max_flows, 7);
        assert_eq!(
            Limits::default().tracker().max_flows,
            TrackerConfig::default().max_flows
        );
    }

    #[test]
    fn sweep_secs_bounds() {
        assert_eq!(parse_sweep_secs("1"), Ok(Duration::from_secs(1)));
        for bad in ["0", "3601", "1.5", "soon"] {
            let e = parse_sweep_secs(bad).unwrap_err();
            assert!(e.starts_with("NETLAT_SWEEP_SECS="), "{e}");
        }
    }

    #[test]
    fn loss_lines_only_when_a_counter_rises() {
        let mut m = LossMonitor::default();
        assert!(m.update(&[("connect", 0), ("drop", 0)]).is_empty());
        let l = m.update(&[("connect", 0), ("drop", 5)]);
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"[{"type":"loss","kind":"drop","lost":5,"total":5}]"#
        );
        assert!(m.update(&[("drop", 5)]).is_empty());
        let l = m.update(&[("drop", 12), ("retransmit", 1)]);
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].lost, l[0].total), (7, 12));
        assert_eq!(l[1].kind, "retransmit");
    }
}
