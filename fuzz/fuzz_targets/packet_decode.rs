//! Captured packet bytes of any shape (the first byte picks IPv4 or IPv6): the decoder, VXLAN
//! inner packets included, returns errors, never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netlat_core::{enrich::VXLAN_PORTS, packet};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let ethertype = match sel % 3 {
        0 => 0x0800,
        1 => 0x86dd,
        _ => u16::from(sel),
    };
    if let Ok(p) = packet::decode(ethertype, bytes, VXLAN_PORTS) {
        let _ = p.tuple.to_string();
        let _ = p.tuple.reversed();
    }
});
