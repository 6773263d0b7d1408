//! Connect-latency histograms (HdrHistogram, µs, 1 µs … 200 s, 3 significant digits) per cause
//! (verdict id) and per destination, the same for the SYN-retry delay (first SYN → last SYN
//! retransmit, of connects with at least one retry), and the SYN retry ladder; and the compact
//! summary printed every `--summary-interval` and at exit (`{"type":"histogram",…}` in JSON).
//!
//! A destination is `ip:port`, or `ip:port (namespace/name:port)` when the node knows its
//! Kubernetes Service.

use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use hdrhistogram::Histogram;
use netlat_core::report::ConnectReport;
use serde::{Deserialize, Serialize};

use super::{
    ExportError, MAX_DESTINATIONS, MAX_NAMESPACES, bounded_key, cause_of, micros, pod_namespace,
    retry_delay_us,
};

/// Smallest trackable latency, µs.
pub const LOWEST_US: u64 = 1;
/// Largest trackable latency, µs: 200 s is beyond the longest SYN retry ladder (~131 s at the
/// default `tcp_syn_retries` 6); slower values are clamped to it.
pub const HIGHEST_US: u64 = 200_000_000;
/// Significant decimal digits kept.
pub const SIGFIG: u8 = 3;

/// Counts fit in `u32` (slow connects per bucket); half the memory of `u64`.
pub type Hist = Histogram<u32>;

/// An empty histogram with netlat's range and precision.
pub fn new_hist() -> Result<Hist, ExportError> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
        .map_err(|e| ExportError::Histogram(format!("{e:?}")))
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Percentiles {
    pub fn of<T: hdrhistogram::Counter>(h: &Histogram<T>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        // highest_equivalent: the value a recorded sample may have had at most, so a p99 never
        // understates the delay.
        let q = |q: f64| us_to_ms(h.highest_equivalent(h.value_at_quantile(q)));
        Percentiles {
            count: h.len(),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            max_ms: us_to_ms(h.highest_equivalent(h.max())),
        }
    }
}

/// The `{"type":"histogram",…}` line: totals since the start of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistogramSummary {
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds since netlat started.
    pub elapsed_s: f64,
    /// Whether this is the summary at exit.
    pub at_exit: bool,
    /// Every slow connect.
    pub all: Percentiles,
    /// Per verdict id ("none" when nothing fit).
    pub by_cause: BTreeMap<String, Percentiles>,
    /// Per destination `ip:port` or `ip:port (ns/name:port)` ("other" past the first 100
    /// destinations).
    pub by_dst: BTreeMap<String, Percentiles>,
    /// Per pod namespace of the connecting pod (connects from pods only; "other" past the
    /// first 100 namespaces); absent in lines of netlat versions before it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_namespace: BTreeMap<String, Percentiles>,
    /// The retry ladder: `syn_retries[n]` slow connects took n SYN retransmits.
    pub syn_retries: Vec<u64>,
    /// The delay SYN retries added (first SYN → last retransmit), of slow connects with at
    /// least one; absent in lines of netlat versions before it.
    #[serde(default)]
    pub syn_retry_delay: Breakdown,
}

/// Percentiles overall, per cause and per destination.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Breakdown {
    pub all: Percentiles,
    pub by_cause: BTreeMap<String, Percentiles>,
    pub by_dst: BTreeMap<String, Percentiles>,
}

/// Histograms overall, per cause and per destination (the key is chosen by the caller).
#[derive(Clone)]
struct Hists {
    all: Hist,
    by_cause: BTreeMap<String, Hist>,
    by_dst: BTreeMap<String, Hist>,
}

impl Hists {
    fn new(proto: &Hist) -> Self {
        Hists {
            all: proto.clone(),
            by_cause: BTreeMap::new(),
            by_dst: BTreeMap::new(),
        }
    }

