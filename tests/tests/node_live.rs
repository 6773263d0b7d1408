//! Live tests of the node fingerprint (`netlat::node`): each builds a network namespace holding
//! the devices and rules the fingerprint reads, then checks what [`gather_in_netns`] sees there.
//! They need root and the `ip`, `nft`, `ethtool` and iptables tools (`cargo xtask setup`
//! installs them). Every namespace is removed on drop, also when a test fails.

use std::time::{Duration, Instant};

use netlat::node::{gather, gather_in_netns, live_facts::LiveFacts, netns::in_netns, services};
use netlat_core::facts::{KubeProxyMode, NatKind, NatRule, NodeFacts};
use netlat_tests::{Netns, is_root};

/// A fresh namespace for a live test (after checking for root, as every lab test does).
fn netns(tag: &str) -> Netns {
    assert!(is_root(), "the node live tests need root");
    Netns::new(tag)
}

fn rules<'a>(facts: &'a NodeFacts, backend: &str) -> Vec<&'a NatRule> {
    facts
        .nat_rules
        .iter()
        .filter(|r| r.backend == backend)
        .collect()
}

#[test]
fn live_vxlan_and_nft_masquerade() {
    let ns = netns("vx");
    for (dev, vni, port, csum) in [
        ("vx0", "42", "4789", "udpcsum"),
        ("vx1", "43", "4790", "noudpcsum"),
    ] {
        ns.run(&[
            "ip", "link", "add", dev, "type", "vxlan", "id", vni, "dstport", port, "local",
            "10.9.9.1", "dev", "lo", csum,
        ]);
    }
    ns.run(&["ethtool", "-K", "vx1", "tx", "off"]);
    ns.run(&["nft", "add", "table", "ip", "nat"]);
    ns.run(&[
        "nft",
        "add",
        "chain",
        "ip",
        "nat",
        "post",
        "{ type nat hook postrouting priority 100 ; }",
    ]);
    ns.run(&[
        "nft",
        "add",
        "rule",
        "ip",
        "nat",
        "post",
        "oifname",
        "x",
        "masquerade",
    ]);
    ns.run(&[
        "nft",
        "add",
        "rule",
        "ip",
        "nat",
        "post",
        "oifname",
        "y",
        "masquerade",
        "fully-random",
    ]);

    let facts = gather_in_netns(&ns.path());
    eprintln!("{facts:#?}");

    let mut vxlan = facts.vxlan.clone();
    vxlan.sort_by(|a, b| a.name.cmp(&b.name));
    let summary: Vec<_> = vxlan
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.vni,
                v.port,
                v.udp_csum,
                v.tx_csum_offload,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("vx0", Some(42), Some(4789), Some(true), Some(true)),
            ("vx1", Some(43), Some(4790), Some(false), Some(false)),
        ]
    );
    assert!(vxlan.iter().all(|v| v.ifindex > 0));

    let nft = rules(&facts, "nftables");
    assert_eq!(nft.len(), 2, "{nft:?}");
    assert!(nft.iter().all(|r| r.table == "ip nat" && r.chain == "post"));
    assert!(
        nft.iter()
            .all(|r| r.kind == NatKind::Masquerade && !r.random)
    );
    let x = nft
        .iter()
        .find(|r| r.text.starts_with("oifname \"x\" masquerade"));
    let y = nft
        .iter()
        .find(|r| r.text.starts_with("oifname \"y\" masquerade fully-random"));
    assert_eq!(x.map(|r| r.fully_random), Some(false), "{nft:?}");
    assert_eq!(y.map(|r| r.fully_random), Some(true), "{nft:?}");

    assert_eq!(facts.kube_proxy.mode, KubeProxyMode::None);
    assert!(facts.kernel.major >= 3);
    assert!(facts.sysctls["net.ipv4.tcp_syn_retries"].is_some());
    // The nat chain made conntrack track this namespace.
    assert!(
        facts.conntrack.as_ref().is_some_and(|c| !c.is_empty()),
        "{:?}",
        facts.notes
    );
    // Nothing of this namespace leaks into the current one.
    assert!(gather().vxlan.iter().all(|v| v.name != "vx0"));
}

