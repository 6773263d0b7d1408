//! Plan: from [`KernelFacts`] alone (no syscalls), the `CONFIG` the programs get and, per
//! evidence source, a [`Ladder`] of ways to attach it, best first, each usable or ruled out
//! with the reason. The capabilities (`Hook`) lines are rendered from the ladders, so the plan
//! predicts them and the apply step only records attach failures into the same ladders.

use std::sync::Arc;

use netlat_common::{ABSENT, Config, RuleLayout};
use netlat_core::{
    enrich::{LOCATION_REASONS, Names},
    facts::{KernelReleaseError, KernelVersion},
    report::Hook,
};

use super::{
    TRACEPOINTS_ONLY_VAR,
    apply::AttachError,
    gather::{BtfFacts, KernelFacts},
};
use crate::{
    kernel::btf::BtfError,
    kernel::tracefs::{self, FormatError, TracefsError},
};

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

/// What the user asked for, beside what the kernel offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Turn on the programs' aya-log diagnostics.
    pub verbose: bool,
    /// Attempts faster than this (and without a SYN retransmit) stay in the kernel.
    pub connect_threshold_ns: u64,
}

/// Everything the apply step needs, decided.
#[derive(Debug)]
pub struct AttachPlan {
    /// The programs' `CONFIG` global.
    pub config: Config,
    /// The programs' `AYA_LOG_LEVEL` global: 0 disables every log statement in them.
    pub log_level: u8,
    /// The ring buffer's size, when the environment sets it.
    pub ring_bytes: Option<u32>,
    /// Whether `kfree_skb` carries drop reasons (5.17 and later).
    pub has_reasons: bool,
    /// Drop-reason names and the conntrack tuple layout (the loader adds the kallsyms table).
    pub names: Names,
    /// One ladder per evidence source, in the order of the capabilities lines.
    pub ladders: Vec<Ladder>,
}

/// One way to get an evidence source, as a rung of its [`Ladder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rung {
    /// A BTF-typed tracepoint: arguments arrive typed and fields are direct loads, instead of
    /// a helper call per field (see BENCHMARKS.md).
    TpBtf {
        program: &'static str,
        event: &'static str,
    },
    /// A classic tracepoint, its fields at the offsets of its tracefs format file.
    Tracepoint {
        program: &'static str,
        category: &'static str,
        event: &'static str,
    },
    /// Kprobes (and kretprobes) on every candidate function present in this kernel.
    Kprobes {
        programs: &'static [KprobeProgram],
        /// The candidates present in /proc/kallsyms (empty when none is).
        functions: Vec<&'static str>,
        /// Every candidate across kernel versions.
        candidates: &'static [&'static str],
    },
    /// No program of its own: the drop program's free location (and reason) already names it.
    DropLocation { function: &'static str },
}

/// One program of a kprobe rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KprobeProgram {
    pub program: &'static str,
    /// A kretprobe (runs at the function's return).
    pub is_return: bool,
}

/// A rung in its ladder: usable, or ruled out (by the facts, or by a failed attach).
#[derive(Debug, Clone)]
pub struct Step {
    pub rung: Rung,
    pub state: Result<(), Unusable>,
}

/// The rungs that can provide one evidence source, best first.
#[derive(Debug, Clone)]
pub struct Ladder {
    /// What the evidence is (the capabilities line's first column).
    pub evidence: &'static str,
    /// Without it netlat cannot run: loading fails when no rung attaches.
    pub essential: bool,
    pub steps: Vec<Step>,
    /// Appended to the detail of whichever rung attaches.
    pub notes: String,
    /// What netlat falls back to when no rung attaches, appended to the missing line.
    pub fallback: Option<&'static str>,
}

