//! Kernel struct member offsets from BTF.
//!
//! The eBPF programs read a few kernel struct fields with plain probe reads instead of CO-RE
//! relocations, so user space must tell them where those fields are on the running kernel. This
//! module reads the kernel's BTF (`/sys/kernel/btf/vmlinux`) and resolves dotted member paths such
//! as `sock.__sk_common.skc_net` to byte offsets, looking through the anonymous structs and unions
//! (`struct_group`, unions with scratch fields) that the kernel uses to lay those structs out.
//!
//! [`KernelBtf::kernel_layout`] fills a [`KernelLayout`]; a field that cannot be resolved stays
//! [`ABSENT`] (the programs then leave the dependent event fields at 0) and is reported as a
//! human-readable degradation instead of an error, so netlat still runs on odd kernels.
//!
//! The BTF format itself is read by [`reader`], netlat's own reader of just what this module
//! needs (so the binary carries no LGPL code).

mod reader;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use netlat_common::{ABSENT, KernelLayout};
use netlat_core::enrich::CtTupleLayout;
pub use reader::ReadError;
use reader::{Btf, Kind, Member, Type};

/// Where the running kernel exposes its own BTF (needs `CONFIG_DEBUG_INFO_BTF=y`).
pub const SYS_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Guards against malformed BTF with reference cycles; real kernels nest only a few levels.
const MAX_DEPTH: usize = 32;

/// Why a BTF file could not be read or a member offset could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file does not exist.
    #[error("no BTF at {} (kernel built without CONFIG_DEBUG_INFO_BTF?)", path.display())]
    NoBtf { path: PathBuf },
    /// The BTF file exists but could not be read or parsed.
    #[error("cannot read BTF from {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: ReadError,
    },
    /// No struct or union of that name.
    #[error("struct {strukt} not in BTF")]
    NoStruct { strukt: String },
    /// A component of the member path does not exist.
    #[error("{strukt}.{path} not in BTF")]
    NoMember { strukt: String, path: String },
    /// A member on the path is a bitfield, which has no byte offset a probe read could use.
    /// `bits` is 0 when the width is unknown (old-style BTF, detected by an unaligned offset).
    #[error("{strukt}.{path} is a {}bitfield at bit offset {bit_offset}, not addressable", width(*bits))]
    Bitfield {
        strukt: String,
        path: String,
        bit_offset: u32,
        bits: u32,
    },
    /// The path continues past a member that is not a struct or union (e.g. through a pointer).
    #[error("{strukt}.{path} is a {kind}, not a struct or union; cannot descend into it")]
    NotComposite {
        strukt: String,
        path: String,
        kind: &'static str,
    },
    /// BTF is internally inconsistent (dangling type id, bad string offset, reference cycle).
    #[error("malformed BTF while resolving {what}: {detail}")]
    Malformed { what: String, detail: String },
}

/// Bitfield width for [`BtfError::Bitfield`] messages; empty when unknown.
fn width(bits: u32) -> String {
    if bits == 0 {
        String::new()
    } else {
        format!("{bits}-bit ")
    }
}

/// Parsed kernel BTF.
pub struct KernelBtf {
    btf: Btf,
}

impl fmt::Debug for KernelBtf {
    // The parsed tables are too large to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelBtf").finish_non_exhaustive()
    }
}

