//! netlat's shell: everything that touches the machine, around the pure core in `netlat-core`.
//!
//! [`cmd`] holds one file per subcommand; [`kernel`] loads and feeds from the eBPF programs
//! (tracefs and BTF layouts, the loader's plan, privileges, the ring reader); [`node`] reads the
//! node (facts, Services, namespaces, conntrack); [`output`] prints; [`export`] keeps the
//! histograms, the interval log and the metrics; [`record`] writes and reads recordings. Time
//! enters the core only through event timestamps, so a recording always replays to the same
//! lines.

pub mod cmd;
pub mod export;
pub mod kernel;
pub mod limits;
pub mod node;
pub mod output;
pub mod record;
pub mod tui;
