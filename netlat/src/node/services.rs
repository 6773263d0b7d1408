//! Kubernetes Service names as the node knows them: from kube-proxy's own rules, never from the
//! API server. In iptables mode every Service port is a `KUBE-SERVICES` rule in table `nat`,
//!
//! `-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp
//! cluster IP" -m tcp --dport 53 -j KUBE-SVC-…`
//!
//! (also `… external IP`, `… loadbalancer IP`; NodePorts in `KUBE-NODEPORTS` without `-d`), and
//! its no-endpoint rules are filter-table `KUBE-SERVICES`/`KUBE-EXTERNAL-SERVICES` DROP/REJECT
//! rules commented `ns/name:port has no (local) endpoints`; all stored either in nf_tables by
//! iptables-nft ([`super::nft`]) or in the legacy xtables tables ([`super::xt`]). Both decoders
//! fill a [`ServiceMatch`]. In nftables mode (kube-proxy 1.29+) the same facts are elements of
//! the verdict maps of `table ip/ip6 kube-proxy`, decoded by [`super::nft`]. This module turns
//! what they say into a [`ServiceMap`].

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

use netlat_core::facts::{NoEndpointAction, NoEndpointRule, NoEndpointWhy};

use super::{nft, xt};

/// The chain kube-proxy's iptables mode puts one rule per Service IP and port in (in table
/// `nat` to DNAT, in table `filter` for its no-endpoint DROP/REJECT rules).
pub(super) const KUBE_SERVICES: &str = "KUBE-SERVICES";
/// iptables mode, table `nat`: one rule per NodePort (no destination: any local address).
pub(super) const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
/// iptables mode, table `filter`: no-endpoint rules of external IPs, LoadBalancer IPs and
/// NodePorts.
pub(super) const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";

/// (IP protocol number, destination address, destination port).
pub type ServiceKey = (u8, IpAddr, u16);
/// A no-endpoint rule's key: the address is `None` for a NodePort (any local address).
pub type NoEndpointKey = (u8, Option<IpAddr>, u16);

/// What kube-proxy's rules in one namespace say about Services: names by the address and port
/// clients connect to, NodePorts, and the no-endpoint rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceMap {
    by_addr: BTreeMap<ServiceKey, String>,
    /// (protocol, NodePort) → name; reached on any local address of the namespace.
    nodeports: BTreeMap<(u8, u16), String>,
    no_endpoints: BTreeMap<NoEndpointKey, NoEndpointRule>,
    /// The namespace's own addresses: what kube-proxy's `addrtype --dst-type LOCAL` and
    /// `fib daddr type local` match before the NodePort rules.
    local: BTreeSet<IpAddr>,
    /// IPVS virtual services (protocol, VIP, port): kube-proxy's IPVS mode keeps no Service
    /// names on the node, so these can only be called IPVS services.
    ipvs: BTreeSet<ServiceKey>,
    /// DNAT rules of any kind (only counted when kube-proxy's rules are absent).
    dnat_rules: usize,
}

/// One thing a kube-proxy rule or map element says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Found {
    Service(ServiceKey, String),
    NodePort((u8, u16), String),
    NoEndpoint(NoEndpointKey, NoEndpointRule),
}

