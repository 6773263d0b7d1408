//! The kernel side of the shell: what netlat reads from and does to the running kernel —
//! privileges, the ring buffer the programs write — beside the loader that attaches them.

pub mod privs;
pub mod ring;
