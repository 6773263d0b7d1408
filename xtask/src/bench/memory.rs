//! Memory with 100 k connection attempts in flight: `load synhold` opens 100 000 non-blocking
//! connects from one namespace to four ports of another whose nftables rule drops every SYN,
//! holds them while the kernel retransmits (1, 2, 3, 4, 5, 7 s…), then exits and closes them
//! all. netlat's resident memory (`VmRSS` sampled every 250 ms, and `VmHWM`) is read
//! throughout. With `kernel.bpf_stats_enabled=1`, this also gives the retransmit program's and
//! the drop program's (TCP SYN, decoded) ns/run. Also lists netlat's kernel maps.

use std::{
    fmt::Write as _,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    Ctx, Row, Section, lab,
    lab::{Netns, Proc},
    netlat::{self, Netlat, Peers},
    spread,
};

const ATTEMPTS: &str = "100000";
const RULES: &str = r"
table inet nlbench {
  chain in {
    type filter hook input priority 0; policy accept;
    tcp dport 20000-20003 counter drop
  }
}
";
/// How long the attempts are held after the last one is in flight.
const HOLD: Duration = Duration::from_secs(8);
/// How long memory is still sampled after they are closed.
const AFTER: Duration = Duration::from_secs(3);

struct Sampled {
    max_rss: u64,
    samples: usize,
}

