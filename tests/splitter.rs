//! The splitter: a split group served over NBD by `cascade split`, its writes
//! journalled in order. The core property, with generated cases: replaying the
//! journal to write N gives, byte for byte, what the volumes held after write N.
mod common;

use cascade::journal::record::Record;
use cascade::journal::Journal;
use common::nbd::{client, qemu_io, Raw};
use common::split::{bookmark_command, digest, file_digest, replay, split_status, Split, BIN};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

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

#[test]
fn real_clients_write_through_the_splitter_and_the_journal_replays_the_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let vols = [("web", 64 * MIB), ("db", 32 * MIB)];
    let split = Split::start(dir.path(), &vols, "100ms");
    qemu_io(
        &split.uri("web"),
        &[
            "write -P 0xab 4096 64k",
            "write -f -P 0xcd 1M 128k",
            "write -z 2M 1M",
            "discard 1M 64k",
            "aio_write -P 0x21 8M 1M",
            "aio_write -P 0x22 8704k 1M",
            "aio_flush",
        ],
    );
    // nbdcopy over four connections (the splitter offers CAN_MULTI_CONN).
    let src = dir.path().join("src.img");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(32 * MIB).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut data = vec![0u8; 5 * MIB as usize];
    rng.fill(&mut data[..]);
    std::os::unix::fs::FileExt::write_all_at(&f, &data, 7 * MIB).unwrap();
    client(
        Command::new("nbdcopy")
            .args(["--connections=4", "--flush"])
            .arg(&src)
            .arg(split.uri("db")),
    );
    // fio's nbd engine, verifying what it wrote.
    client(Command::new("fio").args([
        "--name=split",
        "--ioengine=nbd",
        &format!("--uri={}", split.uri("web")),
        "--rw=randwrite",
        "--bs=16k",
        "--iodepth=16",
        "--offset=16M",
        "--size=16M",
        "--verify=crc32c",
        "--verify_state_save=0",
    ]));
    // A bookmark through the running splitter.
    let out = client(
        Command::new(BIN)
            .args(["bookmark", "-c"])
            .arg(dir.path().join("cascade.yaml"))
            .args(["--cg", "vms", "--name", "after-fio", "--json"]),
    );
    let mark: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let again = Command::new(BIN)
        .args(["bookmark", "-c"])
        .arg(dir.path().join("cascade.yaml"))
        .args(["--cg", "vms", "--name", "after-fio"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let at_mark: Vec<Vec<u8>> = vols
        .iter()
        .map(|(id, _)| file_digest(&dir.path().join(format!("{id}.img"))))
        .collect();
    qemu_io(&split.uri("web"), &["write -P 0x77 0 1M"]);
    let report = split.stop();
    let last = report["shipped"]["last_write"].as_u64().unwrap();
    assert_eq!(report["shipped"]["bookmarks"], 1, "{report}");

    let journal = dir.path().join("journal/vms");
    client(Command::new(BIN).args(["journal", "verify"]).arg(&journal));
    let ids = ["web", "db"];
    let out = dir.path().join("out");
    let files = replay(&journal, &format!("seq:{last}"), &out, &ids);
    for (f, id) in files.iter().zip(ids) {
        let img = dir.path().join(format!("{id}.img"));
        client(
            Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", "raw"])
                .arg(f)
                .arg(&img),
        );
    }
    let files = replay(&journal, "after-fio", &out, &ids);
    for (i, f) in files.iter().enumerate() {
        assert_eq!(
            file_digest(f),
            at_mark[i],
            "{} at the bookmark {mark}",
            ids[i]
        );
    }

    // A restart journals a new base and goes on numbering.
    let split = Split::start(dir.path(), &vols, "100ms");
    qemu_io(&split.uri("db"), &["write -P 0x99 0 4k"]);
    let second = split.stop();
    assert_eq!(second["exact_from"], last, "{second}");
    assert_eq!(second["shipped"]["last_write"], last + 1, "{second}");
    let j = Journal::open(&journal).unwrap();
    let newest = j.deltas().last().unwrap().writes.unwrap();
    assert_eq!((newest.first_write, newest.exact_from), (last + 1, last));
    let files = replay(&journal, &format!("seq:{}", last + 1), &out, &ids);
    assert_eq!(
        file_digest(&files[1]),
        file_digest(&dir.path().join("db.img"))
    );
    // seq:LAST is now two points (end of the first stream, and the second base):
    // the same bytes.
    let files = replay(&journal, &format!("seq:{last}"), &out, &ids);
    assert!(
        read_is(&files[1], 0, 4096, 0),
        "write {} is not in seq:{last}",
        last + 1
    );
}

fn read_is(p: &Path, offset: u64, len: usize, byte: u8) -> bool {
    let mut b = vec![0u8; len];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(p).unwrap(), &mut b, offset)
        .unwrap();
    b.iter().all(|x| *x == byte)
}

