//! The grid's counter, in an object store the streams already use: one object a
//! value, made with a conditional create, so no protocol of our own decides who got
//! which value. Under the counter's prefix:
//!
//! ```text
//! streams/STREAM.json          a registered stream (its group, volumes, replicas)
//! values/00000000000000000007.json  value 7: the bookmark's name, who asked, when,
//!                              and the asking request's unique id
//! names/HEX(NAME).json         which request owns the name (a conditional create)
//! head.json                    a value known to be taken: where the next taker
//!                              starts looking (a hint, overwritten, never trusted)
//! marks/00000000000000000007/STREAM.json  STREAM's journal holds bookmark 7
//! ```
//! A bookmark is complete when every stream registered before its value was taken
//! has its mark, and the name is its own.
//!
//! Conditional creates are not idempotent and clients retry them: a create that
//! landed can come back as `AlreadyExists`, and a timeout can hide one that landed.
//! So a value's object carries the request's id, and any doubt is settled by
//! reading the object back.
use crate::config::ObjectOptions;
use crate::error::{Error, Result};
use crate::replica::Bucket;
use futures_util::TryStreamExt;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use serde::Deserialize;
use std::time::{Duration, Instant};

use super::objects::{Claim, Head};
pub use super::objects::{GridBookmark, Mark, ReplicaRef, StreamInfo, Value, VolumeRef};

#[derive(Clone)]
pub struct Counter {
    bucket: Bucket,
    /// The highest value this process saw taken: where its next take starts, with
    /// no read of the head hint.
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// How many times a create whose outcome is unknown is tried again.
const ATTEMPTS: u32 = 5;

fn value_key(v: u64) -> String {
    format!("values/{v:020}.json")
}

/// Any name is a valid key this way, of one length (a file name on a local
/// directory store has at most 255 bytes).
fn name_key(name: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    format!("names/{}.json", super::wire::hex(d.as_ref()))
}

impl Counter {
    pub fn open(url: &str, o: &ObjectOptions) -> Result<Counter> {
        Ok(Counter::from_bucket(Bucket::open(url, o)?))
    }

    pub fn from_bucket(bucket: Bucket) -> Counter {
        Counter {
            bucket,
            seen: Default::default(),
        }
    }

    pub fn url(&self) -> &str {
        &self.bucket.url
    }

    fn store(&self) -> &dyn ObjectStore {
        self.bucket.store.as_ref()
    }