    fn record(&mut self, proto: &Hist, cause: &str, dst: &str, us: u64) {
        self.all.saturating_record(us);
        for (map, key) in [(&mut self.by_cause, cause), (&mut self.by_dst, dst)] {
            map.entry(key.to_string())
                .or_insert_with(|| proto.clone())
                .saturating_record(us);
        }
    }

    fn breakdown(&self) -> Breakdown {
        let pct = |m: &BTreeMap<String, Hist>| {
            m.iter()
                .map(|(k, h)| (k.clone(), Percentiles::of(h)))
                .collect()
        };
        Breakdown {
            all: Percentiles::of(&self.all),
            by_cause: pct(&self.by_cause),
            by_dst: pct(&self.by_dst),
        }
    }
}

/// A connect's destination label: `ip:port`, with its Service when known.
pub fn dst_label(c: &ConnectReport) -> String {
    match &c.service {
        Some(s) => format!("{} ({s})", c.dst),
        None => c.dst.clone(),
    }
}

/// The histograms of a run.
pub struct Histograms {
    proto: Hist,
    latency: Hists,
    /// Connect latency per pod namespace.
    by_namespace: BTreeMap<String, Hist>,
    retry_delay: Hists,
    ladder: Vec<u64>,
}

impl Histograms {
    pub fn new() -> Result<Self, ExportError> {
        let proto = new_hist()?;
        Ok(Histograms {
            latency: Hists::new(&proto),
            by_namespace: BTreeMap::new(),
            retry_delay: Hists::new(&proto),
            proto,
            ladder: Vec::new(),
        })
    }

    /// Record one reported connect; returns the destination key it was counted under (the
    /// same for its latency and its retry delay) and its pod namespace key ("" when not from
    /// a pod).
    pub fn record(&mut self, c: &ConnectReport) -> (String, String) {
        let cause = cause_of(c);
        let label = dst_label(c);
        let dst = bounded_key(&self.latency.by_dst, &label, MAX_DESTINATIONS).to_string();
        self.latency.record(&self.proto, cause, &dst, micros(c));
        let ns = match pod_namespace(c) {
            "" => String::new(),
            n => bounded_key(&self.by_namespace, n, MAX_NAMESPACES).to_string(),
        };
        if !ns.is_empty() {
            self.by_namespace
                .entry(ns.clone())
                .or_insert_with(|| self.proto.clone())
                .saturating_record(micros(c));
        }
        if let Some(us) = retry_delay_us(c) {
            self.retry_delay.record(&self.proto, cause, &dst, us);
        }
        // A resend the kernel did not report still puts the attempt on the ladder's first rung.
        let n = (c.syn_retransmits as usize).max(usize::from(c.syn_resent_unseen));
        // A ladder longer than any kernel retries (tcp_syn_retries ≤ 127) is not worth a slot.
        if n < 128 {
            if self.ladder.len() <= n {
                self.ladder.resize(n + 1, 0);
            }
            self.ladder[n] += 1;
        }
        (dst, ns)
    }

    /// Slow connects recorded.
    pub fn count(&self) -> u64 {
        self.latency.all.len()
    }

    pub fn summary(&self, elapsed_s: f64, at_exit: bool) -> HistogramSummary {
        let latency = self.latency.breakdown();
        HistogramSummary {
            kind: "histogram".into(),
            elapsed_s: (elapsed_s * 1000.0).round() / 1000.0,
            at_exit,
            all: latency.all,
            by_cause: latency.by_cause,
            by_dst: latency.by_dst,
            by_namespace: self
                .by_namespace
                .iter()
                .map(|(k, h)| (k.clone(), Percentiles::of(h)))
                .collect(),
            syn_retries: self.ladder.clone(),
            syn_retry_delay: self.retry_delay.breakdown(),
        }
    }
}

/// Destinations shown in the human summary (the JSON line has all of them).
const HUMAN_TOP_DST: usize = 5;

