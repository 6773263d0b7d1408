//! The one definition of every value that crosses the kernel/user boundary: the events the eBPF
//! programs write into the ring buffer and the configuration user space hands them as a global.
//!
//! Every type is `#[repr(C)]` with explicit padding fields, so its layout is the same on both
//! sides; sizes are asserted at compile time. User space decodes these from raw ring-buffer bytes
//! (it never trusts the length of an item to match without checking).
#![no_std]
// The explicit `_pad` fields are public so both sides can build the structs with literals.
#![expect(
    clippy::pub_underscore_fields,
    reason = "explicit padding fields, public so both sides can write struct literals"
)]

/// Version of the wire format: the layout of every struct that crosses the kernel/user boundary
/// and the numbers in [`kind`] and [`hook`]. Bumped whenever a wire struct's layout or a kind
/// number changes. Recordings carry it in their header, so a recording is never decoded with
/// another version's layouts.
pub const ABI_VERSION: u32 = 2;

/// The oldest wire format user space still decodes (recordings of [`v1`] layouts replay).
pub const OLDEST_ABI_VERSION: u32 = 1;

/// Ring-buffer event kinds (`EventHeader::kind`).
pub mod kind {
    /// `sock:inet_sock_set_state` for a TCP socket.
    pub const SOCK_STATE: u32 = 1;
    /// `tcp:tcp_retransmit_skb` while the socket is in SYN_SENT.
    pub const RETRANSMIT: u32 = 2;
    /// `skb:kfree_skb` with a reason that was not filtered in the kernel.
    pub const DROP: u32 = 3;
    /// A netfilter hook function returned NF_DROP for an skb (kretprobe/fexit evidence).
    pub const HOOK_DROP: u32 = 4;
    /// `ip_vs_conn_expire_now`: IPVS expired a connection (and its destination's state).
    pub const IPVS_EXPIRE: u32 = 5;
    /// Number of kinds + 1; sizes the per-CPU loss counter array.
    pub const COUNT: u32 = 6;
}

/// `SockStateEvent::flags`.
pub mod attempt_flag {
    /// The attempt's start is shipped later than it happened, from the kernel's attempt table,
    /// because the attempt became worth reporting (a SYN retransmit, a slow end).
    pub const DEFERRED: u32 = 1;
    /// Read from the attempt table by user space at stop: the attempt was still in SYN_SENT.
    pub const AT_STOP: u32 = 2;
    /// This connect started on a socket whose previous attempt the kernel never saw end (the
    /// old entry was replaced, and counted): the start is this attempt's own.
    pub const REPLACED: u32 = 4;
    /// In the attempt table only (`PendingAttempt::flags`), never shipped: the start has been
    /// shipped, so every later event of the attempt ships too.
    pub const SHIPPED: u32 = 1 << 31;
}

/// Indexes of the per-CPU `ATTEMPT_STATS` counters.
pub mod attempt_stat {
    /// Attempts that ended below the threshold with no SYN retransmit: never shipped.
    pub const FAST: u32 = 0;
    /// Attempts whose start was shipped at once because the attempt table was full.
    pub const TABLE_FULL: u32 = 1;
    /// Table entries replaced by a new connect on the same socket (the old end was not seen).
    pub const REPLACED: u32 = 2;
    /// Number of counters.
    pub const COUNT: u32 = 3;
}

/// Entries of the kernel's table of attempts in SYN_SENT. Past it, starts are shipped at once
/// (as every start was in ABI 1) and counted in [`attempt_stat::TABLE_FULL`]: nothing is lost.
pub const MAX_PENDING_ATTEMPTS: u32 = 1 << 17;

