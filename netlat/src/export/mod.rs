//! Exports: the numbers a user shows after an incident. [`Exports`] is a [`Sink`] that records
//! every reported connect into latency histograms ([`histo`]), an HdrHistogram interval log
//! (`--hlog`, [`hlog`]) and Prometheus metrics (`--listen`, [`prom`]); `netlat report`
//! (`cmd/report.rs`, with [`svg`]) reads the interval log back.
//!
//! Everything is fed from the same [`ConnectReport`]/[`DropReport`] lines the printers get, so
//! a replayed stream builds the same histograms as the live run. Wall-clock time enters only
//! through the explicit `now` of [`Exports::interval`] and [`Exports::finish`].

pub mod histo;
pub mod hlog;
pub mod prom;
pub mod svg;

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, SystemTime},
};

pub use histo::{HistogramSummary, Histograms};
use netlat_core::report::{ConnectReport, DropReport, Hook, Reports};

/// Destinations with their own histogram, hlog tag and metric label; later ones are counted
/// under [`OTHER_DST`]. A 3-digit HdrHistogram over 1 µs … 200 s takes ~75 KB, and a label per
/// destination is a Prometheus series per bucket: both must stay bounded on a busy node.
pub const MAX_DESTINATIONS: usize = 100;

/// The destination key once [`MAX_DESTINATIONS`] are tracked.
pub const OTHER_DST: &str = "other";

/// Pod namespaces with their own histogram, hlog tag and metric label (later ones fold into
/// [`OTHER_DST`]); a label per namespace, never per pod, keeps the series bounded.
pub const MAX_NAMESPACES: usize = 100;

/// The pod namespace a connect is counted under: its pod's, or "" when not from a pod.
pub fn pod_namespace(c: &ConnectReport) -> &str {
    c.pod.as_ref().map_or("", |p| p.namespace.as_str())
}

/// Errors of the export side (flags are checked by opening everything before eBPF loads).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write the --hlog file {}", path.display())]
    Hlog {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {addr} (--listen)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot create a histogram: {0}")]
    Histogram(String),
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not an HdrHistogram interval log: {what} at byte {offset}", path.display())]
    BadLog {
        path: PathBuf,
        offset: usize,
        what: String,
    },
}

/// Parse a `--listen` value: `HOST:PORT`, `[V6]:PORT`, `:PORT` or a bare `PORT`; the last two
/// bind loopback, so metrics are only exposed beyond the node when an address says so.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let port_only = s.strip_prefix(':').unwrap_or(s);
    let addr = if let Ok(port) = port_only.parse::<u16>() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    } else {
        s.parse::<SocketAddr>().map_err(|_| {
            format!("`{s}` is not an address: use PORT, :PORT, IP:PORT or [IPv6]:PORT")
        })?
    };
    if addr.port() == 0 {
        return Err(format!(
            "`{s}`: port 0 would pick a port nobody knows to scrape"
        ));
    }
    Ok(addr)
}

/// What the user asked to export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// `--hlog FILE`.
    pub hlog: Option<PathBuf>,
    /// `--listen ADDR`.
    pub listen: Option<SocketAddr>,
}

/// The verdict id a connect is counted under ("none" when no known issue fits).
pub fn cause_of(c: &ConnectReport) -> &'static str {
    c.verdict.as_ref().map_or("none", |v| v.issue)
}

/// Connect latency in whole microseconds (the histograms' unit).
pub fn micros(c: &ConnectReport) -> u64 {
    (c.connect_ms * 1000.0).round().max(0.0) as u64
}

/// The delay SYN retries added to a connect, in microseconds: from the first SYN to the last
/// retransmitted one (the time the connect spent waiting for retransmit timers). `None` for a
/// connect without retries: it was slow for another reason.
pub fn retry_delay_us(c: &ConnectReport) -> Option<u64> {
    c.retransmit_at_ms
        .iter()
        .copied()
        .reduce(f64::max)
        .map(|ms| (ms * 1000.0).round().max(0.0) as u64)
}

/// `key` if it is tracked already or there is room, else [`OTHER_DST`].
pub(crate) fn bounded_key<'a, V>(map: &BTreeMap<String, V>, key: &'a str, cap: usize) -> &'a str {
    if map.len() < cap || map.contains_key(key) {
        key
    } else {
        OTHER_DST
    }
}

/// The export sink: histograms always, the interval log and metrics when asked for.
pub struct Exports {
    hist: Histograms,
    hlog: Option<hlog::HlogWriter>,
    metrics: Option<prom::Metrics>,
    listener: Option<std::net::TcpListener>,
    server: Option<tokio::task::JoinHandle<()>>,
    start: SystemTime,
    /// Slow connects counted at the last periodic summary (quiet intervals print nothing).
    printed: u64,
}

