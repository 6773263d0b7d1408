//! A reader of the BTF type format, just as much as [`super`] needs to resolve member offsets.
//!
//! It parses the header, the type section and the string section of a raw BTF blob (as the kernel
//! exposes it in `/sys/kernel/btf/`), standalone or split on top of a base (kernel modules). The
//! type section is walked once to find where each type's record starts and to check that every
//! record fits; names are indexed for look-up. Everything else (members, parameters, names, type
//! ids) is decoded on demand, and a dangling id or string offset is an error at that point, so
//! arbitrary bytes give an error, never a panic.
//!
//! Format: the kernel's `include/uapi/linux/btf.h` and `Documentation/bpf/btf.rst`.

use std::cmp::Ordering;
use std::ops::Range;
use std::sync::Arc;

/// `btf_header.magic`; its byte order gives the file's.
const MAGIC: u16 = 0xeb9f;
/// Size of `struct btf_header` (version 1), the smallest `hdr_len`.
const HEADER_LEN: usize = 24;
/// Size of `struct btf_type`, which starts every type record.
const TYPE_LEN: usize = 12;

/// Why a BTF blob could not be parsed, or a type or name in it could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Fewer bytes than a header.
    #[error("{len} bytes are too short for a BTF header")]
    Short { len: usize },
    /// The magic number is not BTF's in either byte order.
    #[error("bad magic {magic:#06x}, not BTF")]
    Magic { magic: u16 },
    /// A BTF version this reader does not know.
    #[error("unsupported BTF version {version}")]
    Version { version: u8 },
    /// The header's lengths or offsets do not fit the blob.
    #[error("bad BTF header: {detail}")]
    Header { detail: String },
    /// A type record runs past the end of the type section.
    #[error("type {id} at byte {at} of the type section is truncated")]
    Truncated { id: u32, at: usize },
    /// A type kind this reader does not know, so the next record cannot be found.
    #[error("type {id} has unknown kind {kind}")]
    UnknownKind { id: u32, kind: u32 },
    /// More types than type ids.
    #[error("too many types")]
    TooManyTypes,
    /// A type id that is not in this BTF (or its base).
    #[error("no type with id {id}")]
    NoType { id: u32 },
    /// A string offset outside the string section, or a string that is not NUL-terminated UTF-8.
    #[error("bad string at offset {offset}")]
    BadString { offset: u32 },
    /// Split BTF can only be stacked on a standalone base.
    #[error("the base of split BTF must not itself be split")]
    SplitBase,
}

/// `BTF_KIND_*`; [`Kind::Void`] is type id 0, which has no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            _ => return None,
        })
    }

    /// Bytes that follow the common `struct btf_type` in a record of this kind with `vlen`
    /// entries.
    fn body_len(self, vlen: usize) -> usize {
        match self {
            // u32 encoding (INT), `struct btf_var` (VAR), `struct btf_decl_tag` (DECL_TAG)
            Self::Int | Self::Var | Self::DeclTag => 4,
            // `struct btf_array`
            Self::Array => 12,
            // `struct btf_member`, `struct btf_var_secinfo`, `struct btf_enum64`
            Self::Struct | Self::Union | Self::Datasec | Self::Enum64 => 12 * vlen,
            // `struct btf_enum`, `struct btf_param`
            Self::Enum | Self::FuncProto => 8 * vlen,
            Self::Void
            | Self::Ptr
            | Self::Fwd
            | Self::Typedef
            | Self::Volatile
            | Self::Const
            | Self::Restrict
            | Self::Func
            | Self::Float
            | Self::TypeTag => 0,
        }
    }

    /// Lower-case name of the kind, for messages ("struct", "ptr", "func-proto", …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Void => "void",
            Self::Int => "int",
            Self::Ptr => "ptr",
            Self::Array => "array",
            Self::Struct => "struct",
            Self::Union => "union",
            Self::Enum => "enum",
            Self::Fwd => "fwd",
            Self::Typedef => "typedef",
            Self::Volatile => "volatile",
            Self::Const => "const",
            Self::Restrict => "restrict",
            Self::Func => "func",
            Self::FuncProto => "func-proto",
            Self::Var => "var",
            Self::Datasec => "datasec",
            Self::Float => "float",
            Self::DeclTag => "decl-tag",
            Self::TypeTag => "type-tag",
            Self::Enum64 => "enum64",
        }
    }
}

