//! The nftables ruleset over nfnetlink: tables, chains, and every MASQUERADE/SNAT rule with its
//! NAT flags, including iptables-nft rules (xtables `target` expressions in the nft ruleset).
//!
//! Read with our own dump ([`super::nl`]) rather than the `rustables` crate, which is
//! GPL-3.0-or-later while netlat is MIT OR Apache-2.0, and rather than `nft -j list ruleset`,
//! which would make a tool installed on the node part of the reading. Only the few expressions a
//! NAT rule needs are decoded; the others appear in [`NatRule::text`] by name.
//!
//! Dumping asks the kernel for nf_tables, which it loads on demand like `nft list ruleset`
//! does; loading it adds no hook, so traffic is untouched.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlat_core::facts::{NatKind, NatRule};
use netlat_core::facts::{NoEndpointAction, NoEndpointRule, NoEndpointWhy};
use rtnetlink::sys::protocols::NETLINK_NETFILTER;

use super::NodeError;
use super::nl::{self, be32, be64, find, string};
use super::services::{
    self, Found, KUBE_EXTERNAL_SERVICES, KUBE_NODEPORTS, KUBE_SERVICES, ServiceMatch,
};
use super::xt;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETSETELEM: u16 = 13;

pub(super) const NFPROTO_UNSPEC: u8 = 0;
pub(super) const NFPROTO_INET: u8 = 1;
pub(super) const NFPROTO_IPV4: u8 = 2;
pub(super) const NFPROTO_IPV6: u8 = 10;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
/// NFTNL_UDATA_RULE_COMMENT: the rule comment's TLV type in libnftnl's rule user data.
const UDATA_RULE_COMMENT: u8 = 0;
/// NFT_CMP_EQ.
const CMP_EQ: u32 = 0;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// kube-proxy's nftables mode (1.29+): `table ip kube-proxy` (and `ip6`), whose verdict map
/// `service-ips` sends `daddr . l4proto . dport` to a chain per Service port.
const KUBE_PROXY_TABLE: &str = "kube-proxy";
const KUBE_PROXY_SERVICE_MAP: &str = "service-ips";
/// `inet_proto . inet_service : verdict`, a goto to the NodePort's `external-` chain.
const KUBE_PROXY_NODEPORT_MAP: &str = "service-nodeports";
/// Service addresses with no endpoint: `drop` (traffic policy Local, no local endpoint) or
/// `goto reject-chain` (no endpoint at all), each element commented `ns/name:port`.
const KUBE_PROXY_NO_ENDPOINT_MAP: &str = "no-endpoint-services";
/// The same for NodePorts, keyed `inet_proto . inet_service`.
const KUBE_PROXY_NO_ENDPOINT_NODEPORT_MAP: &str = "no-endpoint-nodeports";
/// kube-proxy's iptables chains that name Services, by table (iptables-nft keeps them in
/// nf_tables tables of the same names).
const KUBE_PROXY_CHAINS: [(&str, &str); 4] = [
    ("nat", KUBE_SERVICES),
    ("nat", KUBE_NODEPORTS),
    ("filter", KUBE_SERVICES),
    ("filter", KUBE_EXTERNAL_SERVICES),
];
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// NF_NAT_RANGE_* flags (include/uapi/linux/netfilter/nf_nat.h), shared by nft and xtables.
pub(super) const NF_NAT_RANGE_MAP_IPS: u32 = 0x1;
pub(super) const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;
pub(super) const NF_NAT_RANGE_PROTO_RANDOM: u32 = 0x4;
pub(super) const NF_NAT_RANGE_PERSISTENT: u32 = 0x8;
pub(super) const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;

