//! Node fingerprint: the facts about a node (or one of its network namespaces) that decide which
//! known issue a slow connect can be.
//!
//! Owns [`NodeFacts`]: the kernel version, the IPVS/TCP/conntrack sysctls, the kube-proxy mode,
//! every MASQUERADE/SNAT rule and whether it randomises ports (issue B), the VXLAN devices with
//! their outer-UDP checksum and tx-checksum offload (issue C), signs of Calico, and the per-CPU
//! conntrack counters.
//!
//! Everything is read through netlink and procfs, never by running tools and parsing their
//! output: links with `rtnetlink`, offload features with `ethtool` (generic netlink), nftables
//! rules and IPVS services with a small synchronous dump on `netlink-sys` (`nl`),
//! iptables-legacy tables with getsockopt (`xt`), sysctls and conntrack stats from /proc.
//! Gathering never fails: what cannot be read becomes a line in [`NodeFacts::notes`].
//!
//! The namespaced facts are read on a dedicated thread which, for [`gather_in_netns`], first joins
//! the namespace with setns(2). Per-netns procfs files are then read under /proc/thread-self/net
//! (/proc/net follows the thread-group leader), and /proc/sys/net answers for the reading thread.

pub mod ctnl;
mod ctstat;
mod ipvs;
mod links;
pub mod live_facts;
pub mod netns;
mod nft;
pub(crate) mod nl;
pub mod pods;
pub mod services;
pub mod snmp;
pub mod tcp_table;
mod xt;

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use ctstat::parse_ct_stats;
use netlat_core::facts::{
    CtCpuStats, IpvsService, KernelVersion, KubeProxy, KubeProxyMode, NodeFacts,
};

/// The sysctls [`NodeFacts::sysctls`] reports, by their dotted names.
pub const SYSCTLS: &[&str] = &[
    "net.ipv4.vs.conn_reuse_mode",
    "net.ipv4.vs.expire_nodest_conn",
    "net.ipv4.vs.conntrack",
    "net.core.txrehash",
    "net.ipv4.tcp_syn_linear_timeouts",
    "net.ipv4.tcp_syn_retries",
    "net.netfilter.nf_conntrack_udp_timeout",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_count",
];

/// Per-CPU conntrack counters of the reading thread's network namespace.
const CT_STATS: &str = "/proc/thread-self/net/stat/nf_conntrack";
/// Felix keeps its state here on every Calico node.
const CALICO_STATE_DIR: &str = "/var/lib/calico";
/// The dummy device kube-proxy's IPVS mode binds every service address to.
const KUBE_IPVS_DEVICE: &str = "kube-ipvs0";
/// How long one netlink exchange may take before it is reported as stuck.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(5);

/// A fact that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The conntrack statistics file has no header line.
    #[error("the conntrack statistics file is empty")]
    CtStatsEmpty,
    /// The conntrack statistics header lacks a column netlat reads.
    #[error("the conntrack statistics header has no `{column}` column")]
    CtStatsColumn { column: &'static str },
    /// A conntrack statistics row has another width than the header.
    #[error("conntrack statistics line {line}: {found} values for {expected} columns")]
    CtStatsWidth {
        line: usize,
        expected: usize,
        found: usize,
    },
    /// A conntrack statistics value is not hexadecimal.
    #[error("conntrack statistics line {line}: {value:?} is not a hex number")]
    CtStatsValue { line: usize, value: String },
    /// A binary structure (netlink message or attribute, xtables entry) is shorter than it says.
    #[error("{what}: {len} bytes, {need} needed")]
    Truncated {
        what: &'static str,
        len: usize,
        need: usize,
    },
    /// A binary structure holds a value it cannot hold.
    #[error("{what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// Gathers the facts of the current network namespace. Blocks (up to a few seconds per netlink
/// exchange); from async code call it through `spawn_blocking`.
pub fn gather() -> NodeFacts {
    gather_on_thread(None)
}

/// Gathers the facts inside the network namespace at `path` (e.g. `/run/netns/foo` or
/// `/proc/PID/ns/net`); the kernel version and Calico's state directory are node-wide. Blocks
/// like [`gather`].
pub fn gather_in_netns(path: &Path) -> NodeFacts {
    gather_on_thread(Some(path.to_path_buf()))
}

/// The IPVS virtual services of the network namespace at `path`, read now on a thread that
/// joins it (`Ok(None)`: IPVS is not loaded).
pub fn ipvs_services_in_netns(path: &Path) -> io::Result<Option<Vec<IpvsService>>> {
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("netlat-ipvs".into())
        .spawn(move || {
            enter_netns(&path)?;
            ipvs::services()
        })?
        .join()
        .map_err(|_| io::Error::other("the IPVS reader thread panicked"))?
}

/// Runs the gathering on a fresh thread, so that joining another namespace never changes the
/// caller's, and so the thread can own a current-thread tokio runtime even when the caller
/// already runs inside one.
fn gather_on_thread(netns: Option<PathBuf>) -> NodeFacts {
    let spawned = std::thread::Builder::new()
        .name("netlat-node".into())
        .spawn(move || {
            if let Some(path) = &netns
                && let Err(e) = enter_netns(path)
            {
                let mut facts = NodeFacts::default();
                facts.kernel = read_kernel(&mut facts.notes);
                facts.notes.push(format!(
                    "cannot enter network namespace {}: {e}; no namespaced fact was read",
                    path.display()
                ));
                return facts;
            }
            collect()
        });
    let failed = |note: String| NodeFacts {
        notes: vec![note],
        ..NodeFacts::default()
    };
    match spawned {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|_| failed("the node-facts thread panicked".into())),
        Err(e) => failed(format!("cannot start the node-facts thread: {e}")),
    }
}

