//! Attribution: the known-issue catalog as data, and the engine that matches a finished
//! connection attempt (or a lone drop) against it.
//!
//! Each catalog entry lists the signals it *requires* (all must hold to name it) and the signals
//! that *support* it (each one held raises confidence; absent ones are reported as missing).
//! Confidence is `high` only when every supporting signal — kernel evidence and node facts —
//! holds, and never above the entry's `max` (an entry that can only be inferred from one side
//! says so). The first entry whose requirements hold wins, so specific entries come first and
//! the generic ones (`netfilter-drop`, `unanswered-syn`) close the list.

use std::net::SocketAddr;

use serde::Serialize;

pub use crate::enrich::CounterEvidence;
pub use crate::facts::{ListenEvidence, NoEndpointAction, NoEndpointRule, RealServer};
use crate::{
    enrich::DropRecord,
    flow::{Attempt, Direction, MatchedDrop, Outcome, ns_to_ms},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// The attribution of one slow attempt or one drop.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub issue: &'static str,
    pub title: &'static str,
    pub confidence: Confidence,
    /// What was seen that fits.
    pub evidence: Vec<String>,
    /// What would have raised confidence but was not seen.
    pub missing: Vec<String>,
    pub remedy: &'static str,
}

/// Node facts the catalog uses, per network namespace (the shell gathers them over netlink and
/// procfs; tests fake them). `None` means "not known", which is not the same as "no".
pub trait NodeView {
    /// MASQUERADE/SNAT rules in `netns`: `(rules, of which without fully-random)`.
    fn masquerade(&self, netns: u32) -> Option<(usize, usize)>;
    /// VXLAN devices in `netns` with a checksummed outer UDP header and tx checksum offload on.
    fn vxlan_offloaded(&self, netns: u32) -> Option<Vec<String>>;
    /// `net.netfilter.nf_conntrack_udp_timeout` in `netns`, seconds.
    fn udp_timeout_s(&self, netns: u32) -> Option<u64>;
    /// The Kubernetes Service (`namespace/name:port`) a TCP connect from `netns` to `dst` is
    /// addressed to, where the node knows it (kube-proxy's rules). Views without Service
    /// knowledge know none.
    fn service(&self, _netns: u32, _dst: std::net::SocketAddr) -> Option<String> {
        None
    }
    /// `dst` is an IPVS virtual service (in `netns` or the node's namespace) that no rule
    /// names: kube-proxy's IPVS mode keeps no Service names on the node.
    fn unnamed_ipvs_service(&self, _netns: u32, _dst: SocketAddr) -> bool {
        false
    }
    /// kube-proxy's no-endpoint rule for TCP connects to `dst` in `netns` (or, for a pod, the
    /// node's namespace), where the node has one.
    fn no_endpoint_rule(&self, _netns: u32, _dst: SocketAddr) -> Option<NoEndpointRule> {
        None
    }
    /// The real servers of the TCP IPVS virtual service `vip` in `netns`, as they are now
    /// (`None`: unknown, or no such service).
    fn ipvs_real_servers(&self, _netns: u32, _vip: SocketAddr) -> Option<Vec<RealServer>> {
        None
    }
    /// The listener of `dst` in a namespace of this node whose `ListenOverflows`/`ListenDrops`
    /// rose between monotonic `from_ns` and `to_ns` (the attempt's window). Views that read no
    /// counters know none.
    fn listen_overflow(
        &self,
        _dst: SocketAddr,
        _from_ns: u64,
        _to_ns: u64,
    ) -> Option<ListenEvidence> {
        None
    }
    /// Connects from `netns` leave through the node's namespace (another one) and that one has
    /// DNAT rules (kube-proxy's Services, IPVS, or any DNAT): a pod's ClusterIP connect is
    /// DNATed there, so only the node's conntrack knows where it went. Views that do not read
    /// the node say no.
    fn node_dnat(&self, _netns: u32) -> bool {
        false
    }
    /// A connect began in `netns` (by process `tgid`): a view that reads the node may start
    /// reading that namespace now, so a verdict later does not wait for it. No answer, so
    /// nothing to record or replay.
    fn prefetch(&self, _netns: u32, _tgid: u32) {}
}

/// A view that knows nothing (replays without facts, and tests).
pub struct NoFacts;

impl NodeView for NoFacts {
    fn masquerade(&self, _: u32) -> Option<(usize, usize)> {
        None
    }
    fn vxlan_offloaded(&self, _: u32) -> Option<Vec<String>> {
        None
    }
    fn udp_timeout_s(&self, _: u32) -> Option<u64> {
        None
    }
}

/// Functions that evaluate firewall rules: a drop there is a rule's DROP verdict.
const RULE_TABLES: &[&str] = &[
    "nft_do_chain",
    "ipt_do_table",
    "ip6t_do_table",
    "arpt_do_table",
    "ebt_do_table",
];
/// The generic netfilter hook runner: a drop there came from a hook's NF_DROP return value
/// (conntrack confirm, IPVS, ...), not from a rule table.
const HOOK_RUNNER: &[&str] = &["nf_hook_slow"];
/// Default `nf_conntrack_udp_timeout` (unreplied UDP entries), seconds.
const DEFAULT_UDP_TIMEOUT_S: u64 = 30;