/// Which hook a [`HookDropEvent`] comes from.
pub mod hook {
    /// IPVS's netfilter hook (`ip_vs_in_hook` ≥ 5.16, `ip_vs_remote_request4/6` and
    /// `ip_vs_local_request4/6` before).
    pub const IPVS: u32 = 1;
    /// `__nf_conntrack_confirm` (an insertion clash).
    pub const CONNTRACK_CONFIRM: u32 = 2;
    /// `nft_do_chain`: an nftables rule's verdict (also iptables-nft's rules).
    pub const NFT_CHAIN: u32 = 3;
    /// `ipt_do_table` / `ip6t_do_table`: an iptables-legacy rule's verdict.
    pub const IPT_TABLE: u32 = 4;
}

/// Offset value meaning "this field is absent on the running kernel".
pub const ABSENT: u32 = u32::MAX;

/// Bytes of packet captured from the network header of a dropped skb. Enough for an outer IPv6
/// header, UDP, VXLAN, inner Ethernet, inner IPv6 and a TCP header (40+8+8+14+40+20 = 130).
pub const DROP_CAPTURE: usize = 160;

/// Bytes captured of each conntrack tuple (`struct nf_conntrack_tuple`, 40 bytes since 2.6).
pub const CT_TUPLE_CAPTURE: usize = 40;

/// `DropEvent::ct_flags`: the skb had a conntrack entry and its tuples were read.
pub const CT_PRESENT: u32 = 1;

/// Number of drop reasons the in-kernel filter bitmap covers; reasons above ship unfiltered.
pub const REASON_BITMAP_WORDS: usize = 4;

/// Kernel functions whose frees are shipped when the kernel has no drop reasons (< 5.17).
pub const MAX_LOCATIONS: usize = 8;

/// Common prefix of every ring-buffer event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// CPU the program ran on (conntrack counters are per CPU).
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
}

/// Addresses of a socket or packet. IPv4 addresses use the first 4 bytes of each array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addrs {
    /// Source address, network byte order.
    pub saddr: [u8; 16],
    /// Destination address, network byte order.
    pub daddr: [u8; 16],
    /// Source port, host byte order.
    pub sport: u16,
    /// Destination port, host byte order.
    pub dport: u16,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// Explicit padding; always 0.
    pub _pad: u16,
}

/// A TCP socket changed state (`sock:inet_sock_set_state`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockStateEvent {
    /// Common header, `kind == SOCK_STATE`.
    pub header: EventHeader,
    /// Kernel address of the socket: with `netns` it keys a connection attempt.
    pub skaddr: u64,
    /// Network namespace inode of the socket (0 when the kernel layout is unknown).
    pub netns: u32,
    /// Thread-group id of the current task (meaningful for CLOSE→SYN_SENT, which runs in connect()).
    pub tgid: u32,
    /// Previous TCP state (`TCP_*` numbering of include/net/tcp_states.h).
    pub oldstate: u32,
    /// New TCP state.
    pub newstate: u32,
    /// Socket addresses.
    pub addrs: Addrs,
    /// `comm` of the current task.
    pub comm: [u8; 16],
    /// Start (`bpf_ktime_get_ns`) of the attempt this event belongs to, as the kernel's
    /// attempt table holds it: equal to `header.ts_ns` for a start shipped at once, earlier for
    /// a deferred one, and on an end the start of the attempt it ends. 0: not in the table
    /// (it started before netlat, or the table was full).
    pub start_ns: u64,
    /// [`attempt_flag`] bits.
    pub flags: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
}

/// A pending connection attempt, the value of the kernel's `ATTEMPTS` table (keyed by the
/// socket's kernel address) from CLOSE→SYN_SENT until it ends. User space reads the table at
/// stop for the attempts still waiting.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingAttempt {
    /// CLOSE→SYN_SENT time (`bpf_ktime_get_ns`).
    pub start_ns: u64,
    /// Network namespace inode of the socket.
    pub netns: u32,
    /// Thread-group id of the task that called connect().
    pub tgid: u32,
    /// CPU that entered SYN_SENT.
    pub cpu: u32,
    /// [`attempt_flag`] bits: those the start event will carry, and [`attempt_flag::SHIPPED`].
    pub flags: u32,
    /// Socket addresses at the start (the source port is not chosen yet).
    pub addrs: Addrs,
    /// `comm` of the task that called connect().
    pub comm: [u8; 16],
}