/// Where a ladder lands: on a rung, or nowhere and why (the lowest rung's reason).
#[derive(Debug, Clone, Copy)]
pub enum Placement<'a> {
    On(&'a Rung),
    Missing(&'a Unusable),
}

/// Why a rung cannot be used. Each message is the text the capabilities line shows.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unusable {
    /// The tracepoint's format file cannot be read or parsed.
    #[error(transparent)]
    Format(Arc<TracefsError>),
    /// The format file lacks a field the program reads, or has it at another size.
    #[error(transparent)]
    Layout(FormatError),
    /// The tp_btf drop program takes the reason as an argument; before 5.17 there is none and
    /// the drop program filters by free location, which only the tracepoint program does.
    #[error("no drop reasons on this kernel")]
    NoDropReasons,
    #[error("{}=1", TRACEPOINTS_ONLY_VAR)]
    TracepointsOnly,
    #[error("no kernel BTF")]
    NoKernelBtf,
    /// The tp_btf programs read the socket's family and netns at BTF offsets.
    #[error("the socket's family or netns offsets are not in BTF")]
    NoSockOffsets,
    /// `struct sock` offsets for the tp_btf connect programs are not all in BTF.
    #[error(transparent)]
    SockLayout(Arc<BtfError>),
    /// aya relocates and attaches the tp_btf programs with its own parse of the kernel BTF.
    #[error("aya could not read /sys/kernel/btf/vmlinux")]
    AyaBtf,
    #[error("{} is not in /proc/kallsyms (module not loaded)", .functions.join("/"))]
    NotInKallsyms { functions: &'static [&'static str] },
    #[error(transparent)]
    IptSkb(IptSkbUnknown),
    /// The rung was usable on paper but loading or attaching its program failed. (Shared so
    /// that the reason, like every other, can be cloned into the essential error.)
    #[error(transparent)]
    Attach(Arc<AttachError>),
    /// A ladder without rungs (the plan never builds one).
    #[error("no hook can provide it")]
    NoRung,
}

static NO_RUNG: Unusable = Unusable::NoRung;

/// Why the `ipt_do_table` probe cannot know which argument is the skb.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IptSkbUnknown {
    #[error("ipt_do_table's skb is argument {index} in BTF, which this probe cannot read")]
    BeyondReach { index: u32 },
    /// A prototype without `skb` is a shape this probe does not know (e.g. the proposed
    /// one-argument `ipt_do_table(state)`): guessing by version would read the wrong value.
    #[error("ipt_do_table's BTF prototype has no `skb` parameter: unknown argument order")]
    NoSkbParam,
    /// Neither BTF nor the kernel version tells.
    #[error("cannot tell which argument of ipt_do_table is the skb: {no_btf}, and {version}")]
    NoBtfNoVersion {
        /// Why BTF has no prototype, in words.
        no_btf: String,
        version: KernelReleaseError,
    },
}

impl Rung {
    /// The capabilities line's hook column.
    pub fn hook(&self) -> String {
        match self {
            Rung::TpBtf { event, .. } => format!("tp_btf {event}"),
            Rung::Tracepoint {
                category, event, ..
            } => format!("tracepoint {category}:{event}"),
            Rung::Kprobes {
                functions,
                candidates,
                ..
            } => match functions.as_slice() {
                [] => format!(
                    "{} {}",
                    self.kind(),
                    candidates.first().copied().unwrap_or_default()
                ),
                present => format!("{} {}", self.kind(), present.join(", ")),
            },
            Rung::DropLocation { function } => {
                format!("tracepoint skb:kfree_skb (free location {function})")
            }
        }
    }

    /// The rung's kind, as a rung below it names it when saying why it was passed over.
    pub fn kind(&self) -> &'static str {
        match self {
            Rung::TpBtf { .. } => "tp_btf",
            Rung::Tracepoint { .. } => "tracepoint",
            Rung::Kprobes { programs, .. } if programs.iter().any(|p| p.is_return) => "kretprobe",
            Rung::Kprobes { .. } => "kprobe",
            Rung::DropLocation { .. } => "drop location",
        }
    }
}

