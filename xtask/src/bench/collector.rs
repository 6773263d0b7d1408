//! Collector throughput and micro-benchmarks.
//!
//! The figure is `netlat replay` of recordings of 10 M synthetic ring-buffer items (written in
//! the `watch --record` format by `netlat/benches/collector.rs`) with JSON output to
//! /dev/null, pinned to one core with `taskset`: file reading, decoding, enrichment, tracking,
//! judging and printing. The same bench binary also drives `Engine::handle_bytes` directly
//! (no file), and criterion times the decoders and the engine per item.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Ctx, Row, Section, lab::Proc, spread};
use crate::{command, output};

/// Items per recording.
const EVENTS: u64 = 10_000_000;
/// A replay taking longer is stopped (the rate is then below EVENTS / REPLAY_CAP).
const REPLAY_CAP: Duration = Duration::from_secs(30);
const MIXES: [&str; 3] = ["connects", "drops", "mixed"];

fn kv(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

/// `test NAME ... bench: N ns/iter (+/- M)` lines of criterion's bencher format.
fn bencher_lines(text: &str) -> Vec<(String, f64, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("test ")?;
            let (name, rest) = rest.split_once(" ... bench:")?;
            let mut w = rest.split_whitespace();
            let ns: f64 = w.next()?.replace(',', "").parse().ok()?;
            let _unit = w.next()?;
            let pm: f64 = w
                .next()
                .and_then(|_| w.next())?
                .trim_end_matches(')')
                .replace(',', "")
                .parse()
                .ok()?;
            Some((name.trim().to_owned(), ns, pm))
        })
        .collect()
}

fn collector_bench(ctx: &Ctx, args: &[&str]) -> Result<String> {
    output(
        command("cargo")
            .args(["bench", "-p", "netlat", "--bench", "collector", "--"])
            .args(args)
            .current_dir(&ctx.root),
    )
}