/// A segment was retransmitted while the socket was in SYN_SENT (`tcp:tcp_retransmit_skb`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransmitEvent {
    /// Common header, `kind == RETRANSMIT`.
    pub header: EventHeader,
    /// Kernel address of the socket.
    pub skaddr: u64,
    /// Network namespace inode of the socket.
    pub netns: u32,
    /// TCP state at the retransmit.
    pub state: u32,
    /// Socket addresses.
    pub addrs: Addrs,
    /// Start of the attempt it belongs to, from the kernel's attempt table (0: not in it).
    pub start_ns: u64,
}

/// The ABI 1 layouts of the events that grew in ABI 2, for replaying old recordings.
pub mod v1 {
    use super::{Addrs, EventHeader};

    /// ABI 1 `SockStateEvent`: no attempt start, no flags.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SockStateEvent {
        /// Common header, `kind == SOCK_STATE`.
        pub header: EventHeader,
        /// Kernel address of the socket.
        pub skaddr: u64,
        /// Network namespace inode of the socket.
        pub netns: u32,
        /// Thread-group id of the current task.
        pub tgid: u32,
        /// Previous TCP state.
        pub oldstate: u32,
        /// New TCP state.
        pub newstate: u32,
        /// Socket addresses.
        pub addrs: Addrs,
        /// `comm` of the current task.
        pub comm: [u8; 16],
    }

    /// ABI 1 `RetransmitEvent`: no attempt start.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct RetransmitEvent {
        /// Common header, `kind == RETRANSMIT`.
        pub header: EventHeader,
        /// Kernel address of the socket.
        pub skaddr: u64,
        /// Network namespace inode of the socket.
        pub netns: u32,
        /// TCP state at the retransmit.
        pub state: u32,
        /// Socket addresses.
        pub addrs: Addrs,
    }

    const _: () = assert!(core::mem::size_of::<SockStateEvent>() == 96);
    const _: () = assert!(core::mem::size_of::<RetransmitEvent>() == 72);
}

/// A packet was freed with a drop reason that was not filtered in the kernel (`skb:kfree_skb`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    /// Common header, `kind == DROP`.
    pub header: EventHeader,
    /// Kernel address of the skb.
    pub skbaddr: u64,
    /// Kernel text address of the caller that freed it (resolve with /proc/kallsyms).
    pub location: u64,
    /// Network namespace inode of the skb's device (or socket).
    pub netns: u32,
    /// Interface index of `skb->dev` (0 when none).
    pub ifindex: u32,
    /// Raw drop reason (kernel-specific numbering; names come from the tracefs format file).
    pub reason: u32,
    /// `skb->len`.
    pub len: u32,
    /// `skb->protocol` in host byte order (0x0800 IPv4, 0x86dd IPv6).
    pub protocol: u16,
    /// Valid bytes in `data`.
    pub cap_len: u16,
    /// [`CT_PRESENT`] when the conntrack fields below are valid.
    pub ct_flags: u32,
    /// `nf_conn.status` (IPS_* bits: SRC_NAT 0x10, CONFIRMED 0x8, …), low 32 bits.
    pub ct_status: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
    /// The conntrack entry's ORIGINAL-direction tuple (pre-NAT addresses), raw.
    pub ct_orig: [u8; CT_TUPLE_CAPTURE],
    /// The REPLY-direction tuple (its destination is the NAT source), raw.
    pub ct_reply: [u8; CT_TUPLE_CAPTURE],
    /// Bytes from the network header on.
    pub data: [u8; DROP_CAPTURE],
}

