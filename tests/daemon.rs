//! The daemon, `cascade run`, as a service manager sees it: scheduled cycles and
//! exports, kill -9 in the middle of a cycle, SIGTERM in the middle of an export, a
//! second daemon, config reloads, missed ticks, and one failing group or target next
//! to healthy ones.
mod common;

use cascade::journal::Journal;
use common::config::{command, GroupConfig, ObjectTarget, Schedule, Volume};
use common::daemon::Daemon;
use common::group::{delta_object, noise, Group};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

const EVERY_SECOND: &str = "* * * * * *";
/// A schedule that does not fire during a test (and whose last tick is long past).
const YEARLY: &str = "0 0 1 1 *";

/// Group `cg` of the config cycles on `cron`.
fn schedule(g: &Group, cron: &str) {
    g.configure(|c| c.groups[0].schedule = Some(Schedule::cron(cron)));
}

/// One 1 MiB volume, cycled on `cron`.
fn small_group(dir: &Path, cron: &str) -> Group {
    let g = Group::new(dir, &[1 << 20]);
    schedule(&g, cron);
    g
}

/// Group `name` of one file volume `v0` at `path`, cycled every second.
fn every_second(name: &str, path: &str) -> GroupConfig {
    GroupConfig {
        schedule: Some(Schedule::cron(EVERY_SECOND)),
        ..GroupConfig::new(name, vec![Volume::file("v0", path)])
    }
}

/// Appends `group` to the config.
fn add_group(g: &Group, group: GroupConfig) {
    g.configure(|c| c.groups.push(group));
}

fn last_delta(g: &Group) -> u64 {
    Journal::open(&g.journal()).map_or(0, |j| j.last_delta())
}

