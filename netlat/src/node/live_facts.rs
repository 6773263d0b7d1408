//! Node facts joined to the catalog: the live [`NodeView`] the verdicts read (gathered lazily
//! per network namespace), and the exposure table `netlat doctor` prints — per catalog entry,
//! whether this node's configuration is exposed, and why.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    fs::File,
    net::SocketAddr,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::PathBuf,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use netlat_core::{
    facts::{NoEndpointRule, NodeFacts, RealServer, tcp_service},
    verdict::NodeView,
};

use crate::{
    node::netns::{NetnsIndex, own_netns},
    node::{
        self,
        services::{self, ServiceMap},
        snmp::TcpCounterView,
    },
};

/// How long a namespace's Service map is used before it is read again: Services come and go
/// during an incident, and one read per namespace and period keeps the cost bounded (a large
/// rule set takes tens of ms to read: BENCHMARKS.md, "Figures behind design choices").
const SERVICE_TTL: Duration = Duration::from_secs(30);
/// The longest a verdict waits for a namespace's first read from the moment it started (a
/// read normally takes milliseconds; a hung one must not stop the event loop). The read starts
/// when the namespace's first attempt arrives and its verdict is due at once: 3 s is the budget
/// the read had before attempts arrived at their first retransmit (1 s ahead, then 2 s). A
/// loaded TCG VM took 2.07 s for a first read.
const FIRST_READ_WAIT: Duration = Duration::from_secs(3);
/// IPPROTO_TCP: netlat watches TCP connects.
const TCP: u8 = 6;

/// Facts gathered for each network namespace a verdict asks about: started on a thread when
/// the namespace's first attempt reaches user space (its first SYN retransmit or slow end, when
/// a verdict is due at once: the read is waited for, a while), or read when first asked.
pub struct LiveFacts {
    index: RefCell<NetnsIndex>,
    cache: RefCell<HashMap<u32, FactsSlot>>,
    services: RefCell<HashMap<u32, ServiceCache>>,
    service_ttl: Duration,
    /// The namespace prefetched last: a storm of connects comes from one, and this check is all
    /// its connects cost.
    last_prefetch: Cell<Option<u32>>,
    /// Every namespace's TCP counters, sampled in the background (`listen-overflow`).
    tcp_counters: Option<TcpCounterView>,
}

/// A namespace's facts, or the gathering that will deliver them (started at `Instant`).
enum FactsSlot {
    Ready(Option<Box<NodeFacts>>),
    Pending(mpsc::Receiver<Option<Box<NodeFacts>>>, Instant),
}

impl Default for LiveFacts {
    fn default() -> Self {
        Self::with_service_ttl(SERVICE_TTL)
    }
}

/// One namespace's Service map and the read that will replace it.
struct ServiceCache {
    read_at: Instant,
    map: ServiceMap,
    /// A re-read running on its own thread; the old map answers until it lands.
    next: Option<mpsc::Receiver<ServiceMap>>,
    /// `map` is a placeholder until the first read (`next`, started by a prefetch) lands: a
    /// name is then worth waiting for.
    first: bool,
}

/// Run `read` on a thread of its own; `None` when no thread can be started (the caller then
/// reads when it needs the answer).
fn read_on_thread<T: Send + 'static>(
    name: &str,
    read: impl FnOnce() -> T + Send + 'static,
) -> Option<mpsc::Receiver<T>> {
    let (tx, rx) = mpsc::channel();
    match std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(read());
        }) {
        Ok(_) => Some(rx),
        Err(e) => {
            tracing::warn!("cannot start a {name} thread: {e}");
            None
        }
    }
}

/// The Service `dst` is in the client's namespace, or else in the node's own: a pod's
/// connect to a ClusterIP is translated by the host namespace's rules, not the pod's.
pub fn service_name(
    client: &ServiceMap,
    node: Option<&ServiceMap>,
    dst: SocketAddr,
) -> Option<String> {
    let key = (TCP, unmapped(dst.ip()), dst.port());
    client
        .name(&key)
        .or_else(|| node.and_then(|n| n.name(&key)))
        .map(str::to_string)
}

/// kube-proxy's no-endpoint rule for `dst` in the client's namespace, or else the node's.
pub fn no_endpoint_rule(
    client: &ServiceMap,
    node: Option<&ServiceMap>,
    dst: SocketAddr,
) -> Option<NoEndpointRule> {
    let key = (TCP, unmapped(dst.ip()), dst.port());
    client
        .no_endpoint(&key)
        .or_else(|| node.and_then(|n| n.no_endpoint(&key)))
        .cloned()
}

