//! `netlat report FILE`: percentiles by cause and destination from an export file, and with
//! `--svg OUT` a latency distribution plot by cause. The file type is sniffed from its first
//! bytes, so other kinds (recordings) can be added beside the interval log.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use netlat_core::report::{ConnectReport, DropReport, Reports};

use crate::{
    cmd::{
        args::{OutputFormat, ReportArgs},
        replay::{self, ReplayConfig},
    },
    export::{
        ExportError, ExportOptions, MAX_DESTINATIONS, bounded_key, cause_of,
        histo::{HIGHEST_US, LOWEST_US, Percentiles, SIGFIG, dst_label},
        hlog::{self, Interval},
        micros, retry_delay_us, svg,
    },
    output::ReportsOnly,
};

/// What a file holds, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// An HdrHistogram interval log (`watch --hlog`).
    Hlog,
    /// A recording (`watch --record`).
    Recording,
    Unknown,
}

/// Interval logs start with `#` comment/header lines, a `"StartTimestamp"` legend, a `Tag=`
/// interval or an untagged interval (`<seconds>.<fraction>,…`).
pub fn sniff(bytes: &[u8]) -> FileKind {
    if bytes.starts_with(crate::record::MAGIC) {
        return FileKind::Recording;
    }
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let untagged_interval = first
        .iter()
        .position(|b| *b == b',')
        .is_some_and(|i| i > 0 && first[..i].iter().all(|b| b.is_ascii_digit() || *b == b'.'));
    if first.starts_with(b"#")
        || first.starts_with(b"Tag=")
        || first.starts_with(b"\"StartTimestamp\"")
        || untagged_interval
    {
        FileKind::Hlog
    } else {
        FileKind::Unknown
    }
}

/// Merged histograms of a log.
pub struct Report {
    pub intervals: usize,
    /// From the first interval's start to the last one's end.
    pub span: Duration,
    /// All slow connects (the untagged intervals, or every tagged one when there are none).
    pub all: Histogram<u64>,
    /// Per cause: its total and per destination.
    pub causes: BTreeMap<String, CauseHists>,
    /// The delay SYN retries added, of every slow connect with at least one.
    pub retry_all: Histogram<u64>,
    /// The same per cause and destination.
    pub retry_causes: BTreeMap<String, CauseHists>,
    /// Slow connects per destination row (bounded like the live histograms).
    dsts: BTreeMap<String, u64>,
}

pub struct CauseHists {
    pub total: Histogram<u64>,
    pub by_dst: BTreeMap<String, Histogram<u64>>,
}

fn empty() -> Result<Histogram<u64>, ExportError> {
    // Auto-resizing, so histograms of any range in a foreign log can be added.
    Histogram::new(SIGFIG).map_err(|e| ExportError::Histogram(format!("{e:?}")))
}

fn add(into: &mut Histogram<u64>, h: &Histogram<u64>) -> Result<(), ExportError> {
    into.add(h)
        .map_err(|e| ExportError::Histogram(format!("{e:?}")))
}

impl Report {
    pub fn from_intervals(ivs: &[Interval]) -> Result<Report, ExportError> {
        let mut all = empty()?;
        let mut tagged_all = empty()?;
        let mut causes: BTreeMap<String, CauseHists> = BTreeMap::new();
        let mut retry_all = empty()?;
        let mut retry_causes: BTreeMap<String, CauseHists> = BTreeMap::new();
        let mut untagged = false;
        let (mut first, mut last) = (None::<Duration>, Duration::ZERO);
        let mut starts = std::collections::BTreeSet::new();
        for iv in ivs {
            first = Some(first.map_or(iv.start, |f| f.min(iv.start)));
            last = last.max(iv.start + iv.length);
            starts.insert(iv.start);
            match &iv.tag {
                None => {
                    untagged = true;
                    add(&mut all, &iv.hist)?;
                }
                Some(tag) => {
                    let parts = hlog::split_tag(tag);
                    // Per-namespace histograms repeat connects the cause tags already hold.
                    if parts.namespace.is_some() {
                        continue;
                    }
                    let (total, causes) = if parts.retry_delay {
                        (&mut retry_all, &mut retry_causes)
                    } else {
                        (&mut tagged_all, &mut causes)
                    };
                    add(total, &iv.hist)?;
                    // An empty auto-resizing histogram is a few KB: building one per
                    // interval for `or_insert` costs nothing next to the decoding.
                    let c = causes.entry(parts.cause.to_string()).or_insert(CauseHists {
                        total: empty()?,
                        by_dst: BTreeMap::new(),
                    });
                    add(&mut c.total, &iv.hist)?;
                    add(c.by_dst.entry(parts.dst).or_insert(empty()?), &iv.hist)?;
                }
            }
        }
        Ok(Report {
            // An interval is one period, whatever number of tags it carries.
            intervals: starts.len(),
            span: first.map_or(Duration::ZERO, |f| last.saturating_sub(f)),
            all: if untagged { all } else { tagged_all },
            causes,
            retry_all,
            retry_causes,
            dsts: BTreeMap::new(),
        })
    }

