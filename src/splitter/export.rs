//! One volume of a split group as an NBD export: the volume itself (a `FileExport`)
//! with every change numbered and queued for the journal on its way to the reply.
use super::intent::Intents;
use super::sequencer::{Change, Sequencer};
use crate::nbd::{Capabilities, Export, FileExport, ZeroFlags};
use std::io;
use std::sync::Arc;

pub struct SplitExport<B> {
    volume: FileExport,
    index: u16,
    seq: Arc<Sequencer<B>>,
    /// The group's write-intent map: marked before a write reaches the volume.
    intents: Arc<Intents>,
}

impl<B: Send + 'static> SplitExport<B> {
    pub fn new(
        volume: FileExport,
        index: u16,
        seq: Arc<Sequencer<B>>,
        intents: Arc<Intents>,
    ) -> SplitExport<B> {
        SplitExport {
            volume,
            index,
            seq,
            intents,
        }
    }

    /// Runs `change` on the volume between entering and numbering, so the journal
    /// sees it in the order the volume did. Writes run on the server's own threads
    /// (`quick`); one that has to wait (for an overlapping write, a hold) waits with
    /// [`waiting`], so it does not stall the other connections. A full queue never
    /// holds it back: the sequencer marks it instead.
    fn changed(
        &self,
        offset: u64,
        len: u64,
        change: impl FnOnce() -> io::Result<Change>,
    ) -> io::Result<()> {
        let ticket = match self.seq.try_enter(self.index, offset, len)? {
            Some(t) => t,
            None => waiting(|| self.seq.enter(self.index, offset, len))?,
        };
        let mut entered = Entered {
            seq: &self.seq,
            intents: &self.intents,
            ticket: Some(ticket),
            // Before the volume has it, so that a crash from here on reads it back.
            epoch: Some(self.intents.intend(self.index, offset, len)),
            len,
        };
        match change() {
            Ok(c) => {
                let t = entered.ticket.take().expect("taken once");
                let n = self.seq.number(t, c);
                self.intents
                    .done(entered.epoch.take().expect("taken once"), Some(n));
                Ok(())
            }
            Err(e) => {
                // The range may be partly written: `Entered` marks it, to be read back.
                tracing::error!(volume = self.index, offset, len, error = %e,
                    "a write to the volume failed; its range is marked and read back into the journal");
                Err(e)
            }
        }
    }
}

impl<B> SplitExport<B> {
    /// What tracks acknowledged writes the journal may not have is durable before a
    /// FLUSH or a FUA write is answered (`durable`), as the volume is.
    fn durable(&self, durable: bool) -> io::Result<()> {
        if durable {
            self.intents.sync();
        }
        Ok(())
    }
}

/// Runs `f`, which may block for a while, so that a runtime worker thread it runs on
/// hands its other tasks to another worker first (`block_in_place`); elsewhere (a
/// blocking thread, no runtime) it just runs.
fn waiting<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A write in flight: never left unnumbered, so one that fails (or panics) on the
/// volume never leaves its range blocking the writes that overlap it, or a hold, nor
/// its write-intent epoch uncleared.
struct Entered<'a, B> {
    seq: &'a Sequencer<B>,
    intents: &'a Intents,
    ticket: Option<super::sequencer::Ticket>,
    epoch: Option<usize>,
    len: u64,
}

impl<B> Drop for Entered<'_, B> {
    /// A write that failed (or panicked) after it may have touched its volume is
    /// numbered and marked, so that what the volume holds there is read back.
    fn drop(&mut self) {
        match (self.ticket.take(), self.epoch.take()) {
            (Some(t), Some(e)) => {
                let n = self.seq.number_failed(t, self.len);
                self.intents.done(e, Some(n));
            }
            (Some(t), None) => self.seq.abandon(t),
            (None, Some(e)) => self.intents.done(e, None),
            (None, None) => {}
        }
    }
}

impl<B: Send + 'static> Export for SplitExport<B> {
    fn size(&self) -> u64 {
        self.volume.size()
    }

    fn capabilities(&self) -> Capabilities {
        // Every connection shares the one volume and one sequencer: FLUSH on one
        // covers them all.
        self.volume.capabilities()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.volume.read(offset, buf)
    }

    fn write(&self, offset: u64, data: Vec<u8>, fua: bool) -> io::Result<()> {
        let len = data.len() as u64;
        self.changed(offset, len, || {
            // The data goes to the volume, then (without a copy) to the queue.
            self.volume.write_at(offset, &data, fua)?;
            Ok(Change::Data(data))
        })?;
        self.durable(fua)
    }

    fn flush(&self) -> io::Result<()> {
        self.volume.flush()?;
        self.durable(true)
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        // A TRIM is made a zeroing (a hole in a file): then the journal can say what
        // the range holds afterwards.
        self.zero(offset, len, ZeroFlags::default(), fua)
    }

    fn zero(&self, offset: u64, len: u64, zero: ZeroFlags, fua: bool) -> io::Result<()> {
        self.changed(offset, len, || {
            self.volume.zero(offset, len, zero, fua)?;
            Ok(Change::Zero(len))
        })?;
        self.durable(fua)
    }

    fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.volume.cache(offset, len)
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        self.volume.block_status(offset, len)
    }

    fn quick(&self, write: bool) -> bool {
        // A write that has to wait (an overlapping one, a hold, the queue) says so to
        // the runtime, see `changed`.
        self.volume.quick(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_the_volume_refuses_is_marked_and_blocks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        // Read-only: every write to it fails, and is marked to be read back. An
        // overlapping write after a failed one, and a hold (which waits for every
        // write in flight), go through.
        let map = super::super::dirty::DirtyMap::new(&[1 << 20], 65536);
        let seq = Arc::new(Sequencer::<()>::new(0, 1 << 20, map.clone()));
        let intents = Arc::new(Intents::new(map, 0, None));
        let v = SplitExport::new(
            FileExport::open(&path, true).unwrap(),
            0,
            seq.clone(),
            intents,
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            assert!(v.write(0, vec![1; 4096], false).is_err());
            assert!(v.zero(0, 4096, ZeroFlags::default(), false).is_err());
            let marked = (seq.mode(), seq.lag().dirty_bytes);
            seq.hold();
            tx.send((seq.last(), marked)).unwrap();
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(
            got,
            Ok((2, (super::super::Mode::Marking, 65536))),
            "a failed write is left in flight, or not marked"
        );
    }
}
