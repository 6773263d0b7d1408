//! The pure pipeline from ring-buffer bytes to printed reports: decode → enrich → track →
//! attribute → print (Inspektor Gadget's order: enrich first, then filter, then print).
//!
//! `watch` feeds it live items; tests feed it synthetic streams. It owns no clock: time moves
//! only with event timestamps and the explicit `now_ns` of [`Engine::tick`] and
//! [`Engine::finish`].

use std::{
    collections::{HashMap, VecDeque},
    io,
};

use crate::{
    enrich::{self, CounterEvidence, DropRecord, Names},
    event::{self, Event, SockKey, TcpState},
    flow::{Attempt, Outcome, Tracker, TrackerConfig, TrackerStats},
    packet::FiveTuple,
    pods::{NoPods, PodView},
    progress::{Memo, Progress, Trigger},
    report::{ConnectReport, DropReport, Reports, Summary, WallClock, pod_fields},
    verdict::{Judge, NodeView, drop_verdict},
};

/// Conntrack counters around a drop, read by the shell at the moment the drop arrives.
pub trait Counters {
    /// How much `insert_failed`/`drop` rose on `cpu` in `netns` that no earlier drop claimed.
    fn claim(&mut self, netns: u32, cpu: u32) -> Option<CounterEvidence>;
    /// Periodic housekeeping (e.g. baseline namespaces created since the start).
    fn tick(&mut self) {}
}

/// No counters (replays, tests, kernels without conntrack).
pub struct NoCounters;

impl Counters for NoCounters {
    fn claim(&mut self, _: u32, _: u32) -> Option<CounterEvidence> {
        None
    }
}

/// Which conntrack tables a NAT lookup asks about one connect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatWhere {
    /// The connect's own namespace (its SNAT, or a DNAT done where the client runs).
    pub own: bool,
    /// The node's namespace: a pod's packets are forwarded by the node, where kube-proxy
    /// DNATs a ClusterIP to a backend pod.
    pub node: bool,
}

/// Conntrack lookups: the tuple a connect's packets carry after NAT.
pub trait NatLookup {
    /// Ask for the on-the-wire tuple, after NAT, of `tuple` sent by `sock`, in the conntrack
    /// tables `at` names. A synchronous lookup answers here (when the tuple differs); an
    /// asynchronous one from [`Self::answers`].
    fn ask(&mut self, sock: SockKey, tuple: FiveTuple, at: NatWhere) -> Option<FiveTuple>;

    /// Answers (sockets whose wire tuple differs) that arrived since the last call. The engine
    /// calls this once per event; `wait_for` is a socket whose attempt is about to be judged,
    /// so an answer still due for it is worth a short wait.
    fn answers(&mut self, _wait_for: Option<&SockKey>) -> Vec<(SockKey, FiveTuple)> {
        Vec::new()
    }
}

/// No lookups (replays, tests).
pub struct NoNatLookup;

impl NatLookup for NoNatLookup {
    fn ask(&mut self, _: SockKey, _: FiveTuple, _: NatWhere) -> Option<FiveTuple> {
        None
    }
}

/// NAT answers remembered for naming a destination pod: enough for the connects slow at
/// once; an older one only costs a `dst_pod` found by the socket's own destination.
const WIRE_MEMORY: usize = 1024;
/// Hook drops remembered for their kfree_skb.
const HOOK_MEMORY: usize = 1024;
/// A hook's NF_DROP and the skb's free happen back to back; allow scheduling noise.
const HOOK_WINDOW_NS: u64 = 50_000_000;
/// `IP_VS_DEST_F_AVAILABLE` (include/net/ip_vs.h, stable since 2.6).
const IP_VS_DEST_F_AVAILABLE: u32 = 1;

/// Drops whose counters are worth reading: a hook (not a rule table) returned NF_DROP. Without
/// drop reasons a rule's drop is also freed in nf_hook_slow; its table's kretprobe tells it
/// apart, and it must not claim an insert_failed increment a clash on that CPU needs.
fn wants_counters(d: &DropRecord) -> bool {
    d.reason == "NETFILTER_DROP"
        && d.function() == "nf_hook_slow"
        && !matches!(d.hook, Some("nft_do_chain" | "ipt_do_table"))
}

/// What the engine needs to know about the kernel and the user's wishes.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Attempts at least this slow are reported.
    pub threshold_ns: u64,
    pub clock: WallClock,
    /// Whether the kernel reports drop reasons (≥ 5.17).
    pub has_reasons: bool,
    pub tracker: TrackerConfig,
}

pub struct Engine {
    cfg: EngineConfig,
    names: Names,
    node: Box<dyn NodeView>,
    counters: Box<dyn Counters>,
    nat: Box<dyn NatLookup>,
    pods: Box<dyn PodView>,
    /// Recent NAT answers (socket → wire tuple): where a connect went after DNAT.
    wire: VecDeque<(SockKey, FiveTuple)>,
    /// Recent hook drops (skb → hook), for the kfree_skb that follows each.
    hook_drops: VecDeque<event::HookDrop>,
    /// Last IPVS connection expiry per CPU.
    ipvs_expire: HashMap<u32, event::IpvsExpire>,
    tracker: Tracker,
    /// The kernel's attempt-table counters (only its `kernel_*` fields are used).
    kernel: TrackerStats,
    /// Attempts still waiting that have had a progress line.
    progress: Progress,
    summary: Summary,
    first_ts: Option<u64>,
    last_ts: u64,
}

impl Engine {
    pub fn new(
        cfg: EngineConfig,
        names: Names,
        node: Box<dyn NodeView>,
        counters: Box<dyn Counters>,
        nat: Box<dyn NatLookup>,
    ) -> Self {
        Self {
            tracker: Tracker::new(cfg.tracker.clone()),
            progress: Progress::default(),
            cfg,
            names,
            node,
            counters,
            nat,
            pods: Box::new(NoPods),
            wire: VecDeque::new(),
            hook_drops: VecDeque::new(),
            ipvs_expire: HashMap::new(),
            kernel: TrackerStats::default(),
            summary: Summary::default(),
            first_ts: None,
            last_ts: 0,
        }
    }

    /// Name pods through `pods` (the default knows none).
    #[must_use]
    pub fn with_pods(mut self, pods: Box<dyn PodView>) -> Self {
        self.pods = pods;
        self
    }

    fn remember_wire(&mut self, sock: SockKey, wire: FiveTuple) {
        if self.wire.len() >= WIRE_MEMORY {
            self.wire.pop_front();
        }
        self.wire.push_back((sock, wire));
    }

    /// Handle one raw ring-buffer item.
    pub fn handle_bytes(&mut self, bytes: &[u8], sink: &mut dyn Reports) -> io::Result<()> {
        match event::decode(bytes) {
            Ok(ev) => self.handle(ev, sink),
            Err(e) => {
                self.summary.bad_events += 1;
                tracing::debug!("undecodable ring-buffer item: {e}");
                Ok(())
            }
        }
    }

