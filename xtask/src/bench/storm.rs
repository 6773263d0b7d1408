//! Connect storm: short TCP connections on loopback inside a namespace, bare vs `netlat watch`
//! attached vs the counting bpftrace script, interleaved per round with the order rotated, with
//! two clients: one that closes each connection the ordinary way (connect, read the server's
//! EOF, close) as fast as it can, and one that aborts each with a RST (issue 14) paced to
//! 30 k connects/s. Then, per client, one more netlat run with `kernel.bpf_stats_enabled=1` for
//! the programs' ns/run, and the SYN storm of issue 14: ≥ 100 k connects from several
//! namespaces at once with netlat's default ring, while one connect's first SYN is really
//! dropped (a 1 s connect): 0 lost events, and that connect reported with its verdict.

use std::fmt::Write as _;

use anyhow::{Context as _, Result};

use super::{
    Ctx, Row, Section, fmt_pct, lab,
    lab::{Netns, Proc},
    netlat::{self, Bpftrace, Netlat, Peers},
    spread,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bare,
    Netlat,
    Bpftrace,
}

/// How the storm's client ends each connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    /// Reads the server's EOF, then closes (FIN), flat out.
    Eof,
    /// Closes right after the connect with `SO_LINGER` 0 (RST), paced to [`RST_RATE`].
    Rst,
}

/// The RST client's pace (issue 14: "at 30 k connects/s").
const RST_RATE: f64 = 30_000.0;

impl Client {
    /// Its words in the table's figures.
    fn label(self) -> &'static str {
        match self {
            Client::Eof => "connect storm",
            Client::Rst => "connect storm, RST close",
        }
    }
}

/// One storm run: connects per second.
fn storm(ctx: &Ctx, ns: &Netns, client: Client) -> Result<(f64, f64)> {
    let secs = ctx.secs.to_string();
    let rate = RST_RATE.to_string();
    let args: Vec<&str> = match client {
        Client::Eof => vec!["storm", "127.0.0.1", "9000", &secs],
        Client::Rst => vec!["rststorm", "127.0.0.1", "9000", &secs, &rate],
    };
    let mut client = Proc::spawn(ns.cmd(&ctx.load, &args), false)?;
    let lines = client.finish(std::time::Duration::from_secs_f64(ctx.secs + 60.0))?;
    let n = lab::values(&lines, "connects")?;
    let failed = lab::values(&lines, "failed")?;
    Ok((n / lab::values(&lines, "seconds")?, failed))
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let ns = Netns::new("storm")?;
    let mut server = Proc::spawn(ns.cmd(&ctx.load, &["serve", "9000"]), false)?;
    server.ready()?;
    let script = ctx.tmp.0.join("count.bt");
    std::fs::write(&script, netlat::BPFTRACE_SCRIPT)?;

    let mut body = String::new();
    writeln!(
        body,
        "Client and server (`load storm` / `load serve`, C) in one namespace on 127.0.0.1; the \
         server accepts and closes, the client reads EOF and closes, {} s per run. netlat runs \
         as `netlat watch --output json > FILE` (nothing reads it while it runs); bpftrace runs the \
         counting script below. Each round runs every mode once, in an order rotated per round; \
         {} rounds (twice the other figures': the rate of this VM drifts by ±5 % between runs, \
         which is more than the cost being measured).\n",
        ctx.secs,
        ctx.runs * 2
    )?;
    let mut rows = compare(ctx, &ns, &script, Client::Eof, &mut body)?;
    writeln!(
        body,
        "\n### RST client\n\nThe same rounds with `load rststorm`: the client sets \
         `SO_LINGER` {{1, 0}} and closes right after `connect()` returns, so each connection \
         ends with a RST (no FIN, no TIME_WAIT), paced to {RST_RATE:.0} connects/s on an \
         absolute schedule (a client slower than that runs flat out: the rates below are what \
         this machine reached).\n"
    )?;
    rows.extend(compare(ctx, &ns, &script, Client::Rst, &mut body)?);
    writeln!(
        body,
        "\nThe bpftrace script:\n\n```\n{}```\n",
        netlat::BPFTRACE_SCRIPT
    )?;
    drop(server);
    match syn_storm(ctx, &mut body) {
        Ok(row) => rows.push(row),
        Err(e) => rows.push(Row {
            figure: "SYN storm from several namespaces: lost events, 1 s first-SYN drop".into(),
            target: SYN_STORM_TARGET.into(),
            measured: format!("error: {e:#}"),
            peer: "–".into(),
            pass: Some(false),
        }),
    }
    Ok(Section {
        title: "Connect storm".into(),
        rows,
        body,
    })
}

