//! The layout tables handed to the eBPF programs: the offsets of every tracepoint field they
//! read (`sock:inet_sock_set_state`, `tcp:tcp_retransmit_skb`, `skb:kfree_skb`) as the
//! `netlat_common` `*Layout` structs, derived from a parsed [`EventFormat`].
//!
//! Layouts are read from the running kernel rather than hard-coded because fields move between
//! versions (5.17 added `kfree_skb.reason`, 6.x added `rx_sk` before `protocol`, 5.16 added
//! `tcp_retransmit_skb.family`, ...). Every field the programs read is checked for presence and
//! size, so a kernel with an unexpected shape fails at start-up instead of producing garbage.

use netlat_common::{ABSENT, KfreeLayout, RetransmitLayout, SockStateLayout};

use super::format::{EventFormat, FormatError};

/// Offset of a required field, checked to have the size the eBPF programs read.
fn required(f: &EventFormat, field: &'static str, size: u32) -> Result<u32, FormatError> {
    let found = f.field(field).ok_or_else(|| FormatError::MissingField {
        event: f.name.clone(),
        field,
    })?;
    if found.size != size {
        return Err(FormatError::FieldSize {
            event: f.name.clone(),
            field,
            expected: size,
            found: found.size,
        });
    }
    Ok(found.offset)
}

/// Like [`required`], but [`ABSENT`] when this kernel does not have the field.
fn optional(f: &EventFormat, field: &'static str, size: u32) -> Result<u32, FormatError> {
    match f.field(field) {
        Some(_) => required(f, field, size),
        None => Ok(ABSENT),
    }
}

/// Offsets of `sock:inet_sock_set_state`, every field checked for presence and size.
pub fn sock_state_layout(f: &EventFormat) -> Result<SockStateLayout, FormatError> {
    Ok(SockStateLayout {
        skaddr: required(f, "skaddr", 8)?,
        oldstate: required(f, "oldstate", 4)?,
        newstate: required(f, "newstate", 4)?,
        sport: required(f, "sport", 2)?,
        dport: required(f, "dport", 2)?,
        family: required(f, "family", 2)?,
        protocol: required(f, "protocol", 2)?,
        saddr: required(f, "saddr", 4)?,
        daddr: required(f, "daddr", 4)?,
        saddr_v6: required(f, "saddr_v6", 16)?,
        daddr_v6: required(f, "daddr_v6", 16)?,
    })
}

/// Offsets of `tcp:tcp_retransmit_skb`. Kernels before 5.16 have no `family` field and fail here.
pub fn retransmit_layout(f: &EventFormat) -> Result<RetransmitLayout, FormatError> {
    Ok(RetransmitLayout {
        skaddr: required(f, "skaddr", 8)?,
        state: required(f, "state", 4)?,
        sport: required(f, "sport", 2)?,
        dport: required(f, "dport", 2)?,
        // Added in 5.16; before that the programs read the family from the socket.
        family: optional(f, "family", 2)?,
        saddr: required(f, "saddr", 4)?,
        daddr: required(f, "daddr", 4)?,
        saddr_v6: required(f, "saddr_v6", 16)?,
        daddr_v6: required(f, "daddr_v6", 16)?,
    })
}

