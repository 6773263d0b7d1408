//! The loader's decisions on fabricated kernels: every rung of every ladder and the
//! capabilities lines they print, with no kernel needed. Formats are real tracefs files
//! (`netlat/tests/fixtures/format`); BTF results and kallsyms are made up per test.

use std::{io, path::PathBuf, sync::Arc};

use netlat_common::{ABSENT, IpvsLayout, KernelLayout, SockLayout};
use netlat_core::enrich::Kallsyms;

use super::{
    gather::{BtfFacts, EnvKnobs, Formats, KernelFacts},
    plan::{self, AttachPlan, Options, Placement, Rung, rule_layout},
    *,
};
use crate::{
    kernel::btf::BtfError,
    kernel::tracefs::{EventFormat, TracefsError},
};

const K618_SOCK: &str =
    include_str!("../../../tests/fixtures/format/6.18/inet_sock_set_state.format");
const K618_RETRANS: &str =
    include_str!("../../../tests/fixtures/format/6.18/tcp_retransmit_skb.format");
const K618_KFREE: &str = include_str!("../../../tests/fixtures/format/6.18/kfree_skb.format");
const K510_SOCK: &str =
    include_str!("../../../tests/fixtures/format/5.10/inet_sock_set_state.format");
const K510_RETRANS: &str =
    include_str!("../../../tests/fixtures/format/5.10/tcp_retransmit_skb.format");
const K510_KFREE: &str = include_str!("../../../tests/fixtures/format/5.10/kfree_skb.format");

/// Functions a Debian node with IPVS, conntrack, nftables and iptables-legacy loaded has.
const LOADED_MODULES: &[&str] = &[
    "ip_vs_in_hook",
    "ip_vs_conn_expire_now",
    "__nf_conntrack_confirm",
    "nft_do_chain",
    "ipt_do_table",
    "ip6t_do_table",
];

/// The drop locations a kernel without drop reasons ships frees from.
const DROP_LOCATIONS: &[&str] = &["nf_hook_slow", "udp_queue_rcv_one_skb", "__udp4_lib_rcv"];

#[expect(
    clippy::unnecessary_wraps,
    reason = "KernelFacts holds each format as a parse result; fixtures always parse"
)]
fn format(text: &str) -> Result<EventFormat, Arc<TracefsError>> {
    Ok(EventFormat::parse(text).expect("fixture parses"))
}

fn not_found(event: &str) -> Result<EventFormat, Arc<TracefsError>> {
    Err(Arc::new(TracefsError::Read {
        path: PathBuf::from(format!("/sys/kernel/tracing/events/x/{event}/format")),
        source: io::Error::new(io::ErrorKind::NotFound, "No such file or directory"),
    }))
}

/// A kallsyms table holding `functions` (each followed by the next, so each has a range).
fn kallsyms(functions: &[&str]) -> Kallsyms {
    let mut text = String::new();
    let mut addr = 0xffff_ffff_8100_0000u64;
    for f in functions.iter().chain(&["_etext"]) {
        text.push_str(&format!("{addr:x} T {f}\n"));
        addr += 0x100;
    }
    Kallsyms::parse(&text)
}

fn sock_layout() -> SockLayout {
    SockLayout {
        daddr: 0,
        rcv_saddr: 4,
        dport: 12,
        num: 14,
        state: 18,
        v6_daddr: 56,
        v6_rcv_saddr: 72,
        protocol: 516,
        skb_protocol: 180,
        _pad: 0,
    }
}

/// BTF as a 6.18 kernel with its modules' BTF resolves it.
fn full_btf() -> BtfFacts {
    BtfFacts {
        kernel_layout: KernelLayout {
            sock_family: 16,
            sock_net: 48,
            net_inum: 224,
            ..KernelLayout::default()
        },
        kernel_missing: Vec::new(),
        ct_tuple: None,
        ipvs: Some(IpvsLayout {
            conn_dest: 112,
            dest_weight: 56,
            dest_flags: 60,
            _pad: 0,
        }),
        sock: Ok(sock_layout()),
        nft_pktinfo_skb: Ok(0),
        ipt_skb_param: Ok(1),
    }
}