#[test]
fn live_xtables_legacy_and_nft() {
    let ns = netns("xt");
    ns.run(&["iptables-legacy", "-t", "nat", "-N", "KUBE-SERVICES"]);
    ns.run(&[
        "iptables-legacy",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "v",
        "-p",
        "tcp",
        "-m",
        "comment",
        "--comment",
        "legacy",
        "-j",
        "SNAT",
        "--to-source",
        "10.1.1.1:2000-3000",
        "--random",
    ]);
    ns.run(&[
        "ip6tables-legacy",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "v6+",
        "-j",
        "MASQUERADE",
        "--random-fully",
    ]);
    ns.run(&[
        "iptables-nft",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.0.0.0/8",
        "-o",
        "w",
        "-j",
        "MASQUERADE",
        "--random-fully",
    ]);
    ns.run(&["iptables-nft", "-t", "nat", "-N", "cali-nat-outgoing"]);
    ns.run(&[
        "ip6tables-nft",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-j",
        "SNAT",
        "--to-source",
        "2001:db8::1",
    ]);

    let facts = gather_in_netns(&ns.path());
    eprintln!("{facts:#?}");

    let legacy = rules(&facts, "iptables-legacy");
    assert_eq!(legacy.len(), 1, "{:?}", facts.nat_rules);
    assert_eq!(
        (legacy[0].table.as_str(), legacy[0].chain.as_str()),
        ("nat", "POSTROUTING")
    );
    assert_eq!(legacy[0].kind, NatKind::Snat);
    assert!(legacy[0].random && !legacy[0].fully_random);
    assert_eq!(legacy[0].to.as_deref(), Some("10.1.1.1:2000-3000"));
    assert_eq!(
        legacy[0].text,
        "-A POSTROUTING -o v -p tcp -m comment --comment \"legacy\" -j SNAT --to-source \
         10.1.1.1:2000-3000 --random"
    );

    let legacy6 = rules(&facts, "ip6tables-legacy");
    assert_eq!(legacy6.len(), 1, "{:?}", facts.nat_rules);
    assert!(legacy6[0].fully_random);
    assert_eq!(
        legacy6[0].text,
        "-A POSTROUTING -o v6+ -j MASQUERADE --random-fully"
    );

    let nft = rules(&facts, "iptables-nft");
    assert_eq!(nft.len(), 2, "{:?}", facts.nat_rules);
    let v4 = nft
        .iter()
        .find(|r| r.table == "ip nat")
        .expect("ip nat rule");
    assert_eq!(
        (v4.kind, v4.fully_random, v4.chain.as_str()),
        (NatKind::Masquerade, true, "POSTROUTING")
    );
    assert!(v4.text.contains("ip saddr 10.0.0.0/8"), "{}", v4.text);
    assert!(v4.text.contains("oifname \"w\""), "{}", v4.text);
    let v6 = nft
        .iter()
        .find(|r| r.table == "ip6 nat")
        .expect("ip6 nat rule");
    assert_eq!(v6.kind, NatKind::Snat);
    assert_eq!(v6.to.as_deref(), Some("2001:db8::1"));

    assert_eq!(facts.kube_proxy.mode, KubeProxyMode::Iptables);
    assert!(
        facts
            .kube_proxy
            .evidence
            .contains(&"chain KUBE-SERVICES in iptables-legacy".to_string())
    );
    assert!(
        facts
            .calico
            .contains(&"1 cali- chains in nft ip nat".to_string()),
        "{:?}",
        facts.calico
    );
}

#[test]
fn live_kube_services_from_iptables_nft_and_legacy() {
    let ns = netns("svc");
    // kube-proxy's rule shape, one Service in each backend.
    for (tool, ip, comment) in [
        (
            "iptables-nft",
            "10.96.0.10",
            "kube-system/kube-dns:dns-tcp cluster IP",
        ),
        ("iptables-legacy", "10.96.0.11", "default/web cluster IP"),
    ] {
        ns.run(&[tool, "-t", "nat", "-N", "KUBE-SERVICES"]);
        ns.run(&[tool, "-t", "nat", "-N", "KUBE-SVC-X"]);
        ns.run(&[
            tool,
            "-t",
            "nat",
            "-A",
            "KUBE-SERVICES",
            "-d",
            &format!("{ip}/32"),
            "-p",
            "tcp",
            "-m",
            "comment",
            "--comment",
            comment,
            "-m",
            "tcp",
            "--dport",
            "53",
            "-j",
            "KUBE-SVC-X",
        ]);
        ns.run(&[
            tool,
            "-t",
            "nat",
            "-A",
            "KUBE-SERVICES",
            "-m",
            "comment",
            "--comment",
            "kubernetes service nodeports; NOTE: this must be the last rule in this chain",
            "-j",
            "KUBE-SVC-X",
        ]);
    }
    let map = in_netns(&ns.path(), services::read)
        .expect("enter the namespace")
        .expect("read the Services");
    // The fingerprint (doctor, the node line) counts them.
    let facts = gather_in_netns(&ns.path());
    assert_eq!(facts.kube_proxy.services, Some(2), "{facts:?}");
    assert!(
        facts
            .kube_proxy
            .evidence
            .iter()
            .any(|e| e == "2 Service ports named in its rules"),
        "{facts:?}"
    );
    let key = |ip: &str| (6u8, ip.parse().unwrap(), 53u16);
    assert_eq!(map.len(), 2, "{map:?}");
    assert_eq!(
        map.name(&key("10.96.0.10")),
        Some("kube-system/kube-dns:dns-tcp")
    );
    assert_eq!(map.name(&key("10.96.0.11")), Some("default/web"));
    // A namespace without kube-proxy has no Services, and that is no error.
    let empty = netns("nosvc");
    let map = in_netns(&empty.path(), services::read).expect("enter");
    assert_eq!(map.expect("no tables is no error").len(), 0);
}