#[test]
fn bad_split_configs_and_arguments_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::File::create(dir.path().join("a.img"))
        .unwrap()
        .set_len(MIB)
        .unwrap();
    let cases = [
        ("splitter:\n      listen: nowhere\n", "splitter.listen"),
        ("splitter:\n      commit-every: 5m\n", "commit-every"),
        (
            "splitter:\n      queue: 1\n",
            "splitter.queue: 1 is below 1MiB",
        ),
        (
            "splitter:\n      dirty-granularity: 3KiB\n",
            "splitter.dirty-granularity",
        ),
        ("splitter:\n      queues: 1\n", "unknown field"),
        (
            "splitter: {}\n    schedule: { cron: \"* * * * *\" }\n",
            "takes no schedule",
        ),
    ];
    for (section, want) in cases {
        let cfg = format!(
            "state-dir: s\njournal-dir: j\nconsistency-groups:\n  - name: vms\n    {section}    volumes:\n      - {{ id: a, driver: file, path: a.img }}\n"
        );
        std::fs::write(dir.path().join("c.yaml"), cfg).unwrap();
        let out = Command::new(BIN)
            .args(["split", "-c", "c.yaml", "--cg", "vms"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{section}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{section}: {err}");
    }
    // A group without a splitter is not served.
    std::fs::write(
        dir.path().join("c.yaml"),
        "state-dir: s\njournal-dir: j\nconsistency-groups:\n  - name: vms\n    volumes:\n      - { id: a, driver: file, path: a.img }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["split", "-c", "c.yaml", "--cg", "vms"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no splitter"));
}

/// `cascade bookmark --name NAME` of group `vms`, configured in `dir`.
fn bookmark(dir: &Path, name: &str) {
    client(&mut bookmark_command(dir, name));
}

/// `cascade status --json`'s report of group `vms`.

