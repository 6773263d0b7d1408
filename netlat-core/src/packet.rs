//! Decoder for the packet bytes captured from a dropped skb.
//!
//! The eBPF side copies up to 160 bytes starting at the skb's network header together with
//! `skb->protocol` (0x0800 IPv4 or 0x86dd IPv6). [`decode`] turns those bytes into the
//! connection's [`FiveTuple`] plus the few details netlat reasons about: TCP flags, the UDP
//! checksum field, and for VXLAN overlays (flannel, Calico, Cilium) the VNI and the inner
//! packet, so a drop of encapsulated traffic can be attributed to the pod-to-pod connection.
//!
//! The decoder is pure and never panics: the bytes come from a kernel snapshot of a packet the
//! kernel itself rejected, so they may be truncated, garbage, or carry length fields that lie.
//! Every read is bounds-checked and a short buffer yields [`DecodeError::Truncated`].
//!
//! Length fields that describe the whole packet (IPv4 total length, IPv6 payload length) are
//! deliberately ignored: GSO/TSO skbs carry 0 or a stale value there, and the capture is what
//! bounds the headers anyway. Header-length fields (IPv4 IHL, IPv6 extension lengths) are
//! honoured because the next layer's position depends on them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

/// `skb->protocol` of an IPv4 packet.
pub const ETH_P_IP: u16 = 0x0800;
/// `skb->protocol` of an IPv6 packet.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// Ethertype of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// UDP ports netlat treats as VXLAN: the IANA port and the Linux kernel's legacy default
/// (used by flannel).
pub const DEFAULT_VXLAN_PORTS: [u16; 2] = [4789, 8472];

const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;
/// More extension headers than this is not a real packet; the cap bounds the work on garbage.
const IPV6_MAX_EXT_HEADERS: usize = 8;
/// VXLAN flags bit saying the VNI field is valid (RFC 7348).
const VXLAN_FLAG_I: u8 = 0x08;

/// Why the captured bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The capture ends (or a header-length field points) past the end of the bytes.
    #[error("truncated {layer} header: need {need} bytes, have {have}")]
    Truncated {
        layer: &'static str,
        need: usize,
        have: usize,
    },
    /// The IP version nibble does not match the ethertype, or the IPv4 header length is below
    /// the 20-byte minimum: either way this is not an IP header.
    #[error("not a valid IP header (bad version or header length)")]
    BadVersion,
    /// A non-first fragment: it carries no transport header, so there are no ports.
    #[error("non-first IP fragment, no transport header")]
    Fragment,
    /// The transport protocol (or an IPv6 next header) is not TCP or UDP.
    #[error("unsupported IP protocol {proto}")]
    Unsupported { proto: u8 },
    /// `skb->protocol` is neither IPv4 nor IPv6.
    #[error("unknown ethertype {0:#06x}")]
    UnknownEthertype(u16),
}

/// A transport connection's endpoints as seen in one packet (sender first).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub struct FiveTuple {
    pub proto: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl FiveTuple {
    /// The same connection seen from the other direction, to match replies with requests.
    #[must_use]
    pub fn reversed(&self) -> FiveTuple {
        FiveTuple {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
        }
    }
}

impl fmt::Display for FiveTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proto {
            IPPROTO_TCP => f.write_str("tcp")?,
            IPPROTO_UDP => f.write_str("udp")?,
            other => write!(f, "proto {other}")?,
        }
        write!(f, " {} -> {}", self.src, self.dst)
    }
}

/// The flags byte (byte 13) of a TCP header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    #[must_use]
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    #[must_use]
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
    #[must_use]
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    #[must_use]
    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
}

impl fmt::Display for TcpFlags {
    /// Set flags joined by `|`, handshake flags first ("SYN|ACK", "FIN|ACK"); "none" if empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u8, &str); 8] = [
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::RST, "RST"),
            (TcpFlags::PSH, "PSH"),
            (TcpFlags::ACK, "ACK"),
            (TcpFlags::URG, "URG"),
            (TcpFlags::ECE, "ECE"),
            (TcpFlags::CWR, "CWR"),
        ];
        let mut first = true;
        for (bit, name) in NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// One decoded packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    pub tuple: FiveTuple,
    /// Set for TCP.
    pub tcp_flags: Option<TcpFlags>,
    /// Set for UDP: the raw checksum field (0 means "no checksum" over IPv4). Kept because a
    /// bad outer checksum on VXLAN traffic is a known offload bug netlat names.
    pub udp_checksum: Option<u16>,
    /// Set for UDP to one of the VXLAN ports whose payload starts with a valid VXLAN header.
    pub vxlan: Option<Vxlan>,
}