/// A 6.18 kernel with BTF and every module loaded.
fn k618() -> KernelFacts {
    KernelFacts {
        release: "6.18.44-amd64".into(),
        formats: Formats {
            sock_state: format(K618_SOCK),
            retransmit: format(K618_RETRANS),
            kfree: format(K618_KFREE),
        },
        btf: Ok(full_btf()),
        aya_btf: true,
        kallsyms: kallsyms(LOADED_MODULES),
        env: EnvKnobs::default(),
    }
}

/// Debian's 5.10: no drop reasons, kernel BTF but no module BTF, 5.10's IPVS hooks.
fn k510() -> KernelFacts {
    let no_module = |m: &str| BtfError::NoBtf {
        path: PathBuf::from(format!("/sys/kernel/btf/{m}")),
    };
    let mut functions = vec![
        "ip_vs_remote_request4",
        "ip_vs_local_request4",
        "ip_vs_conn_expire_now",
        "__nf_conntrack_confirm",
        "nft_do_chain",
        "ipt_do_table",
    ];
    functions.extend(DROP_LOCATIONS);
    KernelFacts {
        release: "5.10.0-46-amd64".into(),
        formats: Formats {
            sock_state: format(K510_SOCK),
            retransmit: format(K510_RETRANS),
            kfree: format(K510_KFREE),
        },
        btf: Ok(BtfFacts {
            ipvs: None,
            nft_pktinfo_skb: Err(no_module("nf_tables")),
            ipt_skb_param: Err(no_module("ip_tables")),
            ..full_btf()
        }),
        aya_btf: true,
        kallsyms: kallsyms(&functions),
        env: EnvKnobs::default(),
    }
}

fn planned(facts: &KernelFacts) -> AttachPlan {
    plan::plan(facts, &Options::default()).expect("the connect tracepoint is usable")
}

fn hook(evidence: &str, hook: &str, active: bool, detail: &str) -> Hook {
    Hook {
        evidence: evidence.into(),
        hook: hook.into(),
        active,
        detail: detail.into(),
    }
}

/// The capabilities line of one evidence source.
fn line(plan: &AttachPlan, evidence: &str) -> Hook {
    plan.ladder(evidence).expect("a ladder per evidence").hook()
}

/// The rung one evidence source lands on.
fn rung<'a>(plan: &'a AttachPlan, evidence: &str) -> Placement<'a> {
    plan.ladder(evidence)
        .expect("a ladder per evidence")
        .placement()
}

const IPVS_FALLBACK: &str = "an IPVS drop looks like any netfilter drop, so issue A is never named";