fn status(g: &Group) -> Value {
    let o = g.cascade(&["status", "-c", "cascade.yaml", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn target_cursor(g: &Group, target: &str) -> u64 {
    status(g)["groups"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .and_then(|t| t["cursor"].as_u64())
        .unwrap_or(0)
}

/// An object target `NAME` in a local directory `NAME-store/`, with
/// `synthetic-full-every` if given.
fn dir_target(g: &Group, name: &str, synthetic_full_every: Option<u64>) {
    let target = ObjectTarget {
        synthetic_full_every,
        ..ObjectTarget::new(format!("../{name}-store"))
    };
    g.write_target(name, &target.into());
}

/// Restores `until` from an object target's directory into fresh files.
fn restore(g: &Group, store: &str, until: u64) -> Vec<Vec<u8>> {
    rebuilt(
        g,
        &["restore", "--from", store, "--until", &until.to_string()],
    )
}

/// Replays the journal up to `until` into fresh files.
fn replay(g: &Group, until: u64) -> Vec<Vec<u8>> {
    rebuilt(g, &["replay", "journals/cg", "--until", &until.to_string()])
}

/// Runs `cascade ARGS --to v0=NEW v1=NEW ...` and returns what it wrote.
fn rebuilt(g: &Group, args: &[&str]) -> Vec<Vec<u8>> {
    let out = tempfile::tempdir_in(&g.dir).unwrap();
    let to: Vec<String> = (0..g.volumes.len())
        .map(|i| format!("v{i}={}", out.path().join(format!("v{i}")).display()))
        .collect();
    let mut args = args.to_vec();
    args.push("--to");
    args.extend(to.iter().map(String::as_str));
    let o = g.cascade(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (0..g.volumes.len())
        .map(|i| std::fs::read(out.path().join(format!("v{i}"))).unwrap())
        .collect()
}

fn verify(g: &Group) {
    let o = g.cascade(&["journal", "verify", "journals/cg"]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn metrics(d: &Daemon) -> String {
    let addr = d.find("serving Prometheus metrics")[0]["fields"]["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    text
}

/// The value of one series in a metrics page.
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name_and_labels} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn scheduled_cycles_are_exported_continuously_and_replay_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[4 << 20, 2 << 20]);
    g.block_target("replica", true);
    dir_target(&g, "vault", None);
    g.configure(|c| {
        c.groups[0].targets = vec!["replica".into(), "vault".into()];
        c.groups[0].schedule = Some(Schedule::cron(EVERY_SECOND));
    });
    let d = Daemon::start(&g.dir, "daemon", &["--metrics-listen", "127.0.0.1:0"]);

    // Writes land between cycles; each point the daemon committed is checked below.
    for round in 0..3u64 {
        let before = last_delta(&g);
        g.write(0, round << 20, &noise(round + 1, 700_000));
        g.write(1, round * 300_000, &noise(round + 10, 90_000));
        d.until("a cycle after the writes", Duration::from_secs(30), || {
            last_delta(&g) >= before + 2
        });
    }
    let last = last_delta(&g);
    d.until("both targets to catch up", Duration::from_secs(30), || {
        target_cursor(&g, "replica") >= last && target_cursor(&g, "vault") >= last
    });
    let page = metrics(&d);
    assert!(series(&page, "cascade_cycles_total{cg=\"cg\",result=\"ok\"}") >= last as f64);
    assert!(series(&page, "cascade_changed_bytes_total{cg=\"cg\"}") >= 6.0 * (1 << 20) as f64);
    assert!(
        series(
            &page,
            "cascade_exported_deltas_total{cg=\"cg\",target=\"vault\"}"
        ) >= 1.0
    );

    // A status taken while the next cycle runs says "running": look between cycles.
    let mut st = status(&g);
    d.until("a status between cycles", Duration::from_secs(10), || {
        st = status(&g);
        st["groups"][0]["last_result"] != "running"
    });
    let cg = &st["groups"][0];
    assert_eq!(st["daemon_pid"].as_u64(), Some(d.pid() as u64), "{st}");
    assert_eq!(cg["last_result"], "ok", "{st}");
    assert!(
        cg["next"].is_string() && cg["schedule"] == "* * * * * * (UTC)",
        "{st}"
    );

    // Every cycle and export ran in a span naming its group (and target).
    let spans: Vec<_> = d
        .find("cycle committed")
        .iter()
        .map(|e| e["span"].clone())
        .collect();
    assert!(
        spans
            .iter()
            .all(|s| s["name"] == "cycle" && s["cg"] == "cg"),
        "{spans:?}"
    );
    let exports = d.find("export done");
    assert!(
        exports.iter().any(|e| e["span"]["target"] == "vault"),
        "{}",
        d.log_text()
    );

    assert!(d.stop().success());
    verify(&g);
    let now = g.contents();
    let last = last_delta(&g);
    assert!(last >= 6, "{last} cycles");
    assert!(
        replay(&g, last) == now,
        "the newest point replays to the volumes"
    );
    let replica: Vec<_> = (0..2)
        .map(|i| std::fs::read(g.dir.join(format!("replica/v{i}.img"))).unwrap())
        .collect();
    assert!(replica == now, "the block replica holds the volumes");
    assert!(
        restore(&g, "vault-store", last) == now,
        "the object replica restores them"
    );
}

/// A daemon started on one volume of `mib` MiB of random bytes, returned while its
/// first (full) cycle is journalling: a segment holds data that no committed delta
/// covers. `stop_grace` is the daemon's, if given.
fn inside_a_full_cycle(dir: &Path, mib: u64, stop_grace: Option<&str>) -> (Group, Daemon) {
    let g = Group::new(dir, &[mib << 20]);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&g.volumes[0])
        .unwrap();
    std::io::copy(
        &mut std::fs::File::open("/dev/urandom").unwrap().take(mib << 20),
        &mut f,
    )
    .unwrap();
    f.sync_all().unwrap();
    g.configure(|c| {
        c.groups[0].schedule = Some(Schedule::cron(EVERY_SECOND));
        c.daemon = stop_grace.map(|grace| common::config::Daemon {
            stop_grace: Some(grace.into()),
            ..Default::default()
        });
    });
    let d = Daemon::start(&g.dir, "first", &[]);
    let segments = g.journal();
    d.until(
        "the full cycle to be journalling",
        Duration::from_secs(120),
        || {
            last_delta(&g) == 0
                && std::fs::read_dir(&segments).is_ok_and(|rd| {
                    rd.flatten().any(|e| {
                        e.file_name().to_string_lossy().ends_with(".cjs")
                            && e.metadata().is_ok_and(|m| m.len() > 8 << 20)
                    })
                })
        },
    );
    (g, d)
}

#[test]
fn sigterm_in_the_middle_of_a_cycle_lets_it_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, d) = inside_a_full_cycle(tmp.path(), 160, None);
    assert!(d.stop().success(), "a clean stop exits 0");
    assert_eq!(
        last_delta(&g),
        1,
        "the running cycle committed, no other started"
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(g.dir.join("state/cg/schedule.json")).unwrap())
            .unwrap();
    assert_eq!(state["last_result"], "ok", "{state}");
    verify(&g);
    assert!(replay(&g, 1) == g.contents());
}

#[test]
fn a_cycle_that_outlasts_the_stop_grace_is_abandoned_and_made_up() {
    let tmp = tempfile::tempdir().unwrap();
    // About 9 s of first cycle for this debug build; the grace is 1 s.
    let (g, mut d) = inside_a_full_cycle(tmp.path(), 480, Some("1s"));
    d.signal(libc::SIGTERM);
    assert!(
        d.wait(Duration::from_secs(20)).success(),
        "{}",
        d.log_text()
    );
    assert!(
        !d.find("cycle abandoned for the stop").is_empty(),
        "{}",
        d.log_text()
    );
    assert_eq!(last_delta(&g), 0, "nothing of the abandoned cycle was kept");
    verify(&g);
    let state: Value =
        serde_json::from_slice(&std::fs::read(g.dir.join("state/cg/schedule.json")).unwrap())
            .unwrap();
    assert_eq!(state["last_result"], "interrupted", "{state}");
    let snaps = std::fs::read_dir(g.dir.join("state/cg/snapshots")).map_or(0, |rd| rd.count());
    assert_eq!(snaps, 0, "its snapshot was removed");

    // The next start makes the abandoned tick up (on a smaller volume, to be quick).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&g.volumes[0])
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let d = Daemon::start(&g.dir, "second", &[]);
    d.until("the make-up cycle", Duration::from_secs(60), || {
        last_delta(&g) >= 1
    });
    assert!(d.stop().success());
    let log = std::fs::read_to_string(g.dir.join("second.log")).unwrap();
    assert!(log.contains("running one now"), "{log}");
    assert!(replay(&g, 1) == g.contents());
}

#[test]
fn kill_9_in_the_middle_of_a_cycle_then_restart_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let (g, d) = inside_a_full_cycle(tmp.path(), 160, None);
    d.kill();
    assert_eq!(last_delta(&g), 0, "killed before the commit");
    let state: Value =
        serde_json::from_slice(&std::fs::read(g.dir.join("state/cg/schedule.json")).unwrap())
            .unwrap();
    assert_eq!(state["last_result"], "running", "{state}");

    let d = Daemon::start(&g.dir, "second", &[]);
    d.until(
        "two cycles after the restart",
        Duration::from_secs(120),
        || last_delta(&g) >= 2,
    );
    assert!(d.stop().success());
    let log = std::fs::read_to_string(g.dir.join("second.log")).unwrap();
    assert!(log.contains("the last cycle was interrupted"), "{log}");
    assert!(log.contains("running one now"), "{log}");
    verify(&g);
    let j = Journal::open(&g.journal()).unwrap();
    assert!(j.deltas()[0].flags & cascade::journal::record::FLAG_FULL != 0);
    assert!(
        replay(&g, 1) == g.contents(),
        "delta 1 replays to the volume"
    );
    assert!(replay(&g, j.last_delta()) == g.contents());
    // No snapshot is left but the base of the next cycle.
    let snaps: Vec<_> = std::fs::read_dir(g.dir.join("state/cg/snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(snaps, [j.last_delta().to_string()]);
}

#[test]
fn sigterm_during_an_export_stops_at_a_delta_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[24 << 20]);
    dir_target(&g, "vault", Some(0));
    g.configure(|c| {
        c.groups[0].targets = vec!["vault".into()];
        c.groups[0].schedule = Some(Schedule::cron(YEARLY));
    });
    // Six deltas of 24 MiB each wait for the export.
    let mut points = Vec::new();
    for i in 0..6u64 {
        g.write(0, 0, &noise(100 + i, 24 << 20));
        let o = g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        points.push(g.contents());
    }
    let d = Daemon::start(&g.dir, "first", &[]);
    d.until(
        "the first delta to reach the vault",
        Duration::from_secs(60),
        || delta_object(&g.dir.join("vault-store"), 1).is_some(),
    );
    assert!(d.stop().success(), "a clean stop exits 0");
    let stopped = Daemon::stopped_at(&g.dir.join("first.log"));
    assert!((1..6).contains(&stopped), "stopped at delta {stopped} of 6");
    // The vault holds exactly the deltas up to where it stopped, each whole.
    for (i, p) in points.iter().enumerate().take(stopped as usize) {
        assert!(
            restore(&g, "vault-store", i as u64 + 1) == *p,
            "point {}",
            i + 1
        );
    }

    let d = Daemon::start(&g.dir, "second", &[]);
    d.until("the vault to catch up", Duration::from_secs(120), || {
        target_cursor(&g, "vault") == 6
    });
    assert!(d.stop().success());
    for (i, p) in points.iter().enumerate() {
        assert!(
            restore(&g, "vault-store", i as u64 + 1) == *p,
            "point {}",
            i + 1
        );
    }
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let g = small_group(tmp.path(), YEARLY);
    let d = Daemon::start(&g.dir, "first", &[]);
    d.until("the daemon to start", Duration::from_secs(30), || {
        !d.find("daemon started").is_empty()
    });
    let o = g.cascade(&["run", "-c", "cascade.yaml"]);
    assert_eq!(o.status.code(), Some(6));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "a cascade daemon (pid {}) already runs on state directory",
            d.pid()
        )),
        "{err}"
    );
    let st = status(&g);
    assert_eq!(st["daemon_pid"].as_u64(), Some(d.pid() as u64));
    assert!(d.stop().success());
    assert_eq!(status(&g)["daemon_pid"], Value::Null);
}

