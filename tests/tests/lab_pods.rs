//! Pod lab: a real containerd (CRI) + runc + CNI bridge started by the test, pods made through
//! CRI, and netlat naming them on its lines. A first-SYN-drop rule in the server pod's own
//! network namespace makes each new flow to it ~1 s slow.
//!
//! Cases: a pod's slow connect carries namespace, name, uid and container, and its destination
//! pod; each container of a two-container pod is named right; a hostNetwork pod's process is
//! named by its cgroup; a plain `ip netns` namespace gets no `pod`; a pod deleted while its slow
//! connect is in flight is still named; the replay names the same pods; with the runtime stopped
//! mid-run lines still come, with a `pod_missing` note; a ClusterIP connect DNATed by the node
//! (a rule in the host's namespace, as kube-proxy's) names the backend pod as `dst_pod`.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use netlat_tests::{
    Netns, Watch, cri::Containerd, first_syn_drop, is_root, json_lines, netlat_unprivileged,
    sh_stdin,
};

const PORT: u16 = 8080;
/// Every SYN to this port is dropped: a connect that stays in SYN_SENT.
const BLACKHOLE: u16 = 8082;

fn require() {
    assert!(is_root(), "the lab tests need root");
    if let Some(why) = netlat_tests::cri::missing_tools() {
        panic!("the pod lab needs a container runtime: {why}");
    }
}

/// Load an nftables ruleset into the network namespace at `path`.
fn nft_in(path: &Path, ruleset: &str) {
    sh_stdin(
        &[
            "nsenter",
            &format!("--net={}", path.display()),
            "nft",
            "-f",
            "-",
        ],
        ruleset,
    );
}

