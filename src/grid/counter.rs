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
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VolumeRef {
    pub id: String,
    pub size: u64,
}

/// Where a stream's object replica is; never its credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReplicaRef {
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StreamInfo {
    pub stream: String,
    pub cg: String,
    pub host: String,
    /// When it first registered: bookmarks before it do not expect its mark.
    pub since_ns: i64,
    pub volumes: Vec<VolumeRef>,
    pub replicas: Vec<ReplicaRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Value {
    pub value: u64,
    pub name: String,
    /// The taking request's unique id: whose create it was.
    pub id: String,
    pub by: String,
    pub time_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Mark {
    pub stream: String,
    pub value: u64,
    pub name: String,
    pub after_delta: u64,
    pub last_write: Option<u64>,
    pub time_ns: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GridBookmark {
    #[serde(flatten)]
    pub value: Value,
    pub marks: Vec<Mark>,
    /// Streams registered before the value was taken that have no mark.
    pub missing: Vec<String>,
    /// Another value owns the name (or none does: its taking stopped before it
    /// claimed it): this one is void.
    pub duplicate: bool,
    pub complete: bool,
}

/// The head hint's object.
#[derive(Serialize, Deserialize)]
struct Head {
    value: u64,
}

/// A name's owner: the request that claimed it.
#[derive(Serialize, Deserialize)]
struct Claim {
    id: String,
    time_ns: i64,
}

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

/// Any name is a valid key this way, and 255 bytes make 510.
fn name_key(name: &str) -> String {
    format!("names/{}.json", super::wire::hex(name.as_bytes()))
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

    /// Names under `dir/`, after `offset` when given, sorted.
    async fn list(&self, dir: &str, offset: Option<&str>) -> Result<Vec<String>> {
        let prefix = self.bucket.key(dir);
        let listed = match offset {
            Some(o) => self
                .store()
                .list_with_offset(Some(&prefix), &self.bucket.key(o)),
            None => self.store().list(Some(&prefix)),
        };
        let mut names: Vec<String> = listed
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

    fn durable(&self, name: &str) -> Result<()> {
        self.bucket.sync(name)
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
            .list("streams", None)
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
        let mut names = self.list("streams", None).await?;
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
        let names = self.list("values", None).await?;
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

    /// Takes the next value for bookmark `name`: the value's create and the name's
    /// claim go at once. A name another request owns is refused, and the value
    /// taken meanwhile stays void.
    pub async fn take(&self, name: &str, by: &str) -> Result<Value> {
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "grid bookmark name `{name}` must be 1-255 printable characters"
            )));
        }
        let id = super::wire::nonce();
        let (value, claimed) = (
            self.create_value(name, by, &id).await,
            self.claim(name, &id).await,
        );
        let value = value?;
        match claimed? {
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
            .list("values", None)
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
                let mut names = self.list("marks", None).await?;
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
                    .filter(|m| m.value == v.value)
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

    /// The bookmark named `name`: the lowest value carrying it.
    pub async fn find(&self, name: &str) -> Result<GridBookmark> {
        self.bookmarks()
            .await?
            .into_iter()
            .find(|b| b.value.name == name)
            .ok_or_else(|| {
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
mod tests {
    use super::*;
    use std::sync::Arc;

    fn mem() -> Counter {
        Counter::from_bucket(Bucket::from_store(
            Arc::new(object_store::memory::InMemory::new()),
            "grid/shop",
            "memory://grid/shop",
        ))
    }

    fn stream(name: &str, since_ns: i64) -> StreamInfo {
        StreamInfo {
            stream: name.into(),
            cg: "db".into(),
            host: "h".into(),
            since_ns,
            volumes: vec![],
            replicas: vec![],
        }
    }

    fn mark(stream: &str, v: &Value) -> Mark {
        Mark {
            stream: stream.into(),
            value: v.value,
            name: v.name.clone(),
            after_delta: 1,
            last_write: None,
            time_ns: 0,
        }
    }

    #[tokio::test]
    async fn values_count_up_names_are_unique_and_completeness_follows_the_marks() {
        let c = mem();
        c.register(&stream("a", 0)).await.unwrap();
        c.register(&stream("b", 0)).await.unwrap();
        let one = c.take("x", "t").await.unwrap();
        let two = c.take("y", "t").await.unwrap();
        assert_eq!((one.value, two.value), (1, 2));
        assert_eq!(c.take("z", "t").await.unwrap().value, 3);
        let e = c.take("x", "t").await.unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
        c.record(&mark("a", &one)).await.unwrap();
        let b = c.find("x").await.unwrap();
        assert!(!b.complete && b.missing == ["b"], "{b:?}");
        c.record(&mark("b", &one)).await.unwrap();
        assert!(c.find("x").await.unwrap().complete);
        let all = c.bookmarks().await.unwrap();
        assert_eq!(all.len(), 4);
        // A stale head hint costs tries, never a value taken twice.
        c.advance_head(1).await;
        assert_eq!(c.take("w", "t").await.unwrap().value, 5);
        assert!(all[3].duplicate && !all[3].complete, "{:?}", all[3]);
        assert!(!all[0].duplicate);
        // A stream registered after a value is not expected to hold it; and a
        // registration again keeps the first time.
        let late = stream("c", i64::MAX - 1);
        c.register(&late).await.unwrap();
        assert!(c.find("x").await.unwrap().complete);
        let again = c.register(&stream("c", 5)).await.unwrap();
        assert_eq!(again.since_ns, i64::MAX - 1);
    }

    /// A store whose first conditional create lands and then reports an error, as a
    /// timed-out request that had reached the server does.
    #[derive(Debug)]
    struct LandsThenFails {
        inner: object_store::memory::InMemory,
        failed: std::sync::atomic::AtomicBool,
    }

    impl std::fmt::Display for LandsThenFails {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("lands-then-fails")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for LandsThenFails {
        async fn put_opts(
            &self,
            location: &object_store::path::Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            let r = self.inner.put_opts(location, payload, opts).await?;
            if location.as_ref().contains("values/")
                && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                return Err(object_store::Error::Generic {
                    store: "test",
                    source: "timed out".into(),
                });
            }
            Ok(r)
        }
        async fn put_multipart_opts(
            &self,
            location: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }
        async fn delete(&self, location: &object_store::path::Path) -> object_store::Result<()> {
            self.inner.delete(location).await
        }
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
        ) -> object_store::Result<()> {
            self.inner.copy(from, to).await
        }
        async fn copy_if_not_exists(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
        ) -> object_store::Result<()> {
            self.inner.copy_if_not_exists(from, to).await
        }
    }

    #[tokio::test]
    async fn a_create_that_landed_but_failed_is_known_as_ours_by_its_id() {
        let store = Arc::new(LandsThenFails {
            inner: object_store::memory::InMemory::new(),
            failed: Default::default(),
        });
        let c = Counter::from_bucket(Bucket::from_store(store, "g", "test://g"));
        let v = c.take("x", "t").await.unwrap();
        assert_eq!(
            v.value, 1,
            "the landed create is ours, not a reason to take 2"
        );
        assert_eq!(c.take("y", "t").await.unwrap().value, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_takers_on_a_local_directory_get_distinct_values() {
        let d = tempfile::tempdir().unwrap();
        let url = d.path().to_str().unwrap().to_string();
        let mut tasks = Vec::new();
        for t in 0..8 {
            let c = Counter::open(&url, &ObjectOptions::default()).unwrap();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..10 {
                    got.push(c.take(&format!("b{t}-{i}"), "t").await.unwrap().value);
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        assert_eq!(all, (1..=80).collect::<Vec<u64>>());
    }
}
