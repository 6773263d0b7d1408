//! The I/O shell that prepares and loads the eBPF programs: privileges, tracefs formats, BTF
//! offsets, kernel names, `CONFIG`, load and attach. Each evidence source that cannot work on
//! this kernel is reported as a missing [`Hook`]; only the connect tracepoint is essential.

use std::fs;

use aya::{
    Ebpf, EbpfLoader,
    maps::PerCpuArray,
    programs::{BtfTracePoint, KProbe, TracePoint},
};
use netlat_common::{Config, kind};

use netlat_core::{
    enrich::{Kallsyms, Names},
    report::Hook,
};

use crate::{
    btf::{BtfError, KernelBtf},
    kernel::tracefs::{self, Tracefs},
};

/// The eBPF object built by build.rs (empty when built with AYA_BUILD_SKIP=1).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netlat"));

/// Drop reasons that are ordinary frees, not evidence of a lost connect; filtered in the kernel.
pub const IGNORED_REASONS: &[&str] = &[
    "NOT_SPECIFIED",
    "CONSUMED",
    "NO_SOCKET",
    "SOCKET_CLOSE",
    "UNIX_DISCONNECT",
    "UNIX_SKIP_OOB",
    "PKT_TOO_SMALL",
    "TCP_OLD_DATA",
    "TCP_OLD_ACK",
    "TCP_OLD_SEQUENCE",
    "TCP_OFO_DROP",
    "TCP_OFO_QUEUE_PRUNE",
    "TCP_CLOSE",
    "TCP_FLAGS",
    // A closing socket purging its queues (sk_stream_kill_queues): every short connection.
    "QUEUE_PURGE",
];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "netlat needs root (or CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) to load its eBPF \
         programs; missing: {missing}. Run it with sudo"
    )]
    Privileges { missing: String },
    #[error(
        "this netlat binary was built without its eBPF programs (AYA_BUILD_SKIP); rebuild \
         with `cargo build --release` after `cargo xtask setup`"
    )]
    NoObject,
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("the connect tracepoint sock:inet_sock_set_state cannot be used: {0}")]
    Essential(String),
    #[error("loading the eBPF programs failed: {0}")]
    Load(#[source] aya::EbpfError),
}

/// Everything `watch` needs after a successful load.
pub struct Loaded {
    pub ebpf: Ebpf,
    /// `uname -r` of the running kernel.
    pub kernel: String,
    pub hooks: Vec<Hook>,
    pub names: Names,
    pub has_reasons: bool,
}

/// Capability bits of /proc/self/status `CapEff`.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Parse the effective capability mask from /proc/self/status text.
pub fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The capabilities missing for loading and attaching tracepoint programs, empty when fine.
pub fn missing_caps(cap_eff: u64) -> Vec<&'static str> {
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Vec::new();
    }
    let mut v = Vec::new();
    if !has(CAP_BPF) {
        v.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        v.push("CAP_PERFMON");
    }
    v
}

fn check_privileges() -> Result<(), LoadError> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let missing = match cap_eff(&status) {
        Some(c) => missing_caps(c),
        None => vec!["CAP_BPF", "CAP_PERFMON"],
    };
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LoadError::Privileges {
            missing: missing.join(", "),
        })
    }
}

/// One tracepoint program to attach.
struct Tp {
    program: &'static str,
    /// The tp_btf variant of the program, tried first.
    btf_program: Option<&'static str>,
    category: &'static str,
    name: &'static str,
    evidence: &'static str,
}

const TRACEPOINTS: [Tp; 3] = [
    Tp {
        program: "inet_sock_set_state",
        btf_program: Some("inet_sock_set_state_btf"),
        category: "sock",
        name: "inet_sock_set_state",
        evidence: "connect attempts",
    },
    Tp {
        program: "tcp_retransmit_skb",
        btf_program: Some("tcp_retransmit_skb_btf"),
        category: "tcp",
        name: "tcp_retransmit_skb",
        evidence: "SYN retransmits",
    },
    Tp {
        program: "kfree_skb",
        btf_program: Some("kfree_skb_btf"),
        category: "skb",
        name: "kfree_skb",
        evidence: "packet drops",
    },
];

