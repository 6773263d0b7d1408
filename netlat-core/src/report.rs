//! What the engine reports: the connect and drop lines (field names are a public contract), the
//! evidence sources and the run's totals, and [`Reports`], the port the engine reports through.
//! Printers and exporters in the shell implement the port; the nouns here know no printer.

use std::{
    collections::BTreeMap,
    io,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::{
    enrich::{CtInfo, DropRecord},
    flow::{Attempt, Direction, Outcome, TrackerStats, ns_to_ms},
    packet::Packet,
    pods::{PodAnswer, PodRef},
    verdict::{Judgement, Verdict},
};

/// Where the engine's reports go: one method per line it produces.
pub trait Reports {
    /// A slow connection attempt, judged.
    fn connect(&mut self, line: &ConnectReport) -> io::Result<()>;
    /// A drop judged on its own (no connect of ours will claim it).
    fn drop_line(&mut self, line: &DropReport) -> io::Result<()>;
    /// An attempt still waiting, with what is known so far. Its [`ConnectReport`] follows when
    /// it ends, so a sink that counts attempts (histograms) ignores these.
    fn retry(&mut self, _line: &RetryReport) -> io::Result<()> {
        Ok(())
    }
}

/// A borrowed port is a port (so a fan-out can hold `&mut dyn Reports`).
impl<R: Reports + ?Sized> Reports for &mut R {
    fn connect(&mut self, line: &ConnectReport) -> io::Result<()> {
        (**self).connect(line)
    }
    fn drop_line(&mut self, line: &DropReport) -> io::Result<()> {
        (**self).drop_line(line)
    }
    fn retry(&mut self, line: &RetryReport) -> io::Result<()> {
        (**self).retry(line)
    }
}

/// Converts kernel CLOCK_MONOTONIC timestamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// Wall-clock ns at monotonic 0.
    pub offset_ns: i128,
}

impl WallClock {
    pub fn to_system_time(&self, mono_ns: u64) -> SystemTime {
        let wall = (i128::from(mono_ns) + self.offset_ns).max(0);
        SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(wall).unwrap_or(u64::MAX))
    }

    pub fn rfc3339(&self, mono_ns: u64) -> String {
        humantime::format_rfc3339_millis(self.to_system_time(mono_ns)).to_string()
    }
}

/// One evidence source (hook) and whether it is active.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Hook {
    /// What the evidence is, e.g. "connect state changes".
    pub evidence: String,
    /// The hook that provides it, e.g. "tracepoint sock:inet_sock_set_state".
    pub hook: String,
    pub active: bool,
    /// Why it is inactive, or what it lacks.
    pub detail: String,
}

/// A drop in a connect line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnectDrop {
    pub reason: String,
    pub location: String,
    pub at_ms: f64,
    pub netns: u32,
    pub ifindex: u32,
    pub direction: Direction,
    pub via_vxlan: bool,
    /// Matched through conntrack: the dropped packet had been NATed from the connect's tuple.
    pub via_nat: bool,
    pub packet: Option<String>,
    /// The dropped packet's conntrack entry: pre-NAT tuple, NAT source, status.
    pub conntrack: Option<CtReport>,
    /// How many more times the same packet was dropped the same way (each retried SYN).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u32,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CtReport {
    pub original: String,
    pub nat_source: String,
    pub confirmed: bool,
    pub src_nat: bool,
}

/// The JSON line of a connection attempt (field names are a public contract).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename = "connect")]
pub struct ConnectReport {
    pub ts: String,
    pub netns: u32,
    pub pid: u32,
    pub comm: String,
    /// The pod (and container) that made the connect; absent when not in a pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// Why the pod could not be told (runtime down or slow); absent when it could.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_missing: Option<String>,
    pub src: String,
    pub dst: String,
    /// The pod on this node the connect reached (its destination after DNAT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_pod: Option<PodRef>,
    /// The Kubernetes Service `dst` belongs to (`namespace/name:port`), where the node knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub outcome: Outcome,
    pub connect_ms: f64,
    pub syn_retransmits: u32,
    /// The SYN was dropped here and still answered, yet the kernel reported no retransmit:
    /// at least one resend happened unseen (`syn_retransmits` counts only what was seen).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub syn_resent_unseen: bool,
    pub retransmit_at_ms: Vec<f64>,
    pub drops: Vec<ConnectDrop>,
    pub verdict: Option<Verdict>,
    /// The provisional verdict id the last progress line of this attempt showed ("none" when
    /// it showed none), when the final verdict differs from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict_changed_from: Option<String>,
}

/// Round to µs so JSON stays short and replays compare equal.
fn ms3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