#[test]
fn a_6_18_kernel_with_btf_puts_every_tracepoint_on_tp_btf() {
    let p = planned(&k618());
    assert_eq!(
        p.hooks(),
        vec![
            hook("connect attempts", "tp_btf inet_sock_set_state", true, ""),
            hook("SYN retransmits", "tp_btf tcp_retransmit_skb", true, ""),
            hook("packet drops", "tp_btf kfree_skb", true, ""),
            hook("IPVS drops", "kretprobe ip_vs_in_hook", true, ""),
            hook(
                "IPVS connection expiry",
                "kprobe ip_vs_conn_expire_now",
                true,
                ""
            ),
            hook(
                "conntrack confirm drops",
                "kretprobe __nf_conntrack_confirm",
                true,
                ""
            ),
            hook(
                "nftables rule drops",
                "tracepoint skb:kfree_skb (free location nft_do_chain)",
                true,
                "drop reasons name the rule table; no kretprobe on nft_do_chain needed"
            ),
            hook(
                "iptables-legacy rule drops",
                "kretprobe ipt_do_table, ip6t_do_table",
                true,
                "skb is argument 1 (BTF prototype of ipt_do_table)"
            ),
        ]
    );
    assert!(p.has_reasons);
    assert!(matches!(
        rung(&p, "connect attempts"),
        Placement::On(Rung::TpBtf {
            program: "inet_sock_set_state_btf",
            ..
        })
    ));
    // The skb is ipt_do_table's second argument: the entry program that reads that one.
    let Placement::On(Rung::Kprobes { programs, .. }) = rung(&p, "iptables-legacy rule drops")
    else {
        panic!("iptables probe not planned");
    };
    assert_eq!(programs[0].program, "ipt_table_entry_skb1");
    // CONFIG: the tp_btf socket layout, IPVS offsets, ordinary frees ignored, no locations.
    assert_eq!(p.config.sock, sock_layout());
    assert_eq!(p.config.ipvs.conn_dest, 112);
    assert_eq!(p.config.kfree.reason, 36);
    assert!(p.config.ignores_reason(2), "NOT_SPECIFIED");
    assert!(p.config.ignores_reason(104), "QUEUE_PURGE");
    assert!(!p.config.ignores_reason(12), "NETFILTER_DROP");
    assert_eq!(
        p.names.reasons.get(&12).map(String::as_str),
        Some("NETFILTER_DROP")
    );
    assert!(p.config.locations.iter().all(|l| *l == [0, 0]));
    assert_eq!((p.config.verbose, p.log_level), (0, 0));
}

#[test]
fn tracepoints_only_puts_every_tracepoint_a_rung_down() {
    let mut facts = k618();
    facts.env.tracepoints_only = true;
    let p = planned(&facts);
    let why = "tp_btf unavailable (NETLAT_TRACEPOINTS_ONLY=1)";
    assert_eq!(
        p.hooks()[..3],
        [
            hook(
                "connect attempts",
                "tracepoint sock:inet_sock_set_state",
                true,
                why
            ),
            hook(
                "SYN retransmits",
                "tracepoint tcp:tcp_retransmit_skb",
                true,
                why
            ),
            hook("packet drops", "tracepoint skb:kfree_skb", true, why),
        ]
    );
    // The tracepoint programs never read struct sock at BTF offsets.
    assert_eq!(p.config.sock, SockLayout::UNKNOWN);
}

#[test]
fn without_kernel_btf_the_tracepoints_carry_what_is_lost() {
    let mut facts = k618();
    facts.btf = Err(BtfError::NoBtf {
        path: PathBuf::from("/sys/kernel/btf/vmlinux"),
    });
    facts.aya_btf = false;
    let p = planned(&facts);
    let no_btf = "no kernel BTF (no BTF at /sys/kernel/btf/vmlinux (kernel built without \
                  CONFIG_DEBUG_INFO_BTF?)): netns and packet headers of drops are unknown";
    let detail = format!("tp_btf unavailable (no kernel BTF); {no_btf}");
    assert_eq!(
        p.hooks()[..3],
        [
            hook(
                "connect attempts",
                "tracepoint sock:inet_sock_set_state",
                true,
                &detail
            ),
            hook(
                "SYN retransmits",
                "tracepoint tcp:tcp_retransmit_skb",
                true,
                &detail
            ),
            hook("packet drops", "tracepoint skb:kfree_skb", true, &detail),
        ]
    );
    // Without BTF the iptables probe's skb argument comes from the kernel version.
    assert_eq!(
        line(&p, "iptables-legacy rule drops"),
        hook(
            "iptables-legacy rule drops",
            "kretprobe ipt_do_table, ip6t_do_table",
            true,
            "skb is argument 1: kernel 6.18.44-amd64 has (priv, skb, state) since 5.16; no \
             kernel BTF"
        )
    );
    assert_eq!(p.config.kernel, KernelLayout::default());
    assert_eq!(p.config.sock, SockLayout::UNKNOWN);
    assert_eq!(p.names.ct_tuple, None);
}

