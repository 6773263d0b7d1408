//! Active opens: a TCP socket entering SYN_SENT and every transition out of it
//! (`sock:inet_sock_set_state`, as a tracepoint or tp_btf).
//!
//! Attempts, not transitions, leave the kernel. CLOSE→SYN_SENT puts the attempt in the
//! `ATTEMPTS` table; its end removes it. An attempt that ends established below the threshold
//! with no SYN retransmit ships nothing (only the `FAST` count): the common fast connect costs a table
//! insert and a delete, no ring traffic. An attempt is shipped (its start from the table, then
//! its events) at its first SYN retransmit ([`attempt_for_retransmit`]) or at a slow end; user
//! space reads the table at stop for those still waiting. Drops ship as before: a drop that
//! matters makes the SYN retry or the attempt slow, and a drop of a fast attempt was never
//! reported (only slow attempts are). A fast failure ships (a refused connect is rare and may be
//! kube-proxy's REJECT of a Service without endpoints).
//!
//! Every shipped event carries the attempt's start from the table (`start_ns`), so user space
//! can tell an attempt's end from another attempt's on a reused socket.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
    },
    programs::{BtfTracePointContext, TracePointContext},
};
use netlat_common::{
    Addrs, EventHeader, PendingAttempt, SockStateEvent, attempt_flag, attempt_stat, kind,
};

use super::{
    btf_load, header,
    sock::{IPPROTO_TCP, btf_sock, read_addrs, sock_netns},
};
use crate::{
    config::conf,
    maps::{ATTEMPTS, EVENTS, count_lost, count_stat, submit_flags},
};

/// `TCP_CLOSE`: connect() moves a socket from it into SYN_SENT (include/net/tcp_states.h).
const TCP_CLOSE: u32 = 7;
const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

