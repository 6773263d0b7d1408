//! Attribution: the known-issue catalog as data, and the engine that matches a finished
//! connection attempt against it.
//!
//! Each catalog entry lists the signals it *requires* (all must be present to name it) and the
//! signals that *support* it (they raise confidence; absent ones are reported as missing). The
//! first entry whose requirements hold wins, so specific entries come before generic ones.

use serde::Serialize;

use crate::flow::{Attempt, Direction, MatchedDrop, ns_to_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// The attribution of one slow attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub issue: &'static str,
    pub title: &'static str,
    pub confidence: Confidence,
    /// What was seen that fits.
    pub evidence: Vec<String>,
    /// What would have raised confidence but was not seen.
    pub missing: Vec<String>,
    pub remedy: &'static str,
}

/// One observable fact an entry can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// At least one SYN was retransmitted.
    SynRetransmitted,
    /// No SYN was retransmitted (the delay is elsewhere in the handshake).
    NoSynRetransmit,
    /// A drop of this attempt's packets on this node, with one of these reasons.
    DropReason(&'static [&'static str]),
    /// No drop of this attempt's packets was seen on this node.
    NoLocalDrop,
    /// Every SYN retransmit is preceded by a matched drop of the SYN.
    EveryRetryHasDrop,
    /// The handshake completed.
    Established,
}

/// A catalog entry.
#[derive(Debug)]
pub struct Entry {
    pub id: &'static str,
    pub title: &'static str,
    pub requires: &'static [Signal],
    pub supports: &'static [Signal],
    pub remedy: &'static str,
    pub references: &'static [&'static str],
}

/// The catalog, most specific first.
pub static CATALOG: &[Entry] = &[
    Entry {
        id: "netfilter-drop",
        title: "a netfilter hook on this node dropped the SYN; the client re-sent it after its RTO",
        requires: &[
            Signal::SynRetransmitted,
            Signal::DropReason(&["NETFILTER_DROP"]),
        ],
        supports: &[Signal::EveryRetryHasDrop],
        remedy: "find the hook that returned NF_DROP: a firewall rule (nft list ruleset / \
                 iptables-save), a conntrack insert failure (conntrack -S: insert_failed), or IPVS",
        references: &[],
    },
    Entry {
        id: "unanswered-syn",
        title: "the SYN was retransmitted and no drop was seen on this node",
        requires: &[Signal::SynRetransmitted, Signal::NoLocalDrop],
        supports: &[],
        remedy: "the SYN or SYN-ACK was lost beyond this node: check the peer node (run netlat \
                 there), the path, and the server's listen backlog",
        references: &[],
    },
    Entry {
        id: "slow-handshake",
        title: "the SYN-ACK came late without any SYN retransmit",
        requires: &[Signal::NoSynRetransmit, Signal::Established],
        supports: &[],
        remedy: "the peer answered slowly: check server load and the network RTT",
        references: &[],
    },
];

/// The context an attempt is judged in.
pub struct Judge<'a> {
    pub attempt: &'a Attempt,
}

