//! The resynchroniser: while the group resynchronises, it reads each marked region
//! back from its volume and numbers it like a write, so the journal catches up with
//! the volumes and the gap ends (docs/journal-format.md, "Gaps").
use super::export::SplitExport;
use super::intent::Intents;
use super::sequencer::{Change, Sequencer};
use super::Asked;
use crate::nbd::Export;
use std::sync::Arc;
use std::time::Duration;

/// The most one read takes back at once: the unit of journal record and of the
/// wait it imposes on a write that overlaps it.
pub const MAX_READ: u64 = 1 << 20;

/// Runs until the group closes.
pub fn run(
    seq: Arc<Sequencer<Asked>>,
    volumes: Vec<Arc<SplitExport<Asked>>>,
    intents: Arc<Intents>,
) {
    let mut buf = Vec::new();
    while let Some((ticket, len)) = seq.next_resync(MAX_READ) {
        let (volume, offset) = (ticket.volume(), ticket.offset());
        buf.resize(len as usize, 0);
        match volumes[volume as usize].read(offset, &mut buf) {
            Ok(()) => {
                // A region that reads as zeros is journalled as such: no data to store.
                let change = if buf.iter().all(|b| *b == 0) {
                    Change::Zero(len)
                } else {
                    Change::Data(std::mem::take(&mut buf))
                };
                intents.numbered(seq.number_resync(ticket, change));
            }
            Err(e) => {
                tracing::error!(volume, offset, len, error = %e,
                    "cannot read a marked region back; trying again in a second");
                seq.abandon_resync(ticket, len);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