impl ConnectReport {
    /// The line of attempt `a` as judged; the Service name is the node's to add.
    pub fn new(a: &Attempt, judged: &Judgement, clock: &WallClock) -> Self {
        ConnectReport {
            ts: clock.rfc3339(a.start_ns),
            netns: a.sock.netns,
            pid: a.tgid,
            comm: a.comm.clone(),
            pod: None,
            pod_missing: None,
            src: a.src.to_string(),
            dst: a.dst.to_string(),
            dst_pod: None,
            service: None,
            outcome: a.outcome,
            connect_ms: ms3(ns_to_ms(a.duration_ns())),
            syn_retransmits: u32::try_from(a.retransmits.len()).unwrap_or(u32::MAX),
            syn_resent_unseen: judged.syn_resent_unseen,
            retransmit_at_ms: a.retransmit_offsets_ms().into_iter().map(ms3).collect(),
            drops: a
                .drops
                .iter()
                .map(|d| ConnectDrop {
                    reason: d.drop.reason.to_string(),
                    location: d.drop.location.to_string(),
                    at_ms: ms3(ns_to_ms(d.drop.ts_ns.saturating_sub(a.start_ns))),
                    netns: d.drop.netns,
                    ifindex: d.drop.ifindex,
                    direction: d.direction,
                    via_vxlan: d.via_vxlan,
                    via_nat: d.via_nat,
                    repeats: d.repeats,
                    conntrack: d.drop.ct.as_deref().map(|ct| CtReport {
                        original: ct.orig.to_string(),
                        nat_source: ct.nat_source().to_string(),
                        confirmed: ct.confirmed(),
                        src_nat: ct.src_nat(),
                    }),
                    packet: d.drop.packet.as_ref().map(|p| match p.tcp_flags {
                        Some(f) => format!("{} [{f}]", p.tuple),
                        None => p.tuple.to_string(),
                    }),
                })
                .collect(),
            verdict: judged.verdict.clone(),
            verdict_changed_from: None,
        }
    }
}

/// The JSON line of an attempt still in SYN_SENT (`"type":"retry"`, a progress line): the
/// identity fields of its connect line (`ts` is the attempt's start, as there), how long it has
/// waited and the verdict the evidence so far supports. Field names are a public contract.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename = "retry")]
pub struct RetryReport {
    pub ts: String,
    pub netns: u32,
    pub pid: u32,
    pub comm: String,
    /// The pod (and container) waiting; absent when not in a pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_missing: Option<String>,
    pub src: String,
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// From the SYN to the event that prompted this line.
    pub waiting_ms: f64,
    pub syn_retransmits: u32,
    pub retransmit_at_ms: Vec<f64>,
    pub drops: Vec<ConnectDrop>,
    pub verdict: Option<Verdict>,
    /// Always true: the connect line at the attempt's end has the final verdict.
    pub provisional: bool,
    /// The verdict id this attempt's previous progress line showed, when this one differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict_changed_from: Option<String>,
    /// Progress lines (of any attempt) not printed since the last one, by the rate limit.
    #[serde(skip_serializing_if = "is_zero")]
    pub suppressed: u64,
}

impl RetryReport {
    /// The progress line of `line`, the connect line the attempt would get if it ended now.
    pub fn waiting(line: ConnectReport) -> Self {
        RetryReport {
            ts: line.ts,
            netns: line.netns,
            pid: line.pid,
            comm: line.comm,
            pod: line.pod,
            pod_missing: line.pod_missing,
            src: line.src,
            dst: line.dst,
            service: line.service,
            waiting_ms: line.connect_ms,
            syn_retransmits: line.syn_retransmits,
            retransmit_at_ms: line.retransmit_at_ms,
            drops: line.drops,
            verdict: line.verdict,
            provisional: true,
            verdict_changed_from: None,
            suppressed: 0,
        }
    }

    /// The verdict id shown, "none" without one.
    pub fn issue(&self) -> &'static str {
        self.verdict.as_ref().map_or("none", |v| v.issue)
    }
}

/// The JSON line of a drop judged on its own (e.g. the receiving node of a VXLAN flow).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename = "drop")]
pub struct DropReport {
    pub ts: String,
    pub netns: u32,
    /// The pod whose network namespace the drop happened in; absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_missing: Option<String>,
    pub ifindex: u32,
    pub cpu: u32,
    pub reason: String,
    pub location: String,
    pub packet: Option<String>,
    /// The inner flow of a VXLAN packet.
    pub inner: Option<String>,
    pub vni: Option<u32>,
    pub conntrack: Option<CtReport>,
    pub verdict: Verdict,
}

fn packet_text(p: &Packet) -> String {
    match p.tcp_flags {
        Some(f) => format!("{} [{f}]", p.tuple),
        None => p.tuple.to_string(),
    }
}

fn ct_json(ct: &CtInfo) -> CtReport {
    CtReport {
        original: ct.orig.to_string(),
        nat_source: ct.nat_source().to_string(),
        confirmed: ct.confirmed(),
        src_nat: ct.src_nat(),
    }
}

