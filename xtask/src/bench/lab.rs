//! The benchmark's lab: network namespaces, processes, a global sysctl and a temporary
//! directory, each removed, killed or restored on drop, so nothing outlives a run, also when a
//! figure fails half-way. Names carry the PID of the bench (`nlb<pid>-<tag>`); namespaces left
//! by a bench that was killed are swept at the next start. Processes are signalled by the PID
//! we started, never by name.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use crate::{display, output};

/// Prefix of every name the bench creates.
const PREFIX: &str = "nlb";

/// Runs `program args` and fails with the command and its first stderr line.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    output(Command::new(program).args(args))
}

/// A network namespace, deleted on drop (which also removes its veth ends and nft rules).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Result<Netns> {
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        // Keep IPv6 router and neighbour chatter out of the drop counts.
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS`
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut v = vec!["-n", &self.name];
        v.extend_from_slice(args);
        run("ip", &v).map(drop)
    }

    /// A command run inside the namespace (`ip netns exec`, which execs: the PID is the
    /// program's own).
    pub fn cmd(&self, program: impl AsRef<Path>, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(program.as_ref())
            .args(args);
        c
    }

    pub fn output(&self, program: &str, args: &[&str]) -> Result<String> {
        output(&mut self.cmd(program, args))
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.output("sysctl", &["-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Loads an nftables ruleset into the namespace.
    pub fn nft(&self, ruleset: &str) -> Result<()> {
        let mut cmd = self.cmd("nft", &["-f", "-"]);
        let shown = display(&cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start `{shown}`"))?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(ruleset.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "`{shown}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The packet count of the counter on the rule of `chain` (in `table`, family inet) whose
    /// text contains `rule_has`.
    pub fn nft_packets(&self, table: &str, chain: &str, rule_has: &str) -> Result<u64> {
        let text = self.output("nft", &["list", "chain", "inet", table, chain])?;
        let line = text
            .lines()
            .find(|l| l.contains(rule_has) && l.contains("counter"))
            .with_context(|| format!("no counter rule with `{rule_has}` in {table}/{chain}"))?;
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "packets" {
                return Ok(words.next().context("packets without a number")?.parse()?);
            }
        }
        bail!("no packet count in `{line}`")
    }

    /// Inode number of the namespace, which netlat reports as `netns`.
    pub fn inode(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt as _;
        Ok(fs::metadata(format!("/run/netns/{}", self.name))?.ino())
    }

    /// The MAC address of interface `dev`.
    pub fn mac(&self, dev: &str) -> Result<String> {
        let text = run("ip", &["-n", &self.name, "-j", "link", "show", "dev", dev])?;
        let v = crate::json::parse(&text)?;
        v.arr()
            .first()
            .and_then(|l| l.get("address").as_str())
            .map(str::to_owned)
            .with_context(|| format!("no MAC address for {dev} in {}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// An interface name with the bench's PID; Linux allows 15 bytes.
pub fn ifname(tag: &str) -> Result<String> {
    let name = format!("nb{}{tag}", std::process::id());
    if name.len() > 15 {
        bail!("interface name {name} is longer than 15 bytes");
    }
    Ok(name)
}

/// Joins two namespaces with a veth pair, `a_ip`/`b_ip` with their prefix length, and pins
/// each side's neighbour entry for the other: no ARP, so no packet waits in (or is dropped
/// from) a neighbour queue while an address resolves.
pub fn veth(a: &Netns, a_ip: &str, b: &Netns, b_ip: &str, tag: &str) -> Result<()> {
    let (a_if, b_if) = (ifname(&format!("{tag}a"))?, ifname(&format!("{tag}b"))?);
    run(
        "ip",
        &[
            "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
            &b.name,
        ],
    )?;
    a.ip(&["addr", "add", a_ip, "dev", &a_if])?;
    b.ip(&["addr", "add", b_ip, "dev", &b_if])?;
    a.ip(&["link", "set", &a_if, "up"])?;
    b.ip(&["link", "set", &b_if, "up"])?;
    let host = |cidr: &str| cidr.split('/').next().unwrap_or(cidr).to_owned();
    let (a_mac, b_mac) = (a.mac(&a_if)?, b.mac(&b_if)?);
    a.ip(&[
        "neigh",
        "replace",
        &host(b_ip),
        "lladdr",
        &b_mac,
        "dev",
        &a_if,
        "nud",
        "permanent",
    ])?;
    b.ip(&[
        "neigh",
        "replace",
        &host(a_ip),
        "lladdr",
        &a_mac,
        "dev",
        &b_if,
        "nud",
        "permanent",
    ])?;
    Ok(())
}

/// The PID in one of our names (`nlb<pid>-…`) when that process no longer runs.
fn dead_owner(name: &str) -> Option<u32> {
    let pid = name
        .strip_prefix(PREFIX)?
        .split('-')
        .next()?
        .parse::<u32>()
        .ok()?;
    (!Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
}

/// Undoes what a killed bench left behind: its namespaces (ours by prefix, whose PID no
/// longer runs) and the global sysctls it had changed.
pub fn sweep_stale() {
    for entry in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if dead_owner(&name).is_some() {
            eprintln!("bench: removing namespace {name} left by an earlier run");
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
    for entry in fs::read_dir(MARKERS).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if dead_owner(&name).is_none() {
            continue;
        }
        if let Some((key, old)) = fs::read_to_string(entry.path())
            .ok()
            .as_deref()
            .and_then(|t| t.split_once('='))
        {
            eprintln!("bench: restoring {key}={old} left by an earlier run");
            let _ = fs::write(sysctl_path(key), old.trim());
        }
        let _ = fs::remove_file(entry.path());
    }
}

/// A line a child printed, stamped when the bench read it.
#[derive(Debug, Clone)]
pub struct Line {
    pub mono: Instant,
    pub wall: SystemTime,
    pub text: String,
}

/// A child process we started: its stdout lines arrive stamped on a channel, its stderr is
/// kept for error messages. Killed (SIGKILL, by PID) and reaped on drop if still running.
pub struct Proc {
    pub what: String,
    child: Child,
    lines: Receiver<Line>,
    /// Every line received so far.
    pub seen: Vec<Line>,
    stderr: Arc<Mutex<String>>,
    pub started: Instant,
}

impl Proc {
    /// Starts `cmd` with its stdout read line by line; `stdin` gives it a pipe to close.
    pub fn spawn(cmd: Command, stdin: bool) -> Result<Proc> {
        Proc::start(cmd, stdin, Stdio::piped())
    }

    /// Starts `cmd` with its stdout sent to `stdout` (a file, /dev/null), not read.
    pub fn spawn_to(cmd: Command, stdout: Stdio) -> Result<Proc> {
        Proc::start(cmd, false, stdout)
    }

    fn start(mut cmd: Command, stdin: bool, stdout: Stdio) -> Result<Proc> {
        let what = display(&cmd);
        cmd.stdout(stdout).stderr(Stdio::piped());
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() });
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start `{what}`"))?;
        let stderr = child.stderr.take().context("child stderr")?;
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            thread::spawn(move || {
                for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let line = Line {
                        mono: Instant::now(),
                        wall: SystemTime::now(),
                        text,
                    };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let err = Arc::new(Mutex::new(String::new()));
        let err2 = Arc::clone(&err);
        thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut e) = err2.lock() {
                    // Keep the tail only.
                    if e.len() > 8192 {
                        e.clear();
                    }
                    e.push_str(&l);
                    e.push('\n');
                }
            }
        });
        Ok(Proc {
            what,
            child,
            lines: rx,
            seen: Vec::new(),
            stderr: err,
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child has not exited yet.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Closes the child's stdin (the `synhold` load's signal to exit).
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .map(|e| e.trim().lines().last().unwrap_or("").to_owned())
            .unwrap_or_default()
    }

    /// Waits until a line satisfies `pred`; every line read is kept in `seen`.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<Line> {
        if let Some(l) = self.seen.iter().find(|l| pred(&l.text)) {
            return Ok(l.clone());
        }
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l.text) {
                        return Ok(l);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "`{}` printed no expected line within {timeout:?}",
                        self.what
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    bail!(
                        "`{}` exited ({status}) before the expected line: {}",
                        self.what,
                        self.stderr_tail()
                    )
                }
            }
        }
    }

    /// Waits for the `ready` line of a load program.
    pub fn ready(&mut self) -> Result<()> {
        self.wait_for(Duration::from_mins(1), |l| l == "ready")
            .map(drop)
    }

    /// Moves lines received so far into `seen` without waiting.
    pub fn pump(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// Sends `signal` (e.g. "INT") to the child, by its PID.
    pub fn signal(&self, signal: &str) -> Result<()> {
        run("kill", &[&format!("-{signal}"), &self.pid().to_string()]).map(drop)
    }

    /// Waits for the child to exit (killing it after `timeout`) and for its output to end.
    /// Fails when it exits unsuccessfully or has to be killed.
    pub fn finish(&mut self, timeout: Duration) -> Result<Vec<Line>> {
        let end = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("`{}` did not exit within {timeout:?}: killed", self.what);
            }
            thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(l);
        }
        if !status.success() {
            bail!("`{}` failed ({status}): {}", self.what, self.stderr_tail());
        }
        Ok(std::mem::take(&mut self.seen))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `key value` lines of a load program's output as numbers.
