//! `cargo xtask run [-- ARGS]`: set up, build netlat in release mode, then become
//! `target/release/netlat ARGS` (default `watch`), so its exit code and signals are netlat's own.

use std::os::unix::process::CommandExt as _;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::{command, exec, setup, target_dir, workspace_root};

#[derive(Args)]
pub struct Options {
    /// Arguments for netlat (default: `watch`), e.g. `cargo xtask run -- watch --json`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(opts: Options) -> Result<()> {
    setup::setup().context("setup failed")?;

    let root = workspace_root();
    println!("run: cargo build --release");
    exec(
        command("cargo")
            .args(["build", "--release"])
            .current_dir(&root),
    )?;

    let netlat = target_dir(&root).join("release/netlat");
    let args = if opts.args.is_empty() {
        vec!["watch".to_owned()]
    } else {
        opts.args
    };
    let mut cmd = command(&netlat);
    cmd.args(&args);
    println!("run: {}", crate::display(&cmd));
    // `exec` only returns on failure.
    let err = cmd.exec();
    Err(err).with_context(|| format!("could not run {}", netlat.display()))
}
