//! Running the peers under test: `netlat watch --output json` (its start-up time, its lines
//! stamped on arrival, its summary), the counting `bpftrace` script, and what the kernel tells
//! about a running netlat: its eBPF programs' run statistics (`kernel.bpf_stats_enabled`,
//! `bpftool prog show`), its maps, and its resident memory.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use super::lab::{Line, Proc};
use crate::json::{self, Value};

/// The tracepoints netlat's programs hang on (and the bpftrace peer counts).
const TRACEPOINTS: [&str; 3] = [
    "sock:inet_sock_set_state",
    "tcp:tcp_retransmit_skb",
    "skb:kfree_skb",
];

/// A running `netlat watch --output json`.
pub struct Netlat {
    pub proc: Proc,
    /// From exec to the `capabilities` line (every hook attached).
    pub startup: Duration,
    /// Where its stdout goes when not read line by line.
    out: Option<PathBuf>,
}

/// What a stopped netlat printed.
pub struct Stopped {
    pub summary: Value,
    /// Every line, when they were read line by line (empty when they went to a file).
    pub lines: Vec<Line>,
}

const CAPS: &str = "{\"type\":\"capabilities\"";
const SUMMARY: &str = "{\"type\":\"summary\"";

/// Fails unless the three tracepoints are attached; other hooks (kprobes) are optional and
/// may be missing on this kernel.
fn check_hooks(caps: &str) -> Result<()> {
    let v = json::parse(caps)?;
    let inactive: Vec<&str> = v
        .get("hooks")
        .arr()
        .iter()
        .filter(|h| h.get("active") != &Value::Bool(true))
        .filter_map(|h| h.get("hook").as_str())
        .filter(|h| TRACEPOINTS.iter().any(|t| h.ends_with(t)))
        .collect();
    if !inactive.is_empty() {
        bail!("netlat could not attach {}", inactive.join(", "));
    }
    Ok(())
}

impl Netlat {
    fn command(bin: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(["watch", "--output", "json"]).args(extra);
        cmd
    }

    /// Starts netlat with its stdout read line by line (each stamped on arrival) and waits
    /// for its capabilities line.
    pub fn start(bin: &Path, extra: &[&str]) -> Result<Netlat> {
        let mut proc = Proc::spawn(Netlat::command(bin, extra), false)?;
        let caps = proc.wait_for(Duration::from_mins(1), |l| l.starts_with(CAPS))?;
        check_hooks(&caps.text)?;
        Ok(Netlat {
            startup: caps.mono.duration_since(proc.started),
            proc,
            out: None,
        })
    }

