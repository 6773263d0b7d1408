//! Tracefs: finding it (mounting it when nobody has) and parsing tracepoint `format` files.
//!
//! Owns everything netlat learns from tracefs: where it is mounted, the byte layout of the
//! tracepoints the eBPF programs read (`sock:inet_sock_set_state`, `tcp:tcp_retransmit_skb`,
//! `skb:kfree_skb`) as the `*Layout` structs handed to them, and the `__print_symbolic` tables of
//! the print formats (e.g. drop-reason names, whose numbering changes between kernels).
//!
//! Layouts are read from the running kernel rather than hard-coded because fields move between
//! versions (5.17 added `kfree_skb.reason`, 6.x added `rx_sk` before `protocol`, 5.16 added
//! `tcp_retransmit_skb.family`, ...). Every field the programs read is checked for presence and
//! size, so a kernel with an unexpected shape fails at start-up instead of producing garbage.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use netlat_common::{ABSENT, KfreeLayout, RetransmitLayout, SockStateLayout};

/// Where tracefs lives on current kernels, and where netlat mounts it when it is missing.
pub const DEFAULT_MOUNT_POINT: &str = "/sys/kernel/tracing";
/// Where older setups reach tracefs (automounted below debugfs).
pub const DEBUGFS_MOUNT_POINT: &str = "/sys/kernel/debug/tracing";
/// [`DEFAULT_MOUNT_POINT`] for mount(2).
const DEFAULT_MOUNT_POINT_C: &std::ffi::CStr = c"/sys/kernel/tracing";
const PROC_MOUNTS: &str = "/proc/mounts";

/// A tracepoint `format` file that cannot be parsed, or lacks what netlat needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The file has no content at all.
    #[error("the format file is empty")]
    Empty,
    /// The file stops before a required part (`name:`, `ID:`, `format:`, fields, `print fmt:`).
    #[error("the format file is truncated: it has no {missing} line")]
    Truncated { missing: &'static str },
    /// A line that does not have the shape the kernel writes.
    #[error("line {line}: {reason}: {text:?}")]
    Malformed {
        line: usize,
        reason: &'static str,
        text: String,
    },
    /// The same field name appears twice.
    #[error("line {line}: field `{name}` is declared twice")]
    DuplicateField { line: usize, name: String },
    /// A field the eBPF programs read is not in this kernel's event.
    #[error("tracepoint {event} has no field `{field}`, which netlat reads")]
    MissingField { event: String, field: &'static str },
    /// A field the eBPF programs read has a size other than the one they read.
    #[error(
        "tracepoint {event}: field `{field}` is {found} bytes on this kernel, netlat reads {expected}"
    )]
    FieldSize {
        event: String,
        field: &'static str,
        expected: u32,
        found: u32,
    },
}

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

/// One field of a tracepoint record, as declared in its `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatField {
    /// Field name without array brackets (`__u8 saddr[4]` → `saddr`).
    pub name: String,
    /// C type as the kernel records it, array suffix included (`__u8[4]`, `void *`,
    /// `__data_loc char[]`).
    pub c_type: String,
    /// Byte offset in the record (the tracepoint context the programs get).
    pub offset: u32,
    /// Size in bytes (for arrays, the whole array).
    pub size: u32,
    /// Whether the kernel marks the type as signed.
    pub signed: bool,
}

/// A parsed `events/<system>/<event>/format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFormat {
    /// Event name (`kfree_skb`).
    pub name: String,
    /// Event id (the `common_type` of its records).
    pub id: u32,
    /// All fields, the `common_*` header fields included, in file order.
    pub fields: Vec<FormatField>,
    /// The `print fmt:` text: a C string literal followed by its arguments.
    pub print_fmt: String,
}

