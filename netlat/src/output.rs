//! Printers. Everything netlat reports flows through the [`Sink`] trait; the terminal printer
//! and the JSON-lines printer are two implementations (ripgrep's model).

use std::{
    collections::BTreeMap,
    io::{self, Write},
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::{
    flow::{Attempt, Outcome, TrackerStats, ns_to_ms},
    verdict::Verdict,
};

/// Converts kernel CLOCK_MONOTONIC timestamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// Wall-clock ns at monotonic 0.
    pub offset_ns: i128,
}

impl WallClock {
    pub fn to_system_time(&self, mono_ns: u64) -> SystemTime {
        let wall = (i128::from(mono_ns) + self.offset_ns).max(0);
        SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(wall).unwrap_or(u64::MAX))
    }

    pub fn rfc3339(&self, mono_ns: u64) -> String {
        humantime::format_rfc3339_millis(self.to_system_time(mono_ns)).to_string()
    }
}

/// One evidence source (hook) and whether it is active.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Hook {
    /// What the evidence is, e.g. "connect state changes".
    pub evidence: String,
    /// The hook that provides it, e.g. "tracepoint sock:inet_sock_set_state".
    pub hook: String,
    pub active: bool,
    /// Why it is inactive, or what it lacks.
    pub detail: String,
}

/// A drop in a connect line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DropJson {
    pub reason: String,
    pub location: String,
    pub at_ms: f64,
    pub netns: u32,
    pub ifindex: u32,
    pub direction: crate::flow::Direction,
    pub via_vxlan: bool,
    /// Matched through conntrack: the dropped packet had been NATed from the connect's tuple.
    pub via_nat: bool,
    pub packet: Option<String>,
    /// The dropped packet's conntrack entry: pre-NAT tuple, NAT source, status.
    pub conntrack: Option<CtJson>,
    /// How many more times the same packet was dropped the same way (each retried SYN).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u32,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CtJson {
    pub original: String,
    pub nat_source: String,
    pub confirmed: bool,
    pub src_nat: bool,
}

/// The JSON line of a connection attempt (field names are a public contract).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnectJson {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts: String,
    pub netns: u32,
    pub pid: u32,
    pub comm: String,
    pub src: String,
    pub dst: String,
    /// The Kubernetes Service `dst` belongs to (`namespace/name:port`), where the node knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub outcome: Outcome,
    pub connect_ms: f64,
    pub syn_retransmits: u32,
    /// The SYN was dropped here and still answered, yet the kernel reported no retransmit:
    /// at least one resend happened unseen (`syn_retransmits` counts only what was seen).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub syn_resent_unseen: bool,
    pub retransmit_at_ms: Vec<f64>,
    pub drops: Vec<DropJson>,
    pub verdict: Option<Verdict>,
}

/// Round to µs so JSON stays short and replays compare equal.
fn ms3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

impl ConnectJson {
    pub fn new(a: &Attempt, v: Option<&Verdict>, clock: &WallClock) -> Self {
        ConnectJson {
            kind: "connect",
            ts: clock.rfc3339(a.start_ns),
            netns: a.sock.netns,
            pid: a.tgid,
            comm: a.comm.clone(),
            src: a.src.to_string(),
            dst: a.dst.to_string(),
            service: None,
            outcome: a.outcome,
            connect_ms: ms3(ns_to_ms(a.duration_ns())),
            syn_retransmits: u32::try_from(a.retransmits.len()).unwrap_or(u32::MAX),
            syn_resent_unseen: crate::verdict::resend_unseen(a),
            retransmit_at_ms: a.retransmit_offsets_ms().into_iter().map(ms3).collect(),
            drops: a
                .drops
                .iter()
                .map(|d| DropJson {
                    reason: d.drop.reason.to_string(),
                    location: d.drop.location.to_string(),
                    at_ms: ms3(ns_to_ms(d.drop.ts_ns.saturating_sub(a.start_ns))),
                    netns: d.drop.netns,
                    ifindex: d.drop.ifindex,
                    direction: d.direction,
                    via_vxlan: d.via_vxlan,
                    via_nat: d.via_nat,
                    repeats: d.repeats,
                    conntrack: d.drop.ct.as_deref().map(|ct| CtJson {
                        original: ct.orig.to_string(),
                        nat_source: ct.nat_source().to_string(),
                        confirmed: ct.confirmed(),
                        src_nat: ct.src_nat(),
                    }),
                    packet: d.drop.packet.as_ref().map(|p| match p.tcp_flags {
                        Some(f) => format!("{} [{f}]", p.tuple),
                        None => p.tuple.to_string(),
                    }),
                })
                .collect(),
            verdict: v.cloned(),
        }
    }
}

