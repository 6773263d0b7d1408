//! Issue C lab: kube-proxy's double NAT (a 0x4000 mark on the service flow, `masquerade
//! fully-random` on that mark) also rewrites the encapsulated outer UDP packet's source port.
//! With `udpcsum` and tx checksum offload on the sender's vxlan device the outer checksum is left
//! stale, so the receiver drops the first SYN (UdpInCsumErrors). Only the first packet of the
//! inner flow is marked: the re-sent SYN escapes as soon as it rides a new outer flow, after
//! ~1 s with `net.core.txrehash=1` (new outer source port per RTO), or when the stale outer
//! conntrack expires (~67 s on ≥ 6.5) with `txrehash=0`. With tx offload off it is fast.
//!

use std::time::{Duration, Instant};

use netlat_tests::{
    Watch, connects_in, is_root,
    lab::{VxlanConfig, VxlanLab, verdicts},
};

/// Stop netlat (after letting the last events drain) and return its lines.
fn stop(watch: Watch) -> Vec<serde_json::Value> {
    std::thread::sleep(Duration::from_millis(300));
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly on SIGINT");
    lines
}

/// netlat's slow lines for `lab`'s service flow (made in the sender's namespace).
fn service_lines<'a>(lab: &VxlanLab, lines: &'a [serde_json::Value]) -> Vec<&'a serde_json::Value> {
    connects_in(lines, lab.sender.inode())
        .into_iter()
        .filter(|l| l["dst"] == lab.server_addr().as_str())
        .collect()
}

/// Connect `n` times; returns (times, receiver UdpInCsumErrors delta, netlat's service lines,
/// netlat's drop lines).
fn run(
    cfg: VxlanConfig,
    n: usize,
    timeout_s: f64,
) -> (
    Vec<f64>,
    u64,
    Vec<serde_json::Value>,
    Vec<serde_json::Value>,
) {
    let lab = VxlanLab::new(cfg);
    let watch = Watch::start(&[]);
    let errs0 = lab.csum_errors();
    let times = lab.connect(n, timeout_s);
    let errs = lab.csum_errors() - errs0;
    let lines = stop(watch);
    assert_eq!(times.len(), n, "client output: {times:?}");
    let times: Vec<f64> = times
        .iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| panic!("connect {i} failed ({cfg:?})")))
        .collect();
    let service = service_lines(&lab, &lines).into_iter().cloned().collect();
    // netlat sees every namespace: keep only this lab's receiver (tests run in parallel).
    let drops = lines
        .iter()
        .filter(|l| l["type"] == "drop" && l["netns"].as_u64() == Some(lab.receiver.inode()))
        .cloned()
        .collect();
    let summary = lines.iter().find(|v| v["type"] == "summary");
    eprintln!(
        "{cfg:?}: netlat tracker {}",
        summary.map_or(serde_json::Value::Null, |s| s["tracker"].clone())
    );
    eprintln!("{cfg:?}: connects {times:.3?} s, receiver UdpInCsumErrors +{errs}");
    (times, errs, service, drops)
}

