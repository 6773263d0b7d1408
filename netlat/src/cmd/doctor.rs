//! `netlat doctor`: the node fingerprint and its exposure to each known issue. Reads netlink
//! and procfs only; needs no eBPF (but reading other namespaces and some netlink dumps needs
//! root).

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;
use netlat_core::{
    exposure::{Exposed, Exposure, exposure},
    facts::NodeFacts,
};
use serde::Serialize;

use crate::{
    cmd::args::{DoctorArgs, OutputFormat},
    node::{
        self,
        pods::{DEFAULT_SOCKETS, PodSources, Reader, cgroup, cgroup_v2_roots},
    },
};

#[derive(Serialize)]
struct DoctorJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    netns: Option<&'a str>,
    facts: &'a NodeFacts,
    exposure: &'a [Exposure],
    pods: &'a PodsDoctor,
}

/// The pod sources `watch` would use and how many pods each can name.
#[derive(Serialize, Default)]
struct PodsDoctor {
    /// Per runtime socket: pods it listed, or why it did not answer.
    runtimes: Vec<RuntimeRow>,
    /// Bundle dirs of the file fallback (read when no socket answers).
    bundle_dirs: Vec<PathBuf>,
    /// Pods read from bundle files, when the fallback was used.
    from_files: Option<usize>,
    /// Pods a line can be named with now.
    nameable: usize,
    /// Where the cgroup v2 tree is read: it names the container of a client that exited before
    /// its slow connect was read (empty on a cgroup v1-only node).
    cgroup_v2: Vec<PathBuf>,
    /// Container cgroups found there.
    container_cgroups: usize,
}

#[derive(Serialize)]
struct RuntimeRow {
    socket: PathBuf,
    pods: Option<usize>,
    error: Option<String>,
}

fn pods_doctor(sockets: &[PathBuf]) -> PodsDoctor {
    let sources = PodSources::discover(sockets);
    let mut d = PodsDoctor {
        bundle_dirs: sources.bundle_dirs.clone(),
        ..PodsDoctor::default()
    };
    if !sources.any() {
        return d;
    }
    d.cgroup_v2 = cgroup_v2_roots();
    let mut scan = cgroup::Scan::default();
    for root in &d.cgroup_v2 {
        cgroup::scan(root, &mut scan);
    }
    d.container_cgroups = scan
        .by_id
        .values()
        .filter(|p| p.container_id.is_some())
        .count();
    let r = match Reader::new(&sources) {
        Ok(mut reader) => reader.read(),
        Err(e) => {
            tracing::warn!("cannot start the pod lookups: {e}");
            return d;
        }
    };
    d.runtimes = r
        .runtimes
        .iter()
        .map(|(socket, res)| RuntimeRow {
            socket: socket.clone(),
            pods: res.as_ref().ok().copied(),
            error: res.as_ref().err().cloned(),
        })
        .collect();
    d.from_files = r.from_files;
    d.nameable = r.inventory.sandboxes.len();
    d
}

fn print_pods(out: &mut impl Write, d: &PodsDoctor) -> io::Result<()> {
    if d.runtimes.is_empty() && d.bundle_dirs.is_empty() {
        return writeln!(
            out,
            "pods          no container runtime found (no CRI socket at {}; --cri-socket PATH names one): lines carry no pod",
            DEFAULT_SOCKETS.join(", ")
        );
    }
    for r in &d.runtimes {
        match (&r.pods, &r.error) {
            (Some(n), _) => writeln!(out, "pods          CRI {}: {n} pod(s)", r.socket.display())?,
            (None, e) => writeln!(
                out,
                "pods          CRI {}: not answering ({})",
                r.socket.display(),
                e.as_deref().unwrap_or("?")
            )?,
        }
    }
    if let Some(n) = d.from_files {
        writeln!(
            out,
            "pods          from runtime bundle files (fallback): {n} pod(s)"
        )?;
    }
    writeln!(
        out,
        "pods          {} pod(s) can be named on lines",
        d.nameable
    )?;
    if d.cgroup_v2.is_empty() {
        writeln!(
            out,
            "pods          no cgroup v2 tree (a cgroup v1-only node): a client that exits before \
             its slow connect is read is named by its pod's network namespace only (no \
             container; a hostNetwork pod not at all)"
        )
    } else {
        let roots: Vec<String> = d
            .cgroup_v2
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        writeln!(
            out,
            "pods          cgroup v2 tree at {}: {} container cgroup(s), so clients that exit \
             before their slow connect is read are still named",
            roots.join(", "),
            d.container_cgroups
        )
    }
}

fn netns_path(arg: &str) -> PathBuf {
    if arg.contains('/') {
        PathBuf::from(arg)
    } else {
        PathBuf::from("/run/netns").join(arg)
    }
}

pub fn main(args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let facts = match &args.netns {
        Some(ns) => {
            let path = netns_path(ns);
            anyhow::ensure!(
                path.exists(),
                "network namespace {} does not exist",
                path.display()
            );
            node::gather_in_netns(&path)
        }
        None => node::gather(),
    };
    let rows = exposure(&facts);
    let pods = pods_doctor(&args.cri_socket);
    let mut out = io::stdout().lock();
    let written = match args.output {
        OutputFormat::Json => serde_json::to_writer(
            &mut out,
            &DoctorJson {
                kind: "doctor",
                netns: args.netns.as_deref(),
                facts: &facts,
                exposure: &rows,
                pods: &pods,
            },
        )
        .map_err(io::Error::from)
        .and_then(|()| writeln!(out)),
        OutputFormat::Human => {
            print_human(&mut out, &facts, &rows).and_then(|()| print_pods(&mut out, &pods))
        }
    };
    written.context("writing output")?;
    Ok(ExitCode::SUCCESS)
}