/// The JSON line of a drop judged on its own (e.g. the receiving node of a VXLAN flow).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DropLineJson {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts: String,
    pub netns: u32,
    pub ifindex: u32,
    pub cpu: u32,
    pub reason: String,
    pub location: String,
    pub packet: Option<String>,
    /// The inner flow of a VXLAN packet.
    pub inner: Option<String>,
    pub vni: Option<u32>,
    pub conntrack: Option<CtJson>,
    pub verdict: Verdict,
}

fn packet_text(p: &crate::packet::Packet) -> String {
    match p.tcp_flags {
        Some(f) => format!("{} [{f}]", p.tuple),
        None => p.tuple.to_string(),
    }
}

fn ct_json(ct: &crate::symbols::CtInfo) -> CtJson {
    CtJson {
        original: ct.orig.to_string(),
        nat_source: ct.nat_source().to_string(),
        confirmed: ct.confirmed(),
        src_nat: ct.src_nat(),
    }
}

impl DropLineJson {
    pub fn new(d: &crate::symbols::DropRecord, v: &Verdict, clock: &WallClock) -> Self {
        let vx = d.packet.as_ref().and_then(|p| p.vxlan.as_ref());
        DropLineJson {
            kind: "drop",
            ts: clock.rfc3339(d.ts_ns),
            netns: d.netns,
            ifindex: d.ifindex,
            cpu: d.cpu,
            reason: d.reason.to_string(),
            location: d.location.to_string(),
            packet: d.packet.as_ref().map(packet_text),
            inner: vx.and_then(|v| v.inner.as_deref()).map(packet_text),
            vni: vx.map(|v| v.vni),
            conntrack: d.ct.as_deref().map(ct_json),
            verdict: v.clone(),
        }
    }
}

/// End-of-run (or periodic) totals.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub duration_s: f64,
    pub attempts: u64,
    pub slow: u64,
    /// Slow attempts per verdict id ("none" when nothing fit).
    pub by_issue: BTreeMap<String, u64>,
    /// Drops reported on their own, per verdict id.
    pub drops_by_issue: BTreeMap<String, u64>,
    /// Events the kernel could not put in the ring buffer, per event kind.
    pub lost_events: BTreeMap<String, u64>,
    /// Ring-buffer items that did not decode.
    pub bad_events: u64,
    /// Reported connects whose SYN resend the kernel never reported (`syn_resent_unseen`).
    #[serde(skip_serializing_if = "is_zero")]
    pub retransmits_unseen: u64,
    pub tracker: TrackerStats,
    /// Attempts still in SYN_SENT at the end.
    pub in_flight: u64,
}

impl Summary {
    pub fn lost_total(&self) -> u64 {
        self.lost_events.values().sum()
    }
}

/// Where reports go.
pub trait Sink {
    fn hooks(&mut self, hooks: &[Hook]) -> io::Result<()>;
    fn connect(&mut self, line: &ConnectJson) -> io::Result<()>;
    fn drop_line(&mut self, line: &DropLineJson) -> io::Result<()>;
    /// The node fingerprint and its exposure, once at start-up.
    fn node(
        &mut self,
        facts: &crate::node::NodeFacts,
        exposure: &[crate::facts::Exposure],
    ) -> io::Result<()>;
    fn summary(&mut self, s: &Summary) -> io::Result<()>;
    /// The latency histogram summary (periodic and at exit, before [`Sink::summary`]).
    fn histogram(&mut self, _h: &crate::export::HistogramSummary) -> io::Result<()> {
        Ok(())
    }
    /// The kernel could not reserve more events since the last tick (`{"type":"loss",…}`).
    fn loss(&mut self, _l: &crate::limits::LossLine) -> io::Result<()> {
        Ok(())
    }
}

