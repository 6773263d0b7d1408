//! Command-line interface: raw flags are turned into validated options in one place.

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
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The recording.
    pub file: std::path::PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Report attempts at least this slow (default: the threshold of the recorded run).
    #[arg(long, value_parser = parse_threshold)]
    pub threshold: Option<f64>,
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
    #[arg(long, default_value_t = 200.0, value_parser = parse_threshold)]
    pub threshold: f64,
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
}

fn parse_threshold(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of milliseconds"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
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
        assert_eq!(w.threshold, 500.0);
        assert_eq!(w.output, OutputFormat::Json);
        assert_eq!(w.duration, Some(Duration::from_millis(2500)));
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
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }
}
