//! One conntrack entry, looked up by its original tuple over ctnetlink.
//!
//! A pod's SYN is masqueraded (often with `fully-random`) before the overlay encapsulates it, so
//! a drop on the receiving node shows the post-NAT inner tuple. Only the client netns's
//! conntrack entry ties that back to the client's socket: its reply tuple, reversed, is what went
//! on the wire ([`CtEntry::wire_tuple`]).
//!
//! The request is a single `IPCTNL_MSG_CT_GET` with `CTA_TUPLE_ORIG`, hand-encoded: it is five
//! small attributes, and the decoder only needs the two tuples and the status of the reply.
//! Constants are from `include/uapi/linux/netfilter/nfnetlink.h` and `nfnetlink_conntrack.h`.
//! Encoding and decoding are pure; decoding bounds-checks every read and never panics, since a
//! reply is foreign bytes. [`lookup`] uses a fresh socket, so it works in whatever netns the
//! calling thread is in (the caller `setns`es a thread to reach a pod's netns).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use netlat_core::packet::FiveTuple;
use rtnetlink::packet_core::{NLA_F_NESTED, NLM_F_ACK, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR};
use rtnetlink::sys::protocols::NETLINK_NETFILTER;
use rtnetlink::sys::{Socket, SocketAddr as NetlinkAddr};

use crate::node::{
    NodeError,
    nl::{self, align4, set_recv_timeout},
};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
/// nfnetlink message types carry the subsystem in the high byte.
const CT_GET: u16 = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET;
/// The kernel answers a GET with the entry as a NEW message.
const CT_NEW: u16 = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW;
const NFNETLINK_V0: u8 = 0;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// `IPS_*` status bits (include/uapi/linux/netfilter/nf_conntrack_common.h) netlat reads.
pub const IPS_SEEN_REPLY: u32 = 1 << 1;
pub const IPS_CONFIRMED: u32 = 1 << 3;
pub const IPS_SRC_NAT: u32 = 1 << 4;
pub const IPS_DST_NAT: u32 = 1 << 5;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;
/// The sequence number of the one request a [`lookup`] socket sends.
const SEQ: u32 = 1;
/// Bounds every recv so a kernel that never answers cannot hang the caller.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);
/// Far more than an entry message (a few hundred bytes) needs.
const RECV_BUF: usize = 64 * 1024;

/// A conntrack entry: both directions' tuples and the `IPS_*` status bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtEntry {
    pub orig: FiveTuple,
    pub reply: FiveTuple,
    pub status: u32,
}

