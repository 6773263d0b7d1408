//! Synthetic attempts for every catalog entry and every look-alike: the evidence that names an
//! issue, and the near-misses that must not.

use std::net::SocketAddr;

use super::*;
use crate::{
    enrich::{CounterEvidence, CtInfo, DropRecord, IPS_CONFIRMED, IPS_SRC_NAT},
    event::SockKey,
    flow::{Direction, MatchedDrop, Outcome},
    packet::{FiveTuple, Packet, TcpFlags, Vxlan},
};

const S: u64 = 1_000_000_000;
const CLIENT_NS: u32 = 100;
const ROUTER_NS: u32 = 200;

fn client() -> SocketAddr {
    "10.244.0.11:20000".parse().unwrap()
}
fn server() -> SocketAddr {
    "172.16.0.2:8080".parse().unwrap()
}
fn tcp(src: SocketAddr, dst: SocketAddr) -> FiveTuple {
    FiveTuple { proto: 6, src, dst }
}
fn syn(t: FiveTuple) -> Packet {
    Packet {
        tuple: t,
        tcp_flags: Some(TcpFlags(TcpFlags::SYN)),
        udp_checksum: None,
        vxlan: None,
    }
}

/// An attempt established after SYN retransmits at `retx` seconds.
fn attempt(retx: &[f64], drops: Vec<MatchedDrop>) -> Attempt {
    let retransmits: Vec<u64> = retx.iter().map(|s| (s * 1e9) as u64).collect();
    Attempt {
        sock: SockKey {
            netns: CLIENT_NS,
            skaddr: 1,
        },
        tgid: 1,
        comm: "app".into(),
        src: client(),
        dst: server(),
        start_ns: 0,
        end_ns: retransmits.last().copied().unwrap_or(S / 2) + 2_000_000,
        outcome: Outcome::Established,
        retransmits,
        drops,
        cpu: 0,
    }
}

fn drop_rec(reason: &str, location: &str, netns: u32, packet: Packet) -> DropRecord {
    DropRecord {
        ts_ns: 300_000,
        cpu: 1,
        netns,
        ifindex: 4,
        reason: reason.into(),
        location: location.into(),
        len: 60,
        packet: Some(packet),
        ct: None,
        counters: None,
        hook: None,
        ipvs_dest: None,
    }
}

fn matched(drop: DropRecord, via_vxlan: bool, via_nat: bool) -> MatchedDrop {
    MatchedDrop {
        drop,
        direction: Direction::Forward,
        via_vxlan,
        via_nat,
        repeats: 0,
    }
}

/// The B signature: the SYN, SNATed to the router's address with the same port, dropped at
/// conntrack confirm, with its unconfirmed entry.
fn snat_clash_drop(counters: Option<CounterEvidence>) -> MatchedDrop {
    let nat_src: SocketAddr = "172.16.0.1:20000".parse().unwrap();
    let mut d = drop_rec(
        "NETFILTER_DROP",
        "nf_hook_slow+0x7d",
        ROUTER_NS,
        syn(tcp(nat_src, server())),
    );
    d.ct = Some(Box::new(CtInfo {
        status: IPS_SRC_NAT,
        orig: tcp(client(), server()),
        reply: tcp(server(), nat_src),
    }));
    d.counters = counters;
    matched(d, false, true)
}

fn vxlan_csum_drop() -> MatchedDrop {
    let outer = FiveTuple {
        proto: 17,
        src: "10.0.0.1:53248".parse().unwrap(),
        dst: "10.0.0.2:4789".parse().unwrap(),
    };
    let p = Packet {
        tuple: outer,
        tcp_flags: None,
        udp_checksum: Some(0xffff),
        vxlan: Some(Vxlan {
            vni: 42,
            inner: Some(Box::new(syn(tcp(client(), server())))),
        }),
    };
    matched(
        drop_rec("UDP_CSUM", "udp_queue_rcv_one_skb+0x153", 300, p),
        true,
        false,
    )
}

/// Node facts as a table; the IPVS table, where given, is ROUTER_NS's at `server()`.
type Facts = crate::testkit::FakeNode;

fn judge(a: &Attempt, facts: &Facts) -> Verdict {
    Judge {
        attempt: a,
        node: facts,
    }
    .verdict()
    .expect("some verdict")
}

fn offload_facts() -> Facts {
    Facts {
        masq: Some((1, 0)),
        vxlan: Some(vec!["vxlan.calico".into()]),
        udp_timeout: Some(30),
        ..Facts::default()
    }
}

