//! Decoding of ring-buffer items into typed events. Pure: bytes in, events out.
//!
//! The kernel writes the `#[repr(C)]` structs of `netlat_common`; here every item is checked for
//! its kind and exact length before it is read, so a short or foreign item is an error, not UB.

use std::{
    mem::{offset_of, size_of},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use netlat_common::{
    Addrs, DropEvent, EventHeader, HookDropEvent, IpvsExpireEvent, RetransmitEvent, SockStateEvent,
    attempt_flag, kind, v1,
};

/// Why a ring-buffer item could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("ring-buffer item of {len} bytes is shorter than an event header")]
    Short { len: usize },
    #[error("ring-buffer item of kind {kind} has {len} bytes, expected {expected}")]
    BadLength {
        kind: u32,
        len: usize,
        expected: usize,
    },
    #[error("unknown ring-buffer event kind {kind}")]
    UnknownKind { kind: u32 },
}

/// A TCP state number as in include/net/tcp_states.h (stable across kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpState(pub u32);

impl TcpState {
    pub const ESTABLISHED: TcpState = TcpState(1);
    pub const SYN_SENT: TcpState = TcpState(2);
    pub const CLOSE: TcpState = TcpState(7);

    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "ESTABLISHED",
            2 => "SYN_SENT",
            3 => "SYN_RECV",
            4 => "FIN_WAIT1",
            5 => "FIN_WAIT2",
            6 => "TIME_WAIT",
            7 => "CLOSE",
            8 => "CLOSE_WAIT",
            9 => "LAST_ACK",
            10 => "LISTEN",
            11 => "CLOSING",
            12 => "NEW_SYN_RECV",
            _ => "UNKNOWN",
        }
    }
}

/// Identity of a socket for the duration of a connection attempt.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SockKey {
    /// Network namespace inode (0 if unknown).
    pub netns: u32,
    /// Kernel address of `struct sock`.
    pub skaddr: u64,
}

/// A TCP socket entered or left SYN_SENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockState {
    pub ts_ns: u64,
    pub cpu: u32,
    pub sock: SockKey,
    pub tgid: u32,
    /// The task's name as the kernel holds it (NUL-padded): kept raw, so an attempt in flight
    /// stores 16 bytes, not a heap string; [`comm_string`] makes the text.
    pub comm: [u8; 16],
    pub old: TcpState,
    pub new: TcpState,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Start of the attempt this event belongs to, as the kernel's attempt table holds it
    /// (ABI 2); 0 when unknown (an ABI 1 recording, or an attempt the table did not hold).
    pub start_ns: u64,
    /// `netlat_common::attempt_flag` bits (ABI 2; 0 before).
    pub flags: u32,
}

impl SockState {
    /// The kernel replaced an earlier attempt of this socket that it never saw end.
    pub fn replaced(&self) -> bool {
        self.flags & attempt_flag::REPLACED != 0
    }
}

/// A SYN was retransmitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retransmit {
    pub ts_ns: u64,
    pub cpu: u32,
    pub sock: SockKey,
    pub state: TcpState,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Start of the attempt it belongs to (ABI 2; 0 when unknown).
    pub start_ns: u64,
}

/// A packet drop as the kernel reported it, before enrichment. It borrows its capture from the
/// ring-buffer item (or the replay reader's buffer): enrichment decodes the packet at once, so a
/// copy per drop would buy nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drop<'a> {
    pub ts_ns: u64,
    pub cpu: u32,
    pub skbaddr: u64,
    pub location: u64,
    pub netns: u32,
    pub ifindex: u32,
    /// Kernel-specific drop-reason number.
    pub reason: u32,
    pub len: u32,
    /// Ethertype of the skb (0x0800 / 0x86dd).
    pub protocol: u16,
    /// Captured bytes from the network header on.
    pub data: &'a [u8],
    /// The skb's conntrack entry, when it had one.
    pub ct: Option<RawCt>,
}

/// A conntrack entry as captured by the kernel: raw tuples, decoded with BTF offsets later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCt {
    /// `nf_conn.status` IPS_* bits.
    pub status: u32,
    pub orig: [u8; netlat_common::CT_TUPLE_CAPTURE],
    pub reply: [u8; netlat_common::CT_TUPLE_CAPTURE],
}

/// A netfilter hook function returned NF_DROP for an skb (its kfree_skb follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookDrop {
    pub ts_ns: u64,
    pub cpu: u32,
    pub skbaddr: u64,
    /// `netlat_common::hook` id.
    pub hook: u32,
}