/// A borrowed sink is a sink (so a [`Tee`] can hold `&mut dyn Sink`). Every method must be
/// forwarded here, the defaulted ones too, or a sink behind a `Tee` silently misses them.
impl<S: Sink + ?Sized> Sink for &mut S {
    fn hooks(&mut self, hooks: &[Hook]) -> io::Result<()> {
        (**self).hooks(hooks)
    }
    fn connect(&mut self, line: &ConnectJson) -> io::Result<()> {
        (**self).connect(line)
    }
    fn drop_line(&mut self, line: &DropLineJson) -> io::Result<()> {
        (**self).drop_line(line)
    }
    fn node(
        &mut self,
        facts: &crate::node::NodeFacts,
        exposure: &[crate::facts::Exposure],
    ) -> io::Result<()> {
        (**self).node(facts, exposure)
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        (**self).summary(s)
    }
    fn histogram(&mut self, h: &crate::export::HistogramSummary) -> io::Result<()> {
        (**self).histogram(h)
    }
    fn loss(&mut self, l: &crate::limits::LossLine) -> io::Result<()> {
        (**self).loss(l)
    }
}

/// Fans every report out to two sinks (nest for more): the printer and the exports. Both see
/// every report even when the first fails (a closed stdout must not starve the exports); the
/// first error is returned.
pub struct Tee<A, B>(pub A, pub B);

impl<A: Sink, B: Sink> Tee<A, B> {
    fn both(&mut self, mut f: impl FnMut(&mut dyn Sink) -> io::Result<()>) -> io::Result<()> {
        let a = f(&mut self.0);
        let b = f(&mut self.1);
        a.and(b)
    }
}

impl<A: Sink, B: Sink> Sink for Tee<A, B> {
    fn hooks(&mut self, hooks: &[Hook]) -> io::Result<()> {
        self.both(|s| s.hooks(hooks))
    }
    fn connect(&mut self, line: &ConnectJson) -> io::Result<()> {
        self.both(|s| s.connect(line))
    }
    fn drop_line(&mut self, line: &DropLineJson) -> io::Result<()> {
        self.both(|s| s.drop_line(line))
    }
    fn node(
        &mut self,
        facts: &crate::node::NodeFacts,
        exposure: &[crate::facts::Exposure],
    ) -> io::Result<()> {
        self.both(|s| s.node(facts, exposure))
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.both(|k| k.summary(s))
    }
    fn histogram(&mut self, h: &crate::export::HistogramSummary) -> io::Result<()> {
        self.both(|s| s.histogram(h))
    }
    fn loss(&mut self, l: &crate::limits::LossLine) -> io::Result<()> {
        self.both(|s| s.loss(l))
    }
}

/// Discards everything (once stdout is gone, or when only the exports are wanted).
pub struct NullSink;

impl Sink for NullSink {
    fn hooks(&mut self, _: &[Hook]) -> io::Result<()> {
        Ok(())
    }
    fn connect(&mut self, _: &ConnectJson) -> io::Result<()> {
        Ok(())
    }
    fn drop_line(&mut self, _: &DropLineJson) -> io::Result<()> {
        Ok(())
    }
    fn node(&mut self, _: &crate::node::NodeFacts, _: &[crate::facts::Exposure]) -> io::Result<()> {
        Ok(())
    }
    fn summary(&mut self, _: &Summary) -> io::Result<()> {
        Ok(())
    }
}

/// JSON lines on a writer.
pub struct JsonSink<W: Write> {
    out: W,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    fn line<T: Serialize>(&mut self, v: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn hooks(&mut self, hooks: &[Hook]) -> io::Result<()> {
        #[derive(Serialize)]
        struct Caps<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            hooks: &'a [Hook],
        }
        self.line(&Caps {
            kind: "capabilities",
            hooks,
        })
    }

