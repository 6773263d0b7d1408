//! netlat's developer tasks: `cargo xtask setup | test | run | bench | vm-test | fuzz`.
//!
//! Each command lives in its own module; this file owns the command line, the error line that
//! `main` prints, and the helpers every command shares (running a child process, locating the
//! workspace, knowing whether we are root).

mod bench;
mod fuzz;
#[cfg(test)]
mod imports;
mod json;
mod run;
mod setup;
mod test;
mod vm;

use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(bin_name = "cargo xtask", about = "netlat's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks to build and test netlat (idempotent)
    ///
    /// The nightly toolchain and its rust-src, bpf-linker (built against nightly's own LLVM),
    /// the apt packages the lab tests use, and the tracefs and bpffs mounts. Installing apt
    /// packages and mounting need root.
    Setup,
    /// Run the whole test suite as CI does (needs root)
    ///
    /// setup, `cargo fmt --check`, `cargo build --release` (which builds the eBPF object),
    /// `cargo clippy -D warnings`, then `cargo test --workspace --release` with
    /// NETLAT_BIN=target/release/netlat so the lab tests run the binary just built.
    Test(test::Options),
    /// Set up, build netlat in release mode and run it (default: `netlat watch`)
    Run(run::Options),
    /// Measure netlat's cost on this machine and write BENCHMARKS.md (needs root)
    ///
    /// Connect storm (bare vs netlat vs a counting bpftrace script), bulk throughput, drop
    /// storm, per-program ns/run, collector throughput, verdict latency, memory with 100 k
    /// attempts in flight and start-up, each run several times; ~10 minutes.
    Bench(bench::Options),
    /// Run netlat's scenarios in QEMU (TCG) VMs of Debian kernels 5.10, 6.1 and 6.12
    ///
    /// Fetches the kernels with a private apt configuration into a cache, boots each with a
    /// tiny initramfs holding target/release/netlat, and judges netlat's lines against
    /// tests/vm/expectations.tsv; a failure on any kernel fails the command.
    VmTest(vm::Options),
    /// Run each cargo-fuzz target (fuzz/) for a bounded time; fails on the first crash
    ///
    /// Builds the targets on nightly with AddressSanitizer (cargo-fuzz is installed if
    /// missing), then feeds each parser of untrusted input arbitrary bytes for --seconds.
    Fuzz(fuzz::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::setup(),
        Cmd::Test(opts) => test::test(&opts),
        Cmd::Run(opts) => run::run(opts),
        Cmd::Bench(opts) => bench::bench(opts),
        Cmd::VmTest(opts) => vm::vm_test(&opts),
        Cmd::Fuzz(opts) => fuzz::fuzz(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` joins the context chain on one line: "what failed: why".
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask's manifest directory is `<root>/xtask`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest directory has a parent")
        .to_path_buf()
}

/// Where cargo puts build output: `$CARGO_TARGET_DIR` when set (relative to the workspace
/// root, where xtask runs cargo), else `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where rustup's proxies and `cargo install` live.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    let home = match env::var_os("CARGO_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home),
        _ => PathBuf::from(env::var_os("HOME")?).join(".cargo"),
    };
    Some(home.join("bin"))
}

/// `PATH` with the cargo bin directory appended when it is missing, so that children find
/// `cargo`, `rustup` and `bpf-linker` even from a shell that never sourced `~/.cargo/env`.
fn child_path() -> Option<OsString> {
    let path = env::var_os("PATH").unwrap_or_default();
    let bin = cargo_bin_dir()?;
    if env::split_paths(&path).any(|dir| dir == bin) {
        return None;
    }
    env::join_paths(env::split_paths(&path).chain([bin])).ok()
}

/// A `Command` for `program` whose `PATH` includes the cargo bin directory.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    if let Some(path) = child_path() {
        cmd.env("PATH", path);
    }
    cmd
}

/// Looks `name` up in `PATH`, then in the cargo bin directory.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(cargo_bin_dir())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `cmd` to completion with inherited stdio; the error names the command and its status.
pub fn exec(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its trimmed stdout; the error names the command, its status and the
/// first line of its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!("`{shown}` failed ({}): {}", out.status, first.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// How a command is shown in messages: the variables it sets (except `PATH`), the program and
/// its arguments, shell-quoted where needed.
pub fn display(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(key, value)| {
        let value = value?;
        (key != "PATH").then(|| format!("{}={}", key.to_string_lossy(), quote(value)))
    });
    let words = [quote(cmd.get_program())]
        .into_iter()
        .chain(cmd.get_args().map(quote));
    envs.chain(words).collect::<Vec<_>>().join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_uid(&status))
        == Some(0)
}

/// The effective uid from `/proc/self/status` (`Uid:  real  effective  saved  fs`).
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A wall time as people read it: `0.4s`, `83.2s`, `5m12s`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_arguments() {
        use clap::Parser as _;
        let args = |argv: &[&str]| match Cli::try_parse_from(argv).unwrap().command {
            Cmd::Test(opts) => opts.args,
            Cmd::Run(opts) => opts.args,
            Cmd::Setup | Cmd::Bench(_) | Cmd::VmTest(_) | Cmd::Fuzz(_) => {
                panic!("parsed as another command")
            }
        };
        assert_eq!(
            args(&["xtask", "test", "--", "lab_", "--", "--nocapture"]),
            ["lab_", "--", "--nocapture"]
        );
        assert_eq!(
            args(&["xtask", "run", "--", "watch", "--json"]),
            ["watch", "--json"]
        );
        assert_eq!(
            args(&["xtask", "run", "watch", "--json"]),
            ["watch", "--json"]
        );
        assert!(args(&["xtask", "run"]).is_empty());
    }

    #[test]
    fn effective_uid_is_the_second_uid_field() {
        let status =
            "Name:\tcargo\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn display_quotes_and_shows_set_variables() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "--release", "a b"])
            .env("NETLAT_BIN", "/w/target/release/netlat")
            .env("PATH", "/bin")
            .env_remove("CARGO_TARGET_DIR");
        assert_eq!(
            display(&cmd),
            "NETLAT_BIN=/w/target/release/netlat cargo test --release 'a b'"
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(420)), "0.4s");
        assert_eq!(human(Duration::from_secs(312)), "5m12s");
    }
}
