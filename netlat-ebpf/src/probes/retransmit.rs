//! SYN retransmits: `tcp:tcp_retransmit_skb` (tracepoint or tp_btf) while the socket is in
//! SYN_SENT, shipped as [`RetransmitEvent`]s (with the attempt's start: see `connect`).
//! Retransmits of other states stay in the kernel.

use aya_ebpf::programs::{BtfTracePointContext, TracePointContext};
use netlat_common::{Addrs, RetransmitEvent, kind};

use super::{
    btf_load, header,
    sock::{btf_sock, read_addrs, sock_netns},
};
use crate::{
    config::conf,
    maps::{EVENTS, count_lost, submit_flags},
    probes::connect::attempt_for_retransmit,
};

pub fn try_retransmit(ctx: &TracePointContext) -> Result<(), i32> {
    let state: u32 = unsafe { ctx.read_at(conf!(retransmit.state) as usize)? };
    // Retransmits of established flows are not connect latency; keep them in the kernel.
    if state != conf!(tcp_syn_sent) {
        return Ok(());
    }
    let skaddr: u64 = unsafe { ctx.read_at(conf!(retransmit.skaddr) as usize)? };
    let addrs = read_addrs(
        ctx,
        skaddr,
        conf!(retransmit.family),
        conf!(retransmit.sport),
        conf!(retransmit.dport),
        conf!(retransmit.saddr),
        conf!(retransmit.daddr),
        conf!(retransmit.saddr_v6),
        conf!(retransmit.daddr_v6),
    )?;
    emit_retransmit(skaddr, sock_netns(skaddr), state, addrs);
    Ok(())
}

/// The tp_btf program: the socket is the first argument, read with direct loads.
#[inline(always)]
pub fn retransmit_btf(ctx: &BtfTracePointContext) {
    let sk: *const u8 = ctx.arg(0);
    if sk.is_null() {
        return;
    }
    let state = btf_load::<u8>(sk, conf!(sock.state)) as u32;
    // Retransmits of established flows are not connect latency; keep them in the kernel.
    if state != conf!(tcp_syn_sent) {
        return;
    }
    let (netns, addrs) = btf_sock(sk);
    emit_retransmit(sk as u64, netns, state, addrs);
}

/// Ship one SYN retransmit, after its attempt's start when that has not left the kernel yet
/// (the first retransmit makes an attempt worth shipping).
#[inline(always)]
fn emit_retransmit(skaddr: u64, netns: u32, state: u32, addrs: Addrs) {
    let start_ns = attempt_for_retransmit(skaddr);
    let Some(mut entry) = EVENTS.reserve::<RetransmitEvent>(0) else {
        count_lost(kind::RETRANSMIT);
        return;
    };
    entry.write(RetransmitEvent {
        header: header(kind::RETRANSMIT),
        skaddr,
        netns,
        state,
        addrs,
        start_ns,
    });
    entry.submit(submit_flags());
}