#[test]
fn snat_clash_with_counters_and_plain_masquerade_is_high() {
    let a = attempt(
        &[1.02],
        vec![snat_clash_drop(Some(CounterEvidence {
            insert_failed: 1,
            drop: 1,
        }))],
    );
    let v = judge(
        &a,
        &Facts {
            masq: Some((1, 1)),
            ..Facts::default()
        },
    );
    assert_eq!(v.issue, "snat-port-clash");
    assert_eq!(v.confidence, Confidence::High, "{v:#?}");
    assert!(
        v.evidence
            .iter()
            .any(|e| e.contains("SNAT to 172.16.0.1:20000"))
    );
    assert!(v.evidence.iter().any(|e| e.contains("insert_failed +1")));
    assert!(v.missing.is_empty());
}

#[test]
fn snat_clash_without_counters_or_facts_is_lower_and_says_what_is_missing() {
    let a = attempt(&[1.02], vec![snat_clash_drop(None)]);
    let v = judge(&a, &Facts::default());
    assert_eq!(v.issue, "snat-port-clash");
    assert_eq!(v.confidence, Confidence::Low);
    assert_eq!(v.missing.len(), 2, "{v:#?}");
    // Only fully-random rules: the clash is still named, but the node fact does not fit.
    let a = attempt(
        &[1.02],
        vec![snat_clash_drop(Some(CounterEvidence {
            insert_failed: 1,
            drop: 1,
        }))],
    );
    let v = judge(
        &a,
        &Facts {
            masq: Some((1, 0)),
            ..Facts::default()
        },
    );
    assert_eq!(v.confidence, Confidence::Medium);
}

#[test]
fn a_confirmed_or_un_natted_hook_drop_is_not_a_clash() {
    let mut d = snat_clash_drop(None);
    if let Some(ct) = d.drop.ct.as_mut() {
        ct.status |= IPS_CONFIRMED;
    }
    let v = judge(&attempt(&[1.0], vec![d]), &Facts::default());
    assert_eq!(v.issue, "netfilter-drop");
    let mut d = snat_clash_drop(None);
    d.drop.ct = None;
    // Untracked but no conntrack counter evidence: a 5.10 rule drop looks like this.
    let v = judge(&attempt(&[1.0], vec![d.clone()]), &Facts::default());
    assert_eq!(v.issue, "netfilter-drop");
    d.drop.counters = Some(CounterEvidence {
        insert_failed: 0,
        drop: 1,
    });
    let v = judge(&attempt(&[1.0], vec![d]), &Facts::default());
    assert_eq!(v.issue, "conntrack-table-full");
}

#[test]
fn first_syn_rule_drop_is_a_rule_not_a_clash() {
    // Look-alike of B: 1 s, NETFILTER_DROP, but from the rule table.
    let mut d = drop_rec(
        "NETFILTER_DROP",
        "nft_do_chain+0x3e8",
        ROUTER_NS,
        syn(tcp(client(), server())),
    );
    d.ct = Some(Box::new(CtInfo {
        status: 0,
        orig: tcp(client(), server()),
        reply: tcp(server(), client()),
    }));
    let v = judge(
        &attempt(&[1.03], vec![matched(d, false, false)]),
        &Facts {
            masq: Some((1, 1)),
            ..Facts::default()
        },
    );
    assert_eq!(v.issue, "netfilter-rule-drop");
    assert_eq!(v.confidence, Confidence::High);
    let d = drop_rec(
        "NETFILTER_DROP",
        "ipt_do_table+0x2a1",
        ROUTER_NS,
        syn(tcp(client(), server())),
    );
    let v = judge(
        &attempt(&[1.0, 3.0], vec![matched(d, false, false)]),
        &Facts::default(),
    );
    assert_eq!(v.issue, "netfilter-rule-drop");
    assert_eq!(v.confidence, Confidence::Medium, "one drop for two retries");
}

#[test]
fn vxlan_receiver_drop_with_offload_and_one_rto_is_high() {
    let v = judge(&attempt(&[1.03], vec![vxlan_csum_drop()]), &offload_facts());
    assert_eq!(v.issue, "vxlan-csum-offload");
    assert_eq!(v.confidence, Confidence::High, "{v:#?}");
    assert!(
        v.evidence
            .iter()
            .any(|e| e.contains("udp 10.0.0.1:53248 -> 10.0.0.2:4789"))
    );
}

