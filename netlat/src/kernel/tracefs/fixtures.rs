//! Test fixtures shared by the tracefs tests: real `format` files of three kernels (6.18, 6.1,
//! 5.10) from `netlat/tests/fixtures/format/`, and helpers to read them.

use super::EventFormat;

pub(super) const K618_KFREE: &str =
    include_str!("../../../tests/fixtures/format/6.18/kfree_skb.format");
pub(super) const K618_RETRANS: &str =
    include_str!("../../../tests/fixtures/format/6.18/tcp_retransmit_skb.format");
pub(super) const K618_SOCK: &str =
    include_str!("../../../tests/fixtures/format/6.18/inet_sock_set_state.format");
pub(super) const K61_KFREE: &str =
    include_str!("../../../tests/fixtures/format/6.1/kfree_skb.format");
pub(super) const K61_RETRANS: &str =
    include_str!("../../../tests/fixtures/format/6.1/tcp_retransmit_skb.format");
pub(super) const K61_SOCK: &str =
    include_str!("../../../tests/fixtures/format/6.1/inet_sock_set_state.format");
pub(super) const K510_KFREE: &str =
    include_str!("../../../tests/fixtures/format/5.10/kfree_skb.format");
pub(super) const K510_RETRANS: &str =
    include_str!("../../../tests/fixtures/format/5.10/tcp_retransmit_skb.format");
pub(super) const K510_SOCK: &str =
    include_str!("../../../tests/fixtures/format/5.10/inet_sock_set_state.format");

pub(super) const ALL: [&str; 9] = [
    K618_KFREE,
    K618_RETRANS,
    K618_SOCK,
    K61_KFREE,
    K61_RETRANS,
    K61_SOCK,
    K510_KFREE,
    K510_RETRANS,
    K510_SOCK,
];

pub(super) fn parse(text: &str) -> EventFormat {
    EventFormat::parse(text).expect("fixture parses")
}

pub(super) fn assert_field(f: &EventFormat, name: &str, offset: u32, size: u32, signed: bool) {
    let field = f
        .field(name)
        .unwrap_or_else(|| panic!("{}: no {name}", f.name));
    assert_eq!(
        (field.offset, field.size, field.signed),
        (offset, size, signed),
        "{}.{name}",
        f.name
    );
}
