//! Lab helpers for netlat's integration tests: the one set of guards every root-only test uses
//! ([`Netns`], [`ChildGuard`], [`TempDir`]: a network namespace, a child process and a directory,
//! each removed on drop, also when a test panics), the first-SYN-drop ruleset, and a handle on a
//! running `netlat watch`.
//!
//! Traffic stays inside namespaces the tests create. Processes are killed by the PID we started.

use std::{
    io::{BufRead, BufReader, Read as _, Write as _},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// Path of the netlat binary under test: `NETLAT_BIN` (set by `cargo xtask test`), else the
/// workspace's release or debug build.
pub fn netlat_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETLAT_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("netlat");
        if p.exists() {
            return p;
        }
    }
    panic!("no netlat binary: run `cargo xtask test` (or `cargo build --release` first)");
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Run a command, panicking with its output if it fails.
/// Whether `tool --version` runs: for tests that cover a mode only where its tool is installed.
pub fn has_tool(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run a command with stdin text, panicking if it fails.
pub fn sh_stdin(args: &[&str], stdin: &str) {
    use std::io::Write;
    let mut c = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    c.stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = c.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first-SYN-drop ruleset with `@TABLE@` and `@PORT@` left to fill in. It is a file of its
/// own so that xtask's latency bench (`xtask/src/bench/latency.rs`) loads the same text with
/// `include_str!`; `tests/vm/scenarios/first_syn.sh` holds a copy that a test below keeps equal.
pub const FIRST_SYN_DROP_TEMPLATE: &str = include_str!("first_syn_drop.nft");

/// An nftables ruleset (`table inet TABLE`) that drops the first SYN of every new flow to
/// `port` in the namespace it is loaded into: the foundation's ~1 s connect.
pub fn first_syn_drop(table: &str, port: u16) -> String {
    FIRST_SYN_DROP_TEMPLATE
        .replace("@TABLE@", table)
        .replace("@PORT@", &port.to_string())
}

/// `netlat ARGS` as user nobody with no capabilities (through `setpriv`), e.g. a replay.
pub fn netlat_unprivileged(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(netlat_bin())
        .args(args)
        .output()
        .expect("run netlat through setpriv")
}

/// The JSON lines of a command's stdout.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("non-JSON line {l:?}: {e}")))
        .collect()
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `tag` must be short; the PID keeps parallel test runs apart.
    pub fn new(tag: &str) -> Netns {
        let name = format!("nl{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// A command inside the namespace (`ip netns exec`).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn nft(&self, ruleset: &str) {
        sh_stdin(
            &["ip", "netns", "exec", &self.name, "nft", "-f", "-"],
            ruleset,
        );
    }

    /// The namespace's file, `/run/netns/<name>` (what setns(2) and `--netns` take).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Inode number of the namespace (what netlat reports as `netns`).
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.path()).map_or(0, |m| m.ino())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Join two namespaces with a veth pair and give each end an address (`a_ip`/`b_ip` with prefix).
pub fn veth(a: &Netns, a_if: &str, a_ip: &str, b: &Netns, b_if: &str, b_ip: &str) {
    sh(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    a.ip(&["addr", "add", a_ip, "dev", a_if]);
    b.ip(&["addr", "add", b_ip, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// A child process killed (by its PID) and reaped on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory removed (with its contents) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `<tmp>/nl<pid>-<tag>`, emptied first if a killed run left it.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("nl{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP server in `ns` that accepts and closes on each port, until killed.
pub fn tcp_server(ns: &Netns, ports: &[u16]) -> ChildGuard {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let script = format!(
        "import socket,select\n\
         ls=[]\n\
         for p in [{}]:\n\
         \x20 s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         \x20 s.bind(('0.0.0.0',p)); s.listen(256); ls.append(s)\n\
         print('ready',flush=True)\n\
         while True:\n\
         \x20 r,_,_=select.select(ls,[],[])\n\
         \x20 for x in r:\n\
         \x20   c,_=x.accept(); c.close()\n",
        ports.join(",")
    );
    python_server(ns, &script)
}

/// Run a Python server `script` in `ns` and wait for the line `ready` it prints once listening.
pub fn python_server(ns: &Netns, script: &str) -> ChildGuard {
    let mut child = ns
        .cmd(&["python3", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start server");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout).read_line(&mut line).expect("server");
    assert_eq!(line.trim(), "ready", "server did not start");
    ChildGuard(child)
}

/// Connect from `ns` to each `ip:port` in turn; returns each connect time in seconds
/// (`None` when it failed).
pub fn connect_times(ns: &Netns, targets: &[(&str, u16)], timeout_s: f64) -> Vec<Option<f64>> {
    let list: Vec<String> = targets
        .iter()
        .map(|(ip, p)| format!("('{ip}',{p})"))
        .collect();
    let script = format!(
        "import socket,time\n\
         for t in [{}]:\n\
         \x20 s0=time.time()\n\
         \x20 try:\n\
         \x20   s=socket.create_connection(t,timeout={timeout_s}); print('%.4f'%(time.time()-s0)); s.close()\n\
         \x20 except Exception as e: print('fail')\n\
         \x20 time.sleep(0.05)\n",
        list.join(",")
    );
    let out = ns.run(&["python3", "-c", &script]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().ok())
        .collect()
}

/// A running `netlat watch --output json`.
pub struct Watch {
    child: ChildGuard,
    lines: mpsc::Receiver<String>,
    seen: Vec<serde_json::Value>,
}

impl Watch {
    /// Start netlat and wait for its capabilities line (hooks attached).
    pub fn start(extra: &[&str]) -> Watch {
        Watch::start_cmd(Command::new(netlat_bin()), extra)
    }

    /// Start netlat with extra environment variables.
    pub fn start_env(env: &[(&str, &str)], extra: &[&str]) -> Watch {
        let mut cmd = Command::new(netlat_bin());
        cmd.envs(env.iter().copied());
        Watch::start_cmd(cmd, extra)
    }

    /// Start netlat in `ns`'s network namespace, as on a node whose pods have namespaces of
    /// their own (`nsenter` joins only the network namespace: tracefs stays mounted).
    pub fn start_in(ns: &Netns, extra: &[&str]) -> Watch {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.path().display()))
            .arg("--")
            .arg(netlat_bin());
        Watch::start_cmd(cmd, extra)
    }

    fn start_cmd(mut cmd: Command, extra: &[&str]) -> Watch {
        let mut child = cmd
            .args(["watch", "--output", "json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start netlat");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Watch {
            child: ChildGuard(child),
            lines: rx,
            seen: Vec::new(),
        };
        let caps = w.wait_for(|v| v["type"] == "capabilities", Duration::from_secs(30));
        assert!(caps.is_some(), "netlat did not report its hooks");
        w
    }

    /// Wait until a line satisfies `pred`; every line read is kept.
    pub fn wait_for(
        &mut self,
        pred: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> Option<serde_json::Value> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return Some(v.clone());
        }
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let v: serde_json::Value = serde_json::from_str(&l)
                        .unwrap_or_else(|e| panic!("netlat printed a non-JSON line {l:?}: {e}"));
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return Some(v);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// The netlat process's PID (its open BPF maps are under /proc/PID/fdinfo).
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// SIGINT, wait for exit; returns (exit success, every line printed).
    pub fn stop(mut self) -> (bool, Vec<serde_json::Value>) {
        let pid = self.child.0.id() as libc::pid_t;
        // SAFETY: signalling the child we started, by its PID.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let status = self.child.0.wait().expect("wait netlat");
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            if let Ok(v) = serde_json::from_str(&l) {
                self.seen.push(v);
            }
        }
        (status.success(), std::mem::take(&mut self.seen))
    }
}

/// [`Watch::stop`] that must exit cleanly: every line printed, and the summary line.
pub fn stop_cleanly(watch: Watch) -> (Vec<serde_json::Value>, serde_json::Value) {
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly on SIGINT");
    let summary = lines
        .iter()
        .find(|v| v["type"] == "summary")
        .cloned()
        .expect("summary line");
    (lines, summary)
}

/// A loopback port free right now (the small race with other binders is acceptable here).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A minimal HTTP/1.0 GET (no chunking, the server closes): (status, body).
pub fn http_get(port: u16, target: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Connect lines of `lines` whose destination is `dst`.
pub fn connects_to<'a>(lines: &'a [serde_json::Value], dst: &str) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "connect" && v["dst"] == dst)
        .collect()
}

/// Connect lines of `lines` made in network namespace `netns` (inode, see [`Netns::inode`]).
pub fn connects_in(lines: &[serde_json::Value], netns: u64) -> Vec<&serde_json::Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "connect" && v["netns"].as_u64() == Some(netns))
        .collect()
}

/// Wait (up to 10 s) until `n` sockets of `ns` are in SYN_SENT.
pub fn wait_syn_sent(ns: &Netns, n: usize) {
    for _ in 0..200 {
        let out = ns.run(&["ss", "-Htn", "state", "syn-sent"]);
        if String::from_utf8_lossy(&out.stdout).lines().count() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{n} connects in SYN_SENT never showed in {}", ns.name);
}

pub mod attempts;
pub mod cri;
pub mod lab;

/// SYN resends a connect line shows: those the kernel reported, or one netlat inferred from a
/// dropped SYN that was still answered (`syn_resent_unseen`: the kernel can miss a timer batch
/// of retransmits under load).
pub fn syn_resends(l: &serde_json::Value) -> u64 {
    let seen = l["syn_retransmits"].as_u64().unwrap_or(0);
    seen.max(u64::from(l["syn_resent_unseen"] == true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VM guest gets only `tests/vm` (no Rust, no template file), so its scenario keeps the
    /// ruleset in a heredoc; this keeps that copy equal to the template.
    #[test]
    fn the_vm_scenario_loads_the_same_first_syn_ruleset() {
        let script = include_str!("../vm/scenarios/first_syn.sh");
        let (_, rest) = script
            .split_once("nft -f - <<'NFT' || fail $n \"nft\"\n")
            .expect("first_syn.sh loads its ruleset from a heredoc");
        let (heredoc, _) = rest.split_once("\nNFT\n").expect("heredoc end");
        assert_eq!(format!("{heredoc}\n"), first_syn_drop("labsyn", 8080));
    }
}