#[test]
fn vxlan_63_s_ladder_before_6_5_and_67_s_after() {
    // < 6.5: 1, 3, 7, 15, 31, 63 — gaps 1, 2, 4, 8, 16, 32: the first gap > 30 s escapes.
    let old = attempt(&[1.0, 3.0, 7.0, 15.0, 31.0, 63.0], vec![vxlan_csum_drop()]);
    let v = judge(&old, &offload_facts());
    assert_eq!(v.issue, "vxlan-csum-offload");
    assert_eq!(v.confidence, Confidence::High, "{v:#?}");
    // ≥ 6.5: 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 — the 35→67 gap is the first above 30 s.
    let new = attempt(
        &[1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 11.0, 19.0, 35.0, 67.0],
        vec![vxlan_csum_drop()],
    );
    assert_eq!(judge(&new, &offload_facts()).confidence, Confidence::High);
    // Escaping on a retransmit that does not fit the rule lowers confidence.
    let odd = attempt(&[1.0, 3.0, 7.0], vec![vxlan_csum_drop()]);
    let v = judge(&odd, &offload_facts());
    assert_eq!(v.issue, "vxlan-csum-offload");
    assert_eq!(v.confidence, Confidence::Medium);
    // A longer UDP timeout moves the escape point.
    let f = Facts {
        udp_timeout: Some(40),
        ..offload_facts()
    };
    assert_eq!(judge(&old, &f).confidence, Confidence::Medium);
}

#[test]
fn vxlan_sender_side_only_is_at_most_medium() {
    let v = judge(&attempt(&[1.03], vec![]), &offload_facts());
    assert_eq!(v.issue, "vxlan-csum-offload");
    assert_eq!(v.confidence, Confidence::Medium);
    // Offload off: just an unanswered SYN.
    let f = Facts {
        vxlan: Some(vec![]),
        ..offload_facts()
    };
    assert_eq!(judge(&attempt(&[1.03], vec![]), &f).issue, "unanswered-syn");
}

#[test]
fn plain_loss_and_other_look_alikes() {
    // Unanswered SYN, with nothing known about the node.
    let v = judge(&attempt(&[1.0], vec![]), &Facts::default());
    assert_eq!(v.issue, "unanswered-syn");
    assert_eq!(v.confidence, Confidence::Low);
    // A UDP_CSUM drop that is not VXLAN is not C.
    let mut d = vxlan_csum_drop();
    if let Some(p) = d.drop.packet.as_mut() {
        p.vxlan = None;
    }
    assert!(
        Judge {
            attempt: &attempt(&[1.0], vec![d]),
            node: &offload_facts()
        }
        .verdict()
        .is_none()
    );
    // Listen overflow.
    let d = drop_rec(
        "TCP_LISTEN_OVERFLOW",
        "tcp_conn_request+0x12",
        300,
        syn(tcp(client(), server())),
    );
    let v = judge(
        &attempt(&[1.0], vec![matched(d, false, false)]),
        &Facts::default(),
    );
    assert_eq!(v.issue, "listen-overflow");
    // Conntrack table full: untracked hook drop, drop counter up, insert_failed flat.
    let mut d = drop_rec(
        "NETFILTER_DROP",
        "nf_hook_slow+0x7d",
        ROUTER_NS,
        syn(tcp(client(), server())),
    );
    d.counters = Some(CounterEvidence {
        insert_failed: 0,
        drop: 1,
    });
    let v = judge(
        &attempt(&[1.0], vec![matched(d, false, false)]),
        &Facts::default(),
    );
    assert_eq!(v.issue, "conntrack-table-full");
    assert_eq!(v.confidence, Confidence::High);
}

fn listener(queue: Option<u32>) -> crate::facts::ListenEvidence {
    crate::facts::ListenEvidence {
        netns: 300,
        listener: "0.0.0.0:8080".parse().unwrap(),
        overflows: 4,
        drops: 4,
        accept_queue: queue,
        process: Some("server[42]".into()),
    }
}

