//! The kernel side of the shell: everything netlat reads from or does to the running kernel.
//! [`btf`] and the tracefs parsers learn the kernel's layouts, [`loader`] plans and attaches the
//! programs on the best rung each kernel offers, [`privs`] checks and drops capabilities,
//! [`ring`] reads what the programs write, and [`sweep`] frees attempt-table entries whose end no
//! program saw.

pub mod btf;
pub mod loader;
pub mod privs;
pub mod ring;
pub mod sweep;
pub mod tracefs;
