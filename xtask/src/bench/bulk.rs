//! Bulk throughput: one TCP stream through a veth pair between two namespaces (`load blast` →
//! `load sink`), bare vs `netlat watch` attached, interleaved with the order alternating.

use std::{fmt::Write as _, time::Duration};

use anyhow::Result;

use super::{
    Ctx, Row, Section, fmt_pct, lab,
    lab::{Netns, Proc},
    netlat::{self, Netlat},
    spread,
};

/// One stream: Gbit/s as the sender wrote it.
fn stream(ctx: &Ctx, a: &Netns, b: &Netns) -> Result<f64> {
    let mut sink = Proc::spawn(b.cmd(&ctx.load, &["sink", "9001"]), false)?;
    sink.ready()?;
    let secs = ctx.secs.to_string();
    let mut blast = Proc::spawn(
        a.cmd(&ctx.load, &["blast", "10.240.1.2", "9001", &secs]),
        false,
    )?;
    let out = blast.finish(Duration::from_secs_f64(ctx.secs + 60.0))?;
    sink.finish(Duration::from_secs(30))?;
    Ok(lab::values(&out, "bytes")? * 8.0 / lab::values(&out, "seconds")? / 1e9)
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let a = Netns::new("bulka")?;
    let b = Netns::new("bulkb")?;
    lab::veth(&a, "10.240.1.1/24", &b, "10.240.1.2/24", "u")?;
    // Run counts of netlat's programs need the statistics on; they cost only per run.
    let _stats = lab::Sysctl::set("kernel.bpf_stats_enabled", "1")?;
    let rounds = ctx.runs * 4;
    let mut body = String::new();
    writeln!(
        body,
        "One TCP stream 10.240.1.1 → 10.240.1.2 through a veth pair between two namespaces \
         (`load blast`, 128 KiB writes, → `load sink`), {} s per run, bare and with netlat in \
         an order alternating per round; {rounds} rounds (four times the other figures': a \
         stream's rate drifts by ±3 % between runs here, and the bare rates alone range \
         further). With netlat, the table also gives what netlat did during the stream: the \
         CPU time of its process (user + system, clock ticks of 10 ms) and the runs of its \
         eBPF programs (`kernel.bpf_stats_enabled=1`).\n\n\
         | round | bare Gbit/s | netlat Gbit/s | netlat/bare | netlat CPU ticks | program runs |\n\
         |---|---|---|---|---|---|",
        ctx.secs
    )?;
    let (mut bare_v, mut netlat_v, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut all_ticks, mut all_runs) = (0, 0);
    for round in 0..rounds {
        let (mut bare, mut with, mut ticks, mut runs) = (0.0, 0.0, 0, 0);
        for netlat_first in [round % 2 == 1, round % 2 == 0] {
            if netlat_first {
                let n = Netlat::start_to_file(&ctx.netlat, &[], &ctx.tmp.0.join("bulk.jsonl"))?;
                ctx.startups.push(n.startup);
                let (t0, p0) = (netlat::cpu_ticks(n.pid())?, netlat::prog_stats(n.pid())?);
                with = stream(ctx, &a, &b)?;
                let (t1, p1) = (netlat::cpu_ticks(n.pid())?, netlat::prog_stats(n.pid())?);
                ticks = t1.saturating_sub(t0);
                runs = netlat::delta(&p0, &p1)
                    .iter()
                    .map(|p| p.run_cnt)
                    .sum::<u64>();
                n.stop()?;
            } else {
                bare = stream(ctx, &a, &b)?;
            }
        }
        bare_v.push(bare);
        netlat_v.push(with);
        ratios.push(with / bare);
        writeln!(
            body,
            "| {} | {bare:.2} | {with:.2} | {} | {ticks} | {runs} |",
            round + 1,
            fmt_pct(with / bare)
        )?;
        all_ticks += ticks;
        all_runs += runs;
        eprintln!(
            "bench: bulk round {}: bare {bare:.2} Gbit/s, netlat {with:.2} Gbit/s",
            round + 1
        );
    }
    writeln!(
        body,
        "\nWith netlat, over all {rounds} streams: {all_ticks} CPU ticks of netlat's process, \
         {all_runs} runs of its programs."
    )?;
    let r = spread(&ratios);
    Ok(Section {
        title: "Bulk throughput".into(),
        rows: vec![Row {
            figure: "bulk TCP through veth: netlat / bare".into(),
            target: "≥ 99 %".into(),
            measured: r.pct(),
            peer: format!(
                "bare {} Gbit/s, netlat {} Gbit/s",
                spread(&bare_v).fixed(2),
                spread(&netlat_v).fixed(2)
            ),
            pass: Some(r.median >= 0.99),
        }],
        body,
    })
}
