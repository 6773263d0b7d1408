//! Lookup tables built once at start-up and only read per event (the pwru model): drop-reason
//! names from the tracefs format file and kernel text symbols from /proc/kallsyms. With them a
//! raw [`event::Drop`] becomes a [`DropRecord`] the tracker and the printers understand.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::Deref,
    sync::Arc,
};

use crate::{
    FastHash, event,
    packet::{self, FiveTuple, Packet},
};

/// Byte offsets inside a captured `struct nf_conntrack_tuple` (the shell reads them from the
/// kernel's BTF).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CtTupleLayout {
    pub src_addr: u32,
    pub src_port: u32,
    pub src_l3num: u32,
    pub dst_addr: u32,
    pub dst_port: u32,
    pub dst_protonum: u32,
}

/// VXLAN UDP ports whose payload is decoded to the inner flow (IANA 4789, Linux/flannel 8472).
pub const VXLAN_PORTS: &[u16] = &[4789, 8472];

/// Kernel text symbols, sorted by address.
#[derive(Debug, Clone, Default)]
pub struct Kallsyms {
    syms: Vec<(u64, String)>,
    /// Already-resolved locations (from a recording), used before the table.
    exact: std::collections::HashMap<u64, String>,
}

impl Kallsyms {
    /// Parse /proc/kallsyms text. Only text symbols (`t`/`T`) are kept; module suffixes
    /// (`[nf_conntrack]`) are dropped. Lines that do not parse are skipped: the file is large and
    /// a partial table still resolves most locations.
    pub fn parse(text: &str) -> Kallsyms {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let ty = it.next()?;
                let name = it.next()?;
                (addr != 0 && matches!(ty, "t" | "T")).then(|| (addr, name.to_string()))
            })
            .collect();
        syms.sort_unstable();
        Kallsyms {
            syms,
            exact: std::collections::HashMap::default(),
        }
    }

    /// `[start, end)` of the text symbol `name`: from its address to the next symbol's.
    pub fn range(&self, name: &str) -> Option<[u64; 2]> {
        let i = self.syms.iter().position(|(_, n)| n == name)?;
        let start = self.syms[i].0;
        let end = self.syms[i + 1..]
            .iter()
            .map(|(a, _)| *a)
            .find(|a| *a > start)?;
        Some([start, end])
    }

    /// Remember how `addr` resolved (replays carry resolved locations, not the table).
    pub fn insert_resolved(&mut self, addr: u64, location: String) {
        self.exact.insert(addr, location);
    }

    /// Whether any addresses are known (kptr_restrict hides them from non-root).
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty() && self.exact.is_empty()
    }

    /// `name+0xoff` for a kernel text address, or the bare hex address when unknown.
    pub fn resolve(&self, addr: u64) -> String {
        if let Some(s) = self.exact.get(&addr) {
            return s.clone();
        }
        let idx = self.syms.partition_point(|(a, _)| *a <= addr);
        match idx.checked_sub(1).and_then(|i| self.syms.get(i)) {
            Some((base, name)) if addr - base < 1 << 20 => format!("{name}+{:#x}", addr - base),
            _ => format!("{addr:#x}"),
        }
    }
}

/// Names for the numbers the kernel reports.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Drop reason number → name (without the `SKB_DROP_REASON_` prefix), from the format file.
    pub reasons: BTreeMap<u64, String>,
    pub kallsyms: Kallsyms,
    /// Layout of a conntrack tuple, when BTF gave it.
    pub ct_tuple: Option<CtTupleLayout>,
    /// Reasons and locations already handed out, shared by every drop that carries them.
    pub interned: Interner,
    /// The (reason, location) names a drop's numbers gave, so a drop storm formats and hashes
    /// each site's text once, not per drop. Cleared when a symbol is added.
    pub resolved: Resolved,
}

/// A drop's location address, reason number and whether the kernel has reasons.
type DropSite = (u64, u32, bool);

/// [`DropSite`] → its (reason, location) names.
#[derive(Debug, Clone, Default)]
pub struct Resolved(RefCell<HashMap<DropSite, (Name, Name), FastHash>>);

impl Resolved {
    /// Forget every cached name (the symbol table changed).
    pub fn clear(&mut self) {
        self.0.get_mut().clear();
    }
}