    /// An empty report, to be filled with [`Report::record`].
    fn new() -> Result<Report, ExportError> {
        Self::from_intervals(&[])
    }

    /// Counts one slow connect, as the live histograms and the interval log would.
    fn record(&mut self, c: &ConnectReport) -> Result<(), ExportError> {
        let cause = cause_of(c);
        let label = dst_label(c);
        let dst = bounded_key(&self.dsts, &label, MAX_DESTINATIONS).to_string();
        *self.dsts.entry(dst.clone()).or_default() += 1;
        let put = |all: &mut Histogram<u64>,
                   causes: &mut BTreeMap<String, CauseHists>,
                   us: u64|
         -> Result<(), ExportError> {
            let v = us.clamp(LOWEST_US, HIGHEST_US);
            let rec = |h: &mut Histogram<u64>| {
                h.record(v)
                    .map_err(|e| ExportError::Histogram(format!("{e:?}")))
            };
            rec(all)?;
            // As in `from_intervals`: an empty histogram per call costs nothing here.
            let c = causes.entry(cause.to_string()).or_insert(CauseHists {
                total: empty()?,
                by_dst: BTreeMap::new(),
            });
            rec(&mut c.total)?;
            rec(c.by_dst.entry(dst.clone()).or_insert(empty()?))
        };
        put(&mut self.all, &mut self.causes, micros(c))?;
        if let Some(us) = retry_delay_us(c) {
            put(&mut self.retry_all, &mut self.retry_causes, us)?;
        }
        Ok(())
    }