/// Prepare, load and attach. `verbose` turns on the programs' aya-log diagnostics.
pub fn load(verbose: bool) -> Result<Loaded, LoadError> {
    check_privileges()?;
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    // NETLAT_TRACEFS points at a tracefs mounted elsewhere (e.g. a container's host mount).
    let tracefs = match std::env::var_os("NETLAT_TRACEFS") {
        Some(dir) => Tracefs::at(dir),
        None => Tracefs::locate_or_mount()?,
    };
    let mut config = Config {
        tcp_syn_sent: 2,
        verbose: u32::from(verbose),
        ..Config::default()
    };
    // Per tracepoint: its layout, or why it cannot be used.
    let mut usable = [None::<String>, None, None];

    match tracefs
        .read_format("sock", "inet_sock_set_state")
        .map_err(|e| e.to_string())
        .and_then(|f| tracefs::sock_state_layout(&f).map_err(|e| e.to_string()))
    {
        Ok(l) => config.sock_state = l,
        Err(e) => return Err(LoadError::Essential(e)),
    }
    match tracefs
        .read_format("tcp", "tcp_retransmit_skb")
        .map_err(|e| e.to_string())
        .and_then(|f| tracefs::retransmit_layout(&f).map_err(|e| e.to_string()))
    {
        Ok(l) => config.retransmit = l,
        Err(e) => usable[1] = Some(e),
    }
    let mut names = Names::default();
    let mut has_reasons = false;
    let mut kfree_detail = String::new();
    match tracefs.read_format("skb", "kfree_skb") {
        Ok(f) => match tracefs::kfree_layout(&f) {
            Ok(l) => {
                config.kfree = l;
                has_reasons = l.reason != netlat_common::ABSENT;
                if let Some(syms) = f.symbols("reason") {
                    names.reasons = syms;
                }
                if !has_reasons {
                    kfree_detail = "kernel < 5.17: no drop reasons; drops are told apart by \
                                    location only"
                        .into();
                }
            }
            Err(e) => usable[2] = Some(e.to_string()),
        },
        Err(e) => usable[2] = Some(e.to_string()),
    }
    for r in IGNORED_REASONS {
        if let Some(n) = names.reason_number(r) {
            config.ignore_reason(n);
        }
    }

    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut btf_notes = Vec::new();
    // Whether the tp_btf connect programs can run: they need struct sock from BTF.
    let mut sock_btf: Result<(), String> = Err("no kernel BTF".into());
    let tracepoints_only = std::env::var_os(TRACEPOINTS_ONLY_VAR).is_some_and(|v| v == "1");
    let kernel_btf = KernelBtf::from_sys();
    let (rules, rule_notes) = rule_layout(kernel_btf.as_ref().ok(), &release);
    config.rules = rules;
    match kernel_btf {
        Ok(btf) => {
            let (layout, missing) = btf.kernel_layout();
            config.kernel = layout;
            btf_notes = missing;
            names.ct_tuple = btf.conntrack_layout().ok().map(|(_, t)| t);
            if let Ok(l) = btf.ipvs_layout() {
                config.ipvs = l;
            }
            let k = &config.kernel;
            sock_btf = if tracepoints_only {
                Err(format!("{TRACEPOINTS_ONLY_VAR}=1"))
            } else if [k.sock_family, k.sock_net, k.net_inum].contains(&netlat_common::ABSENT) {
                Err("the socket's family or netns offsets are not in BTF".to_string())
            } else {
                btf.sock_layout()
                    .map(|l| config.sock = l)
                    .map_err(|e| e.to_string())
            };
        }
        Err(e) => btf_notes.push(format!(
            "no kernel BTF ({e}): netns and packet headers of drops are unknown"
        )),
    }
    names.kallsyms = Kallsyms::parse(&fs::read_to_string("/proc/kallsyms").unwrap_or_default());
    if !has_reasons {
        // No drop reasons: ship only frees from the functions whose frees are drops.
        let mut n = 0;
        for (func, _) in netlat_core::enrich::LOCATION_REASONS {
            if let Some(r) = names.kallsyms.range(func)
                && n < netlat_common::MAX_LOCATIONS
            {
                config.locations[n] = r;
                n += 1;
            }
        }
        if n == 0 {
            kfree_detail.push_str("; no drop locations found in /proc/kallsyms: no drops shipped");
        } else {
            kfree_detail.push_str(&format!(
                "; shipping frees from {n} drop locations, reasons inferred from them"
            ));
        }
    }

    // aya-log is quiet unless asked: level 0 disables every log statement in the programs.
    let log_level: u8 = if verbose { 0xff } else { 0 };
    let mut ebpf_loader = EbpfLoader::new();
    // Parsed once: the loader relocates with it and the tp_btf programs attach through it.
    let aya_btf = aya::Btf::from_sys_fs().ok();
    ebpf_loader.btf(aya_btf.as_ref());
    // NETLAT_RING_BYTES resizes the ring buffer (validated by `watch` before loading).
    if let Some(bytes) = crate::limits::ring_bytes() {
        ebpf_loader.map_max_entries("EVENTS", bytes);
    }
    let mut ebpf = ebpf_loader
        .override_global("CONFIG", &config, true)
        .override_global("AYA_LOG_LEVEL", &log_level, false)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Load)?;

    let mut hooks = Vec::new();
    for (i, tp) in TRACEPOINTS.iter().enumerate() {
        // The connect programs prefer tp_btf: direct typed loads instead of a helper call per
        // field (see BENCHMARKS.md); the tracepoint is the next rung down.
        let mut btf_fallback = None;
        if let Some(btf_program) = tp.btf_program {
            let tried = match (&sock_btf, aya_btf.as_ref()) {
                // Without drop reasons the drop program filters by free location, which only
                // the tracepoint program does.
                _ if i == 2 && !has_reasons => Err("no drop reasons on this kernel".into()),
                (Ok(()), Some(btf)) => attach_btf(&mut ebpf, btf_program, tp.name, btf),
                (Err(why), _) => Err(why.clone()),
                (_, None) => Err("aya could not read /sys/kernel/btf/vmlinux".into()),
            };
            match tried {
                Ok(()) => {
                    hooks.push(Hook {
                        evidence: tp.evidence.into(),
                        hook: format!("tp_btf {}", tp.name),
                        active: true,
                        detail: [
                            if i == 2 {
                                kfree_detail.clone()
                            } else {
                                String::new()
                            },
                            btf_notes.join("; "),
                        ]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("; "),
                    });
                    continue;
                }
                Err(why) => btf_fallback = Some(format!("tp_btf unavailable ({why})")),
            }
        }
        let hook = format!("tracepoint {}:{}", tp.category, tp.name);
        let result = match &usable[i] {
            Some(why) => Err(why.clone()),
            None => attach(&mut ebpf, tp),
        };
        match result {
            Ok(()) => {
                let mut detail = if i == 2 {
                    kfree_detail.clone()
                } else {
                    String::new()
                };
                if let Some(why) = &btf_fallback {
                    detail = why.clone();
                }
                if !btf_notes.is_empty() {
                    detail = [detail, btf_notes.join("; ")]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("; ");
                }
                hooks.push(Hook {
                    evidence: tp.evidence.into(),
                    hook,
                    active: true,
                    detail,
                })
            }
            Err(why) if i == 0 => return Err(LoadError::Essential(why)),
            Err(why) => hooks.push(Hook {
                evidence: tp.evidence.into(),
                hook,
                active: false,
                detail: why,
            }),
        }
    }
    for set in PROBES {
        let mut set = *set;
        if set.evidence == NFT_EVIDENCE && has_reasons {
            // With drop reasons an nft rule's drop is freed in nft_do_chain itself, which the
            // drop tracepoint already names; a kretprobe would run on every packet of every
            // nft chain for nothing.
            hooks.push(Hook {
                evidence: NFT_EVIDENCE.into(),
                hook: "tracepoint skb:kfree_skb (free location nft_do_chain)".into(),
                active: true,
                detail: "drop reasons name the rule table; no kretprobe on nft_do_chain needed"
                    .into(),
            });
            continue;
        }
        let note = match set.evidence {
            NFT_EVIDENCE => rule_notes.nft.clone(),
            IPT_EVIDENCE => {
                // The entry program that reads the skb from this kernel's argument position.
                if rule_notes.ipt_skb_arg == Some(1) {
                    set.programs = &[("ipt_table_entry_skb1", false), ("ipt_table_exit", true)];
                }
                rule_notes.ipt.clone()
            }
            _ => Ok(String::new()),
        };
        hooks.push(attach_probes(&mut ebpf, &set, &names.kallsyms, note));
    }
    Ok(Loaded {
        ebpf,
        kernel: release,
        hooks,
        names,
        has_reasons,
    })
}

