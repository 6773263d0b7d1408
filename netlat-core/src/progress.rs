//! Progress lines: an attempt still in SYN_SENT is reported while it waits, when the engine
//! learns of a SYN retransmit of it (each ladder step) or of new evidence (a drop matched to
//! it, its NATed tuple), with the verdict the evidence so far supports. Its connect line still
//! comes at the end and says when the final verdict differs from the last one shown.
//!
//! A SYN storm must not become a storm of lines: at most [`LINES_PER_S`] progress lines per
//! second of event time; the rest are counted (in the next line printed and in the summary).
//!
//! The node's answers given to an attempt's provisional verdict are kept for its final one:
//! the node is asked each question once per attempt, as before progress lines existed, so a
//! recording replays to the same answers (also one made before them).

use std::{
    cell::RefCell,
    collections::{HashMap, hash_map::Entry},
    net::SocketAddr,
};

use crate::{
    event::SockKey,
    facts::{ListenEvidence, NoEndpointRule, RealServer},
    flow::Attempt,
    report::{ConnectReport, RetryReport, WallClock},
    verdict::{Confidence, Judge, Judgement, NodeView},
};

/// Progress lines per second of event time at most: enough for every slow connect of a
/// bad minute to be seen waiting, few enough that a terminal stays readable in a SYN storm.
pub const LINES_PER_S: u32 = 50;

const SECOND_NS: u64 = 1_000_000_000;

/// What the node answered about one attempt, per question.
#[derive(Debug, Default)]
pub struct Answers {
    masq: HashMap<u32, Option<(usize, usize)>>,
    vxlan: HashMap<u32, Option<Vec<String>>>,
    udp: HashMap<u32, Option<u64>>,
    service: HashMap<(u32, SocketAddr), Option<String>>,
    ipvs: HashMap<(u32, SocketAddr), Option<Vec<RealServer>>>,
    ipvs_unnamed: HashMap<(u32, SocketAddr), bool>,
    no_endpoint: HashMap<(u32, SocketAddr), Option<NoEndpointRule>>,
    listen: HashMap<(SocketAddr, u64, u64), Option<ListenEvidence>>,
}

/// A node view that asks `inner` each question once and then answers from `answers`.
pub struct Memo<'a> {
    inner: &'a dyn NodeView,
    answers: Option<&'a RefCell<Answers>>,
}

impl<'a> Memo<'a> {
    /// Remembering in `answers`; without, every question goes to `inner`.
    pub fn new(inner: &'a dyn NodeView, answers: Option<&'a RefCell<Answers>>) -> Self {
        Self { inner, answers }
    }

    fn get<K: std::hash::Hash + Eq, V: Clone>(
        &self,
        table: impl Fn(&mut Answers) -> &mut HashMap<K, V>,
        key: K,
        ask: impl FnOnce() -> V,
    ) -> V {
        let Some(cell) = self.answers else {
            return ask();
        };
        if let Some(v) = table(&mut cell.borrow_mut()).get(&key) {
            return v.clone();
        }
        // Asked with no borrow held: a view may be slow or re-entrant.
        let v = ask();
        table(&mut cell.borrow_mut()).insert(key, v.clone());
        v
    }
}

impl NodeView for Memo<'_> {
    fn masquerade(&self, netns: u32) -> Option<(usize, usize)> {
        self.get(|a| &mut a.masq, netns, || self.inner.masquerade(netns))
    }
    fn vxlan_offloaded(&self, netns: u32) -> Option<Vec<String>> {
        self.get(
            |a| &mut a.vxlan,
            netns,
            || self.inner.vxlan_offloaded(netns),
        )
    }
    fn udp_timeout_s(&self, netns: u32) -> Option<u64> {
        self.get(|a| &mut a.udp, netns, || self.inner.udp_timeout_s(netns))
    }
    fn service(&self, netns: u32, dst: SocketAddr) -> Option<String> {
        self.get(
            |a| &mut a.service,
            (netns, dst),
            || self.inner.service(netns, dst),
        )
    }
    fn ipvs_real_servers(&self, netns: u32, vip: SocketAddr) -> Option<Vec<RealServer>> {
        self.get(
            |a| &mut a.ipvs,
            (netns, vip),
            || self.inner.ipvs_real_servers(netns, vip),
        )
    }
    fn unnamed_ipvs_service(&self, netns: u32, dst: SocketAddr) -> bool {
        self.get(
            |a| &mut a.ipvs_unnamed,
            (netns, dst),
            || self.inner.unnamed_ipvs_service(netns, dst),
        )
    }
    fn no_endpoint_rule(&self, netns: u32, dst: SocketAddr) -> Option<NoEndpointRule> {
        self.get(
            |a| &mut a.no_endpoint,
            (netns, dst),
            || self.inner.no_endpoint_rule(netns, dst),
        )
    }
    fn listen_overflow(&self, dst: SocketAddr, from_ns: u64, to_ns: u64) -> Option<ListenEvidence> {
        self.get(
            |a| &mut a.listen,
            (dst, from_ns, to_ns),
            || self.inner.listen_overflow(dst, from_ns, to_ns),
        )
    }
    fn prefetch(&self, netns: u32, tgid: u32) {
        self.inner.prefetch(netns, tgid);
    }
}