impl KernelBtf {
    /// Parse a standalone (non-split) BTF file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BtfError> {
        let path = path.as_ref();
        let bytes = read(path)?;
        Self::from_bytes(bytes).map_err(|source| BtfError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parse standalone BTF from memory (the contents of a file like [`SYS_BTF_PATH`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ReadError> {
        Ok(Self {
            btf: Btf::parse(bytes)?,
        })
    }

    /// Parse the running kernel's BTF from [`SYS_BTF_PATH`].
    pub fn from_sys() -> Result<Self, BtfError> {
        Self::from_file(SYS_BTF_PATH)
    }

    /// The split BTF of a kernel module (`/sys/kernel/btf/<module>`) on top of this base, for
    /// structs defined in modules (e.g. `nf_conn` when nf_conntrack is a module, as on Debian).
    pub fn module(&self, module: &str) -> Result<Self, BtfError> {
        let path = Path::new("/sys/kernel/btf").join(module);
        let read_error = |source| BtfError::Read {
            path: path.clone(),
            source,
        };
        // Before looking for the file: a module's BTF cannot be the base of another's.
        if self.btf.is_split() {
            return Err(read_error(ReadError::SplitBase));
        }
        let bytes = read(&path)?;
        self.split_from_bytes(bytes).map_err(read_error)
    }

    /// Parse split BTF from memory (the contents of `/sys/kernel/btf/<module>`) on top of this
    /// base.
    pub fn split_from_bytes(&self, bytes: Vec<u8>) -> Result<Self, ReadError> {
        Ok(Self {
            btf: Btf::parse_split(bytes, &self.btf)?,
        })
    }

    /// Size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.find_struct(name)?.size_or_type)
    }

    /// IPVS offsets (`ip_vs_conn.dest`, `ip_vs_dest.weight`, `ip_vs_dest.flags`), here or in
    /// the ip_vs module's BTF.
    pub fn ipvs_layout(&self) -> Result<netlat_common::IpvsLayout, BtfError> {
        let module;
        let b: &KernelBtf = if self.find_struct("ip_vs_conn").is_ok() {
            self
        } else {
            module = self.module("ip_vs")?;
            &module
        };
        Ok(netlat_common::IpvsLayout {
            conn_dest: b.member_offset("ip_vs_conn", "dest")?,
            dest_weight: b.member_offset("ip_vs_dest", "weight")?,
            dest_flags: b.member_offset("ip_vs_dest", "flags")?,
            _pad: 0,
        })
    }

    /// `struct sock` offsets for the tp_btf connect programs; all or nothing.
    pub fn sock_layout(&self) -> Result<netlat_common::SockLayout, BtfError> {
        let at = |path: &str| self.member_offset("sock", path);
        Ok(netlat_common::SockLayout {
            daddr: at("__sk_common.skc_daddr")?,
            rcv_saddr: at("__sk_common.skc_rcv_saddr")?,
            dport: at("__sk_common.skc_dport")?,
            num: at("__sk_common.skc_num")?,
            state: at("__sk_common.skc_state")?,
            v6_daddr: at("__sk_common.skc_v6_daddr")?,
            v6_rcv_saddr: at("__sk_common.skc_v6_rcv_saddr")?,
            protocol: at("sk_protocol")?,
            skb_protocol: self.member_offset("sk_buff", "protocol")?,
            _pad: 0,
        })
    }

    /// `nft_pktinfo.skb`, here or in the nf_tables module's BTF.
    pub fn nft_pktinfo_skb(&self) -> Result<u32, BtfError> {
        if self.find_struct("nft_pktinfo").is_ok() {
            return self.member_offset("nft_pktinfo", "skb");
        }
        self.module("nf_tables")?
            .member_offset("nft_pktinfo", "skb")
    }

    /// Index of the parameter named `param` of function `func`, here or in `module`'s BTF.
    pub fn param_index(&self, module: &str, func: &str, param: &str) -> Result<u32, BtfError> {
        match self.param_index_here(func, param) {
            Err(BtfError::NoStruct { .. }) => self.module(module)?.param_index_here(func, param),
            other => other,
        }
    }

    fn param_index_here(&self, func: &str, param: &str) -> Result<u32, BtfError> {
        let malformed = |detail: String| BtfError::Malformed {
            what: func.to_string(),
            detail,
        };
        // NoStruct doubles as "no such function here", so the caller can try the module.
        let missing = || BtfError::NoStruct {
            strukt: format!("function {func}"),
        };
        let f = self
            .btf
            .ids_by_name(func)
            .into_iter()
            .filter_map(|id| self.btf.type_by_id(id).ok())
            .find(|t| t.kind == Kind::Func)
            .ok_or_else(missing)?;
        let proto = self
            .btf
            .type_by_id(f.size_or_type)
            .map_err(|e| malformed(e.to_string()))?;
        if proto.kind != Kind::FuncProto {
            return Err(malformed("its type is not a function prototype".into()));
        }
        for (i, (name_off, _)) in proto.params().enumerate() {
            if name_off == 0 {
                continue;
            }
            let name = self
                .btf
                .name(name_off)
                .map_err(|e| malformed(e.to_string()))?;
            if name == param {
                return u32::try_from(i).map_err(|e| malformed(e.to_string()));
            }
        }
        Err(BtfError::NoMember {
            strukt: format!("function {func}"),
            path: param.to_string(),
        })
    }

    /// Conntrack offsets: `(skb_nfct, ct_tuple_orig, ct_tuple_reply, ct_status)` and the layout of
    /// a tuple. `nf_conn` is looked up here, then in the nf_conntrack module's BTF.
    pub fn conntrack_layout(&self) -> Result<([u32; 4], CtTupleLayout), BtfError> {
        let nfct = self.member_offset("sk_buff", "_nfct")?;
        let local = self.find_struct("nf_conn").map(|_| ());
        let module;
        let ct: &KernelBtf = if let Ok(()) = local {
            self
        } else {
            module = self.module("nf_conntrack")?;
            &module
        };
        let tuplehash = ct.member_offset("nf_conn", "tuplehash")?;
        let tuple_in_hash = ct.member_offset("nf_conntrack_tuple_hash", "tuple")?;
        let hash_size = ct.struct_size("nf_conntrack_tuple_hash")?;
        let status = ct.member_offset("nf_conn", "status")?;
        let orig = tuplehash + tuple_in_hash;
        let tuple = CtTupleLayout {
            src_addr: ct.member_offset("nf_conntrack_tuple", "src.u3")?,
            src_port: ct.member_offset("nf_conntrack_tuple", "src.u.all")?,
            src_l3num: ct.member_offset("nf_conntrack_tuple", "src.l3num")?,
            dst_addr: ct.member_offset("nf_conntrack_tuple", "dst.u3")?,
            dst_port: ct.member_offset("nf_conntrack_tuple", "dst.u.all")?,
            dst_protonum: ct.member_offset("nf_conntrack_tuple", "dst.protonum")?,
        };
        Ok(([nfct, orig, orig + hash_size, status], tuple))
    }

    /// Byte offset of the dotted member `path` inside `struct strukt`, e.g.
    /// `member_offset("sock", "__sk_common.skc_net")`.
    ///
    /// Members of anonymous structs/unions are found as if they were direct members (as in C), and
    /// typedefs and qualifiers are followed when descending into a named member.
    pub fn member_offset(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let mut current = self.find_struct(strukt)?;
        let mut bits: u64 = 0;
        let mut consumed = 0; // bytes of `path` resolved so far, for error messages
        let mut components = path.split('.').peekable();
        while let Some(name) = components.next() {
            consumed += name.len();
            let walked = &path[..consumed];
            consumed += 1;
            let no_member = || BtfError::NoMember {
                strukt: strukt.to_string(),
                path: walked.to_string(),
            };
            if name.is_empty() {
                return Err(no_member());
            }
            let (rel_bits, member) = self.find_member(&current, name, 0)?.ok_or_else(no_member)?;
            if member.bitfield_bits != 0 {
                return Err(BtfError::Bitfield {
                    strukt: strukt.to_string(),
                    path: walked.to_string(),
                    bit_offset: (bits + rel_bits) as u32,
                    bits: member.bitfield_bits,
                });
            }
            bits += rel_bits;
            if components.peek().is_some() {
                let ty = self.peel(member.type_id, walked)?;
                if !matches!(ty.kind, Kind::Struct | Kind::Union) {
                    return Err(BtfError::NotComposite {
                        strukt: strukt.to_string(),
                        path: walked.to_string(),
                        kind: ty.kind.name(),
                    });
                }
                current = ty;
            }
        }
        // Old-style (kind_flag 0) BTF encodes bitfields in the int type, not the member; an
        // unaligned bit offset is the tell-tale there.
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Bitfield {
                strukt: strukt.to_string(),
                path: path.to_string(),
                bit_offset: bits as u32,
                bits: 0,
            });
        }
        u32::try_from(bits / 8).map_err(|_| BtfError::Malformed {
            what: format!("{strukt}.{path}"),
            detail: format!("offset of {bits} bits overflows"),
        })
    }

