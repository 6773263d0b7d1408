//! `netlat watch`: the live shell around the [`Engine`]. Loads the programs, polls the ring
//! buffer, ticks the tracker, stops on SIGINT/SIGTERM/`--duration`/a closed stdout, and prints
//! the summary with the kernel's lost-event counts.

use std::{
    future::Future,
    io,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::SignalKind,
};

use std::collections::HashSet;

use netlat_core::{
    engine::{Engine, EngineConfig},
    report::{Reports, WallClock},
};

use crate::{
    cli::{OutputFormat, WatchArgs},
    export::Exports,
    loader,
    output::{Fanout, HumanPrinter, JsonPrinter, Printer},
    record::{
        Header, Note, Recorder, RecordingCounters, RecordingNat, RecordingView, SharedRecorder,
    },
};

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; clock_gettime cannot fail for these clock ids.
    unsafe { libc::clock_gettime(id, &mut ts) };
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
pub fn main(args: WatchArgs) -> anyhow::Result<ExitCode> {
    // Exports are opened first: an unwritable --hlog or a taken --listen port is one clear
    // error before any eBPF is loaded.
    let exports = Exports::open(&args.exports(), SystemTime::now())?;
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
                _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {},
                _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {},
            }
        };
        let stdout = io::stdout();
        let stderr = io::stderr();
        let mut printer: Box<dyn Printer> = match args.output {
            OutputFormat::Json => Box::new(JsonPrinter::new(stdout.lock())),
            OutputFormat::Human => Box::new(HumanPrinter::new(stdout.lock(), stderr.lock())),
        };
        run(&args, printer.as_mut(), exports, shutdown).await
    })
}

/// Idle mode: after the kernel's wakeup, how long a burst may gather before the ring is read.
/// The kernel wakes the reader only for the first record after it read everything, so an
/// idle node costs no wakeups at all, and a trickle one per read.
const GATHER: Duration = Duration::from_millis(2);
/// Busy mode: the ring is read on this timer and the programs do not wake the reader (see
/// `READER` in the eBPF programs): a wakeup is an irq_work inside the committing program.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// Records per read that switch idle → busy (a 2 ms gather: ≈ 8 k events/s) and below which a
/// busy read switches back (a 5 ms poll: ≈ 3 k events/s).
const BUSY_BATCH: usize = 16;

/// Which mode the programs see: `1` = the reader polls, submit without a wakeup.
struct ReaderMode(Option<aya::maps::Array<MapData, u32>>);

impl ReaderMode {
    fn new(ebpf: &mut aya::Ebpf) -> Self {
        let map = ebpf
            .take_map("READER")
            .and_then(|m| aya::maps::Array::try_from(m).ok());
        if map.is_none() {
            tracing::warn!("no READER map: the ring wakes the reader per idle period only");
        }
        ReaderMode(map)
    }

    /// Tell the programs; on failure they keep waking the reader, which is only slower.
    fn set(&mut self, polling: bool) {
        if let Some(m) = &mut self.0
            && let Err(e) = m.set(0, u32::from(polling), 0)
        {
            tracing::warn!("setting the reader mode: {e}");
        }
    }
}

