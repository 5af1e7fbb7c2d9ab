//! How a manifest is stored (docs/object-replica.md): a small head, `manifest.json`,
//! pointing at immutable chunks of [`CHUNK_DELTAS`] delta entries each, so the bytes
//! written per delta stay bounded as a replica ages; and the head written only
//! conditionally, so two writers on one prefix cannot overwrite each other.
use super::{Bucket, Manifest, ManifestDelta, MANIFEST};
use crate::error::{Error, Result};
use object_store::{PutMode, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

/// Delta entries per sealed chunk: a head never lists more than this many less one,
/// and a reader pays one GET per this many deltas.
pub const CHUNK_DELTAS: usize = 64;

/// Who writes a replica: named in the error another writer gets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Writer {
    pub host: String,
    pub pid: u32,
    /// A random UUID drawn when the exporter opens: also part of every object key it
    /// uploads, so two writers never write the same key.
    pub id: String,
}

impl Writer {
    /// This process, with a fresh random id.
    pub fn this_process() -> Result<Writer> {
        Ok(Writer {
            host: proc_line("/proc/sys/kernel/hostname")?,
            pid: std::process::id(),
            id: uuid()?,
        })
    }
}

/// A fresh random UUID (the kernel's).
fn uuid() -> Result<String> {
    proc_line("/proc/sys/kernel/random/uuid")
}

fn proc_line(path: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(Error::io("cannot read", path))
}

/// A sealed chunk, as the head or a newer chunk names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkRef {
    pub key: String,
    pub first: u64,
    pub last: u64,
    pub size: u64,
    pub crc32c: u32,
}

/// `manifest.d/F-L-W.json`: the entries of deltas F..=L, never changed once written.
#[derive(Debug, Serialize, Deserialize)]
struct Chunk {
    format: u32,
    previous: Option<ChunkRef>,
    deltas: Vec<ManifestDelta>,
}

/// `manifest.json`, format 2 (3 when it lists split deltas).
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    format: u32,
    journal: Option<String>,
    writer: Writer,
    /// A random id drawn for each write: lets a writer recognise its own write
    /// behind a conflict.
    request: String,
    /// The oldest delta listed; chunks wholly before it are not read.
    first: Option<u64>,
    chunk: Option<ChunkRef>,
    deltas: Vec<ManifestDelta>,
    fulls: Vec<ManifestDelta>,
    bookmarks: Vec<crate::journal::BookmarkEntry>,
}

/// Just the format number, read before the rest.
#[derive(Deserialize)]
struct Format {
    format: u32,
}

/// What a writer knows of the head it last read or wrote: the version a conditional
/// write must match, and the chunks already sealed.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// None: no head exists, the next write creates one.
    version: Option<UpdateVersion>,
    chunk: Option<ChunkRef>,
    /// The newest delta in a sealed chunk (0: none).
    sealed: u64,
}

impl Bucket {
    /// The manifest, or an empty one if nothing was exported yet.
    pub async fn manifest(&self) -> Result<Manifest> {
        Ok(self.load_manifest().await?.0)
    }