    /// Offsets of every kernel field the eBPF programs read, plus one line per field that could
    /// not be resolved saying what is missing and what netlat loses without it.
    pub fn kernel_layout(&self) -> (KernelLayout, Vec<String>) {
        let mut layout = KernelLayout::default();
        let mut missing = Vec::new();
        let wanted: [(&mut u32, &str, &str, &str); 9] = [
            (
                &mut layout.sock_net,
                "sock",
                "__sk_common.skc_net",
                "netns of sockets unknown (connection events report netns 0)",
            ),
            (
                &mut layout.net_inum,
                "net",
                "ns.inum",
                "netns inode numbers unknown (all events report netns 0)",
            ),
            (
                &mut layout.skb_dev,
                "sk_buff",
                "dev",
                "device of dropped packets unknown (drops report ifindex 0 and no device netns)",
            ),
            (
                &mut layout.skb_sk,
                "sk_buff",
                "sk",
                "socket of dropped packets unknown (device-less drops report netns 0)",
            ),
            (
                &mut layout.skb_head,
                "sk_buff",
                "head",
                "packet buffer of dropped packets unknown (no header bytes captured)",
            ),
            (
                &mut layout.skb_network_header,
                "sk_buff",
                "network_header",
                "network header of dropped packets unknown (no header bytes captured)",
            ),
            (
                &mut layout.skb_len,
                "sk_buff",
                "len",
                "length of dropped packets unknown (reported as 0)",
            ),
            (
                &mut layout.dev_net,
                "net_device",
                "nd_net",
                "netns of devices unknown (drops take netns from the socket only)",
            ),
            (
                &mut layout.dev_ifindex,
                "net_device",
                "ifindex",
                "interface of dropped packets unknown (drops report ifindex 0)",
            ),
        ];
        for (slot, strukt, path, cost) in wanted {
            match self.member_offset(strukt, path) {
                Ok(off) if off != ABSENT => *slot = off,
                Ok(_) => missing.push(format!("{cost}: {strukt}.{path} offset out of range")),
                Err(e) => missing.push(format!("{cost}: {e}")),
            }
        }
        match self.member_offset("sock", "__sk_common.skc_family") {
            Ok(off) => layout.sock_family = off,
            Err(e) => missing.push(format!(
                "socket family unknown on kernels < 5.16 (SYN retransmits of them lost): {e}"
            )),
        }
        match self.conntrack_layout() {
            Ok(([nfct, orig, reply, status], _)) => {
                layout.skb_nfct = nfct;
                layout.ct_tuple_orig = orig;
                layout.ct_tuple_reply = reply;
                layout.ct_status = status;
            }
            Err(e) => missing.push(format!(
                "conntrack entries of dropped packets unknown (no pre-NAT tuple): {e}"
            )),
        }
        (layout, missing)
    }

