//! Distributed consistency groups: streams in separate `cascade split` processes
//! (and, in `grid_hosts`, on separate network namespaces) share a counter and take
//! bookmarks that are consistent cuts across them.
mod common;

use common::grid::{self, check_cut, free_port, round, StreamSpec, Writer};
use common::split::{replay, Split, BIN};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Streams `names` on this host, each in `root/NAME`, sharing the counter `counter`.
fn local_streams(
    root: &Path,
    names: &[&str],
    counter: &str,
    grid_extra: &str,
) -> Vec<(PathBuf, Split)> {
    let secret = grid::secret(root);
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let dir = root.join(n);
            let peers = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("127.0.0.1:{p}"))
                .collect();
            grid::config(
                &dir,
                &StreamSpec {
                    stream: n,
                    grid_listen: format!("127.0.0.1:{}", ports[i]),
                    peers,
                    counter,
                    secret: &secret,
                    nbd_listen: Some("127.0.0.1:0".into()),
                    grid_extra,
                    group_extra: "",
                },
            );
            let s = grid::serve(&dir, &[], &[]);
            (dir, s)
        })
        .collect()
}

/// Each stream's round at bookmark `name`, replayed from its journal.
fn rounds_at(streams: &[(PathBuf, Split)], out: &Path, name: &str) -> Vec<u64> {
    streams
        .iter()
        .map(|(dir, _)| {
            let stream = dir.file_name().unwrap().to_str().unwrap();
            let id = format!("v-{stream}");
            let p = replay(
                &dir.join("journal/vms"),
                &format!("bookmark:{name}"),
                &out.join(stream),
                &[&id],
            );
            round(&p[0])
        })
        .collect()
}

#[test]
fn bookmarks_across_stream_processes_are_consistent_cuts_of_dependent_writes() {
    let d = tempfile::tempdir().unwrap();
    let counter = d.path().join("counter");
    let streams = local_streams(
        d.path(),
        &["a", "b", "c"],
        counter.to_str().unwrap(),
        "  hold-budget: 500ms\n",
    );
    let writer = Writer::start(
        streams
            .iter()
            .map(|(dir, s)| {
                let n = dir.file_name().unwrap().to_str().unwrap();
                (s.addr, format!("v-{n}"))
            })
            .collect(),
    );
    let mut names = Vec::new();
    for i in 0..12 {
        std::thread::sleep(Duration::from_millis(60));
        let name = format!("cut-{i}");
        let (ok, v) = grid::bookmark(&streams[i % 3].0, &[], &[], &name);
        assert!(ok && v["complete"] == true, "{name}: {v}");
        assert_eq!(v["value"], i as u64 + 1, "values count up across askers");
        names.push(name);
    }
    let last = writer.stop();
    assert!(
        last > 20,
        "the writer made progress meanwhile ({last} rounds)"
    );
    let mut before = 0;
    for name in &names {
        let r = rounds_at(&streams, &d.path().join("replay"), name);
        check_cut(name, &r);
        assert!(r[0] >= before, "{name}: later bookmarks hold later rounds");
        before = r[0];
    }
    assert!(before > 0, "the bookmarks fell among the writes");
    // Every journal holds each bookmark with the grid's value.
    for (dir, s) in streams {
        s.stop();
        let j = cascade::journal::Journal::open(&dir.join("journal/vms")).unwrap();
        let values: Vec<u64> = j
            .bookmarks()
            .iter()
            .map(|b| b.grid.as_ref().unwrap().value)
            .collect();
        assert_eq!(values, (1..=12).collect::<Vec<_>>());
    }
    // And the store says they are complete.
    let st = status(&d.path().join("a"), &[]);
    let bookmarks = st["grid"]["bookmarks"].as_array().unwrap();
    assert_eq!(bookmarks.len(), 12);
    assert!(bookmarks.iter().all(|b| b["complete"] == true), "{st}");
}

fn status(dir: &Path, env: &[(String, String)]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["status", "-c", "cascade.yaml", "--json"])
        .envs(env.iter().cloned())
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A write to `addr`'s export answered within a second: the stream's writers are
/// not held.
fn writes_flow(addr: std::net::SocketAddr, export: &str) {
    let started = Instant::now();
    let mut c = common::nbd::Raw::open(addr, export);
    c.write(1, 8192, &[7u8; 4096]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a write waited {:?}",
        started.elapsed()
    );
}