/// The human summary, each line prefixed `netlat: ` like the other status lines on stderr.
pub fn write_human(h: &HistogramSummary, w: &mut dyn Write) -> io::Result<()> {
    if h.all.count == 0 {
        writeln!(w, "netlat: no slow connects in {:.1} s", h.elapsed_s)?;
        return w.flush();
    }
    // The busiest destinations, as row names.
    let top = |m: &BTreeMap<String, Percentiles>| {
        let mut dsts: Vec<_> = m.iter().collect();
        dsts.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        dsts.into_iter()
            .take(HUMAN_TOP_DST)
            .map(|(dst, p)| (format!("→ {dst}"), p.clone()))
            .collect::<Vec<_>>()
    };
    let d = &h.syn_retry_delay;
    let (dsts, delay_dsts) = (top(&h.by_dst), top(&d.by_dst));
    // The busiest pod namespaces the slow connects came from.
    let namespaces: Vec<(String, Percentiles)> = top(&h.by_namespace)
        .into_iter()
        .map(|(n, p)| (format!("from pods in {}", n.trim_start_matches("→ ")), p))
        .collect();
    // Wide enough for every name shown (a Service makes destinations long), so columns align.
    let width = h
        .by_cause
        .keys()
        .chain(
            dsts.iter()
                .chain(&delay_dsts)
                .chain(&namespaces)
                .map(|(n, _)| n),
        )
        .map(|n| n.chars().count())
        .fold(26, usize::max);
    writeln!(
        w,
        "netlat: latency of slow connects after {:.1} s{}:",
        h.elapsed_s,
        if h.at_exit { " (at exit)" } else { "" }
    )?;
    writeln!(
        w,
        "netlat:   {:<width$} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "cause", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
    )?;
    let row = |w: &mut dyn Write, name: &str, p: &Percentiles| {
        writeln!(
            w,
            "netlat:   {name:<width$} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
        )
    };
    for (cause, p) in &h.by_cause {
        row(w, cause, p)?;
    }
    if h.by_cause.len() != 1 {
        row(w, "(all)", &h.all)?;
    }
    for (name, p) in &dsts {
        row(w, name, p)?;
    }
    if h.by_dst.len() > HUMAN_TOP_DST {
        writeln!(
            w,
            "netlat:   … and {} more destinations",
            h.by_dst.len() - HUMAN_TOP_DST
        )?;
    }
    for (name, p) in &namespaces {
        row(w, name, p)?;
    }
    let ladder: Vec<String> = h
        .syn_retries
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| format!("{i}: {n}"))
        .collect();
    writeln!(
        w,
        "netlat:   SYN retries (retries: connects): {}",
        if ladder.is_empty() {
            "-".to_string()
        } else {
            ladder.join(", ")
        }
    )?;
    if d.all.count > 0 {
        writeln!(
            w,
            "netlat:   delay added by SYN retries (first SYN → last SYN):"
        )?;
        for (cause, p) in &d.by_cause {
            row(w, cause, p)?;
        }
        for (name, p) in &delay_dsts {
            row(w, name, p)?;
        }
    }
    w.flush()
}

#[cfg(test)]
pub(crate) mod tests {
    use netlat_core::{
        flow::Outcome,
        verdict::{Confidence, Verdict},
    };

    use super::*;

    pub(crate) fn connect(
        dst: &str,
        ms: f64,
        retries: u32,
        issue: Option<&'static str>,
    ) -> ConnectReport {
        ConnectReport {
            ts: "2026-01-01T00:00:00.000Z".into(),
            netns: 1,
            pid: 2,
            comm: "curl".into(),
            pod: None,
            pod_missing: None,
            src: "10.0.0.1:40000".into(),
            dst: dst.into(),
            dst_pod: None,
            service: None,
            outcome: Outcome::Established,
            connect_ms: ms,
            syn_retransmits: retries,
            syn_resent_unseen: false,
            retransmit_at_ms: vec![],
            drops: vec![],
            verdict: issue.map(|issue| Verdict {
                issue,
                title: "t",
                confidence: Confidence::High,
                evidence: vec![],
                missing: vec![],
                remedy: "r",
            }),
            verdict_changed_from: None,
        }
    }

