//! Verdict latency: from the kernel event that decides a verdict to the printed line. The lab
//! of `tests/tests/lab_first_syn.rs` (an nftables rule drops the first SYN of every flow to
//! 8080): each connect is established after the 1 s SYN retransmit, and that
//! SYN_SENT→ESTABLISHED transition makes netlat print the connect line with its verdict.
//!
//! `load firstsyn` notes the wall time just before each `connect()` (the CLOSE→SYN_SENT event
//! follows within microseconds); the transition happened `connect_ms` later (netlat's own
//! kernel-timestamp difference); the bench stamps each line when it reads it from netlat's
//! stdout. Latency = arrival − (connect call + connect_ms).
//!
//! Time to cause ([`to_cause`]): from a connect's first SYN to the first line (a progress line
//! while it waits, or its connect line) that names the cause, against its first SYN retransmit
//! (goal: at most 50 ms after it), for the 1 s first-SYN drop, a timeout (every SYN dropped
//! until the client gives up), the VXLAN checksum case and the SNAT port clash.

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
    let cause_rows = to_cause(ctx, &mut body)?;
    Ok(Section {
        title: "Verdict latency".into(),
        rows: cause_rows
            .into_iter()
            .chain([
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
            ])
            .collect(),
        body,
    })
}

/// One case of [`to_cause`]: where the client connects from and to, the client's patience,
/// and the cause expected.
struct CauseCase<'a> {
    name: &'static str,
    client: &'a Netns,
    /// The client's address, as netlat prints the connect's source.
    src_ip: &'static str,
    dst_ip: &'static str,
    port: u16,
    timeout_s: &'static str,
    issue: &'static str,
}

/// Connects per case, started this far apart (each its own flow).
const CAUSE_CONNECTS: usize = 20;
const CAUSE_GAP_US: &str = "50000";
/// The goal: the cause is named at most this long after the first SYN retransmit.
const CAUSE_SLACK_MS: f64 = 50.0;

/// Issue C as the VXLAN lab test builds it (`tests/src/lab.rs`, `VxlanLab`): a vxlan device
/// (`udpcsum`) over a veth underlay whose sender has tx checksum offload on the vxlan device,
/// kube-proxy's mark and a `masquerade fully-random` that re-NATs the tunnel packet too, and
/// `net.core.txrehash=0` (a stable outer port: the connect would wait 63/67 s). A server on
/// 10.240.6.2:8080 across the overlay.
fn vxlan_lab(ctx: &Ctx) -> Result<(Netns, Netns, Proc)> {
    let a = Netns::new("vxa")?;
    let b = Netns::new("vxb")?;
    lab::veth(&a, "10.240.5.1/24", &b, "10.240.5.2/24", "u")?;
    a.sysctl("net.core.txrehash", "0")?;
    let vx = lab::ifname("vx")?;
    for (ns, dev, me, peer, overlay) in [
        (
            &a,
            lab::ifname("ua")?,
            "10.240.5.1",
            "10.240.5.2",
            "10.240.6.1/24",
        ),
        (
            &b,
            lab::ifname("ub")?,
            "10.240.5.2",
            "10.240.5.1",
            "10.240.6.2/24",
        ),
    ] {
        ns.ip(&[
            "link", "add", &vx, "type", "vxlan", "id", "42", "dstport", "4789", "local", me,
            "remote", peer, "dev", &dev, "udpcsum",
        ])?;
        ns.ip(&["addr", "add", overlay, "dev", &vx])?;
        ns.ip(&["link", "set", &vx, "up"])?;
    }
    // The underlay computes the checksum before the pair (so the receiver verifies it); the
    // vxlan device leaves it to the offload the second NAT breaks.
    a.output("ethtool", &["-K", &lab::ifname("ua")?, "tx", "off"])?;
    a.output("ethtool", &["-K", &vx, "tx", "on"])?;
    a.nft(
        "table ip benchvx {\n chain out_nat {\n  type nat hook output priority -100;\n  \
         ip daddr 10.240.6.2 tcp dport 8080 meta mark set 0x4000\n }\n chain post_nat {\n  \
         type nat hook postrouting priority 100;\n  meta mark & 0x4000 == 0x4000 masquerade \
         fully-random\n }\n}\n",
    )?;
    let mut server = Proc::spawn(b.cmd(&ctx.load, &["serve", "8080"]), false)?;
    server.ready()?;
    Ok((a, b, server))
}

