//! Faults a split group must shrug off (issue 13, part 3): clients that break the
//! protocol or vanish mid-write, and a burst far larger than the queue. After each,
//! the journal verifies, replays to the volumes, and feeds a block replica and an
//! object replica that equal them.
mod common;

use common::nbd::{client, Raw};
use common::split::{file_digest, replay, split_status, verify_journal, Split, BIN};
use std::io::Write;
use std::path::Path;
use std::process::Command;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Exports the journal to a block replica and an object replica (`cascade
/// export`), restores from the object one, and checks that both, and a replay to
/// the journal's last delta, equal the volumes.
fn replicas_equal_the_volumes(d: &Path, ids: &[&str]) {
    std::fs::create_dir_all(d.join("cascade-targets")).unwrap();
    for id in ids {
        let size = std::fs::metadata(d.join(format!("{id}.img")))
            .unwrap()
            .len();
        std::fs::File::create(d.join(format!("replica-{id}.img")))
            .unwrap()
            .set_len(size)
            .unwrap();
    }
    let block: String = ids
        .iter()
        .map(|id| format!("  {id}: ../replica-{id}.img\n"))
        .collect();
    std::fs::write(
        d.join("cascade-targets/replica.yaml"),
        format!("kind: block\nvolumes:\n{block}"),
    )
    .unwrap();
    std::fs::write(
        d.join("cascade-targets/store.yaml"),
        "kind: object\nurl: ../store\n",
    )
    .unwrap();
    let yaml = std::fs::read_to_string(d.join("cascade.yaml")).unwrap();
    std::fs::write(
        d.join("cascade.yaml"),
        yaml.replace(
            "    volumes:\n",
            "    targets: [replica, store]\n    volumes:\n",
        ),
    )
    .unwrap();
    client(
        Command::new(BIN)
            .args(["export", "-c", "cascade.yaml", "--cg", "vms"])
            .current_dir(d),
    );
    let mut restore = Command::new(BIN);
    restore.args(["restore", "--from", "store"]).current_dir(d);
    for id in ids {
        restore.arg("--to").arg(format!("{id}=restored-{id}.img"));
    }
    client(&mut restore);
    let journal = d.join("journal/vms");
    let last = cascade::journal::Journal::open(&journal)
        .unwrap()
        .last_delta();
    let replayed = replay(&journal, &format!("delta:{last}"), &d.join("out"), ids);
    for (id, r) in ids.iter().zip(replayed) {
        let volume = file_digest(&d.join(format!("{id}.img")));
        assert_eq!(file_digest(&r), volume, "{id}: replay");
        assert_eq!(
            file_digest(&d.join(format!("replica-{id}.img"))),
            volume,
            "{id}: block replica"
        );
        assert_eq!(
            file_digest(&d.join(format!("restored-{id}.img"))),
            volume,
            "{id}: restore"
        );
    }
}

#[test]
fn broken_requests_and_a_client_gone_mid_write_harm_neither_splitter_nor_journal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vols = [("web", 64 * MIB)];
    let split = Split::start(d, &vols, "20ms");
    let mut c = Raw::open(split.addr, "web");
    c.write(1, 0, &[0xa1; 4096]);
    // Unknown command: EINVAL, and the connection goes on.
    c.request(0, 42, 2, 0, 512);
    assert_eq!(c.simple_reply(), (22, 2));
    // A write past the end: ENOSPC; one larger than the maximum payload: EINVAL.
    c.request(0, 1, 3, 64 * MIB - 256, 512);
    c.0.write_all(&[0x77; 512]).unwrap();
    assert_eq!(c.simple_reply(), (28, 3));
    let big = (33 * MIB) as u32;
    c.request(0, 1, 4, 0, big);
    c.0.write_all(&vec![0x66; big as usize]).unwrap();
    assert_eq!(c.simple_reply(), (22, 4));
    c.write(5, 8192, &[0xa2; 4096]);
    // A bad magic closes the connection.
    c.0.write_all(&[0u8; 28]).unwrap();
    assert!(c.closed());
    // So does a length too large to skip.
    let mut c = Raw::open(split.addr, "web");
    c.request(0, 1, 6, 0, u32::MAX);
    assert!(c.closed());
    // A request after DISC is not served.
    let mut c = Raw::open(split.addr, "web");
    c.request(0, 2, 7, 0, 0);
    c.request(0, 1, 8, 16384, 4096);
    let _ = c.0.write_all(&[0xee; 4096]);
    assert!(c.closed());
    // A client gone in the middle of a write's payload: the write never happened.
    let mut c = Raw::open(split.addr, "web");
    c.request(0, 1, 9, 65536, 65536);
    c.0.write_all(&[0xdd; 10000]).unwrap();
    drop(c);
    std::thread::sleep(std::time::Duration::from_millis(200));
    // The splitter goes on serving and journalling.
    let mut c = Raw::open(split.addr, "web");
    c.write(10, 12288, &[0xa3; 4096]);
    c.disconnect();
    let s = split_status(d)["splitter"]["serving"].clone();
    assert_eq!(s["mode"], "active", "{s}");
    let report = split.stop();
    assert_eq!(
        report["shipped"]["writes"], 3,
        "only the good writes are numbered: {report}"
    );
    let img = std::fs::read(d.join("web.img")).unwrap();
    assert!(
        img[16384..20480].iter().all(|b| *b == 0),
        "the write after DISC"
    );
    assert!(
        img[65536..131072].iter().all(|b| *b == 0),
        "the half-sent write"
    );
    assert!(
        img[64 * MIB as usize - 256..].iter().all(|b| *b == 0),
        "the write past the end"
    );
    verify_journal(
        &d.join("journal/vms"),
        "a broken request harmed the journal",
    );
    replicas_equal_the_volumes(d, &["web"]);
}