/// Moves the calling thread (only) into the network namespace at `path`.
fn enter_netns(path: &Path) -> io::Result<()> {
    let file = fs::File::open(path)?;
    // SAFETY: setns(2) takes a valid open descriptor, which `file` keeps open for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads every fact in the calling thread's network namespace.
fn collect() -> NodeFacts {
    let mut facts = NodeFacts::default();
    let notes = &mut facts.notes;
    facts.kernel = read_kernel(notes);
    facts.sysctls = read_sysctls(notes);

    // rtnetlink and ethtool are async; the rest are plain blocking syscalls.
    let links = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt.block_on(links::read(notes)),
        Err(e) => {
            notes.push(format!(
                "links: cannot start a tokio runtime: {e}; no link was read"
            ));
            Vec::new()
        }
    };
    facts.vxlan = links.iter().filter_map(|l| l.vxlan.clone()).collect();

    let ruleset = match nft::read(notes) {
        Ok(r) => r,
        Err(e) => {
            notes.push(format!("nftables: cannot dump the ruleset: {e}"));
            nft::Ruleset::default()
        }
    };
    let mut legacy = Vec::new();
    for family in [xt::Family::Ipv4, xt::Family::Ipv6] {
        match xt::read_legacy_nat(family) {
            Ok(Some(table)) => legacy.push(table),
            Ok(None) => {}
            Err(e) => notes.push(format!(
                "{}: cannot read the nat table: {e}",
                family.backend()
            )),
        }
    }
    let mut ipvs_list = Vec::new();
    let ipvs_services = match ipvs::services() {
        Ok(Some(list)) => {
            let n = u32::try_from(list.len()).unwrap_or(u32::MAX);
            ipvs_list = list;
            Some(n)
        }
        Ok(None) => {
            notes.push("ipvs: not loaded (no IPVS generic netlink family)".into());
            None
        }
        Err(e) => {
            notes.push(format!("ipvs: cannot list virtual services: {e}"));
            None
        }
    };
    facts.conntrack = read_ct_stats(notes);

    facts.nat_rules.clone_from(&ruleset.nat_rules);
    facts
        .nat_rules
        .extend(legacy.iter().flat_map(|t| t.nat_rules.iter().cloned()));

    let mut chains: Vec<ChainRef> = ruleset
        .chains
        .iter()
        .map(|c| ChainRef {
            source: format!("nft {} {}", nft::family_name(c.family), c.table),
            table: c.table.clone(),
            name: c.name.clone(),
        })
        .collect();
    for t in &legacy {
        chains.extend(t.chains.iter().map(|c| ChainRef {
            source: t.backend.to_string(),
            table: "nat".into(),
            name: c.clone(),
        }));
    }
    let tables: Vec<String> = ruleset
        .tables
        .iter()
        .map(|t| format!("{} {}", nft::family_name(t.family), t.name))
        .collect();

    facts.kube_proxy = classify_kube_proxy(&links, &tables, &chains, ipvs_services);
    match services::read() {
        Ok(map) => {
            if !map.is_empty() {
                facts
                    .kube_proxy
                    .evidence
                    .push(format!("{} Service ports named in its rules", map.len()));
            }
            facts.kube_proxy.services = Some(map.len());
            facts.kube_proxy.no_endpoint_rules = map
                .no_endpoint_rules()
                .map(|(_, rule)| rule.clone())
                .collect();
            facts.kube_proxy.no_endpoint_rules.dedup();
        }
        Err(e) => facts.notes.push(format!("services: {e}")),
    }
    if facts.kube_proxy.mode == KubeProxyMode::Ipvs {
        // Its rules match ipsets of bare addresses: nothing on the node holds the names.
        facts.notes.push(format!(
            "services: kube-proxy's IPVS mode keeps no Service names on the node; connect lines \
             to its {} virtual services show the VIP, and say so in the verdict's missing list",
            facts.kube_proxy.ipvs_services.unwrap_or(0)
        ));
    }
    facts.ipvs = ipvs_list;
    facts.calico = calico_evidence(
        &links,
        &tables,
        &chains,
        Path::new(CALICO_STATE_DIR).exists(),
    );
    facts
}

