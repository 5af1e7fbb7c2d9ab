//! A splitter killed (SIGKILL) at any moment: the restart goes on with the stream,
//! reads back what its write-intent map marks, and the journal's first consistent
//! point after it equals the volumes; no write number is given out twice
//! (docs/journal-format.md, "Restarts").
mod common;

use common::nbd::Raw;
use common::split::{file_digest, replay, resume_points, split_status, verify_journal, Split};
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

#[test]
fn a_killed_splitter_goes_on_with_its_stream_and_reads_back_only_what_it_marked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vols = [("web", 16 * MIB), ("db", 4 * MIB)];
    Split::config(d, &vols, "      commit-every: 300ms\n", "");
    let ids: Vec<&str> = vols.iter().map(|(id, _)| *id).collect();
    let volume_digests = || -> Vec<Vec<u8>> {
        ids.iter()
            .map(|id| file_digest(&d.join(format!("{id}.img"))))
            .collect()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut shadow: Vec<Vec<u8>> = vols.iter().map(|(_, s)| vec![0u8; *s as usize]).collect();
    // The volumes as the last kill left them, and the points where a restart
    // resumed with what they should equal.
    let mut at_kill = None;
    let mut resumed = Vec::new();
    let rounds = 6;
    for round in 0..=rounds {
        let split = Split::serve(d);
        // Some restarts are killed again while they read back (the gap goes on
        // across them); the others, and the last, are let finish first.
        if round > 0 && (round == rounds || rng.gen_bool(0.6)) {
            let start = std::time::Instant::now();
            let s = loop {
                let s = split_status(d)["splitter"]["serving"].clone();
                if s["mode"] == "active" && s["last_journalled"] == s["last_numbered"] {
                    break s;
                }
                assert!(start.elapsed().as_secs() < 60, "never resynchronised: {s}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            };
            resumed.push((
                s["last_journalled"].as_u64().unwrap(),
                at_kill.clone().unwrap(),
            ));
        }
        let mut conns: Vec<Raw> = ids.iter().map(|id| Raw::open(split.addr, id)).collect();
        for n in 0..rng.gen_range(100..400) {
            let v = rng.gen_range(0..vols.len());
            let size = vols[v].1;
            let len = rng.gen_range(1..=64 * KIB).min(size);
            let off = rng.gen_range(0..=size - len);
            let mut data = vec![0u8; len as usize];
            rng.fill(&mut data[..]);
            conns[v].write(n, off, &data);
            shadow[v][off as usize..(off + len) as usize].copy_from_slice(&data);
            if n % 50 == 49 {
                // FLUSH, as a file system's journal commit would.
                conns[v].request(0, 3, n, 0, 0);
                assert_eq!(conns[v].simple_reply(), (0, n));
            }
        }
        let shadow_digests: Vec<Vec<u8>> =
            shadow.iter().map(|s| common::split::digest(s)).collect();
        if round == rounds {
            conns.into_iter().for_each(Raw::disconnect);
            let report = split.stop();
            assert!(
                report["base_delta"].is_null(),
                "went on after the last crash: {report}"
            );
            assert_eq!(volume_digests(), shadow_digests);
            break;
        }
        // Killed with writes acknowledged and not journalled yet (a commit every 300ms).
        std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(0..200)));
        drop(conns);
        split.kill();
        assert_eq!(
            volume_digests(),
            shadow_digests,
            "every acknowledged write is on the volumes"
        );
        at_kill = Some(shadow_digests);
    }
    let journal = d.join("journal/vms");
    verify_journal(&journal, "numbers given out twice, or a broken gap");
    let j = cascade::journal::Journal::open(&journal).unwrap();
    let bases = j.deltas().iter().filter(|e| e.writes.is_none()).count();
    assert_eq!(
        bases, 1,
        "a restart after a kill took a base instead of going on"
    );
    // Where a restart resumed, the journal equals the volumes as the kill left them.
    let resumes = resume_points(&j);
    let out = d.join("out");
    for (m, want) in &resumed {
        assert!(
            resumes.contains(m),
            "seq:{m} is not where a gap resumed: {resumes:?}"
        );
        let files = replay(&journal, &format!("seq:{m}"), &out, &ids);
        let got: Vec<Vec<u8>> = files.iter().map(|f| file_digest(f)).collect();
        assert_eq!(&got, want, "resumed at seq:{m}");
    }
    assert!(!resumed.is_empty());
    // What each restart read back is what its map marked: far less than the volumes.
    let read: u64 = j
        .deltas()
        .iter()
        .filter(|e| e.writes.is_some_and(|w| w.gap.is_some()))
        .map(|e| e.changed_bytes)
        .sum();
    assert!(read < 20 * MIB * rounds as u64, "read back {read}");
    let last = j.last_delta();
    drop(j);
    let files = replay(&journal, &format!("delta:{last}"), &out, &ids);
    let got: Vec<Vec<u8>> = files.iter().map(|f| file_digest(f)).collect();
    assert_eq!(got, volume_digests());
}
