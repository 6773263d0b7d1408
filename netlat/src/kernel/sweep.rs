//! The kernel's attempt table (`ATTEMPTS`) checked against the sockets themselves. A program
//! removes an entry when it sees its attempt end; an end no program saw (`node::tcp_table` says
//! how that happens) leaves the entry there until its socket's address connects again. At stop
//! `watch` keeps only the entries whose socket its namespace still shows in SYN_SENT
//! ([`still_waiting`]); while it runs, the [`Sweeper`] frees every [`SWEEP_EVERY`] the entries
//! older than [`MIN_AGE`] whose socket left SYN_SENT ([`stale`]), so a run of days does not fill
//! the table (131 072 entries) and end in `table_full`. Both count them as `kernel_end_missed`.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use netlat_common::{MAX_PENDING_ATTEMPTS, PendingAttempt};
use netlat_core::event::{self, Event, SockKey};
use tokio::task::JoinHandle;

use crate::{
    kernel::loader::{self, AttemptMap},
    node::{netns::NetnsIndex, tcp_table::SynSent},
};

/// How often a running `watch` sweeps the table. A missed end is rare (seen only on loaded
/// nodes), so the table fills over days, not seconds; a walk costs two syscalls an entry (a
/// fraction of a second with 100 k attempts in flight, on a blocking thread) and reads no
/// namespace while no entry is old. Twice a minute frees a slot at most `MIN_AGE` + 30 s after
/// its attempt started.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The sweep frees no entry younger than this: longer than a connect can stay in SYN_SENT with
/// the kernel's default ladder (`net.ipv4.tcp_syn_retries` 6: SYNs at 0, 1, 3, 7, 15, 31 and
/// 63 s, the connect fails at 127 s), with margin. A socket given more retries (the sysctl up to
/// 127 per namespace, `TCP_SYNCNT`, `TCP_USER_TIMEOUT`) is kept by its SYN_SENT state, not by
/// this age; the age keeps the sweep off an entry that a new connect on a reused socket address
/// put in place of a stale one while the sweep ran (its start is seconds old), whatever the
/// namespace's table said of the old socket.
pub const MIN_AGE: Duration = Duration::from_mins(3);

/// The most entries one walk reads. A key deleted between two steps of a walk restarts it from
/// the first bucket (`htab_map_get_next_key`), which a storm of fast connects can do again and
/// again; twice the table's size bounds the walk, and what it did not reach waits for the next.
const WALK_MAX: usize = 2 * MAX_PENDING_ATTEMPTS as usize;

/// The SYN_SENT sockets of a network namespace by inode; `None` when it cannot be read (its
/// entries are then taken as still waiting).
pub trait SynSentOf {
    fn syn_sent(&mut self, netns: u32) -> Option<&SynSent>;
}

/// Each namespace's `/proc/net/tcp{,6}`, read once, on the first entry that asks for it.
#[derive(Debug, Default)]
pub struct NamespaceTables {
    index: NetnsIndex,
    read: HashMap<u32, Option<SynSent>>,
}

impl SynSentOf for NamespaceTables {
    fn syn_sent(&mut self, netns: u32) -> Option<&SynSent> {
        let Self { index, read } = self;
        read.entry(netns)
            .or_insert_with(|| match index.path(netns) {
                // The namespace is gone, and every socket of it with it.
                None => Some(SynSent::default()),
                Some(path) => SynSent::read_in(&path)
                    .inspect_err(|e| {
                        tracing::warn!(
                            "reading the TCP sockets of netns {netns}: {e}; its attempts still in \
                             the kernel's table are taken as waiting"
                        );
                    })
                    .ok(),
            })
            .as_ref()
    }
}

/// Whether the socket of table entry `skaddr` is in SYN_SENT by `ns`, its namespace's sockets
/// (`None`: not known, taken as waiting).
fn waits(skaddr: u64, a: &PendingAttempt, ns: Option<&SynSent>) -> bool {
    let Some(ns) = ns else {
        return true;
    };
    let start = loader::pending_start(skaddr, a);
    match event::decode(event::bytes_of(&start)) {
        Ok(Event::SockState(s)) => ns.holds(s.src, s.dst),
        _ => true,
    }
}

/// The entries of the kernel's attempt table whose socket is still in SYN_SENT, and the
/// addresses of those that are not: the programs never saw their end, so they are neither
/// pending nor waiting. An entry whose namespace cannot be read is kept.
pub fn still_waiting(
    table: Vec<(u64, PendingAttempt)>,
    ns: &mut impl SynSentOf,
) -> (Vec<(u64, PendingAttempt)>, Vec<u64>) {
    let mut missed = Vec::new();
    let live = table
        .into_iter()
        .filter(|(skaddr, a)| {
            let waiting = waits(*skaddr, a, ns.syn_sent(a.netns));
            if !waiting {
                missed.push(*skaddr);
            }
            waiting
        })
        .collect();
    (live, missed)
}

