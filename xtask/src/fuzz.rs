//! `cargo xtask fuzz [--seconds N] [TARGET…]`: runs netlat's cargo-fuzz targets (`fuzz/`), each
//! for a bounded time, and fails on the first crash, which libFuzzer saves as a reproducer.
//!
//! The targets feed arbitrary bytes to the parsers of untrusted input: the tracefs format-file
//! parser, the ring-buffer event decoder (and the engine behind it), the packet decoder, the
//! recording reader and the BTF reader. They build on nightly with AddressSanitizer and
//! `AYA_BUILD_SKIP=1` (the library needs no eBPF object). Corpora grow under
//! `<target dir>/fuzz/corpus/<target>`, seeded from `fuzz/seeds/<target>`.

use std::{fs, time::Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{command, exec, human, setup, target_dir, workspace_root};

/// Every target in fuzz/fuzz_targets.
pub const TARGETS: &[&str] = &[
    "tracefs_format",
    "event_decode",
    "packet_decode",
    "record_reader",
    "btf_reader",
];

#[derive(Args)]
pub struct Options {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Build unoptimized, as the test suite's smoke run does (quicker to build, fewer inputs).
    #[arg(long)]
    pub dev: bool,
    /// Targets to run (default: all of them).
    pub targets: Vec<String>,
}

pub fn fuzz(opts: &Options) -> Result<()> {
    setup::fuzz_tools()?;
    let targets: Vec<&str> = if opts.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        opts.targets.iter().map(String::as_str).collect()
    };
    if let Some(bad) = targets.iter().find(|t| !TARGETS.contains(t)) {
        bail!(
            "no fuzz target `{bad}`; the targets are {}",
            TARGETS.join(", ")
        );
    }
    let build = if opts.dev {
        Build::Dev
    } else {
        Build::Optimized
    };
    run(&targets, opts.seconds, build)
}

/// How the targets are built.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// cargo-fuzz's default (optimized, one codegen unit): most inputs per second, for real
    /// fuzzing sessions.
    Optimized,
    /// Unoptimized (`--dev`): the test suite's smoke run, where the build (every dependency
    /// again, with sanitizers) costs far more than the seconds of fuzzing it buys. A clean
    /// clone built it in 6m46s here; from the seeds alone, 15 s per target ran 2.0 k–165 k
    /// inputs (with last session's grown corpus, tracefs_format fell to ~40 inputs/s).
    Dev,
}

/// Build the targets, then run each for `seconds`; one line per target says how long it ran
/// and how many inputs it tried.
pub fn run(targets: &[&str], seconds: u64, build: Build) -> Result<()> {
    let root = workspace_root();
    let out = target_dir(&root).join("fuzz");
    let cargo_fuzz = |args: &[&str]| {
        let mut cmd = command("cargo");
        cmd.args(["+nightly", "fuzz"]).args(args);
        if build == Build::Dev {
            // `run` must say it too, or it rebuilds the optimized targets.
            cmd.arg("--dev");
        }
        cmd.args(["--fuzz-dir", "fuzz", "--target-dir"])
            .arg(out.join("target"))
            .env("AYA_BUILD_SKIP", "1")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTUP_TOOLCHAIN")
            .current_dir(&root);
        cmd
    };
    let start = Instant::now();
    // `cargo fuzz build` builds one target or all of them; all share one compilation.
    exec(&mut cargo_fuzz(&["build"]))?;
    println!(
        "fuzz: built {} targets in {}",
        targets.len(),
        human(start.elapsed())
    );

    for t in targets {
        let corpus = out.join("corpus").join(t);
        let artifacts = out.join("artifacts").join(t);
        fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        fs::create_dir_all(&artifacts)
            .with_context(|| format!("creating {}", artifacts.display()))?;
        let mut cmd = cargo_fuzz(&["run", t]);
        cmd.arg(&corpus);
        let seeds = root.join("fuzz/seeds").join(t);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"]);
        let started = Instant::now();
        let output = cmd
            .output()
            .with_context(|| format!("could not start `{}`", crate::display(&cmd)))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            eprintln!("{}", tail(&stderr, 60));
            bail!(
                "fuzz target {t} crashed after {} (reproducer in {})",
                human(started.elapsed()),
                artifacts.display()
            );
        }
        let runs = stat(&stderr, "stat::number_of_executed_units").unwrap_or(0);
        println!(
            "fuzz: {t}: {} without a crash, {runs} inputs",
            human(started.elapsed())
        );
    }
    Ok(())
}

/// A `stat::name: N` line of libFuzzer's final statistics.
fn stat(stderr: &str, name: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats() {
        let err = "INFO: Seed: 1\nDone 123 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 4567\nstat::peak_rss_mb: 80\n";
        assert_eq!(stat(err, "stat::number_of_executed_units"), Some(4567));
        assert_eq!(stat(err, "stat::peak_rss_mb"), Some(80));
        assert_eq!(stat(err, "stat::nothing"), None);
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }

    #[test]
    fn every_target_has_a_source_file() {
        let dir = workspace_root().join("fuzz/fuzz_targets");
        for t in TARGETS {
            assert!(dir.join(format!("{t}.rs")).is_file(), "{t}");
        }
    }
}