impl Ladder {
    /// The first rung not ruled out, or why none is left.
    pub fn placement(&self) -> Placement<'_> {
        let mut why = None;
        for step in &self.steps {
            match &step.state {
                Ok(()) => return Placement::On(&step.rung),
                Err(e) => why = Some(e),
            }
        }
        Placement::Missing(why.unwrap_or(&NO_RUNG))
    }

    /// Try the usable rungs in order until one attaches; a failed attach rules its rung out
    /// with the error, so the capabilities line says why the next rung was used.
    pub fn climb(&mut self, mut attach: impl FnMut(&Rung) -> Result<(), AttachError>) {
        for step in &mut self.steps {
            if step.state.is_ok() {
                match attach(&step.rung) {
                    Ok(()) => return,
                    Err(e) => step.state = Err(Unusable::Attach(Arc::new(e))),
                }
            }
        }
    }

    /// The capabilities line: the rung it landed on, with why each rung above was passed over
    /// and the ladder's notes; or the lowest rung, missing, with its reason and the fallback.
    pub fn hook(&self) -> Hook {
        let mut passed_over = Vec::new();
        for step in &self.steps {
            match &step.state {
                Ok(()) => {
                    let detail = passed_over
                        .into_iter()
                        .chain([self.notes.clone()])
                        .filter(|s: &String| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Hook {
                        evidence: self.evidence.into(),
                        hook: step.rung.hook(),
                        active: true,
                        detail,
                    };
                }
                Err(why) => passed_over.push(format!("{} unavailable ({why})", step.rung.kind())),
            }
        }
        // Every rung ruled out: the line names the lowest one and its reason.
        let lowest = self.steps.last();
        let why = lowest
            .and_then(|s| s.state.as_ref().err())
            .unwrap_or(&NO_RUNG)
            .to_string();
        Hook {
            evidence: self.evidence.into(),
            hook: lowest.map(|s| s.rung.hook()).unwrap_or_default(),
            active: false,
            detail: match self.fallback {
                Some(fallback) => format!("{why}; {fallback}"),
                None => why,
            },
        }
    }
}

impl AttachPlan {
    /// The capabilities lines: as predicted before apply, as they came out after.
    pub fn hooks(&self) -> Vec<Hook> {
        self.ladders.iter().map(Ladder::hook).collect()
    }

    /// The ladder of one evidence source.
    pub fn ladder(&self, evidence: &str) -> Option<&Ladder> {
        self.ladders.iter().find(|l| l.evidence == evidence)
    }

    /// Climb every ladder in order. An essential ladder that ends missing stops here, with the
    /// reason of its lowest rung, and nothing after it is attached.
    pub fn climb(
        &mut self,
        mut attach: impl FnMut(&Rung) -> Result<(), AttachError>,
    ) -> Result<(), Unusable> {
        for ladder in &mut self.ladders {
            ladder.climb(&mut attach);
            if ladder.essential
                && let Placement::Missing(why) = ladder.placement()
            {
                return Err(why.clone());
            }
        }
        Ok(())
    }
}

/// One evidence source served by a tracepoint, with its tp_btf variant one rung up.
struct TracepointSource {
    evidence: &'static str,
    category: &'static str,
    event: &'static str,
    program: &'static str,
    btf_program: &'static str,
}

const CONNECT: TracepointSource = TracepointSource {
    evidence: "connect attempts",
    category: "sock",
    event: "inet_sock_set_state",
    program: "inet_sock_set_state",
    btf_program: "inet_sock_set_state_btf",
};

const RETRANSMIT: TracepointSource = TracepointSource {
    evidence: "SYN retransmits",
    category: "tcp",
    event: "tcp_retransmit_skb",
    program: "tcp_retransmit_skb",
    btf_program: "tcp_retransmit_skb_btf",
};

const DROP: TracepointSource = TracepointSource {
    evidence: "packet drops",
    category: "skb",
    event: "kfree_skb",
    program: "kfree_skb",
    btf_program: "kfree_skb_btf",
};

impl TracepointSource {
    fn ladder(
        &self,
        essential: bool,
        tp_btf: Result<(), Unusable>,
        tracepoint: Result<(), Unusable>,
        btf_notes: &str,
    ) -> Ladder {
        Ladder {
            evidence: self.evidence,
            essential,
            steps: vec![
                Step {
                    rung: Rung::TpBtf {
                        program: self.btf_program,
                        event: self.event,
                    },
                    state: tp_btf,
                },
                Step {
                    rung: Rung::Tracepoint {
                        program: self.program,
                        category: self.category,
                        event: self.event,
                    },
                    state: tracepoint,
                },
            ],
            notes: btf_notes.to_string(),
            fallback: None,
        }
    }
}

const NFT_EVIDENCE: &str = "nftables rule drops";
const IPT_EVIDENCE: &str = "iptables-legacy rule drops";

/// Evidence from kprobes on kernel functions: the rung above tracepoints. (fentry/fexit would
/// be cheaper, but aya 0.14 cannot attach them to module functions such as IPVS's.)
struct ProbeSource {
    evidence: &'static str,
    /// Candidate functions across kernel versions; every one present is probed.
    functions: &'static [&'static str],
    programs: &'static [KprobeProgram],
    /// What netlat falls back to without this evidence.
    fallback: &'static str,
}

