//! netlat: names the known Kubernetes networking issue behind a slow TCP connect.
//!
//! The crate is a pure, deterministic core — event decoding ([`event`], [`packet`]), enrichment
//! ([`symbols`]), flow tracking ([`flow`]), attribution ([`verdict`]) and output ([`output`]) —
//! driven by a thin I/O shell ([`kernel::tracefs`], [`btf`], [`loader`], [`watch`]). Time enters
//! the core only through event timestamps, so a recorded stream always replays to the same
//! verdicts.

pub mod btf;
pub mod cli;
pub mod doctor;
pub mod export;
pub mod kernel;
pub mod limits;
pub mod loader;
pub mod node;
pub mod output;
pub mod privs;
pub mod record;
pub mod replay;
pub mod watch;