/// A dual-stack socket connecting to an IPv4 address reports it as ::ffff:a.b.c.d.
fn unmapped(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 @ std::net::IpAddr::V4(_) => v4,
    }
}

/// Reads the Service map at `target` (see [`LiveFacts::service_target`]). A namespace that
/// cannot be entered or read has an empty map until the next read, with a warning.
fn read_services(netns: u32, target: Result<Option<PathBuf>, String>) -> ServiceMap {
    let map = match target {
        Ok(None) => services::read().map_err(|e| e.to_string()),
        Ok(Some(path)) => match crate::node::netns::in_netns(&path, services::read) {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot enter {}: {e}", path.display())),
        },
        // The namespace is gone (or never had a path): nothing to warn about, as for facts.
        Err(e) => {
            tracing::debug!("Service names in netns {netns}: {e}");
            return ServiceMap::new();
        }
    };
    map.unwrap_or_else(|e| {
        tracing::warn!("Service names in netns {netns}: {e}");
        ServiceMap::new()
    })
}

/// Where a prefetch thread reads a namespace.
#[derive(Debug, Clone)]
enum At {
    /// netlat's own namespace: read in place.
    Own,
    /// The connecting process's `/proc/PID/ns/net`, checked against the inode and opened when
    /// the attempt arrived: the open file keeps the way in after the process exits. (An
    /// attempt arrives at its first retransmit or slow end, and a short-lived client exits
    /// right after its connect: a path opened later by the thread was often gone.)
    Held(Arc<File>),
    /// The process is gone: scan /proc on the thread for another way in.
    Scan,
}

impl At {
    /// A path into the namespace, valid while `self` lives.
    fn resolve(&self, netns: u32) -> Option<PathBuf> {
        match self {
            At::Own => Some(PathBuf::from("/proc/self/ns/net")),
            At::Held(f) => Some(PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))),
            At::Scan => crate::node::netns::find(netns),
        }
    }
}

impl LiveFacts {
    /// Live facts whose Service maps are re-read once older than `ttl`.
    pub fn with_service_ttl(ttl: Duration) -> Self {
        LiveFacts {
            index: RefCell::default(),
            cache: RefCell::default(),
            services: RefCell::default(),
            service_ttl: ttl,
            last_prefetch: Cell::new(None),
            tcp_counters: None,
        }
    }

    /// Answer `listen_overflow` from the namespaces' sampled TCP counters.
    #[must_use]
    pub fn with_tcp_counters(mut self, view: TcpCounterView) -> Self {
        self.tcp_counters = Some(view);
        self
    }

    /// Start reading `netns`'s facts and Service names (and the node's names, which a pod's
    /// Service connects resolve through) unless they are read or being read. The namespace's
    /// path comes from the connecting process, so no scan of /proc runs on the event loop.
    fn start_reads(&self, netns: u32, tgid: u32) {
        if self.cache.borrow().contains_key(&netns) {
            return;
        }
        // The process may be gone already (a short-lived client), or be a thread of another
        // namespace's task: then the reading thread looks for the namespace itself.
        let at = match File::open(format!("/proc/{tgid}/ns/net")) {
            Ok(f)
                if f.metadata()
                    .is_ok_and(|m| u32::try_from(m.ino()).ok() == Some(netns)) =>
            {
                At::Held(Arc::new(f))
            }
            _ => At::Scan,
        };
        let facts_at = at.clone();
        if let Some(rx) = read_on_thread("netlat-facts", move || {
            let t = Instant::now();
            let path = facts_at.resolve(netns)?;
            let facts = Box::new(node::gather_in_netns(&path));
            tracing::debug!("facts of netns {netns} read in {:?}", t.elapsed());
            Some(facts)
        }) {
            self.cache
                .borrow_mut()
                .insert(netns, FactsSlot::Pending(rx, Instant::now()));
        }
        let at = if Some(netns) == own_netns() {
            At::Own
        } else {
            at
        };
        self.prefetch_services(netns, at);
        if let Some(own) = own_netns().filter(|own| *own != netns) {
            self.prefetch_services(own, At::Own);
        }
    }

    fn prefetch_services(&self, netns: u32, at: At) {
        let mut all = self.services.borrow_mut();
        if all.contains_key(&netns) {
            return;
        }
        let read = move || {
            let target = match &at {
                At::Own => Ok(None),
                at => at
                    .resolve(netns)
                    .map(Some)
                    .ok_or_else(|| "no path to the namespace".to_owned()),
            };
            let map = read_services(netns, target);
            // The namespace is held open until its Services are read.
            drop(at);
            map
        };
        if let Some(rx) = read_on_thread("netlat-services", read) {
            all.insert(
                netns,
                ServiceCache {
                    read_at: Instant::now(),
                    map: ServiceMap::new(),
                    next: Some(rx),
                    first: true,
                },
            );
        }
    }

