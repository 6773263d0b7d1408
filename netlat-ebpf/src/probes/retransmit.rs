//! SYN retransmits: `tcp:tcp_retransmit_skb` (tracepoint or tp_btf) while the socket is in
//! SYN_SENT, shipped as [`RetransmitEvent`]s (with the attempt's start: see `connect`).
//! Retransmits of other states stay in the kernel.

use aya_ebpf::programs::{BtfTracePointContext, TracePointContext};
use netlat_common::{Addrs, RetransmitEvent, attempt_flag, kind};

use super::{
    btf_load, header,
    sock::{btf_sock, read_addrs, sock_netns},
};
use crate::{
    config::conf,
    maps::{EVENTS, count_lost, submit_flags},
    probes::connect::{attempt_entry, ship_start},
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
///
/// The record is reserved before the attempt table is read: when the ring is full (a SYN storm
/// whose drops fill it) the retransmit is counted lost at once, without a lookup in a table
/// that then holds up to 131 k attempts in cold memory (see BENCHMARKS.md). Its attempt stays
/// unshipped and ships at its next retransmit, its slow end, or at stop.
#[inline(always)]
fn emit_retransmit(skaddr: u64, netns: u32, state: u32, addrs: Addrs) {
    let Some(entry) = EVENTS.reserve::<RetransmitEvent>(0) else {
        count_lost(kind::RETRANSMIT);
        return;
    };
    let (entry, start_ns) = match attempt_entry(skaddr) {
        None => (entry, 0),
        // SAFETY: a valid value pointer from the map lookup; the socket's events are
        // serialised by its lock, so no other program changes this entry meanwhile.
        Some(p) => unsafe {
            if (*p).flags & attempt_flag::SHIPPED == 0 {
                // The start must come first in the ring: give the record back, ship the
                // start, reserve again. (A failed ship, counted, leaves the mark off, so a
                // later event ships it.) The discard wakes an idle reader as a submit would:
                // the kernel wakes it only for the record at its read position, which this
                // one is, so the records after it would not.
                entry.discard(submit_flags());
                if ship_start(skaddr, p, attempt_flag::DEFERRED) {
                    (*p).flags |= attempt_flag::SHIPPED;
                }
                let Some(again) = EVENTS.reserve::<RetransmitEvent>(0) else {
                    count_lost(kind::RETRANSMIT);
                    return;
                };
                (again, (*p).start_ns)
            } else {
                (entry, (*p).start_ns)
            }
        },
    };
    let mut entry = entry;
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
