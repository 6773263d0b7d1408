//! Drop storm: a UDP flood (`load udpflood`/`udpbad`, sendmmsg of 64) from one namespace into
//! another, of three kinds, each with the same 62-byte VXLAN payload (flags I, VNI 4096, inner
//! Ethernet/IPv4/TCP SYN):
//! - `UDP_CSUM`: to 8472 from a raw socket with a wrong UDP checksum, dropped by UDP — netlat
//!   decodes it to the inner SYN and prints a `vxlan-csum-offload` drop line per packet, with
//!   the namespace, so delivered drops are counted exactly for this namespace;
//! - `NETFILTER_DROP`: to 4789, dropped by an nftables rule — decoded, not printed; delivered
//!   is the summary's `tracker.drops_seen`, which also counts drops elsewhere on the node;
//! - `NO_SOCKET`: to 9999 where nothing listens — filtered in the kernel, never delivered.
//!
//! Produced = the rule counters in the receiving namespace; lost = `lost_events.drop`. Each
//! round also floods once without netlat (interleaved) for the bare sender rate. Runs with
//! `kernel.bpf_stats_enabled=1` for the drop program's ns/run and for the number of other
//! `kfree_skb` hits on the node while netlat ran (the noise `drops_seen` may include).

use std::{fmt::Write as _, time::Duration};

use anyhow::Result;

use super::{
    Ctx, Row, Section, lab,
    lab::{Netns, Proc},
    netlat::{self, Netlat, Peers},
    spread,
};

const RULES: &str = r"
table inet nlbench {
  chain in {
    type filter hook input priority 0; policy accept;
    udp dport 8472 counter
    udp dport 4789 counter drop
    udp dport 9999 counter
  }
}
";

/// Seconds per flood.
const FLOOD_S: &str = "2";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Csum,
    Nft,
    Filtered,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Csum => "UDP_CSUM",
            Kind::Nft => "NETFILTER_DROP",
            Kind::Filtered => "NO_SOCKET",
        }
    }

    fn port(self) -> &'static str {
        match self {
            Kind::Csum => "8472",
            Kind::Nft => "4789",
            Kind::Filtered => "9999",
        }
    }

    fn mode(self) -> &'static str {
        match self {
            Kind::Csum => "udpbad",
            _ => "udpflood",
        }
    }
}

struct Lab {
    a: Netns,
    b: Netns,
    /// The receiving namespace's inode, as netlat prints it.
    b_inode: u64,
}

/// One flood: (packets produced, seconds).
fn flood(ctx: &Ctx, lab: &Lab, kind: Kind) -> Result<(u64, f64)> {
    let rule = format!("udp dport {}", kind.port());
    let c0 = lab.b.nft_packets("nlbench", "in", &rule)?;
    let mut sender = Proc::spawn(
        lab.a.cmd(
            &ctx.load,
            &[kind.mode(), "10.240.2.2", kind.port(), FLOOD_S],
        ),
        false,
    )?;
    let out = sender.finish(Duration::from_mins(1))?;
    let c1 = lab.b.nft_packets("nlbench", "in", &rule)?;
    Ok((c1 - c0, lab::values(&out, "seconds")?))
}

struct Run {
    produced: u64,
    seconds: f64,
    /// Drops of this flood that reached user space (exact for UDP_CSUM; the node-wide
    /// `drops_seen` otherwise).
    delivered: u64,
    lost: u64,
    bad: u64,
    /// kfree_skb runs on the node while netlat ran, beyond the flood's own packets.
    other_runs: u64,
    ns_per_run: f64,
}