impl ServiceMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Service ports named (addresses and NodePorts).
    pub fn len(&self) -> usize {
        self.by_addr.len() + self.nodeports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn add(&mut self, found: Found) {
        match found {
            Found::Service(k, name) => {
                self.by_addr.insert(k, name);
            }
            Found::NodePort(k, name) => {
                self.nodeports.insert(k, name);
            }
            Found::NoEndpoint(k, rule) => {
                self.no_endpoints.insert(k, rule);
            }
        }
    }

    /// A name by address and port (what a test or an older reader knows).
    pub fn insert(&mut self, key: ServiceKey, name: String) {
        self.by_addr.insert(key, name);
    }

    /// The namespace's own addresses (loopback counts as local without being listed).
    pub fn set_local(&mut self, local: impl IntoIterator<Item = IpAddr>) {
        self.local = local.into_iter().collect();
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.local.contains(&ip)
    }

    /// The Service at `key`: its address, or a NodePort when the address is local, or a
    /// Service port kube-proxy drops or rejects for want of endpoints (still that Service).
    pub fn name(&self, key: &ServiceKey) -> Option<&str> {
        let (proto, ip, port) = *key;
        self.by_addr
            .get(key)
            .or_else(|| {
                self.is_local(ip)
                    .then(|| self.nodeports.get(&(proto, port)))
                    .flatten()
            })
            .map(String::as_str)
            .or_else(|| self.no_endpoint(key).map(|r| r.service.as_str()))
    }

    /// kube-proxy's no-endpoint rule for `key`, by address or as a NodePort.
    pub fn no_endpoint(&self, key: &ServiceKey) -> Option<&NoEndpointRule> {
        let (proto, ip, port) = *key;
        self.no_endpoints.get(&(proto, Some(ip), port)).or_else(|| {
            self.is_local(ip)
                .then(|| self.no_endpoints.get(&(proto, None, port)))
                .flatten()
        })
    }

    /// IPVS virtual services of the namespace, as [`ServiceKey`]s.
    pub fn set_ipvs(&mut self, vips: impl IntoIterator<Item = ServiceKey>) {
        self.ipvs = vips.into_iter().collect();
    }

    /// `key` is an IPVS virtual service no rule names (IPVS mode's Services).
    /// Whether this namespace DNATs connects: kube-proxy's Services (rules or IPVS), or any
    /// other DNAT rule.
    pub fn dnats(&self) -> bool {
        self.dnat_rules > 0
            || !self.by_addr.is_empty()
            || !self.nodeports.is_empty()
            || !self.ipvs.is_empty()
    }

    pub fn unnamed_ipvs(&self, key: &ServiceKey) -> bool {
        self.ipvs.contains(key) && self.name(key).is_none()
    }

    /// Every no-endpoint rule with its destination, for `doctor`.
    pub fn no_endpoint_rules(&self) -> impl Iterator<Item = (&NoEndpointKey, &NoEndpointRule)> {
        self.no_endpoints.iter()
    }
}

