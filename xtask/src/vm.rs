//! `cargo xtask vm-test [--kernel 5.10|6.1|6.12 …]`: runs netlat's scenarios in VMs of Debian
//! kernels 5.10 (bullseye), 6.1 and 6.12 (bookworm), booted with QEMU under TCG.
//!
//! Per kernel: fetch the `-unsigned` image with a private apt configuration into a cache
//! (`kernel`), build a tiny initramfs around the host's `target/release/netlat` (`initramfs`),
//! boot it; the guest's init (`tests/vm/init.sh`) runs netlat and the scenarios
//! (`tests/vm/scenarios`) and reports on its result port (`guest`). The host judges netlat's
//! lines against `tests/vm/expectations.tsv` (`expect`) and prints a table per kernel. A failure
//! on any kernel fails the command; scenarios netlat is known not to handle yet are printed as
//! KNOWN GAPS, never passed silently. When qemu, the tools or the kernels cannot be had, it fails
//! with one line saying so.

mod expect;
mod guest;
mod initramfs;
mod kernel;

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use expect::Outcome;

use crate::{command, exec, find_program, human, target_dir, workspace_root};

#[derive(Args)]
pub struct Options {
    /// Kernel series to boot (repeatable; default: all of 5.10, 6.1, 6.12)
    #[arg(long = "kernel", value_name = "SERIES")]
    pub kernels: Vec<String>,
    /// Run only these scenario groups in the guest (comma list of ladder, first-syn, snat, ipvs,
    /// listen, vxlan)
    #[arg(long, value_name = "GROUPS")]
    pub only: Option<String>,
    /// Seconds one VM may run before it is killed and counted as failed
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Look for newer kernel packages even when the cache has the series
    #[arg(long)]
    pub refresh: bool,
    /// Do not build netlat first; use the binary already in the target directory
    #[arg(long)]
    pub no_build: bool,
}

/// Host tools the VM test needs, and the package that brings each.
const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("cpio", "cpio"),
    ("gcc", "gcc"),
    ("ldd", "libc-bin"),
    ("modprobe", "kmod"),
    ("depmod", "kmod"),
    ("xz", "xz-utils"),
    ("dpkg-deb", "dpkg"),
    ("apt-get", "apt"),
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("ipvsadm", "ipvsadm"),
    ("xtables-legacy-multi", "iptables"),
];

pub fn vm_test(opts: &Options) -> Result<()> {
    let start = Instant::now();
    let series = selected(&opts.kernels)?;
    preflight()?;
    let root = workspace_root();
    let target = target_dir(&root);
    let work = target.join("vm");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    if !opts.no_build {
        println!("vm-test: cargo build --release -p netlat");
        exec(
            command("cargo")
                .args(["build", "--release", "-p", "netlat"])
                .current_dir(&root),
        )?;
    }
    let netlat = target.join("release/netlat");
    if !netlat.is_file() {
        bail!(
            "{} is missing: build it (cargo build --release)",
            netlat.display()
        );
    }
    let guest_dir = root.join("tests/vm");
    let nlvm = work.join("nlvm");
    exec(
        Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(&nlvm)
            .arg(guest_dir.join("nlvm.c")),
    )
    .context("building the guest helper nlvm statically (needs libc6-dev)")?;
    let table_path = guest_dir.join("expectations.tsv");
    let table = fs::read_to_string(&table_path)
        .with_context(|| format!("reading {}", table_path.display()))?;

    // Every kernel and expectation first, so a missing one fails before any VM runs.
    let cache = kernel::cache_dir()?;
    let mut kernels = Vec::new();
    for s in &series {
        let rows = expect::rows_for(&table, s.name)
            .with_context(|| format!("reading {}", table_path.display()))?;
        kernels.push((s, kernel::kernel(s, &cache, opts.refresh)?, rows));
    }

    let mut reports = Vec::new();
    for (s, k, rows) in kernels {
        let t = Instant::now();
        let kwork = work.join(s.name);
        fs::create_dir_all(&kwork)?;
        let image = initramfs::build(
            &k,
            &initramfs::Inputs {
                netlat: &netlat,
                nlvm: &nlvm,
                guest_dir: &guest_dir,
            },
            &kwork,
        )
        .with_context(|| format!("building the initramfs for {}", k.release))?;
        let prep = t.elapsed();
        println!(
            "vm-test: {}: booting {} ({}) under TCG, initramfs {} MB",
            s.name,
            k.release,
            k.package,
            fs::metadata(&image).map_or(0, |m| m.len() >> 20)
        );
        let append = opts
            .only
            .as_deref()
            .map_or(String::new(), |o| format!("netlat.only={o}"));
        let run = guest::boot(&guest::Boot {
            vmlinuz: &k.vmlinuz(),
            initramfs: &image,
            work: &kwork,
            timeout: Duration::from_secs(opts.timeout),
            append: &append,
        })?;
        let judged = expect::judge(&rows, &run, opts.only.is_some());
        let report = Report {
            series: s.name,
            kernel: k,
            prep,
            run,
            judged,
        };
        report.print();
        reports.push(report);
    }
    summary(&reports, start.elapsed())
}

