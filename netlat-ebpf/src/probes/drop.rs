//! Packet drops: `skb:kfree_skb` (tracepoint, or tp_btf where the kernel has drop reasons),
//! filtered in the kernel by reason or free location, shipped as [`DropEvent`]s with the
//! device, netns, conntrack entry and the first bytes of the packet.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_buf,
    programs::{BtfTracePointContext, TracePointContext},
};
use netlat_common::{ABSENT, CT_TUPLE_CAPTURE, DROP_CAPTURE, DropEvent, kind};

use super::{btf_load, header, kread};
use crate::{
    config::{CONFIG, conf},
    maps::{EVENTS, count_lost, submit_flags},
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

#[inline(always)]
fn location_listed(location: u64) -> bool {
    let mut i = 0;
    while i < netlat_common::MAX_LOCATIONS {
        let r: [u64; 2] = unsafe {
            core::ptr::read_volatile((&raw const CONFIG.locations).cast::<[u64; 2]>().add(i))
        };
        if r[0] <= location && location < r[1] {
            return true;
        }
        i += 1;
    }
    false
}

pub fn try_kfree(ctx: &TracePointContext) -> Result<(), i32> {
    let reason_off = conf!(kfree.reason);
    let reason: u32 = if reason_off == ABSENT {
        0
    } else {
        unsafe { ctx.read_at(reason_off as usize)? }
    };
    if reason_ignored(reason) {
        return Ok(());
    }
    // The tracepoint stores ntohs(skb->protocol): host order already.
    let protocol: u16 = unsafe { ctx.read_at(conf!(kfree.protocol) as usize)? };
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return Ok(());
    }
    let skb: u64 = unsafe { ctx.read_at(conf!(kfree.skbaddr) as usize)? };
    let location: u64 = unsafe { ctx.read_at(conf!(kfree.location) as usize)? };
    // Without drop reasons every free looks alike: ship only frees from the functions user
    // space listed (resolved from /proc/kallsyms).
    if reason_off == ABSENT && !location_listed(location) {
        return Ok(());
    }
    emit_drop::<false>(skb, location, reason, protocol);
    Ok(())
}

/// The drop program as tp_btf: the reason is an argument, so an ordinary free costs no helper
/// call, and the skb's fields are direct loads. Only where the kernel has drop reasons (the
/// location-filtered path for older kernels stays on the tracepoint).
#[inline(always)]
pub fn kfree_btf(ctx: &BtfTracePointContext) {
    let reason = ctx.arg::<u64>(2) as u32;
    if reason_ignored(reason) {
        return;
    }
    let skb: *const u8 = ctx.arg(0);
    if skb.is_null() {
        return;
    }
    let protocol = u16::from_be(btf_load::<u16>(skb, conf!(sock.skb_protocol)));
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return;
    }
    let location = ctx.arg::<u64>(1);
    emit_drop::<true>(skb as u64, location, reason, protocol);
}

/// Ordinary frees (NOT_SPECIFIED, and whatever else user space listed) never leave the kernel.
#[inline(always)]
fn reason_ignored(reason: u32) -> bool {
    let word = (reason / 64) as usize;
    if word < netlat_common::REASON_BITMAP_WORDS {
        let bits: u64 = unsafe {
            core::ptr::read_volatile((&raw const CONFIG.ignore_reasons).cast::<u64>().add(word))
        };
        return bits & (1u64 << (reason % 64)) != 0;
    }
    false
}

/// Read a field of a kernel object: a direct load when `TYPED` (tp_btf: `base` is a pointer
/// the verifier knows the BTF type of), else `bpf_probe_read_kernel`.
#[inline(always)]
fn field<T: Copy, const TYPED: bool>(base: u64, off: u32) -> Option<T> {
    if TYPED {
        if base == 0 || off == ABSENT {
            return None;
        }
        Some(btf_load(base as *const u8, off))
    } else {
        kread(base, off)
    }
}

/// Netns inode of the `struct net *` in the `possible_net_t` at `holder + off`.
#[inline(always)]
fn netns_field<const TYPED: bool>(holder: u64, off: u32) -> u32 {
    let net: u64 = field::<u64, TYPED>(holder, off).unwrap_or(0);
    field::<u32, TYPED>(net, conf!(kernel.net_inum)).unwrap_or(0)
}

