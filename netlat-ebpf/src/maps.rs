//! The maps shared with user space (`EVENTS`, `LOST`, `READER`, `ATTEMPTS`, `ATTEMPT_STATS`,
//! `PROC_CGROUP`) and between programs (`HOOK_SKB`, `ATTEMPTS`), and the helpers every event emitter uses.

use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use netlat_common::{MAX_PENDING_ATTEMPTS, PendingAttempt, attempt_stat, kind};

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

/// Connection attempts in SYN_SENT, by socket address (see `probes::connect`). A plain hash,
/// not an LRU: an LRU would evict silently; here a full table makes the insert fail, and the
/// attempt is then shipped at once and counted (`attempt_stat::TABLE_FULL`).
#[map]
pub static ATTEMPTS: HashMap<u64, PendingAttempt> =
    HashMap::with_max_entries(MAX_PENDING_ATTEMPTS, 0);

/// Per-CPU counters of what the attempt table did, indexed by `attempt_stat`.
#[map]
pub static ATTEMPT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(attempt_stat::COUNT, 0);

/// The cgroup (v2 id: the inode of its cgroupfs directory) of each process at its latest
/// connect, by tgid. An attempt reaches user space at its first SYN retransmit, often after a
/// short-lived client has exited and its `/proc/PID/cgroup` is gone: this names its container.
/// LRU: a process table that forgets the oldest, costing only a container name.
#[map]
pub static PROC_CGROUP: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1 << 16, 0);

const BPF_RB_NO_WAKEUP: u64 = 1;

/// Remember the cgroup of process `tgid` (the current task): written only when it changed, so
/// a process that connects often costs a lookup per connect, not an LRU update.
#[inline(always)]
pub fn remember_cgroup(tgid: u32) {
    let id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is copied out at once; a concurrent update only makes a stale compare.
    if unsafe { PROC_CGROUP.get(&tgid) }.copied() != Some(id) {
        let _ = PROC_CGROUP.insert(&tgid, &id, 0);
    }
}

/// Count one event of kind `k` that found the ring full.
#[inline(always)]
pub fn count_lost(k: u32) {
    if let Some(p) = LOST.get_ptr_mut(k) {
        // Per-CPU slot: no other writer can race with this increment.
        unsafe { *p += 1 };
    }
}

/// Count one `attempt_stat` event.
#[inline(always)]
pub fn count_stat(i: u32) {
    if let Some(p) = ATTEMPT_STATS.get_ptr_mut(i) {
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