/// Bare vs netlat vs bpftrace with one client, interleaved; its rounds go to `body`, and a
/// statistics run of netlat (beside the peers) to the per-program figures.
fn compare(
    ctx: &mut Ctx,
    ns: &Netns,
    script: &std::path::Path,
    client: Client,
    body: &mut String,
) -> Result<Vec<Row>> {
    let modes: Vec<Mode> = if ctx.bpftrace.is_some() {
        vec![Mode::Bare, Mode::Netlat, Mode::Bpftrace]
    } else {
        vec![Mode::Bare, Mode::Netlat]
    };
    let rounds = ctx.runs * 2;
    writeln!(
        body,
        "| round | bare conn/s | netlat conn/s | netlat/bare | bpftrace conn/s | bpftrace/bare | netlat attempts seen | netlat lost events |\n|---|---|---|---|---|---|---|---|"
    )?;
    let (mut r_netlat, mut r_bpf, mut bare_rates) = (Vec::new(), Vec::new(), Vec::new());
    let (mut netlat_rates, mut bpf_rates) = (Vec::new(), Vec::new());
    let mut failed_total = 0.0;
    for round in 0..rounds {
        let mut order = modes.clone();
        order.rotate_left(round % modes.len());
        let (mut bare, mut with_netlat, mut with_bpf) = (0.0, 0.0, None);
        let (mut seen, mut lost) = (0, 0);
        for mode in order {
            match mode {
                Mode::Bare => {
                    let (r, f) = storm(ctx, ns, client)?;
                    bare = r;
                    failed_total += f;
                }
                Mode::Netlat => {
                    let n =
                        Netlat::start_to_file(&ctx.netlat, &[], &ctx.tmp.0.join("storm.jsonl"))?;
                    ctx.startups.push(n.startup);
                    let (r, f) = storm(ctx, ns, client)?;
                    let stopped = n.stop()?;
                    with_netlat = r;
                    failed_total += f;
                    seen = stopped.summary.get("attempts").u64().unwrap_or(0);
                    lost = netlat::lost_total(&stopped.summary);
                }
                Mode::Bpftrace => {
                    let bin = ctx.bpftrace.as_ref().context("bpftrace")?;
                    let b = Bpftrace::start(bin, script)?;
                    let (r, f) = storm(ctx, ns, client)?;
                    b.stop()?;
                    with_bpf = Some(r);
                    failed_total += f;
                }
            }
        }
        bare_rates.push(bare);
        netlat_rates.push(with_netlat);
        r_netlat.push(with_netlat / bare);
        let bpf_cells = match with_bpf {
            Some(b) => {
                bpf_rates.push(b);
                r_bpf.push(b / bare);
                format!("{b:.0} | {}", fmt_pct(b / bare))
            }
            None => "– | –".into(),
        };
        writeln!(
            body,
            "| {} | {bare:.0} | {with_netlat:.0} | {} | {bpf_cells} | {seen} | {lost} |",
            round + 1,
            fmt_pct(with_netlat / bare)
        )?;
        eprintln!(
            "bench: {} round {}: bare {bare:.0}/s, netlat {with_netlat:.0}/s{}",
            client.label(),
            round + 1,
            with_bpf.map_or(String::new(), |b| format!(", bpftrace {b:.0}/s"))
        );
    }
    writeln!(body, "\nFailed connects over all runs: {failed_total}.")?;

    let label = client.label();
    let paced = match client {
        Client::Eof => String::new(),
        Client::Rst => format!(" (paced to {:.0} k/s)", RST_RATE / 1e3),
    };
    let rn = spread(&r_netlat);
    let mut rows = vec![Row {
        figure: format!("{label}{paced}: netlat rate / bare"),
        target: "≥ 99 %".into(),
        measured: rn.pct(),
        peer: format!(
            "bare {} conn/s, netlat {} conn/s",
            spread(&bare_rates).fixed(0),
            spread(&netlat_rates).fixed(0)
        ),
        pass: Some(rn.median >= 0.99),
    }];
    let cost_figure = format!("{label}: netlat cost vs bpftrace counting (rate change vs bare)");
    if r_bpf.is_empty() {
        rows.push(Row {
            figure: cost_figure,
            target: "netlat costs less".into(),
            measured: "not measured: bpftrace could not be installed".into(),
            peer: "–".into(),
            pass: None,
        });
    } else {
        let rb = spread(&r_bpf);
        let (cost_n, cost_b) = (1.0 - rn.median, 1.0 - rb.median);
        rows.push(Row {
            figure: cost_figure,
            target: "netlat costs less".into(),
            measured: format!("netlat {:+.1} %", -cost_n * 100.0),
            peer: format!(
                "bpftrace {:+.1} % (rate {}, {} conn/s)",
                -cost_b * 100.0,
                rb.pct(),
                spread(&bpf_rates).fixed(0)
            ),
            pass: Some(cost_n < cost_b),
        });
    }

    // Program statistics under the storm, in a run of its own (stats cost time). The state
    // program is judged on the EOF client (the workload issue 14 names); the RST client's
    // figures are shown beside it.
    let _stats = lab::Sysctl::set("kernel.bpf_stats_enabled", "1")?;
    let mut peers = Peers::start(ctx.bpftrace.as_ref(), &ctx.tmp.0)?;
    let n = Netlat::start_to_file(&ctx.netlat, &[], &ctx.tmp.0.join("storm.jsonl"))?;
    ctx.startups.push(n.startup);
    let before = netlat::prog_stats(n.pid())?;
    peers.as_mut().map(Peers::open).transpose()?;
    let (rate, _) = storm(ctx, ns, client)?;
    let after = netlat::prog_stats(n.pid())?;
    let peer_stats = peers.map(Peers::close).transpose()?;
    if client == Client::Eof {
        ctx.maps = netlat::maps(n.pid()).unwrap_or_default();
    }
    n.stop()?;
    let connects = rate * ctx.secs;
    let workload = format!("{label} ({connects:.0} connects)");
    let judged: &[&str] = match client {
        Client::Eof => &["inet_sock"],
        Client::Rst => &[],
    };
    ctx.record_progs(&workload, &netlat::delta(&before, &after), judged);
    ctx.record_peers(&workload, peer_stats.as_ref());
    Ok(rows)
}