#[test]
fn live_kube_services_from_nftables_mode() {
    let ns = netns("nftsvc");
    // kube-proxy 1.29+'s shape: a verdict map from daddr . l4proto . dport to a chain per
    // Service port.
    for (family, addr) in [("ip", "10.96.0.10"), ("ip6", "fd00::a")] {
        let addr_type = if family == "ip" {
            "ipv4_addr"
        } else {
            "ipv6_addr"
        };
        ns.run(&["nft", "add", "table", family, "kube-proxy"]);
        ns.run(&[
            "nft",
            "add",
            "chain",
            family,
            "kube-proxy",
            "service-NWBZK7IH-kube-system/kube-dns/tcp/dns-tcp",
        ]);
        ns.run(&[
            "nft",
            "add",
            "map",
            family,
            "kube-proxy",
            "service-ips",
            &format!("{{ type {addr_type} . inet_proto . inet_service : verdict ; }}"),
        ]);
        ns.run(&[
            "nft",
            "add",
            "element",
            family,
            "kube-proxy",
            "service-ips",
            &format!(
                "{{ {addr} . tcp . 53 : goto service-NWBZK7IH-kube-system/kube-dns/tcp/dns-tcp }}"
            ),
        ]);
    }
    let map = in_netns(&ns.path(), services::read)
        .expect("enter the namespace")
        .expect("read the Services");
    assert_eq!(map.len(), 2, "{map:?}");
    for addr in ["10.96.0.10", "fd00::a"] {
        assert_eq!(
            map.name(&(6u8, addr.parse().unwrap(), 53u16)),
            Some("kube-system/kube-dns:dns-tcp")
        );
    }
}

