//! A kit for driving the engine without a kernel: synthetic ring-buffer items in the wire
//! format the eBPF programs write, and a [`Reports`] port that collects the lines as JSON values.
//! Used by the engine's own tests, the shell's tests and the benchmarks (feature `testkit`).

use std::io;

use netlat_common::{Addrs, DropEvent, EventHeader, RetransmitEvent, SockStateEvent, kind};

use crate::{
    event,
    report::{ConnectReport, DropReport, Reports},
};

/// One second in the kernel's nanoseconds.
pub const S: u64 = 1_000_000_000;

/// Collects every report as the JSON value its line would print.
#[derive(Debug, Default)]
pub struct Collect {
    pub lines: Vec<serde_json::Value>,
}

impl Collect {
    fn push(&mut self, line: &impl serde::Serialize) -> io::Result<()> {
        self.lines
            .push(serde_json::to_value(line).map_err(io::Error::other)?);
        Ok(())
    }
}

impl Reports for Collect {
    fn connect(&mut self, line: &ConnectReport) -> io::Result<()> {
        self.push(line)
    }
    fn drop_line(&mut self, line: &DropReport) -> io::Result<()> {
        self.push(line)
    }
}

/// IPv4 addresses of the kit's one flow: 10.231.0.1:`sport` → 10.231.0.2:8080.
pub fn addrs(sport: u16) -> Addrs {
    let mut a = Addrs {
        family: 2,
        sport,
        dport: 8080,
        ..Addrs::default()
    };
    a.saddr[..4].copy_from_slice(&[10, 231, 0, 1]);
    a.daddr[..4].copy_from_slice(&[10, 231, 0, 2]);
    a
}

/// A socket state change of the kit's socket (netns 111, pid 9, `python3`).
pub fn state(ts: u64, old: u32, new: u32, sport: u16) -> Vec<u8> {
    event::encode(&SockStateEvent {
        header: EventHeader {
            kind: kind::SOCK_STATE,
            cpu: 0,
            ts_ns: ts,
        },
        skaddr: 0xabc,
        netns: 111,
        tgid: 9,
        oldstate: old,
        newstate: new,
        addrs: addrs(sport),
        comm: *b"python3\0\0\0\0\0\0\0\0\0",
    })
}

/// A retransmit of the kit's socket.
pub fn retrans(ts: u64, sport: u16) -> Vec<u8> {
    event::encode(&RetransmitEvent {
        header: EventHeader {
            kind: kind::RETRANSMIT,
            cpu: 0,
            ts_ns: ts,
        },
        skaddr: 0xabc,
        netns: 111,
        state: 2,
        addrs: addrs(sport),
    })
}

/// An IPv4 TCP SYN dropped with reason 12 at `location`.
pub fn syn_drop(ts: u64, sport: u16, location: u64) -> Vec<u8> {
    let mut d = DropEvent {
        header: EventHeader {
            kind: kind::DROP,
            cpu: 1,
            ts_ns: ts,
        },
        location,
        netns: 222,
        ifindex: 2,
        reason: 12,
        len: 60,
        protocol: 0x0800,
        cap_len: 40,
        ..DropEvent::default()
    };
    let ip = [
        0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 231, 0, 1, 10, 231, 0, 2,
    ];
    d.data[..20].copy_from_slice(&ip);
    d.data[20..22].copy_from_slice(&sport.to_be_bytes());
    d.data[22..24].copy_from_slice(&8080u16.to_be_bytes());
    d.data[32] = 0x50; // data offset 5 words
    d.data[33] = 0x02; // SYN
    event::encode(&d)
}
