//! Kubernetes Service names as the node knows them: from kube-proxy's own rules, never from the
//! API server. In iptables mode every Service port is a `KUBE-SERVICES` rule in table `nat`,
//!
//! `-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp
//! cluster IP" -m tcp --dport 53 -j KUBE-SVC-…`
//!
//! stored either in nf_tables by iptables-nft ([`super::nft`]) or in the legacy xtables table
//! ([`super::xt`]). Both decoders fill a [`ServiceMatch`]; this module turns the matches into a
//! [`ServiceMap`] of (protocol, address, port) → `namespace/name:port`.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use super::{nft, xt};

/// The chain kube-proxy's iptables mode puts one rule per Service IP and port in.
pub(super) const KUBE_SERVICES: &str = "KUBE-SERVICES";

/// (IP protocol number, destination address, destination port).
pub type ServiceKey = (u8, IpAddr, u16);

/// Service names by the address and port clients connect to.
pub type ServiceMap = BTreeMap<ServiceKey, String>;

/// Reading the rules failed (a missing table or chain is not a failure: the map is empty).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{family} nftables rules of chain {KUBE_SERVICES}: {source}")]
    Nftables {
        family: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{family} kube-proxy table, map service-ips: {source}")]
    NftablesMode {
        family: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{backend} nat table: {source}")]
    Legacy {
        backend: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What one `KUBE-SERVICES` rule matches on, as far as a Service name needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ServiceMatch {
    pub proto: Option<u8>,
    /// Only an exact (/32, /128) destination names one Service address.
    pub daddr: Option<IpAddr>,
    pub dport: Option<u16>,
    pub comment: Option<String>,
}

impl ServiceMatch {
    /// The map entry, when the rule names one Service port at one address.
    pub(super) fn entry(&self) -> Option<(ServiceKey, String)> {
        let name = service_name(self.comment.as_deref()?)?;
        Some(((self.proto?, self.daddr?, self.dport?), name))
    }
}

/// `ns/name:port` from a kube-proxy comment (`"ns/name:port cluster IP"`, `"… external IP"`,
/// `"… loadbalancer IP"`); `None` for its other comments (`"kubernetes service nodeports; …"`).
pub fn service_name(comment: &str) -> Option<String> {
    let first = comment.split_whitespace().next()?;
    let (ns, name) = first.split_once('/')?;
    (!ns.is_empty() && !name.is_empty()).then(|| first.to_string())
}

/// `ns/name:port` from the chain kube-proxy's nftables mode sends a Service port to:
/// `service-HASH-ns/name/proto/portname` (HASH is 8 characters).
pub fn name_from_chain(chain: &str) -> Option<String> {
    let rest = chain.strip_prefix("service-")?;
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

/// Reads every Service of the calling thread's network namespace: kube-proxy's nftables mode
/// (`table ip/ip6 kube-proxy`, map `service-ips`) and its iptables mode through iptables-nft
/// and iptables-legacy rules (a node uses one of them; stale rules of another are merged in).
pub fn read() -> Result<ServiceMap, ServiceError> {
    let mut map = ServiceMap::new();
    for family in [nft::NFPROTO_IPV4, nft::NFPROTO_IPV6] {
        let name = if family == nft::NFPROTO_IPV6 {
            "ip6"
        } else {
            "ip"
        };
        let rules = nft::read_services(family).map_err(|source| ServiceError::Nftables {
            family: name,
            source,
        })?;
        let elements =
            nft::read_service_map(family).map_err(|source| ServiceError::NftablesMode {
                family: name,
                source,
            })?;
        map.extend(rules.into_iter().chain(elements));
    }
    for family in [xt::Family::Ipv4, xt::Family::Ipv6] {
        match xt::read_legacy_nat(family) {
            Ok(Some(table)) => map.extend(table.services),
            Ok(None) => {}
            Err(source) => {
                return Err(ServiceError::Legacy {
                    backend: family.backend(),
                    source,
                });
            }
        }
    }
    Ok(map)
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
        // Other kube-proxy chains, and a hash of another length.
        for other in [
            "services",
            "external-NWBZK7IH-kube-system/kube-dns/tcp/dns-tcp",
            "service-SHORT-a/b/tcp/p",
            "service-NWBZK7IH-kube-system/kube-dns",
        ] {
            assert_eq!(name_from_chain(other), None, "{other}");
        }
        assert_eq!(
            name_from_port_path("default/web/tcp/http").as_deref(),
            Some("default/web:http")
        );
    }

    #[test]
    fn a_rule_needs_every_part_to_name_a_service() {
        let full = ServiceMatch {
            proto: Some(6),
            daddr: Some("10.96.0.10".parse().unwrap()),
            dport: Some(53),
            comment: Some("kube-system/kube-dns:dns-tcp cluster IP".into()),
        };
        assert_eq!(
            full.entry(),
            Some((
                (6, "10.96.0.10".parse().unwrap(), 53),
                "kube-system/kube-dns:dns-tcp".to_string()
            ))
        );
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
            assert_eq!(partial.entry(), None, "{partial:?}");
        }
    }
}
