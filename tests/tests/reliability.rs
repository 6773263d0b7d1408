//! Reliability and security of `netlat watch` on the real kernel: it says exactly what it lost,
//! its memory stays bounded under a SYN flood, it stops cleanly and leaves nothing attached, two
//! of them run side by side, it keeps only the capabilities it still needs after attaching, and
//! `doctor`/`replay` need none.
//!
//! The tests take one lock: each floods or counts node-wide kernel events, which a parallel
//! test's traffic would disturb.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, MutexGuard, mpsc},
    thread,
    time::{Duration, Instant},
};

use netlat_tests::{
    Netns, connect_times, connects_to, first_syn_drop, is_root, netlat_bin, netlat_unprivileged,
    tcp_server, veth,
};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    assert!(is_root(), "the reliability tests need root");
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running `netlat watch --output json` with its stdout lines and stderr text collected.
struct Netlat {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
    stderr: Arc<Mutex<String>>,
}

impl Netlat {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Netlat {
        let mut cmd = Command::new(netlat_bin());
        cmd.args(["watch", "--output", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start netlat");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = Arc::new(Mutex::new(String::new()));
        let err2 = err.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                err2.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut n = Netlat {
            child: Some(child),
            lines: rx,
            seen: Vec::new(),
            stderr: err,
        };
        // The node line is the last start-up line: hooks attached, privileges dropped.
        let ready = n.wait_for(|v| v["type"] == "node", Duration::from_mins(1));
        assert!(
            ready.is_some(),
            "netlat did not start: {}",
            n.stderr.lock().unwrap()
        );
        n
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling the child we started, by its PID.
        unsafe { libc::kill(self.pid(), sig) };
    }

    fn wait_for(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Option<Value> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return Some(v.clone());
        }
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Ok(l) = self.lines.recv_timeout(left) else {
                return None;
            };
            let v: Value = serde_json::from_str(&l)
                .unwrap_or_else(|e| panic!("netlat printed a non-JSON line {l:?}: {e}"));
            self.seen.push(v.clone());
            if pred(&v) {
                return Some(v);
            }
        }
        None
    }

    /// Send `sig` and wait (at most 20 s) for the exit; returns the status, every line and
    /// the stderr text.
    fn stop_with(mut self, sig: i32) -> (ExitStatus, Vec<Value>, String) {
        self.signal(sig);
        let mut child = self.child.take().expect("running");
        let status = wait_timeout(&mut child, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("netlat did not exit within 20 s of signal {sig}"));
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            if let Ok(v) = serde_json::from_str(&l) {
                self.seen.push(v);
            }
        }
        thread::sleep(Duration::from_millis(100));
        let err = self.stderr.lock().unwrap().clone();
        (status, std::mem::take(&mut self.seen), err)
    }
}

impl Drop for Netlat {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        thread::sleep(Duration::from_millis(50));
    }
    None
}

fn summary(lines: &[Value]) -> &Value {
    lines
        .iter()
        .find(|v| v["type"] == "summary")
        .unwrap_or_else(|| panic!("no summary line in {lines:#?}"))
}

