//! Look-alike lab: a full accept queue. A server in its own namespace listens with backlog 1
//! and never accepts; two connects fill its accept queue, then six clients connect at once. The
//! kernel refuses each of their SYNs in `tcp_conn_request` (`ListenOverflows`,
//! `ListenDrops`), consuming the skb: no drop event, so before netlat read the listener's
//! counters these connects were `unanswered-syn`. They must be `listen-overflow`, naming the
//! listener (its namespace, address and process), and the summary must show what the kernel
//! counted next to what netlat saw.

use std::time::Duration;

use netlat_tests::{Netns, Watch, connects_to, is_root, python_server, veth};

const PORT: u16 = 8090;
const CLIENTS: usize = 6;
/// Past the first SYN retry (1 s), before the second (3 s).
const TIMEOUT_S: f64 = 2.5;

/// Two connects that fill the accept queue (kept open), then `CLIENTS` concurrent connects
/// from `ns`; each of these one's time in seconds, `None` when it failed.
fn concurrent_connects(ns: &Netns, ip: &str) -> Vec<Option<f64>> {
    let script = format!(
        "import socket,threading,time\n\
         res=['fail']*{CLIENTS}; keep=[]\n\
         for i in range(2): keep.append(socket.create_connection(('{ip}',{PORT}),timeout=2))\n\
         def go(i):\n\
         \x20 s0=time.time()\n\
         \x20 try:\n\
         \x20   s=socket.create_connection(('{ip}',{PORT}),timeout={TIMEOUT_S}); keep.append(s)\n\
         \x20   res[i]='%.4f'%(time.time()-s0)\n\
         \x20 except Exception: pass\n\
         ts=[threading.Thread(target=go,args=(i,)) for i in range({CLIENTS})]\n\
         for t in ts: t.start()\n\
         for t in ts: t.join()\n\
         print(' '.join(res))\n"
    );
    let out = ns.run(&["python3", "-c", &script]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|w| w.parse().ok())
        .collect()
}

#[test]
fn lab_full_accept_queue_is_listen_overflow_not_unanswered_syn() {
    assert!(is_root(), "the lab tests need root");
    let client = Netns::new("lc");
    let server = Netns::new("ls");
    let net = std::process::id() % 200;
    veth(
        &client,
        "nl-lc0",
        &format!("10.238.{net}.1/24"),
        &server,
        "nl-ls0",
        &format!("10.238.{net}.2/24"),
    );
    let dst_ip = format!("10.238.{net}.2");
    // Backlog 1 and never an accept: the queue is full after two handshakes.
    let _srv = python_server(
        &server,
        &format!(
            "import socket,time\n\
             s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('0.0.0.0',{PORT})); s.listen(1)\n\
             print('ready',flush=True)\n\
             time.sleep(3600)\n"
        ),
    );
    let watch = Watch::start(&[]);
    let times = concurrent_connects(&client, &dst_ip);
    assert_eq!(times.len(), CLIENTS, "client output: {times:?}");
    let failed = times.iter().filter(|t| t.is_none()).count();
    assert_eq!(failed, CLIENTS, "the full queue took a connect: {times:?}");
    std::thread::sleep(Duration::from_millis(700));
    let (ok, lines) = watch.stop();
    assert!(ok, "netlat did not exit cleanly on SIGINT");

    let dst = format!("{dst_ip}:{PORT}");
    let slow = connects_to(&lines, &dst);
    assert!(
        slow.len() >= failed,
        "{failed} refused connects, netlat reported {}: {slow:#?}",
        slow.len()
    );
    let listener = format!("listener 0.0.0.0:{PORT} in netns {}", server.inode());
    for l in &slow {
        eprintln!("listen-overflow connect: {l}");
        assert!(l["syn_retransmits"].as_u64() >= Some(1), "{l}");
        assert!(l["drops"].as_array().is_none_or(Vec::is_empty), "{l}");
        assert_eq!(l["verdict"]["issue"], "listen-overflow", "{l}");
        let evidence = l["verdict"]["evidence"].to_string();
        assert!(evidence.contains(&listener), "{l}");
        assert!(evidence.contains("python3["), "the listener's process: {l}");
        assert!(evidence.contains("ListenOverflows +"), "{l}");
        // The two filling connections still waited in its queue: the server is not keeping up.
        assert!(evidence.contains("2 connection(s) were waiting"), "{l}");
        assert_eq!(l["verdict"]["confidence"], "high", "{l}");
    }
    // The kernel's own counts, next to what netlat saw (other labs may add to both).
    let summary = lines
        .iter()
        .find(|v| v["type"] == "summary")
        .expect("a summary line");
    let k = &summary["kernel_counters"];
    eprintln!("kernel counters: {k}");
    let refused = u64::try_from(failed).unwrap_or(0);
    assert!(k["listen_overflows"].as_u64() >= Some(refused), "{summary}");
    assert!(k["syn_retransmits"].as_u64() >= Some(refused), "{summary}");
    assert!(
        k["netlat_saw_syn_retransmits"].as_u64() >= Some(refused),
        "{summary}"
    );
}
