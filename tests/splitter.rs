//! The splitter: a split group served over NBD by `cascade split`, its writes
//! journalled in order. The core property, with generated cases: replaying the
//! journal to write N gives, byte for byte, what the volumes held after write N.
mod common;

use cascade::journal::record::Record;
use cascade::journal::Journal;
use common::nbd::{client, qemu_io, Raw};
use common::split::{replay, Split, BIN};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn digest(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

fn file_digest(p: &Path) -> Vec<u8> {
    digest(&std::fs::read(p).unwrap())
}

/// Every write of the journal: its number and (volume, offset).
fn journalled_writes(journal: &Path) -> Vec<(u64, u16, u64)> {
    let j = Journal::open(journal).unwrap();
    let mut out = Vec::new();
    for d in j.deltas().iter().filter(|d| d.writes.is_some()) {
        let mut r = j.read_delta(d.delta).unwrap();
        while let Some(rec) = r.next_record().unwrap() {
            let (volume, offset) = match &rec {
                Record::Data { volume, offset, .. } | Record::Zero { volume, offset, .. } => {
                    (*volume, *offset)
                }
                _ => continue,
            };
            let w = rec.stamp().unwrap().write;
            // A write longer than an extent record is several records of one number.
            if out.last().is_none_or(|l: &(u64, u16, u64)| l.0 != w) {
                out.push((w, volume, offset));
            }
        }
    }
    out
}

#[test]
fn replay_to_every_hundredth_write_equals_the_shadow_copy() {
    for seed in [1u64, 2] {
        let dir = tempfile::tempdir().unwrap();
        let vols = [("web", 4 * MIB), ("db", 2 * MIB)];
        let split = Split::start(dir.path(), &vols, "10ms");
        let mut shadow: Vec<Vec<u8>> = vols.iter().map(|(_, s)| vec![0u8; *s as usize]).collect();
        let mut conns: Vec<Raw> = vols
            .iter()
            .map(|(id, _)| Raw::open(split.addr, id))
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut at: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
        let writes = 2000u64;
        for n in 1..=writes {
            let v = rng.gen_range(0..vols.len());
            let size = vols[v].1;
            let len = rng.gen_range(1..=64 * KIB).min(size);
            let off = rng.gen_range(0..=size - len);
            let (o, l) = (off as usize, len as usize);
            match rng.gen_range(0..10) {
                0 => {
                    conns[v].zero(6, n, off, len as u32);
                    shadow[v][o..o + l].fill(0);
                }
                1 => {
                    conns[v].zero(4, n, off, len as u32);
                    shadow[v][o..o + l].fill(0);
                }
                _ => {
                    let mut data = vec![0u8; l];
                    rng.fill(&mut data[..]);
                    conns[v].write(n, off, &data);
                    shadow[v][o..o + l].copy_from_slice(&data);
                }
            }
            if n % 100 == 0 || n == 1 || n == 777 {
                at.insert(n, shadow.iter().map(|s| digest(s)).collect());
            }
        }
        conns.into_iter().for_each(Raw::disconnect);
        let report = split.stop();
        let exact_from = report["exact_from"].as_u64().unwrap();
        assert_eq!(report["shipped"]["writes"], writes - exact_from, "{report}");
        assert_eq!(report["shipped"]["last_write"], writes, "{report}");
        let deltas = report["shipped"]["deltas"].as_u64().unwrap();
        assert!(
            deltas > 1,
            "group commit made one delta of everything: {report}"
        );
        assert!(deltas < writes, "no group commit at all: {report}");
        let journal = dir.path().join("journal/vms");
        let ids: Vec<&str> = vols.iter().map(|(id, _)| *id).collect();
        let out = dir.path().join("out");
        // Writes numbered before the base was captured are in the base only: the
        // first point is the base itself, at write exact_from.
        let mut points: Vec<&u64> = at.keys().filter(|n| **n >= exact_from).collect();
        points.sort();
        assert!(points.len() > 20, "{report}");
        if exact_from > 1 {
            let early = Command::new(BIN)
                .arg("replay")
                .arg(&journal)
                .args(["--until", &format!("seq:{}", exact_from - 1), "--to"])
                .arg(out.join("x"))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&early.stderr);
            assert!(err.contains("took it in"), "{err}");
        }
        for n in points {
            let files = replay(&journal, &format!("seq:{n}"), &out, &ids);
            for (i, f) in files.iter().enumerate() {
                assert_eq!(
                    file_digest(f),
                    at[n][i],
                    "seed {seed}: {} after write {n}",
                    ids[i]
                );
            }
        }
        // And the last point is the volumes themselves.
        for (id, _) in vols {
            assert_eq!(
                file_digest(&out.join(id)),
                file_digest(&dir.path().join(format!("{id}.img")))
            );
        }
    }
}

#[test]
fn a_write_sent_after_another_reply_is_numbered_after_it_and_overlaps_replay_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let split = Split::start(dir.path(), &[("web", 16 * MIB)], "20ms");
    // A logical clock: every send and every reply received takes the next tick.
    let clock = Arc::new(AtomicU64::new(0));
    let per = 250u64;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (clock, addr) = (clock.clone(), split.addr);
            std::thread::spawn(move || {
                let mut c = Raw::open(addr, "web");
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                let mut log = Vec::new();
                for i in 0..per {
                    // Its own block (to find it in the journal) ...
                    let off = (i * 4 + t) * 4 * KIB;
                    let sent = clock.fetch_add(1, Ordering::SeqCst);
                    c.write(i, off, &[t as u8 + 1; 4096]);
                    let replied = clock.fetch_add(1, Ordering::SeqCst);
                    log.push((off, sent, replied));
                    // ... and now and then one of eight hot blocks every thread writes.
                    if rng.gen_bool(0.3) {
                        let hot =
                            8 * MIB + rng.gen_range(0..8u64) * 4 * KIB + rng.gen_range(0..2048);
                        let mut data = vec![0u8; rng.gen_range(1..8192)];
                        rng.fill(&mut data[..]);
                        c.write(1000 + i, hot, &data);
                    }
                }
                c.disconnect();
                log
            })
        })
        .collect();
    let logs: Vec<(u64, u64, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let report = split.stop();
    let last = report["shipped"]["last_write"].as_u64().unwrap();
    let journal = dir.path().join("journal/vms");
    let number: HashMap<u64, u64> = journalled_writes(&journal)
        .into_iter()
        .filter(|(_, _, off)| *off < 8 * MIB)
        .map(|(w, _, off)| (off, w))
        .collect();
    // Writes numbered before the base was captured are in the base only.
    let exact_from = report["exact_from"].as_u64().unwrap();
    assert!(number.len() as u64 + exact_from >= 4 * per, "{report}");
    let mut checked = 0u64;
    for a in logs.iter().filter(|a| number.contains_key(&a.0)) {
        for b in logs.iter().filter(|b| number.contains_key(&b.0)) {
            if b.1 > a.2 {
                assert!(
                    number[&b.0] > number[&a.0],
                    "write at {} sent after the reply to the write at {} arrived, yet numbered {} <= {}",
                    b.0,
                    a.0,
                    number[&b.0],
                    number[&a.0]
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100_000, "{checked}");
    // Overlapping writes from four connections: the journal's order is the volume's.
    let out = dir.path().join("out");
    let files = replay(&journal, &format!("seq:{last}"), &out, &["web"]);
    assert_eq!(
        file_digest(&files[0]),
        file_digest(&dir.path().join("web.img"))
    );
}