/// One flood with netlat attached; with `peers`, the bpftrace scripts run beside it.
fn with_netlat(ctx: &mut Ctx, lab: &Lab, kind: Kind, round: usize, peers: bool) -> Result<Run> {
    let out = ctx
        .tmp
        .0
        .join(format!("drops-{}-{round}.jsonl", kind.port()));
    let mut peers = if peers {
        Peers::start(ctx.bpftrace.as_ref(), &ctx.tmp.0)?
    } else {
        None
    };
    let n = Netlat::start_to_file(&ctx.netlat, &[], &out)?;
    ctx.startups.push(n.startup);
    let before = netlat::prog_stats(n.pid())?;
    peers.as_mut().map(Peers::open).transpose()?;
    let (produced, seconds) = flood(ctx, lab, kind)?;
    let after = netlat::prog_stats(n.pid())?;
    let peer_stats = peers.map(Peers::close).transpose()?;
    let workload = format!("drop storm, {}", kind.name());
    ctx.record_peers(&workload, peer_stats.as_ref());
    let s = n.stop()?.summary;
    let d = netlat::delta(&before, &after);
    let kfree = d.iter().find(|p| p.name.starts_with("kfree_skb"));
    let runs = kfree.map_or(0, |p| p.run_cnt);
    let delivered = match kind {
        Kind::Csum => netlat::count_lines(
            &out,
            "{\"type\":\"drop\"",
            &format!("\"netns\":{},", lab.b_inode),
        )?,
        _ => s.at("tracker.drops_seen").u64().unwrap_or(0),
    };
    let _ = std::fs::remove_file(&out);
    let judged: &[&str] = if kind == Kind::Filtered {
        &[]
    } else {
        &["kfree_skb"]
    };
    ctx.record_progs(&workload, &d, judged);
    Ok(Run {
        produced,
        seconds,
        delivered,
        lost: s.at("lost_events.drop").u64().unwrap_or(0),
        bad: s.get("bad_events").u64().unwrap_or(0),
        other_runs: runs.saturating_sub(produced),
        ns_per_run: kfree.map_or(0.0, |p| p.run_time_ns as f64 / p.run_cnt.max(1) as f64),
    })
}

#[derive(Default)]
struct Tally {
    bare: Vec<f64>,
    produced: Vec<f64>,
    delivered: Vec<f64>,
    lost: u64,
    ok: bool,
    diffs: Vec<String>,
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let a = Netns::new("dropa")?;
    let b = Netns::new("dropb")?;
    lab::veth(&a, "10.240.2.1/24", &b, "10.240.2.2/24", "d")?;
    b.nft(RULES)?;
    let lab = Lab {
        b_inode: b.inode()?,
        a,
        b,
    };
    let _stats = lab::Sysctl::set("kernel.bpf_stats_enabled", "1")?;