impl DropReport {
    pub fn new(d: &DropRecord, v: &Verdict, clock: &WallClock) -> Self {
        let vx = d.packet.as_ref().and_then(|p| p.vxlan.as_ref());
        DropReport {
            ts: clock.rfc3339(d.ts_ns),
            netns: d.netns,
            pod: None,
            pod_missing: None,
            ifindex: d.ifindex,
            cpu: d.cpu,
            reason: d.reason.to_string(),
            location: d.location.to_string(),
            packet: d.packet.as_ref().map(packet_text),
            inner: vx.and_then(|v| v.inner.as_deref()).map(packet_text),
            vni: vx.map(|v| v.vni),
            conntrack: d.ct.as_deref().map(ct_json),
            verdict: v.clone(),
        }
    }
}

/// Splits a pod answer into a line's `pod` and `pod_missing` fields.
pub fn pod_fields(a: PodAnswer) -> (Option<PodRef>, Option<String>) {
    match a {
        PodAnswer::Pod(p) => (Some(p), None),
        PodAnswer::NotAPod => (None, None),
        PodAnswer::Unknown(why) => (None, Some(why)),
    }
}

/// End-of-run (or periodic) totals.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(tag = "type", rename = "summary")]
pub struct Summary {
    pub duration_s: f64,
    pub attempts: u64,
    pub slow: u64,
    /// Reported attempts per verdict id ("none" when nothing fit): the slow ones, and the fast
    /// refusals reported because kube-proxy's REJECT caused them (`service-no-endpoints`).
    pub by_issue: BTreeMap<String, u64>,
    /// Drops reported on their own, per verdict id.
    pub drops_by_issue: BTreeMap<String, u64>,
    /// Events the kernel could not put in the ring buffer, per event kind.
    pub lost_events: BTreeMap<String, u64>,
    /// Ring-buffer items that did not decode.
    pub bad_events: u64,
    /// Runs of netlat's programs the kernel skipped (one was already running on that CPU),
    /// by program; only those with any. Their events reached no program.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped_runs: BTreeMap<String, u64>,
    /// Reported connects whose SYN resend the kernel never reported (`syn_resent_unseen`).
    #[serde(skip_serializing_if = "is_zero")]
    pub retransmits_unseen: u64,
    /// Progress lines (`"type":"retry"`) the rate limit kept from the output.
    #[serde(skip_serializing_if = "is_zero")]
    pub retry_lines_suppressed: u64,
    pub tracker: TrackerStats,
    /// Attempts still in SYN_SENT at the end.
    pub in_flight: u64,
    /// SYN retransmits the retransmit hook reported (every namespace, reported or not); shown
    /// in [`KernelCounts::netlat_saw_syn_retransmits`], next to what the kernel counted.
    #[serde(skip)]
    pub syn_retransmits_seen: u64,
    /// What the kernel itself counted in the same time (absent when not read: replays of
    /// older recordings). Set with [`Summary::set_kernel_counts`].
    #[serde(rename = "kernel_counters", skip_serializing_if = "Option::is_none")]
    pub kernel_counted: Option<KernelCounts>,
}

/// The kernel's own TCP counters over a run, summed over the network namespaces netlat read
/// (`/proc/net/netstat` and `/proc/net/snmp` of each): what happened whether or not a probe
/// saw it.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KernelCounts {
    /// `TcpExt: TCPSynRetrans`: SYNs re-sent by connecting sockets, and SYN-ACKs re-sent by
    /// listeners.
    pub syn_retransmits: u64,
    /// The SYN retransmits netlat's hook reported in the same run.
    #[serde(default)]
    pub netlat_saw_syn_retransmits: u64,
    /// `Tcp: RetransSegs`: every retransmitted segment.
    pub retrans_segs: u64,
    /// `TcpExt: TCPRetransFail`: retransmits the stack failed to send.
    pub retrans_fail: u64,
    /// `TcpExt: ListenOverflows` / `ListenDrops`: SYNs (and final ACKs) refused by listeners.
    pub listen_overflows: u64,
    pub listen_drops: u64,
    /// How many namespaces were read.
    pub namespaces: u64,
}

impl Summary {
    /// What the kernel counted, next to what netlat saw.
    pub fn set_kernel_counts(&mut self, k: Option<KernelCounts>) {
        self.kernel_counted = k.map(|k| KernelCounts {
            netlat_saw_syn_retransmits: self.syn_retransmits_seen,
            ..k
        });
    }

    /// SYN retransmits the kernel counted beyond what the hook reported (0 when unknown).
    pub fn syn_retransmits_unseen(&self) -> u64 {
        self.kernel_counted.map_or(0, |k| {
            k.syn_retransmits.saturating_sub(self.syn_retransmits_seen)
        })
    }
}

impl Summary {
    pub fn lost_total(&self) -> u64 {
        self.lost_events.values().sum()
    }
}
