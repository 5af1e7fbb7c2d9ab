use cascade::journal::Point;
use cascade::replay::Destination;
use cascade::restore::{restore, Source};
use std::path::PathBuf;
use std::process::ExitCode;

/// Rebuild volumes at an exported point from an object-store replica alone.
///
/// Needs nothing but the object store: the manifest says what was exported; the
/// restore reads the newest full image at or before the point and the deltas after
/// it. Every object must exist with the size the manifest gives before anything is
/// written, and every record is checked against its checksum.
///
/// Into files that do not exist yet, the restore streams: each record is applied as it
/// arrives, to PATH.partial, renamed to PATH once complete and fsynced; any failure
/// removes the partial files. An existing PATH.partial (another restore running, or
/// one that was killed) is refused: remove it once no restore runs. Onto existing files or block devices, every object is
/// first downloaded into a scratch journal under --work-dir and checked completely
/// (sizes, CRC-32C, every record), so a damaged replica never changes a target.
/// Credentials come from the standard AWS environment variables (AWS_ACCESS_KEY_ID,
/// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, ...).
#[derive(clap::Args)]
pub struct Args {
    /// `s3://bucket/prefix`, `file:///dir` or a directory.
    #[arg(long)]
    from: String,
    /// Targets, one per volume: `ID=PATH`, or bare paths in the volumes' order.
    #[arg(long, num_args = 1.., required = true, value_name = "[ID=]PATH")]
    to: Vec<Destination>,
    /// Delta id, bookmark name or time, as for `replay --until`; default the newest.
    #[arg(long, value_name = "DELTA|BOOKMARK|TIME")]
    until: Option<Point>,
    /// An S3-compatible endpoint (otherwise AWS_ENDPOINT_URL, otherwise AWS).
    #[arg(long)]
    endpoint: Option<String>,
    /// The bucket's region (otherwise AWS_REGION / AWS_DEFAULT_REGION, otherwise
    /// us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// Allow plain HTTP to the endpoint.
    #[arg(long)]
    allow_http: bool,
    /// Where the scratch journal goes (as large as the deltas restored).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
    /// Print the report (the deltas restored, bytes written and zeroed, per volume) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let options = cascade::config::ObjectOptions {
        endpoint: a.endpoint,
        region: a.region,
        allow_http: a.allow_http,
        ..Default::default()
    };
    let source = Source {
        url: a.from.clone(),
        options,
    };
    let progress = super::progress::observer();
    let r = restore(
        &source,
        a.until.as_ref(),
        &a.to,
        &a.work_dir,
        progress.as_ref(),
    )?;
    super::print_replay_report(&r, &format!("restored from {}", a.from), a.json);
    Ok(ExitCode::SUCCESS)
}