/// A VXLAN header and, if it could be decoded, the encapsulated packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vxlan {
    pub vni: u32,
    /// The inner Ethernet → IP → TCP/UDP packet; `None` when the capture ends before its
    /// transport header or it is not something [`decode`] understands. Never itself carries
    /// `vxlan` (only one level of encapsulation is followed).
    pub inner: Option<Box<Packet>>,
}

/// Decodes bytes starting at the network header.
///
/// `ethertype` is `skb->protocol` in host byte order; `bytes` must hold only the valid
/// captured bytes (slice the capture buffer to `cap_len` first). UDP packets whose destination
/// port is in `vxlan_ports` (netlat passes [`DEFAULT_VXLAN_PORTS`]) are decoded as VXLAN, and
/// their inner packet one level deep.
///
/// # Errors
///
/// [`DecodeError`] when no five-tuple can be read: a header cut short, not IP, a non-first
/// fragment, or a transport other than TCP/UDP. Problems inside a VXLAN payload are not
/// errors; they leave [`Vxlan::inner`] (or [`Packet::vxlan`]) `None`.
pub fn decode(ethertype: u16, bytes: &[u8], vxlan_ports: &[u16]) -> Result<Packet, DecodeError> {
    let (src, dst, proto, l4) = match ethertype {
        ETH_P_IP => ipv4(bytes)?,
        ETH_P_IPV6 => ipv6(bytes)?,
        other => return Err(DecodeError::UnknownEthertype(other)),
    };
    transport(proto, src, dst, l4, vxlan_ports)
}

/// Splits a fixed-size header off the front of `b`.
fn header<'a, const N: usize>(
    b: &'a [u8],
    layer: &'static str,
) -> Result<(&'a [u8; N], &'a [u8]), DecodeError> {
    b.split_first_chunk::<N>().ok_or(DecodeError::Truncated {
        layer,
        need: N,
        have: b.len(),
    })
}

fn be16(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

/// Returns (src, dst, protocol, transport bytes).
fn ipv4(b: &[u8]) -> Result<(IpAddr, IpAddr, u8, &[u8]), DecodeError> {
    let (h, _) = header::<20>(b, "ipv4")?;
    if h[0] >> 4 != 4 {
        return Err(DecodeError::BadVersion);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(DecodeError::BadVersion);
    }
    let l4 = b.get(ihl..).ok_or(DecodeError::Truncated {
        layer: "ipv4 options",
        need: ihl,
        have: b.len(),
    })?;
    // Offset in 8-byte units; only the first fragment (offset 0) has the transport header.
    if be16(h[6], h[7]) & 0x1fff != 0 {
        return Err(DecodeError::Fragment);
    }
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    Ok((src.into(), dst.into(), h[9], l4))
}

/// Returns (src, dst, final next header, transport bytes), skipping extension headers.
fn ipv6(b: &[u8]) -> Result<(IpAddr, IpAddr, u8, &[u8]), DecodeError> {
    const LAYER: &str = "ipv6";
    if b.len() < 40 {
        return Err(DecodeError::Truncated {
            layer: LAYER,
            need: 40,
            have: b.len(),
        });
    }
    let (fixed, rest) = header::<8>(b, LAYER)?;
    let (src, rest) = header::<16>(rest, LAYER)?;
    let (dst, mut rest) = header::<16>(rest, LAYER)?;
    if fixed[0] >> 4 != 6 {
        return Err(DecodeError::BadVersion);
    }
    let mut next = fixed[6];
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let (ext, _) = header::<2>(rest, "ipv6 extension")?;
                // Hdr Ext Len counts 8-byte units beyond the first 8.
                let len = (usize::from(ext[1]) + 1) * 8;
                next = ext[0];
                rest = rest.get(len..).ok_or(DecodeError::Truncated {
                    layer: "ipv6 extension",
                    need: len,
                    have: rest.len(),
                })?;
            }
            IPV6_FRAGMENT => {
                let (frag, after) = header::<8>(rest, "ipv6 fragment")?;
                if be16(frag[2], frag[3]) >> 3 != 0 {
                    return Err(DecodeError::Fragment);
                }
                next = frag[0];
                rest = after;
            }
            _ => break,
        }
    }
    // Anything left that is not TCP/UDP (including a chain longer than the cap) is reported
    // by `transport` as Unsupported.
    Ok((
        Ipv6Addr::from(*src).into(),
        Ipv6Addr::from(*dst).into(),
        next,
        rest,
    ))
}