    #[test]
    fn connects_from_pods_are_counted_per_namespace_bounded() {
        let mut h = Histograms::new().unwrap();
        let from = |ns: &str| {
            let mut c = connect("10.0.0.2:8080", 1011.0, 1, None);
            c.pod = Some(netlat_core::pods::PodRef {
                namespace: ns.into(),
                name: "web-0".into(),
                uid: "u".into(),
                container: None,
            });
            c
        };
        assert_eq!(h.record(&from("shop")).1, "shop");
        h.record(&from("shop"));
        // Not from a pod: no namespace key, no namespace histogram.
        assert_eq!(h.record(&connect("10.0.0.2:8080", 1011.0, 1, None)).1, "");
        let s = h.summary(1.0, true);
        assert_eq!(s.by_namespace.len(), 1);
        assert_eq!(s.by_namespace["shop"].count, 2);
        for i in 0..super::super::MAX_NAMESPACES + 5 {
            h.record(&from(&format!("ns{i}")));
        }
        let s = h.summary(1.0, true);
        assert_eq!(s.by_namespace.len(), super::super::MAX_NAMESPACES + 1);
        assert_eq!(s.by_namespace[super::super::OTHER_DST].count, 6);
        let mut text = Vec::new();
        write_human(&s, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("from pods in shop "), "{text}");
    }

    #[test]
    fn records_per_cause_destination_and_ladder() {
        let mut h = Histograms::new().unwrap();
        for ms in [1010.0, 1020.0, 1030.0] {
            h.record(&connect(
                "10.0.0.2:8080",
                ms,
                1,
                Some("netfilter-rule-drop"),
            ));
        }
        h.record(&connect("10.0.0.3:80", 3050.0, 2, None));
        h.record(&connect("10.0.0.3:80", 250.0, 0, None));
        // Beyond the range: clamped, not lost.
        h.record(&connect("10.0.0.3:80", 500_000.0, 7, None));
        let s = h.summary(12.34567, true);
        assert_eq!(s.kind, "histogram");
        assert_eq!(s.elapsed_s, 12.346);
        assert_eq!(s.all.count, 6);
        let nf = &s.by_cause["netfilter-rule-drop"];
        assert_eq!(nf.count, 3);
        assert!((1019.0..=1022.0).contains(&nf.p50_ms), "{nf:?}");
        assert!((1029.0..=1032.0).contains(&nf.max_ms), "{nf:?}");
        assert_eq!(s.by_cause["none"].count, 3);
        assert!(s.by_cause["none"].max_ms >= 199_000.0);
        assert_eq!(s.by_dst["10.0.0.2:8080"].count, 3);
        assert_eq!(s.syn_retries, vec![1, 3, 1, 0, 0, 0, 0, 1]);

        let mut out = Vec::new();
        write_human(&s, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("(at exit)"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("netfilter-rule-drop") && l.contains(" 3 ")),
            "{text}"
        );
        assert!(text.contains("SYN retries (retries: connects): 0: 1, 1: 3, 2: 1, 7: 1"));
        assert!(text.lines().all(|l| l.starts_with("netlat: ")));
        let mut out = Vec::new();
        write_human(&Histograms::new().unwrap().summary(3.0, true), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "netlat: no slow connects in 3.0 s\n"
        );
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(json["type"], "histogram");
        assert_eq!(json["by_cause"]["none"]["count"], 3);
    }

    /// A slow connect whose SYNs were retransmitted at `retries` ms after the first.
    fn retried(
        dst: &str,
        service: Option<&str>,
        ms: f64,
        retries: &[f64],
        issue: Option<&'static str>,
    ) -> ConnectReport {
        let mut c = connect(dst, ms, retries.len() as u32, issue);
        c.service = service.map(str::to_string);
        c.retransmit_at_ms = retries.to_vec();
        c
    }