/// The SNAT port clash (issue B) as `tests/src/lab.rs` `SnatLab::single_port_snat` makes it,
/// the deterministic variant of its two-pod masquerade race: two pods (10.240.7.1,
/// 10.240.8.1) route through a router namespace that SNATs their TCP to the single source port
/// 10.240.9.1:40000 towards the server 10.240.9.2:8080. pod1 holds one connection (so the
/// reply tuple server:8080 → router:40000 is taken, ESTABLISHED, for as long as the bench
/// runs); every SYN pod2 sends is NATed onto the same tuple and dropped by conntrack at
/// confirm (`insert_failed`): the kernel evidence of the masquerade race, on every SYN
/// instead of one in three.
struct SnatLab {
    // Processes before namespaces: fields drop in order.
    _holder: Proc,
    _server: Proc,
    pod2: Netns,
    _pod1: Netns,
    router: Netns,
    _server_ns: Netns,
}

/// The router's NAT rule of [`SnatLab`] (`@UPLINK@` is its uplink's name).
const SNAT_RULESET: &str = "table ip benchsnat {\n chain post {\n  type nat hook postrouting \
                            priority 100;\n  ip saddr { 10.240.7.0/24, 10.240.8.0/24 } oifname \
                            \"@UPLINK@\" meta l4proto tcp snat to 10.240.9.1:40000\n }\n}\n";

fn snat_lab(ctx: &Ctx) -> Result<SnatLab> {
    let pod1 = Netns::new("snp1")?;
    let pod2 = Netns::new("snp2")?;
    let router = Netns::new("snr")?;
    let server = Netns::new("sns")?;
    lab::veth(&pod1, "10.240.7.1/24", &router, "10.240.7.2/24", "p1")?;
    lab::veth(&pod2, "10.240.8.1/24", &router, "10.240.8.2/24", "p2")?;
    lab::veth(&router, "10.240.9.1/24", &server, "10.240.9.2/24", "su")?;
    pod1.ip(&["route", "add", "default", "via", "10.240.7.2"])?;
    pod2.ip(&["route", "add", "default", "via", "10.240.8.2"])?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    router.nft(&SNAT_RULESET.replace("@UPLINK@", &lab::ifname("sua")?))?;
    // `sink` accepts one stream and keeps it open: the holder's conntrack entry stays
    // ESTABLISHED (an accept-and-close server would let it expire within a minute).
    let mut server_proc = Proc::spawn(server.cmd(&ctx.load, &["sink", "8080"]), false)?;
    server_proc.ready()?;
    let mut holder = Proc::spawn(
        pod1.cmd(&ctx.load, &["synhold", "10.240.9.2", "8080", "1", "1"]),
        true,
    )?;
    holder.ready()?;
    // The holder's SYN is confirmed when it leaves the router, its handshake done within a
    // millisecond on these veths; leave it ample time before pod2 connects.
    thread::sleep(Duration::from_millis(300));
    Ok(SnatLab {
        _holder: holder,
        _server: server_proc,
        pod2,
        _pod1: pod1,
        router,
        _server_ns: server,
    })
}

