use super::print_json;
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
/// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, ...), for gs:// from Google's
/// (GOOGLE_APPLICATION_CREDENTIALS, GOOGLE_SERVICE_ACCOUNT), for az:// from Azure's
/// (AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY, ...).
///
/// With --grid (and --config naming the grid's counter store): restores every
/// volume of every stream of the grid at a grid bookmark (--until bookmark:NAME),
/// into --to-dir DIR/STREAM/ID.img, each from the object replica its stream
/// registered. Only a complete bookmark is offered: one every stream recorded, so
/// the volumes are consistent across hosts. Every replica is checked to hold the
/// bookmark, with the grid's value, before anything is written.
#[derive(clap::Args)]
pub struct Args {
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`,
    /// `file:///dir` or a directory.
    #[arg(long, required_unless_present = "grid", conflicts_with = "grid")]
    from: Option<String>,
    /// Targets, one per volume: `ID=PATH`, or bare paths in the volumes' order.
    #[arg(long, num_args = 1.., required_unless_present = "grid", value_name = "[ID=]PATH")]
    to: Vec<Destination>,
    /// Restore every stream of this grid (the config's `grid.name`) at a grid bookmark.
    #[arg(long, requires_all = ["config", "to_dir", "until"])]
    grid: Option<String>,
    /// With --grid: the YAML config whose `grid:` section names the counter store.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// With --grid: where each stream's volumes go, as DIR/STREAM/ID.img.
    #[arg(long, value_name = "DIR", conflicts_with = "to")]
    to_dir: Option<PathBuf>,
    /// Delta id, bookmark name or time, as for `replay --until`; default the newest.
    #[arg(long, value_name = "DELTA|BOOKMARK|TIME")]
    until: Option<Point>,
    /// An S3-compatible endpoint (otherwise AWS_ENDPOINT_URL, otherwise AWS); for
    /// az://, the Blob service endpoint (an emulator's; otherwise Azure's).
    #[arg(long)]
    endpoint: Option<String>,
    /// The bucket's region (otherwise AWS_REGION / AWS_DEFAULT_REGION, otherwise
    /// us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// Allow plain HTTP to the endpoint.
    #[arg(long)]
    allow_http: bool,
    /// An encrypted replica's secret: the first line of this file (mode 600), a key
    /// from `cascade key generate` or a passphrase. Without it, or with a wrong one,
    /// nothing is written; an object that fails authentication is named. With --grid,
    /// the one secret opens every stream's replica (give it a key slot in each).
    #[arg(long, value_name = "PATH", conflicts_with = "key_env")]
    key_file: Option<PathBuf>,
    /// An encrypted replica's secret, from this environment variable.
    #[arg(long, value_name = "VAR")]
    key_env: Option<String>,
    /// Where the scratch journal goes (as large as the deltas restored).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
    /// Print the report (the deltas restored, bytes written and zeroed, per volume) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(grid) = &a.grid {
        return restore_grid(&a, grid);
    }
    let from = a.from.clone().expect("clap requires --from without --grid");
    let key = key_source(&a);
    let options = cascade::config::ObjectOptions {
        endpoint: a.endpoint,
        region: a.region,
        allow_http: a.allow_http,
        key,
        ..Default::default()
    };
    let source = Source {
        url: from.clone(),
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
    super::print_replay_report(&r, &format!("restored from {from}"), a.json);
    Ok(ExitCode::SUCCESS)
}

/// The secret --key-file or --key-env names.
fn key_source(a: &Args) -> Option<cascade::config::KeySource> {
    match (&a.key_file, &a.key_env) {
        (Some(f), _) => Some(cascade::config::KeySource::File(f.clone())),
        (None, Some(v)) => Some(cascade::config::KeySource::Env(v.clone())),
        (None, None) => None,
    }
}

fn restore_grid(a: &Args, grid: &str) -> anyhow::Result<ExitCode> {
    let cfg = cascade::config::Config::load(a.config.as_ref().expect("clap requires --config"))?;
    let g = cascade::grid::Grid::open(&cfg, Some(grid))?;
    let Some(Point::Bookmark(name)) = &a.until else {
        anyhow::bail!(cascade::Error::InvalidArgument(
            "--grid restores to a grid bookmark: give --until bookmark:NAME".into()
        ));
    };
    let progress = super::progress::observer();
    let dir = a.to_dir.as_ref().expect("clap requires --to-dir");
    let done = cascade::grid::restore::restore_grid(
        &g,
        name,
        dir,
        &a.work_dir,
        key_source(a).as_ref(),
        progress.as_ref(),
    )?;
    if a.json {
        print_json(&done);
    } else {
        for s in &done {
            super::print_replay_report(
                &s.report,
                &format!("stream {}: restored from {}", s.stream, s.replica),
                false,
            );
        }
        println!(
            "grid {grid}: {} streams restored at bookmark {name}",
            done.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