fn selected(names: &[String]) -> Result<Vec<&'static kernel::Series>> {
    if names.is_empty() {
        return Ok(kernel::SERIES.iter().collect());
    }
    names
        .iter()
        .flat_map(|n| n.split(','))
        .map(|n| {
            kernel::SERIES
                .iter()
                .find(|s| s.name == n.trim())
                .with_context(|| {
                    format!(
                        "unknown kernel series {n}: pick from {}",
                        kernel::SERIES
                            .iter()
                            .map(|s| s.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
        .collect()
}

/// Fails with one line naming every missing tool and the packages that bring them.
fn preflight() -> Result<()> {
    let missing: Vec<_> = TOOLS
        .iter()
        .filter(|(tool, _)| {
            find_program(tool).is_none()
                && !["/usr/sbin", "/sbin"]
                    .iter()
                    .any(|d| Path::new(d).join(tool).is_file())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<_> = missing.iter().map(|(_, p)| *p).collect();
    packages.dedup();
    bail!(
        "the VM tests cannot run: {} missing (install {}: `cargo xtask setup` as root)",
        missing
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
            .join(", "),
        packages.join(" ")
    )
}

struct Report {
    series: &'static str,
    kernel: kernel::Kernel,
    prep: Duration,
    run: guest::Run,
    judged: Vec<expect::Judged>,
}

impl Report {
    /// Run-level problems: the VM did not complete, netlat failed, lines did not parse.
    fn run_errors(&self) -> Vec<String> {
        let mut errors = self.run.errors.clone();
        if !self.run.completed && !self.run.timed_out {
            errors.push("the guest did not reach the end of its init".to_owned());
        }
        match self.run.info.get("netlat_exit").map(String::as_str) {
            Some("0") => {}
            Some(rc) => errors.push(format!("netlat exited with status {rc}")),
            None if self.run.completed => errors.push("netlat's exit status is missing".to_owned()),
            None => {}
        }
        for bad in self.run.bad_lines.iter().take(3) {
            errors.push(format!("unparsable netlat line: {bad}"));
        }
        if let Some(failed) = self.run.info.get("insmod_failed") {
            errors.push(format!("a module did not load: {failed}"));
        }
        // A lab the table has no row for still counts.
        for (name, (ok, why)) in &self.run.labs {
            if !ok && !self.judged.iter().any(|j| &j.row.scenario == name) {
                errors.push(format!("lab {name} failed: {why}"));
            }
        }
        errors
    }

    fn outcome(&self) -> Outcome {
        if !self.run_errors().is_empty() {
            return Outcome::Fail;
        }
        self.judged
            .iter()
            .map(|j| j.outcome)
            .filter(|o| *o != Outcome::NowPasses && *o != Outcome::Skipped)
            .max()
            .unwrap_or(Outcome::Ok)
    }

    fn print(&self) {
        let r = &self.run;
        let t = |k: &str| r.info_f64(k).map_or("?".to_owned(), |s| format!("{s:.1}s"));
        println!(
            "vm-test: {} {} ({}): prepare {}, VM wall {}; guest uptime: init {}, netlat ready {}, \
             scenarios done {}, end {}",
            self.series,
            self.kernel.release,
            self.kernel.package,
            human(self.prep),
            human(r.wall),
            t("init_s"),
            t("netlat_ready_s"),
            t("scenarios_s"),
            t("done_s"),
        );
        for e in self.run_errors() {
            println!("  ERROR: {e}");
        }
        if !r.completed {
            println!(
                "  console ({}):\n    {}",
                r.console.display(),
                r.console_tail(25)
            );
            for l in r.stderr.iter().take(20) {
                println!("  netlat stderr: {l}");
            }
        }
        let w = self
            .judged
            .iter()
            .map(|j| j.row.scenario.len())
            .max()
            .unwrap_or(8)
            .max(8);
        println!(
            "  {:w$}  {:6}  {:38}  {:45}  result",
            "scenario", "lab", "expected", "netlat said"
        );
        for j in &self.judged {
            let expected = match &j.row.expect {
                expect::Expect::Verdict(id) => id.clone(),
                expect::Expect::None => "nothing attributed".to_owned(),
                expect::Expect::Ladder(s) => format!(
                    "ladder {}",
                    s.iter()
                        .map(std::string::ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                expect::Expect::AllHooksActive => "all hooks active".to_owned(),
                expect::Expect::Early(id) => format!("{id} at retry 1"),
            };
            let expected = match j.row.status {
                expect::Status::Required => expected,
                expect::Status::Unsupported => format!("{expected} (unsupported)"),
            };
            let lab = j.lab.split_whitespace().next().unwrap_or("-");
            println!(
                "  {:w$}  {:6}  {:38}  {:45}  {}",
                j.row.scenario,
                lab,
                expected,
                j.said,
                j.outcome.label()
            );
            if !j.why.is_empty() && !matches!(j.outcome, Outcome::Ok | Outcome::Skipped) {
                println!("  {:w$}    why: {}", "", j.why);
            }
        }
        println!("  results: {}", r.results.display());
    }
}

fn summary(reports: &[Report], total: Duration) -> Result<()> {
    println!("vm-test: summary");
    println!("  kernel  release                    result  VM wall  ok  gaps  failed");
    for r in reports {
        let count = |o: Outcome| r.judged.iter().filter(|j| j.outcome == o).count();
        println!(
            "  {:6}  {:25}  {:6}  {:>7}  {:2}  {:4}  {:6}",
            r.series,
            r.kernel.release,
            if r.outcome() == Outcome::Fail {
                "FAIL"
            } else {
                "pass"
            },
            human(r.run.wall),
            count(Outcome::Ok),
            count(Outcome::KnownGap),
            count(Outcome::Fail),
        );
    }
    let gaps: Vec<_> = reports
        .iter()
        .flat_map(|r| r.judged.iter().map(move |j| (r, j)))
        .filter(|(_, j)| j.outcome == Outcome::KnownGap)
        .collect();
    if !gaps.is_empty() {
        println!("vm-test: KNOWN GAPS (expected-unsupported in tests/vm/expectations.tsv):");
        for (r, j) in &gaps {
            println!(
                "  {} {}: netlat said {}; wanted {}{}",
                r.series,
                j.row.scenario,
                j.said,
                match &j.row.expect {
                    expect::Expect::Verdict(id) => id.clone(),
                    other => format!("{other:?}"),
                },
                if j.row.note.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", j.row.note)
                }
            );
            if let Some(first) = j.lines.first() {
                println!("    first line: {first}");
            }
        }
    }
    for (r, j) in reports
        .iter()
        .flat_map(|r| r.judged.iter().map(move |j| (r, j)))
        .filter(|(_, j)| j.outcome == Outcome::NowPasses)
    {
        println!(
            "vm-test: {} {} NOW PASSES: flip it to `required` in tests/vm/expectations.tsv",
            r.series, j.row.scenario
        );
    }
    let failed: Vec<_> = reports
        .iter()
        .filter(|r| r.outcome() == Outcome::Fail)
        .map(|r| r.series)
        .collect();
    println!("vm-test: total wall time {}", human(total));
    if !failed.is_empty() {
        bail!("vm-test failed on kernel(s) {}", failed.join(", "));
    }
    Ok(())
}
