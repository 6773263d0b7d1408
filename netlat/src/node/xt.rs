//! xtables: the NAT targets' binary info (shared by iptables-nft, whose rules carry it inside the
//! nft ruleset, and iptables-legacy), and the legacy `nat` tables read with getsockopt
//! (IPT_SO_GET_INFO / IPT_SO_GET_ENTRIES and the ip6tables twins), the only way to reach them.
//!
//! A legacy table is read only when /proc/net/ip_tables_names already lists it: asking the kernel
//! for a table that does not exist makes it load and instantiate `iptable_nat`, which registers
//! NAT hooks in the namespace and so changes its traffic.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use netlat_core::facts::NoEndpointAction;
use netlat_core::facts::{NatKind, NatRule};

use super::NodeError;
use super::nft::{
    NF_NAT_RANGE_MAP_IPS, NF_NAT_RANGE_PERSISTENT, NF_NAT_RANGE_PROTO_RANDOM,
    NF_NAT_RANGE_PROTO_RANDOM_FULLY, NF_NAT_RANGE_PROTO_SPECIFIED, NFPROTO_IPV4, NFPROTO_IPV6, Nat,
    nat_target, render_addr,
};
use super::nl::string;
use super::services::{Found, KUBE_EXTERNAL_SERVICES, KUBE_NODEPORTS, KUBE_SERVICES, ServiceMatch};

/// The built-in chains, by NF_INET_* hook number.
const HOOKS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
/// `struct xt_entry_match` / `xt_entry_target` header: size, name[29], revision.
const XT_HEADER: usize = 32;
/// IPT_SO_GET_INFO == IP6T_SO_GET_INFO, and the GET_ENTRIES twins.
const SO_GET_INFO: libc::c_int = 64;
const SO_GET_ENTRIES: libc::c_int = 65;
/// `struct ipt_getinfo`: name[32], valid_hooks, hook_entry[5], underflow[5], num_entries, size.
const GETINFO_LEN: usize = 84;
/// `struct ipt_get_entries` before its entries: name[32], size, padded to the u64 alignment of
/// the entries' counters.
const GET_ENTRIES_HEADER: usize = align(36, std::mem::align_of::<u64>());

/// IPT_INV_* / IP6T_INV_* bits of `invflags`.
const INV_VIA_IN: u8 = 0x01;
const INV_VIA_OUT: u8 = 0x02;
const INV_SRCIP: u8 = 0x08;
const INV_DSTIP: u8 = 0x10;
const INV_PROTO: u8 = 0x40;
/// XT_TCP_INV_DSTPT == XT_UDP_INV_DSTPT.
const INV_DSTPT: u8 = 0x02;

const fn align(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Which legacy stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The [`NatRule::backend`] name.
    pub(super) fn backend(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables-legacy",
            Family::Ipv6 => "ip6tables-legacy",
        }
    }

    fn names_file(self) -> &'static str {
        match self {
            Family::Ipv4 => "/proc/thread-self/net/ip_tables_names",
            Family::Ipv6 => "/proc/thread-self/net/ip6_tables_names",
        }
    }

    fn nfproto(self) -> u8 {
        match self {
            Family::Ipv4 => NFPROTO_IPV4,
            Family::Ipv6 => NFPROTO_IPV6,
        }
    }

    fn layout(self) -> Layout {
        match self {
            Family::Ipv4 => IPT_ENTRY,
            Family::Ipv6 => IP6T_ENTRY,
        }
    }
}

/// Offsets in `struct ipt_entry` / `struct ip6t_entry` (include/uapi/linux/netfilter_ipv{4,6}/).
#[derive(Debug, Clone, Copy)]
struct Layout {
    addr: usize,
    src: usize,
    dst: usize,
    smsk: usize,
    dmsk: usize,
    iniface: usize,
    outiface: usize,
    iniface_mask: usize,
    outiface_mask: usize,
    proto: usize,
    invflags: usize,
    target_offset: usize,
    next_offset: usize,
    /// sizeof the entry: where its matches start.
    size: usize,
}

/// `ipt_ip` is 84 bytes, then nfcache, target_offset, next_offset, comefrom and the counters.
const IPT_ENTRY: Layout = Layout {
    addr: 4,
    src: 0,
    dst: 4,
    smsk: 8,
    dmsk: 12,
    iniface: 16,
    outiface: 32,
    iniface_mask: 48,
    outiface_mask: 64,
    proto: 80,
    invflags: 83,
    target_offset: 88,
    next_offset: 90,
    size: 96 + 16,
};

