use super::{human_bytes, print_json};
use cascade::clock::format_time;
use cascade::journal::record::Record;
use cascade::journal::verify::verify;
use cascade::journal::Journal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Inspect, check, prune and repair a journal. Only `prune` and `repair` modify it.
#[derive(clap::Subcommand)]
pub enum Command {
    /// List committed deltas and bookmarks.
    Ls {
        /// The journal: a directory, `journal-dir`/GROUP of the config (journals/demo
        /// in the demo).
        journal: PathBuf,
        /// One JSON object: its deltas and bookmarks, and the unfinished tail if any.
        #[arg(long)]
        json: bool,
    },
    /// Show one delta: its volumes and, with --extents, every extent record (with
    /// --json: one JSON line for the delta, then one per extent).
    Show {
        /// The journal: a directory, `journal-dir`/GROUP of the config (journals/demo
        /// in the demo).
        journal: PathBuf,
        /// Delta id, bookmark name, seq:N or time, as for `replay --until` (a write
        /// shows the split delta holding it).
        point: cascade::journal::Point,
        /// Also list every extent record: volume, offset, length, data or zero.
        #[arg(long)]
        extents: bool,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Read every record and check checksums, grammar, commit digests, that data
    /// decompresses, and that the index agrees. Exit 4 on damage.
    Verify {
        /// The journal: a directory, `journal-dir`/GROUP of the config (journals/demo
        /// in the demo).
        journal: PathBuf,
        /// One JSON object: counts, and the problem or unfinished tail found, if any.
        #[arg(long)]
        json: bool,
    },
    /// Cut a damaged journal after the last good delta, so that cycles can go on.
    ///
    /// `verify` and a refused cycle name the delta to cut at: the last one committed
    /// before the damage. Everything after that delta's commit goes: later deltas,
    /// bookmarks placed after it, and the damaged bytes. Every record up to the cut is
    /// checked first; if one is damaged, nothing changes and the error names the delta
    /// to cut at instead. The journal's start (what retention pruned) stays.
    ///
    /// Nothing is thrown away: the cut bytes are copied first into a directory beside
    /// the journal, `NAME.cut-after-DELTA-TIME` (for journals/demo cut after delta 7:
    /// journals/demo.cut-after-7-20261201T101500Z), holding `seg-N.cjs.from-OFFSET` (segment
    /// N's bytes from OFFSET on) and the old `index.cji`.
    ///
    /// The journal gets a new id and records the cut in its `cuts` file: the deltas
    /// written after the repair take the numbers of the ones cut, so a target that
    /// holds a delta past the cut is refused from then on (rebuild it), while a target
    /// at or before the cut goes on as before.
    ///
    /// Takes the writer lock (refused while a cycle or bookmark runs), like `prune`.
    Repair {
        /// The journal: a directory, `journal-dir`/GROUP of the config (journals/demo
        /// in the demo).
        journal: PathBuf,
        /// The last delta to keep (the journal's first delta minus one keeps none).
        #[arg(long, value_name = "DELTA")]
        cut_at: u64,
        /// Say what would be cut and where it would be saved, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object: the cut, the deltas and bookmarks removed, where they were
        /// saved, and the journal's old and new id.
        #[arg(long)]
        json: bool,
    },
    /// Remove a group's oldest deltas as its `journal-retention` policy allows, but
    /// never one a target of the group does not hold yet (a target that has never
    /// exported holds none). The newest delta always stays. `cascade export` does this
    /// after every export; this runs it on its own, or shows what it would do.
    ///
    /// This is the one journal command that changes the journal: it takes the writer
    /// lock, records the new first delta, then removes segments. Segments that a
    /// running replay, restore, verify or export may still read stay until the next
    /// prune after it ends; the output says how many.
    Prune {
        /// The cascade config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// The consistency group whose journal to prune.
        #[arg(long)]
        cg: String,
        /// Say what would be removed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object: the policy's bound, the slowest target, what was removed.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Ls { journal, json } => ls(journal, json),
        Command::Show {
            journal,
            point,
            extents,
            json,
        } => show(journal, point, extents, json),
        Command::Verify { journal, json } => check(journal, json),
        Command::Repair {
            journal,
            cut_at,
            dry_run,
            json,
        } => {
            let r = cascade::journal::repair::repair(&journal, cut_at, dry_run)?;
            if json {
                print_json(&r);
            } else {
                print_repair(&r);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune {
            config,
            cg,
            dry_run,
            json,
        } => {
            let cfg = cascade::config::Config::load(&config)?;
            let p = cascade::export::prune_journal(&cfg, cfg.group(&cg)?, dry_run)?;
            if json {
                print_json(&p);
            } else {
                print_prune(&p);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One line on what journal retention did (or would do) to a group's journal.
pub fn print_prune(p: &cascade::export::JournalPrune) {
    let why = match (&p.policy_keeps_from, &p.slowest_target) {
        _ if !p.policy => "no journal-retention policy: the journal keeps everything".to_string(),
        (None, _) => "the journal has no deltas yet".to_string(),
        (Some(k), Some((t, c))) => {
            format!("the policy keeps deltas from {k}; the slowest target, `{t}`, holds delta {c}")
        }
        (Some(k), None) => format!("the policy keeps deltas from {k}; the group has no targets"),
    };
    match &p.pruned {
        Some(r) => println!(
            "{}: journal pruned to start at delta {} ({} delta{}, {} removed{}): {why}",
            p.cg,
            r.first_after,
            r.deltas_removed,
            if r.deltas_removed == 1 { "" } else { "s" },
            human_bytes(r.bytes_freed),
            match r.segments_kept_for_readers {
                0 => String::new(),
                n => format!(
                    "; {n} segment{} kept while another reader has the journal open, for the next prune",
                    if n == 1 { "" } else { "s" }
                ),
            }
        ),
        None if p.dry_run => println!(
            "{}: journal would start at delta {} (dry run): {why}",
            p.cg, p.first_delta
        ),
        None => println!(
            "{}: journal starts at delta {}, nothing to prune: {why}",
            p.cg, p.first_delta
        ),
    }
}

fn ls(dir: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let j = Journal::open(&dir)?;
    if json {
        print_json(
            &serde_json::json!({ "deltas": j.deltas(), "bookmarks": j.bookmarks(), "tail": j.tail() }),
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>6}  {:<24}  {:<5}  {:>10}  {:>10}  {:>8}  WRITES",
        "DELTA", "TIME", "KIND", "CHANGED", "STORED", "RECORDS"
    );
    let mut marks = j.bookmarks().iter().peekable();
    for d in j.deltas() {
        while let Some(b) = marks.next_if(|b| b.after_delta < d.delta) {
            println!(
                "{:>6}  {:<24}  bookmark `{}`",
                "",
                format_time(b.time_ns),
                b.name
            );
        }
        let kind = if d.flags & cascade::journal::record::FLAG_FULL != 0 {
            "full"
        } else if d.writes.is_some() {
            "split"
        } else {
            "incr"
        };
        println!(
            "{:>6}  {:<24}  {:<5}  {:>10}  {:>10}  {:>8}  {}",
            d.delta,
            format_time(d.time_ns),
            kind,
            human_bytes(d.changed_bytes),
            human_bytes(d.stored_bytes),
            d.records,
            d.writes.map_or(String::new(), |w| format!(
                "{}..={} (exact from {}){}",
                w.first_write,
                w.last_write,
                w.exact_from,
                gap_note(&w)
            ))
        );
    }
    for b in marks {
        println!(
            "{:>6}  {:<24}  bookmark `{}`",
            "",
            format_time(b.time_ns),
            b.name
        );
    }
    if let Some(t) = j.tail() {
        println!(
            "tail: {} after the last commit at {} ({}); the next writer cuts it off",
            human_bytes(t.bytes),
            t.cut,
            t.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(
    dir: PathBuf,
    point: cascade::journal::Point,
    extents: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let j = Journal::open(&dir)?;
    let id = j.resolve(&point)?;
    let entry = j.delta(id)?.clone();
    let volumes = j.volumes_at(id)?;
    if json {
        print_json(
            &serde_json::json!({ "delta": entry, "time": format_time(entry.time_ns), "volumes": volumes }),
        );
    } else {
        println!("delta {} at {}", entry.delta, format_time(entry.time_ns));
        if let Some(w) = entry.writes {
            println!(
                "  split: writes {}..={}, exact from write {}{}",
                w.first_write,
                w.last_write,
                w.exact_from,
                gap_note(&w)
            );
        }
        println!(
            "  records {}, changed {}, stored {}",
            entry.records,
            human_bytes(entry.changed_bytes),
            human_bytes(entry.stored_bytes)
        );
        println!("  from {} to {}", entry.begin, entry.end);
        for v in &volumes {
            println!("  volume {:<16} {}", v.id, human_bytes(v.size));
        }
    }
    if !extents {
        return Ok(ExitCode::SUCCESS);
    }
    // One line per extent as it is read: a full delta of a large volume has millions.
    let mut r = j.read_delta(id)?;
    while let Some(rec) = r.next_record()? {
        let stamp = rec.stamp();
        let (volume, kind, offset, length, stored) = match rec {
            Record::Data {
                volume,
                offset,
                length,
                compressed,
                ..
            } => (
                volume,
                "data",
                offset,
                length as u64,
                Some(compressed.len()),
            ),
            Record::Zero {
                volume,
                offset,
                length,
                ..
            } => (volume, "zero", offset, length, None),
            _ => continue,
        };
        let volume = &volumes[volume as usize].id;
        if json {
            let mut line = serde_json::json!({"volume": volume, "kind": kind, "offset": offset, "length": length, "stored": stored});
            if let Some(s) = stamp {
                line["write"] = s.write.into();
                line["time"] = format_time(s.time_ns).into();
            }
            print_json(&line);
        } else if let Some(s) = stamp {
            println!(
                "  write {} at {}: {volume} {kind} {offset}+{length}",
                s.write,
                format_time(s.time_ns)
            );
        } else {
            println!("  {volume} {kind} {offset}+{length}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a repair did, or would do.
fn print_repair(r: &cascade::journal::repair::RepairReport) {
    let journal = r.journal.display();
    if r.nothing_to_cut {
        println!(
            "journal {journal} ends at delta {}: nothing to cut, nothing changed",
            r.cut_at
        );
        return;
    }
    let what = format!(
        "after delta {} at {}: {} of segments, deltas [{}], bookmarks [{}]",
        r.cut_at,
        r.cut,
        human_bytes(r.bytes),
        r.deltas_removed
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        r.bookmarks_removed.join(", ")
    );
    if r.dry_run {
        println!(
            "journal {journal}: would cut {what}; would save them to {} (dry run: nothing changed)",
            r.saved_to.display()
        );
        return;
    }
    println!(
        "journal {journal}: cut {what}; saved to {}",
        r.saved_to.display()
    );
    println!(
        "journal id is now {} (was {}): targets holding deltas past {} are refused until rebuilt",
        r.new_id.as_deref().unwrap_or("-"),
        r.old_id.as_deref().unwrap_or("-"),
        r.cut_at
    );
}

fn check(dir: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let r = verify(&dir, super::progress::observer().as_ref())?;
    if json {
        print_json(&r);
    } else {
        println!(
            "journal {}: {} segments, {} deltas, {} bookmarks, {} records, {} changed, {} stored",
            r.journal,
            r.segments,
            r.deltas,
            r.bookmarks,
            r.records,
            human_bytes(r.changed_bytes),
            human_bytes(r.stored_bytes)
        );
        if let Some(t) = &r.tail {
            println!(
                "tail: {} after the last commit at {} ({}); harmless, the next writer cuts it off",
                human_bytes(t.bytes),
                t.cut,
                t.reason
            );
        }
        match &r.problem {
            None => println!("ok: every checksum and commit digest matches"),
            Some(p) => println!(
                "DAMAGED at segment {} offset {}: {}\nto go on without what follows delta {}: {}",
                p.segment,
                p.offset,
                p.reason,
                p.last_good_delta,
                cascade::journal::repair::command(&dir, p.last_good_delta)
            ),
        }
    }
    Ok(if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

/// What a split delta's gap fields say, for `ls` and `show`: where write order was
/// lost, and where it resumes.
fn gap_note(w: &cascade::journal::record::Writes) -> String {
    match w.gap {
        None => String::new(),
        Some(g) => {
            let lost = if g.lost_after >= w.first_write {
                format!("; write order lost after {}", g.lost_after)
            } else {
                "; in a gap".to_string()
            };
            let resumes = if g.resumes {
                format!(", consistent again at {}", w.last_write)
            } else {
                String::new()
            };
            lost + &resumes
        }
    }
}
