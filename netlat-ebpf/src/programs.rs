//! The programs. Entry points are thin; `try_*` functions do the work and return `Err` only for
//! conditions worth a verbose log line.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
    },
    macros::{btf_tracepoint, kprobe, kretprobe, map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext, RetProbeContext, TracePointContext},
};
use aya_log_ebpf::debug;
use netlat_ebpf::{
    ABSENT, Addrs, CT_TUPLE_CAPTURE, Config, DROP_CAPTURE, DropEvent, EventHeader, HookDropEvent,
    IpvsExpireEvent, RetransmitEvent, SockStateEvent, hook, kind,
};

/// Filled in by user space at load time (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    sock_state: netlat_ebpf::SockStateLayout {
        skaddr: 0,
        oldstate: 0,
        newstate: 0,
        sport: 0,
        dport: 0,
        family: 0,
        protocol: 0,
        saddr: 0,
        daddr: 0,
        saddr_v6: 0,
        daddr_v6: 0,
    },
    retransmit: netlat_ebpf::RetransmitLayout {
        skaddr: 0,
        state: 0,
        sport: 0,
        dport: 0,
        family: 0,
        saddr: 0,
        daddr: 0,
        saddr_v6: 0,
        daddr_v6: 0,
    },
    kfree: netlat_ebpf::KfreeLayout {
        skbaddr: 0,
        location: 0,
        protocol: 0,
        reason: ABSENT,
    },
    kernel: netlat_ebpf::KernelLayout {
        sock_net: ABSENT,
        net_inum: ABSENT,
        skb_dev: ABSENT,
        skb_sk: ABSENT,
        skb_head: ABSENT,
        skb_network_header: ABSENT,
        skb_len: ABSENT,
        dev_net: ABSENT,
        dev_ifindex: ABSENT,
        skb_nfct: ABSENT,
        ct_tuple_orig: ABSENT,
        ct_tuple_reply: ABSENT,
        ct_status: ABSENT,
        sock_family: ABSENT,
    },
    ipvs: netlat_ebpf::IpvsLayout {
        conn_dest: ABSENT,
        dest_weight: ABSENT,
        dest_flags: ABSENT,
        _pad: 0,
    },
    rules: netlat_ebpf::RuleLayout {
        nft_pktinfo_skb: 0,
        _pad: 0,
    },
    sock: netlat_ebpf::SockLayout::UNKNOWN,
    ignore_reasons: [0; netlat_ebpf::REASON_BITMAP_WORDS],
    locations: [[0; 2]; netlat_ebpf::MAX_LOCATIONS],
    tcp_syn_sent: 2,
    verbose: 0,
};

/// Read one `CONFIG` field through a volatile load so the compiler cannot fold the default in.
macro_rules! cfg {
    ($($f:ident).+) => {
        {
            #[allow(unused_unsafe)]
            let v = unsafe { core::ptr::read_volatile(&raw const CONFIG.$($f).+) };
            v
        }
    };
}

/// All events, in the order the kernel produced them (per reservation).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Events that could not be reserved, per CPU, indexed by event kind.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;

#[inline(always)]
fn count_lost(k: u32) {
    if let Some(p) = LOST.get_ptr_mut(k) {
        // Per-CPU slot: no other writer can race with this increment.
        unsafe { *p += 1 };
    }
}

/// Nonzero while user space reads the ring on a timer because events keep coming: the
/// programs then submit without waking it. Zero while it waits for a wakeup: the kernel's own
/// choice then wakes it only for the first record after it read everything (it is idle). So
/// an idle node costs no wakeups, and a busy one none per event (a wakeup is an irq_work, a
/// self-IPI of microseconds in a VM, paid inside the program that commits the record).
#[map]
static READER: Array<u32> = Array::with_max_entries(1, 0);

const BPF_RB_NO_WAKEUP: u64 = 1;

/// Submit flags for the reader's current mode (an array lookup is inlined by the verifier).
#[inline(always)]
fn submit_flags() -> u64 {
    match READER.get(0) {
        Some(&polling) if polling != 0 => BPF_RB_NO_WAKEUP,
        _ => 0,
    }
}

#[inline(always)]
fn header(k: u32) -> EventHeader {
    EventHeader {
        kind: k,
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns: unsafe { bpf_ktime_get_ns() },
    }
}