/// One type: the common `struct btf_type` fields, decoded.
#[derive(Debug, Clone, Copy)]
pub struct Type<'a> {
    sec: Option<&'a Section>,
    pub kind: Kind,
    pub name_off: u32,
    pub vlen: u16,
    pub kind_flag: bool,
    /// `size` (INT, STRUCT, UNION, ENUM, DATASEC, FLOAT, ENUM64) or `type` (the others).
    pub size_or_type: u32,
    /// Where the kind-specific data after the common fields starts in `sec.data`.
    body: usize,
}

impl Type<'_> {
    /// Members of a struct or union (none for other kinds).
    pub fn members(&self) -> impl Iterator<Item = Member> + '_ {
        let n = match self.kind {
            Kind::Struct | Kind::Union => usize::from(self.vlen),
            _ => 0,
        };
        (0..n).map(move |i| {
            let at = self.body + 12 * i;
            let offset = self.word(at + 8);
            let (bit_offset, bitfield_bits) = if self.kind_flag {
                (offset & 0x00ff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            Member {
                name_off: self.word(at),
                type_id: self.word(at + 4),
                bit_offset,
                bitfield_bits,
            }
        })
    }

    /// Parameters of a function prototype as `(name offset, type id)` (none for other kinds).
    pub fn params(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let n = match self.kind {
            Kind::FuncProto => usize::from(self.vlen),
            _ => 0,
        };
        (0..n).map(move |i| {
            let at = self.body + 8 * i;
            (self.word(at), self.word(at + 4))
        })
    }

    /// The word at `at`; parsing checked that every record lies inside the type section, so the
    /// fallback 0 is never used.
    fn word(&self, at: usize) -> u32 {
        self.sec.and_then(|s| s.word(at)).unwrap_or(0)
    }
}

/// A struct or union member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub name_off: u32,
    pub type_id: u32,
    /// Offset from the start of the struct, in bits.
    pub bit_offset: u32,
    /// Width of a bitfield member when the struct has `kind_flag` set; 0 otherwise (not a
    /// bitfield, or old-style BTF that encodes the width in the int type).
    pub bitfield_bits: u32,
}

/// One parsed BTF blob.
#[derive(Debug)]
struct Section {
    data: Vec<u8>,
    big_endian: bool,
    /// The string section, as a range of `data`.
    strings: Range<usize>,
    /// Where each type record starts in `data`; index 0 is type `first_id`.
    records: Vec<usize>,
    /// Id of the first type here: 1 standalone, the base's type count (with void) when split.
    first_id: u32,
    /// First string offset that refers to this section's strings: 0 standalone, the base's
    /// string section length when split.
    first_str: u32,
    /// Indexes into `records` of the named types, sorted by name then id.
    by_name: Vec<u32>,
}

impl Section {
    fn word(&self, at: usize) -> Option<u32> {
        let bytes: [u8; 4] = self.data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    }

