//! IPVS virtual services and their real servers over generic netlink (family "IPVS", as
//! `ipvsadm` uses).
//!
//! The family is looked up in a dump of all registered families rather than by name: a lookup
//! by name makes the kernel load ip_vs (`net-pf-16-proto-16-family-IPVS`), and a fingerprint
//! must not change the node it looks at.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlat_core::facts::{IpvsService, RealServer};
use rtnetlink::sys::protocols::NETLINK_GENERIC;

use super::NodeError;
use super::nl::{self, find, string};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const IPVS_FAMILY: &str = "IPVS";
// Commands of include/uapi/linux/ip_vs.h (UNSPEC = 0, NEW/SET/DEL/GET_SERVICE = 1..4,
// NEW/SET/DEL/GET_DEST = 5..8).
const IPVS_CMD_GET_SERVICE: u8 = 4;
const IPVS_CMD_GET_DEST: u8 = 8;
const IPVS_GENL_VERSION: u8 = 1;
/// genlmsghdr: cmd, version, reserved u16.
const GENL_HEADER: usize = 4;
/// Top-level attributes of IPVS commands: a nested service or destination.
const IPVS_CMD_ATTR_SERVICE: u16 = 1;
const IPVS_CMD_ATTR_DEST: u16 = 2;
/// Service attributes.
const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
/// Destination attributes.
const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
/// Since 3.18; older kernels' destinations share the service's family.
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
const NLA_F_NESTED: u16 = 1 << 15;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Every virtual service with its real servers in the calling thread's namespace; `None` when
/// IPVS is not loaded. Listing needs CAP_NET_ADMIN.
pub fn services() -> io::Result<Option<Vec<IpvsService>>> {
    let Some(id) = ipvs_family()? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for raw in dump_services(id)? {
        let replies = nl::dump(NETLINK_GENERIC, id, &dest_request(&raw).map_err(invalid)?)?;
        let mut svc = parse_service(&raw).map_err(invalid)?;
        for r in replies.iter().filter(|r| r.kind == id) {
            svc.real_servers
                .push(parse_dest(&r.payload, svc.family).map_err(invalid)?);
        }
        out.push(svc);
    }
    Ok(Some(out))
}

/// The virtual services of the calling thread's namespace without their real servers (one
/// dump, for naming what a connect went to); `None` when IPVS is not loaded.
pub fn virtual_services() -> io::Result<Option<Vec<IpvsService>>> {
    let Some(id) = ipvs_family()? else {
        return Ok(None);
    };
    dump_services(id)?
        .iter()
        .map(|raw| parse_service(raw).map_err(invalid))
        .collect::<io::Result<Vec<_>>>()
        .map(Some)
}

fn invalid(e: NodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn ipvs_family() -> io::Result<Option<u16>> {
    let families = nl::dump(
        NETLINK_GENERIC,
        GENL_ID_CTRL,
        &[CTRL_CMD_GETFAMILY, 1, 0, 0],
    )?;
    family_id(&families, IPVS_FAMILY).map_err(invalid)
}

/// The nested service attribute of each service in a GET_SERVICE dump, raw.
fn dump_services(id: u16) -> io::Result<Vec<Vec<u8>>> {
    let replies = nl::dump(
        NETLINK_GENERIC,
        id,
        &[IPVS_CMD_GET_SERVICE, IPVS_GENL_VERSION, 0, 0],
    )?;
    let mut out = Vec::new();
    for r in replies.iter().filter(|r| r.kind == id) {
        let attrs = nl::attrs(r.payload.get(GENL_HEADER..).unwrap_or_default()).map_err(invalid)?;
        let svc = find(&attrs, IPVS_CMD_ATTR_SERVICE).ok_or_else(|| {
            invalid(NodeError::Malformed {
                what: "IPVS service",
                reason: "reply without a service attribute".into(),
            })
        })?;
        out.push(svc.to_vec());
    }
    Ok(out)
}

/// A GET_DEST dump request for the service whose nested attributes are `svc` (as the service
/// dump returned them). Only the attributes the kernel finds a service by are sent: family,
/// protocol, address and port, or firewall mark (what `ipvsadm` sends).
fn dest_request(svc: &[u8]) -> Result<Vec<u8>, NodeError> {
    const KEYS: [u16; 5] = [
        IPVS_SVC_ATTR_AF,
        IPVS_SVC_ATTR_PROTOCOL,
        IPVS_SVC_ATTR_ADDR,
        IPVS_SVC_ATTR_PORT,
        IPVS_SVC_ATTR_FWMARK,
    ];
    let mut nested = Vec::new();
    for (kind, value) in nl::attrs(svc)? {
        if KEYS.contains(&kind) {
            put_attr(&mut nested, kind, value);
        }
    }
    let mut body = vec![IPVS_CMD_GET_DEST, IPVS_GENL_VERSION, 0, 0];
    put_attr(&mut body, IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, &nested);
    Ok(body)
}

/// Appends one netlink attribute, padded to 4 bytes.
fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(nl::align4(out.len()), 0);
}

