//! The Debian kernels the VM tests boot: fetched with apt through a private configuration (its
//! own sources list, state and cache directories under the cache), never touching the system's
//! apt sources, then unpacked (kernel image and the network/netfilter modules) into the cache,
//! where later runs find them without the network.
//!
//! Cache: `$NETLAT_VM_CACHE`, else `$XDG_CACHE_HOME/netlat-vm`, else `~/.cache/netlat-vm`:
//! `apt/` (private apt configuration and downloads) and `kernels/<series>/` (the unpacked tree
//! plus `package`, which names the package and version it came from).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::output;

/// A kernel series of the matrix.
pub struct Series {
    /// What `--kernel` takes: `5.10`, `6.1`, `6.12`.
    pub name: &'static str,
    /// The Debian release whose (security) suite carries it.
    pub distro: &'static str,
}

pub const SERIES: &[Series] = &[
    Series {
        name: "5.10",
        distro: "bullseye",
    },
    Series {
        name: "6.1",
        distro: "bookworm",
    },
    Series {
        name: "6.12",
        distro: "bookworm",
    },
];

/// The suites of the private sources list: each distro's release, security and (bookworm)
/// backports suite. 6.12 is in bookworm-security (and, older, in bookworm-backports).
const SUITES: &[(&str, bool)] = &[
    ("bullseye", false),
    ("bullseye-security", true),
    ("bookworm", false),
    ("bookworm-security", true),
    ("bookworm-backports", false),
];

/// An unpacked kernel.
pub struct Kernel {
    /// `uname -r` of the kernel, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The Debian package and version it came from.
    pub package: String,
    /// Root of the unpacked tree: `boot/vmlinuz-<release>` and `lib/modules/<release>/`.
    pub root: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }
}

pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("NETLAT_VM_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("netlat-vm"));
    }
    let home = env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither NETLAT_VM_CACHE, XDG_CACHE_HOME nor HOME is set: no cache directory")?;
    Ok(PathBuf::from(home).join(".cache/netlat-vm"))
}

/// The kernel of `series` from the cache, fetching it first when the cache has none (or when
/// `refresh` asks for the newest package).
pub fn kernel(series: &'static Series, cache: &Path, refresh: bool) -> Result<Kernel> {
    let dir = cache.join("kernels").join(series.name);
    if !refresh && let Some(k) = cached(&dir)? {
        return Ok(k);
    }
    fetch(series, cache, &dir).with_context(|| {
        format!(
            "cannot fetch the Debian {} kernel ({}) with apt",
            series.name, series.distro
        )
    })?;
    cached(&dir)?.with_context(|| format!("{} holds no kernel after fetching", dir.display()))
}

fn cached(dir: &Path) -> Result<Option<Kernel>> {
    let Ok(package) = fs::read_to_string(dir.join("package")) else {
        return Ok(None);
    };
    let modules = dir.join("lib/modules");
    let release = fs::read_dir(&modules)
        .with_context(|| format!("reading {}", modules.display()))?
        .find_map(|e| e.ok()?.file_name().into_string().ok())
        .with_context(|| format!("{} is empty", modules.display()))?;
    let k = Kernel {
        release,
        package: package.trim().to_owned(),
        root: dir.to_path_buf(),
    };
    Ok(k.vmlinuz().is_file().then_some(k))
}