fn transport(
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    l4: &[u8],
    vxlan_ports: &[u16],
) -> Result<Packet, DecodeError> {
    let tuple = |sport, dport| FiveTuple {
        proto,
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
    };
    match proto {
        IPPROTO_TCP => {
            let (h, _) = header::<20>(l4, "tcp")?;
            Ok(Packet {
                tuple: tuple(be16(h[0], h[1]), be16(h[2], h[3])),
                tcp_flags: Some(TcpFlags(h[13])),
                udp_checksum: None,
                vxlan: None,
            })
        }
        IPPROTO_UDP => {
            let (h, payload) = header::<8>(l4, "udp")?;
            let dport = be16(h[2], h[3]);
            Ok(Packet {
                tuple: tuple(be16(h[0], h[1]), dport),
                tcp_flags: None,
                udp_checksum: Some(be16(h[6], h[7])),
                vxlan: if vxlan_ports.contains(&dport) {
                    vxlan(payload)
                } else {
                    None
                },
            })
        }
        other => Err(DecodeError::Unsupported { proto: other }),
    }
}

/// `None` if the payload is too short for a VXLAN header or the I flag is clear (then it is
/// not VXLAN as far as we can tell, just UDP to that port).
fn vxlan(payload: &[u8]) -> Option<Vxlan> {
    let (h, frame) = payload.split_first_chunk::<8>()?;
    if h[0] & VXLAN_FLAG_I == 0 {
        return None;
    }
    let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
    // Any failure inside is not an error of the outer packet, whose tuple is still good.
    let inner = ethernet(frame).ok().map(Box::new);
    Some(Vxlan { vni, inner })
}

