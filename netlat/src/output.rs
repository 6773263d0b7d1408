//! Printers: the terminal printer and the JSON-lines printer, two implementations of
//! [`Printer`] (ripgrep's model). The engine reports through the core's two-method
//! [`Reports`] port; a [`Fanout`] hands each report to the printer and the exports.

use std::io::{self, Write};

use netlat_core::{
    exposure::Exposure,
    facts::NodeFacts,
    pods::PodRef,
    report::{ConnectReport, DropReport, Hook, Reports, RetryReport, Summary},
};
use serde::Serialize;

use crate::{
    export::{Exports, HistogramSummary},
    limits::LossLine,
};

/// Everything the front end prints: the engine's reports ([`Reports`]) and what only the shell
/// knows — the hooks in use, the node, histograms, losses and the run's summary.
pub trait Printer: Reports {
    /// The evidence sources and whether each is active, once at start-up.
    fn hooks(&mut self, hooks: &[Hook]) -> io::Result<()>;
    /// The node fingerprint and its exposure, once at start-up.
    fn node(&mut self, facts: &NodeFacts, exposure: &[Exposure]) -> io::Result<()>;
    /// The latency histogram summary (periodic and at exit, before [`Printer::summary`]).
    fn histogram(&mut self, h: &HistogramSummary) -> io::Result<()>;
    /// The kernel could not reserve more events since the last tick (`{"type":"loss",…}`).
    fn loss(&mut self, l: &LossLine) -> io::Result<()>;
    /// End-of-run totals.
    fn summary(&mut self, s: &Summary) -> io::Result<()>;
}

/// The engine's reports, fanned out to the printer and the exports. Both see every report even
/// when the printer fails (a closed stdout must not starve the exports); the first error is
/// returned.
pub struct Fanout<'a> {
    pub printer: &'a mut dyn Printer,
    pub exports: &'a mut Exports,
}

impl<'a> Fanout<'a> {
    pub fn new(printer: &'a mut dyn Printer, exports: &'a mut Exports) -> Self {
        Self { printer, exports }
    }
}

impl Reports for Fanout<'_> {
    fn connect(&mut self, line: &ConnectReport) -> io::Result<()> {
        let printed = self.printer.connect(line);
        self.exports.connect(line).and(printed)
    }
    fn drop_line(&mut self, line: &DropReport) -> io::Result<()> {
        let printed = self.printer.drop_line(line);
        self.exports.drop_line(line).and(printed)
    }
    fn retry(&mut self, line: &RetryReport) -> io::Result<()> {
        let printed = self.printer.retry(line);
        self.exports.retry(line).and(printed)
    }
}

/// A printer whose reader may go away (`netlat watch | head`): the first broken pipe closes
/// it and later lines are dropped, so the run still finishes its exports and recording and
/// ends cleanly. Every other output error is returned.
pub struct Closable<'a> {
    inner: &'a mut dyn Printer,
    closed: bool,
}

impl<'a> Closable<'a> {
    pub fn new(inner: &'a mut dyn Printer) -> Self {
        Self {
            inner,
            closed: false,
        }
    }

    /// Whether the reader went away.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Close on `stdout_closed` (the reader went away before anything failed to print).
    pub fn close(&mut self) {
        self.closed = true;
    }

    fn write(&mut self, f: impl FnOnce(&mut dyn Printer) -> io::Result<()>) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        match f(self.inner) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            r => r,
        }
    }
}

impl Reports for Closable<'_> {
    fn connect(&mut self, line: &ConnectReport) -> io::Result<()> {
        self.write(|p| p.connect(line))
    }
    fn drop_line(&mut self, line: &DropReport) -> io::Result<()> {
        self.write(|p| p.drop_line(line))
    }
    fn retry(&mut self, line: &RetryReport) -> io::Result<()> {
        self.write(|p| p.retry(line))
    }
}

impl Printer for Closable<'_> {
    fn hooks(&mut self, hooks: &[Hook]) -> io::Result<()> {
        self.write(|p| p.hooks(hooks))
    }
    fn node(&mut self, facts: &NodeFacts, exposure: &[Exposure]) -> io::Result<()> {
        self.write(|p| p.node(facts, exposure))
    }
    fn histogram(&mut self, h: &HistogramSummary) -> io::Result<()> {
        self.write(|p| p.histogram(h))
    }
    fn loss(&mut self, l: &LossLine) -> io::Result<()> {
        self.write(|p| p.loss(l))
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.write(|p| p.summary(s))
    }
}

/// A printer of the engine's reports only, into `R`; the front end's lines (hooks, node,
/// histograms, losses, summary) are not printed (`netlat report` counting a replay, tests).
pub struct ReportsOnly<R>(pub R);

