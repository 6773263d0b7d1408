//! Active opens: a TCP socket entering SYN_SENT and every transition out of it
//! (`sock:inet_sock_set_state`, as a tracepoint or tp_btf), shipped as [`SockStateEvent`]s.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    programs::{BtfTracePointContext, TracePointContext},
};
use netlat_common::{Addrs, SockStateEvent, kind};

use super::{
    btf_load, header,
    sock::{IPPROTO_TCP, btf_sock, read_addrs, sock_netns},
};
use crate::{
    config::conf,
    maps::{EVENTS, count_lost, submit_flags},
};

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
    emit_sock_state(skaddr, sock_netns(skaddr), oldstate, newstate, addrs);
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
    let (netns, addrs) = btf_sock(sk);
    emit_sock_state(sk as u64, netns, oldstate, newstate, addrs);
}

/// Ship one active-open state change.
#[inline(always)]
fn emit_sock_state(skaddr: u64, netns: u32, oldstate: u32, newstate: u32, addrs: Addrs) {
    let syn_sent = conf!(tcp_syn_sent);
    let Some(mut entry) = EVENTS.reserve::<SockStateEvent>(0) else {
        count_lost(kind::SOCK_STATE);
        return;
    };
    // The task is only meaningful when entering SYN_SENT (connect() runs in process context);
    // later transitions run in softirq, where "current" is whoever was interrupted.
    let (tgid, comm) = if newstate == syn_sent {
        (
            (bpf_get_current_pid_tgid() >> 32) as u32,
            bpf_get_current_comm().unwrap_or([0; 16]),
        )
    } else {
        (0, [0; 16])
    };
    entry.write(SockStateEvent {
        header: header(kind::SOCK_STATE),
        skaddr,
        netns,
        tgid,
        oldstate,
        newstate,
        addrs,
        comm,
    });
    entry.submit(submit_flags());
}