/// The entries of `table` a sweep at monotonic `now_ns` frees, as (socket address, start): at
/// least `min_age_ns` old and out of SYN_SENT by their namespace's sockets. Only the namespaces
/// of entries that old are read (usually none), and only those entries are kept in memory.
pub fn stale(
    table: impl IntoIterator<Item = (u64, PendingAttempt)>,
    now_ns: u64,
    min_age_ns: u64,
    ns: &mut impl SynSentOf,
) -> Vec<Stale> {
    table
        .into_iter()
        .filter(|(_, a)| now_ns.saturating_sub(a.start_ns) >= min_age_ns)
        .filter(|(skaddr, a)| !waits(*skaddr, a, ns.syn_sent(a.netns)))
        .map(|(skaddr, a)| (skaddr, a.start_ns))
        .collect()
}

/// An entry found stale: its socket address and start.
type Stale = (u64, u64);

/// The [`stale`] entries of `map` at monotonic `now_ns` (the walk and the namespaces' reads,
/// on a blocking thread).
fn find_stale(map: &AttemptMap, min_age_ns: u64, now_ns: u64) -> Vec<Stale> {
    stale(
        map.iter().filter_map(Result::ok).take(WALK_MAX),
        now_ns,
        min_age_ns,
        &mut NamespaceTables::default(),
    )
}

/// Free the `stale` entries (socket address, start) of `map`; their sockets.
///
/// Why a socket seen out of SYN_SENT is safe to free, and what could go wrong:
/// - The tracepoint fires inside `tcp_set_state` before `inet_sk_state_store`: a socket that
///   `/proc/net/tcp` shows out of SYN_SENT has already run (or skipped) the end program, so an
///   entry of it still in the table was missed, not about to be removed. A namespace's sockets
///   may be read before a later entry of it is: that entry was already in the table then (or is
///   younger than the sweep, and so than [`MIN_AGE`]), so the same holds.
/// - A socket address freed and reused by a new connect replaces its entry (flagged `REPLACED`)
///   with the new attempt's start. Each entry is read again just before its delete and freed
///   only if its start is still the old one judged stale, so a new attempt's entry is never
///   freed on the old socket's state. One window stays: a replacement between that read and the
///   delete, two syscalls apart, which needs the address freed and connected again in those
///   microseconds; that attempt's end then finds no entry and ships alone (`unknown_socket`).
///   Closing it needs a compare-and-delete that the bpf(2) map commands do not offer.
/// - This runs on the event loop, with the engine told at once ([`Sweeper::done`]): no ring
///   record is handled between the check of an entry's start and the engine forgetting the
///   socket's attempt, so the attempt forgotten is the freed entry's, never a newer one of a
///   reused address (that one would have replaced the entry first).
fn free(map: &mut AttemptMap, stale: Vec<Stale>) -> HashSet<SockKey> {
    stale
        .into_iter()
        .filter_map(|(skaddr, start)| {
            // Gone meanwhile: its end was seen after all, or a new connect replaced it.
            let a = map.get(&skaddr, 0).ok().filter(|a| a.start_ns == start)?;
            map.remove(&skaddr).ok()?;
            Some(SockKey {
                netns: a.netns,
                skaddr,
            })
        })
        .collect()
}

/// The periodic sweep of a running `watch`: its own handle on the table, and the sweep in
/// flight on a blocking thread (the walk and the namespaces' reads never hold up the ring; the
/// few deletes are made on the event loop).
pub struct Sweeper {
    /// `None` while a sweep holds it, or when the table cannot be opened.
    map: Option<AttemptMap>,
    /// The walk in flight: it gives the table back with the stale entries found.
    job: Option<JoinHandle<(AttemptMap, Vec<Stale>)>>,
    /// Entries freed so far: the run's `kernel_end_missed`, with those found at stop.
    pub freed: u64,
}

impl Sweeper {
    /// A sweeper of `ebpf`'s table (one that does nothing if the object has none).
    pub fn new(ebpf: &aya::Ebpf) -> Self {
        let map = loader::attempt_map(ebpf)
            .inspect_err(|e| {
                tracing::warn!(
                    "opening the kernel's attempt table for its sweep: {e}; entries whose end was \
                     missed are freed only at stop"
                );
            })
            .ok()
            .flatten();
        Sweeper {
            map,
            job: None,
            freed: 0,
        }
    }