/// IPVS expired a connection now; its real server's state at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpvsExpire {
    pub ts_ns: u64,
    pub cpu: u32,
    pub dest_weight: Option<u32>,
    pub dest_flags: Option<u32>,
}

/// One decoded ring-buffer item (a drop borrows its capture from the item's bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    SockState(SockState),
    Retransmit(Retransmit),
    Drop(Drop<'a>),
    HookDrop(HookDrop),
    IpvsExpire(IpvsExpire),
}

impl Event<'_> {
    /// Kernel timestamp (CLOCK_MONOTONIC ns).
    pub fn ts_ns(&self) -> u64 {
        match self {
            Event::SockState(e) => e.ts_ns,
            Event::Retransmit(e) => e.ts_ns,
            Event::Drop(e) => e.ts_ns,
            Event::HookDrop(e) => e.ts_ns,
            Event::IpvsExpire(e) => e.ts_ns,
        }
    }
}

/// Read a `T` (one of the wire structs) from `bytes` of exactly `size_of::<T>()`.
fn read_exact<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, EventError> {
    let expected = std::mem::size_of::<T>();
    if bytes.len() != expected {
        return Err(EventError::BadLength {
            kind,
            len: bytes.len(),
            expected,
        });
    }
    // SAFETY: the length matches, T is a repr(C) integer-only wire struct (every bit pattern is
    // valid), and read_unaligned tolerates any alignment of the ring-buffer memory.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn socket_addrs(a: &Addrs) -> (SocketAddr, SocketAddr) {
    let ip = |b: &[u8; 16]| -> IpAddr {
        if a.family == 10 {
            IpAddr::V6(Ipv6Addr::from(*b))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
    };
    (
        SocketAddr::new(ip(&a.saddr), a.sport),
        SocketAddr::new(ip(&a.daddr), a.dport),
    )
}

/// The text of a kernel `comm` (up to the first NUL; invalid UTF-8 replaced).
pub fn comm_string(c: &[u8; 16]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

fn sock_state(e: &SockStateEvent) -> Event<'static> {
    let (src, dst) = socket_addrs(&e.addrs);
    Event::SockState(SockState {
        ts_ns: e.header.ts_ns,
        cpu: e.header.cpu,
        sock: SockKey {
            netns: e.netns,
            skaddr: e.skaddr,
        },
        tgid: e.tgid,
        comm: e.comm,
        old: TcpState(e.oldstate),
        new: TcpState(e.newstate),
        src,
        dst,
        start_ns: e.start_ns,
        flags: e.flags,
    })
}

fn retransmit(e: &RetransmitEvent) -> Event<'static> {
    let (src, dst) = socket_addrs(&e.addrs);
    Event::Retransmit(Retransmit {
        ts_ns: e.header.ts_ns,
        cpu: e.header.cpu,
        sock: SockKey {
            netns: e.netns,
            skaddr: e.skaddr,
        },
        state: TcpState(e.state),
        src,
        dst,
        start_ns: e.start_ns,
    })
}

/// Where a drop's capture starts in its item; the whole capture array lies inside the item (the
/// item's length is checked against `DropEvent` before it is sliced).
const DROP_DATA: usize = offset_of!(DropEvent, data);
const _: () = assert!(DROP_DATA + netlat_common::DROP_CAPTURE <= size_of::<DropEvent>());