/// Tables, chains and NAT rules of every family.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Ruleset {
    pub tables: Vec<Table>,
    pub chains: Vec<Chain>,
    pub nat_rules: Vec<NatRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Table {
    pub family: u8,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chain {
    pub family: u8,
    pub table: String,
    pub name: String,
}

/// nft's name of an NFPROTO family.
pub(super) fn family_name(family: u8) -> String {
    match family {
        NFPROTO_INET => "inet".into(),
        NFPROTO_IPV4 => "ip".into(),
        3 => "arp".into(),
        5 => "netdev".into(),
        7 => "bridge".into(),
        NFPROTO_IPV6 => "ip6".into(),
        n => format!("family-{n}"),
    }
}

/// Dumps the ruleset of the calling thread's namespace. Rules that cannot be decoded are left
/// out with a note each; an error means nothing could be dumped.
pub(super) fn read(notes: &mut Vec<String>) -> std::io::Result<Ruleset> {
    let mut ruleset = Ruleset::default();
    for (family, attrs) in dump(NFT_MSG_GETTABLE, NFPROTO_UNSPEC, &[])? {
        match nl::attrs(&attrs) {
            Ok(a) => ruleset.tables.push(Table {
                family,
                name: find(&a, NFTA_TABLE_NAME).map(string).unwrap_or_default(),
            }),
            Err(e) => notes.push(format!("nftables: a table cannot be decoded: {e}")),
        }
    }
    for (family, attrs) in dump(NFT_MSG_GETCHAIN, NFPROTO_UNSPEC, &[])? {
        match nl::attrs(&attrs) {
            Ok(a) => ruleset.chains.push(Chain {
                family,
                table: find(&a, NFTA_CHAIN_TABLE).map(string).unwrap_or_default(),
                name: find(&a, NFTA_CHAIN_NAME).map(string).unwrap_or_default(),
            }),
            Err(e) => notes.push(format!("nftables: a chain cannot be decoded: {e}")),
        }
    }
    for (family, attrs) in dump(NFT_MSG_GETRULE, NFPROTO_UNSPEC, &[])? {
        match decode_rule(family, &attrs) {
            Ok(Some(rule)) => ruleset.nat_rules.push(rule),
            Ok(None) => {}
            Err(e) => notes.push(format!(
                "nftables: a {} rule cannot be decoded: {e}",
                family_name(family)
            )),
        }
    }
    Ok(ruleset)
}

/// One nftables dump of `family` (NFPROTO_UNSPEC: all), narrowed by the kernel to the objects
/// `filter` (attributes) names: (family, attributes) per object.
fn dump(msg: u16, family: u8, filter: &[u8]) -> std::io::Result<Vec<(u8, Vec<u8>)>> {
    // nfgenmsg: family, version (NFNETLINK_V0), resource id (big endian).
    let mut body = vec![family, 0, 0, 0];
    body.extend_from_slice(filter);
    let replies = nl::dump(NETLINK_NETFILTER, (NFNL_SUBSYS_NFTABLES << 8) | msg, &body)?;
    Ok(replies
        .into_iter()
        .filter(|r| r.kind >> 8 == NFNL_SUBSYS_NFTABLES && r.payload.len() >= 4)
        .map(|r| (r.payload[0], r.payload[4..].to_vec()))
        .collect())
}

/// What a register holds, as far as the rendering of a rule needs to know.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Meta(u32),
    Payload { base: u32, offset: u32, len: u32 },
    Immediate(Vec<u8>),
    Other(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Reg {
    source: Source,
    mask: Option<Vec<u8>>,
}

/// The NAT action found in a rule.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Nat {
    pub kind: NatKind,
    pub flags: u32,
    pub to: Option<String>,
}

impl Nat {
    /// The action in nft syntax: `masquerade to :1024-2048 fully-random,persistent`.
    pub(super) fn nft_text(&self) -> String {
        let mut text = String::from(match self.kind {
            NatKind::Masquerade => "masquerade",
            NatKind::Snat => "snat",
        });
        if let Some(to) = &self.to {
            let _ = write!(text, " to {to}");
        }
        let flags = flag_names(self.flags);
        if !flags.is_empty() {
            let _ = write!(text, " {}", flags.join(","));
        }
        text
    }
}

fn flag_names(flags: u32) -> Vec<&'static str> {
    [
        (NF_NAT_RANGE_PROTO_RANDOM, "random"),
        (NF_NAT_RANGE_PROTO_RANDOM_FULLY, "fully-random"),
        (NF_NAT_RANGE_PERSISTENT, "persistent"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// Decodes one NFT_MSG_NEWRULE's attributes; `Some` when its action is masquerade or SNAT.
pub(super) fn decode_rule(family: u8, attrs: &[u8]) -> Result<Option<NatRule>, NodeError> {
    let a = nl::attrs(attrs)?;
    let Some(exprs) = find(&a, NFTA_RULE_EXPRESSIONS) else {
        return Ok(None);
    };
    let table = find(&a, NFTA_RULE_TABLE).map(string).unwrap_or_default();
    let chain = find(&a, NFTA_RULE_CHAIN).map(string).unwrap_or_default();

    let mut regs: HashMap<u32, Reg> = HashMap::new();
    let mut parts: Vec<String> = Vec::new();
    let mut found: Option<(Nat, &'static str)> = None;
    for (name, d) in expressions(exprs)? {
        if load(&mut regs, &name, &d)? {
            continue;
        }
        let u32_of = |k: u16| find(&d, k).and_then(be32);
        match name.as_str() {
            "meta" => match (u32_of(2), u32_of(3)) {
                (Some(key), Some(sreg)) => parts.push(format!(
                    "meta {} set {}",
                    meta_name(key),
                    regs.get(&sreg).map_or("?".into(), render_source)
                )),
                _ => parts.push(name),
            },
            "immediate" => {
                let data = nl::attrs(find(&d, 2).unwrap_or_default())?;
                match (
                    u32_of(1),
                    find(&data, NFTA_DATA_VALUE),
                    find(&data, NFTA_DATA_VERDICT),
                ) {
                    (Some(dreg), Some(value), _) if dreg != 0 => {
                        regs.insert(dreg, reg(Source::Immediate(value.to_vec())));
                    }
                    (_, _, Some(verdict)) => parts.push(render_verdict(verdict)?),
                    _ => parts.push(name),
                }
            }
            "cmp" => match (u32_of(1), u32_of(2), find(&d, 3)) {
                (Some(sreg), Some(op), Some(data)) => {
                    let value = data_value(data)?;
                    let r = regs
                        .get(&sreg)
                        .cloned()
                        .unwrap_or(reg(Source::Other("?".into())));
                    parts.push(render_cmp(family, &r, op, &value));
                }
                _ => parts.push(name),
            },
            "lookup" => {
                let set = find(&d, 1).map(string).unwrap_or_default();
                let inverted = u32_of(5).unwrap_or(0) & 1 != 0;
                let subject = u32_of(2)
                    .and_then(|r| regs.get(&r))
                    .map_or("?".into(), |r| render_subject(family, r));
                let op = if inverted { "!= " } else { "" };
                parts.push(format!("{subject} {op}@{set}"));
            }
            // Counters say nothing about the rule's meaning; iptables-nft adds one to each rule.
            "counter" => {}
            "masq" => {
                let ports = port_range(&regs, u32_of(2), u32_of(3));
                found = Some((
                    Nat {
                        kind: NatKind::Masquerade,
                        flags: u32_of(1).unwrap_or(0),
                        to: ports.map(|p| format!(":{p}")),
                    },
                    "nftables",
                ));
            }
            "nat" => {
                // NFT_NAT_SNAT = 0; DNAT rules are not this module's business.
                if u32_of(1) != Some(0) {
                    parts.push("dnat".into());
                    continue;
                }
                let nat_family = u32_of(2).unwrap_or(u32::from(family)) as u8;
                let addr = |r: Option<u32>| {
                    r.and_then(|r| match regs.get(&r).map(|r| &r.source) {
                        Some(Source::Immediate(v)) => Some(render_addr(nat_family, v)),
                        _ => None,
                    })
                };
                let (min, max) = (addr(u32_of(3)), addr(u32_of(4)));
                let ports = port_range(&regs, u32_of(5), u32_of(6));
                found = Some((
                    Nat {
                        kind: NatKind::Snat,
                        flags: u32_of(7).unwrap_or(0),
                        to: nat_target(nat_family, min, max, ports),
                    },
                    "nftables",
                ));
            }
            "target" => {
                let target = find(&d, 1).map(string).unwrap_or_default();
                let rev = u32_of(2).unwrap_or(0);
                let info = find(&d, 3).unwrap_or_default();
                match xt::decode_nat_target(family, &target, rev, info)? {
                    Some(nat) => found = Some((nat, "iptables-nft")),
                    None => parts.push(format!("xt target {target:?}")),
                }
            }
            "match" => {
                let m = find(&d, 1).map(string).unwrap_or_default();
                let info = find(&d, 3).unwrap_or_default();
                parts.push(xt::render_match_nft(&m, info));
            }
            _ => parts.push(name),
        }
    }
    let Some((nat, backend)) = found else {
        return Ok(None);
    };
    parts.push(nat.nft_text());
    let mut text = parts.join(" ");
    if let Some(handle) = find(&a, NFTA_RULE_HANDLE).and_then(be64) {
        let _ = write!(text, " # handle {handle}");
    }
    Ok(Some(NatRule {
        backend: backend.into(),
        table: format!("{} {table}", family_name(family)),
        chain,
        kind: nat.kind,
        fully_random: nat.flags & NF_NAT_RANGE_PROTO_RANDOM_FULLY != 0,
        random: nat.flags & NF_NAT_RANGE_PROTO_RANDOM != 0,
        to: nat.to,
        text,
    }))
}

/// One expression of a rule: its name and its data attributes.
type Expr<'a> = (String, Vec<(u16, &'a [u8])>);

/// A rule's expressions.
fn expressions(exprs: &[u8]) -> Result<Vec<Expr<'_>>, NodeError> {
    let mut out = Vec::new();
    for (kind, elem) in nl::attrs(exprs)? {
        if kind != NFTA_LIST_ELEM {
            continue;
        }
        let e = nl::attrs(elem)?;
        let name = find(&e, NFTA_EXPR_NAME).map(string).unwrap_or_default();
        out.push((
            name,
            nl::attrs(find(&e, NFTA_EXPR_DATA).unwrap_or_default())?,
        ));
    }
    Ok(out)
}

/// Follows a load into a register (`meta`, `payload` or `bitwise` with a destination
/// register); false for every other expression, including meta and payload stores.
fn load(regs: &mut HashMap<u32, Reg>, name: &str, d: &[(u16, &[u8])]) -> Result<bool, NodeError> {
    let u32_of = |k: u16| find(d, k).and_then(be32);
    let (dreg, r) = match (name, u32_of(1), u32_of(2), u32_of(3), u32_of(4)) {
        ("meta", Some(dreg), Some(key), _, _) => (dreg, reg(Source::Meta(key))),
        ("payload", Some(dreg), Some(base), Some(offset), Some(len)) => {
            (dreg, reg(Source::Payload { base, offset, len }))
        }
        ("bitwise", Some(sreg), Some(dreg), _, _) => {
            let mut r = regs
                .get(&sreg)
                .cloned()
                .unwrap_or(reg(Source::Other(name.into())));
            r.mask = find(d, 4).map(data_value).transpose()?;
            (dreg, r)
        }
        _ => return Ok(false),
    };
    regs.insert(dreg, r);
    Ok(true)
}

/// kube-proxy's iptables-mode rules in `family` as iptables-nft stores them ([`KUBE_PROXY_CHAINS`]):
/// what each says about a Service. No such table or chain: nothing.
pub(super) fn read_services(family: u8) -> std::io::Result<Vec<Found>> {
    let mut out = Vec::new();
    for (table, chain) in KUBE_PROXY_CHAINS {
        // The kernel narrows the dump to the table and chain; a kernel that does not know the
        // filter dumps every rule, and the decoder checks the names itself.
        let mut filter = nl::nla(NFTA_RULE_TABLE, format!("{table}\0").as_bytes());
        filter.extend(nl::nla(NFTA_RULE_CHAIN, format!("{chain}\0").as_bytes()));
        let rules = match dump(NFT_MSG_GETRULE, family, &filter) {
            Ok(r) => r,
            Err(e) if absent(&e) => continue,
            Err(e) => return Err(e),
        };
        for (f, attrs) in rules {
            // A rule that does not decode names no Service; the others still do.
            if let Ok(Some(found)) = decode_service_rule(f, &attrs)
                && !out.contains(&found)
            {
                out.push(found);
            }
        }
    }
    Ok(out)
}

/// The elements of kube-proxy's nftables-mode maps in `family` (Service addresses,
/// NodePorts, and both no-endpoint maps). No such table or map: nothing.
pub(super) fn read_service_map(family: u8) -> std::io::Result<Vec<Found>> {
    let mut out = Vec::new();
    for set in [
        KUBE_PROXY_SERVICE_MAP,
        KUBE_PROXY_NODEPORT_MAP,
        KUBE_PROXY_NO_ENDPOINT_MAP,
        KUBE_PROXY_NO_ENDPOINT_NODEPORT_MAP,
    ] {
        let mut filter = nl::nla(
            NFTA_SET_ELEM_LIST_TABLE,
            format!("{KUBE_PROXY_TABLE}\0").as_bytes(),
        );
        filter.extend(nl::nla(
            NFTA_SET_ELEM_LIST_SET,
            format!("{set}\0").as_bytes(),
        ));
        let replies = match dump(NFT_MSG_GETSETELEM, family, &filter) {
            Ok(r) => r,
            Err(e) if absent(&e) => continue,
            Err(e) => return Err(e),
        };
        for (f, attrs) in replies {
            out.extend(
                decode_service_elements(f, &attrs)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            );
        }
    }
    Ok(out)
}

/// NFT_NAT_DNAT (include/uapi/linux/netfilter/nf_tables.h, `enum nft_nat_types`).
const NFT_NAT_DNAT: u32 = 1;

/// Whether a rule's action is a DNAT: native `dnat to`, or iptables-nft's `-j DNAT`.
pub(super) fn is_dnat_rule(attrs: &[u8]) -> Result<bool, NodeError> {
    let a = nl::attrs(attrs)?;
    let Some(exprs) = find(&a, NFTA_RULE_EXPRESSIONS) else {
        return Ok(false);
    };
    Ok(expressions(exprs)?
        .iter()
        .any(|(name, d)| match name.as_str() {
            "nat" => find(d, 1).and_then(be32) == Some(NFT_NAT_DNAT),
            "target" => find(d, 1).map(string).as_deref() == Some("DNAT"),
            _ => false,
        }))
}

/// DNAT rules in the calling thread's namespace, every family. Rules that do not decode are
/// not counted.
pub(super) fn count_dnat() -> std::io::Result<usize> {
    let rules = match dump(NFT_MSG_GETRULE, NFPROTO_UNSPEC, &[]) {
        Ok(r) => r,
        Err(e) if absent(&e) => return Ok(0),
        Err(e) => return Err(e),
    };
    Ok(rules
        .iter()
        .filter(|(_, attrs)| is_dnat_rule(attrs).unwrap_or(false))
        .count())
}

/// Whether a dump failed only because the table, chain or set (or nf_tables) is not there.
fn absent(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT)
    )
}

