//! kube-proxy lab: rule sets in the shapes kube-proxy writes (`pkg/proxy/{iptables,nftables}`,
//! written here by hand) loaded into one client namespace per mode — iptables-nft,
//! iptables-legacy and nftables — each DNATing its Services to a backend whose namespace drops
//! the first SYN of every new flow (so every Service connect takes ~1 s and gets a line). One
//! `netlat watch` sees all three modes at once, side by side.
//!
//! Per mode: a ClusterIP, a ClusterIP with internalTrafficPolicy=Local (nftables: a `local-`
//! chain), an ExternalIP, a LoadBalancer IP (unnamed port), a NodePort on the client's own
//! address, and kube-proxy's no-endpoint rules: a silent DROP (traffic policy Local without a
//! local endpoint) for a ClusterIP and for a NodePort, and a REJECT (no endpoints at all). Each
//! connect line must name its Service; the drops must be `service-no-endpoints` with the
//! Service; the reject a `failed` connect with the Service and the same verdict.

use std::{thread, time::Duration};

use netlat_tests::{
    Netns, TempDir, Watch, connect_times, connects_to, first_syn_drop, has_tool, is_root,
    json_lines, netlat_unprivileged, sh_stdin, tcp_server, veth,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    IptablesNft,
    IptablesLegacy,
    Nftables,
}

impl Mode {
    fn net(self) -> u8 {
        match self {
            Mode::IptablesNft => 1,
            Mode::IptablesLegacy => 2,
            Mode::Nftables => 3,
        }
    }
}

/// The addresses of one mode's lab (`n` keeps the modes apart).
struct Addrs {
    client: String,
    backend: String,
    cluster: String,
    local: String,
    external: String,
    lb: String,
    gone: String,
    empty: String,
}

const NODEPORT: u16 = 30080;
const NODEPORT_GONE: u16 = 30090;

fn addrs(n: u8) -> Addrs {
    Addrs {
        client: format!("10.236.{n}.1"),
        backend: format!("10.236.{n}.2"),
        cluster: format!("10.96.{n}.10"),
        local: format!("10.96.{n}.11"),
        external: format!("203.0.113.{n}"),
        lb: format!("198.51.100.{n}"),
        gone: format!("10.96.{n}.20"),
        empty: format!("10.96.{n}.21"),
    }
}

/// iptables-restore input in kube-proxy's iptables-mode shape, hooked from OUTPUT (the
/// namespace's own connects).
fn iptables_rules(a: &Addrs) -> String {
    let svc = |dst: &str, comment: &str| {
        format!(
            "-A KUBE-SERVICES -d {dst}/32 -p tcp -m comment --comment \"{comment}\" -m tcp \
             --dport 80 -j KUBE-SVC-LAB\n"
        )
    };
    let mut nat = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-SVC-LAB - [0:0]\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    nat.push_str(&svc(&a.cluster, "kp/web:http cluster IP"));
    // internalTrafficPolicy=Local looks the same in iptables mode (its endpoints differ).
    nat.push_str(&svc(&a.local, "kp/local:http cluster IP"));
    nat.push_str(&svc(&a.external, "kp/ext:http external IP"));
    nat.push_str(&svc(&a.lb, "kp/lb loadbalancer IP"));
    nat.push_str(&format!(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must \
         be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
         -A KUBE-NODEPORTS -p tcp -m comment --comment \"kp/np:http\" -m tcp --dport {NODEPORT} \
         -j KUBE-SVC-LAB\n\
         -A KUBE-SVC-LAB -p tcp -j DNAT --to-destination {}:8080\nCOMMIT\n",
        a.backend
    ));
    let filter = format!(
        "*filter\n:KUBE-SERVICES - [0:0]\n:KUBE-EXTERNAL-SERVICES - [0:0]\n\
         -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service \
         portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes \
         externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
         -A KUBE-SERVICES -d {gone}/32 -p tcp -m comment --comment \"kp/gone:http has no local \
         endpoints\" -m tcp --dport 80 -j DROP\n\
         -A KUBE-SERVICES -d {empty}/32 -p tcp -m comment --comment \"kp/empty:http has no \
         endpoints\" -m tcp --dport 80 -j REJECT\n\
         -A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment \"kp/gone:http has no local \
         endpoints\" -m addrtype --dst-type LOCAL -m tcp --dport {NODEPORT_GONE} -j DROP\n\
         COMMIT\n",
        gone = a.gone,
        empty = a.empty,
    );
    nat + &filter
}