    /// The manifest and what a writer must know to replace it.
    pub async fn load_manifest(&self) -> Result<(Manifest, Stored)> {
        let key = self.key(MANIFEST);
        let got = match self.store.get(&key).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                // Plain objects must not go into a replica made encrypted (by an
                // export that stopped before its first manifest).
                if !self.encrypted() && self.encryption_info().await?.is_some() {
                    return Err(self.key_error(
                        "encryption.json says it is encrypted: give the replica's secret (a target's `encryption:`, or --key-file / --key-env)".into(),
                    ));
                }
                return Ok((Manifest::default(), Stored::default()));
            }
            Err(e) => return Err(self.err("cannot read manifest", e)),
        };
        let version = Some(UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        });
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.err("cannot read manifest", e))?;
        let bytes = self.open_bytes(MANIFEST, bytes.to_vec()).await?;
        let corrupt = |e: serde_json::Error| Error::CorruptObject {
            url: self.url.clone(),
            object: key.to_string(),
            delta: None,
            offset: 0,
            reason: format!("the manifest does not parse: {e}"),
        };
        match serde_json::from_slice::<Format>(&bytes)
            .map_err(corrupt)?
            .format
        {
            1 => {
                let m: Manifest = serde_json::from_slice(&bytes).map_err(corrupt)?;
                Ok((
                    m,
                    Stored {
                        version,
                        ..Stored::default()
                    },
                ))
            }
            2 | 3 => {
                let head: Head = serde_json::from_slice(&bytes).map_err(corrupt)?;
                let deltas = self.chunked(&head).await?;
                let sealed = head.chunk.as_ref().map_or(0, |c| c.last);
                Ok((
                    Manifest {
                        journal: head.journal,
                        deltas,
                        fulls: head.fulls,
                        bookmarks: head.bookmarks,
                    },
                    Stored {
                        version,
                        chunk: head.chunk,
                        sealed,
                    },
                ))
            }
            f => Err(Error::InvalidArgument(format!(
                "{}: manifest format {f} is not one this cascade reads (it reads 1 to 3)",
                self.url
            ))),
        }
    }

    /// The deltas a format-2 head lists: its chunks' back to `first`, then its own.
    async fn chunked(&self, head: &Head) -> Result<Vec<ManifestDelta>> {
        let Some(first) = head.first else {
            return Ok(Vec::new());
        };
        let mut chunks = Vec::new();
        let mut next = head.chunk.clone();
        while let Some(r) = next.filter(|r| r.last >= first) {
            let key = self.key(&r.key);
            let bytes = self
                .store
                .get(&key)
                .await
                .map_err(|e| super::object_error(self, &key, e))?
                .bytes()
                .await
                .map_err(|e| self.err("cannot read manifest chunk", e))?;
            let bytes = self.open_bytes(&r.key, bytes.to_vec()).await?;
            let corrupt = |reason: String| Error::CorruptObject {
                url: self.url.clone(),
                object: key.to_string(),
                delta: None,
                offset: 0,
                reason,
            };
            let crc = crc32c::crc32c(&bytes);
            if (bytes.len() as u64, crc) != (r.size, r.crc32c) {
                return Err(corrupt(format!(
                    "the chunk is {} bytes with CRC {crc:08x}; the manifest says {} bytes with CRC {:08x}",
                    bytes.len(),
                    r.size,
                    r.crc32c
                )));
            }
            let chunk: Chunk = serde_json::from_slice(&bytes)
                .map_err(|e| corrupt(format!("the manifest chunk does not parse: {e}")))?;
            next = chunk.previous;
            chunks.push(chunk.deltas);
        }
        Ok(chunks
            .into_iter()
            .rev()
            .flatten()
            .chain(head.deltas.iter().cloned())
            .filter(|d| d.delta >= first)
            .collect())
    }

    /// Replaces the manifest by `m`, conditionally on the head being the one `stored`
    /// describes; on success `stored` describes the new head. Entries beyond a chunk's
    /// worth are sealed into chunks first. A head changed by anyone else is refused
    /// with an error naming its writer; one that carries this write's request id was
    /// this write, landed behind a retry, and is accepted.
    pub async fn put_manifest(
        &self,
        m: &Manifest,
        stored: &mut Stored,
        writer: &Writer,
    ) -> Result<()> {
        let mut next = stored.clone();
        let first = m.deltas.first().map(|d| d.delta);
        // Nothing in the sealed chunks is listed any more: start a new list.
        if next
            .chunk
            .as_ref()
            .is_some_and(|c| first.is_none_or(|f| c.last < f))
        {
            next.chunk = None;
        }
        let mut tail: Vec<ManifestDelta> = m
            .deltas
            .iter()
            .filter(|d| d.delta > next.sealed)
            .cloned()
            .collect();
        while tail.len() >= CHUNK_DELTAS {
            let rest = tail.split_off(CHUNK_DELTAS);
            let sealed = std::mem::replace(&mut tail, rest);
            next.chunk = Some(self.seal(sealed, next.chunk.take(), writer).await?);
            next.sealed = next.chunk.as_ref().map_or(0, |c| c.last);
        }
        // Format 3 is format 2 whose entries may hold split deltas (`writes`, runs
        // with `first`): a reader that knows only 2 would take a run for its last
        // delta alone, so it is told to refuse instead.
        let split = m
            .deltas
            .iter()
            .any(|d| d.first.is_some() || d.writes.is_some());
        let head = Head {
            format: if split { 3 } else { 2 },
            journal: m.journal.clone(),
            writer: writer.clone(),
            request: uuid()?,
            first,
            chunk: next.chunk.clone(),
            deltas: tail,
            fulls: m.fulls.clone(),
            bookmarks: m.bookmarks.clone(),
        };
        let bytes = serde_json::to_vec(&head).expect("manifest serialises");
        let bytes = self.seal_bytes(MANIFEST, bytes).await?;
        match self.put_head(bytes, next.version.as_ref()).await {
            Ok(put) => {
                next.version = Some(UpdateVersion {
                    e_tag: put.e_tag,
                    version: put.version,
                });
            }
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => next.version = Some(self.own_write(&head.request).await?),
            Err(e) => return Err(self.err("cannot write manifest", e)),
        }
        self.sync(MANIFEST)?;
        *stored = next;
        Ok(())
    }

    /// Uploads `deltas` as a chunk after `previous`.
    async fn seal(
        &self,
        deltas: Vec<ManifestDelta>,
        previous: Option<ChunkRef>,
        writer: &Writer,
    ) -> Result<ChunkRef> {
        let (first, last) = (deltas[0].delta, deltas[deltas.len() - 1].delta);
        let key = format!("manifest.d/{first:020}-{last:020}-{}.json", writer.id);
        let bytes = serde_json::to_vec(&Chunk {
            format: 2,
            previous,
            deltas,
        })
        .expect("manifest chunk serialises");
        let r = ChunkRef {
            key,
            first,
            last,
            size: bytes.len() as u64,
            crc32c: crc32c::crc32c(&bytes),
        };
        let bytes = self.seal_bytes(&r.key, bytes).await?;
        let path = self.key(&r.key);
        let put = self
            .store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.err("cannot write manifest chunk", e))?;
        // Written once, like the deltas it lists: locked like them, so a lock leaves a
        // replica that restores, not only its data.
        self.lock_written(&path, put.version.as_deref()).await?;
        self.sync(&r.key)?;
        Ok(r)
    }

    /// After a refused write of the head: the head's version if it is the write of
    /// `request` (it landed, and a retry was refused), else an error naming whoever
    /// wrote it.
    async fn own_write(&self, request: &str) -> Result<UpdateVersion> {
        let key = self.key(MANIFEST);
        let got = self
            .store
            .get(&key)
            .await
            .map_err(|e| self.err("cannot read back manifest", e))?;
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.err("cannot read back manifest", e))?;
        let bytes = self.open_bytes(MANIFEST, bytes.to_vec()).await?;
        let head: Option<Head> = serde_json::from_slice(&bytes).ok();
        match head {
            Some(h) if h.request == request => Ok(version),
            Some(h) => Err(Error::OtherWriter {
                url: self.url.clone(),
                writer: format!(
                    "host {} pid {} (writer {}, journal {})",
                    h.writer.host,
                    h.writer.pid,
                    h.writer.id,
                    h.journal.as_deref().unwrap_or("unknown")
                ),
            }),
            None => Err(Error::OtherWriter {
                url: self.url.clone(),
                writer: "a writer of an older manifest format".into(),
            }),
        }
    }

    /// Writes the head: created if `expect` is None, else replaced only if it is
    /// still at version `expect`. A local directory cannot do the second
    /// (`LocalFileSystem` has no `Update`): there the check and the replace run under
    /// an exclusive lock on the directory, which every cascade writer takes.
    async fn put_head(
        &self,
        bytes: Vec<u8>,
        expect: Option<&UpdateVersion>,
    ) -> object_store::Result<object_store::PutResult> {
        let key = self.key(MANIFEST);
        let payload = PutPayload::from(bytes);
        let Some(dir) = &self.local else {
            let mode = expect.map_or(PutMode::Create, |v| PutMode::Update(v.clone()));
            return self.store.put_opts(&key, payload, mode.into()).await;
        };
        let lock = std::fs::File::open(dir).and_then(|f| f.lock().map(|()| f));
        let _lock = lock.map_err(|e| object_store::Error::Generic {
            store: "local directory",
            source: format!("cannot lock {}: {e}", dir.display()).into(),
        })?;
        let Some(expect) = expect else {
            return self
                .store
                .put_opts(&key, payload, PutMode::Create.into())
                .await;
        };
        let now = match self.store.head(&key).await {
            Ok(meta) => Some(meta.e_tag),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if now.as_ref() != Some(&expect.e_tag) {
            return Err(object_store::Error::Precondition {
                path: key.to_string(),
                source: "the head changed since it was read".into(),
            });
        }
        self.store.put(&key, payload).await
    }
}
