//! Issue 14 item 5: an attempt never inherits another's start. Under a storm of short connects
//! (sockets freed and their kernel addresses reused by the next connect) through a ring so small
//! that events are lost, every reported connect must be no longer than the client measured it:
//! an end whose start was lost, or a reused socket whose previous end was lost, must never be
//! reported against an older attempt's start (once seen: a 1.007 s connect as 10 873 ms).

use std::{process::Stdio, time::Duration};

use netlat_tests::{
    ChildGuard, Netns, Watch, connect_times, connects_to, first_syn_drop, is_root, tcp_server, veth,
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