fn malformed(what: &'static str, reason: &str) -> NodeError {
    NodeError::Malformed {
        what,
        reason: reason.to_string(),
    }
}

fn u16_attr(v: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?))
}

fn u32_attr(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

/// Ports are network byte order on the wire.
fn port_attr(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
}

/// `union nf_inet_addr` (16 bytes; IPv4 in the first 4).
fn addr_attr(v: &[u8], family: u16) -> Option<IpAddr> {
    match family {
        AF_INET => {
            let b: [u8; 4] = v.get(..4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        AF_INET6 => {
            let b: [u8; 16] = v.get(..16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// A service from its nested attributes (real servers empty).
fn parse_service(svc: &[u8]) -> Result<IpvsService, NodeError> {
    let attrs = nl::attrs(svc)?;
    let family = find(&attrs, IPVS_SVC_ATTR_AF)
        .and_then(u16_attr)
        .ok_or_else(|| malformed("IPVS service", "no address family"))?;
    let fwmark = find(&attrs, IPVS_SVC_ATTR_FWMARK)
        .and_then(u32_attr)
        .unwrap_or(0);
    let protocol = find(&attrs, IPVS_SVC_ATTR_PROTOCOL)
        .and_then(u16_attr)
        .unwrap_or(0);
    let vip = match (
        find(&attrs, IPVS_SVC_ATTR_ADDR).and_then(|v| addr_attr(v, family)),
        find(&attrs, IPVS_SVC_ATTR_PORT).and_then(port_attr),
    ) {
        (Some(ip), Some(port)) if fwmark == 0 => Some(SocketAddr::new(ip, port)),
        _ if fwmark != 0 => None,
        _ => return Err(malformed("IPVS service", "no address or port")),
    };
    Ok(IpvsService {
        family,
        protocol,
        vip,
        fwmark,
        real_servers: Vec::new(),
    })
}

/// One real server from a GET_DEST reply payload (genl header first).
fn parse_dest(payload: &[u8], service_family: u16) -> Result<RealServer, NodeError> {
    let top = nl::attrs(payload.get(GENL_HEADER..).unwrap_or_default())?;
    let dest = find(&top, IPVS_CMD_ATTR_DEST)
        .ok_or_else(|| malformed("IPVS destination", "reply without a destination"))?;
    let attrs = nl::attrs(dest)?;
    let family = find(&attrs, IPVS_DEST_ATTR_ADDR_FAMILY)
        .and_then(u16_attr)
        .unwrap_or(service_family);
    let ip = find(&attrs, IPVS_DEST_ATTR_ADDR)
        .and_then(|v| addr_attr(v, family))
        .ok_or_else(|| malformed("IPVS destination", "no address"))?;
    let port = find(&attrs, IPVS_DEST_ATTR_PORT)
        .and_then(port_attr)
        .ok_or_else(|| malformed("IPVS destination", "no port"))?;
    let weight = find(&attrs, IPVS_DEST_ATTR_WEIGHT)
        .and_then(u32_attr)
        .ok_or_else(|| malformed("IPVS destination", "no weight"))?;
    let count = |k| find(&attrs, k).and_then(u32_attr).unwrap_or(0);
    Ok(RealServer {
        addr: SocketAddr::new(ip, port),
        weight,
        active_conns: count(IPVS_DEST_ATTR_ACTIVE_CONNS),
        inactive_conns: count(IPVS_DEST_ATTR_INACT_CONNS),
    })
}

/// The id of generic netlink family `name` in a CTRL_CMD_GETFAMILY dump.
pub(super) fn family_id(replies: &[nl::Reply], name: &str) -> Result<Option<u16>, NodeError> {
    for reply in replies.iter().filter(|r| r.kind == GENL_ID_CTRL) {
        let attrs = nl::attrs(reply.payload.get(GENL_HEADER..).unwrap_or_default())?;
        if find(&attrs, CTRL_ATTR_FAMILY_NAME).map(string).as_deref() == Some(name) {
            let id = find(&attrs, CTRL_ATTR_FAMILY_ID)
                .and_then(|v| v.get(..2))
                .and_then(|v| v.try_into().ok())
                .map(u16::from_ne_bytes)
                .ok_or(NodeError::Malformed {
                    what: "generic netlink family",
                    reason: format!("{name} has no id"),
                })?;
            return Ok(Some(id));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::nl::nla;

    fn family(name: &str, id: u16) -> nl::Reply {
        let mut payload = vec![1, 2, 0, 0];
        payload.extend(nla(CTRL_ATTR_FAMILY_ID, &id.to_ne_bytes()));
        payload.extend(nla(CTRL_ATTR_FAMILY_NAME, format!("{name}\0").as_bytes()));
        nl::Reply {
            kind: GENL_ID_CTRL,
            payload,
        }
    }

    #[test]
    fn finds_the_family() {
        let replies = [
            family("nlctrl", 0x10),
            family("ethtool", 0x14),
            family("IPVS", 0x1b),
        ];
        assert_eq!(family_id(&replies, "IPVS"), Ok(Some(0x1b)));
        assert_eq!(family_id(&replies[..2], "IPVS"), Ok(None));
    }

    #[test]
    fn family_without_id_is_an_error() {
        let mut payload = vec![1, 2, 0, 0];
        payload.extend(nla(CTRL_ATTR_FAMILY_NAME, b"IPVS\0"));
        let replies = [nl::Reply {
            kind: GENL_ID_CTRL,
            payload,
        }];
        assert!(family_id(&replies, "IPVS").is_err());
    }

    fn v4(a: [u8; 4]) -> Vec<u8> {
        let mut v = a.to_vec();
        v.resize(16, 0);
        v
    }

    /// The nested attributes of a TCP service at 10.240.100.2:80, as the kernel dumps them.
    fn service_attrs() -> Vec<u8> {
        let mut s = nla(IPVS_SVC_ATTR_AF, &AF_INET.to_ne_bytes());
        s.extend(nla(IPVS_SVC_ATTR_PROTOCOL, &6u16.to_ne_bytes()));
        s.extend(nla(IPVS_SVC_ATTR_ADDR, &v4([10, 240, 100, 2])));
        s.extend(nla(IPVS_SVC_ATTR_PORT, &80u16.to_be_bytes()));
        s.extend(nla(6, b"rr\0"));
        s
    }

    fn dest_reply(ip: [u8; 4], port: u16, weight: u32, active: u32) -> Vec<u8> {
        let mut d = nla(IPVS_DEST_ATTR_ADDR, &v4(ip));
        d.extend(nla(IPVS_DEST_ATTR_PORT, &port.to_be_bytes()));
        d.extend(nla(3, &0u32.to_ne_bytes()));
        d.extend(nla(IPVS_DEST_ATTR_WEIGHT, &weight.to_ne_bytes()));
        d.extend(nla(IPVS_DEST_ATTR_ACTIVE_CONNS, &active.to_ne_bytes()));
        d.extend(nla(IPVS_DEST_ATTR_INACT_CONNS, &2u32.to_ne_bytes()));
        d.extend(nla(IPVS_DEST_ATTR_ADDR_FAMILY, &AF_INET.to_ne_bytes()));
        let mut payload = vec![IPVS_CMD_NEW_DEST_REPLY, 1, 0, 0];
        payload.extend(nla(IPVS_CMD_ATTR_DEST | NLA_F_NESTED, &d));
        payload
    }
    /// Replies to GET_DEST carry NEW_DEST as their command.
    const IPVS_CMD_NEW_DEST_REPLY: u8 = 5;

    #[test]
    fn parses_a_service_and_its_real_servers() {
        let svc = parse_service(&service_attrs()).unwrap();
        assert_eq!(svc.family, AF_INET);
        assert_eq!(svc.protocol, 6);
        assert_eq!(svc.vip, Some("10.240.100.2:80".parse().unwrap()));
        let a = parse_dest(&dest_reply([10, 240, 2, 2], 8002, 0, 1), AF_INET).unwrap();
        assert_eq!(
            a,
            RealServer {
                addr: "10.240.2.2:8002".parse().unwrap(),
                weight: 0,
                active_conns: 1,
                inactive_conns: 2,
            }
        );
        let b = parse_dest(&dest_reply([10, 240, 3, 2], 8002, 1, 0), AF_INET).unwrap();
        assert_eq!(b.weight, 1);
        assert_eq!(b.addr.port(), 8002);
    }

    #[test]
    fn dest_request_nests_the_service_key_only() {
        let req = dest_request(&service_attrs()).unwrap();
        assert_eq!(&req[..4], &[IPVS_CMD_GET_DEST, IPVS_GENL_VERSION, 0, 0]);
        let top = nl::attrs(&req[4..]).unwrap();
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, IPVS_CMD_ATTR_SERVICE);
        let inner = nl::attrs(top[0].1).unwrap();
        let kinds: Vec<u16> = inner.iter().map(|(k, _)| *k).collect();
        // The scheduler name (6) is not part of the key.
        assert_eq!(
            kinds,
            [
                IPVS_SVC_ATTR_AF,
                IPVS_SVC_ATTR_PROTOCOL,
                IPVS_SVC_ATTR_ADDR,
                IPVS_SVC_ATTR_PORT
            ]
        );
        assert_eq!(
            find(&inner, IPVS_SVC_ATTR_ADDR),
            Some(&v4([10, 240, 100, 2])[..])
        );
        assert_eq!(req.len() % 4, 0);
    }

    #[test]
    fn malformed_service_and_destination_are_errors() {
        // A service without a family, and one with neither address nor mark.
        assert!(parse_service(&nla(IPVS_SVC_ATTR_PORT, &80u16.to_be_bytes())).is_err());
        assert!(parse_service(&nla(IPVS_SVC_ATTR_AF, &AF_INET.to_ne_bytes())).is_err());
        // A firewall-mark service has no VIP.
        let mut fw = nla(IPVS_SVC_ATTR_AF, &AF_INET.to_ne_bytes());
        fw.extend(nla(IPVS_SVC_ATTR_FWMARK, &7u32.to_ne_bytes()));
        let fw = parse_service(&fw).unwrap();
        assert_eq!((fw.vip, fw.fwmark), (None, 7));
        // A destination without its weight.
        let mut d = nla(IPVS_DEST_ATTR_ADDR, &v4([10, 0, 0, 1]));
        d.extend(nla(IPVS_DEST_ATTR_PORT, &80u16.to_be_bytes()));
        let mut payload = vec![5, 1, 0, 0];
        payload.extend(nla(IPVS_CMD_ATTR_DEST | NLA_F_NESTED, &d));
        assert!(parse_dest(&payload, AF_INET).is_err());
        assert!(parse_dest(&[5, 1, 0, 0], AF_INET).is_err());
    }

    #[test]
    fn live_lookup_does_not_fail() {
        // Any user may dump the families; listing services needs CAP_NET_ADMIN.
        if let Err(e) = services() {
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        }
    }
}