/// The private apt configuration: `apt-get`/`apt-cache` with these options read only files
/// under `<cache>/apt`.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(cache: &Path) -> Result<Apt> {
        let dir = cache.join("apt");
        for sub in [
            "etc/sources.list.d",
            "etc/preferences.d",
            "state/lists/partial",
            "cache/archives/partial",
            "debs",
        ] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let status = dir.join("state/status");
        if !status.exists() {
            fs::write(&status, "").with_context(|| format!("creating {}", status.display()))?;
        }
        let (main, security, keyring) = mirrors()?;
        let list = SUITES
            .iter()
            .map(|(suite, is_security)| {
                let uri = if *is_security { &security } else { &main };
                format!("deb [signed-by={keyring}] {uri} {suite} main")
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        fs::write(dir.join("etc/sources.list"), list)
            .context("writing the private sources.list")?;
        Ok(Apt { dir })
    }

    fn cmd(&self, program: &str) -> Command {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut cmd = Command::new(program);
        for (key, value) in [
            ("Dir::Etc::sourcelist", d("etc/sources.list")),
            ("Dir::Etc::sourceparts", d("etc/sources.list.d")),
            ("Dir::Etc::preferences", d("etc/preferences")),
            ("Dir::Etc::preferencesparts", d("etc/preferences.d")),
            ("Dir::State", d("state")),
            ("Dir::State::lists", d("state/lists")),
            ("Dir::State::status", d("state/status")),
            ("Dir::Cache", d("cache")),
            ("Dir::Cache::archives", d("cache/archives")),
            ("Dir::Cache::pkgcache", String::new()),
            ("Dir::Cache::srcpkgcache", String::new()),
            ("Acquire::Languages", "none".to_owned()),
            ("APT::Get::List-Cleanup", "false".to_owned()),
            // The downloads go to directories of the user running xtask.
            ("APT::Sandbox::User", current_user()),
        ] {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }
}

fn current_user() -> String {
    env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".to_owned())
}

/// The Debian archive and security mirrors this machine's apt uses (so a local mirror or proxy
/// keeps working), and the keyring that signs them. `NETLAT_VM_APT_MIRROR` and
/// `NETLAT_VM_APT_SECURITY_MIRROR` override them.
fn mirrors() -> Result<(String, String, String)> {
    let mut main = env::var("NETLAT_VM_APT_MIRROR")
        .ok()
        .filter(|s| !s.is_empty());
    let mut security = env::var("NETLAT_VM_APT_SECURITY_MIRROR")
        .ok()
        .filter(|s| !s.is_empty());
    let mut keyring = None;
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<_> = dir.filter_map(|e| Some(e.ok()?.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let name = file.to_string_lossy();
        let entries = if name.ends_with(".sources") {
            deb822_entries(&text)
        } else if name.ends_with(".list") {
            one_line_entries(&text)
        } else {
            continue;
        };
        for e in entries {
            if !e.uri.contains("debian") {
                continue;
            }
            let slot = if e.suites.iter().any(|s| s.ends_with("-security")) {
                &mut security
            } else {
                &mut main
            };
            if slot.is_none() {
                *slot = Some(e.uri.trim_end_matches('/').to_owned());
                if keyring.is_none() {
                    keyring = e.signed_by;
                }
            }
        }
    }
    let main = main.context(
        "no Debian archive in /etc/apt/sources.list{,.d}: set NETLAT_VM_APT_MIRROR to one",
    )?;
    let security = security.unwrap_or_else(|| format!("{main}-security"));
    let keyring = keyring
        .filter(|k| k.starts_with('/') && Path::new(k).is_file())
        .unwrap_or_else(|| "/usr/share/keyrings/debian-archive-keyring.gpg".to_owned());
    if !Path::new(&keyring).is_file() {
        bail!("{keyring} is missing: install debian-archive-keyring");
    }
    Ok((main, security, keyring))
}

struct SourceEntry {
    uri: String,
    suites: Vec<String>,
    signed_by: Option<String>,
}

/// `Types: deb` stanzas of a deb822 `.sources` file (first URI of each).
fn deb822_entries(text: &str) -> Vec<SourceEntry> {
    text.split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_owned())
                })
            };
            if !field("Types")?.split_whitespace().any(|t| t == "deb") {
                return None;
            }
            if field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
                return None;
            }
            Some(SourceEntry {
                uri: field("URIs")?.split_whitespace().next()?.to_owned(),
                suites: field("Suites")?
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
                signed_by: field("Signed-By"),
            })
        })
        .collect()
}

/// `deb [opts] URI SUITE COMPONENTS…` lines of a one-line-style list.
fn one_line_entries(text: &str) -> Vec<SourceEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let rest = line.strip_prefix("deb ")?.trim();
            let (opts, rest) = match rest.strip_prefix('[') {
                Some(r) => {
                    let (o, r) = r.split_once(']')?;
                    (o, r)
                }
                None => ("", rest),
            };
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_owned();
            let suite = words.next()?.to_owned();
            let signed_by = opts
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map(str::to_owned);
            Some(SourceEntry {
                uri,
                suites: vec![suite],
                signed_by,
            })
        })
        .collect()
}

/// Whether `name` is the plain amd64 unsigned image of `series` (not cloud/rt, not a
/// backport to an older distro such as `6.1.0-0.deb11.52`), and its ABI numbers for ordering.
fn image_abi(series: &str, name: &str) -> Option<Vec<u64>> {
    let rest = name
        .strip_prefix("linux-image-")?
        .strip_prefix(series)?
        .strip_prefix('.')?
        .strip_suffix("-amd64-unsigned")?;
    // 5.10: "0-46"; 6.1: "0-56"; 6.12: "117+deb12".
    let (a, b) = rest.split_once(['-', '+'])?;
    let b = b.strip_prefix("deb").unwrap_or(b);
    if !a.bytes().all(|c| c.is_ascii_digit()) || !b.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(vec![a.parse().ok()?, b.parse().ok()?])
}

