//! A synchronous netlink dump on `netlink-sys`, and attribute helpers on `netlink-packet-core`,
//! for the families the rust-netlink client crates do not cover here: nfnetlink's nftables
//! subsystem, the generic netlink controller and IPVS.
//!
//! Blocking sockets with a receive timeout keep these reads independent of any runtime, and the
//! few messages involved need no more than one request and its replies.

use std::io;
use std::os::fd::AsRawFd;

use rtnetlink::packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NlaBuffer,
    NlasIterator,
};
use rtnetlink::sys::{Socket, SocketAddr};

use super::{NETLINK_TIMEOUT, NodeError};

/// One reply message of a dump: its type and its payload after the netlink header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    pub kind: u16,
    pub payload: Vec<u8>,
}

/// Sends a dump request of `kind` with `body` (family header and attributes) on a new socket of
/// `protocol`, and returns every reply. A dump the kernel marks as interrupted by a concurrent
/// change (NLM_F_DUMP_INTR) is retried.
pub(super) fn dump(protocol: isize, kind: u16, body: &[u8]) -> io::Result<Vec<Reply>> {
    const TRIES: usize = 3;
    for _ in 0..TRIES {
        let (replies, interrupted) = dump_once(protocol, kind, body)?;
        if !interrupted {
            return Ok(replies);
        }
    }
    Err(io::Error::other(
        "the dump was interrupted by concurrent changes three times",
    ))
}

fn dump_once(protocol: isize, kind: u16, body: &[u8]) -> io::Result<(Vec<Reply>, bool)> {
    let mut socket = Socket::new(protocol)?;
    set_recv_timeout(&socket, NETLINK_TIMEOUT)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;

    const SEQ: u32 = 1;
    let len = 16 + body.len();
    let mut request = Vec::with_capacity(len);
    request.extend_from_slice(&u32::try_from(len).map_err(io::Error::other)?.to_ne_bytes());
    request.extend_from_slice(&kind.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&SEQ.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(body);
    socket.send(&request, 0)?;

    let mut replies = Vec::new();
    let mut interrupted = false;
    loop {
        let (datagram, _) = socket.recv_from_full().map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(io::ErrorKind::TimedOut, "no reply from the kernel")
            } else {
                e
            }
        })?;
        let mut rest: &[u8] = &datagram;
        while !rest.is_empty() {
            let msg = NetlinkBuffer::new_checked(rest)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let msg_len = msg.length() as usize;
            if msg.sequence_number() == SEQ {
                interrupted |= msg.flags() & NLM_F_DUMP_INTR != 0;
                let payload = msg.payload();
                match msg.message_type() {
                    NLMSG_DONE => {
                        // A dump that failed part-way ends with its error in DONE.
                        return match errno(payload) {
                            Some(code) if code < 0 => Err(io::Error::from_raw_os_error(-code)),
                            _ => Ok((replies, interrupted)),
                        };
                    }
                    NLMSG_ERROR => match errno(payload) {
                        Some(0) => {}
                        Some(code) => return Err(io::Error::from_raw_os_error(-code)),
                        None => {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "truncated netlink error message",
                            ));
                        }
                    },
                    kind => replies.push(Reply {
                        kind,
                        payload: payload.to_vec(),
                    }),
                }
            }
            let step = align4(msg_len).min(rest.len());
            rest = &rest[step..];
        }
    }
}

/// The leading `int error` of NLMSG_ERROR and NLMSG_DONE payloads.
fn errno(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// Netlink attributes and messages are padded to 4 bytes.
pub(crate) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Bounds every recv so a kernel that never answers cannot hang the caller.
pub(crate) fn set_recv_timeout(socket: &Socket, timeout: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: the descriptor is open for the socket's lifetime and `tv` is a valid timeval whose
    // size is passed alongside it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The attributes in `buf` as (type without flag bits, value) pairs. A malformed attribute is an
/// error rather than the end of the list, so truncation is never mistaken for absence.
pub(super) fn attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, NodeError> {
    let mut out = Vec::new();
    for nla in NlasIterator::new(buf) {
        let nla: NlaBuffer<&[u8]> = nla.map_err(|e| NodeError::Malformed {
            what: "netlink attribute",
            reason: e.to_string(),
        })?;
        let kind = nla.kind();
        let len = nla.length() as usize;
        // NlasIterator checked 4 <= len <= the remaining buffer.
        let value = nla.into_inner().get(4..len).ok_or(NodeError::Truncated {
            what: "netlink attribute",
            len,
            need: 4,
        })?;
        out.push((kind, value));
    }
    Ok(out)
}

/// The first attribute of `kind` in a list from [`attrs`].
pub(super) fn find<'a>(list: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    list.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

/// A big-endian u32 attribute (nfnetlink's byte order).
pub(super) fn be32(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?))
}

/// A big-endian u64 attribute.
pub(super) fn be64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

/// A NUL-terminated (or unterminated) string attribute.
pub(super) fn string(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// Builds one attribute, padded to 4 bytes (dump filters, and tests of the decoders).
pub(super) fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(align4(len));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align4(len), 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let mut buf = nla(1, b"nat\0");
        buf.extend(nla(3, &42u64.to_be_bytes()));
        buf.extend(nla(0x8004, &nla(1, b"x")));
        let list = attrs(&buf).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(string(find(&list, 1).unwrap()), "nat");
        assert_eq!(be64(find(&list, 3).unwrap()), Some(42));
        // The nested flag is masked off the type.
        let nested = attrs(find(&list, 4).unwrap()).unwrap();
        assert_eq!(nested, [(1, &b"x"[..])]);
        assert_eq!(find(&list, 9), None);
    }

    #[test]
    fn truncated_attribute_is_an_error() {
        let mut buf = nla(1, b"abcdefgh");
        buf.truncate(6);
        assert!(attrs(&buf).is_err());
        assert_eq!(be32(&[1, 2]), None);
        assert_eq!(string(b"abc"), "abc");
    }
}