    let mut body = String::new();
    writeln!(
        body,
        "Floods of {FLOOD_S} s (`load udpflood`, connected UDP socket, or `load udpbad`, raw \
         socket with UDP checksum 0x1234; sendmmsg of 64) of a 62-byte VXLAN payload (flags I, \
         VNI 4096, inner Ethernet/IPv4/TCP SYN) from 10.240.2.1 to 10.240.2.2, which has:\n\n\
         ```\n{}```\n\n\
         - `UDP_CSUM` (to 8472, bad checksum): netlat decodes it to the inner SYN and prints a \
         `vxlan-csum-offload` drop line per packet; delivered = drop lines of the receiving \
         namespace in netlat's output (exact).\n\
         - `NETFILTER_DROP` (to 4789, the rule drops it): decoded, not printed; delivered = \
         `tracker.drops_seen` of the summary, which counts every drop netlat saw on the node, so \
         it may exceed this flood by drops elsewhere (at most 'other runs': `kfree_skb` hits on \
         the node beyond the flood's packets while netlat ran).\n\
         - `NO_SOCKET` (to 9999, no listener): filtered in the kernel; delivered = \
         `tracker.drops_seen`.\n\n\
         Produced = the rule's packet counter; lost = `lost_events.drop` (ring buffer full, \
         counted per CPU by the programs); bare = the sender's rate in a flood without netlat, \
         interleaved. netlat writes its output to a file; `kernel.bpf_stats_enabled=1`; in the \
         last round the three bpftrace scripts of the per-program table run beside netlat.\n",
        RULES.trim_start()
    )?;
    writeln!(
        body,
        "| round | kind | bare sent/s | produced | produced/s | delivered | delivered/s | lost | delivered+lost−produced | other runs | bad items | drop prog ns/run |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    let kinds = [Kind::Csum, Kind::Nft, Kind::Filtered];
    let mut tallies: Vec<Tally> = kinds
        .iter()
        .map(|_| Tally {
            ok: true,
            ..Tally::default()
        })
        .collect();
    for round in 0..ctx.runs {
        let mut order: Vec<(usize, Kind)> = kinds.iter().copied().enumerate().collect();
        order.rotate_left(round % kinds.len());
        for (i, kind) in order {
            let (bare_n, bare_s) = flood(ctx, &lab, kind)?;
            let r = with_netlat(ctx, &lab, kind, round, round + 1 == ctx.runs)?;
            let t = &mut tallies[i];
            let bare_rate = bare_n as f64 / bare_s;
            t.bare.push(bare_rate);
            t.produced.push(r.produced as f64 / r.seconds);
            t.delivered.push(r.delivered as f64 / r.seconds);
            t.lost += r.lost;
            let diff = (r.delivered + r.lost) as i64 - r.produced as i64;
            t.ok &= match kind {
                Kind::Csum => diff == 0 && r.bad == 0,
                Kind::Nft => (0..=r.other_runs as i64).contains(&diff) && r.bad == 0,
                Kind::Filtered => r.delivered == 0 || r.delivered <= r.other_runs,
            };
            t.diffs.push(match kind {
                Kind::Filtered => r.delivered.to_string(),
                _ => format!("{diff:+}"),
            });
            writeln!(
                body,
                "| {} | {} | {bare_rate:.0} | {} | {:.0} | {} | {:.0} | {} | {} | {} | {} | {:.0} |",
                round + 1,
                kind.name(),
                r.produced,
                r.produced as f64 / r.seconds,
                r.delivered,
                r.delivered as f64 / r.seconds,
                r.lost,
                if kind == Kind::Filtered {
                    "–".to_owned()
                } else {
                    format!("{diff:+}")
                },
                r.other_runs,
                r.bad,
                r.ns_per_run
            )?;
            eprintln!(
                "bench: drops round {} {}: bare {bare_rate:.0}/s, with netlat {:.0}/s, delivered {}, lost {}",
                round + 1,
                kind.name(),
                r.produced as f64 / r.seconds,
                r.delivered,
                r.lost
            );
        }
    }

    let mut rows = Vec::new();
    for (kind, t) in kinds.iter().zip(&tallies) {
        let (bare, prod, deliv) = (spread(&t.bare), spread(&t.produced), spread(&t.delivered));
        let rates = format!(
            "produced {}/s with netlat, {}/s bare",
            prod.fixed(0),
            bare.fixed(0)
        );
        rows.push(match kind {
            Kind::Csum => Row {
                figure: "drop storm, decoded (UDP_CSUM, VXLAN): delivered + lost − produced, per run"
                    .into(),
                target: "0 (all delivered or every loss counted)".into(),
                measured: format!(
                    "{}; {} delivered/s, {} lost in all",
                    t.diffs.join(", "),
                    deliv.fixed(0),
                    t.lost
                ),
                peer: rates,
                pass: Some(t.ok),
            },
            Kind::Nft => Row {
                figure:
                    "drop storm, decoded (NETFILTER_DROP, VXLAN): delivered + lost − produced, per run"
                        .into(),
                target: "0 … other drops on the node".into(),
                measured: format!(
                    "{}; {} delivered/s, {} lost in all",
                    t.diffs.join(", "),
                    deliv.fixed(0),
                    t.lost
                ),
                peer: rates,
                pass: Some(t.ok),
            },
            Kind::Filtered => Row {
                figure: "drop storm, filtered (NO_SOCKET): drops reaching user space, per run".into(),
                target: "0".into(),
                measured: t.diffs.join(", "),
                peer: rates,
                pass: Some(t.ok),
            },
        });
    }
    let decoded_rate = spread(
        &tallies[..2]
            .iter()
            .flat_map(|t| t.produced.iter().copied())
            .collect::<Vec<_>>(),
    );
    rows.push(Row {
        figure: "drop storm, decoded kinds: drops/s produced with netlat attached".into(),
        target: "≥ 100 k/s".into(),
        measured: decoded_rate.fixed(0),
        peer: format!(
            "bare sender {}/s",
            spread(
                &tallies[..2]
                    .iter()
                    .flat_map(|t| t.bare.iter().copied())
                    .collect::<Vec<_>>()
            )
            .fixed(0)
        ),
        pass: Some(decoded_rate.median >= 100_000.0),
    });
    Ok(Section {
        title: "Drop storm".into(),
        rows,
        body,
    })
}