#[test]
fn btf_that_cannot_serve_tp_btf_says_why_on_the_tracepoint_line() {
    // BTF without the socket's netns offset.
    let mut facts = k618();
    if let Ok(b) = &mut facts.btf {
        b.kernel_layout.sock_net = ABSENT;
        b.kernel_missing =
            vec!["netns of sockets unknown: sock.__sk_common.skc_net not in BTF".into()];
    }
    let p = planned(&facts);
    assert_eq!(
        line(&p, "connect attempts"),
        hook(
            "connect attempts",
            "tracepoint sock:inet_sock_set_state",
            true,
            "tp_btf unavailable (the socket's family or netns offsets are not in BTF); netns \
             of sockets unknown: sock.__sk_common.skc_net not in BTF"
        )
    );
    assert_eq!(p.config.sock, SockLayout::UNKNOWN);

    // BTF without one of struct sock's members.
    let mut facts = k618();
    if let Ok(b) = &mut facts.btf {
        b.sock = Err(Arc::new(BtfError::NoMember {
            strukt: "sock".into(),
            path: "__sk_common.skc_v6_daddr".into(),
        }));
    }
    let p = planned(&facts);
    assert_eq!(
        line(&p, "SYN retransmits").detail,
        "tp_btf unavailable (sock.__sk_common.skc_v6_daddr not in BTF)"
    );

    // BTF netlat reads but aya cannot.
    let mut facts = k618();
    facts.aya_btf = false;
    let p = planned(&facts);
    assert_eq!(
        line(&p, "packet drops"),
        hook(
            "packet drops",
            "tracepoint skb:kfree_skb",
            true,
            "tp_btf unavailable (aya could not read /sys/kernel/btf/vmlinux)"
        )
    );
    // The layout is still handed to the programs, as before the loader's split.
    assert_eq!(p.config.sock, sock_layout());
}

#[test]
fn a_5_10_kernel_without_drop_reasons_ships_frees_by_location() {
    let p = planned(&k510());
    assert!(!p.has_reasons);
    assert!(p.names.reasons.is_empty());
    assert_eq!(p.config.kfree.reason, ABSENT);
    assert_eq!(
        p.hooks(),
        vec![
            hook("connect attempts", "tp_btf inet_sock_set_state", true, ""),
            hook("SYN retransmits", "tp_btf tcp_retransmit_skb", true, ""),
            // What the line says today: the tp_btf reason only. (The location note the old
            // `load` built, "kernel < 5.17: no drop reasons; …", was overwritten by it.)
            hook(
                "packet drops",
                "tracepoint skb:kfree_skb",
                true,
                "tp_btf unavailable (no drop reasons on this kernel)"
            ),
            hook(
                "IPVS drops",
                "kretprobe ip_vs_remote_request4, ip_vs_local_request4",
                true,
                ""
            ),
            hook(
                "IPVS connection expiry",
                "kprobe ip_vs_conn_expire_now",
                true,
                ""
            ),
            hook(
                "conntrack confirm drops",
                "kretprobe __nf_conntrack_confirm",
                true,
                ""
            ),
            // No drop reasons: the rule's table is named by a kretprobe on it.
            hook(
                "nftables rule drops",
                "kretprobe nft_do_chain",
                true,
                "skb at nft_pktinfo+0 (its first member on 5.10 … 6.12; no BTF for it: no \
                 module BTF at /sys/kernel/btf/nf_tables)"
            ),
            hook(
                "iptables-legacy rule drops",
                "kretprobe ipt_do_table",
                true,
                "skb is argument 0: kernel 5.10.0-46-amd64 has (skb, state, table) before \
                 5.16; no BTF prototype (no module BTF at /sys/kernel/btf/ip_tables)"
            ),
        ]
    );
    let Placement::On(Rung::Kprobes { programs, .. }) = rung(&p, "iptables-legacy rule drops")
    else {
        panic!("iptables probe not planned");
    };
    assert_eq!(programs[0].program, "ipt_table_entry_skb0");
    // The present drop locations, in LOCATION_REASONS order; the rest unused.
    let facts = k510();
    let expected: Vec<[u64; 2]> = DROP_LOCATIONS
        .iter()
        .filter_map(|f| facts.kallsyms.range(f))
        .collect();
    assert_eq!(p.config.locations[..3], expected[..]);
    assert!(p.config.locations[3..].iter().all(|l| *l == [0, 0]));
}

