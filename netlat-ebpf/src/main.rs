//! netlat's eBPF programs: tracepoints (classic or tp_btf) and kprobes that feed one ring buffer.
//!
//! Every kernel layout fact (tracepoint field offsets, struct member offsets, drop-reason
//! numbers) arrives in the `CONFIG` global ([`config`]), which user space fills from tracefs and
//! BTF before loading. Nothing here hard-codes a kernel version.
//!
//! This file holds the entry points only; each calls into [`probes`], one room per kind of
//! evidence, whose `try_*` functions return `Err` only for conditions worth a verbose log line.
//! The maps live in [`maps`].
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod config;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod probes;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        macros::{btf_tracepoint, kprobe, kretprobe, tracepoint},
        programs::{BtfTracePointContext, ProbeContext, RetProbeContext, TracePointContext},
    };
    use aya_log_ebpf::debug;
    use netlat_common::hook;

    use crate::{
        config::conf,
        probes::{
            connect, drop,
            hooks::{self, hook_entry, hook_exit},
            retransmit,
        },
    };

    #[tracepoint]
    pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
        if connect::try_sock_state(&ctx).is_err() && conf!(verbose) != 0 {
            debug!(&ctx, "inet_sock_set_state: field read failed");
        }
        0
    }

    #[btf_tracepoint(function = "inet_sock_set_state")]
    pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> u32 {
        connect::sock_state_btf(&ctx);
        0
    }

    #[tracepoint]
    pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
        if retransmit::try_retransmit(&ctx).is_err() && conf!(verbose) != 0 {
            debug!(&ctx, "tcp_retransmit_skb: field read failed");
        }
        0
    }

    #[btf_tracepoint(function = "tcp_retransmit_skb")]
    pub fn tcp_retransmit_skb_btf(ctx: BtfTracePointContext) -> u32 {
        retransmit::retransmit_btf(&ctx);
        0
    }

    #[tracepoint]
    pub fn kfree_skb(ctx: TracePointContext) -> u32 {
        if drop::try_kfree(&ctx).is_err() && conf!(verbose) != 0 {
            debug!(&ctx, "kfree_skb: field read failed");
        }
        0
    }

    /// Only where the kernel has drop reasons; user space keeps older kernels on the tracepoint.
    #[btf_tracepoint(function = "kfree_skb")]
    pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> u32 {
        drop::kfree_btf(&ctx);
        0
    }

    /// IPVS hook entry: `(priv, skb, state)` for ip_vs_in_hook and ip_vs_*_request4/6.
    #[kprobe]
    pub fn ipvs_hook_entry(ctx: ProbeContext) -> u32 {
        hook_entry(ctx.arg::<u64>(1), hook::IPVS);
        0
    }

    #[kretprobe]
    pub fn ipvs_hook_exit(ctx: RetProbeContext) -> u32 {
        hook_exit(ctx.ret::<u64>(), hook::IPVS);
        0
    }

    /// `__nf_conntrack_confirm(struct sk_buff *skb)`.
    #[kprobe]
    pub fn ct_confirm_entry(ctx: ProbeContext) -> u32 {
        hook_entry(ctx.arg::<u64>(0), hook::CONNTRACK_CONFIRM);
        0
    }

    #[kretprobe]
    pub fn ct_confirm_exit(ctx: RetProbeContext) -> u32 {
        hook_exit(ctx.ret::<u64>(), hook::CONNTRACK_CONFIRM);
        0
    }

    /// `nft_do_chain(struct nft_pktinfo *pkt, void *priv)`: the skb is a member of `pkt`.
    #[kprobe]
    pub fn nft_chain_entry(ctx: ProbeContext) -> u32 {
        hook_entry(hooks::nft_chain_skb(&ctx), hook::NFT_CHAIN);
        0
    }

    #[kretprobe]
    pub fn nft_chain_exit(ctx: RetProbeContext) -> u32 {
        hook_exit(ctx.ret::<u64>(), hook::NFT_CHAIN);
        0
    }

    /// `ipt_do_table`/`ip6t_do_table` before 5.16: `(skb, state, table)`. One program per
    /// argument position, picked by user space: a runtime-chosen argument compiles to a computed
    /// context offset, which the 5.10 verifier refuses ("dereference of modified ctx ptr").
    #[kprobe]
    pub fn ipt_table_entry_skb0(ctx: ProbeContext) -> u32 {
        hook_entry(ctx.arg::<u64>(0), hook::IPT_TABLE);
        0
    }

    /// `ipt_do_table`/`ip6t_do_table` since 5.16: `(priv, skb, state)`.
    #[kprobe]
    pub fn ipt_table_entry_skb1(ctx: ProbeContext) -> u32 {
        hook_entry(ctx.arg::<u64>(1), hook::IPT_TABLE);
        0
    }

    #[kretprobe]
    pub fn ipt_table_exit(ctx: RetProbeContext) -> u32 {
        hook_exit(ctx.ret::<u64>(), hook::IPT_TABLE);
        0
    }

    /// `ip_vs_conn_expire_now(struct ip_vs_conn *cp)`.
    #[kprobe]
    pub fn ipvs_expire_now(ctx: ProbeContext) -> u32 {
        hooks::ipvs_expire(&ctx);
        0
    }

    #[cfg(not(test))]
    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 4] = *b"GPL\0";
}

// On the host this binary is never built for real (it is not a default member); an empty main
// keeps `cargo check --workspace` working.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