/// Ship one drop: where, why, the device and netns, the conntrack entry and the first bytes of
/// the packet from its network header.
#[inline(always)]
fn emit_drop<const TYPED: bool>(skb: u64, location: u64, reason: u32, protocol: u16) {
    let Some(mut entry) = EVENTS.reserve::<DropEvent>(0) else {
        count_lost(kind::DROP);
        return;
    };
    let ev = entry.as_mut_ptr();
    // Fill in place: a DropEvent does not fit the 512-byte eBPF stack comfortably.
    unsafe {
        (*ev).header = header(kind::DROP);
        (*ev).skbaddr = skb;
        (*ev).location = location;
        (*ev).reason = reason;
        (*ev).protocol = protocol;
        (*ev)._pad = 0;
        (*ev).len = field::<u32, TYPED>(skb, conf!(kernel.skb_len)).unwrap_or(0);
        let dev: u64 = field::<u64, TYPED>(skb, conf!(kernel.skb_dev)).unwrap_or(0);
        (*ev).ifindex = field::<u32, TYPED>(dev, conf!(kernel.dev_ifindex)).unwrap_or(0);
        (*ev).netns = if dev != 0 {
            netns_field::<TYPED>(dev, conf!(kernel.dev_net))
        } else {
            let sk: u64 = field::<u64, TYPED>(skb, conf!(kernel.skb_sk)).unwrap_or(0);
            netns_field::<TYPED>(sk, conf!(kernel.sock_net))
        };
        (*ev).cap_len = 0;
        (*ev).ct_flags = 0;
        (*ev).ct_status = 0;
        // The conntrack entry tells the pre-NAT tuple of a NATed packet and whether it was
        // confirmed: the evidence that separates an SNAT clash from a rule drop. `_nfct` is an
        // integer (pointer | ctinfo), so the entry itself is always read with helpers.
        let nfct: u64 = field::<u64, TYPED>(skb, conf!(kernel.skb_nfct)).unwrap_or(0) & !7u64;
        let orig_off = conf!(kernel.ct_tuple_orig);
        let reply_off = conf!(kernel.ct_tuple_reply);
        let status_off = conf!(kernel.ct_status);
        // tuplehash[ORIGINAL], tuplehash[REPLY] and status are adjacent in `struct nf_conn`
        // (104 bytes on 64-bit): one helper call reads all three into the packet area, which
        // the packet read below overwrites (one helper call instead of three).
        let span = status_off.wrapping_add(8).wrapping_sub(orig_off);
        let reply_at = reply_off.wrapping_sub(orig_off) as usize;
        let status_at = status_off.wrapping_sub(orig_off) as usize;
        let one_read = orig_off != ABSENT
            && reply_off != ABSENT
            && status_off != ABSENT
            && orig_off < reply_off
            && reply_off < status_off
            && span as usize <= DROP_CAPTURE
            // Each bound on its own: the verifier tracks ranges per register, not relations.
            && reply_at <= DROP_CAPTURE - CT_TUPLE_CAPTURE
            && status_at <= DROP_CAPTURE - 8
            && reply_at + CT_TUPLE_CAPTURE <= status_at;
        if nfct != 0 && one_read {
            let buf = &mut (*ev).data;
            let src = (nfct + orig_off as u64) as *const u8;
            if bpf_probe_read_kernel_buf(src, &mut buf[..span as usize]).is_ok() {
                let data = buf.as_ptr();
                core::ptr::copy_nonoverlapping(data, (*ev).ct_orig.as_mut_ptr(), CT_TUPLE_CAPTURE);
                core::ptr::copy_nonoverlapping(
                    data.add(reply_at),
                    (*ev).ct_reply.as_mut_ptr(),
                    CT_TUPLE_CAPTURE,
                );
                let status = core::ptr::read_unaligned(data.add(status_at) as *const u64);
                (*ev).ct_flags = netlat_common::CT_PRESENT;
                (*ev).ct_status = status as u32;
            }
        } else if nfct != 0 && orig_off != ABSENT && reply_off != ABSENT {
            let ok_orig = bpf_probe_read_kernel_buf(
                (nfct + orig_off as u64) as *const u8,
                &mut (*ev).ct_orig,
            )
            .is_ok();
            let ok_reply = bpf_probe_read_kernel_buf(
                (nfct + reply_off as u64) as *const u8,
                &mut (*ev).ct_reply,
            )
            .is_ok();
            if ok_orig && ok_reply {
                (*ev).ct_flags = netlat_common::CT_PRESENT;
                (*ev).ct_status = kread::<u64>(nfct, conf!(kernel.ct_status)).unwrap_or(0) as u32;
            }
        }
        let head: u64 = field::<u64, TYPED>(skb, conf!(kernel.skb_head)).unwrap_or(0);
        let nh: u16 = field::<u16, TYPED>(skb, conf!(kernel.skb_network_header)).unwrap_or(0xffff);
        if head != 0 && nh != 0xffff {
            let src = (head + nh as u64) as *const u8;
            let data = &mut (*ev).data;
            // A full read can fault near the end of a small linear area; fall back to less.
            if bpf_probe_read_kernel_buf(src, &mut data[..]).is_ok() {
                (*ev).cap_len = DROP_CAPTURE as u16;
            } else if bpf_probe_read_kernel_buf(src, &mut data[..64]).is_ok() {
                (*ev).cap_len = 64;
            }
        }
    }
    entry.submit(submit_flags());
}