    /// Parse header and type section; the name index is built by the caller.
    fn parse(data: Vec<u8>, first_id: u32, first_str: u32) -> Result<Self, ReadError> {
        if data.len() < HEADER_LEN {
            return Err(ReadError::Short { len: data.len() });
        }
        let big_endian = match [data[0], data[1]] {
            m if u16::from_le_bytes(m) == MAGIC => false,
            m if u16::from_be_bytes(m) == MAGIC => true,
            m => {
                return Err(ReadError::Magic {
                    magic: u16::from_le_bytes(m),
                });
            }
        };
        if data[2] != 1 {
            return Err(ReadError::Version { version: data[2] });
        }
        let mut sec = Section {
            data,
            big_endian,
            strings: 0..0,
            records: Vec::new(),
            first_id,
            first_str,
            by_name: Vec::new(),
        };
        let header = |i: usize| sec.word(4 + 4 * i).map_or(0, |w| w as usize);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (header(0), header(1), header(2), header(3), header(4));
        let bad = |detail: String| ReadError::Header { detail };
        if hdr_len < HEADER_LEN || hdr_len > sec.data.len() {
            return Err(bad(format!(
                "header length {hdr_len} outside {HEADER_LEN}..={}",
                sec.data.len()
            )));
        }
        let body = sec.data.len() - hdr_len;
        let range = |what: &str, off: usize, len: usize| match off.checked_add(len) {
            Some(end) if end <= body => Ok(hdr_len + off..hdr_len + end),
            _ => Err(bad(format!(
                "{what} section {off}+{len} past the end ({body} bytes after the header)"
            ))),
        };
        let types = range("type", type_off, type_len)?;
        sec.strings = range("string", str_off, str_len)?;
        let strings = &sec.data[sec.strings.clone()];
        // As the kernel requires (btf_parse_str_sec): NUL-terminated, and a standalone section
        // starts with the empty string that name offset 0 refers to.
        if strings.last() != Some(&0) || (first_str == 0 && strings.first() != Some(&0)) {
            return Err(bad(
                "string section empty or not framed by NUL bytes".to_string()
            ));
        }

        let mut at = types.start;
        while at < types.end {
            let id = u32::try_from(sec.records.len())
                .ok()
                .and_then(|n| n.checked_add(first_id))
                .ok_or(ReadError::TooManyTypes)?;
            let truncated = || ReadError::Truncated {
                id,
                at: at - types.start,
            };
            if types.end - at < TYPE_LEN {
                return Err(truncated());
            }
            let info = sec.word(at + 4).ok_or_else(truncated)?;
            let raw_kind = (info >> 24) & 0x1f;
            let kind =
                Kind::from_raw(raw_kind).ok_or(ReadError::UnknownKind { id, kind: raw_kind })?;
            let len = TYPE_LEN + kind.body_len((info & 0xffff) as usize);
            if types.end - at < len {
                return Err(truncated());
            }
            sec.records.push(at);
            at += len;
        }
        Ok(sec)
    }

    /// Bytes of the string at `offset` (relative to this section's strings), without its NUL.
    fn str_bytes(&self, offset: u32) -> Option<&[u8]> {
        let strings = self.data.get(self.strings.clone())?;
        let rest = strings.get(usize::try_from(offset).ok()?..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..len])
    }

    /// The type whose record is `records[index]`.
    fn type_at(&self, index: usize) -> Option<Type<'_>> {
        let at = *self.records.get(index)?;
        let info = self.word(at + 4)?;
        Some(Type {
            sec: Some(self),
            kind: Kind::from_raw((info >> 24) & 0x1f)?,
            name_off: self.word(at)?,
            vlen: (info & 0xffff) as u16,
            kind_flag: info >> 31 == 1,
            size_or_type: self.word(at + 8)?,
            body: at + TYPE_LEN,
        })
    }
}

/// Parsed BTF: a standalone blob, or a split one with the base it extends.
#[derive(Debug, Clone)]
pub struct Btf {
    base: Option<Arc<Section>>,
    own: Arc<Section>,
}

impl Btf {
    /// Parse standalone BTF (such as `/sys/kernel/btf/vmlinux`).
    pub fn parse(data: Vec<u8>) -> Result<Self, ReadError> {
        let own = Section::parse(data, 1, 0)?;
        Ok(Self::indexed(None, own))
    }

    /// Parse split BTF (such as `/sys/kernel/btf/nf_conntrack`) whose type ids and string
    /// offsets continue those of `base`.
    pub fn parse_split(data: Vec<u8>, base: &Btf) -> Result<Self, ReadError> {
        if base.base.is_some() {
            return Err(ReadError::SplitBase);
        }
        let b = &base.own;
        let first_id = u32::try_from(b.records.len())
            .ok()
            .and_then(|n| n.checked_add(1))
            .ok_or(ReadError::TooManyTypes)?;
        let first_str = u32::try_from(b.strings.len()).map_err(|_| ReadError::Header {
            detail: "base string section too large".to_string(),
        })?;
        let own = Section::parse(data, first_id, first_str)?;
        Ok(Self::indexed(Some(Arc::clone(b)), own))
    }

    /// Whether this is split BTF (stacked on a base).
    pub fn is_split(&self) -> bool {
        self.base.is_some()
    }