/// An nft ruleset in kube-proxy's nftables-mode shape (`table ip kube-proxy`, its verdict maps
/// and `<prefix>HASH-ns/name/proto/port` chains; the endpoint chains are folded into a DNAT).
fn nftables_rules(a: &Addrs) -> String {
    let backend = &a.backend;
    format!(
        "table ip kube-proxy {{\n\
         map service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}\n\
         map service-nodeports {{ type inet_proto . inet_service : verdict ; }}\n\
         map no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}\n\
         map no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; }}\n\
         chain reject-chain {{ reject; }}\n\
         chain service-ULMVA6XW-kp/web/tcp/http {{ meta l4proto tcp dnat to {backend}:8080; }}\n\
         chain local-QY2ZJ4NA-kp/local/tcp/http {{ meta l4proto tcp dnat to {backend}:8080; }}\n\
         chain external-4AGZPFLV-kp/ext/tcp/http {{ meta l4proto tcp dnat to {backend}:8080; }}\n\
         chain external-X7KQ2MBD-kp/lb/tcp/ {{ meta l4proto tcp dnat to {backend}:8080; }}\n\
         chain external-HN3T5P2C-kp/np/tcp/http {{ meta l4proto tcp dnat to {backend}:8080; }}\n\
         chain services {{ ip daddr . meta l4proto . th dport vmap @service-ips; \
         fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap \
         @service-nodeports; }}\n\
         chain nat-output {{ type nat hook output priority -100; policy accept; jump services; \
         }}\n\
         chain service-endpoints-check {{ ip daddr . meta l4proto . th dport vmap \
         @no-endpoint-services; fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . \
         th dport vmap @no-endpoint-nodeports; }}\n\
         chain filter-output {{ type filter hook output priority -110; policy accept; \
         ct state new jump service-endpoints-check; }}\n\
         }}\n\
         add element ip kube-proxy service-ips {{ \
         {cluster} . tcp . 80 : goto service-ULMVA6XW-kp/web/tcp/http, \
         {local} . tcp . 80 : goto local-QY2ZJ4NA-kp/local/tcp/http, \
         {external} . tcp . 80 : goto external-4AGZPFLV-kp/ext/tcp/http, \
         {lb} . tcp . 80 : goto external-X7KQ2MBD-kp/lb/tcp/ }}\n\
         add element ip kube-proxy service-nodeports {{ \
         tcp . {NODEPORT} : goto external-HN3T5P2C-kp/np/tcp/http }}\n\
         add element ip kube-proxy no-endpoint-services {{ \
         {gone} . tcp . 80 comment \"kp/gone:http\" : drop, \
         {empty} . tcp . 80 comment \"kp/empty:http\" : goto reject-chain }}\n\
         add element ip kube-proxy no-endpoint-nodeports {{ \
         tcp . {NODEPORT_GONE} comment \"kp/gone:http\" : drop }}\n",
        cluster = a.cluster,
        local = a.local,
        external = a.external,
        lb = a.lb,
        gone = a.gone,
        empty = a.empty,
    )
}

/// One mode's client namespace (rules and all) and its backend.
struct Lab {
    mode: Mode,
    client: Netns,
    backend: Netns,
    a: Addrs,
}

fn lab(mode: Mode) -> Lab {
    let n = mode.net();
    let a = addrs(n);
    let client = Netns::new(&format!("kpc{n}"));
    let backend = Netns::new(&format!("kpb{n}"));
    let pid = std::process::id();
    veth(
        &client,
        &format!("kp{pid}{n}a"),
        &format!("{}/24", a.client),
        &backend,
        &format!("kp{pid}{n}b"),
        &format!("{}/24", a.backend),
    );
    // Locally made packets are routed before nat OUTPUT rewrites them: Service addresses need
    // a route.
    client.ip(&["route", "add", "default", "via", &a.backend]);
    backend.nft(&first_syn_drop("kplab", 8080));
    match mode {
        Mode::IptablesNft | Mode::IptablesLegacy => {
            let tool = if mode == Mode::IptablesNft {
                "iptables-nft-restore"
            } else {
                "iptables-legacy-restore"
            };
            sh_stdin(
                &["ip", "netns", "exec", &client.name, tool],
                &iptables_rules(&a),
            );
        }
        Mode::Nftables => client.nft(&nftables_rules(&a)),
    }
    Lab {
        mode,
        client,
        backend,
        a,
    }
}

