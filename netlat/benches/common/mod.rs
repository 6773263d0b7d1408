//! Synthetic ring-buffer streams for the benchmarks: the bytes the eBPF programs would write
//! (`netlat_common` wire structs, built with `netlat_core::testkit`, the kit the engine's tests
//! use), generated on the fly into reused buffers so a stream of 10 M events needs no memory of
//! its own.
//!
//! Three mixes:
//! - [`Mix::Connects`]: a connect storm, every attempt fast (CLOSE→SYN_SENT with source port 0,
//!   as the kernel reports it before the port is picked, then SYN_SENT→ESTABLISHED), 64
//!   attempts in flight;
//! - [`Mix::Drops`]: a drop storm, `NETFILTER_DROP` of UDP/4789 VXLAN packets carrying a TCP
//!   SYN (the deepest decode: outer IPv4/UDP, VXLAN, inner Ethernet/IPv4/TCP), never matched;
//! - [`Mix::Mixed`]: per 100 attempts 97 fast connects, 3 slow ones (the first SYN dropped at
//!   `nft_do_chain`, one retransmit, established after 1 s: reported as a JSON line with a
//!   verdict) and 10 VXLAN drops.

// Not `expect`: one bench uses every part, the others only some.
#![allow(dead_code, reason = "each bench uses a different part of the kit")]

use std::io;

use netlat::output::JsonPrinter;
use netlat_common::{DropEvent, EventHeader, RetransmitEvent, SockStateEvent, kind};
use netlat_core::testkit::{CLIENT, SERVER, ipv4, put, tcp_syn, v4};
use netlat_core::{
    engine::{Engine, EngineConfig, NoCounters, NoNatLookup},
    enrich::{Kallsyms, Names},
    flow::TrackerConfig,
    report::WallClock,
};

/// Drop reasons as numbered on the 6.18 kernel this was written on.
pub const NETFILTER_DROP: u32 = 12;
/// Address of `nft_do_chain` in the synthetic symbol table.
pub const NFT_DO_CHAIN: u64 = 0xffff_ffff_81a0_0000;
/// Where every synthetic drop happens.
pub const DROP_LOCATION: u64 = NFT_DO_CHAIN + 0x46f;

const MS: u64 = 1_000_000;

/// Which events a [`Synth`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    Connects,
    Drops,
    Mixed,
}

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Mix::Connects => "connects",
            Mix::Drops => "drops",
            Mix::Mixed => "mixed",
        }
    }
}

/// Attempts in flight in the connect mixes.
const IN_FLIGHT: u64 = 64;

/// Whether attempt `n` of [`Mix::Mixed`] is a slow one.
fn is_slow(n: u64) -> bool {
    matches!(n % 100, 7 | 41 | 73)
}

/// A deterministic generator of ring-buffer items.
pub struct Synth {
    mix: Mix,
    /// Stream clock, CLOCK_MONOTONIC ns.
    ts: u64,
    /// Next attempt number.
    attempt: u64,
    /// Reused item buffers; `pool[..len]` holds the items of the current step.
    pool: Vec<Vec<u8>>,
    len: usize,
    /// Next item of the current step to hand out.
    pos: usize,
    /// Items handed out so far.
    pub emitted: u64,
}

impl Synth {
    pub fn new(mix: Mix) -> Synth {
        Synth {
            mix,
            ts: 1_000_000 * MS,
            attempt: 0,
            pool: Vec::new(),
            len: 0,
            pos: 0,
            emitted: 0,
        }
    }

    /// The next ring-buffer item.
    pub fn next_item(&mut self) -> &[u8] {
        if self.pos >= self.len {
            self.len = 0;
            self.pos = 0;
            self.refill();
        }
        self.pos += 1;
        self.emitted += 1;
        &self.pool[self.pos - 1]
    }

    fn skaddr(n: u64) -> u64 {
        // Sockets come from a slab: addresses recur once their attempt is over.
        0xffff_8880_1000_0000 + (n % 4096) * 0x900
    }

    fn sport(n: u64) -> u16 {
        1024 + (n % 60_000) as u16
    }

    fn state(buf: &mut Vec<u8>, ts: u64, n: u64, old: u32, new: u32, sport: u16) {
        put(
            buf,
            &SockStateEvent {
                header: EventHeader {
                    kind: kind::SOCK_STATE,
                    cpu: (n % 2) as u32,
                    ts_ns: ts,
                },
                skaddr: Synth::skaddr(n),
                netns: 4026531840,
                tgid: 4242,
                oldstate: old,
                newstate: new,
                addrs: v4(sport, 8080, CLIENT, SERVER),
                comm: *b"load\0\0\0\0\0\0\0\0\0\0\0\0",
                start_ns: 0,
                flags: 0,
                _pad: 0,
            },
        );
    }

    fn retransmit(buf: &mut Vec<u8>, ts: u64, n: u64) {
        put(
            buf,
            &RetransmitEvent {
                header: EventHeader {
                    kind: kind::RETRANSMIT,
                    cpu: 0,
                    ts_ns: ts,
                },
                skaddr: Synth::skaddr(n),
                netns: 4026531840,
                state: 2,
                addrs: v4(Synth::sport(n), 8080, CLIENT, SERVER),
                start_ns: 0,
            },
        );
    }

    /// The first SYN of attempt `n`, dropped by an nftables rule in the server's namespace.
    fn syn_drop(buf: &mut Vec<u8>, ts: u64, n: u64) {
        let mut d = DropEvent {
            header: EventHeader {
                kind: kind::DROP,
                cpu: 1,
                ts_ns: ts,
            },
            skbaddr: 0xffff_8880_2000_0000 + (n % 1024) * 0x100,
            location: DROP_LOCATION,
            netns: 4026532000,
            ifindex: 2,
            reason: NETFILTER_DROP,
            len: 60,
            protocol: 0x0800,
            cap_len: 60,
            ..DropEvent::default()
        };
        ipv4(&mut d.data, 6, 60, CLIENT, SERVER);
        tcp_syn(&mut d.data[20..], Synth::sport(n), 8080);
        put(buf, &d);
    }

