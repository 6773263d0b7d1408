//! Pod names for the lines, from the node's own container runtime(s), no API server.
//!
//! [`PodCache`] is the live [`PodView`]: a table of the node's pods keyed by network-namespace
//! inode (plus pod IP and pod UID), refreshed by a background thread. The event loop only reads
//! the table under a short lock; a connect from a namespace not in it (or a process whose cgroup
//! is not yet read) asks the thread to look, when the connect *starts*, so the answer is there
//! by the time the connect is slow. Refreshes on a miss are rate-limited; pods gone from the
//! runtime stay named for [`GRACE`] (a pod deleted right after its slow connect is still named).
//! A runtime that is down or slow never stalls a line: the line says why the pod is unknown.
//!
//! Sources, in order: CRI on each runtime socket ([`cri`]); the runtimes' OCI bundles on disk
//! when no socket answers ([`files`]); `/proc/PID/cgroup` ([`cgroup`]) for the container of a
//! process and for hostNetwork pods (whose netns is the host's).
//!
//! An attempt reaches user space only at its first SYN retransmit, and a short-lived client
//! (`kubectl exec … curl`, a Job) has often exited by then: its `/proc/PID/cgroup` is gone. The
//! kernel keeps the cgroup id each process connected from ([`CgroupIds`]); the cache maps ids
//! to pods and containers by walking the cgroup v2 tree ([`cgroup::scan`]) at each refresh.

pub mod cgroup;
pub mod cri;
pub mod files;

use std::{
    collections::{HashMap, HashSet},
    fs,
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread,
    time::{Duration, Instant},
};

use netlat_core::pods::{PodAnswer, PodRef, PodView};

use self::cgroup::CgroupPod;

/// Where runtimes listen by default: containerd, then CRI-O (both paths CRI-O documents).
pub const DEFAULT_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/run/crio/crio.sock",
];
/// How long a pod gone from the runtime is still named.
pub const GRACE: Duration = Duration::from_mins(5);
/// Refreshes asked for by misses are at least this far apart.
const MIN_GAP: Duration = Duration::from_millis(500);
/// A full refresh this often even without misses (pod IPs for destinations, deletions).
const PERIOD: Duration = Duration::from_secs(30);
/// A namespace a refresh did not find is not looked for again for this long.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Lookups queued for the thread; beyond that a request is dropped and counted.
const QUEUE: usize = 1024;
/// Processes whose cgroup is remembered; the table starts over beyond it.
const MAX_PROCS: usize = 65_536;
/// Cgroup ids a scan did not find, remembered so they do not cause a scan each; starts over
/// beyond this.
const MAX_UNPLACED: usize = 4096;

/// The cgroup id (cgroup v2) each process was in when it last called connect(), as the kernel
/// recorded it: what places a process that has exited by the time its attempt is read.
pub trait CgroupIds: Send + Sync {
    fn of(&self, tgid: u32) -> Option<u64>;
}

/// Where a process is in the cgroup tree, as far as the cache can tell now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placed {
    /// In this pod (and container), or `None`: in no pod's cgroup.
    Known(Option<CgroupPod>),
    /// Exited; it connected from cgroup `id`, which no scan has found yet.
    Unscanned(u64),
    /// Exited, and the kernel kept no cgroup for it (cgroup v1-only host, evicted, started
    /// before netlat).
    Unknown,
}

/// Where the cgroup v2 tree is mounted, as this process sees its mounts (none on a cgroup
/// v1-only node).
pub fn cgroup_v2_roots() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|mi| cgroup::v2_roots(&mi))
        .unwrap_or_default()
}

/// The place of process `tgid`: its `/proc/PID/cgroup` while it lives, else the cgroup the
/// kernel saw it connect from, looked up in the scanned ids.
fn place(tgid: u32, ids: Option<&dyn CgroupIds>, t: &Table) -> Placed {
    if let Ok(text) = fs::read_to_string(format!("/proc/{tgid}/cgroup")) {
        return Placed::Known(cgroup::parse(&text));
    }
    // Gone (or never readable): the cgroup it connected from. Id 1 is the root cgroup, where
    // no pod is; but also where every process is on a host with no cgroup v2 tree.
    match ids.and_then(|i| i.of(tgid)) {
        Some(1) if t.cgroup_v2 => Placed::Known(None),
        Some(id) if id > 1 => match t.cgroups.get(&id) {
            Some((p, _)) => Placed::Known(Some(p.clone())),
            None if t.unplaced.contains(&id) => Placed::Known(None),
            None => Placed::Unscanned(id),
        },
        _ => Placed::Unknown,
    }
}

/// The answer for a namespace a lookup is still running for.
pub const STILL_LOOKING: &str = "pod lookup still running";