impl EventFormat {
    /// Parse the text of a format file. Fails on an empty or truncated file and on any line that
    /// does not have the kernel's shape (errors carry 1-based line numbers).
    pub fn parse(text: &str) -> Result<EventFormat, FormatError> {
        if text.trim().is_empty() {
            return Err(FormatError::Empty);
        }
        let mut name: Option<String> = None;
        let mut id: Option<u32> = None;
        let mut in_format = false;
        let mut fields: Vec<FormatField> = Vec::new();
        let mut print_fmt: Option<String> = None;

        for (idx, raw) in text.lines().enumerate() {
            let line_no = idx + 1;
            let line = raw.trim();
            let malformed = |reason| FormatError::Malformed {
                line: line_no,
                reason,
                text: raw.to_string(),
            };
            if line.is_empty() {
                continue;
            }
            if print_fmt.is_some() {
                // The kernel writes the print fmt on one line and stops there.
                return Err(malformed("unexpected text after the print fmt"));
            }
            if !in_format {
                if let Some(v) = line.strip_prefix("name:") {
                    let v = v.trim();
                    if v.is_empty() || name.is_some() {
                        return Err(malformed("empty or repeated event name"));
                    }
                    name = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("ID:") {
                    if id.is_some() {
                        return Err(malformed("repeated ID"));
                    }
                    id = Some(
                        v.trim()
                            .parse()
                            .map_err(|_| malformed("ID is not a number"))?,
                    );
                } else if line == "format:" {
                    if name.is_none() || id.is_none() {
                        return Err(malformed("`format:` before the name and ID lines"));
                    }
                    in_format = true;
                } else {
                    return Err(malformed("expected `name:`, `ID:` or `format:`"));
                }
                continue;
            }
            if let Some(fmt) = line.strip_prefix("print fmt:") {
                print_fmt = Some(fmt.trim().to_string());
            } else if line.starts_with("field:") {
                let field = parse_field(line).map_err(malformed)?;
                if fields.iter().any(|f| f.name == field.name) {
                    return Err(FormatError::DuplicateField {
                        line: line_no,
                        name: field.name,
                    });
                }
                fields.push(field);
            } else {
                return Err(malformed("expected a `field:` or `print fmt:` line"));
            }
        }

        let name = name.ok_or(FormatError::Truncated { missing: "name:" })?;
        let id = id.ok_or(FormatError::Truncated { missing: "ID:" })?;
        if !in_format {
            return Err(FormatError::Truncated { missing: "format:" });
        }
        if fields.is_empty() {
            return Err(FormatError::Truncated { missing: "field:" });
        }
        let print_fmt = print_fmt.ok_or(FormatError::Truncated {
            missing: "print fmt:",
        })?;
        Ok(EventFormat {
            name,
            id,
            fields,
            print_fmt,
        })
    }

    /// The field called `name`, if this kernel's event has it.
    pub fn field(&self, name: &str) -> Option<&FormatField> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The value → name table of the first `__print_symbolic(REC-><field>, ...)` in the print
    /// fmt, or `None` when the field is not printed symbolically. Entries whose value is not a
    /// numeric literal (an enum name the kernel did not resolve, such as `TCP_ESTABLISHED` in the
    /// `tcp` system) are skipped, so the table can be empty.
    pub fn symbols(&self, field: &str) -> Option<BTreeMap<u64, String>> {
        symbolic_calls(&self.print_fmt)
            .into_iter()
            .find_map(|args| symbol_table(&args, field))
    }
}

/// Parse `field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;`. Returns the reason on failure.
fn parse_field(line: &str) -> Result<FormatField, &'static str> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = None;
    for part in line.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part.split_once(':').ok_or("expected `key:value` parts")?;
        let value = value.trim();
        match key.trim() {
            "field" => decl = Some(value),
            "offset" => offset = Some(value.parse().map_err(|_| "offset is not a number")?),
            "size" => size = Some(value.parse().map_err(|_| "size is not a number")?),
            "signed" => {
                signed = Some(match value {
                    "0" => false,
                    "1" => true,
                    _ => return Err("signed is neither 0 nor 1"),
                })
            }
            // Attributes a newer kernel may add do not change what netlat reads.
            _ => {}
        }
    }
    let decl = decl.ok_or("no field declaration")?;
    let (name, c_type) = split_declaration(decl).ok_or("cannot find the field name")?;
    Ok(FormatField {
        name,
        c_type,
        offset: offset.ok_or("field has no offset")?,
        size: size.ok_or("field has no size")?,
        // Very old kernels did not print `signed`; nothing netlat reads depends on it.
        signed: signed.unwrap_or(false),
    })
}

/// Split `TYPE NAME` (`__u8 saddr[4]`, `void * skbaddr`, `__data_loc char[] name`) into the name
/// and the type, the array suffix moved onto the type as the kernel stores it.
fn split_declaration(decl: &str) -> Option<(String, String)> {
    let decl = decl.trim();
    let split = decl.rfind(char::is_whitespace)?;
    let ty = decl[..split].trim_end();
    let last = decl[split..].trim_start();
    // `char *name` style: the stars belong to the type.
    let name_and_array = last.trim_start_matches('*');
    let stars = &last[..last.len() - name_and_array.len()];
    let (name, array) = match name_and_array.find('[') {
        Some(i) => name_and_array.split_at(i),
        None => (name_and_array, ""),
    };
    if ty.is_empty() || !is_identifier(name) || !(array.is_empty() || array.ends_with(']')) {
        return None;
    }
    let mut c_type = ty.to_string();
    if !stars.is_empty() {
        c_type.push(' ');
        c_type.push_str(stars);
    }
    c_type.push_str(array);
    Some((name.to_string(), c_type))
}

