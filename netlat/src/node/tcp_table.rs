//! Which TCP sockets of a network namespace are in SYN_SENT now, from its
//! `/proc/thread-self/net/tcp` and `tcp6` (read on a thread that joined the namespace).
//!
//! At stop, and in the periodic sweeps of a long run (`kernel::sweep`), netlat checks the
//! kernel's attempt table against this: an entry whose socket no longer waits is one whose end
//! the programs never saw (for one, the kernel's recursion guard skips a tracing program that
//! fires while the same one runs on that CPU: a SYN-ACK handled in a softirq that interrupted
//! another socket's state change), and must not be reported as pending.

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

/// `TCP_SYN_SENT` as /proc/net/tcp prints it (`st`, hex; include/net/tcp_states.h).
const SYN_SENT: u8 = 2;

/// The SYN_SENT sockets of one namespace: (local, remote) addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SynSent {
    exact: HashSet<(SocketAddr, SocketAddr)>,
    /// (local IP, remote): for an attempt whose source port was not chosen at its start.
    by_ip: HashSet<(IpAddr, SocketAddr)>,
    /// Remote addresses only: for an attempt whose source address was not known either.
    by_remote: HashSet<SocketAddr>,
}

impl SynSent {
    fn insert(&mut self, local: SocketAddr, remote: SocketAddr) {
        self.exact.insert((local, remote));
        self.by_ip.insert((local.ip(), remote));
        self.by_remote.insert(remote);
    }

    /// Whether a socket from `src` (port or address 0: not known) to `dst` is in SYN_SENT.
    pub fn holds(&self, src: SocketAddr, dst: SocketAddr) -> bool {
        let (src, dst) = (unmapped(src), unmapped(dst));
        if src.ip().is_unspecified() {
            self.by_remote.contains(&dst)
        } else if src.port() == 0 {
            self.by_ip.contains(&(src.ip(), dst))
        } else {
            self.exact.contains(&(src, dst))
        }
    }

    /// Add the SYN_SENT rows of one /proc/net/tcp (`v6`: tcp6) text.
    pub fn parse(&mut self, text: &str, v6: bool) {
        for line in text.lines().skip(1) {
            let mut f = line.split_whitespace();
            let (Some(_sl), Some(local), Some(remote), Some(st)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            if u8::from_str_radix(st, 16) != Ok(SYN_SENT) {
                continue;
            }
            if let (Some(l), Some(r)) = (addr(local, v6), addr(remote, v6)) {
                self.insert(l, r);
            }
        }
    }

    /// The SYN_SENT sockets of the namespace at `path`, read on a thread that joins it.
    pub fn read_in(path: &Path) -> io::Result<Self> {
        crate::node::netns::in_netns(path, || {
            let mut s = Self::default();
            s.parse(
                &std::fs::read_to_string("/proc/thread-self/net/tcp")?,
                false,
            );
            // No tcp6 file: IPv6 is off in this kernel.
            if let Ok(t) = std::fs::read_to_string("/proc/thread-self/net/tcp6") {
                s.parse(&t, true);
            }
            Ok(s)
        })?
    }
}

/// A v4-mapped IPv6 address as IPv4 (how the rows are kept).
fn unmapped(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(a, |v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
        IpAddr::V4(_) => a,
    }
}

/// `0100007F:1F90`: the address as the kernel's raw (network order) words printed in hex by
/// a host-order `%08X`, then the port in host order.
fn addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(w, 16).ok()?.to_ne_bytes())
    };
    let ip = if v6 {
        if ip.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        let v6 = Ipv6Addr::from(b);
        // A v4 connect from a dual-stack socket: the events carry it as IPv4.
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    } else {
        if ip.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(word(0)?))
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Rows as a 6.18 kernel prints them (x86_64): a listener, a SYN_SENT and an ESTABLISHED
    // socket.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 48 1 0000000000000000 100 0 0 10 0
   1: 0107FB0A:A4F2 0207FB0A:1F90 02 00000001:00000000 01:0000012C 00000001     0        0 0 1 0000000000000000 200 0 0 10 -1
   2: 0107FB0A:A4F4 0207FB0A:1F90 01 00000000:00000000 00:00000000 00000000     0        0 51 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000107FB0A:B000 0000000000000000FFFF00000207FB0A:0050 02 00000001:00000000 01:00000064 00000000     0        0 0 1 0000000000000000 200 0 0 10 -1
   1: 000080FE00000000FF005452010000FE:B002 000080FE00000000FF005452020000FE:0050 02 00000001:00000000 01:00000064 00000000     0        0 0 1 0000000000000000 200 0 0 10 -1
";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_syn_sent_rows_count_and_unknown_ports_match_by_address() {
        let mut s = SynSent::default();
        s.parse(TCP, false);
        assert!(s.holds(sa("10.251.7.1:42226"), sa("10.251.7.2:8080")));
        // Established, and a listener: not waiting.
        assert!(!s.holds(sa("10.251.7.1:42228"), sa("10.251.7.2:8080")));
        assert!(!s.holds(sa("0.0.0.0:8080"), sa("0.0.0.0:0")));
        // The table's start knows no source port yet.
        assert!(s.holds(sa("10.251.7.1:0"), sa("10.251.7.2:8080")));
        assert!(!s.holds(sa("10.251.7.9:0"), sa("10.251.7.2:8080")));
        assert!(s.holds(sa("0.0.0.0:0"), sa("10.251.7.2:8080")));
        assert!(!s.holds(sa("10.251.7.1:0"), sa("10.251.7.2:8081")));
    }

    #[test]
    fn tcp6_rows_and_v4_mapped_addresses() {
        let mut s = SynSent::default();
        s.parse(TCP6, true);
        assert!(s.holds(sa("10.251.7.1:45056"), sa("10.251.7.2:80")));
        assert!(s.holds(
            sa("[::ffff:10.251.7.1]:45056"),
            sa("[::ffff:10.251.7.2]:80")
        ));
        assert!(s.holds(
            sa("[fe80::5254:ff:fe00:1]:45058"),
            sa("[fe80::5254:ff:fe00:2]:80")
        ));
    }

    #[test]
    fn malformed_rows_are_skipped() {
        let mut s = SynSent::default();
        s.parse(
            "header\n 0: zz:1 00:2 02\n 1: 0100007F 0100007F:0050 02\n",
            false,
        );
        assert_eq!(s, SynSent::default());
    }
}
