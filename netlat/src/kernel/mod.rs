//! The kernel side of the shell: what netlat reads from the running kernel's interfaces (tracefs).

pub mod tracefs;
