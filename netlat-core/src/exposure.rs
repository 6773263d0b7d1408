//! Exposure: per catalog entry, whether this node's configuration is exposed to the issue and
//! why (the table `netlat doctor` prints). Rules are data beside the catalog, evaluated on
//! [`NodeFacts`] alone.

use serde::Serialize;

use crate::{
    facts::{KubeProxyMode, NodeFacts, offloaded_vxlan, sysctl},
    verdict::{CATALOG, DROP_CATALOG},
};

/// One condition of an exposure rule.
#[derive(Debug, Clone, Copy)]
pub enum Cond {
    /// kube-proxy runs in IPVS mode (or IPVS services exist).
    IpvsInUse,
    /// A sysctl has this value.
    SysctlIs(&'static str, &'static str),
    /// The kernel is older than this version (backports are invisible: said in the text).
    KernelBelow(u32, u32, u32),
    /// A MASQUERADE/SNAT rule without fully-random exists.
    MasqueradeNotFullyRandom,
    /// Any MASQUERADE/SNAT rule exists.
    AnyMasquerade,
    /// A VXLAN device with udpcsum and tx checksum offload on exists.
    VxlanOffloaded,
    /// The conntrack table is more than 90 % full.
    ConntrackNearlyFull,
    /// kube-proxy's rules hold a no-endpoint rule (DROP: SYN retries; REJECT: refusals).
    NoEndpointRules,
}

/// When a catalog entry's issue can hit this node: every condition must hold.
pub struct ExposureRule {
    pub issue: &'static str,
    pub when: &'static [Cond],
}

/// Exposure rules, one per catalog id that depends on node configuration.
pub static EXPOSURE: &[ExposureRule] = &[
    ExposureRule {
        issue: "ipvs-conn-reuse",
        when: &[
            Cond::IpvsInUse,
            Cond::SysctlIs("net.ipv4.vs.conn_reuse_mode", "1"),
            Cond::SysctlIs("net.ipv4.vs.conntrack", "1"),
            Cond::KernelBelow(5, 9, 0),
        ],
    },
    ExposureRule {
        issue: "ipvs-weight-zero",
        when: &[
            Cond::IpvsInUse,
            Cond::SysctlIs("net.ipv4.vs.expire_nodest_conn", "1"),
            Cond::SysctlIs("net.ipv4.vs.conntrack", "1"),
        ],
    },
    ExposureRule {
        issue: "ipvs-stale-realserver",
        when: &[
            Cond::IpvsInUse,
            Cond::SysctlIs("net.ipv4.vs.conn_reuse_mode", "0"),
            Cond::KernelBelow(5, 16, 0),
        ],
    },
    ExposureRule {
        issue: "snat-port-clash",
        when: &[Cond::MasqueradeNotFullyRandom],
    },
    ExposureRule {
        issue: "vxlan-csum-offload",
        when: &[Cond::VxlanOffloaded, Cond::AnyMasquerade],
    },
    ExposureRule {
        issue: "conntrack-table-full",
        when: &[Cond::ConntrackNearlyFull],
    },
    ExposureRule {
        issue: "service-no-endpoints",
        when: &[Cond::NoEndpointRules],
    },
];