/// Client namespaces of the SYN storm.
const STORM_CLIENTS: usize = 3;
/// Seconds of the SYN storm (enough for 100 k connects at this VM's rate).
const STORM_SECS: f64 = 15.0;
const SYN_STORM_TARGET: &str =
    "≥ 100 k connects, 0 lost, the 1 s connect reported with its verdict";
/// The lab tests' first-SYN-drop ruleset (`netlat_tests::first_syn_drop`).
const FIRST_SYN_DROP: &str = include_str!("../../../tests/src/first_syn_drop.nft");

/// `STORM_CLIENTS` namespaces storm one server namespace over veths for `STORM_SECS`; in the
/// middle one connect goes to a port whose first SYN an nftables rule drops.
fn syn_storm(ctx: &Ctx, body: &mut String) -> Result<Row> {
    let server = Netns::new("sss")?;
    let mut clients = Vec::new();
    for i in 0..STORM_CLIENTS {
        let c = Netns::new(&format!("ssc{i}"))?;
        lab::veth(
            &c,
            &format!("10.241.{i}.1/24"),
            &server,
            &format!("10.241.{i}.2/24"),
            &format!("s{i}"),
        )?;
        c.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
        clients.push(c);
    }
    server.nft(
        &FIRST_SYN_DROP
            .replace("@TABLE@", "nlstorm")
            .replace("@PORT@", "9101"),
    )?;
    let mut serve = Proc::spawn(server.cmd(&ctx.load, &["serve", "9100", "9101"]), false)?;
    serve.ready()?;
    let out = ctx.tmp.0.join("synstorm.jsonl");
    let n = Netlat::start_to_file(&ctx.netlat, &[], &out)?;
    let secs = STORM_SECS.to_string();
    let mut storms = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let ip = format!("10.241.{i}.2");
        storms.push(Proc::spawn(
            c.cmd(&ctx.load, &["storm", &ip, "9100", &secs]),
            false,
        )?);
    }
    std::thread::sleep(std::time::Duration::from_secs_f64(STORM_SECS / 3.0));
    let mut slow = Proc::spawn(
        clients[0].cmd(
            &ctx.load,
            &["firstsyn", "10.241.0.2", "9101", "1", "0", "5"],
        ),
        false,
    )?;
    slow.ready()?;
    let slow_lines = slow.finish(std::time::Duration::from_secs(30))?;
    let mut connects = 0.0;
    for mut s in storms {
        let lines = s.finish(std::time::Duration::from_secs_f64(STORM_SECS + 60.0))?;
        connects += lab::values(&lines, "connects")?;
    }
    let stopped = n.stop()?;
    drop(serve);
    let lost = netlat::lost_total(&stopped.summary);
    let seen = stopped.summary.get("attempts").u64().unwrap_or(0);
    let reported: Vec<String> = std::fs::read_to_string(&out)?
        .lines()
        .filter(|l| l.starts_with("{\"type\":\"connect\"") && l.contains("10.241.0.2:9101"))
        .map(|l| {
            let v = crate::json::parse(l).unwrap_or(crate::json::Value::Null);
            format!(
                "{} ms, {}",
                v.get("connect_ms")
                    .num()
                    .map_or("?".into(), |m| format!("{m:.0}")),
                v.get("verdict")
                    .get("issue")
                    .as_str()
                    .unwrap_or("no verdict")
            )
        })
        .collect();
    let client_done = slow_lines
        .iter()
        .find(|l| l.text.starts_with("conn "))
        .map_or("?".to_owned(), |l| l.text.clone());
    let named = reported.iter().any(|r| r.ends_with("netfilter-rule-drop"));
    writeln!(
        body,
        "\n### SYN storm from {STORM_CLIENTS} namespaces\n\n`load storm` from {STORM_CLIENTS} \
         client namespaces at once, each over its own veth to one server namespace \
         ({STORM_SECS} s), netlat with its default ring writing to a file; {:.1} s in, one \
         `load firstsyn` connect from the first client to a port whose first SYN this ruleset \
         (the lab tests') drops:\n\n```\n{}```\n\n| connects | attempts counted by netlat | \
         lost events | the 1 s connect as reported | client (`conn SPORT T0 DONE`) |\n|---|---|---|---|---|\n\
         | {connects:.0} | {seen} | {lost} | {} | {client_done} |\n",
        STORM_SECS / 3.0,
        FIRST_SYN_DROP
            .replace("@TABLE@", "nlstorm")
            .replace("@PORT@", "9101")
            .trim_start(),
        if reported.is_empty() {
            "not reported".to_owned()
        } else {
            reported.join("; ")
        }
    )?;
    Ok(Row {
        figure: format!(
            "SYN storm from {STORM_CLIENTS} namespaces: lost events, 1 s first-SYN drop"
        ),
        target: SYN_STORM_TARGET.into(),
        measured: format!(
            "{connects:.0} connects, {lost} lost, the 1 s connect {}",
            if named {
                "reported as netfilter-rule-drop"
            } else {
                "NOT reported with its verdict"
            }
        ),
        peer: format!("netlat counted {seen} attempts"),
        pass: Some(connects >= 100_000.0 && lost == 0 && named),
    })
}