#[test]
fn a_stream_that_cannot_answer_makes_the_bookmark_incomplete_and_releases_the_others() {
    let d = tempfile::tempdir().unwrap();
    let counter = d.path().join("counter");
    let mut streams = local_streams(d.path(), &["a", "b", "c"], counter.to_str().unwrap(), "");
    let (ok, v) = grid::bookmark(&streams[0].0, &[], &[], "all-up");
    assert!(ok && v["complete"] == true, "{v}");
    // Stream c stops answering (SIGSTOP): the bookmark waits the default budget
    // (50ms), then releases a and b, and says c is why.
    let c_pid = streams[2].1.pid() as i32;
    // SAFETY: kill(2) with plain integers on our own child.
    assert_eq!(unsafe { libc::kill(c_pid, libc::SIGSTOP) }, 0);
    let started = Instant::now();
    let (ok, v) = grid::bookmark(&streams[0].0, &[], &[], "c-frozen");
    assert!(!ok && v["complete"] == false, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the bookmark took {:?}",
        started.elapsed()
    );
    let c = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["peer"].as_str().unwrap().ends_with(
                &streams[2]
                    .0
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string(),
            ) || s["stream"].is_null()
        })
        .cloned();
    let why = serde_json::to_string(&v["streams"]).unwrap();
    assert!(
        why.contains("did not hold within the budget") || why.contains("no connection"),
        "{why}"
    );
    assert!(c.is_some(), "{v}");
    assert!(
        v["missing"].as_array().unwrap().iter().any(|m| m == "c"),
        "{v}"
    );
    for (dir, s) in &streams[..2] {
        let n = dir.file_name().unwrap().to_str().unwrap();
        writes_flow(s.addr, &format!("v-{n}"));
        let j = cascade::journal::Journal::open(&dir.join("journal/vms")).unwrap();
        assert!(
            j.bookmarks().iter().all(|b| b.name != "c-frozen"),
            "{n} placed a bookmark that was released"
        );
    }
    // Killed while stopped: it comes back, and the next bookmark is complete again;
    // the incomplete one stays so, and restore refuses it.
    let (cdir, cs) = streams.pop().unwrap();
    cs.kill();
    streams.push((cdir.clone(), grid::serve(&cdir, &[], &[])));
    let (ok, v) = grid::bookmark(&streams[1].0, &[], &[], "c-back");
    assert!(ok && v["complete"] == true, "{v}");
    let st = status(&d.path().join("b"), &[]);
    let b: Vec<(String, bool)> = st["grid"]["bookmarks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["complete"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        b,
        [
            ("all-up".into(), true),
            ("c-frozen".into(), false),
            ("c-back".into(), true)
        ]
    );
    let out = Command::new(BIN)
        .args([
            "restore",
            "-c",
            "cascade.yaml",
            "--grid",
            "shop",
            "--until",
            "bookmark:c-frozen",
            "--to-dir",
        ])
        .arg(d.path().join("restored"))
        .current_dir(&streams[0].0)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("incomplete") && err.contains('c'),
        "{err}"
    );
    assert!(
        !d.path().join("restored").exists(),
        "nothing written for an incomplete bookmark"
    );
    for (_, s) in streams {
        s.stop();
    }
}

