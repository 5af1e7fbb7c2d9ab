use super::{human_bytes, print_json};
use cascade::config::Config;
use cascade::replica::{scrub, Bucket};
use std::path::PathBuf;
use std::process::ExitCode;

/// Look after a replica target.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Scrub an object target's replica: does it hold what its manifest says?
    ///
    /// Reads the manifest (an encrypted one must authenticate under the target's
    /// key), then checks that every object it names (deltas, runs of split deltas,
    /// synthetic full images) exists with its size. With --read-data, that share of
    /// the objects (default all; picked at random, so scrubs of a share in turn cover
    /// the replica) is also read whole: every frame of an encrypted object
    /// authenticated, every record's checksum, the records' order and commit digests,
    /// every data record decompressed, and the object's size and CRC-32C against the
    /// manifest. Nothing is changed. Every problem is named, by object and delta.
    ///
    /// Exits 0 if all is well, 4 if any object is missing or damaged (see
    /// `cascade restore`'s exit codes); progress of --read-data goes to stderr.
    Verify {
        /// The object target.
        name: String,
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Also read this percentage of the objects whole (default 100).
        #[arg(long, value_name = "PERCENT", num_args = 0..=1, default_missing_value = "100",
              value_parser = percent)]
        read_data: Option<f64>,
        /// Print the report as one JSON object: {url, encrypted, objects, bytes,
        /// read_objects, read_bytes, problems: [{object, delta, reason}]}.
        #[arg(long)]
        json: bool,
    },
}

fn percent(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage"))?;
    if p > 0.0 && p <= 100.0 {
        Ok(p)
    } else {
        Err(format!("{s}: give a percentage above 0, at most 100"))
    }
}

pub fn run(c: Command) -> anyhow::Result<ExitCode> {
    let Command::Verify {
        name,
        config,
        read_data,
        json,
    } = c;
    let cfg = Config::load(&config)?;
    let t = cfg.target(&name)?;
    let Some((url, options)) = t.spec.object_options() else {
        anyhow::bail!(cascade::Error::InvalidArgument(format!(
            "target `{name}` is a block target; `target verify` scrubs object replicas"
        )));
    };
    let bucket = Bucket::open(url, &options)?;
    let progress = super::progress::observer();
    let r = scrub(&bucket, read_data, progress.as_ref())?;
    if json {
        print_json(&r);
    } else {
        for p in &r.problems {
            println!("{} (delta {}): {}", p.object, p.delta, p.reason);
        }
        println!(
            "target {name} ({}{}): {} objects, {}; {} read whole ({}); {}",
            r.url,
            if r.encrypted { ", encrypted" } else { "" },
            r.objects,
            human_bytes(r.bytes),
            r.read_objects,
            human_bytes(r.read_bytes),
            match r.problems.len() {
                0 => "no problems".to_string(),
                n => format!("{n} problems"),
            }
        );
    }
    Ok(if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}