    /// The struct or union named `name` (also through a typedef, e.g. `possible_net_t`).
    fn find_struct(&self, name: &str) -> Result<Type<'_>, BtfError> {
        let mut empty = None;
        for id in self.btf.ids_by_name(name) {
            let Ok(ty) = self.btf.type_by_id(id) else {
                continue;
            };
            let ty = match ty.kind {
                Kind::Typedef => self.peel(ty.size_or_type, name)?,
                _ => ty,
            };
            if matches!(ty.kind, Kind::Struct | Kind::Union) {
                // Prefer a definition with members over an empty one of the same name.
                if ty.vlen != 0 {
                    return Ok(ty);
                }
                empty.get_or_insert(ty);
            }
        }
        empty.ok_or_else(|| BtfError::NoStruct {
            strukt: name.to_string(),
        })
    }

    /// Find member `name` in `s`, descending into anonymous struct/union members; returns its bit
    /// offset relative to `s`.
    fn find_member(
        &self,
        s: &Type<'_>,
        name: &str,
        depth: usize,
    ) -> Result<Option<(u64, Member)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::Malformed {
                what: name.to_string(),
                detail: "anonymous members nested too deep".to_string(),
            });
        }
        for m in s.members() {
            // Name offset 0 is the empty string: an anonymous member.
            if m.name_off != 0 {
                let member_name = self.btf.name(m.name_off).map_err(|e| BtfError::Malformed {
                    what: name.to_string(),
                    detail: e.to_string(),
                })?;
                if member_name == name {
                    return Ok(Some((u64::from(m.bit_offset), m)));
                }
                continue;
            }
            let inner = self.peel(m.type_id, name)?;
            if !matches!(inner.kind, Kind::Struct | Kind::Union) {
                continue;
            }
            if let Some((off, found)) = self.find_member(&inner, name, depth + 1)? {
                return Ok(Some((u64::from(m.bit_offset) + off, found)));
            }
        }
        Ok(None)
    }

    /// The type with id `id`, with typedefs, qualifiers and type tags stripped.
    fn peel(&self, id: u32, what: &str) -> Result<Type<'_>, BtfError> {
        let malformed = |detail: String| BtfError::Malformed {
            what: what.to_string(),
            detail,
        };
        let mut cur = self
            .btf
            .type_by_id(id)
            .map_err(|e| malformed(e.to_string()))?;
        for _ in 0..MAX_DEPTH {
            match cur.kind {
                Kind::Typedef | Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                    cur = self
                        .btf
                        .type_by_id(cur.size_or_type)
                        .map_err(|e| malformed(e.to_string()))?;
                }
                _ => return Ok(cur),
            }
        }
        Err(malformed("typedef/qualifier chain too long".to_string()))
    }
}

