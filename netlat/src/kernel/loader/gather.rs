//! Gather: every kernel and environment fact the attach plan depends on, read once. This is the
//! only part of the loader's decision that touches the system; [`super::plan`] works on the
//! [`KernelFacts`] alone, so unit tests can hand it any kernel.

use std::{fs, sync::Arc};

use netlat_common::{IpvsLayout, KernelLayout, SockLayout};
use netlat_core::enrich::{CtTupleLayout, Kallsyms};

use super::{LoadError, TRACEPOINTS_ONLY_VAR};
use crate::{
    kernel::btf::{BtfError, KernelBtf},
    kernel::tracefs::{EventFormat, Tracefs, TracefsError},
};

/// What the running kernel offers netlat's programs, and how the environment tunes them.
#[derive(Debug)]
pub struct KernelFacts {
    /// `uname -r` (/proc/sys/kernel/osrelease); empty when unreadable.
    pub release: String,
    /// The tracefs format files the tracepoint programs need.
    pub formats: Formats,
    /// What netlat's BTF reader resolved from /sys/kernel/btf, or why there is no kernel BTF.
    pub btf: Result<BtfFacts, BtfError>,
    /// Whether aya could parse /sys/kernel/btf/vmlinux itself: it relocates the programs and
    /// attaches the tp_btf ones with its own parse.
    pub aya_btf: bool,
    /// Kernel text symbols: the kprobe rungs need their functions present (a module that is
    /// not loaded has none), and kernels without drop reasons ship frees by location.
    pub kallsyms: Kallsyms,
    /// Environment knobs.
    pub env: EnvKnobs,
}

/// The three tracepoint format files, each parsed or why not. The errors are shared (`Arc`)
/// because the plan carries them on as the reason a rung is missing.
#[derive(Debug)]
pub struct Formats {
    /// `sock:inet_sock_set_state` (connect attempts).
    pub sock_state: Result<EventFormat, Arc<TracefsError>>,
    /// `tcp:tcp_retransmit_skb` (SYN retransmits).
    pub retransmit: Result<EventFormat, Arc<TracefsError>>,
    /// `skb:kfree_skb` (packet drops); whether it has a `reason` field tells drop reasons.
    pub kfree: Result<EventFormat, Arc<TracefsError>>,
}

/// What the kernel's BTF (and its modules' split BTF) says about the structs and functions the
/// programs read.
#[derive(Debug)]
pub struct BtfFacts {
    /// Offsets of the kernel fields the programs read (unresolved ones stay `ABSENT`).
    pub kernel_layout: KernelLayout,
    /// One line per unresolved field: what is missing and what netlat loses without it.
    pub kernel_missing: Vec<String>,
    /// The layout of a conntrack tuple, when nf_conntrack's BTF has it.
    pub ct_tuple: Option<CtTupleLayout>,
    /// IPVS offsets, when the ip_vs module (or the kernel) has BTF for them.
    pub ipvs: Option<IpvsLayout>,
    /// `struct sock` offsets for the tp_btf connect programs (shared: it can become a reason).
    pub sock: Result<SockLayout, Arc<BtfError>>,
    /// `nft_pktinfo.skb`, from the kernel's or nf_tables' BTF.
    pub nft_pktinfo_skb: Result<u32, BtfError>,
    /// Index of `ipt_do_table`'s `skb` parameter, from the kernel's or ip_tables' BTF.
    pub ipt_skb_param: Result<u32, BtfError>,
}

/// Environment variables that change what is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvKnobs {
    /// `NETLAT_TRACEPOINTS_ONLY=1`: stay off the tp_btf rung.
    pub tracepoints_only: bool,
    /// `NETLAT_RING_BYTES`: the ring buffer's size, when set and valid.
    pub ring_bytes: Option<u32>,
}

/// Read the facts, plus aya's own parse of the kernel BTF for the apply step. Fails only when
/// tracefs can be neither found nor mounted; everything else becomes a fact.
pub fn gather() -> Result<(KernelFacts, Option<aya::Btf>), LoadError> {
    // NETLAT_TRACEFS points at a tracefs mounted elsewhere (e.g. a container's host mount).
    let tracefs = match std::env::var_os("NETLAT_TRACEFS") {
        Some(dir) => Tracefs::at(dir),
        None => Tracefs::locate_or_mount()?,
    };
    let format = |system, event| tracefs.read_format(system, event).map_err(Arc::new);
    let formats = Formats {
        sock_state: format("sock", "inet_sock_set_state"),
        retransmit: format("tcp", "tcp_retransmit_skb"),
        kfree: format("skb", "kfree_skb"),
    };
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let btf = KernelBtf::from_sys().map(|btf| {
        let (kernel_layout, kernel_missing) = btf.kernel_layout();
        BtfFacts {
            kernel_layout,
            kernel_missing,
            ct_tuple: btf.conntrack_layout().ok().map(|(_, t)| t),
            ipvs: btf.ipvs_layout().ok(),
            sock: btf.sock_layout().map_err(Arc::new),
            nft_pktinfo_skb: btf.nft_pktinfo_skb(),
            ipt_skb_param: btf.param_index("ip_tables", "ipt_do_table", "skb"),
        }
    });
    // Parsed once: the loader relocates with it and the tp_btf programs attach through it.
    let aya_btf = aya::Btf::from_sys_fs().ok();
    let facts = KernelFacts {
        release,
        formats,
        btf,
        aya_btf: aya_btf.is_some(),
        kallsyms: Kallsyms::parse(&fs::read_to_string("/proc/kallsyms").unwrap_or_default()),
        env: EnvKnobs {
            tracepoints_only: std::env::var_os(TRACEPOINTS_ONLY_VAR).is_some_and(|v| v == "1"),
            // Validated by `watch` before loading.
            ring_bytes: crate::limits::ring_bytes(),
        },
    };
    Ok((facts, aya_btf))
}
