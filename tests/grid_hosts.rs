//! A grid across "hosts": each stream's `cascade split` runs in a network namespace
//! of its own, with its own address, so peers talk TLS; the counter and every
//! stream's object replica are in a real S3 server (s3s-fs). Clients write with
//! dependencies across the hosts while bookmarks are taken; every complete
//! bookmark restores, from the object replicas alone, to a cut where "B implies A".
mod common;

use common::grid::{self, check_cut, round, StreamSpec, Writer};
use common::host::root_or_skip;
use common::netns::Net;
use common::s3::S3Server;
use common::split::BIN;
use std::process::Command;

const GRID_PORT: u16 = 7610;

#[test]
fn streams_on_separate_hosts_bookmark_consistently_and_restore_from_their_replicas() {
    if !root_or_skip("grid across network namespaces") {
        return;
    }
    let net = Net::new("g", 3);
    let mut s3 = S3Server::start_on(net.gateway());
    let env = s3.env();
    let d = tempfile::tempdir().unwrap();
    let secret = grid::secret(d.path());
    let names = ["db", "app", "queue"];
    let counter = s3.url("grid/shop");
    let mut streams = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let dir = d.path().join(n);
        std::fs::create_dir_all(dir.join("cascade-targets")).unwrap();
        std::fs::write(
            dir.join("cascade-targets/store.yaml"),
            format!(
                "kind: object\nurl: {}\nendpoint: {}\nallow-http: true\n",
                s3.url(n),
                s3.endpoint
            ),
        )
        .unwrap();
        let peers = (0..names.len())
            .filter(|j| *j != i)
            .map(|j| format!("{}:{GRID_PORT}", net.host(j)))
            .collect();
        grid::config(
            &dir,
            &StreamSpec {
                stream: n,
                grid_listen: format!("{}:{GRID_PORT}", net.host(i)),
                peers,
                counter: &counter,
                secret: &secret,
                nbd_listen: Some(format!("{}:10809", net.host(i))),
                grid_extra: &format!(
                    "  endpoint: {}\n  allow-http: true\n  hold-budget: 500ms\n",
                    s3.endpoint
                ),
                group_extra: "    targets: [store]\n",
            },
        );
        let wrap = net.wrap(i);
        let wrap: Vec<&str> = wrap.iter().map(String::as_str).collect();
        streams.push((
            dir.clone(),
            grid::serve(&dir, &wrap, &env),
            wrap.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ));
    }
    let writer = Writer::start(
        streams
            .iter()
            .zip(names)
            .map(|((_, s, _), n)| (s.addr, format!("v-{n}")))
            .collect(),
    );
    let mut taken = Vec::new();
    for i in 0..8 {
        std::thread::sleep(std::time::Duration::from_millis(80));
        let (dir, _, wrap) = &streams[i % names.len()];
        let wrap: Vec<&str> = wrap.iter().map(String::as_str).collect();
        let name = format!("cut-{i}");
        let (ok, v) = grid::bookmark(dir, &wrap, &env, &name);
        assert!(ok && v["complete"] == true, "{name}: {v}");
        taken.push(name);
    }
    // The counter store goes away during a bookmark: it fails, naming the store,
    // and no stream was held (the writer goes on). Back, the next one is complete.
    s3.stop();
    let before = writer.rounds.load(std::sync::atomic::Ordering::Relaxed);
    let wrap0: Vec<&str> = streams[0].2.iter().map(String::as_str).collect();
    let out = grid::bookmark_command(&streams[0].0, &wrap0, &env, "store-down")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&counter), "{err}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        writer.rounds.load(std::sync::atomic::Ordering::Relaxed) > before,
        "writes went on"
    );
    s3.restart();
    let (ok, v) = grid::bookmark(
        &streams[1].0,
        &streams[1].2.iter().map(String::as_str).collect::<Vec<_>>(),
        &env,
        "store-back",
    );
    assert!(ok && v["complete"] == true, "{v}");
    taken.push("store-back".into());
    assert!(writer.stop() > 20);
    for (dir, _, wrap) in &streams {
        let mut c = Command::new(&wrap[0]);
        c.args(&wrap[1..])
            .arg(BIN)
            .args(["export", "-c", "cascade.yaml", "--cg", "vms"])
            .envs(env.iter().cloned())
            .current_dir(dir);
        common::host::run(&mut c);
    }
    // From this namespace (a host with none of the streams): restore each bookmark.
    for name in &taken {
        let out_dir = d.path().join("restored").join(name);
        let mut c = Command::new(BIN);
        c.args([
            "restore",
            "-c",
            "cascade.yaml",
            "--grid",
            "shop",
            "--until",
            &format!("bookmark:{name}"),
            "--to-dir",
        ])
        .arg(&out_dir)
        .envs(env.iter().cloned())
        .current_dir(&streams[0].0);
        common::host::run(&mut c);
        let rounds: Vec<u64> = names
            .iter()
            .map(|n| round(&out_dir.join(n).join(format!("v-{n}.img"))))
            .collect();
        check_cut(name, &rounds);
        // The same as each stream's own journal replayed there.
        for n in names {
            let j = d.path().join(n).join("journal/vms");
            let r = common::split::replay(
                &j,
                &format!("bookmark:{name}"),
                &d.path().join("replayed"),
                &[&format!("v-{n}")],
            );
            assert_eq!(
                common::split::file_digest(&r[0]),
                common::split::file_digest(&out_dir.join(n).join(format!("v-{n}.img"))),
                "{name}: {n}'s replica and journal disagree"
            );
        }
    }
    for (_, s, _) in streams {
        let log = s.log();
        s.stop();
        assert!(!log.contains("c2VjcmV0"), "the secret reached a log");
    }
}