    /// A VXLAN packet (UDP/4789) carrying a TCP SYN, dropped by an nftables rule.
    fn vxlan_drop(buf: &mut Vec<u8>, ts: u64, n: u64) {
        let mut d = DropEvent {
            header: EventHeader {
                kind: kind::DROP,
                cpu: (n % 2) as u32,
                ts_ns: ts,
            },
            skbaddr: 0xffff_8880_3000_0000 + (n % 1024) * 0x100,
            location: DROP_LOCATION,
            netns: 4026532001,
            ifindex: 2,
            reason: NETFILTER_DROP,
            len: 90,
            protocol: 0x0800,
            cap_len: 160,
            ..DropEvent::default()
        };
        let p = &mut d.data;
        ipv4(p, 17, 90, [10, 232, 0, 1], [10, 232, 0, 2]);
        // UDP: the source port varies like a VXLAN flow hash; destination 4789.
        p[20..22].copy_from_slice(&(32768 + (n % 16384) as u16).to_be_bytes());
        p[22..24].copy_from_slice(&4789u16.to_be_bytes());
        p[24..26].copy_from_slice(&70u16.to_be_bytes());
        p[26..28].copy_from_slice(&0x1234u16.to_be_bytes());
        // VXLAN: flags I, VNI 4096.
        p[28..36].copy_from_slice(&[0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0]);
        // Inner Ethernet, IPv4, TCP SYN.
        p[36..50].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        ipv4(&mut p[50..], 6, 40, [10, 99, 0, 1], [10, 99, 0, 2]);
        tcp_syn(&mut p[70..], Synth::sport(n), 8080);
        put(buf, &d);
    }

    /// A fresh buffer for one more item of the current step.
    fn item(&mut self) -> &mut Vec<u8> {
        if self.pool.len() <= self.len {
            self.pool.push(Vec::with_capacity(320));
        }
        let b = &mut self.pool[self.len];
        b.clear();
        self.len += 1;
        b
    }

    /// Queue the items of the next step of the stream.
    fn refill(&mut self) {
        let n = self.attempt;
        self.attempt += 1;
        match self.mix {
            Mix::Drops => {
                self.ts += 2_000;
                let ts = self.ts;
                Synth::vxlan_drop(self.item(), ts, n);
            }
            Mix::Connects => self.fast_step(n),
            Mix::Mixed if is_slow(n) => {
                // A slow attempt: its events span 1 s of stream time but are emitted together.
                self.ts += 10_000;
                let t = self.ts;
                Synth::state(self.item(), t, n, 7, 2, 0);
                Synth::syn_drop(self.item(), t + 300_000, n);
                Synth::retransmit(self.item(), t + 1_010 * MS, n);
                Synth::state(
                    self.item(),
                    t + 1_010 * MS + 80_000,
                    n,
                    2,
                    1,
                    Synth::sport(n),
                );
            }
            Mix::Mixed => {
                self.fast_step(n);
                if n % 10 == 5 {
                    let t = self.ts + 5_000;
                    Synth::vxlan_drop(self.item(), t, n);
                }
            }
        }
    }

    /// Start attempt `n` and finish attempt `n - IN_FLIGHT`.
    fn fast_step(&mut self, n: u64) {
        self.ts += 10_000;
        let t = self.ts;
        Synth::state(self.item(), t, n, 7, 2, 0);
        if let Some(old) = n.checked_sub(IN_FLIGHT)
            && !(self.mix == Mix::Mixed && is_slow(old))
        {
            Synth::state(self.item(), t + 5_000, old, 2, 1, Synth::sport(old));
        }
    }
}

/// A symbol table the size of a real kernel's (~100 k text symbols), with `nft_do_chain`.
pub fn kallsyms() -> Kallsyms {
    let mut text = String::with_capacity(100_000 * 40);
    for i in 0..100_000u64 {
        let addr = 0xffff_ffff_8100_0000 + i * 0x100;
        if addr == NFT_DO_CHAIN {
            text.push_str(&format!("{addr:016x} t nft_do_chain\n"));
        } else {
            text.push_str(&format!("{addr:016x} t kernel_fn_{i}\n"));
        }
    }
    Kallsyms::parse(&text)
}

/// Drop-reason names as numbered on 6.18.
pub fn reasons() -> Vec<(u64, String)> {
    [
        (2, "NOT_SPECIFIED"),
        (3, "NO_SOCKET"),
        (11, "UDP_CSUM"),
        (12, "NETFILTER_DROP"),
    ]
    .into_iter()
    .map(|(n, r)| (n, r.to_string()))
    .collect()
}

/// An engine as `watch` builds it, without the live node: no facts, counters or NAT lookups.
pub fn engine() -> Engine {
    let mut names = Names::default();
    names.reasons.extend(reasons());
    names.kallsyms = kallsyms();
    Engine::new(
        EngineConfig {
            threshold_ns: 200 * MS,
            clock: WallClock { offset_ns: 0 },
            has_reasons: true,
            tracker: TrackerConfig::default(),
        },
        names,
        Box::new(netlat_core::verdict::NoFacts),
        Box::new(NoCounters),
        Box::new(NoNatLookup),
    )
}

/// The JSON-lines printer writing to nowhere, as `watch --output json > /dev/null`.
pub fn sink() -> JsonPrinter<io::Sink> {
    JsonPrinter::new(io::sink())
}