#[test]
fn the_daemon_serves_a_split_group_and_keeps_its_replicas_within_seconds() {
    use common::daemon::Daemon;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vols = [("web", 32 * MIB), ("db", 16 * MIB)];
    for (id, size) in vols {
        for name in [format!("{id}.img"), format!("replica-{id}.img")] {
            std::fs::File::create(d.join(name))
                .unwrap()
                .set_len(size)
                .unwrap();
        }
    }
    let config = "state-dir: state\njournal-dir: journal\nconsistency-groups:\n  - name: vms\n    \
         splitter:\n      listen: 127.0.0.1:0\n      commit-every: 50ms\n    \
         journal-retention:\n      keep-deltas: 4\n    targets: [replica, store]\n    volumes:\n      \
         - { id: web, driver: file, path: web.img }\n      - { id: db, driver: file, path: db.img }\n";
    std::fs::write(d.join("cascade.yaml"), config).unwrap();
    std::fs::create_dir_all(d.join("cascade-targets")).unwrap();
    std::fs::write(
        d.join("cascade-targets/replica.yaml"),
        "kind: block\nvolumes:\n  web: ../replica-web.img\n  db: ../replica-db.img\n",
    )
    .unwrap();
    std::fs::write(
        d.join("cascade-targets/store.yaml"),
        "kind: object\nurl: ../store\nbatch: 1s\n",
    )
    .unwrap();
    let daemon = Daemon::start(d, "daemon", &[]);
    daemon.until("the split group's base", Duration::from_secs(60), || {
        split_status(d)["splitter"]["serving"]["base_delta"].is_u64()
    });
    let serving = split_status(d)["splitter"]["serving"].clone();
    assert_eq!(serving["pid"], daemon.pid(), "{serving}");
    let uri = serving["uri"].as_str().unwrap().to_string();

    // Each write reaches the block replica within seconds of its acknowledgement.
    let mut worst = Duration::ZERO;
    for round in 0..5u8 {
        let offset = u64::from(round) * MIB;
        qemu_io(
            &format!("{uri}/web"),
            &[&format!("write -P {} {offset} 256k", round + 1)],
        );
        qemu_io(
            &format!("{uri}/db"),
            &[&format!("write -z {} 64k", offset + 4096)],
        );
        let acked = Instant::now();
        let want: Vec<Vec<u8>> = vols
            .iter()
            .map(|(id, _)| file_digest(&d.join(format!("{id}.img"))))
            .collect();
        daemon.until("the block replica", Duration::from_secs(20), || {
            vols.iter()
                .enumerate()
                .all(|(i, (id, _))| file_digest(&d.join(format!("replica-{id}.img"))) == want[i])
        });
        worst = worst.max(acked.elapsed());
    }
    println!("block replica behind the acknowledgement by at most {worst:?}");
    assert!(
        worst < Duration::from_secs(5),
        "the replica lagged {worst:?}"
    );

    // A bookmark of the served group, through its splitter.
    bookmark(d, "five");
    let at_mark: Vec<Vec<u8>> = vols
        .iter()
        .map(|(id, _)| file_digest(&d.join(format!("{id}.img"))))
        .collect();

    // Retention prunes on the splitter's writer while it serves.
    let journal = d.join("journal/vms");
    daemon.until("journal retention", Duration::from_secs(20), || {
        Journal::open(&journal).unwrap().first_delta() > 1
    });

    // A reload that changes nothing about serving leaves the clients' splitter be.
    std::fs::write(
        d.join("cascade.yaml"),
        config.replace("keep-deltas: 4", "keep-deltas: 5"),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.until("the reload", Duration::from_secs(20), || {
        !daemon.find("config reloaded").is_empty()
    });
    qemu_io(&format!("{uri}/web"), &["write -P 0x66 8M 1M"]);
    assert!(daemon.find("serving it again").is_empty());
    // Both replicas catch up with that last write while the daemon serves.
    let primary: Vec<Vec<u8>> = vols
        .iter()
        .map(|(id, _)| file_digest(&d.join(format!("{id}.img"))))
        .collect();
    daemon.until("both replicas", Duration::from_secs(20), || {
        let st = split_status(d);
        let last = st["last_delta"].as_u64().unwrap();
        st["splitter"]["serving"]["queued_bytes"] == 0
            && st["targets"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["cursor"] == last)
            && vols
                .iter()
                .enumerate()
                .all(|(i, (id, _))| file_digest(&d.join(format!("replica-{id}.img"))) == primary[i])
    });

    // The object replica took the split deltas in runs, not one object each.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("store/manifest.json")).unwrap()).unwrap();
    let objects = manifest["deltas"].as_array().unwrap();
    let held: u64 = objects
        .iter()
        .map(|o| {
            o["delta"].as_u64().unwrap() + 1
                - o["first"].as_u64().unwrap_or(o["delta"].as_u64().unwrap())
        })
        .sum();
    assert!(
        (objects.len() as u64) < held,
        "{held} deltas in {} objects",
        objects.len()
    );
    let log = daemon.log.clone();
    let status = daemon.stop();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "{status}\n{log}");
    client(Command::new(BIN).args(["journal", "verify"]).arg(&journal));
    // The journal was pruned; the object replica keeps every point.
    let ids = ["web", "db"];
    let restore = |until: &str| -> Vec<Vec<u8>> {
        let out = d.join("restored");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["restore", "--from", "store", "--until", until])
            .current_dir(d);
        for id in ids {
            cmd.arg("--to")
                .arg(format!("{id}={}", out.join(id).display()));
        }
        client(&mut cmd);
        ids.iter().map(|id| file_digest(&out.join(id))).collect()
    };
    assert_eq!(restore("five"), at_mark, "restored at the bookmark");
    let last = Journal::open(&journal).unwrap().last_delta().to_string();
    let restored = restore(&last);
    for (i, id) in ids.iter().enumerate() {
        let primary = file_digest(&d.join(format!("{id}.img")));
        assert_eq!(
            restored[i], primary,
            "{id} restored from the object replica"
        );
        assert_eq!(
            file_digest(&d.join(format!("replica-{id}.img"))),
            primary,
            "{id} on the block replica"
        );
    }
}

/// `cascade restore --from store --until POINT` of volume `web` into `out` (new files,
/// or onto the existing one); its bytes.
fn restore_web(dir: &Path, point: &str, out: &Path) -> Vec<u8> {
    client(
        Command::new(BIN)
            .args(["restore", "--from", "store", "--until", point])
            .arg("--to")
            .arg(format!("web={}", out.display()))
            .current_dir(dir),
    );
    std::fs::read(out).unwrap()
}