pub fn try_sock_state(ctx: &TracePointContext) -> Result<(), i32> {
    let protocol: u16 = unsafe { ctx.read_at(conf!(sock_state.protocol) as usize)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let oldstate: u32 = unsafe { ctx.read_at(conf!(sock_state.oldstate) as usize)? };
    let newstate: u32 = unsafe { ctx.read_at(conf!(sock_state.newstate) as usize)? };
    let syn_sent = conf!(tcp_syn_sent);
    // Only active opens matter: entering SYN_SENT, and every transition out of it.
    if oldstate != syn_sent && newstate != syn_sent {
        return Ok(());
    }
    let skaddr: u64 = unsafe { ctx.read_at(conf!(sock_state.skaddr) as usize)? };
    // A fast end is decided before any field of the record is read.
    let ending = if newstate == syn_sent {
        None
    } else {
        match end(skaddr, newstate) {
            Some(e) => Some(e),
            None => return Ok(()),
        }
    };
    let addrs = read_addrs(
        ctx,
        skaddr,
        conf!(sock_state.family),
        conf!(sock_state.sport),
        conf!(sock_state.dport),
        conf!(sock_state.saddr),
        conf!(sock_state.daddr),
        conf!(sock_state.saddr_v6),
        conf!(sock_state.daddr_v6),
    )?;
    match ending {
        None => start(skaddr, sock_netns(skaddr), &addrs),
        Some((start_ns, netns)) => {
            let netns = if start_ns == 0 {
                sock_netns(skaddr)
            } else {
                netns
            };
            ship_end(skaddr, netns, oldstate, newstate, &addrs, start_ns);
        }
    }
    Ok(())
}

/// The tp_btf program: the states are arguments, the socket is read with direct loads.
#[inline(always)]
pub fn sock_state_btf(ctx: &BtfTracePointContext) {
    let oldstate = ctx.arg::<u64>(1) as u32;
    let newstate = ctx.arg::<u64>(2) as u32;
    let syn_sent = conf!(tcp_syn_sent);
    // Only active opens matter: entering SYN_SENT, and every transition out of it.
    if oldstate != syn_sent && newstate != syn_sent {
        return;
    }
    let sk: *const u8 = ctx.arg(0);
    if sk.is_null() || btf_load::<u16>(sk, conf!(sock.protocol)) != IPPROTO_TCP {
        return;
    }
    if newstate == syn_sent {
        let (netns, addrs) = btf_sock(sk);
        start(sk as u64, netns, &addrs);
    } else if let Some((start_ns, _)) = end(sk as u64, newstate) {
        let (netns, addrs) = btf_sock(sk);
        ship_end(sk as u64, netns, oldstate, newstate, &addrs, start_ns);
    }
}

/// CLOSE→SYN_SENT: the attempt goes into the table. It ships at once only where the table is
/// full (counted) or every attempt is wanted (threshold 0).
#[inline(always)]
fn start(skaddr: u64, netns: u32, addrs: &Addrs) {
    let threshold = conf!(connect_threshold_ns);
    // connect() runs in process context: the task is the caller's.
    let mut slot = PendingAttempt {
        start_ns: unsafe { bpf_ktime_get_ns() },
        netns,
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        cpu: unsafe { bpf_get_smp_processor_id() },
        flags: if threshold == 0 {
            attempt_flag::SHIPPED
        } else {
            0
        },
        addrs: *addrs,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    match ATTEMPTS.insert(&skaddr, &slot, BPF_NOEXIST) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => {
            // The socket's previous attempt never ended where this program saw it: the new
            // start replaces it (its own start, flagged), it is never inherited.
            count_stat(attempt_stat::REPLACED);
            slot.flags |= attempt_flag::REPLACED;
            if ATTEMPTS.insert(&skaddr, &slot, BPF_ANY).is_err() {
                slot.flags |= attempt_flag::SHIPPED;
            }
        }
        Err(_) => {
            // Full: this attempt is followed the ABI 1 way, every event shipped.
            count_stat(attempt_stat::TABLE_FULL);
            slot.flags |= attempt_flag::SHIPPED;
            slot.start_ns = 0;
        }
    }
    if slot.flags & attempt_flag::SHIPPED != 0 {
        ship_start(skaddr, &raw const slot, 0);
    }
}

/// SYN_SENT→anything: remove the attempt from the table, shipping its start first when the
/// attempt is slow and unshipped. `None`: it ended fast and unshipped, so it stays in the kernel
/// (counted). Else the attempt's start and netns from the table (`(0, 0)`: not in it).
/// A fast *failure* (SYN_SENT→CLOSE: refused, reset or abandoned) still ships: user space
/// reports a fast refusal when kube-proxy's no-endpoint REJECT made it (`service-no-endpoints`).
#[inline(always)]
fn end(skaddr: u64, newstate: u32) -> Option<(u64, u32)> {
    let Some(p) = ATTEMPTS.get_ptr_mut(&skaddr) else {
        return Some((0, 0));
    };
    // SAFETY: a valid value pointer from the lookup; the entry is read before it is removed.
    let (start_ns, netns, flags) = unsafe { ((*p).start_ns, (*p).netns, (*p).flags) };
    if flags & attempt_flag::SHIPPED == 0 {
        let now = unsafe { bpf_ktime_get_ns() };
        if newstate != TCP_CLOSE && now.saturating_sub(start_ns) < conf!(connect_threshold_ns) {
            let _ = ATTEMPTS.remove(&skaddr);
            count_stat(attempt_stat::FAST);
            return None;
        }
        ship_start(skaddr, p, attempt_flag::DEFERRED);
    }
    let _ = ATTEMPTS.remove(&skaddr);
    Some((start_ns, netns))
}

/// A SYN retransmit of `skaddr`: ship its attempt's start if not shipped yet (and mark it),
/// and return the start for the retransmit event (0 when the socket is not in the table).
#[inline(always)]
pub fn attempt_for_retransmit(skaddr: u64) -> u64 {
    let Some(p) = ATTEMPTS.get_ptr_mut(&skaddr) else {
        return 0;
    };
    // SAFETY: a valid value pointer from the map lookup; the socket's events are serialised
    // by its lock, so no other program changes this entry meanwhile.
    unsafe {
        // A failed ship (ring full, counted) leaves the mark off, so a slow end ships it again.
        if (*p).flags & attempt_flag::SHIPPED == 0 && ship_start(skaddr, p, attempt_flag::DEFERRED)
        {
            (*p).flags |= attempt_flag::SHIPPED;
        }
        (*p).start_ns
    }
}

/// Ship an attempt's start from its table entry (or the entry that could not go into the
/// table); whether the ring took it. Written field by field into the ring: a whole event built
/// on the stack would not fit the 512-byte BPF stack beside the rest.
#[inline(always)]
fn ship_start(skaddr: u64, slot: *const PendingAttempt, extra: u32) -> bool {
    let Some(mut entry) = EVENTS.reserve::<SockStateEvent>(0) else {
        count_lost(kind::SOCK_STATE);
        return false;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is the reserved record, `slot` a valid map value or stack value.
    unsafe {
        let start_ns = (*slot).start_ns;
        (*ev).header = EventHeader {
            kind: kind::SOCK_STATE,
            cpu: (*slot).cpu,
            ts_ns: if start_ns == 0 {
                bpf_ktime_get_ns()
            } else {
                start_ns
            },
        };
        (*ev).skaddr = skaddr;
        (*ev).netns = (*slot).netns;
        (*ev).tgid = (*slot).tgid;
        (*ev).oldstate = TCP_CLOSE;
        (*ev).newstate = conf!(tcp_syn_sent);
        (*ev).addrs = (*slot).addrs;
        (*ev).comm = (*slot).comm;
        (*ev).start_ns = start_ns;
        (*ev).flags = ((*slot).flags & !attempt_flag::SHIPPED) | extra;
        (*ev)._pad = 0;
    }
    entry.submit(submit_flags());
    true
}

/// Ship an attempt's end (its start, when deferred, went just before).
#[inline(always)]
fn ship_end(skaddr: u64, netns: u32, oldstate: u32, newstate: u32, addrs: &Addrs, start_ns: u64) {
    let Some(mut entry) = EVENTS.reserve::<SockStateEvent>(0) else {
        count_lost(kind::SOCK_STATE);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is the reserved record. Ends run in softirq, where "current" is whoever
    // was interrupted: no task.
    unsafe {
        (*ev).header = header(kind::SOCK_STATE);
        (*ev).skaddr = skaddr;
        (*ev).netns = netns;
        (*ev).tgid = 0;
        (*ev).oldstate = oldstate;
        (*ev).newstate = newstate;
        (*ev).addrs = *addrs;
        (*ev).comm = [0; 16];
        (*ev).start_ns = start_ns;
        (*ev).flags = 0;
        (*ev)._pad = 0;
    }
    entry.submit(submit_flags());
}
