//! The compact forms an attempt in flight is kept in until it ends, and what each costs.
//!
//! 100 k attempts in flight must fit in a few tens of MiB, so the tracker does not keep an
//! [`Attempt`] per connect but a [`Flow`] (at most 72 bytes): the ends packed into 16 bytes for
//! IPv4 ([`Ends`]), SYN retransmit times as 32-bit gaps ([`Retransmits`]), the program name
//! shared per name ([`Shared`]), and its drops as [`StoredDrop`]s (at most 56 bytes instead of
//! a 216-byte [`MatchedDrop`]): a packet of the flow's own tuple kept as its flags
//! ([`StoredPacket`], 8 bytes), (reason, location) shared, and what few drops carry boxed
//! together in [`Rare`]. Slices grow one element at a time with no spare capacity
//! ([`push_boxed`]). Each form turns back into the public one exactly when the attempt leaves;
//! the tests below check that round trip and guard the sizes.
//!
//! The hasher for the tracker's maps keyed by an already keyed tuple hash ([`Prehashed`]) is
//! here too: it is part of what an index entry costs.

use std::{collections::HashMap, net::SocketAddr, rc::Rc};

use super::{Attempt, Direction, MatchedDrop, Outcome, keys::tcp_tuple};
use crate::{
    enrich::{CounterEvidence, CtInfo, DropRecord, HOOK_NAMES, IpvsDest, Name},
    event::{SockKey, comm_string},
    packet::{FiveTuple, Packet, TcpFlags},
};

/// Both ends of a connect: 16 bytes for IPv4 (most connects) instead of two 32-byte
/// `SocketAddr`s; other ends are boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ends {
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
    },
    Other(Box<(SocketAddr, SocketAddr)>),
}

impl Ends {
    pub(super) fn new(src: SocketAddr, dst: SocketAddr) -> Self {
        match (src, dst) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => Ends::V4 {
                src: s.ip().octets(),
                dst: d.ip().octets(),
                sport: s.port(),
                dport: d.port(),
            },
            _ => Ends::Other(Box::new((src, dst))),
        }
    }

    pub(super) fn src(&self) -> SocketAddr {
        match self {
            Ends::V4 { src, sport, .. } => SocketAddr::from((*src, *sport)),
            Ends::Other(b) => b.0,
        }
    }

    pub(super) fn dst(&self) -> SocketAddr {
        match self {
            Ends::V4 { dst, dport, .. } => SocketAddr::from((*dst, *dport)),
            Ends::Other(b) => b.1,
        }
    }
}

/// Where a stored drop's packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PacketKind {
    None,
    /// The flow's own tuple, not VXLAN: only the flags are kept.
    Own,
    /// The flow's tuple reversed (server → client), not VXLAN.
    OwnReversed,
    /// Any other packet, whole, in the drop's [`Rare`] parts.
    InRare,
}

/// A dropped packet as a flow keeps it, 8 bytes: a drop of the flow's own packet (most drops)
/// keeps only its flags, since its tuple is the flow's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoredPacket {
    kind: PacketKind,
    tcp_flags: Option<TcpFlags>,
    udp_checksum: Option<u16>,
}

impl StoredPacket {
    /// The stored form, and the packet to keep whole when it is not of the flow's tuple.
    fn new(p: Option<Packet>, own: Option<FiveTuple>) -> (Self, Option<Packet>) {
        let none = StoredPacket {
            kind: PacketKind::None,
            tcp_flags: None,
            udp_checksum: None,
        };
        let Some(p) = p else {
            return (none, None);
        };
        let kind = match own {
            Some(t) if p.vxlan.is_none() && p.tuple == t => PacketKind::Own,
            Some(t) if p.vxlan.is_none() && p.tuple == t.reversed() => PacketKind::OwnReversed,
            _ => {
                let whole = StoredPacket {
                    kind: PacketKind::InRare,
                    ..none
                };
                return (whole, Some(p));
            }
        };
        let stored = StoredPacket {
            kind,
            tcp_flags: p.tcp_flags,
            udp_checksum: p.udp_checksum,
        };
        (stored, None)
    }

