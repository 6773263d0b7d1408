//! netlat's pure, deterministic core: a raw ring-buffer item goes in, a judged report comes out.
//!
//! [`event`] decodes the kernel's wire structs and [`packet`] the captured headers; [`enrich`]
//! names drop reasons, kernel locations and conntrack tuples with tables built once by the
//! shell; [`flow`] tracks each connect attempt and the drops that belong to it; [`verdict`] is
//! the known-issue catalog as data, and [`exposure`] its node-configuration rules over
//! [`facts`]; [`engine`] ties them together and reports through the two-method
//! [`report::Reports`] port.
//!
//! Nothing here reads a clock, a file or the network (`clippy.toml` forbids it): time comes
//! from event timestamps, node knowledge through the [`verdict::NodeView`],
//! [`engine::Counters`], [`engine::NatLookup`] and [`pods::PodView`] ports. So a recorded stream always replays to
//! the same lines, and every verdict is testable without a kernel.

pub mod engine;
pub mod enrich;
pub mod event;
pub mod exposure;
pub mod facts;
pub mod flow;
pub mod packet;
pub mod pods;
pub mod progress;
pub mod report;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod verdict;

/// The hasher of the core's hot maps (attempts by socket, tuple hashes, program names, progress
/// lines): foldhash, seeded at random per process like std's `RandomState` (so crafted tuples
/// cannot aim at one bucket), at a fraction of SipHash's cost per lookup. No map's iteration
/// order reaches the output (it was already random with std's hasher).
pub type FastHash = foldhash::fast::RandomState;