    /// Start a sweep at monotonic `now_ns`, unless one is running.
    pub fn start(&mut self, now_ns: u64) {
        if self.job.is_some() {
            return;
        }
        let Some(map) = self.map.take() else {
            return;
        };
        let min_age_ns = u64::try_from(MIN_AGE.as_nanos()).unwrap_or(u64::MAX);
        self.job = Some(tokio::task::spawn_blocking(move || {
            let stale = find_stale(&map, min_age_ns, now_ns);
            (map, stale)
        }));
    }

    /// Whether a sweep is running.
    pub fn running(&self) -> bool {
        self.job.is_some()
    }

    /// The end of the sweep in flight: the stale entries it found are freed, and their sockets
    /// returned, for the engine to forget before it handles another record (never completes
    /// while no sweep runs). Cancel-safe: dropped before the end, the sweep stays in flight.
    pub async fn done(&mut self) -> HashSet<SockKey> {
        let Some(job) = self.job.as_mut() else {
            return std::future::pending().await;
        };
        let res = job.await;
        self.job = None;
        match res {
            Ok((mut map, stale)) => {
                let freed = free(&mut map, stale);
                self.map = Some(map);
                self.freed += freed.len() as u64;
                freed
            }
            Err(e) => {
                tracing::warn!(
                    "the kernel attempt table's sweep failed: {e}; entries whose end was missed \
                     are freed only at stop"
                );
                HashSet::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use netlat_core::testkit::v4;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn entry(netns: u32, start_ns: u64, sport: u16) -> PendingAttempt {
        PendingAttempt {
            start_ns,
            netns,
            addrs: v4(sport, 8080, [10, 0, 0, 1], [10, 0, 0, 2]),
            ..PendingAttempt::default()
        }
    }

    /// Synthetic namespaces' SYN_SENT sockets; one not listed cannot be read.
    struct Tables(HashMap<u32, SynSent>);

    impl SynSentOf for Tables {
        fn syn_sent(&mut self, netns: u32) -> Option<&SynSent> {
            self.0.get(&netns)
        }
    }

    /// Namespace 1 has a socket 10.0.0.1:40000 → 10.0.0.2:8080 in SYN_SENT; namespace 2 none;
    /// namespace 3 cannot be read.
    fn namespaces() -> Tables {
        let mut one = SynSent::default();
        one.parse(
            "  sl  local_address rem_address   st\n   0: 0100000A:9C40 0200000A:1F90 02\n",
            false,
        );
        Tables(HashMap::from([(1, one), (2, SynSent::default())]))
    }

    #[test]
    fn only_old_entries_out_of_syn_sent_are_stale() {
        let now = 1000 * S;
        let min_age = 180 * S;
        let table = vec![
            // Old, its socket still waits (a long ladder): kept.
            (0xa, entry(1, now - 600 * S, 40000)),
            // Old, out of SYN_SENT: freed; so with no source port known yet (matched by
            // address: none of namespace 2's sockets waits).
            (0xb, entry(2, now - 181 * S, 40002)),
            (0xc, entry(2, now - 180 * S, 0)),
            // Out of SYN_SENT but younger than the safe age (a reused address's new attempt):
            // kept.
            (0xd, entry(2, now - 179 * S, 40004)),
            (0xe, entry(2, now + S, 40006)),
            // Old, but its namespace cannot be read: kept.
            (0xf, entry(3, now - 600 * S, 40008)),
            // Old, no port known, and a socket to the same destination waits: kept.
            (0x10, entry(1, now - 600 * S, 0)),
        ];
        let mut ns = namespaces();
        let freed = stale(table.iter().copied(), now, min_age, &mut ns);
        assert_eq!(freed, vec![(0xb, now - 181 * S), (0xc, now - 180 * S)]);
        // The same table at stop (no age): every entry out of SYN_SENT is missed.
        let (live, missed) = still_waiting(table, &mut ns);
        assert_eq!(missed, vec![0xb, 0xc, 0xd, 0xe]);
        let live: Vec<u64> = live.iter().map(|(k, _)| *k).collect();
        assert_eq!(live, vec![0xa, 0xf, 0x10]);
    }

    #[test]
    fn namespaces_of_young_entries_are_not_read() {
        struct Count(u32);
        impl SynSentOf for Count {
            fn syn_sent(&mut self, _: u32) -> Option<&SynSent> {
                self.0 += 1;
                None
            }
        }
        let mut reads = Count(0);
        let table = (0..100u64).map(|k| (k, entry(2, 900 * S, 40000)));
        assert!(stale(table, 1000 * S, 180 * S, &mut reads).is_empty());
        assert_eq!(reads.0, 0);
    }
}
