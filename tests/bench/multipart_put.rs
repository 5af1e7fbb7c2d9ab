//! The limit for `cascade export` to S3 in `make bench`: a plain object_store multipart
//! upload of the same bytes, with nothing of cascade's around it (no journal, no
//! record checks, no CRC, no manifest).
//!
//! ```text
//! multipart-put --bucket B --key K [--skip N] FILE...
//! multipart-put --bucket B --key K --get
//! ```
//!
//! Uploads the files one after another as the one object `K` of bucket `B`, leaving
//! out the first `--skip` bytes of each (the journal segment header, which cascade does
//! not upload either), with `WriteMultipart` in 16 MiB parts, at most 4 in flight, read
//! in 4 MiB buffers: what `src/replica/transfer.rs` does. The endpoint, region and
//! credentials come from the standard AWS environment variables (AWS_ENDPOINT_URL,
//! AWS_ALLOW_HTTP, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Prints one
//! JSON line: `{"bytes":N,"seconds":S}`.
//!
//! With `--get` it reads object `K` back and throws the bytes away instead: what the
//! server alone takes to serve it, the bound on any download of it (`restore`).
use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

/// The same part size and concurrency as cascade's object exporter.
const PART: usize = 16 << 20;
const PARTS_IN_FLIGHT: usize = 4;
const BUFFER: usize = 4 << 20;

#[derive(clap::Parser)]
struct Args {
    #[arg(long)]
    bucket: String,
    /// The object's key in the bucket.
    #[arg(long)]
    key: String,
    /// Bytes to leave out at the start of each file.
    #[arg(long, default_value_t = 0)]
    skip: u64,
    /// Download the object instead of uploading.
    #[arg(long, conflicts_with_all = ["files", "skip"])]
    get: bool,
    #[arg(required_unless_present = "get")]
    files: Vec<PathBuf>,
}

fn main() -> Result<()> {
    let a = <Args as clap::Parser>::parse();
    // As cascade's object runtime: two worker threads.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let t0 = Instant::now();
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(&a.bucket)
        .with_virtual_hosted_style_request(false)
        .build()
        .context("cannot reach the S3 store (set AWS_ENDPOINT_URL and credentials)")?;
    let key = ObjectPath::from(a.key.as_str());
    let bytes = if a.get {
        rt.block_on(get(&store, &key))?
    } else {
        rt.block_on(put(&store, &key, &a))?
    };
    let seconds = t0.elapsed().as_secs_f64();
    println!("{{\"bytes\":{bytes},\"seconds\":{seconds:.3}}}");
    Ok(())
}

async fn get(store: &impl ObjectStore, key: &ObjectPath) -> Result<u64> {
    let mut stream = store.get(key).await?.into_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        size += chunk?.len() as u64;
    }
    Ok(size)
}

async fn put(store: &impl ObjectStore, key: &ObjectPath, a: &Args) -> Result<u64> {
    let upload = store.put_multipart(key).await?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
    let mut buf = vec![0u8; BUFFER];
    let mut size = 0u64;
    for path in &a.files {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata()?.len();
        if len < a.skip {
            bail!("{} is shorter than --skip {}", path.display(), a.skip);
        }
        let mut at = a.skip;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], at)
                .with_context(|| format!("cannot read {}", path.display()))?;
            w.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            w.write(&buf[..n]);
            size += n as u64;
            at += n as u64;
        }
    }
    w.finish().await.context("cannot complete the upload")?;
    Ok(size)
}