/// The whole file at `path`; a missing one is [`BtfError::NoBtf`].
fn read(path: &Path) -> Result<Vec<u8>, BtfError> {
    fs::read(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            BtfError::NoBtf {
                path: path.to_path_buf(),
            }
        } else {
            BtfError::Read {
                path: path.to_path_buf(),
                source: ReadError::Io(e),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::reader::tests::Builder;
    use super::*;

    /// Live kernel BTF, or `None` (with a note) on machines without it.
    fn live() -> Option<KernelBtf> {
        match KernelBtf::from_sys() {
            Ok(k) => Some(k),
            Err(BtfError::NoBtf { path }) => {
                println!("skipping: {} does not exist", path.display());
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn live_rule_table_prototypes() {
        let Some(k) = live() else { return };
        // The kernel's own function prototypes: ipt_do_table(priv, skb, state) since 5.16 (the
        // host is 6.18), and nft_pktinfo.skb is the first member.
        match k.param_index("ip_tables", "ipt_do_table", "skb") {
            Ok(i) => assert_eq!(i, 1),
            Err(e) => println!("skipping ipt_do_table: {e}"),
        }
        assert!(matches!(
            k.param_index("ip_tables", "ipt_do_table", "no_such_param"),
            Err(BtfError::NoMember { .. } | BtfError::NoBtf { .. })
        ));
        assert!(
            k.param_index("none", "no_such_function_xyz", "skb")
                .is_err()
        );
        match k.nft_pktinfo_skb() {
            Ok(off) => assert_eq!(off, 0),
            Err(e) => println!("skipping nft_pktinfo: {e}"),
        }
    }

    #[test]
    fn live_sock_layout_follows_struct_sock_common() {
        let Some(k) = live() else { return };
        let l = k.sock_layout().expect("struct sock offsets");
        // include/net/sock.h: skc_daddr then skc_rcv_saddr (the addrpair), skc_dport then
        // skc_num (the portpair), all in __sk_common at the start of struct sock.
        assert_eq!(l.rcv_saddr, l.daddr + 4, "{l:?}");
        assert_eq!(l.num, l.dport + 2, "{l:?}");
        assert!(l.state > l.num && l.v6_daddr > l.state, "{l:?}");
        assert_eq!(l.v6_rcv_saddr, l.v6_daddr + 16, "{l:?}");
        // sk_protocol lies past __sk_common (which is well over 100 bytes).
        assert!(l.protocol > l.v6_rcv_saddr + 16, "{l:?}");
    }

    #[test]
    fn live_layout_is_complete_and_plausible() {
        let Some(k) = live() else { return };
        let (layout, missing) = k.kernel_layout();
        assert!(missing.is_empty(), "missing: {missing:#?}");
        let fields = [
            layout.sock_net,
            layout.net_inum,
            layout.skb_dev,
            layout.skb_sk,
            layout.skb_head,
            layout.skb_network_header,
            layout.skb_len,
            layout.dev_net,
            layout.dev_ifindex,
            layout.skb_nfct,
            layout.ct_tuple_orig,
            layout.ct_tuple_reply,
            layout.ct_status,
            layout.sock_family,
        ];
        assert!(fields.iter().all(|&f| f != ABSENT), "{layout:?}");
        // Pointers are 8-aligned on every 64-bit kernel netlat supports.
        for ptr in [
            layout.skb_dev,
            layout.skb_sk,
            layout.skb_head,
            layout.sock_net,
        ] {
            assert_eq!(ptr % 8, 0, "{layout:?}");
        }
        assert_eq!(layout.skb_network_header % 2, 0, "{layout:?}");
    }

    #[test]
    fn live_offsets_match_pahole_on_6_18() {
        let Some(k) = live() else { return };
        // The expected values come from `pahole -C <struct> /sys/kernel/btf/vmlinux` on the lab's
        // 6.18 kernel; other releases and configs legitimately differ.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        if !release.starts_with("6.18") {
            println!(
                "skipping exact offsets: kernel {} is not 6.18",
                release.trim()
            );
            return;
        }
        let expect = [
            ("sk_buff", "dev", 16),
            ("sk_buff", "sk", 24),
            ("sk_buff", "len", 112),
            ("sk_buff", "network_header", 180),
            ("sk_buff", "head", 192),
            ("sock", "__sk_common.skc_net", 48),
            ("sock", "__sk_common.skc_net.net", 48),
            ("sock_common", "skc_net", 48),
            ("net", "ns", 152),
            ("net", "ns.inum", 176),
            ("ns_common", "inum", 24),
            ("net_device", "ifindex", 224),
            ("net_device", "nd_net", 264),
            ("possible_net_t", "net", 0),
        ];
        for (s, p, off) in expect {
            assert_eq!(k.member_offset(s, p).unwrap(), off, "{s}.{p}");
        }
        let (layout, _) = k.kernel_layout();
        assert_eq!(
            (
                layout.sock_net,
                layout.net_inum,
                layout.dev_net,
                layout.dev_ifindex
            ),
            (48, 176, 264, 224)
        );
        assert_eq!(
            (
                layout.skb_dev,
                layout.skb_sk,
                layout.skb_head,
                layout.skb_network_header,
                layout.skb_len
            ),
            (16, 24, 192, 180, 112)
        );
    }

    #[test]
    fn live_errors() {
        let Some(k) = live() else { return };
        match k.member_offset("sk_buff", "no_such_member") {
            Err(BtfError::NoMember { strukt, path }) => {
                assert_eq!(
                    (strukt.as_str(), path.as_str()),
                    ("sk_buff", "no_such_member")
                );
            }
            other => panic!("{other:?}"),
        }
        // The path names the first component that is missing.
        match k.member_offset("sock", "__sk_common.nope.deeper") {
            Err(BtfError::NoMember { path, .. }) => assert_eq!(path, "__sk_common.nope"),
            other => panic!("{other:?}"),
        }
        // `cloned` is a direct bitfield; `pkt_type` is one inside anonymous unions/structs.
        match k.member_offset("sk_buff", "cloned") {
            Err(BtfError::Bitfield { path, bits, .. }) => {
                assert_eq!((path.as_str(), bits), ("cloned", 1));
            }
            other => panic!("{other:?}"),
        }
        let err = k.member_offset("sk_buff", "pkt_type").unwrap_err();
        assert!(matches!(err, BtfError::Bitfield { bits: 3, .. }), "{err:?}");
        assert!(err.to_string().contains("sk_buff.pkt_type"), "{err}");
        // Pointers are not followed: that would need a second probe read.
        let err = k.member_offset("sk_buff", "sk.__sk_common").unwrap_err();
        assert!(
            matches!(err, BtfError::NotComposite { kind: "ptr", .. }),
            "{err:?}"
        );
        let err = k.member_offset("no_such_struct_xyz", "a").unwrap_err();
        assert!(matches!(err, BtfError::NoStruct { .. }), "{err:?}");
    }

    #[test]
    fn missing_file_is_no_btf() {
        let path = "/nonexistent/netlat-test/vmlinux";
        let err = KernelBtf::from_file(path).unwrap_err();
        match &err {
            BtfError::NoBtf { path: p } => assert_eq!(p, Path::new(path)),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(path), "{err}");
    }

    #[test]
    fn garbage_file_is_read_error() {
        let path = std::env::temp_dir().join(format!("netlat-btf-garbage-{}", std::process::id()));
        std::fs::write(&path, b"definitely not BTF").unwrap();
        let err = KernelBtf::from_file(&path).unwrap_err();
        std::fs::remove_file(&path).ok();
        assert!(matches!(err, BtfError::Read { .. }), "{err:?}");
    }

    /// Parsed BTF written by the test builder, so the resolver's corner cases are tested on
    /// every machine, not only ones that ship kernel BTF.
    fn kernel(b: &Builder) -> KernelBtf {
        KernelBtf::from_bytes(b.bytes()).expect("synthetic BTF parses")
    }

    /// Mimics the kernel shapes netlat relies on:
    /// ```c
    /// typedef struct { struct net *net; } possible_net_t;       // ids 3, 4
    /// struct inner { u32 pad; const possible_net_t pnet; };     // at 8
    /// struct outer {                                            // size 64
    ///     struct { u64 a; union { u64 dev; u64 scratch; }; };   // dev at 8
    ///     struct inner in;                                      // at 16
    ///     u8 flag:3;                                            // bits 192..195
    ///     u8 more:5;
    ///     union { struct { u16 x; u16 nh; } hdrs; struct { u16 y; u16 nh2; }; }; // at 26
    ///     struct outer *next;                                   // at 32
    /// };
    /// ```
    fn synthetic() -> KernelBtf {
        kernel(&synthetic_builder())
    }

    fn synthetic_builder() -> Builder {
        let mut b = Builder::new();
        let u64_t = b.int("u64", 8); // 1
        let u32_t = b.int("u32", 4); // 2
        let net = b.composite(false, "net", 8, &[("x", u64_t, 0, 0)]); // 3
        let net_ptr = b.ptr(net); // 4
        let anon_pnet = b.composite(false, "", 8, &[("net", net_ptr, 0, 0)]); // 5
        let pnet = b.typedef("possible_net_t", anon_pnet); // 6
        let cpnet = b.konst(pnet); // 7
        let inner = b.composite(
            false,
            "inner",
            16,
            &[("pad", u32_t, 0, 0), ("pnet", cpnet, 64, 0)],
        ); // 8
        let u8_t = b.int("u8", 1); // 9
        let u16_t = b.int("u16", 2); // 10
        let dev_union = b.composite(
            true,
            "",
            8,
            &[("dev", u64_t, 0, 0), ("scratch", u64_t, 0, 0)],
        ); // 11
        let head = b.composite(false, "", 16, &[("a", u64_t, 0, 0), ("", dev_union, 64, 0)]); // 12
        let hdrs = b.composite(false, "", 4, &[("x", u16_t, 0, 0), ("nh", u16_t, 16, 0)]); // 13
        let hdrs2 = b.composite(false, "", 4, &[("y", u16_t, 0, 0), ("nh2", u16_t, 16, 0)]); // 14
        let hdr_union = b.composite(true, "", 4, &[("hdrs", hdrs, 0, 0), ("", hdrs2, 0, 0)]); // 15
        let outer_ptr = b.ptr(17); // 16
        b.composite(
            false,
            "outer",
            40,
            &[
                ("", head, 0, 0),
                ("in", inner, 128, 0),
                ("flag", u8_t, 192, 3),
                ("more", u8_t, 195, 5),
                ("", hdr_union, 208, 0),
                ("next", outer_ptr, 256, 0),
            ],
        ); // 17
        b
    }

    #[test]
    fn synthetic_resolves_through_anonymous_members_and_typedefs() {
        let k = synthetic();
        let cases = [
            ("outer", "a", 0),
            ("outer", "dev", 8),
            ("outer", "scratch", 8),
            ("outer", "in", 16),
            ("outer", "in.pad", 16),
            ("outer", "in.pnet", 24),
            // through `const possible_net_t` to the anonymous struct behind the typedef
            ("outer", "in.pnet.net", 24),
            ("outer", "hdrs.nh", 28),
            ("outer", "nh2", 28),
            ("outer", "next", 32),
            ("possible_net_t", "net", 0),
            ("inner", "pnet.net", 8),
        ];
        for (s, p, off) in cases {
            assert_eq!(k.member_offset(s, p).unwrap(), off, "{s}.{p}");
        }
    }

    #[test]
    fn synthetic_errors() {
        let k = synthetic();
        let err = k.member_offset("outer", "more").unwrap_err();
        match &err {
            BtfError::Bitfield {
                strukt,
                path,
                bit_offset,
                bits,
            } => assert_eq!(
                (strukt.as_str(), path.as_str(), *bit_offset, *bits),
                ("outer", "more", 195, 5)
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "outer.more is a 5-bit bitfield at bit offset 195, not addressable"
        );
        assert!(matches!(
            k.member_offset("outer", "flag"),
            Err(BtfError::Bitfield { bits: 3, .. })
        ));
        // Members of a named member are not in the outer scope (only anonymous ones are).
        match k.member_offset("outer", "nh") {
            Err(BtfError::NoMember { strukt, path }) => {
                assert_eq!((strukt.as_str(), path.as_str()), ("outer", "nh"));
            }
            other => panic!("{other:?}"),
        }
        let err = k.member_offset("outer", "in.missing").unwrap_err();
        assert_eq!(err.to_string(), "outer.in.missing not in BTF");
        assert!(matches!(
            k.member_offset("outer", ""),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            k.member_offset("outer", "in..pad"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            k.member_offset("outer", "next.a"),
            Err(BtfError::NotComposite { kind: "ptr", .. })
        ));
        assert!(matches!(
            k.member_offset("outer", "a.b"),
            Err(BtfError::NotComposite { kind: "int", .. })
        ));
        assert!(matches!(
            k.member_offset("sk_buff", "len"),
            Err(BtfError::NoStruct { .. })
        ));
    }

    #[test]
    fn synthetic_layout_reports_every_missing_field() {
        let (layout, missing) = synthetic().kernel_layout();
        assert_eq!(layout, KernelLayout::default());
        assert_eq!(missing.len(), 11, "{missing:#?}");
        assert!(
            missing
                .iter()
                .any(|m| m.starts_with("netns of sockets unknown")
                    && m.ends_with("struct sock not in BTF")),
            "{missing:#?}"
        );
    }

    #[test]
    fn synthetic_typedef_chains_old_bitfields_and_cycles() {
        let mut b = Builder::new();
        let u32_t = b.int("u32", 4); // 1
        let s = b.composite(false, "", 8, &[("lo", u32_t, 0, 0), ("hi", u32_t, 32, 0)]); // 2
        let t1 = b.typedef("t1", s); // 3
        let v = b.header("", 9, false, 0, t1); // 4 volatile
        let c = b.konst(v); // 5
        let tag = b.header("rcu", 18, false, 0, c); // 6 type tag
        let t2 = b.typedef("t2", tag); // 7
        // typedef loop: 8 -> 9 -> 8
        let loop_a = b.typedef("loop_a", 9); // 8
        b.typedef("loop_b", loop_a); // 9
        // A struct whose anonymous member is the struct itself.
        let selfish = b.composite(false, "selfish", 4, &[("", 10, 0, 0)]); // 10
        assert_eq!(selfish, 10);
        b.composite(
            false,
            "holder",
            32,
            &[
                ("w", t2, 0, 0),
                // Old-style bitfield: kind_flag 0, the width lives in the int type.
                ("odd", u32_t, 68, 0),
                ("l", loop_a, 96, 0),
                ("dangling", 999, 128, 0),
                ("", 10, 160, 0),
            ],
        ); // 11
        let k = kernel(&b);
        // Through typedef → type tag → const → volatile → typedef → anonymous struct.
        assert_eq!(k.member_offset("holder", "w.hi").unwrap(), 4);
        assert_eq!(k.member_offset("t2", "hi").unwrap(), 4);
        assert_eq!(k.struct_size("t2").unwrap(), 8);
        assert_eq!(k.struct_size("holder").unwrap(), 32);
        match k.member_offset("holder", "odd") {
            Err(BtfError::Bitfield {
                bit_offset: 68,
                bits: 0,
                path,
                ..
            }) => assert_eq!(path, "odd"),
            other => panic!("{other:?}"),
        }
        // Cycles and dangling ids are errors, not hangs or panics.
        assert!(matches!(
            k.member_offset("holder", "l.x"),
            Err(BtfError::Malformed { .. })
        ));
        assert!(matches!(
            k.find_struct("loop_a"),
            Err(BtfError::Malformed { .. })
        ));
        assert!(matches!(
            k.member_offset("holder", "dangling.x"),
            Err(BtfError::Malformed { .. })
        ));
        // `holder.nothing` searches the self-nesting anonymous member until the depth guard.
        let err = k.member_offset("holder", "nothing").unwrap_err();
        assert!(matches!(err, BtfError::Malformed { .. }), "{err:?}");
        assert!(err.to_string().contains("nested too deep"), "{err}");
    }

    #[test]
    fn synthetic_bad_member_name_is_malformed() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let id = b.composite(false, "s", 4, &[("a", int, 0, 0)]);
        let mut bytes = b.bytes();
        // The member's name offset (first word after the struct's 12-byte header) made huge.
        let at = 24 + 16 + 12;
        assert_eq!(id, 2);
        bytes[at..at + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let k = KernelBtf::from_bytes(bytes).unwrap();
        let err = k.member_offset("s", "a").unwrap_err();
        assert!(matches!(err, BtfError::Malformed { .. }), "{err:?}");
    }

    /// The conntrack, nf_tables and function shapes the loader asks for, with made-up offsets:
    /// ```c
    /// struct sk_buff { …; struct nf_conntrack *_nfct; /* at 104 */ };
    /// struct nf_conntrack_man { union nf_inet_addr u3; union { __be16 all; } u; u16 l3num; };
    /// struct nf_conntrack_tuple {
    ///     struct nf_conntrack_man src;                                      // 0..20
    ///     struct { union nf_inet_addr u3; union { __be16 all; } u; u8 protonum; u8 dir; } dst;
    /// };
    /// struct nf_conntrack_tuple_hash { struct hlist_nulls_node hnnode; struct nf_conntrack_tuple tuple; };
    /// struct nf_conn { u64 general; u64 lock; struct nf_conntrack_tuple_hash tuplehash[2]; …; unsigned long status; /* at 128 */ };
    /// struct nft_pktinfo { u64 pad; struct sk_buff *skb; };
    /// int ipt_do_table(void *priv, struct sk_buff *skb, const void *state);
    /// ```
    fn synthetic_netfilter() -> Builder {
        let mut b = Builder::new();
        let u8_t = b.int("u8", 1); // 1
        let u16_t = b.int("u16", 2); // 2
        let u64_t = b.int("u64", 8); // 3
        let addr = b.composite(true, "nf_inet_addr", 16, &[("all", u64_t, 0, 0)]); // 4
        let proto = b.composite(true, "", 2, &[("all", u16_t, 0, 0)]); // 5
        let man = b.composite(
            false,
            "nf_conntrack_man",
            20,
            &[
                ("u3", addr, 0, 0),
                ("u", proto, 128, 0),
                ("l3num", u16_t, 144, 0),
            ],
        ); // 6
        let dst = b.composite(
            false,
            "",
            20,
            &[
                ("u3", addr, 0, 0),
                ("u", proto, 128, 0),
                ("protonum", u8_t, 144, 0),
                ("dir", u8_t, 152, 0),
            ],
        ); // 7
        let tuple = b.composite(
            false,
            "nf_conntrack_tuple",
            40,
            &[("src", man, 0, 0), ("dst", dst, 160, 0)],
        ); // 8
        let node = b.composite(false, "hlist_nulls_node", 16, &[("next", u64_t, 0, 0)]); // 9
        let hash = b.composite(
            false,
            "nf_conntrack_tuple_hash",
            56,
            &[("hnnode", node, 0, 0), ("tuple", tuple, 128, 0)],
        ); // 10
        let pair = b.array(hash, u64_t, 2); // 11
        b.composite(
            false,
            "nf_conn",
            136,
            &[
                ("general", u64_t, 0, 0),
                ("lock", u64_t, 64, 0),
                ("tuplehash", pair, 128, 0),
                ("status", u64_t, 1024, 0),
            ],
        ); // 12
        let skb = b.composite(
            false,
            "sk_buff",
            232,
            &[("len", u64_t, 0, 0), ("_nfct", u64_t, 832, 0)],
        ); // 13
        let skb_ptr = b.ptr(skb); // 14
        b.composite(
            false,
            "nft_pktinfo",
            16,
            &[("pad", u64_t, 0, 0), ("skb", skb_ptr, 64, 0)],
        ); // 15
        b.func(
            "ipt_do_table",
            u64_t,
            &[
                ("priv", u64_t),
                ("skb", skb_ptr),
                ("", u64_t),
                ("state", u64_t),
            ],
        );
        b
    }

    #[test]
    fn synthetic_conntrack_pktinfo_and_parameters() {
        let k = kernel(&synthetic_netfilter());
        let (offsets, tuple) = k.conntrack_layout().unwrap();
        assert_eq!(offsets, [104, 32, 88, 128]);
        assert_eq!(tuple, netlat_core::testkit::CT_TUPLE_X86_64);
        assert_eq!(k.nft_pktinfo_skb().unwrap(), 8);
        assert_eq!(
            k.param_index("ip_tables", "ipt_do_table", "skb").unwrap(),
            1
        );
        // The unnamed parameter still counts.
        assert_eq!(
            k.param_index("ip_tables", "ipt_do_table", "state").unwrap(),
            3
        );
        match k.param_index("ip_tables", "ipt_do_table", "nope") {
            Err(BtfError::NoMember { strukt, path }) => {
                assert_eq!(
                    (strukt.as_str(), path.as_str()),
                    ("function ipt_do_table", "nope")
                );
            }
            other => panic!("{other:?}"),
        }
        // Not here, so the module's BTF is tried, which this machine does not have.
        match k.param_index("netlat_no_such_module", "no_such_function", "skb") {
            Err(BtfError::NoBtf { path }) => {
                assert_eq!(path, Path::new("/sys/kernel/btf/netlat_no_such_module"));
            }
            other => panic!("{other:?}"),
        }
        // A name that is a struct, not a function.
        assert!(matches!(
            k.param_index_here("sk_buff", "skb"),
            Err(BtfError::NoStruct { .. })
        ));
        let (layout, missing) = k.kernel_layout();
        assert_eq!(
            (
                layout.skb_nfct,
                layout.ct_tuple_orig,
                layout.ct_tuple_reply,
                layout.ct_status
            ),
            (104, 32, 88, 128)
        );
        assert_eq!(layout.skb_len, 0);
        assert!(
            !missing.iter().any(|m| m.contains("conntrack")),
            "{missing:#?}"
        );
        assert!(
            !missing.iter().any(|m| m.contains("length of dropped")),
            "{missing:#?}"
        );
    }

    #[test]
    fn synthetic_split_module_extends_its_base() {
        let base = synthetic_builder();
        let k = kernel(&base);
        let mut m = Builder::split(&base);
        // Module types refer to base ids (8 = struct inner, 1 = u64) and add their own.
        let ms = m.composite(
            false,
            "mod_conn",
            24,
            &[("head", 1, 0, 0), ("in", 8, 64, 0)],
        );
        m.func("mod_fn", 1, &[("ct", ms)]);
        let module = k.split_from_bytes(m.bytes()).unwrap();
        assert_eq!(module.member_offset("mod_conn", "in.pnet.net").unwrap(), 16);
        // Base structs are found through the module, module ones not through the base.
        assert_eq!(module.member_offset("outer", "dev").unwrap(), 8);
        assert!(matches!(
            k.member_offset("mod_conn", "head"),
            Err(BtfError::NoStruct { .. })
        ));
        assert_eq!(module.param_index_here("mod_fn", "ct").unwrap(), 0);
        // A module's BTF is no base for another.
        assert!(matches!(
            module.split_from_bytes(m.bytes()),
            Err(ReadError::SplitBase)
        ));
        assert!(matches!(
            module.module("nf_conntrack"),
            Err(BtfError::Read {
                source: ReadError::SplitBase,
                ..
            })
        ));
        assert!(matches!(
            k.split_from_bytes(b"garbage".to_vec()),
            Err(ReadError::Short { .. })
        ));
    }
}