#[test]
fn two_hosts_bookmarking_at_once_get_distinct_values_and_one_name_once() {
    let d = tempfile::tempdir().unwrap();
    let counter = d.path().join("counter");
    let streams = local_streams(
        d.path(),
        &["a", "b"],
        counter.to_str().unwrap(),
        "  hold-budget: 1s\n",
    );
    let ask = |dir: &Path, name: &str| {
        grid::bookmark_command(dir, &[], &[], name)
            .arg("--json")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut values = Vec::new();
    for i in 0..6 {
        let x = ask(&streams[0].0, &format!("a-{i}"));
        let y = ask(&streams[1].0, &format!("b-{i}"));
        for c in [x, y] {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["complete"], true, "{v}");
            values.push(v["value"].as_u64().unwrap());
        }
    }
    values.sort();
    assert_eq!(
        values,
        (1..=12).collect::<Vec<_>>(),
        "each asker got its own value"
    );
    // The same name asked on both hosts at once: one bookmark, one refusal.
    let x = ask(&streams[0].0, "same");
    let y = ask(&streams[1].0, "same");
    let outs = [x.wait_with_output().unwrap(), y.wait_with_output().unwrap()];
    let ok: Vec<bool> = outs.iter().map(|o| o.status.success()).collect();
    assert_eq!(ok.iter().filter(|o| **o).count(), 1, "{outs:?}");
    let refused = outs.iter().find(|o| !o.status.success()).unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already exists"));
    // The store names one owner, and status says so: one `same` complete, any
    // other value of that name void.
    let st = status(&streams[0].0, &[]);
    let same: Vec<&serde_json::Value> = st["grid"]["bookmarks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["name"] == "same")
        .collect();
    assert_eq!(
        same.iter().filter(|b| b["complete"] == true).count(),
        1,
        "{st}"
    );
    assert!(
        same.iter()
            .all(|b| b["complete"] == true || b["duplicate"] == true),
        "{st}"
    );
    for (dir, s) in streams {
        s.stop();
        let j = cascade::journal::Journal::open(&dir.join("journal/vms")).unwrap();
        assert_eq!(j.bookmarks().iter().filter(|b| b.name == "same").count(), 1);
        assert_eq!(j.bookmarks().len(), 13);
    }
}

#[test]
fn a_peer_without_the_secret_is_refused_and_the_secret_is_never_printed() {
    let d = tempfile::tempdir().unwrap();
    let counter = d.path().join("counter");
    let streams = local_streams(d.path(), &["a", "b"], counter.to_str().unwrap(), "");
    let dir = &streams[0].0;
    let text = std::fs::read_to_string(dir.join("cascade.yaml")).unwrap();
    let wrong = d.path().join("wrong.secret");
    std::fs::write(&wrong, "not-the-grid-secret-at-all-0123456789\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let good = d.path().join("grid.secret");
    std::fs::write(
        dir.join("wrong.yaml"),
        text.replace(good.to_str().unwrap(), wrong.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "bookmark",
            "-c",
            "wrong.yaml",
            "--grid",
            "shop",
            "--name",
            "x",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("wrong grid or secret"),
        "{err}"
    );
    // A secret others can read is refused before anything is asked.
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args([
            "bookmark",
            "-c",
            "wrong.yaml",
            "--grid",
            "shop",
            "--name",
            "y",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("chmod 600"), "{err}");
    let secret = std::fs::read_to_string(&good).unwrap();
    for (_, s) in streams {
        let log = s.log();
        assert!(log.contains("grid connection refused"), "{log}");
        assert!(!log.contains(secret.trim()) && !err.contains(secret.trim()));
        s.stop();
    }
}

#[test]
fn marks_the_store_did_not_take_are_recorded_once_it_takes_them() {
    let d = tempfile::tempdir().unwrap();
    let counter = d.path().join("counter");
    let streams = local_streams(d.path(), &["a", "b"], counter.to_str().unwrap(), "");
    let (ok, v) = grid::bookmark(&streams[0].0, &[], &[], "first");
    assert!(ok, "{v}");
    // The store refuses marks (a file where their directory goes): the journals
    // hold the bookmark, the store does not know it yet.
    std::fs::rename(counter.join("marks"), d.path().join("marks-aside")).unwrap();
    std::fs::write(counter.join("marks"), "in the way").unwrap();
    let (ok, v) = grid::bookmark(&streams[0].0, &[], &[], "unrecorded");
    assert!(!ok && v["complete"] == false, "{v}");
    assert!(
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["recorded"] == false && !s["bookmark"].is_null()),
        "{v}"
    );
    std::fs::remove_file(counter.join("marks")).unwrap();
    std::fs::rename(d.path().join("marks-aside"), counter.join("marks")).unwrap();
    // The streams keep trying: it becomes complete.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = status(&streams[1].0, &[]);
        let b = &st["grid"]["bookmarks"][1];
        if b["complete"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the marks were never recorded: {st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (_, s) in streams {
        s.stop();
    }
}

#[test]
fn a_snapshot_stream_takes_the_bookmark_as_a_frozen_cycle_of_its_own() {
    let d = tempfile::tempdir().unwrap();
    let counter = d.path().join("counter");
    let secret = grid::secret(d.path());
    let (pa, ps) = (free_port(), free_port());
    let (adir, sdir) = (d.path().join("a"), d.path().join("snap"));
    let spec = |stream, me: u16, peer: u16, nbd: Option<String>, group_extra| StreamSpec {
        stream,
        grid_listen: format!("127.0.0.1:{me}"),
        peers: vec![format!("127.0.0.1:{peer}")],
        counter: counter.to_str().unwrap(),
        secret: &secret,
        nbd_listen: nbd,
        grid_extra: "  hold-budget: 2s\n",
        group_extra,
    };
    grid::config(&adir, &spec("a", pa, ps, Some("127.0.0.1:0".into()), ""));
    // The hooks say when the snapshot stream was frozen and thawed.
    // With a file `slow` there, freezing takes longer than the budget.
    let hooks = "    hooks:\n      freeze: [sh, -c, '[ -e slow ] && sleep 4; echo freeze >> hooks.log']\n      thaw: [sh, -c, 'echo thaw >> hooks.log']\n";
    grid::config(&sdir, &spec("snap", ps, pa, None, hooks));
    let a = grid::serve(&adir, &[], &[]);
    let daemon = common::daemon::Daemon::start(&sdir, "daemon", &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", ps)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the daemon's grid listener never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let img = sdir.join("v.img");
    let mut contents = Vec::new();
    for (i, byte) in [0x5au8, 0xa5].into_iter().enumerate() {
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&vec![byte; 65536], 4096 * i as u64).unwrap();
        f.sync_all().unwrap();
        contents.push(std::fs::read(&img).unwrap());
        let (ok, v) = grid::bookmark(&adir, &[], &[], &format!("snap-{i}"));
        assert!(ok && v["complete"] == true, "{v}");
    }
    let j = cascade::journal::Journal::open(&sdir.join("journal/vms")).unwrap();
    let marks: Vec<(u64, u64)> = j
        .bookmarks()
        .iter()
        .map(|b| (b.after_delta, b.grid.as_ref().unwrap().value))
        .collect();
    assert_eq!(
        marks,
        [(1, 1), (2, 2)],
        "each bookmark follows a delta of its own"
    );
    for (i, want) in contents.iter().enumerate() {
        let p = replay(
            &sdir.join("journal/vms"),
            &format!("bookmark:snap-{i}"),
            &d.path().join("r"),
            &["v-snap"],
        );
        assert!(
            std::fs::read(&p[0]).unwrap() == *want,
            "snap-{i} holds the volume as it was when it was taken"
        );
    }
    assert_eq!(
        std::fs::read_to_string(sdir.join("hooks.log")).unwrap(),
        "freeze\nthaw\nfreeze\nthaw\n"
    );
    // A snapshot stream that cannot freeze within the budget: the split stream was
    // held and is let go, neither journal gets the bookmark, and the snapshot
    // stream thaws without a delta once its freeze is done.
    std::fs::write(sdir.join("slow"), "").unwrap();
    let (ok, v) = grid::bookmark(&adir, &[], &[], "too-slow");
    assert!(!ok && v["complete"] == false, "{v}");
    assert!(
        serde_json::to_string(&v)
            .unwrap()
            .contains("did not hold within the budget"),
        "{v}"
    );
    writes_flow(a.addr, "v-a");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(sdir.join("hooks.log"))
        .unwrap()
        .matches("thaw")
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "the slow stream never thawed");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::remove_file(sdir.join("slow")).unwrap();
    let (ok, v) = grid::bookmark(&adir, &[], &[], "fast-again");
    assert!(ok && v["complete"] == true, "{v}");
    let j = cascade::journal::Journal::open(&sdir.join("journal/vms")).unwrap();
    assert_eq!(j.last_delta(), 3, "the released cycle journalled nothing");
    assert!(j.bookmarks().iter().all(|b| b.name != "too-slow"));
    let j = cascade::journal::Journal::open(&adir.join("journal/vms")).unwrap();
    assert!(j.bookmarks().iter().all(|b| b.name != "too-slow"));
    assert!(daemon.stop().success());
    a.stop();
}

#[test]
fn a_bad_grid_section_is_refused_naming_the_field() {
    let d = tempfile::tempdir().unwrap();
    let secret = grid::secret(d.path());
    let base = StreamSpec {
        stream: "a",
        grid_listen: "127.0.0.1:7610".into(),
        peers: vec!["127.0.0.1:7611".into()],
        counter: "/tmp/counter",
        secret: &secret,
        nbd_listen: Some("127.0.0.1:0".into()),
        grid_extra: "",
        group_extra: "",
    };
    type Change = dyn Fn(&mut StreamSpec);
    let cases: [(&Change, &str); 6] = [
        (
            &|s| s.nbd_listen = None,
            "which has no freeze and thaw hooks",
        ),
        (
            &|s| s.peers = vec!["nohost".into()],
            "grid.peers[0]: `nohost` is not HOST:PORT",
        ),
        (
            &|s| s.grid_extra = "  hold-budget: 20s\n",
            "grid.hold-budget: 20s is outside 1ms..10s",
        ),
        (
            &|s| s.grid_extra = "  cg: nope\n",
            "grid.cg: no consistency group `nope`",
        ),
        (&|s| s.counter = "ftp://x", "grid.counter: `ftp://x`"),
        (
            &|s| s.grid_listen = "unix:/tmp/g.sock".into(),
            "grid.listen: peers on other hosts connect over TCP",
        ),
    ];
    for (change, want) in cases {
        let mut s = StreamSpec {
            peers: base.peers.clone(),
            grid_listen: base.grid_listen.clone(),
            nbd_listen: base.nbd_listen.clone(),
            ..base
        };
        change(&mut s);
        grid::config(d.path(), &s);
        let out = Command::new(BIN)
            .args(["status", "-c", "cascade.yaml"])
            .current_dir(d.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(
            err.contains("cascade.yaml") && err.contains(want),
            "{want}: {err}"
        );
    }
}
