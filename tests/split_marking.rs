//! Asynchronous splitting when shipping falls behind (docs/journal-format.md, "Gaps"):
//! the splitter goes on acknowledging at once, marks what is written, reads it back
//! once the journal can take it again, and the journal says where write order was
//! lost. Tested against a real fault: a journal on a small tmpfs that fills up.
mod common;

use common::mount::Mount;
use common::nbd::{client, Raw};
use common::split::{
    bookmark_command, digest, file_digest, replay, split_status, verify_journal, Split, BIN,
};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// What the running splitter says of itself, in `cascade status --json`.
fn serving(dir: &Path) -> serde_json::Value {
    split_status(dir)["splitter"]["serving"].clone()
}

/// Client writes of random data to random places, with the shadow copy kept.
struct Writer {
    conns: Vec<Raw>,
    shadow: Vec<Vec<u8>>,
    sizes: Vec<u64>,
    rng: rand::rngs::StdRng,
    sent: u64,
}

impl Writer {
    fn write(&mut self, max: u64) {
        let v = self.rng.gen_range(0..self.conns.len());
        let len = self.rng.gen_range(1..=max).min(self.sizes[v]);
        let off = self.rng.gen_range(0..=self.sizes[v] - len);
        let mut data = vec![0u8; len as usize];
        self.rng.fill(&mut data[..]);
        self.sent += 1;
        self.conns[v].write(self.sent, off, &data);
        self.shadow[v][off as usize..(off + len) as usize].copy_from_slice(&data);
    }

    fn digests(&self) -> Vec<Vec<u8>> {
        self.shadow.iter().map(|s| digest(s)).collect()
    }
}

