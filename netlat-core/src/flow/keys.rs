//! Drop → tuple matching: the TCP tuples a dropped packet can be claimed by ([`drop_keys`]: the
//! packet itself, the pre-NAT tuple of its conntrack entry, the inner packet of VXLAN, each
//! either way round, with how each relates to the connect: [`Via`]), and the small forms the
//! tracker lists unclaimed drops under ([`KeyHashes`], [`Listed`]). These are the matching
//! rules, apart from the tracker's state; they run for every drop, so the common case stays
//! inline and does not allocate.

use std::{collections::VecDeque, net::SocketAddr};

use super::Direction;
use crate::{enrich::DropRecord, packet::FiveTuple};

const IPPROTO_TCP: u8 = 6;

pub(super) fn tcp_tuple(src: SocketAddr, dst: SocketAddr) -> FiveTuple {
    FiveTuple {
        proto: IPPROTO_TCP,
        src,
        dst,
    }
}

/// The distinct pair hashes of a drop's keys (at most one per tuple kind: packet, NAT, inner).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct KeyHashes {
    pub(super) hashes: [u64; 3],
    pub(super) len: u8,
}

impl KeyHashes {
    pub(super) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.hashes[..usize::from(self.len)].iter().copied()
    }
}

/// The unclaimed drops listed under one pair hash, oldest first, by their sequence number in
/// the tracker's queue of remembered drops. Nearly every hash lists one drop: it is held
/// inline (16 bytes an entry, no queue allocation per remembered drop).
#[derive(Debug)]
pub(super) enum Listed {
    One(u64),
    #[expect(
        clippy::box_collection,
        reason = "the enum stays two words, so the map entry of the common `One` case is 24 \
                  bytes instead of 48"
    )]
    Many(Box<VecDeque<u64>>),
}

impl Listed {
    pub(super) fn push_back(&mut self, d: u64) {
        match self {
            Listed::One(first) => {
                let q = VecDeque::from([*first, d]);
                *self = Listed::Many(Box::new(q));
            }
            Listed::Many(q) => q.push_back(d),
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let (one, many) = match self {
            Listed::One(d) => (Some(d), None),
            Listed::Many(q) => (None, Some(q.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten()).copied()
    }

    /// Remove `d` if it is the oldest; whether the list is empty afterwards.
    pub(super) fn pop_if_front(&mut self, d: u64) -> bool {
        match self {
            Listed::One(first) => *first == d,
            Listed::Many(q) => {
                if q.front() == Some(&d) {
                    q.pop_front();
                }
                q.is_empty()
            }
        }
    }
}

/// How a drop was tied to a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Via {
    pub(super) dir: Direction,
    pub(super) vxlan: bool,
    pub(super) nat: bool,
}

/// The tuples a drop can be claimed by (at most 3 tuples, each either way round), each with
/// how it relates to the connect. Inline: computed for every drop, so it must not allocate.
#[derive(Debug, Clone, Copy)]
pub(super) struct DropKeys([Option<(FiveTuple, Via)>; 6]);

impl DropKeys {
    pub(super) fn iter(&self) -> impl Iterator<Item = &(FiveTuple, Via)> {
        self.0.iter().flatten()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0[0].is_none()
    }
}

/// The tuples of a drop that could identify a connect: the packet itself, the pre-NAT tuple of
/// its conntrack entry, and for VXLAN the inner packet; each either way round.
pub(super) fn drop_keys(d: &DropRecord) -> DropKeys {
    let mut keys = DropKeys([None; 6]);
    let mut n = 0;
    let mut add = |t: FiveTuple, vxlan: bool, nat: bool| {
        if t.proto == IPPROTO_TCP && n + 2 <= keys.0.len() {
            let fwd = Via {
                dir: Direction::Forward,
                vxlan,
                nat,
            };
            keys.0[n] = Some((t, fwd));
            keys.0[n + 1] = Some((
                t.reversed(),
                Via {
                    dir: Direction::Reply,
                    ..fwd
                },
            ));
            n += 2;
        }
    };
    if let Some(p) = &d.packet {
        add(p.tuple, false, false);
        if let Some(ct) = &d.ct
            && ct.orig != p.tuple
            && ct.orig != p.tuple.reversed()
        {
            add(ct.orig, false, true);
        }
        if let Some(inner) = p.vxlan.as_ref().and_then(|v| v.inner.as_deref()) {
            add(inner.tuple, true, false);
        }
    }
    keys
}