/// One observable fact an entry can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// At least one SYN was retransmitted.
    SynRetransmitted,
    /// No SYN was retransmitted.
    NoSynRetransmit,
    /// The handshake completed.
    Established,
    /// The attempt completed right after its first retransmit (one RTO).
    OneRto,
    /// A drop of the SYN with one of these reasons.
    DropReason(&'static [&'static str]),
    /// A NETFILTER_DROP of the SYN by one of these kernel functions: freed inside it (the
    /// kfree_skb location, ≥ 5.17), or it returned NF_DROP for the skb (kretprobe; kernels
    /// without drop reasons free the skb in nf_hook_slow, so only the return value names it).
    NfDropIn(&'static [&'static str]),
    /// No drop of this attempt's packets was seen on this node.
    NoLocalDrop,
    /// Every SYN retransmit is matched by a dropped SYN.
    EveryRetryHasDrop,
    /// A NETFILTER_DROP of the SYN by the hook runner (not a rule table) whose conntrack entry
    /// was source-NATed and not yet confirmed: it lost the race in `__nf_conntrack_confirm`.
    SnatConfirmDrop,
    /// A NETFILTER_DROP of the SYN by the hook runner with no conntrack entry at all.
    UntrackedNfDrop,
    /// conntrack `insert_failed` rose on that drop's CPU and netns.
    InsertFailedRose,
    /// conntrack `drop` rose there while `insert_failed` did not.
    CtDropRoseWithoutInsertFailed,
    /// The NATing netns has a MASQUERADE/SNAT rule without full port randomisation.
    MasqueradeNotFullyRandom,
    /// A VXLAN packet carrying the SYN was dropped for a bad outer UDP checksum.
    VxlanCsumDrop,
    /// The client's netns has a VXLAN device with udpcsum and tx checksum offload on.
    VxlanTxOffload,
    /// The client's netns has a masquerade rule that can re-NAT the outer tunnel packet.
    ClientMasquerade,
    /// The delay fits the VXLAN escape rule: one RTO (new outer port after the tx hash is
    /// re-randomised) or the first retransmit after a gap longer than the UDP conntrack timeout.
    VxlanEscapeTiming,
    /// IPVS's hook returned NF_DROP for the SYN (fexit/kretprobe evidence).
    IpvsDrop,
    /// IPVS expired the old connection of a real server with weight 0.
    IpvsNoDestExpire,
    /// IPVS expired the old connection (ip_vs_conn_expire_now) right before dropping the SYN.
    IpvsExpiry,
    /// The real server's weight at that expiry is known (needs IPVS BTF).
    IpvsDestWeightKnown,
    /// IPVS dropped the SYN without expiring anything: the reused port still points at a real
    /// server that is no longer available (conn_reuse_mode=0, expire_nodest_conn=0).
    IpvsStaleDestination,
    /// The drop is of a UDP packet to or from port 53.
    DnsPacket,
    /// kube-proxy's no-endpoint rule with this action for the destination. A DROP must be tied
    /// to a rule-table drop of the SYN (as [`Signal::NfDropIn`] with [`RULE_TABLES`]) in the
    /// namespace holding the rule; a REJECT is read in the client's namespace (or the node's).
    KubeProxyNoEndpoint(NoEndpointAction),
    /// The netfilter hook runner dropped the SYN (no rule table named, no other hook's
    /// NF_DROP attributed, not source-NATed) in a namespace whose kube-proxy rules DROP its
    /// destination for want of endpoints.
    KubeProxyNoEndpointHookDrop,
    /// The connect failed without any SYN retransmit.
    FailedAtOnce,
    /// The destination listens in a namespace of this node whose `ListenOverflows` or
    /// `ListenDrops` rose while the attempt waited.
    ListenCountersRose,
    /// That listener had connections waiting to be accepted when the rise was read (the
    /// server is not keeping up).
    ListenQueueBacklogged,
}

/// A catalog entry.
#[derive(Debug)]
pub struct Entry {
    pub id: &'static str,
    pub title: &'static str,
    /// Facts from the seed table and the research (affected versions), as (what, when).
    pub facts: &'static [(&'static str, &'static str)],
    pub requires: &'static [Signal],
    pub supports: &'static [Signal],
    /// Highest confidence this entry can give.
    pub max: Confidence,
    pub remedy: &'static str,
    pub references: &'static [&'static str],
}

const REF_K8S_93297: &str = "https://github.com/kubernetes/kubernetes/issues/93297";
const REF_CALICO_3145: &str = "https://github.com/projectcalico/calico/issues/3145";