    /// Handle one decoded event.
    pub fn handle(&mut self, ev: Event<'_>, sink: &mut dyn Reports) -> io::Result<()> {
        let ts = ev.ts_ns();
        self.first_ts.get_or_insert(ts);
        self.last_ts = self.last_ts.max(ts);
        let judged_soon = match &ev {
            Event::SockState(s) if s.old == TcpState::SYN_SENT => Some(s.sock),
            _ => None,
        };
        // "Now" for a progress line the event did not time itself: the newest time seen (an
        // attempt's start arrives with its first retransmit, timed at its start).
        let now = self.last_ts;
        for (sock, wire) in self.nat.answers(judged_soon.as_ref()) {
            self.tracker.alias(&sock, wire);
            self.remember_wire(sock, wire);
            // The alias may have claimed the drop that names the cause.
            if self.progress.is_shown(&sock) {
                self.progress_line(&sock, now, Trigger::Evidence, sink)?;
            }
        }
        match ev {
            Event::SockState(s) => {
                if s.new == TcpState::SYN_SENT {
                    self.node.prefetch(s.sock.netns, s.tgid);
                    self.pods.prefetch(s.sock.netns, s.tgid);
                    self.progress.take(&s.sock);
                }
                if let Some(a) = self.tracker.sock_state(&s) {
                    self.report(&a, sink)?;
                }
            }
            Event::Retransmit(r) => {
                self.summary.syn_retransmits_seen += 1;
                self.tracker.retransmit(&r);
                // The first retry is the moment to ask conntrack how the SYN leaves the node:
                // drops elsewhere (a VXLAN receiver) show the NATed tuple, not the socket's.
                // Only where NAT rules exist (or nothing is known): a SYN storm must not turn
                // into a storm of conntrack lookups that can only answer "not NATed".
                if self.tracker.first_retransmit(&r.sock)
                    && let Some(t) = self.tracker.tuple_of(&r.sock)
                    && let Some(at) = self.nat_where(r.sock.netns)
                    && let Some(wire) = self.nat.ask(r.sock, t, at)
                {
                    self.tracker.alias(&r.sock, wire);
                    self.remember_wire(r.sock, wire);
                }
                self.progress_line(&r.sock, r.ts_ns, Trigger::Retransmit, sink)?;
            }
            Event::HookDrop(h) => {
                if self.hook_drops.len() >= HOOK_MEMORY {
                    self.hook_drops.pop_front();
                }
                self.hook_drops.push_back(h);
            }
            Event::IpvsExpire(x) => {
                self.ipvs_expire.insert(x.cpu, x);
            }
            Event::Drop(d) => {
                let mut rec = enrich::enrich(&d, &self.names, self.cfg.has_reasons);
                self.attach_hook(&d, &mut rec);
                if wants_counters(&rec) {
                    rec.counters = self.counters.claim(rec.netns, rec.cpu);
                }
                // A drop that fits a drop-level entry is reported at once: on a receiving
                // node no connect of ours will ever claim it.
                if let Some(v) = drop_verdict(&rec) {
                    *self
                        .summary
                        .drops_by_issue
                        .entry(v.issue.to_string())
                        .or_default() += 1;
                    let mut line = DropReport::new(&rec, &v, &self.cfg.clock);
                    (line.pod, line.pod_missing) = pod_fields(self.pods.pod(rec.netns, None));
                    sink.drop_line(&line)?;
                }
                if let Some(sock) = self.tracker.drop_matched(rec) {
                    self.progress_line(&sock, now, Trigger::Evidence, sink)?;
                }
            }
        }
        Ok(())
    }

    /// Tie a drop to the hook that returned NF_DROP for its skb just before (same skb, within
    /// [`HOOK_WINDOW_NS`]), and an IPVS drop to the connection IPVS expired on that CPU.
    fn attach_hook(&mut self, d: &event::Drop<'_>, rec: &mut DropRecord) {
        let Some(pos) = self.hook_drops.iter().rposition(|h| {
            h.skbaddr == d.skbaddr && d.ts_ns.saturating_sub(h.ts_ns) < HOOK_WINDOW_NS
        }) else {
            return;
        };
        let Some(h) = self.hook_drops.remove(pos) else {
            return;
        };
        rec.hook = enrich::hook_name(h.hook);
        if h.hook == netlat_common::hook::IPVS
            && let Some(x) = self.ipvs_expire.get(&h.cpu)
            && h.ts_ns.saturating_sub(x.ts_ns) < HOOK_WINDOW_NS
        {
            rec.ipvs_dest = Some(enrich::IpvsDest {
                weight: x.dest_weight,
                available: x.dest_flags.map(|f| f & IP_VS_DEST_F_AVAILABLE != 0),
            });
        }
    }

    /// The engine learned something of the attempt of `sock` at `now_ns`: a progress line if
    /// it is still waiting, retransmitted, is past the threshold and one is due.
    fn progress_line(
        &mut self,
        sock: &SockKey,
        now_ns: u64,
        trigger: Trigger,
        sink: &mut dyn Reports,
    ) -> io::Result<()> {
        let Some(a) = self.tracker.pending_attempt(sock, now_ns) else {
            return Ok(());
        };
        if a.retransmits.is_empty() || a.duration_ns() < self.cfg.threshold_ns {
            return Ok(());
        }
        match self
            .progress
            .line(&a, trigger, self.node.as_ref(), &self.cfg.clock)
        {
            Some(mut line) => {
                (line.pod, line.pod_missing) =
                    pod_fields(self.pods.pod(a.sock.netns, Some(a.tgid)));
                sink.retry(&line)
            }
            None => Ok(()),
        }
    }

    fn report(&mut self, a: &Attempt, sink: &mut dyn Reports) -> io::Result<()> {
        let shown = self.progress.take(&a.sock);
        let fast = a.duration_ns() < self.cfg.threshold_ns;
        // A fast failure is reported only when kube-proxy's no-endpoint REJECT did it: the
        // Service is then named instead of a bare refusal (one Service lookup per fast
        // failed connect, from the cached map).
        if fast && a.outcome != Outcome::Failed {
            return Ok(());
        }
        // The node's answers to the progress lines' verdicts, so each is asked once.
        let node = Memo::new(
            self.node.as_ref(),
            shown.as_ref().map(crate::progress::Shown::answers),
        );
        let judged = Judge {
            attempt: a,
            node: &node,
        }
        .judge();
        if fast {
            if judged.verdict.as_ref().map(|v| v.issue) != Some("service-no-endpoints") {
                return Ok(());
            }
        } else {
            self.summary.slow += 1;
        }
        let id = judged.verdict.as_ref().map_or("none", |v| v.issue);
        *self.summary.by_issue.entry(id.to_string()).or_default() += 1;
        let mut line = ConnectReport::new(a, &judged, &self.cfg.clock);
        if judged.syn_resent_unseen {
            self.summary.retransmits_unseen += 1;
        }
        line.verdict_changed_from = shown.as_ref().and_then(|s| s.changed_from(id));
        // Asked only for reported connects: a lookup may read the namespace's rules.
        line.service = node.service(a.sock.netns, a.dst);
        if line.service.is_none()
            && let Some(v) = line.verdict.as_mut()
            && node.unnamed_ipvs_service(a.sock.netns, a.dst)
        {
            v.missing.push(format!(
                "the Service of IPVS virtual service {} (kube-proxy's IPVS mode keeps no \
                 Service names on the node)",
                a.dst
            ));
        }
        (line.pod, line.pod_missing) = pod_fields(self.pods.pod(a.sock.netns, Some(a.tgid)));
        line.dst_pod = self.dst_pod(a);
        sink.connect(&line)
    }

    /// Which conntrack tables may know a connect from `netns` NATed: its own where SNAT/
    /// MASQUERADE rules exist (or nothing is known), the node's where the node DNATs a pod's
    /// connects. `None`: neither, so nothing is asked.
    fn nat_where(&self, netns: u32) -> Option<NatWhere> {
        let at = NatWhere {
            own: self
                .node
                .masquerade(netns)
                .is_none_or(|(rules, _)| rules > 0),
            node: self.node.node_dnat(netns),
        };
        (at.own || at.node).then_some(at)
    }

    /// The pod on this node a connect reached: its destination after DNAT (conntrack's answer,
    /// or a dropped packet of the flow), else the address it dialled.
    fn dst_pod(&mut self, a: &Attempt) -> Option<crate::pods::PodRef> {
        let natted = self
            .wire
            .iter()
            .rev()
            .find(|(s, _)| *s == a.sock)
            .map(|(_, t)| t.dst.ip());
        let dropped = a
            .drops
            .iter()
            .filter(|d| d.direction == crate::flow::Direction::Forward)
            .filter_map(|d| d.drop.packet.as_ref())
            .map(|p| p.tuple.dst.ip());
        let mut tried = Vec::new();
        for ip in natted.into_iter().chain(dropped).chain([a.dst.ip()]) {
            if tried.contains(&ip) {
                continue;
            }
            tried.push(ip);
            if let Some(p) = self.pods.pod_by_ip(ip) {
                return Some(p);
            }
        }
        None
    }

