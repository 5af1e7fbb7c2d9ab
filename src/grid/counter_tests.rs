//! The counter against the in-memory store, a store whose creates land and then
//! fail, and the local directory store under a race.
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