fn fetch(series: &'static Series, cache: &Path, dir: &Path) -> Result<()> {
    let apt = Apt::new(cache)?;
    println!(
        "vm-test: {}: updating the private apt lists ({})",
        series.name,
        apt.dir.display()
    );
    let update = apt_run(apt.cmd("apt-get").args(["-q", "update"]), "apt-get update")?;
    // apt-get update only warns when an index cannot be fetched; say so if nothing was found.
    let fetch_failure = update
        .lines()
        .find(|l| l.contains("Failed to fetch"))
        .map(|l| format!(" (apt-get update: {})", l.trim_start_matches("W:").trim()))
        .unwrap_or_default();
    let names = output(
        apt.cmd("apt-cache")
            .args(["pkgnames", &format!("linux-image-{}.", series.name)]),
    )?;
    let package = names
        .lines()
        .filter_map(|n| Some((image_abi(series.name, n.trim())?, n.trim())))
        .max()
        .map(|(_, n)| n.to_owned())
        .with_context(|| {
            format!(
                "no linux-image-{}.*-amd64-unsigned package in the {} suites{fetch_failure}",
                series.name, series.distro
            )
        })?;
    let show = output(
        apt.cmd("apt-cache")
            .args(["show", "--no-all-versions", &package]),
    )?;
    let version = show
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map_or("?", str::trim)
        .to_owned();
    let debs = apt.dir.join("debs");
    println!("vm-test: {}: downloading {package} {version}", series.name);
    apt_run(
        apt.cmd("apt-get")
            .args(["-q", "download", &package])
            .current_dir(&debs),
        "apt-get download",
    )?;
    let deb = fs::read_dir(&debs)?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("{package}_"))
                    && Path::new(n)
                        .extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("deb"))
            })
        })
        .with_context(|| format!("apt-get download left no {package}_*.deb"))?;

    // Unpack next to the final place, keep the image and the modules the initramfs may need,
    // then swap it in.
    let tmp = dir.with_extension("unpack");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    println!("vm-test: {}: unpacking {}", series.name, deb.display());
    crate::exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    prune(&tmp)?;
    fs::write(tmp.join("package"), format!("{package} {version}\n"))?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir).with_context(|| format!("moving {} into place", tmp.display()))?;
    let _ = fs::remove_file(&deb);
    Ok(())
}

/// Drops what the VM never loads (graphics, storage, sound drivers …) from an unpacked kernel,
/// keeping `boot/` and `lib/modules/<release>/{modules.*, kernel/{net,lib,crypto,arch,
/// drivers/net}}`, and runs depmod on what is left.
fn prune(root: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(root.join("usr"));
    let _ = fs::remove_dir_all(root.join("etc"));
    let modules = root.join("lib/modules");
    let release = fs::read_dir(&modules)
        .with_context(|| format!("the package has no {}", modules.display()))?
        .find_map(|e| e.ok()?.file_name().into_string().ok())
        .context("the package has no module directory")?;
    let kdir = modules.join(&release).join("kernel");
    for entry in fs::read_dir(&kdir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        match name {
            "net" | "lib" | "crypto" | "arch" => {}
            "drivers" => {
                for d in fs::read_dir(&path)? {
                    let d = d?.path();
                    if d.file_name().is_some_and(|n| n != "net") {
                        fs::remove_dir_all(&d)?;
                    }
                }
            }
            _ if path.is_dir() => fs::remove_dir_all(&path)?,
            _ => fs::remove_file(&path)?,
        }
    }
    crate::exec(Command::new("depmod").arg("-b").arg(root).arg(&release))
}

/// Runs an apt command and returns its stderr (warnings); the error carries apt's last `E:`
/// line.
fn apt_run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {what}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let why = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("E:"))
            .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or("")
            .trim()
            .to_owned();
        bail!("{what} failed ({}): {why}", out.status);
    }
    Ok(stderr.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_of_a_series() {
        assert_eq!(
            image_abi("5.10", "linux-image-5.10.0-46-amd64-unsigned"),
            Some(vec![0, 46])
        );
        assert_eq!(
            image_abi("6.12", "linux-image-6.12.117+deb12-amd64-unsigned"),
            Some(vec![117, 12])
        );
        assert!(
            image_abi("6.12", "linux-image-6.12.117+deb12-amd64-unsigned")
                > image_abi("6.12", "linux-image-6.12.95+deb12-amd64-unsigned")
        );
        for other in [
            "linux-image-6.1.0-0.deb11.52-amd64-unsigned",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-56-rt-amd64-unsigned",
            "linux-image-6.12.117+deb12-amd64-unsigned",
            "linux-image-6.1.0-56-amd64",
        ] {
            assert_eq!(image_abi("6.1", other), None, "{other}");
        }
    }

    #[test]
    fn sources_entries() {
        let d = deb822_entries(
            "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\n\
             Components: main\nSigned-By: /k.gpg\n\n\
             Types: deb-src\nURIs: http://src.example/\nSuites: bookworm\n\n\
             Types: deb\nURIs: http://m.example/debian-security\nSuites: bookworm-security\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].uri, "http://m.example/debian");
        assert_eq!(d[0].signed_by.as_deref(), Some("/k.gpg"));
        assert_eq!(d[1].suites, ["bookworm-security"]);
        let l = one_line_entries(
            "# c\ndeb [arch=amd64 signed-by=/x.gpg] http://a.example/debian bookworm main\n\
             deb-src http://a.example/debian bookworm main\n",
        );
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].uri, "http://a.example/debian");
        assert_eq!(l[0].signed_by.as_deref(), Some("/x.gpg"));
    }
}