/// The kernel release from uname(2), parsed.
fn read_kernel(notes: &mut Vec<String>) -> KernelVersion {
    // SAFETY: utsname is plain bytes, so all-zero is a valid value for uname(2) to fill.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&raw mut uts) } != 0 {
        notes.push(format!(
            "kernel: uname failed: {}",
            io::Error::last_os_error()
        ));
        return KernelVersion::default();
    }
    // SAFETY: the kernel NUL-terminates every utsname field.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    match KernelVersion::parse(&release) {
        Ok(k) => k,
        Err(e) => {
            notes.push(format!("kernel: {e}"));
            KernelVersion {
                release,
                ..KernelVersion::default()
            }
        }
    }
}

/// Reads [`SYSCTLS`] from /proc/sys, which answers for the reading thread's namespace.
fn read_sysctls(notes: &mut Vec<String>) -> BTreeMap<String, Option<String>> {
    SYSCTLS
        .iter()
        .map(|name| {
            let path = format!("/proc/sys/{}", name.replace('.', "/"));
            let value = match fs::read_to_string(&path) {
                Ok(v) => Some(v.trim().to_string()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => {
                    notes.push(format!("sysctl {name}: cannot read {path}: {e}"));
                    None
                }
            };
            (name.to_string(), value)
        })
        .collect()
}

fn read_ct_stats(notes: &mut Vec<String>) -> Option<Vec<CtCpuStats>> {
    match fs::read_to_string(CT_STATS) {
        Ok(text) => match parse_ct_stats(&text) {
            Ok(stats) => Some(stats),
            Err(e) => {
                notes.push(format!("conntrack: {CT_STATS}: {e}"));
                None
            }
        },
        // nf_conntrack not loaded: nothing to report, the None says it.
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            notes.push(format!("conntrack: cannot read {CT_STATS}: {e}"));
            None
        }
    }
}

/// A chain seen in any backend, for the kube-proxy and Calico checks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChainRef {
    /// Where: `nft ip nat`, `iptables-legacy`, ...
    source: String,
    /// The table name alone.
    table: String,
    name: String,
}