/// The catalog, most specific first.
pub static CATALOG: &[Entry] = &[
    Entry {
        id: "vxlan-csum-offload",
        title: "the outer UDP checksum of a VXLAN packet broke when the tunnel packet was \
                NATed a second time with tx checksum offload on; the receiver dropped it",
        facts: &[
            (
                "Calico < v3.20",
                "no handling; kernels < 5.7 show a 63 s delay",
            ),
            (
                "Calico v3.20–v3.27",
                "offload off by default (low throughput)",
            ),
            (
                "Calico v3.28.0 / v3.28.2+",
                "offload on for kernel > 5.7; v3.28.2 orders MASQ after kube-proxy",
            ),
            (
                "kernel",
                "zero-checksum variant fixed by ea64d8d6c675 (5.7, 4.19.123, 5.4.41); the \
                 udpcsum variant is not fixed up to 6.18",
            ),
            (
                "delay",
                "~1 s when the tx hash is re-randomised (txrehash=1); 63 s before 6.5 and \
                 ~67 s from 6.5 when the outer port is stable",
            ),
        ],
        requires: &[Signal::SynRetransmitted, Signal::VxlanCsumDrop],
        supports: &[Signal::VxlanTxOffload, Signal::VxlanEscapeTiming],
        max: Confidence::High,
        remedy: "turn tunnel tx checksum offload off (`ethtool -K vxlan.calico tx off`, or \
                 Felix `featureDetectOverride: ChecksumOffloadBroken=true`), or upgrade \
                 kube-proxy (MARK xor 0x4000 before masquerade, k8s #92035) / Calico ≥ 3.28.2",
        references: &[
            REF_CALICO_3145,
            "https://github.com/projectcalico/felix/pull/2811",
            "https://github.com/kubernetes/kubernetes/pull/92035",
        ],
    },
    Entry {
        // The sender's own view: no receiver drop seen here, but the node is set up for it.
        id: "vxlan-csum-offload",
        title: "SYN retries to a VXLAN peer on a node whose tunnel has tx checksum offload and \
                a masquerade rule that can re-NAT the tunnel packet",
        facts: &[],
        requires: &[
            Signal::SynRetransmitted,
            Signal::NoLocalDrop,
            Signal::VxlanTxOffload,
            Signal::ClientMasquerade,
        ],
        supports: &[Signal::VxlanEscapeTiming],
        max: Confidence::Medium,
        remedy: "confirm on the receiving node (netlat there shows UDP_CSUM drops of the \
                 tunnel packets); then turn tunnel tx checksum offload off",
        references: &[REF_CALICO_3145],
    },
    Entry {
        id: "ipvs-weight-zero",
        title: "during a rolling update IPVS expired the connection of a weight-0/removed real \
                server (expire_nodest_conn=1) and dropped the SYN; the retry after 1 s went \
                elsewhere",
        facts: &[
            (
                "kernel ≥ 5.9",
                "still drops when the old conntrack is confirmed (ESTABLISHED)",
            ),
            (
                "kube-proxy",
                "sets expire_nodest_conn=1 and graceful termination (weight 0)",
            ),
        ],
        requires: &[
            Signal::SynRetransmitted,
            Signal::IpvsDrop,
            Signal::IpvsNoDestExpire,
        ],
        // Without IPVS BTF the weight comes from the node's IPVS table at verdict time, not
        // from the expired connection's own real server: one level less.
        supports: &[Signal::OneRto, Signal::IpvsDestWeightKnown],
        max: Confidence::High,
        remedy: "expected during endpoint removal; shorten client connection reuse or keep \
                 terminating pods serving until clients moved",
        references: &[REF_K8S_93297],
    },
    Entry {
        id: "ipvs-stale-realserver",
        title: "conn_reuse_mode=0: a reused client port kept going to a removed real server",
        facts: &[
            (
                "kube-proxy ≤ 1.17 / 1.19–1.21",
                "sets conn_reuse_mode=0 on kernels > 4.1",
            ),
            (
                "kernel",
                "c95c07836fa4 (5.16) applies expire_nodest_conn with mode 0",
            ),
        ],
        requires: &[Signal::IpvsDrop, Signal::IpvsStaleDestination],
        supports: &[],
        max: Confidence::High,
        remedy: "kernel ≥ 5.16 (or backport of c95c07836fa4) with expire_nodest_conn=1, or \
                 kube-proxy ≥ 1.22 on kernels ≥ 5.9 (leaves conn_reuse_mode=1)",
        references: &["https://github.com/kubernetes/kubernetes/issues/81775"],
    },
    Entry {
        id: "ipvs-conn-reuse",
        title: "IPVS dropped the first SYN of a reused client port (conn_reuse_mode=1) so its \
                old conntrack could expire; the retry after 1 s went through",
        facts: &[
            (
                "kube-proxy ≤ 1.17",
                "sets conn_reuse_mode=0 (rolling-update failures instead)",
            ),
            (
                "kube-proxy ≥ 1.22",
                "leaves conn_reuse_mode alone on kernels ≥ 5.9 (fixed there and in 4.19.140)",
            ),
            (
                "kernel",
                "fixed by f0a5e4d7a594 (5.9, 4.19.140); CentOS 7 3.10 affected",
            ),
        ],
        requires: &[
            Signal::SynRetransmitted,
            Signal::IpvsDrop,
            Signal::IpvsExpiry,
        ],
        supports: &[Signal::OneRto, Signal::IpvsDestWeightKnown],
        max: Confidence::High,
        remedy: "use a kernel ≥ 5.9 (or 4.19.140+) with conn_reuse_mode=1, or avoid IPVS mode \
                 on older kernels",
        references: &[REF_K8S_93297],
    },
    Entry {
        id: "snat-port-clash",
        title: "two SNATed connects picked the same source port; the one confirmed second was \
                dropped by conntrack (insert_failed) and retried after 1 s",
        facts: &[
            ("kernel < 3.14", "no NF_NAT_RANGE_PROTO_RANDOM_FULLY"),
            (
                "iptables < 1.6.2",
                "no --random-fully for MASQUERADE (1.6.0 for SNAT)",
            ),
            ("kube-proxy < 1.16", "masquerades without --random-fully"),
            (
                "kernel 6.x",
                "TCP clashes are still dropped, never resolved",
            ),
        ],
        requires: &[Signal::SynRetransmitted, Signal::SnatConfirmDrop],
        supports: &[Signal::InsertFailedRose, Signal::MasqueradeNotFullyRandom],
        max: Confidence::High,
        remedy: "masquerade with full port randomisation: iptables `-j MASQUERADE \
                 --random-fully` (iptables ≥ 1.6.2, kernel ≥ 3.14), nftables `masquerade \
                 fully-random`; kube-proxy ≥ 1.16 does it when available",
        references: &[
            "https://github.com/kubernetes/kubernetes/pull/78547",
            "https://tech.xing.com/a-reason-for-unexplained-connection-timeouts-on-kubernetes-docker-abd041cf7e02",
        ],
    },
    Entry {
        id: "service-no-endpoints",
        title: "kube-proxy dropped the SYN: the Service has no ready endpoint it may send this \
                connect to (traffic policy Local), so the client retries until it gives up",
        facts: &[
            (
                "kube-proxy",
                "iptables mode: filter-table DROP \"ns/svc:port has no local endpoints\" in \
                 KUBE-SERVICES / KUBE-EXTERNAL-SERVICES; nftables mode (1.29+): map \
                 no-endpoint-services with drop",
            ),
            (
                "rollouts",
                "seen while the node's last local endpoint is not ready yet or terminating",
            ),
        ],
        requires: &[
            Signal::SynRetransmitted,
            Signal::NfDropIn(RULE_TABLES),
            Signal::KubeProxyNoEndpoint(NoEndpointAction::Drop),
        ],
        supports: &[Signal::EveryRetryHasDrop],
        max: Confidence::High,
        remedy: "give the Service a ready endpoint on this node (check `kubectl get \
                 endpointslices -l kubernetes.io/service-name=NAME` and the pods' readiness), \
                 or set the traffic policy (internalTrafficPolicy / externalTrafficPolicy) to \
                 Cluster; clients of a Local-policy Service must reach it through nodes that \
                 run an endpoint",
        references: &[
            "https://kubernetes.io/docs/concepts/services-networking/service-traffic-policy/",
        ],
    },
    Entry {
        // The REJECT variant: fails at once, named so a refused connect is not a mystery.
        id: "service-no-endpoints",
        title: "kube-proxy rejected the connect: the Service has no ready endpoint",
        facts: &[],
        // The rejected SYN's drop event comes after the connect has already failed (the ICMP
        // error is delivered inside the rule's hook), so no drop is required: the refused
        // connect and kube-proxy's REJECT for its destination are the evidence.
        requires: &[
            Signal::FailedAtOnce,
            Signal::KubeProxyNoEndpoint(NoEndpointAction::Reject),
        ],
        supports: &[],
        max: Confidence::High,
        remedy: "give the Service ready endpoints: check its selector, `kubectl get \
                 endpointslices -l kubernetes.io/service-name=NAME` and the pods' readiness probes",
        references: &[],
    },
    Entry {
        // The drop is not tied to a rule table (kernels that free it in nf_hook_slow, without
        // kprobes for the rule-table kretprobes, e.g. iptables-legacy there), but the hook
        // dropped the SYN in the very namespace whose kube-proxy rules drop its destination.
        id: "service-no-endpoints",
        title: "kube-proxy's no-endpoint rule most likely dropped the SYN: the Service has no \
                ready endpoint it may send this connect to (traffic policy Local)",
        facts: &[],
        requires: &[
            Signal::SynRetransmitted,
            Signal::KubeProxyNoEndpointHookDrop,
        ],
        supports: &[Signal::NfDropIn(RULE_TABLES), Signal::EveryRetryHasDrop],
        max: Confidence::Medium,
        remedy: "give the Service a ready endpoint on this node, or set its traffic policy to \
                 Cluster; confirm with the rule's counter (`iptables -L KUBE-SERVICES -v -n`, \
                 `iptables -L KUBE-EXTERNAL-SERVICES -v -n`) in the netns of the drop",
        references: &[],
    },
    Entry {
        id: "netfilter-rule-drop",
        title: "a firewall rule dropped the SYN",
        facts: &[],
        requires: &[Signal::SynRetransmitted, Signal::NfDropIn(RULE_TABLES)],
        supports: &[Signal::EveryRetryHasDrop],
        max: Confidence::High,
        remedy: "find the rule: `nft list ruleset` / `iptables-save` in the netns of the drop \
                 (rule counters show which one); a rule that drops only new flows' first SYN \
                 looks exactly like a 1 s kernel bug",
        references: &[],
    },
    Entry {
        id: "listen-overflow",
        title: "the server's listen queue was full and the SYN (or handshake) was dropped",
        facts: &[],
        requires: &[
            Signal::SynRetransmitted,
            Signal::DropReason(&["TCP_LISTEN_OVERFLOW", "TCP_REQQFULLDROP"]),
        ],
        supports: &[],
        max: Confidence::High,
        remedy: "raise the server's backlog (listen(2), net.core.somaxconn, \
                 tcp_max_syn_backlog) or accept faster",
        references: &[],
    },
    Entry {
        id: "conntrack-table-full",
        title: "conntrack could not track the SYN (table full) and dropped it",
        facts: &[],
        // The counter is required: an untracked hook drop alone is also what a rule drop looks
        // like on kernels without drop reasons (freed in nf_hook_slow, not nft_do_chain).
        requires: &[
            Signal::SynRetransmitted,
            Signal::UntrackedNfDrop,
            Signal::CtDropRoseWithoutInsertFailed,
        ],
        supports: &[],
        max: Confidence::High,
        remedy: "raise net.netfilter.nf_conntrack_max (and the hash size) or shorten \
                 conntrack timeouts; check `conntrack -S` early_drop/drop",
        references: &[],
    },
    Entry {
        id: "netfilter-drop",
        title: "a netfilter hook on this node dropped the SYN; the client re-sent it after its RTO",
        facts: &[],
        requires: &[
            Signal::SynRetransmitted,
            Signal::DropReason(&["NETFILTER_DROP"]),
        ],
        supports: &[Signal::EveryRetryHasDrop],
        max: Confidence::Medium,
        remedy: "find the hook that returned NF_DROP: a firewall rule (nft list ruleset / \
                 iptables-save), a conntrack insert failure (conntrack -S: insert_failed), or IPVS",
        references: &[],
    },
    Entry {
        // On current kernels a SYN refused for a full accept queue is consumed
        // (tcp_conn_request → consume_skb), not freed with a drop reason: the listener's
        // namespace counters are the evidence.
        id: "listen-overflow",
        title: "the server's accept queue was full: the kernel refused the SYN without a drop \
                event (counted in the listener's ListenOverflows/ListenDrops)",
        facts: &[(
            "kernel",
            "the refused SYN is consumed, not dropped with a reason; only the final-ACK path \
             has TCP_LISTEN_OVERFLOW",
        )],
        requires: &[Signal::SynRetransmitted, Signal::ListenCountersRose],
        supports: &[Signal::ListenQueueBacklogged],
        max: Confidence::High,
        remedy: "raise the server's backlog (listen(2), net.core.somaxconn) or accept faster; \
                 `nstat -az TcpExtListenOverflows` and `ss -lnt` (Recv-Q over Send-Q) in the \
                 server's namespace show it",
        references: &[],
    },
    Entry {
        id: "unanswered-syn",
        title: "the SYN was retransmitted and no drop was seen on this node",
        facts: &[],
        requires: &[Signal::SynRetransmitted, Signal::NoLocalDrop],
        supports: &[],
        max: Confidence::Low,
        remedy: "the SYN or SYN-ACK was lost beyond this node: check the peer node (run netlat \
                 there), the path, and the server's listen backlog",
        references: &[],
    },
    Entry {
        id: "slow-handshake",
        title: "the SYN-ACK came late without any SYN retransmit",
        facts: &[],
        requires: &[Signal::NoSynRetransmit, Signal::Established],
        supports: &[],
        max: Confidence::Low,
        remedy: "the peer answered slowly: check server load and the network RTT",
        references: &[],
    },
];

