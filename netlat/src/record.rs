//! Recordings: the raw kernel events of a `watch` run plus every answer the live shell gave the
//! engine (resolved kernel symbols, conntrack counters, NAT lookups, node facts), so that
//! `netlat replay FILE` reproduces the same lines, verdicts and summary with no kernel and no
//! privileges. A bug report is a recording.
//!
//! Format (version 2), little-endian:
//! `b"NETLATR\0"`, `u16` version, `u32` header length, header (JSON), then records:
//! `u8` tag, `u32` payload length, payload. Ring-buffer items are stored raw (the hot path);
//! the rare annotations as JSON. Annotations produced while the engine handled an item follow
//! that item, so a reader applies them before handing the item over.
//!
//! Version 2 added the `Service` note (the Service name answered for a slow connect). Version 1
//! files have none and still replay: their lines carry no Service, as when they were recorded.
//! Version 3 added the `Pod` and `PodByIp` notes (the pod names of a line), `NoEndpoint` and
//! `IpvsUnnamed` (kube-proxy's no-endpoint rules, IPVS destinations without names), `Listen` (a
//! listener's refusal counters, for `listen-overflow`), `EndsLost`, `NodeDnat` (whether the
//! node's conntrack was asked about a pod's connect), and the kernel's TCP and attempt-table
//! counters in `End`; older files replay without them. Older netlat refuses newer
//! files by their version rather than at the first new note.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap, VecDeque},
    fs::File,
    io::{self, BufWriter, Read, Write},
    net::{IpAddr, SocketAddr},
    path::Path,
    rc::Rc,
};

use netlat_common::{ABI_VERSION, OLDEST_ABI_VERSION};
use netlat_core::{
    engine::{Counters, NatLookup, NatWhere},
    enrich::{CounterEvidence, CtTupleLayout},
    event::SockKey,
    facts::ListenEvidence,
    packet::FiveTuple,
    pods::{PodAnswer, PodRef, PodView},
    report::{Hook, KernelCounts},
    verdict::{NoEndpointRule, NodeView},
};
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"NETLATR\0";
pub const VERSION: u16 = 3;
/// The oldest version this netlat still reads.
pub const OLDEST_VERSION: u16 = 1;
/// Largest record payload accepted; a larger length means a corrupt file.
const MAX_PAYLOAD: u32 = 64 << 20;
/// The replay reader's buffer (and its largest read): 8 times std's default, and still within the
/// L2 cache (1 MiB cost more system time than it saved: the copy left the cache before it was
/// read).
const READ_BUFFER: usize = 64 * 1024;

const TAG_ITEM: u8 = 1;
const TAG_NOTE: u8 = 2;

/// Facts about the recording run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    /// The kernel-event wire format of the recorded items ([`ABI_VERSION`]); recordings made
    /// before it was written carry version 1, the format they were made with.
    #[serde(default = "first_abi")]
    pub abi_version: u32,
    pub kernel: String,
    pub has_reasons: bool,
    pub reasons: BTreeMap<u64, String>,
    pub ct_tuple: Option<CtTupleLayout>,
    /// Wall-clock ns at monotonic 0 during the recording.
    pub clock_offset_ns: i128,
    pub threshold_ns: u64,
    pub hooks: Vec<Hook>,
}

fn first_abi() -> u32 {
    1
}

/// An answer the live shell gave, in the order the engine asked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Note {
    /// How a kernel text address resolved.
    Symbol {
        addr: u64,
        location: String,
    },
    Counters {
        netns: u32,
        cpu: u32,
        answer: Option<CounterEvidence>,
    },
    /// A synchronous NAT lookup's answer (recordings before lookups moved off the loop).
    Nat {
        netns: u32,
        tuple: FiveTuple,
        answer: Option<FiveTuple>,
    },
    /// NAT answers collected while the engine handled the item this note follows.
    NatAnswers {
        answers: Vec<(SockKey, FiveTuple)>,
    },
    Masquerade {
        netns: u32,
        answer: Option<(usize, usize)>,
    },
    Vxlan {
        netns: u32,
        answer: Option<Vec<String>>,
    },
    UdpTimeout {
        netns: u32,
        answer: Option<u64>,
    },
    /// The Kubernetes Service of a slow connect's destination (version 2).
    Service {
        netns: u32,
        dst: SocketAddr,
        answer: Option<String>,
    },
    /// kube-proxy's no-endpoint rule for a destination a rule-table drop was seen to.
    NoEndpoint {
        netns: u32,
        dst: SocketAddr,
        answer: Option<NoEndpointRule>,
    },
    /// Whether a slow connect's destination is an IPVS virtual service no rule names.
    IpvsUnnamed {
        netns: u32,
        dst: SocketAddr,
        answer: bool,
    },
    /// The pod of a line's process (version 3).
    Pod {
        netns: u32,
        tgid: Option<u32>,
        answer: PodAnswer,
    },
    /// The pod on this node with a destination address (version 3).
    PodByIp {
        ip: IpAddr,
        answer: Option<PodRef>,
    },
    /// Whether the node's namespace DNATs the connects of `netns` (version 3).
    NodeDnat {
        netns: u32,
        answer: bool,
    },
    /// At stop, attempts whose end was lost (the kernel's table no longer held them).
    EndsLost {
        socks: Vec<SockKey>,
    },
    /// Housekeeping at monotonic `now_ns`.
    Tick {
        now_ns: u64,
    },
    /// The run ended at `now_ns` after `duration_s` with these kernel loss counts and
    /// attempt-table counters (ABI 2; absent before).
    End {
        now_ns: u64,
        duration_s: f64,
        lost: BTreeMap<String, u64>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        attempts: BTreeMap<String, u64>,
        /// What the kernel's own TCP counters said (absent in older recordings).
        #[serde(default)]
        kernel: Option<KernelCounts>,
    },
    /// The listener whose refusal counters rose while a connect to `dst` waited.
    Listen {
        dst: SocketAddr,
        from_ns: u64,
        to_ns: u64,
        answer: Option<ListenEvidence>,
    },
}