fn proc_status(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

fn cap_mask(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

fn vm_rss_kib(pid: i32) -> u64 {
    proc_status(pid)
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// The BPF objects (`prog_id`, `link_id`, `map_id` in fdinfo) a process holds open.
#[derive(Debug, Default)]
struct BpfIds {
    progs: BTreeSet<u64>,
    links: BTreeSet<u64>,
    maps: BTreeSet<u64>,
}

fn bpf_ids_of(pid: i32) -> BpfIds {
    let mut ids = BpfIds::default();
    let dir = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo");
    for e in dir.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for l in text.lines() {
            let mut kv = l.splitn(2, ':');
            let (k, v) = (kv.next().unwrap_or(""), kv.next().unwrap_or("").trim());
            let Ok(n) = v.parse::<u64>() else { continue };
            match k {
                "prog_id" => ids.progs.insert(n),
                "link_id" => ids.links.insert(n),
                "map_id" => ids.maps.insert(n),
                _ => false,
            };
        }
    }
    ids
}

/// The ids `bpftool <what> show` lists now.
fn bpftool_ids(what: &str) -> BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args(["-j", what, "show"])
        .output()
        .expect("run bpftool (apt package bpftool)");
    assert!(out.status.success(), "bpftool {what} show: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
    v.as_array()
        .map(|a| a.iter().filter_map(|o| o["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// Every program, link and map netlat held is gone (maps are freed a moment after the last
/// reference goes, so this waits up to 5 s).
fn assert_detached(ids: &BpfIds) {
    assert!(
        ids.progs.len() >= 3 && !ids.links.is_empty() && !ids.maps.is_empty(),
        "netlat held no BPF objects? {ids:?}"
    );
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let progs: Vec<u64> = bpftool_ids("prog")
            .intersection(&ids.progs)
            .copied()
            .collect();
        let links: Vec<u64> = bpftool_ids("link")
            .intersection(&ids.links)
            .copied()
            .collect();
        let maps: Vec<u64> = bpftool_ids("map")
            .intersection(&ids.maps)
            .copied()
            .collect();
        if progs.is_empty() && links.is_empty() && maps.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "after exit bpftool still lists netlat's programs {progs:?}, links {links:?}, \
             maps {maps:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// Loss accounting

/// Packets the `counter` of the namespace's only nft rule counted.
fn nft_packets(ns: &Netns) -> u64 {
    let out = ns.run(&["nft", "list", "ruleset"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("packets ").expect("an nft counter") + "packets ".len();
    text[at..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("counter value")
}

struct FloodRun {
    produced: u64,
    delivered: u64,
    lost: u64,
    loss_lines: Vec<Value>,
    summary: Value,
}

/// One flood of DNS packets, dropped by an nft rule in a fresh namespace while netlat (with a
/// 64 KiB ring) is stopped, so the ring overflows.
fn flood_once(packets: u32) -> FloodRun {
    let ns = Netns::new("lf");
    ns.nft(
        "table inet rlflood {\n chain out {\n  type filter hook output priority 0; policy accept;\n  \
         udp dport 53 counter drop\n }\n}\n",
    );
    let netlat = Netlat::start(&[], &[("NETLAT_RING_BYTES", "65536")]);
    netlat.signal(libc::SIGSTOP);
    let script = format!(
        "import socket\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range({packets}):\n\
         \x20 try: s.sendto(b'x',('127.0.0.1',53))\n\
         \x20 except OSError: pass\n"
    );
    let flood = ns.cmd(&["python3", "-c", &script]).status();
    netlat.signal(libc::SIGCONT);
    assert!(flood.is_ok_and(|s| s.success()), "the flood failed");
    // Two ticks: the loss line of the overflow is printed while netlat runs.
    thread::sleep(Duration::from_millis(2500));
    let (status, lines, err) = netlat.stop_with(libc::SIGINT);
    assert!(status.success(), "netlat failed: {status:?} {err}");
    let ino = ns.inode();
    let delivered = lines
        .iter()
        .filter(|v| {
            v["type"] == "drop"
                && v["netns"].as_u64() == Some(ino)
                && v["verdict"]["issue"] == "dns-timeout"
        })
        .count() as u64;
    let s = summary(&lines).clone();
    FloodRun {
        produced: nft_packets(&ns),
        delivered,
        lost: s["lost_events"]["drop"].as_u64().expect("lost_events.drop"),
        loss_lines: lines
            .iter()
            .filter(|v| v["type"] == "loss" && v["kind"] == "drop")
            .cloned()
            .collect(),
        summary: s,
    }
}

/// Delivered + counted-lost equals what the kernel produced. The lost counter is node-wide, so
/// another namespace's drop lost during the flood would show as a surplus: the run is retried
/// then. A deficit — events gone without being counted — fails at once.
#[test]
fn ring_overflow_delivered_plus_lost_equals_produced() {
    let _g = serial();
    const PACKETS: u32 = 5000;
    for attempt in 1..=4 {
        let r = flood_once(PACKETS);
        eprintln!(
            "flood {attempt}: produced {}, delivered {}, lost {}",
            r.produced, r.delivered, r.lost
        );
        assert_eq!(r.produced, u64::from(PACKETS), "every packet hit the rule");
        assert!(r.lost > 0, "the ring did not overflow: {}", r.summary);
        assert!(r.delivered > 0, "nothing was delivered: {}", r.summary);
        assert!(
            r.delivered + r.lost >= r.produced,
            "{} drop events vanished without being counted: delivered {} + lost {} < \
             produced {}",
            r.produced - r.delivered - r.lost,
            r.delivered,
            r.lost,
            r.produced
        );
        // The loss lines add up to the summary's count and were printed while running.
        let sum: u64 = r.loss_lines.iter().filter_map(|l| l["lost"].as_u64()).sum();
        assert_eq!(sum, r.lost, "loss lines {:?}", r.loss_lines);
        assert_eq!(
            r.loss_lines.last().and_then(|l| l["total"].as_u64()),
            Some(r.lost)
        );
        if r.delivered + r.lost == r.produced {
            return;
        }
        eprintln!("other drops were lost during the flood; again");
    }
    panic!("four floods in a row met other drops on this node");
}

// ---------------------------------------------------------------------------------------------
// Bounded memory

/// 20 000 SYNs nobody answers, with the tracker limited to 1000 attempts: the oldest are
/// evicted and counted, and netlat's RSS stays within 12 MiB of where it started.
#[test]
fn syn_flood_keeps_memory_bounded_and_counts_evictions() {
    let _g = serial();
    const MAX_FLOWS: u64 = 1000;
    let client = Netns::new("sa");
    let server = Netns::new("sb");
    let pid = std::process::id();
    veth(
        &client,
        &format!("r{pid}-sa"),
        "10.239.0.1/24",
        &server,
        &format!("r{pid}-sb"),
        "10.239.0.2/24",
    );
    server.nft(
        "table inet rlsyn {\n chain in {\n  type filter hook input priority 0; policy drop;\n }\n}\n",
    );
    let mut netlat = Netlat::start(&[], &[("NETLAT_MAX_FLOWS", "1000")]);
    thread::sleep(Duration::from_secs(1));
    let base = vm_rss_kib(netlat.pid());

    let script = "import socket,resource,time\n\
                  h=resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n\
                  resource.setrlimit(resource.RLIMIT_NOFILE,(h,h))\n\
                  n=min(20000,h-100)\n\
                  ss=[]\n\
                  for i in range(n):\n\
                  \x20 s=socket.socket(); s.setblocking(False)\n\
                  \x20 try: s.connect(('10.239.0.2',1000+i%50))\n\
                  \x20 except BlockingIOError: pass\n\
                  \x20 ss.append(s)\n\
                  print(n,flush=True)\n\
                  time.sleep(5)\n";
    let mut flood = client
        .cmd(&["python3", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the SYN flood");
    let mut opened = String::new();
    BufReader::new(flood.stdout.take().expect("stdout"))
        .read_line(&mut opened)
        .expect("flood output");
    let opened: u64 = opened.trim().parse().expect("sockets opened");
    let mut peak = base;
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        peak = peak.max(vm_rss_kib(netlat.pid()));
        if flood.try_wait().ok().flatten().is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(250));
    }
    let _ = flood.kill();
    let _ = flood.wait();
    thread::sleep(Duration::from_secs(1));
    peak = peak.max(vm_rss_kib(netlat.pid()));
    let _ = netlat.wait_for(|_| false, Duration::from_millis(10));
    let (status, lines, err) = netlat.stop_with(libc::SIGINT);
    assert!(status.success(), "{err}");
    let s = summary(&lines);
    let t = &s["tracker"];
    let evicted = t["evicted"].as_u64().expect("tracker.evicted");
    let lost_connects = s["lost_events"]["connect"].as_u64().unwrap_or(0);
    eprintln!(
        "{opened} SYNs: RSS {base} -> {peak} KiB, evicted {evicted}, lost connects \
         {lost_connects}, tracker {t}"
    );
    assert!(
        evicted + MAX_FLOWS + lost_connects >= opened,
        "only {evicted} of {opened} attempts evicted with a limit of {MAX_FLOWS}: {s}"
    );
    assert!(
        s["in_flight"].as_u64().unwrap_or(u64::MAX) <= MAX_FLOWS,
        "{s}"
    );
    assert!(
        peak.saturating_sub(base) <= 12 * 1024,
        "RSS grew from {base} KiB to {peak} KiB under the flood"
    );
}

// ---------------------------------------------------------------------------------------------
// Clean stop

#[test]
fn sigint_and_sigterm_exit_cleanly_and_leave_nothing_attached() {
    let _g = serial();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let netlat = Netlat::start(&[], &[]);
        let ids = bpf_ids_of(netlat.pid());
        let (status, lines, err) = netlat.stop_with(sig);
        assert_eq!(status.code(), Some(0), "signal {sig}: {err}");
        // The summary was flushed before exit.
        assert!(summary(&lines)["lost_events"].is_object());
        assert_detached(&ids);
    }
}

/// The reader of stdout goes away while netlat has nothing to print: it notices, exits 0 and
/// detaches; and `netlat watch | head -1` ends with netlat's exit status 0.
#[test]
fn closed_stdout_ends_watch_cleanly() {
    let _g = serial();
    let mut child = Command::new(netlat_bin())
        .args(["watch", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start netlat");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    // Read up to the node line, the last one netlat prints before it waits for events.
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("read netlat");
        assert!(n > 0, "netlat ended before its node line");
        if line.starts_with("{\"type\":\"node\"") {
            break;
        }
    }
    let ids = bpf_ids_of(child.id() as i32);
    drop(out);
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "netlat did not end cleanly when its stdout was closed"
    );
    assert_detached(&ids);

    let out = Command::new("timeout")
        .args([
            "60",
            "bash",
            "-c",
            "\"$0\" watch --output json | head -1 >/dev/null; echo \"netlat exit ${PIPESTATUS[0]}\"",
        ])
        .arg(netlat_bin())
        .output()
        .expect("run bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("netlat exit 0"), "{text} {out:?}");
}

// ---------------------------------------------------------------------------------------------
// Side by side, least privilege

/// The first-SYN lab: one ~1 s connect to 10.232.0.2:8080 from `client`.
fn first_syn_lab() -> (Netns, Netns, netlat_tests::ChildGuard) {
    let client = Netns::new("pa");
    let server = Netns::new("pb");
    let pid = std::process::id();
    veth(
        &client,
        &format!("r{pid}-pa"),
        "10.232.0.1/24",
        &server,
        &format!("r{pid}-pb"),
        "10.232.0.2/24",
    );
    server.nft(&first_syn_drop("rlsyn1", 8080));
    let srv = tcp_server(&server, &[8080]);
    (client, server, srv)
}

fn assert_first_syn_verdict(lines: &[Value], client: &Netns) -> Value {
    let slow = connects_to(lines, "10.232.0.2:8080");
    let mine: Vec<&&Value> = slow
        .iter()
        .filter(|l| l["netns"].as_u64() == Some(client.inode()))
        .collect();
    assert_eq!(mine.len(), 1, "{lines:#?}");
    let l = mine[0];
    assert_eq!(l["verdict"]["issue"], "netfilter-rule-drop", "{l}");
    assert_eq!(l["verdict"]["confidence"], "high", "{l}");
    assert_eq!(l["syn_retransmits"], 1, "{l}");
    (*l).clone()
}

#[test]
fn two_watchers_side_by_side_report_the_same_connect() {
    let _g = serial();
    let (client, _server, _srv) = first_syn_lab();
    let a = Netlat::start(&[], &[]);
    let b = Netlat::start(&[], &[]);
    let (ia, ib) = (bpf_ids_of(a.pid()), bpf_ids_of(b.pid()));
    assert!(ia.progs.is_disjoint(&ib.progs), "{ia:?} {ib:?}");
    let t = connect_times(&client, &[("10.232.0.2", 8080)], 10.0);
    assert!(t[0].is_some_and(|t| t > 0.9), "{t:?}");
    thread::sleep(Duration::from_millis(300));
    let (sa, la, ea) = a.stop_with(libc::SIGINT);
    let (sb, lb, eb) = b.stop_with(libc::SIGINT);
    assert!(sa.success() && sb.success(), "{ea}\n{eb}");
    let (ca, cb) = (
        assert_first_syn_verdict(&la, &client),
        assert_first_syn_verdict(&lb, &client),
    );
    assert_eq!(ca["src"], cb["src"], "the same connect");
    assert_eq!(ca["outcome"], cb["outcome"]);
    assert_detached(&ia);
    assert_detached(&ib);
}

#[test]
fn watch_keeps_only_needed_capabilities_and_still_names_the_drop() {
    let _g = serial();
    let own = cap_mask(&proc_status(std::process::id() as i32), "CapEff");
    let (client, _server, _srv) = first_syn_lab();
    let netlat = Netlat::start(&["--verbose"], &[]);
    // CAP_DAC_READ_SEARCH, CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN.
    let keep: u64 = (1 << 2) | (1 << 12) | (1 << 19) | (1 << 21);
    let tasks = std::fs::read_dir(format!("/proc/{}/task", netlat.pid())).expect("tasks");
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for field in ["CapEff", "CapPrm", "CapBnd"] {
            let m = cap_mask(&status, field);
            assert_eq!(
                m & !keep,
                0,
                "thread {:?} still has {field} {m:x}",
                t.file_name()
            );
        }
        assert_eq!(cap_mask(&status, "CapInh"), 0);
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    }
    let eff = cap_mask(&proc_status(netlat.pid()), "CapEff");
    assert!(
        eff < own && eff & !own == 0,
        "CapEff {eff:x} not below {own:x}"
    );
    let t = connect_times(&client, &[("10.232.0.2", 8080)], 10.0);
    assert!(t[0].is_some_and(|t| t > 0.9), "{t:?}");
    thread::sleep(Duration::from_millis(300));
    let (status, lines, err) = netlat.stop_with(libc::SIGINT);
    assert!(status.success(), "{err}");
    assert_first_syn_verdict(&lines, &client);
    let said = err
        .lines()
        .find(|l| l.starts_with("netlat: dropped capabilities"))
        .unwrap_or_else(|| panic!("--verbose did not say what was dropped: {err}"));
    assert!(
        said.contains("CAP_BPF") && said.contains("CAP_PERFMON"),
        "{said}"
    );
    assert!(
        said.contains("keeping CAP_DAC_READ_SEARCH,CAP_NET_ADMIN,CAP_SYS_PTRACE,CAP_SYS_ADMIN"),
        "{said}"
    );
}

#[test]
fn doctor_and_replay_need_no_privileges() {
    let _g = serial();
    let out = netlat_unprivileged(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "doctor as nobody failed: {out:?}");
    // What nobody may not read is a note, not a failure.
    assert!(
        text.lines()
            .any(|l| l.starts_with("note") && l.contains("not permitted")),
        "{text}"
    );

    let rec = std::env::temp_dir().join(format!("netlat-rel-{}.rec", std::process::id()));
    let made = Command::new(netlat_bin())
        .args(["watch", "--duration", "1", "--output", "json", "--record"])
        .arg(&rec)
        .output()
        .expect("record");
    assert!(made.status.success(), "{made:?}");
    std::fs::set_permissions(&rec, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let out = netlat_unprivileged(&["replay", "--output", "json", &rec.display().to_string()]);
    let _ = std::fs::remove_file(&rec);
    assert!(out.status.success(), "replay as nobody failed: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"type\":\"summary\""));
}

#[test]
fn bad_limit_values_give_one_error_line() {
    for (var, value) in [
        ("NETLAT_RING_BYTES", "1000"),
        ("NETLAT_RING_BYTES", "lots"),
        ("NETLAT_MAX_FLOWS", "0"),
    ] {
        let out = Command::new(netlat_bin())
            .args(["watch", "--duration", "1"])
            .env(var, value)
            .output()
            .expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].starts_with("netlat: ") && lines[0].contains(var),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Network exposure

/// netlat itself starts no program: every `std::process::Command` in netlat/src is in test code
/// (a `#[cfg(test)]` module or a file only such a module includes), so no shell command can be
/// built from anything seen on the network.
#[test]
fn netlat_runs_no_external_commands() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../netlat/src");
    let mut found = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read netlat/src").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("read source");
            let test_only_file = is_test_only_module(&p);
            let first_test = text.find("#[cfg(test)]").unwrap_or(usize::MAX);
            for needle in [
                "Command::new",
                "process::Command",
                "libc::exec",
                "libc::system",
            ] {
                for (at, _) in text.match_indices(needle) {
                    if !test_only_file && at < first_test {
                        found.push(format!("{}: {needle}", p.display()));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "netlat must not run other programs: {found:#?}"
    );
}

/// Whether `file` is a module its parent declares under `#[cfg(test)]`.
fn is_test_only_module(file: &Path) -> bool {
    let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
        return false;
    };
    let dir = file.parent().expect("parent");
    let parents = [dir.join("mod.rs"), dir.with_extension("rs")];
    parents.iter().any(|p| {
        std::fs::read_to_string(p).is_ok_and(|t| {
            t.contains(&format!("#[cfg(test)]\nmod {stem};"))
                || t.contains(&format!("#[cfg(test)]\npub mod {stem};"))
        })
    })
}

/// A burst switches the reader to polling, where the programs submit without waking it; when
/// the burst is over it must switch back, or a lone slow connect afterwards would wait in the
/// ring for the 1 s safety read. Three rounds: a stuck mode shows in at least one of them.
#[test]
fn a_lone_slow_connect_after_a_burst_is_printed_at_once() {
    let _g = serial();
    let (client, server, _srv) = first_syn_lab();
    let _fast = tcp_server(&server, &[8081]);
    let burst = "import socket,time\n\
                 ss=[]\n\
                 for i in range(100):\n\
                 \x20 s=socket.socket(); s.setblocking(False)\n\
                 \x20 try: s.connect(('10.232.0.2',8081))\n\
                 \x20 except BlockingIOError: pass\n\
                 \x20 ss.append(s)\n\
                 time.sleep(0.3)\n\
                 for s in ss: s.close()\n";
    let mut n = Netlat::start(&[], &[]);
    for round in 0..3 {
        let out = client.run(&["python3", "-c", burst]);
        assert!(out.status.success(), "burst: {out:?}");
        let t = connect_times(&client, &[("10.232.0.2", 8080)], 10.0);
        let done = Instant::now();
        assert!(t[0].is_some_and(|t| t > 0.9), "round {round}: {t:?}");
        let line = n.wait_for(
            |v| {
                v["type"] == "connect"
                    && v["dst"] == "10.232.0.2:8080"
                    && v["netns"].as_u64() == Some(client.inode())
            },
            Duration::from_secs(3),
        );
        let waited = done.elapsed();
        assert!(
            line.is_some(),
            "round {round}: no line for the slow connect"
        );
        // Already printed (found among earlier lines) or printed within the gather time.
        assert!(
            waited < Duration::from_millis(300),
            "round {round}: the line came {waited:?} after the connect returned"
        );
        // The next round must find its own line, not this one.
        n.seen.clear();
    }
    let (status, _, err) = n.stop_with(libc::SIGINT);
    assert!(status.success(), "{err}");
}
