//! The ring-buffer reader: waits for the programs' records and hands each to a callback.
//!
//! Two modes keep both an idle node and a storm cheap. Idle: the kernel wakes the reader only
//! for the first record after it read everything, and a short gather lets a burst collect.
//! Busy: the reader polls on a timer and sets `READER` so the programs submit without a wakeup
//! (a wakeup is an irq_work inside the committing program).

use std::{io, time::Duration};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, MapData, RingBuf},
};
use tokio::io::{Interest, unix::AsyncFd};

/// Idle mode: after the kernel's wakeup, how long a burst may gather before the ring is read.
const GATHER: Duration = Duration::from_millis(2);
/// Busy mode: the ring is read on this timer.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// Records per read that switch idle → busy, and below which a busy read switches back.
const BUSY_BATCH: usize = 16;

/// The `EVENTS` ring of a loaded object, read in idle or busy mode.
pub struct Ring {
    fd: AsyncFd<RingBuf<MapData>>,
    /// `READER[0]`: `1` = the reader polls, submit without a wakeup.
    mode: Option<Array<MapData, u32>>,
    polling: bool,
}

impl Ring {
    /// Takes `EVENTS` (and `READER`, when the object has it) out of `ebpf`.
    pub fn open(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let ring: RingBuf<MapData> = ebpf
            .take_map("EVENTS")
            .context("the eBPF object has no EVENTS ring buffer")?
            .try_into()
            .context("EVENTS is not a ring buffer")?;
        // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd lives.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(io::Error::from)
            .context("polling the ring buffer")?;
        let mode = ebpf
            .take_map("READER")
            .and_then(|m| Array::try_from(m).ok());
        if mode.is_none() {
            tracing::warn!("no READER map: the ring wakes the reader per idle period only");
        }
        Ok(Self {
            fd,
            mode,
            polling: false,
        })
    }

    /// Reads every record there now, without waiting; how many.
    pub fn drain(
        &mut self,
        mut each: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<usize> {
        drain(self.fd.get_mut(), &mut each)
    }

    /// Waits for records (the kernel's wakeup, or the poll timer in busy mode) and reads them;
    /// how many. Cancel-safe: it reads only after its last await.
    pub async fn next(
        &mut self,
        mut each: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<usize> {
        let each = &mut each;
        if self.polling {
            tokio::time::sleep(POLL_EVERY).await;
            let mut n = drain(self.fd.get_mut(), each)?;
            if n < BUSY_BATCH {
                self.set_polling(false);
                // Records committed while the programs still saw "polling" woke nobody.
                n += drain(self.fd.get_mut(), each)?;
            }
            return Ok(n);
        }
        let mut guard = self
            .fd
            .readable_mut()
            .await
            .context("waiting for the ring buffer")?;
        tokio::time::sleep(GATHER).await;
        let n = drain(guard.get_inner_mut(), each)?;
        guard.clear_ready();
        // A record committed between that read and clear_ready() woke us into the cleared
        // state, and no later record wakes us while it is unread: read again.
        let m = drain(guard.get_inner_mut(), each)?;
        drop(guard);
        if n + m >= BUSY_BATCH {
            self.set_polling(true);
        }
        Ok(n + m)
    }

    /// Tell the programs; on failure they keep waking the reader, which is only slower.
    fn set_polling(&mut self, polling: bool) {
        self.polling = polling;
        if let Some(m) = &mut self.mode
            && let Err(e) = m.set(0, u32::from(polling), 0)
        {
            tracing::warn!("setting the reader mode: {e}");
        }
    }
}

fn drain(
    rb: &mut RingBuf<MapData>,
    each: &mut impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut n = 0;
    while let Some(item) = rb.next() {
        n += 1;
        each(&item)?;
    }
    Ok(n)
}
