//! IPVS virtual services over generic netlink (family "IPVS", as `ipvsadm` uses).
//!
//! The family is looked up in a dump of all registered families rather than by name: a lookup
//! by name makes the kernel load ip_vs (`net-pf-16-proto-16-family-IPVS`), and a fingerprint
//! must not change the node it looks at.

use std::io;

use rtnetlink::sys::protocols::NETLINK_GENERIC;

use super::NodeError;
use super::nl::{self, find, string};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const IPVS_FAMILY: &str = "IPVS";
const IPVS_CMD_GET_SERVICE: u8 = 1;
const IPVS_GENL_VERSION: u8 = 1;
/// genlmsghdr: cmd, version, reserved u16.
const GENL_HEADER: usize = 4;

/// The number of IPVS virtual services in the calling thread's namespace; `None` when IPVS is
/// not loaded.
pub(super) fn count_services() -> io::Result<Option<u32>> {
    let families = nl::dump(
        NETLINK_GENERIC,
        GENL_ID_CTRL,
        &[CTRL_CMD_GETFAMILY, 1, 0, 0],
    )?;
    let id = family_id(&families, IPVS_FAMILY)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let Some(id) = id else {
        return Ok(None);
    };
    let services = nl::dump(
        NETLINK_GENERIC,
        id,
        &[IPVS_CMD_GET_SERVICE, IPVS_GENL_VERSION, 0, 0],
    )?;
    let n = services.iter().filter(|r| r.kind == id).count();
    Ok(Some(u32::try_from(n).unwrap_or(u32::MAX)))
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

    #[test]
    fn live_lookup_does_not_fail() {
        // Any user may dump the families; listing services needs CAP_NET_ADMIN.
        if let Err(e) = count_services() {
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        }
    }
}
