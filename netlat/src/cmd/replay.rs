//! `netlat replay FILE`: feed a recording through the same engine, with the recorded answers in
//! place of the live shell. Needs no kernel and no privileges. A truncated or corrupt file is
//! reported with its offset after everything read before it has been reported.

use std::{io, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use netlat_core::{
    engine::{Engine, EngineConfig},
    enrich::{Kallsyms, Names},
    flow::TrackerConfig,
    report::{Summary, WallClock},
};

use crate::{
    cmd::args::{OutputFormat, ReplayArgs},
    export::{ExportOptions, Exports},
    output::{Fanout, HumanPrinter, JsonPrinter, Printer},
    record::{Note, Reader, Record, Replayed, SharedAnswers},
};

/// `netlat replay`, validated once from its flags.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub file: PathBuf,
    pub output: OutputFormat,
    /// Report attempts at least this slow (default: the recorded run's threshold).
    pub threshold: Option<Duration>,
}

impl From<ReplayArgs> for ReplayConfig {
    fn from(a: ReplayArgs) -> Self {
        Self {
            file: a.file,
            output: a.output,
            threshold: a.threshold,
        }
    }
}

pub fn main(cfg: &ReplayConfig) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let stderr = io::stderr();
    let mut printer: Box<dyn Printer> = match cfg.output {
        OutputFormat::Json => Box::new(JsonPrinter::new(stdout.lock())),
        OutputFormat::Human => Box::new(HumanPrinter::new(stdout.lock(), stderr.lock())),
    };
    run(cfg, printer.as_mut(), &ExportOptions::default())?;
    Ok(ExitCode::SUCCESS)
}