impl Judge<'_> {
    fn forward_drops(&self) -> impl Iterator<Item = &MatchedDrop> {
        self.attempt
            .drops
            .iter()
            .filter(|d| d.direction == Direction::Forward)
    }

    fn describe_drop(&self, d: &MatchedDrop) -> String {
        let at = ns_to_ms(d.drop.ts_ns.saturating_sub(self.attempt.start_ns));
        format!(
            "{} drop at {} in netns {} {:.1} ms after connect{}",
            d.drop.reason,
            d.drop.location,
            d.drop.netns,
            at,
            if d.via_vxlan {
                " (inner VXLAN flow)"
            } else {
                ""
            }
        )
    }

    /// Whether `s` holds, with a sentence saying what was seen (or what is missing).
    fn eval(&self, s: Signal) -> (bool, String) {
        let a = self.attempt;
        match s {
            Signal::SynRetransmitted => (
                !a.retransmits.is_empty(),
                format!(
                    "{} SYN retransmit(s) at {:?} ms",
                    a.retransmits.len(),
                    a.retransmit_offsets_ms()
                        .iter()
                        .map(|m| m.round() as i64)
                        .collect::<Vec<_>>()
                ),
            ),
            Signal::NoSynRetransmit => (a.retransmits.is_empty(), "no SYN retransmit".into()),
            Signal::DropReason(reasons) => {
                match self
                    .forward_drops()
                    .find(|d| reasons.contains(&d.drop.reason.as_str()))
                {
                    Some(d) => (true, self.describe_drop(d)),
                    None => (false, format!("a {} drop of the SYN", reasons.join("/"))),
                }
            }
            Signal::Established => (
                a.outcome == crate::flow::Outcome::Established,
                "the handshake completed".into(),
            ),
            Signal::NoLocalDrop => (a.drops.is_empty(), "no drop seen on this node".into()),
            Signal::EveryRetryHasDrop => {
                let n = self.forward_drops().count();
                (
                    n >= a.retransmits.len() && n > 0,
                    format!(
                        "{n} dropped SYN(s) for {} retransmit(s)",
                        a.retransmits.len()
                    ),
                )
            }
        }
    }

    /// Match the attempt against the catalog.
    pub fn verdict(&self) -> Option<Verdict> {
        CATALOG.iter().find_map(|e| self.try_entry(e))
    }

    fn try_entry(&self, e: &Entry) -> Option<Verdict> {
        let mut evidence = Vec::new();
        for s in e.requires {
            let (ok, text) = self.eval(*s);
            if !ok {
                return None;
            }
            evidence.push(text);
        }
        let mut missing = Vec::new();
        let mut held = 0;
        for s in e.supports {
            let (ok, text) = self.eval(*s);
            if ok {
                held += 1;
                evidence.push(text);
            } else {
                missing.push(text);
            }
        }
        let confidence = if e.supports.is_empty() {
            Confidence::Low
        } else if held == e.supports.len() {
            Confidence::High
        } else {
            Confidence::Medium
        };
        Some(Verdict {
            issue: e.id,
            title: e.title,
            confidence,
            evidence,
            missing,
            remedy: e.remedy,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::{
        event::SockKey,
        flow::Outcome,
        packet::{FiveTuple, Packet, TcpFlags},
        symbols::DropRecord,
    };

    const S: u64 = 1_000_000_000;

    fn attempt(retx: &[u64], drops: &[(&str, Direction)]) -> Attempt {
        let src: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.2:80".parse().unwrap();
        Attempt {
            sock: SockKey {
                netns: 1,
                skaddr: 1,
            },
            tgid: 1,
            comm: "c".into(),
            src,
            dst,
            start_ns: 0,
            end_ns: retx.last().copied().unwrap_or(S / 2) + 1000,
            outcome: Outcome::Established,
            retransmits: retx.to_vec(),
            drops: drops
                .iter()
                .map(|(r, dir)| MatchedDrop {
                    drop: DropRecord {
                        ts_ns: 1000,
                        cpu: 0,
                        netns: 2,
                        ifindex: 2,
                        reason: r.to_string(),
                        location: "nft_do_chain+0x46f".into(),
                        len: 60,
                        packet: Some(Packet {
                            tuple: FiveTuple { proto: 6, src, dst },
                            tcp_flags: Some(TcpFlags(2)),
                            udp_checksum: None,
                            vxlan: None,
                        }),
                        ct: None,
                    },
                    direction: *dir,
                    via_vxlan: false,
                    via_nat: false,
                })
                .collect(),
            cpu: 0,
        }
    }

    #[test]
    fn netfilter_drop_with_one_drop_per_retry_is_high() {
        let a = attempt(&[S], &[("NETFILTER_DROP", Direction::Forward)]);
        let v = Judge { attempt: &a }.verdict().unwrap();
        assert_eq!(v.issue, "netfilter-drop");
        assert_eq!(v.confidence, Confidence::High);
        assert!(v.evidence.iter().any(|e| e.contains("nft_do_chain")));
    }

    #[test]
    fn netfilter_drop_explaining_only_some_retries_is_medium() {
        let a = attempt(&[S, 3 * S], &[("NETFILTER_DROP", Direction::Forward)]);
        let v = Judge { attempt: &a }.verdict().unwrap();
        assert_eq!(v.issue, "netfilter-drop");
        assert_eq!(v.confidence, Confidence::Medium);
        assert_eq!(v.missing.len(), 1);
    }

    #[test]
    fn retries_without_drops_are_unanswered() {
        let a = attempt(&[S], &[]);
        let v = Judge { attempt: &a }.verdict().unwrap();
        assert_eq!(v.issue, "unanswered-syn");
        assert_eq!(v.confidence, Confidence::Low);
    }

    #[test]
    fn other_drop_reasons_are_not_netfilter() {
        // A reply-direction or other-reason drop is neither netfilter-drop nor "no drop".
        let a = attempt(&[S], &[("TCP_CSUM", Direction::Forward)]);
        assert_eq!(Judge { attempt: &a }.verdict(), None);
        let a = attempt(&[S], &[("NETFILTER_DROP", Direction::Reply)]);
        assert_eq!(Judge { attempt: &a }.verdict(), None);
    }

    #[test]
    fn slow_without_retry() {
        let a = attempt(&[], &[]);
        assert_eq!(
            Judge { attempt: &a }.verdict().unwrap().issue,
            "slow-handshake"
        );
    }
}
