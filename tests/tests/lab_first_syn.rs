//! Foundation lab: an nftables rule in the server's namespace drops the first SYN of every new
//! flow to port 8080; port 8081 is the control. netlat must report each 8080 connect as ~1 s,
//! one SYN retransmit, a NETFILTER_DROP matched to it, and nothing for 8081. The verdict is the
//! look-alike `netfilter-rule-drop` (a rule in a table dropped it), never `snat-port-clash`.

use std::{process::Command, time::Duration};

use netlat_tests::{
    Netns, Watch, connect_times, connects_to, first_syn_drop, is_root, json_lines, netlat_bin,
    netlat_unprivileged, tcp_server, veth,
};

#[test]
fn lab_first_syn_drop_is_a_one_second_netfilter_drop() {
    assert!(is_root(), "the lab tests need root");
    let client = Netns::new("a");
    let server = Netns::new("b");
    veth(
        &client,
        "nl-va",
        "10.231.0.1/24",
        &server,
        "nl-vb",
        "10.231.0.2/24",
    );
    server.nft(&first_syn_drop("labsyn", 8080));
    let _srv = tcp_server(&server, &[8080, 8081]);

    let recording = std::env::temp_dir().join(format!("netlat-lab1-{}.rec", std::process::id()));
    let _cleanup = RemoveOnDrop(recording.clone());
    let rec_arg = recording.display().to_string();
    let watch = Watch::start(&["--record", &rec_arg]);
    let times = connect_times(
        &client,
        &[
            ("10.231.0.2", 8080),
            ("10.231.0.2", 8081),
            ("10.231.0.2", 8080),
            ("10.231.0.2", 8081),
            ("10.231.0.2", 8080),
        ],
        10.0,
    );
    assert_eq!(times.len(), 5, "client output: {times:?}");
    for (i, t) in times.iter().enumerate() {
        let t = t.unwrap_or_else(|| panic!("connect {i} failed"));
        if i % 2 == 0 {
            assert!((0.9..1.5).contains(&t), "8080 connect took {t} s");
        } else {
            assert!(t < 0.2, "control connect took {t} s");
        }
    }
    // Stopping drains the ring buffer, so every line of the connects above is printed.
    std::thread::sleep(Duration::from_millis(200));
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly on SIGINT");

    let slow = connects_to(&lines, "10.231.0.2:8080");
    assert_eq!(
        slow.len(),
        3,
        "expected 3 slow 8080 connects, got {lines:#?}"
    );
    for l in &slow {
        let ms = l["connect_ms"].as_f64().expect("connect_ms");
        assert!((900.0..1500.0).contains(&ms), "connect_ms {ms}");
        assert_eq!(l["outcome"], "established");
        assert_eq!(l["syn_retransmits"], 1);
        assert_eq!(l["retransmit_at_ms"].as_array().map(Vec::len), Some(1));
        assert_eq!(l["netns"].as_u64(), Some(client.inode()));
        assert_eq!(l["comm"], "python3");
        let drops = l["drops"].as_array().expect("drops");
        assert_eq!(drops.len(), 1, "{l}");
        assert_eq!(drops[0]["reason"], "NETFILTER_DROP");
        assert!(
            drops[0]["location"]
                .as_str()
                .is_some_and(|s| s.starts_with("nft_do_chain")),
            "{l}"
        );
        assert_eq!(drops[0]["netns"].as_u64(), Some(server.inode()));
        let at = drops[0]["at_ms"].as_f64().expect("at_ms");
        let retx = l["retransmit_at_ms"][0].as_f64().expect("retransmit");
        assert!(at < retx, "the drop must precede the retransmit: {l}");
        assert_eq!(l["verdict"]["issue"], "netfilter-rule-drop");
        assert_eq!(l["verdict"]["confidence"], "high");
        assert!(l["ts"].as_str().is_some_and(|s| s.ends_with('Z')));
    }
    assert!(
        connects_to(&lines, "10.231.0.2:8081").is_empty(),
        "the control port must not be reported"
    );
    let summary = lines
        .iter()
        .find(|v| v["type"] == "summary")
        .expect("summary line");
    assert!(summary["attempts"].as_u64().unwrap_or(0) >= 5);
    assert!(summary["slow"].as_u64().unwrap_or(0) >= 3);
    assert!(summary["lost_events"].is_object());

    // The recording replays to the same lines and summary, with no privileges.
    let out = netlat_unprivileged(&["replay", "--output", "json", &rec_arg]);
    assert!(out.status.success(), "replay failed: {out:?}");
    let replayed = json_lines(&out);
    let pick = |v: &[serde_json::Value]| -> Vec<serde_json::Value> {
        v.iter()
            .filter(|l| ["connect", "drop", "summary"].contains(&l["type"].as_str().unwrap_or("")))
            .cloned()
            .collect()
    };
    assert_eq!(
        pick(&replayed),
        pick(&lines),
        "replay differs from the live run"
    );

    // `netlat report` reads a recording too: a table by cause, unprivileged.
    let out = netlat_unprivileged(&["report", &rec_arg]);
    assert!(out.status.success(), "report failed: {out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("netfilter-rule-drop"), "{table}");

    // A truncated recording still reports what it holds, then fails naming the offset.
    let bytes = std::fs::read(&recording).expect("read recording");
    std::fs::write(&recording, &bytes[..bytes.len() - 3]).expect("truncate");
    let out = Command::new(netlat_bin())
        .args(["replay", "--output", "json", &rec_arg])
        .output()
        .expect("run replay");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated at byte"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"type\":\"summary\""));
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The rung below tp_btf: the classic tracepoint programs (kernels without BTF) see the same.
#[test]
fn lab_first_syn_on_classic_tracepoints() {
    assert!(is_root(), "the lab tests need root");
    let client = Netns::new("ta");
    let server = Netns::new("tb");
    veth(
        &client,
        "nl-ta",
        "10.231.1.1/24",
        &server,
        "nl-tb",
        "10.231.1.2/24",
    );
    server.nft(&first_syn_drop("labsyn", 8080));
    let _srv = tcp_server(&server, &[8080]);
    let watch = Watch::start_env(&[("NETLAT_TRACEPOINTS_ONLY", "1")], &[]);
    let times = connect_times(&client, &[("10.231.1.2", 8080)], 10.0);
    assert!(
        times.first().copied().flatten().is_some_and(|t| t >= 0.9),
        "client: {times:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly on SIGINT");
    let caps = lines
        .iter()
        .find(|v| v["type"] == "capabilities")
        .expect("capabilities line");
    let hooks: Vec<&str> = caps["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .take(3)
        .filter_map(|h| h["hook"].as_str())
        .collect();
    assert_eq!(
        hooks,
        [
            "tracepoint sock:inet_sock_set_state",
            "tracepoint tcp:tcp_retransmit_skb",
            "tracepoint skb:kfree_skb"
        ]
    );
    let slow = connects_to(&lines, "10.231.1.2:8080");
    assert_eq!(slow.len(), 1, "{lines:#?}");
    assert_eq!(slow[0]["syn_retransmits"], 1);
    assert_eq!(slow[0]["netns"].as_u64(), Some(client.inode()));
    assert_eq!(slow[0]["verdict"]["issue"], "netfilter-rule-drop");
    assert_eq!(slow[0]["drops"][0]["netns"].as_u64(), Some(server.inode()));
    assert_eq!(
        slow[0]["drops"][0]["packet"],
        "tcp 10.231.1.1:".to_string()
            + &slow[0]["src"]
                .as_str()
                .unwrap_or("")
                .replace("10.231.1.1:", "")
            + " -> 10.231.1.2:8080 [SYN]"
    );
}