/// Entries that judge a drop on its own (no connect of this node matched it).
pub static DROP_CATALOG: &[Entry] = &[
    Entry {
        id: "vxlan-csum-offload",
        title: "a VXLAN packet was dropped for a bad outer UDP checksum (the sender re-NATed \
                the tunnel packet with tx checksum offload on)",
        facts: &[],
        requires: &[Signal::VxlanCsumDrop],
        supports: &[],
        max: Confidence::Medium,
        remedy: "on the sending node: turn tunnel tx checksum offload off (`ethtool -K \
                 vxlan.calico tx off`) or stop the second masquerade of the tunnel packet",
        references: &[REF_CALICO_3145],
    },
    Entry {
        id: "dns-timeout",
        title: "a DNS packet (UDP/53) was dropped; the resolver retries after its timeout (5 s)",
        facts: &[],
        requires: &[Signal::DnsPacket],
        supports: &[],
        max: Confidence::Low,
        remedy: "check conntrack clash_resolve/insert_failed for UDP/53 and the DNS path \
                 (NodeLocal DNSCache, `options single-request-reopen`)",
        references: &[],
    },
];

/// The context one attempt is judged in.
pub struct Judge<'a> {
    pub attempt: &'a Attempt,
    pub node: &'a dyn NodeView,
}

