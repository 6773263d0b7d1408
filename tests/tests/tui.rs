//! `netlat watch --tui` in a real terminal: a tmux server of our own (`-L`, a unique socket)
//! runs netlat in a pane; the lab makes real slow connects in test namespaces (an nftables rule
//! drops every SYN to one port, the first SYN of each flow to another); the test sends keys and
//! reads the pane as a person would see it. Only this tmux server is killed, by its socket.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use netlat_tests::{Netns, first_syn_drop, is_root, netlat_bin, tcp_server, veth};

/// A tmux server on a socket of its own, killed on drop (also when the test fails).
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(tag: &str) -> Self {
        Self {
            socket: format!("netlat-tui-{tag}-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A 160×45 session running `cmd` in a shell that stays after it, saying how it ended.
    fn start(&self, cmd: &str) {
        let line = format!("{cmd}; echo \"EXITED $?\"; sleep 600");
        self.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "160",
            "-y",
            "45",
            "sh",
            "-c",
            &line,
        ]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "t", keys]);
    }

    /// The pane's screen once `pred` holds (or a failure showing the last screen).
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < end, "waited {timeout:?} for {what}:\n{s}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The PID of the process the pane's shell runs (netlat).
    fn child_pid(&self) -> Option<i32> {
        let shell: i32 = self
            .run(&["list-panes", "-t", "t", "-F", "#{pane_pid}"])
            .trim()
            .parse()
            .ok()?;
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .unwrap_or_default();
        children.split_whitespace().next()?.parse().ok()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn gone(pid: i32, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Attached: the status line counts active hooks.
fn attached(s: &str) -> bool {
    s.lines()
        .any(|l| l.starts_with("hooks: ") && !l.starts_with("hooks: 0 "))
}

/// Connect from `ns` to `ip:port` in the background, giving up after `timeout_s`.
fn connect_in_background(ns: &Netns, ip: &str, port: u16, timeout_s: f64) -> std::process::Child {
    let script = format!(
        "import socket\ntry:\n  socket.create_connection(('{ip}',{port}),timeout={timeout_s}).close()\nexcept Exception:\n  pass\n"
    );
    ns.cmd(&["python3", "-c", &script])
        .spawn()
        .expect("start the client")
}

#[test]
fn tui_shows_a_waiting_connect_and_its_cause_then_quits_and_restores_the_terminal() {
    assert!(is_root(), "the lab tests need root");
    let client = Netns::new("tc");
    let server = Netns::new("ts");
    veth(
        &client,
        "nl-tc",
        "10.233.0.1/24",
        &server,
        "nl-ts",
        "10.233.0.2/24",
    );
    server.nft(&first_syn_drop("tuisyn", 8080));
    // Every SYN to 8082 is dropped: the connect waits (1 s, 3 s …) until the client gives up.
    server.nft("table inet tuiall {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 8082 tcp flags & (syn|ack) == syn drop\n }\n}\n");
    let _srv = tcp_server(&server, &[8080, 8082]);

    let tmux = Tmux::new("a");
    tmux.start(&format!("{} watch --tui", netlat_bin().display()));
    tmux.wait_for("the hooks", Duration::from_mins(1), attached);

    // Waiting now: the attempt to 8082, counting up, named at its first retry.
    let mut waiting = connect_in_background(&client, "10.233.0.2", 8082, 4.5);
    let s = tmux.wait_for("the waiting connect", Duration::from_secs(10), |s| {
        s.contains("-> 10.233.0.2:8082  SYN retry 1  netfilter-rule-drop (")
    });
    let secs = |s: &str| -> f64 {
        s.lines()
            .find(|l| l.contains("-> 10.233.0.2:8082"))
            .and_then(|l| l.trim_start_matches(['│', ' ']).split(" s ").next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    let first = secs(&s);
    assert!((1.0..3.0).contains(&first), "{first}\n{s}");
    thread::sleep(Duration::from_millis(1200));
    let later = secs(&tmux.screen());
    assert!(later > first + 0.5, "the wait counts up: {first} → {later}");

    // A 1 s first-SYN drop to 8080 while it waits.
    let mut quick = connect_in_background(&client, "10.233.0.2", 8080, 5.0);
    let _ = quick.wait();
    let _ = waiting.wait();
    // Ended: gone from the waiting list, counted per destination (other lab tests on this
    // host may add rows of their own: only ours are asserted).
    let s = tmux.wait_for("both connects counted", Duration::from_secs(10), |s| {
        !s.contains("-> 10.233.0.2:8082 ")
            && s.contains("  10.233.0.2:8082 ")
            && s.contains("  10.233.0.2:8080 ")
    });
    let row = |dst: &str| {
        s.lines()
            .flat_map(|l| l.split('│'))
            .find(|cell| cell.contains(&format!("  {dst} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("10.233.0.2:8082").contains("max    4.5 s"), "{s}");
    assert!(row("10.233.0.2:8080").contains("max    1.0 s"), "{s}");
    // The 4.5 s timeout sits in the 3 s column of its cause's distribution row.
    let dist = s
        .lines()
        .find_map(|l| {
            l.trim_start_matches('│')
                .strip_prefix("netfilter-rule-drop ")
        })
        .unwrap_or_else(|| panic!("no distribution row:\n{s}"));
    let col = |i: usize| {
        dist.chars()
            .skip(26 - 20 + 4 * i)
            .take(4)
            .collect::<String>()
    };
    assert!(
        !col(2).starts_with('·'),
        "3 s column {:?} of {dist:?}",
        col(2)
    );

    // Keys: pause, filter by cause, all causes, quit.
    tmux.keys("p");
    tmux.wait_for("PAUSED", Duration::from_secs(3), |s| s.contains("PAUSED"));
    tmux.keys("p");
    tmux.wait_for("unpaused", Duration::from_secs(3), |s| {
        !s.contains("PAUSED")
    });
    // `c` steps through the causes seen (other lab tests may add some): until ours.
    let mut filtered = false;
    for _ in 0..12 {
        tmux.keys("c");
        thread::sleep(Duration::from_millis(400));
        if tmux.screen().contains("cause: netfilter-rule-drop") {
            filtered = true;
            break;
        }
    }
    assert!(filtered, "{}", tmux.screen());
    let s = tmux.screen();
    assert!(
        !s.contains("max    1.0 s  unanswered-syn") && !s.contains("(low)"),
        "other causes are filtered out:\n{s}"
    );
    tmux.keys("a");
    tmux.wait_for("all causes", Duration::from_secs(3), |s| {
        s.contains("cause: all")
    });
    let pid = tmux.child_pid().expect("netlat's pid");
    tmux.keys("q");
    let s = tmux.wait_for("netlat to exit", Duration::from_secs(15), |s| {
        s.contains("EXITED")
    });
    assert!(gone(pid, Duration::from_secs(2)));
    // The terminal is back: the view is gone, the summary printed, the exit clean.
    assert!(s.contains("EXITED 0"), "{s}");
    assert!(!s.contains("Waiting now"), "{s}");
    assert!(s.contains("connect attempts, "), "{s}");
    let mode = Command::new("tmux")
        .args([
            "-L",
            &tmux.socket,
            "display",
            "-p",
            "-t",
            "t",
            "#{alternate_on}",
        ])
        .output()
        .expect("tmux display");
    assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "0");
}

#[test]
fn tui_stops_cleanly_on_sigint_and_on_a_closed_terminal() {
    assert!(is_root(), "the lab tests need root");
    let tmux = Tmux::new("b");
    tmux.start(&format!("{} watch --tui", netlat_bin().display()));
    tmux.wait_for("the hooks", Duration::from_mins(1), attached);
    let pid = tmux.child_pid().expect("netlat's pid");
    // SAFETY: signalling the netlat this test started, by its PID.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let s = tmux.wait_for("netlat to exit", Duration::from_secs(15), |s| {
        s.contains("EXITED")
    });
    assert!(s.contains("EXITED 0"), "{s}");
    assert!(s.contains("connect attempts, "), "{s}");

    // The terminal closes under it (the window is killed): SIGHUP, and netlat ends.
    let tmux = Tmux::new("c");
    tmux.start(&format!("{} watch --tui", netlat_bin().display()));
    tmux.wait_for("the hooks", Duration::from_mins(1), attached);
    let pid = tmux.child_pid().expect("netlat's pid");
    tmux.run(&["kill-session", "-t", "t"]);
    assert!(
        gone(pid, Duration::from_secs(10)),
        "netlat outlived its terminal"
    );
}
