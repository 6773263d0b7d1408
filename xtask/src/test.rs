//! `cargo xtask test`: the project's whole test command, the one CI runs (as root).
//!
//! setup → `cargo fmt --check` → `cargo build --release` (which builds the eBPF object through
//! netlat/build.rs) → `cargo clippy -D warnings` → `cargo deny check` (offline) →
//! `cargo test --workspace --release`, the lab tests running the binary just built
//! (`NETLAT_BIN`) → each cargo-fuzz target for `--fuzz-seconds` (15), built unoptimized. Each step prints one line
//! with its wall time; the first failure stops the run.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{command, exec, human, is_root, setup, target_dir, workspace_root};

#[derive(Args)]
pub struct Options {
    /// Seconds each cargo-fuzz target runs after the tests (0 skips fuzzing).
    #[arg(long, default_value_t = 15)]
    pub fuzz_seconds: u64,
    /// Extra arguments for `cargo test`, e.g. `cargo xtask test -- lab_ -- --nocapture`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn test(opts: &Options) -> Result<()> {
    if !is_root() {
        bail!(
            "the lab tests need root (they create network namespaces and load eBPF programs): \
             run `cargo xtask test` as root"
        );
    }
    let root = workspace_root();
    let netlat = target_dir(&root).join("release/netlat");

    let cargo = |args: &[&str]| {
        let mut cmd = command("cargo");
        cmd.args(args).current_dir(&root);
        cmd
    };
    let mut cargo_test = cargo(&["test", "--workspace", "--release"]);
    cargo_test.args(&opts.args).env("NETLAT_BIN", &netlat);

    let mut steps = [
        // Nightly's rustfmt: it applies rustfmt.toml's import grouping, which stable ignores.
        ("fmt", cargo(&["+nightly", "fmt", "--all", "--", "--check"])),
        ("build", cargo(&["build", "--release"])),
        (
            "clippy",
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        // Dependency policy (deny.toml), offline: setup fetched every crate beforehand.
        (
            "deny",
            cargo(&["deny", "--offline", "check", "bans", "licenses", "sources"]),
        ),
        ("test", cargo_test),
    ];
    let total = steps.len() + 2 + usize::from(opts.fuzz_seconds > 0);

    let start = Instant::now();
    println!("test: [1/{total}] setup");
    let result = setup::setup();
    report("setup", start, &result);
    result.context("setup failed")?;

    for (i, (name, cmd)) in steps.iter_mut().enumerate() {
        println!("test: [{}/{total}] {}", i + 2, crate::display(cmd));
        let start = Instant::now();
        let result = exec(cmd);
        report(name, start, &result);
        result?;
    }
    // The kernel matrix: the same release binary in Debian 5.10, 6.1 and 6.12 VMs (TCG).
    println!(
        "test: [{}/{total}] vm: the kernel matrix (cargo xtask vm-test --no-build)",
        steps.len() + 2
    );
    let start = Instant::now();
    let result = crate::vm::vm_test(&crate::vm::Options {
        kernels: Vec::new(),
        only: None,
        timeout: 300,
        refresh: false,
        no_build: true,
    });
    report("vm", start, &result);
    result?;
    if opts.fuzz_seconds > 0 {
        println!(
            "test: [{total}/{total}] fuzz: every target for {} s",
            opts.fuzz_seconds
        );
        let start = Instant::now();
        let result = crate::fuzz::run(
            crate::fuzz::TARGETS,
            opts.fuzz_seconds,
            crate::fuzz::Build::Dev,
        );
        report("fuzz", start, &result);
        result?;
    }
    Ok(())
}

fn report(name: &str, start: Instant, result: &Result<()>) {
    let verdict = if result.is_ok() { "ok" } else { "FAILED" };
    println!("test: {name} {verdict} in {}", human(start.elapsed()));
}
