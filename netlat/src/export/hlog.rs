//! `--hlog FILE`: an HdrHistogram interval log (the standard text format with V2 deflate
//! histograms, readable by HdrHistogram's own log tools), values in microseconds.
//!
//! Each interval holds one untagged histogram of every slow connect (what HdrHistogram's
//! `HistogramLogProcessor` reads by default), one connect-latency histogram per
//! `Tag=<cause>/<destination>` and one SYN-retry-delay histogram per
//! `Tag=syn-retry-delay:<cause>/<destination>` that had slow connects in it. A destination with a
//! known Service is `ip:port_(ns/name:port)` (tags cannot hold spaces). Connects from pods are
//! also in one histogram per `Tag=namespace:<pod namespace>/<cause>`. Interval timestamps are
//! seconds since the `BaseTime` header.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use base64::Engine as _;
use hdrhistogram::{
    Histogram,
    serialization::{
        Deserializer, V2DeflateSerializer,
        interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag},
    },
};

use super::{
    ExportError,
    histo::{Hist, new_hist},
};

/// First comment line: says what the numbers are.
const HEADER: &str = "netlat slow TCP connect latency in microseconds; untagged: all slow \
                      connects, Tag=<cause>/<destination>: per verdict and ip:port, \
                      Tag=syn-retry-delay:<cause>/<destination>: first to last SYN, \
                      Tag=namespace:<pod namespace>/<cause>: per namespace of the connecting pod";

/// Tag prefix of the SYN-retry-delay histograms (cause ids never contain `:`).
pub const RETRY_PREFIX: &str = "syn-retry-delay:";

/// Tag prefix of the per-pod-namespace histograms.
pub const NAMESPACE_PREFIX: &str = "namespace:";

/// Characters an interval-log tag cannot hold (the format splits on them).
fn tag_char_ok(c: char) -> bool {
    !matches!(c, ',' | ' ' | '\r' | '\n' | '\t')
}

/// The tag of (cause, destination): `cause/dst`, disallowed characters replaced by `_`.
pub fn tag(cause: &str, dst: &str) -> String {
    format!("{cause}/{dst}")
        .chars()
        .map(|c| if tag_char_ok(c) { c } else { '_' })
        .collect()
}

/// The tag of a SYN-retry-delay histogram of (cause, destination).
pub fn retry_tag(cause: &str, dst: &str) -> String {
    format!("{RETRY_PREFIX}{}", tag(cause, dst))
}

/// The tag of the latency histogram of connects from pods of namespace `ns` with `cause`.
pub fn namespace_tag(ns: &str, cause: &str) -> String {
    format!("{NAMESPACE_PREFIX}{}", tag(ns, cause))
}

/// What a tag written by [`tag`] or [`retry_tag`] names; a foreign tag is all cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagParts<'a> {
    /// A SYN-retry-delay histogram (else connect latency).
    pub retry_delay: bool,
    /// A per-pod-namespace histogram ([`namespace_tag`]): the namespace, with `cause`.
    pub namespace: Option<&'a str>,
    pub cause: &'a str,
    /// The destination, with the space before a Service restored.
    pub dst: String,
}

pub fn split_tag(tag: &str) -> TagParts<'_> {
    if let Some(rest) = tag.strip_prefix(NAMESPACE_PREFIX) {
        let (ns, cause) = rest.split_once('/').unwrap_or((rest, ""));
        return TagParts {
            retry_delay: false,
            namespace: Some(ns),
            cause,
            dst: String::new(),
        };
    }
    let (retry_delay, rest) = match tag.strip_prefix(RETRY_PREFIX) {
        Some(rest) => (true, rest),
        None => (false, tag),
    };
    let (cause, dst) = rest.split_once('/').unwrap_or((rest, ""));
    TagParts {
        retry_delay,
        namespace: None,
        cause,
        dst: dst.replace("_(", " ("),
    }
}

/// Writes the log: intervals accumulate in memory and go to the file at each
/// [`write_interval`](Self::write_interval).
pub struct HlogWriter {
    path: PathBuf,
    out: BufWriter<File>,
    ser: V2DeflateSerializer,
    base: SystemTime,
    interval_start: SystemTime,
    proto: Hist,
    all: Hist,
    tagged: BTreeMap<String, Hist>,
}