/// A shared immutable string: drop reasons and locations come from a small set, and each of
/// 100 k attempts in flight keeps one, so they are shared rather than allocated per drop.
/// `Arc<String>`, not `Arc<str>`: a thin pointer, 8 bytes per field. Hashes as the text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<String>);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(Arc::new(s.to_string()))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name(Arc::new(s))
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Distinct names kept at most: kernel drop sites are a few hundred, so this is only reached
/// by garbage addresses (each its own hex string), which are then not shared.
const MAX_INTERNED: usize = 4096;

/// The table behind [`Name`] sharing. Interior mutability so that enriching a drop stays a
/// read of [`Names`] (it is filled as drops arrive, on the event loop's one thread).
#[derive(Debug, Clone, Default)]
pub struct Interner(RefCell<HashSet<Name>>);

impl Interner {
    pub fn intern(&self, s: &str) -> Name {
        let mut set = self.0.borrow_mut();
        if let Some(n) = set.get(s) {
            return n.clone();
        }
        let n = Name::from(s);
        if set.len() < MAX_INTERNED {
            set.insert(n.clone());
        }
        n
    }
}

/// conntrack status bits (include/uapi/linux/netfilter/nf_conntrack_common.h, stable ABI).
pub const IPS_CONFIRMED: u32 = 1 << 3;
pub const IPS_SRC_NAT: u32 = 1 << 4;
pub const IPS_DST_NAT: u32 = 1 << 5;

/// The conntrack entry of a dropped packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtInfo {
    pub status: u32,
    /// ORIGINAL direction: the tuple as the client sent it, before NAT.
    pub orig: FiveTuple,
    /// REPLY direction: its destination is the address the packet was NATed to.
    pub reply: FiveTuple,
}

impl CtInfo {
    pub fn confirmed(&self) -> bool {
        self.status & IPS_CONFIRMED != 0
    }
    pub fn src_nat(&self) -> bool {
        self.status & IPS_SRC_NAT != 0
    }
    /// The source the packet leaves with after SNAT (the reply tuple's destination).
    pub fn nat_source(&self) -> SocketAddr {
        self.reply.dst
    }
}

/// Decode one captured `nf_conntrack_tuple`; `None` when an offset falls outside the capture
/// or the family is unknown.
pub fn decode_ct_tuple(raw: &[u8], l: &CtTupleLayout) -> Option<FiveTuple> {
    let at = |off: u32, n: usize| raw.get(off as usize..off as usize + n);
    let l3 = u16::from_ne_bytes(at(l.src_l3num, 2)?.try_into().ok()?);
    let ip = |off: u32| -> Option<IpAddr> {
        let b = at(off, 16)?;
        match l3 {
            2 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            10 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
            _ => None,
        }
    };
    let port = |off: u32| -> Option<u16> { Some(u16::from_be_bytes(at(off, 2)?.try_into().ok()?)) };
    Some(FiveTuple {
        proto: *at(l.dst_protonum, 1)?.first()?,
        src: SocketAddr::new(ip(l.src_addr)?, port(l.src_port)?),
        dst: SocketAddr::new(ip(l.dst_addr)?, port(l.dst_port)?),
    })
}

/// Before 5.17 kfree_skb has no reason; these functions' frees are the drops netlat ships
/// then, with the reason each one implies (netfilter hooks drop in nf_hook_slow; the UDP
/// receive path frees packets whose checksum failed).
pub const LOCATION_REASONS: &[(&str, &str)] = &[
    ("nf_hook_slow", "NETFILTER_DROP"),
    ("udp_queue_rcv_one_skb", "UDP_CSUM"),
    ("udpv6_queue_rcv_one_skb", "UDP_CSUM"),
    ("__udp4_lib_rcv", "UDP_CSUM"),
    ("__udp6_lib_rcv", "UDP_CSUM"),
];

impl Names {
    pub fn reason(&self, r: u32, has_reasons: bool) -> String {
        if !has_reasons {
            return "UNKNOWN (kernel has no drop reasons)".to_string();
        }
        self.reasons
            .get(&u64::from(r))
            .cloned()
            .unwrap_or_else(|| format!("REASON_{r}"))
    }

    /// Number of a reason by name, if this kernel has it.
    pub fn reason_number(&self, name: &str) -> Option<u32> {
        self.reasons
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .and_then(|(v, _)| u32::try_from(*v).ok())
    }
}