/// An element's verdict: its code (NF_DROP 0, NFT_JUMP -3, NFT_GOTO -4, ...) and chain.
fn element_verdict(e: &[(u16, &[u8])]) -> Result<Option<(i32, Option<String>)>, NodeError> {
    let Some(data) = find(e, NFTA_SET_ELEM_DATA) else {
        return Ok(None);
    };
    let Some(verdict) = find(&nl::attrs(data)?, NFTA_DATA_VERDICT).map(nl::attrs) else {
        return Ok(None);
    };
    let v = verdict?;
    Ok(find(&v, NFTA_VERDICT_CODE)
        .and_then(be32)
        .map(|c| (c as i32, find(&v, NFTA_VERDICT_CHAIN).map(string))))
}

/// Decodes one NFT_MSG_NEWSETELEM of kube-proxy's nftables-mode maps. Keys are nft
/// concatenations, every part padded to 4 bytes: `addr . proto . port` (`service-ips`,
/// `no-endpoint-services`) or `proto . port` (the NodePort maps). A Service map element's
/// verdict is a `goto` to `service-`/`local-`/`external-HASH-ns/name/proto/portname`, the
/// Service's name (an element comment stands in when the chain name does not parse); a
/// no-endpoint element's verdict is `drop` or a `goto` to the reject chain, its comment the
/// Service's `ns/name:port`.
pub(super) fn decode_service_elements(family: u8, attrs: &[u8]) -> Result<Vec<Found>, NodeError> {
    let a = nl::attrs(attrs)?;
    if find(&a, NFTA_SET_ELEM_LIST_TABLE).map(string).as_deref() != Some(KUBE_PROXY_TABLE) {
        return Ok(Vec::new());
    }
    let set = find(&a, NFTA_SET_ELEM_LIST_SET)
        .map(string)
        .unwrap_or_default();
    let (by_addr, no_endpoint) = match set.as_str() {
        KUBE_PROXY_SERVICE_MAP => (true, false),
        KUBE_PROXY_NODEPORT_MAP => (false, false),
        KUBE_PROXY_NO_ENDPOINT_MAP => (true, true),
        KUBE_PROXY_NO_ENDPOINT_NODEPORT_MAP => (false, true),
        _ => return Ok(Vec::new()),
    };
    let addr_len = match (by_addr, family) {
        (false, _) => 0,
        (true, NFPROTO_IPV6) => 16,
        (true, _) => 4,
    };
    let mut out = Vec::new();
    for (kind, elem) in nl::attrs(find(&a, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap_or_default())? {
        if kind != NFTA_LIST_ELEM {
            continue;
        }
        let e = nl::attrs(elem)?;
        let key = find(&e, NFTA_SET_ELEM_KEY)
            .map(data_value)
            .transpose()?
            .unwrap_or_default();
        let (Some(addr), Some(proto), Some(port)) = (
            key.get(..addr_len),
            key.get(addr_len),
            key.get(addr_len + 4..addr_len + 6),
        ) else {
            continue;
        };
        let addr = match addr.len() {
            0 => None,
            _ => match <[u8; 16]>::try_from(addr) {
                Ok(b) => Some(IpAddr::V6(Ipv6Addr::from(b))),
                Err(_) => match <[u8; 4]>::try_from(addr) {
                    Ok(b) => Some(IpAddr::V4(Ipv4Addr::from(b))),
                    Err(_) => continue,
                },
            },
        };
        let port = u16::from_be_bytes([port[0], port[1]]);
        let verdict = element_verdict(&e)?;
        let comment = find(&e, NFTA_SET_ELEM_USERDATA).and_then(udata_comment);
        let from_comment = || {
            comment
                .as_deref()
                .and_then(services::name_from_element_comment)
        };
        if no_endpoint {
            let (action, why) = match verdict {
                // NF_DROP.
                Some((0, _)) => (
                    NoEndpointAction::Drop,
                    if by_addr {
                        NoEndpointWhy::NoLocal
                    } else {
                        NoEndpointWhy::NoLocalExternal
                    },
                ),
                Some((-3 | -4, Some(chain))) if chain.contains("reject") => {
                    (NoEndpointAction::Reject, NoEndpointWhy::NoEndpoints)
                }
                _ => continue,
            };
            let Some(service) = from_comment() else {
                continue;
            };
            out.push(Found::NoEndpoint(
                (*proto, addr, port),
                NoEndpointRule {
                    service,
                    action,
                    why,
                    rule: format!(
                        "nftables {} {KUBE_PROXY_TABLE} map {set}",
                        family_name(family)
                    ),
                },
            ));
            continue;
        }
        let name = verdict
            .and_then(|(_, chain)| chain)
            .as_deref()
            .and_then(services::name_from_chain)
            .or_else(from_comment);
        let Some(name) = name else {
            continue;
        };
        out.push(match addr {
            Some(addr) => Found::Service((*proto, addr, port), name),
            None => Found::NodePort((*proto, port), name),
        });
    }
    Ok(out)
}

/// Decodes a rule of one of kube-proxy's iptables chains ([`KUBE_PROXY_CHAINS`]): its
/// destination, protocol, port, comment (from the rule's user data, where nft and newer
/// iptables-nft keep it, or an xtables `comment` match, where iptables-nft 1.8.9 and older keep
/// it) and a DROP (nft `drop` verdict) or REJECT (xtables target).
pub(super) fn decode_service_rule(family: u8, attrs: &[u8]) -> Result<Option<Found>, NodeError> {
    let a = nl::attrs(attrs)?;
    let name_of = |k: u16| find(&a, k).map(string).unwrap_or_default();
    let (table, chain) = (name_of(NFTA_RULE_TABLE), name_of(NFTA_RULE_CHAIN));
    if !KUBE_PROXY_CHAINS.contains(&(table.as_str(), chain.as_str())) {
        return Ok(None);
    }
    let Some(exprs) = find(&a, NFTA_RULE_EXPRESSIONS) else {
        return Ok(None);
    };
    let mut m = ServiceMatch {
        comment: find(&a, NFTA_RULE_USERDATA).and_then(udata_comment),
        ..ServiceMatch::default()
    };
    let mut regs: HashMap<u32, Reg> = HashMap::new();
    for (name, d) in expressions(exprs)? {
        if load(&mut regs, &name, &d)? {
            continue;
        }
        let u32_of = |k: u16| find(&d, k).and_then(be32);
        match name.as_str() {
            "cmp" => {
                let (Some(sreg), Some(CMP_EQ), Some(data)) = (u32_of(1), u32_of(2), find(&d, 3))
                else {
                    continue;
                };
                let value = data_value(data)?;
                // A masked register compares a prefix, not one address.
                let Some(Reg { source, mask: None }) = regs.get(&sreg) else {
                    continue;
                };
                match (source, family) {
                    (Source::Meta(16), _)
                    | (
                        Source::Payload {
                            base: 1,
                            offset: 9,
                            len: 1,
                        },
                        NFPROTO_IPV4,
                    ) => {
                        m.proto = value.first().copied();
                    }
                    (
                        Source::Payload {
                            base: 1,
                            offset: 16,
                            len: 4,
                        },
                        NFPROTO_IPV4,
                    ) => {
                        m.daddr = <[u8; 4]>::try_from(value.as_slice())
                            .ok()
                            .map(|b| IpAddr::V4(Ipv4Addr::from(b)));
                    }
                    (
                        Source::Payload {
                            base: 1,
                            offset: 24,
                            len: 16,
                        },
                        NFPROTO_IPV6,
                    ) => {
                        m.daddr = <[u8; 16]>::try_from(value.as_slice())
                            .ok()
                            .map(|b| IpAddr::V6(Ipv6Addr::from(b)));
                    }
                    (
                        Source::Payload {
                            base: 2,
                            offset: 2,
                            len: 2,
                        },
                        _,
                    ) => {
                        m.dport = <[u8; 2]>::try_from(value.as_slice())
                            .ok()
                            .map(u16::from_be_bytes);
                    }
                    _ => {}
                }
            }
            "match" => {
                let xt_name = find(&d, 1).map(string).unwrap_or_default();
                xt::service_match(&xt_name, find(&d, 3).unwrap_or_default(), &mut m);
            }
            "immediate" => {
                let data = nl::attrs(find(&d, 2).unwrap_or_default())?;
                if let Some(verdict) = find(&data, NFTA_DATA_VERDICT) {
                    let v = nl::attrs(verdict)?;
                    // NF_DROP: iptables-nft turns `-j DROP` into nft's own drop verdict.
                    if find(&v, NFTA_VERDICT_CODE).and_then(be32) == Some(0) {
                        m.action = Some(NoEndpointAction::Drop);
                    }
                }
            }
            "target" if find(&d, 1).map(string).as_deref() == Some("REJECT") => {
                m.action = Some(NoEndpointAction::Reject);
            }
            _ => {}
        }
    }
    Ok(m.found("iptables-nft", &table, &chain))
}

/// The comment in a rule's user data: libnftnl TLVs of `u8 type, u8 length, value`.
fn udata_comment(mut udata: &[u8]) -> Option<String> {
    while let [kind, len, rest @ ..] = udata {
        let value = rest.get(..usize::from(*len))?;
        if *kind == UDATA_RULE_COMMENT {
            return Some(string(value));
        }
        udata = &rest[usize::from(*len)..];
    }
    None
}

fn reg(source: Source) -> Reg {
    Reg { source, mask: None }
}

/// The value inside an NFTA_DATA_* nest.
fn data_value(nest: &[u8]) -> Result<Vec<u8>, NodeError> {
    let a = nl::attrs(nest)?;
    Ok(find(&a, NFTA_DATA_VALUE).unwrap_or_default().to_vec())
}

fn render_verdict(nest: &[u8]) -> Result<String, NodeError> {
    let v = nl::attrs(nest)?;
    let code = find(&v, NFTA_VERDICT_CODE).and_then(be32).map(|c| c as i32);
    let target = find(&v, NFTA_VERDICT_CHAIN).map(string).unwrap_or_default();
    Ok(match code {
        Some(0) => "drop".into(),
        Some(1) => "accept".into(),
        Some(-1) => "continue".into(),
        Some(-3) => format!("jump {target}"),
        Some(-4) => format!("goto {target}"),
        Some(-5) => "return".into(),
        other => format!("verdict {other:?}"),
    })
}

fn meta_name(key: u32) -> String {
    match key {
        1 => "protocol".into(),
        3 => "mark".into(),
        4 => "iif".into(),
        5 => "oif".into(),
        6 => "iifname".into(),
        7 => "oifname".into(),
        15 => "nfproto".into(),
        16 => "l4proto".into(),
        k => format!("key-{k}"),
    }
}

/// What a register holds, in nft words (`meta mark`, `ip saddr`, `th dport`).
fn render_subject(family: u8, r: &Reg) -> String {
    let subject = match &r.source {
        Source::Meta(6) => "iifname".into(),
        Source::Meta(7) => "oifname".into(),
        Source::Meta(key) => format!("meta {}", meta_name(*key)),
        Source::Payload { base, offset, len } => payload_name(family, *base, *offset, *len),
        Source::Immediate(v) => hex(v),
        Source::Other(name) => format!("[{name}]"),
    };
    match &r.mask {
        Some(mask) if matches!(r.source, Source::Meta(3)) => {
            format!("{subject} & 0x{:08x}", ne32(mask))
        }
        _ => subject,
    }
}

fn render_source(r: &Reg) -> String {
    render_subject(NFPROTO_UNSPEC, r)
}

fn payload_name(family: u8, base: u32, offset: u32, len: u32) -> String {
    let v6 = family == NFPROTO_IPV6;
    match (base, offset) {
        (1, 12) if !v6 => "ip saddr".into(),
        (1, 16) if !v6 => "ip daddr".into(),
        (1, 9) if !v6 => "ip protocol".into(),
        (1, 8) if family != NFPROTO_IPV4 && len > 4 => "ip6 saddr".into(),
        (1, 24) if family != NFPROTO_IPV4 => "ip6 daddr".into(),
        (2, 0) if len == 2 => "th sport".into(),
        (2, 2) if len == 2 => "th dport".into(),
        _ => format!(
            "@{},{},{}",
            ["ll", "nh", "th", "ih"].get(base as usize).unwrap_or(&"?"),
            offset * 8,
            len * 8
        ),
    }
}

fn render_cmp(family: u8, r: &Reg, op: u32, value: &[u8]) -> String {
    let subject = render_subject(family, r);
    let op = match (op, r.mask.is_some()) {
        (0, false) => "",
        (0, true) => "== ",
        (1, _) => "!= ",
        (2, _) => "< ",
        (3, _) => "<= ",
        (4, _) => "> ",
        (5, _) => ">= ",
        _ => "? ",
    };
    let value = match &r.source {
        Source::Meta(6 | 7) => {
            // An unterminated name compares a prefix: iptables' `eth+`, nft's `"eth*"`.
            let wildcard = !value.contains(&0);
            format!("\"{}{}\"", string(value), if wildcard { "*" } else { "" })
        }
        Source::Meta(3) => format!("0x{:08x}", ne32(value)),
        Source::Meta(16)
        | Source::Payload {
            base: 1, offset: 9, ..
        } => match value.first() {
            Some(6) => "tcp".into(),
            Some(17) => "udp".into(),
            Some(1) => "icmp".into(),
            Some(p) => p.to_string(),
            None => "?".into(),
        },
        Source::Payload { base: 1, .. } if subject.contains("addr") => {
            let v6 = subject.starts_with("ip6");
            let full = if v6 { 16 } else { 4 };
            // iptables-nft loads only the prefix's bytes; nft masks the full address.
            let bits = match &r.mask {
                Some(mask) => mask.iter().map(|b| b.count_ones()).sum::<u32>(),
                None => (value.len().min(full) * 8) as u32,
            };
            let mut addr = value.to_vec();
            addr.resize(full, 0);
            let family = if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 };
            if bits as usize == full * 8 {
                render_addr(family, &addr)
            } else {
                format!("{}/{bits}", render_addr(family, &addr))
            }
        }
        Source::Payload {
            base: 2, len: 2, ..
        } => u16::from_be_bytes([*value.first().unwrap_or(&0), *value.get(1).unwrap_or(&0)])
            .to_string(),
        _ => hex(value),
    };
    format!("{subject} {op}{value}")
}

