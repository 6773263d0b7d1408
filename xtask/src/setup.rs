//! `cargo xtask setup`: installs what a fresh Debian 12 machine lacks to build and test netlat.
//!
//! Every step checks first and prints `already present` when there is nothing to do, so running
//! it again is cheap; `test` and `run` start with it.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::Path,
    process::{self, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{command, exec, find_program, is_root, output, workspace_root};

/// Debian packages whose tools the lab tests call (ip, nft, iptables, conntrack, ethtool,
/// python3, sysctl/ps, modprobe, bpftool, prometheus, which the export test runs on
/// loopback to scrape `--listen`, and tmux, the headless terminal of the `watch --tui` test),
/// and the build's `protoc`.
const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "iptables",
    "conntrack",
    "ethtool",
    "python3",
    "procps",
    "kmod",
    "bpftool",
    "prometheus",
    "tmux",
    // `cargo xtask vm-test`: QEMU (TCG), the guest's busybox, initramfs packing, the static
    // guest helper (gcc + libc6-dev), .ko.xz modules, ipvsadm for the IPVS scenarios.
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "gcc",
    "libc6-dev",
    "xz-utils",
    "ipvsadm",
    // The pod lab (tests/tests/lab_pods.rs): a real containerd (CRI) + runc + the CNI bridge,
    // host-local and loopback plugins; its one-binary image is busybox-static (above).
    "containerd",
    "runc",
    "containernetworking-plugins",
    // `protoc`: the k8s-cri crate generates its CRI client from the proto at build time.
    "protobuf-compiler",
];

/// Pseudo file systems netlat reads (tracepoint formats) and pins into.
const MOUNTS: &[Mount] = &[
    Mount {
        fstype: "tracefs",
        source: "tracefs",
        target: "/sys/kernel/tracing",
    },
    Mount {
        fstype: "bpf",
        source: "bpffs",
        target: "/sys/fs/bpf",
    },
];

/// How long to wait for another apt/dpkg run to release its lock.
const APT_LOCK_WAIT: Duration = Duration::from_mins(2);

struct Mount {
    fstype: &'static str,
    source: &'static str,
    target: &'static str,
}

pub fn setup() -> Result<()> {
    let root = is_root();
    // What only root could do; reported together in one line at the end.
    let mut needs_root = Vec::new();

    fmt_and_clippy()?;
    nightly_toolchain()?;
    rust_src()?;
    bpf_linker()?;
    cargo_deny()?;
    fuzz_tools()?;
    apt_packages(root, &mut needs_root)?;
    mounts(root, &mut needs_root)?;

    if !needs_root.is_empty() {
        bail!(
            "setup must {}: run it as root (sudo -E cargo xtask setup)",
            needs_root.join(" and ")
        );
    }
    Ok(())
}

/// rustfmt and clippy for the toolchain that builds netlat (the one running xtask), which
/// `test` uses; a minimal-profile toolchain lacks them.
fn fmt_and_clippy() -> Result<()> {
    let root = workspace_root();
    let check = |tool: &str| {
        output(
            command("cargo")
                .args([tool, "--version"])
                .current_dir(&root),
        )
    };
    let missing = ["fmt", "clippy"]
        .into_iter()
        .filter(|tool| check(tool).is_err())
        .collect::<Vec<_>>();
    if missing.is_empty() {
        println!("setup: rustfmt and clippy: already present");
        return Ok(());
    }
    let components = missing
        .iter()
        .map(|tool| if *tool == "fmt" { "rustfmt" } else { "clippy" })
        .collect::<Vec<_>>();
    println!("setup: adding {} ...", components.join(" and "));
    exec(
        command("rustup")
            .args(["component", "add"])
            .args(&components)
            .current_dir(&root),
    )?;
    for tool in missing {
        check(tool).context("still not runnable after `rustup component add`")?;
    }
    println!("setup: rustfmt and clippy: ok");
    Ok(())
}