/// Replay `cfg.file` into `printer`, with the same latency histograms as the live run (and
/// the exports `opts` asks for); the run's summary.
pub fn run(
    cfg: &ReplayConfig,
    printer: &mut dyn Printer,
    opts: &ExportOptions,
) -> anyhow::Result<Summary> {
    let args = cfg;
    let (header, mut reader) = Reader::open(&args.file)
        .with_context(|| format!("opening the recording {}", args.file.display()))?;
    let clock = WallClock {
        offset_ns: header.clock_offset_ns,
    };
    let mut exports = Exports::open(opts, std::time::SystemTime::now())?;
    let answers = SharedAnswers::default();
    let names = Names {
        reasons: header.reasons.clone(),
        kallsyms: Kallsyms::default(),
        ct_tuple: header.ct_tuple,
        ..Names::default()
    };
    let threshold_ns = args.threshold.map_or(header.threshold_ns, |t| {
        u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
    });
    let mut engine = Engine::new(
        EngineConfig {
            threshold_ns,
            clock,
            has_reasons: header.has_reasons,
            tracker: TrackerConfig::default(),
        },
        names,
        Box::new(Replayed(answers.clone())),
        Box::new(Replayed(answers.clone())),
        Box::new(Replayed(answers.clone())),
    )
    .with_pods(Box::new(Replayed(answers.clone())));
    exports.hooks(&header.hooks);
    printer.hooks(&header.hooks)?;

    // An item's annotations follow it, so an item is handled once the next item (or the end)
    // shows that all of its annotations have been queued.
    let mut pending = Pending::default();
    let mut end = None;
    let mut failure = None;
    loop {
        match reader.next_record() {
            Ok(Some(Record::Item(bytes))) => {
                if let Some(p) = pending.take() {
                    engine.handle_bytes(p, &mut Fanout::new(printer, &mut exports))?;
                }
                pending.hold(bytes);
            }
            Ok(Some(Record::Note(note))) => match note {
                Note::Symbol { addr, location } => engine.insert_symbol(addr, location),
                Note::EndsLost { socks } => {
                    if let Some(p) = pending.take() {
                        engine.handle_bytes(p, &mut Fanout::new(printer, &mut exports))?;
                    }
                    engine.forget_ended(&socks);
                }
                Note::Tick { now_ns } => {
                    if let Some(p) = pending.take() {
                        engine.handle_bytes(p, &mut Fanout::new(printer, &mut exports))?;
                    }
                    engine.tick(now_ns);
                }
                Note::End {
                    now_ns,
                    duration_s,
                    lost,
                    attempts,
                    kernel,
                } => {
                    engine.kernel_attempt_stats(attempts.iter().map(|(k, n)| (k.as_str(), *n)));
                    end = Some((now_ns, duration_s, lost, kernel));
                }
                other => answers.borrow_mut().push(other),
            },
            Ok(None) => break,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(p) = pending.take() {
        engine.handle_bytes(p, &mut Fanout::new(printer, &mut exports))?;
    }
    let now = end.as_ref().map_or(engine.last_ts(), |e| e.0);
    let mut summary = engine.finish(now, &mut Fanout::new(printer, &mut exports))?;
    if let Some((_, duration_s, lost, kernel)) = end {
        summary.duration_s = duration_s;
        summary.lost_events = lost;
        summary.set_kernel_counts(kernel);
    }
    printer.histogram(&exports.finish(clock.to_system_time(now))?)?;
    printer.summary(&summary)?;
    match failure {
        Some(e) => Err(e).with_context(|| {
            format!(
                "replaying {} (everything before the error was reported)",
                args.file.display()
            )
        }),
        None => Ok(summary),
    }
}

/// The item waiting for its annotations, copied out of the reader's buffer (which the next
/// record reuses) into one buffer kept for the whole replay.
#[derive(Default)]
struct Pending {
    item: Vec<u8>,
    held: bool,
}

impl Pending {
    fn hold(&mut self, bytes: &[u8]) {
        self.item.clear();
        self.item.extend_from_slice(bytes);
        self.held = true;
    }

    /// The held item, if any; it is no longer held.
    fn take(&mut self) -> Option<&[u8]> {
        std::mem::take(&mut self.held).then_some(&self.item[..])
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn lines(text: &[u8], kinds: &[&str]) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(text)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| kinds.contains(&v["type"].as_str().unwrap_or("")))
            .collect()
    }

    /// A version 1 recording (three ~1 s first-SYN-drop connects, made by netlat before
    /// Service names and format version 2) next to what that netlat's replay printed.
    #[test]
    fn version_1_recording_replays_to_the_lines_it_gave_then() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/record");
        let args = ReplayConfig {
            file: dir.join("v1-first-syn.rec"),
            output: OutputFormat::Json,
            threshold: None,
        };
        let mut out = Vec::new();
        run(
            &args,
            &mut JsonPrinter::new(&mut out),
            &ExportOptions::default(),
        )
        .unwrap();
        let then = std::fs::read(dir.join("v1-first-syn.replay.jsonl")).unwrap();
        let kinds = ["connect", "drop", "summary"];
        let got = lines(&out, &kinds);
        assert_eq!(got, lines(&then, &kinds));
        assert_eq!(got.iter().filter(|l| l["type"] == "connect").count(), 3);
        assert!(got.iter().all(|l| l.get("service").is_none()));
        // The replay now also prints each attempt's progress line at its SYN retry, naming the
        // cause its connect line names (the v1 lines above are unchanged: none changed cause).
        let connects: Vec<_> = got.iter().filter(|l| l["type"] == "connect").collect();
        let retries = lines(&out, &["retry"]);
        assert_eq!(retries.len(), 3, "{retries:#?}");
        for (r, c) in retries.iter().zip(&connects) {
            assert_eq!(r["src"], c["src"]);
            assert_eq!(r["verdict"]["issue"], c["verdict"]["issue"]);
            assert!(r["waiting_ms"].as_f64().unwrap() <= c["connect_ms"].as_f64().unwrap());
            assert!(c.get("verdict_changed_from").is_none());
        }
        // The histograms of that run, and now also the delay its SYN retries added.
        let hist = lines(&out, &["histogram"]).pop().unwrap();
        let old = lines(&then, &["histogram"]).pop().unwrap();
        for k in ["all", "by_cause", "by_dst", "syn_retries"] {
            assert_eq!(hist[k], old[k], "{k}");
        }
        let delay = &hist["syn_retry_delay"]["all"];
        assert_eq!(delay["count"], 3, "{hist}");
        assert!(
            (1000.0..1100.0).contains(&delay["max_ms"].as_f64().unwrap()),
            "{hist}"
        );
    }
}