fn proto_name(p: u16) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => format!("proto {n}"),
    }
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "on",
        Some(false) => "off",
        None => "?",
    }
}

/// The human report: facts first, then one block per issue.
pub fn print_human(out: &mut impl Write, f: &NodeFacts, rows: &[Exposure]) -> io::Result<()> {
    writeln!(out, "kernel        {}", f.kernel.release)?;
    for (k, v) in &f.sysctls {
        writeln!(
            out,
            "sysctl        {k} = {}",
            v.as_deref().unwrap_or("(absent)")
        )?;
    }
    writeln!(
        out,
        "kube-proxy    {:?}{}",
        f.kube_proxy.mode,
        if f.kube_proxy.evidence.is_empty() {
            String::new()
        } else {
            format!(" ({})", f.kube_proxy.evidence.join("; "))
        }
    )?;
    for svc in &f.ipvs {
        let name = match svc.vip {
            Some(vip) => format!("{} {vip}", proto_name(svc.protocol)),
            None => format!("fwmark {}", svc.fwmark),
        };
        let servers: Vec<String> = svc
            .real_servers
            .iter()
            .map(|r| {
                format!(
                    "{} weight {}{} ({} active, {} inactive)",
                    r.addr,
                    r.weight,
                    // kube-proxy's graceful termination: issue A's weight-0 case.
                    if r.weight == 0 { " <- draining" } else { "" },
                    r.active_conns,
                    r.inactive_conns
                )
            })
            .collect();
        writeln!(
            out,
            "ipvs service  {name} -> {}",
            if servers.is_empty() {
                "no real servers".to_string()
            } else {
                servers.join(", ")
            }
        )?;
    }
    if f.nat_rules.is_empty() {
        writeln!(out, "nat rules     none")?;
    }
    for r in &f.nat_rules {
        writeln!(
            out,
            "nat rule      [{}] {} {}: {}{}",
            r.backend,
            r.table,
            r.chain,
            r.text,
            if r.fully_random {
                ""
            } else {
                "   <- no full randomisation"
            }
        )?;
    }
    if f.vxlan.is_empty() {
        writeln!(out, "vxlan         none")?;
    }
    for v in &f.vxlan {
        writeln!(
            out,
            "vxlan         {} vni {} port {} udpcsum {} tx-checksum offload {}",
            v.name,
            v.vni.map_or("?".into(), |n| n.to_string()),
            v.port.map_or("?".into(), |n| n.to_string()),
            yes_no(v.udp_csum),
            yes_no(v.tx_csum_offload)
        )?;
    }
    writeln!(
        out,
        "calico        {}",
        if f.calico.is_empty() {
            "not seen".to_string()
        } else {
            f.calico.join("; ")
        }
    )?;
    match &f.conntrack {
        Some(cpus) => {
            let sum =
                |g: fn(&netlat_core::facts::CtCpuStats) -> u64| cpus.iter().map(g).sum::<u64>();
            writeln!(
                out,
                "conntrack     {} CPUs: insert_failed {} drop {} early_drop {}",
                cpus.len(),
                sum(|c| c.insert_failed),
                sum(|c| c.drop),
                sum(|c| c.early_drop)
            )?;
        }
        None => writeln!(out, "conntrack     not loaded or unreadable")?,
    }
    for n in &f.notes {
        writeln!(out, "note          {n}")?;
    }
    writeln!(out)?;
    for r in rows {
        let mark = match r.exposed {
            Exposed::Yes => "EXPOSED    ",
            Exposed::No => "not exposed",
            Exposed::Unknown => "unknown    ",
            Exposed::NotApplicable => "look-alike ",
        };
        writeln!(out, "{mark} {:<24} {}", r.issue, r.title)?;
        for w in &r.why {
            writeln!(out, "              because {w}")?;
        }
        if r.exposed != Exposed::No && r.exposed != Exposed::NotApplicable {
            writeln!(out, "              fix: {}", r.remedy)?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use netlat_core::facts::{IpvsService, RealServer};

    use super::*;

    #[test]
    fn human_report_lists_ipvs_real_servers_and_marks_weight_zero() {
        let rs = |a: &str, weight| RealServer {
            addr: a.parse().unwrap(),
            weight,
            active_conns: 1,
            inactive_conns: 2,
        };
        let f = NodeFacts {
            ipvs: vec![
                IpvsService {
                    family: 2,
                    protocol: 6,
                    vip: Some("10.96.0.10:80".parse().unwrap()),
                    fwmark: 0,
                    real_servers: vec![rs("10.0.1.2:8080", 0), rs("10.0.2.2:8080", 1)],
                },
                IpvsService {
                    family: 2,
                    protocol: 0,
                    vip: None,
                    fwmark: 7,
                    real_servers: Vec::new(),
                },
            ],
            ..NodeFacts::default()
        };
        let mut out = Vec::new();
        print_human(&mut out, &f, &[]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "ipvs service  tcp 10.96.0.10:80 -> 10.0.1.2:8080 weight 0 <- draining \
                 (1 active, 2 inactive), 10.0.2.2:8080 weight 1 (1 active, 2 inactive)"
            ),
            "{text}"
        );
        assert!(
            text.contains("ipvs service  fwmark 7 -> no real servers"),
            "{text}"
        );
    }
}
