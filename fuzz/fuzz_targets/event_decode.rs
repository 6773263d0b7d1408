//! Ring-buffer items of any shape: the decoder returns errors, never panics; and a stream of
//! such items (each prefixed by a little-endian u16 length) goes through the whole engine —
//! enrich, track, attribute, print — without a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netlat::output::JsonPrinter;
use netlat_core::{
    engine::{Engine, EngineConfig, NoCounters, NoNatLookup},
    enrich::{Kallsyms, Names},
    event,
    flow::TrackerConfig,
    report::WallClock,
    verdict::NoFacts,
};

fn engine() -> Engine {
    let mut names = Names::default();
    names.reasons.insert(2, "NOT_SPECIFIED".into());
    names.reasons.insert(11, "UDP_CSUM".into());
    names.reasons.insert(12, "NETFILTER_DROP".into());
    names.kallsyms = Kallsyms::parse(
        "ffffffff81a00000 t nft_do_chain\nffffffff81a10000 t nf_hook_slow\n\
         ffffffff81b00000 t udp_queue_rcv_one_skb\n",
    );
    Engine::new(
        EngineConfig {
            threshold_ns: 200_000_000,
            clock: WallClock { offset_ns: 0 },
            has_reasons: true,
            tracker: TrackerConfig {
                max_flows: 8,
                max_recent_drops: 8,
                ..TrackerConfig::default()
            },
        },
        names,
        Box::new(NoFacts),
        Box::new(NoCounters),
        Box::new(NoNatLookup),
    )
}

fuzz_target!(|data: &[u8]| {
    let _ = event::decode(data);

    let mut e = engine();
    let mut out = Vec::new();
    let mut sink = JsonPrinter::new(&mut out);
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let n = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (item, tail) = tail.split_at(n);
        let _ = e.handle_bytes(item, &mut sink);
        e.tick(e.last_ts());
        rest = tail;
    }
    let _ = e.finish(e.last_ts().saturating_add(1), &mut sink);
});
