//! Issue B lab: two pods behind one masquerade connect from the same source ports at the same
//! instant (conntrack insertion race). Plain `masquerade` keeps the source port, so the second
//! SYN of a pair clashes at confirm and is dropped (`insert_failed`): a 1 s connect.
//! `masquerade fully-random` never clashes. SNAT to a single port clashes on every SYN.
//!
//! For now the tests assert the kernel signature netlat already reports (SYN retransmits, the
//! client's timings, the router's counters); the verdict assertions come with the attribution.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use netlat_tests::{
    Watch, connects_in, is_root,
    lab::{RaceResult, SnatLab, verdicts},
    syn_resends,
};

/// Ports per pod and race round.
const N: usize = 1500;

/// The race is timing-sensitive and pins CPU 0 and 1: the tests of this file run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn summary(r: &RaceResult) -> String {
    format!(
        "{} connects, {} slow, insert_failed +{}, drop +{}, the pods' Tcp RetransSegs +{}",
        r.connects.len(),
        r.slow,
        r.insert_failed,
        r.drop,
        r.retrans_segs
    )
}

/// How many times each verdict id occurs.
fn tally(ids: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for id in ids {
        *m.entry(id.as_str()).or_insert(0) += 1;
    }
    m
}

/// Stop netlat (after letting the last events drain) and return its lines.
fn stop(watch: Watch) -> Vec<serde_json::Value> {
    std::thread::sleep(Duration::from_millis(300));
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly on SIGINT");
    lines
}