/// A tracefs system or event name (`skb`, `xhci-hcd`) that stays inside its parent directory.
fn is_path_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The top-level arguments of every `__print_symbolic(...)` call in a print fmt.
fn symbolic_calls(fmt: &str) -> Vec<Vec<&str>> {
    const NAME: &str = "__print_symbolic";
    let bytes = fmt.as_bytes();
    let mut calls = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // The format string itself may contain anything; never look inside literals.
            b'"' | b'\'' => i = skip_literal(bytes, i),
            _ if bytes[i..].starts_with(NAME.as_bytes())
                && (i == 0 || !is_ident_byte(bytes[i - 1]))
                && !bytes.get(i + NAME.len()).is_some_and(|&b| is_ident_byte(b)) =>
            {
                let mut open = i + NAME.len();
                while open < bytes.len() && bytes[open].is_ascii_whitespace() {
                    open += 1;
                }
                let args = (bytes.get(open) == Some(&b'('))
                    .then(|| matching_close(bytes, open))
                    .flatten()
                    .and_then(|close| split_top_level(&fmt[open + 1..close]));
                if let Some(args) = args {
                    calls.push(args);
                }
                // Continue inside the call too: a nested call is still a call.
                i += NAME.len();
            }
            _ => i += 1,
        }
    }
    calls
}

fn is_ident_byte(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphanumeric()
}

/// Index just past the string or char literal starting at `start` (or the end of input).
fn skip_literal(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Index of the bracket closing the one at `open`, respecting literals and nesting.
fn matching_close(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                i = skip_literal(bytes, i);
                continue;
            }
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Split on commas outside brackets and literals; `None` when brackets do not balance.
fn split_top_level(s: &str) -> Option<Vec<&str>> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                i = skip_literal(bytes, i);
                continue;
            }
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' if depth == 0 => {
                parts.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return None;
    }
    parts.push(s[start..].trim());
    Some(parts)
}

/// The table of one `__print_symbolic` call if its value argument is `REC-><field>`.
fn symbol_table(args: &[&str], field: &str) -> Option<BTreeMap<u64, String>> {
    let (value, entries) = args.split_first()?;
    if !refers_to_field(value, field) {
        return None;
    }
    let mut table = BTreeMap::new();
    for entry in entries {
        let Some(inner) = entry
            .trim()
            .strip_prefix('{')
            .and_then(|e| e.strip_suffix('}'))
        else {
            continue;
        };
        let Some(parts) = split_top_level(inner) else {
            continue;
        };
        let [value, name] = parts.as_slice() else {
            continue;
        };
        if let (Some(v), Some(n)) = (parse_c_integer(value), parse_c_string(name)) {
            table.insert(v, n);
        }
    }
    Some(table)
}

/// Whether an argument is `REC->field`, possibly parenthesised or cast.
fn refers_to_field(expr: &str, field: &str) -> bool {
    let mut compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    while compact.starts_with('(') && compact.ends_with(')') {
        compact = compact[1..compact.len() - 1].to_string();
    }
    let target = format!("REC->{field}");
    compact == target || compact.ends_with(&format!("){target}"))
}

/// A C integer literal (decimal, hex, octal; optional sign, parentheses and `u`/`l` suffixes).
/// Negative values wrap to their two's-complement `u64`, as the kernel compares them.
fn parse_c_integer(s: &str) -> Option<u64> {
    let mut s = s.trim();
    while let Some(inner) = s.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
        s = inner.trim();
    }
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, s),
    };
    let digits = s.trim_end_matches(['u', 'U', 'l', 'L']);
    let magnitude = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        u64::from_str_radix(&digits[1..], 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    })
}