#[test]
fn listen_overflow_from_the_listeners_counters() {
    // A SYN refused for a full accept queue leaves no drop, only the listener's counters.
    let f = Facts {
        listen: Some((listener(Some(2)), S / 2)),
        ..Facts::default()
    };
    let v = judge(&attempt(&[1.0], vec![]), &f);
    assert_eq!(v.issue, "listen-overflow");
    assert_eq!(v.confidence, Confidence::High);
    assert!(
        v.evidence[1].contains("listener 0.0.0.0:8080 in netns 300 (server[42])"),
        "{:?}",
        v.evidence
    );
    assert!(
        v.evidence[1].contains("ListenOverflows +4"),
        "{:?}",
        v.evidence
    );
    // The queue read empty (the server caught up): still named, one level less.
    let f = Facts {
        listen: Some((listener(Some(0)), S / 2)),
        ..Facts::default()
    };
    let v = judge(&attempt(&[1.0], vec![]), &f);
    assert_eq!(v.issue, "listen-overflow");
    assert_eq!(v.confidence, Confidence::Medium);
    // A rise outside the attempt's window is not this attempt's evidence.
    let f = Facts {
        listen: Some((listener(Some(2)), 10 * S)),
        ..Facts::default()
    };
    assert_eq!(judge(&attempt(&[1.0], vec![]), &f).issue, "unanswered-syn");
    // Without a SYN retransmit there is nothing to explain.
    let f = Facts {
        listen: Some((listener(Some(2)), S / 4)),
        ..Facts::default()
    };
    assert_eq!(judge(&attempt(&[], vec![]), &f).issue, "slow-handshake");
    // A firewall drop of the SYN is the more specific evidence.
    let d = drop_rec(
        "NETFILTER_DROP",
        "nft_do_chain+0x46f",
        300,
        syn(tcp(client(), server())),
    );
    let f = Facts {
        listen: Some((listener(Some(2)), S / 2)),
        ..Facts::default()
    };
    assert_eq!(
        judge(&attempt(&[1.0], vec![matched(d, false, false)]), &f).issue,
        "netfilter-rule-drop"
    );
}

#[test]
fn ipvs_entries_need_ipvs_evidence() {
    // Without IPVS hook evidence (this kernel has none), a 1 s hook drop is never called A.
    let d = snat_clash_drop(None);
    let v = judge(&attempt(&[1.0], vec![d]), &Facts::default());
    assert_ne!(v.issue, "ipvs-conn-reuse");
    assert!(CATALOG.iter().any(|e| e.id == "ipvs-conn-reuse"));
}

#[test]
fn drop_lines() {
    let v = drop_verdict(&vxlan_csum_drop().drop).expect("receiver verdict");
    assert_eq!(v.issue, "vxlan-csum-offload");
    assert!(v.evidence[0].contains("inner tcp 10.244.0.11:20000 -> 172.16.0.2:8080 [SYN]"));
    let dns = drop_rec(
        "NETFILTER_DROP",
        "nf_hook_slow+0x7d",
        1,
        Packet {
            tuple: FiveTuple {
                proto: 17,
                src: "10.244.0.11:40000".parse().unwrap(),
                dst: "10.96.0.10:53".parse().unwrap(),
            },
            tcp_flags: None,
            udp_checksum: Some(1),
            vxlan: None,
        },
    );
    assert_eq!(drop_verdict(&dns).map(|v| v.issue), Some("dns-timeout"));
    let plain = drop_rec(
        "NETFILTER_DROP",
        "nft_do_chain+1",
        1,
        syn(tcp(client(), server())),
    );
    assert_eq!(drop_verdict(&plain), None);
}

#[test]
fn catalog_ids_are_the_documented_ones() {
    let ids: std::collections::BTreeSet<&str> =
        CATALOG.iter().chain(DROP_CATALOG).map(|e| e.id).collect();
    for id in [
        "ipvs-conn-reuse",
        "ipvs-weight-zero",
        "ipvs-stale-realserver",
        "snat-port-clash",
        "vxlan-csum-offload",
        "netfilter-rule-drop",
        "listen-overflow",
        "conntrack-table-full",
        "unanswered-syn",
        "dns-timeout",
    ] {
        assert!(ids.contains(id), "{id} missing from the catalog");
    }
}

/// An IPVS drop of the SYN (hook evidence from the kretprobe), optionally after IPVS expired a
/// connection to a real server in `dest` state.
fn ipvs_drop(dest: Option<crate::enrich::IpvsDest>) -> MatchedDrop {
    let mut d = drop_rec(
        "NETFILTER_DROP",
        "nf_hook_slow+0xaa",
        ROUTER_NS,
        syn(tcp(client(), server())),
    );
    d.hook = Some("ipvs");
    d.ipvs_dest = dest;
    matched(d, false, false)
}