#[test]
fn an_object_replica_takes_split_deltas_in_runs_and_restores_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("cascade-targets")).unwrap();
    std::fs::write(
        d.join("cascade-targets/store.yaml"),
        "kind: object\nurl: ../store\nsynthetic-full-every: 2\n",
    )
    .unwrap();
    let size = MIB;
    let split = Split::start_with(d, &[("web", size)], "5ms", "    targets: [store]\n");
    let export = || {
        client(
            Command::new(BIN)
                .args(["export", "-c", "cascade.yaml", "--cg", "vms"])
                .current_dir(d),
        )
    };
    // Write i (of 24) puts byte i+1 at 4 KiB * i, one client each, so most land in
    // deltas of their own; a bookmark after the 10th; exports after the 8th and 16th.
    for i in 0..24u64 {
        qemu_io(
            &split.uri("web"),
            &[&format!("write -P {} {} 4k", i + 1, i * 4096)],
        );
        if i == 9 {
            bookmark(d, "ten");
        }
        if i == 7 || i == 15 {
            export();
        }
    }
    split.stop();
    export();

    let journal = Journal::open(&d.join("journal/vms")).unwrap();
    let split_deltas = journal
        .deltas()
        .iter()
        .filter(|e| e.writes.is_some())
        .count();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("store/manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["format"], 3,
        "a head listing runs says so by its format"
    );
    let objects = manifest["deltas"].as_array().unwrap();
    let runs: Vec<_> = objects.iter().filter(|o| o["first"].is_u64()).collect();
    assert!(
        split_deltas > 12 && objects.len() <= 5 && runs.len() >= 3,
        "{split_deltas} split deltas went up as {} objects: {objects:?}",
        objects.len()
    );
    println!(
        "{split_deltas} split deltas in {} objects ({} runs)",
        objects.len(),
        runs.len()
    );
    let stored: Vec<String> = std::fs::read_dir(d.join("store/deltas"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(stored.len(), objects.len(), "{stored:?}");

    // Every write, restored from the replica (into a new file, and onto an old one),
    // is the volume just after it: the shadow of writes 1..=k.
    let writes = journalled_writes(&d.join("journal/vms"));
    assert_eq!(writes.len(), 24);
    let mut shadow = vec![0u8; size as usize];
    let onto = d.join("onto.img");
    for (k, &(n, _, offset)) in writes.iter().enumerate() {
        let at = offset as usize;
        shadow[at..at + 4096].fill(((offset / 4096) + 1) as u8);
        let new = d.join(format!("new-{k}.img"));
        assert!(
            restore_web(d, &format!("seq:{n}"), &new) == shadow,
            "seq:{n} into a new file"
        );
        std::fs::remove_file(&new).unwrap();
        assert!(
            restore_web(d, &format!("seq:{n}"), &onto) == shadow,
            "seq:{n} onto an existing file"
        );
        if k == 9 {
            assert!(restore_web(d, "ten", &onto) == shadow, "at the bookmark");
        }
    }
    // A delta inside a run, and a time between two of its writes.
    let run = runs[0];
    let (first, last) = (
        run["first"].as_u64().unwrap(),
        run["delta"].as_u64().unwrap(),
    );
    let inner = (first + last) / 2;
    let replayed = replay(
        &d.join("journal/vms"),
        &inner.to_string(),
        &d.join("out"),
        &["web"],
    );
    assert!(
        restore_web(d, &inner.to_string(), &onto) == std::fs::read(&replayed[0]).unwrap(),
        "delta {inner} inside the run {first}..={last}"
    );
    let entry = journal.delta(inner).unwrap();
    let time = chrono::DateTime::from_timestamp_nanos(entry.time_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let w = entry.writes.unwrap().first_write;
    let replayed = replay(
        &d.join("journal/vms"),
        &format!("seq:{w}"),
        &d.join("out"),
        &["web"],
    );
    assert!(
        restore_web(d, &time, &onto) == std::fs::read(&replayed[0]).unwrap(),
        "{time}, the time of write {w}"
    );
    // A write not exported is refused by name.
    let out = Command::new(BIN)
        .args(["restore", "--from", "store", "--until", "seq:999"])
        .arg("--to")
        .arg(format!("web={}", d.join("x.img").display()))
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds writes up to"));
}

#[test]
fn a_stop_while_the_base_is_read_exits_cleanly_and_journals_nothing() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 512 MiB of data, so the base takes a while to read.
    let mut img = std::fs::File::create(d.join("web.img")).unwrap();
    let chunk: Vec<u8> = (0..4 * MIB).map(|i| (i * 7 + i / 4096) as u8).collect();
    for _ in 0..128 {
        img.write_all(&chunk).unwrap();
    }
    drop(img);
    std::fs::write(
        d.join("cascade.yaml"),
        "state-dir: state\njournal-dir: journal\nconsistency-groups:\n  - name: vms\n    \
         splitter:\n      listen: 127.0.0.1:0\n    volumes:\n      \
         - { id: web, driver: file, path: web.img }\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["split", "-c", "cascade.yaml", "--cg", "vms"])
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("serving ") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "cascade split exited early"
        );
    }
    common::host::run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {rest}");
    assert!(
        rest.contains("stopped before its base was journalled"),
        "{rest}"
    );
    let j = Journal::open(&d.join("journal/vms"));
    assert!(
        j.as_ref().map_or(true, |j| j.last_delta() == 0),
        "a stopped base left delta {:?}",
        j.map(|j| j.last_delta())
    );
}