fn is_syn(d: &DropRecord) -> bool {
    let pkt = d.packet.as_ref();
    let inner = pkt
        .and_then(|p| p.vxlan.as_ref())
        .and_then(|v| v.inner.as_deref());
    [pkt, inner]
        .into_iter()
        .flatten()
        .any(|p| p.tcp_flags.is_some_and(|f| f.syn() && !f.ack()))
}

/// TCP's smallest retransmission timeout (`TCP_RTO_MIN`): no SYN is resent sooner.
const RTO_MIN_NS: u64 = 200_000_000;

/// The attempt's SYN was dropped on this node on its way out and the handshake still completed
/// without a retransmit event: the SYN was sent again and the kernel hook did not report it.
/// Seen on 6.18 under CPU load: the retransmit tracepoint's program did not run for a whole
/// timer batch of SYN retransmits (its run count fell short, with no recursion misses).
pub fn resend_unseen(a: &Attempt) -> bool {
    a.retransmits.is_empty()
        && a.outcome == Outcome::Established
        && a.duration_ns() >= RTO_MIN_NS
        && a.drops
            .iter()
            .any(|d| d.direction == Direction::Forward && is_syn(&d.drop))
}

fn is_vxlan_csum_drop(d: &DropRecord) -> bool {
    d.reason == "UDP_CSUM"
        && d.packet
            .as_ref()
            .and_then(|p| p.vxlan.as_ref())
            .is_some_and(|v| v.inner.is_some())
}

fn describe(d: &DropRecord, since_ns: u64) -> String {
    let mut s = format!(
        "{} drop at {} in netns {} (+{:.1} ms)",
        d.reason,
        d.location,
        d.netns,
        ns_to_ms(d.ts_ns.saturating_sub(since_ns))
    );
    if let Some(ct) = &d.ct {
        s.push_str(&format!(
            "; conntrack {} {}{}",
            ct.orig,
            if ct.src_nat() {
                format!("SNAT to {}", ct.nat_source())
            } else {
                "not NATed".to_string()
            },
            if ct.confirmed() {
                ", confirmed"
            } else {
                ", unconfirmed"
            }
        ));
    }
    if let Some(h) = d.hook {
        s.push_str(&format!("; hook {h} returned NF_DROP"));
    }
    if let Some(c) = d.counters {
        s.push_str(&format!(
            "; cpu {} insert_failed +{} drop +{}",
            d.cpu, c.insert_failed, c.drop
        ));
    }
    s
}

/// What the engine concluded about one slow attempt: the catalog's verdict and what was
/// inferred beyond the kernel's events.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Option<Verdict>,
    /// See [`resend_unseen`].
    pub syn_resent_unseen: bool,
}

