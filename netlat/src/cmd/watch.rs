//! `netlat watch`: the live shell around the [`Engine`]. Loads the programs, reads the ring
//! buffer, ticks the tracker, stops on SIGINT/SIGTERM/`--duration`/a closed stdout, and prints
//! the summary with the kernel's lost-event counts.
//!
//! The run has four phases, one function each: [`start`] (load, attach, build the engine),
//! [`announce`] (hooks and node lines), [`stream`] (the event loop) and [`finish`] (drain,
//! summary, exports, recording).

use std::{
    collections::HashSet,
    future::Future,
    io,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use aya::Ebpf;
use netlat_core::{
    engine::{Engine, EngineConfig},
    event::SockKey,
    report::{Reports, Summary, WallClock},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::SignalKind,
};

use crate::{
    cmd::args::{OutputFormat, WatchArgs},
    export::{ExportOptions, Exports},
    kernel::loader::{self, Loaded},
    kernel::ring::Ring,
    kernel::sweep::{self, NamespaceTables, Sweeper},
    limits::{Limits, LossMonitor},
    node::{
        live_facts::LiveFacts,
        netns,
        pods::{PodCache, PodSources},
        snmp::TcpCounterSampler,
    },
    output::{Closable, Fanout, HumanPrinter, JsonPrinter, Printer},
    record::{
        Header, Note, Recorder, RecordingCounters, RecordingNat, RecordingPods, RecordingView,
        SharedRecorder,
    },
};

/// `netlat watch`, validated once from its flags.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Attempts at least this slow are reported.
    pub threshold: Duration,
    pub output: OutputFormat,
    /// Stop after this long (default: until a signal).
    pub duration: Option<Duration>,
    pub verbose: bool,
    pub record: Option<PathBuf>,
    /// Histogram summaries (and hlog intervals) this often; zero: only at exit.
    pub summary_interval: Duration,
    pub exports: ExportOptions,
    /// `--cri-socket` paths (empty: the usual ones that exist).
    pub cri_sockets: Vec<PathBuf>,
    /// A live terminal view instead of lines (`netlat watch --tui`).
    pub tui: bool,
}

impl From<WatchArgs> for WatchConfig {
    fn from(a: WatchArgs) -> Self {
        Self {
            threshold: a.threshold,
            output: a.output,
            duration: a.duration,
            verbose: a.verbose,
            record: a.record,
            summary_interval: a.summary_interval,
            exports: ExportOptions {
                hlog: a.hlog,
                listen: a.listen,
            },
            cri_sockets: a.cri_socket,
            tui: a.tui,
        }
    }
}