/// `ip6t_ip6` is 136 bytes (133 padded to 4); comefrom ends at 148, the u64 counters follow.
const IP6T_ENTRY: Layout = Layout {
    addr: 16,
    src: 0,
    dst: 16,
    smsk: 32,
    dmsk: 48,
    iniface: 64,
    outiface: 80,
    iniface_mask: 96,
    outiface_mask: 112,
    proto: 128,
    invflags: 132,
    target_offset: 140,
    next_offset: 142,
    size: align(148, std::mem::align_of::<u64>()) + 16,
};

/// A legacy table: its user-defined chains, its NAT rules and what kube-proxy's rules say about
/// Services.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct LegacyTable {
    pub backend: &'static str,
    pub chains: Vec<String>,
    pub nat_rules: Vec<NatRule>,
    pub services: Vec<Found>,
}

/// Reads the legacy `nat` table of `family` in the calling thread's namespace; `None` when it
/// does not exist there (or legacy xtables is not in this kernel).
pub(super) fn read_legacy_nat(family: Family) -> io::Result<Option<LegacyTable>> {
    read_legacy(family, "nat")
}

/// Reads the legacy `table` (`nat` or `filter`) of `family`, as [`read_legacy_nat`].
pub(super) fn read_legacy(family: Family, table: &'static str) -> io::Result<Option<LegacyTable>> {
    let names = match std::fs::read_to_string(family.names_file()) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !names.lines().any(|l| l.trim() == table) {
        return Ok(None);
    }
    let (info, entries) = get_table(family, table)?;
    parse_entries(family, table, &info, &entries)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What IPT_SO_GET_INFO says about a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TableInfo {
    pub valid_hooks: u32,
    pub hook_entry: [u32; 5],
    pub size: u32,
}

fn ne_u32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn ne_u16(buf: &[u8], at: usize) -> u16 {
    buf.get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u16::from_ne_bytes)
}