fn ne32(v: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    for (dst, src) in b.iter_mut().zip(v) {
        *dst = *src;
    }
    u32::from_ne_bytes(b)
}

fn hex(v: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in v {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An address held in a register (network byte order), for NFPROTO `family`.
pub(super) fn render_addr(family: u8, v: &[u8]) -> String {
    if family == NFPROTO_IPV6 {
        if let Some(b) = v.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            return Ipv6Addr::from(b).to_string();
        }
    } else if let Some(b) = v.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
        return Ipv4Addr::from(b).to_string();
    }
    hex(v)
}

/// `MIN[-MAX]` of the ports loaded into the proto registers (network byte order).
fn port_range(regs: &HashMap<u32, Reg>, min: Option<u32>, max: Option<u32>) -> Option<String> {
    let port = |r: Option<u32>| match regs.get(&r?).map(|r| &r.source) {
        Some(Source::Immediate(v)) if v.len() >= 2 => Some(u16::from_be_bytes([v[0], v[1]])),
        _ => None,
    };
    Some(range(&port(min)?, port(max)))
}

fn range<T: PartialEq + std::fmt::Display>(min: &T, max: Option<T>) -> String {
    match max {
        Some(max) if max != *min => format!("{min}-{max}"),
        _ => min.to_string(),
    }
}