    /// Periodic housekeeping at monotonic time `now_ns`.
    pub fn tick(&mut self, now_ns: u64) {
        self.tracker.advance(now_ns);
        let tracker = &self.tracker;
        self.progress.retain(|s| tracker.tuple_of(s).is_some());
        self.counters.tick();
    }

    /// The kernel's attempt-table counters at the end (the shell reads them; a replay has them
    /// from the recording): attempts that ended fast in the kernel count as attempts.
    pub fn kernel_attempt_stats<'a>(&mut self, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        for (name, n) in counts {
            self.kernel.set_kernel(name, n);
        }
    }

    /// At stop: forget the attempts tracked here that `still_waiting` (the kernel's attempt
    /// table) says are no longer in SYN_SENT — their end was lost — so they are not reported
    /// as pending for the whole run. Returns them (a recording keeps them for its replay).
    pub fn ends_lost(&mut self, still_waiting: impl Fn(&SockKey) -> bool) -> Vec<SockKey> {
        let gone: Vec<SockKey> = self
            .tracker
            .pending_socks()
            .into_iter()
            .filter(|s| !still_waiting(s))
            .collect();
        self.forget_ended(&gone);
        gone
    }

    /// Forget the attempts of `socks`, whose ends were lost (see [`Engine::ends_lost`]).
    pub fn forget_ended(&mut self, socks: &[SockKey]) {
        for s in socks {
            self.tracker.end_lost(s);
        }
    }

    /// End of run at `now_ns`: report attempts still waiting that are already slow, and return
    /// the summary (lost-event counts are filled in by the caller, who can read the kernel).
    pub fn finish(&mut self, now_ns: u64, sink: &mut dyn Reports) -> io::Result<Summary> {
        let pending = self.tracker.pending_socks();
        for sock in &pending {
            if let Some(a) = self.tracker.pending_attempt(sock, now_ns) {
                self.report(&a, sink)?;
            }
        }
        let mut s = self.summary.clone();
        s.in_flight = pending.len() as u64;
        s.retry_lines_suppressed = self.progress.suppressed();
        s.tracker = TrackerStats {
            kernel_fast: self.kernel.kernel_fast,
            kernel_table_full: self.kernel.kernel_table_full,
            kernel_replaced: self.kernel.kernel_replaced,
            kernel_end_missed: self.kernel.kernel_end_missed,
            ..self.tracker.stats().clone()
        };
        s.attempts = s.tracker.attempts + s.tracker.kernel_fast;
        s.duration_s = now_ns.saturating_sub(self.first_ts.unwrap_or(now_ns)) as f64 / 1e9;
        Ok(s)
    }

    /// Record how a kernel address resolved (replays carry locations, not the symbol table).
    pub fn insert_symbol(&mut self, addr: u64, location: String) {
        self.names.kallsyms.insert_resolved(addr, location);
        self.names.resolved.clear();
    }

    /// How the engine resolves a kernel text address.
    pub fn resolve(&self, addr: u64) -> String {
        self.names.kallsyms.resolve(addr)
    }

    /// Timestamp of the newest event seen (replays use it as "now").
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }
}

#[cfg(test)]
mod tests {
    use netlat_common::{DropEvent, EventHeader, kind};

    use super::*;
    use crate::enrich::CounterEvidence;
    use crate::testkit::{Collect, FakeNode, S, retrans, state, syn_drop};

    fn engine() -> Engine {
        engine_with(Box::new(crate::verdict::NoFacts))
    }

    fn engine_with(node: Box<dyn NodeView>) -> Engine {
        let mut names = Names::default();
        names.reasons.insert(12, "NETFILTER_DROP".into());
        names.kallsyms = enrich::Kallsyms::parse("ffffffff81a00000 t nft_do_chain\n");
        Engine::new(
            EngineConfig {
                threshold_ns: 200_000_000,
                clock: WallClock { offset_ns: 0 },
                has_reasons: true,
                tracker: TrackerConfig::default(),
            },
            names,
            node,
            Box::new(NoCounters),
            Box::new(NoNatLookup),
        )
    }

    /// Node facts of a node exposed to both B and C.
    fn exposed_node() -> FakeNode {
        FakeNode {
            masq: Some((1, 1)),
            vxlan: Some(vec!["vxlan.calico".into()]),
            udp_timeout: Some(30),
            ..FakeNode::default()
        }
    }

    /// Every claim finds one fresh insert_failed and drop increment.
    struct Clashing;
    impl Counters for Clashing {
        fn claim(&mut self, _: u32, _: u32) -> Option<CounterEvidence> {
            Some(CounterEvidence {
                insert_failed: 1,
                drop: 1,
            })
        }
    }

    /// The client's conntrack: port 40000 leaves as 10.9.0.1:61000.
    struct Masq;
    impl NatLookup for Masq {
        fn ask(&mut self, _: SockKey, t: FiveTuple, _: NatWhere) -> Option<FiveTuple> {
            Some(FiveTuple {
                src: "10.9.0.1:61000".parse().ok()?,
                ..t
            })
        }
    }

    fn exposed_engine(nat: Box<dyn NatLookup>) -> Engine {
        let mut names = Names::default();
        names.reasons.insert(11, "UDP_CSUM".into());
        names.reasons.insert(12, "NETFILTER_DROP".into());
        names.kallsyms = enrich::Kallsyms::parse(
            "ffffffff81a00000 t nf_hook_slow\nffffffff81b00000 t udp_queue_rcv_one_skb\n",
        );
        names.ct_tuple = Some(crate::testkit::CT_TUPLE_X86_64);
        Engine::new(
            EngineConfig {
                threshold_ns: 200_000_000,
                clock: WallClock { offset_ns: 0 },
                has_reasons: true,
                tracker: TrackerConfig::default(),
            },
            names,
            Box::new(exposed_node()),
            Box::new(Clashing),
            nat,
        )
    }