#[test]
fn sighup_refuses_an_invalid_config_and_applies_a_valid_one() {
    let tmp = tempfile::tempdir().unwrap();
    let g = small_group(tmp.path(), EVERY_SECOND);
    let good = g.config_file();
    let d = Daemon::start(&g.dir, "daemon", &[]);
    d.until("a first cycle", Duration::from_secs(30), || {
        last_delta(&g) >= 1
    });

    let mut bad = good.clone();
    bad.groups[0].schedule = Some(Schedule::cron("61 * * * *"));
    g.write_config(&bad);
    d.signal(libc::SIGHUP);
    d.until("the reload to be refused", Duration::from_secs(30), || {
        !d.find("config reload refused").is_empty()
    });
    let refused = &d.find("config reload refused")[0]["fields"]["error"];
    assert!(
        refused
            .as_str()
            .unwrap()
            .contains("`61 * * * *` is not a cron schedule"),
        "{refused}"
    );
    let at = last_delta(&g);
    d.until(
        "cycles to go on under the old config",
        Duration::from_secs(30),
        || last_delta(&g) >= at + 2,
    );

    // A valid config with a second group: it starts cycling.
    std::fs::write(g.dir.join("w0.img"), vec![7u8; 1 << 20]).unwrap();
    g.write_config(&good);
    add_group(&g, every_second("web", "w0.img"));
    d.signal(libc::SIGHUP);
    let web = g.dir.join("journals/web");
    d.until("the new group to cycle", Duration::from_secs(30), || {
        Journal::open(&web).is_ok_and(|j| j.last_delta() >= 2)
    });
    assert_eq!(d.find("config reloaded").len(), 1);

    // A changed schedule of a running group takes effect: yearly, so no more cycles.
    schedule(&g, YEARLY);
    d.signal(libc::SIGHUP);
    d.until("the second reload", Duration::from_secs(30), || {
        d.find("config reloaded").len() == 2
    });
    std::thread::sleep(Duration::from_millis(1500));
    let at = last_delta(&g);
    let web_at = Journal::open(&web).unwrap().last_delta();
    // Three of the other group's cycles (over two seconds, longer when a loaded
    // machine slows them) pass without one of the yearly group's.
    d.until("the other group to go on", Duration::from_secs(30), || {
        Journal::open(&web).unwrap().last_delta() >= web_at + 3
    });
    assert_eq!(last_delta(&g), at, "the group follows its new schedule");
    assert!(d.stop().success());
}

