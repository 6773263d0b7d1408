//! The command line as clap sees it. Each subcommand's flags are validated here by their
//! parsers and turned into that subcommand's config (`WatchConfig`, `ReplayConfig`) once, in
//! its `cmd/` file.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// netlat watches the kernel and names the known issue behind slow TCP connects.
#[derive(Debug, Parser)]
#[command(name = "netlat", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream one line per slow connection attempt on this node, with the SYN retry ladder,
    /// the matching drops and the known issue behind it (needs root).
    Watch(WatchArgs),
    /// Print this node's facts (kernel, sysctls, kube-proxy mode, NAT rules, VXLAN offloads,
    /// conntrack counters) and, per known issue, whether the node is exposed and the fix.
    /// Needs no eBPF.
    Doctor(DoctorArgs),
    /// Replay a recording made with `watch --record`: the same lines, verdicts and summary,
    /// with no kernel and no privileges.
    Replay(ReplayArgs),
    /// Summarise a recording (`watch --record`) or an HdrHistogram interval log (`watch
    /// --hlog`): percentiles by cause and destination, and with `--svg` a latency distribution
    /// plot by cause.
    Report(ReportArgs),
    /// Print a shell completion script for SHELL to stdout (e.g.
    /// `netlat completions bash > /etc/bash_completion.d/netlat`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout (e.g. `netlat man | man -l -`).
    Man,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The file to summarise: a recording (`watch --record`) or an interval log (`watch --hlog`).
    pub file: std::path::PathBuf,
    /// Also write a latency distribution plot by cause (cumulative, log-scaled) to OUT.
    #[arg(long, value_name = "OUT")]
    pub svg: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The recording.
    pub file: std::path::PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Report attempts at least this slow, in milliseconds (default: the threshold of the
    /// recorded run).
    #[arg(long, value_name = "MS", value_parser = parse_threshold)]
    pub threshold: Option<Duration>,
}

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Inspect another network namespace: a name under /run/netns or a path such as
    /// /proc/PID/ns/net.
    #[arg(long)]
    pub netns: Option<String>,
    /// A container runtime's CRI socket to name pods from (repeatable; default: the containerd
    /// and CRI-O sockets that exist at their usual paths).
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Vec<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines.
    Human,
    /// JSON lines (one object per line).
    Json,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Report connection attempts at least this slow, in milliseconds.
    #[arg(long, value_name = "MS", default_value = "200", value_parser = parse_threshold)]
    pub threshold: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Show eBPF-side diagnostics (aya-log) and debug logs.
    #[arg(short, long)]
    pub verbose: bool,
    /// Record the raw kernel events and the node answers to FILE for `netlat replay`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<std::path::PathBuf>,
    /// Print a latency histogram summary (per cause: count, p50/p90/p99/max; the SYN retry
    /// ladder) every SECS seconds when there are new slow connects, and always at exit; 0: only
    /// at exit. Also the interval of the --hlog file.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_interval)]
    pub summary_interval: Duration,
    /// Write an HdrHistogram interval log of slow connect latencies (µs, one tag per cause and
    /// destination) to FILE; `netlat report FILE` reads it.
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics. ADDR is IP:PORT, or PORT / :PORT for
    /// 127.0.0.1 (loopback unless an address says otherwise). Off by default.
    #[arg(long, value_name = "ADDR", value_parser = crate::export::parse_listen)]
    pub listen: Option<std::net::SocketAddr>,
    /// A container runtime's CRI socket to name pods from (repeatable; default: the containerd
    /// and CRI-O sockets that exist at their usual paths).
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Vec<std::path::PathBuf>,
    /// A live terminal view instead of lines: attempts waiting now with their cause so far, the
    /// last minute per cause and destination, latency per cause, losses and hooks. Keys: q
    /// quit, p pause, c next cause, a all causes.
    #[arg(long, conflicts_with = "output")]
    pub tui: bool,
}

/// `--summary-interval`: whole or fractional seconds, 0 for "only at exit". Below 0.1 s the
/// summaries and hlog intervals would only be noise.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v == 0.0 || (v.is_finite() && (0.1..1e9).contains(&v)) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "`{s}` must be 0 (only at exit) or at least 0.1 seconds"
        ))
    }
}

/// A threshold in (fractional) milliseconds.
fn parse_threshold(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of milliseconds"))?;
    if v.is_finite() && (0.0..1e12).contains(&v) {
        Ok(Duration::from_secs_f64(v / 1000.0))
    } else {
        Err(format!(
            "`{s}` must be a non-negative number of milliseconds"
        ))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v < 1e9 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("`{s}` must be a positive number of seconds"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_watch_flags() {
        let c = Cli::try_parse_from([
            "netlat",
            "watch",
            "--threshold",
            "500",
            "--output",
            "json",
            "--duration",
            "2.5",
        ])
        .unwrap();
        let Command::Watch(w) = c.command else {
            panic!("not watch")
        };
        assert_eq!(w.threshold, Duration::from_millis(500));
        assert_eq!(w.output, OutputFormat::Json);
        assert_eq!(w.duration, Some(Duration::from_millis(2500)));
        assert_eq!(w.summary_interval, Duration::from_secs(10));
        assert_eq!(w.listen, None);
        assert_eq!(w.hlog, None);
    }

    #[test]
    fn parses_export_flags() {
        let c = Cli::try_parse_from([
            "netlat",
            "watch",
            "--summary-interval",
            "0",
            "--hlog",
            "/tmp/x.hlog",
            "--listen",
            ":9090",
        ])
        .unwrap();
        let Command::Watch(w) = c.command else {
            panic!("not watch")
        };
        assert_eq!(w.summary_interval, Duration::ZERO);
        assert_eq!(w.listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(w.hlog, Some("/tmp/x.hlog".into()));
        let c = Cli::try_parse_from(["netlat", "report", "x.hlog", "--svg", "x.svg"]).unwrap();
        let Command::Report(r) = c.command else {
            panic!("not report")
        };
        assert_eq!(r.svg, Some("x.svg".into()));
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            vec!["netlat", "watch", "--threshold", "-1"],
            vec!["netlat", "watch", "--duration", "0"],
            vec!["netlat", "watch", "--duration", "soon"],
            vec!["netlat", "watch", "--output", "xml"],
            vec!["netlat", "watch", "--bogus"],
            vec!["netlat"],
            vec!["netlat", "doctor", "--output", "yaml"],
            vec!["netlat", "watch", "--listen", "localhost:9090"],
            vec!["netlat", "watch", "--listen", "0.0.0.0:99999"],
            vec!["netlat", "watch", "--summary-interval", "-1"],
            vec!["netlat", "watch", "--summary-interval", "0.01"],
            vec!["netlat", "report"],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }
}