impl Judge<'_> {
    /// The verdict and the inferences a report carries.
    pub fn judge(&self) -> Judgement {
        Judgement {
            verdict: self.verdict(),
            syn_resent_unseen: resend_unseen(self.attempt),
        }
    }

    fn forward_drops(&self) -> impl Iterator<Item = &MatchedDrop> {
        self.attempt
            .drops
            .iter()
            .filter(|d| d.direction == Direction::Forward)
    }

    fn syn_drop(&self, pred: impl Fn(&DropRecord) -> bool) -> Option<&MatchedDrop> {
        self.forward_drops()
            .find(|d| is_syn(&d.drop) && pred(&d.drop))
    }

    /// kube-proxy's no-endpoint rule with `action` for the destination and the namespace it
    /// was read in: a DROP in the namespace of a rule-table drop of the SYN (the drop is tied
    /// to the rule), a REJECT in the client's.
    fn no_endpoint_rule(&self, action: NoEndpointAction) -> Option<(u32, NoEndpointRule)> {
        let dst = self.attempt.dst;
        if action == NoEndpointAction::Reject {
            let netns = self.attempt.sock.netns;
            return self
                .node
                .no_endpoint_rule(netns, dst)
                .filter(|r| r.action == action)
                .map(|r| (netns, r));
        }
        self.forward_drops()
            .filter(|d| {
                is_syn(&d.drop)
                    && d.drop.reason == "NETFILTER_DROP"
                    && (RULE_TABLES.contains(&d.drop.function())
                        || d.drop.hook.is_some_and(|h| RULE_TABLES.contains(&h)))
            })
            .find_map(|d| {
                self.node
                    .no_endpoint_rule(d.drop.netns, dst)
                    .filter(|r| r.action == action)
                    .map(|r| (d.drop.netns, r))
            })
    }

    /// The destination's listener on this node whose refusal counters rose in the attempt's
    /// window.
    fn listen(&self) -> Option<ListenEvidence> {
        let a = self.attempt;
        self.node.listen_overflow(a.dst, a.start_ns, a.end_ns)
    }

    /// The IPVS expiry tied to an IPVS drop of the SYN, if any.
    fn ipvs_expiry(&self) -> Option<crate::enrich::IpvsDest> {
        self.forward_drops()
            .filter(|d| is_syn(&d.drop) && d.drop.hook == Some("ipvs"))
            .find_map(|d| d.drop.ipvs_dest)
    }

    /// Node-state stand-in for the expired connection's weight when the kernel event has none:
    /// the virtual service the connect went to (its destination is the VIP) has a real server
    /// with weight 0 now. Read at verdict time, so it may not be the expired connection's own
    /// real server; the text says so.
    fn weight_zero_now(&self) -> Option<String> {
        let a = self.attempt;
        let netns = self
            .forward_drops()
            .find(|d| is_syn(&d.drop) && d.drop.hook == Some("ipvs"))?
            .drop
            .netns;
        let servers = self.node.ipvs_real_servers(netns, a.dst)?;
        let zero: Vec<String> = servers
            .iter()
            .filter(|r| r.weight == 0)
            .map(|r| r.addr.to_string())
            .collect();
        if zero.is_empty() {
            return None;
        }
        Some(format!(
            "IPVS expired the reused port's old connection, and virtual service {} in netns \
             {netns} has real server(s) {} with weight 0 (node state read at verdict time; the \
             kernel event carried no weight, so this is not necessarily the expired \
             connection's own real server)",
            a.dst,
            zero.join(", ")
        ))
    }

    fn snat_confirm_drop(&self) -> Option<&MatchedDrop> {
        // A kretprobe on __nf_conntrack_confirm names the hook directly; without it, the
        // hook runner's drop of an unconfirmed SNATed entry can only be the confirm step.
        self.syn_drop(|d| {
            let snat = d.ct.as_ref().is_some_and(|c| c.src_nat() && !c.confirmed());
            (d.hook == Some("conntrack-confirm") && (d.ct.is_none() || snat))
                || (d.reason == "NETFILTER_DROP"
                    && d.hook.is_none()
                    && HOOK_RUNNER.contains(&d.function())
                    && snat)
        })
    }

    /// Whether `s` holds, with a sentence saying what was seen (or what is missing).
    fn eval(&self, s: Signal) -> (bool, String) {
        let a = self.attempt;
        let netns = a.sock.netns;
        match s {
            Signal::SynRetransmitted if resend_unseen(a) => (
                true,
                "the dropped SYN was answered, so it was sent again (the kernel reported no \
                 retransmit)"
                    .into(),
            ),
            Signal::SynRetransmitted => (
                !a.retransmits.is_empty(),
                format!(
                    "{} SYN retransmit(s) at {:?} ms",
                    a.retransmits.len(),
                    a.retransmit_offsets_ms()
                        .iter()
                        .map(|m| m.round() as i64)
                        .collect::<Vec<_>>()
                ),
            ),
            Signal::NoSynRetransmit => (
                a.retransmits.is_empty() && !resend_unseen(a),
                "no SYN retransmit".into(),
            ),
            Signal::Established => (
                a.outcome == Outcome::Established,
                "the handshake completed".into(),
            ),
            Signal::OneRto => (
                a.retransmits.len() == 1 && a.outcome == Outcome::Established,
                "established right after the first retransmit (one RTO)".into(),
            ),
            Signal::DropReason(reasons) => {
                match self.syn_drop(|d| reasons.contains(&d.reason.as_str())) {
                    Some(d) => (true, describe(&d.drop, a.start_ns)),
                    None => (false, format!("a {} drop of the SYN", reasons.join("/"))),
                }
            }
            Signal::NfDropIn(funcs) => {
                match self.syn_drop(|d| {
                    d.reason == "NETFILTER_DROP"
                        && (funcs.contains(&d.function())
                            || d.hook.is_some_and(|h| funcs.contains(&h)))
                }) {
                    Some(d) => (true, describe(&d.drop, a.start_ns)),
                    None => (false, format!("a NETFILTER_DROP in {}", funcs.join("/"))),
                }
            }
            Signal::NoLocalDrop => (a.drops.is_empty(), "no drop seen on this node".into()),
            Signal::EveryRetryHasDrop => {
                let n: usize = self
                    .forward_drops()
                    .filter(|d| is_syn(&d.drop))
                    .map(MatchedDrop::times)
                    .sum();
                (
                    n >= a.retransmits.len() && n > 0,
                    format!(
                        "{n} dropped SYN(s) for {} retransmit(s)",
                        a.retransmits.len()
                    ),
                )
            }
            Signal::SnatConfirmDrop => match self.snat_confirm_drop() {
                Some(d) => (true, describe(&d.drop, a.start_ns)),
                None => (
                    false,
                    "a conntrack-confirm drop (nf_hook_slow) of the SNATed, unconfirmed SYN".into(),
                ),
            },
            Signal::UntrackedNfDrop => match self.syn_drop(|d| {
                d.reason == "NETFILTER_DROP"
                    && d.hook.is_none()
                    && HOOK_RUNNER.contains(&d.function())
                    && d.ct.is_none()
            }) {
                Some(d) => (
                    true,
                    format!(
                        "{}; the SYN had no conntrack entry",
                        describe(&d.drop, a.start_ns)
                    ),
                ),
                None => (false, "a hook drop of an untracked SYN".into()),
            },
            Signal::InsertFailedRose => {
                let d = self.snat_confirm_drop();
                match d.and_then(|d| d.drop.counters.map(|c| (d, c))) {
                    Some((d, c)) if c.insert_failed > 0 => (
                        true,
                        format!(
                            "conntrack insert_failed +{} on cpu {} in netns {}",
                            c.insert_failed, d.drop.cpu, d.drop.netns
                        ),
                    ),
                    Some(_) => (
                        false,
                        "insert_failed rising with the drop (it did not)".into(),
                    ),
                    None => (
                        false,
                        "insert_failed counters of the drop's netns (not readable)".into(),
                    ),
                }
            }
            Signal::CtDropRoseWithoutInsertFailed => {
                match self.forward_drops().find_map(|d| d.drop.counters) {
                    Some(c) if c.drop > 0 && c.insert_failed == 0 => (
                        true,
                        format!("conntrack drop +{} without insert_failed", c.drop),
                    ),
                    _ => (
                        false,
                        "conntrack drop counter rising without insert_failed".into(),
                    ),
                }
            }
            Signal::MasqueradeNotFullyRandom => {
                let ns = self.snat_confirm_drop().map_or(netns, |d| d.drop.netns);
                match self.node.masquerade(ns) {
                    Some((_, n)) if n > 0 => (
                        true,
                        format!("{n} MASQUERADE/SNAT rule(s) without fully-random in netns {ns}"),
                    ),
                    Some(_) => (
                        false,
                        format!(
                            "a masquerade rule without fully-random in netns {ns} (all are fully random)"
                        ),
                    ),
                    None => (false, format!("the NAT rules of netns {ns} (unknown)")),
                }
            }
            Signal::VxlanCsumDrop => match self
                .forward_drops()
                .find(|d| d.via_vxlan && is_vxlan_csum_drop(&d.drop))
            {
                Some(d) => (
                    true,
                    format!(
                        "{} carrying this SYN; outer {}",
                        describe(&d.drop, a.start_ns),
                        d.drop
                            .packet
                            .as_ref()
                            .map(|p| p.tuple.to_string())
                            .unwrap_or_default()
                    ),
                ),
                None => (
                    false,
                    "a UDP_CSUM drop of a VXLAN packet carrying the SYN".into(),
                ),
            },
            Signal::VxlanTxOffload => match self.node.vxlan_offloaded(netns) {
                Some(devs) if !devs.is_empty() => (
                    true,
                    format!(
                        "VXLAN {} in netns {netns} with udpcsum and tx checksum offload on",
                        devs.join(", ")
                    ),
                ),
                Some(_) => (
                    false,
                    format!("a VXLAN device with tx checksum offload on in netns {netns} (none)"),
                ),
                None => (
                    false,
                    format!("the VXLAN devices of netns {netns} (unknown)"),
                ),
            },
            Signal::ClientMasquerade => match self.node.masquerade(netns) {
                Some((n, _)) if n > 0 => (
                    true,
                    format!("{n} masquerade/SNAT rule(s) in netns {netns}"),
                ),
                _ => (false, format!("a masquerade rule in netns {netns}")),
            },
            Signal::VxlanEscapeTiming => {
                let timeout = self
                    .node
                    .udp_timeout_s(netns)
                    .unwrap_or(DEFAULT_UDP_TIMEOUT_S);
                let fits = escape_fits(a, timeout);
                (
                    fits,
                    format!(
                        "delay fits the escape rule (one RTO, or the first retry after a gap > \
                         nf_conntrack_udp_timeout {timeout} s)"
                    ),
                )
            }
            // IPVS evidence comes from kretprobes on IPVS's hook; on kernels with tracepoints
            // only it is never seen, so A is never guessed from a bare NETFILTER_DROP.
            Signal::IpvsDrop => match self.syn_drop(|d| d.hook == Some("ipvs")) {
                Some(d) => (
                    true,
                    format!(
                        "IPVS's hook returned NF_DROP: {}",
                        describe(&d.drop, a.start_ns)
                    ),
                ),
                None => (
                    false,
                    "IPVS hook NF_DROP of the SYN (needs kretprobe/fexit on ip_vs_*)".into(),
                ),
            },
            Signal::IpvsNoDestExpire => match self.ipvs_expiry() {
                Some(x) if x.weight == Some(0) => (
                    true,
                    "IPVS expired the old connection of a real server with weight 0".into(),
                ),
                Some(x) if x.weight.is_none() => match self.weight_zero_now() {
                    Some(text) => (true, text),
                    None => (
                        false,
                        format!(
                            "ip_vs_conn_expire_now for a real server with weight 0 (the kernel \
                             gave no weight, and virtual service {} has no weight-0 real server \
                             now, or its table is unreadable)",
                            a.dst
                        ),
                    ),
                },
                _ => (
                    false,
                    "ip_vs_conn_expire_now for a real server with weight 0".into(),
                ),
            },
            Signal::IpvsExpiry => (
                self.ipvs_expiry().is_some(),
                "IPVS expired the reused port's old connection (ip_vs_conn_expire_now) first"
                    .into(),
            ),
            Signal::IpvsDestWeightKnown => match self.ipvs_expiry().and_then(|x| x.weight) {
                Some(w) => (
                    true,
                    format!("the old connection's real server had weight {w}"),
                ),
                None => (
                    false,
                    "the expired connection's own real server weight (no IPVS BTF on this \
                     kernel)"
                        .into(),
                ),
            },
            Signal::IpvsStaleDestination => {
                let drops: Vec<&MatchedDrop> = self
                    .forward_drops()
                    .filter(|d| is_syn(&d.drop) && d.drop.hook == Some("ipvs"))
                    .collect();
                (
                    !drops.is_empty() && drops.iter().all(|d| d.drop.ipvs_dest.is_none()),
                    format!(
                        "IPVS dropped {} SYN(s) without expiring a connection: the reused port \
                         still maps to an unavailable real server",
                        drops.iter().map(|d| d.times()).sum::<usize>()
                    ),
                )
            }
            Signal::DnsPacket => (false, "a UDP/53 packet".into()),
            Signal::KubeProxyNoEndpoint(action) => match self.no_endpoint_rule(action) {
                Some((ns, rule)) => (
                    true,
                    format!(
                        "kube-proxy's no-endpoint rule for Service {} ({}) {} new connects to \
                         {} in netns {ns}: {}",
                        rule.service,
                        rule.rule,
                        match action {
                            NoEndpointAction::Drop => "drops",
                            NoEndpointAction::Reject => "rejects",
                        },
                        a.dst,
                        rule.why.text()
                    ),
                ),
                None => (
                    false,
                    format!(
                        "a kube-proxy no-endpoint {} rule for {}",
                        match action {
                            NoEndpointAction::Drop => "drop",
                            NoEndpointAction::Reject => "reject",
                        },
                        a.dst
                    ),
                ),
            },
            Signal::ListenCountersRose => match self.listen() {
                Some(l) => (
                    true,
                    format!(
                        "listener {} in netns {}{}: ListenOverflows +{}, ListenDrops +{} while \
                         the connect waited (the kernel refused the SYN for a full accept queue)",
                        l.listener,
                        l.netns,
                        l.process
                            .as_ref()
                            .map(|p| format!(" ({p})"))
                            .unwrap_or_default(),
                        l.overflows,
                        l.drops
                    ),
                ),
                None => (
                    false,
                    format!(
                        "a listener of {} on this node whose ListenOverflows/ListenDrops rose",
                        a.dst
                    ),
                ),
            },
            Signal::KubeProxyNoEndpointHookDrop => {
                let found = self
                    .forward_drops()
                    .filter(|d| {
                        is_syn(&d.drop)
                            && d.drop.reason == "NETFILTER_DROP"
                            && d.drop.hook.is_none()
                            && HOOK_RUNNER.contains(&d.drop.function())
                            && !d.drop.ct.as_ref().is_some_and(|c| c.src_nat())
                    })
                    .find_map(|d| {
                        self.node
                            .no_endpoint_rule(d.drop.netns, a.dst)
                            .filter(|r| r.action == NoEndpointAction::Drop)
                            .map(|r| (d, r))
                    });
                match found {
                    Some((d, rule)) => (
                        true,
                        format!(
                            "{}; kube-proxy's no-endpoint rule for Service {} ({}) drops new \
                             connects to {} in that netns: {}",
                            describe(&d.drop, a.start_ns),
                            rule.service,
                            rule.rule,
                            a.dst,
                            rule.why.text()
                        ),
                    ),
                    None => (
                        false,
                        format!(
                            "a hook drop of the SYN where kube-proxy's rules drop {}",
                            a.dst
                        ),
                    ),
                }
            }
            Signal::FailedAtOnce => (
                a.outcome == Outcome::Failed && a.retransmits.is_empty(),
                "the connect failed without a SYN retransmit".into(),
            ),
            Signal::ListenQueueBacklogged => match self.listen().and_then(|l| l.accept_queue) {
                Some(q) if q > 0 => (
                    true,
                    format!("{q} connection(s) were waiting in its accept queue, not accepted"),
                ),
                Some(_) => (
                    false,
                    "connections waiting in its accept queue (it was empty when read)".into(),
                ),
                None => (false, "the listener's accept queue (not read)".into()),
            },
        }
    }

    /// Match the attempt against the catalog.
    pub fn verdict(&self) -> Option<Verdict> {
        CATALOG.iter().find_map(|e| try_entry(e, |s| self.eval(s)))
    }
}