#[test]
fn ipvs_reuse_weight_zero_and_stale_need_the_ipvs_hook() {
    use crate::enrich::IpvsDest;
    let live = IpvsDest {
        weight: Some(1),
        available: Some(true),
    };
    let v = judge(
        &attempt(&[1.01], vec![ipvs_drop(Some(live))]),
        &Facts::default(),
    );
    assert_eq!(v.issue, "ipvs-conn-reuse");
    assert_eq!(v.confidence, Confidence::High);
    // Without IPVS BTF (5.10) the weight is unknown: still A, one level lower, and it says why.
    let unknown = IpvsDest {
        weight: None,
        available: None,
    };
    let v = judge(
        &attempt(&[1.01], vec![ipvs_drop(Some(unknown))]),
        &Facts::default(),
    );
    assert_eq!(v.issue, "ipvs-conn-reuse");
    assert_eq!(v.confidence, Confidence::Medium);
    assert!(v.missing[0].contains("no IPVS BTF"));
    let zero = IpvsDest {
        weight: Some(0),
        available: Some(true),
    };
    let v = judge(
        &attempt(&[1.01], vec![ipvs_drop(Some(zero))]),
        &Facts::default(),
    );
    assert_eq!(v.issue, "ipvs-weight-zero");
    // Every SYN dropped by IPVS with no expiry: a stale real server.
    let v = judge(
        &attempt(&[1.0, 3.0, 7.0], vec![ipvs_drop(None), ipvs_drop(None)]),
        &Facts::default(),
    );
    assert_eq!(v.issue, "ipvs-stale-realserver");
    // A conntrack-confirm kretprobe names B even without the conntrack entry.
    let mut d = ipvs_drop(None);
    d.drop.hook = Some("conntrack-confirm");
    let v = judge(&attempt(&[1.0], vec![d]), &Facts::default());
    assert_eq!(v.issue, "snat-port-clash");
}

fn real_server(addr: &str, weight: u32) -> RealServer {
    RealServer {
        addr: addr.parse().unwrap(),
        weight,
        active_conns: 1,
        inactive_conns: 0,
    }
}

#[test]
fn ipvs_weight_zero_from_node_state_when_the_kernel_gives_no_weight() {
    use crate::enrich::IpvsDest;
    // 5.10 without IPVS BTF: the expiry carries no weight.
    let unknown = Some(IpvsDest {
        weight: None,
        available: None,
    });
    let rolling = Facts {
        ipvs: Some(vec![
            real_server("10.0.1.2:8080", 0),
            real_server("10.0.2.2:8080", 1),
        ]),
        ipvs_vip: Some((ROUTER_NS, server())),
        ..Facts::default()
    };
    let v = judge(&attempt(&[1.01], vec![ipvs_drop(unknown)]), &rolling);
    assert_eq!(v.issue, "ipvs-weight-zero");
    // Node state at verdict time, not the expired connection's own server: one level less.
    assert_eq!(v.confidence, Confidence::Medium);
    let text = v.evidence.join(" | ");
    assert!(text.contains("10.0.1.2:8080 with weight 0"), "{text}");
    assert!(text.contains("node state read at verdict time"), "{text}");
    assert!(text.contains("172.16.0.2:8080"), "{text}");
    assert!(v.missing.iter().any(|m| m.contains("no IPVS BTF")), "{v:?}");

    // Every real server of the service still has weight: the reuse case.
    let steady = Facts {
        ipvs: Some(vec![
            real_server("10.0.1.2:8080", 1),
            real_server("10.0.2.2:8080", 1),
        ]),
        ipvs_vip: Some((ROUTER_NS, server())),
        ..Facts::default()
    };
    let v = judge(&attempt(&[1.01], vec![ipvs_drop(unknown)]), &steady);
    assert_eq!(v.issue, "ipvs-conn-reuse");

    // A weight from the kernel wins over the node's table either way.
    let live = Some(IpvsDest {
        weight: Some(1),
        available: Some(true),
    });
    let v = judge(&attempt(&[1.01], vec![ipvs_drop(live)]), &rolling);
    assert_eq!(v.issue, "ipvs-conn-reuse");
    let zero = Some(IpvsDest {
        weight: Some(0),
        available: Some(true),
    });
    let v = judge(&attempt(&[1.01], vec![ipvs_drop(zero)]), &steady);
    assert_eq!(v.issue, "ipvs-weight-zero");
    assert_eq!(v.confidence, Confidence::High);

    // The table of another service (or netns) does not count.
    let mut d = ipvs_drop(unknown);
    d.drop.netns = CLIENT_NS;
    let v = judge(&attempt(&[1.01], vec![d]), &rolling);
    assert_eq!(v.issue, "ipvs-conn-reuse");
}