#[test]
fn a_full_journal_disk_turns_the_group_to_marking_and_it_resynchronises_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vols = [("web", 24 * MIB), ("db", 8 * MIB)];
    std::fs::create_dir(d.join("journal")).unwrap();
    let mut tmpfs = Mount::new(
        &["-t", "tmpfs", "-o", "size=10m", "tmpfs"],
        &d.join("journal"),
    );
    Split::config(
        d,
        &vols,
        "      commit-every: 20ms\n      queue: 4MiB\n      dirty-granularity: 16KiB\n",
        "",
    );
    let split = Split::serve(d);
    let mut w = Writer {
        conns: vols
            .iter()
            .map(|(id, _)| Raw::open(split.addr, id))
            .collect(),
        shadow: vols.iter().map(|(_, s)| vec![0u8; *s as usize]).collect(),
        sizes: vols.iter().map(|(_, s)| *s).collect(),
        rng: rand::rngs::StdRng::seed_from_u64(7),
        sent: 0,
    };
    // In order: every point is kept.
    let mut before = Vec::new();
    for _ in 0..200 {
        w.write(32 * KIB);
        before.push(w.digests());
    }
    // Then incompressible data until the journal's disk is full and the queue with it:
    // the writes are acknowledged all the same.
    let start = Instant::now();
    let full = |s: &serde_json::Value| {
        s["mode"] == "marking"
            && s["journal_error"]
                .as_str()
                .is_some_and(|e| e.contains("No space left"))
    };
    // (A burst can turn it to marking before the disk is full: the queue is small.)
    while !full(&serving(d)) {
        for _ in 0..16 {
            w.write(256 * KIB);
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never marking: {}\n{}",
            serving(d),
            split.log()
        );
    }
    for _ in 0..300 {
        w.write(64 * KIB);
    }
    let marking = serving(d);
    assert!(full(&marking), "{marking}");
    assert!(marking["dirty_bytes"].as_u64().unwrap() > 0, "{marking}");
    let gap_after = marking["gap_after"].as_u64().unwrap();
    // No bookmark inside a gap.
    let out = bookmark_command(d, "in-gap").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("gap"), "{err}");
    let at_resume = w.digests();
    let client_writes_in_gap = w.sent;

    // Space returns: the shipper's retry goes through, the queue drains, the marked
    // regions are read back, and the group is active again.
    client(
        Command::new("mount")
            .args(["-o", "remount,size=512m"])
            .arg(d.join("journal")),
    );
    let start = Instant::now();
    loop {
        let s = serving(d);
        if s["mode"] == "active" && s["last_journalled"] == s["last_numbered"] {
            assert!(s["journal_error"].is_null(), "{s}");
            assert!(s["gaps"].as_u64().unwrap() >= 1, "{s}");
            assert_eq!(s["dirty_bytes"], 0, "{s}");
            // What is read back after the snapshot of the map is what it held (and
            // a read that had taken its region out already), nothing more.
            let read =
                s["resynced_bytes"].as_u64().unwrap() - marking["resynced_bytes"].as_u64().unwrap();
            let dirty = marking["dirty_bytes"].as_u64().unwrap();
            assert!(
                read >= dirty && read <= dirty + MIB,
                "read back {read} of {dirty}: {s}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never resynchronised: {s}\n{}",
            split.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut after = Vec::new();
    for _ in 0..100 {
        w.write(32 * KIB);
        after.push(w.digests());
    }
    for c in std::mem::take(&mut w.conns) {
        c.disconnect();
    }
    let report = split.stop();
    // A burst can open (and close) a gap before the disk is full, as well.
    let gap_count = report["shipped"]["gaps"].as_u64().unwrap();
    assert!(gap_count >= 1, "{report}");
    let journal = d.join("journal/vms");
    verify_journal(&journal, "the journal of a gap does not verify");

    // Where the gap is, from the journal itself.
    let j = cascade::journal::Journal::open(&journal).unwrap();
    // Where each gap opened (a gap delta after one that left none open) and resumed.
    let (mut opened, mut resumes, mut open) = (Vec::new(), Vec::new(), false);
    for w in j.deltas().iter().filter_map(|e| e.writes) {
        match w.gap {
            Some(g) if !open => opened.push(g.lost_after),
            _ => {}
        }
        if w.gap.is_some_and(|g| g.resumes) {
            resumes.push(w.last_write);
        }
        open = w.gap_open();
    }
    let first_lost = opened[0];
    assert_eq!(
        resumes.len() as u64,
        gap_count,
        "every gap resumed: {resumes:?}"
    );
    let (lost_after, resume_at) = (gap_after, *resumes.last().unwrap());
    assert_eq!(opened.len() as u64, gap_count, "{opened:?}");
    assert!(opened.contains(&lost_after), "{opened:?}");
    assert!(lost_after < client_writes_in_gap, "{lost_after}");
    // The reads back are numbered after the client's writes before them.
    let reads = resume_at - client_writes_in_gap;
    assert!(reads > 0);

    let ids: Vec<&str> = vols.iter().map(|(id, _)| *id).collect();
    let out = d.join("out");
    let equal = |point: String, want: &[Vec<u8>]| {
        let files = replay(&journal, &point, &out, &ids);
        for (i, f) in files.iter().enumerate() {
            assert_eq!(&file_digest(f), &want[i], "{} at {point}", ids[i]);
        }
    };
    // Every point in order before the gap (every tenth, and its last), where it
    // resumes, and every point after it equal the shadow copy then.
    // (Before the first gap, the client's writes are all the numbers there are.)
    for n in (1..=first_lost.min(200)).filter(|n| n % 10 == 0 || *n == first_lost) {
        equal(format!("seq:{n}"), &before[n as usize - 1]);
    }
    equal(format!("seq:{resume_at}"), &at_resume);
    for (k, want) in after.iter().enumerate().filter(|(k, _)| k % 10 == 9) {
        equal(format!("seq:{}", resume_at + 1 + k as u64), want);
    }
    // A point inside the gap is refused, naming its edges.
    let inside = Command::new(BIN)
        .arg("replay")
        .arg(&journal)
        .args(["--until", &format!("seq:{}", lost_after + 1), "--to"])
        .arg(format!("web={}", out.join("x").display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&inside.stderr);
    assert!(
        !inside.status.success()
            && err.contains(&format!("seq:{lost_after}"))
            && err.contains(&format!("seq:{resume_at}")),
        "{err}"
    );
    // And the newest point is the volumes themselves.
    let files = replay(
        &journal,
        &format!("seq:{}", resume_at + after.len() as u64),
        &out,
        &ids,
    );
    for (f, (id, _)) in files.iter().zip(vols) {
        assert_eq!(file_digest(f), file_digest(&d.join(format!("{id}.img"))));
    }
    drop(j);
    tmpfs.unmount();
}