const fn entry(program: &'static str) -> KprobeProgram {
    KprobeProgram {
        program,
        is_return: false,
    }
}

const fn exit(program: &'static str) -> KprobeProgram {
    KprobeProgram {
        program,
        is_return: true,
    }
}

const IPVS_DROPS: ProbeSource = ProbeSource {
    evidence: "IPVS drops",
    // ip_vs_in_hook since 5.16; the per-family request hooks before.
    functions: &[
        "ip_vs_in_hook",
        "ip_vs_remote_request4",
        "ip_vs_local_request4",
        "ip_vs_remote_request6",
        "ip_vs_local_request6",
    ],
    programs: &[entry("ipvs_hook_entry"), exit("ipvs_hook_exit")],
    fallback: "an IPVS drop looks like any netfilter drop, so issue A is never named",
};

const IPVS_EXPIRY: ProbeSource = ProbeSource {
    evidence: "IPVS connection expiry",
    functions: &["ip_vs_conn_expire_now"],
    programs: &[entry("ipvs_expire_now")],
    fallback: "weight-0 real servers cannot be told from port reuse",
};

const CONNTRACK_CONFIRM: ProbeSource = ProbeSource {
    evidence: "conntrack confirm drops",
    functions: &["__nf_conntrack_confirm"],
    programs: &[entry("ct_confirm_entry"), exit("ct_confirm_exit")],
    fallback: "SNAT clashes are inferred from the kfree_skb location, the skb's conntrack \
               entry and per-CPU insert_failed counters",
};

const NFT_RULES: ProbeSource = ProbeSource {
    evidence: NFT_EVIDENCE,
    functions: &["nft_do_chain"],
    programs: &[entry("nft_chain_entry"), exit("nft_chain_exit")],
    fallback: "a rule's drop is named from the kfree_skb location (nft_do_chain) where the \
               kernel has drop reasons (≥ 5.17); before that it looks like any netfilter \
               hook drop (netfilter-drop)",
};

const IPT_RULES: ProbeSource = ProbeSource {
    evidence: IPT_EVIDENCE,
    functions: &["ipt_do_table", "ip6t_do_table"],
    // For the skb as argument 0; IPT_SKB1_PROGRAMS where it is argument 1.
    programs: &[entry("ipt_table_entry_skb0"), exit("ipt_table_exit")],
    fallback: "an iptables-legacy rule's drop is freed in nf_hook_slow like any netfilter \
               hook drop, so it is named netfilter-drop, not the rule",
};

/// The iptables probe for kernels whose `ipt_do_table` takes the skb second: one entry program
/// per argument position (the 5.10 verifier refuses a runtime-chosen argument).
const IPT_SKB1_PROGRAMS: &[KprobeProgram] =
    &[entry("ipt_table_entry_skb1"), exit("ipt_table_exit")];

impl ProbeSource {
    fn ladder(
        &self,
        facts: &KernelFacts,
        programs: &'static [KprobeProgram],
        note: Result<String, Unusable>,
    ) -> Ladder {
        let functions: Vec<&'static str> = self
            .functions
            .iter()
            .copied()
            .filter(|f| facts.kallsyms.range(f).is_some())
            .collect();
        let (state, notes) = match note {
            // A function that is not there cannot be probed, whatever else is known.
            _ if functions.is_empty() => (
                Err(Unusable::NotInKallsyms {
                    functions: self.functions,
                }),
                String::new(),
            ),
            Ok(note) => (Ok(()), note),
            Err(why) => (Err(why), String::new()),
        };
        Ladder {
            evidence: self.evidence,
            essential: false,
            steps: vec![Step {
                rung: Rung::Kprobes {
                    programs,
                    functions,
                    candidates: self.functions,
                },
                state,
            }],
            notes,
            fallback: Some(self.fallback),
        }
    }
}