impl WatchConfig {
    fn threshold_ns(&self) -> u64 {
        u64::try_from(self.threshold.as_nanos()).unwrap_or(u64::MAX)
    }
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; clock_gettime cannot fail for these clock ids.
    unsafe { libc::clock_gettime(id, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Kernel monotonic time, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

fn wall_clock() -> WallClock {
    WallClock {
        offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
    }
}

/// Entry point of the subcommand.
pub fn main(cfg: &WatchConfig) -> anyhow::Result<ExitCode> {
    // Exports are opened first: an unwritable --hlog or a taken --listen port is one clear
    // error before any eBPF is loaded.
    let exports = Exports::open(&cfg.exports, SystemTime::now())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        // Handlers first: a signal during loading or start-up still ends the run cleanly.
        // If a handler cannot be installed, the other signals and --duration still work.
        let mut term = tokio::signal::unix::signal(SignalKind::terminate()).ok();
        let mut int = tokio::signal::unix::signal(SignalKind::interrupt()).ok();
        let shutdown = async move {
            tokio::select! {
                () = recv(term.as_mut()) => {},
                () = recv(int.as_mut()) => {},
            }
        };
        let stdout = io::stdout();
        let stderr = io::stderr();
        let mut printer: Box<dyn Printer> = match cfg.output {
            OutputFormat::Json => Box::new(JsonPrinter::new(stdout.lock())),
            OutputFormat::Human => Box::new(HumanPrinter::new(stdout.lock(), stderr.lock())),
        };
        run(cfg, printer.as_mut(), exports, shutdown).await
    })
}

/// A signal's next delivery; never, without a handler.
pub(crate) async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// What a started run holds: the object, its ring and logger, and the engine being fed.
struct Running {
    ebpf: Ebpf,
    /// The namespaces' TCP counters (`None`: the sampler thread could not start).
    tcp_counters: Option<TcpCounterSampler>,
    ring: Ring,
    logger: Option<AsyncFd<aya_log::EbpfLogger<&'static dyn log::Log>>>,
    feed: Feed,
    /// Frees attempt-table entries whose end was missed, every `sweep_every`.
    sweeper: Sweeper,
    sweep_every: Duration,
}

/// Load, attach and stream until `shutdown` completes, `--duration` passes or the reader of
/// the output goes away.
pub async fn run(
    cfg: &WatchConfig,
    printer: &mut dyn Printer,
    mut exports: Exports,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    exports.serve()?;
    let limits = Limits::from_env().map_err(anyhow::Error::msg)?;
    let loaded = loader::load(cfg.verbose, cfg.threshold_ns())?;
    crate::limits::release_startup_memory();
    let hooks = loaded.hooks.clone();
    let mut running = start(cfg, &limits, loaded)?;
    let mut out = Closable::new(printer);
    announce(&hooks, &mut out, &mut exports).await?;
    let started = Instant::now();
    let mut losses = LossMonitor::default();
    stream(
        cfg,
        &mut running,
        &mut out,
        &mut exports,
        &mut losses,
        shutdown,
    )
    .await?;
    finish(running, started, &mut out, &mut exports, &mut losses)?;
    Ok(ExitCode::SUCCESS)
}

/// The ring, the logger and the engine (wrapped to record every answer with `--record`).
fn start(cfg: &WatchConfig, limits: &Limits, loaded: Loaded) -> anyhow::Result<Running> {
    let Loaded {
        mut ebpf,
        kernel,
        hooks,
        names,
        has_reasons,
    } = loaded;
    // Keep the logger alive (its map) only when asked for diagnostics.
    let logger = if cfg.verbose {
        match aya_log::EbpfLogger::init(&mut ebpf) {
            // SAFETY: the logger owns its ring-buffer fd for as long as the AsyncFd lives.
            Ok(l) => Some(
                unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) }
                    .map_err(io::Error::from)
                    .context("polling the aya-log ring buffer")?,
            ),
            Err(e) => {
                tracing::warn!("eBPF diagnostics unavailable: {e}");
                None
            }
        }
    } else {
        None
    };
    let ring = Ring::open(&mut ebpf)?;
    let sweeper = Sweeper::new(&ebpf);
    let clock = wall_clock();
    let rec = match &cfg.record {
        Some(path) => Some(
            Recorder::create(
                path,
                &Header {
                    abi_version: netlat_common::ABI_VERSION,
                    kernel,
                    has_reasons,
                    reasons: names.reasons.clone(),
                    ct_tuple: names.ct_tuple,
                    clock_offset_ns: clock.offset_ns,
                    threshold_ns: cfg.threshold_ns(),
                    hooks,
                },
            )
            .with_context(|| format!("creating the recording {}", path.display()))?,
        ),
        None => None,
    };
    // Attached and every file opened: keep only what the per-namespace lookups need.
    crate::kernel::privs::drop_for_watch(cfg.verbose);
    // Started before the first event is read, so the kernel's counts cover the same time.
    let tcp_counters = TcpCounterSampler::start(monotonic_ns)
        .inspect_err(|e| {
            tracing::warn!(
                "reading the kernel's TCP counters: {e}; listen-overflow and the kernel's SYN \
                 retransmit count are not available"
            );
        })
        .ok();
    let facts_view = match &tcp_counters {
        Some(t) => LiveFacts::default().with_tcp_counters(t.view()),
        None => LiveFacts::default(),
    };
    let counters = netns::ProcCounters::new();
    let nat = netns::CtNatLookup::default();
    // Started after privileges are dropped: the runtime sockets need no capability, and
    // /proc/PID/cgroup is world-readable.
    let ids = loader::proc_cgroups(&mut ebpf)
        .map(|m| std::sync::Arc::new(m) as std::sync::Arc<dyn crate::node::pods::CgroupIds>);
    let pods = PodCache::start(&PodSources::discover(&cfg.cri_sockets), ids)
        .context("starting the pod lookups")?;
    let engine_cfg = EngineConfig {
        threshold_ns: cfg.threshold_ns(),
        clock,
        has_reasons,
        tracker: limits.tracker(),
    };
    let engine = match &rec {
        // Every answer the shell gives the engine goes into the recording too.
        Some(r) => Engine::new(
            engine_cfg,
            names,
            Box::new(RecordingView {
                inner: facts_view,
                rec: r.clone(),
            }),
            Box::new(RecordingCounters {
                inner: counters,
                rec: r.clone(),
            }),
            Box::new(RecordingNat {
                inner: nat,
                rec: r.clone(),
            }),
        )
        .with_pods(Box::new(RecordingPods {
            inner: pods,
            rec: r.clone(),
        })),
        None => Engine::new(
            engine_cfg,
            names,
            Box::new(facts_view),
            Box::new(counters),
            Box::new(nat),
        )
        .with_pods(Box::new(pods)),
    };
    Ok(Running {
        ebpf,
        tcp_counters,
        ring,
        logger,
        feed: Feed {
            engine,
            rec,
            symbols: HashSet::new(),
        },
        sweeper,
        sweep_every: limits.sweep_every.unwrap_or(sweep::SWEEP_EVERY),
    })
}