/// First SYN → first line naming the cause, per case; one table row per case in `body`.
fn to_cause(ctx: &mut Ctx, body: &mut String) -> Result<Vec<Row>> {
    let a = Netns::new("tca")?;
    let b = Netns::new("tcb")?;
    lab::veth(&a, "10.240.4.1/24", &b, "10.240.4.2/24", "c")?;
    b.nft(
        &FIRST_SYN_DROP_TEMPLATE
            .replace("@TABLE@", "causesyn")
            .replace("@PORT@", "8080"),
    )?;
    b.nft(
        "table inet causeall {\n chain in {\n  type filter hook input priority 0;\n  \
         tcp dport 8083 tcp flags & (syn|ack) == syn drop\n }\n}\n",
    )?;
    let mut server = Proc::spawn(b.cmd(&ctx.load, &["serve", "8080", "8083"]), false)?;
    server.ready()?;
    let (vx_a, _vx_b, _vx_server) = vxlan_lab(ctx)?;
    let snat = snat_lab(ctx)?;
    let cases = [
        CauseCase {
            name: "1 s first-SYN drop",
            client: &a,
            src_ip: "10.240.4.1",
            dst_ip: "10.240.4.2",
            port: 8080,
            timeout_s: "6",
            issue: "netfilter-rule-drop",
        },
        CauseCase {
            name: "timeout (every SYN dropped, client gives up at 4 s)",
            client: &a,
            src_ip: "10.240.4.1",
            dst_ip: "10.240.4.2",
            port: 8083,
            timeout_s: "4",
            issue: "netfilter-rule-drop",
        },
        CauseCase {
            name: "VXLAN checksum, stable outer port (63/67 s; client gives up at 3 s)",
            client: &vx_a,
            src_ip: "10.240.6.1",
            dst_ip: "10.240.6.2",
            port: 8080,
            timeout_s: "3",
            issue: "vxlan-csum-offload",
        },
        CauseCase {
            name: "SNAT port clash (every SYN dropped at conntrack confirm; client gives up at 3 s)",
            client: &snat.pod2,
            src_ip: "10.240.8.1",
            dst_ip: "10.240.9.2",
            port: 8080,
            timeout_s: "3",
            issue: "snat-port-clash",
        },
    ];
    let mut n = Netlat::start(&ctx.netlat, &[])?;
    ctx.startups.push(n.startup);
    writeln!(
        body,
        "\nTime to cause: {CAUSE_CONNECTS} connects per case and round, {CAUSE_GAP_US} µs \
         apart; per connect, the first line (`retry` or `connect`) naming the expected cause, \
         stamped when read, minus the wall time of its `connect()` call; `after retry` \
         subtracts the first SYN retransmit's offset (from that line). Goal: ≤ first \
         retransmit + {CAUSE_SLACK_MS} ms. The SNAT clash is the lab test's deterministic \
         variant (`tests/src/lab.rs` `SnatLab::single_port_snat`): two pod namespaces routed \
         through a router namespace with\n\n```\n{}```\n\npod1 holds one connection to \
         the server (10.240.9.2:8080, which keeps it open), so every SYN of pod2 is NATed onto \
         the tuple that connection holds and dropped by conntrack at confirm \
         (`insert_failed`), as the second SYN of a masquerade race is.\n\n\
         | case | named / connects | p50 s | p99 s | after retry p50 ms | p99 ms | max ms \
         |\n|---|---|---|---|---|---|---|",
        SNAT_RULESET.replace("@UPLINK@", "<the router's uplink veth>")
    )?;
    let insert_failed_before = insert_failed(&snat.router)?;
    let mut rows = Vec::new();
    for c in &cases {
        let (mut total, mut after, mut connects) = (Vec::new(), Vec::new(), 0);
        for _ in 0..ctx.runs {
            let _ = b.output("nft", &["flush", "set", "inet", "causesyn", "seen"]);
            let from = n.proc.seen.len();
            let mut client = Proc::spawn(
                c.client.cmd(
                    &ctx.load,
                    &[
                        "firstsyn",
                        c.dst_ip,
                        &c.port.to_string(),
                        &CAUSE_CONNECTS.to_string(),
                        CAUSE_GAP_US,
                        c.timeout_s,
                    ],
                ),
                false,
            )?;
            let out = client.finish(Duration::from_mins(1))?;
            // The connect lines of a timeout come when the client gives up: wait for them.
            for _ in 0..40 {
                n.proc.pump();
                thread::sleep(Duration::from_millis(50));
            }
            let starts: BTreeMap<String, i128> = out
                .iter()
                .filter_map(|l| {
                    let mut w = l.text.split_whitespace();
                    (w.next()? == "conn").then_some(())?;
                    Some((
                        format!("{}:{}", c.src_ip, w.next()?),
                        w.next()?.parse().ok()?,
                    ))
                })
                .collect();
            connects += starts.len();
            let mut named: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
            for l in &n.proc.seen[from..] {
                if !(l.text.starts_with("{\"type\":\"retry\"") || l.text.starts_with(CONNECT)) {
                    continue;
                }
                let v = json::parse(&l.text)?;
                let Some((src, t0)) = v.get("src").as_str().and_then(|s| starts.get_key_value(s))
                else {
                    continue;
                };
                if v.get("verdict").get("issue").as_str() != Some(c.issue)
                    || !named.insert(src.as_str())
                {
                    continue;
                }
                let retry_ms = v
                    .get("retransmit_at_ms")
                    .arr()
                    .first()
                    .and_then(json::Value::num);
                let took = (unix_ns(l.wall) - t0) as f64 / 1e6;
                total.push(took / 1000.0);
                if let Some(r) = retry_ms {
                    after.push(took - r);
                }
            }
        }
        total.sort_by(f64::total_cmp);
        after.sort_by(f64::total_cmp);
        let (p99, max) = (
            percentile(&after, 0.99),
            after.last().copied().unwrap_or(f64::NAN),
        );
        writeln!(
            body,
            "| {} | {} / {connects} | {:.3} | {:.3} | {:.1} | {p99:.1} | {max:.1} |",
            c.name,
            total.len(),
            percentile(&total, 0.5),
            percentile(&total, 0.99),
            percentile(&after, 0.5),
        )?;
        rows.push(Row {
            figure: format!("first SYN → cause named: {}", c.name),
            target: format!("≤ first retransmit + {CAUSE_SLACK_MS} ms"),
            measured: format!("retransmit + {p99:.1} ms (p99)"),
            peer: format!("{} / {connects} named", total.len()),
            pass: Some(p99 <= CAUSE_SLACK_MS && total.len() == connects && connects > 0),
        });
    }
    n.stop()?;
    let clashes = insert_failed(&snat.router)? - insert_failed_before;
    writeln!(
        body,
        "\nThe SNAT router's conntrack `insert_failed` rose by {clashes} over the SNAT case (its \
         clashing SYNs and their retransmits)."
    )?;
    drop(server);
    Ok(rows)
}