/// `NETLAT_TRACEPOINTS_ONLY=1`: use the classic tracepoint programs even where tp_btf works
/// (the rung below, for a kernel whose BTF misleads, and for testing that rung).
pub const TRACEPOINTS_ONLY_VAR: &str = "NETLAT_TRACEPOINTS_ONLY";

const NFT_EVIDENCE: &str = "nftables rule drops";
const IPT_EVIDENCE: &str = "iptables-legacy rule drops";

/// How the rule-table probes find their skb on this kernel: a note for the capabilities line,
/// or why the probe cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleNotes {
    pub nft: Result<String, String>,
    pub ipt: Result<String, String>,
    /// Which argument of `ipt_do_table` is the skb (0 or 1), when known.
    pub ipt_skb_arg: Option<u32>,
}

/// Kernel where ipt_do_table/ip6t_do_table became `(priv, skb, state)` (was `(skb, state,
/// table)`): "netfilter: iptables: allow use of ipt_do_table as hookfn", nf-next for 5.16.
const IPT_PRIV_FIRST: (u32, u32, u32) = (5, 16, 0);

/// Where the skb is for `nft_do_chain` and `ipt_do_table`: from BTF (the nf_tables and
/// ip_tables modules' split BTF when they are modules), else from what is known per version.
pub fn rule_layout(
    btf: Option<&KernelBtf>,
    release: &str,
) -> (netlat_common::RuleLayout, RuleNotes) {
    let mut layout = netlat_common::RuleLayout::default();
    let mut ipt_skb_arg = None;
    let nft = match btf.map(KernelBtf::nft_pktinfo_skb) {
        Some(Ok(off)) => {
            layout.nft_pktinfo_skb = off;
            Ok(format!("skb at nft_pktinfo+{off} (BTF)"))
        }
        Some(Err(e)) => Ok(format!(
            "skb at nft_pktinfo+{} (its first member on 5.10 … 6.12; no BTF for it: {})",
            layout.nft_pktinfo_skb,
            btf_why(&e)
        )),
        None => Ok(format!(
            "skb at nft_pktinfo+{} (its first member on 5.10 … 6.12; no kernel BTF)",
            layout.nft_pktinfo_skb
        )),
    };
    let by_btf = btf.map(|b| b.param_index("ip_tables", "ipt_do_table", "skb"));
    let ipt = match by_btf {
        Some(Ok(i)) if i <= 1 => {
            ipt_skb_arg = Some(i);
            Ok(format!(
                "skb is argument {i} (BTF prototype of ipt_do_table)"
            ))
        }
        Some(Ok(i)) => Err(format!(
            "ipt_do_table's skb is argument {i} in BTF, which this probe cannot read"
        )),
        // A prototype without `skb` is a shape this probe does not know (e.g. the proposed
        // one-argument `ipt_do_table(state)`): guessing by version would read the wrong value.
        Some(Err(BtfError::NoMember { .. })) => Err(
            "ipt_do_table's BTF prototype has no `skb` parameter: unknown argument order".into(),
        ),
        other => {
            let why = match other {
                Some(Err(e)) => format!("no BTF prototype ({})", btf_why(&e)),
                _ => "no kernel BTF".to_string(),
            };
            match netlat_core::facts::KernelVersion::parse(release) {
                Ok(v) => {
                    let (a, b, c) = IPT_PRIV_FIRST;
                    let (i, shape) = if v.at_least(a, b, c) {
                        (1, "(priv, skb, state) since 5.16")
                    } else {
                        (0, "(skb, state, table) before 5.16")
                    };
                    ipt_skb_arg = Some(i);
                    Ok(format!(
                        "skb is argument {i}: kernel {} has {shape}; {why}",
                        v.release
                    ))
                }
                Err(e) => Err(format!(
                    "cannot tell which argument of ipt_do_table is the skb: {why}, and {e}"
                )),
            }
        }
    };
    (
        layout,
        RuleNotes {
            nft,
            ipt,
            ipt_skb_arg,
        },
    )
}