    /// Index `own`'s named types (their names may lie in `base`'s strings) and wrap it up.
    fn indexed(base: Option<Arc<Section>>, mut own: Section) -> Self {
        let mut named: Vec<(&[u8], u32)> = (0..own.records.len())
            .filter_map(|i| {
                let ty = own.type_at(i)?;
                let name = str_bytes(base.as_deref(), &own, ty.name_off)?;
                (!name.is_empty()).then_some((name, u32::try_from(i).ok()?))
            })
            .collect();
        named.sort_unstable();
        let by_name = named.into_iter().map(|(_, i)| i).collect();
        own.by_name = by_name;
        Self {
            base,
            own: Arc::new(own),
        }
    }

    /// The type with id `id`; id 0 is void.
    pub fn type_by_id(&self, id: u32) -> Result<Type<'_>, ReadError> {
        if id == 0 {
            return Ok(Type {
                sec: None,
                kind: Kind::Void,
                name_off: 0,
                vlen: 0,
                kind_flag: false,
                size_or_type: 0,
                body: 0,
            });
        }
        let sec = match &self.base {
            Some(base) if id < self.own.first_id => base,
            _ => &self.own,
        };
        id.checked_sub(sec.first_id)
            .and_then(|i| sec.type_at(usize::try_from(i).ok()?))
            .ok_or(ReadError::NoType { id })
    }

    /// Ids of the types named `name`: this BTF's first, then its base's, each in id order.
    pub fn ids_by_name(&self, name: &str) -> Vec<u32> {
        let mut ids = self.ids_in(&self.own, name);
        if let Some(base) = &self.base {
            ids.extend(self.ids_in(base, name));
        }
        ids
    }

    fn ids_in(&self, sec: &Section, name: &str) -> Vec<u32> {
        let name = name.as_bytes();
        let name_of = |&i: &u32| {
            sec.type_at(i as usize)
                .and_then(|t| self.str_bytes(t.name_off))
                .unwrap_or_default()
        };
        let start = sec.by_name.partition_point(|i| name_of(i) < name);
        sec.by_name[start..]
            .iter()
            .take_while(|i| name_of(i).cmp(name) == Ordering::Equal)
            .filter_map(|&i| sec.first_id.checked_add(i))
            .collect()
    }

    /// The string at `offset` in the string section (split BTF: its base's below its own).
    pub fn name(&self, offset: u32) -> Result<&str, ReadError> {
        self.str_bytes(offset)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or(ReadError::BadString { offset })
    }

    fn str_bytes(&self, offset: u32) -> Option<&[u8]> {
        str_bytes(self.base.as_deref(), &self.own, offset)
    }
}