    /// Starts netlat with its stdout redirected to the file `out` (as `> file`; nothing reads
    /// it while it runs) and waits for the capabilities line to appear there.
    pub fn start_to_file(bin: &Path, extra: &[&str], out: &Path) -> Result<Netlat> {
        let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut proc = Proc::spawn_to(Netlat::command(bin, extra), file.into())?;
        let end = Instant::now() + Duration::from_mins(1);
        loop {
            let text = fs::read_to_string(out).unwrap_or_default();
            // Only whole lines: netlat may be writing the next one.
            let done = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            if let Some(caps) = done.lines().find(|l| l.starts_with(CAPS)) {
                let startup = proc.started.elapsed();
                check_hooks(caps)?;
                return Ok(Netlat {
                    proc,
                    startup,
                    out: Some(out.to_owned()),
                });
            }
            if !proc.running() || Instant::now() > end {
                proc.finish(Duration::from_secs(5))?;
                bail!("netlat printed no capabilities line");
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGINT, wait for the exit (netlat drains the ring buffer first) and read the summary.
    pub fn stop(mut self) -> Result<Stopped> {
        self.proc.signal("INT")?;
        let lines = self.proc.finish(Duration::from_mins(3))?;
        let summary = match &self.out {
            Some(path) => last_line_with(path, SUMMARY)?,
            None => lines
                .iter()
                .rev()
                .find(|l| l.text.starts_with(SUMMARY))
                .map(|l| l.text.clone()),
        }
        .context("netlat printed no summary line")?;
        Ok(Stopped {
            summary: json::parse(&summary)?,
            lines,
        })
    }
}

/// The last line of the file at `path` that starts with `prefix`, read as a stream.
fn last_line_with(path: &Path, prefix: &str) -> Result<Option<String>> {
    let f = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut last = None;
    for line in BufReader::new(f).lines() {
        let line = line?;
        if line.starts_with(prefix) {
            last = Some(line);
        }
    }
    Ok(last)
}

/// Lines of the file at `path` that start with `prefix` and contain `needle`.
pub fn count_lines(path: &Path, prefix: &str, needle: &str) -> Result<u64> {
    let f = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut n = 0;
    for line in BufReader::new(f).lines() {
        let line = line?;
        if line.starts_with(prefix) && line.contains(needle) {
            n += 1;
        }
    }
    Ok(n)
}

/// Sum of a summary's `lost_events`.
pub fn lost_total(summary: &Value) -> u64 {
    summary
        .get("lost_events")
        .members()
        .iter()
        .filter_map(|(_, v)| v.u64())
        .sum()
}

/// The peer: a bpftrace script on the same three tracepoints that only counts.
pub const BPFTRACE_SCRIPT: &str = "\
tracepoint:sock:inet_sock_set_state { @state = count(); }
tracepoint:tcp:tcp_retransmit_skb { @retransmit = count(); }
tracepoint:skb:kfree_skb { @drop = count(); }
";

/// The same probes with empty bodies: what a program that only returns costs under
/// `bpf_stats` on this machine (the floor every program's ns/run includes).
pub const BPFTRACE_EMPTY: &str = "\
tracepoint:sock:inet_sock_set_state { }
tracepoint:tcp:tcp_retransmit_skb { }
tracepoint:skb:kfree_skb { }
";

/// The least per-attempt state a connect-latency tool can keep, in bpftrace on the same three
/// tracepoints: each attempt's start by socket from SYN_SENT to its end, looked up at each SYN
/// retransmit; drops only counted. What any design that remembers attempts in kernel memory
/// pays at least (netlat also keeps the pid, comm, netns and tuple, and ships slow attempts).
pub const BPFTRACE_STATEFUL: &str = "\
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  if (args->newstate == 2) { @start[args->skaddr] = nsecs; }
  else if (args->oldstate == 2) { delete(@start[args->skaddr]); }
}
tracepoint:tcp:tcp_retransmit_skb /args->state == 2/ { @at_retransmit = @start[args->skaddr]; }
tracepoint:skb:kfree_skb { @drop = count(); }
";

/// Room in the stateful script's map for the 100 k attempts of the memory figure (bpftrace's
/// default is 4096 keys, after which updates fail).
const STATEFUL_KEYS: &str = "262144";

/// A running bpftrace.
pub struct Bpftrace {
    proc: Proc,
}

/// The counting, empty and stateful scripts, running beside netlat so that their programs'
/// ns/run come from the same window and the same events as netlat's.
pub struct Peers {
    counting: Bpftrace,
    empty: Bpftrace,
    stateful: Bpftrace,
    /// Their statistics when the window opened.
    opened: Option<PeerStats>,
}

/// Run statistics of the peers' programs over one window.
pub struct PeerStats {
    pub counting: Vec<ProgStat>,
    pub empty: Vec<ProgStat>,
    pub stateful: Vec<ProgStat>,
}

impl Peers {
    /// The three scripts, written to `dir`; `None` when bpftrace is missing.
    pub fn start(bin: Option<&PathBuf>, dir: &Path) -> Result<Option<Peers>> {
        let Some(bin) = bin else { return Ok(None) };
        let (counting, empty) = (dir.join("count.bt"), dir.join("empty.bt"));
        let stateful = dir.join("stateful.bt");
        fs::write(&counting, BPFTRACE_SCRIPT)?;
        fs::write(&empty, BPFTRACE_EMPTY)?;
        fs::write(&stateful, BPFTRACE_STATEFUL)?;
        Ok(Some(Peers {
            counting: Bpftrace::start(bin, &counting)?,
            empty: Bpftrace::start(bin, &empty)?,
            stateful: Bpftrace::start_with(
                bin,
                &stateful,
                &[("BPFTRACE_MAP_KEYS_MAX", STATEFUL_KEYS)],
            )?,
            opened: None,
        }))
    }

    fn stats(&self) -> Result<PeerStats> {
        Ok(PeerStats {
            counting: prog_stats(self.counting.pid())?,
            empty: prog_stats(self.empty.pid())?,
            stateful: prog_stats(self.stateful.pid())?,
        })
    }

    /// Opens the measured window (where netlat's own window opens).
    pub fn open(&mut self) -> Result<()> {
        self.opened = Some(self.stats()?);
        Ok(())
    }

    /// Closes the window and stops both scripts: the runs since `open`. A bpftrace that hangs
    /// on exit (seen once in 0.17, after a drop flood) is killed and noted, not a failed figure.
    pub fn close(self) -> Result<PeerStats> {
        let now = self.stats()?;
        let opened = self.opened.context("peer window closed before it opened")?;
        for b in [self.counting, self.empty, self.stateful] {
            if let Err(e) = b.stop_within(Duration::from_secs(10)) {
                eprintln!("bench: peer bpftrace: {e:#}");
            }
        }
        Ok(PeerStats {
            counting: delta(&opened.counting, &now.counting),
            empty: delta(&opened.empty, &now.empty),
            stateful: delta(&opened.stateful, &now.stateful),
        })
    }
}

impl Bpftrace {
    pub fn start(bin: &Path, script: &Path) -> Result<Bpftrace> {
        Self::start_with(bin, script, &[])
    }

    /// `start` with extra environment (bpftrace's settings are environment variables).
    pub fn start_with(bin: &Path, script: &Path, env: &[(&str, &str)]) -> Result<Bpftrace> {
        let mut cmd = Command::new(bin);
        cmd.arg(script).envs(env.iter().copied());
        let mut proc = Proc::spawn(cmd, false)?;
        proc.wait_for(Duration::from_mins(2), |l| l.starts_with("Attaching"))?;
        Ok(Bpftrace { proc })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGINT; returns the counts bpftrace prints at exit (`@state: 123`).
    pub fn stop(self) -> Result<BTreeMap<String, u64>> {
        self.stop_within(Duration::from_mins(1))
    }

    /// `stop`, killing it when it has not exited after `limit`.
    pub fn stop_within(mut self, limit: Duration) -> Result<BTreeMap<String, u64>> {
        self.proc.signal("INT")?;
        let lines = self.proc.finish(limit)?;
        Ok(lines
            .iter()
            .filter_map(|l| {
                let (k, v) = l.text.split_once(':')?;
                Some((k.trim().to_owned(), v.trim().parse().ok()?))
            })
            .collect())
    }
}

/// Run statistics of one eBPF program.
#[derive(Debug, Clone, Default)]
pub struct ProgStat {
    pub id: u64,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// One eBPF map of a process.
#[derive(Debug, Clone)]
pub struct MapInfo {
    pub name: String,
    pub kind: String,
    pub max_entries: u64,
    pub value_size: u64,
    pub memlock: u64,
}

/// `key:\tvalue` lines of an fdinfo file.
fn fdinfo(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

/// The eBPF program ids and map ids held by `pid` (from /proc/PID/fdinfo: no guessing by name,
/// so other eBPF users on the node are never mixed in).
fn bpf_ids(pid: u32) -> Result<(Vec<u64>, Vec<u64>)> {
    let (mut progs, mut maps) = (Vec::new(), Vec::new());
    let dir = format!("/proc/{pid}/fd");
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let entry = entry?;
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let info_path = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(info) = fs::read_to_string(&info_path) else {
            continue;
        };
        let info = fdinfo(&info);
        let id = |k: &str| info.get(k).and_then(|v| v.parse::<u64>().ok());
        if target == "anon_inode:bpf-prog" {
            progs.extend(id("prog_id"));
        } else if target == "anon_inode:bpf-map" {
            maps.extend(id("map_id"));
        }
    }
    progs.sort_unstable();
    progs.dedup();
    maps.sort_unstable();
    maps.dedup();
    Ok((progs, maps))
}

fn bpftool(args: &[&str]) -> Result<Value> {
    json::parse(&crate::output(Command::new("bpftool").args(args))?)
}

/// Run statistics of `pid`'s programs, from `bpftool prog show id N --json`.
pub fn prog_stats(pid: u32) -> Result<Vec<ProgStat>> {
    let (ids, _) = bpf_ids(pid)?;
    ids.into_iter()
        .map(|id| {
            let v = bpftool(&["prog", "show", "id", &id.to_string(), "--json"])?;
            Ok(ProgStat {
                id,
                name: v.get("name").as_str().unwrap_or("?").to_owned(),
                run_time_ns: v.get("run_time_ns").u64().unwrap_or(0),
                run_cnt: v.get("run_cnt").u64().unwrap_or(0),
            })
        })
        .collect()
}

/// `pid`'s maps, from `bpftool map show id N --json`.
pub fn maps(pid: u32) -> Result<Vec<MapInfo>> {
    let (_, ids) = bpf_ids(pid)?;
    ids.into_iter()
        .map(|id| {
            let v = bpftool(&["map", "show", "id", &id.to_string(), "--json"])?;
            Ok(MapInfo {
                name: v.get("name").as_str().unwrap_or("?").to_owned(),
                kind: v.get("type").as_str().unwrap_or("?").to_owned(),
                max_entries: v.get("max_entries").u64().unwrap_or(0),
                value_size: v.get("bytes_value").u64().unwrap_or(0),
                memlock: v.get("bytes_memlock").u64().unwrap_or(0),
            })
        })
        .collect()
}

/// Per program, the runs and run time between two snapshots.
pub fn delta(before: &[ProgStat], after: &[ProgStat]) -> Vec<ProgStat> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            ProgStat {
                run_time_ns: a.run_time_ns - b.map_or(0, |b| b.run_time_ns),
                run_cnt: a.run_cnt - b.map_or(0, |b| b.run_cnt),
                ..a.clone()
            }
        })
        .collect()
}

/// CPU time `pid` has used, user plus system, all threads, in clock ticks (`/proc/PID/stat`).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).context("unexpected /proc/PID/stat")
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident and peak resident memory of `pid`, KiB (`VmRSS`, `VmHWM`).
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Ok((
        field("VmRSS:").context("no VmRSS")?,
        field("VmHWM:").context("no VmHWM")?,
    ))
}

/// Unix nanoseconds of a wall time.
pub fn unix_ns(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_fields() {
        let info =
            fdinfo("pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_id:\t1234\nrun_cnt:\t7\n");
        assert_eq!(info.get("prog_id"), Some(&"1234"));
        assert_eq!(info.get("run_cnt"), Some(&"7"));
    }

    #[test]
    fn cpu_ticks_from_stat() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 17 5 0 0 20 0 4 0 \
                    100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(22));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn program_deltas() {
        let p = |id, t, c| ProgStat {
            id,
            name: "x".into(),
            run_time_ns: t,
            run_cnt: c,
        };
        let d = delta(&[p(1, 100, 2)], &[p(1, 400, 5), p(2, 50, 1)]);
        assert_eq!((d[0].run_time_ns, d[0].run_cnt), (300, 3));
        assert_eq!((d[1].run_time_ns, d[1].run_cnt), (50, 1));
    }
}
