//! Live test of the conntrack lookup (`netlat::node::ctnl`): two namespaces joined by a veth
//! pair, the client masquerading with `fully-random`; a connection from the client must show its
//! rewritten source port in the entry's reply tuple. Needs root, `ip`, `nft` and `python3`.
//! The namespaces and the listener are removed on drop, also when the test fails.

use std::{
    io,
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    time::Duration,
};

use netlat::node::ctnl::{IPS_SRC_NAT, lookup};
use netlat_core::packet::FiveTuple;
use netlat_tests::{Netns, is_root, python_server, veth};

#[test]
fn lookup_sees_fully_random_masquerade() {
    assert!(is_root(), "the conntrack live test needs root");
    let client = Netns::new("ctc");
    let server = Netns::new("cts");
    let pid = std::process::id();
    let net = pid % 256;
    let (client_ip, server_ip) = (format!("10.238.{net}.1"), format!("10.238.{net}.2"));
    // Each end is made in its namespace, so no name ever appears in the caller's.
    veth(
        &client,
        &format!("ctc{pid}"),
        &format!("{client_ip}/24"),
        &server,
        &format!("cts{pid}"),
        &format!("{server_ip}/24"),
    );
    client.run(&["nft", "add table ip nat"]);
    client.run(&[
        "nft",
        "add chain ip nat post { type nat hook postrouting priority 100; }",
    ]);
    client.run(&["nft", "add rule ip nat post masquerade fully-random"]);

    // No accept needed: the handshake completes into the backlog.
    let script = format!(
        "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{server_ip}',8080))\ns.listen(16)\nprint('ready',flush=True)\ntime.sleep(120)\n"
    );
    let _listener = python_server(&server, &script);

    let server_addr: SocketAddr = format!("{server_ip}:8080").parse().expect("address");
    let ns_file = std::fs::File::open(client.path()).expect("open netns");
    let (local, found, absent) = std::thread::spawn(move || {
        // SAFETY: a valid fd of a netns file; setns only changes this thread's namespace.
        assert!(
            unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) } == 0,
            "setns: {}",
            io::Error::last_os_error()
        );
        // Held open across the lookups so the entry stays established.
        let conn = TcpStream::connect_timeout(&server_addr, Duration::from_secs(5))
            .expect("connect to the listener");
        let local = conn.local_addr().expect("local address");
        let orig = FiveTuple {
            proto: 6,
            src: local,
            dst: server_addr,
        };
        let found = lookup(&orig);
        let nowhere = FiveTuple {
            proto: 6,
            src: local,
            dst: SocketAddr::new(server_addr.ip(), 1),
        };
        (local, found, lookup(&nowhere))
    })
    .join()
    .expect("the netns thread panicked");

    let entry = found
        .expect("lookup in the client netns")
        .expect("an entry for the open connection");
    eprintln!("conntrack entry: {entry:?}");
    assert_eq!(entry.orig.src, local);
    assert_eq!(entry.orig.dst, server_addr);
    assert_eq!(entry.reply.src, server_addr);
    assert_eq!(
        entry.reply.dst.ip(),
        local.ip(),
        "masquerade keeps the address"
    );
    // fully-random picks a fresh port: equal only with probability ~1/64k.
    assert_ne!(
        entry.reply.dst.port(),
        local.port(),
        "the port was not rewritten"
    );
    assert_ne!(entry.status & IPS_SRC_NAT, 0, "status {:#x}", entry.status);
    assert_eq!(entry.wire_tuple().src.port(), entry.reply.dst.port());
    assert!(
        matches!(absent, Ok(None)),
        "a missing entry must be Ok(None): {absent:?}"
    );
}