    #[test]
    fn retry_delay_per_cause_and_destination() {
        let nf = Some("netfilter-rule-drop");
        let web = Some("default/web:http");
        let mut h = Histograms::new().unwrap();
        h.record(&retried("10.0.0.2:8080", web, 1001.0, &[1000.5], nf));
        h.record(&retried(
            "10.0.0.2:8080",
            web,
            3002.0,
            &[1000.0, 3000.0],
            nf,
        ));
        // Slow without a retry (a slow accept): latency only.
        h.record(&retried("10.0.0.3:80", None, 250.0, &[], None));
        // Slow long after its last retry: the delay is the retries' part only.
        h.record(&retried("10.0.0.3:80", None, 5000.0, &[1010.0], None));
        let s = h.summary(1.0, true);
        assert_eq!(s.all.count, 4);
        let d = &s.syn_retry_delay;
        assert_eq!(d.all.count, 3);
        let by_nf = &d.by_cause["netfilter-rule-drop"];
        assert_eq!(by_nf.count, 2);
        assert!((1000.0..1002.0).contains(&by_nf.p50_ms), "{by_nf:?}");
        assert!((2999.0..3003.0).contains(&by_nf.max_ms), "{by_nf:?}");
        let none = &d.by_cause["none"];
        assert_eq!(none.count, 1);
        assert!((1009.0..1012.0).contains(&none.max_ms), "{none:?}");
        assert!(s.by_cause["none"].max_ms >= 4990.0);
        // The Service is part of the destination key, for latency and delay alike.
        let key = "10.0.0.2:8080 (default/web:http)";
        assert_eq!(s.by_dst[key].count, 2);
        assert_eq!(d.by_dst[key].count, 2);
        assert_eq!(s.by_dst["10.0.0.3:80"].count, 2);
        assert_eq!(d.by_dst["10.0.0.3:80"].count, 1);
        assert_eq!(s.syn_retries, vec![1, 2, 1]);

        let mut out = Vec::new();
        write_human(&s, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let delay = text
            .split("delay added by SYN retries")
            .nth(1)
            .unwrap_or_else(|| panic!("no retry-delay section in {text}"));
        assert!(
            delay
                .lines()
                .any(|l| l.contains("netfilter-rule-drop") && l.contains(" 2 ")),
            "{text}"
        );
        assert!(delay.contains(key), "{text}");
        // Long Service names widen the name column: every row's numbers line up.
        let widths: Vec<usize> = text
            .lines()
            .filter(|l| {
                let t: Vec<&str> = l.split_whitespace().collect();
                t.len() > 5 && t[t.len() - 5..].iter().all(|x| x.parse::<f64>().is_ok())
            })
            .map(|l| l.chars().count())
            .collect();
        assert_eq!(widths.len(), 9, "{text}");
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{text}");
        // Summaries of netlat versions without the delay still parse.
        let mut json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["syn_retry_delay"]["all"]["count"], 3);
        json.as_object_mut().unwrap().remove("syn_retry_delay");
        let old: HistogramSummary = serde_json::from_value(json).unwrap();
        assert_eq!(old.syn_retry_delay, Breakdown::default());
    }

    #[test]
    fn retry_delay_is_first_to_last_syn() {
        assert_eq!(
            retry_delay_us(&retried("a:1", None, 9.0, &[1000.5, 3000.25], None)),
            Some(3_000_250)
        );
        assert_eq!(retry_delay_us(&retried("a:1", None, 9.0, &[], None)), None);
    }

    #[test]
    fn destinations_are_bounded() {
        let mut h = Histograms::new().unwrap();
        for i in 0..(MAX_DESTINATIONS + 10) {
            h.record(&connect(
                &format!("10.1.0.{}:{}", i % 250, 1000 + i),
                300.0,
                0,
                None,
            ));
        }
        let s = h.summary(1.0, false);
        assert_eq!(s.by_dst.len(), MAX_DESTINATIONS + 1);
        assert_eq!(s.by_dst[super::super::OTHER_DST].count, 10);
    }
}