/// Read a kernel value at `base + off`; `None` when the offset is unknown or the read faults.
#[inline(always)]
fn kread<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == ABSENT {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Network namespace inode of `struct net *` stored at `holder + off` (a `possible_net_t`).
#[inline(always)]
fn netns_at(holder: u64, off: u32) -> u32 {
    let net: u64 = match kread(holder, off) {
        Some(n) => n,
        None => return 0,
    };
    kread::<u32>(net, cfg!(kernel.net_inum)).unwrap_or(0)
}

#[inline(always)]
fn sock_netns(sk: u64) -> u32 {
    netns_at(sk, cfg!(kernel.sock_net))
}

/// Read the socket addresses that `sock_state` and `retransmit` share, given their offsets.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn read_addrs(
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
        kread::<u16>(sk, cfg!(kernel.sock_family)).ok_or(-1)?
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

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    if try_sock_state(&ctx).is_err() && cfg!(verbose) != 0 {
        debug!(&ctx, "inet_sock_set_state: field read failed");
    }
    0
}

fn try_sock_state(ctx: &TracePointContext) -> Result<(), i32> {
    let protocol: u16 = unsafe { ctx.read_at(cfg!(sock_state.protocol) as usize)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let oldstate: u32 = unsafe { ctx.read_at(cfg!(sock_state.oldstate) as usize)? };
    let newstate: u32 = unsafe { ctx.read_at(cfg!(sock_state.newstate) as usize)? };
    let syn_sent = cfg!(tcp_syn_sent);
    // Only active opens matter: entering SYN_SENT, and every transition out of it.
    if oldstate != syn_sent && newstate != syn_sent {
        return Ok(());
    }
    let skaddr: u64 = unsafe { ctx.read_at(cfg!(sock_state.skaddr) as usize)? };
    let addrs = read_addrs(
        ctx,
        skaddr,
        cfg!(sock_state.family),
        cfg!(sock_state.sport),
        cfg!(sock_state.dport),
        cfg!(sock_state.saddr),
        cfg!(sock_state.daddr),
        cfg!(sock_state.saddr_v6),
        cfg!(sock_state.daddr_v6),
    )?;
    emit_sock_state(skaddr, sock_netns(skaddr), oldstate, newstate, addrs);
    Ok(())
}

/// Ship one active-open state change.
#[inline(always)]
fn emit_sock_state(skaddr: u64, netns: u32, oldstate: u32, newstate: u32, addrs: Addrs) {
    let syn_sent = cfg!(tcp_syn_sent);
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

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    if try_retransmit(&ctx).is_err() && cfg!(verbose) != 0 {
        debug!(&ctx, "tcp_retransmit_skb: field read failed");
    }
    0
}

fn try_retransmit(ctx: &TracePointContext) -> Result<(), i32> {
    let state: u32 = unsafe { ctx.read_at(cfg!(retransmit.state) as usize)? };
    // Retransmits of established flows are not connect latency; keep them in the kernel.
    if state != cfg!(tcp_syn_sent) {
        return Ok(());
    }
    let skaddr: u64 = unsafe { ctx.read_at(cfg!(retransmit.skaddr) as usize)? };
    let addrs = read_addrs(
        ctx,
        skaddr,
        cfg!(retransmit.family),
        cfg!(retransmit.sport),
        cfg!(retransmit.dport),
        cfg!(retransmit.saddr),
        cfg!(retransmit.daddr),
        cfg!(retransmit.saddr_v6),
        cfg!(retransmit.daddr_v6),
    )?;
    emit_retransmit(skaddr, sock_netns(skaddr), state, addrs);
    Ok(())
}

/// Ship one SYN retransmit.
#[inline(always)]
fn emit_retransmit(skaddr: u64, netns: u32, state: u32, addrs: Addrs) {
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
    });
    entry.submit(submit_flags());
}

// BTF-typed variants (tp_btf). The classic tracepoint programs pay a `bpf_probe_read_kernel`
// helper call per field (≈ 30 ns each here, three before the first filter); these get the
// states as plain arguments and read the socket with direct loads that the verifier checks
// against the kernel's BTF, at offsets user space resolved from that BTF.

/// Load a `T` at `base + off` from a BTF-typed kernel pointer (a fault reads as 0).
#[inline(always)]
fn btf_load<T: Copy>(base: *const u8, off: u32) -> T {
    // SAFETY: `base` is a PTR_TO_BTF_ID the verifier tracks; it checks every access against the
    // BTF type and turns a fault into a zero read.
    unsafe { core::ptr::read_volatile(base.add(off as usize) as *const T) }
}