/// The text of a C string literal (`"NAME"`), with simple escapes undone.
fn parse_c_string(s: &str) -> Option<String> {
    let inner = s.trim().strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Offset of a required field, checked to have the size the eBPF programs read.
fn required(f: &EventFormat, field: &'static str, size: u32) -> Result<u32, FormatError> {
    let found = f.field(field).ok_or_else(|| FormatError::MissingField {
        event: f.name.clone(),
        field,
    })?;
    if found.size != size {
        return Err(FormatError::FieldSize {
            event: f.name.clone(),
            field,
            expected: size,
            found: found.size,
        });
    }
    Ok(found.offset)
}

/// Like [`required`], but [`ABSENT`] when this kernel does not have the field.
fn optional(f: &EventFormat, field: &'static str, size: u32) -> Result<u32, FormatError> {
    match f.field(field) {
        Some(_) => required(f, field, size),
        None => Ok(ABSENT),
    }
}

/// Offsets of `sock:inet_sock_set_state`, every field checked for presence and size.
pub fn sock_state_layout(f: &EventFormat) -> Result<SockStateLayout, FormatError> {
    Ok(SockStateLayout {
        skaddr: required(f, "skaddr", 8)?,
        oldstate: required(f, "oldstate", 4)?,
        newstate: required(f, "newstate", 4)?,
        sport: required(f, "sport", 2)?,
        dport: required(f, "dport", 2)?,
        family: required(f, "family", 2)?,
        protocol: required(f, "protocol", 2)?,
        saddr: required(f, "saddr", 4)?,
        daddr: required(f, "daddr", 4)?,
        saddr_v6: required(f, "saddr_v6", 16)?,
        daddr_v6: required(f, "daddr_v6", 16)?,
    })
}

/// Offsets of `tcp:tcp_retransmit_skb`. Kernels before 5.16 have no `family` field and fail here.
pub fn retransmit_layout(f: &EventFormat) -> Result<RetransmitLayout, FormatError> {
    Ok(RetransmitLayout {
        skaddr: required(f, "skaddr", 8)?,
        state: required(f, "state", 4)?,
        sport: required(f, "sport", 2)?,
        dport: required(f, "dport", 2)?,
        // Added in 5.16; before that the programs read the family from the socket.
        family: optional(f, "family", 2)?,
        saddr: required(f, "saddr", 4)?,
        daddr: required(f, "daddr", 4)?,
        saddr_v6: required(f, "saddr_v6", 16)?,
        daddr_v6: required(f, "daddr_v6", 16)?,
    })
}

/// Offsets of `skb:kfree_skb`; `reason` is [`ABSENT`] before 5.17, which had no drop reasons.
pub fn kfree_layout(f: &EventFormat) -> Result<KfreeLayout, FormatError> {
    Ok(KfreeLayout {
        skbaddr: required(f, "skbaddr", 8)?,
        location: required(f, "location", 8)?,
        protocol: required(f, "protocol", 2)?,
        reason: optional(f, "reason", 4)?,
    })
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
    use super::*;

    const K618_KFREE: &str = include_str!("../tests/fixtures/format/6.18/kfree_skb.format");
    const K618_RETRANS: &str =
        include_str!("../tests/fixtures/format/6.18/tcp_retransmit_skb.format");
    const K618_SOCK: &str =
        include_str!("../tests/fixtures/format/6.18/inet_sock_set_state.format");
    const K61_KFREE: &str = include_str!("../tests/fixtures/format/6.1/kfree_skb.format");
    const K61_RETRANS: &str =
        include_str!("../tests/fixtures/format/6.1/tcp_retransmit_skb.format");
    const K61_SOCK: &str = include_str!("../tests/fixtures/format/6.1/inet_sock_set_state.format");
    const K510_KFREE: &str = include_str!("../tests/fixtures/format/5.10/kfree_skb.format");
    const K510_RETRANS: &str =
        include_str!("../tests/fixtures/format/5.10/tcp_retransmit_skb.format");
    const K510_SOCK: &str =
        include_str!("../tests/fixtures/format/5.10/inet_sock_set_state.format");

    const ALL: [&str; 9] = [
        K618_KFREE,
        K618_RETRANS,
        K618_SOCK,
        K61_KFREE,
        K61_RETRANS,
        K61_SOCK,
        K510_KFREE,
        K510_RETRANS,
        K510_SOCK,
    ];

    fn parse(text: &str) -> EventFormat {
        EventFormat::parse(text).expect("fixture parses")
    }

    fn assert_field(f: &EventFormat, name: &str, offset: u32, size: u32, signed: bool) {
        let field = f
            .field(name)
            .unwrap_or_else(|| panic!("{}: no {name}", f.name));
        assert_eq!(
            (field.offset, field.size, field.signed),
            (offset, size, signed),
            "{}.{name}",
            f.name
        );
    }

    /// inet_sock_set_state has had the same layout since protocol became __u16 (5.6).
    const SOCK_STATE: SockStateLayout = SockStateLayout {
        skaddr: 8,
        oldstate: 16,
        newstate: 20,
        sport: 24,
        dport: 26,
        family: 28,
        protocol: 30,
        saddr: 32,
        daddr: 36,
        saddr_v6: 40,
        daddr_v6: 56,
    };

    #[test]
    fn common_header_fields_on_every_kernel() {
        for text in ALL {
            let f = parse(text);
            assert_field(&f, "common_type", 0, 2, false);
            assert_field(&f, "common_flags", 2, 1, false);
            assert_field(&f, "common_preempt_count", 3, 1, false);
            assert_field(&f, "common_pid", 4, 4, true);
        }
    }

    #[test]
    fn kfree_skb_6_18() {
        let f = parse(K618_KFREE);
        assert_eq!((f.name.as_str(), f.id), ("kfree_skb", 2310));
        assert_field(&f, "skbaddr", 8, 8, false);
        assert_field(&f, "location", 16, 8, false);
        assert_field(&f, "rx_sk", 24, 8, false);
        assert_field(&f, "protocol", 32, 2, false);
        assert_field(&f, "reason", 36, 4, false);
        assert_eq!(
            f.field("reason").map(|r| r.c_type.as_str()),
            Some("enum skb_drop_reason")
        );
        assert_eq!(
            kfree_layout(&f),
            Ok(KfreeLayout {
                skbaddr: 8,
                location: 16,
                protocol: 32,
                reason: 36
            })
        );
        let reasons = f.symbols("reason").expect("reason table");
        assert_eq!(reasons.get(&2).map(String::as_str), Some("NOT_SPECIFIED"));
        assert_eq!(reasons.get(&3).map(String::as_str), Some("NO_SOCKET"));
        assert_eq!(reasons.get(&11).map(String::as_str), Some("UDP_CSUM"));
        assert_eq!(reasons.get(&12).map(String::as_str), Some("NETFILTER_DROP"));
        assert_eq!(reasons.get(&128).map(String::as_str), Some("MAX"));
        assert_eq!(reasons.len(), 127);
        assert!(
            !reasons.contains_key(&1),
            "SKB_CONSUMED is not a drop reason"
        );
    }

    #[test]
    fn kfree_skb_6_1() {
        let f = parse(K61_KFREE);
        assert_field(&f, "skbaddr", 8, 8, false);
        assert_field(&f, "location", 16, 8, false);
        assert_field(&f, "protocol", 24, 2, false);
        assert_field(&f, "reason", 28, 4, false);
        assert!(f.field("rx_sk").is_none());
        assert_eq!(
            kfree_layout(&f),
            Ok(KfreeLayout {
                skbaddr: 8,
                location: 16,
                protocol: 24,
                reason: 28
            })
        );
        let reasons = f.symbols("reason").expect("reason table");
        for (value, name) in [
            (1, "NOT_SPECIFIED"),
            (2, "NO_SOCKET"),
            (4, "TCP_CSUM"),
            (6, "UDP_CSUM"),
            (7, "NETFILTER_DROP"),
            (64, "PKT_TOO_BIG"),
            (65, "MAX"),
        ] {
            assert_eq!(reasons.get(&value).map(String::as_str), Some(name));
        }
        assert_eq!(reasons.len(), 65);
    }

    #[test]
    fn kfree_skb_5_10_has_no_reason() {
        let f = parse(K510_KFREE);
        assert_field(&f, "skbaddr", 8, 8, false);
        assert_field(&f, "location", 16, 8, false);
        assert_field(&f, "protocol", 24, 2, false);
        assert!(f.field("reason").is_none());
        assert_eq!(f.symbols("reason"), None);
        assert_eq!(
            kfree_layout(&f),
            Ok(KfreeLayout {
                skbaddr: 8,
                location: 16,
                protocol: 24,
                reason: ABSENT
            })
        );
    }

    #[test]
    fn inet_sock_set_state_all_kernels() {
        for text in [K618_SOCK, K61_SOCK, K510_SOCK] {
            let f = parse(text);
            assert_eq!(f.name, "inet_sock_set_state");
            assert_eq!(sock_state_layout(&f), Ok(SOCK_STATE));
            assert_eq!(f.field("oldstate").map(|x| x.signed), Some(true));
            // The sock system resolves the TCP state enum, so the table is numeric.
            let states = f.symbols("newstate").expect("state table");
            assert_eq!(states.get(&2).map(String::as_str), Some("TCP_SYN_SENT"));
            assert_eq!(
                states.get(&12).map(String::as_str),
                Some("TCP_NEW_SYN_RECV")
            );
            assert_eq!(states.len(), 12);
            assert_eq!(f.symbols("oldstate"), Some(states));
            let protocols = f.symbols("protocol").expect("protocol table");
            assert_eq!(protocols.get(&6).map(String::as_str), Some("IPPROTO_TCP"));
            assert_eq!(
                protocols.get(&262).map(String::as_str),
                Some("IPPROTO_MPTCP")
            );
            let families = f.symbols("family").expect("family table");
            assert_eq!(
                families.into_iter().collect::<Vec<_>>(),
                vec![(2, "AF_INET".to_string()), (10, "AF_INET6".to_string())]
            );
            assert_eq!(f.symbols("sport"), None);
        }
        // DCCP was removed from the list after 6.1.
        assert!(
            !parse(K618_SOCK)
                .symbols("protocol")
                .unwrap_or_default()
                .contains_key(&33)
        );
        assert!(
            parse(K61_SOCK)
                .symbols("protocol")
                .unwrap_or_default()
                .contains_key(&33)
        );
    }

    #[test]
    fn tcp_retransmit_skb_6_18_and_6_1() {
        let expected = RetransmitLayout {
            skaddr: 16,
            state: 24,
            sport: 28,
            dport: 30,
            family: 32,
            saddr: 34,
            daddr: 38,
            saddr_v6: 42,
            daddr_v6: 58,
        };
        for text in [K618_RETRANS, K61_RETRANS] {
            let f = parse(text);
            assert_eq!(f.name, "tcp_retransmit_skb");
            assert_eq!(retransmit_layout(&f), Ok(expected));
            let saddr = f.field("saddr").expect("saddr");
            assert_eq!((saddr.c_type.as_str(), saddr.size), ("__u8[4]", 4));
            assert_eq!(
                f.field("skaddr").map(|x| x.c_type.as_str()),
                Some("const void *")
            );
            // The tcp system does not resolve TCP_* names: every entry is skipped.
            assert_eq!(f.symbols("state"), Some(BTreeMap::new()));
            assert_eq!(
                f.symbols("family").map(|t| t.len()),
                Some(2),
                "family table"
            );
        }
        assert_field(&parse(K618_RETRANS), "err", 76, 4, true);
    }

    #[test]
    fn tcp_retransmit_skb_5_10_lacks_family() {
        let f = parse(K510_RETRANS);
        assert_field(&f, "state", 24, 4, true);
        assert_field(&f, "saddr", 32, 4, false);
        assert_field(&f, "daddr_v6", 56, 16, false);
        // No family before 5.16: the layout marks it absent and the program reads the socket.
        let l = retransmit_layout(&f).expect("5.10 layout");
        assert_eq!(l.family, ABSENT);
        assert_eq!(l.saddr, 32);
    }

    #[test]
    fn mis_sized_fields_are_errors() {
        let text = K618_SOCK.replace(
            "field:__u16 sport;\toffset:24;\tsize:2;",
            "field:__u32 sport;\toffset:24;\tsize:4;",
        );
        assert_ne!(text, K618_SOCK);
        let err = sock_state_layout(&parse(&text)).expect_err("sport is 4 bytes");
        assert_eq!(
            err,
            FormatError::FieldSize {
                event: "inet_sock_set_state".into(),
                field: "sport",
                expected: 2,
                found: 4
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("inet_sock_set_state") && msg.contains("sport"),
            "{msg}"
        );

        // The optional reason must still have the right size when present.
        let text = K61_KFREE.replace(
            "reason;\toffset:28;\tsize:4;",
            "reason;\toffset:28;\tsize:2;",
        );
        assert_ne!(text, K61_KFREE);
        assert!(matches!(
            kfree_layout(&parse(&text)),
            Err(FormatError::FieldSize {
                field: "reason",
                expected: 4,
                found: 2,
                ..
            })
        ));

        let text = K618_RETRANS.replace(
            "const void * skaddr;\toffset:16;\tsize:8;",
            "int skaddr;\toffset:16;\tsize:4;",
        );
        assert_ne!(text, K618_RETRANS);
        assert!(matches!(
            retransmit_layout(&parse(&text)),
            Err(FormatError::FieldSize {
                field: "skaddr",
                expected: 8,
                found: 4,
                ..
            })
        ));
    }

    #[test]
    fn missing_required_field_is_an_error() {
        let text: String = K618_KFREE
            .lines()
            .filter(|l| !l.contains(" protocol;"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            kfree_layout(&parse(&text)),
            Err(FormatError::MissingField {
                event: "kfree_skb".into(),
                field: "protocol"
            })
        );
        // A layout asked of the wrong event names that event.
        assert!(matches!(
            sock_state_layout(&parse(K618_KFREE)),
            Err(FormatError::MissingField { ref event, field: "skaddr" }) if event == "kfree_skb"
        ));
    }

    #[test]
    fn field_declarations() {
        let text = "name: demo\nID: 7\nformat:\n\
            \tfield:__u8 saddr[4];\toffset:8;\tsize:4;\tsigned:0;\n\
            \tfield:__data_loc char[] name;\toffset:12;\tsize:4;\tsigned:1;\n\
            \tfield:void * skbaddr;\toffset:16;\tsize:8;\tsigned:0;\n\
            \tfield:char *comm;\toffset:24;\tsize:8;\tsigned:0;\n\
            \tfield:unsigned long flags;\toffset:32;\tsize:8;\n\
            \nprint fmt: \"x\"\n";
        let f = parse(text);
        let decl = |n: &str| {
            let x = f.field(n).unwrap_or_else(|| panic!("no {n}"));
            (x.c_type.clone(), x.offset, x.size, x.signed)
        };
        assert_eq!(decl("saddr"), ("__u8[4]".into(), 8, 4, false));
        assert_eq!(decl("name"), ("__data_loc char[]".into(), 12, 4, true));
        assert_eq!(decl("skbaddr"), ("void *".into(), 16, 8, false));
        assert_eq!(decl("comm"), ("char *".into(), 24, 8, false));
        assert_eq!(decl("flags"), ("unsigned long".into(), 32, 8, false));
        assert_eq!(f.print_fmt, "\"x\"");
        assert_eq!(f.fields.len(), 5);
    }

    #[test]
    fn empty_and_garbage_input() {
        assert_eq!(EventFormat::parse(""), Err(FormatError::Empty));
        assert_eq!(EventFormat::parse(" \n\n\t\n"), Err(FormatError::Empty));
        assert!(matches!(
            EventFormat::parse("hello world"),
            Err(FormatError::Malformed { line: 1, .. })
        ));
        assert!(matches!(
            EventFormat::parse("\n\n<html>404</html>\n"),
            Err(FormatError::Malformed { line: 3, .. })
        ));
        let binary = String::from_utf8_lossy(&[0u8, 159, 146, 150, 10, 255, 1, 2]).into_owned();
        assert!(EventFormat::parse(&binary).is_err());
        assert!(matches!(
            EventFormat::parse("name: x\nID: twelve\nformat:\n"),
            Err(FormatError::Malformed {
                line: 2,
                reason: "ID is not a number",
                ..
            })
        ));
        assert!(matches!(
            EventFormat::parse("format:\n\tfield:int a;\toffset:0;\tsize:4;\n"),
            Err(FormatError::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn truncated_files_are_errors() {
        assert_eq!(
            EventFormat::parse("name: kfree_skb\n"),
            Err(FormatError::Truncated { missing: "ID:" })
        );
        assert_eq!(
            EventFormat::parse("name: kfree_skb\nID: 5\n"),
            Err(FormatError::Truncated { missing: "format:" })
        );
        assert_eq!(
            EventFormat::parse("name: kfree_skb\nID: 5\nformat:\n"),
            Err(FormatError::Truncated { missing: "field:" })
        );
        let before_print = K618_KFREE.find("print fmt:").expect("print fmt");
        assert_eq!(
            EventFormat::parse(&K618_KFREE[..before_print]),
            Err(FormatError::Truncated {
                missing: "print fmt:"
            })
        );
        // Every cut before the print fmt fails, none panics.
        for text in ALL {
            let end = text.find("print fmt:").expect("print fmt");
            for cut in (0..end).filter(|&i| text.is_char_boundary(i)) {
                assert!(
                    EventFormat::parse(&text[..cut]).is_err(),
                    "cut at {cut}: {:?}",
                    &text[..cut]
                );
            }
        }
    }

    #[test]
    fn malformed_field_lines_report_their_line() {
        let header = "name: e\nID: 1\nformat:\n";
        let cases = [
            (
                "\tfield:int a;\tsize:4;\tsigned:1;\n",
                "field has no offset",
            ),
            ("\tfield:int a;\toffset:8;\n", "field has no size"),
            (
                "\tfield:int a;\toffset:8;\tsi",
                "expected `key:value` parts",
            ),
            (
                "\tfield:int a;\toffset:x;\tsize:4;\n",
                "offset is not a number",
            ),
            (
                "\tfield:int a;\toffset:8;\tsize:-4;\n",
                "size is not a number",
            ),
            (
                "\tfield:int a;\toffset:8;\tsize:4;\tsigned:2;\n",
                "signed is neither 0 nor 1",
            ),
            (
                "\tfield:a;\toffset:8;\tsize:4;\n",
                "cannot find the field name",
            ),
            (
                "\tfield:int 9a;\toffset:8;\tsize:4;\n",
                "cannot find the field name",
            ),
            ("\tjunk here\n", "expected a `field:` or `print fmt:` line"),
        ];
        for (body, want) in cases {
            let text =
                format!("{header}\tfield:int ok;\toffset:0;\tsize:4;\n{body}\nprint fmt: \"\"\n");
            match EventFormat::parse(&text) {
                Err(FormatError::Malformed { line, reason, .. }) => {
                    assert_eq!((line, reason), (5, want), "{body:?}")
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
        let dup = format!(
            "{header}\tfield:int a;\toffset:0;\tsize:4;\n\tfield:int a;\toffset:4;\tsize:4;\nprint fmt: \"\"\n"
        );
        assert_eq!(
            EventFormat::parse(&dup),
            Err(FormatError::DuplicateField {
                line: 5,
                name: "a".into()
            })
        );
        let trailing = format!("{K61_SOCK}more\n");
        assert!(matches!(
            EventFormat::parse(&trailing),
            Err(FormatError::Malformed {
                reason: "unexpected text after the print fmt",
                ..
            })
        ));
        let err = EventFormat::parse(&format!("{header}\tfield:int a;\toffset:8;\n"))
            .expect_err("no size");
        assert!(
            err.to_string().starts_with("line 4: field has no size"),
            "{err}"
        );
    }

    fn with_print_fmt(fmt: &str) -> EventFormat {
        parse(&format!(
            "name: t\nID: 1\nformat:\n\tfield:int x;\toffset:8;\tsize:4;\tsigned:1;\n\nprint fmt: {fmt}\n"
        ))
    }

    #[test]
    fn symbols_numeric_forms() {
        let f = with_print_fmt(
            "\"x=%s y=%s z=%s\", __print_symbolic(REC->x, { 0x10, \"HEX\" }, { 0X1f, \"HEX_UPPER\" }, \
             { 010, \"OCTAL\" }, { 0, \"ZERO\" }, { 3U, \"SUFFIXED\" }, { 4UL, \"LONG\" }, \
             { -1, \"MINUS_ONE\" }, { (5), \"PARENS\" }, { SOME_ENUM, \"SYMBOLIC\" }, \
             { 1 << 3, \"SHIFT\" }, { 7, \"ESC\\\"APED\" }), \
             __print_symbolic((int)REC->y, { 1, \"CAST\" }), \
             __print_symbolic(REC->xx, { 1, \"OTHER_FIELD\" })",
        );
        let x = f.symbols("x").expect("x table");
        let want: BTreeMap<u64, String> = [
            (0x10, "HEX"),
            (0x1f, "HEX_UPPER"),
            (8, "OCTAL"),
            (0, "ZERO"),
            (3, "SUFFIXED"),
            (4, "LONG"),
            (u64::MAX, "MINUS_ONE"),
            (5, "PARENS"),
            (7, "ESC\"APED"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        assert_eq!(x, want);
        assert_eq!(
            f.symbols("y").map(|t| t.into_iter().collect::<Vec<_>>()),
            Some(vec![(1, "CAST".to_string())])
        );
        assert_eq!(f.symbols("xx").map(|t| t.len()), Some(1));
        assert_eq!(f.symbols("z"), None);
        assert_eq!(f.symbols(""), None);
    }

    #[test]
    fn symbols_ignore_text_inside_the_format_string() {
        let f = with_print_fmt("\"__print_symbolic(REC->x, { 1, \\\"FAKE\\\" })\", REC->x");
        assert_eq!(f.symbols("x"), None);
        // Unbalanced or odd text yields nothing rather than a panic.
        for fmt in [
            "\"a\", __print_symbolic(REC->x, { 1, \"A\" }",
            "\"a\", __print_symbolic",
            "\"a\", __print_symbolic REC->x",
            "\"a\", __print_symbolic(",
            "\"a\", __print_symbolic(REC->x, { 1, \"A\" ) }",
            "\"unterminated",
            "__print_symbolic(REC->x, { 1 }, { \"A\" }, { 1, 2, \"B\" }, 1, \"C\")",
            "my__print_symbolic(REC->x, { 1, \"A\" })",
        ] {
            let table = with_print_fmt(fmt).symbols("x");
            assert!(
                table.as_ref().is_none_or(|t| t.is_empty()),
                "{fmt}: {table:?}"
            );
        }
    }

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
