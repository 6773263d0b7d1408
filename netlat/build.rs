//! Builds the eBPF programs (netlat-ebpf's binary) for the BPF target with aya-build, so the
//! object can be embedded in the netlat binary.

use std::{fs, path::PathBuf};

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join("netlat");
    // A stale object from an earlier build must not survive an AYA_BUILD_SKIP build.
    let _ = fs::remove_file(&object);
    let ebpf = aya_build::Package {
        name: "netlat-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../netlat-ebpf"),
        ..Default::default()
    };
    // aya-build watches the programs' crate; the wire types they include live beside it.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../netlat-common")
    );
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default()).context(
        "building the eBPF programs failed; run `cargo xtask setup` (nightly rust-src and bpf-linker)",
    )?;
    if !object.exists() {
        // AYA_BUILD_SKIP=1: an empty object makes the loader say the binary has no programs.
        fs::write(&object, []).context("writing the placeholder eBPF object")?;
    }
    Ok(())
}