    /// Refresh the Service maps a connect from `netns` is named by: its own and, when it is not
    /// the node's, the node's (where kube-proxy writes its rules). The node's netns, if other.
    fn refresh_services_seen_from(&self, netns: u32) -> Option<u32> {
        let node = own_netns().filter(|own| *own != netns);
        self.refresh_services(netns);
        if let Some(own) = node {
            self.refresh_services(own);
        }
        node
    }

    /// Keeps the Service map of `netns` fresh. The first read blocks (the connect being
    /// reported wants its name); once the map is older than the TTL it is re-read on a
    /// thread of its own and replaced when that lands, so the event loop stalls at most once per
    /// namespace.
    fn refresh_services(&self, netns: u32) {
        let mut all = self.services.borrow_mut();
        let Some(cache) = all.get_mut(&netns) else {
            let target = self.service_target(netns);
            all.insert(
                netns,
                ServiceCache {
                    read_at: Instant::now(),
                    map: read_services(netns, target),
                    next: None,
                    first: false,
                },
            );
            return;
        };
        if cache.first
            && let Some(rx) = cache.next.take()
        {
            // The first read, started when the namespace's first connect began: wait for it.
            cache.map = rx.recv_timeout(FIRST_READ_WAIT).unwrap_or_else(|e| {
                tracing::warn!("Service names in netns {netns}: {e}");
                ServiceMap::new()
            });
            cache.read_at = Instant::now();
            cache.first = false;
        }
        if let Some(rx) = &cache.next {
            match rx.try_recv() {
                Ok(map) => {
                    cache.map = map;
                    cache.read_at = Instant::now();
                    cache.next = None;
                }
                Err(mpsc::TryRecvError::Empty) => {}
                // The reader ended without an answer: keep the old map, try again later.
                Err(mpsc::TryRecvError::Disconnected) => {
                    cache.read_at = Instant::now();
                    cache.next = None;
                }
            }
        }
        if cache.next.is_none() && cache.read_at.elapsed() >= self.service_ttl {
            let target = self.service_target(netns);
            match read_on_thread("netlat-services", move || read_services(netns, target)) {
                Some(rx) => cache.next = Some(rx),
                // Warned; the old map answers until the next period.
                None => cache.read_at = Instant::now(),
            }
        }
    }

    /// Where `netns`'s rules are read: here (netlat's own namespace) or through a path.
    fn service_target(&self, netns: u32) -> Result<Option<PathBuf>, String> {
        if Some(netns) == own_netns() {
            return Ok(None);
        }
        match self.index.borrow_mut().path(netns) {
            Some(path) => Ok(Some(path)),
            None => Err("no path to the namespace".into()),
        }
    }
}

impl LiveFacts {
    fn with<T>(&self, netns: u32, f: impl FnOnce(&NodeFacts) -> Option<T>) -> Option<T> {
        let mut cache = self.cache.borrow_mut();
        let slot = cache.entry(netns).or_insert_with(|| {
            FactsSlot::Ready(
                self.index
                    .borrow_mut()
                    .path(netns)
                    .map(|path| Box::new(node::gather_in_netns(&path))),
            )
        });
        if let FactsSlot::Pending(rx, started) = slot {
            // Started when the namespace's first attempt was shipped: wait for the rest of it,
            // up to FIRST_READ_WAIT from its start. A slower read is not given up: the
            // verdicts until it lands go without it, the later ones get it.
            let left = (*started + FIRST_READ_WAIT).saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(facts) => *slot = FactsSlot::Ready(facts),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if !left.is_zero() {
                        tracing::warn!(
                            "facts of netns {netns}: not read within {FIRST_READ_WAIT:?}; \
                             judged without them until they are"
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    tracing::warn!("facts of netns {netns}: the reader ended without them");
                    *slot = FactsSlot::Ready(None);
                }
            }
        }
        match slot {
            FactsSlot::Ready(facts) => facts.as_deref().and_then(f),
            FactsSlot::Pending(..) => None,
        }
    }
}