    /// `own` is the flow's tuple, known whenever an own packet was stored (it never changes
    /// once known); were it missing, the packet is left out rather than invented.
    fn packet(self, own: Option<FiveTuple>, rare: Option<&Rare>) -> Option<Packet> {
        let tuple = match self.kind {
            PacketKind::None => return None,
            PacketKind::InRare => return rare.and_then(|r| r.packet.clone()),
            PacketKind::Own => own?,
            PacketKind::OwnReversed => own?.reversed(),
        };
        Some(Packet {
            tuple,
            tcp_flags: self.tcp_flags,
            udp_checksum: self.udp_checksum,
            vxlan: None,
        })
    }
}

/// The parts of a drop that few drops have, boxed together.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rare {
    ct: Option<Box<CtInfo>>,
    counters: Option<CounterEvidence>,
    ipvs_dest: Option<IpvsDest>,
    /// A hook name not in [`HOOK_NAMES`].
    hook: Option<&'static str>,
    /// A packet not of the flow's tuple.
    packet: Option<Packet>,
}

/// Distinct program names and drop places shared at most: beyond, each flow gets its own copy
/// (only garbage gets there: kernels have a few hundred drop sites, nodes few program names).
const MAX_SHARED: usize = 4096;

/// Values many flows hold alike, shared rather than copied into each.
#[derive(Debug, Default)]
pub(super) struct Shared {
    comms: HashMap<[u8; 16], Name, crate::FastHash>,
    /// (reason, location) of drops.
    places: HashMap<(Name, Name), Rc<(Name, Name)>, crate::FastHash>,
}

impl Shared {
    pub(super) fn comm(&mut self, raw: &[u8; 16]) -> Name {
        if let Some(n) = self.comms.get(raw) {
            return n.clone();
        }
        let n = Name::from(comm_string(raw));
        if self.comms.len() < MAX_SHARED {
            self.comms.insert(*raw, n.clone());
        }
        n
    }

    fn place(&mut self, reason: Name, location: Name) -> Rc<(Name, Name)> {
        let key = (reason, location);
        if let Some(p) = self.places.get(&key) {
            return p.clone();
        }
        let p = Rc::new(key.clone());
        if self.places.len() < MAX_SHARED {
            self.places.insert(key, p.clone());
        }
        p
    }
}

/// A drop as a flow keeps it (the [`MatchedDrop`] is made when the attempt leaves): 56 bytes
/// instead of 216, as each of 100 k attempts in flight holds at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredDrop {
    ts_ns: u64,
    cpu: u32,
    netns: u32,
    ifindex: u32,
    len: u32,
    /// (reason, location), shared.
    place: Rc<(Name, Name)>,
    packet: StoredPacket,
    /// 1 + the index of the drop's hook in [`HOOK_NAMES`]; 0 for none (or one kept in `rare`).
    hook: u8,
    rare: Option<Box<Rare>>,
    direction: Direction,
    via_vxlan: bool,
    via_nat: bool,
    pub(super) repeats: u32,
}

impl StoredDrop {
    pub(super) fn new(m: MatchedDrop, own: Option<FiveTuple>, shared: &mut Shared) -> Self {
        let d = m.drop;
        let known = d
            .hook
            .and_then(|h| HOOK_NAMES.iter().position(|n| *n == h))
            .and_then(|i| u8::try_from(i + 1).ok());
        let other_hook = d.hook.filter(|_| known.is_none());
        let (packet, whole) = StoredPacket::new(d.packet, own);
        let rare = (d.ct.is_some()
            || d.counters.is_some()
            || d.ipvs_dest.is_some()
            || other_hook.is_some()
            || whole.is_some())
        .then(|| {
            Box::new(Rare {
                ct: d.ct,
                counters: d.counters,
                ipvs_dest: d.ipvs_dest,
                hook: other_hook,
                packet: whole,
            })
        });
        StoredDrop {
            ts_ns: d.ts_ns,
            cpu: d.cpu,
            netns: d.netns,
            ifindex: d.ifindex,
            len: d.len,
            place: shared.place(d.reason, d.location),
            packet,
            hook: known.unwrap_or(0),
            rare,
            direction: m.direction,
            via_vxlan: m.via_vxlan,
            via_nat: m.via_nat,
            repeats: m.repeats,
        }
    }

