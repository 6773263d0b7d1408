//! The guest's initramfs, one per kernel: busybox, the host's `netlat` (the same binary in every
//! kernel) with the shared libraries `ldd` names, iproute2's `ip`, `nft`, `ipvsadm`, the static
//! `nlvm` client/server, the kernel's network modules (dependencies from `modprobe
//! --show-depends`, decompressed), and `tests/vm` (init, helpers, scenarios).

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::kernel::Kernel;
use crate::{exec, output};

/// Modules the scenarios use; modprobe adds their dependencies.
const MODULES: &[&str] = &[
    "nf_conntrack",
    "nf_nat",
    "nf_tables",
    "nft_nat",
    "nft_ct",
    "nft_masq",
    "nft_chain_nat",
    "nf_conntrack_netlink",
    // iptables-legacy (first-syn-ipt): ipt_do_table, the filter table and the rule's matches.
    "ip_tables",
    "iptable_filter",
    "xt_tcpudp",
    "xt_statistic",
    "ip_vs",
    "ip_vs_rr",
    "veth",
    "bridge",
    "dummy",
    "vxlan",
];

/// Host programs copied into the guest, and where they go.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("busybox", "bin/busybox"),
    ("ip", "usr/sbin/ip"),
    ("nft", "usr/sbin/nft"),
    ("ipvsadm", "usr/sbin/ipvsadm"),
    // The multi-call binary picks iptables-legacy from its name.
    ("xtables-legacy-multi", "usr/sbin/iptables-legacy"),
];

/// Where iptables looks for its extensions (Debian's XTABLES_LIBDIR), and the ones the guest's
/// rules use (`-p tcp --dport --syn -m statistic -j DROP`).
const XTABLES_LIBDIR: &str = "usr/lib/x86_64-linux-gnu/xtables";
const XTABLES_EXTENSIONS: &[&str] = &["libxt_tcp.so", "libxt_statistic.so", "libxt_standard.so"];

pub struct Inputs<'a> {
    pub netlat: &'a Path,
    pub nlvm: &'a Path,
    /// `tests/vm` of the workspace.
    pub guest_dir: &'a Path,
}

/// Builds `<work>/initramfs.cpio` for `kernel`; returns its path.
pub fn build(kernel: &Kernel, inputs: &Inputs, work: &Path) -> Result<PathBuf> {
    let root = work.join("root");
    let _ = fs::remove_dir_all(&root);
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "lib64",
        "lib/x86_64-linux-gnu",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "etc",
        "vm/scenarios",
    ] {
        fs::create_dir_all(root.join(d))?;
    }

    let mut binaries = vec![
        (inputs.netlat.to_path_buf(), "usr/bin/netlat".to_owned()),
        (inputs.nlvm.to_path_buf(), "usr/bin/nlvm".to_owned()),
    ];
    for (name, dest) in PROGRAMS {
        let path = crate::find_program(name)
            .or_else(|| {
                ["/usr/sbin", "/sbin"]
                    .map(|d| Path::new(d).join(name))
                    .into_iter()
                    .find(|p| p.is_file())
            })
            .with_context(|| {
                format!("`{name}` is not installed (cargo xtask setup installs it)")
            })?;
        binaries.push((path, (*dest).to_owned()));
    }
    for ext in XTABLES_EXTENSIONS {
        let rel = Path::new(XTABLES_LIBDIR).join(ext);
        binaries.push((Path::new("/").join(&rel), rel.display().to_string()));
    }
    let mut libs = BTreeSet::new();
    for (src, dest) in &binaries {
        copy(src, &root.join(dest))?;
        libs.extend(shared_libraries(src)?);
    }
    for lib in &libs {
        copy(lib, &root.join(lib.strip_prefix("/").unwrap_or(lib)))?;
    }

    let modules = modules(kernel, &root)?;
    fs::write(root.join("vm/modules"), modules)?;

    copy(&inputs.guest_dir.join("init.sh"), &root.join("init"))?;
    copy(&inputs.guest_dir.join("lib.sh"), &root.join("vm/lib.sh"))?;
    let scenarios = inputs.guest_dir.join("scenarios");
    for entry in
        fs::read_dir(&scenarios).with_context(|| format!("reading {}", scenarios.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sh") {
            copy(
                &path,
                &root
                    .join("vm/scenarios")
                    .join(path.file_name().unwrap_or_default()),
            )?;
        }
    }

    let image = work.join("initramfs.cpio");
    let _ = fs::remove_file(&image);
    // An uncompressed archive: the guest unpacks it faster than it would gunzip under TCG.
    exec(
        Command::new("sh")
            .args([
                "-c",
                "find . | LC_ALL=C sort | cpio -o -H newc --quiet > \"$0\"",
            ])
            .arg(&image)
            .current_dir(&root),
    )
    .context("packing the initramfs with cpio")?;
    Ok(image)
}

/// Copies `src` (following symlinks) to `dest`, readable and executable by all: the guest's
/// init runs every file it gets as root, and a checkout may have lost the executable bits.
fn copy(src: &Path, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(src, dest)
        .and_then(|_| fs::set_permissions(dest, fs::Permissions::from_mode(0o755)))
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))
}

/// The shared libraries and the loader `ldd` lists for `binary` (none for a static one).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("could not run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            bail!("{}: {}", binary.display(), line.trim());
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Copies the modules of [`MODULES`] and their dependencies (decompressed) into
/// `lib/modules/<release>/` and returns the load order for `/vm/modules`: `file.ko [params]`.
fn modules(kernel: &Kernel, root: &Path) -> Result<String> {
    // An empty configuration directory: the host's /etc/modprobe.d must not add parameters.
    let conf = root.with_file_name("modprobe.d");
    fs::create_dir_all(&conf)?;
    let listing = output(
        Command::new("modprobe")
            .args(["-a", "--show-depends", "-C"])
            .arg(&conf)
            .arg("-d")
            .arg(&kernel.root)
            .args(["-S", &kernel.release])
            .args(MODULES),
    )
    .with_context(|| format!("resolving the module dependencies of {}", kernel.release))?;
    let dest = root.join("lib/modules").join(&kernel.release);
    fs::create_dir_all(&dest)?;
    let mut seen = BTreeSet::new();
    let mut order = String::new();
    for line in listing.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("insmod") {
            continue; // "builtin <name>"
        }
        let Some(path) = words.next() else { continue };
        if !seen.insert(path.to_owned()) {
            continue;
        }
        let params = words.collect::<Vec<_>>().join(" ");
        let file = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .context("module without a file name")?;
        let (name, decompress) = match file.rsplit_once(".ko.") {
            Some((stem, "xz")) => (format!("{stem}.ko"), Some("xz")),
            Some((stem, "zst")) => (format!("{stem}.ko"), Some("zstd")),
            Some((stem, "gz")) => (format!("{stem}.ko"), Some("gzip")),
            Some((_, other)) => bail!("{path}: unknown module compression .{other}"),
            None => (file.to_owned(), None),
        };
        match decompress {
            Some(tool) => {
                let out = Command::new(tool)
                    .args(["-dc", path])
                    .output()
                    .with_context(|| format!("could not run {tool} for {path}"))?;
                if !out.status.success() {
                    bail!(
                        "{tool} -dc {path} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                fs::write(dest.join(&name), out.stdout)?;
            }
            None => copy(Path::new(path), &dest.join(&name))?,
        }
        order.push_str(&name);
        if !params.is_empty() {
            order.push(' ');
            order.push_str(&params);
        }
        order.push('\n');
    }
    Ok(order)
}
