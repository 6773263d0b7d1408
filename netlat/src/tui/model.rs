//! The live view's state, fed by the engine's own lines (it is a [`Printer`]): attempts waiting
//! now with their provisional cause, slow connects of the last minute per cause and per
//! destination, the latency distribution per cause, lost events and hooks. Pure: time comes in
//! as `now_ms` (Unix ms) from the shell, so every screen can be rebuilt in a test.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io,
    time::UNIX_EPOCH,
};

use netlat_core::{
    exposure::{Exposed, Exposure},
    facts::NodeFacts,
    report::{ConnectReport, DropReport, Hook, Reports, RetryReport, Summary},
};

use crate::{export::HistogramSummary, limits::LossLine, output::Printer};

/// The window of the "last minute" tables.
pub const WINDOW_MS: i64 = 60_000;
/// The kernel gives up a SYN after ~131 s: a waiting attempt older than this lost its end line
/// (evicted or aged out in the tracker) and leaves the view.
const WAITING_MAX_MS: i64 = 135_000;
/// Rows kept at most (a storm must not grow the view's memory); what is left out is counted.
const MAX_WAITING: usize = 10_000;
const MAX_RECENT: usize = 100_000;
/// Upper ends of the latency buckets, in ms: the SYN ladder's steps (each bucket holds the
/// connects that cost that many retries on a < 6.5 kernel).
pub const BUCKETS_MS: [f64; 8] = [
    900.0,
    2_500.0,
    6_500.0,
    14_000.0,
    30_000.0,
    62_000.0,
    126_000.0,
    f64::INFINITY,
];
/// The buckets' names, as the screen heads them.
pub const BUCKET_NAMES: [&str; 8] = ["<1s", "1s", "3s", "7s", "15s", "31s", "63s", ">"];

/// An attempt still in SYN_SENT, from its latest progress line.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub start_ms: i64,
    pub who: String,
    pub src: String,
    pub dst: String,
    pub service: Option<String>,
    pub retries: u32,
    pub cause: String,
    pub confidence: String,
    pub changed_from: Option<String>,
}

/// A slow connect that ended.
#[derive(Debug, Clone, PartialEq)]
struct Done {
    end_ms: i64,
    cause: String,
    dest: String,
    ms: f64,
}

/// One row of a "last minute" table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: String,
    pub count: u64,
    pub max_ms: f64,
}

#[derive(Debug, Default)]
pub struct Model {
    waiting: HashMap<(u32, String, String, String), Waiting>,
    recent: VecDeque<Done>,
    /// Per cause, slow connects per [`BUCKETS_MS`] bucket over the whole run.
    dist: BTreeMap<String, [u64; 8]>,
    pub slow_total: u64,
    pub drop_lines: u64,
    pub hooks: Vec<Hook>,
    pub exposed: Vec<String>,
    pub kernel: Option<String>,
    /// Kernel events lost so far (ring buffer full), per kind.
    pub lost: BTreeMap<String, u64>,
    /// Progress lines the engine's rate limit left out.
    pub suppressed: u64,
    /// Rows the view's own bounds left out.
    pub dropped_rows: u64,
    pub paused: bool,
    /// Show only this cause.
    pub filter: Option<String>,
    pub summary: Option<Summary>,
}

/// Unix ms of an RFC 3339 time the engine printed (`None` if it is not one).
pub fn unix_ms(ts: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(ts).ok()?;
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

fn cause_of(v: Option<&netlat_core::verdict::Verdict>) -> String {
    v.map_or("none", |v| v.issue).to_string()
}

fn bucket(ms: f64) -> usize {
    BUCKETS_MS.iter().position(|b| ms < *b).unwrap_or(7)
}

impl Model {
    fn shows(&self, cause: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| f == cause)
    }

    /// Drop what is older than the windows at `now_ms`.
    pub fn prune(&mut self, now_ms: i64) {
        while self
            .recent
            .front()
            .is_some_and(|d| now_ms - d.end_ms > WINDOW_MS)
        {
            self.recent.pop_front();
        }
        let before = self.waiting.len();
        self.waiting
            .retain(|_, w| now_ms - w.start_ms <= WAITING_MAX_MS);
        self.dropped_rows += (before - self.waiting.len()) as u64;
    }

    /// Attempts waiting now (of the cause filtered), longest first.
    pub fn waiting(&self) -> Vec<&Waiting> {
        let mut v: Vec<&Waiting> = self
            .waiting
            .values()
            .filter(|w| self.shows(&w.cause))
            .collect();
        v.sort_by(|a, b| a.start_ms.cmp(&b.start_ms).then(a.src.cmp(&b.src)));
        v
    }

    fn rows(&self, key: impl Fn(&Done) -> &str) -> Vec<Row> {
        let mut m: BTreeMap<&str, Row> = BTreeMap::new();
        for d in self.recent.iter().filter(|d| self.shows(&d.cause)) {
            let k = key(d);
            let r = m.entry(k).or_insert_with(|| Row {
                key: k.to_string(),
                count: 0,
                max_ms: 0.0,
            });
            r.count += 1;
            r.max_ms = r.max_ms.max(d.ms);
        }
        let mut v: Vec<Row> = m.into_values().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        v
    }

    /// Slow connects of the last minute per cause (most first).
    pub fn by_cause(&self) -> Vec<Row> {
        self.rows(|d| &d.cause)
    }

    /// Slow connects of the last minute per destination (its Service where known).
    pub fn by_dest(&self) -> Vec<Row> {
        self.rows(|d| &d.dest)
    }

    /// Slow connects of the last minute (of the cause filtered).
    pub fn recent_count(&self) -> usize {
        self.recent.iter().filter(|d| self.shows(&d.cause)).count()
    }

    /// Per cause, the run's slow connects per ladder bucket.
    pub fn distribution(&self) -> Vec<(&str, [u64; 8])> {
        self.dist
            .iter()
            .filter(|(c, _)| self.shows(c))
            .map(|(c, b)| (c.as_str(), *b))
            .collect()
    }

    /// The causes seen so far, for the filter.
    pub fn causes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.dist.keys().cloned().collect();
        for w in self.waiting.values() {
            if !v.contains(&w.cause) {
                v.push(w.cause.clone());
            }
        }
        v.sort();
        v
    }

    /// The `c` key: all causes → each cause seen → all.
    pub fn next_filter(&mut self) {
        let causes = self.causes();
        self.filter = match &self.filter {
            None => causes.first().cloned(),
            Some(f) => causes
                .iter()
                .position(|c| c == f)
                .and_then(|i| causes.get(i + 1))
                .cloned(),
        };
    }

    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }
}

