//! During a long `watch` the kernel's attempt table must not fill with entries whose end no
//! program saw (a DaemonSet runs for days; the table holds 131 072): a sweep frees each entry
//! older than the longest default SYN_SENT (180 s) whose socket its namespace no longer shows
//! in SYN_SENT, while netlat runs, and counts it in `kernel_end_missed`; a younger entry, or one
//! whose socket still waits, stays.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use netlat_tests::{
    TempDir, Watch,
    attempts::{self, WAIT_PORT, WaitLab},
    connects_to, free_port, http_get, is_root, json_lines, netlat_bin, stop_cleanly, wait_syn_sent,
};

const S: u64 = 1_000_000_000;

#[test]
fn lab_a_missed_end_is_freed_and_counted_while_watch_runs() {
    assert!(is_root(), "the lab tests need root");
    let lab = WaitLab::new("w", 8);
    // A sweep a second (NETLAT_SWEEP_SECS, for tests; 30 s by default), and the metrics.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut watch = Watch::start_env(
        &[("NETLAT_SWEEP_SECS", "1")],
        &["--threshold", "0.2", "--listen", &listen],
    );
    let map = attempts::attempts_map_of(watch.pid());
    // A connect really waiting: a socket from the client to the wait port is in SYN_SENT.
    let _waiting = lab.waiting_connect();
    wait_syn_sent(&lab.client, 1);

    // Entries as the kernel leaves them when no program sees an end: never shipped, no source
    // port chosen yet. Nothing from the client to 8080 is in SYN_SENT.
    let now = attempts::monotonic_ns();
    assert!(now > 300 * S, "the host has been up less than 5 min");
    let (stale, waits, young) = (
        attempts::fake_socket(10),
        attempts::fake_socket(11),
        attempts::fake_socket(12),
    );
    // Older than the safe age, its socket out of SYN_SENT: freed during the run.
    attempts::insert(map, stale, &lab.entry(now - 200 * S, 8080, "stale"));
    // Just as old, but a socket from its address to its destination still waits: kept (and
    // pending at stop).
    attempts::insert(map, waits, &lab.entry(now - 200 * S, WAIT_PORT, "waits"));
    // Out of SYN_SENT but 5 s old, as the entry of a new connect on a reused socket address:
    // kept by the sweep, counted at stop.
    attempts::insert(map, young, &lab.entry(now - 5 * S, 8080, "young"));

    let inserted = Instant::now();
    let mut freed_after = None;
    while inserted.elapsed() < Duration::from_secs(20) {
        if !attempts::holds(map, stale) {
            freed_after = Some(inserted.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let freed_after = freed_after.expect("the stale entry was not freed within 20 s");
    // Two more sweeps: the others stay.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        attempts::holds(map, young),
        "an entry younger than 180 s was freed"
    );
    assert!(
        attempts::holds(map, waits),
        "an entry of a waiting socket was freed"
    );
    // Counted as it was freed, in the metrics a DaemonSet's scraper reads.
    let (status, metrics) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("netlat_kernel_ends_missed_total "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n >= 1),
        "{metrics}"
    );
    // All of it while the run goes on (no summary yet).
    assert!(
        watch
            .wait_for(|v| v["type"] == "summary", Duration::from_millis(100))
            .is_none(),
        "netlat stopped"
    );

    let (lines, summary) = stop_cleanly(watch);
    // The stale entry (freed by the sweep, so the stop no longer sees it) and the young one
    // (at stop); netlat watches the whole node, so another test's missed end may add to it.
    assert!(
        summary["tracker"]["kernel_end_missed"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "{summary}"
    );
    let missed = connects_to(&lines, &lab.server_at(8080));
    assert!(
        missed.is_empty(),
        "an attempt whose socket left SYN_SENT was reported: {missed:?}\n{summary}"
    );
    // The kept entry of a waiting socket is pending at stop, with its 200 s.
    let pending = connects_to(&lines, &lab.server_at(WAIT_PORT));
    assert!(
        pending
            .iter()
            .any(|l| l["outcome"] == "pending" && l["connect_ms"].as_f64() > Some(190_000.0)),
        "{pending:?}\n{summary}"
    );
    eprintln!("stale entry freed {freed_after:?} after it was written; {summary}");
}

/// An attempt netlat follows (shipped at its first SYN retransmit) whose entry a sweep frees is
/// forgotten during the run, as at stop: counted in `end_lost`, never reported pending, and the
/// recording (an `EndsLost` note) replays to the same. The missed end is made by rewriting the
/// entry: its start 200 s back before the first retransmit ships it (so every event netlat gets
/// agrees with it), then, once netlat follows it, its destination port to one no socket waits
/// on, as a socket that left SYN_SENT unseen would look.
#[test]
fn lab_a_followed_attempt_whose_entry_is_swept_is_forgotten_not_pending() {
    assert!(is_root(), "the lab tests need root");
    let lab = WaitLab::new("v", 9);
    let dir = TempDir::new("sweep");
    let rec = dir.0.join("run.rec").display().to_string();
    let mut watch = Watch::start_env(
        &[("NETLAT_SWEEP_SECS", "1")],
        &["--threshold", "0.2", "--record", &rec],
    );
    let map = attempts::attempts_map_of(watch.pid());
    let inode = lab.client.inode();
    let waiting_entry = || attempts::entries_to(map, inode, lab.server_ip, WAIT_PORT);

    let _client = lab.waiting_connect();
    let sent = Instant::now();
    let (skaddr, value) = loop {
        if let Some(e) = waiting_entry().pop() {
            break e;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "no entry for the connect"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        attempts::flags_of(&value) & attempts::SHIPPED,
        0,
        "shipped already"
    );
    let aged = attempts::start_of(&value)
        .checked_sub(200 * S)
        .expect("the host has been up 200 s");
    attempts::insert(map, skaddr, &attempts::with_start(&value, aged));
    let to = lab.server_at(WAIT_PORT);
    let retry = watch
        .wait_for(
            |v| v["type"] == "retry" && v["dst"] == to,
            Duration::from_secs(10),
        )
        .expect("no retry line for the waiting connect");
    // The retransmit shipped the aged entry (a host too loaded to age it within the first
    // second would show the connect's real ~1 s here).
    assert!(
        retry["waiting_ms"].as_f64() > Some(190_000.0),
        "the entry was not aged before its first retransmit: {retry}"
    );

    let (_, value) = waiting_entry()
        .pop()
        .expect("the entry after the retransmit");
    assert_ne!(
        attempts::flags_of(&value) & attempts::SHIPPED,
        0,
        "{value:?}"
    );
    attempts::insert(map, skaddr, &attempts::with_dport(&value, 8080));
    let rewritten = Instant::now();
    while attempts::holds(map, skaddr) {
        assert!(
            rewritten.elapsed() < Duration::from_secs(10),
            "the swept entry was not freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (lines, summary) = stop_cleanly(watch);
    let t = &summary["tracker"];
    assert!(t["end_lost"].as_u64() >= Some(1), "{summary}");
    assert!(t["kernel_end_missed"].as_u64() >= Some(1), "{summary}");
    let pending = connects_to(&lines, &to);
    assert!(
        pending.is_empty(),
        "a forgotten attempt was reported: {pending:?}"
    );

    let out = Command::new(netlat_bin())
        .args(["replay", "--output", "json", &rec])
        .output()
        .expect("run replay");
    assert!(out.status.success(), "replay failed: {out:?}");
    let replayed = json_lines(&out);
    assert!(connects_to(&replayed, &to).is_empty(), "{replayed:?}");
    let again = replayed
        .iter()
        .find(|v| v["type"] == "summary")
        .expect("replayed summary");
    assert_eq!(again["tracker"]["end_lost"], t["end_lost"], "{again}");
    assert_eq!(
        again["tracker"]["kernel_end_missed"],
        t["kernel_end_missed"]
    );
}