fn get_table(family: Family, name: &str) -> io::Result<(TableInfo, Vec<u8>)> {
    let (domain, level) = match family {
        Family::Ipv4 => (libc::AF_INET, libc::IPPROTO_IP),
        Family::Ipv6 => (libc::AF_INET6, libc::IPPROTO_IPV6),
    };
    // The xtables getsockopts answer on any socket of the family, and a datagram socket needs
    // no CAP_NET_RAW (which `watch` drops after attach); the kernel checks CAP_NET_ADMIN.
    // SAFETY: socket(2) has no memory arguments; a non-negative result is a descriptor we own.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };

    // The table can be replaced between the two calls (EAGAIN): then ask again.
    let mut last = io::Error::from_raw_os_error(libc::EAGAIN);
    for _ in 0..3 {
        let mut info = [0u8; GETINFO_LEN];
        info[..name.len()].copy_from_slice(name.as_bytes());
        getsockopt(&socket, level, SO_GET_INFO, &mut info)?;
        let mut table = TableInfo {
            valid_hooks: ne_u32(&info, 32),
            size: ne_u32(&info, 80),
            ..TableInfo::default()
        };
        for (h, entry) in table.hook_entry.iter_mut().enumerate() {
            *entry = ne_u32(&info, 36 + 4 * h);
        }
        let mut buf = vec![0u8; GET_ENTRIES_HEADER + table.size as usize];
        buf[..name.len()].copy_from_slice(name.as_bytes());
        buf[32..36].copy_from_slice(&table.size.to_ne_bytes());
        match getsockopt(&socket, level, SO_GET_ENTRIES, &mut buf) {
            Ok(()) => return Ok((table, buf.split_off(GET_ENTRIES_HEADER))),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn getsockopt(
    socket: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    buf: &mut [u8],
) -> io::Result<()> {
    let mut len = libc::socklen_t::try_from(buf.len()).map_err(io::Error::other)?;
    // SAFETY: `buf` is valid and writable for `len` bytes, and `len` is a valid socklen_t.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Walks a table's entries (as IPT_SO_GET_ENTRIES returns them): user-defined chains start with
/// an `ERROR` target naming them, built-in chains start at the hook entry offsets.
pub(super) fn parse_entries(
    family: Family,
    table: &str,
    info: &TableInfo,
    entries: &[u8],
) -> Result<LegacyTable, NodeError> {
    let layout = family.layout();
    let truncated = |need: usize| NodeError::Truncated {
        what: "xtables entry",
        len: entries.len(),
        need,
    };
    let mut chains = Vec::new();
    let mut rules = Vec::new();
    let mut services = Vec::new();
    let mut chain = String::new();
    let mut off = 0usize;
    while off < entries.len() {
        let entry = entries.get(off..).unwrap_or_default();
        if entry.len() < layout.size {
            return Err(truncated(off + layout.size));
        }
        let target_offset = usize::from(ne_u16(entry, layout.target_offset));
        let next_offset = usize::from(ne_u16(entry, layout.next_offset));
        if target_offset < layout.size || target_offset + XT_HEADER > next_offset {
            return Err(NodeError::Malformed {
                what: "xtables entry",
                reason: format!("at {off}: target at {target_offset}, next at {next_offset}"),
            });
        }
        let entry = entry
            .get(..next_offset)
            .ok_or(truncated(off + next_offset))?;
        for (h, name) in HOOKS.iter().enumerate() {
            if info.valid_hooks & (1 << h) != 0 && info.hook_entry[h] as usize == off {
                chain = (*name).to_string();
            }
        }

        let target = &entry[target_offset..];
        let target_size = usize::from(ne_u16(target, 0)).clamp(XT_HEADER, target.len());
        let target_name = string(&target[2..31]);
        let revision = u32::from(target[31]);
        let data = &target[XT_HEADER..target_size];
        if KUBE_PROXY_CHAINS.contains(&(table, chain.as_str()))
            && let Some(found) = service_entry(family, &layout, entry, target_offset)
                .found_with(&target_name, data)
                .found(family.backend(), table, &chain)
        {
            services.push(found);
        }
        if target_name == "ERROR" {
            // The last entry is an ERROR target named ERROR: the table's end, not a chain.
            let name = string(data);
            if name != "ERROR" {
                chains.push(name.clone());
                chain = name;
            }
        } else if let Some(nat) = decode_nat_target(family.nfproto(), &target_name, revision, data)?
        {
            let mut text = format!("-A {chain}");
            render_ip(family, &layout, entry, &mut text);
            render_matches(&entry[layout.size..target_offset], &mut text);
            text.push(' ');
            text.push_str(&ipt_target_text(&target_name, &nat));
            rules.push(NatRule {
                backend: family.backend().into(),
                table: table.into(),
                chain: chain.clone(),
                kind: nat.kind,
                fully_random: nat.flags & NF_NAT_RANGE_PROTO_RANDOM_FULLY != 0,
                random: nat.flags & NF_NAT_RANGE_PROTO_RANDOM != 0,
                to: nat.to,
                text,
            });
        }
        off += next_offset;
    }
    Ok(LegacyTable {
        backend: family.backend(),
        chains,
        nat_rules: rules,
        services,
    })
}

/// kube-proxy's chains that name Services, by table.
const KUBE_PROXY_CHAINS: [(&str, &str); 4] = [
    ("nat", KUBE_SERVICES),
    ("nat", KUBE_NODEPORTS),
    ("filter", KUBE_SERVICES),
    ("filter", KUBE_EXTERNAL_SERVICES),
];

/// NF_DROP as a standard target's verdict (`-NF_DROP - 1`).
const STANDARD_DROP: i32 = -1;

/// What an entry of kube-proxy's chains matches: an exact destination, a protocol, and the
/// port and comment from its matches.
fn service_entry(family: Family, l: &Layout, entry: &[u8], target_offset: usize) -> ServiceMatch {
    let inv = entry[l.invflags];
    let mask = &entry[l.dmsk..l.dmsk + l.addr];
    let dst = &entry[l.dst..l.dst + l.addr];
    let mut m = ServiceMatch::default();
    if inv & INV_DSTIP == 0 && mask.iter().all(|b| *b == 0xff) {
        m.daddr = match family {
            Family::Ipv4 => <[u8; 4]>::try_from(dst).ok().map(std::convert::Into::into),
            Family::Ipv6 => <[u8; 16]>::try_from(dst).ok().map(std::convert::Into::into),
        };
    }
    let proto = ne_u16(entry, l.proto);
    if inv & INV_PROTO == 0 && proto != 0 {
        m.proto = u8::try_from(proto).ok();
    }
    each_match(&entry[l.size..target_offset], |name, data| {
        service_match(name, data, &mut m);
    });
    m
}

impl ServiceMatch {
    /// With the entry's target: DROP (a standard target with NF_DROP's verdict) or REJECT.
    fn found_with(mut self, target: &str, data: &[u8]) -> Self {
        match target {
            "" if data.len() >= 4 && ne_u32(data, 0) as i32 == STANDARD_DROP => {
                self.action = Some(NoEndpointAction::Drop);
            }
            "REJECT" => self.action = Some(NoEndpointAction::Reject),
            _ => {}
        }
        self
    }
}

/// What an xtables match says about a Service rule: `comment` its text, `tcp`/`udp`/`sctp`
/// a single destination port (host byte order in `xt_tcp`, `xt_udp` and `xt_sctp_info`).
pub(super) fn service_match(name: &str, info: &[u8], m: &mut ServiceMatch) {
    // The `invflags` byte of each match's info.
    let (proto, inv_at) = match name {
        "comment" => {
            m.comment = Some(string(info));
            return;
        }
        "tcp" => (6, 11),
        "udp" => (17, 8),
        "sctp" => (132, 8),
        _ => return,
    };
    let (min, max) = (ne_u16(info, 4), ne_u16(info, 6));
    let inverted = info.get(inv_at).is_none_or(|f| f & INV_DSTPT != 0);
    if info.len() >= 8 && min == max && !inverted {
        m.dport = Some(min);
        m.proto.get_or_insert(proto);
    }
}

/// Calls `f(name, data)` for each `xt_entry_match` in an entry's match area.
fn each_match(mut matches: &[u8], mut f: impl FnMut(&str, &[u8])) {
    while matches.len() >= XT_HEADER {
        let size = usize::from(ne_u16(matches, 0)).clamp(XT_HEADER, matches.len());
        f(&string(&matches[2..31]), &matches[XT_HEADER..size]);
        matches = &matches[size..];
    }
}

/// Decodes the info of a MASQUERADE or SNAT target; `None` for other targets.
///
/// IPv4 MASQUERADE and SNAT revision 0 carry `nf_nat_ipv4_multi_range_compat` (rangesize, then
/// flags, min_ip, max_ip, min and max port); IPv6 MASQUERADE and SNAT revisions 1 and 2 carry
/// `nf_nat_range`/`nf_nat_range2` (flags, min_addr, max_addr, min and max port). Flags are host
/// order, addresses and ports network order.
pub(super) fn decode_nat_target(
    family: u8,
    name: &str,
    revision: u32,
    info: &[u8],
) -> Result<Option<Nat>, NodeError> {
    let kind = match name {
        "MASQUERADE" => NatKind::Masquerade,
        "SNAT" => NatKind::Snat,
        _ => return Ok(None),
    };
    let compat = family != NFPROTO_IPV6 && (kind == NatKind::Masquerade || revision == 0);
    let (flags_at, min_at, max_at, ports_at, addr_len, need) = if compat {
        (4, 8, 12, 16, 4, 20)
    } else {
        (
            0,
            4,
            20,
            36,
            if family == NFPROTO_IPV6 { 16 } else { 4 },
            40,
        )
    };
    if info.len() < need {
        return Err(NodeError::Truncated {
            what: "xtables NAT target info",
            len: info.len(),
            need,
        });
    }
    let flags = ne_u32(info, flags_at);
    let addr_family = if addr_len == 16 {
        NFPROTO_IPV6
    } else {
        NFPROTO_IPV4
    };
    let (min, max) = if flags & NF_NAT_RANGE_MAP_IPS != 0 && kind == NatKind::Snat {
        (
            Some(render_addr(addr_family, &info[min_at..min_at + addr_len])),
            Some(render_addr(addr_family, &info[max_at..max_at + addr_len])),
        )
    } else {
        (None, None)
    };
    let ports = (flags & NF_NAT_RANGE_PROTO_SPECIFIED != 0).then(|| {
        let min = u16::from_be_bytes([info[ports_at], info[ports_at + 1]]);
        let max = u16::from_be_bytes([info[ports_at + 2], info[ports_at + 3]]);
        if min == max {
            min.to_string()
        } else {
            format!("{min}-{max}")
        }
    });
    Ok(Some(Nat {
        kind,
        flags,
        to: nat_target(addr_family, min, max, ports),
    }))
}

/// An xtables match inside an nft rule, as nft shows it.
pub(super) fn render_match_nft(name: &str, info: &[u8]) -> String {
    match name {
        "comment" => format!("comment {:?}", string(info)),
        _ => format!("xt match {name:?}"),
    }
}

/// The target in iptables-save syntax.
fn ipt_target_text(name: &str, nat: &Nat) -> String {
    let mut text = format!("-j {name}");
    if let Some(to) = &nat.to {
        match nat.kind {
            NatKind::Masquerade => {
                text.push_str(&format!(" --to-ports {}", to.trim_start_matches(':')));
            }
            NatKind::Snat => text.push_str(&format!(" --to-source {to}")),
        }
    }
    for (bit, flag) in [
        (NF_NAT_RANGE_PROTO_RANDOM, " --random"),
        (NF_NAT_RANGE_PROTO_RANDOM_FULLY, " --random-fully"),
        (NF_NAT_RANGE_PERSISTENT, " --persistent"),
    ] {
        if nat.flags & bit != 0 {
            text.push_str(flag);
        }
    }
    text
}

/// The entry's address, interface and protocol part in iptables-save syntax.
fn render_ip(family: Family, l: &Layout, entry: &[u8], text: &mut String) {
    let inv = entry[l.invflags];
    let not = |bit: u8| if inv & bit != 0 { " !" } else { "" };
    for (flag, addr, mask, bit) in [
        ("-s", l.src, l.smsk, INV_SRCIP),
        ("-d", l.dst, l.dmsk, INV_DSTIP),
    ] {
        let mask = &entry[mask..mask + l.addr];
        let bits: u32 = mask.iter().map(|b| b.count_ones()).sum();
        if bits > 0 {
            let addr = render_addr(family.nfproto(), &entry[addr..addr + l.addr]);
            text.push_str(&format!("{} {flag} {addr}/{bits}", not(bit)));
        }
    }
    for (flag, name, mask, bit) in [
        ("-i", l.iniface, l.iniface_mask, INV_VIA_IN),
        ("-o", l.outiface, l.outiface_mask, INV_VIA_OUT),
    ] {
        let name = string(&entry[name..name + 16]);
        if !name.is_empty() {
            // iptables masks the terminating NUL too, except for `eth+`, which keeps its `+` in
            // the name and masks only what comes before it.
            let masked = entry[mask..mask + 16]
                .iter()
                .take_while(|m| **m != 0)
                .count();
            let shown = if masked > name.len() {
                name
            } else {
                format!("{}+", name.trim_end_matches('+'))
            };
            text.push_str(&format!("{} {flag} {shown}", not(bit)));
        }
    }
    let proto = ne_u16(entry, l.proto);
    if proto != 0 {
        let name = match proto {
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            1 => "icmp".to_string(),
            p => p.to_string(),
        };
        text.push_str(&format!("{} -p {name}", not(INV_PROTO)));
    }
}

/// The entry's matches (`-m NAME`, with the comment's text).
fn render_matches(matches: &[u8], text: &mut String) {
    each_match(matches, |name, data| match name {
        "comment" => text.push_str(&format!(" -m comment --comment {:?}", string(data))),
        _ => text.push_str(&format!(" -m {name}")),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xt_header(size: usize, name: &str, rev: u8) -> Vec<u8> {
        let mut h = vec![0u8; XT_HEADER];
        h[..2].copy_from_slice(&(size as u16).to_ne_bytes());
        h[2..2 + name.len()].copy_from_slice(name.as_bytes());
        h[31] = rev;
        h
    }

    fn compat_info(flags: u32, min: [u8; 4], ports: (u16, u16)) -> Vec<u8> {
        let mut i = Vec::new();
        i.extend(1u32.to_ne_bytes());
        i.extend(flags.to_ne_bytes());
        i.extend(min);
        i.extend(min);
        i.extend(ports.0.to_be_bytes());
        i.extend(ports.1.to_be_bytes());
        i.extend([0u8; 4]); // padded to 8 like XT_ALIGN
        i
    }

    /// One ipt_entry with the given out-interface, optional comment match and target.
    fn entry(
        l: &Layout,
        out: &str,
        comment: Option<&str>,
        target: &str,
        rev: u8,
        data: &[u8],
    ) -> Vec<u8> {
        let mut e = vec![0u8; l.size];
        e[l.outiface..l.outiface + out.len()].copy_from_slice(out.as_bytes());
        for b in &mut e[l.outiface_mask..=(l.outiface_mask + out.len())] {
            *b = 0xff;
        }
        if let Some(c) = comment {
            let mut m = xt_header(XT_HEADER + 256, "comment", 0);
            let mut text = c.as_bytes().to_vec();
            text.resize(256, 0);
            m.extend(text);
            e.extend(m);
        }
        let target_offset = e.len();
        let size = XT_HEADER + align(data.len(), 8);
        e.extend(xt_header(size, target, rev));
        e.extend(data);
        e.resize(target_offset + size, 0);
        let next = e.len();
        e[l.target_offset..l.target_offset + 2]
            .copy_from_slice(&(target_offset as u16).to_ne_bytes());
        e[l.next_offset..l.next_offset + 2].copy_from_slice(&(next as u16).to_ne_bytes());
        e
    }

    fn error_entry(l: &Layout, name: &str) -> Vec<u8> {
        let mut data = name.as_bytes().to_vec();
        data.resize(32, 0);
        entry(l, "", None, "ERROR", 0, &data)
    }

    #[test]
    fn legacy_ipv4_table() {
        let l = IPT_ENTRY;
        let mut table = Vec::new();
        // POSTROUTING: MASQUERADE --random-fully out of eth0, then the policy.
        let post = table.len() as u32;
        table.extend(entry(
            &l,
            "eth0",
            Some("kubernetes service traffic requiring SNAT"),
            "MASQUERADE",
            0,
            &compat_info(NF_NAT_RANGE_PROTO_RANDOM_FULLY, [0; 4], (0, 0)),
        ));
        table.extend(entry(&l, "", None, "", 0, &[0u8; 8]));
        // A user chain with an SNAT --random to 10.1.1.1:2000-3000.
        table.extend(error_entry(&l, "KUBE-POSTROUTING"));
        table.extend(entry(
            &l,
            "",
            None,
            "SNAT",
            0,
            &compat_info(
                NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED | NF_NAT_RANGE_PROTO_RANDOM,
                [10, 1, 1, 1],
                (2000, 3000),
            ),
        ));
        table.extend(error_entry(&l, "ERROR"));
        let info = TableInfo {
            valid_hooks: 1 << 4,
            hook_entry: [0, 0, 0, 0, post],
            size: table.len() as u32,
        };
        let LegacyTable {
            chains,
            nat_rules: rules,
            ..
        } = parse_entries(Family::Ipv4, "nat", &info, &table).unwrap();
        assert_eq!(chains, ["KUBE-POSTROUTING"]);
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0],
            NatRule {
                backend: "iptables-legacy".into(),
                table: "nat".into(),
                chain: "POSTROUTING".into(),
                kind: NatKind::Masquerade,
                fully_random: true,
                random: false,
                to: None,
                text: "-A POSTROUTING -o eth0 -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".into(),
            }
        );
        assert_eq!(rules[1].chain, "KUBE-POSTROUTING");
        assert_eq!(rules[1].kind, NatKind::Snat);
        assert!(rules[1].random && !rules[1].fully_random);
        assert_eq!(rules[1].to.as_deref(), Some("10.1.1.1:2000-3000"));
        assert_eq!(
            rules[1].text,
            "-A KUBE-POSTROUTING -j SNAT --to-source 10.1.1.1:2000-3000 --random"
        );
    }

    #[test]
    fn legacy_kube_services_entry() {
        let l = IPT_ENTRY;
        // -d 10.96.0.10/32 -p tcp -m comment --comment C -m tcp --dport 53 -j KUBE-SVC-X
        // (a jump is a standard target with an empty name).
        let service = |dst: [u8; 4], mask: [u8; 4], dport: (u16, u16)| {
            let mut e = entry(
                &l,
                "",
                Some("kube-system/kube-dns:dns-tcp cluster IP"),
                "",
                0,
                &[0; 8],
            );
            e[l.dst..l.dst + 4].copy_from_slice(&dst);
            e[l.dmsk..l.dmsk + 4].copy_from_slice(&mask);
            e[l.proto..l.proto + 2].copy_from_slice(&6u16.to_ne_bytes());
            // Insert the tcp match (xt_tcp: spts, dpts, option, flg_mask, flg_cmp, invflags)
            // after the comment, moving the target.
            let target_offset = usize::from(ne_u16(&e, l.target_offset));
            let mut m = xt_header(XT_HEADER + 16, "tcp", 0);
            for port in [0u16, 0xffff, dport.0, dport.1] {
                m.extend(port.to_ne_bytes());
            }
            m.extend([0u8; 8]);
            e.splice(target_offset..target_offset, m.iter().copied());
            let (t, n) = (target_offset + m.len(), e.len());
            e[l.target_offset..l.target_offset + 2].copy_from_slice(&(t as u16).to_ne_bytes());
            e[l.next_offset..l.next_offset + 2].copy_from_slice(&(n as u16).to_ne_bytes());
            e
        };
        let mut table = error_entry(&l, KUBE_SERVICES);
        table.extend(service([10, 96, 0, 10], [0xff; 4], (53, 53)));
        // A /24 and a port range name no single Service port.
        table.extend(service([10, 97, 0, 0], [0xff, 0xff, 0xff, 0], (80, 80)));
        table.extend(service([10, 96, 0, 11], [0xff; 4], (80, 81)));
        table.extend(error_entry(&l, "KUBE-SVC-X"));
        // The same rule outside KUBE-SERVICES is not read as a Service.
        table.extend(service([10, 96, 0, 12], [0xff; 4], (53, 53)));
        table.extend(error_entry(&l, "ERROR"));
        let info = TableInfo {
            size: table.len() as u32,
            ..TableInfo::default()
        };
        let t = parse_entries(Family::Ipv4, "nat", &info, &table).unwrap();
        assert_eq!(t.chains, [KUBE_SERVICES, "KUBE-SVC-X"]);
        assert_eq!(
            t.services,
            [Found::Service(
                (6, "10.96.0.10".parse().unwrap(), 53),
                "kube-system/kube-dns:dns-tcp".to_string()
            )]
        );
    }

    /// `-d DST/32 -p tcp -m comment --comment C -m tcp --dport PORT -j TARGET` (no `-d` when
    /// `dst` is `None`).
    fn kube_rule(
        l: &Layout,
        dst: Option<[u8; 4]>,
        comment: &str,
        target: &str,
        data: &[u8],
    ) -> Vec<u8> {
        let mut e = entry(l, "", Some(comment), target, 0, data);
        if let Some(dst) = dst {
            e[l.dst..l.dst + 4].copy_from_slice(&dst);
            e[l.dmsk..l.dmsk + 4].copy_from_slice(&[0xff; 4]);
        }
        e[l.proto..l.proto + 2].copy_from_slice(&6u16.to_ne_bytes());
        let target_offset = usize::from(ne_u16(&e, l.target_offset));
        let mut m = xt_header(XT_HEADER + 16, "tcp", 0);
        for port in [0u16, 0xffff, 30090, 30090] {
            m.extend(port.to_ne_bytes());
        }
        m.extend([0u8; 8]);
        e.splice(target_offset..target_offset, m.iter().copied());
        let (t, n) = (target_offset + m.len(), e.len());
        e[l.target_offset..l.target_offset + 2].copy_from_slice(&(t as u16).to_ne_bytes());
        e[l.next_offset..l.next_offset + 2].copy_from_slice(&(n as u16).to_ne_bytes());
        e
    }

    #[test]
    fn legacy_filter_no_endpoint_and_nat_nodeport_rules() {
        let l = IPT_ENTRY;
        // A standard target's verdict: -NF_DROP - 1.
        let drop = (-1i32).to_ne_bytes();
        let mut table = error_entry(&l, KUBE_SERVICES);
        table.extend(kube_rule(
            &l,
            Some([10, 96, 0, 30]),
            "shop/local:http has no local endpoints",
            "",
            &drop,
        ));
        // ACCEPT (-NF_ACCEPT - 1) with the same comment is not a no-endpoint rule.
        table.extend(kube_rule(
            &l,
            Some([10, 96, 0, 31]),
            "shop/local:http has no local endpoints",
            "",
            &(-2i32).to_ne_bytes(),
        ));
        table.extend(error_entry(&l, KUBE_EXTERNAL_SERVICES));
        table.extend(kube_rule(
            &l,
            None,
            "shop/empty:http has no endpoints",
            "REJECT",
            &[0; 8],
        ));
        table.extend(error_entry(&l, "ERROR"));
        let info = TableInfo {
            size: table.len() as u32,
            ..TableInfo::default()
        };
        let t = parse_entries(Family::Ipv4, "filter", &info, &table).unwrap();
        let got: Vec<_> = t
            .services
            .iter()
            .map(|f| match f {
                Found::NoEndpoint(k, r) => (*k, r.action, r.why, r.rule.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    (6, Some("10.96.0.30".parse().unwrap()), 30090),
                    NoEndpointAction::Drop,
                    netlat_core::facts::NoEndpointWhy::NoLocalInternal,
                    "iptables-legacy filter KUBE-SERVICES".to_string()
                ),
                (
                    (6, None, 30090),
                    NoEndpointAction::Reject,
                    netlat_core::facts::NoEndpointWhy::NoEndpoints,
                    "iptables-legacy filter KUBE-EXTERNAL-SERVICES".to_string()
                ),
            ]
        );
        // KUBE-NODEPORTS in nat: a NodePort without a destination.
        let mut nat = error_entry(&l, KUBE_NODEPORTS);
        nat.extend(kube_rule(&l, None, "shop/front:http", "", &[0; 8]));
        nat.extend(error_entry(&l, "ERROR"));
        let info = TableInfo {
            size: nat.len() as u32,
            ..TableInfo::default()
        };
        let t = parse_entries(Family::Ipv4, "nat", &info, &nat).unwrap();
        assert_eq!(
            t.services,
            [Found::NodePort((6, 30090), "shop/front:http".into())]
        );
    }

    #[test]
    fn legacy_ipv6_layout() {
        let l = IP6T_ENTRY;
        let mut range = Vec::new();
        range.extend(NF_NAT_RANGE_PROTO_RANDOM_FULLY.to_ne_bytes());
        range.extend([0u8; 36]);
        let table = entry(&l, "eth1", None, "MASQUERADE", 0, &range);
        let info = TableInfo {
            valid_hooks: 1 << 4,
            hook_entry: [0; 5],
            size: table.len() as u32,
        };
        let rules = parse_entries(Family::Ipv6, "nat", &info, &table)
            .unwrap()
            .nat_rules;
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].backend, "ip6tables-legacy");
        assert!(rules[0].fully_random);
        assert_eq!(
            rules[0].text,
            "-A POSTROUTING -o eth1 -j MASQUERADE --random-fully"
        );
    }

    #[test]
    fn interface_wildcards() {
        let l = IPT_ENTRY;
        let info = TableInfo::default();
        let data = compat_info(0, [0; 4], (0, 0));
        let mut wild = entry(&l, "eth+", None, "MASQUERADE", 0, &data);
        // iptables keeps the `+` in the name and masks only "eth".
        wild[l.outiface_mask + 3] = 0;
        wild[l.outiface_mask + 4] = 0;
        let rules = parse_entries(Family::Ipv4, "nat", &info, &wild)
            .unwrap()
            .nat_rules;
        assert_eq!(rules[0].text, "-A  -o eth+ -j MASQUERADE");
    }

    #[test]
    fn truncated_entries_are_errors() {
        let l = IPT_ENTRY;
        let table = entry(
            &l,
            "",
            None,
            "MASQUERADE",
            0,
            &compat_info(0, [0; 4], (0, 0)),
        );
        let info = TableInfo::default();
        assert!(parse_entries(Family::Ipv4, "nat", &info, &table[..table.len() - 8]).is_err());
        assert!(parse_entries(Family::Ipv4, "nat", &info, &table[..50]).is_err());
        assert!(decode_nat_target(NFPROTO_IPV4, "SNAT", 1, &[0; 10]).is_err());
    }

    #[test]
    fn nat_target_layouts() {
        // SNAT revision 2 (nf_nat_range2), IPv6 with a single port.
        let mut info = Vec::new();
        info.extend(
            (NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED | NF_NAT_RANGE_PERSISTENT)
                .to_ne_bytes(),
        );
        let addr: [u8; 16] = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        info.extend(addr);
        info.extend(addr);
        info.extend(443u16.to_be_bytes());
        info.extend(443u16.to_be_bytes());
        info.extend([0u8; 4]);
        let nat = decode_nat_target(NFPROTO_IPV6, "SNAT", 2, &info)
            .unwrap()
            .unwrap();
        assert_eq!(nat.to.as_deref(), Some("[2001:db8::1]:443"));
        assert_eq!(nat.flags & NF_NAT_RANGE_PERSISTENT, NF_NAT_RANGE_PERSISTENT);
        // MASQUERADE with --to-ports.
        let nat = decode_nat_target(
            NFPROTO_IPV4,
            "MASQUERADE",
            0,
            &compat_info(NF_NAT_RANGE_PROTO_SPECIFIED, [0; 4], (1024, 2048)),
        )
        .unwrap()
        .unwrap();
        assert_eq!(nat.to.as_deref(), Some(":1024-2048"));
        assert_eq!(
            ipt_target_text("MASQUERADE", &nat),
            "-j MASQUERADE --to-ports 1024-2048"
        );
        assert_eq!(
            decode_nat_target(NFPROTO_IPV4, "DNAT", 0, &[]).unwrap(),
            None
        );
    }
}