/// A BTF lookup failure in words; a missing file here is a module's split BTF (e.g. Debian
/// 5.10 ships none), not the kernel's.
fn btf_why(e: &BtfError) -> String {
    match e {
        BtfError::NoBtf { path } => format!("no module BTF at {}", path.display()),
        other => other.to_string(),
    }
}

/// Evidence from kprobes on kernel functions: the rung above tracepoints. (fentry/fexit would
/// be cheaper, but aya 0.14 cannot attach them to module functions such as IPVS's.)
#[derive(Clone, Copy)]
struct ProbeSet {
    evidence: &'static str,
    /// Candidate functions across kernel versions; every one present is probed.
    functions: &'static [&'static str],
    /// (program, is_return)
    programs: &'static [(&'static str, bool)],
    /// What netlat falls back to without this evidence.
    fallback: &'static str,
}

const PROBES: &[ProbeSet] = &[
    ProbeSet {
        evidence: "IPVS drops",
        // ip_vs_in_hook since 5.16; the per-family request hooks before.
        functions: &[
            "ip_vs_in_hook",
            "ip_vs_remote_request4",
            "ip_vs_local_request4",
            "ip_vs_remote_request6",
            "ip_vs_local_request6",
        ],
        programs: &[("ipvs_hook_entry", false), ("ipvs_hook_exit", true)],
        fallback: "an IPVS drop looks like any netfilter drop, so issue A is never named",
    },
    ProbeSet {
        evidence: "IPVS connection expiry",
        functions: &["ip_vs_conn_expire_now"],
        programs: &[("ipvs_expire_now", false)],
        fallback: "weight-0 real servers cannot be told from port reuse",
    },
    ProbeSet {
        evidence: "conntrack confirm drops",
        functions: &["__nf_conntrack_confirm"],
        programs: &[("ct_confirm_entry", false), ("ct_confirm_exit", true)],
        fallback: "SNAT clashes are inferred from the kfree_skb location, the skb's conntrack \
                   entry and per-CPU insert_failed counters",
    },
    ProbeSet {
        evidence: NFT_EVIDENCE,
        functions: &["nft_do_chain"],
        programs: &[("nft_chain_entry", false), ("nft_chain_exit", true)],
        fallback: "a rule's drop is named from the kfree_skb location (nft_do_chain) where the \
                   kernel has drop reasons (≥ 5.17); before that it looks like any netfilter \
                   hook drop (netfilter-drop)",
    },
    ProbeSet {
        evidence: IPT_EVIDENCE,
        functions: &["ipt_do_table", "ip6t_do_table"],
        // ipt_table_entry_skb1 replaces the entry program on kernels ≥ 5.16 (see `load`).
        programs: &[("ipt_table_entry_skb0", false), ("ipt_table_exit", true)],
        fallback: "an iptables-legacy rule's drop is freed in nf_hook_slow like any netfilter \
                   hook drop, so it is named netfilter-drop, not the rule",
    },
];