/// A drop with its names resolved and its packet decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRecord {
    pub ts_ns: u64,
    pub cpu: u32,
    pub netns: u32,
    pub ifindex: u32,
    pub reason: Name,
    /// `function+0xoff` of the code that freed the skb.
    pub location: Name,
    pub len: u32,
    /// Decoded headers; `None` when the capture did not decode (kept for counting).
    pub packet: Option<Packet>,
    /// The packet's conntrack entry, when it had one and BTF told how to read it. Boxed: it is
    /// 140 bytes and most drops have none.
    pub ct: Option<Box<CtInfo>>,
    /// How the conntrack counters of the drop's netns and CPU moved around it (filled by the
    /// shell, which can read them, for drops where they matter).
    pub counters: Option<CounterEvidence>,
    /// The hook function that returned NF_DROP for this skb, when a kretprobe saw it.
    pub hook: Option<&'static str>,
    /// For IPVS drops: the real server of the connection IPVS expired just before.
    pub ipvs_dest: Option<IpvsDest>,
}

/// State of an IPVS real server when its connection was expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IpvsDest {
    pub weight: Option<u32>,
    /// `IP_VS_DEST_F_AVAILABLE`.
    pub available: Option<bool>,
}

/// Every name [`hook_name`] gives.
pub const HOOK_NAMES: [&str; 4] = ["ipvs", "conntrack-confirm", "nft_do_chain", "ipt_do_table"];

/// Names of `netlat_common::hook` ids.
pub fn hook_name(id: u32) -> Option<&'static str> {
    match id {
        netlat_common::hook::IPVS => Some(HOOK_NAMES[0]),
        netlat_common::hook::CONNTRACK_CONFIRM => Some(HOOK_NAMES[1]),
        netlat_common::hook::NFT_CHAIN => Some(HOOK_NAMES[2]),
        netlat_common::hook::IPT_TABLE => Some(HOOK_NAMES[3]),
        _ => None,
    }
}

/// Increase of the per-CPU conntrack counters attributed to one drop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CounterEvidence {
    pub insert_failed: u64,
    pub drop: u64,
}

impl DropRecord {
    /// Function part of `location` (`nft_do_chain+0x46f` → `nft_do_chain`).
    pub fn function(&self) -> &str {
        self.location
            .split('+')
            .next()
            .unwrap_or(self.location.as_str())
    }
}

/// Resolve names and decode the packet of a raw drop.
pub fn enrich(d: &event::Drop<'_>, names: &Names, has_reasons: bool) -> DropRecord {
    let key = (d.location, d.reason, has_reasons);
    let cached = names.resolved.0.borrow().get(&key).cloned();
    let (reason, location) = cached.unwrap_or_else(|| {
        let named = drop_names(d, names, has_reasons);
        let mut seen = names.resolved.0.borrow_mut();
        // Bounded like the interner: garbage addresses past it are named each time.
        if seen.len() < MAX_INTERNED {
            seen.insert(key, named.clone());
        }
        named
    });
    DropRecord {
        ts_ns: d.ts_ns,
        cpu: d.cpu,
        netns: d.netns,
        ifindex: d.ifindex,
        reason,
        location,
        len: d.len,
        packet: packet::decode(d.protocol, d.data, VXLAN_PORTS).ok(),
        ct: match (&d.ct, &names.ct_tuple) {
            (Some(raw), Some(l)) => decode_ct_tuple(&raw.orig, l)
                .zip(decode_ct_tuple(&raw.reply, l))
                .map(|(orig, reply)| {
                    Box::new(CtInfo {
                        status: raw.status,
                        orig,
                        reply,
                    })
                }),
            _ => None,
        },
        counters: None,
        hook: None,
        ipvs_dest: None,
    }
}