/// Decide everything from the facts. Fails only when the connect tracepoint's format cannot be
/// used, even where the tp_btf rung (which does not read it) could run: the loader has always
/// treated it as essential, so that the connect evidence can fall to the tracepoint.
pub fn plan(facts: &KernelFacts, options: &Options) -> Result<AttachPlan, Unusable> {
    let mut config = Config {
        tcp_syn_sent: 2,
        verbose: u32::from(options.verbose),
        connect_threshold_ns: options.connect_threshold_ns,
        ..Config::default()
    };
    let mut names = Names::default();

    config.sock_state = layout(&facts.formats.sock_state, tracefs::sock_state_layout)?;
    let retransmit_tracepoint = layout(&facts.formats.retransmit, tracefs::retransmit_layout)
        .map(|l| config.retransmit = l);
    let drop_tracepoint = layout(&facts.formats.kfree, tracefs::kfree_layout).map(|l| {
        config.kfree = l;
    });
    let has_reasons = drop_tracepoint.is_ok() && config.kfree.reason != ABSENT;
    if drop_tracepoint.is_ok()
        && let Ok(f) = &facts.formats.kfree
        && let Some(reasons) = f.symbols("reason")
    {
        names.reasons = reasons;
    }
    for r in IGNORED_REASONS {
        if let Some(n) = names.reason_number(r) {
            config.ignore_reason(n);
        }
    }
    if !has_reasons {
        // No drop reasons: ship only frees from the functions whose frees are drops.
        let ranges = LOCATION_REASONS
            .iter()
            .filter_map(|(func, _)| facts.kallsyms.range(func));
        for (slot, range) in config.locations.iter_mut().zip(ranges) {
            *slot = range;
        }
    }

    let btf = facts.btf.as_ref().ok();
    let (rules, rule_notes) = rule_layout(btf, &facts.release);
    config.rules = rules;
    let btf_notes = match &facts.btf {
        Ok(b) => {
            config.kernel = b.kernel_layout;
            names.ct_tuple = b.ct_tuple;
            if let Some(l) = b.ipvs {
                config.ipvs = l;
            }
            b.kernel_missing.join("; ")
        }
        Err(e) => format!("no kernel BTF ({e}): netns and packet headers of drops are unknown"),
    };
    // The tp_btf programs read struct sock at BTF offsets.
    let sock = match btf {
        None => Err(Unusable::NoKernelBtf),
        Some(_) if facts.env.tracepoints_only => Err(Unusable::TracepointsOnly),
        Some(_)
            if [
                config.kernel.sock_family,
                config.kernel.sock_net,
                config.kernel.net_inum,
            ]
            .contains(&ABSENT) =>
        {
            Err(Unusable::NoSockOffsets)
        }
        Some(b) => b.sock.clone().map_err(Unusable::SockLayout),
    };
    if let Ok(l) = &sock {
        config.sock = *l;
    }
    let tp_btf = || match (&sock, facts.aya_btf) {
        (Ok(_), true) => Ok(()),
        (Err(why), _) => Err(why.clone()),
        (Ok(_), false) => Err(Unusable::AyaBtf),
    };
    let drop_tp_btf = if has_reasons {
        tp_btf()
    } else {
        Err(Unusable::NoDropReasons)
    };

    let mut ladders = vec![
        CONNECT.ladder(true, tp_btf(), Ok(()), &btf_notes),
        RETRANSMIT.ladder(false, tp_btf(), retransmit_tracepoint, &btf_notes),
        DROP.ladder(false, drop_tp_btf, drop_tracepoint, &btf_notes),
        IPVS_DROPS.ladder(facts, IPVS_DROPS.programs, Ok(String::new())),
        IPVS_EXPIRY.ladder(facts, IPVS_EXPIRY.programs, Ok(String::new())),
        CONNTRACK_CONFIRM.ladder(facts, CONNTRACK_CONFIRM.programs, Ok(String::new())),
    ];
    ladders.push(if has_reasons {
        // With drop reasons an nft rule's drop is freed in nft_do_chain itself, which the
        // drop program already names; a kretprobe would run on every packet of every nft
        // chain for nothing.
        Ladder {
            evidence: NFT_EVIDENCE,
            essential: false,
            steps: vec![Step {
                rung: Rung::DropLocation {
                    function: "nft_do_chain",
                },
                state: Ok(()),
            }],
            notes: "drop reasons name the rule table; no kretprobe on nft_do_chain needed".into(),
            fallback: Some(NFT_RULES.fallback),
        }
    } else {
        NFT_RULES.ladder(facts, NFT_RULES.programs, Ok(rule_notes.nft))
    });
    let (ipt_programs, ipt_note) = match rule_notes.ipt {
        Ok(IptSkbArg { index: 1, note }) => (IPT_SKB1_PROGRAMS, Ok(note)),
        Ok(IptSkbArg { note, .. }) => (IPT_RULES.programs, Ok(note)),
        Err(why) => (IPT_RULES.programs, Err(Unusable::IptSkb(why))),
    };
    ladders.push(IPT_RULES.ladder(facts, ipt_programs, ipt_note));

    Ok(AttachPlan {
        config,
        // aya-log is quiet unless asked.
        log_level: if options.verbose { 0xff } else { 0 },
        ring_bytes: facts.env.ring_bytes,
        has_reasons,
        names,
        ladders,
    })
}