/// Attach one probe set; `note` is the detail of an active hook, or why it must stay off.
fn attach_probes(
    ebpf: &mut Ebpf,
    set: &ProbeSet,
    ksyms: &Kallsyms,
    note: Result<String, String>,
) -> Hook {
    let present: Vec<&str> = set
        .functions
        .iter()
        .copied()
        .filter(|f| ksyms.range(f).is_some())
        .collect();
    let kind = if set.programs.iter().any(|(_, ret)| *ret) {
        "kretprobe"
    } else {
        "kprobe"
    };
    let inactive = |hook: String, why: String| Hook {
        evidence: set.evidence.into(),
        hook,
        active: false,
        detail: format!("{why}; {}", set.fallback),
    };
    if present.is_empty() {
        return inactive(
            format!("{kind} {}", set.functions[0]),
            format!(
                "{} is not in /proc/kallsyms (module not loaded)",
                set.functions.join("/")
            ),
        );
    }
    let hook = format!("{kind} {}", present.join(", "));
    let note = match note {
        Ok(n) => n,
        Err(why) => return inactive(hook, why),
    };
    for (program, _) in set.programs {
        let result = (|| -> Result<(), String> {
            let prog: &mut KProbe = ebpf
                .program_mut(program)
                .ok_or_else(|| format!("program {program} missing from the eBPF object"))?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            prog.load()
                .map_err(|e| format!("verifier refused it: {e}"))?;
            for f in &present {
                prog.attach(f, 0)
                    .map_err(|e| format!("kprobes unavailable on this kernel ({e})"))?;
            }
            Ok(())
        })();
        if let Err(why) = result {
            return inactive(hook, why);
        }
    }
    Hook {
        evidence: set.evidence.into(),
        hook,
        active: true,
        detail: note,
    }
}

