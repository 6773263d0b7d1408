//! Reading a socket's addresses and network namespace, shared by the connect and retransmit
//! programs: from a tracepoint record (classic) or from `struct sock` itself (tp_btf).

use aya_ebpf::programs::TracePointContext;
use netlat_common::{ABSENT, Addrs};

use super::{btf_load, kread};
use crate::config::conf;

pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// Network namespace inode of `struct net *` stored at `holder + off` (a `possible_net_t`).
#[inline(always)]
fn netns_at(holder: u64, off: u32) -> u32 {
    let net: u64 = match kread(holder, off) {
        Some(n) => n,
        None => return 0,
    };
    kread::<u32>(net, conf!(kernel.net_inum)).unwrap_or(0)
}

#[inline(always)]
pub fn sock_netns(sk: u64) -> u32 {
    netns_at(sk, conf!(kernel.sock_net))
}

/// Read the socket addresses that `sock_state` and `retransmit` share, given their offsets.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "one offset per tracepoint field; a struct would be built only to be taken apart"
)]
pub fn read_addrs(
    ctx: &TracePointContext,
    sk: u64,
    family: u32,
    sport: u32,
    dport: u32,
    saddr: u32,
    daddr: u32,
    saddr_v6: u32,
    daddr_v6: u32,
) -> Result<Addrs, i32> {
    let family = if family == ABSENT {
        // Before 5.16 tcp_retransmit_skb has no family field: ask the socket.
        kread::<u16>(sk, conf!(kernel.sock_family)).ok_or(-1)?
    } else {
        unsafe { ctx.read_at::<u16>(family as usize)? }
    };
    let mut a = Addrs {
        family,
        sport: unsafe { ctx.read_at::<u16>(sport as usize)? },
        dport: unsafe { ctx.read_at::<u16>(dport as usize)? },
        ..Addrs::default()
    };
    if a.family == AF_INET6 {
        a.saddr = unsafe { ctx.read_at::<[u8; 16]>(saddr_v6 as usize)? };
        a.daddr = unsafe { ctx.read_at::<[u8; 16]>(daddr_v6 as usize)? };
    } else {
        let s = unsafe { ctx.read_at::<[u8; 4]>(saddr as usize)? };
        let d = unsafe { ctx.read_at::<[u8; 4]>(daddr as usize)? };
        a.saddr[..4].copy_from_slice(&s);
        a.daddr[..4].copy_from_slice(&d);
    }
    Ok(a)
}

// BTF-typed variants (tp_btf). The classic tracepoint programs pay a `bpf_probe_read_kernel`
// helper call per field (three before the first filter; a helper call's cost is in
// BENCHMARKS.md); these get the
// states as plain arguments and read the socket with direct loads that the verifier checks
// against the kernel's BTF, at offsets user space resolved from that BTF.

/// Addresses and netns of a socket, read through BTF.
#[inline(always)]
pub fn btf_sock(sk: *const u8) -> (u32, Addrs) {
    let family: u16 = btf_load(sk, conf!(kernel.sock_family));
    let mut a = Addrs {
        family,
        sport: btf_load(sk, conf!(sock.num)),
        dport: u16::from_be(btf_load(sk, conf!(sock.dport))),
        ..Addrs::default()
    };
    if family == AF_INET6 {
        let (s, d) = (conf!(sock.v6_rcv_saddr), conf!(sock.v6_daddr));
        for i in 0..4u32 {
            let at = (i * 4) as usize;
            a.saddr[at..at + 4].copy_from_slice(&btf_load::<u32>(sk, s + i * 4).to_ne_bytes());
            a.daddr[at..at + 4].copy_from_slice(&btf_load::<u32>(sk, d + i * 4).to_ne_bytes());
        }
    } else {
        a.saddr[..4].copy_from_slice(&btf_load::<u32>(sk, conf!(sock.rcv_saddr)).to_ne_bytes());
        a.daddr[..4].copy_from_slice(&btf_load::<u32>(sk, conf!(sock.daddr)).to_ne_bytes());
    }
    let net: *const u8 = btf_load(sk, conf!(kernel.sock_net));
    let netns = if net.is_null() {
        0
    } else {
        btf_load(net, conf!(kernel.net_inum))
    };
    (netns, a)
}