/// One timed `netlat replay FILE --output json > /dev/null` on the last CPU; `None` when it
/// hit the cap.
fn replay(ctx: &Ctx, file: &std::path::Path, cpu: &str) -> Result<Option<f64>> {
    let mut cmd = std::process::Command::new("taskset");
    cmd.args(["-c", cpu])
        .arg(&ctx.netlat)
        .arg("replay")
        .arg(file)
        .args(["--output", "json"]);
    let start = Instant::now();
    let mut p = Proc::spawn_to(cmd, std::process::Stdio::null())?;
    match p.finish(REPLAY_CAP) {
        Ok(_) => Ok(Some(start.elapsed().as_secs_f64())),
        Err(_) if start.elapsed() >= REPLAY_CAP => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let cpu =
        (std::thread::available_parallelism().map_or(1, std::num::NonZero::get) - 1).to_string();
    let mut body = String::new();
    writeln!(
        body,
        "`netlat replay FILE --output json > /dev/null` under `taskset -c {cpu}` (one core), \
         of recordings of {EVENTS} synthetic ring-buffer items in the `watch --record` format, \
         written by `cargo bench -p netlat --bench collector -- --write-recordings DIR`. Mixes \
         (netlat/benches/common/mod.rs): `connects` = fast connects only (CLOSE→SYN_SENT, \
         SYN_SENT→ESTABLISHED; 64 in flight); `drops` = NETFILTER_DROP of UDP/4789 VXLAN \
         packets with an inner TCP SYN (the deepest decode), none matching a connect; `mixed` = \
         per 100 attempts 97 fast, 3 slow (first SYN dropped at nft_do_chain, one retransmit, \
         established after 1 s: printed with a verdict) and 10 VXLAN drops. Rounds interleave \
         the mixes; a replay still running after {} s is stopped and counted as slower than \
         {EVENTS} / {} s (and the mix is not replayed again).\n",
        REPLAY_CAP.as_secs(),
        REPLAY_CAP.as_secs()
    )?;
    collector_bench(
        ctx,
        &[
            "--write-recordings",
            &ctx.tmp.0.to_string_lossy(),
            "--events",
            &EVENTS.to_string(),
        ],
    )?;
    let mut files = Vec::new();
    for mix in MIXES {
        let path = ctx.tmp.0.join(format!("{mix}.rec"));
        let size = std::fs::metadata(&path)
            .with_context(|| format!("no recording {}", path.display()))?
            .len();
        files.push((mix, path, size));
    }
    writeln!(
        body,
        "| round | mix | file MiB | seconds | events/s |\n|---|---|---|---|---|"
    )?;
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut capped: Vec<&str> = Vec::new();
    for round in 0..ctx.runs {
        let mut order: Vec<&(&str, std::path::PathBuf, u64)> = files.iter().collect();
        order.rotate_left(round % files.len());
        for (mix, path, size) in order {
            if capped.contains(mix) {
                continue;
            }
            let (secs, rate) = if let Some(s) = replay(ctx, path, &cpu)? {
                (format!("{s:.2}"), EVENTS as f64 / s)
            } else {
                capped.push(mix);
                (
                    format!("> {}", REPLAY_CAP.as_secs()),
                    EVENTS as f64 / REPLAY_CAP.as_secs_f64(),
                )
            };
            rates.entry(mix).or_default().push(rate);
            writeln!(
                body,
                "| {} | {mix} | {:.0} | {secs} | {}{rate:.0} |",
                round + 1,
                *size as f64 / f64::from(1 << 20),
                if capped.contains(mix) { "< " } else { "" }
            )?;
            eprintln!(
                "bench: replay {mix} round {}: {rate:.0} events/s",
                round + 1
            );
        }
    }
    let mut rows = Vec::new();
    for (mix, r) in &rates {
        let sp = spread(r);
        let bound = capped.contains(mix);
        rows.push(Row {
            figure: format!("collector: `netlat replay` of 10 M items, {mix} (events/s, one core)"),
            target: "≥ 2 M/s".into(),
            measured: if bound {
                format!(
                    "< {:.0} (did not finish in {} s)",
                    sp.median,
                    REPLAY_CAP.as_secs()
                )
            } else {
                sp.fixed(0)
            },
            peer: "–".into(),
            pass: Some(!bound && sp.median >= 2e6),
        });
    }

    // The engine alone, in process: no file, no process start.
    let text = collector_bench(
        ctx,
        &["--events", "1000000", "--runs", "1", "--max-seconds", "5"],
    )?;
    writeln!(
        body,
        "\nThe engine alone (`cargo bench -p netlat --bench collector`, in process, pinned; \
         1 M items, one run, stopping after 5 s; the synthetic kallsyms has 100 k symbols; \
         'generator' is the share of the time spent making the items):\n\n\
         | mix | run | events | seconds | events/s | generator | lines printed |\n\
         |---|---|---|---|---|---|---|"
    )?;
    let mut got = false;
    for line in text.lines().filter(|l| l.starts_with("collector ")) {
        let m = kv(line);
        let num =
            |k: &str| -> Result<f64> { Ok(m.get(k).with_context(|| format!("no {k}"))?.parse()?) };
        let (n, s, g) = (num("events")?, num("seconds")?, num("gen_seconds")?);
        writeln!(
            body,
            "| {} | {} | {n:.0} | {s:.2} | {:.0} | {:.0} % | {} |",
            m.get("mix").unwrap_or(&"?"),
            m.get("run").unwrap_or(&"?"),
            n / s,
            g / s * 100.0,
            m.get("reports").unwrap_or(&"?")
        )?;
        got = true;
    }
    if !got {
        bail!("the collector bench printed no results");
    }

    let crit = output(
        command("cargo")
            .args(["bench", "-p", "netlat", "--bench", "decode", "--"])
            .args(["--warm-up-time", "0.5", "--measurement-time", "1"])
            .args(["--output-format", "bencher"])
            .current_dir(&ctx.root),
    )?;
    writeln!(
        body,
        "\nCriterion micro-benchmarks (`cargo bench -p netlat --bench decode`, 0.5 s warm-up, 1 s \
         measurement; `engine/event_*` is one item of the mix through `Engine::handle_bytes`):\n\n\
         | benchmark | ns/iter | ± |\n|---|---|---|"
    )?;
    let benches = bencher_lines(&crit);
    if benches.is_empty() {
        bail!("criterion printed no results");
    }
    for (name, ns, pm) in benches {
        writeln!(body, "| `{name}` | {ns:.0} | {pm:.0} |")?;
    }
    for (_, path, _) in &files {
        let _ = std::fs::remove_file(path);
    }
    Ok(Section {
        title: "Collector throughput and micro-benchmarks".into(),
        rows,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bencher_lines() {
        let text = "noise\ntest engine/event_drops ... bench:        1,234 ns/iter (+/- 56)\n\
                    test packet_decode/ipv4_tcp_syn ... bench:   12 ns/iter (+/- 0)\n";
        let v = bencher_lines(text);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], ("engine/event_drops".into(), 1234.0, 56.0));
        assert_eq!(v[1].1, 12.0);
    }

    #[test]
    fn reads_collector_lines() {
        let m = kv("collector mix=drops run=2 events=10 seconds=0.5");
        assert_eq!(m.get("mix"), Some(&"drops"));
        assert_eq!(m.get("seconds"), Some(&"0.5"));
    }
}