/// Reading the rules failed (a missing table or chain is not a failure: the map is empty).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{family} nftables rules of kube-proxy's iptables chains: {source}")]
    Nftables {
        family: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{family} kube-proxy table, its Service maps: {source}")]
    NftablesMode {
        family: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{backend} {table} table: {source}")]
    Legacy {
        backend: &'static str,
        table: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What one kube-proxy iptables rule matches on and does, as far as a Service needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ServiceMatch {
    pub proto: Option<u8>,
    /// Only an exact (/32, /128) destination names one Service address.
    pub daddr: Option<IpAddr>,
    pub dport: Option<u16>,
    pub comment: Option<String>,
    /// DROP or REJECT (the filter table's no-endpoint rules).
    pub action: Option<NoEndpointAction>,
}

impl ServiceMatch {
    /// What the rule says, given where it is (`table`, `chain`; `backend` names it in a
    /// no-endpoint rule). `None` when it names no single Service port.
    pub(super) fn found(&self, backend: &str, table: &str, chain: &str) -> Option<Found> {
        let comment = self.comment.as_deref()?;
        let name = service_name(comment)?;
        let (proto, port) = (self.proto?, self.dport?);
        match (table, chain) {
            ("nat", KUBE_SERVICES) => Some(Found::Service((proto, self.daddr?, port), name)),
            // kube-proxy's NodePort rules have no destination; one with a destination is not
            // a NodePort of every local address.
            ("nat", KUBE_NODEPORTS) if self.daddr.is_none() => {
                Some(Found::NodePort((proto, port), name))
            }
            ("filter", KUBE_SERVICES | KUBE_EXTERNAL_SERVICES) => {
                let action = self.action?;
                let external = chain == KUBE_EXTERNAL_SERVICES;
                let why = if comment.contains("has no local endpoints") {
                    if external {
                        NoEndpointWhy::NoLocalExternal
                    } else {
                        NoEndpointWhy::NoLocalInternal
                    }
                } else if comment.contains("has no endpoints") {
                    NoEndpointWhy::NoEndpoints
                } else {
                    return None;
                };
                // Without a destination only KUBE-EXTERNAL-SERVICES' NodePort rules (matched
                // on `addrtype --dst-type LOCAL`) name a port.
                if self.daddr.is_none() && !external {
                    return None;
                }
                Some(Found::NoEndpoint(
                    (proto, self.daddr, port),
                    NoEndpointRule {
                        service: name,
                        action,
                        why,
                        rule: format!("{backend} {table} {chain}"),
                    },
                ))
            }
            _ => None,
        }
    }
}

/// `ns/name:port` from a kube-proxy comment (`"ns/name:port cluster IP"`, `"… external IP"`,
/// `"… loadbalancer IP"`, `"… has no local endpoints"`, a NodePort's bare `"ns/name:port"`);
/// `None` for its other comments (`"kubernetes service nodeports; …"`).
pub fn service_name(comment: &str) -> Option<String> {
    let first = comment.split_whitespace().next()?;
    let (ns, name) = first.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then(|| first.to_string())
}

/// The address kinds of kube-proxy's nftables-mode Service chains: `service-` (ClusterIP),
/// `local-` (ClusterIP with internalTrafficPolicy=Local), `external-` (external IPs,
/// LoadBalancer IPs and NodePorts).
const CHAIN_PREFIXES: [&str; 3] = ["service-", "local-", "external-"];

/// `ns/name:port` from the chain kube-proxy's nftables mode sends a Service port to:
/// `<prefix>HASH-ns/name/proto/portname` (HASH is 8 characters).
pub fn name_from_chain(chain: &str) -> Option<String> {
    let rest = CHAIN_PREFIXES.iter().find_map(|p| chain.strip_prefix(p))?;
    let (hash, path) = rest.split_once('-')?;
    if hash.len() != 8 {
        return None;
    }
    name_from_port_path(path)
}

/// `ns/name:port` (`ns/name` for an unnamed port) from `ns/name/proto/portname`.
pub fn name_from_port_path(path: &str) -> Option<String> {
    let mut parts = path.splitn(4, '/');
    let (ns, name, _proto, port) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if ns.is_empty() || name.is_empty() {
        return None;
    }
    Some(if port.is_empty() {
        format!("{ns}/{name}")
    } else {
        format!("{ns}/{name}:{port}")
    })
}

/// A map element's comment as a Service name: kube-proxy writes `ns/name:port`; the
/// `ns/name/proto/port` chain-path shape is accepted too.
pub fn name_from_element_comment(comment: &str) -> Option<String> {
    name_from_port_path(comment).or_else(|| service_name(comment))
}

/// Reads every Service of the calling thread's network namespace: kube-proxy's nftables mode
/// (`table ip/ip6 kube-proxy`, its maps) and its iptables mode through iptables-nft and
/// iptables-legacy rules (a node uses one of them; stale rules of another are merged in),
/// with the namespace's addresses for its NodePorts.
pub fn read() -> Result<ServiceMap, ServiceError> {
    let mut map = ServiceMap::new();
    for family in [nft::NFPROTO_IPV4, nft::NFPROTO_IPV6] {
        let name = if family == nft::NFPROTO_IPV6 {
            "ip6"
        } else {
            "ip"
        };
        for found in nft::read_services(family).map_err(|source| ServiceError::Nftables {
            family: name,
            source,
        })? {
            map.add(found);
        }
        for found in nft::read_service_map(family).map_err(|source| ServiceError::NftablesMode {
            family: name,
            source,
        })? {
            map.add(found);
        }
    }
    for family in [xt::Family::Ipv4, xt::Family::Ipv6] {
        for table in ["nat", "filter"] {
            match xt::read_legacy(family, table) {
                Ok(Some(t)) => {
                    for found in t.services {
                        map.add(found);
                    }
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(ServiceError::Legacy {
                        backend: family.backend(),
                        table,
                        source,
                    });
                }
            }
        }
    }
    match super::ipvs::virtual_services() {
        Ok(Some(list)) => map.set_ipvs(list.iter().filter_map(|s| {
            let vip = s.vip?;
            Some((u8::try_from(s.protocol).ok()?, vip.ip(), vip.port()))
        })),
        Ok(None) => {}
        // Lines then lack only the note that the VIP is IPVS's.
        Err(e) => tracing::debug!("IPVS virtual services: {e}"),
    }
    // Any DNAT at all, when kube-proxy's rules already say none: a full rule dump costs as
    // much as the rule set is large, so a node with kube-proxy is spared it.
    if !map.dnats() {
        match nft::count_dnat() {
            Ok(n) => map.dnat_rules = n,
            // Pods' ClusterIP connects then get no `dst_pod` from the node's conntrack.
            Err(e) => tracing::debug!("DNAT rules: {e}"),
        }
    }
    match local_addresses() {
        Ok(local) => map.set_local(local),
        // NodePorts are then named on loopback only; the rest of the map stands.
        Err(e) => tracing::debug!("local addresses for NodePorts: {e}"),
    }
    Ok(map)
}

/// The calling thread's namespace's interface addresses (getifaddrs asks over a netlink
/// socket, which belongs to the namespace of the thread that opens it).
fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in (read unaligned: the list
                // only promises sockaddr's alignment).
                let sin =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in>()) };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6 (read as above).
                let sin6 =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in6>()) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_kube_proxy_comments() {
        assert_eq!(
            service_name("kube-system/kube-dns:dns-tcp cluster IP").as_deref(),
            Some("kube-system/kube-dns:dns-tcp")
        );
        // A Service port without a name.
        assert_eq!(
            service_name("default/web external IP").as_deref(),
            Some("default/web")
        );
        assert_eq!(
            service_name("kubernetes service nodeports; NOTE: this must be the last rule"),
            None
        );
        assert_eq!(service_name("/x cluster IP"), None);
        assert_eq!(service_name(""), None);
    }

    #[test]
    fn names_from_nftables_mode_chains() {
        assert_eq!(
            name_from_chain("service-NWBZK7IH-kube-system/kube-dns/tcp/dns-tcp").as_deref(),
            Some("kube-system/kube-dns:dns-tcp")
        );
        assert_eq!(
            name_from_chain("service-ULMVA6XW-ns1/svc1/tcp/").as_deref(),
            Some("ns1/svc1")
        );
        // internalTrafficPolicy=Local, and external IPs / LoadBalancer IPs / NodePorts.
        assert_eq!(
            name_from_chain("local-QY2ZJ4NA-shop/cart/tcp/http").as_deref(),
            Some("shop/cart:http")
        );
        assert_eq!(
            name_from_chain("external-4AGZPFLV-shop/front/tcp/").as_deref(),
            Some("shop/front")
        );
        // Other kube-proxy chains, and a hash of another length.
        for other in [
            "services",
            "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80",
            "firewall-ABCDEFGH-a/b/tcp/p",
            "service-SHORT-a/b/tcp/p",
            "service-NWBZK7IH-kube-system/kube-dns",
            "reject-chain",
        ] {
            assert_eq!(name_from_chain(other), None, "{other}");
        }
        assert_eq!(
            name_from_port_path("default/web/tcp/http").as_deref(),
            Some("default/web:http")
        );
        // kube-proxy's element comments are `ns/name:port`; the path shape is accepted too.
        assert_eq!(
            name_from_element_comment("shop/cart:http").as_deref(),
            Some("shop/cart:http")
        );
        assert_eq!(
            name_from_element_comment("shop/cart").as_deref(),
            Some("shop/cart")
        );
        assert_eq!(
            name_from_element_comment("shop/cart/tcp/http").as_deref(),
            Some("shop/cart:http")
        );
        assert_eq!(name_from_element_comment("no service here"), None);
    }

    fn rule(daddr: Option<&str>, comment: &str, action: Option<NoEndpointAction>) -> ServiceMatch {
        ServiceMatch {
            proto: Some(6),
            daddr: daddr.map(|d| d.parse().unwrap()),
            dport: Some(80),
            comment: Some(comment.into()),
            action,
        }
    }

    #[test]
    fn what_each_kube_proxy_chain_says() {
        let full = rule(Some("10.96.0.10"), "shop/cart:http cluster IP", None);
        assert_eq!(
            full.found("iptables-nft", "nat", KUBE_SERVICES),
            Some(Found::Service(
                (6, "10.96.0.10".parse().unwrap(), 80),
                "shop/cart:http".into()
            ))
        );
        for lb in ["shop/cart:http external IP", "shop/cart loadbalancer IP"] {
            assert!(matches!(
                rule(Some("203.0.113.7"), lb, None).found("iptables-nft", "nat", KUBE_SERVICES),
                Some(Found::Service(..))
            ));
        }
        // Every part is needed in KUBE-SERVICES.
        for partial in [
            ServiceMatch {
                proto: None,
                ..full.clone()
            },
            ServiceMatch {
                daddr: None,
                ..full.clone()
            },
            ServiceMatch {
                dport: None,
                ..full.clone()
            },
            ServiceMatch {
                comment: Some("kubernetes service nodeports".into()),
                ..full.clone()
            },
        ] {
            assert_eq!(
                partial.found("iptables-nft", "nat", KUBE_SERVICES),
                None,
                "{partial:?}"
            );
        }
        // NodePorts: no destination.
        assert_eq!(
            rule(None, "shop/cart:http", None).found("iptables-legacy", "nat", KUBE_NODEPORTS),
            Some(Found::NodePort((6, 80), "shop/cart:http".into()))
        );
        assert_eq!(full.found("iptables-legacy", "nat", KUBE_NODEPORTS), None);
        // The filter table's no-endpoint rules.
        let drop = rule(
            Some("10.96.0.10"),
            "shop/cart:http has no local endpoints",
            Some(NoEndpointAction::Drop),
        );
        assert_eq!(
            drop.found("iptables-nft", "filter", KUBE_SERVICES),
            Some(Found::NoEndpoint(
                (6, Some("10.96.0.10".parse().unwrap()), 80),
                NoEndpointRule {
                    service: "shop/cart:http".into(),
                    action: NoEndpointAction::Drop,
                    why: NoEndpointWhy::NoLocalInternal,
                    rule: "iptables-nft filter KUBE-SERVICES".into(),
                }
            ))
        );
        let Some(Found::NoEndpoint(_, r)) =
            drop.found("iptables-nft", "filter", KUBE_EXTERNAL_SERVICES)
        else {
            panic!("external no-local-endpoints rule not read");
        };
        assert_eq!(r.why, NoEndpointWhy::NoLocalExternal);
        let reject = rule(
            None,
            "shop/cart:http has no endpoints",
            Some(NoEndpointAction::Reject),
        );
        let Some(Found::NoEndpoint(key, r)) =
            reject.found("iptables-legacy", "filter", KUBE_EXTERNAL_SERVICES)
        else {
            panic!("NodePort reject rule not read");
        };
        assert_eq!(
            (key, r.action, r.why),
            (
                (6, None, 80),
                NoEndpointAction::Reject,
                NoEndpointWhy::NoEndpoints
            )
        );
        // A filter rule without DROP/REJECT, or with another comment, or a NodePort-shaped rule
        // in KUBE-SERVICES, is none of kube-proxy's no-endpoint rules.
        for (m, chain) in [
            (
                ServiceMatch {
                    action: None,
                    ..drop.clone()
                },
                KUBE_SERVICES,
            ),
            (
                rule(
                    Some("10.96.0.10"),
                    "shop/cart:http cluster IP",
                    Some(NoEndpointAction::Drop),
                ),
                KUBE_SERVICES,
            ),
            (
                rule(
                    None,
                    "shop/cart:http has no endpoints",
                    Some(NoEndpointAction::Reject),
                ),
                KUBE_SERVICES,
            ),
            (drop.clone(), "KUBE-FORWARD"),
        ] {
            assert_eq!(
                m.found("iptables-nft", "filter", chain),
                None,
                "{m:?} {chain}"
            );
        }
    }

    #[test]
    fn nodeports_answer_on_local_addresses_only() {
        let mut map = ServiceMap::new();
        map.add(Found::NodePort((6, 30080), "shop/front:http".into()));
        map.add(Found::Service(
            (6, "10.96.0.20".parse().unwrap(), 30080),
            "shop/other".into(),
        ));
        map.add(Found::NoEndpoint(
            (6, None, 30090),
            NoEndpointRule {
                service: "shop/local:http".into(),
                action: NoEndpointAction::Drop,
                why: NoEndpointWhy::NoLocalExternal,
                rule: "nftables ip kube-proxy map no-endpoint-nodeports".into(),
            },
        ));
        map.set_local(["192.0.2.5".parse().unwrap()]);
        let key = |ip: &str, port| (6, ip.parse().unwrap(), port);
        assert_eq!(map.name(&key("192.0.2.5", 30080)), Some("shop/front:http"));
        assert_eq!(map.name(&key("127.0.0.1", 30080)), Some("shop/front:http"));
        // An address of the Service map wins; a remote address is no NodePort here.
        assert_eq!(map.name(&key("10.96.0.20", 30080)), Some("shop/other"));
        assert_eq!(map.name(&key("192.0.2.9", 30080)), None);
        assert_eq!(map.name(&(17, "192.0.2.5".parse().unwrap(), 30080)), None);
        assert_eq!(
            map.no_endpoint(&key("192.0.2.5", 30090))
                .map(|r| r.service.as_str()),
            Some("shop/local:http")
        );
        assert_eq!(map.no_endpoint(&key("192.0.2.9", 30090)), None);
        // A no-endpoint Service port still names its Service.
        assert_eq!(map.name(&key("192.0.2.5", 30090)), Some("shop/local:http"));
        assert_eq!(map.len(), 2);
        // IPVS mode: a VIP is known as a virtual service, not by name.
        map.set_ipvs([key("10.96.0.50", 443), key("10.96.0.20", 30080)]);
        assert!(map.unnamed_ipvs(&key("10.96.0.50", 443)));
        assert!(
            !map.unnamed_ipvs(&key("10.96.0.20", 30080)),
            "named by a rule"
        );
        assert!(!map.unnamed_ipvs(&key("10.96.0.51", 443)));
    }
}
