//! Collector throughput: synthetic ring-buffer items through `Engine::handle_bytes` to the JSON
//! printer on `io::sink()`, pinned to one core. This is the user-space cost of `netlat watch`
//! per event, without the kernel (`cargo xtask bench` runs it and reads its output).
//!
//! `cargo bench -p netlat --bench collector -- [--events N] [--runs R] [--max-seconds S]
//! [--mix connects|drops|mixed]…` prints one line per run:
//! `collector mix=M run=I events=N seconds=S gen_seconds=G reports=R`, where `gen_seconds` is
//! the time the generator alone needs for the same items (included in `seconds`) and `reports`
//! the lines printed. A run stops early (with fewer events) after `--max-seconds`.
//!
//! With `--write-recordings DIR` it instead writes each mix's stream of `--events` items as
//! `DIR/MIX.rec` in the `netlat watch --record` format, for timing `netlat replay FILE`.

mod common;

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use common::{Mix, Synth};

struct Args {
    write: Option<std::path::PathBuf>,
    events: u64,
    runs: u32,
    max: Duration,
    mixes: Vec<Mix>,
}

fn parse_args() -> Args {
    let mut a = Args {
        write: None,
        events: 10_000_000,
        runs: 5,
        max: Duration::from_secs(30),
        mixes: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--events" => a.events = value("--events").parse().expect("--events N"),
            "--write-recordings" => a.write = Some(value("--write-recordings").into()),
            "--runs" => a.runs = value("--runs").parse().expect("--runs R"),
            "--max-seconds" => {
                a.max = Duration::from_secs_f64(value("--max-seconds").parse().expect("seconds"));
            }
            "--mix" => a.mixes.push(match value("--mix").as_str() {
                "connects" => Mix::Connects,
                "drops" => Mix::Drops,
                "mixed" => Mix::Mixed,
                other => panic!("unknown mix {other}"),
            }),
            // `cargo bench` passes --bench; anything else is a filter we do not use.
            _ => {}
        }
    }
    if a.mixes.is_empty() {
        a.mixes = vec![Mix::Connects, Mix::Drops, Mix::Mixed];
    }
    a
}

/// Pin this thread to the last CPU, so the figure is "one core".
fn pin_to_one_cpu() -> Option<usize> {
    let cpu = std::thread::available_parallelism().ok()?.get() - 1;
    // SAFETY: cpu_set_t is plain data; CPU_SET stays inside it (cpu < CPU_SETSIZE on any
    // machine this runs on) and sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        (libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set) == 0)
            .then_some(cpu)
    }
}

/// Seconds the generator alone needs for `n` items of `mix`.
fn generation_only(mix: Mix, n: u64) -> f64 {
    let mut synth = Synth::new(mix);
    let start = Instant::now();
    for _ in 0..n {
        black_box(synth.next_item());
    }
    start.elapsed().as_secs_f64()
}

/// Writes `n` items of `mix` as a recording `netlat replay` reads.
fn write_recording(path: &std::path::Path, mix: Mix, n: u64) -> std::io::Result<()> {
    use netlat::record::{Header, Note, Recorder};
    let header = Header {
        abi_version: netlat_common::ABI_VERSION,
        kernel: "synthetic".into(),
        has_reasons: true,
        reasons: common::reasons().into_iter().collect(),
        ct_tuple: None,
        clock_offset_ns: 0,
        threshold_ns: 200_000_000,
        hooks: Vec::new(),
    };
    let rec = Recorder::create(path, &header)?;
    let mut rec = rec.borrow_mut();
    let mut synth = Synth::new(mix);
    for i in 0..n {
        rec.item(synth.next_item())?;
        if i == 0 {
            // How the drop location resolves, as `watch --record` notes it after the first
            // item that needed it (replays carry locations, not the symbol table).
            rec.note(&Note::Symbol {
                addr: common::DROP_LOCATION,
                location: "nft_do_chain+0x46f".into(),
            })?;
        }
    }
    rec.flush()
}

fn main() {
    let args = parse_args();
    if let Some(dir) = &args.write {
        for &mix in &args.mixes {
            let path = dir.join(format!("{}.rec", mix.name()));
            write_recording(&path, mix, args.events).expect("writing the recording");
            println!(
                "recording mix={} events={} file={}",
                mix.name(),
                args.events,
                path.display()
            );
        }
        return;
    }
    match pin_to_one_cpu() {
        Some(cpu) => eprintln!("collector: pinned to CPU {cpu}"),
        None => eprintln!("collector: could not pin to one CPU"),
    }
    for &mix in &args.mixes {
        for run in 1..=args.runs {
            let mut engine = common::engine();
            let mut sink = common::sink();
            let mut synth = Synth::new(mix);
            let start = Instant::now();
            let mut done = 0u64;
            'outer: while done < args.events {
                // Check the clock once per 64 Ki items.
                for _ in 0..65_536 {
                    if done == args.events {
                        break 'outer;
                    }
                    engine
                        .handle_bytes(synth.next_item(), &mut sink)
                        .expect("io::sink never fails");
                    done += 1;
                }
                if start.elapsed() > args.max {
                    break;
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            let summary = engine
                .finish(engine.last_ts(), &mut sink)
                .expect("io::sink never fails");
            let gen_seconds = generation_only(mix, done);
            println!(
                "collector mix={} run={run} events={done} seconds={seconds:.6} \
                 gen_seconds={gen_seconds:.6} reports={}",
                mix.name(),
                summary.slow,
            );
        }
    }
}