#[test]
fn a_burst_far_larger_than_the_queue_is_marked_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 256 * MIB;
    let vols = [("big", size)];
    Split::config(
        d,
        &vols,
        "      commit-every: 100ms\n      queue: 1MiB\n      dirty-granularity: 1MiB\n",
        "",
    );
    let split = Split::serve(d);
    // Random data from a file, so that it neither compresses nor reads as zeros:
    // 64 MiB of it, then the same repeated at every 64 MiB, with the first bytes of
    // each copy changed so no two are alike.
    let src = d.join("src.img");
    let mut f = std::fs::File::create(&src).unwrap();
    let mut chunk = vec![0u8; 64 * MIB as usize];
    rand::Rng::fill(&mut rand::thread_rng(), &mut chunk[..]);
    for i in 0..size / (64 * MIB) {
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        f.write_all(&chunk).unwrap();
    }
    drop(f);
    let copied = Command::new("nbdcopy")
        .arg(&src)
        .arg(split.uri("big"))
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let s = split_status(d)["splitter"]["serving"].clone();
    assert!(
        s["gaps"].as_u64().unwrap() >= 1,
        "256 MiB into a 1 MiB queue never marked: {s}"
    );
    // It reads back what it marked and is active again.
    let start = std::time::Instant::now();
    loop {
        let s = split_status(d)["splitter"]["serving"].clone();
        if s["mode"] == "active" && s["last_journalled"] == s["last_numbered"] {
            break;
        }
        assert!(start.elapsed().as_secs() < 300, "never resynchronised: {s}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let report = split.stop();
    assert!(
        !report["shipped"]["ends_in_gap"].as_bool().unwrap(),
        "{report}"
    );
    assert_eq!(file_digest(&d.join("big.img")), file_digest(&src));
    verify_journal(&d.join("journal/vms"), "a burst harmed the journal");
    std::fs::remove_file(&src).unwrap();
    replicas_equal_the_volumes(d, &["big"]);
}

#[test]
fn an_object_store_that_stops_holds_back_neither_the_splitter_nor_the_block_replica() {
    use common::daemon::Daemon;
    use common::s3::S3Server;
    use rand::{Rng, SeedableRng};
    use std::time::Duration;
    let mut s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 16 * MIB;
    Split::config(
        d,
        &[("web", size)],
        "      commit-every: 50ms\n",
        "    targets: [replica, vault]\n",
    );
    std::fs::create_dir_all(d.join("cascade-targets")).unwrap();
    std::fs::File::create(d.join("replica-web.img"))
        .unwrap()
        .set_len(size)
        .unwrap();
    std::fs::write(
        d.join("cascade-targets/replica.yaml"),
        "kind: block\nvolumes:\n  web: ../replica-web.img\n",
    )
    .unwrap();
    std::fs::write(
        d.join("cascade-targets/vault.yaml"),
        format!("kind: object\nurl: {}\nbatch: 1s\n", s3.url("cg")),
    )
    .unwrap();
    let daemon = Daemon::start_env(d, "daemon", &[], s3.env());
    let status = || split_status(d);
    daemon.until("the split group's base", Duration::from_secs(60), || {
        status()["splitter"]["serving"]["base_delta"].is_u64()
    });
    let uri = status()["splitter"]["serving"]["uri"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = uri.trim_start_matches("nbd://").parse().unwrap();
    let mut c = Raw::open(addr, "web");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut shadow = vec![0u8; size as usize];
    let write = |c: &mut Raw, n: u64, rng: &mut rand::rngs::StdRng, shadow: &mut [u8]| {
        let len = rng.gen_range(1..=64 * KIB);
        let off = rng.gen_range(0..=size - len);
        let mut data = vec![0u8; len as usize];
        rng.fill(&mut data[..]);
        c.write(n, off, &data);
        shadow[off as usize..(off + len) as usize].copy_from_slice(&data);
    };
    for n in 0..50 {
        write(&mut c, n, &mut rng, &mut shadow);
    }
    // The store goes away; the writes go on, journalled one by one, and the block
    // replica keeps up.
    s3.stop();
    for n in 50..250 {
        write(&mut c, n, &mut rng, &mut shadow);
    }
    let replica = d.join("replica-web.img");
    daemon.until("the block replica", Duration::from_secs(30), || {
        file_digest(&replica) == common::split::digest(&shadow)
    });
    let st = status();
    assert_eq!(st["splitter"]["serving"]["mode"], "active", "{st}");
    let vault = st["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "vault")
        .unwrap()
        .clone();
    assert!(vault["lag_deltas"].as_u64().unwrap() > 0, "{st}");
    // Back: it catches up.
    s3.restart();
    for n in 250..300 {
        write(&mut c, n, &mut rng, &mut shadow);
    }
    c.disconnect();
    daemon.until(
        "the object replica to catch up",
        Duration::from_secs(90),
        || {
            let st = status();
            st["targets"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["lag_deltas"] == 0)
        },
    );
    assert!(daemon.stop().success());
    let mut restore = Command::new(BIN);
    restore
        .args([
            "restore",
            "--from",
            &s3.url("cg"),
            "--to",
            "restored-web.img",
        ])
        .envs(s3.env())
        .current_dir(d);
    client(&mut restore);
    let volume = file_digest(&d.join("web.img"));
    assert_eq!(volume, common::split::digest(&shadow));
    assert_eq!(file_digest(&d.join("restored-web.img")), volume);
    assert_eq!(file_digest(&replica), volume);
    verify_journal(&d.join("journal/vms"), "a stopped store harmed the journal");
}