/// A plain namespace on the pod bridge at `ip` (not a pod: made with `ip netns`).
fn plain_netns(tag: &str, bridge_of: &Containerd, ip: &str) -> Netns {
    let ns = Netns::new(tag);
    let host_end = format!("nlp{}{tag}", std::process::id() % 10_000);
    netlat_tests::sh(&[
        "ip", "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ]);
    netlat_tests::sh(&["ip", "link", "set", &host_end, "master", bridge_of.bridge()]);
    netlat_tests::sh(&["ip", "link", "set", &host_end, "up"]);
    ns.ip(&["addr", "add", ip, "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns
}

/// A TCP connect from a container to `ip:port` by a process that exits as soon as it is
/// established (busybox `nc` with no input; its `wget` needs NSS files the one-binary image does
/// not have). netlat hears of the attempt at its first SYN retransmit, a moment before the
/// process is gone: its container comes from the cgroup the kernel saw it connect from.
fn nc(ip: &str, port: u16, timeout_s: u32) -> Vec<String> {
    vec![
        "/bin/busybox".to_string(),
        "sh".to_string(),
        "-c".to_string(),
        format!("/bin/busybox nc -w {timeout_s} {ip} {port} </dev/null"),
    ]
}

fn exec_connect(cd: &mut Containerd, pod: &netlat_tests::cri::Pod, c: &str, ip: &str) -> Duration {
    let cmd = nc(ip, PORT, 5);
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let (code, out) = cd.exec(pod, c, &argv, 10);
    let t = t0.elapsed();
    assert_eq!(code, 0, "{c}: connect to {ip} failed: {out}");
    t
}

/// The slow connect lines to `dst` whose pid's command is wget/busybox, in order.
fn slow_to<'a>(lines: &'a [serde_json::Value], dst: &str) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "connect" && l["dst"] == dst)
        .collect()
}

fn pod_of(l: &serde_json::Value) -> String {
    let p = &l["pod"];
    if p.is_null() {
        return String::new();
    }
    let mut s = format!(
        "{}/{}",
        p["namespace"].as_str().unwrap_or("?"),
        p["name"].as_str().unwrap_or("?")
    );
    if let Some(c) = p["container"].as_str() {
        s.push('/');
        s.push_str(c);
    }
    s
}

#[test]
fn lab_pods_are_named_on_their_lines() {
    require();
    let mut cd = Containerd::start("pods", 1);
    let db = cd.run_pod("shop", "db-0", &["db"], false);
    let db_ip = db.ip.clone().expect("the server pod has an IP");
    cd.exec(
        &db,
        "db",
        &["/bin/busybox", "httpd", "-p", &PORT.to_string(), "-h", "/"],
        5,
    );
    let db_ns = cd.netns_path(&db);
    nft_in(&db_ns, &first_syn_drop("labpods", PORT));
    nft_in(
        &db_ns,
        &format!(
            "table inet labhole {{\n  chain in {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {BLACKHOLE} drop\n  }}\n}}\n"
        ),
    );
    let web = cd.run_pod("shop", "web-0", &["app", "sidecar"], false);
    let agent = cd.run_pod("kube-system", "agent", &["agent"], true);
    let plain = plain_netns("pp", &cd, "10.236.1.250/24");

    let recording = std::env::temp_dir().join(format!("netlat-labpods-{}.rec", std::process::id()));
    let _cleanup = RemoveOnDrop(recording.clone());
    let rec_arg = recording.display().to_string();
    let sock = cd.socket.display().to_string();
    let mut watch = Watch::start(&["--cri-socket", &sock, "--record", &rec_arg]);

    let dst = format!("{db_ip}:{PORT}");
    for c in ["app", "sidecar"] {
        let t = exec_connect(&mut cd, &web, c, &db_ip);
        assert!(
            t >= Duration::from_millis(900),
            "{c}: the first SYN was not dropped ({t:?})"
        );
    }
    let t = exec_connect(&mut cd, &agent, "agent", &db_ip);
    assert!(t >= Duration::from_millis(900), "agent: {t:?}");
    plain.run(&["busybox", "nc", "-w", "5", &db_ip, &PORT.to_string()]);

    // A job pod whose connect is still in SYN_SENT when the pod is deleted: the line comes as
    // the pod dies, and names it.
    let job = cd.run_pod("batch", "job-7", &["job"], false);
    cd.exec(
        &job,
        "job",
        &[
            "/bin/busybox",
            "sh",
            "-c",
            &format!("/bin/busybox nc -w 30 {db_ip} {BLACKHOLE} </dev/null >/dev/null 2>&1 &"),
        ],
        5,
    );
    std::thread::sleep(Duration::from_millis(1500));
    cd.remove_pod(&job);
    let job_line = watch.wait_for(
        |l| l["type"] == "connect" && l["dst"] == format!("{db_ip}:{BLACKHOLE}"),
        Duration::from_secs(10),
    );
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly");

    let slow = slow_to(&lines, &dst);
    let names: Vec<String> = slow.iter().map(|l| pod_of(l)).collect();
    // Each client process has exited by the time netlat hears of its attempt (at the first
    // SYN retransmit): the containers and the hostNetwork pod come from the cgroup the kernel
    // saw each connect from.
    assert_eq!(
        names,
        [
            "shop/web-0/app",
            "shop/web-0/sidecar",
            "kube-system/agent/agent",
            ""
        ],
        "{lines:#?}"
    );
    for l in &slow[..2] {
        assert_eq!(l["pod"]["uid"], web.uid.as_str());
        assert_eq!(l["dst_pod"]["name"], "db-0", "{l}");
        assert_eq!(l["dst_pod"]["namespace"], "shop");
        assert!(l["dst_pod"].get("container").is_none(), "{l}");
        assert!(l["netns"].as_u64().is_some(), "the inode stays: {l}");
        assert!(l.get("pod_missing").is_none(), "{l}");
    }
    assert_eq!(slow[2]["pod"]["uid"], agent.uid.as_str());
    assert!(slow[2].get("pod_missing").is_none(), "{}", slow[2]);
    // The plain namespace: no pod, and nothing missing either.
    assert_eq!(slow[3]["netns"].as_u64(), Some(plain.inode()));
    assert!(
        slow[3].get("pod").is_none() && slow[3].get("pod_missing").is_none(),
        "{}",
        slow[3]
    );

    let job_line = job_line.expect("a line for the deleted job pod's connect");
    assert_eq!(pod_of(&job_line), "batch/job-7/job", "{job_line}");

    // The replay names the same pods, unprivileged and with no runtime.
    let out = netlat_unprivileged(&["replay", "--output", "json", &rec_arg]);
    assert!(out.status.success(), "replay failed: {out:?}");
    let replayed = json_lines(&out);
    let pods = |v: &[serde_json::Value]| -> Vec<(String, String)> {
        v.iter()
            .filter(|l| l["type"] == "connect")
            .map(|l| (pod_of(l), l["dst_pod"].to_string()))
            .collect()
    };
    assert_eq!(pods(&replayed), pods(&lines));
    // The human line names the pod where it showed the netns.
    let out = netlat_unprivileged(&["replay", &rec_arg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pod shop/web-0/app"), "{text}");
    assert!(text.contains("(pod shop/db-0)"), "{text}");

    // doctor finds the runtime and counts its pods (db, web, agent).
    let out = Command::new(netlat_tests::netlat_bin())
        .args(["doctor", "--output", "json", "--cri-socket", &sock])
        .output()
        .expect("run doctor");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    assert_eq!(v["pods"]["runtimes"][0]["pods"], 3, "{}", v["pods"]);
    assert_eq!(v["pods"]["nameable"], 3);
    // The cgroup v2 tree holds this test's 7 container cgroups (4 containers, 3 sandboxes),
    // and those of any parallel test.
    assert!(
        v["pods"]["container_cgroups"].as_u64() >= Some(7),
        "{}",
        v["pods"]
    );
}

#[test]
fn lab_pods_runtime_stopped_mid_run_costs_a_note_not_a_line() {
    require();
    let mut cd = Containerd::start("podsdown", 2);
    let db = cd.run_pod("shop", "db-1", &["db"], false);
    let db_ip = db.ip.clone().expect("the server pod has an IP");
    cd.exec(
        &db,
        "db",
        &["/bin/busybox", "httpd", "-p", &PORT.to_string(), "-h", "/"],
        5,
    );
    nft_in(&cd.netns_path(&db), &first_syn_drop("labpods", PORT));
    let web = cd.run_pod("shop", "web-1", &["app"], false);
    // A connect the app container makes later, when the file /go appears in its root (the
    // runtime will be down by then, so it cannot be an exec).
    cd.exec(
        &web,
        "app",
        &[
            "/bin/busybox",
            "sh",
            "-c",
            &format!(
                "(while [ ! -e /go ]; do /bin/busybox sleep 0.1; done; /bin/busybox nc -w 5 {db_ip} {PORT} </dev/null) >/dev/null 2>&1 &"
            ),
        ],
        5,
    );
    let sock = cd.socket.display().to_string();
    let watch = Watch::start(&["--cri-socket", &sock]);
    exec_connect(&mut cd, &web, "app", &db_ip);
    // The runtime dies; its pods keep running.
    cd.stop_daemon();
    // A pod the cache never heard of (its cgroup says pod, its namespace is new): with the
    // runtime down it cannot be named. Twice: the first line may come before netlat has
    // tried the runtime (`pod lookup still running`); the second comes after.
    let plain = plain_netns("pd", &cd, "10.236.2.250/24");
    let unnamed = PodCgroup::new();
    for _ in 0..2 {
        let t0 = Instant::now();
        unnamed.run_in(&format!(
            "ip netns exec {} busybox nc -w 5 {db_ip} {PORT} </dev/null",
            plain.name
        ));
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "the connect itself must not wait"
        );
    }
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly");
    let dst = format!("{db_ip}:{PORT}");
    let slow = slow_to(&lines, &dst);
    assert_eq!(slow.len(), 3, "every line comes: {lines:#?}");
    assert_eq!(pod_of(slow[0]), "shop/web-1/app", "{}", slow[0]);
    // Not named, and the line says why.
    for l in &slow[1..] {
        assert!(l.get("pod").is_none(), "{l}");
    }
    let first = slow[1]["pod_missing"].as_str().unwrap_or_default();
    assert!(
        first.contains("not answering") || first == "pod lookup still running",
        "{}",
        slow[1]
    );
    let why = slow[2]["pod_missing"].as_str().unwrap_or_default();
    assert!(why.contains("not answering"), "{}", slow[2]);
    assert!(why.contains(&sock), "{}", slow[2]);

    // A netlat started while the runtime is down names pods from the runtime's bundle files.
    let bundles = cd.bundle_dir().display().to_string();
    let env = [("NETLAT_CRI_BUNDLES", bundles.as_str())];
    let out = Command::new(netlat_tests::netlat_bin())
        .envs(env)
        .args(["doctor", "--output", "json", "--cri-socket", &sock])
        .output()
        .expect("run doctor");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    assert!(
        v["pods"]["runtimes"][0]["error"].is_string(),
        "{}",
        v["pods"]
    );
    assert_eq!(v["pods"]["from_files"], 2, "{}", v["pods"]);
    let mut watch = Watch::start_env(&env, &["--cri-socket", &sock]);
    let app = web.containers.get("app").expect("app container");
    std::fs::write(cd.bundle_dir().join(app).join("rootfs/go"), b"").expect("trigger file");
    let line = watch.wait_for(
        |l| l["type"] == "connect" && l["dst"] == dst.as_str(),
        Duration::from_secs(10),
    );
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly");
    let line = line.unwrap_or_else(|| panic!("no line for the app's connect: {lines:#?}"));
    assert_eq!(pod_of(&line), "shop/web-1/app", "{line}");
    assert_eq!(line["pod"]["uid"], web.uid.as_str());
}

/// A pod's cgroup of the test's own in the cgroup v2 tree (`kubepods/besteffort/pod<uid>`, as
/// the kubelet's cgroupfs driver names it) with no pod behind it in any runtime; removed on
/// drop (its processes have exited by then).
struct PodCgroup(std::path::PathBuf);

impl PodCgroup {
    fn new() -> PodCgroup {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let root = mi
            .lines()
            .find_map(|l| {
                let (fields, fstype) = l.split_once(" - ")?;
                let f: Vec<&str> = fields.split(' ').collect();
                (fstype.starts_with("cgroup2 ") && f.get(3) == Some(&"/")).then(|| f[4].to_owned())
            })
            .expect("the pod lab needs the cgroup v2 tree mounted (v2 or hybrid host)");
        let uid = format!(
            "0e7a11ab-{:04x}-4000-8000-00000000beef",
            std::process::id() % 0x1_0000
        );
        let dir = Path::new(&root).join(format!("kubepods/besteffort/pod{uid}"));
        std::fs::create_dir_all(&dir).expect("create the pod cgroup");
        PodCgroup(dir)
    }

    /// Run `script` (sh) with its process moved into this cgroup first.
    fn run_in(&self, script: &str) {
        netlat_tests::sh(&[
            "sh",
            "-c",
            &format!("echo $$ > {}/cgroup.procs && {script}", self.0.display()),
        ]);
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
        // The QoS and kubepods levels, when no pod of a parallel test is left in them.
        if let Some(qos) = self.0.parent() {
            let _ = std::fs::remove_dir(qos);
            if let Some(top) = qos.parent() {
                let _ = std::fs::remove_dir(top);
            }
        }
    }
}

/// A made-up ClusterIP and port the node DNATs to the server pod.
const CLUSTER_IP: &str = "10.236.250.10";
const CLUSTER_PORT: u16 = 80;

/// An nftables table of the test's own in the host's namespace, deleted on drop (the host's
/// other rules are never touched).
struct HostTable(String);

impl HostTable {
    fn load(name: &str, body: &str) -> HostTable {
        sh_stdin(
            &["nft", "-f", "-"],
            &format!("table ip {name} {{\n{body}}}\n"),
        );
        HostTable(name.to_owned())
    }
}

impl Drop for HostTable {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.0])
            .status();
    }
}