impl Default for DropEvent {
    fn default() -> Self {
        Self {
            header: EventHeader::default(),
            skbaddr: 0,
            location: 0,
            netns: 0,
            ifindex: 0,
            reason: 0,
            len: 0,
            protocol: 0,
            cap_len: 0,
            ct_flags: 0,
            ct_status: 0,
            _pad: 0,
            ct_orig: [0; CT_TUPLE_CAPTURE],
            ct_reply: [0; CT_TUPLE_CAPTURE],
            data: [0; DROP_CAPTURE],
        }
    }
}

/// A hook function returned NF_DROP for `skbaddr`; the matching `kfree_skb` follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookDropEvent {
    /// Common header, `kind == HOOK_DROP`.
    pub header: EventHeader,
    /// The skb the hook dropped.
    pub skbaddr: u64,
    /// One of [`hook`].
    pub hook: u32,
    /// The hook's return value (NF_DROP = 0).
    pub ret: u32,
}

/// IPVS expired a connection now (`ip_vs_conn_expire_now`); the SYN that triggered it is
/// dropped next on the same CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpvsExpireEvent {
    /// Common header, `kind == IPVS_EXPIRE`.
    pub header: EventHeader,
    /// Kernel address of the `ip_vs_conn`.
    pub conn: u64,
    /// `ip_vs_dest.weight` of the connection's real server (`u32::MAX` when unknown).
    pub dest_weight: u32,
    /// `ip_vs_dest.flags` (IP_VS_DEST_F_AVAILABLE = 1; `u32::MAX` when unknown).
    pub dest_flags: u32,
}

/// Byte offsets inside IPVS structs (module BTF), [`ABSENT`] when unknown.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpvsLayout {
    /// `ip_vs_conn.dest`.
    pub conn_dest: u32,
    /// `ip_vs_dest.weight`.
    pub dest_weight: u32,
    /// `ip_vs_dest.flags`.
    pub dest_flags: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
}

impl IpvsLayout {
    /// Every offset unknown (no IPVS module BTF): the programs' initial config.
    pub const UNKNOWN: Self = Self {
        conn_dest: ABSENT,
        dest_weight: ABSENT,
        dest_flags: ABSENT,
        _pad: 0,
    };
}

