//! Tracefs: finding it (mounting it when nobody has) and reading tracepoint `format` files.
//!
//! Owns everything netlat learns from tracefs: where it is mounted, the byte layout of the
//! tracepoints the eBPF programs read, and the `__print_symbolic` tables of their print formats
//! (e.g. drop-reason names, whose numbering changes between kernels). This file is the I/O: the
//! mount table, mount(2) and reading format files. The pure parts, unit-tested without a kernel,
//! live beside it: `format.rs` parses a format file, `symbolic.rs` the tables of its print fmt,
//! `layout.rs` derives from it the layouts handed to the eBPF programs.

mod format;
mod layout;
mod symbolic;

#[cfg(test)]
mod fixtures;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use format::{EventFormat, FormatError, FormatField};
pub use layout::{kfree_layout, retransmit_layout, sock_state_layout};

/// Where tracefs lives on current kernels, and where netlat mounts it when it is missing.
pub const DEFAULT_MOUNT_POINT: &str = "/sys/kernel/tracing";
/// Where older setups reach tracefs (automounted below debugfs).
pub const DEBUGFS_MOUNT_POINT: &str = "/sys/kernel/debug/tracing";
/// [`DEFAULT_MOUNT_POINT`] for mount(2).
const DEFAULT_MOUNT_POINT_C: &std::ffi::CStr = c"/sys/kernel/tracing";
const PROC_MOUNTS: &str = "/proc/mounts";

/// Tracefs cannot be found or mounted, or a file in it cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// The mount table could not be read.
    #[error("cannot read the mount table {}: {source}", path.display())]
    Mounts {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Tracefs is not mounted and mounting it failed.
    #[error(
        "tracefs is not mounted and mounting it at {mp} failed: {source}; run as root or mount it: \
         mount -t tracefs tracefs {mp}",
        mp = mount_point.display()
    )]
    Mount {
        mount_point: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A system or event name that would escape the `events` directory.
    #[error("invalid tracepoint system or event name {name:?}")]
    InvalidName { name: String },
    /// A format file could not be read (missing event, permissions, ...).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A format file was read but is not valid.
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
}

/// A tracefs mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Tracefs as mounted at `root` (no check is made; for tests and explicit overrides).
    pub fn at(root: impl Into<PathBuf>) -> Tracefs {
        Tracefs { root: root.into() }
    }

    /// Find the tracefs mount in `/proc/mounts` (preferring [`DEFAULT_MOUNT_POINT`], then
    /// [`DEBUGFS_MOUNT_POINT`], then any other), or mount it at [`DEFAULT_MOUNT_POINT`].
    pub fn locate_or_mount() -> Result<Tracefs, TracefsError> {
        if let Some(root) = find_mounted()? {
            return Ok(Tracefs { root });
        }
        mount_default()?;
        Ok(Tracefs::at(DEFAULT_MOUNT_POINT))
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the format file of `system:event`.
    pub fn format_path(&self, system: &str, event: &str) -> PathBuf {
        self.root
            .join("events")
            .join(system)
            .join(event)
            .join("format")
    }

    /// Read and parse `events/<system>/<event>/format`. A missing event (kernel without that
    /// tracepoint) is a [`TracefsError::Read`] whose source has kind `NotFound`.
    pub fn read_format(&self, system: &str, event: &str) -> Result<EventFormat, TracefsError> {
        for name in [system, event] {
            if !is_path_component(name) {
                return Err(TracefsError::InvalidName {
                    name: name.to_string(),
                });
            }
        }
        let path = self.format_path(system, event);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(source) => return Err(TracefsError::Read { path, source }),
        };
        // The kernel writes ASCII; a stray byte should surface as a parse error, not a read one.
        match EventFormat::parse(&String::from_utf8_lossy(&bytes)) {
            Ok(f) => Ok(f),
            Err(source) => Err(TracefsError::Parse { path, source }),
        }
    }
}

/// A tracefs system or event name (`skb`, `xhci-hcd`) that stays inside its parent directory.
fn is_path_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The preferred tracefs mount point listed in `/proc/mounts`, if any.
fn find_mounted() -> Result<Option<PathBuf>, TracefsError> {
    let text = fs::read_to_string(PROC_MOUNTS).map_err(|source| TracefsError::Mounts {
        path: PROC_MOUNTS.into(),
        source,
    })?;
    Ok(preferred_mount(&tracefs_mount_points(&text)))
}