#[test]
fn lab_kube_proxy_rules_name_services_and_no_endpoint_drops() {
    assert!(is_root(), "the lab tests need root");
    let mut modes = vec![Mode::Nftables];
    for (mode, tool) in [
        (Mode::IptablesNft, "iptables-nft"),
        (Mode::IptablesLegacy, "iptables-legacy"),
    ] {
        if has_tool(tool) {
            modes.push(mode);
        } else {
            eprintln!("{tool} is not installed: its mode is not tested");
        }
    }
    let labs: Vec<Lab> = modes.into_iter().map(lab).collect();
    let servers: Vec<_> = labs
        .iter()
        .map(|l| tcp_server(&l.backend, &[8080]))
        .collect();

    let dir = TempDir::new("kp");
    let rec = dir.0.join("kp.rec").display().to_string();
    let watch = Watch::start(&["--record", &rec]);
    // The modes run side by side: each one's drops cost >= 1 s of SYN retry.
    let results: Vec<Vec<Option<f64>>> = thread::scope(|s| {
        let handles: Vec<_> = labs
            .iter()
            .map(|l| {
                s.spawn(move || {
                    let a = &l.a;
                    connect_times(
                        &l.client,
                        &[
                            (&a.cluster, 80),
                            (&a.local, 80),
                            (&a.external, 80),
                            (&a.lb, 80),
                            (&a.client, NODEPORT),
                            (&a.empty, 80),
                            (&a.gone, 80),
                            (&a.client, NODEPORT_GONE),
                        ],
                        1.5,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    thread::sleep(Duration::from_millis(300));
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly on SIGINT");
    drop(servers);

    for (l, times) in labs.iter().zip(&results) {
        let mode = l.mode;
        let a = &l.a;
        assert_eq!(times.len(), 8, "{mode:?}: client output {times:?}");
        // Through the Services: ~1 s each (the backend drops the first SYN).
        for t in &times[..5] {
            let t = t.unwrap_or_else(|| panic!("{mode:?}: a Service connect failed: {times:?}"));
            assert!((0.9..2.5).contains(&t), "{mode:?}: connect took {t} s");
        }
        // REJECT fails at once, DROP times out.
        assert_eq!(times[5..], [None, None, None], "{mode:?}");

        let one = |dst: String| {
            let found = connects_to(&lines, &dst);
            assert_eq!(found.len(), 1, "{mode:?} {dst}: {lines:#?}");
            found[0].clone()
        };
        for (dst, service) in [
            (format!("{}:80", a.cluster), "kp/web:http"),
            (format!("{}:80", a.local), "kp/local:http"),
            (format!("{}:80", a.external), "kp/ext:http"),
            (format!("{}:80", a.lb), "kp/lb"),
            (format!("{}:{NODEPORT}", a.client), "kp/np:http"),
        ] {
            let line = one(dst);
            assert_eq!(line["service"], service, "{mode:?}: {line}");
            assert_eq!(line["syn_retransmits"], 1, "{mode:?}: {line}");
            assert_eq!(line["netns"].as_u64(), Some(l.client.inode()), "{line}");
        }
        for dst in [
            format!("{}:80", a.gone),
            format!("{}:{NODEPORT_GONE}", a.client),
        ] {
            let line = one(dst);
            assert_eq!(line["service"], "kp/gone:http", "{mode:?}: {line}");
            assert_eq!(
                line["verdict"]["issue"], "service-no-endpoints",
                "{mode:?}: {line}"
            );
            let evidence = line["verdict"]["evidence"].to_string();
            assert!(
                evidence.contains("kp/gone:http") && evidence.contains("Local"),
                "{mode:?}: {line}"
            );
        }
        let reject = one(format!("{}:80", a.empty));
        assert_eq!(reject["service"], "kp/empty:http", "{mode:?}: {reject}");
        assert_eq!(reject["outcome"], "failed", "{mode:?}: {reject}");
        assert_eq!(
            reject["verdict"]["issue"], "service-no-endpoints",
            "{mode:?}: {reject}"
        );
        assert!(
            reject["verdict"]["evidence"]
                .to_string()
                .contains("no ready endpoint"),
            "{mode:?}: {reject}"
        );
    }

    // The recording replays to the same lines (Service names, no-endpoint verdicts, the
    // refused connects), with no privileges and no rules to read.
    let out = netlat_unprivileged(&["replay", "--output", "json", &rec]);
    assert!(out.status.success(), "replay failed: {out:?}");
    let ours = |v: &[serde_json::Value]| -> Vec<serde_json::Value> {
        v.iter()
            .filter(|l| {
                l["type"] == "connect"
                    && labs
                        .iter()
                        .any(|lab| l["netns"].as_u64() == Some(lab.client.inode()))
            })
            .cloned()
            .collect()
    };
    let live = ours(&lines);
    assert_eq!(live.len(), 8 * labs.len(), "{live:#?}");
    assert_eq!(ours(&json_lines(&out)), live, "replay differs");
}