fn key(netns: u32, ts: &str, src: &str, dst: &str) -> (u32, String, String, String) {
    (netns, ts.to_string(), src.to_string(), dst.to_string())
}

impl Reports for Model {
    fn connect(&mut self, c: &ConnectReport) -> io::Result<()> {
        self.waiting.remove(&key(c.netns, &c.ts, &c.src, &c.dst));
        self.slow_total += 1;
        let cause = cause_of(c.verdict.as_ref());
        self.dist.entry(cause.clone()).or_default()[bucket(c.connect_ms)] += 1;
        if let Some(start) = unix_ms(&c.ts) {
            if self.recent.len() >= MAX_RECENT {
                self.recent.pop_front();
                self.dropped_rows += 1;
            }
            self.recent.push_back(Done {
                end_ms: start + c.connect_ms as i64,
                cause,
                dest: c.service.clone().unwrap_or_else(|| c.dst.clone()),
                ms: c.connect_ms,
            });
        }
        Ok(())
    }

    fn drop_line(&mut self, _: &DropReport) -> io::Result<()> {
        self.drop_lines += 1;
        Ok(())
    }

    fn retry(&mut self, r: &RetryReport) -> io::Result<()> {
        self.suppressed += r.suppressed;
        let Some(start_ms) = unix_ms(&r.ts) else {
            return Ok(());
        };
        let k = key(r.netns, &r.ts, &r.src, &r.dst);
        if !self.waiting.contains_key(&k) && self.waiting.len() >= MAX_WAITING {
            self.dropped_rows += 1;
            return Ok(());
        }
        self.waiting.insert(
            k,
            Waiting {
                start_ms,
                who: if r.comm.is_empty() {
                    String::new()
                } else {
                    format!("{}[{}]", r.comm, r.pid)
                },
                src: r.src.clone(),
                dst: r.dst.clone(),
                service: r.service.clone(),
                retries: r.syn_retransmits,
                cause: cause_of(r.verdict.as_ref()),
                confidence: r
                    .verdict
                    .as_ref()
                    .map(|v| format!("{:?}", v.confidence).to_lowercase())
                    .unwrap_or_default(),
                changed_from: r.verdict_changed_from.clone(),
            },
        );
        Ok(())
    }
}