/// Mount points of every `tracefs` line of a `/proc/mounts` text.
fn tracefs_mount_points(mounts: &str) -> Vec<PathBuf> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let (_device, mount_point, fstype) = (cols.next()?, cols.next()?, cols.next()?);
            (fstype == "tracefs").then(|| PathBuf::from(unescape_mount_field(mount_point)))
        })
        .collect()
}

fn preferred_mount(points: &[PathBuf]) -> Option<PathBuf> {
    [DEFAULT_MOUNT_POINT, DEBUGFS_MOUNT_POINT]
        .iter()
        .find_map(|want| points.iter().find(|p| p.as_path() == Path::new(want)))
        .or_else(|| points.first())
        .cloned()
}

/// Undo the octal escapes (`\040` for a space, ...) the kernel writes in `/proc/mounts`.
fn unescape_mount_field(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = (bytes[i] == b'\\')
            .then(|| bytes.get(i + 1..i + 4))
            .flatten()
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        if let Some(code) = code {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `mount -t tracefs tracefs /sys/kernel/tracing`.
fn mount_default() -> Result<(), TracefsError> {
    // SAFETY: all pointers are NUL-terminated literals that outlive the call; tracefs takes no
    // mount data, so a null data pointer is valid.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            DEFAULT_MOUNT_POINT_C.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    // Someone mounted it between our look at /proc/mounts and now: that is what we wanted.
    if source.raw_os_error() == Some(libc::EBUSY) {
        return Ok(());
    }
    Err(TracefsError::Mount {
        mount_point: DEFAULT_MOUNT_POINT.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use netlat_common::ABSENT;

    use super::fixtures::*;
    use super::*;

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "netlat-tracefs-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write_format(root: &Path, system: &str, event: &str, text: &str) -> PathBuf {
        let dir = root.join("events").join(system).join(event);
        fs::create_dir_all(&dir).expect("create event dir");
        let path = dir.join("format");
        fs::write(&path, text).expect("write format");
        path
    }

    #[test]
    fn tracefs_at_reads_formats() {
        let tmp = TempDir::new("read");
        let path = write_format(&tmp.0, "skb", "kfree_skb", K61_KFREE);
        let tracefs = Tracefs::at(&tmp.0);
        assert_eq!(tracefs.root(), tmp.0.as_path());
        assert_eq!(tracefs.format_path("skb", "kfree_skb"), path);
        let f = tracefs.read_format("skb", "kfree_skb").expect("read");
        assert_eq!(f, parse(K61_KFREE));
        assert_eq!(kfree_layout(&f).map(|l| l.reason), Ok(28));
    }

    #[test]
    fn tracefs_missing_unreadable_and_bad_files() {
        let tmp = TempDir::new("errors");
        let tracefs = Tracefs::at(&tmp.0);

        let missing = tracefs.format_path("tcp", "tcp_retransmit_skb");
        match tracefs.read_format("tcp", "tcp_retransmit_skb") {
            Err(TracefsError::Read { path, source }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        let msg = tracefs
            .read_format("tcp", "tcp_retransmit_skb")
            .expect_err("missing")
            .to_string();
        assert!(msg.contains(&missing.display().to_string()), "{msg}");

        // A directory where the file should be cannot be read, even as root.
        let unreadable = tracefs.format_path("sock", "inet_sock_set_state");
        fs::create_dir_all(&unreadable).expect("mkdir");
        match tracefs.read_format("sock", "inet_sock_set_state") {
            Err(err @ TracefsError::Read { .. }) => {
                assert!(
                    err.to_string().contains(&unreadable.display().to_string()),
                    "{err}"
                );
            }
            other => panic!("{other:?}"),
        }

        let garbage = write_format(&tmp.0, "skb", "kfree_skb", "\u{0}\u{1}garbage\n");
        match tracefs.read_format("skb", "kfree_skb") {
            Err(err @ TracefsError::Parse { .. }) => {
                let msg = err.to_string();
                assert!(
                    msg.contains(&garbage.display().to_string()) && msg.contains("line 1"),
                    "{msg}"
                );
            }
            other => panic!("{other:?}"),
        }
        let empty = write_format(&tmp.0, "skb", "consume_skb", "");
        assert!(matches!(
            tracefs.read_format("skb", "consume_skb"),
            Err(TracefsError::Parse { path, source: FormatError::Empty }) if path == empty
        ));

        for (system, event) in [
            ("..", "x"),
            ("skb", "../../etc"),
            ("", "x"),
            ("a/b", "c"),
            ("skb", ""),
            (".", "x"),
        ] {
            assert!(
                matches!(
                    tracefs.read_format(system, event),
                    Err(TracefsError::InvalidName { .. })
                ),
                "{system}:{event}"
            );
        }
    }

    #[test]
    fn mount_table_parsing_and_preference() {
        let mounts = "sysfs /sys sysfs rw,nosuid 0 0\n\
            tracefs /sys/kernel/debug/tracing tracefs rw,relatime 0 0\n\
            debugfs /sys/kernel/debug debugfs rw 0 0\n\
            tracefs /sys/kernel/tracing tracefs rw,relatime 0 0\n";
        let points = tracefs_mount_points(mounts);
        assert_eq!(
            points,
            vec![
                PathBuf::from(DEBUGFS_MOUNT_POINT),
                PathBuf::from(DEFAULT_MOUNT_POINT)
            ]
        );
        assert_eq!(
            preferred_mount(&points),
            Some(PathBuf::from(DEFAULT_MOUNT_POINT))
        );
        assert_eq!(
            preferred_mount(&tracefs_mount_points(
                "tracefs /sys/kernel/debug/tracing tracefs rw 0 0\n"
            )),
            Some(PathBuf::from(DEBUGFS_MOUNT_POINT))
        );
        assert_eq!(
            preferred_mount(&tracefs_mount_points(
                "nodev /my\\040trace tracefs rw 0 0\nbroken line\n\n"
            )),
            Some(PathBuf::from("/my trace"))
        );
        assert_eq!(
            preferred_mount(&tracefs_mount_points("proc /proc proc rw 0 0\n")),
            None
        );
        assert_eq!(preferred_mount(&[]), None);
        assert_eq!(unescape_mount_field("a\\011b\\\\c\\9"), "a\tb\\\\c\\9");
    }

    #[test]
    fn mount_point_constants_agree() {
        assert_eq!(
            DEFAULT_MOUNT_POINT_C.to_bytes(),
            DEFAULT_MOUNT_POINT.as_bytes()
        );
    }

    #[test]
    fn mount_error_message_tells_what_to_do() {
        let err = TracefsError::Mount {
            mount_point: DEFAULT_MOUNT_POINT.into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "tracefs is not mounted and mounting it at /sys/kernel/tracing failed: "
            ) && msg.ends_with(
                "; run as root or mount it: mount -t tracefs tracefs /sys/kernel/tracing"
            ),
            "{msg}"
        );
    }

    /// The running kernel's formats, when this process can read them (root with tracefs
    /// mounted); never mounts anything.
    #[test]
    fn live_kernel_formats_when_readable() {
        let Ok(Some(root)) = find_mounted() else {
            eprintln!("tracefs not mounted: skipped");
            return;
        };
        let tracefs = Tracefs::at(root);
        let read = |system, event| match tracefs.read_format(system, event) {
            Ok(f) => Some(f),
            Err(TracefsError::Read { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound
                ) =>
            {
                None
            }
            Err(e) => panic!("{e}"),
        };
        let Some(sock) = read("sock", "inet_sock_set_state") else {
            eprintln!("tracepoints not readable: skipped");
            return;
        };
        sock_state_layout(&sock).expect("sock layout");
        if let Some(f) = read("skb", "kfree_skb") {
            let layout = kfree_layout(&f).expect("kfree layout");
            if layout.reason != ABSENT {
                assert!(
                    f.symbols("reason")
                        .is_some_and(|t| t.values().any(|n| n == "NOT_SPECIFIED"))
                );
            }
        }
        if let Some(f) = read("tcp", "tcp_retransmit_skb") {
            // Kernels before 5.16 legitimately lack `family`; anything else must parse.
            if f.field("family").is_some() {
                retransmit_layout(&f).expect("retransmit layout");
            }
        }
    }
}