/// Whether a condition holds on `f` (`None`: cannot tell), with the reason in words.
fn eval(c: Cond, f: &NodeFacts) -> (Option<bool>, String) {
    match c {
        Cond::IpvsInUse => {
            let on = f.kube_proxy.mode == KubeProxyMode::Ipvs
                || f.kube_proxy.ipvs_services.is_some_and(|n| n > 0);
            (
                Some(on),
                format!(
                    "kube-proxy mode {:?}, IPVS services {}",
                    f.kube_proxy.mode,
                    f.kube_proxy
                        .ipvs_services
                        .map_or("n/a".to_string(), |n| n.to_string())
                ),
            )
        }
        Cond::SysctlIs(name, want) => match sysctl(f, name) {
            Some(v) => (Some(v == want), format!("{name} = {v}")),
            None => (None, format!("{name} not present")),
        },
        Cond::KernelBelow(a, b, c) => (
            Some(!f.kernel.at_least(a, b, c)),
            format!(
                "kernel {} {} {a}.{b}.{c}{}",
                f.kernel.release,
                if f.kernel.at_least(a, b, c) {
                    "≥"
                } else {
                    "<"
                },
                if f.kernel.at_least(a, b, c) {
                    ""
                } else {
                    " (a distribution backport may already fix it)"
                }
            ),
        ),
        Cond::MasqueradeNotFullyRandom => {
            let bad: Vec<&str> = f
                .nat_rules
                .iter()
                .filter(|r| !r.fully_random)
                .map(|r| r.text.as_str())
                .collect();
            (
                Some(!bad.is_empty()),
                if bad.is_empty() {
                    format!("{} NAT rule(s), all fully random", f.nat_rules.len())
                } else {
                    format!("NAT rule(s) without fully-random: {}", bad.join(" | "))
                },
            )
        }
        Cond::AnyMasquerade => (
            Some(!f.nat_rules.is_empty()),
            format!("{} MASQUERADE/SNAT rule(s)", f.nat_rules.len()),
        ),
        Cond::VxlanOffloaded => {
            let devs = offloaded_vxlan(f);
            (
                Some(!devs.is_empty()),
                if devs.is_empty() {
                    format!(
                        "{} VXLAN device(s), none with udpcsum and tx checksum offload on",
                        f.vxlan.len()
                    )
                } else {
                    format!(
                        "VXLAN {} with udpcsum and tx checksum offload on",
                        devs.join(", ")
                    )
                },
            )
        }
        Cond::NoEndpointRules => {
            let rules = &f.kube_proxy.no_endpoint_rules;
            let Some(read) = f.kube_proxy.services else {
                return (None, "kube-proxy's rules could not be read".to_string());
            };
            if rules.is_empty() {
                return (
                    Some(false),
                    format!("no kube-proxy no-endpoint rule ({read} Service ports named)"),
                );
            }
            let shown: Vec<String> = rules
                .iter()
                .take(10)
                .map(|r| {
                    format!(
                        "{} {} ({})",
                        r.service,
                        match r.action {
                            crate::facts::NoEndpointAction::Drop => "drop",
                            crate::facts::NoEndpointAction::Reject => "reject",
                        },
                        r.rule
                    )
                })
                .collect();
            let more = rules.len().saturating_sub(shown.len());
            (
                Some(true),
                format!(
                    "{} Service port(s) without usable endpoints now: {}{}",
                    rules.len(),
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ),
            )
        }
        Cond::ConntrackNearlyFull => {
            let n = |k: &str| sysctl(f, k).and_then(|v| v.parse::<u64>().ok());
            match (
                n("net.netfilter.nf_conntrack_count"),
                n("net.netfilter.nf_conntrack_max"),
            ) {
                (Some(c), Some(m)) if m > 0 => (
                    Some(c * 10 > m * 9),
                    format!("conntrack table {c} of {m} entries"),
                ),
                _ => (None, "conntrack table size unknown".to_string()),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Exposed {
    Yes,
    No,
    Unknown,
    /// The issue does not depend on node configuration (a look-alike).
    #[serde(rename = "n/a")]
    NotApplicable,
}

/// One row of `netlat doctor`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Exposure {
    pub issue: &'static str,
    pub title: &'static str,
    pub exposed: Exposed,
    pub why: Vec<String>,
    pub remedy: &'static str,
    pub references: &'static [&'static str],
}

/// Exposure of this node to every catalog id (in catalog order, each id once).
pub fn exposure(f: &NodeFacts) -> Vec<Exposure> {
    let mut out: Vec<Exposure> = Vec::new();
    for e in CATALOG.iter().chain(DROP_CATALOG) {
        if out.iter().any(|x| x.issue == e.id) {
            continue;
        }
        let (exposed, why) = match EXPOSURE.iter().find(|r| r.issue == e.id) {
            None => (Exposed::NotApplicable, Vec::new()),
            Some(rule) => {
                let results: Vec<(Option<bool>, String)> =
                    rule.when.iter().map(|c| eval(*c, f)).collect();
                let exposed = if results.iter().any(|(v, _)| *v == Some(false)) {
                    Exposed::No
                } else if results.iter().all(|(v, _)| *v == Some(true)) {
                    Exposed::Yes
                } else {
                    Exposed::Unknown
                };
                (exposed, results.into_iter().map(|(_, w)| w).collect())
            }
        };
        out.push(Exposure {
            issue: e.id,
            title: e.title,
            exposed,
            why,
            remedy: e.remedy,
            references: e.references,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{KernelVersion, NatKind, NatRule, UDP_TIMEOUT, VxlanDev};
    use crate::verdict::NodeView;

    fn facts() -> NodeFacts {
        let mut f = NodeFacts {
            kernel: KernelVersion::parse("6.18.44").unwrap(),
            ..NodeFacts::default()
        };
        f.sysctls.insert(UDP_TIMEOUT.into(), Some("30".into()));
        f
    }

    fn masq(fully_random: bool) -> NatRule {
        NatRule {
            backend: "nftables".into(),
            table: "ip nat".into(),
            chain: "post".into(),
            kind: NatKind::Masquerade,
            fully_random,
            random: false,
            to: None,
            text: if fully_random {
                "masquerade fully-random".into()
            } else {
                "masquerade".into()
            },
        }
    }

    fn row(f: &NodeFacts, id: &str) -> Exposure {
        exposure(f).into_iter().find(|e| e.issue == id).unwrap()
    }

    #[test]
    fn snat_exposure_follows_randomisation() {
        let mut f = facts();
        f.nat_rules.push(masq(false));
        assert_eq!(row(&f, "snat-port-clash").exposed, Exposed::Yes);
        f.nat_rules[0] = masq(true);
        assert_eq!(row(&f, "snat-port-clash").exposed, Exposed::No);
        assert!(row(&f, "snat-port-clash").why[0].contains("all fully random"));
    }

    #[test]
    fn vxlan_exposure_needs_offload_udpcsum_and_masquerade() {
        let mut f = facts();
        f.vxlan.push(VxlanDev {
            name: "vxlan.calico".into(),
            ifindex: 3,
            vni: Some(4096),
            port: Some(4789),
            udp_csum: Some(true),
            tx_csum_offload: Some(true),
        });
        f.nat_rules.push(masq(true));
        assert_eq!(row(&f, "vxlan-csum-offload").exposed, Exposed::Yes);
        assert_eq!(f.vxlan_offloaded(0), Some(vec!["vxlan.calico".to_string()]));
        f.vxlan[0].tx_csum_offload = Some(false);
        assert_eq!(row(&f, "vxlan-csum-offload").exposed, Exposed::No);
    }

    #[test]
    fn ipvs_exposure_and_unknowns() {
        let mut f = facts();
        // No IPVS sysctls on this kernel: not exposed because IPVS is not in use.
        assert_eq!(row(&f, "ipvs-conn-reuse").exposed, Exposed::No);
        f.kube_proxy.mode = KubeProxyMode::Ipvs;
        assert_eq!(
            row(&f, "ipvs-conn-reuse").exposed,
            Exposed::No,
            "kernel ≥ 5.9"
        );
        f.kernel = KernelVersion::parse("3.10.0-1160.el7.x86_64").unwrap();
        assert_eq!(row(&f, "ipvs-conn-reuse").exposed, Exposed::Unknown);
        f.sysctls
            .insert("net.ipv4.vs.conn_reuse_mode".into(), Some("1".into()));
        f.sysctls
            .insert("net.ipv4.vs.conntrack".into(), Some("1".into()));
        assert_eq!(row(&f, "ipvs-conn-reuse").exposed, Exposed::Yes);
        assert_eq!(row(&f, "unanswered-syn").exposed, Exposed::NotApplicable);
    }

    #[test]
    fn no_endpoint_exposure_lists_the_services() {
        use crate::facts::{NoEndpointAction, NoEndpointRule, NoEndpointWhy};
        let mut f = facts();
        assert_eq!(row(&f, "service-no-endpoints").exposed, Exposed::Unknown);
        f.kube_proxy.services = Some(3);
        assert_eq!(row(&f, "service-no-endpoints").exposed, Exposed::No);
        f.kube_proxy.no_endpoint_rules.push(NoEndpointRule {
            service: "shop/cart:http".into(),
            action: NoEndpointAction::Drop,
            why: NoEndpointWhy::NoLocalInternal,
            rule: "iptables-nft filter KUBE-SERVICES".into(),
        });
        let r = row(&f, "service-no-endpoints");
        assert_eq!(r.exposed, Exposed::Yes);
        assert!(
            r.why[0].contains("shop/cart:http drop (iptables-nft filter KUBE-SERVICES)"),
            "{r:?}"
        );
    }

    #[test]
    fn every_catalog_id_appears_once() {
        let rows = exposure(&facts());
        let mut ids: Vec<&str> = rows.iter().map(|r| r.issue).collect();
        ids.dedup();
        assert_eq!(ids.len(), rows.len());
        for r in EXPOSURE {
            assert!(
                CATALOG.iter().chain(DROP_CATALOG).any(|e| e.id == r.issue),
                "exposure rule for unknown id {}",
                r.issue
            );
        }
    }
}