/// The connect escaped on a retransmit that is either the first one or the first after a gap
/// longer than the UDP conntrack timeout (the broken outer conntrack entry had expired).
fn escape_fits(a: &Attempt, udp_timeout_s: u64) -> bool {
    if a.outcome != Outcome::Established || a.retransmits.is_empty() {
        return false;
    }
    let mut prev = a.start_ns;
    let mut times = Vec::with_capacity(a.retransmits.len());
    for &t in &a.retransmits {
        times.push(t.saturating_sub(prev));
        prev = t;
    }
    let n = times.len();
    if n == 1 {
        return true;
    }
    let limit = udp_timeout_s * 1_000_000_000;
    // The last gap crossed the timeout and none before it did.
    times[n - 1] > limit && times[..n - 1].iter().all(|g| *g <= limit)
}

/// Judge a drop that no connect on this node claimed.
pub fn drop_verdict(d: &DropRecord) -> Option<Verdict> {
    // Runs for every drop: test the cheap conditions first and write evidence only on a match.
    let vxlan = is_vxlan_csum_drop(d);
    let dns = d.packet.as_ref().is_some_and(|p| {
        p.tuple.proto == 17 && (p.tuple.dst.port() == 53 || p.tuple.src.port() == 53)
    });
    if !vxlan && !dns {
        return None;
    }
    DROP_CATALOG.iter().find_map(|e| {
        try_entry(e, |s| match s {
            Signal::VxlanCsumDrop if vxlan => (
                true,
                format!(
                    "{}; inner {}",
                    describe(d, d.ts_ns),
                    d.packet
                        .as_ref()
                        .and_then(|p| p.vxlan.as_ref())
                        .and_then(|v| v.inner.as_deref())
                        .map(|p| match p.tcp_flags {
                            Some(f) => format!("{} [{f}]", p.tuple),
                            None => p.tuple.to_string(),
                        })
                        .unwrap_or_default()
                ),
            ),
            Signal::DnsPacket if dns => (true, describe(d, d.ts_ns)),
            _ => (false, String::new()),
        })
    })
}

fn try_entry(e: &Entry, eval: impl Fn(Signal) -> (bool, String)) -> Option<Verdict> {
    let mut evidence = Vec::new();
    for s in e.requires {
        let (ok, text) = eval(*s);
        if !ok {
            return None;
        }
        evidence.push(text);
    }
    let mut missing = Vec::new();
    let mut held = 0;
    for s in e.supports {
        let (ok, text) = eval(*s);
        if ok {
            held += 1;
            evidence.push(text);
        } else {
            missing.push(text);
        }
    }
    // One missing piece of support costs one level; more than one, two.
    let confidence = match e.supports.len() - held {
        0 => Confidence::High,
        1 => Confidence::Medium,
        _ => Confidence::Low,
    };
    Some(Verdict {
        issue: e.id,
        title: e.title,
        confidence: confidence.min(e.max),
        evidence,
        missing,
        remedy: e.remedy,
    })
}

#[cfg(test)]
mod tests;