pub fn values(lines: &[Line], key: &str) -> Result<f64> {
    lines
        .iter()
        .find_map(|l| {
            let mut w = l.text.split_whitespace();
            (w.next() == Some(key))
                .then(|| w.next()?.parse().ok())
                .flatten()
        })
        .with_context(|| format!("the load program printed no `{key}`"))
}

/// Where the bench notes the old value of each global sysctl it changed, so that a later run
/// can restore it if this one is killed before its guards run.
const MARKERS: &str = "/run";

fn sysctl_path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

/// A global sysctl set for the bench and restored on drop.
pub struct Sysctl {
    path: PathBuf,
    old: String,
    marker: PathBuf,
}

impl Sysctl {
    pub fn set(key: &str, value: &str) -> Result<Sysctl> {
        let path = sysctl_path(key);
        let old = fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned();
        let marker =
            Path::new(MARKERS).join(format!("{PREFIX}{}-sysctl-{key}", std::process::id()));
        fs::write(&marker, format!("{key}={old}"))
            .with_context(|| format!("writing {}", marker.display()))?;
        fs::write(&path, value).with_context(|| format!("setting {key}={value}"))?;
        Ok(Sysctl { path, old, marker })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = fs::write(&self.path, &self.old);
        let _ = fs::remove_file(&self.marker);
    }
}

/// A directory removed with its contents on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("{PREFIX}{}-bench", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_values() {
        let line = |t: &str| Line {
            mono: Instant::now(),
            wall: SystemTime::now(),
            text: t.into(),
        };
        let lines = [line("ready"), line("connects 123"), line("seconds 3.000")];
        assert_eq!(values(&lines, "connects").unwrap(), 123.0);
        assert_eq!(values(&lines, "seconds").unwrap(), 3.0);
        assert!(values(&lines, "bytes").is_err());
    }

    #[test]
    fn interface_names_fit() {
        assert!(ifname("ua").is_ok());
        assert!(ifname("much-too-long-a-tag").is_err());
    }
}
