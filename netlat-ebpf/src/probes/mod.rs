//! What each program does, one room per kind of evidence. The entry points in `main.rs` call
//! into these; the helpers here read kernel memory for all of them.

pub mod connect;
pub mod drop;
pub mod hooks;
pub mod retransmit;
mod sock;

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel};
use netlat_common::{ABSENT, EventHeader};

#[inline(always)]
fn header(k: u32) -> EventHeader {
    EventHeader {
        kind: k,
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns: unsafe { bpf_ktime_get_ns() },
    }
}

/// Read a kernel value at `base + off`; `None` when the offset is unknown or the read faults.
#[inline(always)]
fn kread<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == ABSENT {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Load a `T` at `base + off` from a BTF-typed kernel pointer (a fault reads as 0).
#[inline(always)]
fn btf_load<T: Copy>(base: *const u8, off: u32) -> T {
    // SAFETY: `base` is a PTR_TO_BTF_ID the verifier tracks; it checks every access against the
    // BTF type and turns a fault into a zero read.
    unsafe { core::ptr::read_volatile(base.add(off as usize) as *const T) }
}