/// Decides kube-proxy's mode from its traces (see [`KubeProxy::mode`] for the precedence).
fn classify_kube_proxy(
    links: &[links::Link],
    nft_tables: &[String],
    chains: &[ChainRef],
    ipvs_services: Option<u32>,
) -> KubeProxy {
    let mut evidence = Vec::new();
    let ipvs_dev = links.iter().find(|l| l.name == KUBE_IPVS_DEVICE);
    if let Some(dev) = ipvs_dev {
        evidence.push(format!("device {KUBE_IPVS_DEVICE} (ifindex {})", dev.index));
    }
    if let Some(n) = ipvs_services {
        evidence.push(format!("{n} IPVS virtual services"));
    }
    // `table ip kube-proxy`, `table ip6 kube-proxy` (and `inet` in some previews).
    let nft_table: Vec<&String> = nft_tables
        .iter()
        .filter(|t| t.ends_with(" kube-proxy"))
        .collect();
    evidence.extend(nft_table.iter().map(|t| format!("nft table {t}")));
    // KUBE-SERVICES is kube-proxy's own; KUBE-POSTROUTING was also made by kubelet before 1.24,
    // so it is evidence but not proof.
    let mut services_chain = false;
    for c in chains.iter().filter(|c| c.table == "nat") {
        if c.name == "KUBE-SERVICES" || c.name == "KUBE-POSTROUTING" {
            services_chain |= c.name == "KUBE-SERVICES";
            evidence.push(format!("chain {} in {}", c.name, c.source));
        }
    }
    let mode = if ipvs_dev.is_some() {
        KubeProxyMode::Ipvs
    } else if !nft_table.is_empty() {
        KubeProxyMode::Nftables
    } else if services_chain {
        KubeProxyMode::Iptables
    } else {
        KubeProxyMode::None
    };
    KubeProxy {
        mode,
        evidence,
        ipvs_services,
        services: None,
        no_endpoint_rules: Vec::new(),
    }
}

/// Traces of Calico: its devices, its `cali-` chains or `calico` nft tables, its state directory.
fn calico_evidence(
    links: &[links::Link],
    nft_tables: &[String],
    chains: &[ChainRef],
    state_dir: bool,
) -> Vec<String> {
    const DEVICES: &[&str] = &[
        "vxlan.calico",
        "vxlan-v6.calico",
        "wireguard.cali",
        "wg-v6.cali",
    ];
    let mut evidence: Vec<String> = links
        .iter()
        .filter(|l| DEVICES.contains(&l.name.as_str()))
        .map(|l| format!("device {}", l.name))
        .collect();
    let workload = links.iter().filter(|l| l.name.starts_with("cali")).count();
    if workload > 0 {
        evidence.push(format!("{workload} cali* workload interfaces"));
    }
    // The ipip module creates tunl0 down; Calico's IPIP mode brings it up.
    if links.iter().any(|l| l.name == "tunl0" && l.up) {
        evidence.push("tunl0 is up (Calico IPIP mode)".into());
    }
    evidence.extend(
        nft_tables
            .iter()
            .filter(|t| t.ends_with(" calico"))
            .map(|t| format!("nft table {t}")),
    );
    let mut sources: BTreeMap<&str, usize> = BTreeMap::new();
    for c in chains.iter().filter(|c| c.name.starts_with("cali-")) {
        *sources.entry(c.source.as_str()).or_default() += 1;
    }
    evidence.extend(
        sources
            .into_iter()
            .map(|(s, n)| format!("{n} cali- chains in {s}")),
    );
    if state_dir {
        evidence.push(format!("{CALICO_STATE_DIR} exists"));
    }
    evidence
}

#[cfg(test)]
mod tests {
    use netlat_core::facts::NatRule;

    use super::*;

    #[test]
    fn kernel_release_shapes() {
        let k = KernelVersion::parse("6.18.44-fc-v657").unwrap();
        assert_eq!((k.major, k.minor, k.patch), (6, 18, 44));
        assert_eq!(k.release, "6.18.44-fc-v657");
        let k = KernelVersion::parse("5.10.0-28-amd64").unwrap();
        assert_eq!((k.major, k.minor, k.patch), (5, 10, 0));
        let k = KernelVersion::parse("3.10.0-1062.el7.x86_64").unwrap();
        assert_eq!((k.major, k.minor, k.patch), (3, 10, 0));
        let k = KernelVersion::parse("6.1").unwrap();
        assert_eq!((k.major, k.minor, k.patch), (6, 1, 0));
        let k = KernelVersion::parse("4.19.0+").unwrap();
        assert_eq!((k.major, k.minor, k.patch), (4, 19, 0));
        assert!(KernelVersion::parse("linux").is_err());
        assert!(KernelVersion::parse("6").is_err());
        assert!(KernelVersion::parse("").is_err());
    }

    #[test]
    fn kernel_at_least() {
        let k = KernelVersion::parse("5.9.1").unwrap();
        assert!(k.at_least(5, 9, 0));
        assert!(k.at_least(5, 9, 1));
        assert!(!k.at_least(5, 9, 2));
        assert!(!k.at_least(6, 0, 0));
        assert!(k.at_least(4, 19, 140));
    }