/// The reason and location names of a drop, interned.
fn drop_names(d: &event::Drop<'_>, names: &Names, has_reasons: bool) -> (Name, Name) {
    let location = names.kallsyms.resolve(d.location);
    let reason = if has_reasons {
        names.reason(d.reason, true)
    } else {
        let func = location.split('+').next().unwrap_or_default();
        LOCATION_REASONS
            .iter()
            .find(|(f, _)| *f == func)
            .map_or_else(|| names.reason(0, false), |(_, r)| (*r).to_string())
    };
    (
        names.interned.intern(&reason),
        names.interned.intern(&location),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81000000 T _text
ffffffff81a00000 T nf_hook_slow
ffffffff81a00100 t nft_do_chain\t[nf_tables]
ffffffff81a00500 d some_data
0000000000000000 T hidden
garbage line
";

    #[test]
    fn resolves_function_and_offset() {
        let k = Kallsyms::parse(KALLSYMS);
        assert_eq!(k.resolve(0xffffffff81a0007d), "nf_hook_slow+0x7d");
        assert_eq!(k.resolve(0xffffffff81a0056f), "nft_do_chain+0x46f");
        assert_eq!(k.resolve(0x1000), "0x1000");
    }

    #[test]
    fn conntrack_tuple_decoding() {
        let l = crate::testkit::CT_TUPLE_X86_64;
        let mut raw = [0u8; 40];
        raw[..4].copy_from_slice(&[10, 244, 0, 11]);
        raw[16..18].copy_from_slice(&20000u16.to_be_bytes());
        raw[18..20].copy_from_slice(&2u16.to_ne_bytes());
        raw[20..24].copy_from_slice(&[172, 16, 0, 2]);
        raw[36..38].copy_from_slice(&8080u16.to_be_bytes());
        raw[38] = 6;
        let t = decode_ct_tuple(&raw, &l).unwrap();
        assert_eq!(t.to_string(), "tcp 10.244.0.11:20000 -> 172.16.0.2:8080");
        raw[18] = 99;
        assert_eq!(decode_ct_tuple(&raw, &l), None);
        assert_eq!(decode_ct_tuple(&raw[..30], &l), None);
    }

    #[test]
    fn ranges_and_reasons_from_locations() {
        let k = Kallsyms::parse(KALLSYMS);
        assert_eq!(
            k.range("nf_hook_slow"),
            Some([0xffffffff81a00000, 0xffffffff81a00100])
        );
        assert_eq!(k.range("missing"), None);
        let names = Names {
            kallsyms: k,
            ..Names::default()
        };
        let d = event::Drop {
            ts_ns: 1,
            cpu: 0,
            skbaddr: 0,
            location: 0xffffffff81a0007d,
            netns: 1,
            ifindex: 1,
            reason: 0,
            len: 0,
            protocol: 0x0800,
            data: &[],
            ct: None,
        };
        // A 5.10 kernel: the reason comes from where the skb was freed.
        assert_eq!(enrich(&d, &names, false).reason, "NETFILTER_DROP");
    }

    #[test]
    fn cached_drop_names_follow_the_kernel_mode_and_new_symbols() {
        let mut names = Names {
            kallsyms: Kallsyms::parse(KALLSYMS),
            ..Names::default()
        };
        names.reasons.insert(12, "NETFILTER_DROP".into());
        let d = event::Drop {
            ts_ns: 1,
            cpu: 0,
            skbaddr: 0,
            location: 0xffffffff81a0056f,
            netns: 1,
            ifindex: 1,
            reason: 12,
            len: 0,
            protocol: 0x0800,
            data: &[],
            ct: None,
        };
        let a = enrich(&d, &names, true);
        let b = enrich(&d, &names, true);
        assert_eq!(
            (a.reason.as_str(), a.location.as_str()),
            ("NETFILTER_DROP", "nft_do_chain+0x46f")
        );
        assert!(Arc::ptr_eq(&a.location.0, &b.location.0));
        // The same numbers without drop reasons name the reason from the location (none
        // known for nft_do_chain), not from the cached entry with reasons.
        let c = enrich(&d, &names, false);
        assert_eq!(c.reason, "UNKNOWN (kernel has no drop reasons)");
        let other = event::Drop {
            reason: 3,
            ..d.clone()
        };
        assert_eq!(enrich(&other, &names, true).reason, "REASON_3");
        // A symbol learnt later (a replay's) is used once the cache is cleared.
        names
            .kallsyms
            .insert_resolved(d.location, "nf_hook_slow+0x1".into());
        names.resolved.clear();
        assert_eq!(enrich(&d, &names, true).location, "nf_hook_slow+0x1");
    }

    #[test]
    fn names_are_shared_and_print_as_text() {
        let i = Interner::default();
        let a = i.intern("nft_do_chain+0x46f");
        let b = i.intern("nft_do_chain+0x46f");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, "nft_do_chain+0x46f");
        assert_eq!(a.to_string(), "nft_do_chain+0x46f");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"nft_do_chain+0x46f\"");
    }

    #[test]
    fn reason_names() {
        let mut n = Names::default();
        n.reasons.insert(12, "NETFILTER_DROP".into());
        assert_eq!(n.reason(12, true), "NETFILTER_DROP");
        assert_eq!(n.reason(99, true), "REASON_99");
        assert_eq!(n.reason_number("NETFILTER_DROP"), Some(12));
        assert!(n.reason(12, false).starts_with("UNKNOWN"));
    }
}
