use super::print_json;
use cascade::config::{Config, KeySource};
use cascade::replica::{runtime, Bucket, UserSecret};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Manage who can read an encrypted object replica (docs/encryption.md).
///
/// An encrypted replica's data is under one data key, drawn when its first export
/// creates it; each secret that can read it is a key slot wrapping that data key
/// (`keys/SLOT.json` in the replica). Adding or removing a slot never rewrites data.
/// A target's own secret is its `encryption:` (`key-file: PATH`, or `key-env: VAR`):
/// every command here opens the replica with it first.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Write a new random 256-bit key to FILE, readable by its owner only.
    ///
    /// The file's one line (`cascade-key-v1:` and 64 hex digits) is what a target's
    /// `encryption: { key-file: FILE }` or `cascade restore --key-file FILE` reads.
    /// FILE must not exist. Keep a copy where the replica's host is not: without a
    /// slot's secret nobody can read the replica, not even with the store's help.
    Generate {
        /// Where to write the key (created with mode 600; never overwritten).
        file: PathBuf,
    },
    /// List a target's key slots: id, kind (key or passphrase), when and where made,
    /// and which one the target's own secret opens.
    List {
        #[command(flatten)]
        target: TargetArgs,
        /// One JSON object: {"target", "slots": [{id, kind, created, host, current}]}.
        #[arg(long)]
        json: bool,
    },
    /// Let another secret read the target's replica: a new slot wrapping its data key.
    Add {
        #[command(flatten)]
        target: TargetArgs,
        /// The new secret's file (its first line; mode 600).
        #[arg(
            long,
            value_name = "PATH",
            required_unless_present = "new_key_env",
            conflicts_with = "new_key_env"
        )]
        new_key_file: Option<PathBuf>,
        /// The environment variable holding the new secret.
        #[arg(long, value_name = "VAR")]
        new_key_env: Option<String>,
        /// Print {"target", "added"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a key slot (its id, or a unique start of it) so its secret no longer
    /// reads the replica. The slot the target's own secret opens cannot be removed
    /// this way: remove it with another slot's secret.
    ///
    /// Whoever copied the data key while they could read it still can: removing a
    /// slot stops a secret, not a reader who kept the key.
    Remove {
        #[command(flatten)]
        target: TargetArgs,
        /// The slot's id, as `cascade key list` shows it.
        id: String,
        /// Print {"target", "removed"} as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub struct TargetArgs {
    /// The YAML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// The encrypted object target.
    #[arg(long)]
    target: String,
}

impl TargetArgs {
    /// The target's replica, opened with its own secret.
    fn bucket(&self) -> anyhow::Result<Bucket> {
        let cfg = Config::load(&self.config)?;
        let t = cfg.target(&self.target)?;
        let Some((url, options)) = t.spec.object_options() else {
            anyhow::bail!(cascade::Error::InvalidArgument(format!(
                "target `{}` is a block target; only object targets are encrypted",
                self.target
            )));
        };
        if options.key.is_none() {
            anyhow::bail!(cascade::Error::InvalidArgument(format!(
                "target `{}` has no `encryption:`; its replica is not encrypted",
                self.target
            )));
        }
        Ok(Bucket::open(url, &options)?)
    }
}

pub fn run(c: Command) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match c {
        Command::Generate { file } => {
            write_new_key(&file)?;
            println!(
                "wrote a new key to {}; keep a copy away from the replica's host: without a slot's secret the replica cannot be read",
                file.display()
            );
        }
        Command::List { target, json } => {
            let slots = rt.block_on(target.bucket()?.list_keys())?;
            if json {
                print_json(&serde_json::json!({ "target": target.target, "slots": slots }));
            } else {
                println!("{:<32}  {:<10}  {:<20}  host", "slot", "kind", "created");
                for s in &slots {
                    println!(
                        "{:<32}  {:<10}  {:<20}  {}{}",
                        s.id,
                        s.kind,
                        s.created,
                        s.host,
                        if s.current {
                            "  (this target's secret)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        Command::Add {
            target,
            new_key_file,
            new_key_env,
            json,
        } => {
            let src = match (new_key_file, new_key_env) {
                (Some(f), _) => KeySource::File(f),
                (None, Some(v)) => KeySource::Env(v),
                (None, None) => unreachable!("clap requires one"),
            };
            let new = UserSecret::load(&src).map_err(cascade::Error::InvalidArgument)?;
            let id = rt.block_on(target.bucket()?.add_key(&new))?;
            if json {
                print_json(&serde_json::json!({ "target": target.target, "added": id }));
            } else {
                println!("target {}: added key slot {id}", target.target);
            }
        }
        Command::Remove { target, id, json } => {
            let id = rt.block_on(target.bucket()?.remove_key(&id))?;
            if json {
                print_json(&serde_json::json!({ "target": target.target, "removed": id }));
            } else {
                println!("target {}: removed key slot {id}", target.target);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` (mode 600, never replacing a file) holding a fresh key, durably.
fn write_new_key(path: &Path) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => cascade::Error::AlreadyExists(format!(
                "{} exists; a key file is never overwritten (it may be the only copy of a key)",
                path.display()
            )),
            _ => cascade::Error::Io {
                what: "cannot create key file",
                path: path.into(),
                cause: e,
            },
        })?;
    let line = UserSecret::generate();
    f.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| cascade::Error::Io {
            what: "cannot write key file",
            path: path.into(),
            cause: e,
        })?;
    cascade::fsutil::sync_dir(cascade::fsutil::parent_dir(path))?;
    Ok(())
}