    fn connect(&mut self, line: &ConnectJson) -> io::Result<()> {
        self.line(line)
    }

    fn drop_line(&mut self, line: &DropLineJson) -> io::Result<()> {
        self.line(line)
    }

    fn node(
        &mut self,
        facts: &crate::node::NodeFacts,
        exposure: &[crate::facts::Exposure],
    ) -> io::Result<()> {
        #[derive(Serialize)]
        struct Node<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            facts: &'a crate::node::NodeFacts,
            exposure: &'a [crate::facts::Exposure],
        }
        self.line(&Node {
            kind: "node",
            facts,
            exposure,
        })
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.line(s)
    }

    fn histogram(&mut self, h: &crate::export::HistogramSummary) -> io::Result<()> {
        self.line(h)
    }

    fn loss(&mut self, l: &crate::limits::LossLine) -> io::Result<()> {
        self.line(l)
    }
}

/// Human-readable lines: results on `out`, status on `err`.
pub struct HumanSink<W: Write, E: Write> {
    out: W,
    err: E,
}

impl<W: Write, E: Write> HumanSink<W, E> {
    pub fn new(out: W, err: E) -> Self {
        Self { out, err }
    }
}

impl<W: Write, E: Write> Sink for HumanSink<W, E> {
    fn hooks(&mut self, hooks: &[Hook]) -> io::Result<()> {
        for h in hooks {
            let state = if h.active { "active  " } else { "MISSING " };
            writeln!(self.err, "netlat: {state}{:<28} {}", h.evidence, h.hook)?;
            if !h.detail.is_empty() {
                writeln!(self.err, "netlat:         {}", h.detail)?;
            }
        }
        self.err.flush()
    }

    fn connect(&mut self, c: &ConnectJson) -> io::Result<()> {
        let ladder = if c.retransmit_at_ms.is_empty() {
            "no SYN retry".to_string()
        } else {
            let steps: Vec<String> = c
                .retransmit_at_ms
                .iter()
                .map(|m| format!("{:.0}", m))
                .collect();
            format!("SYN at 0 → retries at {} ms", steps.join(", "))
        };
        let who = if c.comm.is_empty() {
            String::new()
        } else {
            format!("{}[{}] ", c.comm, c.pid)
        };
        let service = c
            .service
            .as_ref()
            .map(|s| format!(" (service {s})"))
            .unwrap_or_default();
        writeln!(
            self.out,
            "{} SLOW {:>9.1} ms  {who}{} -> {}{service}  {:?}  netns {}",
            c.ts, c.connect_ms, c.src, c.dst, c.outcome, c.netns
        )?;
        writeln!(self.out, "    {ladder}")?;
        for d in &c.drops {
            writeln!(
                self.out,
                "    drop {} at {} (+{:.1} ms{}, netns {}{}{})",
                d.reason,
                d.location,
                d.at_ms,
                if d.repeats > 0 {
                    format!(", then {} more time(s)", d.repeats)
                } else {
                    String::new()
                },
                d.netns,
                if d.via_vxlan {
                    ", inner VXLAN flow"
                } else {
                    ""
                },
                d.packet
                    .as_ref()
                    .map(|p| format!(", {p}"))
                    .unwrap_or_default()
            )?;
        }
        match &c.verdict {
            Some(v) => {
                writeln!(
                    self.out,
                    "    => {} ({:?} confidence): {}",
                    v.issue, v.confidence, v.title
                )?;
                for e in &v.evidence {
                    writeln!(self.out, "       seen: {e}")?;
                }
                for m in &v.missing {
                    writeln!(self.out, "       not seen: {m}")?;
                }
                writeln!(self.out, "       fix: {}", v.remedy)?;
            }
            None => writeln!(self.out, "    => no known issue fits this evidence")?,
        }
        self.out.flush()
    }