impl NodeView for LiveFacts {
    fn prefetch(&self, netns: u32, tgid: u32) {
        if self.last_prefetch.get() == Some(netns) {
            return;
        }
        self.last_prefetch.set(Some(netns));
        self.start_reads(netns, tgid);
    }
    fn masquerade(&self, netns: u32) -> Option<(usize, usize)> {
        self.with(netns, |f| f.masquerade(netns))
    }
    fn node_dnat(&self, netns: u32) -> bool {
        let Some(own) = own_netns().filter(|own| *own != netns) else {
            return false;
        };
        // The node's Service map, kept fresh (and prefetched when a pod's first connect
        // began) for Service names: it also says whether the node DNATs.
        self.refresh_services(own);
        self.services
            .borrow()
            .get(&own)
            .is_some_and(|c| c.map.dnats())
    }
    fn listen_overflow(
        &self,
        dst: SocketAddr,
        from_ns: u64,
        to_ns: u64,
    ) -> Option<netlat_core::facts::ListenEvidence> {
        self.tcp_counters
            .as_ref()?
            .listen_overflow(dst, from_ns, to_ns)
    }
    fn vxlan_offloaded(&self, netns: u32) -> Option<Vec<String>> {
        self.with(netns, |f| f.vxlan_offloaded(netns))
    }
    fn udp_timeout_s(&self, netns: u32) -> Option<u64> {
        self.with(netns, |f| f.udp_timeout_s(netns))
    }
    fn service(&self, netns: u32, dst: SocketAddr) -> Option<String> {
        let node = self.refresh_services_seen_from(netns);
        let maps = self.services.borrow();
        let client = &maps.get(&netns)?.map;
        service_name(
            client,
            node.and_then(|own| maps.get(&own)).map(|c| &c.map),
            dst,
        )
    }
    fn unnamed_ipvs_service(&self, netns: u32, dst: SocketAddr) -> bool {
        let node = self.refresh_services_seen_from(netns);
        let key = (TCP, unmapped(dst.ip()), dst.port());
        let maps = self.services.borrow();
        [Some(netns), node]
            .into_iter()
            .flatten()
            .filter_map(|n| maps.get(&n))
            .any(|c| c.map.unnamed_ipvs(&key))
    }
    fn no_endpoint_rule(&self, netns: u32, dst: SocketAddr) -> Option<NoEndpointRule> {
        let node = self.refresh_services_seen_from(netns);
        let maps = self.services.borrow();
        let client = &maps.get(&netns)?.map;
        no_endpoint_rule(
            client,
            node.and_then(|own| maps.get(&own)).map(|c| &c.map),
            dst,
        )
    }
    /// Read now, not from the cache: weights change during a rolling update, and the verdict
    /// must see the table as it is when the connect is judged.
    fn ipvs_real_servers(&self, netns: u32, vip: SocketAddr) -> Option<Vec<RealServer>> {
        let path = self.index.borrow_mut().path(netns)?;
        match node::ipvs_services_in_netns(&path) {
            Ok(Some(services)) => tcp_service(&services, vip),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!("IPVS services of netns {netns}: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_from_the_client_namespace_then_the_node() {
        let dns: SocketAddr = "10.96.0.10:53".parse().unwrap();
        let web: SocketAddr = "10.96.0.20:80".parse().unwrap();
        let mut node = ServiceMap::new();
        node.insert((TCP, dns.ip(), 53), "kube-system/kube-dns:dns-tcp".into());
        node.insert((TCP, web.ip(), 80), "default/web:http".into());
        // UDP only: a TCP connect to the same address and port is no such Service.
        node.insert((17, dns.ip(), 5353), "kube-system/mdns".into());
        let mut pod = ServiceMap::new();
        pod.insert((TCP, web.ip(), 80), "pod-local/web:http".into());
        assert_eq!(
            service_name(&pod, Some(&node), dns).as_deref(),
            Some("kube-system/kube-dns:dns-tcp")
        );
        assert_eq!(
            service_name(&pod, Some(&node), web).as_deref(),
            Some("pod-local/web:http")
        );
        assert_eq!(service_name(&pod, None, dns), None);
        assert_eq!(
            service_name(&pod, Some(&node), "[::ffff:10.96.0.10]:53".parse().unwrap()).as_deref(),
            Some("kube-system/kube-dns:dns-tcp")
        );
        assert_eq!(
            service_name(&pod, Some(&node), "10.96.0.10:5353".parse().unwrap()),
            None
        );
    }

    #[test]
    fn a_namespace_is_read_ahead_even_when_its_process_is_gone() {
        let own = own_netns().expect("netlat's own netns");
        let lf = LiveFacts::with_service_ttl(Duration::from_mins(1));
        // No process has this pid (pid_max is at most 2^22): the thread finds the way in.
        lf.prefetch(own, u32::MAX);
        assert!(matches!(
            lf.cache.borrow().get(&own),
            Some(FactsSlot::Pending(..))
        ));
        assert!(lf.services.borrow().contains_key(&own));
        // The read lands and answers the verdict's question.
        assert!(lf.masquerade(own).is_some());
        assert!(matches!(
            lf.cache.borrow().get(&own),
            Some(FactsSlot::Ready(Some(_)))
        ));
    }
}