/// The string at `offset` of `own`'s string section, which continues `base`'s when split.
fn str_bytes<'a>(base: Option<&'a Section>, own: &'a Section, offset: u32) -> Option<&'a [u8]> {
    match base {
        Some(base) if offset < own.first_str => base.str_bytes(offset),
        _ => own.str_bytes(offset.checked_sub(own.first_str)?),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Minimal BTF writer for tests: types are appended in id order, strings interned on use.
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
        /// Where string offsets start: 0 standalone, the base's string length when split.
        str_base: u32,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
                str_base: 0,
            }
        }

        /// A builder for split BTF on top of the blob `base` built earlier.
        pub(crate) fn split(base: &Builder) -> Self {
            Self {
                types: Vec::new(),
                strings: Vec::new(),
                next_id: base.next_id,
                str_base: base.str_base + base.strings.len() as u32,
            }
        }

        pub(crate) fn word(&mut self, w: u32) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }

        pub(crate) fn name(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.str_base + self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        /// The common `struct btf_type`; returns the new type's id.
        pub(crate) fn header(
            &mut self,
            name: &str,
            kind: u32,
            kflag: bool,
            vlen: u32,
            size_or_type: u32,
        ) -> u32 {
            let name = self.name(name);
            let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
            for w in [name, info, size_or_type] {
                self.word(w);
            }
            self.next_id += 1;
            self.next_id - 1
        }

        pub(crate) fn int(&mut self, name: &str, bytes: u32) -> u32 {
            let id = self.header(name, 1, false, 0, bytes);
            self.word(bytes * 8);
            id
        }

        pub(crate) fn ptr(&mut self, to: u32) -> u32 {
            self.header("", 2, false, 0, to)
        }

        pub(crate) fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.header(name, 8, false, 0, to)
        }

        pub(crate) fn konst(&mut self, to: u32) -> u32 {
            self.header("", 10, false, 0, to)
        }

        pub(crate) fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
            let id = self.header("", 3, false, 0, 0);
            for w in [elem, index, n] {
                self.word(w);
            }
            id
        }

        /// `members`: (name, type id, bit offset, bitfield bits or 0). Forward type ids are
        /// fine. `kind_flag` is set when any member is a bitfield.
        pub(crate) fn composite(
            &mut self,
            union: bool,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let kflag = members.iter().any(|m| m.3 != 0);
            let kind = if union { 5 } else { 4 };
            let id = self.header(name, kind, kflag, members.len() as u32, size);
            for &(mname, ty, bit_off, bits) in members {
                let mname = self.name(mname);
                let off = if kflag {
                    (bits << 24) | bit_off
                } else {
                    bit_off
                };
                for w in [mname, ty, off] {
                    self.word(w);
                }
            }
            id
        }

        /// `func name(params…)`, with its prototype; returns the FUNC's id.
        pub(crate) fn func(&mut self, name: &str, ret: u32, params: &[(&str, u32)]) -> u32 {
            let proto = self.header("", 13, false, params.len() as u32, ret);
            for &(pname, ty) in params {
                let pname = self.name(pname);
                self.word(pname);
                self.word(ty);
            }
            self.header(name, 12, false, 1, proto)
        }

        pub(crate) fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.push(1); // version
            out.push(0); // flags
            let type_len = self.types.len() as u32;
            for w in [
                HEADER_LEN as u32,
                0,
                type_len,
                type_len,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// One record of every kind, so the walk must skip each by its own length.
    fn every_kind() -> Builder {
        let mut b = Builder::new();
        let int = b.int("int", 4); // 1 INT
        b.ptr(int); // 2 PTR
        b.array(int, int, 4); // 3 ARRAY
        b.composite(false, "s", 4, &[("a", int, 0, 0)]); // 4 STRUCT
        b.composite(true, "u", 4, &[("b", int, 0, 0), ("c", int, 0, 0)]); // 5 UNION
        b.header("e", 6, false, 2, 4); // 6 ENUM
        let one = b.name("ONE");
        for w in [one, 1, one, 2] {
            b.word(w);
        }
        b.header("fwd", 7, false, 0, 0); // 7 FWD
        b.typedef("t", int); // 8 TYPEDEF
        b.header("", 9, false, 0, int); // 9 VOLATILE
        b.konst(int); // 10 CONST
        b.header("", 11, false, 0, 2); // 11 RESTRICT
        b.func("f", int, &[("x", int), ("", int)]); // 12 FUNC_PROTO, 13 FUNC
        b.header("v", 14, false, 0, int); // 14 VAR
        b.word(1);
        b.header(".data", 15, false, 1, 4); // 15 DATASEC
        for w in [14, 0, 4] {
            b.word(w);
        }
        b.header("float", 16, false, 0, 4); // 16 FLOAT
        b.header("tag", 17, false, 0, 4); // 17 DECL_TAG
        b.word(u32::MAX);
        b.header("user", 18, false, 0, int); // 18 TYPE_TAG
        b.header("e64", 19, false, 1, 8); // 19 ENUM64
        for w in [one, 1, 0] {
            b.word(w);
        }
        b.composite(false, "last", 8, &[("z", int, 32, 0)]); // 20
        b
    }

    #[test]
    fn walks_every_kind() {
        let btf = Btf::parse(every_kind().bytes()).unwrap();
        let kinds: Vec<Kind> = (1..=20)
            .map(|id| btf.type_by_id(id).unwrap().kind)
            .collect();
        use Kind::*;
        assert_eq!(
            kinds,
            [
                Int, Ptr, Array, Struct, Union, Enum, Fwd, Typedef, Volatile, Const, Restrict,
                FuncProto, Func, Var, Datasec, Float, DeclTag, TypeTag, Enum64, Struct
            ]
        );
        // The record after all the variable-length ones is read from the right place.
        assert_eq!(btf.ids_by_name("last"), [20]);
        let last = btf.type_by_id(20).unwrap();
        let m: Vec<Member> = last.members().collect();
        assert_eq!(btf.name(m[0].name_off).unwrap(), "z");
        assert_eq!(
            (m[0].type_id, m[0].bit_offset, m[0].bitfield_bits),
            (1, 32, 0)
        );
        let proto = btf.type_by_id(12).unwrap();
        let params: Vec<_> = proto.params().collect();
        assert_eq!(params.len(), 2);
        assert_eq!(btf.name(params[0].0).unwrap(), "x");
        assert_eq!(params[1], (0, 1));
        assert_eq!(btf.type_by_id(0).unwrap().kind, Kind::Void);
        assert!(matches!(
            btf.type_by_id(21),
            Err(ReadError::NoType { id: 21 })
        ));
        assert!(btf.ids_by_name("nope").is_empty());
        assert!(btf.ids_by_name("").is_empty());
        assert_eq!(btf.ids_by_name("f"), [13]);
    }

    #[test]
    fn kind_flag_splits_member_offset() {
        let mut b = Builder::new();
        let u8_t = b.int("u8", 1);
        b.composite(false, "bits", 1, &[("a", u8_t, 0, 3), ("b", u8_t, 3, 5)]);
        let btf = Btf::parse(b.bytes()).unwrap();
        let s = btf.type_by_id(2).unwrap();
        assert!(s.kind_flag);
        let m: Vec<(u32, u32)> = s
            .members()
            .map(|m| (m.bit_offset, m.bitfield_bits))
            .collect();
        assert_eq!(m, [(0, 3), (3, 5)]);
    }

    #[test]
    fn same_name_gives_every_id_in_order() {
        let mut b = Builder::new();
        b.composite(false, "dup", 0, &[]);
        let int = b.int("int", 4);
        b.composite(false, "dup", 4, &[("x", int, 0, 0)]);
        b.typedef("dup", int);
        let btf = Btf::parse(b.bytes()).unwrap();
        assert_eq!(btf.ids_by_name("dup"), [1, 3, 4]);
    }

    #[test]
    fn split_continues_base_ids_and_strings() {
        let mut base = Builder::new();
        let int = base.int("int", 4);
        base.composite(false, "shared", 4, &[("v", int, 0, 0)]);
        let mut split = Builder::split(&base);
        let s = split.composite(false, "mod_only", 8, &[("i", int, 0, 0), ("j", int, 32, 0)]);
        split.composite(false, "shared", 0, &[]);
        assert_eq!(s, 3);
        let b = Btf::parse(base.bytes()).unwrap();
        let m = Btf::parse_split(split.bytes(), &b).unwrap();
        assert_eq!(m.ids_by_name("mod_only"), [3]);
        // Split first, then base.
        assert_eq!(m.ids_by_name("shared"), [4, 2]);
        assert_eq!(m.ids_by_name("int"), [1]);
        let t = m.type_by_id(3).unwrap();
        let names: Vec<&str> = t.members().map(|x| m.name(x.name_off).unwrap()).collect();
        assert_eq!(names, ["i", "j"]);
        assert_eq!(m.type_by_id(1).unwrap().kind, Kind::Int);
        assert!(m.type_by_id(5).is_err());
        // The base alone knows nothing of the module.
        assert!(b.ids_by_name("mod_only").is_empty());
        assert!(matches!(
            Btf::parse_split(split.bytes(), &m),
            Err(ReadError::SplitBase)
        ));
    }

    #[test]
    fn malformed_headers_are_errors() {
        let good = every_kind().bytes();
        assert!(Btf::parse(good.clone()).is_ok());
        assert!(matches!(
            Btf::parse(Vec::new()),
            Err(ReadError::Short { len: 0 })
        ));
        assert!(matches!(
            Btf::parse(good[..HEADER_LEN - 1].to_vec()),
            Err(ReadError::Short { .. })
        ));
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(Btf::parse(bad), Err(ReadError::Magic { .. })));
        let mut bad = good.clone();
        bad[2] = 2;
        assert!(matches!(
            Btf::parse(bad),
            Err(ReadError::Version { version: 2 })
        ));
        // Each header field in turn made huge, and hdr_len made too small.
        for field in 0..5 {
            let mut bad = good.clone();
            bad[4 + 4 * field..8 + 4 * field].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(
                matches!(Btf::parse(bad), Err(ReadError::Header { .. })),
                "field {field}"
            );
        }
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(Btf::parse(bad), Err(ReadError::Header { .. })));
        // String section not NUL-terminated.
        let mut bad = good.clone();
        *bad.last_mut().unwrap() = b'x';
        assert!(matches!(Btf::parse(bad), Err(ReadError::Header { .. })));
    }

    #[test]
    fn truncated_records_and_unknown_kinds_are_errors() {
        let b = every_kind();
        let type_len = b.types.len();
        // Shrink the type section by 4 bytes: the last record (a struct) no longer fits.
        let mut bad = b.bytes();
        bad[12..16].copy_from_slice(&((type_len - 4) as u32).to_le_bytes());
        assert!(matches!(
            Btf::parse(bad),
            Err(ReadError::Truncated { id: 20, .. })
        ));
        // A vlen far larger than the section.
        let mut b = Builder::new();
        b.header("big", 4, false, 0xffff, 4);
        assert!(matches!(
            Btf::parse(b.bytes()),
            Err(ReadError::Truncated { id: 1, at: 0 })
        ));
        let mut b = Builder::new();
        b.int("int", 4);
        b.header("x", 20, false, 0, 0);
        assert!(matches!(
            Btf::parse(b.bytes()),
            Err(ReadError::UnknownKind { id: 2, kind: 20 })
        ));
        let mut b = Builder::new();
        b.header("x", 0, false, 0, 0);
        assert!(matches!(
            Btf::parse(b.bytes()),
            Err(ReadError::UnknownKind { id: 1, kind: 0 })
        ));
    }

    #[test]
    fn bad_string_offsets_are_errors() {
        let mut b = Builder::new();
        b.header("ok", 1, false, 0, 4);
        b.word(32);
        let btf = Btf::parse(b.bytes()).unwrap();
        assert_eq!(btf.name(0).unwrap(), "");
        assert_eq!(btf.name(1).unwrap(), "ok");
        assert_eq!(btf.name(2).unwrap(), "k");
        assert!(matches!(
            btf.name(4),
            Err(ReadError::BadString { offset: 4 })
        ));
        assert!(btf.name(u32::MAX).is_err());
    }

    #[test]
    fn big_endian_blobs_parse() {
        // Re-encode every word of a little-endian blob; the header's first word holds the magic
        // (2 bytes), version and flags, which are single bytes.
        let le = every_kind().bytes();
        let strings_len = u32::from_le_bytes(le[20..24].try_into().unwrap()) as usize;
        let words_end = le.len() - strings_len;
        let mut be = vec![0xeb, 0x9f, le[2], le[3]];
        for w in le[4..words_end].chunks(4) {
            be.extend_from_slice(&u32::from_le_bytes(w.try_into().unwrap()).to_be_bytes());
        }
        be.extend_from_slice(&le[words_end..]);
        let btf = Btf::parse(be).unwrap();
        let last = btf.type_by_id(btf.ids_by_name("last")[0]).unwrap();
        assert_eq!(last.members().next().unwrap().bit_offset, 32);
    }

    #[test]
    fn arbitrary_prefixes_never_panic() {
        let good = every_kind().bytes();
        for n in 0..good.len() {
            let mut bytes = good[..n].to_vec();
            if let Ok(btf) = Btf::parse(bytes.clone()) {
                for id in 0..25 {
                    if let Ok(t) = btf.type_by_id(id) {
                        let _ = t.members().count();
                        let _ = btf.name(t.name_off);
                    }
                }
            }
            // And the same bytes with the type section claiming the rest of the blob.
            if n >= HEADER_LEN {
                let rest = (n - HEADER_LEN) as u32;
                bytes[12..16].copy_from_slice(&rest.to_le_bytes());
                let _ = Btf::parse(bytes);
            }
        }
    }
}
