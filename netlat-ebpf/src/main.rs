//! netlat's eBPF programs: classic tracepoints that feed one ring buffer.
//!
//! Every kernel layout fact (tracepoint field offsets, struct member offsets, drop-reason
//! numbers) arrives in the `CONFIG` global, which user space fills from tracefs and BTF before
//! loading. Nothing here hard-codes a kernel version.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

// On the host this binary is never built for real (it is not a default member); an empty main
// keeps `cargo check --workspace` working.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