    fn ct_tuple(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> [u8; 40] {
        let mut t = [0u8; 40];
        t[..4].copy_from_slice(&src);
        t[16..18].copy_from_slice(&sport.to_be_bytes());
        t[18..20].copy_from_slice(&2u16.to_ne_bytes());
        t[20..24].copy_from_slice(&dst);
        t[36..38].copy_from_slice(&dport.to_be_bytes());
        t[38] = 6;
        t
    }

    fn lines_of(e: &mut Engine, items: &[Vec<u8>]) -> Vec<serde_json::Value> {
        let mut sink = Collect::default();
        for i in items {
            e.handle_bytes(i, &mut sink).unwrap();
        }
        sink.lines
    }

    #[test]
    fn snat_clash_stream_is_named_b_with_high_confidence() {
        // The SYN of 10.231.0.1:40000 left the router as 10.9.0.1:40000 and lost the confirm race.
        let mut drop = syn_drop(10 * S + 50_000, 40000, 0xffffffff81a0007d);
        let mut ev: DropEvent = unsafe { std::ptr::read_unaligned(drop.as_ptr().cast()) };
        ev.data[12..16].copy_from_slice(&[10, 9, 0, 1]);
        ev.ct_flags = netlat_common::CT_PRESENT;
        ev.ct_status = crate::enrich::IPS_SRC_NAT;
        ev.ct_orig = ct_tuple([10, 231, 0, 1], 40000, [10, 231, 0, 2], 8080);
        ev.ct_reply = ct_tuple([10, 231, 0, 2], 8080, [10, 9, 0, 1], 40000);
        drop = event::encode(&ev);
        let mut e = exposed_engine(Box::new(NoNatLookup));
        let lines = lines_of(
            &mut e,
            &[
                state(10 * S, 7, 2, 0),
                drop,
                retrans(11 * S, 40000),
                state(11 * S + 1_000_000, 2, 1, 40000),
            ],
        );
        assert_eq!(lines.len(), 1, "{lines:#?}");
        let v = &lines[0]["verdict"];
        assert_eq!(v["issue"], "snat-port-clash", "{v}");
        assert_eq!(v["confidence"], "high", "{v}");
        assert_eq!(lines[0]["drops"][0]["via_nat"], true);
        assert_eq!(
            lines[0]["drops"][0]["conntrack"]["nat_source"],
            "10.9.0.1:40000"
        );
    }

    /// A UDP_CSUM drop of a VXLAN packet whose inner SYN is `inner_src` -> 10.231.0.2:8080.
    fn vxlan_drop(ts: u64, inner_src: [u8; 4], inner_sport: u16) -> Vec<u8> {
        let mut d = DropEvent {
            header: EventHeader {
                kind: kind::DROP,
                cpu: 0,
                ts_ns: ts,
            },
            location: 0xffffffff81b00153,
            netns: 333,
            ifindex: 2,
            reason: 11,
            len: 110,
            protocol: 0x0800,
            cap_len: 160,
            ..DropEvent::default()
        };
        let mut p = vec![
            0x45, 0, 0, 110, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&50000u16.to_be_bytes());
        p.extend_from_slice(&4789u16.to_be_bytes());
        p.extend_from_slice(&[0, 90, 0xff, 0xff]);
        p.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 42, 0]);
        p.extend_from_slice(&[0u8; 12]);
        p.extend_from_slice(&0x0800u16.to_be_bytes());
        p.extend_from_slice(&[0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        p.extend_from_slice(&inner_src);
        p.extend_from_slice(&[10, 231, 0, 2]);
        p.extend_from_slice(&inner_sport.to_be_bytes());
        p.extend_from_slice(&8080u16.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        d.data[..p.len()].copy_from_slice(&p);
        event::encode(&d)
    }

    #[test]
    fn vxlan_stream_names_c_on_both_sides() {
        // Receiver: the drop alone is a C drop line. Sender: the connect escapes after one RTO
        // and the NATed inner SYN (61000) is tied to it through conntrack.
        let mut e = exposed_engine(Box::new(Masq));
        let lines = lines_of(
            &mut e,
            &[
                state(10 * S, 7, 2, 0),
                vxlan_drop(10 * S + 100_000, [10, 9, 0, 1], 61000),
                retrans(11 * S, 40000),
                state(11 * S + 1_000_000, 2, 1, 40000),
            ],
        );
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert_eq!(lines[0]["type"], "drop");
        assert_eq!(lines[0]["verdict"]["issue"], "vxlan-csum-offload");
        assert_eq!(
            lines[0]["inner"],
            "tcp 10.9.0.1:61000 -> 10.231.0.2:8080 [SYN]"
        );
        assert_eq!(lines[1]["type"], "connect");
        assert_eq!(lines[1]["verdict"]["issue"], "vxlan-csum-offload");
        assert_eq!(lines[1]["verdict"]["confidence"], "high");
        assert_eq!(lines[1]["drops"][0]["via_vxlan"], true);
        // Without the NAT lookup the receiver's drop cannot be tied to the connect.
        let mut e = exposed_engine(Box::new(NoNatLookup));
        let lines = lines_of(
            &mut e,
            &[
                state(10 * S, 7, 2, 0),
                vxlan_drop(10 * S + 100_000, [10, 9, 0, 1], 61000),
                retrans(11 * S, 40000),
                state(11 * S + 1_000_000, 2, 1, 40000),
            ],
        );
        assert_eq!(lines[1]["drops"], serde_json::json!([]));
        assert_ne!(lines[1]["verdict"]["issue"], "snat-port-clash");
    }

    /// Masq answered asynchronously: nothing at `ask`, the answer from a later `answers` call,
    /// either at the next event or only when the engine says it is about to judge the socket.
    struct LateMasq {
        only_when_waited: bool,
        due: Vec<(SockKey, FiveTuple)>,
    }
    impl NatLookup for LateMasq {
        fn ask(&mut self, sock: SockKey, t: FiveTuple, at: NatWhere) -> Option<FiveTuple> {
            self.due.push((sock, Masq.ask(sock, t, at)?));
            None
        }
        fn answers(&mut self, wait_for: Option<&SockKey>) -> Vec<(SockKey, FiveTuple)> {
            if self.only_when_waited
                && !wait_for.is_some_and(|w| self.due.iter().any(|d| d.0 == *w))
            {
                return Vec::new();
            }
            std::mem::take(&mut self.due)
        }
    }

    /// A node whose namespaces have no NAT rules.
    fn no_nat_rules() -> FakeNode {
        FakeNode {
            masq: Some((0, 0)),
            ..FakeNode::default()
        }
    }

    /// Keeps the questions it is asked: which socket, and where.
    struct CountingNat(std::rc::Rc<std::cell::RefCell<Vec<(SockKey, NatWhere)>>>);
    impl NatLookup for CountingNat {
        fn ask(&mut self, sock: SockKey, _: FiveTuple, at: NatWhere) -> Option<FiveTuple> {
            self.0.borrow_mut().push((sock, at));
            None
        }
    }

    #[test]
    fn nat_is_asked_only_where_nat_rules_may_exist() {
        let feed = [
            state(10 * S, 7, 2, 0),
            retrans(11 * S, 40000),
            retrans(13 * S, 40000),
        ];
        for (node, asked) in [
            (Box::new(no_nat_rules()) as Box<dyn NodeView>, 0),
            (Box::new(exposed_node()), 1),
            (Box::new(crate::verdict::NoFacts), 1),
        ] {
            let n: std::rc::Rc<std::cell::RefCell<Vec<(SockKey, NatWhere)>>> =
                std::rc::Rc::default();
            let mut e = Engine::new(
                EngineConfig {
                    threshold_ns: 200_000_000,
                    clock: WallClock { offset_ns: 0 },
                    has_reasons: true,
                    tracker: TrackerConfig::default(),
                },
                Names::default(),
                node,
                Box::new(NoCounters),
                Box::new(CountingNat(n.clone())),
            );
            lines_of(&mut e, &feed);
            // Once per attempt (its first retransmit), and never without NAT rules.
            assert_eq!(n.borrow().len(), asked);
        }
    }

    #[test]
    fn nat_is_asked_in_the_nodes_namespace_where_the_node_dnats() {
        let feed = [
            state(10 * S, 7, 2, 0),
            retrans(11 * S, 40000),
            retrans(13 * S, 40000),
        ];
        let (own, node) = (
            NatWhere {
                own: true,
                node: false,
            },
            NatWhere {
                own: false,
                node: true,
            },
        );
        let both = NatWhere {
            own: true,
            node: true,
        };
        for (masq, node_dnat, asked) in [
            // A pod with no NAT of its own whose ClusterIP connects the node DNATs.
            (Some((0, 0)), true, vec![node]),
            (Some((0, 0)), false, vec![]),
            (Some((1, 0)), false, vec![own]),
            (Some((1, 0)), true, vec![both]),
            // Nothing known about the pod's rules: its own table is asked as before.
            (None, true, vec![both]),
        ] {
            let n: std::rc::Rc<std::cell::RefCell<Vec<(SockKey, NatWhere)>>> =
                std::rc::Rc::default();
            let fake = FakeNode {
                masq,
                node_dnat,
                ..FakeNode::default()
            };
            let mut e = Engine::new(
                EngineConfig {
                    threshold_ns: 200_000_000,
                    clock: WallClock { offset_ns: 0 },
                    has_reasons: true,
                    tracker: TrackerConfig::default(),
                },
                Names::default(),
                Box::new(fake),
                Box::new(NoCounters),
                Box::new(CountingNat(std::rc::Rc::clone(&n))),
            );
            lines_of(&mut e, &feed);
            let got: Vec<NatWhere> = n.borrow().iter().map(|(_, at)| *at).collect();
            assert_eq!(got, asked, "masquerade {masq:?}, node DNAT {node_dnat}");
        }
    }

    #[test]
    fn a_clusterip_connect_dnated_by_the_node_names_the_backend_pod() {
        use crate::testkit::{FakePods, pod};
        /// Only the node's conntrack knows the DNAT of 10.231.0.2:8080 to 10.236.0.7:80.
        struct NodeDnat;
        impl NatLookup for NodeDnat {
            fn ask(&mut self, _: SockKey, t: FiveTuple, at: NatWhere) -> Option<FiveTuple> {
                at.node.then_some(FiveTuple {
                    dst: "10.236.0.7:80".parse().ok()?,
                    ..t
                })
            }
        }
        for node_dnat in [true, false] {
            let mut pods = FakePods::default();
            pods.by_ip
                .insert("10.236.0.7".parse().unwrap(), pod("shop", "db-1", None));
            let mut e = Engine::new(
                EngineConfig {
                    threshold_ns: 200_000_000,
                    clock: WallClock { offset_ns: 0 },
                    has_reasons: true,
                    tracker: TrackerConfig::default(),
                },
                Names::default(),
                Box::new(FakeNode {
                    masq: Some((0, 0)),
                    node_dnat,
                    ..FakeNode::default()
                }),
                Box::new(NoCounters),
                Box::new(NodeDnat),
            )
            .with_pods(Box::new(pods));
            let lines = lines_of(&mut e, &slow_connect());
            let l = &lines[0];
            // The line keeps the address dialled; the pod is the one behind it.
            assert_eq!(l["dst"], "10.231.0.2:8080", "{l}");
            if node_dnat {
                assert_eq!(l["dst_pod"]["name"], "db-1", "{l}");
            } else {
                assert!(l.get("dst_pod").is_none(), "{l}");
            }
        }
    }

    #[test]
    fn the_summary_shows_the_kernels_syn_retransmits_next_to_the_hooks() {
        let mut e = engine();
        // Two retransmits of a tracked attempt and one of a socket netlat never saw start.
        lines_of(
            &mut e,
            &[
                state(10 * S, 7, 2, 0),
                retrans(11 * S, 40000),
                retrans(13 * S, 40000),
                retrans(14 * S, 41000),
            ],
        );
        let mut s = e.finish(20 * S, &mut Collect::default()).unwrap();
        assert_eq!(s.syn_retransmits_seen, 3);
        assert_eq!(
            s.syn_retransmits_unseen(),
            0,
            "nothing known from the kernel"
        );
        s.set_kernel_counts(Some(crate::report::KernelCounts {
            syn_retransmits: 5,
            namespaces: 2,
            ..Default::default()
        }));
        let k = s.kernel_counted.expect("set");
        assert_eq!((k.syn_retransmits, k.netlat_saw_syn_retransmits), (5, 3));
        assert_eq!(s.syn_retransmits_unseen(), 2);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["kernel_counters"]["netlat_saw_syn_retransmits"], 3);
        assert!(json.get("syn_retransmits_seen").is_none(), "{json}");
    }

    #[test]
    fn nat_answers_arriving_later_still_tie_the_receivers_drop() {
        for only_when_waited in [false, true] {
            let mut e = exposed_engine(Box::new(LateMasq {
                only_when_waited,
                due: Vec::new(),
            }));
            let lines = lines_of(
                &mut e,
                &[
                    state(10 * S, 7, 2, 0),
                    retrans(11 * S, 40000),
                    // The receiver's drop of the retried SYN comes before the answer.
                    vxlan_drop(11 * S + 100_000, [10, 9, 0, 1], 61000),
                    state(11 * S + 1_000_000, 2, 1, 40000),
                ],
            );
            let connect = lines
                .iter()
                .find(|l| l["type"] == "connect")
                .unwrap_or_else(|| panic!("no connect line: {lines:#?}"));
            assert_eq!(
                connect["verdict"]["issue"], "vxlan-csum-offload",
                "{lines:#?}"
            );
            assert_eq!(connect["drops"][0]["via_vxlan"], true);
        }
    }

    /// A NAT answer can arrive while the engine handles another attempt's start, which the
    /// kernel ships at that attempt's first retransmit timed at its start: the progress line
    /// the answer brings still counts the waiting time up to now, not to that older start.
    #[test]
    fn a_progress_line_never_waits_less_than_its_last_retry() {
        let mut e = exposed_engine(Box::new(LateMasq {
            only_when_waited: false,
            due: Vec::new(),
        }));
        let started = 10 * S + 200_000_000;
        let other = event::encode(&netlat_common::SockStateEvent {
            header: netlat_common::EventHeader {
                kind: netlat_common::kind::SOCK_STATE,
                cpu: 0,
                ts_ns: started,
            },
            skaddr: 0xdef,
            netns: 111,
            tgid: 10,
            oldstate: 7,
            newstate: 2,
            addrs: crate::testkit::addrs(0),
            comm: *b"other\0\0\0\0\0\0\0\0\0\0\0",
            start_ns: started,
            flags: netlat_common::attempt_flag::DEFERRED,
            _pad: 0,
        });
        let got = collect(
            &mut e,
            &[
                state(10 * S, 7, 2, 0),
                // The first SYN's drop, seen with its NATed tuple at the receiver.
                vxlan_drop(10 * S + 100_000, [10, 9, 0, 1], 61000),
                retrans(11 * S, 40000),
                // Another attempt's deferred start: the answer for the first arrives now.
                other,
            ],
        );
        // The retry's line, then the one the answer brings (the drop it claimed).
        assert_eq!(got.retries.len(), 2, "{:#?}", got.retries);
        assert_eq!(got.retries[1]["drops"][0]["via_nat"], true);
        for r in &got.retries {
            let waited = r["waiting_ms"].as_f64().unwrap_or(0.0);
            assert!(
                waited >= 1000.0,
                "waiting_ms {waited} < its retry at 1000 ms: {r}"
            );
        }
    }

    fn run(items: &[Vec<u8>]) -> (Vec<serde_json::Value>, Summary) {
        let mut e = engine();
        let mut sink = Collect::default();
        for i in items {
            e.handle_bytes(i, &mut sink).unwrap();
        }
        let s = e.finish(e.last_ts(), &mut sink).unwrap();
        (sink.lines, s)
    }

    /// The kernel can fail to report a SYN retransmit (seen on 6.18 under load: the program did
    /// not run for a timer batch of them). A dropped SYN that was answered 1 s later was resent
    /// all the same: the verdict still stands, and the line and summary say it was unseen.
    #[test]
    fn an_unreported_resend_of_a_dropped_syn_is_inferred() {
        let stream = [
            state(10 * S, 7, 2, 0),
            syn_drop(10 * S + 300_000, 40000, 0xffffffff81a0046f),
            state(11 * S + 11_000_000, 2, 1, 40000),
        ];
        let (lines, s) = run(&stream);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        let l = &lines[0];
        assert_eq!(l["syn_retransmits"], 0);
        assert_eq!(l["syn_resent_unseen"], true);
        assert_eq!(l["verdict"]["issue"], "netfilter-rule-drop", "{l}");
        assert_eq!(l["verdict"]["confidence"], "high", "{l}");
        let evidence = l["verdict"]["evidence"].to_string();
        assert!(evidence.contains("sent again"), "{evidence}");
        assert_eq!(s.retransmits_unseen, 1);
        assert_eq!(s.by_issue.get("slow-handshake"), None);
    }

    #[test]
    fn one_second_first_syn_drop_end_to_end() {
        let stream = [
            state(10 * S, 7, 2, 0),
            syn_drop(10 * S + 300_000, 40000, 0xffffffff81a0046f),
            retrans(11 * S + 10_000_000, 40000),
            state(11 * S + 11_000_000, 2, 1, 40000),
        ];
        let (lines, s) = run(&stream);
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(l["connect_ms"], 1011.0);
        assert_eq!(l["syn_retransmits"], 1);
        assert_eq!(l["drops"][0]["reason"], "NETFILTER_DROP");
        assert_eq!(l["drops"][0]["location"], "nft_do_chain+0x46f");
        assert_eq!(l["drops"][0]["at_ms"], 0.3);
        assert_eq!(l["verdict"]["issue"], "netfilter-rule-drop");
        assert_eq!(l["verdict"]["confidence"], "high");
        assert_eq!(l["comm"], "python3");
        assert_eq!(s.attempts, 1);
        assert_eq!(s.slow, 1);
        assert_eq!(s.by_issue["netfilter-rule-drop"], 1);
    }

    fn collect(e: &mut Engine, items: &[Vec<u8>]) -> Collect {
        let mut sink = Collect::default();
        for i in items {
            e.handle_bytes(i, &mut sink).unwrap();
        }
        sink
    }

    /// The first SYN's drop is claimed when the retry tells the port: the progress line at
    /// that retry already names the cause, and the connect line keeps it.
    #[test]
    fn a_first_syn_drop_is_named_at_the_first_retry() {
        let got = collect(
            &mut engine(),
            &[
                state(10 * S, 7, 2, 0),
                syn_drop(10 * S + 300_000, 40000, 0xffffffff81a0046f),
                retrans(11 * S + 10_000_000, 40000),
                state(11 * S + 11_000_000, 2, 1, 40000),
            ],
        );
        assert_eq!(got.retries.len(), 1, "{:#?}", got.retries);
        let r = &got.retries[0];
        assert_eq!(r["type"], "retry");
        assert_eq!(r["provisional"], true);
        assert_eq!(r["waiting_ms"], 1010.0);
        assert_eq!(r["syn_retransmits"], 1);
        assert_eq!(r["retransmit_at_ms"], serde_json::json!([1010.0]));
        assert_eq!(r["drops"][0]["reason"], "NETFILTER_DROP");
        assert_eq!(r["verdict"]["issue"], "netfilter-rule-drop");
        for k in ["ts", "netns", "pid", "comm", "src", "dst"] {
            assert_eq!(r[k], got.lines[0][k], "{k}");
        }
        assert_eq!(got.lines[0]["verdict"]["issue"], "netfilter-rule-drop");
        assert!(got.lines[0].get("verdict_changed_from").is_none());
    }

    /// An attempt that is never answered gets a line at each ladder step; one that is fast or
    /// ends before its first retry gets none.
    #[test]
    fn every_ladder_step_of_a_timeout_gets_a_line() {
        let mut items = vec![state(10 * S, 7, 2, 0)];
        for at in [11, 13, 17, 25] {
            items.push(retrans(at * S, 40000));
        }
        items.push(state(41 * S, 2, 7, 40000));
        items.push(state(50 * S, 7, 2, 0));
        items.push(state(50 * S + 300_000_000, 2, 1, 40000));
        let got = collect(&mut engine(), &items);
        let waited: Vec<f64> = got
            .retries
            .iter()
            .map(|r| r["waiting_ms"].as_f64().unwrap())
            .collect();
        assert_eq!(waited, [1000.0, 3000.0, 7000.0, 15000.0]);
        assert!(
            got.retries
                .iter()
                .all(|r| r["verdict"]["issue"] == "unanswered-syn")
        );
        assert_eq!(got.lines.len(), 2, "{:#?}", got.lines);
        assert_eq!(got.lines[0]["outcome"], "timeout");
        // A retry under the threshold is no progress line.
        let mut e = engine();
        e.cfg.threshold_ns = 2 * S;
        let got = collect(&mut e, &items);
        assert_eq!(got.retries.len(), 3);
    }

    /// The VXLAN receiver's drop is tied to the attempt only when the NAT answer comes, after
    /// the retry's line: the node's exposure alone names the cause at the retry, and a second
    /// line at once names it from the drop; the connect line agrees with it.
    #[test]
    fn evidence_after_the_retry_updates_the_cause_at_once() {
        let mut e = exposed_engine(Box::new(LateMasq {
            only_when_waited: false,
            due: Vec::new(),
        }));
        let got = collect(
            &mut e,
            &[
                state(10 * S, 7, 2, 0),
                retrans(11 * S, 40000),
                vxlan_drop(11 * S + 100_000, [10, 9, 0, 1], 61000),
                state(11 * S + 1_000_000, 2, 1, 40000),
            ],
        );
        let issues: Vec<&str> = got
            .retries
            .iter()
            .map(|r| r["verdict"]["issue"].as_str().unwrap_or("none"))
            .collect();
        assert_eq!(issues, ["vxlan-csum-offload"; 2], "{:#?}", got.retries);
        // First from the node's set-up alone, then from the receiver's drop itself.
        assert_eq!(got.retries[0]["drops"], serde_json::json!([]));
        let last = got.retries.last().unwrap();
        assert_ne!(last["verdict"]["title"], got.retries[0]["verdict"]["title"]);
        assert_eq!(last["drops"][0]["reason"], "UDP_CSUM");
        assert_eq!(last["drops"][0]["via_vxlan"], true);
        assert!(last["waiting_ms"].as_f64().unwrap() <= 1000.1, "{last}");
        assert!(last.get("verdict_changed_from").is_none(), "{last}");
        let connect = got.lines.iter().find(|l| l["type"] == "connect").unwrap();
        assert_eq!(connect["verdict"]["issue"], "vxlan-csum-offload");
        assert!(connect.get("verdict_changed_from").is_none(), "{connect}");
    }

    #[test]
    fn a_final_verdict_unlike_the_last_shown_says_what_it_was() {
        // The retried SYN is dropped after the retry's line: a second line names the cause.
        let mut reply = syn_drop(11 * S + 500_000, 40000, 0xffffffff81a0046f);
        let mut ev: DropEvent = unsafe { std::ptr::read_unaligned(reply.as_ptr().cast()) };
        ev.header.ts_ns = 11 * S + 500_000;
        reply = event::encode(&ev);
        let got = collect(
            &mut engine(),
            &[
                state(10 * S, 7, 2, 0),
                retrans(11 * S, 40000),
                reply,
                state(13 * S, 2, 1, 40000),
            ],
        );
        assert_eq!(got.retries[0]["verdict"]["issue"], "unanswered-syn");
        let last = got.retries.last().unwrap();
        assert_eq!(last["verdict"]["issue"], "netfilter-rule-drop");
        assert_eq!(last["verdict_changed_from"], "unanswered-syn");
        assert_eq!(got.lines[0]["verdict"]["issue"], "netfilter-rule-drop");
        assert!(got.lines[0].get("verdict_changed_from").is_none());
        // An attempt whose final cause differs from its last line says so: here the retry
        // event carried no port, so the drop is claimed only at the end (the port learned then).
        let got = collect(
            &mut engine(),
            &[
                state(10 * S, 7, 2, 0),
                retrans(11 * S, 0),
                syn_drop(11 * S + 500_000, 40000, 0xffffffff81a0046f),
                state(13 * S, 2, 1, 40000),
            ],
        );
        assert_eq!(got.retries.len(), 1, "{:#?}", got.retries);
        assert_eq!(got.retries[0]["verdict"]["issue"], "unanswered-syn");
        assert_eq!(got.lines[0]["verdict"]["issue"], "netfilter-rule-drop");
        assert_eq!(got.lines[0]["verdict_changed_from"], "unanswered-syn");
    }

    fn hook_drop(ts: u64, skbaddr: u64, hook: u32) -> Vec<u8> {
        event::encode(&netlat_common::HookDropEvent {
            header: EventHeader {
                kind: kind::HOOK_DROP,
                cpu: 1,
                ts_ns: ts,
            },
            skbaddr,
            hook,
            ret: 0,
        })
    }

    /// A 5.10-like engine: no drop reasons, so drops are shipped from nf_hook_slow only.
    fn engine_without_reasons() -> Engine {
        let names = Names {
            kallsyms: enrich::Kallsyms::parse("ffffffff81a00000 t nf_hook_slow\n"),
            ..Names::default()
        };
        Engine::new(
            EngineConfig {
                threshold_ns: 200_000_000,
                clock: WallClock { offset_ns: 0 },
                has_reasons: false,
                tracker: TrackerConfig::default(),
            },
            names,
            Box::new(crate::verdict::NoFacts),
            Box::new(NoCounters),
            Box::new(NoNatLookup),
        )
    }

    /// The first-SYN rule drop on a kernel without drop reasons: the skb is freed in
    /// nf_hook_slow, and only nft_do_chain's NF_DROP (kretprobe) names the rule.
    #[test]
    fn rule_drop_without_drop_reasons_is_named_by_the_table_hook() {
        let mut drop = syn_drop(10 * S + 300_000, 40000, 0xffffffff81a000a4);
        let mut ev: DropEvent = unsafe { std::ptr::read_unaligned(drop.as_ptr().cast()) };
        ev.skbaddr = 0x5eb;
        ev.reason = 0;
        drop = event::encode(&ev);
        let stream = |hook: Option<Vec<u8>>| {
            let mut v = vec![state(10 * S, 7, 2, 0)];
            v.extend(hook);
            v.extend([
                drop.clone(),
                retrans(11 * S, 40000),
                state(11 * S + 1_000_000, 2, 1, 40000),
            ]);
            v
        };
        let nft = hook_drop(10 * S + 290_000, 0x5eb, netlat_common::hook::NFT_CHAIN);
        let lines = lines_of(&mut engine_without_reasons(), &stream(Some(nft)));
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert_eq!(lines[0]["drops"][0]["location"], "nf_hook_slow+0xa4");
        assert_eq!(lines[0]["verdict"]["issue"], "netfilter-rule-drop");
        assert_eq!(lines[0]["verdict"]["confidence"], "high");
        // The same drop without the hook event: a generic netfilter drop.
        let lines = lines_of(&mut engine_without_reasons(), &stream(None));
        assert_eq!(lines[0]["verdict"]["issue"], "netfilter-drop");
        // A hook drop of another skb, or one too old, does not attach.
        let other = hook_drop(10 * S + 290_000, 0x999, netlat_common::hook::NFT_CHAIN);
        let lines = lines_of(&mut engine_without_reasons(), &stream(Some(other)));
        assert_eq!(lines[0]["verdict"]["issue"], "netfilter-drop");
        let stale = hook_drop(9 * S, 0x5eb, netlat_common::hook::IPT_TABLE);
        let lines = lines_of(&mut engine_without_reasons(), &stream(Some(stale)));
        assert_eq!(lines[0]["verdict"]["issue"], "netfilter-drop");
    }

    /// Counts how often the engine reads the conntrack counters.
    struct CountingClaims(std::rc::Rc<std::cell::Cell<u32>>);
    impl Counters for CountingClaims {
        fn claim(&mut self, _: u32, _: u32) -> Option<CounterEvidence> {
            self.0.set(self.0.get() + 1);
            None
        }
    }

    #[test]
    fn rule_table_drops_do_not_claim_conntrack_counters() {
        let claims = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut e = engine_without_reasons();
        e.counters = Box::new(CountingClaims(claims.clone()));
        let mut ev: DropEvent = unsafe {
            std::ptr::read_unaligned(syn_drop(10 * S, 40000, 0xffffffff81a000a4).as_ptr().cast())
        };
        ev.skbaddr = 0x5eb;
        lines_of(&mut e, &[event::encode(&ev)]);
        assert_eq!(claims.get(), 1, "a bare hook drop reads the counters");
        let nft = hook_drop(10 * S + 100, 0x5eb, netlat_common::hook::NFT_CHAIN);
        let mut ev2 = ev;
        ev2.header.ts_ns = 10 * S + 200;
        lines_of(&mut e, &[nft, event::encode(&ev2)]);
        assert_eq!(claims.get(), 1, "a rule table's drop does not");
    }

    #[test]
    fn fast_connects_are_not_reported_and_replay_is_deterministic() {
        let stream = [
            state(S, 7, 2, 0),
            state(S + 1_000_000, 2, 1, 5555),
            state(2 * S, 7, 2, 0),
            retrans(3 * S, 40001),
            state(3 * S + 1, 2, 1, 40001),
            vec![1, 2, 3],
        ];
        let (a, sa) = run(&stream);
        let (b, sb) = run(&stream);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0]["verdict"]["issue"], "unanswered-syn");
        assert_eq!(sa.attempts, 2);
        assert_eq!(sa.bad_events, 1);
    }

    #[test]
    fn slow_attempt_still_pending_at_finish_is_reported() {
        let mut e = engine();
        let mut sink = Collect::default();
        e.handle_bytes(&state(S, 7, 2, 0), &mut sink).unwrap();
        e.handle_bytes(&retrans(2 * S, 7), &mut sink).unwrap();
        let s = e.finish(5 * S, &mut sink).unwrap();
        assert_eq!(s.in_flight, 1);
        let last = sink.lines.last().unwrap();
        assert_eq!(last["outcome"], "pending");
        assert_eq!(last["connect_ms"], 4000.0);
    }

    /// The node view hears of every connect as it begins (netns and process), so it can read
    /// the namespace before a verdict needs it; the other transitions say nothing.
    #[test]
    fn each_connect_start_offers_its_namespace_for_prefetch() {
        let view = one_service();
        let seen = std::rc::Rc::clone(&view.prefetched);
        let mut e = engine_with(Box::new(view));
        lines_of(
            &mut e,
            &[
                state(10 * S, 7, 2, 0),
                retrans(11 * S, 40000),
                state(11 * S + 1_000_000, 2, 1, 40000),
                state(12 * S, 7, 2, 0),
            ],
        );
        assert_eq!(*seen.borrow(), vec![(111, 9), (111, 9)]);
    }

    /// Knows one Service: 10.231.0.2:8080 seen from netns 111.
    fn one_service() -> FakeNode {
        FakeNode {
            service: Some((
                111,
                "10.231.0.2:8080".parse().unwrap(),
                "default/web:http".into(),
            )),
            ..FakeNode::default()
        }
    }

    #[test]
    fn connect_lines_carry_the_service_the_node_knows() {
        let mut e = engine_with(Box::new(one_service()));
        let lines = lines_of(
            &mut e,
            &[
                state(10 * S, 7, 2, 0),
                retrans(11 * S, 40000),
                state(11 * S + 1_000_000, 2, 1, 40000),
            ],
        );
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert_eq!(lines[0]["service"], "default/web:http");
        // Without Service knowledge the field is absent.
        let (plain, _) = run(&[
            state(10 * S, 7, 2, 0),
            retrans(11 * S, 40000),
            state(11 * S + 1_000_000, 2, 1, 40000),
        ]);
        assert!(plain[0].get("service").is_none(), "{}", plain[0]);
    }

    #[test]
    fn an_unnamed_ipvs_destination_says_what_is_missing() {
        let events = [
            state(10 * S, 7, 2, 0),
            retrans(11 * S, 40000),
            state(11 * S + 1_000_000, 2, 1, 40000),
        ];
        let node = FakeNode {
            ipvs_unnamed: Some((111, "10.231.0.2:8080".parse().unwrap())),
            ..FakeNode::default()
        };
        let lines = lines_of(&mut engine_with(Box::new(node)), &events);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].get("service").is_none());
        assert!(
            lines[0]["verdict"]["missing"]
                .to_string()
                .contains("IPVS virtual service 10.231.0.2:8080"),
            "{}",
            lines[0]
        );
        let lines = lines_of(&mut engine_with(Box::new(FakeNode::default())), &events);
        assert!(!lines[0]["verdict"]["missing"].to_string().contains("IPVS"));
    }

    #[test]
    fn a_fast_refusal_is_reported_only_when_kube_proxy_rejects_it() {
        use crate::facts::{NoEndpointAction, NoEndpointRule, NoEndpointWhy};
        // Refused 1 ms after the SYN: far below the threshold.
        let refused = [
            state(10 * S, 7, 2, 0),
            state(10 * S + 1_000_000, 2, 7, 40000),
        ];
        let node = FakeNode {
            no_endpoint: Some((
                111,
                "10.231.0.2:8080".parse().unwrap(),
                NoEndpointRule {
                    service: "default/web:http".into(),
                    action: NoEndpointAction::Reject,
                    why: NoEndpointWhy::NoEndpoints,
                    rule: "iptables-nft filter KUBE-SERVICES".into(),
                },
            )),
            ..one_service()
        };
        let mut e = engine_with(Box::new(node));
        let lines = lines_of(&mut e, &refused);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert_eq!(lines[0]["outcome"], "failed");
        assert_eq!(lines[0]["service"], "default/web:http");
        assert_eq!(lines[0]["verdict"]["issue"], "service-no-endpoints");
        // Without kube-proxy's rule, a refusal below the threshold is not reported.
        let mut e = engine_with(Box::new(one_service()));
        assert!(lines_of(&mut e, &refused).is_empty());
    }

    fn slow_connect() -> [Vec<u8>; 3] {
        [
            state(10 * S, 7, 2, 0),
            retrans(11 * S, 40000),
            state(11 * S + 1_000_000, 2, 1, 40000),
        ]
    }

    #[test]
    fn connect_lines_name_the_pod_its_container_and_the_destination_pod() {
        use crate::testkit::{FakePods, pod};
        let mut pods = FakePods::default();
        pods.by_netns.insert(111, pod("shop", "web-0", None));
        pods.containers.insert(9, "app".into());
        pods.by_ip
            .insert("10.231.0.2".parse().unwrap(), pod("shop", "db-0", None));
        let seen = std::rc::Rc::clone(&pods.prefetched);
        let mut e = engine().with_pods(Box::new(pods));
        let lines = lines_of(&mut e, &slow_connect());
        assert_eq!(lines.len(), 1, "{lines:#?}");
        let l = &lines[0];
        assert_eq!(l["pod"]["namespace"], "shop");
        assert_eq!(l["pod"]["name"], "web-0");
        assert_eq!(l["pod"]["uid"], "uid-web-0");
        assert_eq!(l["pod"]["container"], "app");
        assert_eq!(l["dst_pod"]["name"], "db-0");
        assert!(l.get("pod_missing").is_none(), "{l}");
        // The lookup was started when the connect began, before it was slow.
        assert_eq!(*seen.borrow(), vec![(111, 9)]);
    }

    #[test]
    fn the_destination_pod_is_found_after_dnat() {
        use crate::testkit::{FakePods, pod};
        /// The Service address 10.231.0.2:8080 was DNATed to the pod 10.236.0.7:80.
        struct Dnat;
        impl NatLookup for Dnat {
            fn ask(&mut self, _: SockKey, t: FiveTuple, _: NatWhere) -> Option<FiveTuple> {
                Some(FiveTuple {
                    dst: "10.236.0.7:80".parse().ok()?,
                    ..t
                })
            }
        }
        let mut pods = FakePods::default();
        pods.by_ip
            .insert("10.236.0.7".parse().unwrap(), pod("shop", "db-1", None));
        let mut e = Engine::new(
            EngineConfig {
                threshold_ns: 200_000_000,
                clock: WallClock { offset_ns: 0 },
                has_reasons: true,
                tracker: TrackerConfig::default(),
            },
            Names::default(),
            Box::new(crate::verdict::NoFacts),
            Box::new(NoCounters),
            Box::new(Dnat),
        )
        .with_pods(Box::new(pods));
        let lines = lines_of(&mut e, &slow_connect());
        assert_eq!(lines[0]["dst_pod"]["name"], "db-1", "{}", lines[0]);
        // Without the NAT answer the dialled address is no pod.
        let mut pods = FakePods::default();
        pods.by_ip
            .insert("10.236.0.7".parse().unwrap(), pod("shop", "db-1", None));
        let mut e = engine().with_pods(Box::new(pods));
        let lines = lines_of(&mut e, &slow_connect());
        assert!(lines[0].get("dst_pod").is_none(), "{}", lines[0]);
    }

    #[test]
    fn an_unknown_pod_costs_a_missing_note_and_no_pod_costs_nothing() {
        use crate::testkit::FakePods;
        let mut pods = FakePods::default();
        pods.unknown
            .insert(111, "container runtime not answering".into());
        let mut e = engine().with_pods(Box::new(pods));
        let lines = lines_of(&mut e, &slow_connect());
        assert_eq!(lines.len(), 1, "the line still comes");
        assert!(lines[0].get("pod").is_none());
        assert_eq!(lines[0]["pod_missing"], "container runtime not answering");
        let mut e = engine().with_pods(Box::new(FakePods::default()));
        let lines = lines_of(&mut e, &slow_connect());
        assert!(lines[0].get("pod").is_none(), "{}", lines[0]);
        assert!(lines[0].get("pod_missing").is_none(), "{}", lines[0]);
    }

    #[test]
    fn drop_lines_name_the_pod_of_their_namespace() {
        use crate::testkit::{FakePods, pod};
        let mut pods = FakePods::default();
        // The receiver's VXLAN drop happened in netns 333, a pod's (no process: no container).
        pods.by_netns.insert(333, pod("edge", "gw-0", None));
        pods.containers.insert(9, "app".into());
        let mut e = exposed_engine(Box::new(NoNatLookup)).with_pods(Box::new(pods));
        let lines = lines_of(&mut e, &[vxlan_drop(10 * S, [10, 9, 0, 1], 61000)]);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert_eq!(lines[0]["type"], "drop");
        assert_eq!(lines[0]["pod"]["name"], "gw-0");
        assert!(lines[0]["pod"].get("container").is_none(), "{}", lines[0]);
    }

    /// At stop, an attempt whose end was lost (the kernel no longer holds it in SYN_SENT) is
    /// not reported as pending for the whole run; one still waiting is. Kernel counters of
    /// fast attempts count as attempts.
    #[test]
    fn attempts_whose_end_was_lost_are_not_reported_pending() {
        let mut e = engine();
        lines_of(&mut e, &[state(10 * S, 7, 2, 0)]);
        let mut sink = Collect::default();
        assert_eq!(e.ends_lost(|_| true), Vec::new(), "still waiting: kept");
        let gone = e.ends_lost(|_| false);
        assert_eq!(gone.len(), 1);
        e.kernel_attempt_stats([("fast", 41), ("table_full", 0)]);
        let s = e.finish(20 * S, &mut sink).unwrap();
        assert!(sink.lines.is_empty(), "{:?}", sink.lines);
        assert_eq!((s.in_flight, s.tracker.end_lost), (0, 1));
        assert_eq!((s.attempts, s.tracker.kernel_fast), (42, 41));
        // The same stream with the attempt still waiting: reported as pending.
        let mut e = engine();
        lines_of(&mut e, &[state(10 * S, 7, 2, 0)]);
        let mut sink = Collect::default();
        let s = e.finish(20 * S, &mut sink).unwrap();
        assert_eq!(s.in_flight, 1);
        assert_eq!(sink.lines[0]["outcome"], "pending");
    }
}