impl HlogWriter {
    /// Create (truncate) `path` and write the header now, so an unwritable path fails early.
    pub fn create(path: &Path, start: SystemTime) -> Result<Self, ExportError> {
        let err = |source| ExportError::Hlog {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(err)?;
        let proto = new_hist()?;
        let mut w = HlogWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            ser: V2DeflateSerializer::new(),
            base: start,
            interval_start: start,
            all: proto.clone(),
            proto,
            tagged: BTreeMap::new(),
        };
        IntervalLogWriterBuilder::new()
            .add_comment("[Histogram log format version 1.3]")
            .add_comment(HEADER)
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut w.out, &mut w.ser)
            .map_err(err)?;
        // The legend line HdrHistogram's Java writer puts after the headers (readers skip it).
        w.out
            .write_all(
                b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\
                  \"Interval_Compressed_Histogram\"\n",
            )
            .and_then(|()| w.out.flush())
            .map_err(err)?;
        Ok(w)
    }

    /// Record one slow connect of `us` microseconds.
    pub fn record(&mut self, cause: &str, dst: &str, us: u64) {
        self.all.saturating_record(us);
        self.tagged
            .entry(tag(cause, dst))
            .or_insert_with(|| self.proto.clone())
            .saturating_record(us);
    }

    /// Record one slow connect of `us` microseconds from a pod of namespace `ns`.
    pub fn record_namespace(&mut self, ns: &str, cause: &str, us: u64) {
        self.tagged
            .entry(namespace_tag(ns, cause))
            .or_insert_with(|| self.proto.clone())
            .saturating_record(us);
    }

    /// Record the `us` microseconds SYN retries added to one slow connect.
    pub fn record_retry_delay(&mut self, cause: &str, dst: &str, us: u64) {
        self.tagged
            .entry(retry_tag(cause, dst))
            .or_insert_with(|| self.proto.clone())
            .saturating_record(us);
    }

    /// End the current interval at `now`: write it and start the next.
    pub fn write_interval(&mut self, now: SystemTime) -> Result<(), ExportError> {
        let start = self
            .interval_start
            .duration_since(self.base)
            .unwrap_or(Duration::ZERO);
        let length = now
            .duration_since(self.interval_start)
            .unwrap_or(Duration::ZERO);
        // The exit often comes right after a periodic interval: skip an empty sliver.
        if self.all.is_empty() && length < Duration::from_millis(1) {
            return Ok(());
        }
        let tagged = std::mem::take(&mut self.tagged);
        let result = (|| -> io::Result<()> {
            // A builder with no headers writes nothing: this only borrows the file and the
            // serializer for the interval lines (the log writer holds them by reference).
            let mut log =
                IntervalLogWriterBuilder::new().begin_log_with(&mut self.out, &mut self.ser)?;
            let io_err = |e| io::Error::other(format!("{e}"));
            log.write_histogram(&self.all, start, length, None)
                .map_err(io_err)?;
            for (t, h) in &tagged {
                log.write_histogram(h, start, length, Tag::new(t))
                    .map_err(io_err)?;
            }
            self.out.flush()
        })();
        self.all.reset();
        self.interval_start = now;
        result.map_err(|source| ExportError::Hlog {
            path: self.path.clone(),
            source,
        })
    }
}

/// One interval read back from a log.
#[derive(Debug, Clone)]
pub struct Interval {
    pub tag: Option<String>,
    /// Seconds since the log's BaseTime (or the epoch when it has none).
    pub start: Duration,
    pub length: Duration,
    pub hist: Histogram<u64>,
}

/// Read every interval of the log text `bytes` (from `path`, for messages) with the
/// hdrhistogram crate's log iterator and V2 deserializer.
pub fn read(path: &Path, bytes: &[u8]) -> Result<Vec<Interval>, ExportError> {
    let bad = |offset, what: String| ExportError::BadLog {
        path: path.to_path_buf(),
        offset,
        what,
    };
    let mut out = Vec::new();
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(bytes) {
        let entry = entry.map_err(|e| match e {
            hdrhistogram::serialization::interval_log::LogIteratorError::ParseError { offset } => {
                bad(offset, "unparsable line".into())
            }
        })?;
        let LogEntry::Interval(i) = entry else {
            continue;
        };
        let offset = byte_offset(bytes, i.encoded_histogram());
        let raw = base64::engine::general_purpose::STANDARD
            .decode(i.encoded_histogram())
            .map_err(|e| bad(offset, format!("bad base64: {e}")))?;
        let hist: Histogram<u64> = de
            .deserialize(&mut &raw[..])
            .map_err(|e| bad(offset, format!("bad histogram: {e:?}")))?;
        out.push(Interval {
            tag: i.tag().map(|t| t.as_str().to_string()),
            start: i.start_timestamp(),
            length: i.duration(),
            hist,
        });
    }
    Ok(out)
}