/// The inode of a network namespace file (`/proc/PID/ns/net`, `/run/netns/…`), as the kernel's
/// netns inum the events carry. A path this process cannot see (netlat in a container without
/// that mount) is looked up among the host's nsfs mounts (`/proc/1/mountinfo`, hostPID).
pub fn netns_inode(path: &Path) -> Option<u32> {
    fs::metadata(path)
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
        .or_else(|| {
            let mi = fs::read_to_string("/proc/1/mountinfo").ok()?;
            nsfs_inode(&mi, path)
        })
}

/// The netns inode mounted at `path` in a mountinfo text (`… net:[4026532174] /run/netns/x …
/// - nsfs …`); `/var/run` and `/run` are the same directory on every distribution.
pub fn nsfs_inode(mountinfo: &str, path: &Path) -> Option<u32> {
    let norm = |p: &str| p.strip_prefix("/var").unwrap_or(p).to_string();
    let want = norm(&path.to_string_lossy());
    mountinfo.lines().find_map(|l| {
        let (fields, fstype) = l.split_once(" - ")?;
        if !fstype.starts_with("nsfs ") {
            return None;
        }
        let mut f = fields.split(' ');
        let root = f.nth(3)?;
        let mount_point = f.next()?;
        if norm(mount_point) != want {
            return None;
        }
        root.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
    })
}

/// A pod sandbox as a source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Its network namespace (none for hostNetwork pods or when it could not be read).
    pub netns: Option<u32>,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
}

/// What one source holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub sandboxes: Vec<Sandbox>,
    pub containers: Vec<Container>,
}

/// Where pods are read from.
#[derive(Debug, Clone, Default)]
pub struct PodSources {
    pub sockets: Vec<PathBuf>,
    /// OCI bundle dirs for the file fallback.
    pub bundle_dirs: Vec<PathBuf>,
}

impl PodSources {
    /// `--cri-socket` paths when given, else the default sockets that exist; the bundle dirs of
    /// the fallback that exist.
    pub fn discover(overrides: &[PathBuf]) -> Self {
        let sockets = if overrides.is_empty() {
            let mut seen = HashSet::new();
            DEFAULT_SOCKETS
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                // /var/run is usually a link to /run: one runtime, one entry.
                .filter(|p| seen.insert(fs::canonicalize(p).unwrap_or_else(|_| p.clone())))
                .collect()
        } else {
            overrides.to_vec()
        };
        Self {
            sockets,
            bundle_dirs: files::present(&files::configured()),
        }
    }

    /// Whether there is anything to ask (no runtime at all: nothing is a pod).
    pub fn any(&self) -> bool {
        !self.sockets.is_empty() || !self.bundle_dirs.is_empty()
    }
}

/// How one refresh went, per source (for `doctor` and the cache's notes).
#[derive(Debug, Clone, Default)]
pub struct Refresh {
    pub inventory: Inventory,
    /// Per socket: pods it listed, or why it did not answer.
    pub runtimes: Vec<(PathBuf, Result<usize, String>)>,
    /// Pods read from bundle files (when no socket answered and bundle dirs exist).
    pub from_files: Option<usize>,
}

impl Refresh {
    /// Why nothing could be read, when no source answered.
    pub fn down(&self) -> Option<String> {
        if self.runtimes.iter().any(|r| r.1.is_ok()) || self.from_files.is_some() {
            return None;
        }
        let why: Vec<String> = self
            .runtimes
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().cloned())
            .collect();
        Some(format!(
            "container runtime not answering ({})",
            why.join("; ")
        ))
    }
}

/// Reads every source once: the sockets, then the bundle files if no socket answered.
pub struct Reader {
    runtimes: Vec<cri::Runtime>,
    bundle_dirs: Vec<PathBuf>,
    rt: tokio::runtime::Runtime,
}