/// An attempt that has had a provisional verdict.
#[derive(Debug, Default)]
pub struct Shown {
    /// The verdict id of its last printed progress line; `None` before one was printed.
    issue: Option<&'static str>,
    /// That line's catalog entry (title) and confidence: new evidence for the same cause
    /// (the drop itself where the node's set-up named it) is worth a line too.
    seen: Option<(&'static str, Confidence)>,
    answers: RefCell<Answers>,
}

impl Shown {
    /// The id last shown, when `final_issue` differs from it.
    pub fn changed_from(&self, final_issue: &str) -> Option<String> {
        self.issue
            .filter(|shown| *shown != final_issue)
            .map(str::to_string)
    }

    pub fn answers(&self) -> &RefCell<Answers> {
        &self.answers
    }
}

/// Why the engine asks for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A SYN retransmit: a ladder step, always worth a line.
    Retransmit,
    /// New evidence (a drop, a NAT alias): a line only if it changes the verdict shown.
    Evidence,
}

/// The attempts with a provisional verdict and the rate limit of their lines.
#[derive(Debug, Default)]
pub struct Progress {
    shown: HashMap<SockKey, Shown, crate::FastHash>,
    limit: Limit,
}

/// [`LINES_PER_S`] lines per second of event time.
#[derive(Debug, Default)]
struct Limit {
    /// The second the budget is counted in, and the lines printed in it.
    window: u64,
    in_window: u32,
    /// Lines suppressed since the last one printed, and in all.
    since_last: u64,
    total_suppressed: u64,
}

impl Limit {
    /// Whether a line may be printed at `ts_ns`; counts it either way.
    fn admit(&mut self, ts_ns: u64) -> bool {
        let second = ts_ns / SECOND_NS;
        if second != self.window {
            self.window = second;
            self.in_window = 0;
        }
        if self.in_window < LINES_PER_S {
            self.in_window += 1;
            true
        } else {
            self.since_last += 1;
            self.total_suppressed += 1;
            false
        }
    }
}

impl Progress {
    pub fn is_shown(&self, sock: &SockKey) -> bool {
        self.shown.contains_key(sock)
    }

    /// The attempt ended (or its socket started another): its provisional state, if any.
    pub fn take(&mut self, sock: &SockKey) -> Option<Shown> {
        self.shown.remove(sock)
    }

    /// Forget attempts the tracker no longer holds (evicted or aged out without an end).
    pub fn retain(&mut self, mut in_flight: impl FnMut(&SockKey) -> bool) {
        self.shown.retain(|k, _| in_flight(k));
    }

    pub fn suppressed(&self) -> u64 {
        self.limit.total_suppressed
    }