impl Exports {
    /// Open every export now, so a bad path or a taken port fails before eBPF is loaded.
    pub fn open(opts: &ExportOptions, start: SystemTime) -> Result<Exports, ExportError> {
        let hist = Histograms::new()?;
        let hlog = match &opts.hlog {
            Some(p) => Some(hlog::HlogWriter::create(p, start)?),
            None => None,
        };
        let (metrics, listener) = match opts.listen {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| ExportError::Listen { addr, source })?;
                (Some(prom::Metrics::new()), Some(l))
            }
            None => (None, None),
        };
        Ok(Exports {
            hist,
            hlog,
            metrics,
            listener,
            server: None,
            start,
            printed: 0,
        })
    }

    /// Where `/metrics` is served (the bound address, also when port 0 was asked in tests).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Start serving `/metrics` on the current tokio runtime (no-op without `--listen`).
    pub fn serve(&mut self) -> Result<(), ExportError> {
        let (Some(l), Some(m)) = (self.listener.take(), self.metrics.as_ref()) else {
            return Ok(());
        };
        let addr = l
            .local_addr()
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
        let l = tokio::net::TcpListener::from_std(l)
            .map_err(|source| ExportError::Listen { addr, source })?;
        self.server = Some(tokio::spawn(prom::serve(l, m.registry())));
        Ok(())
    }

    /// Whether `/metrics` is served (only then are lost-event counts worth reading often).
    pub fn serves_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    /// Attempts whose end no program saw so far (`kernel_end_missed`), for the metrics.
    pub fn ends_missed(&mut self, total: u64) {
        if let Some(m) = &self.metrics {
            m.set_ends_missed(total);
        }
    }

    /// Runs of each program the kernel skipped so far (`loader::skipped_runs`), for the metrics.
    pub fn skipped_runs(&mut self, totals: &[(String, u64)]) {
        if let Some(m) = &self.metrics {
            m.set_skipped_runs(totals);
        }
    }

    /// The kernel's lost-event totals (per kind), for the metrics.
    pub fn lost_events(&mut self, lost: &[(&str, u64)]) {
        if let Some(m) = &mut self.metrics {
            m.set_lost(lost);
        }
    }

    /// The histograms recorded so far.
    pub fn histograms(&self) -> &Histograms {
        &self.hist
    }

    fn elapsed_s(&self, now: SystemTime) -> f64 {
        now.duration_since(self.start)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
    }

    /// A summary interval ended at `now`: write an hlog interval, and return the summary to
    /// print when slow connects came since the last one.
    pub fn interval(&mut self, now: SystemTime) -> Result<Option<HistogramSummary>, ExportError> {
        if let Some(h) = &mut self.hlog {
            h.write_interval(now)?;
        }
        let slow = self.hist.count();
        if slow == self.printed {
            return Ok(None);
        }
        self.printed = slow;
        Ok(Some(self.hist.summary(self.elapsed_s(now), false)))
    }

    /// End of run at `now`: write the last hlog interval and return the final summary.
    pub fn finish(&mut self, now: SystemTime) -> Result<HistogramSummary, ExportError> {
        if let Some(h) = &mut self.hlog {
            h.write_interval(now)?;
        }
        Ok(self.hist.summary(self.elapsed_s(now), true))
    }
}

impl Drop for Exports {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

impl Exports {
    /// The evidence sources in use, for the metrics' hook gauge.
    pub fn hooks(&mut self, hooks: &[Hook]) {
        if let Some(m) = &self.metrics {
            m.set_hooks(hooks);
        }
    }
}

impl Reports for Exports {
    fn connect(&mut self, c: &ConnectReport) -> io::Result<()> {
        let (dst, ns) = self.hist.record(c);
        let cause = cause_of(c);
        let retry_us = retry_delay_us(c);
        if let Some(h) = &mut self.hlog {
            h.record(cause, &dst, micros(c));
            if !ns.is_empty() {
                h.record_namespace(&ns, cause, micros(c));
            }
            if let Some(us) = retry_us {
                h.record_retry_delay(cause, &dst, us);
            }
        }
        if let Some(m) = &self.metrics {
            // The metric labels split the histogram key back into address and Service; past
            // the destination bound both fold into "other" and "".
            let (ip_port, service) = if dst == OTHER_DST {
                (OTHER_DST, "")
            } else {
                (c.dst.as_str(), c.service.as_deref().unwrap_or(""))
            };
            let labels = prom::ConnectLabels::new(cause, ip_port, service).in_namespace(&ns);
            m.observe_connect(&labels, c.connect_ms / 1000.0);
            if let Some(us) = retry_us {
                m.observe_retry_delay(&labels, us as f64 / 1e6);
            }
        }
        Ok(())
    }

    fn drop_line(&mut self, d: &DropReport) -> io::Result<()> {
        if let Some(m) = &self.metrics {
            m.count_drop(d.verdict.issue);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let lo = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
        assert_eq!(parse_listen(":9090"), Ok(lo(9090)));
        assert_eq!(parse_listen("9090"), Ok(lo(9090)));
        assert_eq!(
            parse_listen("0.0.0.0:9100").map(|a| a.to_string()),
            Ok("0.0.0.0:9100".to_string())
        );
        assert_eq!(
            parse_listen("[::1]:9100").map(|a| a.to_string()),
            Ok("[::1]:9100".to_string())
        );
        for bad in [
            "",
            ":",
            "localhost:9090",
            "1.2.3.4",
            "1.2.3.4:99999",
            ":0",
            "x:1",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bounded_keys_fold_into_other() {
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), 0u8);
        assert_eq!(bounded_key(&m, "b", 2), "b");
        m.insert("b".to_string(), 0u8);
        assert_eq!(bounded_key(&m, "c", 2), OTHER_DST);
        assert_eq!(bounded_key(&m, "a", 2), "a");
    }

    #[test]
    fn unwritable_hlog_and_taken_port_fail_at_open() {
        let e = Exports::open(
            &ExportOptions {
                hlog: Some("/nonexistent-dir/x.hlog".into()),
                listen: None,
            },
            SystemTime::now(),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("cannot write the --hlog file /nonexistent-dir/x.hlog")
        );
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = Exports::open(
            &ExportOptions {
                hlog: None,
                listen: Some(addr),
            },
            SystemTime::now(),
        );
        assert!(matches!(e, Err(ExportError::Listen { .. })));
    }
}
