//! BTF of any content, standalone and split: the reader and the member-offset resolver return
//! errors, never panic or hang (reference cycles, dangling ids and string offsets, truncated
//! records).
//!
//! The whole input is parsed as one standalone blob; then its first two bytes (little-endian)
//! say where the rest splits into a base and a module's split blob on top of it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netlat::kernel::btf::KernelBtf;

/// Look-ups that walk everything the resolver does: named and anonymous members, typedefs,
/// qualifiers, nested paths. None of them falls back to a module's BTF file
/// (`kernel_layout`, `conntrack_layout` and `param_index` would).
fn exercise(k: &KernelBtf) {
    let _ = k.sock_layout();
    for (s, p) in [
        ("sock", "__sk_common.skc_net"),
        ("net", "ns.inum"),
        ("sk_buff", "dev"),
        ("outer", "in.pnet.net"),
        ("outer", "dev"),
        ("outer", "next.a"),
        ("a", "b.c.d"),
        ("s", "a"),
        ("t2", "hi"),
    ] {
        let _ = k.member_offset(s, p);
    }
    let _ = k.struct_size("outer");
    let _ = k.struct_size("s");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = KernelBtf::from_bytes(data.to_vec()) {
        exercise(&k);
    }
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let at = usize::from(u16::from_le_bytes(*head)).min(rest.len());
    let (base, module) = rest.split_at(at);
    let Ok(base) = KernelBtf::from_bytes(base.to_vec()) else {
        return;
    };
    if let Ok(m) = base.split_from_bytes(module.to_vec()) {
        exercise(&m);
    }
});