/// Decode one ring-buffer item (ABI 2, or ABI 1 for the kinds whose layout grew).
pub fn decode(bytes: &[u8]) -> Result<Event<'_>, EventError> {
    let hdr_len = std::mem::size_of::<EventHeader>();
    let Some(head) = bytes.get(..hdr_len) else {
        return Err(EventError::Short { len: bytes.len() });
    };
    let hdr: EventHeader = read_exact(head, 0)?;
    match hdr.kind {
        // ABI 2 events grew; an ABI 1 recording's items have the old length (each version's
        // sizes differ, so the length names the layout).
        kind::SOCK_STATE if bytes.len() == size_of::<v1::SockStateEvent>() => {
            let e: v1::SockStateEvent = read_exact(bytes, hdr.kind)?;
            Ok(sock_state(&SockStateEvent {
                header: e.header,
                skaddr: e.skaddr,
                netns: e.netns,
                tgid: e.tgid,
                oldstate: e.oldstate,
                newstate: e.newstate,
                addrs: e.addrs,
                comm: e.comm,
                start_ns: 0,
                flags: 0,
                _pad: 0,
            }))
        }
        kind::SOCK_STATE => Ok(sock_state(&read_exact(bytes, hdr.kind)?)),
        kind::RETRANSMIT if bytes.len() == size_of::<v1::RetransmitEvent>() => {
            let e: v1::RetransmitEvent = read_exact(bytes, hdr.kind)?;
            Ok(retransmit(&RetransmitEvent {
                header: e.header,
                skaddr: e.skaddr,
                netns: e.netns,
                state: e.state,
                addrs: e.addrs,
                start_ns: 0,
            }))
        }
        kind::RETRANSMIT => Ok(retransmit(&read_exact(bytes, hdr.kind)?)),
        kind::DROP => {
            let e: DropEvent = read_exact(bytes, hdr.kind)?;
            let cap = usize::from(e.cap_len).min(netlat_common::DROP_CAPTURE);
            Ok(Event::Drop(Drop {
                ts_ns: hdr.ts_ns,
                cpu: hdr.cpu,
                skbaddr: e.skbaddr,
                location: e.location,
                netns: e.netns,
                ifindex: e.ifindex,
                reason: e.reason,
                len: e.len,
                protocol: e.protocol,
                data: &bytes[DROP_DATA..DROP_DATA + cap],
                ct: (e.ct_flags & netlat_common::CT_PRESENT != 0).then_some(RawCt {
                    status: e.ct_status,
                    orig: e.ct_orig,
                    reply: e.ct_reply,
                }),
            }))
        }
        kind::HOOK_DROP => {
            let e: HookDropEvent = read_exact(bytes, hdr.kind)?;
            Ok(Event::HookDrop(HookDrop {
                ts_ns: hdr.ts_ns,
                cpu: hdr.cpu,
                skbaddr: e.skbaddr,
                hook: e.hook,
            }))
        }
        kind::IPVS_EXPIRE => {
            let e: IpvsExpireEvent = read_exact(bytes, hdr.kind)?;
            let known = |v: u32| (v != u32::MAX).then_some(v);
            Ok(Event::IpvsExpire(IpvsExpire {
                ts_ns: hdr.ts_ns,
                cpu: hdr.cpu,
                dest_weight: known(e.dest_weight),
                dest_flags: known(e.dest_flags),
            }))
        }
        other => Err(EventError::UnknownKind { kind: other }),
    }
}

/// Encode wire structs to bytes, as the kernel would; used by tests and synthetic streams.
pub fn encode<T: Copy>(v: &T) -> Vec<u8> {
    bytes_of(v).to_vec()
}

