//! One volume of a split group as an NBD export: the volume itself (a `FileExport`)
//! with every change numbered and queued for the journal on its way to the reply.
use super::sequencer::{Change, Sequencer};
use crate::nbd::{Capabilities, Export, FileExport, ZeroFlags};
use std::io;
use std::sync::Arc;

pub struct SplitExport<B> {
    volume: FileExport,
    index: u16,
    seq: Arc<Sequencer<B>>,
}

impl<B: Send + 'static> SplitExport<B> {
    pub fn new(volume: FileExport, index: u16, seq: Arc<Sequencer<B>>) -> SplitExport<B> {
        SplitExport { volume, index, seq }
    }

    /// Runs `change` on the volume between entering and numbering, so the journal
    /// sees it in the order the volume did.
    fn changed(
        &self,
        offset: u64,
        len: u64,
        change: impl FnOnce() -> io::Result<Change>,
    ) -> io::Result<()> {
        let t = self.seq.enter(self.index, offset, len)?;
        match change() {
            Ok(c) => {
                self.seq.number(t, c);
                Ok(())
            }
            Err(e) => {
                // The range may be partly written; nothing is journalled for it.
                tracing::error!(volume = self.index, offset, len, error = %e,
                    "a write to the volume failed; the journal may differ from the volume in that range until the next base");
                self.seq.abandon(t);
                Err(e)
            }
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
        })
    }

    fn flush(&self) -> io::Result<()> {
        self.volume.flush()
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
        })
    }

    fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.volume.cache(offset, len)
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        self.volume.block_status(offset, len)
    }

    fn quick(&self, write: bool) -> bool {
        // A write may wait for an overlapping one, a hold or the queue.
        !write && self.volume.quick(false)
    }
}