impl Reader {
    pub fn new(sources: &PodSources) -> std::io::Result<Self> {
        Ok(Self {
            runtimes: sources
                .sockets
                .iter()
                .cloned()
                .map(cri::Runtime::new)
                .collect(),
            bundle_dirs: sources.bundle_dirs.clone(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    pub fn read(&mut self) -> Refresh {
        let mut r = Refresh::default();
        for rt in &mut self.runtimes {
            match self.rt.block_on(rt.inventory()) {
                Ok(inv) => {
                    r.runtimes.push((rt.path.clone(), Ok(inv.sandboxes.len())));
                    r.inventory.sandboxes.extend(inv.sandboxes);
                    r.inventory.containers.extend(inv.containers);
                }
                Err(e) => r.runtimes.push((rt.path.clone(), Err(e.to_string()))),
            }
        }
        if !r.runtimes.iter().any(|x| x.1.is_ok()) && !self.bundle_dirs.is_empty() {
            let inv = files::inventory(&self.bundle_dirs);
            r.from_files = Some(inv.sandboxes.len());
            r.inventory = inv;
        }
        r
    }
}

#[derive(Debug, Clone)]
struct Known {
    sandbox: Sandbox,
    seen: Instant,
}

/// The table the event loop reads.
#[derive(Debug, Default)]
struct Table {
    sandboxes: HashMap<String, Known>,
    /// container id → (sandbox id, name, last seen).
    containers: HashMap<String, (String, String, Instant)>,
    by_netns: HashMap<u32, String>,
    by_uid: HashMap<String, String>,
    by_ip: HashMap<IpAddr, String>,
    /// Each process's place in the cgroup tree (`None`: in no pod's cgroup), read when it
    /// connects; a process that could not be placed has no entry.
    procs: HashMap<u32, Option<CgroupPod>>,
    /// Pod and container cgroups by cgroup id (v2), and when a scan last saw them.
    cgroups: HashMap<u64, (CgroupPod, Instant)>,
    /// Cgroup ids asked about that a later scan did not find (not a pod's).
    unplaced: HashSet<u64>,
    /// Whether the cgroup v2 tree is mounted (its ids mean something).
    cgroup_v2: bool,
    /// Namespaces asked about and not yet covered by a finished refresh.
    pending: HashSet<u32>,
    /// Namespaces a refresh did not find, and when.
    negative: HashMap<u32, Instant>,
    /// Why no source answered the last refresh.
    down: Option<String>,
    refreshes: u64,
}

impl Table {
    /// Take in a scan of the cgroup tree: ids seen now, or within [`GRACE`] (a pod deleted
    /// right after its slow connect).
    fn merge_scan(&mut self, s: cgroup::Scan, now: Instant) {
        for (id, p) in s.by_id {
            self.cgroups.insert(id, (p, now));
        }
        self.cgroups.retain(|_, c| now.duration_since(c.1) < GRACE);
    }

    fn merge(&mut self, r: &Refresh, now: Instant) {
        self.down = r.down();
        self.refreshes += 1;
        if self.down.is_some() {
            // Keep what is known: a runtime restart must not unname every pod.
            return;
        }
        for s in &r.inventory.sandboxes {
            self.sandboxes.insert(
                s.id.clone(),
                Known {
                    sandbox: s.clone(),
                    seen: now,
                },
            );
        }
        for c in &r.inventory.containers {
            self.containers
                .insert(c.id.clone(), (c.sandbox_id.clone(), c.name.clone(), now));
        }
        self.sandboxes
            .retain(|_, k| now.duration_since(k.seen) < GRACE);
        self.containers
            .retain(|_, c| now.duration_since(c.2) < GRACE);
        // Oldest first, so a live sandbox wins an inode or IP a deleted one had.
        let mut order: Vec<&Known> = self.sandboxes.values().collect();
        order.sort_by_key(|k| k.seen);
        self.by_netns.clear();
        self.by_uid.clear();
        self.by_ip.clear();
        for k in order {
            let s = &k.sandbox;
            if let Some(n) = s.netns {
                self.by_netns.insert(n, s.id.clone());
            }
            self.by_uid.insert(s.uid.clone(), s.id.clone());
            if !s.host_network {
                for ip in &s.ips {
                    self.by_ip.insert(*ip, s.id.clone());
                }
            }
        }
    }

    fn pod_of(&self, sandbox_id: &str, container: Option<String>) -> Option<PodRef> {
        let s = &self.sandboxes.get(sandbox_id)?.sandbox;
        Some(PodRef {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            uid: s.uid.clone(),
            container,
        })
    }

    /// The container name of process `tgid` when it is in sandbox `sid`.
    fn container_of(&self, tgid: Option<u32>, sid: &str) -> Option<String> {
        let cg = self.procs.get(&tgid?)?.as_ref()?;
        let (csid, name, _) = self.containers.get(cg.container_id.as_ref()?)?;
        (csid == sid).then(|| name.clone())
    }

    fn answer(&self, netns: u32, tgid: Option<u32>, host_netns: Option<u32>) -> PodAnswer {
        if let Some(sid) = self.by_netns.get(&netns)
            && let Some(p) = self.pod_of(sid, self.container_of(tgid, sid))
        {
            return PodAnswer::Pod(p);
        }
        if Some(netns) == host_netns {
            // hostNetwork pods share the host's namespace: only the cgroup tells them apart.
            let cg = tgid
                .and_then(|t| self.procs.get(&t))
                .and_then(Option::as_ref);
            return match cg.and_then(|c| self.by_uid.get(&c.pod_uid)) {
                Some(sid) => self
                    .pod_of(sid, self.container_of(tgid, sid))
                    .map_or(PodAnswer::NotAPod, PodAnswer::Pod),
                None => PodAnswer::NotAPod,
            };
        }
        // Every container the kubelet runs is in its pod's cgroup: a process in none is no
        // pod's, whatever the runtime or the lookup of its namespace would say.
        if tgid.is_some_and(|t| matches!(self.procs.get(&t), Some(None))) {
            return PodAnswer::NotAPod;
        }
        if let Some(why) = &self.down {
            return PodAnswer::Unknown(why.clone());
        }
        // Still looking, unless an earlier look already found no pod there (a namespace that
        // keeps making lines is re-checked now and then; its lines need not wait for that).
        if self.pending.contains(&netns) && !self.negative.contains_key(&netns) {
            return PodAnswer::Unknown(STILL_LOOKING.into());
        }
        PodAnswer::NotAPod
    }
}

enum Ask {
    /// Read this process's cgroup and make sure `netns` is in the table.
    Look { netns: u32, tgid: Option<u32> },
}

/// The live pod view: a table refreshed in the background.
pub struct PodCache {
    table: Arc<Mutex<Table>>,
    /// `None` when there is no source: nothing is a pod, nothing to ask.
    tx: Option<SyncSender<Ask>>,
    ids: Option<Arc<dyn CgroupIds>>,
    host_netns: Option<u32>,
    last_prefetch: Option<(u32, u32)>,
    /// Lookups not queued because the thread was behind.
    pub dropped_asks: u64,
}

fn lock(t: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // A panic in the thread leaves the table as consistent as any refresh does.
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PodCache {
    /// Starts the background thread (when there is a source) and its first refresh. `ids` is
    /// the kernel's record of the cgroup each process connected from (none: processes that
    /// exited before their attempt was read are placed by their network namespace only).
    pub fn start(sources: &PodSources, ids: Option<Arc<dyn CgroupIds>>) -> std::io::Result<Self> {
        let cgroup_roots = cgroup_v2_roots();
        let table = Arc::new(Mutex::new(Table {
            cgroup_v2: !cgroup_roots.is_empty(),
            ..Table::default()
        }));
        let host_netns = netns_inode(Path::new("/proc/1/ns/net"))
            .or_else(|| netns_inode(Path::new("/proc/self/ns/net")));
        let tx = if sources.any() {
            let reader = Reader::new(sources)?;
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let t = Arc::clone(&table);
            let w = Worker {
                table: t,
                reader,
                ids: ids.clone(),
                cgroup_roots,
                last_scan: None,
                said_truncated: false,
            };
            thread::Builder::new()
                .name("netlat-pods".into())
                .spawn(move || w.run(&rx))?;
            Some(tx)
        } else {
            None
        };
        Ok(Self {
            table,
            tx,
            ids,
            host_netns,
            last_prefetch: None,
            dropped_asks: 0,
        })
    }

    fn ask(&mut self, a: Ask) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(a) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped_asks += 1;
                if self.dropped_asks.is_power_of_two() {
                    tracing::warn!(
                        "pod lookups behind: {} not queued (their lines may lack a pod)",
                        self.dropped_asks
                    );
                }
            }
        }
    }

    /// Whether the table needs the thread for this namespace/process; marks it pending.
    fn needs(&self, netns: u32, tgid: Option<u32>) -> bool {
        let mut t = lock(&self.table);
        let proc_unknown = tgid.is_some_and(|p| !t.procs.contains_key(&p));
        let ns_unknown = Some(netns) != self.host_netns
            && !t.by_netns.contains_key(&netns)
            && t.negative
                .get(&netns)
                .is_none_or(|at| at.elapsed() >= NEGATIVE_TTL);
        if ns_unknown {
            t.pending.insert(netns);
        }
        proc_unknown || ns_unknown
    }
}

impl PodView for PodCache {
    fn prefetch(&mut self, netns: u32, tgid: u32) {
        if self.tx.is_none() || self.last_prefetch == Some((netns, tgid)) {
            return;
        }
        self.last_prefetch = Some((netns, tgid));
        if self.needs(netns, Some(tgid)) {
            self.ask(Ask::Look {
                netns,
                tgid: Some(tgid),
            });
        }
    }

    fn pod(&mut self, netns: u32, tgid: Option<u32>) -> PodAnswer {
        if self.tx.is_none() {
            return PodAnswer::NotAPod;
        }
        // The attempt reaches user space only at its first SYN retransmit (the kernel keeps
        // fast ones), often just before it ends: the prefetch's cgroup read may still be queued.
        // A reported line's process is placed here, once: one small procfs file (or a map
        // lookup and the scanned ids when it has exited), never a runtime call or a scan.
        if let Some(p) = tgid
            && !lock(&self.table).procs.contains_key(&p)
        {
            let placed = place(p, self.ids.as_deref(), &lock(&self.table));
            match placed {
                Placed::Known(cg) => {
                    let mut t = lock(&self.table);
                    if t.procs.len() >= MAX_PROCS {
                        t.procs.clear();
                    }
                    t.procs.insert(p, cg);
                }
                // A cgroup made since the last scan: the worker scans, for the next lines.
                Placed::Unscanned(_) => self.ask(Ask::Look {
                    netns,
                    tgid: Some(p),
                }),
                Placed::Unknown => {}
            }
        }
        let a = lock(&self.table).answer(netns, tgid, self.host_netns);
        // Not seen before (a drop line's namespace, a lost prefetch): look for the next line.
        if a == PodAnswer::NotAPod && tgid.is_none() && self.needs(netns, None) {
            self.ask(Ask::Look { netns, tgid: None });
            return lock(&self.table).answer(netns, tgid, self.host_netns);
        }
        a
    }

    fn pod_by_ip(&mut self, ip: IpAddr) -> Option<PodRef> {
        let t = lock(&self.table);
        let sid = t.by_ip.get(&ip)?;
        t.pod_of(sid, None)
    }
}

/// The background thread's state.
struct Worker {
    table: Arc<Mutex<Table>>,
    reader: Reader,
    ids: Option<Arc<dyn CgroupIds>>,
    /// Where the cgroup v2 tree is mounted (none on a cgroup v1-only host).
    cgroup_roots: Vec<PathBuf>,
    last_scan: Option<Instant>,
    said_truncated: bool,
}

impl Worker {
    /// Refresh at start, on misses (rate-limited) and every [`PERIOD`].
    fn run(mut self, rx: &mpsc::Receiver<Ask>) {
        let mut last: Option<Instant> = None;
        loop {
            let first = match rx.recv_timeout(if last.is_none() {
                Duration::ZERO
            } else {
                PERIOD
            }) {
                Ok(a) => Some(a),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let asks: Vec<Ask> = first.into_iter().chain(rx.try_iter()).collect();
            self.place_processes(&asks);
            let want_ns: HashSet<u32> = asks.iter().map(|Ask::Look { netns, .. }| *netns).collect();
            let stale = {
                let t = lock(&self.table);
                // A look is needed for a namespace still unknown, or a container not yet listed.
                let unknown_container = t.procs.values().flatten().any(|c| {
                    c.container_id
                        .as_ref()
                        .is_some_and(|id| !t.containers.contains_key(id))
                        && t.by_uid.contains_key(&c.pod_uid)
                });
                asks.is_empty()
                    || unknown_container
                    || want_ns.iter().any(|n| t.pending.contains(n))
            };
            if !stale {
                continue;
            }
            if let Some(l) = last {
                thread::sleep(MIN_GAP.saturating_sub(l.elapsed()));
            }
            let covered: Vec<u32> = lock(&self.table).pending.iter().copied().collect();
            let r = self.reader.read();
            // The cgroups of the containers just listed, before their processes exit.
            self.scan();
            let now = Instant::now();
            last = Some(now);
            let mut t = lock(&self.table);
            t.merge(&r, now);
            for n in covered {
                t.pending.remove(&n);
                if !t.by_netns.contains_key(&n) && t.down.is_none() {
                    t.negative.insert(n, now);
                }
            }
            t.negative
                .retain(|_, at| now.duration_since(*at) < NEGATIVE_TTL);
        }
    }

    /// Place the processes asked about, first thing: they may exit soon after their connect.
    /// One that has exited from a cgroup made since the last scan costs a scan (rate-limited).
    fn place_processes(&mut self, asks: &[Ask]) {
        let mut placed = Vec::new();
        let mut unscanned = Vec::new();
        {
            let t = lock(&self.table);
            for Ask::Look { tgid, .. } in asks {
                let Some(p) = *tgid else { continue };
                // Already placed (by the line's own read): keep it.
                if t.procs.contains_key(&p) {
                    continue;
                }
                match place(p, self.ids.as_deref(), &t) {
                    Placed::Known(cg) => placed.push((p, cg)),
                    Placed::Unscanned(id) => unscanned.push((p, id)),
                    Placed::Unknown => {}
                }
            }
        }
        if !unscanned.is_empty() {
            if let Some(l) = self.last_scan {
                thread::sleep(MIN_GAP.saturating_sub(l.elapsed()));
            }
            self.scan();
            let mut t = lock(&self.table);
            for (p, id) in unscanned {
                let cg = t.cgroups.get(&id).map(|c| c.0.clone());
                if cg.is_none() {
                    if t.unplaced.len() >= MAX_UNPLACED {
                        t.unplaced.clear();
                    }
                    t.unplaced.insert(id);
                }
                placed.push((p, cg));
            }
        }
        let mut t = lock(&self.table);
        if t.procs.len() + placed.len() > MAX_PROCS {
            t.procs.clear();
        }
        t.procs.extend(placed);
    }

    /// Walk the cgroup v2 tree for the pods' and containers' cgroup ids.
    fn scan(&mut self) {
        if self.cgroup_roots.is_empty() || self.ids.is_none() {
            return;
        }
        let mut s = cgroup::Scan::default();
        for r in &self.cgroup_roots {
            cgroup::scan(r, &mut s);
        }
        if s.truncated && !self.said_truncated {
            self.said_truncated = true;
            tracing::warn!(
                "the cgroup tree has more than {} directories: pods beyond them are named by \
                 their network namespace only (no container for processes that exited)",
                cgroup::SCAN_LIMIT
            );
        }
        let now = Instant::now();
        self.last_scan = Some(now);
        // Ids not found stay unplaced: an id is never reused, and each was asked about after
        // its process connected from it, so a later scan would not find it either.
        lock(&self.table).merge_scan(s, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, name: &str, netns: Option<u32>, ip: &str) -> Sandbox {
        Sandbox {
            id: id.into(),
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("{id}-uid"),
            netns,
            ips: vec![ip.parse().unwrap()],
            host_network: netns.is_none(),
        }
    }

    fn refresh(sandboxes: Vec<Sandbox>, containers: Vec<Container>) -> Refresh {
        Refresh {
            runtimes: vec![("/x.sock".into(), Ok(sandboxes.len()))],
            inventory: Inventory {
                sandboxes,
                containers,
            },
            from_files: None,
        }
    }

    #[test]
    fn names_pod_and_container_by_netns_and_process() {
        let mut t = Table::default();
        let now = Instant::now();
        t.merge(
            &refresh(
                vec![sandbox("sb1", "web-0", Some(100), "10.236.0.5")],
                vec![Container {
                    id: "c1".into(),
                    sandbox_id: "sb1".into(),
                    name: "app".into(),
                }],
            ),
            now,
        );
        t.procs.insert(
            7,
            Some(CgroupPod {
                pod_uid: "sb1-uid".into(),
                container_id: Some("c1".into()),
            }),
        );
        let PodAnswer::Pod(p) = t.answer(100, Some(7), Some(1)) else {
            panic!()
        };
        assert_eq!(p.to_string(), "shop/web-0/app");
        // Process unknown: the sandbox only.
        let PodAnswer::Pod(p) = t.answer(100, Some(8), Some(1)) else {
            panic!()
        };
        assert_eq!(p.container, None);
        // Another namespace: not a pod, unless a first lookup for it is still running.
        assert_eq!(t.answer(200, Some(7), Some(1)), PodAnswer::NotAPod);
        t.pending.insert(200);
        assert_eq!(
            t.answer(200, Some(7), Some(1)),
            PodAnswer::Unknown(STILL_LOOKING.into())
        );
        // A re-check of a namespace already found to hold no pod does not hold its lines.
        t.negative.insert(200, Instant::now());
        assert_eq!(t.answer(200, Some(7), Some(1)), PodAnswer::NotAPod);
        assert_eq!(t.by_ip.get(&"10.236.0.5".parse().unwrap()).unwrap(), "sb1");
    }

    #[test]
    fn one_answering_runtime_or_the_bundle_files_is_enough() {
        let err = |p: &str| (PathBuf::from(p), Err(format!("connecting to {p}: refused")));
        let mut r = Refresh {
            runtimes: vec![err("/a.sock"), (PathBuf::from("/b.sock"), Ok(2))],
            ..Refresh::default()
        };
        assert_eq!(r.down(), None, "several runtimes: one answering is enough");
        r.runtimes = vec![err("/a.sock"), err("/b.sock")];
        let why = r.down().unwrap();
        assert!(why.contains("/a.sock") && why.contains("/b.sock"), "{why}");
        r.from_files = Some(0);
        assert_eq!(r.down(), None, "the bundle files answered");
    }

    #[test]
    fn netns_paths_resolve_through_the_hosts_nsfs_mounts() {
        let mi = "24 1 0:22 / /run rw - tmpfs tmpfs rw\n\
                  48 47 0:4 net:[4026532174] /run/netns/cni-1 rw shared:2 - nsfs nsfs rw\n\
                  49 47 0:4 mnt:[4026532175] /run/netns/cni-2 rw - nsfs nsfs rw\n";
        assert_eq!(
            nsfs_inode(mi, Path::new("/var/run/netns/cni-1")),
            Some(4026532174)
        );
        assert_eq!(
            nsfs_inode(mi, Path::new("/run/netns/cni-1")),
            Some(4026532174)
        );
        // Not a network namespace, or not mounted.
        assert_eq!(nsfs_inode(mi, Path::new("/run/netns/cni-2")), None);
        assert_eq!(nsfs_inode(mi, Path::new("/run/netns/cni-3")), None);
        assert_eq!(nsfs_inode(mi, Path::new("/run")), None);
    }

    /// The kernel's cgroup ids by tgid, as a test sets them.
    struct FakeIds(HashMap<u32, u64>);

    impl CgroupIds for FakeIds {
        fn of(&self, tgid: u32) -> Option<u64> {
            self.0.get(&tgid).copied()
        }
    }

    /// Tgids no process can have (pid_max is at most 2^22): their /proc files never exist, as
    /// for a process that exited before its attempt was read.
    const GONE: u32 = 4_000_000_000;

    fn place_of(id: &str, uid: &str) -> CgroupPod {
        CgroupPod {
            pod_uid: uid.into(),
            container_id: Some(id.into()),
        }
    }

    #[test]
    fn exited_processes_are_placed_by_the_cgroup_they_connected_from() {
        let mut t = Table {
            cgroup_v2: true,
            ..Table::default()
        };
        let now = Instant::now();
        let ctr = |id: &str, sb: &str, name: &str| Container {
            id: id.into(),
            sandbox_id: sb.into(),
            name: name.into(),
        };
        t.merge(
            &refresh(
                vec![
                    sandbox("sb1", "web-0", Some(100), "10.236.0.5"),
                    sandbox("hn", "agent", None, "10.0.0.1"),
                ],
                vec![ctr("c1", "sb1", "app"), ctr("c2", "hn", "agent")],
            ),
            now,
        );
        t.merge_scan(
            cgroup::Scan {
                by_id: HashMap::from([
                    (500, place_of("c1", "sb1-uid")),
                    (501, place_of("c2", "hn-uid")),
                ]),
                truncated: false,
            },
            now,
        );
        t.unplaced.insert(778);
        let ids = FakeIds(HashMap::from([
            (GONE, 500),
            (GONE + 1, 501),
            (GONE + 2, 1),
            (GONE + 3, 777),
            (GONE + 4, 778),
        ]));
        let ids: Option<&dyn CgroupIds> = Some(&ids);
        assert_eq!(
            place(GONE, ids, &t),
            Placed::Known(Some(place_of("c1", "sb1-uid")))
        );
        // The root cgroup holds no pod; a cgroup not scanned yet waits for a scan; one a scan
        // did not find is no pod's; no id at all is unknown.
        assert_eq!(place(GONE + 2, ids, &t), Placed::Known(None));
        assert_eq!(place(GONE + 3, ids, &t), Placed::Unscanned(777));
        assert_eq!(place(GONE + 4, ids, &t), Placed::Known(None));
        assert_eq!(place(GONE + 5, ids, &t), Placed::Unknown);
        assert_eq!(place(GONE, None, &t), Placed::Unknown);
        // With no cgroup v2 tree, id 1 is every process's: it tells nothing.
        t.cgroup_v2 = false;
        assert_eq!(place(GONE + 2, ids, &t), Placed::Unknown);

        // Placed, they are named: the container in its pod's namespace, the hostNetwork pod
        // in the host's; a process in no pod's cgroup is not a pod even where the lookup of
        // its (new) namespace is still running.
        for p in [GONE, GONE + 1] {
            let Placed::Known(cg) = place(p, ids, &t) else {
                panic!()
            };
            t.procs.insert(p, cg);
        }
        t.procs.insert(GONE + 2, None);
        let name = |a: PodAnswer| match a {
            PodAnswer::Pod(p) => p.to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(name(t.answer(100, Some(GONE), Some(1))), "shop/web-0/app");
        assert_eq!(
            name(t.answer(1, Some(GONE + 1), Some(1))),
            "shop/agent/agent"
        );
        t.pending.insert(300);
        assert_eq!(t.answer(300, Some(GONE + 2), Some(1)), PodAnswer::NotAPod);
        t.down = Some("container runtime not answering".into());
        assert_eq!(t.answer(300, Some(GONE + 2), Some(1)), PodAnswer::NotAPod);
        t.down = None;
        // Unplaced, the same namespace is still being looked up.
        assert_eq!(
            t.answer(300, Some(GONE + 5), Some(1)),
            PodAnswer::Unknown(STILL_LOOKING.into())
        );
    }

    /// A container made after the last scan: its process exited before its attempt was read,
    /// and the scan its look causes finds the cgroup by id (a tree of plain directories shaped
    /// like the kubelet's).
    #[test]
    fn a_cgroup_made_since_the_last_scan_is_found_by_the_next() {
        let root = std::env::temp_dir().join(format!("netlat-pods-scan-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let uid = "1b2c3d4e-0000-4111-8222-333344445555";
        let cid = "3f7a2c1d9e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c";
        let dir = root.join(format!("kubepods/besteffort/pod{uid}/{cid}"));
        fs::create_dir_all(&dir).unwrap();
        let id = fs::metadata(&dir).unwrap().ino();
        let ids: Arc<dyn CgroupIds> = Arc::new(FakeIds(HashMap::from([
            (GONE, id),
            (GONE + 1, id + 1_000_000),
        ])));
        let table = Arc::new(Mutex::new(Table {
            cgroup_v2: true,
            ..Table::default()
        }));
        let mut w = Worker {
            table: Arc::clone(&table),
            reader: Reader::new(&PodSources::default()).unwrap(),
            ids: Some(ids),
            cgroup_roots: vec![root.clone()],
            last_scan: None,
            said_truncated: false,
        };
        w.place_processes(&[
            Ask::Look {
                netns: 100,
                tgid: Some(GONE),
            },
            Ask::Look {
                netns: 100,
                tgid: Some(GONE + 1),
            },
        ]);
        let t = lock(&table);
        let got = t.procs.get(&GONE).cloned().flatten().unwrap();
        assert_eq!(got.pod_uid, uid);
        assert_eq!(got.container_id.as_deref(), Some(cid));
        // Not in the tree: no pod's, and not looked for again.
        assert_eq!(t.procs.get(&(GONE + 1)), Some(&None));
        assert!(t.unplaced.contains(&(id + 1_000_000)));
        drop(t);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn host_network_pods_are_named_by_cgroup() {
        let mut t = Table::default();
        t.merge(
            &refresh(vec![sandbox("hn", "agent", None, "10.0.0.1")], vec![]),
            Instant::now(),
        );
        t.procs.insert(
            5,
            Some(CgroupPod {
                pod_uid: "hn-uid".into(),
                container_id: None,
            }),
        );
        t.procs.insert(6, None);
        let PodAnswer::Pod(p) = t.answer(1, Some(5), Some(1)) else {
            panic!()
        };
        assert_eq!(p.name, "agent");
        assert_eq!(t.answer(1, Some(6), Some(1)), PodAnswer::NotAPod);
        // The node's own address is no destination pod.
        assert!(t.by_ip.is_empty());
    }

    #[test]
    fn deleted_pods_stay_named_for_the_grace_period_and_a_down_runtime_is_said() {
        let mut t = Table::default();
        let t0 = Instant::now();
        t.merge(
            &refresh(
                vec![sandbox("sb1", "web-0", Some(100), "10.236.0.5")],
                vec![],
            ),
            t0,
        );
        // Deleted: the next refresh lists nothing.
        t.merge(&refresh(vec![], vec![]), t0 + Duration::from_secs(10));
        assert!(matches!(t.answer(100, None, Some(1)), PodAnswer::Pod(_)));
        t.merge(
            &refresh(vec![], vec![]),
            t0 + GRACE + Duration::from_secs(1),
        );
        assert_eq!(t.answer(100, None, Some(1)), PodAnswer::NotAPod);
        // Runtime down: known pods keep their names; unknown namespaces say why.
        t.merge(
            &refresh(
                vec![sandbox("sb2", "web-1", Some(101), "10.236.0.6")],
                vec![],
            ),
            t0,
        );
        let down = Refresh {
            runtimes: vec![("/x.sock".into(), Err("connection refused".into()))],
            ..Refresh::default()
        };
        t.merge(&down, t0 + Duration::from_secs(1));
        assert!(matches!(t.answer(101, None, Some(1)), PodAnswer::Pod(_)));
        let PodAnswer::Unknown(why) = t.answer(300, None, Some(1)) else {
            panic!()
        };
        assert!(why.contains("connection refused"), "{why}");
        // The host's own processes are still told apart by cgroup.
        assert_eq!(t.answer(1, None, Some(1)), PodAnswer::NotAPod);
    }

    /// A runtime that accepts and never answers: lines are answered at once (the lookup is
    /// still running), then with the reason, and the event loop never waits for it.
    #[test]
    fn a_hung_runtime_never_holds_a_line() {
        let dir = std::env::temp_dir().join(format!("netlat-pods-hung-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("hung.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let held = std::sync::Arc::new(Mutex::new(Vec::new()));
        let h = std::sync::Arc::clone(&held);
        thread::spawn(move || {
            for c in listener.incoming().flatten() {
                h.lock().unwrap().push(c);
            }
        });
        let sources = PodSources {
            sockets: vec![sock.clone()],
            bundle_dirs: vec![],
        };
        let mut cache = PodCache::start(&sources, None).unwrap();
        // A process that has exited: only the namespace's lookup could name it.
        cache.prefetch(4_000_000_001, GONE);
        // The worker is blocked on the runtime: the answer comes from the table, unnamed.
        assert_eq!(
            cache.pod(4_000_000_001, Some(GONE)),
            PodAnswer::Unknown(STILL_LOOKING.into())
        );
        // Once the calls time out, lines say why.
        let end = Instant::now() + Duration::from_secs(30);
        let why = loop {
            if let PodAnswer::Unknown(w) = cache.pod(4_000_000_001, None)
                && w != STILL_LOOKING
            {
                break w;
            }
            assert!(Instant::now() < end, "no reason after 30 s");
            thread::sleep(Duration::from_millis(50));
        };
        assert!(why.contains("not answering"), "{why}");
        assert!(why.contains(&sock.display().to_string()), "{why}");
        let _ = fs::remove_dir_all(&dir);
    }
}