/// The bytes of a wire struct, as the kernel writes them into the ring buffer.
pub fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is a repr(C) wire struct with explicit padding, so all bytes are initialised.
    unsafe {
        std::slice::from_raw_parts(
            std::ptr::from_ref::<T>(v).cast::<u8>(),
            std::mem::size_of::<T>(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs_v4(s: [u8; 4], sp: u16, d: [u8; 4], dp: u16) -> Addrs {
        let mut a = Addrs {
            family: 2,
            sport: sp,
            dport: dp,
            ..Addrs::default()
        };
        a.saddr[..4].copy_from_slice(&s);
        a.daddr[..4].copy_from_slice(&d);
        a
    }

    #[test]
    fn sock_state_round_trip() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let raw = SockStateEvent {
            header: EventHeader {
                kind: kind::SOCK_STATE,
                cpu: 1,
                ts_ns: 42,
            },
            skaddr: 0xffff_8880_1234_0000,
            netns: 4026531840,
            tgid: 77,
            oldstate: 7,
            newstate: 2,
            addrs: addrs_v4([10, 0, 0, 1], 0, [10, 0, 0, 2], 8080),
            comm,
            start_ns: 42,
            flags: attempt_flag::DEFERRED | attempt_flag::REPLACED,
            _pad: 0,
        };
        let Event::SockState(e) = decode(&encode(&raw)).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(comm_string(&e.comm), "curl");
        assert_eq!(e.new, TcpState::SYN_SENT);
        assert_eq!(e.dst, "10.0.0.2:8080".parse().unwrap());
        assert_eq!(e.sock.netns, 4026531840);
        assert_eq!(e.ts_ns, 42);
        assert_eq!(e.start_ns, 42);
        assert!(e.replaced());
    }

    /// ABI 1 recordings hold the shorter layouts: they decode, with no attempt start.
    #[test]
    fn abi_1_items_still_decode() {
        let header = |kind| EventHeader {
            kind,
            cpu: 1,
            ts_ns: 7,
        };
        let old = v1::SockStateEvent {
            header: header(kind::SOCK_STATE),
            skaddr: 5,
            netns: 3,
            tgid: 77,
            oldstate: 2,
            newstate: 1,
            addrs: addrs_v4([10, 0, 0, 1], 4000, [10, 0, 0, 2], 8080),
            comm: [0; 16],
        };
        let Event::SockState(e) = decode(&encode(&old)).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(
            (e.sock.skaddr, e.new, e.start_ns, e.flags),
            (5, TcpState::ESTABLISHED, 0, 0)
        );
        assert_eq!(e.src, "10.0.0.1:4000".parse().unwrap());
        let old = v1::RetransmitEvent {
            header: header(kind::RETRANSMIT),
            skaddr: 5,
            netns: 3,
            state: 2,
            addrs: addrs_v4([10, 0, 0, 1], 4000, [10, 0, 0, 2], 8080),
        };
        let Event::Retransmit(r) = decode(&encode(&old)).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!((r.ts_ns, r.start_ns), (7, 0));
        // Any other length is still refused.
        let mut short = encode(&old);
        short.pop();
        assert!(matches!(
            decode(&short),
            Err(EventError::BadLength { expected: 80, .. })
        ));
    }

    #[test]
    fn retransmit_v6() {
        let mut a = Addrs {
            family: 10,
            sport: 4000,
            dport: 443,
            ..Addrs::default()
        };
        a.saddr = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        a.daddr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        let raw = RetransmitEvent {
            header: EventHeader {
                kind: kind::RETRANSMIT,
                cpu: 0,
                ts_ns: 1,
            },
            skaddr: 9,
            netns: 1,
            state: 2,
            addrs: a,
            start_ns: 0,
        };
        let Event::Retransmit(e) = decode(&encode(&raw)).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(e.src, "[fd00::1]:4000".parse().unwrap());
        assert_eq!(e.dst, "[fd00::2]:443".parse().unwrap());
    }

    #[test]
    fn drop_keeps_only_captured_bytes() {
        let mut raw = DropEvent {
            header: EventHeader {
                kind: kind::DROP,
                cpu: 0,
                ts_ns: 5,
            },
            reason: 12,
            protocol: 0x0800,
            cap_len: 64,
            ..DropEvent::default()
        };
        raw.data[0] = 0x45;
        raw.data[63] = 0x99;
        raw.data[64] = 0xee;
        let item = encode(&raw);
        let Event::Drop(e) = decode(&item).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(e.data.len(), 64);
        assert_eq!((e.data[0], e.data[63]), (0x45, 0x99));
        // The capture is the item's own bytes, not a copy of them.
        assert!(std::ptr::eq(e.data.as_ptr(), item[DROP_DATA..].as_ptr()));
        // A lying cap_len cannot read past the array.
        raw.cap_len = 9999;
        let item = encode(&raw);
        let Event::Drop(e) = decode(&item).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(e.data.len(), netlat_common::DROP_CAPTURE);
        assert_eq!(e.data[64], 0xee);
    }

    #[test]
    fn hook_and_ipvs_events() {
        let raw = HookDropEvent {
            header: EventHeader {
                kind: kind::HOOK_DROP,
                cpu: 1,
                ts_ns: 9,
            },
            skbaddr: 0xabc,
            hook: netlat_common::hook::IPVS,
            ret: 0,
        };
        assert_eq!(
            decode(&encode(&raw)).unwrap(),
            Event::HookDrop(HookDrop {
                ts_ns: 9,
                cpu: 1,
                skbaddr: 0xabc,
                hook: netlat_common::hook::IPVS
            })
        );
        let raw = IpvsExpireEvent {
            header: EventHeader {
                kind: kind::IPVS_EXPIRE,
                cpu: 0,
                ts_ns: 3,
            },
            conn: 1,
            dest_weight: 0,
            dest_flags: u32::MAX,
        };
        let Event::IpvsExpire(e) = decode(&encode(&raw)).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!((e.dest_weight, e.dest_flags), (Some(0), None));
    }

    #[test]
    fn bad_items_are_errors() {
        assert_eq!(decode(&[1, 2, 3]), Err(EventError::Short { len: 3 }));
        let mut b = encode(&EventHeader {
            kind: kind::DROP,
            cpu: 0,
            ts_ns: 0,
        });
        assert!(matches!(decode(&b), Err(EventError::BadLength { .. })));
        b[0] = 99;
        assert_eq!(decode(&b), Err(EventError::UnknownKind { kind: 99 }));
    }
}
