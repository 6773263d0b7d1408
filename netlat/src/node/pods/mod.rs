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
    /// Each process's place in the cgroup tree (`None`: not in a pod), read when it connects.
    procs: HashMap<u32, Option<CgroupPod>>,
    /// Namespaces asked about and not yet covered by a finished refresh.
    pending: HashSet<u32>,
    /// Namespaces a refresh did not find, and when.
    negative: HashMap<u32, Instant>,
    /// Why no source answered the last refresh.
    down: Option<String>,
    refreshes: u64,
}

impl Table {
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
    /// Starts the background thread (when there is a source) and its first refresh.
    pub fn start(sources: &PodSources) -> std::io::Result<Self> {
        let table = Arc::new(Mutex::new(Table::default()));
        let host_netns = netns_inode(Path::new("/proc/1/ns/net"))
            .or_else(|| netns_inode(Path::new("/proc/self/ns/net")));
        let tx = if sources.any() {
            let reader = Reader::new(sources)?;
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let t = Arc::clone(&table);
            thread::Builder::new()
                .name("netlat-pods".into())
                .spawn(move || worker(&t, reader, &rx))?;
            Some(tx)
        } else {
            None
        };
        Ok(Self {
            table,
            tx,
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
        // A reported line's process is read here, once: one small procfs file, no runtime call.
        if let Some(p) = tgid
            && !lock(&self.table).procs.contains_key(&p)
        {
            let cg = fs::read_to_string(format!("/proc/{p}/cgroup"))
                .ok()
                .and_then(|s| cgroup::parse(&s));
            let mut t = lock(&self.table);
            if t.procs.len() >= MAX_PROCS {
                t.procs.clear();
            }
            t.procs.insert(p, cg);
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

/// The background thread: refresh at start, on misses (rate-limited) and every [`PERIOD`].
fn worker(table: &Mutex<Table>, mut reader: Reader, rx: &mpsc::Receiver<Ask>) {
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
        // Cgroups first: the process may exit soon after its connect.
        let mut procs = Vec::new();
        let mut want_ns = HashSet::new();
        for Ask::Look { netns, tgid } in &asks {
            want_ns.insert(*netns);
            if let Some(p) = tgid {
                let cg = fs::read_to_string(format!("/proc/{p}/cgroup"))
                    .ok()
                    .and_then(|s| cgroup::parse(&s));
                procs.push((*p, cg));
            }
        }
        let stale = {
            let mut t = lock(table);
            if t.procs.len() + procs.len() > MAX_PROCS {
                t.procs.clear();
            }
            t.procs.extend(procs);
            // A look is needed for a namespace still unknown, or a container not yet listed.
            let unknown_container = t.procs.values().flatten().any(|c| {
                c.container_id
                    .as_ref()
                    .is_some_and(|id| !t.containers.contains_key(id))
                    && t.by_uid.contains_key(&c.pod_uid)
            });
            asks.is_empty() || unknown_container || want_ns.iter().any(|n| t.pending.contains(n))
        };
        if !stale {
            continue;
        }
        if let Some(l) = last {
            thread::sleep(MIN_GAP.saturating_sub(l.elapsed()));
        }
        let covered: Vec<u32> = lock(table).pending.iter().copied().collect();
        let r = reader.read();
        let now = Instant::now();
        last = Some(now);
        let mut t = lock(table);
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
        let mut cache = PodCache::start(&sources).unwrap();
        cache.prefetch(4_000_000_001, std::process::id());
        // The worker is blocked on the runtime: the answer comes from the table, unnamed.
        assert_eq!(
            cache.pod(4_000_000_001, Some(std::process::id())),
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