/// The hooks in use, then the node fingerprint joined to this run (verdicts read the same
/// facts per namespace).
async fn announce(
    hooks: &[netlat_core::report::Hook],
    out: &mut Closable<'_>,
    exports: &mut Exports,
) -> anyhow::Result<()> {
    exports.hooks(hooks);
    out.hooks(hooks).context("writing output")?;
    let facts = tokio::task::spawn_blocking(crate::node::gather)
        .await
        .context("gathering node facts")?;
    out.node(&facts, &netlat_core::exposure::exposure(&facts))
        .context("writing output")
}

/// The event loop: until a signal, the deadline or a closed output.
async fn stream(
    cfg: &WatchConfig,
    r: &mut Running,
    out: &mut Closable<'_>,
    exports: &mut Exports,
    losses: &mut LossMonitor,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let deadline = cfg.duration.map(|d| tokio::time::Instant::now() + d);
    let until_deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    tokio::pin!(shutdown);
    let stdout_gone = crate::limits::stdout_closed();
    tokio::pin!(stdout_gone);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut summary_tick = (!cfg.summary_interval.is_zero()).then(|| {
        let every = cfg.summary_interval;
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut sweep_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + r.sweep_every, r.sweep_every);
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Records already there wake nobody (the kernel wakes only a reader that read everything).
    r.ring.drain(r.feed.sink(out, exports))?;
    while !out.is_closed() {
        tokio::select! {
            n = r.ring.next(r.feed.sink(out, exports)) => { n?; }
            guard = async { match r.logger.as_mut() { Some(l) => l.readable_mut().await, None => std::future::pending().await } } => {
                if let Ok(mut g) = guard {
                    g.get_inner_mut().flush();
                    g.clear_ready();
                }
            }
            _ = tick.tick() => {
                // A safety net: whatever a lost wakeup left in the ring waits at most a second.
                r.ring.drain(r.feed.sink(out, exports))?;
                r.feed.tick(monotonic_ns());
                let lost = loader::lost_events(&r.ebpf);
                // Scrapes come at any time: keep the lost-event counters a second fresh.
                if exports.serves_metrics() {
                    exports.lost_events(&lost);
                    exports.skipped_runs(&loader::skipped_runs(&r.ebpf));
                }
                for l in losses.update(&lost) {
                    out.loss(&l).context("writing output")?;
                }
            }
            () = async { match summary_tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                match exports.interval(SystemTime::now()) {
                    Ok(Some(h)) => out.histogram(&h).context("writing output")?,
                    Ok(None) => {}
                    // The live view matters more than the export: say so and keep watching.
                    Err(e) => tracing::warn!("{:#}", anyhow::Error::from(e)),
                }
            }
            _ = sweep_tick.tick() => r.sweeper.start(monotonic_ns()),
            freed = r.sweeper.done() => {
                r.feed.swept(&freed)?;
                exports.ends_missed(r.sweeper.freed);
            }
            () = &mut shutdown => break,
            () = &mut stdout_gone => out.close(),
            () = &mut until_deadline => break,
        }
    }
    // The stop reads the table itself: a sweep in flight finishes first, so an entry is freed
    // and counted once.
    if r.sweeper.running() {
        let freed = r.sweeper.done().await;
        r.feed.swept(&freed)?;
        exports.ends_missed(r.sweeper.freed);
    }
    Ok(())
}

/// Drain what the kernel already produced so nothing seen is lost at exit, then the summary,
/// the last exports and the end of the recording.
fn finish(
    mut r: Running,
    started: Instant,
    out: &mut Closable<'_>,
    exports: &mut Exports,
    losses: &mut LossMonitor,
) -> anyhow::Result<()> {
    r.ring.drain(r.feed.sink(out, exports))?;
    // Attempts still waiting are judged by their age when the table is read, not after the
    // reads below.
    let now = monotonic_ns();
    // The table's entries whose socket still waits; the others' ends were never seen.
    let (table, end_missed) = match loader::attempt_table(&r.ebpf) {
        Some(t) => {
            let (live, missed) = sweep::still_waiting(t, &mut NamespaceTables::default());
            (Some(live), missed)
        }
        None => (None, Vec::new()),
    };
    // Attempts still waiting that the kernel never shipped: fed (and recorded) as the start
    // events it would have shipped, so the engine reports the slow ones as pending.
    {
        let mut feed = r.feed.sink(out, exports);
        for e in loader::pending_attempts(table.as_deref().unwrap_or_default()) {
            feed(netlat_core::event::bytes_of(&e))?;
        }
    }
    // What the programs shipped since the first drain: an attempt shipped meanwhile (its
    // first retransmit, or a slow end) is marked shipped or gone in the table, so these
    // records are its only trace. (Its start, if also read above, is the same attempt.)
    r.ring.drain(r.feed.sink(out, exports))?;
    let mut attempts = loader::attempt_stats(&r.ebpf);
    // An attempt that ended between the table read and the socket check left the table with
    // its end: only the entries still there after the drain were really missed. Those the
    // sweeps freed during the run count too.
    attempts.push((
        "end_missed",
        r.sweeper.freed + loader::still_in_table(&r.ebpf, &end_missed),
    ));
    r.feed.engine.kernel_attempt_stats(attempts.iter().copied());
    // Attempts tracked here whose socket the table no longer holds waiting ended with their
    // end lost or missed: not pending. (Not when the table overflowed: attempts shipped at
    // once are never in it.)
    let table_full = attempts.iter().any(|(k, n)| *k == "table_full" && *n > 0);
    if !table_full && let Some(table) = &table {
        let waiting: HashSet<u64> = table.iter().map(|(skaddr, _)| *skaddr).collect();
        r.feed.ends_lost(|s| waiting.contains(&s.skaddr))?;
    }
    let mut summary: Summary = r
        .feed
        .engine
        .finish(now, &mut Fanout::new(out, exports))
        .context("writing output")?;
    summary.duration_s = started.elapsed().as_secs_f64();
    summary.set_kernel_counts(r.tcp_counters.as_ref().map(TcpCounterSampler::totals));
    let lost = loader::lost_events(&r.ebpf);
    for (name, n) in &lost {
        summary.lost_events.insert((*name).to_string(), *n);
    }
    let skipped = loader::skipped_runs(&r.ebpf);
    summary.skipped_runs = skipped.iter().filter(|(_, n)| *n > 0).cloned().collect();
    // The losses since the last tick, so the loss lines add up to the summary's counts.
    let counts: Vec<(&str, u64)> = summary
        .lost_events
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    let last_losses = losses.update(&counts);
    if let Some(rec) = &r.feed.rec {
        let mut rec = rec.borrow_mut();
        rec.note(&Note::End {
            now_ns: now,
            duration_s: summary.duration_s,
            lost: summary.lost_events.clone(),
            attempts: attempts
                .iter()
                .map(|(k, n)| ((*k).to_string(), *n))
                .collect(),
            kernel: summary.kernel_counted,
        })
        .and_then(|()| rec.flush())
        .context("finishing the recording")?;
    }
    // Flush every export (the last hlog interval; the metrics stay served until exit), then
    // the histogram summary goes before the final summary line.
    exports.lost_events(&lost);
    exports.skipped_runs(&skipped);
    exports.ends_missed(summary.tracker.kernel_end_missed);
    let exported = exports.finish(SystemTime::now());
    let printed = last_losses
        .iter()
        .try_for_each(|l| out.loss(l))
        .and_then(|()| match &exported {
            Ok(h) => out.histogram(h),
            Err(_) => Ok(()),
        })
        .and_then(|()| out.summary(&summary));
    exported?;
    printed.context("writing output")
}

/// The engine plus the optional recording of everything it is fed.
struct Feed {
    engine: Engine,
    rec: Option<SharedRecorder>,
    /// Kernel addresses whose resolution is already in the recording.
    symbols: HashSet<u64>,
}

impl Feed {
    /// A ring callback feeding each record to the engine, reports to `out` and the exports.
    fn sink<'a>(
        &'a mut self,
        out: &'a mut Closable<'_>,
        exports: &'a mut Exports,
    ) -> impl FnMut(&[u8]) -> anyhow::Result<()> + 'a {
        move |bytes| {
            self.item(bytes, &mut Fanout::new(&mut *out, &mut *exports))
                .context("writing output")
        }
    }

    fn item(&mut self, bytes: &[u8], sink: &mut dyn Reports) -> io::Result<()> {
        if let Some(rec) = &self.rec {
            let mut r = rec.borrow_mut();
            // A replay has no symbol table: record how each new drop location resolved.
            if let Ok(netlat_core::event::Event::Drop(d)) = netlat_core::event::decode(bytes)
                && self.symbols.insert(d.location)
            {
                r.note(&Note::Symbol {
                    addr: d.location,
                    location: self.engine.resolve(d.location),
                })?;
            }
            r.item(bytes)?;
        }
        self.engine.handle_bytes(bytes, sink)
    }

    /// Forget the attempts tracked here whose socket `still_waiting` denies: their end was lost
    /// or missed, so they are not pending. A recording keeps them for its replay.
    fn ends_lost(&mut self, still_waiting: impl Fn(&SockKey) -> bool) -> anyhow::Result<()> {
        let gone = self.engine.ends_lost(still_waiting);
        if !gone.is_empty()
            && let Some(rec) = &self.rec
        {
            rec.borrow_mut()
                .note(&Note::EndsLost { socks: gone })
                .context("writing the recording")?;
        }
        Ok(())
    }

    /// The sockets whose table entries a sweep freed: their attempts, if tracked here, ended
    /// unseen.
    fn swept(&mut self, freed: &HashSet<SockKey>) -> anyhow::Result<()> {
        // Nothing freed (the usual sweep): no walk of the attempts in flight.
        if freed.is_empty() {
            return Ok(());
        }
        self.ends_lost(|s| !freed.contains(s))
    }

    fn tick(&mut self, now_ns: u64) {
        if let Some(rec) = &self.rec
            && let Err(e) = rec.borrow_mut().note(&Note::Tick { now_ns })
        {
            tracing::warn!("writing the recording failed: {e}");
        }
        self.engine.tick(now_ns);
    }
}