    /// The progress line for attempt `a` (in flight, as of the event that prompted it), if one
    /// is due: the caller has checked that it retransmitted and is past the report threshold.
    pub fn line(
        &mut self,
        a: &Attempt,
        trigger: Trigger,
        node: &dyn NodeView,
        clock: &WallClock,
    ) -> Option<RetryReport> {
        // A retransmit of an attempt never shown spends the budget before any judging: in a
        // storm the suppressed ones cost a counter, not a verdict.
        let fresh = !self.shown.contains_key(&a.sock);
        if fresh && (trigger == Trigger::Evidence || !self.limit.admit(a.end_ns)) {
            return None;
        }
        let shown = match self.shown.entry(a.sock) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Shown::default()),
        };
        let memo = Memo::new(node, Some(&shown.answers));
        let judged: Judgement = Judge {
            attempt: a,
            node: &memo,
        }
        .judge();
        let issue = judged.verdict.as_ref().map_or("none", |v| v.issue);
        let seen = judged.verdict.as_ref().map(|v| (v.title, v.confidence));
        let changed = shown.issue.is_some_and(|s| s != issue);
        if !fresh && trigger == Trigger::Evidence && !changed && shown.seen == seen {
            return None;
        }
        let mut line = ConnectReport::new(a, &judged, clock);
        line.service = memo.service(a.sock.netns, a.dst);
        if !fresh && !self.limit.admit(a.end_ns) {
            return None;
        }
        let mut retry = RetryReport::waiting(line);
        if changed {
            retry.verdict_changed_from = shown.issue.map(str::to_string);
        }
        shown.issue = Some(issue);
        shown.seen = seen;
        retry.suppressed = std::mem::take(&mut self.limit.since_last);
        Some(retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flow::Outcome,
        testkit::{FakeNode, S},
        verdict::NoFacts,
    };

    fn waiting(skaddr: u64, start: u64, retries: &[u64], now: u64) -> Attempt {
        Attempt {
            sock: SockKey { netns: 1, skaddr },
            tgid: 42,
            comm: "curl".into(),
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.2:8080".parse().unwrap(),
            start_ns: start,
            end_ns: now,
            outcome: Outcome::Pending,
            retransmits: retries.to_vec(),
            drops: vec![],
            cpu: 0,
        }
    }

    const CLOCK: WallClock = WallClock { offset_ns: 0 };

    #[test]
    fn each_retransmit_gets_a_line_and_evidence_only_when_it_changes_the_verdict() {
        let mut p = Progress::default();
        let a = waiting(1, S, &[2 * S], 2 * S);
        let l = p.line(&a, Trigger::Retransmit, &NoFacts, &CLOCK).unwrap();
        assert_eq!(l.issue(), "unanswered-syn");
        assert!(l.provisional);
        assert_eq!(l.waiting_ms, 1000.0);
        assert_eq!(l.syn_retransmits, 1);
        assert_eq!(l.verdict_changed_from, None);
        // The same evidence again: no line; a new ladder step: a line.
        assert!(p.line(&a, Trigger::Evidence, &NoFacts, &CLOCK).is_none());
        let b = waiting(1, S, &[2 * S, 4 * S], 4 * S);
        assert!(p.line(&b, Trigger::Retransmit, &NoFacts, &CLOCK).is_some());
        // Evidence about an attempt never shown is no reason for a first line.
        let c = waiting(2, S, &[2 * S], 2 * S);
        assert!(p.line(&c, Trigger::Evidence, &NoFacts, &CLOCK).is_none());
        assert!(p.is_shown(&a.sock) && !p.is_shown(&c.sock));
        let shown = p.take(&a.sock).unwrap();
        assert_eq!(shown.changed_from("unanswered-syn"), None);
        assert_eq!(
            shown.changed_from("vxlan-csum-offload").as_deref(),
            Some("unanswered-syn")
        );
    }

    #[test]
    fn a_storm_is_rate_limited_and_what_was_suppressed_is_counted() {
        let mut p = Progress::default();
        let printed = (0..200)
            .filter(|i| {
                let a = waiting(*i, S, &[2 * S], 2 * S + i);
                p.line(&a, Trigger::Retransmit, &NoFacts, &CLOCK).is_some()
            })
            .count();
        assert_eq!(printed, LINES_PER_S as usize);
        assert_eq!(p.suppressed(), 200 - u64::from(LINES_PER_S));
        // Suppressed attempts were not judged, so they hold no state.
        assert_eq!(p.shown.len(), LINES_PER_S as usize);
        // The next second's first line says how many were left out before it.
        let a = waiting(999, S, &[3 * S], 3 * S);
        let l = p.line(&a, Trigger::Retransmit, &NoFacts, &CLOCK).unwrap();
        assert_eq!(l.suppressed, 150);
        let b = waiting(1000, S, &[3 * S], 3 * S);
        assert_eq!(
            p.line(&b, Trigger::Retransmit, &NoFacts, &CLOCK)
                .unwrap()
                .suppressed,
            0
        );
    }

    /// Counts the questions, answering like `FakeNode`.
    struct Counting(FakeNode, std::cell::Cell<u32>);
    impl NodeView for Counting {
        fn masquerade(&self, n: u32) -> Option<(usize, usize)> {
            self.1.set(self.1.get() + 1);
            self.0.masquerade(n)
        }
        fn vxlan_offloaded(&self, n: u32) -> Option<Vec<String>> {
            self.1.set(self.1.get() + 1);
            self.0.vxlan_offloaded(n)
        }
        fn udp_timeout_s(&self, n: u32) -> Option<u64> {
            self.1.set(self.1.get() + 1);
            self.0.udp_timeout_s(n)
        }
        fn service(&self, n: u32, d: SocketAddr) -> Option<String> {
            self.1.set(self.1.get() + 1);
            self.0.service(n, d)
        }
    }

    #[test]
    fn the_node_is_asked_each_question_once_per_attempt() {
        let node = Counting(
            FakeNode {
                masq: Some((1, 1)),
                ..FakeNode::default()
            },
            std::cell::Cell::new(0),
        );
        let answers = RefCell::new(Answers::default());
        let memo = Memo::new(&node, Some(&answers));
        for _ in 0..3 {
            assert_eq!(memo.masquerade(7), Some((1, 1)));
            assert_eq!(memo.service(7, "10.0.0.2:80".parse().unwrap()), None);
        }
        assert_eq!(node.1.get(), 2);
        // Without a memory every question goes through.
        let plain = Memo::new(&node, None);
        plain.masquerade(7);
        plain.masquerade(7);
        assert_eq!(node.1.get(), 4);
    }
}