    /// The terminal table.
    pub fn write_table(&self, name: &str, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "{name}: {} intervals over {:.1} s, {} slow connects",
            self.intervals,
            self.span.as_secs_f64(),
            self.all.len()
        )?;
        // Wide enough for the longest destination (a Service makes them long), so columns align.
        let width = [&self.causes, &self.retry_causes]
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|c| c.by_dst.keys())
            .map(|d| d.chars().count() + 2)
            .fold(40, usize::max);
        writeln!(
            w,
            "{:<width$} {:>7} {:>10} {:>10} {:>10} {:>10}",
            "cause / destination", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
        )?;
        let row = |w: &mut dyn Write, label: &str, h: &Histogram<u64>| {
            let p = Percentiles::of(h);
            writeln!(
                w,
                "{label:<width$} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
            )
        };
        let by_cause = |w: &mut dyn Write, causes: &BTreeMap<String, CauseHists>| {
            let mut causes: Vec<_> = causes.iter().collect();
            causes.sort_by(|a, b| b.1.total.len().cmp(&a.1.total.len()).then(a.0.cmp(b.0)));
            for (cause, c) in causes {
                row(w, cause, &c.total)?;
                let mut dsts: Vec<_> = c.by_dst.iter().collect();
                dsts.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
                for (dst, h) in dsts {
                    row(w, &format!("  {dst}"), h)?;
                }
            }
            io::Result::Ok(())
        };
        by_cause(w, &self.causes)?;
        row(w, "all slow connects", &self.all)?;
        if !self.retry_all.is_empty() {
            writeln!(w)?;
            writeln!(
                w,
                "{:<width$} {:>7} {:>10} {:>10} {:>10} {:>10}",
                "SYN retry delay (first → last SYN)",
                "count",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms"
            )?;
            by_cause(w, &self.retry_causes)?;
            row(w, "all slow connects with SYN retries", &self.retry_all)?;
        }
        w.flush()
    }

    /// The plot's series: one per cause, (latency ms, count) ascending.
    pub fn series(&self) -> Vec<svg::Series> {
        self.causes
            .iter()
            .map(|(cause, c)| svg::Series {
                name: cause.clone(),
                points: c
                    .total
                    .iter_recorded()
                    .map(|v| {
                        (
                            c.total.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0,
                            v.count_since_last_iteration(),
                        )
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Entry point of `netlat report`.
pub fn main(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let path = &args.file;
    let bytes = std::fs::read(path).map_err(|source| ExportError::Read {
        path: path.clone(),
        source,
    })?;
    match sniff(&bytes) {
        FileKind::Hlog => hlog_report(path, &bytes, args),
        FileKind::Recording => {
            // Replay it silently, counting each slow connect in memory.
            let mut counted = ReportsOnly(Counted {
                report: Report::new()?,
                failed: None,
            });
            let cfg = ReplayConfig {
                file: path.clone(),
                output: OutputFormat::Json,
                threshold: None,
            };
            let summary = replay::run(&cfg, &mut counted, &ExportOptions::default())?;
            let ReportsOnly(Counted { mut report, failed }) = counted;
            if let Some(e) = failed {
                return Err(e.into());
            }
            report.intervals = 1;
            report.span = Duration::from_secs_f64(summary.duration_s.max(0.0));
            print_report(path, &report, args)
        }
        FileKind::Unknown => anyhow::bail!(
            "{} is neither a recording (`netlat watch --record FILE`) nor an HdrHistogram \
             interval log (`netlat watch --hlog FILE`)",
            path.display()
        ),
    }
}

fn hlog_report(path: &Path, bytes: &[u8], args: &ReportArgs) -> anyhow::Result<ExitCode> {
    print_report(
        path,
        &Report::from_intervals(&hlog::read(path, bytes)?)?,
        args,
    )
}

fn print_report(path: &Path, report: &Report, args: &ReportArgs) -> anyhow::Result<ExitCode> {
    if let Some(out) = &args.svg {
        let title = format!(
            "netlat: slow connect latency by cause ({})",
            path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into()
            )
        );
        std::fs::write(out, svg::render(&title, &report.series()))
            .with_context(|| format!("cannot write the plot to {}", out.display()))?;
        eprintln!("netlat: wrote the latency plot to {}", out.display());
    }
    report
        .write_table(&path.display().to_string(), &mut io::stdout().lock())
        .context("writing the table")?;
    Ok(ExitCode::SUCCESS)
}

/// Counts each slow connect of a replay into the report.
struct Counted {
    report: Report,
    failed: Option<ExportError>,
}

impl Reports for Counted {
    fn connect(&mut self, line: &ConnectReport) -> io::Result<()> {
        if self.failed.is_none()
            && let Err(e) = self.report.record(line)
        {
            self.failed = Some(e);
        }
        Ok(())
    }
    fn drop_line(&mut self, _: &DropReport) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn sniffs_interval_logs() {
        assert_eq!(sniff(b"#[StartTime: 1.0 (s)]\n"), FileKind::Hlog);
        assert_eq!(sniff(b"Tag=a,0.0,1.0,2.0,HIST\n"), FileKind::Hlog);
        assert_eq!(sniff(b"0.127,1.007,2.769,HIST\n"), FileKind::Hlog);
        assert_eq!(
            sniff(b"\"StartTimestamp\",\"Interval_Length\"\n"),
            FileKind::Hlog
        );
        assert_eq!(sniff(b"NLREC\x00\x01"), FileKind::Unknown);
        assert_eq!(sniff(b"NETLATR\x00\x01\x00"), FileKind::Recording);
        assert_eq!(sniff(b""), FileKind::Unknown);
        assert_eq!(sniff(b",x"), FileKind::Unknown);
    }

    fn sample_log() -> (std::path::PathBuf, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!("netlat-report-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.hlog");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_hours(500000);
        let mut w = hlog::HlogWriter::create(&path, t0).unwrap();
        for us in [1_010_000, 1_020_000] {
            w.record("netfilter-rule-drop", "10.0.0.2:8080", us);
        }
        w.record("none", "10.0.0.3:80", 250_000);
        w.write_interval(t0 + Duration::from_secs(10)).unwrap();
        w.record("netfilter-rule-drop", "10.0.0.2:8080", 1_030_000);
        w.record("netfilter-rule-drop", "10.0.0.4:443", 3_000_000);
        w.record_retry_delay("netfilter-rule-drop", "10.0.0.4:443", 2_995_000);
        let web = "10.96.0.20:80 (default/web:http)";
        w.record("none", web, 1_500_000);
        w.record_retry_delay("none", web, 1_000_000);
        w.write_interval(t0 + Duration::from_secs(20)).unwrap();
        drop(w);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        (path, bytes)
    }

    #[test]
    fn table_has_a_row_per_cause_and_destination() {
        let (path, bytes) = sample_log();
        let r = Report::from_intervals(&hlog::read(&path, &bytes).unwrap()).unwrap();
        assert_eq!(r.intervals, 2);
        assert_eq!(r.span, Duration::from_secs(20));
        assert_eq!(r.all.len(), 6);
        let mut out = Vec::new();
        r.write_table("r.hlog", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "r.hlog: 2 intervals over 20.0 s, 6 slow connects");
        assert!(lines[1].starts_with("cause / destination"));
        let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        // Causes by count, destinations under them by count.
        assert_eq!(cols(lines[2])[..2], ["netfilter-rule-drop", "4"]);
        assert_eq!(cols(lines[3])[..2], ["10.0.0.2:8080", "3"]);
        assert_eq!(cols(lines[4])[..2], ["10.0.0.4:443", "1"]);
        assert_eq!(cols(lines[5])[..2], ["none", "2"]);
        assert_eq!(cols(lines[6])[..2], ["10.0.0.3:80", "1"]);
        // The Service reads back with its space (tags hold none).
        assert!(
            lines[7]
                .trim_start()
                .starts_with("10.96.0.20:80 (default/web:http) "),
            "{text}"
        );
        assert!(lines[8].starts_with("all slow connects"));
        // The retry delays are a section of their own, not mixed into the latencies.
        assert_eq!(lines[9], "");
        assert!(lines[10].starts_with("SYN retry delay"), "{text}");
        assert_eq!(cols(lines[11])[..2], ["netfilter-rule-drop", "1"]);
        assert_eq!(cols(lines[12])[..2], ["10.0.0.4:443", "1"]);
        let p50: f64 = cols(lines[12])[2].parse().unwrap();
        assert!((2994.0..2998.0).contains(&p50), "{text}");
        assert_eq!(cols(lines[13])[..2], ["none", "1"]);
        assert!(
            lines[15].starts_with("all slow connects with SYN retries"),
            "{text}"
        );
        assert_eq!(r.retry_all.len(), 2);
        // A long Service destination widens the label column: every row lines up.
        let mut long = Report::from_intervals(&hlog::read(&path, &bytes).unwrap()).unwrap();
        let none = long.causes.get_mut("none").unwrap();
        let svc = "10.96.0.10:53 (kube-system/kube-dns-with-a-long-name:dns-tcp)";
        none.by_dst.insert(svc.into(), none.total.clone());
        let mut out = Vec::new();
        long.write_table("r.hlog", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let widths: Vec<usize> = text
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| l.chars().count())
            .collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert!(text.contains(svc), "{text}");
        // p50 of 1010/1020/1030/3000 ms is ~1020 ms; max ~3000 ms (3 significant digits).
        let c = cols(lines[2]);
        let p50: f64 = c[2].parse().unwrap();
        let max: f64 = c[5].parse().unwrap();
        assert!((1019.0..1022.0).contains(&p50), "{text}");
        assert!((2999.0..3003.0).contains(&max), "{text}");

        let series = r.series();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].points.iter().map(|p| p.1).sum::<u64>(), 4);
        assert_eq!(series[1].points.iter().map(|p| p.1).sum::<u64>(), 2);
        let doc = svg::render("t", &series);
        svg::tests::check_xml(&doc).unwrap();
    }
}