impl Default for IpvsLayout {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

/// Where the `nft_do_chain` probe finds the skb. Before 5.17 a rule's drop is freed in
/// `nf_hook_slow` like any hook's, so only the table function's return value names the rule.
/// (`ipt_do_table`'s skb argument moved in 5.16; user space attaches the program for the
/// running kernel's argument order instead of passing it here.)
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleLayout {
    /// `nft_pktinfo.skb` (`nft_do_chain`'s first argument is `struct nft_pktinfo *`). The
    /// default 0 is right from 4.x through 6.12, where it is the first member (include/net/
    /// netfilter/nf_tables.h); user space puts the BTF offset here when it has one.
    pub nft_pktinfo_skb: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
}

impl RuleLayout {
    /// No BTF offset: `nft_pktinfo.skb` is taken to be the first member (see above).
    pub const UNKNOWN: Self = Self {
        nft_pktinfo_skb: 0,
        _pad: 0,
    };
}

impl Default for RuleLayout {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

/// Byte offsets inside `struct sock` for the BTF-typed (tp_btf) connect programs, which read the
/// socket directly instead of the tracepoint record. All are [`ABSENT`] unless BTF resolved
/// every one; user space then attaches the tracepoint programs instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockLayout {
    /// `__sk_common.skc_daddr` (__be32).
    pub daddr: u32,
    /// `__sk_common.skc_rcv_saddr` (__be32).
    pub rcv_saddr: u32,
    /// `__sk_common.skc_dport` (__be16).
    pub dport: u32,
    /// `__sk_common.skc_num` (u16, host order: the local port).
    pub num: u32,
    /// `__sk_common.skc_state` (u8).
    pub state: u32,
    /// `__sk_common.skc_v6_daddr` (16 bytes).
    pub v6_daddr: u32,
    /// `__sk_common.skc_v6_rcv_saddr` (16 bytes).
    pub v6_rcv_saddr: u32,
    /// `sk_protocol` (u16 since 5.6; a bitfield before, which leaves the layout absent).
    pub protocol: u32,
    /// `sk_buff.protocol` (__be16), for the tp_btf drop program.
    pub skb_protocol: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
}

impl SockLayout {
    /// Every offset unknown: the programs' initial config (a `const` cannot call `Default`).
    pub const UNKNOWN: Self = Self {
        daddr: ABSENT,
        rcv_saddr: ABSENT,
        dport: ABSENT,
        num: ABSENT,
        state: ABSENT,
        v6_daddr: ABSENT,
        v6_rcv_saddr: ABSENT,
        protocol: ABSENT,
        skb_protocol: ABSENT,
        _pad: 0,
    };
}

impl Default for SockLayout {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

/// Byte offsets of the `sock:inet_sock_set_state` fields, read from its tracefs format file.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockStateLayout {
    pub skaddr: u32,
    pub oldstate: u32,
    pub newstate: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub protocol: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
}

impl SockStateLayout {
    /// Not read yet: every offset 0. User space always fills this from the format file (the
    /// tracepoint is essential), so the programs never run with it.
    pub const UNKNOWN: Self = Self {
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
    };
}

impl Default for SockStateLayout {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

/// Byte offsets of the `tcp:tcp_retransmit_skb` fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitLayout {
    pub skaddr: u32,
    pub state: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
}

impl RetransmitLayout {
    /// Not read yet: every offset 0. Without a format file the program is not attached.
    pub const UNKNOWN: Self = Self {
        skaddr: 0,
        state: 0,
        sport: 0,
        dport: 0,
        family: 0,
        saddr: 0,
        daddr: 0,
        saddr_v6: 0,
        daddr_v6: 0,
    };
}

impl Default for RetransmitLayout {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

/// Byte offsets of the `skb:kfree_skb` fields. `reason` is [`ABSENT`] before 5.17.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KfreeLayout {
    pub skbaddr: u32,
    pub location: u32,
    pub protocol: u32,
    pub reason: u32,
}

impl KfreeLayout {
    /// Not read yet: offsets 0 and no `reason` field, the programs' initial config. (`Default`
    /// stays all-zero, as user space has always had it; without a format file no drop program
    /// is attached, so neither value is ever read.)
    pub const UNKNOWN: Self = Self {
        skbaddr: 0,
        location: 0,
        protocol: 0,
        reason: ABSENT,
    };
}

/// Byte offsets inside kernel structs, resolved from BTF. [`ABSENT`] when unknown; the programs
/// then leave the dependent event fields at 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// `sock.__sk_common.skc_net` (a `possible_net_t`, whose first member is `struct net *`).
    pub sock_net: u32,
    /// `net.ns.inum`.
    pub net_inum: u32,
    /// `sk_buff.dev`.
    pub skb_dev: u32,
    /// `sk_buff.sk`.
    pub skb_sk: u32,
    /// `sk_buff.head`.
    pub skb_head: u32,
    /// `sk_buff.network_header` (u16 offset from head).
    pub skb_network_header: u32,
    /// `sk_buff.len`.
    pub skb_len: u32,
    /// `net_device.nd_net` (a `possible_net_t`).
    pub dev_net: u32,
    /// `net_device.ifindex`.
    pub dev_ifindex: u32,
    /// `sk_buff._nfct` (conntrack pointer | ctinfo in the low 3 bits).
    pub skb_nfct: u32,
    /// `nf_conn.tuplehash[IP_CT_DIR_ORIGINAL].tuple`.
    pub ct_tuple_orig: u32,
    /// `nf_conn.tuplehash[IP_CT_DIR_REPLY].tuple`.
    pub ct_tuple_reply: u32,
    /// `nf_conn.status`.
    pub ct_status: u32,
    /// `sock.__sk_common.skc_family` (u16), for tracepoints without a `family` field (< 5.16).
    pub sock_family: u32,
}

