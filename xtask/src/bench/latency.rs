//! Verdict latency: from the kernel event that decides a verdict to the printed line. The lab
//! of `tests/tests/lab_first_syn.rs` (an nftables rule drops the first SYN of every flow to
//! 8080): each connect is established after the 1 s SYN retransmit, and that
//! SYN_SENT→ESTABLISHED transition makes netlat print the connect line with its verdict.
//!
//! `load firstsyn` notes the wall time just before each `connect()` (the CLOSE→SYN_SENT event
//! follows within microseconds); the transition happened `connect_ms` later (netlat's own
//! kernel-timestamp difference); the bench stamps each line when it reads it from netlat's
//! stdout. Latency = arrival − (connect call + connect_ms).

use std::{collections::BTreeMap, fmt::Write as _, thread, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    Ctx, Row, Section, json, lab,
    lab::{Netns, Proc},
    netlat::{Netlat, unix_ns},
    percentile, spread,
};

/// The lab tests' first-SYN-drop ruleset (`netlat_tests::first_syn_drop`), read from the one
/// file both use; xtask stays free of the tests crate's dependencies.
const FIRST_SYN_DROP_TEMPLATE: &str = include_str!("../../../tests/src/first_syn_drop.nft");
/// The table the ruleset is loaded as (its `seen` set is flushed between rounds).
const TABLE: &str = "labsyn";

/// The ruleset for this lab: the first SYN of every new flow to 8080 is dropped.
fn first_syn_drop() -> String {
    FIRST_SYN_DROP_TEMPLATE
        .replace("@TABLE@", TABLE)
        .replace("@PORT@", "8080")
}

const CONNECT: &str = "{\"type\":\"connect\"";

/// Connects per round and the gap between their starts.
const CONNECTS: usize = 200;
const GAP_US: &str = "5000";

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let a = Netns::new("lata")?;
    let b = Netns::new("latb")?;
    lab::veth(&a, "10.240.3.1/24", &b, "10.240.3.2/24", "l")?;
    let ruleset = first_syn_drop();
    b.nft(&ruleset)?;
    let mut server = Proc::spawn(b.cmd(&ctx.load, &["serve", "8080"]), false)?;
    server.ready()?;
    let mut n = Netlat::start(&ctx.netlat, &[])?;
    ctx.startups.push(n.startup);

    let mut body = String::new();
    writeln!(
        body,
        "{CONNECTS} connects per round, started {GAP_US} µs apart, each established after the \
         1 s SYN retransmit (first SYN dropped by the rule of the lab test, below); one netlat \
         for all rounds. Latency = time the bench read the connect line from netlat's stdout − \
         (wall time of the `connect()` call + `connect_ms`).\n\n```\n{}```\n",
        ruleset.trim_start()
    )?;
    writeln!(
        body,
        "| round | lines / connects | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|"
    )?;
    // Per round: source address → wall ns of its connect() call, for the connects that
    // completed.
    let mut rounds: Vec<BTreeMap<String, i128>> = Vec::new();
    let mut consumed = 0;
    for round in 0..ctx.runs {
        b.output("nft", &["flush", "set", "inet", TABLE, "seen"])?;
        let mut client = Proc::spawn(
            a.cmd(
                &ctx.load,
                &[
                    "firstsyn",
                    "10.240.3.2",
                    "8080",
                    &CONNECTS.to_string(),
                    GAP_US,
                    "6",
                ],
            ),
            false,
        )?;
        let out = client.finish(Duration::from_mins(1))?;
        let starts: BTreeMap<String, i128> = out
            .iter()
            .filter_map(|l| {
                let mut w = l.text.split_whitespace();
                (w.next()? == "conn").then_some(())?;
                let (port, t0, done) = (w.next()?, w.next()?, w.next()?);
                (done != "0").then(|| Some((format!("10.240.3.1:{port}"), t0.parse().ok()?)))?
            })
            .collect();
        // Give netlat up to 3 s to print this round's lines before the next round starts;
        // latencies are computed at the end from every line, late ones included.
        for _ in 0..60 {
            n.proc.pump();
            let got = n.proc.seen[consumed..]
                .iter()
                .filter(|l| l.text.starts_with(CONNECT))
                .filter(|l| starts.keys().any(|k| l.text.contains(&format!("\"{k}\""))))
                .count();
            if got >= starts.len() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        consumed = n.proc.seen.len();
        eprintln!("bench: latency round {} done", round + 1);
        rounds.push(starts);
    }
    let stopped = n.stop()?;

    // Match lines to connects in arrival order: a source address may recur in a later round,
    // so a line goes to the earliest unmatched connect of that address that started before it.
    let mut pending: BTreeMap<&str, Vec<(usize, i128)>> = BTreeMap::new();
    for (r, starts) in rounds.iter().enumerate() {
        for (src, t0) in starts {
            pending.entry(src.as_str()).or_default().push((r, *t0));
        }
    }
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); rounds.len()];
    for l in stopped.lines.iter().filter(|l| l.text.starts_with(CONNECT)) {
        let v = json::parse(&l.text)?;
        let Some(queue) = v.get("src").as_str().and_then(|s| pending.get_mut(s)) else {
            continue;
        };
        let arrived = unix_ns(l.wall);
        let Some(i) = queue.iter().position(|(_, t0)| *t0 < arrived) else {
            continue;
        };
        let (r, t0) = queue.remove(i);
        let ms = v.get("connect_ms").num().context("connect_ms")?;
        lat[r].push((arrived - t0 - (ms * 1e6) as i128) as f64 / 1e6);
    }
    let never: usize = pending.values().map(Vec::len).sum();
    let (mut p50s, mut p99s, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for (r, mut v) in lat.into_iter().enumerate() {
        v.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&v, 0.50), percentile(&v, 0.99));
        let max = v.last().copied().unwrap_or(f64::NAN);
        writeln!(
            body,
            "| {} | {} / {} | {p50:.2} | {p99:.2} | {max:.2} |",
            r + 1,
            v.len(),
            rounds[r].len()
        )?;
        p50s.push(p50);
        p99s.push(p99);
        all.extend(v);
    }
    all.sort_by(f64::total_cmp);
    let over_10ms = all.iter().filter(|&&ms| ms > 10.0).count();
    writeln!(
        body,
        "\nAll rounds pooled: {} lines, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {over_10ms} \
         lines later than 10 ms; connects never printed: {never}; netlat lost events: {}.",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN),
        super::netlat::lost_total(&stopped.summary),
    )?;
    let (s50, s99) = (spread(&p50s), spread(&p99s));
    Ok(Section {
        title: "Verdict latency".into(),
        rows: vec![
            Row {
                figure: "verdict latency p99 (kernel event → line read)".into(),
                target: "≤ 10 ms".into(),
                measured: s99.unit(2, "ms"),
                peer: format!("p50 {}", s50.unit(2, "ms")),
                pass: Some(s99.median <= 10.0 && never == 0),
            },
            Row {
                figure: "verdict latency: lines later than 10 ms / never printed".into(),
                target: "–".into(),
                measured: format!("{over_10ms} / {never}"),
                peer: format!(
                    "of {} connects",
                    rounds.iter().map(BTreeMap::len).sum::<usize>()
                ),
                pass: None,
            },
        ],
        body,
    })
}
