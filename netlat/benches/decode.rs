//! Criterion micro-benchmarks of the per-event work of `netlat watch`: ring-buffer item
//! decoding (`netlat_core::event::decode`), packet decoding (`netlat_core::packet::decode`) and the whole
//! engine (decode → enrich → track → attribute → print to `io::sink()`).
//!
//! `cargo xtask bench` runs them with short times and `--output-format bencher`.

mod common;

use std::hint::black_box;

use common::{Mix, Synth};
use criterion::{Criterion, criterion_group, criterion_main};
use netlat_core::{enrich::VXLAN_PORTS, event, packet};

/// The first item of `mix` whose kind is `kind`.
fn first_of(mix: Mix, kind: u32) -> Vec<u8> {
    let mut s = Synth::new(mix);
    loop {
        let item = s.next_item();
        if item[..4] == kind.to_ne_bytes() {
            return item.to_vec();
        }
    }
}

/// The captured bytes (from the network header) of a drop item.
fn capture(item: &[u8]) -> (u16, Vec<u8>) {
    match event::decode(item).expect("synthetic drop decodes") {
        event::Event::Drop(d) => (d.protocol, d.data.to_vec()),
        other => panic!("not a drop: {other:?}"),
    }
}

fn event_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("event_decode");
    let state = first_of(Mix::Connects, netlat_common::kind::SOCK_STATE);
    let retrans = first_of(Mix::Mixed, netlat_common::kind::RETRANSMIT);
    let drop = first_of(Mix::Drops, netlat_common::kind::DROP);
    g.bench_function("sock_state", |b| {
        b.iter(|| event::decode(black_box(&state)));
    });
    g.bench_function("retransmit", |b| {
        b.iter(|| event::decode(black_box(&retrans)));
    });
    g.bench_function("drop", |b| b.iter(|| event::decode(black_box(&drop))));
    g.finish();
}

fn packet_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("packet_decode");
    let (proto, vxlan) = capture(&first_of(Mix::Drops, netlat_common::kind::DROP));
    let (_, syn) = capture(&first_of(Mix::Mixed, netlat_common::kind::DROP));
    g.bench_function("ipv4_tcp_syn", |b| {
        b.iter(|| packet::decode(proto, black_box(&syn), VXLAN_PORTS));
    });
    g.bench_function("vxlan_inner_syn", |b| {
        b.iter(|| packet::decode(proto, black_box(&vxlan), VXLAN_PORTS));
    });
    g.finish();
}

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    for mix in [Mix::Connects, Mix::Drops, Mix::Mixed] {
        let mut engine = common::engine();
        let mut sink = common::sink();
        let mut synth = Synth::new(mix);
        g.bench_function(format!("event_{}", mix.name()), |b| {
            b.iter(|| engine.handle_bytes(synth.next_item(), &mut sink));
        });
    }
    g.finish();
}

criterion_group!(benches, event_decode, packet_decode, engine);
criterion_main!(benches);