/// Whether an output error means "the reader went away" (a clean end, not a failure).
fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// Load, attach and stream until `shutdown` completes or `--duration` passes.
pub async fn run(
    args: &WatchArgs,
    printer: &mut dyn Printer,
    mut exports: Exports,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    exports.serve()?;
    let limits = crate::limits::Limits::from_env().map_err(anyhow::Error::msg)?;
    let loaded = loader::load(args.verbose)?;
    crate::limits::release_startup_memory();
    let mut ebpf = loaded.ebpf;
    // Keep the logger alive (its map) only when asked for diagnostics.
    let mut logger = if args.verbose {
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
    let ring: RingBuf<MapData> = ebpf
        .take_map("EVENTS")
        .context("the eBPF object has no EVENTS ring buffer")?
        .try_into()
        .context("EVENTS is not a ring buffer")?;
    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd lives.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(io::Error::from)
        .context("polling the ring buffer")?;

    let clock = wall_clock();
    let threshold_ns = (args.threshold * 1e6) as u64;
    let rec = match &args.record {
        Some(path) => Some(
            Recorder::create(
                path,
                &Header {
                    abi_version: netlat_common::ABI_VERSION,
                    kernel: loaded.kernel.clone(),
                    has_reasons: loaded.has_reasons,
                    reasons: loaded.names.reasons.clone(),
                    ct_tuple: loaded.names.ct_tuple,
                    clock_offset_ns: clock.offset_ns,
                    threshold_ns,
                    hooks: loaded.hooks.clone(),
                },
            )
            .with_context(|| format!("creating the recording {}", path.display()))?,
        ),
        None => None,
    };
    // Attached and every file opened: keep only what the per-namespace lookups need.
    crate::privs::drop_for_watch(args.verbose);
    let facts_view = crate::node::live_facts::LiveFacts::default();
    let counters = crate::node::netns::ProcCounters::new();
    let nat = crate::node::netns::CtNatLookup::default();
    let engine_cfg = EngineConfig {
        threshold_ns,
        clock,
        has_reasons: loaded.has_reasons,
        tracker: limits.tracker(),
    };
    let engine = match &rec {
        // Every answer the shell gives the engine goes into the recording too.
        Some(r) => Engine::new(
            engine_cfg,
            loaded.names,
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
        ),
        None => Engine::new(
            engine_cfg,
            loaded.names,
            Box::new(facts_view),
            Box::new(counters),
            Box::new(nat),
        ),
    };
    let mut feed = Feed {
        engine,
        rec,
        symbols: HashSet::new(),
    };
    exports.hooks(&loaded.hooks);
    if let Err(e) = printer.hooks(&loaded.hooks) {
        return finish_on_output_error(e);
    }
    // The node fingerprint joined to this run: verdicts read the same facts per namespace.
    let facts = tokio::task::spawn_blocking(crate::node::gather)
        .await
        .context("gathering node facts")?;
    if let Err(e) = printer.node(&facts, &netlat_core::exposure::exposure(&facts)) {
        return finish_on_output_error(e);
    }

    let started = std::time::Instant::now();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
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
    let mut summary_tick = (!args.summary_interval.is_zero()).then(|| {
        let every = args.summary_interval;
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut pipe_closed = false;
    let mut losses = crate::limits::LossMonitor::default();

    // Records already there wake nobody (the kernel wakes only a reader that read everything).
    if drain(
        ring.get_mut(),
        &mut feed,
        &mut Fanout::new(printer, &mut exports),
    )?
    .is_none()
    {
        pipe_closed = true;
    }
    let mut mode = ReaderMode::new(&mut ebpf);
    let mut polling = false;
    'main: loop {
        if pipe_closed {
            break;
        }
        tokio::select! {
            // Idle mode: the kernel wakes us for the first record after we read everything.
            guard = ring.readable_mut(), if !polling => {
                let mut guard = guard.context("waiting for the ring buffer")?;
                tokio::time::sleep(GATHER).await;
                let Some(n) = drain(guard.get_inner_mut(), &mut feed, &mut Fanout::new(printer, &mut exports))? else {
                    pipe_closed = true;
                    break 'main;
                };
                guard.clear_ready();
                // A record committed between that read and clear_ready() woke us into the
                // cleared state, and no later record wakes us while it is unread: read again.
                let Some(m) = drain(guard.get_inner_mut(), &mut feed, &mut Fanout::new(printer, &mut exports))? else {
                    pipe_closed = true;
                    break 'main;
                };
                if n + m >= BUSY_BATCH {
                    mode.set(true);
                    polling = true;
                }
            }
            // Busy mode: read on a timer; the programs submit without waking us.
            _ = tokio::time::sleep(POLL_EVERY), if polling => {
                let Some(n) = drain(ring.get_mut(), &mut feed, &mut Fanout::new(printer, &mut exports))? else {
                    pipe_closed = true;
                    break 'main;
                };
                if n < BUSY_BATCH {
                    mode.set(false);
                    polling = false;
                    // Records committed while the programs still saw "polling" woke nobody.
                    if drain(ring.get_mut(), &mut feed, &mut Fanout::new(printer, &mut exports))?.is_none() {
                        pipe_closed = true;
                        break 'main;
                    }
                }
            }
            guard = async { match logger.as_mut() { Some(l) => l.readable_mut().await, None => std::future::pending().await } } => {
                if let Ok(mut g) = guard {
                    g.get_inner_mut().flush();
                    g.clear_ready();
                }
            }
            _ = tick.tick() => {
                // A safety net: whatever a lost wakeup left in the ring waits at most a second.
                if drain(ring.get_mut(), &mut feed, &mut Fanout::new(printer, &mut exports))?.is_none() {
                    pipe_closed = true;
                    break 'main;
                }
                feed.tick(monotonic_ns());
                // Scrapes come at any time: keep the lost-event counters a second fresh.
                if exports.serves_metrics() {
                    exports.lost_events(&loader::lost_events(&ebpf));
                }
                for l in losses.update(&loader::lost_events(&ebpf)) {
                    if let Err(e) = printer.loss(&l) {
                        if is_broken_pipe(&e) { pipe_closed = true; break 'main; }
                        return Err(e).context("writing output");
                    }
                }
            }
            _ = async { match summary_tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                match exports.interval(SystemTime::now()) {
                    Ok(Some(h)) => if let Err(e) = printer.histogram(&h) {
                        if is_broken_pipe(&e) { pipe_closed = true; break 'main; }
                        return Err(e).context("writing output");
                    },
                    Ok(None) => {}
                    // The live view matters more than the export: say so and keep watching.
                    Err(e) => tracing::warn!("{:#}", anyhow::Error::from(e)),
                }
            }
            _ = &mut shutdown => break,
            _ = &mut stdout_gone => { pipe_closed = true; break }
            _ = &mut until_deadline => break,
        }
    }

    // Drain what the kernel already produced so nothing seen is lost at exit.
    if !pipe_closed
        && drain(
            ring.get_mut(),
            &mut feed,
            &mut Fanout::new(printer, &mut exports),
        )?
        .is_none()
    {
        pipe_closed = true;
    }
    let now = monotonic_ns();
    let mut summary = if pipe_closed {
        feed.engine.finish(now, &mut exports)?
    } else {
        match feed
            .engine
            .finish(now, &mut Fanout::new(printer, &mut exports))
        {
            Ok(s) => s,
            Err(e) => return finish_on_output_error(e),
        }
    };
    summary.duration_s = started.elapsed().as_secs_f64();
    for (name, n) in loader::lost_events(&ebpf) {
        summary.lost_events.insert(name.to_string(), n);
    }
    // The losses since the last tick, so the loss lines add up to the summary's counts.
    let counts: Vec<(&str, u64)> = summary
        .lost_events
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    let last_losses = losses.update(&counts);
    if let Some(r) = &feed.rec {
        let mut r = r.borrow_mut();
        r.note(&Note::End {
            now_ns: now,
            duration_s: summary.duration_s,
            lost: summary.lost_events.clone(),
        })
        .and_then(|()| r.flush())
        .context("finishing the recording")?;
    }
    // Flush every export (the last hlog interval; the metrics stay served until exit), then
    // the histogram summary goes before the final summary line.
    exports.lost_events(&loader::lost_events(&ebpf));
    let exported = exports.finish(SystemTime::now());
    if !pipe_closed {
        let printed = last_losses
            .iter()
            .try_for_each(|l| printer.loss(l))
            .and_then(|()| match &exported {
                Ok(h) => printer.histogram(h),
                Err(_) => Ok(()),
            })
            .and_then(|()| printer.summary(&summary));
        if let Err(e) = printed {
            exported?;
            return finish_on_output_error(e);
        }
    }
    exported?;
    Ok(ExitCode::SUCCESS)
}

/// The engine plus the optional recording of everything it is fed.
struct Feed {
    engine: Engine,
    rec: Option<SharedRecorder>,
    /// Kernel addresses whose resolution is already in the recording.
    symbols: HashSet<u64>,
}

impl Feed {
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

    fn tick(&mut self, now_ns: u64) {
        if let Some(rec) = &self.rec
            && let Err(e) = rec.borrow_mut().note(&Note::Tick { now_ns })
        {
            tracing::warn!("writing the recording failed: {e}");
        }
        self.engine.tick(now_ns);
    }
}

/// Feed every record in the ring to the engine; how many. `Ok(None)`: the reader of our
/// output went away (a clean end); other output errors are errors.
fn drain(
    rb: &mut RingBuf<MapData>,
    feed: &mut Feed,
    out: &mut dyn Reports,
) -> anyhow::Result<Option<usize>> {
    let mut n = 0;
    while let Some(item) = rb.next() {
        n += 1;
        if let Err(e) = feed.item(&item, out) {
            if is_broken_pipe(&e) {
                return Ok(None);
            }
            return Err(e).context("writing output");
        }
    }
    Ok(Some(n))
}

fn finish_on_output_error(e: io::Error) -> anyhow::Result<ExitCode> {
    if is_broken_pipe(&e) {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(e).context("writing output")
    }
}