#[test]
fn missing_tracepoints_fall_off_the_ladder() {
    // tp_btf needs no format file: a missing one is only the tracepoint rung's loss.
    let mut facts = k618();
    facts.formats.retransmit = not_found("tcp_retransmit_skb");
    let p = planned(&facts);
    assert!(matches!(
        rung(&p, "SYN retransmits"),
        Placement::On(Rung::TpBtf { .. })
    ));

    // Both rungs gone: a missing line with the tracepoint's reason.
    facts.env.tracepoints_only = true;
    let p = planned(&facts);
    assert_eq!(
        line(&p, "SYN retransmits"),
        hook(
            "SYN retransmits",
            "tracepoint tcp:tcp_retransmit_skb",
            false,
            "cannot read /sys/kernel/tracing/events/x/tcp_retransmit_skb/format: No such file \
             or directory"
        )
    );

    // No kfree_skb format: no drop reasons either, so nftables falls back to its kretprobe.
    let mut facts = k618();
    facts.formats.kfree = not_found("kfree_skb");
    let p = planned(&facts);
    assert!(!p.has_reasons);
    assert!(p.names.reasons.is_empty());
    assert_eq!(
        line(&p, "packet drops"),
        hook(
            "packet drops",
            "tracepoint skb:kfree_skb",
            false,
            "cannot read /sys/kernel/tracing/events/x/kfree_skb/format: No such file or \
             directory"
        )
    );
    assert!(matches!(
        rung(&p, "nftables rule drops"),
        Placement::On(Rung::Kprobes { .. })
    ));
    assert_eq!(
        line(&p, "nftables rule drops").detail,
        "skb at nft_pktinfo+0 (BTF)"
    );

    // A format without a field the program reads.
    let mut facts = k618();
    if let Ok(f) = &mut facts.formats.kfree {
        f.fields.retain(|f| f.name != "location");
    }
    facts.env.tracepoints_only = true;
    let p = planned(&facts);
    assert_eq!(
        line(&p, "packet drops").detail,
        "tracepoint kfree_skb has no field `location`, which netlat reads"
    );
}

#[test]
fn an_unusable_connect_format_stops_the_plan() {
    let mut facts = k618();
    if let Ok(f) = &mut facts.formats.sock_state {
        f.fields.retain(|f| f.name != "skaddr");
    }
    let why = plan::plan(&facts, &Options::default()).expect_err("connect is essential");
    assert_eq!(
        LoadError::Essential { why }.to_string(),
        "the connect tracepoint sock:inet_sock_set_state cannot be used: tracepoint \
         inet_sock_set_state has no field `skaddr`, which netlat reads"
    );
    // Even where tp_btf could run (it does not read the format), as the loader always did.
    facts.formats.sock_state = not_found("inet_sock_set_state");
    assert!(plan::plan(&facts, &Options::default()).is_err());
}