fn nightly_toolchain() -> Result<()> {
    let list = output(command("rustup").args(["toolchain", "list"]))?;
    if has_toolchain(&list, "nightly") {
        println!("setup: nightly toolchain: already present");
        return Ok(());
    }
    println!("setup: installing the nightly toolchain (minimal profile) ...");
    exec(command("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    println!("setup: nightly toolchain: ok");
    Ok(())
}

fn rust_src() -> Result<()> {
    let list = output(command("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    // rust-src: the eBPF build compiles core from source; rustfmt: `test` checks formatting
    // with nightly's, the one that groups imports (rustfmt.toml `group_imports`).
    for (component, why) in [
        ("rust-src", "the eBPF build compiles core from source"),
        ("rustfmt", "import grouping is a nightly rustfmt option"),
    ] {
        if has_component(&list, component) {
            println!("setup: nightly {component}: already present");
            continue;
        }
        println!("setup: adding {component} to nightly ({why}) ...");
        exec(command("rustup").args(["component", "add", component, "--toolchain", "nightly"]))?;
        println!("setup: nightly {component}: ok");
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let found = find_program("bpf-linker");
    let reinstall = match &found {
        Some(path) => match linker_version(path) {
            Ok(version) => {
                println!("setup: bpf-linker: already present ({version})");
                return Ok(());
            }
            Err(err) => {
                // Typically: it was linked against an older nightly's libLLVM, since replaced.
                println!(
                    "setup: {} is not runnable ({err:#}); rebuilding it",
                    path.display()
                );
                true
            }
        },
        None => false,
    };
    install_bpf_linker(reinstall)?;
    let path = find_program("bpf-linker")
        .context("`cargo install bpf-linker` succeeded but bpf-linker is not on PATH")?;
    let version = linker_version(&path)
        .with_context(|| format!("the freshly built {} does not run", path.display()))?;
    println!("setup: bpf-linker: ok ({version})");
    Ok(())
}

/// cargo-deny, for the dependency check of `test`; pinned, built from crates.io.
const CARGO_DENY: (&str, &str) = ("cargo-deny", "0.20.2");
/// cargo-fuzz, for `fuzz` and the fuzz step of `test` (libFuzzer itself comes with the
/// `libfuzzer-sys` crate).
const CARGO_FUZZ: (&str, &str) = ("cargo-fuzz", "0.13.2");

/// cargo-deny, and every crate of the workspace's graph for all platforms: `cargo metadata`
/// (which cargo-deny reads) wants them all, and with them in the cache the check runs offline.
fn cargo_deny() -> Result<()> {
    cargo_tool(CARGO_DENY, "deny")?;
    let root = workspace_root();
    exec(command("cargo").arg("fetch").current_dir(&root))?;
    println!("setup: crates of every platform (for cargo deny): ok");
    Ok(())
}

/// cargo-fuzz (the nightly toolchain it runs on is installed by `setup` before it).
pub fn fuzz_tools() -> Result<()> {
    cargo_tool(CARGO_FUZZ, "fuzz")
}

/// Installs the cargo subcommand `cargo <sub>` from crate `name` at `version` unless a
/// `cargo <sub> --version` already runs.
fn cargo_tool((name, version): (&str, &str), sub: &str) -> Result<()> {
    if let Ok(v) = output(command("cargo").args([sub, "--version"])) {
        println!("setup: {name}: already present ({v})");
        return Ok(());
    }
    println!("setup: installing {name} {version} ...");
    let mut cmd = command("cargo");
    cmd.args(["install", "--locked", name, "--version", version]);
    // The workspace's target dir and flags are not this build's.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    exec(cmd.current_dir(env::temp_dir()))?;
    let v = output(command("cargo").args([sub, "--version"]))
        .with_context(|| format!("`cargo {sub}` does not run after installing {name}"))?;
    println!("setup: {name}: ok ({v})");
    Ok(())
}

fn linker_version(path: &Path) -> Result<String> {
    output(Command::new(path).arg("--version"))
}

/// Builds bpf-linker with nightly against nightly's own libLLVM, so no system LLVM is needed.
fn install_bpf_linker(force: bool) -> Result<()> {
    let sysroot = output(command("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = Path::new(&sysroot).join("lib");
    let names = fs::read_dir(&lib)
        .with_context(|| format!("reading nightly's sysroot {}", lib.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect::<Vec<_>>();
    let (libllvm, major) = choose_libllvm(&names).with_context(|| {
        format!(
            "nightly's sysroot has no libLLVM.so.*: cannot build bpf-linker (looked in {})",
            lib.display()
        )
    })?;

    // llvm-sys wants `$LLVM_PREFIX/lib/libLLVM.so`; nightly ships it under a versioned name.
    let prefix = env::temp_dir().join(format!("xtask-bpf-linker-llvm.{}", process::id()));
    let _ = fs::remove_dir_all(&prefix);
    fs::create_dir_all(prefix.join("lib"))
        .with_context(|| format!("creating {}", prefix.display()))?;
    let result = (|| {
        symlink(lib.join(&libllvm), prefix.join("lib/libLLVM.so"))
            .with_context(|| format!("linking {libllvm} into {}", prefix.display()))?;
        println!(
            "setup: installing bpf-linker (built against nightly's LLVM {major}, {libllvm}) ..."
        );
        exec(&mut bpf_linker_install(&prefix, &lib, major, force))
    })();
    let _ = fs::remove_dir_all(&prefix);
    result
}

fn bpf_linker_install(prefix: &Path, sysroot_lib: &Path, major: u32, force: bool) -> Command {
    let mut cmd = command("cargo");
    cmd.args(["+nightly", "install", "bpf-linker", "--no-default-features"])
        .args(["--features", &format!("llvm-{major}")]);
    if force {
        cmd.arg("--force");
    }
    // Settings of the cargo that runs xtask (target dir, flags, pinned toolchain or compiler)
    // must not reach this build; its RUSTFLAGS are set here, and it runs outside the workspace
    // so the workspace's .cargo/config.toml does not apply either.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("LLVM_PREFIX", prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", sysroot_lib.display()),
        )
        .current_dir(prefix);
    cmd
}

fn apt_packages(root: bool, needs_root: &mut Vec<String>) -> Result<()> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        println!(
            "setup: apt packages ({}): already present",
            APT_PACKAGES.join(" ")
        );
        return Ok(());
    }
    let list = missing.join(" ");
    if !root {
        println!("setup: apt packages missing: {list}");
        needs_root.push(format!("install the apt packages {list}"));
        return Ok(());
    }
    println!("setup: installing apt packages: {list} ...");
    apt_get(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().map(String::as_str));
    apt_get(&args)?;
    let still = missing_packages()?;
    if !still.is_empty() {
        bail!(
            "apt-get installed nothing for {}: still not installed",
            still.join(" ")
        );
    }
    println!("setup: apt packages: ok");
    Ok(())
}

fn missing_packages() -> Result<Vec<String>> {
    // dpkg-query exits 1 when a package is unknown to dpkg; its stdout still lists the others.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\\n"])
        .args(APT_PACKAGES)
        .stderr(Stdio::null())
        .output()
        .context("could not run dpkg-query (setup installs packages on Debian/Ubuntu only)")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    Ok(missing_from(&listing, APT_PACKAGES))
}

/// Runs apt-get non-interactively, retrying for up to [`APT_LOCK_WAIT`] while another apt or
/// dpkg run holds the lock.
fn apt_get(args: &[&str]) -> Result<()> {
    let start = Instant::now();
    loop {
        let mut cmd = Command::new("apt-get");
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stderr(Stdio::piped());
        let shown = crate::display(&cmd);
        let out = cmd
            .spawn()
            .and_then(std::process::Child::wait_with_output)
            .with_context(|| format!("could not start `{shown}`"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            eprint!("{stderr}");
            return Ok(());
        }
        if is_lock_error(&stderr) && start.elapsed() < APT_LOCK_WAIT {
            println!(
                "setup: apt/dpkg is locked by another process; retrying in 5s (waited {}s of {}s)",
                start.elapsed().as_secs(),
                APT_LOCK_WAIT.as_secs()
            );
            thread::sleep(Duration::from_secs(5));
            continue;
        }
        eprint!("{stderr}");
        let why = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("E:"))
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default();
        bail!("`{shown}` failed ({}){why}", out.status);
    }
}

fn mounts(root: bool, needs_root: &mut Vec<String>) -> Result<()> {
    let table = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    for mount in MOUNTS {
        if is_mounted(&table, mount.target, mount.fstype) {
            println!(
                "setup: {} at {}: already present",
                mount.fstype, mount.target
            );
        } else if root {
            println!("setup: mounting {} at {} ...", mount.fstype, mount.target);
            exec(Command::new("mount").args(["-t", mount.fstype, mount.source, mount.target]))?;
            println!("setup: {} at {}: ok", mount.fstype, mount.target);
        } else {
            println!("setup: {} is not mounted at {}", mount.fstype, mount.target);
            needs_root.push(format!("mount {} at {}", mount.fstype, mount.target));
        }
    }
    Ok(())
}

/// Whether `rustup toolchain list` shows the channel `name` (e.g. `nightly-x86_64-unknown-linux-gnu`),
/// not counting dated ones such as `nightly-2024-05-01-…`.
fn has_toolchain(list: &str, name: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|toolchain| match toolchain.strip_prefix(name) {
            Some("") => true,
            Some(rest) => rest
                .strip_prefix('-')
                .is_some_and(|host| !host.starts_with(|c: char| c.is_ascii_digit())),
            None => false,
        })
}

/// Whether `rustup component list --installed` lists `component`, a target-independent one such
/// as `rust-src` (target-specific ones carry a `-<target>` suffix).
fn has_component(list: &str, component: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| name == component)
}

/// Picks the versioned libLLVM (`libLLVM.so.22.1-rust-1.97.0-nightly`) from a sysroot `lib`
/// listing and returns it with its LLVM major version; the highest one when there are several.
fn choose_libllvm(names: &[String]) -> Option<(String, u32)> {
    names
        .iter()
        .filter_map(|name| {
            let version = name.strip_prefix("libLLVM.so.")?;
            let digits = version.split(|c: char| !c.is_ascii_digit()).next()?;
            Some((name.clone(), digits.parse::<u32>().ok()?))
        })
        .max_by(|(a, major_a), (b, major_b)| major_a.cmp(major_b).then(a.cmp(b)))
}

/// The packages of `wanted` that a `dpkg-query -W -f='${Package} ${Status}\n'` listing does not
/// show as installed (`install ok installed`, `hold ok installed`).
fn missing_from(listing: &str, wanted: &[&str]) -> Vec<String> {
    let installed = listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let package = words.next()?;
            (words.nth(2) == Some("installed")).then_some(package)
        })
        .collect::<Vec<_>>();
    wanted
        .iter()
        .filter(|package| !installed.contains(package))
        .map(std::string::ToString::to_string)
        .collect()
}

/// Whether apt-get failed because another apt/dpkg run holds its lock.
fn is_lock_error(stderr: &str) -> bool {
    stderr.contains("Could not get lock") || stderr.contains("Unable to lock")
}

/// Whether `/proc/mounts` has a `fstype` mount at `target`.
fn is_mounted(table: &str, target: &str, fstype: &str) -> bool {
    table.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(target) && fields.next() == Some(fstype)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_list() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n\
                    1.95.0-x86_64-unknown-linux-gnu\n";
        assert!(has_toolchain(list, "nightly"));
        assert!(has_toolchain(list, "stable"));
        assert!(!has_toolchain(list, "beta"));
        let dated = "stable-x86_64-unknown-linux-gnu (default)\nnightly-2024-05-01-x86_64-unknown-linux-gnu\n";
        assert!(!has_toolchain(dated, "nightly"));
        assert!(!has_toolchain("no installed toolchains\n", "nightly"));
    }

    #[test]
    fn component_list() {
        let list = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\nrust-src\n\
                    rust-std-x86_64-unknown-linux-gnu\nrustc-x86_64-unknown-linux-gnu\n";
        assert!(has_component(list, "rust-src"));
        let without = "cargo-x86_64-unknown-linux-gnu\nrust-std-x86_64-unknown-linux-gnu\n";
        assert!(!has_component(without, "rust-src"));
        assert!(!has_component(without, "rust"));
    }

    #[test]
    fn libllvm_from_listing() {
        let names = [
            "libLLVM-22-rust-1.97.0-nightly.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-b5a965480ee51f9a.so",
            "rustlib",
        ]
        .map(String::from);
        assert_eq!(
            choose_libllvm(&names),
            Some(("libLLVM.so.22.1-rust-1.97.0-nightly".to_owned(), 22))
        );
        let several = ["libLLVM.so.21.1-rust-x", "libLLVM.so.23.0-rust-y"].map(String::from);
        assert_eq!(choose_libllvm(&several).map(|(_, major)| major), Some(23));
        let none = ["libLLVM-22-rust-1.97.0-nightly.so", "rustlib"].map(String::from);
        assert_eq!(choose_libllvm(&none), None);
    }

    #[test]
    fn dpkg_listing() {
        let listing = "bpftool install ok installed\n\
                       conntrack hold ok installed\n\
                       kmod unknown ok not-installed\n\
                       nftables deinstall ok config-files\n";
        assert_eq!(
            missing_from(
                listing,
                &["bpftool", "conntrack", "kmod", "nftables", "python3"]
            ),
            ["kmod", "nftables", "python3"]
        );
    }

    #[test]
    fn lock_errors() {
        assert!(is_lock_error(
            "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 123 (apt-get)\n"
        ));
        assert!(is_lock_error(
            "E: Unable to lock directory /var/lib/apt/lists/\n"
        ));
        assert!(!is_lock_error("E: Unable to locate package nosuch\n"));
    }

    #[test]
    fn mount_table() {
        let table = "sysfs /sys sysfs rw 0 0\n\
                     tracefs /sys/kernel/tracing tracefs rw,relatime 0 0\n\
                     none /sys/fs/bpf tmpfs rw 0 0\n";
        assert!(is_mounted(table, "/sys/kernel/tracing", "tracefs"));
        assert!(!is_mounted(table, "/sys/fs/bpf", "bpf"));
    }
}