#[test]
fn rule_drop_named_by_the_table_hook_without_drop_reasons() {
    // < 5.17: the rule's drop is freed in nf_hook_slow; nft_do_chain's NF_DROP names it.
    let mut d = drop_rec(
        "NETFILTER_DROP",
        "nf_hook_slow+0xa4",
        ROUTER_NS,
        syn(tcp(client(), server())),
    );
    let without = judge(
        &attempt(&[1.0], vec![matched(d.clone(), false, false)]),
        &Facts::default(),
    );
    assert_eq!(without.issue, "netfilter-drop");
    for hook in ["nft_do_chain", "ipt_do_table"] {
        d.hook = Some(hook);
        let v = judge(
            &attempt(&[1.0], vec![matched(d.clone(), false, false)]),
            &Facts::default(),
        );
        assert_eq!(v.issue, "netfilter-rule-drop", "{hook}");
        assert_eq!(v.confidence, Confidence::High);
        assert!(
            v.evidence[1].contains(&format!("hook {hook} returned NF_DROP")),
            "{v:?}"
        );
    }
    // Another hook's NF_DROP (conntrack confirm of an untracked packet) is not a rule's.
    d.hook = Some("conntrack-confirm");
    let v = judge(
        &attempt(&[1.0], vec![matched(d, false, false)]),
        &Facts::default(),
    );
    assert_ne!(v.issue, "netfilter-rule-drop");
}

/// A dropped SYN answered 1 s later was resent even when no retransmit event came; answered
/// sooner than the smallest RTO, or never answered, or with nothing dropped, nothing is inferred.
#[test]
fn an_unreported_resend_is_inferred_only_from_an_answered_dropped_syn() {
    let clash = || {
        snat_clash_drop(Some(CounterEvidence {
            insert_failed: 1,
            drop: 1,
        }))
    };
    let mut a = attempt(&[], vec![clash()]);
    a.end_ns = S + 2_000_000;
    assert!(resend_unseen(&a));
    let v = judge(
        &a,
        &Facts {
            masq: Some((1, 1)),
            ..Facts::default()
        },
    );
    assert_eq!(v.issue, "snat-port-clash", "{v:#?}");
    assert_eq!(v.confidence, Confidence::High, "{v:#?}");
    assert!(
        v.evidence.iter().any(|e| e.contains("sent again")),
        "{v:#?}"
    );

    let mut fast = a.clone();
    fast.end_ns = 150_000_000;
    assert!(!resend_unseen(&fast));
    let mut unanswered = a.clone();
    unanswered.outcome = Outcome::Timeout;
    assert!(!resend_unseen(&unanswered));
    let mut seen = attempt(&[1.0], vec![clash()]);
    seen.end_ns = S + 2_000_000;
    assert!(!resend_unseen(&seen));
    let mut no_drop = a.clone();
    no_drop.drops.clear();
    assert!(!resend_unseen(&no_drop));
    assert_eq!(judge(&no_drop, &Facts::default()).issue, "slow-handshake");
}

fn no_endpoint(action: NoEndpointAction) -> Facts {
    use crate::facts::NoEndpointWhy;
    let why = match action {
        NoEndpointAction::Drop => NoEndpointWhy::NoLocalInternal,
        NoEndpointAction::Reject => NoEndpointWhy::NoEndpoints,
    };
    Facts {
        no_endpoint: Some((
            ROUTER_NS,
            server(),
            NoEndpointRule {
                service: "shop/cart:http".into(),
                action,
                why,
                rule: "iptables-nft filter KUBE-SERVICES".into(),
            },
        )),
        ..Facts::default()
    }
}

fn rule_drop(location: &str, netns: u32) -> MatchedDrop {
    matched(
        drop_rec(
            "NETFILTER_DROP",
            location,
            netns,
            syn(tcp(client(), server())),
        ),
        false,
        false,
    )
}