/// Addresses and netns of a socket, read through BTF.
#[inline(always)]
fn btf_sock(sk: *const u8) -> (u32, Addrs) {
    let family: u16 = btf_load(sk, cfg!(kernel.sock_family));
    let mut a = Addrs {
        family,
        sport: btf_load(sk, cfg!(sock.num)),
        dport: u16::from_be(btf_load(sk, cfg!(sock.dport))),
        ..Addrs::default()
    };
    if family == AF_INET6 {
        let (s, d) = (cfg!(sock.v6_rcv_saddr), cfg!(sock.v6_daddr));
        for i in 0..4u32 {
            let at = (i * 4) as usize;
            a.saddr[at..at + 4].copy_from_slice(&btf_load::<u32>(sk, s + i * 4).to_ne_bytes());
            a.daddr[at..at + 4].copy_from_slice(&btf_load::<u32>(sk, d + i * 4).to_ne_bytes());
        }
    } else {
        a.saddr[..4].copy_from_slice(&btf_load::<u32>(sk, cfg!(sock.rcv_saddr)).to_ne_bytes());
        a.daddr[..4].copy_from_slice(&btf_load::<u32>(sk, cfg!(sock.daddr)).to_ne_bytes());
    }
    let net: *const u8 = btf_load(sk, cfg!(kernel.sock_net));
    let netns = if net.is_null() {
        0
    } else {
        btf_load(net, cfg!(kernel.net_inum))
    };
    (netns, a)
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> u32 {
    let oldstate = ctx.arg::<u64>(1) as u32;
    let newstate = ctx.arg::<u64>(2) as u32;
    let syn_sent = cfg!(tcp_syn_sent);
    // Only active opens matter: entering SYN_SENT, and every transition out of it.
    if oldstate != syn_sent && newstate != syn_sent {
        return 0;
    }
    let sk: *const u8 = ctx.arg(0);
    if sk.is_null() || btf_load::<u16>(sk, cfg!(sock.protocol)) != IPPROTO_TCP {
        return 0;
    }
    let (netns, addrs) = btf_sock(sk);
    emit_sock_state(sk as u64, netns, oldstate, newstate, addrs);
    0
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_btf(ctx: BtfTracePointContext) -> u32 {
    let sk: *const u8 = ctx.arg(0);
    if sk.is_null() {
        return 0;
    }
    let state = btf_load::<u8>(sk, cfg!(sock.state)) as u32;
    // Retransmits of established flows are not connect latency; keep them in the kernel.
    if state != cfg!(tcp_syn_sent) {
        return 0;
    }
    let (netns, addrs) = btf_sock(sk);
    emit_retransmit(sk as u64, netns, state, addrs);
    0
}

#[inline(always)]
fn location_listed(location: u64) -> bool {
    let mut i = 0;
    while i < netlat_ebpf::MAX_LOCATIONS {
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

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    if try_kfree(&ctx).is_err() && cfg!(verbose) != 0 {
        debug!(&ctx, "kfree_skb: field read failed");
    }
    0
}

fn try_kfree(ctx: &TracePointContext) -> Result<(), i32> {
    let reason_off = cfg!(kfree.reason);
    let reason: u32 = if reason_off == ABSENT {
        0
    } else {
        unsafe { ctx.read_at(reason_off as usize)? }
    };
    if reason_ignored(reason) {
        return Ok(());
    }
    // The tracepoint stores ntohs(skb->protocol): host order already.
    let protocol: u16 = unsafe { ctx.read_at(cfg!(kfree.protocol) as usize)? };
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return Ok(());
    }
    let skb: u64 = unsafe { ctx.read_at(cfg!(kfree.skbaddr) as usize)? };
    let location: u64 = unsafe { ctx.read_at(cfg!(kfree.location) as usize)? };
    // Without drop reasons every free looks alike: ship only frees from the functions user
    // space listed (resolved from /proc/kallsyms).
    if reason_off == ABSENT && !location_listed(location) {
        return Ok(());
    }
    emit_drop::<false>(skb, location, reason, protocol);
    Ok(())
}

/// Ordinary frees (NOT_SPECIFIED, and whatever else user space listed) never leave the kernel.
#[inline(always)]
fn reason_ignored(reason: u32) -> bool {
    let word = (reason / 64) as usize;
    if word < netlat_ebpf::REASON_BITMAP_WORDS {
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
    field::<u32, TYPED>(net, cfg!(kernel.net_inum)).unwrap_or(0)
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
        (*ev).len = field::<u32, TYPED>(skb, cfg!(kernel.skb_len)).unwrap_or(0);
        let dev: u64 = field::<u64, TYPED>(skb, cfg!(kernel.skb_dev)).unwrap_or(0);
        (*ev).ifindex = field::<u32, TYPED>(dev, cfg!(kernel.dev_ifindex)).unwrap_or(0);
        (*ev).netns = if dev != 0 {
            netns_field::<TYPED>(dev, cfg!(kernel.dev_net))
        } else {
            let sk: u64 = field::<u64, TYPED>(skb, cfg!(kernel.skb_sk)).unwrap_or(0);
            netns_field::<TYPED>(sk, cfg!(kernel.sock_net))
        };
        (*ev).cap_len = 0;
        (*ev).ct_flags = 0;
        (*ev).ct_status = 0;
        // The conntrack entry tells the pre-NAT tuple of a NATed packet and whether it was
        // confirmed: the evidence that separates an SNAT clash from a rule drop. `_nfct` is an
        // integer (pointer | ctinfo), so the entry itself is always read with helpers.
        let nfct: u64 = field::<u64, TYPED>(skb, cfg!(kernel.skb_nfct)).unwrap_or(0) & !7u64;
        let orig_off = cfg!(kernel.ct_tuple_orig);
        let reply_off = cfg!(kernel.ct_tuple_reply);
        let status_off = cfg!(kernel.ct_status);
        // tuplehash[ORIGINAL], tuplehash[REPLY] and status are adjacent in `struct nf_conn`
        // (104 bytes on 64-bit): one helper call reads all three into the packet area, which
        // the packet read below overwrites. A helper call costs ≈ 30 ns here.
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
                (*ev).ct_flags = netlat_ebpf::CT_PRESENT;
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
                (*ev).ct_flags = netlat_ebpf::CT_PRESENT;
                (*ev).ct_status = kread::<u64>(nfct, cfg!(kernel.ct_status)).unwrap_or(0) as u32;
            }
        }
        let head: u64 = field::<u64, TYPED>(skb, cfg!(kernel.skb_head)).unwrap_or(0);
        let nh: u16 = field::<u16, TYPED>(skb, cfg!(kernel.skb_network_header)).unwrap_or(0xffff);
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

/// The drop program as tp_btf: the reason is an argument, so an ordinary free costs no helper
/// call, and the skb's fields are direct loads. Only where the kernel has drop reasons (the
/// location-filtered path for older kernels stays on the tracepoint).
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> u32 {
    let reason = ctx.arg::<u64>(2) as u32;
    if reason_ignored(reason) {
        return 0;
    }
    let skb: *const u8 = ctx.arg(0);
    if skb.is_null() {
        return 0;
    }
    let protocol = u16::from_be(btf_load::<u16>(skb, cfg!(sock.skb_protocol)));
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return 0;
    }
    let location = ctx.arg::<u64>(1);
    emit_drop::<true>(skb as u64, location, reason, protocol);
    0
}

/// skb of a hook call in progress, per task, for its kretprobe (LRU: a missed return cannot
/// leak an entry forever).
#[map]
static HOOK_SKB: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

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

#[inline(always)]
fn hook_entry(skb: Option<u64>, hook_id: u32) {
    let Some(skb) = skb else { return };
    if skb == 0 {
        return;
    }
    let _ = HOOK_SKB.insert(&hook_key(hook_id), &skb, 0);
}

#[inline(always)]
fn hook_exit(ret: u64, hook_id: u32) {
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
    let skb = ctx
        .arg::<u64>(0)
        .and_then(|pkt| kread::<u64>(pkt, cfg!(rules.nft_pktinfo_skb)));
    hook_entry(skb, hook::NFT_CHAIN);
    0
}

#[kretprobe]
pub fn nft_chain_exit(ctx: RetProbeContext) -> u32 {
    hook_exit(ctx.ret::<u64>(), hook::NFT_CHAIN);
    0
}

/// `ipt_do_table`/`ip6t_do_table` before 5.16: `(skb, state, table)`. One program per argument
/// position, picked by user space: a runtime-chosen argument compiles to a computed context
/// offset, which the 5.10 verifier refuses ("dereference of modified ctx ptr").
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
    let Some(cp) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let dest: u64 = kread(cp, cfg!(ipvs.conn_dest)).unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<IpvsExpireEvent>(0) else {
        count_lost(kind::IPVS_EXPIRE);
        return 0;
    };
    entry.write(IpvsExpireEvent {
        header: header(kind::IPVS_EXPIRE),
        conn: cp,
        dest_weight: kread::<u32>(dest, cfg!(ipvs.dest_weight)).unwrap_or(u32::MAX),
        dest_flags: kread::<u32>(dest, cfg!(ipvs.dest_flags)).unwrap_or(u32::MAX),
    });
    entry.submit(submit_flags());
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
