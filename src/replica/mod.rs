//! The object replica's format, shared by the object exporter that writes it and the
//! restore that reads it: the journal's deltas as objects in object storage (S3 and
//! S3-compatible stores, or a local directory) through the `object_store` crate, so
//! that any exported point can be restored on a machine that has never seen the
//! journal. Other `object_store` backends (GCS, Azure) need only their URL parsed here.
//!
//! Layout under the target's prefix:
//! - `deltas/NNNNNNNNNNNNNNNNNNNN.cjd`: one object per delta, holding that delta's
//!   journal records byte for byte (each still carries its CRC and the commit digest),
//!   uploaded as multipart uploads of 16 MiB parts, at most 4 in flight.
//! - `fulls/NNNNNNNNNNNNNNNNNNNN.cjd`: synthetic full images, each a full delta with the
//!   id of the delta it was built at (see `export/chain.rs`), in the same record format.
//! - `manifest.json`: what has been exported, with each object's size and CRC-32C.
//!   It is written last, after the delta's object is complete, so a reader never sees
//!   a half-exported delta; it is the target's cursor. Retention rewrites it before
//!   deleting the objects it no longer names.
mod bucket;
mod manifest;
mod transfer;

pub use bucket::{runtime, Bucket};
pub use manifest::{Manifest, ManifestDelta, MANIFEST};
pub use transfer::{
    check_objects, check_whole, corrupt_object, download, object_error, parts, upload_range,
};