#[test]
fn kprobe_rungs_need_their_module_loaded() {
    let mut facts = k618();
    facts.kallsyms = kallsyms(&["nft_do_chain"]);
    let p = planned(&facts);
    assert_eq!(
        p.hooks()[3..6],
        [
            hook(
                "IPVS drops",
                "kretprobe ip_vs_in_hook",
                false,
                &format!(
                    "ip_vs_in_hook/ip_vs_remote_request4/ip_vs_local_request4/\
                     ip_vs_remote_request6/ip_vs_local_request6 is not in /proc/kallsyms \
                     (module not loaded); {IPVS_FALLBACK}"
                )
            ),
            hook(
                "IPVS connection expiry",
                "kprobe ip_vs_conn_expire_now",
                false,
                "ip_vs_conn_expire_now is not in /proc/kallsyms (module not loaded); weight-0 \
                 real servers cannot be told from port reuse"
            ),
            hook(
                "conntrack confirm drops",
                "kretprobe __nf_conntrack_confirm",
                false,
                "__nf_conntrack_confirm is not in /proc/kallsyms (module not loaded); SNAT \
                 clashes are inferred from the kfree_skb location, the skb's conntrack entry \
                 and per-CPU insert_failed counters"
            ),
        ]
    );
    assert_eq!(
        line(&p, "iptables-legacy rule drops"),
        hook(
            "iptables-legacy rule drops",
            "kretprobe ipt_do_table",
            false,
            "ipt_do_table/ip6t_do_table is not in /proc/kallsyms (module not loaded); an \
             iptables-legacy rule's drop is freed in nf_hook_slow like any netfilter hook \
             drop, so it is named netfilter-drop, not the rule"
        )
    );
    // With drop reasons the nftables line needs no function of its own.
    assert!(line(&p, "nftables rule drops").active);
}

#[test]
fn the_iptables_probe_stays_off_when_the_skb_argument_is_unknown() {
    let ipt = |param: Result<u32, BtfError>, release: &str| {
        let mut facts = k618();
        facts.release = release.into();
        if let Ok(b) = &mut facts.btf {
            b.ipt_skb_param = param;
        }
        line(&planned(&facts), "iptables-legacy rule drops")
    };
    let off = |detail: &str| {
        hook(
            "iptables-legacy rule drops",
            "kretprobe ipt_do_table, ip6t_do_table",
            false,
            &format!(
                "{detail}; an iptables-legacy rule's drop is freed in nf_hook_slow like any \
                 netfilter hook drop, so it is named netfilter-drop, not the rule"
            ),
        )
    };
    assert_eq!(
        ipt(Ok(2), "6.18.0"),
        off("ipt_do_table's skb is argument 2 in BTF, which this probe cannot read")
    );
    let no_skb = BtfError::NoMember {
        strukt: "ipt_do_table".into(),
        path: "skb".into(),
    };
    assert_eq!(
        ipt(Err(no_skb), "6.18.0"),
        off("ipt_do_table's BTF prototype has no `skb` parameter: unknown argument order")
    );
    let no_module = BtfError::NoBtf {
        path: PathBuf::from("/sys/kernel/btf/ip_tables"),
    };
    assert_eq!(
        ipt(Err(no_module), "garbage"),
        off(
            "cannot tell which argument of ipt_do_table is the skb: no BTF prototype (no module \
             BTF at /sys/kernel/btf/ip_tables), and kernel release \"garbage\" does not start \
             with MAJOR.MINOR"
        )
    );
}

#[test]
fn ipt_skb_argument_follows_the_kernel_version_without_btf() {
    let (l, n) = rule_layout(None, "5.10.0-46-amd64");
    assert!(
        n.ipt
            .as_ref()
            .is_ok_and(|a| a.index == 0 && a.note.contains("before 5.16")),
        "{n:?}"
    );
    assert_eq!(l.nft_pktinfo_skb, 0);
    let (_, n) = rule_layout(None, "6.1.0-56-amd64");
    assert!(
        n.ipt
            .as_ref()
            .is_ok_and(|a| a.index == 1 && a.note.contains("since 5.16")),
        "{n:?}"
    );
    let index = |release| rule_layout(None, release).1.ipt.map(|a| a.index);
    assert_eq!(index("5.16.0"), Ok(1));
    assert_eq!(index("5.15.99"), Ok(0));
    assert!(index("garbage").is_err());
}

