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

const FIRST_SYN_DROP: &str = r#"
table inet labsyn {
  set seen { type ipv4_addr . inet_service; flags dynamic,timeout; timeout 60s; }
  chain in {
    type filter hook input priority 0; policy accept;
    tcp dport 8080 tcp flags & (syn|ack) == syn ip saddr . tcp sport @seen accept
    tcp dport 8080 tcp flags & (syn|ack) == syn add @seen { ip saddr . tcp sport } drop
  }
}
"#;

const CONNECT: &str = "{\"type\":\"connect\"";

/// Connects per round and the gap between their starts.
const CONNECTS: usize = 200;
const GAP_US: &str = "5000";

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let a = Netns::new("lata")?;
    let b = Netns::new("latb")?;
    lab::veth(&a, "10.240.3.1/24", &b, "10.240.3.2/24", "l")?;
    b.nft(FIRST_SYN_DROP)?;
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
        FIRST_SYN_DROP.trim_start()
    )?;
    writeln!(
        body,
        "| round | lines / connects | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|"
    )?;
    let (mut p50s, mut p99s, mut all) = (Vec::new(), Vec::new(), Vec::new());
    // Connects whose line was not read within the round: (source, kernel end in wall ns).
    let mut missing: Vec<(String, i128)> = Vec::new();
    let mut consumed = 0;
    for round in 0..ctx.runs {
        b.output("nft", &["flush", "set", "inet", "labsyn", "seen"])?;
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
        let out = client.finish(Duration::from_secs(60))?;
        // sport → wall ns of the connect() call, for the connects that completed.
        let starts: BTreeMap<String, i128> = out
            .iter()
            .filter_map(|l| {
                let mut w = l.text.split_whitespace();
                (w.next()? == "conn").then_some(())?;
                let (port, t0, done) = (w.next()?, w.next()?, w.next()?);
                (done != "0").then(|| Some((format!("10.240.3.1:{port}"), t0.parse().ok()?)))?
            })
            .collect();
        // Wait for the lines of the last connects.
        let mut lat = BTreeMap::new();
        for _ in 0..60 {
            n.proc.pump();
            for l in &n.proc.seen[consumed..] {
                if !l.text.starts_with(CONNECT) {
                    continue;
                }
                let v = json::parse(&l.text)?;
                let Some((src, t0)) = v
                    .get("src")
                    .str()
                    .and_then(|s| starts.get_key_value(s))
                else {
                    continue;
                };
                let ms = v.get("connect_ms").num().context("connect_ms")?;
                let end = t0 + (ms * 1e6) as i128;
                lat.insert(src.clone(), (unix_ns(l.wall) - end) as f64 / 1e6);
            }
            consumed = n.proc.seen.len();
            if lat.len() >= starts.len() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        missing.extend(
            starts
                .iter()
                .filter(|(src, _)| !lat.contains_key(*src))
                .map(|(src, t0)| (src.clone(), *t0)),
        );
        let mut lat: Vec<f64> = lat.into_values().collect();
        lat.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));
        let max = lat.last().copied().unwrap_or(f64::NAN);
        writeln!(
            body,
            "| {} | {} / {} | {p50:.2} | {p99:.2} | {max:.2} |",
            round + 1,
            lat.len(),
            starts.len()
        )?;
        eprintln!(
            "bench: latency round {}: {} lines, p50 {p50:.2} ms, p99 {p99:.2} ms",
            round + 1,
            lat.len()
        );
        p50s.push(p50);
        p99s.push(p99);
        all.extend(lat);
    }
    let stopped = n.stop()?;
    all.sort_by(f64::total_cmp);
    let mut diag = String::new();
    for (src, t0) in missing.iter().take(10) {
        let late = stopped.lines.iter().find_map(|l| {
            let v = json::parse(&l.text).ok()?;
            (l.text.starts_with(CONNECT) && v.get("src").str() == Some(src)).then(|| {
                let end = t0 + (v.get("connect_ms").num()? * 1e6) as i128;
                Some(format!(
                    "read {:.0} ms after its end, outcome {}, connect_ms {}",
                    (unix_ns(l.wall) - end) as f64 / 1e6,
                    v.get("outcome").str().unwrap_or("?"),
                    v.get("connect_ms").num()?
                ))
            })?
        });
        writeln!(
            diag,
            "- no line within the round for {src}: {}",
            late.unwrap_or_else(|| "never printed".into())
        )?;
    }
    writeln!(
        body,
        "\nAll rounds pooled: {} lines, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; connects without \
         a line: {missing}; netlat lost events: {}.",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN),
        super::netlat::lost_total(&stopped.summary),
        missing = missing.len()
    )?;
    if !diag.is_empty() {
        writeln!(body, "\n{diag}")?;
    }
    let (s50, s99) = (spread(&p50s), spread(&p99s));
    Ok(Section {
        title: "Verdict latency".into(),
        rows: vec![
            Row {
                figure: "verdict latency p99 (kernel event → line read)".into(),
                target: "≤ 10 ms".into(),
                measured: s99.unit(2, "ms"),
                peer: format!("p50 {}", s50.unit(2, "ms")),
                pass: Some(s99.median <= 10.0 && missing.is_empty()),
            },
            Row {
                figure: "verdict latency: connects without a line".into(),
                target: "0".into(),
                measured: missing.len().to_string(),
                peer: format!("of {}", CONNECTS * ctx.runs),
                pass: Some(missing.is_empty()),
            },
        ],
        body,
    })
}