/// Where `part` (a slice of `whole`) starts in `whole`.
fn byte_offset(whole: &[u8], part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_tags_split_apart_from_cause_tags() {
        let t = namespace_tag("shop", "netfilter-rule-drop");
        assert_eq!(t, "namespace:shop/netfilter-rule-drop");
        let p = split_tag(&t);
        assert_eq!(p.namespace, Some("shop"));
        assert_eq!(p.cause, "netfilter-rule-drop");
        assert!(!p.retry_delay);
        assert_eq!(split_tag("none/10.0.0.2:80").namespace, None);
    }

    #[test]
    fn tags_are_sanitised_and_split() {
        assert_eq!(
            tag("netfilter-rule-drop", "10.0.0.2:8080"),
            "netfilter-rule-drop/10.0.0.2:8080"
        );
        assert_eq!(tag("a b", "x,y"), "a_b/x_y");
        assert!(Tag::new(&tag("a b\n", "x,\ry")).is_some());
        let parts = |t| {
            let p = split_tag(t);
            (p.retry_delay, p.cause.to_string(), p.dst)
        };
        assert_eq!(
            parts("none/[::1]:80"),
            (false, "none".into(), "[::1]:80".into())
        );
        assert_eq!(parts("foreign"), (false, "foreign".into(), String::new()));
        let with_service = tag("none", "10.96.0.10:53 (kube-system/kube-dns:dns-tcp)");
        assert_eq!(
            with_service,
            "none/10.96.0.10:53_(kube-system/kube-dns:dns-tcp)"
        );
        assert_eq!(
            parts(&with_service),
            (
                false,
                "none".into(),
                "10.96.0.10:53 (kube-system/kube-dns:dns-tcp)".into()
            )
        );
        assert_eq!(
            parts(&retry_tag("netfilter-rule-drop", "10.0.0.2:8080")),
            (true, "netfilter-rule-drop".into(), "10.0.0.2:8080".into())
        );
    }

    #[test]
    fn writes_a_log_the_crate_reads_back() {
        let dir = std::env::temp_dir().join(format!("netlat-hlog-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.hlog");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_hours(500000);
        let mut w = HlogWriter::create(&path, t0).unwrap();
        w.record("netfilter-rule-drop", "10.0.0.2:8080", 1_015_000);
        w.record("netfilter-rule-drop", "10.0.0.2:8080", 1_020_000);
        w.record("none", "10.0.0.3:80", 250_000);
        w.write_interval(t0 + Duration::from_secs(10)).unwrap();
        // A quiet interval: only the untagged total.
        w.write_interval(t0 + Duration::from_secs(20)).unwrap();
        w.record("netfilter-rule-drop", "10.0.0.2:8080", 1_030_000);
        w.record_retry_delay("netfilter-rule-drop", "10.0.0.2:8080", 1_010_000);
        w.write_interval(t0 + Duration::from_millis(25_500))
            .unwrap();
        // An empty sliver at exit is not written.
        w.write_interval(t0 + Duration::from_millis(25_500))
            .unwrap();
        drop(w);

        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("#[Histogram log format version 1.3]\n"),
            "{text}"
        );
        assert!(text.contains("#[BaseTime: 1800000000.000 (seconds since epoch)]"));
        let iv = read(&path, &bytes).unwrap();
        let untagged: Vec<_> = iv.iter().filter(|i| i.tag.is_none()).collect();
        assert_eq!(untagged.len(), 3);
        // The retry delay is a tagged histogram of its own, not part of the untagged total.
        assert_eq!(
            untagged.iter().map(|i| i.hist.len()).collect::<Vec<_>>(),
            vec![3, 0, 1]
        );
        let retry = iv
            .iter()
            .find(|i| i.tag.as_deref() == Some("syn-retry-delay:netfilter-rule-drop/10.0.0.2:8080"))
            .expect("retry-delay interval");
        assert!(retry.hist.equivalent(retry.hist.max(), 1_010_000));
        assert_eq!(untagged[2].start, Duration::from_secs(20));
        assert_eq!(untagged[2].length, Duration::from_millis(5500));
        let nf: u64 = iv
            .iter()
            .filter(|i| i.tag.as_deref() == Some("netfilter-rule-drop/10.0.0.2:8080"))
            .map(|i| i.hist.len())
            .sum();
        assert_eq!(nf, 3);
        let none = iv
            .iter()
            .find(|i| i.tag.as_deref() == Some("none/10.0.0.3:80"))
            .unwrap();
        assert!(none.hist.equivalent(none.hist.max(), 250_000));

        let mut broken = bytes.clone();
        broken.extend_from_slice(b"Tag=x,1.0,2.0,3.0,!!notbase64\n");
        assert!(matches!(
            read(&path, &broken),
            Err(ExportError::BadLog { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