    fn matched(&self, own: Option<FiveTuple>) -> MatchedDrop {
        let rare = self.rare.as_deref();
        MatchedDrop {
            drop: DropRecord {
                ts_ns: self.ts_ns,
                cpu: self.cpu,
                netns: self.netns,
                ifindex: self.ifindex,
                reason: self.place.0.clone(),
                location: self.place.1.clone(),
                len: self.len,
                packet: self.packet.packet(own, rare),
                ct: rare.and_then(|r| r.ct.clone()),
                counters: rare.and_then(|r| r.counters),
                hook: usize::from(self.hook)
                    .checked_sub(1)
                    .and_then(|i| HOOK_NAMES.get(i).copied())
                    .or_else(|| rare.and_then(|r| r.hook)),
                ipvs_dest: rare.and_then(|r| r.ipvs_dest),
            },
            direction: self.direction,
            via_vxlan: self.via_vxlan,
            via_nat: self.via_nat,
            repeats: self.repeats,
        }
    }

    /// Whether `later` is this drop again: same packet, place, path and evidence (not time,
    /// CPU or length). Both were stored against the same flow tuple, so equal packets are
    /// stored alike.
    pub(super) fn folds(&self, later: &StoredDrop) -> bool {
        self.direction == later.direction
            && self.via_vxlan == later.via_vxlan
            && self.via_nat == later.via_nat
            && self.place == later.place
            && self.netns == later.netns
            && self.ifindex == later.ifindex
            && self.packet == later.packet
            && self.rare == later.rare
            && self.hook == later.hook
    }
}

/// SYN retransmit times of a flow, exact, as 32-bit gaps (each from the previous time, the
/// first from the start): 4 bytes a retry instead of 8, since storms retry many times.
/// A gap of 2^32 − 1 ns (4.3 s) or more is the marker `u32::MAX` then the gap's two halves.
#[derive(Debug, Default)]
pub(super) struct Retransmits(Box<[u32]>);

impl Retransmits {
    pub(super) fn push(&mut self, start_ns: u64, ts_ns: u64) {
        let prev = self.times(start_ns).last().unwrap_or(start_ns);
        let gap = ts_ns.wrapping_sub(prev);
        let mut v = std::mem::take(&mut self.0).into_vec();
        match u32::try_from(gap) {
            Ok(g) if g != u32::MAX => {
                v.reserve_exact(1);
                v.push(g);
            }
            _ => {
                v.reserve_exact(3);
                v.extend([u32::MAX, (gap >> 32) as u32, gap as u32]);
            }
        }
        self.0 = v.into_boxed_slice();
    }