/// One record of a recording; an item's bytes are borrowed from the [`Reader`].
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    Item(&'a [u8]),
    Note(Note),
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: not a netlat recording (bad magic)")]
    Magic { path: String },
    #[error(
        "{path}: recording version {found}, this netlat reads versions {OLDEST_VERSION} to {VERSION}"
    )]
    Version { path: String, found: u16 },
    #[error(
        "{path}: its kernel events are in wire format {found}, this netlat decodes formats \
         {OLDEST_ABI_VERSION} to {ABI_VERSION}: replay it with the netlat version that recorded it"
    )]
    Abi { path: String, found: u32 },
    #[error("recording truncated at byte {offset}: {what}")]
    Truncated { offset: u64, what: &'static str },
    #[error("recording corrupt at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    #[error("reading the recording at byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
}

/// Writes a recording; shared by the wrappers that log the shell's answers.
pub struct Recorder {
    out: BufWriter<File>,
}

pub type SharedRecorder = Rc<RefCell<Recorder>>;

impl Recorder {
    pub fn create(path: &Path, header: &Header) -> io::Result<SharedRecorder> {
        let mut out = BufWriter::new(File::create(path)?);
        let h = serde_json::to_vec(header).map_err(io::Error::other)?;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(
            &u32::try_from(h.len())
                .map_err(io::Error::other)?
                .to_le_bytes(),
        )?;
        out.write_all(&h)?;
        Ok(Rc::new(RefCell::new(Recorder { out })))
    }

    fn frame(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
        self.out.write_all(&[tag])?;
        self.out.write_all(
            &u32::try_from(payload.len())
                .map_err(io::Error::other)?
                .to_le_bytes(),
        )?;
        self.out.write_all(payload)
    }

    pub fn item(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.frame(TAG_ITEM, bytes)
    }