#[test]
fn missed_ticks_run_once_at_start_up_or_are_skipped_by_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let g = small_group(tmp.path(), EVERY_SECOND);
    let d = Daemon::start(&g.dir, "first", &[]);
    d.until("two cycles", Duration::from_secs(30), || {
        last_delta(&g) >= 2
    });
    assert!(d.stop().success());
    std::thread::sleep(Duration::from_secs(3));

    // Catch-up cycles start without a tick of their own, so they log no delay.
    let catch_ups = |d: &Daemon| {
        d.find("cycle started")
            .iter()
            .filter(|e| e["fields"]["delay_ms"].is_null())
            .count()
    };
    let before = last_delta(&g);
    let d = Daemon::start(&g.dir, "run-once", &[]);
    d.until("a cycle", Duration::from_secs(30), || {
        last_delta(&g) > before
    });
    let missed = d.find("scheduled cycles were missed");
    assert_eq!(missed.len(), 1, "{}", d.log_text());
    assert!(
        missed[0]["fields"]["missed"].as_u64().unwrap() >= 3,
        "{}",
        d.log_text()
    );
    d.until("two more cycles", Duration::from_secs(30), || {
        last_delta(&g) >= before + 3
    });
    assert_eq!(
        catch_ups(&d),
        1,
        "one cycle for all missed ticks\n{}",
        d.log_text()
    );
    assert!(d.stop().success());
    std::thread::sleep(Duration::from_secs(3));

    g.configure(|c| c.groups[0].schedule.as_mut().unwrap().missed = Some("skip".into()));
    let before = last_delta(&g);
    let d = Daemon::start(&g.dir, "skip", &[]);
    d.until("two cycles", Duration::from_secs(30), || {
        last_delta(&g) >= before + 2
    });
    assert!(
        d.log_text().contains("skipping them (missed: skip)"),
        "{}",
        d.log_text()
    );
    assert_eq!(catch_ups(&d), 0, "{}", d.log_text());
    assert!(d.stop().success());
}