    async fn get<T: for<'a> Deserialize<'a>>(&self, name: &str) -> Result<T> {
        let key = self.bucket.key(name);
        let bytes = self
            .store()
            .get(&key)
            .await
            .map_err(|e| self.bucket.err("cannot read the grid counter", e))?
            .bytes()
            .await
            .map_err(|e| self.bucket.err("cannot read the grid counter", e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::CorruptObject {
            url: self.bucket.url.clone(),
            object: key.to_string(),
            delta: None,
            offset: 0,
            reason: format!("not a grid counter object: {e}"),
        })
    }

    async fn put(&self, name: &str, body: Vec<u8>, mode: PutMode) -> object_store::Result<()> {
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        self.store()
            .put_opts(&self.bucket.key(name), PutPayload::from(body), opts)
            .await?;
        Ok(())
    }

    /// Names under `dir/`, sorted.
    async fn list(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = self.bucket.key(dir);
        let mut names: Vec<String> = self
            .store()
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| self.bucket.err("cannot list the grid counter", e))?
            .into_iter()
            .filter_map(|k| {
                let p = self.bucket.prefix.as_ref();
                let rel = if p.is_empty() {
                    k.as_str()
                } else {
                    k.strip_prefix(p)?.strip_prefix('/')?
                };
                Some(rel.to_string())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Makes a new object durable on a local directory store, with every
    /// directory on its way (`marks/N/` is new with its first mark).
    fn durable(&self, name: &str) -> Result<()> {
        self.bucket.sync(name)?;
        if let Some(root) = &self.bucket.local {
            let mut dir = root.join(self.bucket.key(name).as_ref());
            while dir.pop() && dir.starts_with(root) && dir != *root {
                if let Some(up) = dir.parent() {
                    crate::fsutil::sync_dir(up)?;
                }
            }
        }
        Ok(())
    }

    /// Registers a stream, keeping the first registration's `since_ns`.
    pub async fn register(&self, info: &StreamInfo) -> Result<StreamInfo> {
        let name = format!("streams/{}.json", info.stream);
        let body = serde_json::to_vec(info).expect("serialises");
        match self.put(&name, body, PutMode::Create).await {
            Ok(()) => {
                self.durable(&name)?;
                return Ok(info.clone());
            }
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(self.bucket.err("cannot register the stream", e)),
        }
        let old: StreamInfo = self.get(&name).await?;
        let merged = StreamInfo {
            since_ns: old.since_ns,
            ..info.clone()
        };
        if merged != old {
            self.put(
                &name,
                serde_json::to_vec(&merged).expect("serialises"),
                PutMode::Overwrite,
            )
            .await
            .map_err(|e| self.bucket.err("cannot register the stream", e))?;
            self.durable(&name)?;
        }
        Ok(merged)
    }

    /// The registered streams' names, from a listing alone.
    pub async fn stream_names(&self) -> Result<Vec<String>> {
        Ok(self
            .list("streams")
            .await?
            .iter()
            .filter_map(|n| {
                Some(
                    n.strip_prefix("streams/")?
                        .strip_suffix(".json")?
                        .to_string(),
                )
            })
            .collect())
    }

    pub async fn streams(&self) -> Result<Vec<StreamInfo>> {
        let mut names = self.list("streams").await?;
        names.retain(|n| n.ends_with(".json"));
        let mut out: Vec<StreamInfo> = self.get_all(&names).await?;
        out.sort_by(|a, b| a.stream.cmp(&b.stream));
        Ok(out)
    }

    /// A value known to be taken (0 for none): the head hint, or without one the
    /// highest value listed. The hint only saves a listing: a stale one costs a
    /// failed create per value it lags.
    async fn highest(&self) -> Result<u64> {
        let seen = self.seen.load(std::sync::atomic::Ordering::Relaxed);
        if seen > 0 {
            return Ok(seen);
        }
        match self.get::<Head>("head.json").await {
            Ok(h) => return Ok(h.value),
            Err(Error::NotFound(_) | Error::CorruptObject { .. }) => {}
            Err(e) => return Err(e),
        }
        let names = self.list("values").await?;
        Ok(names
            .iter()
            .filter_map(|n| {
                n.strip_prefix("values/")?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0))
    }

    /// Moves the head hint to `value`, a value taken. Best effort: a lost update
    /// only makes the next taker try more values.
    pub async fn advance_head(&self, value: u64) {
        let body = serde_json::to_vec(&Head { value }).expect("serialises");
        if self
            .put("head.json", body, PutMode::Overwrite)
            .await
            .is_ok()
        {
            let _ = self.durable("head.json");
        }
    }

    /// Takes the next value for bookmark `name`, then claims the name. A name
    /// another request owns is refused, and the value just taken stays void.
    pub async fn take(&self, name: &str, by: &str) -> Result<Value> {
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "grid bookmark name `{name}` must be 1-255 printable characters"
            )));
        }
        let id = super::wire::nonce();
        // The value first: a name is never claimed by a request without a value.
        let value = self.create_value(name, by, &id).await?;
        match self.claim(name, &id).await? {
            None => Ok(value),
            Some(owner) => Err(Error::AlreadyExists(format!(
                "grid bookmark `{name}` already exists in {} (claimed at {})",
                self.bucket.url,
                crate::clock::format_time(owner.time_ns)
            ))),
        }
    }

    /// Creates the next free value for request `id`.
    async fn create_value(&self, name: &str, by: &str, id: &str) -> Result<Value> {
        let mut n = self.highest().await? + 1;
        let mut unknown = 0;
        loop {
            let v = Value {
                value: n,
                name: name.to_string(),
                id: id.to_string(),
                by: by.to_string(),
                time_ns: crate::clock::now_ns(),
            };
            let key = value_key(n);
            let put = self
                .put(
                    &key,
                    serde_json::to_vec(&v).expect("serialises"),
                    PutMode::Create,
                )
                .await;
            if put.is_ok() {
                self.durable(&key)?;
                self.seen.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                return Ok(v);
            }
            // Whose is it? Only the object can say.
            match self.get::<Value>(&key).await {
                Ok(there) if there.id == id => {
                    self.seen.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                    return Ok(there);
                }
                Ok(_) => n += 1,
                Err(Error::NotFound(_)) if unknown + 1 < ATTEMPTS => {
                    unknown += 1;
                    tokio::time::sleep(Duration::from_millis(50 << unknown)).await;
                }
                Err(e) => {
                    return Err(match put {
                        Err(pe) => self
                            .bucket
                            .err("cannot take the next grid counter value", pe),
                        Ok(()) => e,
                    })
                }
            }
        }
    }