#[test]
fn lab_snat_masquerade_race_gives_one_second_connects() {
    assert!(is_root(), "the lab tests need root");
    let _serial = serial();
    let t = Instant::now();
    let lab = SnatLab::new(false);
    let watch = Watch::start(&[]);

    // The race is probabilistic: a new round with fresh ports if one gives no clash.
    let mut rounds = Vec::new();
    for round in 0..3u16 {
        let r = lab.race(N, 20000 + round * 2000);
        eprintln!("masquerade round {round}: {}", summary(&r));
        let clashed = r.slow > 0;
        rounds.push(r);
        if clashed {
            break;
        }
    }
    let lines = stop(watch);
    let r = rounds.last().expect("a round");
    assert!(r.slow > 0, "no clash in {} rounds", rounds.len());
    assert!(r.insert_failed > 0, "{}", summary(r));

    // Shown first: when a check below fails, netlat's own counts (lost events, unknown
    // sockets) say whether it missed the kernel events or misread them.
    let summary_line = lines.iter().find(|v| v["type"] == "summary");
    eprintln!("netlat summary: {summary_line:?}");
    let mut reported = Vec::new();
    for c in r.slow_connects() {
        let s = c
            .seconds
            .unwrap_or_else(|| panic!("never established: {c:?}"));
        assert!(s < 4.0, "{c:?}");
        let pod = usize::from(c.pod - 1);
        let src = format!("{}:{}", lab.pod_ips[pod], c.sport);
        let line = connects_in(&lines, lab.pods[pod].inode())
            .into_iter()
            .find(|l| l["src"] == src.as_str() && l["dst"] == lab.server_addr().as_str())
            .unwrap_or_else(|| panic!("netlat did not report slow connect {c:?} ({s:.3} s)"));
        assert!(syn_resends(line) >= 1, "{line}");
        assert_eq!(line["outcome"], "established", "{line}");
        reported.push(line);
    }
    // Every slow connect's line was checked above; print a few for the attribution work.
    for l in reported.iter().take(3) {
        eprintln!("B slow connect: {l}");
    }
    let unseen = reported
        .iter()
        .filter(|l| l["syn_resent_unseen"] == true)
        .count();
    let seen: u64 = reported
        .iter()
        .filter_map(|l| l["syn_retransmits"].as_u64())
        .sum();
    // The kernel's own count can exceed what its tracepoint reported: on this 6.18 VM under
    // load, some SYN retransmits counted in RetransSegs reach no tracepoint probe at all
    // (bpftrace's perf probe misses them too). Those are the resends netlat infers.
    eprintln!(
        "{unseen} resends inferred (the kernel reported no retransmit); retransmits of the \
         slow connects {seen}, the pods' Tcp RetransSegs +{}",
        r.retrans_segs
    );
    let matched = reported
        .iter()
        .filter(|l| l["drops"].as_array().is_some_and(|d| !d.is_empty()))
        .count();
    eprintln!(
        "{} slow connects reported, {matched} with matched drops; verdicts: {:?}",
        reported.len(),
        tally(&verdicts(&reported))
    );
    let in_pods: usize = lab
        .pods
        .iter()
        .map(|p| connects_in(&lines, p.inode()).len())
        .sum();
    eprintln!("netlat lines from the pods: {in_pods}");
    // Every clash is named B, with the kernel evidence and the node fact both fitting.
    for l in &reported {
        assert_eq!(l["verdict"]["issue"], "snat-port-clash", "{l}");
        assert_eq!(l["verdict"]["confidence"], "high", "{l}");
        let d = &l["drops"][0];
        assert_eq!(
            d["conntrack"]["original"],
            format!(
                "tcp {} -> {}",
                l["src"].as_str().unwrap_or(""),
                lab.server_addr()
            )
            .as_str(),
            "{l}"
        );
        assert_eq!(d["conntrack"]["confirmed"], false, "{l}");
        assert!(
            d["location"]
                .as_str()
                .is_some_and(|s| s.starts_with("nf_hook_slow")),
            "{l}"
        );
    }
    eprintln!(
        "lab_snat_masquerade_race: {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn lab_snat_fully_random_never_clashes() {
    assert!(is_root(), "the lab tests need root");
    let _serial = serial();
    let t = Instant::now();
    let lab = SnatLab::new(true);
    let watch = Watch::start(&[]);
    let r = lab.race(N, 30000);
    eprintln!("fully-random: {}", summary(&r));
    let lines = stop(watch);

    // Random ports still collide now and then (two unconfirmed entries drawing the same port:
    // 1 in 3000 was seen here), against ≈ 1100 in 3000 without fully-random. Whatever clashes
    // remain must be the only slow connects, and netlat must name them and nothing else.
    let slow: Vec<_> = r.slow_connects().collect();
    assert!(r.insert_failed <= 3, "{}", summary(&r));
    assert!(
        slow.len() as u64 <= r.insert_failed,
        "slow connects with fully-random beyond the clashes: {slow:?} ({})",
        summary(&r)
    );
    let mut reported = 0;
    for pod in &lab.pods {
        for l in connects_in(&lines, pod.inode()) {
            assert_eq!(l["verdict"]["issue"], "snat-port-clash", "{l}");
            reported += 1;
        }
    }
    assert!(
        reported <= slow.len(),
        "netlat reported {reported} of {} slow",
        slow.len()
    );
    eprintln!("lab_snat_fully_random: {:.1} s", t.elapsed().as_secs_f64());
}

#[test]
fn lab_snat_single_port_drops_every_clashing_syn() {
    assert!(is_root(), "the lab tests need root");
    let _serial = serial();
    let t = Instant::now();
    let lab = SnatLab::new(false);
    let watch = Watch::start(&[]);
    let r = lab.single_port_snat();
    eprintln!("single-port SNAT: {r:?}");
    let lines = stop(watch);

    let hold = r.hold.expect("pod1's connect failed");
    assert!(hold < 0.5, "pod1's connect took {hold} s");
    assert!(
        r.clash.is_none_or(|s| s >= 0.9),
        "pod2's connect did not clash: {r:?}"
    );
    assert!(r.insert_failed >= 3, "{r:?}");

    assert!(
        connects_in(&lines, lab.pods[0].inode()).is_empty(),
        "pod1's connect is not slow"
    );
    let pod2 = connects_in(&lines, lab.pods[1].inode());
    assert_eq!(
        pod2.len(),
        1,
        "pod2 (netns {}): every connect and summary line: {:#?}",
        lab.pods[1].inode(),
        lines
            .iter()
            .filter(|l| l["type"] == "connect" || l["type"] == "summary")
            .collect::<Vec<_>>()
    );
    let l = pod2[0];
    eprintln!("single-port clash: {l}");
    assert_eq!(l["dst"], lab.server_addr().as_str(), "{l}");
    if r.clash.is_none() {
        assert_eq!(l["outcome"], "timeout", "{l}");
        assert!(l["syn_retransmits"].as_u64().unwrap_or(0) >= 3, "{l}");
    } else {
        assert!(syn_resends(l) >= 1, "{l}");
    }
    eprintln!("verdicts: {:?}", verdicts(&pod2));
    // A single-port SNAT clashes on every SYN: still a port clash, with every retry explained.
    for l in &pod2 {
        assert_eq!(l["verdict"]["issue"], "snat-port-clash", "{l}");
        // Identical drops of the retries are folded into `repeats`.
        let drops: u64 = l["drops"].as_array().map_or(0, |d| {
            d.iter()
                .map(|x| 1 + x["repeats"].as_u64().unwrap_or(0))
                .sum()
        });
        assert!(drops >= 3, "{l}");
    }
    eprintln!("lab_snat_single_port: {:.1} s", t.elapsed().as_secs_f64());
}
