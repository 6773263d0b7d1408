//! The maps shared with user space (`EVENTS`, `LOST`, `READER`) and between programs
//! (`HOOK_SKB`), and the two helpers every event emitter uses.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use netlat_common::kind;

/// All events, in the order the kernel produced them (per reservation).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Events that could not be reserved, per CPU, indexed by event kind.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// Nonzero while user space reads the ring on a timer because events keep coming: the
/// programs then submit without waking it. Zero while it waits for a wakeup: the kernel's own
/// choice then wakes it only for the first record after it read everything (it is idle). So
/// an idle node costs no wakeups, and a busy one none per event (a wakeup is an irq_work, a
/// self-IPI of microseconds in a VM, paid inside the program that commits the record).
#[map]
pub static READER: Array<u32> = Array::with_max_entries(1, 0);

/// skb of a hook call in progress, per task, for its kretprobe (LRU: a missed return cannot
/// leak an entry forever).
#[map]
pub static HOOK_SKB: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

const BPF_RB_NO_WAKEUP: u64 = 1;

/// Count one event of kind `k` that found the ring full.
#[inline(always)]
pub fn count_lost(k: u32) {
    if let Some(p) = LOST.get_ptr_mut(k) {
        // Per-CPU slot: no other writer can race with this increment.
        unsafe { *p += 1 };
    }
}

/// Submit flags for the reader's current mode (an array lookup is inlined by the verifier).
#[inline(always)]
pub fn submit_flags() -> u64 {
    match READER.get(0) {
        Some(&polling) if polling != 0 => BPF_RB_NO_WAKEUP,
        _ => 0,
    }
}