    pub fn note(&mut self, n: &Note) -> io::Result<()> {
        let p = serde_json::to_vec(n).map_err(io::Error::other)?;
        self.frame(TAG_NOTE, &p)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Note a failure to record once, then keep running: a full disk must not stop the diagnosis.
fn log_err(r: io::Result<()>) {
    if let Err(e) = r {
        tracing::warn!("writing the recording failed: {e}");
    }
}

/// Reads a recording record by record, through one buffer for the whole file: an item is a
/// slice of it, not an allocation of its own (replay reads hundreds of millions of them).
pub struct Reader<R: Read> {
    input: R,
    /// Bytes read from `input`; `buf[start..end]` are not consumed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    offset: u64,
}

impl Reader<File> {
    pub fn open(path: &Path) -> Result<(Header, Self), RecordError> {
        let f = File::open(path).map_err(|source| RecordError::Io { offset: 0, source })?;
        Reader::new(f, &path.display().to_string())
    }
}

impl<R: Read> Reader<R> {
    pub fn new(input: R, name: &str) -> Result<(Header, Self), RecordError> {
        let mut r = Reader {
            input,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            offset: 0,
        };
        if r.take(MAGIC.len(), "magic")? != MAGIC {
            return Err(RecordError::Magic {
                path: name.to_string(),
            });
        }
        let found = u16::from_le_bytes([r.byte("version")?, r.byte("version")?]);
        if !(OLDEST_VERSION..=VERSION).contains(&found) {
            return Err(RecordError::Version {
                path: name.to_string(),
                found,
            });
        }
        let len = r.len("header length")?;
        let at = r.offset;
        let header: Header =
            serde_json::from_slice(r.take(len, "header")?).map_err(|e| RecordError::Corrupt {
                offset: at,
                what: format!("header: {e}"),
            })?;
        // ABI 1 items still decode (by their length); see netlat_core::event::decode.
        if !(OLDEST_ABI_VERSION..=ABI_VERSION).contains(&header.abi_version) {
            return Err(RecordError::Abi {
                path: name.to_string(),
                found: header.abi_version,
            });
        }
        Ok((header, r))
    }

    /// Make `need` bytes available at `buf[start..]`; false when the input ends first. The
    /// buffer grows (for a payload larger than it) by at most what has arrived so far, so a
    /// corrupt length cannot make the reader allocate much more than the file holds.
    fn fill(&mut self, need: usize) -> Result<bool, RecordError> {
        while self.end - self.start < need {
            if self.buf.len() - self.start < need {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let len = self.buf.len();
            if self.end == len {
                self.buf.resize(len + (need - len).min(len), 0);
            }
            // Reads of READ_BUFFER at most, also into a buffer grown for one large note.
            let upto = self.buf.len().min(self.end + READ_BUFFER.max(need));
            match self.input.read(&mut self.buf[self.end..upto]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(RecordError::Io {
                        offset: self.offset + (self.end - self.start) as u64,
                        source,
                    });
                }
            }
        }
        Ok(true)
    }

    /// The next `n` bytes, consumed.
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], RecordError> {
        if !self.fill(n)? {
            return Err(RecordError::Truncated {
                offset: self.offset + (self.end - self.start) as u64,
                what,
            });
        }
        let at = self.start;
        self.start += n;
        self.offset += n as u64;
        Ok(&self.buf[at..at + n])
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, RecordError> {
        Ok(self.take(1, what)?[0])
    }

    fn len(&mut self, what: &'static str) -> Result<usize, RecordError> {
        let at = self.offset;
        let b = self.take(4, what)?;
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if n > MAX_PAYLOAD {
            return Err(RecordError::Corrupt {
                offset: at,
                what: format!("{what} {n} is implausible"),
            });
        }
        Ok(n as usize)
    }

    /// The next record; `Ok(None)` at a clean end of file. An item borrows the reader's buffer
    /// until the next call.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, RecordError> {
        if !self.fill(1)? {
            return Ok(None);
        }
        let at = self.offset;
        let tag = self.byte("record tag")?;
        let len = self.len("record length")?;
        let p = self.take(len, "record payload")?;
        match tag {
            TAG_ITEM => Ok(Some(Record::Item(p))),
            TAG_NOTE => serde_json::from_slice(p)
                .map(|n| Some(Record::Note(n)))
                .map_err(|e| RecordError::Corrupt {
                    offset: at,
                    what: format!("note: {e}"),
                }),
            t => Err(RecordError::Corrupt {
                offset: at,
                what: format!("unknown record tag {t}"),
            }),
        }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// Live counters, with every answer recorded.
pub struct RecordingCounters<C> {
    pub inner: C,
    pub rec: SharedRecorder,
}

impl<C: Counters> Counters for RecordingCounters<C> {
    fn claim(&mut self, netns: u32, cpu: u32) -> Option<CounterEvidence> {
        let answer = self.inner.claim(netns, cpu);
        log_err(
            self.rec
                .borrow_mut()
                .note(&Note::Counters { netns, cpu, answer }),
        );
        answer
    }
    fn tick(&mut self) {
        self.inner.tick();
    }
}

/// Live NAT lookups, with every answer recorded.
pub struct RecordingNat<N> {
    pub inner: N,
    pub rec: SharedRecorder,
}

impl<N: NatLookup> NatLookup for RecordingNat<N> {
    fn ask(&mut self, sock: SockKey, tuple: FiveTuple, at: NatWhere) -> Option<FiveTuple> {
        let answer = self.inner.ask(sock, tuple, at);
        if answer.is_some() {
            log_err(self.rec.borrow_mut().note(&Note::Nat {
                netns: sock.netns,
                tuple,
                answer,
            }));
        }
        answer
    }

    fn answers(&mut self, wait_for: Option<&SockKey>) -> Vec<(SockKey, FiveTuple)> {
        let answers = self.inner.answers(wait_for);
        // Nearly every call answers nothing; only answers are worth a note.
        if !answers.is_empty() {
            log_err(self.rec.borrow_mut().note(&Note::NatAnswers {
                answers: answers.clone(),
            }));
        }
        answers
    }
}

/// Live node facts, with every answer recorded.
pub struct RecordingView<V> {
    pub inner: V,
    pub rec: SharedRecorder,
}

impl<V: NodeView> NodeView for RecordingView<V> {
    fn masquerade(&self, netns: u32) -> Option<(usize, usize)> {
        let answer = self.inner.masquerade(netns);
        log_err(
            self.rec
                .borrow_mut()
                .note(&Note::Masquerade { netns, answer }),
        );
        answer
    }
    fn node_dnat(&self, netns: u32) -> bool {
        let answer = self.inner.node_dnat(netns);
        log_err(
            self.rec
                .borrow_mut()
                .note(&Note::NodeDnat { netns, answer }),
        );
        answer
    }
    fn vxlan_offloaded(&self, netns: u32) -> Option<Vec<String>> {
        let answer = self.inner.vxlan_offloaded(netns);
        log_err(self.rec.borrow_mut().note(&Note::Vxlan {
            netns,
            answer: answer.clone(),
        }));
        answer
    }
    fn udp_timeout_s(&self, netns: u32) -> Option<u64> {
        let answer = self.inner.udp_timeout_s(netns);
        log_err(
            self.rec
                .borrow_mut()
                .note(&Note::UdpTimeout { netns, answer }),
        );
        answer
    }
    fn service(&self, netns: u32, dst: SocketAddr) -> Option<String> {
        let answer = self.inner.service(netns, dst);
        log_err(self.rec.borrow_mut().note(&Note::Service {
            netns,
            dst,
            answer: answer.clone(),
        }));
        answer
    }
    fn no_endpoint_rule(&self, netns: u32, dst: SocketAddr) -> Option<NoEndpointRule> {
        let answer = self.inner.no_endpoint_rule(netns, dst);
        log_err(self.rec.borrow_mut().note(&Note::NoEndpoint {
            netns,
            dst,
            answer: answer.clone(),
        }));
        answer
    }
    fn listen_overflow(&self, dst: SocketAddr, from_ns: u64, to_ns: u64) -> Option<ListenEvidence> {
        let answer = self.inner.listen_overflow(dst, from_ns, to_ns);
        log_err(self.rec.borrow_mut().note(&Note::Listen {
            dst,
            from_ns,
            to_ns,
            answer: answer.clone(),
        }));
        answer
    }
    fn unnamed_ipvs_service(&self, netns: u32, dst: SocketAddr) -> bool {
        let answer = self.inner.unnamed_ipvs_service(netns, dst);
        log_err(
            self.rec
                .borrow_mut()
                .note(&Note::IpvsUnnamed { netns, dst, answer }),
        );
        answer
    }
    fn prefetch(&self, netns: u32, tgid: u32) {
        self.inner.prefetch(netns, tgid);
    }
}

/// Live pod names, with every answer recorded.
pub struct RecordingPods<P> {
    pub inner: P,
    pub rec: SharedRecorder,
}

impl<P: PodView> PodView for RecordingPods<P> {
    fn prefetch(&mut self, netns: u32, tgid: u32) {
        self.inner.prefetch(netns, tgid);
    }
    fn pod(&mut self, netns: u32, tgid: Option<u32>) -> PodAnswer {
        let answer = self.inner.pod(netns, tgid);
        log_err(self.rec.borrow_mut().note(&Note::Pod {
            netns,
            tgid,
            answer: answer.clone(),
        }));
        answer
    }
    fn pod_by_ip(&mut self, ip: IpAddr) -> Option<PodRef> {
        let answer = self.inner.pod_by_ip(ip);
        log_err(self.rec.borrow_mut().note(&Note::PodByIp {
            ip,
            answer: answer.clone(),
        }));
        answer
    }
}

/// Answers read back from a recording, served in the order they were given.
#[derive(Default)]
pub struct Answers {
    counters: VecDeque<(u32, u32, Option<CounterEvidence>)>,
    nat: VecDeque<(u32, FiveTuple, Option<FiveTuple>)>,
    /// Answers noted for the item being replayed.
    nat_answers: Vec<(SockKey, FiveTuple)>,
    masq: HashMap<u32, VecDeque<Option<(usize, usize)>>>,
    node_dnat: HashMap<u32, VecDeque<bool>>,
    vxlan: HashMap<u32, VecDeque<Option<Vec<String>>>>,
    udp: HashMap<u32, VecDeque<Option<u64>>>,
    services: VecDeque<(u32, SocketAddr, Option<String>)>,
    no_endpoints: VecDeque<(u32, SocketAddr, Option<NoEndpointRule>)>,
    ipvs_unnamed: VecDeque<(u32, SocketAddr, bool)>,
    pods: VecDeque<(u32, Option<u32>, PodAnswer)>,
    pods_by_ip: VecDeque<(IpAddr, Option<PodRef>)>,
    listen: VecDeque<(SocketAddr, u64, u64, Option<ListenEvidence>)>,
}

pub type SharedAnswers = Rc<RefCell<Answers>>;

impl Answers {
    /// Queue an annotation; symbols, ticks and ends are the replay loop's business.
    pub fn push(&mut self, n: Note) {
        match n {
            Note::Counters { netns, cpu, answer } => self.counters.push_back((netns, cpu, answer)),
            Note::Nat {
                netns,
                tuple,
                answer,
            } => self.nat.push_back((netns, tuple, answer)),
            Note::NatAnswers { answers } => self.nat_answers.extend(answers),
            Note::Masquerade { netns, answer } => {
                self.masq.entry(netns).or_default().push_back(answer);
            }
            Note::NodeDnat { netns, answer } => {
                self.node_dnat.entry(netns).or_default().push_back(answer);
            }
            Note::Vxlan { netns, answer } => self.vxlan.entry(netns).or_default().push_back(answer),
            Note::UdpTimeout { netns, answer } => {
                self.udp.entry(netns).or_default().push_back(answer);
            }
            Note::Service { netns, dst, answer } => self.services.push_back((netns, dst, answer)),
            Note::NoEndpoint { netns, dst, answer } => {
                self.no_endpoints.push_back((netns, dst, answer));
            }
            Note::IpvsUnnamed { netns, dst, answer } => {
                self.ipvs_unnamed.push_back((netns, dst, answer));
            }
            Note::Pod {
                netns,
                tgid,
                answer,
            } => self.pods.push_back((netns, tgid, answer)),
            Note::PodByIp { ip, answer } => self.pods_by_ip.push_back((ip, answer)),
            Note::Listen {
                dst,
                from_ns,
                to_ns,
                answer,
            } => self.listen.push_back((dst, from_ns, to_ns, answer)),
            Note::Symbol { .. } | Note::Tick { .. } | Note::End { .. } | Note::EndsLost { .. } => {}
        }
    }
}

/// The replayed shell: it answers exactly what the live one answered.
pub struct Replayed(pub SharedAnswers);

impl Counters for Replayed {
    fn claim(&mut self, netns: u32, cpu: u32) -> Option<CounterEvidence> {
        let mut a = self.0.borrow_mut();
        match a.counters.front() {
            Some((n, c, _)) if *n == netns && *c == cpu => a.counters.pop_front().and_then(|x| x.2),
            _ => None,
        }
    }
}

impl NatLookup for Replayed {
    fn ask(&mut self, sock: SockKey, tuple: FiveTuple, _: NatWhere) -> Option<FiveTuple> {
        let mut a = self.0.borrow_mut();
        match a.nat.front() {
            Some((n, t, _)) if *n == sock.netns && *t == tuple => {
                a.nat.pop_front().and_then(|x| x.2)
            }
            _ => None,
        }
    }

    fn answers(&mut self, _: Option<&SockKey>) -> Vec<(SockKey, FiveTuple)> {
        // The engine asks once per item, and an item's notes are queued before it is handled.
        std::mem::take(&mut self.0.borrow_mut().nat_answers)
    }
}

impl NodeView for Replayed {
    fn masquerade(&self, netns: u32) -> Option<(usize, usize)> {
        self.0
            .borrow_mut()
            .masq
            .get_mut(&netns)
            .and_then(std::collections::VecDeque::pop_front)
            .flatten()
    }
    fn node_dnat(&self, netns: u32) -> bool {
        // Recordings made before the question was asked answer no, as the live run did.
        self.0
            .borrow_mut()
            .node_dnat
            .get_mut(&netns)
            .and_then(std::collections::VecDeque::pop_front)
            .unwrap_or(false)
    }
    fn vxlan_offloaded(&self, netns: u32) -> Option<Vec<String>> {
        self.0
            .borrow_mut()
            .vxlan
            .get_mut(&netns)
            .and_then(std::collections::VecDeque::pop_front)
            .flatten()
    }
    fn udp_timeout_s(&self, netns: u32) -> Option<u64> {
        self.0
            .borrow_mut()
            .udp
            .get_mut(&netns)
            .and_then(std::collections::VecDeque::pop_front)
            .flatten()
    }
    fn service(&self, netns: u32, dst: SocketAddr) -> Option<String> {
        // The first recorded answer for this question: a replay with a higher `--threshold`
        // skips connects the live run asked about, and must not lose the answers after them.
        let mut a = self.0.borrow_mut();
        let at = a
            .services
            .iter()
            .position(|(n, d, _)| *n == netns && *d == dst)?;
        a.services.remove(at).and_then(|x| x.2)
    }
    fn no_endpoint_rule(&self, netns: u32, dst: SocketAddr) -> Option<NoEndpointRule> {
        // As for Services: the first recorded answer to this question.
        let mut a = self.0.borrow_mut();
        let at = a
            .no_endpoints
            .iter()
            .position(|(n, d, _)| *n == netns && *d == dst)?;
        a.no_endpoints.remove(at).and_then(|x| x.2)
    }
    fn unnamed_ipvs_service(&self, netns: u32, dst: SocketAddr) -> bool {
        let mut a = self.0.borrow_mut();
        a.ipvs_unnamed
            .iter()
            .position(|(n, d, _)| *n == netns && *d == dst)
            .and_then(|at| a.ipvs_unnamed.remove(at))
            .is_some_and(|x| x.2)
    }
    fn listen_overflow(&self, dst: SocketAddr, from_ns: u64, to_ns: u64) -> Option<ListenEvidence> {
        // As for Services: the first answer to this very question.
        let mut a = self.0.borrow_mut();
        let at = a
            .listen
            .iter()
            .position(|(d, f, t, _)| *d == dst && *f == from_ns && *t == to_ns)?;
        a.listen.remove(at).and_then(|x| x.3)
    }
}

impl PodView for Replayed {
    fn pod(&mut self, netns: u32, tgid: Option<u32>) -> PodAnswer {
        // As for Services: the first recorded answer to this question, so a replay that skips
        // lines (a higher `--threshold`) keeps the answers of the lines after them.
        let mut a = self.0.borrow_mut();
        a.pods
            .iter()
            .position(|(n, t, _)| *n == netns && *t == tgid)
            .and_then(|at| a.pods.remove(at))
            .map_or(PodAnswer::NotAPod, |x| x.2)
    }
    fn pod_by_ip(&mut self, ip: IpAddr) -> Option<PodRef> {
        let mut a = self.0.borrow_mut();
        let at = a.pods_by_ip.iter().position(|(i, _)| *i == ip)?;
        a.pods_by_ip.remove(at).and_then(|x| x.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            abi_version: ABI_VERSION,
            kernel: "6.18.44".into(),
            has_reasons: true,
            reasons: [(12, "NETFILTER_DROP".to_string())].into_iter().collect(),
            ct_tuple: None,
            clock_offset_ns: 1_700_000_000_000_000_000,
            threshold_ns: 200_000_000,
            hooks: vec![],
        }
    }

    fn write_sample(path: &Path) {
        let rec = Recorder::create(path, &header()).unwrap();
        let mut r = rec.borrow_mut();
        r.item(&[1, 2, 3]).unwrap();
        r.note(&Note::Symbol {
            addr: 0xffff,
            location: "nf_hook_slow+0x7d".into(),
        })
        .unwrap();
        r.note(&Note::End {
            now_ns: 5,
            duration_s: 1.0,
            lost: BTreeMap::new(),
            attempts: BTreeMap::from([("fast".to_string(), 3)]),
            kernel: None,
        })
        .unwrap();
        r.flush().unwrap();
    }

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("netlat-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.rec");
        write_sample(&p);
        let (h, mut r) = Reader::open(&p).unwrap();
        assert_eq!(h, header());
        assert_eq!(r.next_record().unwrap(), Some(Record::Item(&[1, 2, 3][..])));
        assert!(matches!(
            r.next_record().unwrap(),
            Some(Record::Note(Note::Symbol { addr: 0xffff, .. }))
        ));
        assert!(matches!(
            r.next_record().unwrap(),
            Some(Record::Note(Note::End { now_ns: 5, .. }))
        ));
        assert_eq!(r.next_record().unwrap(), None);

        // Every truncation is an error naming its offset, never a panic; records before the
        // cut still read.
        let full = std::fs::read(&p).unwrap();
        for cut in 0..full.len() {
            let res = Reader::new(&full[..cut], "cut").and_then(|(_, mut r)| {
                let mut n = 0;
                while r.next_record()?.is_some() {
                    n += 1;
                }
                Ok(n)
            });
            match res {
                Ok(n) => assert!(n < 3, "cut at {cut} read everything"),
                Err(RecordError::Truncated { offset, .. }) => assert!(offset <= cut as u64),
                Err(RecordError::Magic { .. }) => assert!(cut >= 8, "{cut}"),
                Err(e) => panic!("cut {cut}: unexpected {e}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Hands out at most `step` bytes per read, so records straddle reads anywhere.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Items (and a note larger than the reader's buffer) come back whole and in order wherever
    /// the buffer's refills and reads cut them; a cut inside the last item reads everything
    /// before it and then names the missing byte.
    #[test]
    fn records_across_buffer_boundaries() {
        let dir = std::env::temp_dir().join(format!("netlat-rec-b-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("b.rec");
        // 1..=313 bytes each (coprime sizes): 3 buffers' worth, ending at every offset mod 313.
        let items: Vec<Vec<u8>> = (0..1500u32)
            .map(|i| (0..=i % 313).map(|j| (i ^ j) as u8).collect())
            .collect();
        let big = "x".repeat(3 * READ_BUFFER + 5);
        {
            let rec = Recorder::create(&p, &header()).unwrap();
            let mut r = rec.borrow_mut();
            for (i, item) in items.iter().enumerate() {
                r.item(item).unwrap();
                if i == 700 {
                    r.note(&Note::Symbol {
                        addr: 1,
                        location: big.clone(),
                    })
                    .unwrap();
                }
            }
            r.flush().unwrap();
        }
        let full = std::fs::read(&p).unwrap();
        let read_all = |mut r: Reader<Trickle<'_>>| -> (Vec<Vec<u8>>, Option<RecordError>) {
            let mut got = Vec::new();
            loop {
                match r.next_record() {
                    Ok(Some(Record::Item(b))) => got.push(b.to_vec()),
                    Ok(Some(Record::Note(Note::Symbol { location, .. }))) => {
                        assert_eq!(location, big);
                        assert_eq!(got.len(), 701);
                    }
                    Ok(Some(Record::Note(n))) => panic!("unexpected {n:?}"),
                    Ok(None) => return (got, None),
                    Err(e) => return (got, Some(e)),
                }
            }
        };
        for step in [1, 7, 4096, READ_BUFFER - 1, usize::MAX] {
            let (_, r) = Reader::new(Trickle { data: &full, step }, "b").unwrap();
            let (got, err) = read_all(r);
            assert!(err.is_none(), "step {step}: {err:?}");
            assert!(got == items, "step {step}: items differ");
        }
        // The file through `open`, as replay reads it.
        let (_, mut r) = Reader::open(&p).unwrap();
        let mut n = 0;
        while let Some(rec) = r.next_record().unwrap() {
            if let Record::Item(b) = rec {
                assert_eq!(b, &items[n][..]);
                n += 1;
            }
        }
        assert_eq!((n, r.offset()), (items.len(), full.len() as u64));
        // Cut inside the last item's payload (1 + 1499 % 313 = 248 bytes long).
        let cut = full.len() - 100;
        let (_, r) = Reader::new(
            Trickle {
                data: &full[..cut],
                step: 4096,
            },
            "b",
        )
        .unwrap();
        let (got, err) = read_all(r);
        assert!(got[..] == items[..items.len() - 1]);
        assert!(
            matches!(err, Some(RecordError::Truncated { offset, what: "record payload" }) if offset == cut as u64),
            "{err:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_files() {
        assert!(matches!(
            Reader::new(&b"NOTAREC!\x01\x00"[..], "x"),
            Err(RecordError::Magic { .. })
        ));
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&9u16.to_le_bytes());
        assert!(matches!(
            Reader::new(&v[..], "x"),
            Err(RecordError::Version { found: 9, .. })
        ));
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&VERSION.to_le_bytes());
        v.extend_from_slice(&2u32.to_le_bytes());
        v.extend_from_slice(b"{}");
        v.push(TAG_NOTE);
        v.extend_from_slice(&u32::MAX.to_le_bytes());
        let r = Reader::new(&v[..], "x");
        // The header is incomplete JSON for Header: corrupt at the header offset.
        assert!(matches!(r, Err(RecordError::Corrupt { offset: 14, .. })));
    }

    #[test]
    fn replayed_answers_follow_the_recorded_order() {
        let answers = SharedAnswers::default();
        let ev = CounterEvidence {
            insert_failed: 1,
            drop: 1,
        };
        answers.borrow_mut().push(Note::Counters {
            netns: 7,
            cpu: 1,
            answer: Some(ev),
        });
        answers.borrow_mut().push(Note::Masquerade {
            netns: 7,
            answer: Some((1, 1)),
        });
        let dst: SocketAddr = "10.96.0.10:53".parse().unwrap();
        answers.borrow_mut().push(Note::Service {
            netns: 7,
            dst,
            answer: Some("kube-system/kube-dns:dns-tcp".into()),
        });
        let mut r = Replayed(answers.clone());
        // A question the recording never answered gets "unknown", not someone else's answer.
        assert_eq!(r.claim(7, 0), None);
        assert_eq!(r.claim(7, 1), Some(ev));
        assert_eq!(r.masquerade(7), Some((1, 1)));
        assert_eq!(r.masquerade(7), None);
        // The node's DNAT, per namespace and in order; a recording without it answers no.
        for (netns, answer) in [(7, true), (7, false), (8, true)] {
            answers.borrow_mut().push(Note::NodeDnat { netns, answer });
        }
        assert!(r.node_dnat(8));
        assert!(r.node_dnat(7));
        assert!(!r.node_dnat(7));
        assert!(!r.node_dnat(7));
        assert!(!r.node_dnat(9));
        let web: SocketAddr = "10.96.0.20:80".parse().unwrap();
        answers.borrow_mut().push(Note::Service {
            netns: 7,
            dst: web,
            answer: Some("default/web:http".into()),
        });
        assert_eq!(r.service(8, dst), None);
        assert_eq!(r.service(7, "10.96.0.10:80".parse().unwrap()), None);
        // A replay that skips the first connect (higher threshold) still gets the second's.
        assert_eq!(r.service(7, web).as_deref(), Some("default/web:http"));
        assert_eq!(
            r.service(7, dst).as_deref(),
            Some("kube-system/kube-dns:dns-tcp")
        );
        assert_eq!(r.service(7, dst), None);
    }

    fn file_with_header(h: &serde_json::Value) -> Vec<u8> {
        let h = serde_json::to_vec(h).unwrap();
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&VERSION.to_le_bytes());
        v.extend_from_slice(&(h.len() as u32).to_le_bytes());
        v.extend_from_slice(&h);
        v
    }

    /// Recordings made before the wire format was versioned are format 1; another format is
    /// refused with one line that says what to do, never decoded with the wrong layouts.
    #[test]
    fn the_wire_format_of_the_items_is_checked() {
        let mut h = serde_json::to_value(header()).unwrap();
        h.as_object_mut().unwrap().remove("abi_version");
        let (got, _) = Reader::new(&file_with_header(&h)[..], "old").unwrap();
        assert_eq!(got.abi_version, 1);
        // ABI 1 items are still decoded (by their length).
        h["abi_version"] = 1.into();
        assert!(Reader::new(&file_with_header(&h)[..], "v1").is_ok());
        h["abi_version"] = (ABI_VERSION + 1).into();
        let Err(e) = Reader::new(&file_with_header(&h)[..], "new.rec") else {
            panic!("a recording of another wire format was read");
        };
        assert!(matches!(e, RecordError::Abi { found, .. } if found == ABI_VERSION + 1));
        let text = e.to_string();
        assert!(
            text.starts_with("new.rec: its kernel events are in wire format 3"),
            "{text}"
        );
        assert!(text.contains("replay it with the netlat version that recorded it"));
    }

    #[test]
    fn version_1_recordings_still_read() {
        let h = serde_json::to_vec(&header()).unwrap();
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&(h.len() as u32).to_le_bytes());
        v.extend_from_slice(&h);
        let note = serde_json::to_vec(&Note::Masquerade {
            netns: 1,
            answer: None,
        })
        .unwrap();
        v.push(TAG_NOTE);
        v.extend_from_slice(&(note.len() as u32).to_le_bytes());
        v.extend_from_slice(&note);
        let (got, mut r) = Reader::new(&v[..], "v1").unwrap();
        assert_eq!(got, header());
        assert!(matches!(
            r.next_record().unwrap(),
            Some(Record::Note(Note::Masquerade { netns: 1, .. }))
        ));
        assert_eq!(r.next_record().unwrap(), None);
        // Version 0 never existed; a future version is refused by number.
        for bad in [0u16, VERSION + 1] {
            let mut w = v.clone();
            w[8..10].copy_from_slice(&bad.to_le_bytes());
            assert!(matches!(
                Reader::new(&w[..], "x"),
                Err(RecordError::Version { found, .. }) if found == bad
            ));
        }
    }

    #[test]
    fn pod_answers_replay_as_recorded() {
        let web = PodRef {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "u1".into(),
            container: Some("app".into()),
        };
        let notes = [
            Note::Pod {
                netns: 7,
                tgid: Some(42),
                answer: PodAnswer::Pod(web.clone()),
            },
            Note::Pod {
                netns: 8,
                tgid: None,
                answer: PodAnswer::Unknown("container runtime not answering".into()),
            },
            Note::PodByIp {
                ip: "10.236.0.5".parse().unwrap(),
                answer: Some(web.clone()),
            },
        ];
        // Through JSON, as a file holds them.
        let answers = SharedAnswers::default();
        for n in notes {
            let back: Note = serde_json::from_slice(&serde_json::to_vec(&n).unwrap()).unwrap();
            answers.borrow_mut().push(back);
        }
        let mut r = Replayed(answers);
        // Asked out of order: each question finds its own answer.
        assert_eq!(
            r.pod(8, None),
            PodAnswer::Unknown("container runtime not answering".into())
        );
        assert_eq!(r.pod(7, Some(42)), PodAnswer::Pod(web.clone()));
        assert_eq!(r.pod(7, Some(42)), PodAnswer::NotAPod, "answered once");
        assert_eq!(r.pod_by_ip("10.236.0.5".parse().unwrap()), Some(web));
        assert_eq!(r.pod_by_ip("10.236.0.6".parse().unwrap()), None);
    }
}