    fn node(
        &mut self,
        facts: &crate::node::NodeFacts,
        exposure: &[crate::facts::Exposure],
    ) -> io::Result<()> {
        writeln!(self.err, "netlat: kernel {}", facts.kernel.release)?;
        for e in exposure
            .iter()
            .filter(|e| e.exposed == crate::facts::Exposed::Yes)
        {
            writeln!(
                self.err,
                "netlat: this node is EXPOSED to {}: {}",
                e.issue,
                e.why.join("; ")
            )?;
        }
        self.err.flush()
    }

    fn drop_line(&mut self, d: &DropLineJson) -> io::Result<()> {
        writeln!(
            self.out,
            "{} DROP {} at {} netns {} {}{}",
            d.ts,
            d.reason,
            d.location,
            d.netns,
            d.packet.as_deref().unwrap_or("(undecoded)"),
            d.inner
                .as_ref()
                .map(|i| format!(" carrying {i}"))
                .unwrap_or_default()
        )?;
        let v = &d.verdict;
        writeln!(
            self.out,
            "    => {} ({:?} confidence): {}",
            v.issue, v.confidence, v.title
        )?;
        writeln!(self.out, "       fix: {}", v.remedy)?;
        self.out.flush()
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        writeln!(
            self.err,
            "netlat: {:.1} s, {} connect attempts, {} slow, {} still in SYN_SENT",
            s.duration_s, s.attempts, s.slow, s.in_flight
        )?;
        for (issue, n) in &s.by_issue {
            writeln!(self.err, "netlat:   {n:>6} {issue}")?;
        }
        for (issue, n) in &s.drops_by_issue {
            writeln!(self.err, "netlat:   {n:>6} drops: {issue}")?;
        }
        let lost = s.lost_total();
        if lost > 0 || s.bad_events > 0 {
            writeln!(
                self.err,
                "netlat: LOST {lost} kernel events (ring buffer full: {:?}), {} undecodable",
                s.lost_events, s.bad_events
            )?;
        } else {
            writeln!(self.err, "netlat: 0 events lost")?;
        }
        if s.retransmits_unseen > 0 {
            writeln!(
                self.err,
                "netlat: {} slow connects had a SYN resend the kernel did not report (inferred \
                 from the dropped SYN; see syn_resent_unseen)",
                s.retransmits_unseen
            )?;
        }
        let t = &s.tracker;
        if t.evicted + t.expired + t.drops_forgotten > 0 {
            writeln!(
                self.err,
                "netlat: tracker limits hit: {} attempts evicted, {} expired, {} drops forgotten",
                t.evicted, t.expired, t.drops_forgotten
            )?;
        }
        self.err.flush()
    }

    fn histogram(&mut self, h: &crate::export::HistogramSummary) -> io::Result<()> {
        crate::export::histo::write_human(h, &mut self.err)
    }

    fn loss(&mut self, l: &crate::limits::LossLine) -> io::Result<()> {
        writeln!(
            self.err,
            "netlat: LOST {} {} events (ring buffer full), {} so far",
            l.lost, l.kind, l.total
        )?;
        self.err.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::SockKey, flow::Attempt};

    fn attempt() -> Attempt {
        Attempt {
            sock: SockKey {
                netns: 4026532000,
                skaddr: 1,
            },
            tgid: 42,
            comm: "curl".into(),
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.2:8080".parse().unwrap(),
            start_ns: 1_000_000_000,
            end_ns: 2_011_500_000,
            outcome: Outcome::Established,
            retransmits: vec![2_011_000_000],
            drops: vec![],
            cpu: 0,
        }
    }