impl<R: Reports> Reports for ReportsOnly<R> {
    fn connect(&mut self, line: &ConnectReport) -> io::Result<()> {
        self.0.connect(line)
    }
    fn drop_line(&mut self, line: &DropReport) -> io::Result<()> {
        self.0.drop_line(line)
    }
    fn retry(&mut self, line: &RetryReport) -> io::Result<()> {
        self.0.retry(line)
    }
}

impl<R: Reports> Printer for ReportsOnly<R> {
    fn hooks(&mut self, _: &[Hook]) -> io::Result<()> {
        Ok(())
    }
    fn node(&mut self, _: &NodeFacts, _: &[Exposure]) -> io::Result<()> {
        Ok(())
    }
    fn histogram(&mut self, _: &HistogramSummary) -> io::Result<()> {
        Ok(())
    }
    fn loss(&mut self, _: &LossLine) -> io::Result<()> {
        Ok(())
    }
    fn summary(&mut self, _: &Summary) -> io::Result<()> {
        Ok(())
    }
}

/// JSON lines on a writer.
pub struct JsonPrinter<W: Write> {
    out: W,
}

impl<W: Write> JsonPrinter<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    fn line<T: Serialize>(&mut self, v: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

impl<W: Write> Reports for JsonPrinter<W> {
    fn connect(&mut self, line: &ConnectReport) -> io::Result<()> {
        self.line(line)
    }

    fn drop_line(&mut self, line: &DropReport) -> io::Result<()> {
        self.line(line)
    }

    fn retry(&mut self, line: &RetryReport) -> io::Result<()> {
        self.line(line)
    }
}

impl<W: Write> Printer for JsonPrinter<W> {
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

    fn node(&mut self, facts: &NodeFacts, exposure: &[Exposure]) -> io::Result<()> {
        #[derive(Serialize)]
        struct Node<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            facts: &'a NodeFacts,
            exposure: &'a [Exposure],
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

    fn histogram(&mut self, h: &HistogramSummary) -> io::Result<()> {
        self.line(h)
    }

    fn loss(&mut self, l: &LossLine) -> io::Result<()> {
        self.line(l)
    }
}

/// Human-readable lines: results on `out`, status on `err`.
pub struct HumanPrinter<W: Write, E: Write> {
    out: W,
    err: E,
}

impl<W: Write, E: Write> HumanPrinter<W, E> {
    pub fn new(out: W, err: E) -> Self {
        Self { out, err }
    }
}

/// Where a line happened: the pod (`pod ns/name[/container]`) where known, else the netns
/// inode, with why the pod could not be told.
fn where_from(pod: Option<&PodRef>, missing: Option<&str>, netns: u32) -> String {
    match (pod, missing) {
        (Some(p), _) => format!("pod {p}"),
        (None, Some(m)) => format!("netns {netns} (pod unknown: {m})"),
        (None, None) => format!("netns {netns}"),
    }
}

impl<W: Write, E: Write> Reports for HumanPrinter<W, E> {
    fn connect(&mut self, c: &ConnectReport) -> io::Result<()> {
        let ladder = if c.retransmit_at_ms.is_empty() {
            "no SYN retry".to_string()
        } else {
            let steps: Vec<String> = c
                .retransmit_at_ms
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect();
            format!("SYN at 0 → retries at {} ms", steps.join(", "))
        };
        let (who, service) = who_and_service(&c.comm, c.pid, c.service.as_deref());
        let dst_pod = c
            .dst_pod
            .as_ref()
            .map(|p| format!(" (pod {p})"))
            .unwrap_or_default();
        writeln!(
            self.out,
            "{} SLOW {:>9.1} ms  {who}{} -> {}{service}{dst_pod}  {:?}  {}",
            c.ts,
            c.connect_ms,
            c.src,
            c.dst,
            c.outcome,
            where_from(c.pod.as_ref(), c.pod_missing.as_deref(), c.netns)
        )?;
        writeln!(self.out, "    {ladder}")?;
        if let Some(was) = &c.verdict_changed_from {
            writeln!(
                self.out,
                "    (verdict changed: the progress lines said {was})"
            )?;
        }
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

    fn drop_line(&mut self, d: &DropReport) -> io::Result<()> {
        writeln!(
            self.out,
            "{} DROP {} at {} {} {}{}",
            d.ts,
            d.reason,
            d.location,
            where_from(d.pod.as_ref(), d.pod_missing.as_deref(), d.netns),
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

    fn retry(&mut self, r: &RetryReport) -> io::Result<()> {
        writeln!(self.out, "{}", waiting_line(r))?;
        self.out.flush()
    }
}

/// `curl[42] ` (nothing without a command name) and ` (service ns/name:port)`.
fn who_and_service(comm: &str, pid: u32, service: Option<&str>) -> (String, String) {
    let who = if comm.is_empty() {
        String::new()
    } else {
        format!("{comm}[{pid}] ")
    };
    let service = service
        .map(|s| format!(" (service {s})"))
        .unwrap_or_default();
    (who, service)
}

/// A progress line in one human line: how long the attempt has waited, at which SYN retry,
/// and the cause so far (`WAITING 1.0 s … SYN retry 1, vxlan-csum-offload (high): …`).
pub fn waiting_line(r: &RetryReport) -> String {
    let (who, service) = who_and_service(&r.comm, r.pid, r.service.as_deref());
    let cause = match &r.verdict {
        Some(v) => format!(
            "{} ({}): {}",
            v.issue,
            format!("{:?}", v.confidence).to_lowercase(),
            cause_in_brief(r, v)
        ),
        None => "no known issue fits yet".to_string(),
    };
    let changed = r
        .verdict_changed_from
        .as_ref()
        .map(|w| format!(" (was {w})"))
        .unwrap_or_default();
    let suppressed = if r.suppressed > 0 {
        format!(" [{} progress lines suppressed before this]", r.suppressed)
    } else {
        String::new()
    };
    format!(
        "{} WAITING {:>5.1} s  {who}{} -> {}{service}  {}  SYN retry {}, {cause}{changed}{suppressed}",
        r.ts,
        r.waiting_ms / 1000.0,
        r.src,
        r.dst,
        where_from(r.pod.as_ref(), r.pod_missing.as_deref(), r.netns),
        r.syn_retransmits
    )
}

/// The drop that names the cause when one was seen (`UDP_CSUM drop at …, inner VXLAN
/// flow`), else the catalog's title.
fn cause_in_brief(r: &RetryReport, v: &netlat_core::verdict::Verdict) -> String {
    match r.drops.first() {
        Some(d) => format!(
            "{} drop at {}{}",
            d.reason,
            d.location,
            if d.via_vxlan {
                " of the tunnel packet"
            } else {
                ""
            }
        ),
        None => v.title.to_string(),
    }
}

impl<W: Write, E: Write> Printer for HumanPrinter<W, E> {
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

    fn node(&mut self, facts: &NodeFacts, exposure: &[Exposure]) -> io::Result<()> {
        writeln!(self.err, "netlat: kernel {}", facts.kernel.release)?;
        for e in exposure
            .iter()
            .filter(|e| e.exposed == netlat_core::exposure::Exposed::Yes)
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
        if !s.skipped_runs.is_empty() {
            writeln!(
                self.err,
                "netlat: the kernel SKIPPED {} runs of netlat's programs ({:?}): each came while \
                 a run of the same program was in progress on that CPU, so its event reached no \
                 program (an attempt's end among them leaves it in the kernel's table: \
                 tracker.kernel_end_missed)",
                s.skipped_runs.values().sum::<u64>(),
                s.skipped_runs
            )?;
        }
        if let Some(k) = &s.kernel_counted {
            writeln!(
                self.err,
                "netlat: kernel counted {} SYN retransmits, netlat saw {}{} ({} namespaces; \
                 TCPRetransFail {}, ListenOverflows {}, ListenDrops {})",
                k.syn_retransmits,
                s.syn_retransmits_seen,
                match s.syn_retransmits_unseen() {
                    0 => String::new(),
                    n => format!(
                        ": {n} reached no retransmit hook (failed sends where the tracepoint has no \
                         err, SYN-ACK retransmits of listeners; README)"
                    ),
                },
                k.namespaces,
                k.retrans_fail,
                k.listen_overflows,
                k.listen_drops
            )?;
        }
        if s.retry_lines_suppressed > 0 {
            writeln!(
                self.err,
                "netlat: {} progress (WAITING) lines suppressed by the rate limit of {} a second",
                s.retry_lines_suppressed,
                netlat_core::progress::LINES_PER_S
            )?;
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
        if t.kernel_table_full
            + t.kernel_replaced
            + t.replaced
            + t.mismatched
            + t.end_lost
            + t.kernel_end_missed
            > 0
        {
            writeln!(
                self.err,
                "netlat: attempt table: {} shipped whole (kernel table full), {} sockets reused \
                 before their attempt's end was seen ({} in the kernel), {} ends/retransmits of \
                 another attempt not attributed, {} ends lost and {} ends the kernel skipped \
                 (neither reported as pending)",
                t.kernel_table_full,
                t.replaced,
                t.kernel_replaced,
                t.mismatched,
                t.end_lost,
                t.kernel_end_missed
            )?;
        }
        self.err.flush()
    }

    fn histogram(&mut self, h: &HistogramSummary) -> io::Result<()> {
        crate::export::histo::write_human(h, &mut self.err)
    }

    fn loss(&mut self, l: &LossLine) -> io::Result<()> {
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
    use netlat_core::{
        event::SockKey,
        flow::{Attempt, Outcome},
        report::WallClock,
        verdict::{Judge, Judgement, NoFacts},
    };

    use super::*;
    use crate::export::ExportOptions;

    fn unjudged() -> Judgement {
        Judgement {
            verdict: None,
            syn_resent_unseen: false,
        }
    }

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
    fn human_line_names_the_pod_where_it_showed_the_netns() {
        let clock = WallClock { offset_ns: 0 };
        let mut line = ConnectReport::new(&attempt(), &unjudged(), &clock);
        let human = |line: &ConnectReport| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            HumanPrinter::new(&mut out, &mut err).connect(line).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(
            human(&line).contains("  netns 4026532000\n"),
            "{}",
            human(&line)
        );
        line.pod = Some(PodRef {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "u".into(),
            container: Some("app".into()),
        });
        line.dst_pod = Some(PodRef {
            namespace: "shop".into(),
            name: "db-0".into(),
            uid: "v".into(),
            container: None,
        });
        let text = human(&line);
        assert!(text.contains("-> 10.0.0.2:8080 (pod shop/db-0)"), "{text}");
        assert!(text.contains("  pod shop/web-0/app\n"), "{text}");
        assert!(!text.contains("netns 4026532000"), "{text}");
        line.pod = None;
        line.pod_missing = Some("container runtime not answering".into());
        let text = human(&line);
        assert!(
            text.contains("netns 4026532000 (pod unknown: container runtime not answering)"),
            "{text}"
        );
    }

    #[test]
    fn json_line_has_the_contract_fields() {
        let clock = WallClock {
            offset_ns: 1_700_000_000_000_000_000,
        };
        let mut buf = Vec::new();
        JsonPrinter::new(&mut buf)
            .connect(&ConnectReport::new(&attempt(), &unjudged(), &clock))
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
        let v = Judge {
            attempt: &a,
            node: &NoFacts,
        }
        .judge();
        HumanPrinter::new(&mut out, &mut err)
            .connect(&ConnectReport::new(&a, &v, &clock))
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("SLOW    1011.5 ms  curl[42] 10.0.0.1:40000 -> 10.0.0.2:8080  "));
        assert!(text.contains("retries at 1011 ms"));
        assert!(text.contains("=> unanswered-syn (Low confidence)"));
        // A known Service follows the destination, in the JSON line as `service`.
        let mut line = ConnectReport::new(&a, &v, &clock);
        line.service = Some("default/web:http".into());
        let mut out = Vec::new();
        HumanPrinter::new(&mut out, Vec::new())
            .connect(&line)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("-> 10.0.0.2:8080 (service default/web:http)  Established"),
            "{text}"
        );
        let json = serde_json::to_value(&line).unwrap();
        assert_eq!(json["service"], "default/web:http");
    }

    /// The progress line of `attempt()` one second in, with a VXLAN drop judged as the cause.
    fn waiting_vxlan() -> RetryReport {
        let clock = WallClock { offset_ns: 0 };
        let mut a = attempt();
        a.outcome = Outcome::Pending;
        a.end_ns = 2_011_000_000;
        let mut line = ConnectReport::new(&a, &unjudged(), &clock);
        line.drops.push(netlat_core::report::ConnectDrop {
            reason: "UDP_CSUM".into(),
            location: "udp_queue_rcv_one_skb+0x2f".into(),
            at_ms: 0.2,
            netns: 4026532001,
            ifindex: 3,
            direction: netlat_core::flow::Direction::Forward,
            via_vxlan: true,
            via_nat: true,
            packet: None,
            conntrack: None,
            repeats: 0,
        });
        line.verdict = Some(netlat_core::verdict::Verdict {
            issue: "vxlan-csum-offload",
            title: "t",
            confidence: netlat_core::verdict::Confidence::High,
            evidence: vec![],
            missing: vec![],
            remedy: "r",
        });
        let mut r = RetryReport::waiting(line);
        r.verdict_changed_from = Some("unanswered-syn".into());
        r
    }

    #[test]
    fn progress_lines_in_json_and_human_form() {
        let r = waiting_vxlan();
        let mut buf = Vec::new();
        JsonPrinter::new(&mut buf).retry(&r).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["type"], "retry");
        assert_eq!(v["provisional"], true);
        assert_eq!(v["waiting_ms"], 1011.0);
        assert_eq!(v["syn_retransmits"], 1);
        assert_eq!(v["verdict"]["issue"], "vxlan-csum-offload");
        assert_eq!(v["verdict_changed_from"], "unanswered-syn");
        assert!(v.get("suppressed").is_none(), "{v}");
        let mut out = Vec::new();
        HumanPrinter::new(&mut out, Vec::new()).retry(&r).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(
                "WAITING   1.0 s  curl[42] 10.0.0.1:40000 -> 10.0.0.2:8080  netns 4026532000  SYN retry 1, \
                 vxlan-csum-offload (high): UDP_CSUM drop at udp_queue_rcv_one_skb+0x2f of the \
                 tunnel packet (was unanswered-syn)"
            ),
            "{text}"
        );
    }

    /// Histograms count each attempt once, at its end: progress lines go past the exports.
    #[test]
    fn exports_count_an_attempt_once_whatever_its_progress_lines() {
        let clock = WallClock { offset_ns: 0 };
        let mut exports =
            Exports::open(&ExportOptions::default(), std::time::SystemTime::UNIX_EPOCH).unwrap();
        let mut printed = Vec::new();
        {
            let mut json = JsonPrinter::new(&mut printed);
            let mut fan = Fanout::new(&mut json, &mut exports);
            fan.retry(&waiting_vxlan()).unwrap();
            fan.retry(&waiting_vxlan()).unwrap();
            fan.connect(&ConnectReport::new(&attempt(), &unjudged(), &clock))
                .unwrap();
        }
        assert_eq!(exports.histograms().count(), 1);
        assert_eq!(String::from_utf8(printed).unwrap().lines().count(), 3);
    }

    #[test]
    fn summary_reports_losses() {
        let mut err = Vec::new();
        let mut s = Summary {
            attempts: 3,
            slow: 1,
            ..Summary::default()
        };
        s.lost_events.insert("drop".into(), 7);
        HumanPrinter::new(Vec::new(), &mut err).summary(&s).unwrap();
        let text = String::from_utf8(err).unwrap();
        assert!(text.contains("3 connect attempts, 1 slow"));
        assert!(text.contains("LOST 7 kernel events"));
    }

    #[test]
    fn summary_reports_runs_the_kernel_skipped_only_when_there_are_some() {
        let mut s = Summary::default();
        let human = |s: &Summary| {
            let mut err = Vec::new();
            HumanPrinter::new(Vec::new(), &mut err).summary(s).unwrap();
            String::from_utf8(err).unwrap()
        };
        let json = |s: &Summary| serde_json::to_string(s).unwrap();
        assert!(!human(&s).contains("SKIPPED"));
        assert!(!json(&s).contains("skipped_runs"));
        s.skipped_runs.insert("inet_sock_set_state_btf".into(), 2);
        s.skipped_runs.insert("kfree_skb_btf".into(), 1);
        assert!(human(&s).contains("the kernel SKIPPED 3 runs of netlat's programs"));
        assert!(
            json(&s).contains(r#""skipped_runs":{"inet_sock_set_state_btf":2,"kfree_skb_btf":1}"#)
        );
    }

    /// The engine's side of a printer whose reader went away.
    struct Gone;

    impl Reports for Gone {
        fn connect(&mut self, _: &ConnectReport) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn drop_line(&mut self, _: &DropReport) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_closed_reader_closes_the_printer_and_later_lines_are_dropped() {
        let clock = WallClock { offset_ns: 0 };
        let line = ConnectReport::new(&attempt(), &unjudged(), &clock);
        let mut gone = ReportsOnly(Gone);
        let mut p = Closable::new(&mut gone);
        assert!(!p.is_closed());
        p.connect(&line).unwrap();
        assert!(p.is_closed());
        p.summary(&Summary::default()).unwrap();
        // Any other error is the caller's to report.
        let mut full = JsonPrinter::new(Full);
        let e = Closable::new(&mut full).connect(&line).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    }

    /// A writer on a full disk.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::StorageFull.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_exports_see_a_report_the_printer_failed_to_print() {
        let clock = WallClock { offset_ns: 0 };
        let line = ConnectReport::new(&attempt(), &unjudged(), &clock);
        let mut exports =
            Exports::open(&ExportOptions::default(), std::time::SystemTime::UNIX_EPOCH).unwrap();
        let e = Fanout::new(&mut ReportsOnly(Gone), &mut exports)
            .connect(&line)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(exports.histograms().count(), 1);
    }
}