/// The SNAT target `ADDR[-ADDR][:PORT[-PORT]]` (IPv6 with a port as `[ADDR]:PORT`).
pub(super) fn nat_target(
    family: u8,
    min: Option<String>,
    max: Option<String>,
    ports: Option<String>,
) -> Option<String> {
    let addrs = min.map(|min| range(&min, max));
    match (addrs, ports) {
        (Some(a), Some(p)) if family == NFPROTO_IPV6 => Some(format!("[{a}]:{p}")),
        (Some(a), Some(p)) => Some(format!("{a}:{p}")),
        (Some(a), None) => Some(a),
        (None, Some(p)) => Some(format!(":{p}")),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::nl::nla;

    const NESTED: u16 = 0x8000;

    #[expect(
        clippy::needless_pass_by_value,
        reason = "the tests hand over vec! literals"
    )]
    fn expr(name: &str, data: Vec<Vec<u8>>) -> Vec<u8> {
        let mut e = nla(NFTA_EXPR_NAME, format!("{name}\0").as_bytes());
        e.extend(nla(NFTA_EXPR_DATA | NESTED, &data.concat()));
        nla(NFTA_LIST_ELEM | NESTED, &e)
    }

    fn be(kind: u16, v: u32) -> Vec<u8> {
        nla(kind, &v.to_be_bytes())
    }

    fn value(kind: u16, v: &[u8]) -> Vec<u8> {
        nla(kind | NESTED, &nla(NFTA_DATA_VALUE, v))
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "the tests hand over vec! literals"
    )]
    fn rule(table: &str, chain: &str, exprs: Vec<Vec<u8>>) -> Vec<u8> {
        let mut r = nla(NFTA_RULE_TABLE, format!("{table}\0").as_bytes());
        r.extend(nla(NFTA_RULE_CHAIN, format!("{chain}\0").as_bytes()));
        r.extend(nla(NFTA_RULE_HANDLE, &4u64.to_be_bytes()));
        r.extend(nla(NFTA_RULE_EXPRESSIONS | NESTED, &exprs.concat()));
        r
    }

    fn oifname(name: &[u8]) -> Vec<Vec<u8>> {
        vec![
            expr("meta", vec![be(1, 1), be(2, 7)]),
            expr("cmp", vec![be(1, 1), be(2, 0), value(3, name)]),
        ]
    }

    #[test]
    fn native_masquerade_fully_random() {
        let mut exprs = oifname(b"x\0");
        exprs.push(expr("masq", vec![be(1, NF_NAT_RANGE_PROTO_RANDOM_FULLY)]));
        let r = decode_rule(NFPROTO_IPV4, &rule("nat", "post", exprs))
            .unwrap()
            .unwrap();
        assert_eq!(
            r,
            NatRule {
                backend: "nftables".into(),
                table: "ip nat".into(),
                chain: "post".into(),
                kind: NatKind::Masquerade,
                fully_random: true,
                random: false,
                to: None,
                text: "oifname \"x\" masquerade fully-random # handle 4".into(),
            }
        );
    }

    #[test]
    fn kube_proxy_style_masquerade() {
        // meta mark & 0x4000 == 0x4000 ... masquerade fully-random, with a plain masquerade
        // (no flags attribute at all) on the side.
        let exprs = vec![
            expr("meta", vec![be(1, 1), be(2, 3)]),
            expr(
                "bitwise",
                vec![
                    be(1, 1),
                    be(2, 1),
                    be(3, 4),
                    value(4, &0x4000u32.to_ne_bytes()),
                    value(5, &[0; 4]),
                ],
            ),
            expr(
                "cmp",
                vec![be(1, 1), be(2, 0), value(3, &0x4000u32.to_ne_bytes())],
            ),
            expr("counter", vec![]),
            expr("masq", vec![]),
        ];
        let r = decode_rule(NFPROTO_INET, &rule("kube-proxy", "masquerading", exprs))
            .unwrap()
            .unwrap();
        assert_eq!(r.table, "inet kube-proxy");
        assert!(!r.fully_random && !r.random);
        assert_eq!(
            r.text,
            "meta mark & 0x00004000 == 0x00004000 masquerade # handle 4"
        );
    }

    #[test]
    fn native_snat_with_immediates() {
        let exprs = vec![
            expr("meta", vec![be(1, 1), be(2, 16)]),
            expr("cmp", vec![be(1, 1), be(2, 0), value(3, &[6])]),
            expr("payload", vec![be(1, 1), be(2, 1), be(3, 12), be(4, 1)]),
            expr("cmp", vec![be(1, 1), be(2, 1), value(3, &[10])]),
            expr("immediate", vec![be(1, 1), value(2, &[10, 1, 2, 3])]),
            expr(
                "immediate",
                vec![be(1, 2), value(2, &1000u16.to_be_bytes())],
            ),
            expr(
                "immediate",
                vec![be(1, 3), value(2, &2000u16.to_be_bytes())],
            ),
            expr(
                "nat",
                vec![
                    be(1, 0),
                    be(2, 2),
                    be(3, 1),
                    be(5, 2),
                    be(6, 3),
                    be(
                        7,
                        NF_NAT_RANGE_MAP_IPS
                            | NF_NAT_RANGE_PROTO_SPECIFIED
                            | NF_NAT_RANGE_PROTO_RANDOM
                            | NF_NAT_RANGE_PERSISTENT,
                    ),
                ],
            ),
        ];
        let r = decode_rule(NFPROTO_IPV4, &rule("nat", "post", exprs))
            .unwrap()
            .unwrap();
        assert_eq!(r.kind, NatKind::Snat);
        assert!(r.random && !r.fully_random);
        assert_eq!(r.to.as_deref(), Some("10.1.2.3:1000-2000"));
        assert_eq!(
            r.text,
            "meta l4proto tcp ip saddr != 10.0.0.0/8 snat to 10.1.2.3:1000-2000 random,persistent # handle 4"
        );
    }

    #[test]
    fn iptables_nft_target() {
        // iptables-nft: `-o w+ -m comment --comment kube -j MASQUERADE --random-fully`.
        let mut exprs = oifname(b"w");
        let mut comment = b"kube".to_vec();
        comment.resize(256, 0);
        exprs.push(expr(
            "match",
            vec![nla(1, b"comment\0"), be(2, 0), nla(3, &comment)],
        ));
        exprs.push(expr("counter", vec![]));
        let mut info = Vec::new();
        info.extend(1u32.to_ne_bytes());
        info.extend(NF_NAT_RANGE_PROTO_RANDOM_FULLY.to_ne_bytes());
        info.extend([0u8; 12]);
        exprs.push(expr(
            "target",
            vec![nla(1, b"MASQUERADE\0"), be(2, 0), nla(3, &info)],
        ));
        let r = decode_rule(NFPROTO_IPV4, &rule("nat", "KUBE-POSTROUTING", exprs))
            .unwrap()
            .unwrap();
        assert_eq!(r.backend, "iptables-nft");
        assert_eq!(r.chain, "KUBE-POSTROUTING");
        assert!(r.fully_random);
        assert_eq!(
            r.text,
            "oifname \"w*\" comment \"kube\" masquerade fully-random # handle 4"
        );
    }

    #[test]
    fn rules_without_nat_are_skipped() {
        let mut exprs = oifname(b"x\0");
        exprs.push(expr(
            "immediate",
            vec![
                be(1, 0),
                nla(
                    2 | NESTED,
                    &nla(NFTA_DATA_VERDICT | NESTED, &be(NFTA_VERDICT_CODE, 1)),
                ),
            ],
        ));
        assert_eq!(
            decode_rule(NFPROTO_IPV4, &rule("filter", "in", exprs)).unwrap(),
            None
        );
        // DNAT is not reported, but it is seen as a DNAT.
        let dnat = vec![expr("nat", vec![be(1, 1), be(2, 2)])];
        assert_eq!(
            decode_rule(NFPROTO_IPV4, &rule("nat", "pre", dnat.clone())).unwrap(),
            None
        );
        assert!(is_dnat_rule(&rule("nat", "pre", dnat)).unwrap());
        let snat = vec![expr("nat", vec![be(1, 0), be(2, 2)])];
        assert!(!is_dnat_rule(&rule("nat", "post", snat)).unwrap());
        let xt_dnat = vec![expr("target", vec![nla(1, b"DNAT\0"), be(2, 2)])];
        assert!(is_dnat_rule(&rule("nat", "KUBE-SEP-X", xt_dnat)).unwrap());
        let xt_masq = vec![expr("target", vec![nla(1, b"MASQUERADE\0"), be(2, 0)])];
        assert!(!is_dnat_rule(&rule("nat", "post", xt_masq)).unwrap());
        // No expressions at all.
        assert_eq!(
            decode_rule(NFPROTO_IPV4, &nla(NFTA_RULE_TABLE, b"t\0")).unwrap(),
            None
        );
    }

    /// `-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment C -m tcp --dport 53
    /// -j KUBE-SVC-X` as iptables-nft 1.8.9 stores it (nft --debug=netlink shows the same).
    fn kube_services_exprs(daddr: Vec<Vec<u8>>, comment: Option<&str>) -> Vec<Vec<u8>> {
        let mut exprs = vec![
            expr("meta", vec![be(1, 1), be(2, 16)]),
            expr("cmp", vec![be(1, 1), be(2, CMP_EQ), value(3, &[6])]),
        ];
        exprs.extend(daddr);
        if let Some(c) = comment {
            let mut text = c.as_bytes().to_vec();
            text.resize(256, 0);
            exprs.push(expr(
                "match",
                vec![nla(1, b"comment\0"), be(2, 0), nla(3, &text)],
            ));
        }
        exprs.push(expr(
            "payload",
            vec![be(1, 1), be(2, 2), be(3, 2), be(4, 2)],
        ));
        exprs.push(expr(
            "cmp",
            vec![be(1, 1), be(2, CMP_EQ), value(3, &53u16.to_be_bytes())],
        ));
        exprs.push(expr("counter", vec![]));
        exprs
    }

    fn v4_daddr(addr: [u8; 4]) -> Vec<Vec<u8>> {
        vec![
            expr("payload", vec![be(1, 1), be(2, 1), be(3, 16), be(4, 4)]),
            expr("cmp", vec![be(1, 1), be(2, CMP_EQ), value(3, &addr)]),
        ]
    }

    #[test]
    fn iptables_nft_service_rule() {
        let comment = "kube-system/kube-dns:dns-tcp cluster IP";
        let bytes = rule(
            "nat",
            KUBE_SERVICES,
            kube_services_exprs(v4_daddr([10, 96, 0, 10]), Some(comment)),
        );
        assert_eq!(
            decode_service_rule(NFPROTO_IPV4, &bytes).unwrap(),
            Some(Found::Service(
                (6, "10.96.0.10".parse().unwrap(), 53),
                "kube-system/kube-dns:dns-tcp".to_string()
            ))
        );
        // The same rule in another chain or table, or with a prefix for a destination, names
        // no Service.
        for (table, chain) in [("nat", "KUBE-SVC-X"), ("filter", KUBE_SERVICES)] {
            let other = rule(
                table,
                chain,
                kube_services_exprs(v4_daddr([10, 96, 0, 10]), Some(comment)),
            );
            assert_eq!(decode_service_rule(NFPROTO_IPV4, &other).unwrap(), None);
        }
        let prefix = vec![
            expr("payload", vec![be(1, 1), be(2, 1), be(3, 16), be(4, 3)]),
            expr("cmp", vec![be(1, 1), be(2, CMP_EQ), value(3, &[10, 96, 0])]),
        ];
        let bytes = rule(
            "nat",
            KUBE_SERVICES,
            kube_services_exprs(prefix, Some(comment)),
        );
        assert_eq!(decode_service_rule(NFPROTO_IPV4, &bytes).unwrap(), None);
        // kube-proxy's last rule (nodeports, no destination) is no Service either.
        let bytes = rule(
            "nat",
            KUBE_SERVICES,
            kube_services_exprs(vec![], Some("kubernetes service nodeports; NOTE")),
        );
        assert_eq!(decode_service_rule(NFPROTO_IPV4, &bytes).unwrap(), None);
    }

    #[test]
    fn service_comment_in_rule_user_data() {
        // Newer iptables-nft and nft keep the comment in NFTA_RULE_USERDATA TLVs; an unknown
        // TLV before it is skipped.
        let addr: std::net::Ipv6Addr = "fd00::a".parse().unwrap();
        let daddr = vec![
            expr("payload", vec![be(1, 1), be(2, 1), be(3, 24), be(4, 16)]),
            expr(
                "cmp",
                vec![be(1, 1), be(2, CMP_EQ), value(3, &addr.octets())],
            ),
        ];
        let mut bytes = rule("nat", KUBE_SERVICES, kube_services_exprs(daddr, None));
        let text = b"default/web:http cluster IP\0";
        let mut udata = vec![9, 2, 0xaa, 0xbb, UDATA_RULE_COMMENT, text.len() as u8];
        udata.extend_from_slice(text);
        bytes.extend(nla(NFTA_RULE_USERDATA, &udata));
        assert_eq!(
            decode_service_rule(NFPROTO_IPV6, &bytes).unwrap(),
            Some(Found::Service(
                (6, IpAddr::V6(addr), 53),
                "default/web:http".to_string()
            ))
        );
        // A TLV longer than the user data ends the walk without a comment.
        assert_eq!(udata_comment(&[UDATA_RULE_COMMENT, 200, b'x']), None);
    }

    /// One `service-ips` element: `key` (the padded concatenation), a goto `chain`, a comment.
    fn element(key: &[u8], chain: Option<&str>, comment: Option<&str>) -> Vec<u8> {
        let mut e = value(NFTA_SET_ELEM_KEY, key);
        if let Some(chain) = chain {
            let mut verdict = be(NFTA_VERDICT_CODE, (-4i32) as u32);
            verdict.extend(nla(NFTA_VERDICT_CHAIN, format!("{chain}\0").as_bytes()));
            e.extend(nla(
                NFTA_SET_ELEM_DATA | NESTED,
                &nla(NFTA_DATA_VERDICT | NESTED, &verdict),
            ));
        }
        if let Some(c) = comment {
            let mut udata = vec![0, (c.len() + 1) as u8];
            udata.extend_from_slice(c.as_bytes());
            udata.push(0);
            e.extend(nla(NFTA_SET_ELEM_USERDATA, &udata));
        }
        nla(NFTA_LIST_ELEM | NESTED, &e)
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "the tests hand over vec! literals"
    )]
    fn set_elems(table: &str, set: &str, elems: Vec<Vec<u8>>) -> Vec<u8> {
        let mut m = nla(NFTA_SET_ELEM_LIST_TABLE, format!("{table}\0").as_bytes());
        m.extend(nla(NFTA_SET_ELEM_LIST_SET, format!("{set}\0").as_bytes()));
        m.extend(nla(NFTA_SET_ELEM_LIST_ELEMENTS | NESTED, &elems.concat()));
        m
    }

    #[test]
    fn nftables_mode_service_map() {
        // 10.96.0.10 . tcp . 53 and 10.96.0.11 . udp . 53, each part padded to 4 bytes (what
        // `nft --debug=netlink` shows: 0a00600a 00000006 00003500).
        let key = |last: u8, proto: u8| {
            let mut k = vec![10, 96, 0, last, proto, 0, 0, 0];
            k.extend([0, 53, 0, 0]);
            k
        };
        let bytes = set_elems(
            KUBE_PROXY_TABLE,
            KUBE_PROXY_SERVICE_MAP,
            vec![
                element(
                    &key(10, 6),
                    Some("service-NWBZK7IH-kube-system/kube-dns/tcp/dns-tcp"),
                    None,
                ),
                // No parsable chain: the comment names it.
                element(
                    &key(11, 17),
                    Some("odd-chain"),
                    Some("kube-system/kube-dns/udp/dns"),
                ),
                // Neither: left out. A short key: left out.
                element(&key(12, 6), Some("odd-chain"), None),
                element(&[10, 96], Some("service-NWBZK7IH-a/b/tcp/c"), None),
            ],
        );
        assert_eq!(
            decode_service_elements(NFPROTO_IPV4, &bytes).unwrap(),
            vec![
                Found::Service(
                    (6, "10.96.0.10".parse().unwrap(), 53),
                    "kube-system/kube-dns:dns-tcp".to_string()
                ),
                Found::Service(
                    (17, "10.96.0.11".parse().unwrap(), 53),
                    "kube-system/kube-dns:dns".to_string()
                ),
            ]
        );
        let mut v6 = "fd00::a".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        v6.extend([6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        let bytes = set_elems(
            KUBE_PROXY_TABLE,
            KUBE_PROXY_SERVICE_MAP,
            vec![element(
                &v6,
                Some("service-ABCDEFGH-default/web/tcp/http"),
                None,
            )],
        );
        assert_eq!(
            decode_service_elements(NFPROTO_IPV6, &bytes).unwrap(),
            vec![Found::Service(
                (6, "fd00::a".parse().unwrap(), 8080),
                "default/web:http".to_string()
            )]
        );
        // Another set of the table is not the Service map.
        let other = set_elems(
            KUBE_PROXY_TABLE,
            "cluster-ips",
            vec![element(
                &key(10, 6),
                Some("service-NWBZK7IH-a/b/tcp/c"),
                None,
            )],
        );
        assert!(
            decode_service_elements(NFPROTO_IPV4, &other)
                .unwrap()
                .is_empty()
        );
    }

    /// An element whose verdict is a bare code (`drop`).
    fn drop_element(key: &[u8], comment: &str) -> Vec<u8> {
        let mut e = value(NFTA_SET_ELEM_KEY, key);
        e.extend(nla(
            NFTA_SET_ELEM_DATA | NESTED,
            &nla(NFTA_DATA_VERDICT | NESTED, &be(NFTA_VERDICT_CODE, 0)),
        ));
        let mut udata = vec![0, (comment.len() + 1) as u8];
        udata.extend_from_slice(comment.as_bytes());
        udata.push(0);
        e.extend(nla(NFTA_SET_ELEM_USERDATA, &udata));
        nla(NFTA_LIST_ELEM | NESTED, &e)
    }

    /// `addr . tcp . port` as nft pads it.
    fn v4_key(addr: [u8; 4], port: u16) -> Vec<u8> {
        let mut k = addr.to_vec();
        k.extend([6, 0, 0, 0]);
        k.extend(port.to_be_bytes());
        k.extend([0, 0]);
        k
    }

    /// `tcp . port` as nft pads it.
    fn nodeport_key(port: u16) -> Vec<u8> {
        let mut k = vec![6, 0, 0, 0];
        k.extend(port.to_be_bytes());
        k.extend([0, 0]);
        k
    }

    #[test]
    fn nftables_mode_chains_of_every_address_kind() {
        let bytes = set_elems(
            KUBE_PROXY_TABLE,
            KUBE_PROXY_SERVICE_MAP,
            vec![
                element(
                    &v4_key([10, 96, 0, 20], 80),
                    Some("local-QY2ZJ4NA-shop/cart/tcp/http"),
                    None,
                ),
                element(
                    &v4_key([203, 0, 113, 7], 80),
                    Some("external-4AGZPFLV-shop/front/tcp/"),
                    None,
                ),
            ],
        );
        assert_eq!(
            decode_service_elements(NFPROTO_IPV4, &bytes).unwrap(),
            vec![
                Found::Service(
                    (6, "10.96.0.20".parse().unwrap(), 80),
                    "shop/cart:http".into()
                ),
                Found::Service((6, "203.0.113.7".parse().unwrap(), 80), "shop/front".into()),
            ]
        );
        let bytes = set_elems(
            KUBE_PROXY_TABLE,
            KUBE_PROXY_NODEPORT_MAP,
            vec![element(
                &nodeport_key(30080),
                Some("external-4AGZPFLV-shop/front/tcp/"),
                None,
            )],
        );
        assert_eq!(
            decode_service_elements(NFPROTO_IPV4, &bytes).unwrap(),
            vec![Found::NodePort((6, 30080), "shop/front".into())]
        );
    }

    #[test]
    fn nftables_mode_no_endpoint_maps() {
        let bytes = set_elems(
            KUBE_PROXY_TABLE,
            KUBE_PROXY_NO_ENDPOINT_MAP,
            vec![
                drop_element(&v4_key([10, 96, 0, 30], 80), "shop/local:http"),
                element(
                    &v4_key([10, 96, 0, 31], 80),
                    Some("reject-chain"),
                    Some("shop/empty"),
                ),
                // A goto elsewhere, or no comment: not read.
                element(
                    &v4_key([10, 96, 0, 32], 80),
                    Some("other-chain"),
                    Some("shop/odd:http"),
                ),
                element(&v4_key([10, 96, 0, 33], 80), Some("reject-chain"), None),
            ],
        );
        let rule = |service: &str, action, why| NoEndpointRule {
            service: service.into(),
            action,
            why,
            rule: "nftables ip kube-proxy map no-endpoint-services".into(),
        };
        assert_eq!(
            decode_service_elements(NFPROTO_IPV4, &bytes).unwrap(),
            vec![
                Found::NoEndpoint(
                    (6, Some("10.96.0.30".parse().unwrap()), 80),
                    rule(
                        "shop/local:http",
                        NoEndpointAction::Drop,
                        NoEndpointWhy::NoLocal
                    )
                ),
                Found::NoEndpoint(
                    (6, Some("10.96.0.31".parse().unwrap()), 80),
                    rule(
                        "shop/empty",
                        NoEndpointAction::Reject,
                        NoEndpointWhy::NoEndpoints
                    )
                ),
            ]
        );
        let bytes = set_elems(
            KUBE_PROXY_TABLE,
            KUBE_PROXY_NO_ENDPOINT_NODEPORT_MAP,
            vec![drop_element(&nodeport_key(30090), "shop/local:http")],
        );
        let found = decode_service_elements(NFPROTO_IPV4, &bytes).unwrap();
        assert!(
            matches!(&found[..], [Found::NoEndpoint((6, None, 30090), r)]
                if r.why == NoEndpointWhy::NoLocalExternal && r.action == NoEndpointAction::Drop),
            "{found:?}"
        );
    }

    #[test]
    fn iptables_nft_no_endpoint_rules() {
        let comment = "shop/local:http has no local endpoints";
        let mut drop = kube_services_exprs(v4_daddr([10, 96, 0, 30]), Some(comment));
        drop.push(expr(
            "immediate",
            vec![
                be(1, 0),
                nla(
                    2 | NESTED,
                    &nla(NFTA_DATA_VERDICT | NESTED, &be(NFTA_VERDICT_CODE, 0)),
                ),
            ],
        ));
        let found = decode_service_rule(NFPROTO_IPV4, &rule("filter", KUBE_SERVICES, drop.clone()))
            .unwrap();
        assert_eq!(
            found,
            Some(Found::NoEndpoint(
                (6, Some("10.96.0.30".parse().unwrap()), 53),
                NoEndpointRule {
                    service: "shop/local:http".into(),
                    action: NoEndpointAction::Drop,
                    why: NoEndpointWhy::NoLocalInternal,
                    rule: "iptables-nft filter KUBE-SERVICES".into(),
                }
            ))
        );
        // The same rule in table nat is no no-endpoint rule (nor a Service name: its comment
        // names one, so it is read as the Service's address).
        assert!(matches!(
            decode_service_rule(NFPROTO_IPV4, &rule("nat", KUBE_SERVICES, drop)).unwrap(),
            Some(Found::Service(..))
        ));
        // REJECT (an xtables target), for a NodePort: no destination, KUBE-EXTERNAL-SERVICES.
        let mut reject = kube_services_exprs(vec![], Some("shop/empty:http has no endpoints"));
        reject.push(expr(
            "target",
            vec![nla(1, b"REJECT\0"), be(2, 0), nla(3, &[0; 8])],
        ));
        let found = decode_service_rule(
            NFPROTO_IPV4,
            &rule("filter", KUBE_EXTERNAL_SERVICES, reject.clone()),
        )
        .unwrap();
        assert!(
            matches!(&found, Some(Found::NoEndpoint((6, None, 53), r))
                if r.action == NoEndpointAction::Reject && r.why == NoEndpointWhy::NoEndpoints),
            "{found:?}"
        );
        // A NodePort rule in nat KUBE-NODEPORTS.
        let nodeport = kube_services_exprs(vec![], Some("shop/front:http"));
        assert_eq!(
            decode_service_rule(NFPROTO_IPV4, &rule("nat", KUBE_NODEPORTS, nodeport)).unwrap(),
            Some(Found::NodePort((6, 53), "shop/front:http".into()))
        );
        // Another filter chain is not read.
        assert_eq!(
            decode_service_rule(NFPROTO_IPV4, &rule("filter", "KUBE-FORWARD", reject)).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_rule_is_an_error() {
        let mut bytes = rule("nat", "post", vec![expr("masq", vec![])]);
        bytes.truncate(bytes.len() - 6);
        assert!(decode_rule(NFPROTO_IPV4, &bytes).is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(
            nat_target(NFPROTO_IPV4, Some("1.2.3.4".into()), None, None).as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(
            nat_target(
                NFPROTO_IPV6,
                Some("2001:db8::1".into()),
                Some("2001:db8::1".into()),
                Some("80".into())
            )
            .as_deref(),
            Some("[2001:db8::1]:80")
        );
        assert_eq!(
            nat_target(NFPROTO_IPV4, None, None, Some("1-2".into())).as_deref(),
            Some(":1-2")
        );
        assert_eq!(nat_target(NFPROTO_IPV4, None, None, None), None);
    }
}