fn sample(pid: u32, d: Duration, s: &mut Sampled) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if let Ok((rss, _)) = netlat::rss_kib(pid) {
            s.max_rss = s.max_rss.max(rss);
            s.samples += 1;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

pub fn run(ctx: &mut Ctx) -> Result<Section> {
    let a = Netns::new("mema")?;
    let b = Netns::new("memb")?;
    lab::veth(&a, "10.240.4.1/24", &b, "10.240.4.2/24", "m")?;
    a.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
    b.nft(RULES)?;
    let _stats = lab::Sysctl::set("kernel.bpf_stats_enabled", "1")?;

    let runs = ctx.runs.min(3);
    let mut body = String::new();
    writeln!(
        body,
        "{ATTEMPTS} non-blocking connects from 10.240.4.1 to 10.240.4.2:20000–20003 (source \
         ports 1024–65535; `load synhold` spreads them over as many processes as the hard file \
         limit needs), every SYN dropped by:\n\n\
         ```\n{}```\n\nheld {} s after the last is in flight, then closed; {runs} runs, a fresh \
         netlat each (the first with the three bpftrace scripts of the per-program table beside it). RSS = max of `VmRSS` sampled every 250 ms; HWM = `VmHWM` at the end.\n",
        RULES.trim_start(),
        HOLD.as_secs()
    )?;
    writeln!(
        body,
        "| run | opened (processes) | open time s | RSS at start MiB | max RSS MiB | HWM MiB | attempts seen | evicted | lost events | SYNs dropped |\n|---|---|---|---|---|---|---|---|---|---|"
    )?;
    let (mut max_mib, mut hwm_mib) = (Vec::new(), Vec::new());
    let (mut opened_min, mut seen_min, mut lost_max) = (u64::MAX, u64::MAX, 0);
    for run in 0..runs {
        // The first run, whose program figures are kept, has the bpftrace scripts beside it.
        let mut peers = if run == 0 {
            Peers::start(ctx.bpftrace.as_ref(), &ctx.tmp.0)?
        } else {
            None
        };
        let n = Netlat::start_to_file(&ctx.netlat, &[], &ctx.tmp.0.join("memory.jsonl"))?;
        ctx.startups.push(n.startup);
        let pid = n.pid();
        if ctx.maps.is_empty() {
            ctx.maps = netlat::maps(pid).unwrap_or_default();
        }
        let (rss0, _) = netlat::rss_kib(pid)?;
        let before = netlat::prog_stats(pid)?;
        peers.as_mut().map(Peers::open).transpose()?;
        let c0 = b.nft_packets("nlbench", "in", "tcp dport")?;
        let mut hold = Proc::spawn(
            a.cmd(
                &ctx.load,
                &["synhold", "10.240.4.2", "20000", "4", ATTEMPTS],
            ),
            true,
        )?;
        let mut s = Sampled {
            max_rss: rss0,
            samples: 0,
        };
        // Sample while the attempts are opened, too.
        let opened_at = Instant::now();
        while let Err(e) = hold.wait_for(Duration::from_millis(250), |l| l == "ready") {
            if opened_at.elapsed() > Duration::from_mins(2) || !hold.running() {
                return Err(e.context("synhold did not get its connects in flight"));
            }
            sample(pid, Duration::from_millis(1), &mut s);
        }
        sample(pid, HOLD, &mut s);
        let after = netlat::prog_stats(pid)?;
        let peer_stats = peers.map(Peers::close).transpose()?;
        hold.close_stdin();
        let out = hold.finish(Duration::from_mins(2))?;
        sample(pid, AFTER, &mut s);
        let (_, hwm) = netlat::rss_kib(pid)?;
        let c1 = b.nft_packets("nlbench", "in", "tcp dport")?;
        if run == 0 {
            let workload = "100 k SYNs held (SYN retransmits; NETFILTER_DROP of TCP SYNs)";
            ctx.record_progs(
                workload,
                &netlat::delta(&before, &after),
                &["inet_sock", "tcp_retrans", "kfree_skb"],
            );
            ctx.record_peers(workload, peer_stats.as_ref());
        }
        let stopped = n.stop()?;
        let sm = &stopped.summary;
        let opened = lab::values(&out, "opened")? as u64;
        opened_min = opened_min.min(opened);
        seen_min = seen_min.min(sm.get("attempts").u64().unwrap_or(0));
        lost_max = lost_max.max(netlat::lost_total(sm));
        let mib = |kib: u64| kib as f64 / 1024.0;
        max_mib.push(mib(s.max_rss));
        hwm_mib.push(mib(hwm));
        writeln!(
            body,
            "| {} | {opened} ({}) | {:.2} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
            run + 1,
            lab::values(&out, "processes")?,
            lab::values(&out, "seconds")?,
            mib(rss0),
            mib(s.max_rss),
            mib(hwm),
            sm.get("attempts").u64().unwrap_or(0),
            sm.at("tracker.evicted").u64().unwrap_or(0),
            netlat::lost_total(sm),
            c1 - c0
        )?;
        eprintln!(
            "bench: memory run {}: {opened} in flight, max RSS {:.1} MiB, HWM {:.1} MiB",
            run + 1,
            mib(s.max_rss),
            mib(hwm)
        );
    }
    writeln!(
        body,
        "\nnetlat's kernel maps (`bpftool map show`, ids from netlat's own file descriptors):\n\n\
         | map | type | max entries | value bytes | memlock bytes |\n|---|---|---|---|---|"
    )?;
    for m in &ctx.maps {
        writeln!(
            body,
            "| {} | {} | {} | {} | {} |",
            m.name, m.kind, m.max_entries, m.value_size, m.memlock
        )?;
    }
    // `ATTEMPTS` is a plain hash on purpose: its entries are removed at each attempt's end,
    // and when it is full the insert fails and the attempt is shipped at once and counted
    // (`tracker.kernel_table_full`), where an LRU would evict silently.
    let unbounded: Vec<&str> = ctx
        .maps
        .iter()
        .filter(|m| m.kind.ends_with("hash") && !m.kind.starts_with("lru") && m.name != "ATTEMPTS")
        .map(|m| m.name.as_str())
        .collect();
    writeln!(
        body,
        "\nEvery map has a fixed size: the `EVENTS` ring buffer is sized at load (4 MiB, or \
         `NETLAT_RING_BYTES`), and when it is full the programs count the event in the per-CPU \
         `LOST` array (one slot per event kind) instead of waiting; hash maps where entries can \
         leak must be LRU ({}); `ATTEMPTS` is a plain hash whose full insert fails and is \
         counted (`tracker.kernel_table_full`), the attempt then shipped at once.",
        if unbounded.is_empty() {
            "all are".to_owned()
        } else {
            format!("not LRU: {}", unbounded.join(", "))
        }
    )?;
    let m = spread(&max_mib);
    let h = spread(&hwm_mib);
    let complete = opened_min >= 100_000 && seen_min >= opened_min;
    Ok(Section {
        title: "Memory".into(),
        rows: vec![
            Row {
                figure: "RSS with 100 k attempts in flight (max sampled)".into(),
                target: "≤ 64 MiB, all attempts tracked".into(),
                measured: if complete {
                    m.unit(1, "MiB")
                } else {
                    format!(
                        "{} while tracking only {seen_min} of {opened_min} attempts \
                         ({lost_max} events lost)",
                        m.unit(1, "MiB")
                    )
                },
                peer: format!("VmHWM {}", h.unit(1, "MiB")),
                pass: Some(m.median <= 64.0 && complete),
            },
            Row {
                figure: "kernel maps bounded (hash maps LRU, or counted when full)".into(),
                target: "all".into(),
                measured: format!("{} maps, {} not bounded", ctx.maps.len(), unbounded.len()),
                peer: "–".into(),
                pass: (!ctx.maps.is_empty()).then_some(unbounded.is_empty()),
            },
        ],
        body,
    })
}