impl CtEntry {
    /// The tuple the original direction's packets carry after NAT: the reply tuple reversed.
    #[must_use]
    pub fn wire_tuple(&self) -> FiveTuple {
        self.reply.reversed()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CtnlError {
    #[error("ctnetlink socket: {op}: {source}")]
    Socket {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("no ctnetlink reply within {0:?}")]
    Timeout(Duration),
    #[error("a tuple's addresses must share a family: {0}")]
    MixedFamily(FiveTuple),
    #[error("truncated {what}: {len} bytes, need {need}")]
    Truncated {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("ctnetlink refused the lookup: {}", io::Error::from_raw_os_error(*.errno))]
    Kernel { errno: i32 },
}

/// Encodes an `IPCTNL_MSG_CT_GET` request for the entry whose original tuple is `orig`.
///
/// The nfgenmsg family follows `orig.src`; a tuple mixing families is encoded as given and the
/// kernel rejects it ([`lookup`] refuses it first). Ports are sent for every protocol, so only
/// port-carrying protocols (TCP, UDP, SCTP, ...) can be looked up, not ICMP.
#[must_use]
pub fn encode_get(orig: &FiveTuple, seq: u32) -> Vec<u8> {
    let family = match orig.src {
        SocketAddr::V4(_) => libc::AF_INET as u8,
        SocketAddr::V6(_) => libc::AF_INET6 as u8,
    };
    let mut ip = Vec::with_capacity(40);
    put_ip(&mut ip, true, orig.src.ip());
    put_ip(&mut ip, false, orig.dst.ip());
    let mut proto = Vec::with_capacity(24);
    put_nla(&mut proto, CTA_PROTO_NUM, &[orig.proto]);
    put_nla(
        &mut proto,
        CTA_PROTO_SRC_PORT,
        &orig.src.port().to_be_bytes(),
    );
    put_nla(
        &mut proto,
        CTA_PROTO_DST_PORT,
        &orig.dst.port().to_be_bytes(),
    );
    let mut tuple = Vec::with_capacity(ip.len() + proto.len() + 2 * NLA_HDRLEN);
    put_nla(&mut tuple, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    put_nla(&mut tuple, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);

    let len = NLMSG_HDRLEN + NFGENMSG_LEN + NLA_HDRLEN + tuple.len();
    let mut msg = Vec::with_capacity(len);
    // The message is a few dozen bytes, far below u32::MAX.
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&CT_GET.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills in ours
    msg.extend_from_slice(&[family, NFNETLINK_V0, 0, 0]); // res_id 0
    put_nla(&mut msg, CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple);
    msg
}

/// Decodes the messages of one reply datagram (or several concatenated): the entry if the buffer
/// holds an `IPCTNL_MSG_CT_NEW` message, `None` for an ack alone or for `-ENOENT` (no such
/// entry), and an error for any other kernel error or malformed bytes.
pub fn decode_reply(buf: &[u8]) -> Result<Option<CtEntry>, CtnlError> {
    decode(buf, None).map(|d| d.entry)
}

/// Looks up the conntrack entry whose original tuple is `orig`, in the calling thread's netns.
/// `Ok(None)` when there is no such entry.
pub fn lookup(orig: &FiveTuple) -> Result<Option<CtEntry>, CtnlError> {
    if orig.src.is_ipv4() != orig.dst.is_ipv4() {
        return Err(CtnlError::MixedFamily(*orig));
    }
    let sock_err = |op| move |source| CtnlError::Socket { op, source };
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(sock_err("socket"))?;
    set_recv_timeout(&socket, RECV_TIMEOUT).map_err(sock_err("SO_RCVTIMEO"))?;
    socket.bind_auto().map_err(sock_err("bind"))?;
    // Connected to the kernel, so nothing but its answers is received.
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(sock_err("connect"))?;
    socket
        .send(&encode_get(orig, SEQ), 0)
        .map_err(sock_err("send"))?;

    // The entry and the ack arrive as separate datagrams; the ack (or an error) ends the answer.
    let mut entry = None;
    let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUF);
    loop {
        buf.clear();
        let len = match socket.recv(&mut buf, libc::MSG_TRUNC) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(CtnlError::Timeout(RECV_TIMEOUT));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(sock_err("recv")(e)),
        };
        if len > buf.len() {
            return Err(CtnlError::Truncated {
                what: "ctnetlink datagram (receive buffer)",
                len: buf.len(),
                need: len,
            });
        }
        let decoded = decode(&buf, Some(SEQ))?;
        entry = entry.or(decoded.entry);
        if decoded.done {
            return Ok(entry);
        }
    }
}

/// What one buffer of reply messages said.
struct Decoded {
    entry: Option<CtEntry>,
    /// An ack, `-ENOENT` or `NLMSG_DONE` was seen: nothing more will come.
    done: bool,
}

/// Walks the netlink messages in `buf`; with `seq`, messages of other requests are skipped.
fn decode(buf: &[u8], seq: Option<u32>) -> Result<Decoded, CtnlError> {
    let mut out = Decoded {
        entry: None,
        done: false,
    };
    let mut rest = buf;
    while !rest.is_empty() {
        let header = rest.get(..NLMSG_HDRLEN).ok_or(CtnlError::Truncated {
            what: "netlink message header",
            len: rest.len(),
            need: NLMSG_HDRLEN,
        })?;
        let len = ne_u32(&header[0..4]) as usize;
        let kind = ne_u16(&header[4..6]);
        let msg_seq = ne_u32(&header[8..12]);
        if len < NLMSG_HDRLEN {
            return Err(CtnlError::Malformed {
                what: "netlink message",
                reason: format!("length {len} is shorter than its header"),
            });
        }
        let payload = rest.get(NLMSG_HDRLEN..len).ok_or(CtnlError::Truncated {
            what: "netlink message",
            len: rest.len(),
            need: len,
        })?;
        if seq.is_none_or(|s| s == msg_seq) {
            match kind {
                NLMSG_ERROR => {
                    let errno = payload.get(..4).ok_or(CtnlError::Truncated {
                        what: "netlink error message",
                        len: payload.len(),
                        need: 4,
                    })?;
                    match i32::from_ne_bytes([errno[0], errno[1], errno[2], errno[3]]) {
                        0 => out.done = true,
                        e if e == -libc::ENOENT => out.done = true,
                        e => return Err(CtnlError::Kernel { errno: -e }),
                    }
                }
                NLMSG_DONE => out.done = true,
                CT_NEW => out.entry = Some(decode_entry(payload)?),
                // NOOP, OVERRUN and anything else carry nothing about the entry.
                _ => {}
            }
        }
        // The last message's padding may be absent from the buffer.
        rest = rest.get(align4(len)..).unwrap_or_default();
    }
    Ok(out)
}

/// An `IPCTNL_MSG_CT_NEW` payload: nfgenmsg, then the entry's attributes.
fn decode_entry(payload: &[u8]) -> Result<CtEntry, CtnlError> {
    let attrs = payload.get(NFGENMSG_LEN..).ok_or(CtnlError::Truncated {
        what: "nfgenmsg",
        len: payload.len(),
        need: NFGENMSG_LEN,
    })?;
    let (mut orig, mut reply, mut status) = (None, None, None);
    for (kind, value) in nlas(attrs)? {
        match kind {
            CTA_TUPLE_ORIG => orig = Some(decode_tuple(value)?),
            CTA_TUPLE_REPLY => reply = Some(decode_tuple(value)?),
            CTA_STATUS => status = Some(be_u32(value, "CTA_STATUS")?),
            _ => {}
        }
    }
    Ok(CtEntry {
        orig: orig.ok_or(missing("conntrack entry", "CTA_TUPLE_ORIG"))?,
        reply: reply.ok_or(missing("conntrack entry", "CTA_TUPLE_REPLY"))?,
        status: status.ok_or(missing("conntrack entry", "CTA_STATUS"))?,
    })
}

/// A `CTA_TUPLE_*` nest. Ports default to 0 for protocols without them (ICMP).
fn decode_tuple(buf: &[u8]) -> Result<FiveTuple, CtnlError> {
    let (mut src, mut dst, mut proto) = (None, None, None);
    let (mut sport, mut dport) = (0, 0);
    for nla in nlas(buf)? {
        match nla {
            (CTA_TUPLE_IP, ip) => {
                for nla in nlas(ip)? {
                    match nla {
                        (CTA_IP_V4_SRC, v) => src = Some(v4(v, "CTA_IP_V4_SRC")?),
                        (CTA_IP_V4_DST, v) => dst = Some(v4(v, "CTA_IP_V4_DST")?),
                        (CTA_IP_V6_SRC, v) => src = Some(v6(v, "CTA_IP_V6_SRC")?),
                        (CTA_IP_V6_DST, v) => dst = Some(v6(v, "CTA_IP_V6_DST")?),
                        _ => {}
                    }
                }
            }
            (CTA_TUPLE_PROTO, l4) => {
                for nla in nlas(l4)? {
                    match nla {
                        (CTA_PROTO_NUM, v) => {
                            proto = Some(*v.first().ok_or(CtnlError::Truncated {
                                what: "CTA_PROTO_NUM",
                                len: 0,
                                need: 1,
                            })?);
                        }
                        (CTA_PROTO_SRC_PORT, v) => sport = be_u16(v, "CTA_PROTO_SRC_PORT")?,
                        (CTA_PROTO_DST_PORT, v) => dport = be_u16(v, "CTA_PROTO_DST_PORT")?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(FiveTuple {
        proto: proto.ok_or(missing("conntrack tuple", "CTA_PROTO_NUM"))?,
        src: SocketAddr::new(
            src.ok_or(missing("conntrack tuple", "source address"))?,
            sport,
        ),
        dst: SocketAddr::new(
            dst.ok_or(missing("conntrack tuple", "destination address"))?,
            dport,
        ),
    })
}

/// The attributes of `buf` as `(type without flag bits, value)`, through the node readers'
/// one attribute parser.
fn nlas(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, CtnlError> {
    nl::attrs(buf).map_err(|e| match e {
        NodeError::Truncated { what, len, need } => CtnlError::Truncated { what, len, need },
        NodeError::Malformed { what, reason } => CtnlError::Malformed { what, reason },
        other => CtnlError::Malformed {
            what: "netlink attribute",
            reason: other.to_string(),
        },
    })
}

fn put_nla(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend(nl::nla(kind, value));
}

fn put_ip(out: &mut Vec<u8>, src: bool, ip: IpAddr) {
    match (ip, src) {
        (IpAddr::V4(a), true) => put_nla(out, CTA_IP_V4_SRC, &a.octets()),
        (IpAddr::V4(a), false) => put_nla(out, CTA_IP_V4_DST, &a.octets()),
        (IpAddr::V6(a), true) => put_nla(out, CTA_IP_V6_SRC, &a.octets()),
        (IpAddr::V6(a), false) => put_nla(out, CTA_IP_V6_DST, &a.octets()),
    }
}

fn missing(what: &'static str, attr: &str) -> CtnlError {
    CtnlError::Malformed {
        what,
        reason: format!("no {attr}"),
    }
}

fn exact<const N: usize>(v: &[u8], what: &'static str) -> Result<[u8; N], CtnlError> {
    v.get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or(CtnlError::Truncated {
            what,
            len: v.len(),
            need: N,
        })
}

fn v4(v: &[u8], what: &'static str) -> Result<IpAddr, CtnlError> {
    Ok(IpAddr::V4(Ipv4Addr::from(exact::<4>(v, what)?)))
}

fn v6(v: &[u8], what: &'static str) -> Result<IpAddr, CtnlError> {
    Ok(IpAddr::V6(Ipv6Addr::from(exact::<16>(v, what)?)))
}

fn be_u16(v: &[u8], what: &'static str) -> Result<u16, CtnlError> {
    Ok(u16::from_be_bytes(exact(v, what)?))
}

fn be_u32(v: &[u8], what: &'static str) -> Result<u32, CtnlError> {
    Ok(u32::from_be_bytes(exact(v, what)?))
}

/// Callers pass exactly two bytes, sliced from a checked header.
fn ne_u16(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

/// Callers pass exactly four bytes, sliced from a checked header.
fn ne_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: u8 = 6;

    fn tuple(src: &str, dst: &str) -> FiveTuple {
        FiveTuple {
            proto: TCP,
            src: src.parse().expect("test address"),
            dst: dst.parse().expect("test address"),
        }
    }

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_nla(&mut out, kind, value);
        out
    }

    fn msg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&1234u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align4(out.len()), 0);
        out
    }

    fn error(seq: u32, errno: i32) -> Vec<u8> {
        // The error code, then the request's header as NLM_F_ACK echoes it.
        let mut payload = errno.to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; NLMSG_HDRLEN]);
        msg(NLMSG_ERROR, seq, &payload)
    }

    /// A CT_NEW reply as the kernel builds it, with extra attributes the decoder must skip.
    fn entry_msg(orig: &FiveTuple, reply: &FiveTuple, status: u32) -> Vec<u8> {
        let tuple_attr = |kind: u16, t: &FiveTuple| {
            let mut ip = Vec::new();
            put_ip(&mut ip, true, t.src.ip());
            put_ip(&mut ip, false, t.dst.ip());
            let mut l4 = nla(CTA_PROTO_NUM, &[t.proto]);
            l4.extend(nla(CTA_PROTO_SRC_PORT, &t.src.port().to_be_bytes()));
            l4.extend(nla(CTA_PROTO_DST_PORT, &t.dst.port().to_be_bytes()));
            let mut inner = nla(CTA_TUPLE_IP | NLA_F_NESTED, &ip);
            inner.extend(nla(CTA_TUPLE_PROTO | NLA_F_NESTED, &l4));
            inner.extend(nla(3 | NLA_F_NESTED, &nla(1, &[0, 0]))); // CTA_TUPLE_ZONE-like extra
            nla(kind | NLA_F_NESTED, &inner)
        };
        let mut payload = vec![libc::AF_INET as u8, 0, 0, 0];
        payload.extend(tuple_attr(CTA_TUPLE_ORIG, orig));
        payload.extend(tuple_attr(CTA_TUPLE_REPLY, reply));
        payload.extend(nla(CTA_STATUS, &status.to_be_bytes()));
        payload.extend(nla(7, &120u32.to_be_bytes())); // CTA_TIMEOUT
        payload.extend(nla(12, &7u32.to_be_bytes())); // CTA_ID
        msg(CT_NEW, SEQ, &payload)
    }

    #[test]
    fn constants_match_the_kernel_headers() {
        assert_eq!(CT_GET, 0x0101);
        assert_eq!(CT_NEW, 0x0100);
        assert_eq!(NETLINK_NETFILTER, 12);
        assert_eq!(NLM_F_REQUEST | NLM_F_ACK, 0x5);
    }

    #[test]
    fn encodes_an_ipv4_get() {
        let t = tuple("10.0.0.1:40000", "10.0.0.2:80");
        let ne16 = |v: u16| v.to_ne_bytes().to_vec();
        let ne32 = |v: u32| v.to_ne_bytes().to_vec();
        let want: Vec<u8> = [
            // nlmsghdr: length 72, CT_GET, REQUEST|ACK, seq 7, port 0
            ne32(72),
            ne16(0x0101),
            ne16(0x0005),
            ne32(7),
            ne32(0),
            // nfgenmsg: AF_INET, version 0, res_id 0
            vec![2, 0, 0, 0],
            // CTA_TUPLE_ORIG, nested: 4 + 20 + 28
            ne16(52),
            ne16(0x8001),
            // CTA_TUPLE_IP, nested
            ne16(20),
            ne16(0x8001),
            ne16(8),
            ne16(1),
            vec![10, 0, 0, 1],
            ne16(8),
            ne16(2),
            vec![10, 0, 0, 2],
            // CTA_TUPLE_PROTO, nested
            ne16(28),
            ne16(0x8002),
            ne16(5),
            ne16(1),
            vec![6, 0, 0, 0],
            ne16(6),
            ne16(2),
            vec![0x9c, 0x40, 0, 0],
            ne16(6),
            ne16(3),
            vec![0, 80, 0, 0],
        ]
        .concat();
        assert_eq!(encode_get(&t, 7), want);
    }

    #[test]
    fn encodes_an_ipv6_get() {
        let t = tuple("[fd00::1]:1000", "[fd00::2]:443");
        let req = encode_get(&t, 1);
        assert_eq!(req.len(), 16 + 4 + 4 + (4 + 20 + 20) + 28);
        assert_eq!(req[16], libc::AF_INET6 as u8);
        // The request's tuple decodes back to the query.
        assert_eq!(decode_tuple(&req[24..]).ok(), Some(t));
    }

    #[test]
    fn decodes_an_entry_and_its_ack() {
        let orig = tuple("10.0.0.1:40000", "10.0.0.2:80");
        let reply = tuple("10.0.0.2:80", "192.168.1.5:61234");
        let status = IPS_CONFIRMED | IPS_SRC_NAT | IPS_SEEN_REPLY;
        let entry_only = entry_msg(&orig, &reply, status);
        let want = CtEntry {
            orig,
            reply,
            status,
        };
        assert_eq!(decode_reply(&entry_only).ok().flatten(), Some(want));
        assert_eq!(want.wire_tuple(), tuple("192.168.1.5:61234", "10.0.0.2:80"));

        let mut both = entry_only.clone();
        both.extend(error(SEQ, 0));
        let d = decode(&both, Some(SEQ)).expect("decodes");
        assert!(d.done);
        assert_eq!(d.entry, Some(want));
        // Messages of another request are skipped.
        let d = decode(&both, Some(SEQ + 1)).expect("decodes");
        assert!(!d.done && d.entry.is_none());
    }

    #[test]
    fn decodes_acks_and_errors() {
        let ack = error(SEQ, 0);
        assert!(matches!(decode_reply(&ack), Ok(None)));
        assert!(decode(&ack, Some(SEQ)).is_ok_and(|d| d.done));
        let enoent = error(SEQ, -libc::ENOENT);
        assert!(matches!(decode_reply(&enoent), Ok(None)));
        assert!(decode(&enoent, Some(SEQ)).is_ok_and(|d| d.done));
        let eperm = error(SEQ, -libc::EPERM);
        match decode_reply(&eperm) {
            Err(e @ CtnlError::Kernel { errno }) => {
                assert_eq!(errno, libc::EPERM);
                assert!(e.to_string().contains("ctnetlink refused"), "{e}");
            }
            other => panic!("want a kernel error, got {other:?}"),
        }
        assert!(matches!(decode_reply(&[]), Ok(None)));
    }

    #[test]
    fn reports_malformed_replies() {
        let orig = tuple("10.0.0.1:1", "10.0.0.2:2");
        let full = entry_msg(&orig, &orig.reversed(), 0);
        // A length field claiming more than the buffer holds.
        match decode_reply(&full[..full.len() - 4]) {
            Err(CtnlError::Truncated { what, len, need }) => {
                assert_eq!(what, "netlink message");
                assert_eq!((len, need), (full.len() - 4, full.len()));
            }
            other => panic!("want truncation, got {other:?}"),
        }
        // An entry without its reply tuple.
        let mut payload = vec![2, 0, 0, 0];
        payload.extend(nla(CTA_STATUS, &0u32.to_be_bytes()));
        assert!(matches!(
            decode_reply(&msg(CT_NEW, SEQ, &payload)),
            Err(CtnlError::Malformed { .. })
        ));
        // An attribute length below its header.
        let mut payload = vec![2, 0, 0, 0];
        payload.extend_from_slice(&2u16.to_ne_bytes());
        payload.extend_from_slice(&CTA_STATUS.to_ne_bytes());
        assert!(matches!(
            decode_reply(&msg(CT_NEW, SEQ, &payload)),
            Err(CtnlError::Malformed { .. })
        ));
    }

    #[test]
    fn never_panics_on_truncation_or_garbage() {
        let orig = tuple("10.0.0.1:40000", "10.0.0.2:80");
        let mut full = entry_msg(&orig, &orig.reversed(), IPS_CONFIRMED);
        full.extend(error(SEQ, 0));
        for cut in 0..full.len() {
            let _ = decode_reply(&full[..cut]);
            let _ = decode(&full[..cut], Some(SEQ));
        }
        // Corrupt each byte of the valid message too: lengths that lie, types that change.
        for i in 0..full.len() {
            for v in [0u8, 1, 3, 0x7f, 0xff] {
                let mut b = full.clone();
                b[i] = v;
                let _ = decode_reply(&b);
            }
        }
        // xorshift: deterministic random buffers, some starting with a plausible header.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 6 && next() % 2 == 0 {
                b[..4].copy_from_slice(&(len as u32).to_ne_bytes());
                b[4..6].copy_from_slice(&CT_NEW.to_ne_bytes());
            }
            let _ = decode_reply(&b);
        }
    }

    #[test]
    fn lookup_refuses_mixed_families() {
        let t = tuple("10.0.0.1:1", "[fd00::1]:2");
        assert!(matches!(lookup(&t), Err(CtnlError::MixedFamily(_))));
    }
}
