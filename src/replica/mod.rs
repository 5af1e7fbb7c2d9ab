//! The object replica's format, shared by the object exporter that writes it and the
//! restore that reads it: the journal's deltas as objects in object storage (S3 and
//! S3-compatible stores, or a local directory) through the `object_store` crate, so
//! that any exported point can be restored on a machine that has never seen the
//! journal. Other `object_store` backends (GCS, Azure) need only their URL parsed here.
//!
//! Layout under the target's prefix:
//! - `deltas/NNNNNNNNNNNNNNNNNNNN-W.cjd`: one object per delta, holding that delta's
//!   journal records byte for byte (each still carries its CRC and the commit digest),
//!   uploaded as multipart uploads of 16 MiB parts, at most 4 in flight. `W` is the
//!   writer's id, so two writers racing on one prefix never write the same key.
//! - `fulls/NNNNNNNNNNNNNNNNNNNN-W.cjd`: synthetic full images, each a full delta with
//!   the id of the delta it was built at (see `export/chain.rs`), in the same format.
//! - `manifest.json` and `manifest.d/`: what has been exported, with each object's
//!   size and CRC-32C: a small head and immutable chunks of 64 entries (`head.rs`).
//!   The head is written last, after the delta's object is complete, so a reader
//!   never sees a half-exported delta; it is the target's cursor, and it is written
//!   only conditionally (one writer at a time). Retention rewrites it before deleting
//!   the objects it no longer names.
//!
//! - For an encrypted replica (`encryption:`), `encryption.json` and `keys/`, and
//!   every other object sealed (`keys.rs`, `seal.rs`, `docs/encryption.md`).
//!
//! The format, and the older one still read, is in `docs/object-replica.md`.
mod bucket;
mod head;
mod keys;
mod lock;
mod manifest;
mod scrub;
pub mod seal;
mod transfer;

pub use bucket::{runtime, Bucket};
pub use head::{Stored, Writer, CHUNK_DELTAS};
pub use keys::{SlotInfo, UserSecret, ENCRYPTION};
pub use manifest::{Manifest, ManifestDelta, Reach, MANIFEST};
pub use scrub::{scrub, Problem, ScrubReport};
pub use transfer::{
    check_objects, check_whole, corrupt_object, download, object_error, object_frame, parts,
    prefix, upload_range, PartsReader,
};