#[test]
fn live_service_names_are_reread_off_the_loop() {
    use std::os::unix::fs::MetadataExt as _;

    use netlat_core::verdict::NodeView as _;
    let ns = netns("svcttl");
    let inode = std::fs::metadata(ns.path())
        .map(|m| m.ino() as u32)
        .expect("namespace inode");
    let dst: std::net::SocketAddr = "10.96.0.40:80".parse().unwrap();
    // Every lookup finds the map stale, so each one starts a re-read if none is running.
    let facts = LiveFacts::with_service_ttl(Duration::ZERO);
    assert_eq!(facts.service(inode, dst), None);
    for rule in [
        vec!["-N", "KUBE-SERVICES"],
        vec![
            "-A",
            "KUBE-SERVICES",
            "-d",
            "10.96.0.40/32",
            "-p",
            "tcp",
            "-m",
            "comment",
            "--comment",
            "default/web:http cluster IP",
            "-m",
            "tcp",
            "--dport",
            "80",
            "-j",
            "ACCEPT",
        ],
    ] {
        let mut args = vec!["iptables-nft", "-t", "nat"];
        args.extend(rule);
        ns.run(&args);
    }
    // The stale map answers at once while the re-read runs; the new rule shows up when it
    // lands.
    let start = Instant::now();
    let mut answers = Vec::new();
    while start.elapsed() < Duration::from_secs(5) {
        let a = facts.service(inode, dst);
        answers.push(a.clone());
        if a.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(answers.first(), Some(&None), "{answers:?}");
    assert_eq!(
        answers.last().cloned().flatten().as_deref(),
        Some("default/web:http"),
        "{answers:?}"
    );
}

#[test]
fn live_nftables_mode_ipv6_nodeports_and_no_endpoint_maps() {
    use netlat_core::facts::{NoEndpointAction, NoEndpointWhy};
    let ns = netns("nftne");
    ns.ip(&["addr", "add", "fd00:1::5/64", "dev", "lo"]);
    // kube-proxy's IPv6 table: an internalTrafficPolicy=Local ClusterIP, a NodePort, and a
    // no-endpoint drop for a ClusterIP and a NodePort.
    ns.nft(
        "table ip6 kube-proxy {\n\
         map service-ips { type ipv6_addr . inet_proto . inet_service : verdict ; }\n\
         map service-nodeports { type inet_proto . inet_service : verdict ; }\n\
         map no-endpoint-services { type ipv6_addr . inet_proto . inet_service : verdict ; }\n\
         map no-endpoint-nodeports { type inet_proto . inet_service : verdict ; }\n\
         chain local-QY2ZJ4NA-shop/cart/tcp/http { }\n\
         chain external-HN3T5P2C-shop/front/tcp/ { }\n\
         }\n\
         add element ip6 kube-proxy service-ips { fd00::20 . tcp . 80 : goto \
         local-QY2ZJ4NA-shop/cart/tcp/http }\n\
         add element ip6 kube-proxy service-nodeports { tcp . 30080 : goto \
         external-HN3T5P2C-shop/front/tcp/ }\n\
         add element ip6 kube-proxy no-endpoint-services { fd00::30 . tcp . 80 comment \
         \"shop/gone:http\" : drop }\n\
         add element ip6 kube-proxy no-endpoint-nodeports { tcp . 30090 comment \
         \"shop/gone:http\" : drop }\n",
    );
    let map = in_netns(&ns.path(), services::read)
        .expect("enter the namespace")
        .expect("read the Services");
    let key = |ip: &str, port| (6u8, ip.parse().unwrap(), port);
    assert_eq!(map.name(&key("fd00::20", 80)), Some("shop/cart:http"));
    // The NodePort answers on the namespace's own address (read there), not elsewhere.
    assert_eq!(map.name(&key("fd00:1::5", 30080)), Some("shop/front"));
    assert_eq!(map.name(&key("fd00:1::6", 30080)), None);
    let gone = map
        .no_endpoint(&key("fd00::30", 80))
        .expect("no-endpoint rule");
    assert_eq!(gone.service, "shop/gone:http");
    assert_eq!(gone.action, NoEndpointAction::Drop);
    assert_eq!(gone.why, NoEndpointWhy::NoLocal);
    assert_eq!(
        gone.rule,
        "nftables ip6 kube-proxy map no-endpoint-services"
    );
    let np = map
        .no_endpoint(&key("fd00:1::5", 30090))
        .expect("NodePort no-endpoint rule");
    assert_eq!(np.why, NoEndpointWhy::NoLocalExternal);
    // doctor's facts carry both rules.
    let facts = gather_in_netns(&ns.path());
    assert_eq!(facts.kube_proxy.no_endpoint_rules.len(), 2, "{facts:?}");
}

/// A short-lived client's namespace is still read after the client exits: netlat learns of an
/// attempt at its first retransmit or slow end, and the client exits right after its connect,
/// often before the reading thread got in (the VM matrix's vxlan-first-syn then lost its
/// node facts). The namespace here lives only as long as its process, like a client's own.
#[test]
fn live_facts_of_a_namespace_whose_client_exited() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Stdio};

    use netlat_core::verdict::NodeView;

    assert!(is_root(), "the node live tests need root");
    let mut child = Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            "ip link add vx0 type vxlan id 42 dstport 4789 udpcsum && echo ready && exec sleep 60",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start a process in a namespace of its own");
    let pid = child.id();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("read the child's output");
    let guard = netlat_tests::ChildGuard(child);
    assert_eq!(ready.trim(), "ready", "the namespace was not set up");
    let netns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .map(|m| u32::try_from(m.ino()).unwrap_or(0))
        .expect("the child's namespace");

    let lf = LiveFacts::default();
    lf.prefetch(netns, pid);
    // The client exits as soon as its attempt has reached netlat.
    drop(guard);
    let vxlan = lf.vxlan_offloaded(netns);
    assert!(
        vxlan
            .as_ref()
            .is_some_and(|v| v.iter().any(|d| d.contains("vx0"))),
        "the namespace's vxlan device was not read: {vxlan:?}"
    );
}