/// Offsets of `skb:kfree_skb`; `reason` is [`ABSENT`] before 5.17, which had no drop reasons.
pub fn kfree_layout(f: &EventFormat) -> Result<KfreeLayout, FormatError> {
    Ok(KfreeLayout {
        skbaddr: required(f, "skbaddr", 8)?,
        location: required(f, "location", 8)?,
        protocol: required(f, "protocol", 2)?,
        reason: optional(f, "reason", 4)?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::fixtures::*;
    use super::*;

    /// inet_sock_set_state has had the same layout since protocol became __u16 (5.6).
    const SOCK_STATE: SockStateLayout = SockStateLayout {
        skaddr: 8,
        oldstate: 16,
        newstate: 20,
        sport: 24,
        dport: 26,
        family: 28,
        protocol: 30,
        saddr: 32,
        daddr: 36,
        saddr_v6: 40,
        daddr_v6: 56,
    };

    #[test]
    fn kfree_skb_6_18() {
        let f = parse(K618_KFREE);
        assert_eq!((f.name.as_str(), f.id), ("kfree_skb", 2310));
        assert_field(&f, "skbaddr", 8, 8, false);
        assert_field(&f, "location", 16, 8, false);
        assert_field(&f, "rx_sk", 24, 8, false);
        assert_field(&f, "protocol", 32, 2, false);
        assert_field(&f, "reason", 36, 4, false);
        assert_eq!(
            f.field("reason").map(|r| r.c_type.as_str()),
            Some("enum skb_drop_reason")
        );
        assert_eq!(
            kfree_layout(&f),
            Ok(KfreeLayout {
                skbaddr: 8,
                location: 16,
                protocol: 32,
                reason: 36
            })
        );
        let reasons = f.symbols("reason").expect("reason table");
        assert_eq!(reasons.get(&2).map(String::as_str), Some("NOT_SPECIFIED"));
        assert_eq!(reasons.get(&3).map(String::as_str), Some("NO_SOCKET"));
        assert_eq!(reasons.get(&11).map(String::as_str), Some("UDP_CSUM"));
        assert_eq!(reasons.get(&12).map(String::as_str), Some("NETFILTER_DROP"));
        assert_eq!(reasons.get(&128).map(String::as_str), Some("MAX"));
        assert_eq!(reasons.len(), 127);
        assert!(
            !reasons.contains_key(&1),
            "SKB_CONSUMED is not a drop reason"
        );
    }

    #[test]
    fn kfree_skb_6_1() {
        let f = parse(K61_KFREE);
        assert_field(&f, "skbaddr", 8, 8, false);
        assert_field(&f, "location", 16, 8, false);
        assert_field(&f, "protocol", 24, 2, false);
        assert_field(&f, "reason", 28, 4, false);
        assert!(f.field("rx_sk").is_none());
        assert_eq!(
            kfree_layout(&f),
            Ok(KfreeLayout {
                skbaddr: 8,
                location: 16,
                protocol: 24,
                reason: 28
            })
        );
        let reasons = f.symbols("reason").expect("reason table");
        for (value, name) in [
            (1, "NOT_SPECIFIED"),
            (2, "NO_SOCKET"),
            (4, "TCP_CSUM"),
            (6, "UDP_CSUM"),
            (7, "NETFILTER_DROP"),
            (64, "PKT_TOO_BIG"),
            (65, "MAX"),
        ] {
            assert_eq!(reasons.get(&value).map(String::as_str), Some(name));
        }
        assert_eq!(reasons.len(), 65);
    }

    #[test]
    fn kfree_skb_5_10_has_no_reason() {
        let f = parse(K510_KFREE);
        assert_field(&f, "skbaddr", 8, 8, false);
        assert_field(&f, "location", 16, 8, false);
        assert_field(&f, "protocol", 24, 2, false);
        assert!(f.field("reason").is_none());
        assert_eq!(f.symbols("reason"), None);
        assert_eq!(
            kfree_layout(&f),
            Ok(KfreeLayout {
                skbaddr: 8,
                location: 16,
                protocol: 24,
                reason: ABSENT
            })
        );
    }

    #[test]
    fn inet_sock_set_state_all_kernels() {
        for text in [K618_SOCK, K61_SOCK, K510_SOCK] {
            let f = parse(text);
            assert_eq!(f.name, "inet_sock_set_state");
            assert_eq!(sock_state_layout(&f), Ok(SOCK_STATE));
            assert_eq!(f.field("oldstate").map(|x| x.signed), Some(true));
            // The sock system resolves the TCP state enum, so the table is numeric.
            let states = f.symbols("newstate").expect("state table");
            assert_eq!(states.get(&2).map(String::as_str), Some("TCP_SYN_SENT"));
            assert_eq!(
                states.get(&12).map(String::as_str),
                Some("TCP_NEW_SYN_RECV")
            );
            assert_eq!(states.len(), 12);
            assert_eq!(f.symbols("oldstate"), Some(states));
            let protocols = f.symbols("protocol").expect("protocol table");
            assert_eq!(protocols.get(&6).map(String::as_str), Some("IPPROTO_TCP"));
            assert_eq!(
                protocols.get(&262).map(String::as_str),
                Some("IPPROTO_MPTCP")
            );
            let families = f.symbols("family").expect("family table");
            assert_eq!(
                families.into_iter().collect::<Vec<_>>(),
                vec![(2, "AF_INET".to_string()), (10, "AF_INET6".to_string())]
            );
            assert_eq!(f.symbols("sport"), None);
        }
        // DCCP was removed from the list after 6.1.
        assert!(
            !parse(K618_SOCK)
                .symbols("protocol")
                .unwrap_or_default()
                .contains_key(&33)
        );
        assert!(
            parse(K61_SOCK)
                .symbols("protocol")
                .unwrap_or_default()
                .contains_key(&33)
        );
    }

    #[test]
    fn tcp_retransmit_skb_6_18_and_6_1() {
        let expected = RetransmitLayout {
            skaddr: 16,
            state: 24,
            sport: 28,
            dport: 30,
            family: 32,
            saddr: 34,
            daddr: 38,
            saddr_v6: 42,
            daddr_v6: 58,
        };
        for text in [K618_RETRANS, K61_RETRANS] {
            let f = parse(text);
            assert_eq!(f.name, "tcp_retransmit_skb");
            assert_eq!(retransmit_layout(&f), Ok(expected));
            let saddr = f.field("saddr").expect("saddr");
            assert_eq!((saddr.c_type.as_str(), saddr.size), ("__u8[4]", 4));
            assert_eq!(
                f.field("skaddr").map(|x| x.c_type.as_str()),
                Some("const void *")
            );
            // The tcp system does not resolve TCP_* names: every entry is skipped.
            assert_eq!(f.symbols("state"), Some(BTreeMap::new()));
            assert_eq!(
                f.symbols("family").map(|t| t.len()),
                Some(2),
                "family table"
            );
        }
        assert_field(&parse(K618_RETRANS), "err", 76, 4, true);
    }

    #[test]
    fn tcp_retransmit_skb_5_10_lacks_family() {
        let f = parse(K510_RETRANS);
        assert_field(&f, "state", 24, 4, true);
        assert_field(&f, "saddr", 32, 4, false);
        assert_field(&f, "daddr_v6", 56, 16, false);
        // No family before 5.16: the layout marks it absent and the program reads the socket.
        let l = retransmit_layout(&f).expect("5.10 layout");
        assert_eq!(l.family, ABSENT);
        assert_eq!(l.saddr, 32);
    }

    #[test]
    fn mis_sized_fields_are_errors() {
        let text = K618_SOCK.replace(
            "field:__u16 sport;\toffset:24;\tsize:2;",
            "field:__u32 sport;\toffset:24;\tsize:4;",
        );
        assert_ne!(text, K618_SOCK);
        let err = sock_state_layout(&parse(&text)).expect_err("sport is 4 bytes");
        assert_eq!(
            err,
            FormatError::FieldSize {
                event: "inet_sock_set_state".into(),
                field: "sport",
                expected: 2,
                found: 4
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("inet_sock_set_state") && msg.contains("sport"),
            "{msg}"
        );

        // The optional reason must still have the right size when present.
        let text = K61_KFREE.replace(
            "reason;\toffset:28;\tsize:4;",
            "reason;\toffset:28;\tsize:2;",
        );
        assert_ne!(text, K61_KFREE);
        assert!(matches!(
            kfree_layout(&parse(&text)),
            Err(FormatError::FieldSize {
                field: "reason",
                expected: 4,
                found: 2,
                ..
            })
        ));

        let text = K618_RETRANS.replace(
            "const void * skaddr;\toffset:16;\tsize:8;",
            "int skaddr;\toffset:16;\tsize:4;",
        );
        assert_ne!(text, K618_RETRANS);
        assert!(matches!(
            retransmit_layout(&parse(&text)),
            Err(FormatError::FieldSize {
                field: "skaddr",
                expected: 8,
                found: 4,
                ..
            })
        ));
    }

    #[test]
    fn missing_required_field_is_an_error() {
        let text: String = K618_KFREE
            .lines()
            .filter(|l| !l.contains(" protocol;"))
            .flat_map(|l| [l, "\n"])
            .collect();
        assert_eq!(
            kfree_layout(&parse(&text)),
            Err(FormatError::MissingField {
                event: "kfree_skb".into(),
                field: "protocol"
            })
        );
        // A layout asked of the wrong event names that event.
        assert!(matches!(
            sock_state_layout(&parse(K618_KFREE)),
            Err(FormatError::MissingField { ref event, field: "skaddr" }) if event == "kfree_skb"
        ));
    }
}