#[test]
fn lab_vxlan_udpcsum_tx_offload_loses_the_first_syn() {
    assert!(is_root(), "the lab tests need root");
    let t = Instant::now();
    let cfg = VxlanConfig {
        udpcsum: true,
        tx_offload: true,
        txrehash: true,
    };
    let (times, errs, lines, drops) = run(cfg, 3, 10.0);
    for t in &times {
        assert!((0.9..1.5).contains(t), "connect took {t} s");
    }
    assert_eq!(errs, 3, "one bad outer checksum per connect");
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for l in &lines {
        eprintln!("C slow connect: {l}");
        let ms = l["connect_ms"].as_f64().expect("connect_ms");
        assert!((900.0..1500.0).contains(&ms), "{l}");
        assert_eq!(l["outcome"], "established", "{l}");
        assert_eq!(l["syn_retransmits"], 1, "{l}");
    }
    let refs: Vec<_> = lines.iter().collect();
    eprintln!("verdicts: {:?}", verdicts(&refs));
    // Sender side: every slow connect is C, with the receiver's drop tied to it through the
    // client's conntrack NAT mapping, and the node facts (offload on, masquerade) fitting.
    for l in &lines {
        assert_eq!(l["verdict"]["issue"], "vxlan-csum-offload", "{l}");
        assert_eq!(l["verdict"]["confidence"], "high", "{l}");
        let d = &l["drops"][0];
        assert_eq!(d["reason"], "UDP_CSUM", "{l}");
        assert_eq!(d["via_vxlan"], true, "{l}");
    }
    // Receiver side: each bad-checksum tunnel packet is its own drop line, decoded to the
    // inner SYN and named C.
    assert_eq!(drops.len(), 3, "{drops:#?}");
    for d in &drops {
        assert_eq!(d["verdict"]["issue"], "vxlan-csum-offload", "{d}");
        assert_eq!(d["reason"], "UDP_CSUM", "{d}");
        assert!(
            d["inner"].as_str().is_some_and(|i| i.ends_with("[SYN]")),
            "{d}"
        );
        assert_eq!(d["vni"], 42, "{d}");
    }
    eprintln!(
        "lab_vxlan_udpcsum_tx_on: {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn lab_vxlan_tx_offload_off_is_fast() {
    assert_fast(
        "lab_vxlan_udpcsum_tx_off",
        VxlanConfig {
            udpcsum: true,
            tx_offload: false,
            txrehash: true,
        },
    );
}

#[test]
fn lab_vxlan_noudpcsum_is_fast() {
    assert_fast(
        "lab_vxlan_noudpcsum",
        VxlanConfig {
            udpcsum: false,
            tx_offload: true,
            txrehash: true,
        },
    );
}

/// A configuration without the bug: three connects, each fast, and nothing to attribute (no
/// slow line and no drop line at all).
fn assert_fast(name: &str, cfg: VxlanConfig) {
    assert!(is_root(), "the lab tests need root");
    let t = Instant::now();
    let (times, errs, lines, drops) = run(cfg, 3, 10.0);
    for t in &times {
        assert!(*t < 0.2, "connect took {t} s");
    }
    assert_eq!(errs, 0);
    assert!(lines.is_empty(), "{lines:#?}");
    assert!(drops.is_empty(), "{drops:#?}");
    eprintln!("{name}: {:.1} s", t.elapsed().as_secs_f64());
}

/// The long case (~70 s): with a stable outer source port every re-sent SYN rides the same
/// mis-NATed outer conntrack, until a retry gap (32 s) outlasts its 30 s unreplied timeout.
#[test]
fn lab_vxlan_stable_txhash_waits_for_the_outer_conntrack_to_expire() {
    assert!(is_root(), "the lab tests need root");
    let t = Instant::now();
    let cfg = VxlanConfig {
        udpcsum: true,
        tx_offload: true,
        txrehash: false,
    };
    let (times, errs, lines, drops) = run(cfg, 1, 85.0);
    // SYNs at 0, 1, 2, 3, 4, 5, 7, 11, 19, 35 s are lost; the one at ~67 s gets through.
    assert!(
        (60.0..80.0).contains(&times[0]),
        "connect took {} s",
        times[0]
    );
    assert!(errs >= 9, "UdpInCsumErrors +{errs}");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let l = &lines[0];
    eprintln!("C slow connect (txrehash=0): {l}");
    assert_eq!(l["outcome"], "established", "{l}");
    assert!(l["syn_retransmits"].as_u64().unwrap_or(0) >= 9, "{l}");
    eprintln!("verdicts: {:?}", verdicts(&[l]));
    // The ~67 s ladder (≥ 6.5): the escape is the first retry after a gap > 30 s.
    assert_eq!(l["verdict"]["issue"], "vxlan-csum-offload", "{l}");
    assert_eq!(l["verdict"]["confidence"], "high", "{l}");
    assert!(
        drops.len() >= 9,
        "one drop line per dropped tunnel packet: {drops:#?}"
    );
    eprintln!("lab_vxlan_txrehash0: {:.1} s", t.elapsed().as_secs_f64());
}