impl KernelLayout {
    /// Every offset unknown (no kernel BTF): the programs' initial config.
    pub const UNKNOWN: Self = Self {
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
    };
}

impl Default for KernelLayout {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

/// Everything user space tells the programs at load time (the `CONFIG` global).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub sock_state: SockStateLayout,
    pub retransmit: RetransmitLayout,
    pub kfree: KfreeLayout,
    pub kernel: KernelLayout,
    pub ipvs: IpvsLayout,
    pub rules: RuleLayout,
    pub sock: SockLayout,
    /// Bit `r` set = drop reason `r` is an ordinary free and is not shipped (e.g. NOT_SPECIFIED).
    pub ignore_reasons: [u64; REASON_BITMAP_WORDS],
    /// Without drop reasons: `[start, end)` text ranges of the functions whose frees are drops
    /// worth shipping (nf_hook_slow, the UDP receive path, ...); unused entries are `[0, 0]`.
    pub locations: [[u64; 2]; MAX_LOCATIONS],
    /// Value of `TCP_SYN_SENT` (2 on every Linux).
    pub tcp_syn_sent: u32,
    /// Nonzero: emit aya-log diagnostics from the programs.
    pub verbose: u32,
    /// Attempts that end (established or closed) sooner than this, with no SYN retransmit,
    /// stay in the kernel: only a count leaves it. 0 ships every attempt.
    pub connect_threshold_ns: u64,
}

impl Config {
    /// Whether drop reason `reason` is in the ignore bitmap.
    #[expect(
        clippy::inline_always,
        reason = "called from the eBPF programs, where an out-of-line call costs a BPF-to-BPF frame"
    )]
    #[inline(always)]
    pub fn ignores_reason(&self, reason: u32) -> bool {
        let word = (reason / 64) as usize;
        if word >= REASON_BITMAP_WORDS {
            return false;
        }
        self.ignore_reasons[word] & (1u64 << (reason % 64)) != 0
    }

    /// Add `reason` to the ignore bitmap (reasons beyond the bitmap cannot be ignored).
    pub fn ignore_reason(&mut self, reason: u32) {
        let word = (reason / 64) as usize;
        if word < REASON_BITMAP_WORDS {
            self.ignore_reasons[word] |= 1u64 << (reason % 64);
        }
    }
}

// Layouts are part of the ABI: any change must be deliberate on both sides.
const _: () = assert!(core::mem::size_of::<EventHeader>() == 16);
const _: () = assert!(core::mem::size_of::<Addrs>() == 40);
const _: () = assert!(core::mem::size_of::<SockStateEvent>() == 112);
const _: () = assert!(core::mem::size_of::<RetransmitEvent>() == 80);
const _: () = assert!(core::mem::size_of::<DropEvent>() == 304);
const _: () = assert!(core::mem::size_of::<KernelLayout>() == 56);
const _: () = assert!(core::mem::size_of::<HookDropEvent>() == 32);
const _: () = assert!(core::mem::size_of::<IpvsExpireEvent>() == 32);
const _: () = assert!(core::mem::size_of::<SockLayout>() == 40);
const _: () =
    assert!(core::mem::size_of::<Config>() == 44 + 36 + 16 + 56 + 16 + 8 + 40 + 32 + 128 + 8 + 8);
const _: () = assert!(core::mem::size_of::<PendingAttempt>() == 80);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), Copy, contain only integers and integer arrays, and have
    // explicit padding fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::SockStateEvent {}
    unsafe impl aya::Pod for super::RetransmitEvent {}
    unsafe impl aya::Pod for super::DropEvent {}
    unsafe impl aya::Pod for super::HookDropEvent {}
    unsafe impl aya::Pod for super::IpvsExpireEvent {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::PendingAttempt {}
}
