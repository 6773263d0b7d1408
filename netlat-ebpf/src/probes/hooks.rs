//! Hook verdicts and IPVS state (kprobe/kretprobe evidence): which netfilter hook (IPVS,
//! conntrack confirm, an nftables chain, an iptables-legacy table) returned NF_DROP for which
//! skb, shipped as [`HookDropEvent`]s, and IPVS expiring a connection ([`IpvsExpireEvent`]).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    programs::ProbeContext,
};
use netlat_common::{HookDropEvent, IpvsExpireEvent, kind};

use super::{header, kread};
use crate::{
    config::conf,
    maps::{EVENTS, HOOK_SKB, count_lost, submit_flags},
};

const NF_DROP: u64 = 0;
/// `NF_VERDICT_MASK`: the verdict proper; the bits above carry NF_DROP_ERR's errno.
const NF_VERDICT_MASK: u64 = 0xff;

/// Key of the hook call in progress on this task. One task runs one hook at a time; the hook
/// id keeps the hooks apart. Softirqs on idle CPUs all run as pid 0, so there the CPU is the key.
#[inline(always)]
fn hook_key(hook_id: u32) -> u64 {
    let mut task = bpf_get_current_pid_tgid();
    if task == 0 {
        task = (1u64 << 56) | unsafe { bpf_get_smp_processor_id() } as u64;
    }
    task ^ ((hook_id as u64) << 60)
}

/// A hook was entered with `skb`: remember it for the hook's return.
#[inline(always)]
pub fn hook_entry(skb: Option<u64>, hook_id: u32) {
    let Some(skb) = skb else { return };
    if skb == 0 {
        return;
    }
    let _ = HOOK_SKB.insert(&hook_key(hook_id), &skb, 0);
}

/// A hook returned `ret`: ship the skb it was entered with if the verdict is NF_DROP.
#[inline(always)]
pub fn hook_exit(ret: u64, hook_id: u32) {
    let key = hook_key(hook_id);
    let skb = match unsafe { HOOK_SKB.get(&key) } {
        Some(s) => *s,
        None => return,
    };
    let _ = HOOK_SKB.remove(&key);
    if ret & NF_VERDICT_MASK != NF_DROP {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<HookDropEvent>(0) else {
        count_lost(kind::HOOK_DROP);
        return;
    };
    entry.write(HookDropEvent {
        header: header(kind::HOOK_DROP),
        skbaddr: skb,
        hook: hook_id,
        ret: ret as u32,
    });
    entry.submit(submit_flags());
}

/// The skb of `nft_do_chain(struct nft_pktinfo *pkt, void *priv)`: a member of `pkt`.
#[inline(always)]
pub fn nft_chain_skb(ctx: &ProbeContext) -> Option<u64> {
    ctx.arg::<u64>(0)
        .and_then(|pkt| kread::<u64>(pkt, conf!(rules.nft_pktinfo_skb)))
}

/// `ip_vs_conn_expire_now(struct ip_vs_conn *cp)`: ship the connection and its real server's
/// weight and flags.
#[inline(always)]
pub fn ipvs_expire(ctx: &ProbeContext) {
    let Some(cp) = ctx.arg::<u64>(0) else {
        return;
    };
    let dest: u64 = kread(cp, conf!(ipvs.conn_dest)).unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<IpvsExpireEvent>(0) else {
        count_lost(kind::IPVS_EXPIRE);
        return;
    };
    entry.write(IpvsExpireEvent {
        header: header(kind::IPVS_EXPIRE),
        conn: cp,
        dest_weight: kread::<u32>(dest, conf!(ipvs.dest_weight)).unwrap_or(u32::MAX),
        dest_flags: kread::<u32>(dest, conf!(ipvs.dest_flags)).unwrap_or(u32::MAX),
    });
    entry.submit(submit_flags());
}