    /// The times, in order.
    fn times(&self, start_ns: u64) -> impl Iterator<Item = u64> + '_ {
        let mut words = self.0.iter().copied();
        let mut t = start_ns;
        std::iter::from_fn(move || {
            let w = words.next()?;
            let gap = if w == u32::MAX {
                let hi = u64::from(words.next()?);
                let lo = u64::from(words.next()?);
                (hi << 32) | lo
            } else {
                u64::from(w)
            };
            t = t.wrapping_add(gap);
            Some(t)
        })
    }

    pub(super) fn len(&self, start_ns: u64) -> usize {
        self.times(start_ns).count()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Append to a boxed slice. An attempt holds a few retransmits and drops, so its slices grow
/// one at a time and carry no spare capacity (nor a capacity field).
pub(super) fn push_boxed<T>(b: &mut Box<[T]>, v: T) {
    let mut vec = std::mem::take(b).into_vec();
    vec.reserve_exact(1);
    vec.push(v);
    *b = vec.into_boxed_slice();
}

/// An attempt in flight: what the tracker keeps until it ends (the [`Attempt`] is made then).
/// Compact on purpose, since 100 k of these must fit in a few tens of MiB: the tuple is derived
/// from the ends, the rare NAT aliases live beside it, `comm` is shared per program name.
#[derive(Debug)]
pub(super) struct Flow {
    pub(super) start_ns: u64,
    pub(super) tgid: u32,
    /// CPU that entered SYN_SENT.
    pub(super) cpu: u32,
    pub(super) comm: Name,
    /// The source port is 0 until the kernel picks it; the flow's tuple is known once it is not.
    pub(super) ends: Ends,
    pub(super) retransmits: Retransmits,
    pub(super) drops: Box<[StoredDrop]>,
}

impl Flow {
    /// The 5-tuple once the source port is known.
    pub(super) fn tuple(&self) -> Option<FiveTuple> {
        let src = self.ends.src();
        (src.port() != 0).then(|| tcp_tuple(src, self.ends.dst()))
    }

    pub(super) fn attempt(&self, sock: SockKey, end_ns: u64, outcome: Outcome) -> Attempt {
        let own = self.tuple();
        Attempt {
            sock,
            tgid: self.tgid,
            comm: self.comm.to_string(),
            src: self.ends.src(),
            dst: self.ends.dst(),
            start_ns: self.start_ns,
            end_ns,
            outcome,
            retransmits: self.retransmits.times(self.start_ns).collect(),
            drops: self.drops.iter().map(|d| d.matched(own)).collect(),
            cpu: self.cpu,
        }
    }
}

/// Hashing for maps keyed by a tuple's keyed hash: the key is used as it is (hashing it again
/// would double the cost of every lookup for nothing).
pub(super) type Prehashed = std::hash::BuildHasherDefault<PrehashedU64>;

#[derive(Default)]
pub(super) struct PrehashedU64(u64);

impl std::hash::Hasher for PrehashedU64 {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with this; anything else still gets a usable hash.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tests::{S, syn_drop};

    #[test]
    fn stored_drops_give_back_the_matched_drop() {
        let own = tcp_tuple(
            "10.0.0.1:7000".parse().unwrap(),
            "10.0.0.2:8080".parse().unwrap(),
        );
        let fwd = syn_drop(S, 7000, "NETFILTER_DROP");
        let mut reply = syn_drop(S, 7000, "TCP_CSUM");
        if let Some(p) = reply.packet.as_mut() {
            p.tuple = p.tuple.reversed();
        }
        let mut other = syn_drop(S, 7001, "NETFILTER_DROP");
        other.ct = Some(Box::new(CtInfo {
            status: 1,
            orig: own,
            reply: own.reversed(),
        }));
        other.counters = Some(CounterEvidence {
            insert_failed: 1,
            drop: 0,
        });
        other.hook = Some("nft_do_chain");
        let none = DropRecord {
            packet: None,
            hook: Some("a hook netlat does not name"),
            ..syn_drop(S, 7000, "NO_SOCKET")
        };
        let hooked = DropRecord {
            hook: Some("ipt_do_table"),
            ..syn_drop(S, 7000, "NETFILTER_DROP")
        };
        for (d, compact) in [
            (fwd, true),
            (reply, true),
            (other, false),
            (none, false),
            (hooked, true),
        ] {
            let m = MatchedDrop {
                drop: d,
                direction: Direction::Reply,
                via_vxlan: false,
                via_nat: true,
                repeats: 3,
            };
            let s = StoredDrop::new(m.clone(), Some(own), &mut Shared::default());
            assert_eq!(
                matches!(s.packet.kind, PacketKind::Own | PacketKind::OwnReversed),
                compact
            );
            assert_eq!(s.matched(Some(own)), m);
        }
        // What 100 k attempts in flight cost depends on these.
        assert!(std::mem::size_of::<StoredDrop>() <= 56);
        assert!(std::mem::size_of::<Flow>() <= 72);
    }

    #[test]
    fn retransmit_times_are_kept_exactly() {
        let start = 10 * S;
        let times = [
            start + 1_000_000_000,
            start + 1_000_000_000,
            start + 5_500_000_123,
            start + 5_500_000_123 + u64::from(u32::MAX) - 1,
            start + 5_500_000_123 + 2 * u64::from(u32::MAX) - 1,
            start + 200 * S,
            start - 1,
        ];
        let mut r = Retransmits::default();
        for (i, &t) in times.iter().enumerate() {
            r.push(start, t);
            assert_eq!(r.times(start).collect::<Vec<_>>(), times[..=i]);
            assert_eq!(r.len(start), i + 1);
        }
        // Gaps under 4.3 s take one word each.
        let mut r = Retransmits::default();
        r.push(start, start + S);
        r.push(start, start + 3 * S);
        assert_eq!(r.0.len(), 2);
    }
}