    fn link(name: &str, up: bool) -> links::Link {
        links::Link {
            index: 7,
            name: name.into(),
            up,
            vxlan: None,
        }
    }

    fn chain(source: &str, name: &str) -> ChainRef {
        ChainRef {
            source: source.into(),
            table: "nat".into(),
            name: name.into(),
        }
    }

    #[test]
    fn kube_proxy_modes() {
        let none = classify_kube_proxy(&[], &[], &[], None);
        assert_eq!(none, KubeProxy::default());

        let ipt = classify_kube_proxy(
            &[],
            &["ip nat".into()],
            &[
                chain("nft ip nat", "KUBE-SERVICES"),
                chain("nft ip nat", "KUBE-POSTROUTING"),
            ],
            None,
        );
        assert_eq!(ipt.mode, KubeProxyMode::Iptables);
        assert_eq!(ipt.evidence.len(), 2);

        // kubelet < 1.24 alone: KUBE-POSTROUTING without KUBE-SERVICES is not kube-proxy.
        let kubelet = classify_kube_proxy(
            &[],
            &[],
            &[chain("iptables-legacy", "KUBE-POSTROUTING")],
            None,
        );
        assert_eq!(kubelet.mode, KubeProxyMode::None);
        assert_eq!(kubelet.evidence.len(), 1);

        let nft = classify_kube_proxy(
            &[],
            &["ip kube-proxy".into(), "ip6 kube-proxy".into()],
            &[],
            None,
        );
        assert_eq!(nft.mode, KubeProxyMode::Nftables);
        assert_eq!(
            nft.evidence,
            ["nft table ip kube-proxy", "nft table ip6 kube-proxy"]
        );

        let ipvs = classify_kube_proxy(
            &[link("kube-ipvs0", false)],
            &[],
            &[chain("iptables-legacy", "KUBE-SERVICES")],
            Some(12),
        );
        assert_eq!(ipvs.mode, KubeProxyMode::Ipvs);
        assert_eq!(ipvs.ipvs_services, Some(12));
        assert!(
            ipvs.evidence
                .iter()
                .any(|e| e == "12 IPVS virtual services")
        );
    }

    #[test]
    fn calico_traces() {
        assert!(
            calico_evidence(&[link("eth0", true), link("tunl0", false)], &[], &[], false)
                .is_empty()
        );
        let ev = calico_evidence(
            &[
                link("vxlan.calico", true),
                link("cali1234", true),
                link("cali5678", true),
                link("tunl0", true),
            ],
            &["ip calico".into()],
            &[
                chain("iptables-legacy", "cali-POSTROUTING"),
                chain("iptables-legacy", "cali-nat-outgoing"),
                chain("nft ip nat", "cali-PREROUTING"),
            ],
            true,
        );
        assert_eq!(
            ev,
            [
                "device vxlan.calico",
                "2 cali* workload interfaces",
                "tunl0 is up (Calico IPIP mode)",
                "nft table ip calico",
                "2 cali- chains in iptables-legacy",
                "1 cali- chains in nft ip nat",
                "/var/lib/calico exists",
            ]
        );
    }

    #[test]
    fn serde_names() {
        let kp = KubeProxy {
            mode: KubeProxyMode::Nftables,
            ..KubeProxy::default()
        };
        let json = serde_json::to_value(&kp).unwrap();
        assert_eq!(json["mode"], "nftables");
        let rule = NatRule::default();
        assert_eq!(serde_json::to_value(&rule).unwrap()["kind"], "masquerade");
    }

    #[test]
    fn gather_never_fails() {
        // Works as any user: unreadable parts become notes.
        let facts = gather();
        eprintln!("{facts:#?}");
        assert!(facts.kernel.major >= 3, "{facts:?}");
        assert_eq!(facts.sysctls.len(), SYSCTLS.len());
        let missing = gather_in_netns(Path::new("/nonexistent/netns"));
        assert!(missing.kernel.major >= 3);
        assert!(
            missing.notes.iter().any(|n| n.contains("cannot enter")),
            "{missing:?}"
        );
        assert!(missing.sysctls.is_empty());
    }
}
