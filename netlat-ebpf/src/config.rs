//! The `CONFIG` global: every kernel layout fact the programs use, filled in by user space at
//! load time, and [`conf!`], the one way the programs read it.

use netlat_common::{
    Config, IpvsLayout, KernelLayout, KfreeLayout, MAX_LOCATIONS, REASON_BITMAP_WORDS,
    RetransmitLayout, RuleLayout, SockLayout, SockStateLayout,
};

/// Filled in by user space at load time (`EbpfLoader::override_global`). The initial value
/// only has to be well-formed: every layout starts unknown.
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config {
    sock_state: SockStateLayout::UNKNOWN,
    retransmit: RetransmitLayout::UNKNOWN,
    kfree: KfreeLayout::UNKNOWN,
    kernel: KernelLayout::UNKNOWN,
    ipvs: IpvsLayout::UNKNOWN,
    rules: RuleLayout::UNKNOWN,
    sock: SockLayout::UNKNOWN,
    ignore_reasons: [0; REASON_BITMAP_WORDS],
    locations: [[0; 2]; MAX_LOCATIONS],
    tcp_syn_sent: 2,
    verbose: 0,
    connect_threshold_ns: 0,
};

/// A volatile load of one `CONFIG` field, so the compiler cannot fold the initial value in.
#[inline(always)]
pub fn load<T: Copy>(field: &T) -> T {
    // SAFETY: `field` is a valid, aligned reference into `CONFIG`.
    unsafe { core::ptr::read_volatile(field) }
}

/// Read one `CONFIG` field at run time: `conf!(kernel.sock_net)`.
macro_rules! conf {
    ($($f:ident).+) => {
        $crate::config::load(&$crate::config::CONFIG.$($f).+)
    };
}
pub(crate) use conf;