#[test]
fn a_failing_group_or_target_does_not_stop_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[2 << 20]);
    g.write(0, 0, &noise(5, 1 << 20));
    dir_target(&g, "vault", None);
    // A block target whose replica files do not exist: every export fails.
    g.block_target("broken", false);
    g.configure(|c| {
        c.groups[0].targets = vec!["vault".into(), "broken".into()];
        c.groups[0].schedule = Some(Schedule::cron(EVERY_SECOND));
    });
    add_group(&g, every_second("gone", "missing.img"));
    let d = Daemon::start(&g.dir, "daemon", &["--metrics-listen", "0"]);
    d.until(
        "the healthy group to cycle and export",
        Duration::from_secs(60),
        || last_delta(&g) >= 3 && target_cursor(&g, "vault") >= 3,
    );
    d.until(
        "the broken target to be retried",
        Duration::from_secs(60),
        || !d.find("retrying with backoff").is_empty(),
    );
    let page = metrics(&d);
    assert!(
        series(&page, "cascade_cycles_total{cg=\"gone\",result=\"failed\"}") >= 1.0,
        "{page}"
    );
    assert!(
        series(
            &page,
            "cascade_export_errors_total{cg=\"cg\",target=\"broken\"}"
        ) >= 1.0,
        "{page}"
    );
    assert!(
        series(
            &page,
            "cascade_export_lag_deltas{cg=\"cg\",target=\"broken\"}"
        ) >= 1.0,
        "{page}"
    );
    let st = status(&g);
    let gone = &st["groups"][1];
    assert_eq!(gone["last_result"], "failed", "{st}");
    assert!(
        gone["last_error"].as_str().unwrap().contains("missing.img"),
        "{st}"
    );
    assert!(gone["failures"].as_u64().unwrap() >= 1, "{st}");
    let broken = &st["groups"][0]["targets"][1];
    assert!(
        broken["last_error"].is_string() && broken["cursor"] == 0,
        "{st}"
    );
    assert!(d.stop().success());
}

impl Daemon {
    /// Where a stopped export left its target: the cursor of the log's "stopped at a
    /// delta boundary" event.
    fn stopped_at(log: &Path) -> u64 {
        let text = std::fs::read_to_string(log).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| {
                e["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("stopped at a delta boundary"))
            })
            .and_then(|e| e["fields"]["cursor"].as_u64())
            .unwrap_or_else(|| panic!("no stop event in\n{text}"))
    }
}