#[test]
fn a_refused_rung_falls_to_the_next_and_says_why() {
    let mut p = planned(&k618());
    // The kernel refuses every tp_btf program and the conntrack probe's entry program.
    let mut tried = Vec::new();
    p.climb(|rung| {
        tried.push(rung.hook());
        match rung {
            Rung::TpBtf { program, .. } => Err(AttachError::NoProgram { program }),
            Rung::Kprobes { programs, .. } if programs[0].program == "ct_confirm_entry" => {
                Err(AttachError::NoProgram {
                    program: "ct_confirm_entry",
                })
            }
            _ => Ok(()),
        }
    })
    .expect("the connect tracepoint attached");
    let hooks = p.hooks();
    assert_eq!(
        hooks[0],
        hook(
            "connect attempts",
            "tracepoint sock:inet_sock_set_state",
            true,
            "tp_btf unavailable (program inet_sock_set_state_btf missing from the eBPF object)"
        )
    );
    assert_eq!(
        hooks[2].detail,
        "tp_btf unavailable (program kfree_skb_btf missing from the eBPF object)"
    );
    assert_eq!(
        hooks[5],
        hook(
            "conntrack confirm drops",
            "kretprobe __nf_conntrack_confirm",
            false,
            "program ct_confirm_entry missing from the eBPF object; SNAT clashes are inferred \
             from the kfree_skb location, the skb's conntrack entry and per-CPU insert_failed \
             counters"
        )
    );
    // Each tracepoint ladder tried both rungs, best first; each probe ladder its one rung.
    assert_eq!(tried.len(), 3 * 2 + 5);
    assert_eq!(
        tried[..2],
        [
            "tp_btf inet_sock_set_state",
            "tracepoint sock:inet_sock_set_state"
        ]
    );
}

#[test]
fn a_refused_connect_tracepoint_stops_the_load() {
    let mut p = planned(&k618());
    let mut tried = Vec::new();
    let why = p
        .climb(|rung| {
            tried.push(rung.hook());
            match rung {
                Rung::TpBtf { program, .. } | Rung::Tracepoint { program, .. } => {
                    Err(AttachError::NoProgram { program })
                }
                _ => Ok(()),
            }
        })
        .expect_err("connect is essential");
    assert_eq!(
        LoadError::Essential { why }.to_string(),
        "the connect tracepoint sock:inet_sock_set_state cannot be used: program \
         inet_sock_set_state missing from the eBPF object"
    );
    // Nothing after the connect ladder is attached.
    assert_eq!(tried.len(), 2);
}

#[test]
fn options_and_knobs_reach_the_plan() {
    let mut facts = k618();
    facts.env.ring_bytes = Some(1 << 24);
    let p = plan::plan(
        &facts,
        &Options {
            verbose: true,
            connect_threshold_ns: 200_000_000,
        },
    )
    .expect("plan");
    assert_eq!((p.config.verbose, p.log_level), (1, 0xff));
    assert_eq!(p.ring_bytes, Some(1 << 24));
    assert_eq!(p.config.tcp_syn_sent, 2);
    assert_eq!(p.config.connect_threshold_ns, 200_000_000);
}

#[test]
fn capability_parsing() {
    let status = "Name:\tnetlat\nCapEff:\t000001fffeffffff\n";
    let caps = cap_eff(status).expect("CapEff parses");
    assert!(missing_caps(caps).is_empty());
    assert_eq!(missing_caps(0), vec!["CAP_BPF", "CAP_PERFMON"]);
    assert_eq!(missing_caps(1 << CAP_BPF), vec!["CAP_PERFMON"]);
    assert!(missing_caps((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
    assert_eq!(cap_eff("nothing"), None);
}

#[test]
fn skipped_runs_are_read_from_the_fdinfo_counter() {
    let info = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_jited:\t1\nrun_time_ns:\t0\n\
                run_cnt:\t0\nrecursion_misses:\t17\nverified_insns:\t412\n";
    assert_eq!(super::recursion_misses(info), Some(17));
    // A kernel without the counter (before 5.12): not known, not zero.
    assert_eq!(
        super::recursion_misses("prog_type:\t26\nrun_cnt:\t3\n"),
        None
    );
}