/// A tracepoint's layout from its format file, or why its program cannot use it.
fn layout<L>(
    format: &Result<tracefs::EventFormat, Arc<TracefsError>>,
    parse: impl Fn(&tracefs::EventFormat) -> Result<L, FormatError>,
) -> Result<L, Unusable> {
    match format {
        Ok(f) => parse(f).map_err(Unusable::Layout),
        Err(e) => Err(Unusable::Format(Arc::clone(e))),
    }
}

/// How the rule-table probes find their skb on this kernel: a note for the capabilities line,
/// or why the probe cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleNotes {
    /// Where `nft_do_chain`'s probe reads the skb from.
    pub nft: String,
    /// Which argument of `ipt_do_table` is the skb, or why that is unknown.
    pub ipt: Result<IptSkbArg, IptSkbUnknown>,
}

/// The argument of `ipt_do_table` that is the skb (0 or 1), and how that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptSkbArg {
    pub index: u32,
    pub note: String,
}

/// Kernel where ipt_do_table/ip6t_do_table became `(priv, skb, state)` (was `(skb, state,
/// table)`): "netfilter: iptables: allow use of ipt_do_table as hookfn", nf-next for 5.16.
const IPT_PRIV_FIRST: (u32, u32, u32) = (5, 16, 0);

/// Where the skb is for `nft_do_chain` and `ipt_do_table`: from BTF (the nf_tables and
/// ip_tables modules' split BTF when they are modules), else from what is known per version.
pub fn rule_layout(btf: Option<&BtfFacts>, release: &str) -> (RuleLayout, RuleNotes) {
    let mut layout = RuleLayout::default();
    let nft = match btf.map(|b| &b.nft_pktinfo_skb) {
        Some(Ok(off)) => {
            layout.nft_pktinfo_skb = *off;
            format!("skb at nft_pktinfo+{off} (BTF)")
        }
        Some(Err(e)) => format!(
            "skb at nft_pktinfo+{} (its first member on 5.10 … 6.12; no BTF for it: {})",
            layout.nft_pktinfo_skb,
            btf_why(e)
        ),
        None => format!(
            "skb at nft_pktinfo+{} (its first member on 5.10 … 6.12; no kernel BTF)",
            layout.nft_pktinfo_skb
        ),
    };
    let ipt = match btf.map(|b| &b.ipt_skb_param) {
        Some(&Ok(index)) if index <= 1 => Ok(IptSkbArg {
            index,
            note: format!("skb is argument {index} (BTF prototype of ipt_do_table)"),
        }),
        Some(&Ok(index)) => Err(IptSkbUnknown::BeyondReach { index }),
        Some(Err(BtfError::NoMember { .. })) => Err(IptSkbUnknown::NoSkbParam),
        other => {
            let no_btf = match other {
                Some(Err(e)) => format!("no BTF prototype ({})", btf_why(e)),
                _ => "no kernel BTF".to_string(),
            };
            match KernelVersion::parse(release) {
                Ok(v) => {
                    let (a, b, c) = IPT_PRIV_FIRST;
                    let (index, shape) = if v.at_least(a, b, c) {
                        (1, "(priv, skb, state) since 5.16")
                    } else {
                        (0, "(skb, state, table) before 5.16")
                    };
                    Ok(IptSkbArg {
                        index,
                        note: format!(
                            "skb is argument {index}: kernel {} has {shape}; {no_btf}",
                            v.release
                        ),
                    })
                }
                Err(version) => Err(IptSkbUnknown::NoBtfNoVersion { no_btf, version }),
            }
        }
    };
    (layout, RuleNotes { nft, ipt })
}

/// A BTF lookup failure in words; a missing file here is a module's split BTF (e.g. Debian
/// 5.10 ships none), not the kernel's.
fn btf_why(e: &BtfError) -> String {
    match e {
        BtfError::NoBtf { path } => format!("no module BTF at {}", path.display()),
        other => other.to_string(),
    }
}