fn ethernet(frame: &[u8]) -> Result<Packet, DecodeError> {
    let (eth, mut rest) = header::<14>(frame, "ethernet")?;
    let mut ethertype = be16(eth[12], eth[13]);
    if ethertype == ETH_P_8021Q {
        let (tag, after) = header::<4>(rest, "802.1q")?;
        ethertype = be16(tag[2], tag[3]);
        rest = after;
    }
    // No VXLAN ports: follow only one level of encapsulation.
    decode(ethertype, rest, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    const A4: [u8; 4] = [10, 0, 0, 1];
    const B4: [u8; 4] = [10, 0, 0, 2];
    const SYN: u8 = TcpFlags::SYN;
    const SYNACK: u8 = TcpFlags::SYN | TcpFlags::ACK;

    fn a6() -> Ipv6Addr {
        "fd00::1".parse().unwrap()
    }
    fn b6() -> Ipv6Addr {
        "fd00::2".parse().unwrap()
    }

    /// IPv4 header (+ payload); `options` must be a multiple of 4 bytes.
    fn ipv4_pkt(
        proto: u8,
        src: [u8; 4],
        dst: [u8; 4],
        options: &[u8],
        frag: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let hlen = 20 + options.len();
        let total = u16::try_from(hlen + payload.len()).unwrap();
        let mut v = vec![0x40 | u8::try_from(hlen / 4).unwrap(), 0];
        v.extend(total.to_be_bytes());
        v.extend([0x12, 0x34]);
        v.extend(frag.to_be_bytes());
        v.extend([64, proto, 0, 0]);
        v.extend(src);
        v.extend(dst);
        v.extend(options);
        v.extend(payload);
        v
    }

    /// IPv6 header (+ payload, which may start with extension headers).
    fn ipv6_pkt(next: u8, src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x60, 0, 0, 0];
        v.extend(u16::try_from(payload.len()).unwrap().to_be_bytes());
        v.extend([next, 64]);
        v.extend(src.octets());
        v.extend(dst.octets());
        v.extend(payload);
        v
    }

    /// Hop-by-hop / destination options header of `8 * (units + 1)` bytes, padded with PadN.
    fn opts_ext(next: u8, units: u8, payload: &[u8]) -> Vec<u8> {
        let len = (usize::from(units) + 1) * 8;
        let mut v = vec![next, units, 1, u8::try_from(len - 4).unwrap()];
        v.resize(len, 0);
        v.extend(payload);
        v
    }

    fn frag_ext(next: u8, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![next, 0];
        v.extend(((offset << 3) | u16::from(more)).to_be_bytes());
        v.extend([0xde, 0xad, 0xbe, 0xef]);
        v.extend(payload);
        v
    }

    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(sport.to_be_bytes());
        v.extend(dport.to_be_bytes());
        v.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        v
    }

    fn udp(sport: u16, dport: u16, csum: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(sport.to_be_bytes());
        v.extend(dport.to_be_bytes());
        v.extend(u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        v.extend(csum.to_be_bytes());
        v.extend(payload);
        v
    }

    fn vxlan_hdr(flags: u8, vni: u32, payload: &[u8]) -> Vec<u8> {
        let [_, x, y, z] = vni.to_be_bytes();
        let mut v = vec![flags, 0, 0, 0, x, y, z, 0];
        v.extend(payload);
        v
    }

    fn eth(ethertype: u16, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x02, 0, 0, 0, 0, 0xaa, 0x02, 0, 0, 0, 0, 0xbb];
        if let Some(id) = vlan {
            v.extend(ETH_P_8021Q.to_be_bytes());
            v.extend(id.to_be_bytes());
        }
        v.extend(ethertype.to_be_bytes());
        v.extend(payload);
        v
    }

    fn tuple(proto: u8, src: &str, dst: &str) -> FiveTuple {
        FiveTuple {
            proto,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        }
    }

    fn tcp_pkt(t: FiveTuple, flags: u8) -> Packet {
        Packet {
            tuple: t,
            tcp_flags: Some(TcpFlags(flags)),
            udp_checksum: None,
            vxlan: None,
        }
    }

    fn udp_pkt(t: FiveTuple, csum: u16) -> Packet {
        Packet {
            tuple: t,
            tcp_flags: None,
            udp_checksum: Some(csum),
            vxlan: None,
        }
    }

    /// Outer IPv4/UDP to `port` with VXLAN VNI 42 around `frame`.
    fn vxlan_v4(port: u16, frame: &[u8]) -> Vec<u8> {
        ipv4_pkt(
            IPPROTO_UDP,
            [192, 168, 0, 1],
            [192, 168, 0, 2],
            &[],
            0,
            &udp(40000, port, 0xbeef, &vxlan_hdr(0x08, 42, frame)),
        )
    }

    fn inner_v4_syn() -> Vec<u8> {
        eth(
            ETH_P_IP,
            None,
            &ipv4_pkt(
                IPPROTO_TCP,
                [10, 244, 1, 5],
                [10, 244, 2, 7],
                &[],
                0,
                &tcp(51000, 8080, SYN),
            ),
        )
    }

    /// (name, ethertype, bytes, expected result)
    type Case = (&'static str, u16, Vec<u8>, Result<Packet, DecodeError>);

    #[test]
    fn decodes_table() {
        let t4 = tuple(IPPROTO_TCP, "10.0.0.1:1234", "10.0.0.2:80");
        let t6 = tuple(IPPROTO_TCP, "[fd00::1]:1234", "[fd00::2]:443");
        let u4 = tuple(IPPROTO_UDP, "10.0.0.1:5353", "10.0.0.2:53");
        let cases: Vec<Case> = vec![
            (
                "ipv4 tcp syn",
                ETH_P_IP,
                ipv4_pkt(IPPROTO_TCP, A4, B4, &[], 0, &tcp(1234, 80, SYN)),
                Ok(tcp_pkt(t4, SYN)),
            ),
            (
                "ipv4 tcp syn|ack",
                ETH_P_IP,
                ipv4_pkt(IPPROTO_TCP, B4, A4, &[], 0, &tcp(80, 1234, SYNACK)),
                Ok(tcp_pkt(t4.reversed(), SYNACK)),
            ),
            (
                "ipv4 with options (IHL 8)",
                ETH_P_IP,
                ipv4_pkt(
                    IPPROTO_TCP,
                    A4,
                    B4,
                    &[0x94, 4, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0],
                    0,
                    &tcp(1234, 80, SYN),
                ),
                Ok(tcp_pkt(t4, SYN)),
            ),
            (
                "ipv4 first fragment still has ports",
                ETH_P_IP,
                ipv4_pkt(IPPROTO_TCP, A4, B4, &[], 0x2000, &tcp(1234, 80, SYN)),
                Ok(tcp_pkt(t4, SYN)),
            ),
            (
                "ipv4 non-first fragment",
                ETH_P_IP,
                ipv4_pkt(IPPROTO_UDP, A4, B4, &[], 0x2000 | 0xb9, &[0; 32]),
                Err(DecodeError::Fragment),
            ),
            (
                "ipv4 icmp",
                ETH_P_IP,
                ipv4_pkt(1, A4, B4, &[], 0, &[8, 0, 0, 0, 0, 1, 0, 1]),
                Err(DecodeError::Unsupported { proto: 1 }),
            ),
            (
                "ipv4 udp",
                ETH_P_IP,
                ipv4_pkt(
                    IPPROTO_UDP,
                    A4,
                    B4,
                    &[],
                    0,
                    &udp(5353, 53, 0x1234, b"query"),
                ),
                Ok(udp_pkt(u4, 0x1234)),
            ),
            (
                "ipv4 udp to a vxlan port without the I flag",
                ETH_P_IP,
                ipv4_pkt(
                    IPPROTO_UDP,
                    A4,
                    B4,
                    &[],
                    0,
                    &udp(5353, 4789, 0, &vxlan_hdr(0, 42, &inner_v4_syn())),
                ),
                Ok(udp_pkt(
                    tuple(IPPROTO_UDP, "10.0.0.1:5353", "10.0.0.2:4789"),
                    0,
                )),
            ),
            (
                "ipv4 udp to a vxlan port, payload shorter than the vxlan header",
                ETH_P_IP,
                ipv4_pkt(
                    IPPROTO_UDP,
                    A4,
                    B4,
                    &[],
                    0,
                    &udp(5353, 4789, 7, &[0x08, 0, 0]),
                ),
                Ok(udp_pkt(
                    tuple(IPPROTO_UDP, "10.0.0.1:5353", "10.0.0.2:4789"),
                    7,
                )),
            ),
            (
                "ipv4 with IHL claiming 60 bytes",
                ETH_P_IP,
                {
                    let mut p = ipv4_pkt(IPPROTO_TCP, A4, B4, &[], 0, &tcp(1234, 80, SYN));
                    p[0] = 0x4f;
                    p
                },
                Err(DecodeError::Truncated {
                    layer: "ipv4 options",
                    need: 60,
                    have: 40,
                }),
            ),
            (
                "ipv4 with IHL below minimum",
                ETH_P_IP,
                {
                    let mut p = ipv4_pkt(IPPROTO_TCP, A4, B4, &[], 0, &tcp(1234, 80, SYN));
                    p[0] = 0x44;
                    p
                },
                Err(DecodeError::BadVersion),
            ),
            (
                "ipv4 with total length 0 (TSO) is ignored",
                ETH_P_IP,
                {
                    let mut p = ipv4_pkt(IPPROTO_TCP, A4, B4, &[], 0, &tcp(1234, 80, SYN));
                    p[2] = 0;
                    p[3] = 0;
                    p
                },
                Ok(tcp_pkt(t4, SYN)),
            ),
            (
                "ipv6 bytes under the ipv4 ethertype",
                ETH_P_IP,
                ipv6_pkt(IPPROTO_TCP, a6(), b6(), &tcp(1234, 443, SYN)),
                Err(DecodeError::BadVersion),
            ),
            (
                "ipv6 tcp",
                ETH_P_IPV6,
                ipv6_pkt(IPPROTO_TCP, a6(), b6(), &tcp(1234, 443, SYN)),
                Ok(tcp_pkt(t6, SYN)),
            ),
            (
                "ipv6 hop-by-hop then tcp",
                ETH_P_IPV6,
                ipv6_pkt(
                    IPV6_HOPOPTS,
                    a6(),
                    b6(),
                    &opts_ext(IPPROTO_TCP, 0, &tcp(1234, 443, SYNACK)),
                ),
                Ok(tcp_pkt(t6, SYNACK)),
            ),
            (
                "ipv6 hop-by-hop, dstopts (24 bytes), first fragment, udp",
                ETH_P_IPV6,
                ipv6_pkt(
                    IPV6_HOPOPTS,
                    a6(),
                    b6(),
                    &opts_ext(
                        IPV6_DSTOPTS,
                        0,
                        &opts_ext(
                            IPV6_FRAGMENT,
                            2,
                            &frag_ext(IPPROTO_UDP, 0, true, &udp(1234, 443, 9, &[])),
                        ),
                    ),
                ),
                Ok(udp_pkt(
                    tuple(IPPROTO_UDP, "[fd00::1]:1234", "[fd00::2]:443"),
                    9,
                )),
            ),
            (
                "ipv6 non-first fragment",
                ETH_P_IPV6,
                ipv6_pkt(
                    IPV6_FRAGMENT,
                    a6(),
                    b6(),
                    &frag_ext(IPPROTO_TCP, 100, false, &[0; 16]),
                ),
                Err(DecodeError::Fragment),
            ),
            (
                "ipv6 icmpv6",
                ETH_P_IPV6,
                ipv6_pkt(58, a6(), b6(), &[128, 0, 0, 0]),
                Err(DecodeError::Unsupported { proto: 58 }),
            ),
            (
                "ipv6 unknown extension stops the walk",
                ETH_P_IPV6,
                ipv6_pkt(51, a6(), b6(), &[IPPROTO_TCP, 4, 0, 0, 0, 0, 0, 0]),
                Err(DecodeError::Unsupported { proto: 51 }),
            ),
            (
                "ipv6 extension length pointing past the capture",
                ETH_P_IPV6,
                ipv6_pkt(
                    IPV6_HOPOPTS,
                    a6(),
                    b6(),
                    &[IPPROTO_TCP, 255, 1, 4, 0, 0, 0, 0],
                ),
                Err(DecodeError::Truncated {
                    layer: "ipv6 extension",
                    need: 2048,
                    have: 8,
                }),
            ),
            (
                "ipv6 endless hop-by-hop chain",
                ETH_P_IPV6,
                ipv6_pkt(IPV6_HOPOPTS, a6(), b6(), &[0u8; 120]),
                Err(DecodeError::Unsupported {
                    proto: IPV6_HOPOPTS,
                }),
            ),
            (
                "ipv4 bytes under the ipv6 ethertype",
                ETH_P_IPV6,
                ipv4_pkt(IPPROTO_TCP, A4, B4, &[], 0, &tcp(1234, 80, SYN)),
                Err(DecodeError::BadVersion),
            ),
            (
                "arp",
                0x0806,
                vec![0; 28],
                Err(DecodeError::UnknownEthertype(0x0806)),
            ),
        ];
        for (name, ethertype, bytes, want) in cases {
            assert_eq!(
                decode(ethertype, &bytes, &DEFAULT_VXLAN_PORTS),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn vxlan_4789_inner_ipv4_syn() {
        let p = decode(
            ETH_P_IP,
            &vxlan_v4(4789, &inner_v4_syn()),
            &DEFAULT_VXLAN_PORTS,
        )
        .unwrap();
        assert_eq!(
            p.tuple,
            tuple(IPPROTO_UDP, "192.168.0.1:40000", "192.168.0.2:4789")
        );
        assert_eq!(p.udp_checksum, Some(0xbeef));
        assert_eq!(p.tcp_flags, None);
        let vx = p.vxlan.unwrap();
        assert_eq!(vx.vni, 42);
        let inner = vx.inner.unwrap();
        assert_eq!(
            inner.tuple,
            tuple(IPPROTO_TCP, "10.244.1.5:51000", "10.244.2.7:8080")
        );
        assert_eq!(
            inner.tuple.to_string(),
            "tcp 10.244.1.5:51000 -> 10.244.2.7:8080"
        );
        let flags = inner.tcp_flags.unwrap();
        assert!(flags.syn() && !flags.ack() && !flags.rst() && !flags.fin());
        assert_eq!(inner.vxlan, None);
    }

    #[test]
    fn vxlan_8472_vlan_inner_ipv6() {
        let frame = eth(
            ETH_P_IPV6,
            Some(100),
            &ipv6_pkt(IPPROTO_UDP, a6(), b6(), &udp(1000, 2000, 0x5555, b"x")),
        );
        let outer = ipv6_pkt(
            IPPROTO_UDP,
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            &udp(33000, 8472, 0, &vxlan_hdr(0x08, 0xabcdef, &frame)),
        );
        let p = decode(ETH_P_IPV6, &outer, &DEFAULT_VXLAN_PORTS).unwrap();
        assert_eq!(
            p.tuple,
            tuple(IPPROTO_UDP, "[2001:db8::1]:33000", "[2001:db8::2]:8472")
        );
        let vx = p.vxlan.unwrap();
        assert_eq!(vx.vni, 0xabcdef);
        let inner = vx.inner.unwrap();
        assert_eq!(
            *inner,
            udp_pkt(
                tuple(IPPROTO_UDP, "[fd00::1]:1000", "[fd00::2]:2000"),
                0x5555
            )
        );
    }

    #[test]
    fn vxlan_port_must_be_listed() {
        let p = decode(ETH_P_IP, &vxlan_v4(4789, &inner_v4_syn()), &[8472]).unwrap();
        assert_eq!(p.vxlan, None);
    }

    #[test]
    fn vxlan_is_followed_one_level_only() {
        let nested = vxlan_v4(4789, &inner_v4_syn());
        let p = decode(
            ETH_P_IP,
            &vxlan_v4(4789, &eth(ETH_P_IP, None, &nested)),
            &DEFAULT_VXLAN_PORTS,
        )
        .unwrap();
        let inner = p.vxlan.unwrap().inner.unwrap();
        assert_eq!(inner.tuple.dst.port(), 4789);
        assert_eq!(inner.vxlan, None);
    }

    #[test]
    fn vxlan_truncated_inner() {
        let full = vxlan_v4(4789, &inner_v4_syn());
        // Cut inside the inner TCP header.
        let p = decode(ETH_P_IP, &full[..full.len() - 5], &DEFAULT_VXLAN_PORTS).unwrap();
        assert_eq!(
            p.vxlan,
            Some(Vxlan {
                vni: 42,
                inner: None
            })
        );
        // An inner frame that is not IP is also just "no inner".
        let arp = vxlan_v4(4789, &eth(0x0806, None, &[0; 28]));
        let p = decode(ETH_P_IP, &arp, &DEFAULT_VXLAN_PORTS).unwrap();
        assert_eq!(
            p.vxlan,
            Some(Vxlan {
                vni: 42,
                inner: None
            })
        );
    }

    /// Every prefix of a valid packet: Truncated until the outer transport header is complete,
    /// then the outer tuple, with VXLAN appearing and its inner packet only once complete.
    #[test]
    fn every_truncation() {
        let v6_hbh = ipv6_pkt(
            IPV6_HOPOPTS,
            a6(),
            b6(),
            &opts_ext(IPPROTO_TCP, 1, &tcp(1234, 443, SYN)),
        );
        let v6_vx = ipv6_pkt(
            IPPROTO_UDP,
            a6(),
            b6(),
            &udp(
                1,
                8472,
                0,
                &vxlan_hdr(
                    0x08,
                    7,
                    &eth(
                        ETH_P_IPV6,
                        Some(5),
                        &ipv6_pkt(IPPROTO_TCP, b6(), a6(), &tcp(9, 10, SYNACK)),
                    ),
                ),
            ),
        );
        // (ethertype, packet, length of outer headers, end of the VXLAN header if any)
        let cases: Vec<(u16, Vec<u8>, usize, Option<usize>)> = vec![
            (
                ETH_P_IP,
                ipv4_pkt(IPPROTO_TCP, A4, B4, &[], 0, &tcp(1234, 80, SYN)),
                40,
                None,
            ),
            (
                ETH_P_IP,
                ipv4_pkt(IPPROTO_TCP, A4, B4, &[1, 1, 1, 0], 0, &tcp(1234, 80, SYN)),
                44,
                None,
            ),
            (
                ETH_P_IP,
                ipv4_pkt(IPPROTO_UDP, A4, B4, &[], 0, &udp(1, 2, 3, &[])),
                28,
                None,
            ),
            (ETH_P_IPV6, v6_hbh, 76, None),
            (ETH_P_IP, vxlan_v4(4789, &inner_v4_syn()), 28, Some(36)),
            (ETH_P_IPV6, v6_vx, 48, Some(56)),
        ];
        for (ethertype, full, outer_len, vx_end) in cases {
            let whole = decode(ethertype, &full, &DEFAULT_VXLAN_PORTS).unwrap();
            for len in 0..=full.len() {
                let got = decode(ethertype, &full[..len], &DEFAULT_VXLAN_PORTS);
                if len < outer_len {
                    match got {
                        Err(DecodeError::Truncated { need, have, .. }) => {
                            assert!(need > have, "len {len}");
                        }
                        other => panic!("len {len}: want Truncated, got {other:?}"),
                    }
                    continue;
                }
                let p = got.unwrap_or_else(|e| panic!("len {len}: {e}"));
                assert_eq!(p.tuple, whole.tuple, "len {len}");
                match vx_end {
                    None => assert_eq!(p, whole, "len {len}"),
                    Some(end) if len < end => assert_eq!(p.vxlan, None, "len {len}"),
                    Some(_) if len < full.len() => {
                        let vx = p.vxlan.unwrap();
                        assert_eq!(vx.vni, whole.vxlan.as_ref().unwrap().vni);
                        assert_eq!(vx.inner, None, "len {len}");
                    }
                    Some(_) => assert!(p.vxlan.unwrap().inner.is_some()),
                }
            }
        }
    }

    /// Random bytes and randomly corrupted valid packets must never panic.
    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [
            vxlan_v4(4789, &inner_v4_syn()),
            ipv6_pkt(
                IPV6_HOPOPTS,
                a6(),
                b6(),
                &opts_ext(
                    IPV6_FRAGMENT,
                    0,
                    &frag_ext(IPPROTO_TCP, 0, false, &tcp(1, 2, 3)),
                ),
            ),
            vec![0; 160],
        ];
        for i in 0..30_000 {
            let mut buf = match i % 4 {
                3 => (0..rand() % 161).map(|_| rand() as u8).collect(),
                k => seeds[k].clone(),
            };
            for _ in 0..rand() % 4 {
                let at = (rand() as usize) % buf.len().max(1);
                if let Some(b) = buf.get_mut(at) {
                    *b = rand() as u8;
                }
            }
            let len = (rand() as usize) % (buf.len() + 1);
            for ethertype in [ETH_P_IP, ETH_P_IPV6, rand() as u16] {
                if let Ok(p) = decode(ethertype, &buf[..len], &DEFAULT_VXLAN_PORTS) {
                    let _ = p.tuple.to_string();
                    let _ = p.tcp_flags.map(|f| f.to_string());
                }
            }
        }
    }

    #[test]
    fn display() {
        let t = tuple(IPPROTO_TCP, "10.0.0.1:1234", "10.0.0.2:80");
        assert_eq!(t.to_string(), "tcp 10.0.0.1:1234 -> 10.0.0.2:80");
        assert_eq!(t.reversed().to_string(), "tcp 10.0.0.2:80 -> 10.0.0.1:1234");
        assert_eq!(t.reversed().reversed(), t);
        assert_eq!(
            tuple(IPPROTO_UDP, "[::1]:53", "[::2]:5353").to_string(),
            "udp [::1]:53 -> [::2]:5353"
        );
        assert_eq!(
            tuple(132, "1.1.1.1:1", "2.2.2.2:2").to_string(),
            "proto 132 1.1.1.1:1 -> 2.2.2.2:2"
        );
        let flags = [
            (SYN, "SYN"),
            (SYNACK, "SYN|ACK"),
            (TcpFlags::RST | TcpFlags::ACK, "RST|ACK"),
            (TcpFlags::FIN | TcpFlags::PSH | TcpFlags::ACK, "FIN|PSH|ACK"),
            (0, "none"),
            (0xff, "SYN|FIN|RST|PSH|ACK|URG|ECE|CWR"),
        ];
        for (bits, want) in flags {
            assert_eq!(TcpFlags(bits).to_string(), want);
        }
        let e = DecodeError::Truncated {
            layer: "tcp",
            need: 20,
            have: 3,
        };
        assert_eq!(e.to_string(), "truncated tcp header: need 20 bytes, have 3");
        assert_eq!(
            DecodeError::UnknownEthertype(0x806).to_string(),
            "unknown ethertype 0x0806"
        );
    }
}
