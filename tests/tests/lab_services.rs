//! Service lab: kube-proxy-style rules (iptables mode) in a client namespace DNAT a ClusterIP to a
//! backend whose namespace drops the first SYN of every new flow (the foundation's recipe), so
//! each connect to the ClusterIP takes ~1 s. One client's rules are written with `iptables-nft`,
//! the other's with `iptables-legacy` (when installed). netlat must name the Service on each
//! connect line (read from the rules, no API server), not on a connect to the backend's own
//! address, and the recording, the interval log and `netlat report` must carry it too.
//!
//! Timing bounds are loose (up to 2.5 s for a 1 s retry: the machine is shared and the lab tests
//! run side by side); the 1 s ladder itself is lab_first_syn.rs's to check.

use std::{process::Command, time::Duration};

use netlat_tests::{
    Netns, TempDir, Watch, connect_times, connects_to, first_syn_drop, has_tool, is_root,
    json_lines, netlat_bin, netlat_unprivileged, tcp_server, veth,
};

/// One client namespace with its own kube-proxy backend.
struct Client {
    ns: Netns,
    cluster_ip: &'static str,
    service: &'static str,
    backend: String,
}

/// kube-proxy's rule shape in `ns`, written with `tool` (iptables-nft or iptables-legacy):
/// `entry` (OUTPUT for the namespace's own connects, PREROUTING for forwarded ones) →
/// KUBE-SERVICES → the commented ClusterIP rule → KUBE-SVC → DNAT to `backend`:8080, and the
/// nodeports rule kube-proxy always ends KUBE-SERVICES with.
fn kube_proxy_rules(
    ns: &Netns,
    tool: &str,
    entry: &str,
    cluster_ip: &str,
    service: &str,
    backend: &str,
) {
    let svc_chain = "KUBE-SVC-LABWEB";
    let comment = format!("{service} cluster IP");
    let dnat = format!("{backend}:8080");
    let cluster = format!("{cluster_ip}/32");
    for rule in [
        vec!["-N", "KUBE-SERVICES"],
        vec!["-N", "KUBE-NODEPORTS"],
        vec!["-N", svc_chain],
        vec![
            "-A",
            entry,
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
        vec![
            "-A",
            "KUBE-SERVICES",
            "-d",
            &cluster,
            "-p",
            "tcp",
            "-m",
            "comment",
            "--comment",
            &comment,
            "-m",
            "tcp",
            "--dport",
            "80",
            "-j",
            svc_chain,
        ],
        vec![
            "-A",
            "KUBE-SERVICES",
            "-m",
            "comment",
            "--comment",
            "kubernetes service nodeports; NOTE: this must be the last rule in this chain",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "KUBE-NODEPORTS",
        ],
        vec![
            "-A",
            svc_chain,
            "-p",
            "tcp",
            "-j",
            "DNAT",
            "--to-destination",
            &dnat,
        ],
    ] {
        let mut args = vec![tool, "-t", "nat"];
        args.extend(rule);
        ns.run(&args);
    }
}

/// A client on `10.238.<net>.0/24` whose own `tool` rules DNAT `cluster_ip`:80 to the server.
fn client(
    server: &Netns,
    tool: &str,
    net: u8,
    cluster_ip: &'static str,
    service: &'static str,
) -> Client {
    let ns = Netns::new(&format!("sv{net}"));
    let pid = std::process::id();
    veth(
        &ns,
        &format!("sv{pid}{net}a"),
        &format!("10.238.{net}.1/24"),
        server,
        &format!("sv{pid}{net}b"),
        &format!("10.238.{net}.2/24"),
    );
    let backend = format!("10.238.{net}.2");
    // Locally made packets are routed before nat OUTPUT rewrites them: the ClusterIP needs one.
    ns.ip(&["route", "add", "default", "via", &backend]);
    kube_proxy_rules(&ns, tool, "OUTPUT", cluster_ip, service, &backend);
    Client {
        ns,
        cluster_ip,
        service,
        backend,
    }
}

#[test]
fn lab_connect_lines_name_the_kubernetes_service() {
    assert!(is_root(), "the lab tests need root");
    assert!(
        has_tool("iptables-nft"),
        "iptables-nft is needed (Debian's iptables package)"
    );
    let server = Netns::new("svs");
    server.nft(&first_syn_drop("labsvc", 8080));
    let mut clients = vec![client(
        &server,
        "iptables-nft",
        1,
        "10.96.0.10",
        "default/web:http",
    )];
    if has_tool("iptables-legacy") {
        clients.push(client(
            &server,
            "iptables-legacy",
            2,
            "10.96.0.11",
            "default/web-legacy:http",
        ));
    } else {
        eprintln!("iptables-legacy is not installed: only the iptables-nft backend is tested");
    }
    let _srv = tcp_server(&server, &[8080]);

    let dir = TempDir::new("svc");
    let rec = dir.0.join("svc.rec").display().to_string();
    let hlog = dir.0.join("svc.hlog").display().to_string();
    let watch = Watch::start(&["--record", &rec, "--hlog", &hlog]);
    for c in &clients {
        // Twice through the Service, then once to the backend's own address: same drop, no
        // Service.
        let times = connect_times(
            &c.ns,
            &[(c.cluster_ip, 80), (c.cluster_ip, 80), (&c.backend, 8080)],
            10.0,
        );
        assert_eq!(times.len(), 3, "client output: {times:?}");
        for t in &times {
            let t = t.expect("connect failed");
            assert!((0.9..2.5).contains(&t), "connect took {t} s");
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly on SIGINT");

    for c in &clients {
        let via_service = connects_to(&lines, &format!("{}:80", c.cluster_ip));
        assert_eq!(via_service.len(), 2, "{lines:#?}");
        for l in via_service {
            assert_eq!(l["service"], c.service, "{l}");
            assert_eq!(l["netns"].as_u64(), Some(c.ns.inode()));
            assert_eq!(l["syn_retransmits"], 1, "{l}");
            let ms = l["connect_ms"].as_f64().expect("connect_ms");
            assert!((900.0..2500.0).contains(&ms), "connect_ms {ms}");
        }
        let direct = connects_to(&lines, &format!("{}:8080", c.backend));
        assert_eq!(direct.len(), 1, "{lines:#?}");
        assert!(direct[0].get("service").is_none(), "{}", direct[0]);
    }
    // The summary's retry delay: one entry per slow connect with a retry (the watch also sees
    // other tests' connects, so count them from its own lines), ~1 s each here.
    let hist = lines
        .iter()
        .rfind(|v| v["type"] == "histogram")
        .expect("histogram line");
    let delay = &hist["syn_retry_delay"];
    let retried = lines
        .iter()
        .filter(|l| l["type"] == "connect" && l["syn_retransmits"].as_u64() > Some(0))
        .count();
    assert!(retried >= 3 * clients.len(), "{lines:#?}");
    assert_eq!(delay["all"]["count"].as_u64(), Some(retried as u64));
    let p50 = delay["all"]["p50_ms"].as_f64().expect("p50");
    assert!((900.0..2500.0).contains(&p50), "{delay}");
    let key = format!("{}:80 ({})", clients[0].cluster_ip, clients[0].service);
    assert_eq!(delay["by_dst"][&key]["count"], 2, "{delay}");
    assert_eq!(hist["by_dst"][&key]["count"], 2, "{hist}");

    // The recording replays to the same lines, Services included, with no privileges.
    let out = netlat_unprivileged(&["replay", "--output", "json", &rec]);
    assert!(out.status.success(), "replay failed: {out:?}");
    let replayed = json_lines(&out);
    let connects = |v: &[serde_json::Value]| -> Vec<serde_json::Value> {
        v.iter()
            .filter(|l| l["type"] == "connect")
            .cloned()
            .collect()
    };
    assert_eq!(connects(&replayed), connects(&lines), "replay differs");

    // The interval log and its report carry the Service and the retry delay.
    let out = Command::new(netlat_bin())
        .args(["report", &hlog])
        .output()
        .expect("run report");
    assert!(out.status.success(), "report failed: {out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&key), "{table}");
    let retry = table
        .split("SYN retry delay")
        .nth(1)
        .unwrap_or_else(|| panic!("no retry-delay section: {table}"));
    assert!(retry.contains(&key), "{table}");
}

/// The node's topology: the rules live in the node's namespace (where netlat runs), the client
/// is a pod with a namespace of its own routed through the node, the backend another namespace.
/// The pod's namespace holds no rules, so the Service must come from the node's.
#[test]
fn lab_pod_connects_are_named_from_the_node_rules() {
    assert!(is_root(), "the lab tests need root");
    assert!(
        has_tool("iptables-nft"),
        "iptables-nft is needed (Debian's iptables package)"
    );
    let node = Netns::new("svnode");
    let pod = Netns::new("svpod");
    let backend = Netns::new("svbe");
    let pid = std::process::id();
    veth(
        &pod,
        &format!("sp{pid}a"),
        "10.237.1.2/24",
        &node,
        &format!("sp{pid}b"),
        "10.237.1.1/24",
    );
    veth(
        &node,
        &format!("sb{pid}a"),
        "10.237.2.1/24",
        &backend,
        &format!("sb{pid}b"),
        "10.237.2.2/24",
    );
    pod.ip(&["route", "add", "default", "via", "10.237.1.1"]);
    backend.ip(&["route", "add", "default", "via", "10.237.2.1"]);
    node.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    kube_proxy_rules(
        &node,
        "iptables-nft",
        "PREROUTING",
        "10.96.0.30",
        "prod/api:grpc",
        "10.237.2.2",
    );
    backend.nft(&first_syn_drop("labsvc", 8080));
    let _srv = tcp_server(&backend, &[8080]);

    let watch = Watch::start_in(&node, &[]);
    let times = connect_times(&pod, &[("10.96.0.30", 80)], 10.0);
    assert_eq!(times.len(), 1, "client output: {times:?}");
    let t = times[0].expect("connect failed");
    assert!((0.9..2.5).contains(&t), "connect took {t} s");
    std::thread::sleep(Duration::from_millis(200));
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly on SIGINT");
    let slow = connects_to(&lines, "10.96.0.30:80");
    assert_eq!(slow.len(), 1, "{lines:#?}");
    assert_eq!(slow[0]["netns"].as_u64(), Some(pod.inode()));
    assert_eq!(slow[0]["service"], "prod/api:grpc", "{}", slow[0]);
}
