//! Issue 14 item 5: an attempt never inherits another's start. Under a storm of short connects
//! (sockets freed and their kernel addresses reused by the next connect) through a ring so small
//! that events are lost, every reported connect must be no longer than the client measured it:
//! an end whose start was lost, or a reused socket whose previous end was lost, must never be
//! reported against an older attempt's start (once seen: a 1.007 s connect as 10 873 ms).

use std::{process::Stdio, time::Duration};

use netlat_tests::{
    ChildGuard, Netns, Watch,
    attempts::{self, WaitLab},
    connect_times, connects_to, first_syn_drop, is_root, stop_cleanly, tcp_server, veth,
    wait_syn_sent,
};

/// The storm's connect timeout.
const STORM_TIMEOUT_MS: f64 = 2000.0;

/// Short connects to `ip:port` as fast as one Python process can, for `secs`.
fn storm(ns: &Netns, ip: &str, port: u16, secs: f64) -> ChildGuard {
    let script = format!(
        "import socket,time\n\
         end=time.time()+{secs}\n\
         while time.time()<end:\n\
         \x20 try:\n\
         \x20   s=socket.create_connection(('{ip}',{port}),timeout={t}); s.close()\n\
         \x20 except Exception: pass\n",
        t = STORM_TIMEOUT_MS / 1000.0
    );
    let child = ns
        .cmd(&["python3", "-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .expect("start the storm");
    ChildGuard(child)
}

#[test]
fn lab_reused_sockets_never_inherit_an_older_start() {
    assert!(is_root(), "the lab tests need root");
    let client = Netns::new("ra");
    let server = Netns::new("rb");
    let pid = std::process::id();
    veth(
        &client,
        &format!("nr{pid}a"),
        "10.232.0.1/24",
        &server,
        &format!("nr{pid}b"),
        "10.232.0.2/24",
    );
    server.nft(&first_syn_drop("labreuse", 8080));
    let _srv = tcp_server(&server, &[8080, 8081]);
    // Every attempt is worth shipping (1 µs threshold) and the ring holds ~36 of them: the
    // storm overflows it, so starts and ends are lost while sockets are reused.
    let watch = Watch::start_env(&[("NETLAT_RING_BYTES", "4096")], &["--threshold", "0.001"]);
    let storms: Vec<ChildGuard> = (0..3)
        .map(|_| storm(&client, "10.232.0.2", 8081, 6.0))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let times = connect_times(
        &client,
        &[
            ("10.232.0.2", 8080),
            ("10.232.0.2", 8080),
            ("10.232.0.2", 8080),
        ],
        10.0,
    );
    drop(storms);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly on SIGINT");
    let longest = times
        .iter()
        .map(|t| t.expect("a first-SYN connect failed"))
        .fold(0.0, f64::max);
    assert!(longest < 2.0, "client times {times:?}");

    let summary = lines
        .iter()
        .find(|v| v["type"] == "summary")
        .expect("summary line");
    let lost: u64 = summary["lost_events"].as_object().map_or(0, |m| {
        m.values().filter_map(serde_json::Value::as_u64).sum()
    });
    assert!(lost > 0, "the tiny ring did not overflow: {summary}");
    // A storm connect gives up after its 2 s timeout (some really wait 1 s for a SYN retry:
    // the accept queue overflows); one reported longer took an older attempt's start.
    for l in connects_to(&lines, "10.232.0.2:8081") {
        let ms = l["connect_ms"].as_f64().expect("connect_ms");
        assert!(
            ms < STORM_TIMEOUT_MS + 200.0,
            "a storm connect inherited an older start: {l}\n{summary}"
        );
    }
    for l in connects_to(&lines, "10.232.0.2:8080") {
        let ms = l["connect_ms"].as_f64().expect("connect_ms");
        assert!(
            ms <= longest * 1000.0 + 100.0,
            "client measured at most {longest} s, netlat reported {l}\n{summary}"
        );
    }
    eprintln!("lost {lost}; summary {summary}");
}

/// A connect that establishes while the kernel skips the program that sees its end (the
/// kernel runs no tracing program while the same one already runs on that CPU: a SYN-ACK
/// handled in a softirq that interrupted another connect's program) stays in the attempt
/// table after its socket left SYN_SENT. Such an entry, written here into netlat's own table
/// as the kernel leaves it, must not be reported as pending at stop; connects really still
/// waiting must be, shipped (retried) or not.
#[test]
fn lab_a_table_entry_whose_end_was_missed_is_not_reported_pending() {
    assert!(is_root(), "the lab tests need root");
    let lab = WaitLab::new("m", 4);
    let watch = Watch::start(&["--threshold", "0.2"]);
    let map = attempts::attempts_map_of(watch.pid());

    // The missed end: an attempt from the client's namespace to 10.232.4.2:8080 that started
    // 5 s ago and was never shipped, for a socket in no SYN_SENT state there.
    let start = attempts::monotonic_ns() - 5_000_000_000;
    attempts::insert(
        map,
        attempts::fake_socket(0),
        &lab.entry(start, 8080, "missed"),
    );
    // A real established connection from that address, as the client saw it.
    let ok = connect_times(&lab.client, &[("10.232.4.2", 8080)], 2.0);
    assert!(ok[0].is_some_and(|t| t < 0.2), "{ok:?}");

    // Two connects really waiting at stop: one retried (shipped at its first retransmit),
    // one younger than its first retry (only in the kernel's table).
    // Paced by what the client's namespace shows, not by sleeps: an interpreter can take most
    // of a second to start on a loaded host. The retried one is stopped after its first retry
    // (1 s), the young one as soon as its SYN is out (far below its first retry).
    let _retried = lab.waiting_connect();
    wait_syn_sent(&lab.client, 1);
    std::thread::sleep(Duration::from_millis(1300));
    let _young = lab.waiting_connect();
    wait_syn_sent(&lab.client, 2);
    let (lines, summary) = stop_cleanly(watch);

    let missed = connects_to(&lines, "10.232.4.2:8080");
    assert!(
        missed.is_empty(),
        "an attempt whose socket left SYN_SENT was reported: {missed:?}\n{summary}"
    );
    // At least the entry written above: netlat watches the whole node, and an attempt of the
    // other test's storm that ends between the table read and the /proc/net/tcp check counts too.
    assert!(
        summary["tracker"]["kernel_end_missed"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{summary}"
    );
    let pending = connects_to(&lines, "10.232.4.2:8090");
    let retries: Vec<u64> = pending
        .iter()
        .map(|l| {
            assert_eq!(l["outcome"], "pending", "{l}");
            l["syn_retransmits"].as_u64().unwrap_or(0)
        })
        .collect();
    assert_eq!(
        pending.len(),
        2,
        "both waiting connects are pending: {pending:?}\n{summary}"
    );
    assert!(
        retries.contains(&0) && retries.iter().any(|&n| n >= 1),
        "one retried, one not yet: {retries:?}"
    );
}