/// The `insert_failed` column of `/proc/net/stat/nf_conntrack` in `ns`, summed over CPUs.
fn insert_failed(ns: &Netns) -> Result<u64> {
    let text = ns.output("cat", &["/proc/net/stat/nf_conntrack"])?;
    sum_stat_column(&text, "insert_failed")
        .context("no insert_failed column in /proc/net/stat/nf_conntrack")
}

/// Sum over the rows (one per CPU, hexadecimal) of the column named `column` in the header.
fn sum_stat_column(text: &str, column: &str) -> Option<u64> {
    let mut rows = text.lines();
    let col = rows.next()?.split_whitespace().position(|c| c == column)?;
    rows.map(|r| u64::from_str_radix(r.split_whitespace().nth(col)?, 16).ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_stat_column_summed_over_cpus() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert \
                    insert_failed drop\n\
                    0000000a 0 0 0 0 0 0 0 0 0000001c 0\n\
                    0000000a 0 0 0 0 0 0 0 0 00000004 0\n";
        assert_eq!(sum_stat_column(text, "insert_failed"), Some(0x20));
        assert_eq!(sum_stat_column(text, "entries"), Some(20));
        assert_eq!(sum_stat_column(text, "early_drop"), None);
        assert_eq!(
            sum_stat_column("entries insert_failed\n1 zz\n", "insert_failed"),
            None
        );
    }
}