#[test]
fn kube_proxy_no_endpoint_drop_names_the_service_and_why() {
    for location in ["nft_do_chain+0x3e8", "ipt_do_table+0x2a1"] {
        let a = attempt(&[1.0], vec![rule_drop(location, ROUTER_NS)]);
        let v = judge(&a, &no_endpoint(NoEndpointAction::Drop));
        assert_eq!(v.issue, "service-no-endpoints", "{location}");
        assert_eq!(v.confidence, Confidence::High, "{v:#?}");
        assert!(
            v.evidence.iter().any(|e| e.contains("shop/cart:http")
                && e.contains("internalTrafficPolicy=Local")
                && e.contains("drops")),
            "{v:#?}"
        );
    }
}

#[test]
fn a_rule_drop_without_kube_proxy_s_rule_stays_a_rule_drop() {
    let a = attempt(&[1.0], vec![rule_drop("nft_do_chain+1", ROUTER_NS)]);
    // The no-endpoint rule is in another namespace than the drop, for another destination,
    // or is a reject: the drop is some other rule's.
    let mut elsewhere = no_endpoint(NoEndpointAction::Drop);
    if let Some(ne) = elsewhere.no_endpoint.as_mut() {
        ne.0 = CLIENT_NS;
    }
    let mut other_dst = no_endpoint(NoEndpointAction::Drop);
    if let Some(ne) = other_dst.no_endpoint.as_mut() {
        ne.1 = "172.16.0.2:9090".parse().unwrap();
    }
    for facts in [elsewhere, other_dst, no_endpoint(NoEndpointAction::Reject)] {
        assert_eq!(judge(&a, &facts).issue, "netfilter-rule-drop");
    }
    // A hook drop attributed to another hook (conntrack confirm, IPVS) to a no-endpoint
    // destination is not kube-proxy's rule.
    for hook in ["ipvs", "conntrack-confirm"] {
        let mut d = rule_drop("nf_hook_slow+0x7d", ROUTER_NS);
        d.drop.hook = Some(hook);
        let a = attempt(&[1.0], vec![d]);
        assert_ne!(
            judge(&a, &no_endpoint(NoEndpointAction::Drop)).issue,
            "service-no-endpoints",
            "{hook}"
        );
    }
}

#[test]
fn an_unattributed_hook_drop_to_a_no_endpoint_destination_is_named_at_medium() {
    // iptables-legacy on a kernel without kprobes: the rule's drop is freed in nf_hook_slow.
    let a = attempt(&[1.0], vec![rule_drop("nf_hook_slow+0x7d", ROUTER_NS)]);
    let v = judge(&a, &no_endpoint(NoEndpointAction::Drop));
    assert_eq!(v.issue, "service-no-endpoints");
    assert_eq!(v.confidence, Confidence::Medium, "{v:#?}");
    assert!(
        v.missing.iter().any(|m| m.contains("ipt_do_table")),
        "{v:#?}"
    );
    assert!(
        v.evidence.iter().any(|e| e.contains("shop/cart:http")),
        "{v:#?}"
    );
    // In another namespace than the rule, it stays a generic hook drop.
    let a = attempt(&[1.0], vec![rule_drop("nf_hook_slow+0x7d", CLIENT_NS)]);
    assert_eq!(
        judge(&a, &no_endpoint(NoEndpointAction::Drop)).issue,
        "netfilter-drop"
    );
}

#[test]
fn kube_proxy_reject_is_a_failed_connect_with_the_service() {
    // The rejected SYN's drop comes after the connect failed: none is matched.
    let mut a = attempt(&[], vec![]);
    a.outcome = Outcome::Failed;
    a.end_ns = 400_000;
    let mut facts = no_endpoint(NoEndpointAction::Reject);
    if let Some(ne) = facts.no_endpoint.as_mut() {
        ne.0 = CLIENT_NS;
    }
    let v = judge(&a, &facts);
    assert_eq!(v.issue, "service-no-endpoints");
    assert!(
        v.evidence
            .iter()
            .any(|e| e.contains("shop/cart:http") && e.contains("rejects")),
        "{v:#?}"
    );
    // A connect that retried first, or established, is not this.
    let mut retried = a.clone();
    retried.retransmits = vec![S];
    assert_ne!(
        Judge {
            attempt: &retried,
            node: &facts
        }
        .verdict()
        .map(|v| v.issue),
        Some("service-no-endpoints")
    );
    // A refused connect without kube-proxy's rule gets no verdict.
    let verdict = Judge {
        attempt: &a,
        node: &Facts::default(),
    }
    .verdict();
    assert_eq!(verdict, None);
}