#[test]
fn status_watch_refreshes_until_interrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let g = small_group(tmp.path(), YEARLY);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["status", "-c", "cascade.yaml", "--json", "--watch", "0.2"])
        .current_dir(&g.dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    assert!(lines
        .iter()
        .all(|l| l["groups"][0]["schedule"] == "0 0 1 1 * (UTC)"));
    assert!(lines[0]["time"] != lines[lines.len() - 1]["time"]);
}

#[test]
fn a_stop_signal_to_the_whole_process_group_spares_a_running_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let g = small_group(tmp.path(), EVERY_SECOND);
    g.configure(|c| c.groups[0].hooks.freeze = command(&["sleep", "2"]));
    let d = Daemon::start(&g.dir, "daemon", &[]);
    d.until("a cycle to start", Duration::from_secs(30), || {
        !d.find("cycle started").is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    // As Ctrl-C or systemd's default KillMode would: every process of the group.
    d.signal_group(libc::SIGTERM);
    let mut d = d;
    assert!(d.wait(Duration::from_secs(30)).success());
    assert_eq!(
        last_delta(&g),
        1,
        "the hook lived and the cycle committed\n{}",
        d.log_text()
    );
    verify(&g);
}

#[test]
fn a_served_tick_is_not_repeated_after_a_crash_or_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let g = small_group(tmp.path(), YEARLY);
    g.write(0, 0, &noise(3, 4096));
    let committed = g.cycle();
    let delta_ns = Journal::open(&g.journal()).unwrap().deltas()[0].time_ns;
    let at = |ns: i64| chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339();
    // The daemon died inside the cycle of the last yearly tick, after its commit
    // (it started a second before the delta was taken) but before saying so.
    let state = |started_ns: i64| {
        serde_json::json!({
            "last_tick": "2026-01-01T00:00:00Z",
            "last_started": at(started_ns),
            "last_result": "running",
            "failures": 0,
        })
        .to_string()
    };
    let file = g.dir.join("state/cg/schedule.json");
    std::fs::write(&file, state(delta_ns - 1_000_000_000)).unwrap();
    let d = Daemon::start(&g.dir, "committed", &[]);
    d.until("the daemon to start", Duration::from_secs(30), || {
        !d.find("daemon started").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(d.stop().success());
    assert_eq!(
        last_delta(&g),
        committed.delta,
        "the committed cycle was not repeated"
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        (saved["last_result"].as_str(), saved["last_delta"].as_u64()),
        (Some("ok"), Some(1))
    );

    // A clean restart within the same tick's interval runs nothing either.
    let d = Daemon::start(&g.dir, "restart", &[]);
    d.until("the daemon to start", Duration::from_secs(30), || {
        !d.find("daemon started").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(d.stop().success());
    assert_eq!(last_delta(&g), 1);

    // Had it died before the commit (it started after the delta was taken), the
    // tick was not served: one cycle makes up for it at start-up.
    std::fs::write(&file, state(delta_ns + 1_000_000_000)).unwrap();
    let d = Daemon::start(&g.dir, "interrupted", &[]);
    d.until("the make-up cycle", Duration::from_secs(30), || {
        last_delta(&g) == 2
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(d.stop().success());
    assert_eq!(last_delta(&g), 2, "exactly one make-up cycle");
    let log = std::fs::read_to_string(g.dir.join("interrupted.log")).unwrap();
    assert!(log.contains("the last cycle was interrupted"), "{log}");
}

#[test]
fn a_long_cycle_skips_its_own_ticks_but_not_another_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let g = small_group(tmp.path(), EVERY_SECOND);
    std::fs::write(g.dir.join("s0.img"), vec![1u8; 1 << 20]).unwrap();
    let mut slow = every_second("slow", "s0.img");
    slow.hooks.freeze = command(&["sleep", "4"]);
    add_group(&g, slow);
    let d = Daemon::start(&g.dir, "daemon", &["--metrics-listen", "0"]);
    let slow = g.dir.join("journals/slow");
    d.until(
        "the slow group's first cycle",
        Duration::from_secs(60),
        || Journal::open(&slow).is_ok_and(|j| j.last_delta() >= 1),
    );
    let fast = last_delta(&g);
    assert!(
        fast >= 3,
        "the other group cycled on while the slow one ran: {fast} deltas"
    );
    // The fast group may skip a tick too when this machine is loaded, so
    // only the slow group's skip is looked for.
    let slow_skips = || -> Vec<_> {
        d.find("outlasted the schedule's interval")
            .into_iter()
            .filter(|e| e["fields"]["cg"] == "slow")
            .collect()
    };
    d.until("the skip to be logged", Duration::from_secs(30), || {
        !slow_skips().is_empty()
    });
    let skipped = &slow_skips()[0];
    assert!(
        skipped["fields"]["skipped"].as_u64().unwrap() >= 2,
        "{skipped}"
    );
    let page = metrics(&d);
    assert!(
        series(&page, "cascade_cycle_ticks_skipped_total{cg=\"slow\"}") >= 2.0,
        "{page}"
    );
    // Counted per group: the fast group's count is its own (0 unless the
    // machine made one of its cycles outlast a second), not the slow one's.
    assert!(
        series(&page, "cascade_cycle_ticks_skipped_total{cg=\"cg\"}")
            < series(&page, "cascade_cycle_ticks_skipped_total{cg=\"slow\"}"),
        "{page}"
    );
    // Never two cycles of one group at once: every start follows the previous end.
    let slow_events: Vec<String> = d
        .events()
        .iter()
        .filter(|e| e["span"]["cg"] == "slow" && e["span"]["name"] == "cycle")
        .filter_map(|e| e["fields"]["message"].as_str().map(String::from))
        .collect();
    for pair in slow_events.windows(2) {
        assert!(
            !(pair[0] == "cycle started" && pair[1] == "cycle started"),
            "{slow_events:?}"
        );
    }
    assert!(d.stop().success());
}

#[test]
fn metrics_show_the_journal_and_lag_as_they_are_at_the_scrape() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Group::new(tmp.path(), &[1 << 20]);
    // No schedule: the CLI cycles; a target that never exports.
    g.block_target("broken", false);
    g.configure(|c| c.groups[0].targets = vec!["broken".into()]);
    let d = Daemon::start(&g.dir, "daemon", &["--metrics-listen", "0"]);
    d.until("the metrics endpoint", Duration::from_secs(30), || {
        !d.find("serving Prometheus metrics").is_empty()
    });
    for _ in 0..2 {
        let o = g.cascade(&["cycle", "-c", "cascade.yaml", "--cg", "cg"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let page = metrics(&d);
    assert_eq!(
        series(&page, "cascade_journal_last_delta{cg=\"cg\"}"),
        2.0,
        "{page}"
    );
    assert_eq!(
        series(
            &page,
            "cascade_export_lag_deltas{cg=\"cg\",target=\"broken\"}"
        ),
        2.0,
        "{page}"
    );
    assert!(
        series(
            &page,
            "cascade_export_lag_seconds{cg=\"cg\",target=\"broken\"}"
        ) >= 0.0
    );
    assert!(d.stop().success());
}

#[test]
fn a_second_stop_signal_thaws_before_exiting() {
    let tmp = tempfile::tempdir().unwrap();
    let g = small_group(tmp.path(), EVERY_SECOND);
    // The group is frozen for as long as the freeze hook runs; the grace is long, so
    // only the second signal ends the daemon.
    g.configure(|c| {
        c.groups[0].hooks.freeze = command(&["sleep", "20"]);
        c.groups[0].hooks.thaw = command(&["sh", "-c", "echo thawed >> thaw.log"]);
    });
    let mut d = Daemon::start(&g.dir, "daemon", &[]);
    d.until("a cycle to start", Duration::from_secs(30), || {
        !d.find("cycle started").is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    d.signal(libc::SIGTERM);
    d.until("the stop to begin", Duration::from_secs(30), || {
        !d.find("stopping").is_empty()
    });
    d.signal(libc::SIGTERM);
    let status = d.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{}", d.log_text());
    assert_eq!(
        std::fs::read_to_string(g.dir.join("thaw.log")).unwrap_or_default(),
        "thawed\n",
        "the frozen group was thawed before the exit\n{}",
        d.log_text()
    );
}