/// A pod connects to a ClusterIP; the pod's namespace has no NAT, the node DNATs it (as
/// kube-proxy does) and only the node's conntrack knows the backend. The first SYN is dropped
/// in the client pod's own OUTPUT, so the one dropped packet carries the ClusterIP: the
/// backend pod can only be named from the node's conntrack.
#[test]
fn lab_pods_clusterip_dnated_by_the_node_names_the_backend_pod() {
    require();
    let mut cd = Containerd::start("podsnat", 3);
    let db = cd.run_pod("shop", "db-2", &["db"], false);
    let db_ip = db.ip.clone().expect("the server pod has an IP");
    cd.exec(
        &db,
        "db",
        &["/bin/busybox", "httpd", "-p", &PORT.to_string(), "-h", "/"],
        5,
    );
    let web = cd.run_pod("shop", "web-2", &["app"], false);
    let web_ns = cd.netns_path(&web);
    nft_in(
        &web_ns,
        &format!(
            "table inet labclient {{\n  set seen {{ type ipv4_addr . inet_service; flags dynamic,timeout; timeout 60s; }}\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    tcp dport {CLUSTER_PORT} tcp flags & (syn|ack) == syn ip daddr . tcp sport @seen accept\n    tcp dport {CLUSTER_PORT} tcp flags & (syn|ack) == syn add @seen {{ ip daddr . tcp sport }} drop\n  }}\n}}\n"
        ),
    );
    // The lab's CNI config gives pods no default route: the ClusterIP goes to the bridge's
    // gateway (the node, host-local's first address), with no ICMP redirect taking it off the
    // node.
    let gateway = cd.subnet.replace(".0/24", ".1");
    let in_web = |argv: &[&str]| {
        let mut a = vec!["nsenter".to_owned(), format!("--net={}", web_ns.display())];
        a.extend(argv.iter().map(|s| (*s).to_owned()));
        netlat_tests::sh(&a.iter().map(String::as_str).collect::<Vec<_>>());
    };
    in_web(&[
        "ip",
        "route",
        "add",
        &format!("{CLUSTER_IP}/32"),
        "via",
        &gateway,
    ]);
    for conf in ["all", "eth0"] {
        in_web(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{conf}.accept_redirects=0"),
        ]);
    }
    let table = format!("netlat_dstpod_{}", std::process::id());
    let _dnat = HostTable::load(
        &table,
        &format!(
            "  chain pre {{\n    type nat hook prerouting priority -100; policy accept;\n    ip daddr {CLUSTER_IP} tcp dport {CLUSTER_PORT} dnat to {db_ip}:{PORT}\n  }}\n"
        ),
    );

    let recording =
        std::env::temp_dir().join(format!("netlat-labpodsnat-{}.rec", std::process::id()));
    let _cleanup = RemoveOnDrop(recording.clone());
    let rec_arg = recording.display().to_string();
    let sock = cd.socket.display().to_string();
    let watch = Watch::start(&["--cri-socket", &sock, "--record", &rec_arg]);

    let cmd = nc(CLUSTER_IP, CLUSTER_PORT, 5);
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let (code, out) = cd.exec(&web, "app", &argv, 10);
    let t = t0.elapsed();
    assert_eq!(code, 0, "connect to the ClusterIP failed: {out}");
    assert!(
        t >= Duration::from_millis(900),
        "the first SYN was not dropped ({t:?})"
    );
    // The connect line comes when netlat has drained the attempt's end: wait for it rather
    // than stop at once (a stop then reads a still-queued attempt as pending).
    let mut watch = watch;
    let _ = watch.wait_for(
        |l| l["type"] == "connect" && l["dst"] == format!("{CLUSTER_IP}:{CLUSTER_PORT}"),
        Duration::from_secs(10),
    );
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly");

    let slow = slow_to(&lines, &format!("{CLUSTER_IP}:{CLUSTER_PORT}"));
    assert_eq!(slow.len(), 1, "{lines:#?}");
    let l = slow[0];
    assert_eq!(l["pod"]["name"], "web-2", "{l}");
    // The line keeps the address dialled and names the pod behind it.
    assert_eq!(l["dst_pod"]["name"], "db-2", "{l}");
    assert_eq!(l["dst_pod"]["namespace"], "shop", "{l}");
    assert_eq!(l["dst_pod"]["uid"], db.uid.as_str(), "{l}");
    // The only drop carries the ClusterIP: the name came from the node's conntrack.
    let drops = l["drops"].as_array().cloned().unwrap_or_default();
    assert!(
        drops
            .iter()
            .all(|d| !d.to_string().contains(&format!("\"{db_ip}:"))),
        "a drop after DNAT would name the pod by itself: {l}"
    );

    // The replay names the same pod behind the ClusterIP, with no node to ask.
    let out = netlat_unprivileged(&["replay", "--output", "json", &rec_arg]);
    assert!(out.status.success(), "replay failed: {out:?}");
    let replayed = json_lines(&out);
    let again = slow_to(&replayed, &format!("{CLUSTER_IP}:{CLUSTER_PORT}"));
    assert_eq!(again.len(), 1, "{replayed:#?}");
    assert_eq!(again[0]["dst_pod"], l["dst_pod"]);
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The DaemonSet gives netlat the runtime sockets and the host's cgroup tree (read-only) and
/// keeps the host's PID namespace, where /proc/PID/cgroup and /proc/PID/ns/net of every pod are.
#[test]
fn daemonset_mounts_the_runtime_sockets_read_only() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/daemonset.yaml");
    let ds = text
        .split("\n---\n")
        .find(|d| d.contains("kind: DaemonSet"))
        .expect("a DaemonSet");
    let v: serde_json::Value = serde_norway::from_str(ds).expect("YAML");
    let spec = &v["spec"]["template"]["spec"];
    assert_eq!(spec["hostPID"], true);
    let mounts = spec["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts");
    let volumes = spec["volumes"].as_array().expect("volumes");
    for sock in ["/run/containerd/containerd.sock", "/var/run/crio/crio.sock"] {
        let m = mounts
            .iter()
            .find(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|p| sock.starts_with(&format!("{p}/")))
            })
            .unwrap_or_else(|| panic!("no mount holds {sock}"));
        assert_eq!(m["readOnly"], true, "{m}");
        let vol = volumes
            .iter()
            .find(|x| x["name"] == m["name"])
            .expect("its volume");
        assert_eq!(vol["hostPath"]["path"], m["mountPath"], "{vol}");
    }
    // The host's cgroup tree, where the cgroup ids the kernel records at connect() are.
    let cg = mounts
        .iter()
        .find(|m| m["mountPath"] == "/host/sys/fs/cgroup")
        .expect("the host's cgroup tree is mounted");
    assert_eq!(cg["readOnly"], true, "{cg}");
    let vol = volumes
        .iter()
        .find(|x| x["name"] == cg["name"])
        .expect("its volume");
    assert_eq!(vol["hostPath"]["path"], "/sys/fs/cgroup", "{vol}");
}