    #[test]
    fn json_line_has_the_contract_fields() {
        let clock = WallClock {
            offset_ns: 1_700_000_000_000_000_000,
        };
        let mut buf = Vec::new();
        JsonSink::new(&mut buf)
            .connect(&ConnectJson::new(&attempt(), None, &clock))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["type"], "connect");
        assert_eq!(v["ts"], "2023-11-14T22:13:21.000Z");
        assert_eq!(v["netns"], 4026532000u64);
        assert_eq!(v["pid"], 42);
        assert_eq!(v["comm"], "curl");
        assert_eq!(v["src"], "10.0.0.1:40000");
        assert_eq!(v["dst"], "10.0.0.2:8080");
        assert_eq!(v["outcome"], "established");
        assert_eq!(v["connect_ms"], 1011.5);
        assert_eq!(v["syn_retransmits"], 1);
        assert_eq!(v["retransmit_at_ms"], serde_json::json!([1011.0]));
        assert_eq!(v["drops"], serde_json::json!([]));
        assert!(v["verdict"].is_null());
        // Unknown Service: no field at all, so lines of older runs keep their shape.
        assert!(v.get("service").is_none(), "{v}");
        assert_eq!(buf.last(), Some(&b'\n'));
    }

    #[test]
    fn human_line_shows_ladder_and_verdict() {
        let clock = WallClock { offset_ns: 0 };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let a = attempt();
        let v = crate::verdict::Judge {
            attempt: &a,
            node: &crate::verdict::NoFacts,
        }
        .verdict();
        HumanSink::new(&mut out, &mut err)
            .connect(&ConnectJson::new(&a, v.as_ref(), &clock))
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("SLOW    1011.5 ms  curl[42] 10.0.0.1:40000 -> 10.0.0.2:8080  "));
        assert!(text.contains("retries at 1011 ms"));
        assert!(text.contains("=> unanswered-syn (Low confidence)"));
        // A known Service follows the destination, in the JSON line as `service`.
        let mut line = ConnectJson::new(&a, v.as_ref(), &clock);
        line.service = Some("default/web:http".into());
        let mut out = Vec::new();
        HumanSink::new(&mut out, Vec::new()).connect(&line).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("-> 10.0.0.2:8080 (service default/web:http)  Established"),
            "{text}"
        );
        let json = serde_json::to_value(&line).unwrap();
        assert_eq!(json["service"], "default/web:http");
    }

    #[test]
    fn summary_reports_losses() {
        let mut err = Vec::new();
        let mut s = Summary {
            kind: "summary",
            attempts: 3,
            slow: 1,
            ..Summary::default()
        };
        s.lost_events.insert("drop".into(), 7);
        HumanSink::new(Vec::new(), &mut err).summary(&s).unwrap();
        let text = String::from_utf8(err).unwrap();
        assert!(text.contains("3 connect attempts, 1 slow"));
        assert!(text.contains("LOST 7 kernel events"));
    }

    /// Counts what reaches it; fails every call when `fail`.
    #[derive(Default)]
    struct Counting {
        connects: usize,
        histograms: usize,
        fail: bool,
    }

    impl Sink for Counting {
        fn hooks(&mut self, _: &[Hook]) -> io::Result<()> {
            Ok(())
        }
        fn connect(&mut self, _: &ConnectJson) -> io::Result<()> {
            self.connects += 1;
            if self.fail {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            Ok(())
        }
        fn drop_line(&mut self, _: &DropLineJson) -> io::Result<()> {
            Ok(())
        }
        fn node(
            &mut self,
            _: &crate::node::NodeFacts,
            _: &[crate::facts::Exposure],
        ) -> io::Result<()> {
            Ok(())
        }
        fn summary(&mut self, _: &Summary) -> io::Result<()> {
            Ok(())
        }
        fn histogram(&mut self, _: &crate::export::HistogramSummary) -> io::Result<()> {
            self.histograms += 1;
            Ok(())
        }
    }

    #[test]
    fn tee_feeds_both_sinks_even_when_the_first_fails() {
        let clock = WallClock { offset_ns: 0 };
        let line = ConnectJson::new(&attempt(), None, &clock);
        let mut first = Counting {
            fail: true,
            ..Counting::default()
        };
        let mut second = Counting::default();
        {
            let borrowed: &mut dyn Sink = &mut first;
            let mut tee = Tee(borrowed, &mut second);
            let e = tee.connect(&line).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
            let h = crate::export::Histograms::new().unwrap().summary(1.0, true);
            tee.histogram(&h).unwrap();
        }
        assert_eq!((first.connects, second.connects), (1, 1));
        // A defaulted method reaches the sink through `&mut dyn Sink` too.
        assert_eq!((first.histograms, second.histograms), (1, 1));
    }
}