    /// Claims `name` for request `id`: None when it is ours, else its owner. The
    /// request whose create of the name's object lands owns it; a doubt is settled
    /// by reading it back, as for values.
    async fn claim(&self, name: &str, id: &str) -> Result<Option<Claim>> {
        let key = name_key(name);
        let mine = Claim {
            id: id.to_string(),
            time_ns: crate::clock::now_ns(),
        };
        let put = self
            .put(
                &key,
                serde_json::to_vec(&mine).expect("serialises"),
                PutMode::Create,
            )
            .await;
        if put.is_ok() {
            self.durable(&key)?;
            return Ok(None);
        }
        match self.get::<Claim>(&key).await {
            Ok(there) if there.id == id => Ok(None),
            Ok(there) => Ok(Some(there)),
            Err(e) => Err(match put {
                Err(pe) => self.bucket.err("cannot claim the grid bookmark's name", pe),
                Ok(()) => e,
            }),
        }
    }

    /// Reads the objects `keys` that exist, a bounded number at a time.
    async fn get_all<T: for<'a> Deserialize<'a>>(&self, keys: &[String]) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(32) {
            let got = futures_util::future::join_all(chunk.iter().map(|k| self.get::<T>(k))).await;
            for g in got {
                match g {
                    Ok(v) => out.push(v),
                    Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    async fn values(&self) -> Result<Vec<Value>> {
        let keys: Vec<String> = self
            .list("values")
            .await?
            .into_iter()
            .filter(|k| k.ends_with(".json"))
            .collect();
        let mut out: Vec<Value> = self.get_all(&keys).await?;
        out.sort_by_key(|v| v.value);
        Ok(out)
    }

    /// Says that `mark.stream`'s journal holds bookmark `mark.value`.
    pub async fn record(&self, mark: &Mark) -> Result<()> {
        let name = format!("marks/{:020}/{}.json", mark.value, mark.stream);
        self.put(
            &name,
            serde_json::to_vec(mark).expect("serialises"),
            PutMode::Overwrite,
        )
        .await
        .map_err(|e| self.bucket.err("cannot record the grid bookmark's mark", e))?;
        self.durable(&name)
    }

    /// Every value with its marks, oldest first.
    pub async fn bookmarks(&self) -> Result<Vec<GridBookmark>> {
        let (values, marks, streams) = futures_util::future::try_join3(
            self.values(),
            async {
                let mut names = self.list("marks").await?;
                names.retain(|n| n.ends_with(".json"));
                self.get_all::<Mark>(&names).await
            },
            self.streams(),
        )
        .await?;
        let mut names: Vec<String> = values.iter().map(|v| name_key(&v.name)).collect();
        names.sort();
        names.dedup();
        let owners: std::collections::HashSet<String> = self
            .get_all::<Claim>(&names)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        Ok(values
            .into_iter()
            .map(|v| {
                let duplicate = !owners.contains(&v.id);
                let mine: Vec<Mark> = marks
                    .iter()
                    .filter(|m| m.value == v.value && m.name == v.name)
                    .cloned()
                    .collect();
                let missing: Vec<String> = streams
                    .iter()
                    .filter(|s| {
                        s.since_ns <= v.time_ns && !mine.iter().any(|m| m.stream == s.stream)
                    })
                    .map(|s| s.stream.clone())
                    .collect();
                let complete = !duplicate && missing.is_empty() && !mine.is_empty();
                GridBookmark {
                    value: v,
                    marks: mine,
                    missing,
                    duplicate,
                    complete,
                }
            })
            .collect())
    }

    /// The bookmark named `name`: the value whose request owns the name (or, when
    /// none does, the first carrying it).
    pub async fn find(&self, name: &str) -> Result<GridBookmark> {
        let all: Vec<GridBookmark> = self
            .bookmarks()
            .await?
            .into_iter()
            .filter(|b| b.value.name == name)
            .collect();
        let owner = all.iter().position(|b| !b.duplicate).unwrap_or(0);
        all.into_iter().nth(owner).ok_or_else(|| {
            Error::NotFound(format!("no grid bookmark `{name}` in {}", self.bucket.url))
        })
    }

    /// One conditional create of a throw-away object, and its delete: what a
    /// bookmark's latency is measured against. Returns the create's duration.
    pub async fn probe_put(&self) -> Result<Duration> {
        let name = format!("probe/{}.json", super::wire::nonce());
        let started = Instant::now();
        self.put(&name, b"{}".to_vec(), PutMode::Create)
            .await
            .map_err(|e| self.bucket.err("cannot write a probe", e))?;
        let took = started.elapsed();
        let _ = self.store().delete(&self.bucket.key(&name)).await;
        Ok(took)
    }
}

#[cfg(test)]
#[path = "counter_tests.rs"]
mod tests;