impl Printer for Model {
    fn hooks(&mut self, hooks: &[Hook]) -> io::Result<()> {
        self.hooks = hooks.to_vec();
        Ok(())
    }
    fn node(&mut self, facts: &NodeFacts, exposure: &[Exposure]) -> io::Result<()> {
        self.kernel = Some(facts.kernel.release.clone());
        self.exposed = exposure
            .iter()
            .filter(|e| e.exposed == Exposed::Yes)
            .map(|e| e.issue.to_string())
            .collect();
        Ok(())
    }
    fn histogram(&mut self, _: &HistogramSummary) -> io::Result<()> {
        Ok(())
    }
    fn loss(&mut self, l: &LossLine) -> io::Result<()> {
        self.lost.insert(l.kind.clone(), l.total);
        Ok(())
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.lost.clone_from(&s.lost_events);
        self.summary = Some(s.clone());
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use netlat_core::{
        event::SockKey,
        flow::{Attempt, Outcome},
        report::WallClock,
        verdict::{Judge, NoFacts},
    };

    use super::*;

    /// 2026-01-01T00:00:00Z in Unix ms.
    pub(crate) const T0: i64 = 1_767_225_600_000;

    fn attempt(port: u16, dst: &str, ms: u64, retries: &[u64]) -> Attempt {
        let start = 1_000_000_000;
        Attempt {
            sock: SockKey {
                netns: 7,
                skaddr: u64::from(port),
            },
            tgid: 42,
            comm: "curl".into(),
            src: format!("10.0.0.1:{port}").parse().unwrap(),
            dst: dst.parse().unwrap(),
            start_ns: start,
            end_ns: start + ms * 1_000_000,
            outcome: Outcome::Established,
            retransmits: retries.iter().map(|r| start + r * 1_000_000).collect(),
            drops: vec![],
            cpu: 0,
        }
    }

    const CLOCK: WallClock = WallClock {
        // Monotonic 1 s is T0.
        offset_ns: (T0 as i128) * 1_000_000 - 1_000_000_000,
    };

    /// The connect line of a slow connect from port `port` to `dst`, `ms` long.
    pub(crate) fn connect(port: u16, dst: &str, ms: u64) -> ConnectReport {
        let a = attempt(port, dst, ms, &[1000]);
        let j = Judge {
            attempt: &a,
            node: &NoFacts,
        }
        .judge();
        ConnectReport::new(&a, &j, &CLOCK)
    }

    /// Its progress line after `waited` ms and `retries` retries.
    pub(crate) fn retry(port: u16, dst: &str, waited: u64, retries: &[u64]) -> RetryReport {
        let mut a = attempt(port, dst, waited, retries);
        a.outcome = Outcome::Pending;
        let j = Judge {
            attempt: &a,
            node: &NoFacts,
        }
        .judge();
        RetryReport::waiting(ConnectReport::new(&a, &j, &CLOCK))
    }

    #[test]
    fn an_attempt_waits_until_its_connect_line_and_then_counts_once() {
        let mut m = Model::default();
        m.retry(&retry(40000, "10.0.0.2:80", 1000, &[1000]))
            .unwrap();
        m.retry(&retry(40000, "10.0.0.2:80", 3000, &[1000, 3000]))
            .unwrap();
        m.retry(&retry(40001, "10.0.0.3:80", 1000, &[1000]))
            .unwrap();
        let w = m.waiting();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].retries, 2, "{w:?}");
        assert_eq!(w[0].cause, "unanswered-syn");
        assert_eq!(w[0].start_ms, T0);
        m.connect(&connect(40000, "10.0.0.2:80", 3100)).unwrap();
        assert_eq!(m.waiting().len(), 1);
        assert_eq!(m.slow_total, 1);
        assert_eq!(
            m.by_dest(),
            [Row {
                key: "10.0.0.2:80".into(),
                count: 1,
                max_ms: 3100.0
            }]
        );
        assert_eq!(
            m.distribution(),
            [("unanswered-syn", [0, 0, 1, 0, 0, 0, 0, 0])]
        );
    }

    #[test]
    fn the_last_minute_slides_and_stale_waiting_attempts_leave() {
        let mut m = Model::default();
        m.connect(&connect(40000, "10.0.0.2:80", 1000)).unwrap();
        m.retry(&retry(40001, "10.0.0.3:80", 1000, &[1000]))
            .unwrap();
        m.prune(T0 + 60_000);
        assert_eq!(m.recent_count(), 1);
        m.prune(T0 + 61_001);
        assert_eq!(m.recent_count(), 0);
        assert_eq!(m.waiting().len(), 1);
        // The run's distribution keeps it.
        assert_eq!(m.distribution().len(), 1);
        m.prune(T0 + 136_000);
        assert!(m.waiting().is_empty());
        assert_eq!(m.dropped_rows, 1);
    }

    #[test]
    fn the_cause_filter_cycles_through_the_causes_seen() {
        let mut m = Model::default();
        let mut c = connect(40000, "10.0.0.2:80", 1000);
        m.connect(&c).unwrap();
        c.verdict.as_mut().unwrap().issue = "snat-port-clash";
        c.src = "10.0.0.1:40001".into();
        m.connect(&c).unwrap();
        assert_eq!(m.by_cause().len(), 2);
        m.next_filter();
        assert_eq!(m.filter.as_deref(), Some("snat-port-clash"));
        assert_eq!(m.by_cause().len(), 1);
        assert_eq!(m.recent_count(), 1);
        m.next_filter();
        assert_eq!(m.filter.as_deref(), Some("unanswered-syn"));
        m.next_filter();
        assert_eq!(m.filter, None);
        assert_eq!(m.recent_count(), 2);
    }

    #[test]
    fn losses_and_suppressed_lines_are_shown() {
        let mut m = Model::default();
        m.loss(&LossLine {
            kind_tag: "loss",
            kind: "drop".into(),
            lost: 3,
            total: 5,
        })
        .unwrap();
        let mut r = retry(40000, "10.0.0.2:80", 1000, &[1000]);
        r.suppressed = 9;
        m.retry(&r).unwrap();
        assert_eq!(m.lost_total(), 5);
        assert_eq!(m.suppressed, 9);
    }
}