fn attach(ebpf: &mut Ebpf, tp: &Tp) -> Result<(), String> {
    let prog: &mut TracePoint = ebpf
        .program_mut(tp.program)
        .ok_or_else(|| format!("program {} missing from the eBPF object", tp.program))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    prog.load()
        .map_err(|e| format!("verifier refused it: {e}"))?;
    prog.attach(tp.category, tp.name)
        .map_err(|e| format!("attach failed: {e}"))?;
    Ok(())
}

fn attach_btf(ebpf: &mut Ebpf, program: &str, name: &str, btf: &aya::Btf) -> Result<(), String> {
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the eBPF object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    prog.load(name, btf)
        .map_err(|e| format!("verifier refused it: {e}"))?;
    prog.attach().map_err(|e| format!("attach failed: {e}"))?;
    Ok(())
}

/// Events the kernel could not reserve in the ring buffer, summed over CPUs, per kind name.
pub fn lost_events(ebpf: &Ebpf) -> Vec<(&'static str, u64)> {
    let Some(map) = ebpf.map("LOST") else {
        return Vec::new();
    };
    let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else {
        return Vec::new();
    };
    [
        ("connect", kind::SOCK_STATE),
        ("retransmit", kind::RETRANSMIT),
        ("drop", kind::DROP),
        ("hook_drop", kind::HOOK_DROP),
        ("ipvs_expire", kind::IPVS_EXPIRE),
    ]
    .into_iter()
    .map(|(name, k)| {
        let n = arr.get(&k, 0).map(|v| v.iter().sum()).unwrap_or(0);
        (name, n)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipt_skb_argument_follows_the_kernel_version_without_btf() {
        let (l, n) = rule_layout(None, "5.10.0-46-amd64");
        assert_eq!(n.ipt_skb_arg, Some(0));
        assert!(
            n.ipt.as_ref().is_ok_and(|t| t.contains("before 5.16")),
            "{n:?}"
        );
        assert_eq!(l.nft_pktinfo_skb, 0);
        let (_, n) = rule_layout(None, "6.1.0-56-amd64");
        assert_eq!(n.ipt_skb_arg, Some(1));
        assert!(
            n.ipt.as_ref().is_ok_and(|t| t.contains("since 5.16")),
            "{n:?}"
        );
        assert_eq!(rule_layout(None, "5.16.0").1.ipt_skb_arg, Some(1));
        assert_eq!(rule_layout(None, "5.15.99").1.ipt_skb_arg, Some(0));
        let (_, n) = rule_layout(None, "garbage");
        assert_eq!(n.ipt_skb_arg, None);
        assert!(n.ipt.is_err(), "{n:?}");
    }

    #[test]
    fn capability_parsing() {
        let status = "Name:\tnetlat\nCapEff:\t000001fffeffffff\n";
        let caps = cap_eff(status).unwrap();
        assert!(missing_caps(caps).is_empty());
        assert_eq!(missing_caps(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_caps(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing_caps((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert_eq!(cap_eff("nothing"), None);
    }
}
