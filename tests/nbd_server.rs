//! The NBD server against real clients: qemu-io, qemu-img, nbdinfo, nbdcopy, nbdsh
//! (python3-libnbd) and fio's nbd engine, over TCP and a Unix socket, and a raw
//! client of our own for what no client sends on purpose (bad magic, unknown
//! options and commands, oversized payloads).
mod common;

use cascade::nbd::ListenAddr;
use common::nbd::{client, image, nbdsh, qemu_io, Raw, Server};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::process::Command;

const MIB: u64 = 1 << 20;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn tcp(s: &Server) -> std::net::SocketAddr {
    match &s.addr {
        ListenAddr::Tcp(a) => *a,
        ListenAddr::Unix(_) => unreachable!("a TCP server"),
    }
}

fn read_at(path: &std::path::Path, offset: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, offset)
        .unwrap();
    b
}

#[test]
fn qemu_io_writes_fua_zeroes_discards_and_reads_back() {
    let dir = scratch();
    let img = image(dir.path(), "web.img", 16 * MIB);
    let s = Server::start("127.0.0.1:0", &[("web", &img)]);
    let uri = s.uri("web");
    qemu_io(
        &uri,
        &[
            "write -P 0xab 4096 64k",
            "write -f -P 0xcd 1M 128k",
            "write -z 2M 1M",
            "discard 4M 1M",
            // Several in flight at once, overlapping none, then one flush.
            "aio_write -P 0x21 8M 64k",
            "aio_write -P 0x22 9M 1M",
            "aio_write -P 0x23 11M 4k",
            "aio_flush",
            "flush",
        ],
    );
    // A second connection sees all of it (qemu-io fails on a pattern mismatch).
    qemu_io(
        &uri,
        &[
            "read -P 0xab 4096 64k",
            "read -P 0xcd 1M 128k",
            "read -P 0 2M 1M",
            "read -P 0 4M 1M",
            "read -P 0x21 8M 64k",
            "read -P 0x22 9M 1M",
            "read -P 0x23 11M 4k",
            "read -P 0x10 0 4096",
        ],
    );
    // And so does the file itself.
    assert!(read_at(&img, 4096, 65536).iter().all(|&b| b == 0xab));
    assert!(read_at(&img, 2 * MIB, MIB as usize).iter().all(|&b| b == 0));
    assert!(read_at(&img, 9 * MIB, MIB as usize)
        .iter()
        .all(|&b| b == 0x22));
    // A wrong pattern fails qemu-io, so the reads above checked something.
    let bad = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "read -P 0x99 4096 4k", &uri])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn nbdinfo_lists_exports_and_what_they_offer() {
    let dir = scratch();
    let web = image(dir.path(), "web.img", 16 * MIB);
    let db = image(dir.path(), "db.img", 4 * MIB);
    let s = Server::start("127.0.0.1:0", &[("web", &web), ("db", &db)]);
    let base = format!("nbd://{}", tcp(&s));
    let out = client(Command::new("nbdinfo").args(["--list", "--json", &base]));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "db"]);
    let out = client(Command::new("nbdinfo").args(["--json", &s.uri("db")]));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &info["exports"][0];
    assert_eq!(info["protocol"], "newstyle-fixed");
    assert_eq!(info["structured"], true);
    assert_eq!(e["export-size"], 4 * MIB);
    assert_eq!(e["contexts"], serde_json::json!(["base:allocation"]));
    for can in [
        "can_flush",
        "can_fua",
        "can_multi_conn",
        "can_trim",
        "can_zero",
        "can_fast_zero",
        "can_cache",
        "can_df",
    ] {
        assert_eq!(e[can], true, "{can}");
    }
    assert_eq!(e["is_read_only"], false);
    assert_eq!(e["block_size_minimum"], 1);
    assert_eq!(e["block_size_maximum"], 32 * MIB);
    // `--can` answers by exit status.
    for can in ["multi-conn", "flush", "fua", "trim", "zero", "cache"] {
        client(Command::new("nbdinfo").args(["--can", can, &s.uri("web")]));
    }
    let ro = Command::new("nbdinfo")
        .args(["--is", "read-only", &s.uri("web")])
        .status()
        .unwrap();
    assert!(!ro.success());
    // An unknown export is refused with the names of those that exist.
    let out = Command::new("nbdinfo").arg(s.uri("nope")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("export: nope"), "{err}");
}

#[test]
fn qemu_img_converts_compares_and_maps_allocation() {
    let dir = scratch();
    // A source with data, zeros written as data, and holes.
    let src = dir.path().join("src.img");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(8 * MIB).unwrap();
    let mut rng = 0x9e37_79b9_u32;
    let data: Vec<u8> = (0..2 * MIB)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            rng as u8
        })
        .collect();
    f.write_all_at(&data, MIB).unwrap();
    f.write_all_at(&vec![0u8; MIB as usize], 5 * MIB).unwrap();
    let dst = dir.path().join("dst.img");
    std::fs::File::create(&dst)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let s = Server::start("127.0.0.1:0", &[("dst", &dst)]);
    let uri = s.uri("dst");
    client(
        Command::new("qemu-img")
            .args(["convert", "-n", "-f", "raw", "-O", "raw"])
            .arg(&src)
            .arg(&uri),
    );
    client(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(&src)
            .arg(&uri),
    );
    assert_eq!(read_at(&dst, MIB, 2 * MIB as usize), data);
    // The copy left holes where the source has none of data (qemu-img writes
    // zeros as zeroes, which punches), and the map says so through base:allocation.
    let out = client(Command::new("qemu-img").args(["map", "--output=json", "-f", "raw", &uri]));
    let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let data_at = |off: u64| {
        map.as_array()
            .unwrap()
            .iter()
            .find(|m| {
                let start = m["start"].as_u64().unwrap();
                start <= off && off < start + m["length"].as_u64().unwrap()
            })
            .map(|m| m["data"].as_bool().unwrap())
            .unwrap()
    };
    assert!(data_at(MIB), "{map}");
    assert!(!data_at(0), "{map}");
    assert!(!data_at(7 * MIB), "{map}");
    // A changed byte is found.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dst)
        .unwrap()
        .write_all_at(&[1], 7 * MIB)
        .unwrap();
    let differ = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(&uri)
        .status()
        .unwrap();
    assert_eq!(differ.code(), Some(1));
}

#[test]
fn nbdcopy_copies_in_and_out_over_several_connections() {
    let dir = scratch();
    let src = image(dir.path(), "src.img", 32 * MIB);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&src)
        .unwrap()
        .write_all_at(
            &(0..=255u8)
                .cycle()
                .take(3 * MIB as usize)
                .collect::<Vec<_>>(),
            20 * MIB,
        )
        .unwrap();
    let dst = dir.path().join("dst.img");
    std::fs::File::create(&dst)
        .unwrap()
        .set_len(32 * MIB)
        .unwrap();
    let s = Server::start("127.0.0.1:0", &[("dst", &dst)]);
    let uri = s.uri("dst");
    // nbdcopy opens several connections only where CAN_MULTI_CONN is offered.
    client(
        Command::new("nbdcopy")
            .args(["--connections=4", "--requests=16", "--flush"])
            .arg(&src)
            .arg(&uri),
    );
    assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    let back = dir.path().join("back.img");
    client(
        Command::new("nbdcopy")
            .args(["--connections=4"])
            .arg(&uri)
            .arg(&back),
    );
    assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&back).unwrap());
}

#[test]
fn fio_random_writes_verify_at_depth() {
    let dir = scratch();
    let img = dir.path().join("fio.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    let s = Server::start("127.0.0.1:0", &[("fio", &img)]);
    for (bs, depth) in [("4k", "32"), ("64k", "16"), ("1m", "8")] {
        let out = client(Command::new("fio").args([
            "--name=verify",
            "--ioengine=nbd",
            &format!("--uri={}", s.uri("fio")),
            "--rw=randwrite",
            &format!("--bs={bs}"),
            &format!("--iodepth={depth}"),
            "--size=32M",
            "--verify=crc32c",
            "--do_verify=1",
            // No state file left in the working directory.
            "--verify_state_save=0",
            "--output-format=json",
        ]));
        // fio's nbd engine prints a line of its own before the report.
        let text = String::from_utf8(out.stdout).unwrap();
        let report: serde_json::Value =
            serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
        let job = &report["jobs"][0];
        assert_eq!(job["error"], 0, "{bs}: {job}");
        assert!(
            job["write"]["io_bytes"].as_u64().unwrap() >= 32 * MIB,
            "{bs}: {job}"
        );
        assert!(
            job["read"]["io_bytes"].as_u64().unwrap() >= 32 * MIB,
            "{bs} verify: {job}"
        );
    }
}

#[test]
fn unix_socket_serves_and_is_removed_on_stop() {
    let dir = scratch();
    let img = image(dir.path(), "web.img", 4 * MIB);
    let sock = dir.path().join("nbd.sock");
    // A socket file left behind by a server that is gone is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let s = Server::start(&format!("unix:{}", sock.display()), &[("web", &img)]);
    let uri = s.uri("web");
    assert!(uri.starts_with("nbd+unix:///web?socket="), "{uri}");
    qemu_io(&uri, &["write -P 0x5a 0 1M", "read -P 0x5a 0 1M"]);
    client(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(&img)
            .arg(&uri),
    );
    s.stop();
    assert!(!sock.exists());
}

/// Edge cases through libnbd, which can be told to send what a strict client
/// would not (strict mode off) and to use simple replies.
#[test]
fn nbdsh_protocol_edges_get_the_spec_errors() {
    let dir = scratch();
    let img = image(dir.path(), "web.img", 64 * MIB);
    let s = Server::start("127.0.0.1:0", &[("web", &img)]);
    let script = format!(
        r#"
import errno
uri = "{uri}"
def err(f):
    try:
        f()
    except nbd.Error as e:
        return e.errnum
    return 0
for structured in (True, False):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    if structured:
        h.add_meta_context("base:allocation")
    h.connect_uri(uri)
    assert h.get_structured_replies_negotiated() == structured
    h.set_strict_mode(0)
    size = h.get_size()
    assert size == 64 * 1024 * 1024
    # Out of range: reads EINVAL, writes ENOSPC; the connection goes on.
    assert err(lambda: h.pread(512, size - 256)) == errno.EINVAL, structured
    assert err(lambda: h.pwrite(b"x" * 512, size - 256)) == errno.ENOSPC
    assert err(lambda: h.zero(512, size - 256)) == errno.ENOSPC
    assert err(lambda: h.trim(512, size - 256)) == errno.EINVAL
    # A zero length, and FLUSH with a range.
    assert err(lambda: h.pread(0, 0)) == errno.EINVAL
    # Zeroes that cannot be fast (they must stay allocated) say so.
    e = err(lambda: h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FAST_ZERO))
    assert e == errno.ENOTSUP, e
    # An unknown flag.
    assert err(lambda: h.pread(512, 0, 1 << 9)) == errno.EINVAL
    # Larger than the maximum payload.
    e = err(lambda: h.pread(33 * 1024 * 1024, 0))
    assert e == (errno.EOVERFLOW if structured else errno.EINVAL), e
    # FUA, zeroes, trim, cache and flush work and read back.
    h.pwrite(b"\xee" * 8192, 65536, nbd.CMD_FLAG_FUA)
    assert h.pread(8192, 65536) == b"\xee" * 8192
    h.zero(4096, 65536, nbd.CMD_FLAG_NO_HOLE)
    assert h.pread(8192, 65536) == b"\0" * 4096 + b"\xee" * 4096
    h.trim(4096, 65536 + 4096)
    h.cache(65536, 0)
    h.flush()
    if structured:
        assert h.can_meta_context("base:allocation")
        seen = []
        def cb(metacontext, offset, entries, error):
            seen.append((metacontext, offset, list(entries)))
        h.block_status(1024 * 1024, 1024 * 1024, cb)
        ctx, off, entries = seen[0]
        assert ctx == "base:allocation" and off == 1024 * 1024, seen
        assert entries[0] == 1024 * 1024 and entries[1] == 3, seen
        seen.clear()
        h.block_status(2 * 1024 * 1024, 0, cb, nbd.CMD_FLAG_REQ_ONE)
        assert len(seen[0][2]) == 2, seen
        # DF: one chunk for the whole read.
        assert h.pread(65536, 0, nbd.CMD_FLAG_DF) == b"\x10" * 65536
    h.shutdown()
print("ok")
"#,
        uri = s.uri("web")
    );
    assert_eq!(nbdsh(&script).trim(), "ok");
}

#[test]
fn handshake_answers_unknown_and_malformed_options_and_goes_on() {
    let dir = scratch();
    let img = image(dir.path(), "web.img", 4 * MIB);
    let s = Server::start("127.0.0.1:0", &[("web", &img), ("db", &img)]);
    let mut c = Raw::connect(tcp(&s), true);
    // Unknown, and known but unsupported (STARTTLS, EXTENDED_HEADERS): ERR_UNSUP.
    for opt in [99, 5, 11] {
        c.option(opt, b"ignored data");
        let (o, kind, msg) = c.reply();
        assert_eq!((o, kind), (opt, 0x8000_0001));
        assert!(String::from_utf8(msg).unwrap().contains("not supported"));
    }
    // An option too large to read is skipped and answered ERR_TOO_BIG.
    c.option(99, &vec![0u8; 100 * 1024]);
    assert_eq!(c.reply().1, 0x8000_0009);
    // Malformed data: ERR_INVALID with the reason.
    c.option(3, b"x");
    assert_eq!(c.reply().1, 0x8000_0003);
    c.option(7, &[0, 0, 0, 9, b'w']);
    let (_, kind, msg) = c.reply();
    assert_eq!(kind, 0x8000_0003);
    assert!(String::from_utf8(msg).unwrap().contains("needs"));
    // Metadata contexts need structured replies; structured replies only once.
    let mut meta = vec![0, 0, 0, 3];
    meta.extend_from_slice(b"web");
    meta.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 15]);
    meta.extend_from_slice(b"base:allocation");
    c.option(10, &meta);
    assert_eq!(c.reply().1, 0x8000_0003);
    c.option(8, &[]);
    assert_eq!(c.reply().1, 1);
    c.option(8, &[]);
    assert_eq!(c.reply().1, 0x8000_0003);
    c.option(10, &meta);
    let (_, kind, data) = c.reply();
    assert_eq!(kind, 4);
    assert_eq!(&data[4..], b"base:allocation");
    assert_eq!(c.reply().1, 1);
    // LIST names both exports.
    c.option(3, &[]);
    let mut names = vec![];
    loop {
        let (_, kind, data) = c.reply();
        if kind == 1 {
            break;
        }
        assert_eq!(kind, 2);
        let n = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        names.push(String::from_utf8(data[4..4 + n].to_vec()).unwrap());
    }
    assert_eq!(names, ["web", "db"]);
    // INFO for an unknown export: ERR_UNKNOWN naming what exists.
    let mut info = vec![0, 0, 0, 4];
    info.extend_from_slice(b"nope");
    info.extend_from_slice(&[0, 0]);
    c.option(6, &info);
    let (_, kind, msg) = c.reply();
    assert_eq!(kind, 0x8000_0006);
    assert_eq!(
        String::from_utf8(msg).unwrap(),
        "no export named \"nope\"; exports: web, db"
    );
    // After all that, GO still works and offers DF (structured replies are on).
    let flags = c.go("web");
    assert_eq!(flags & 1, 1, "HAS_FLAGS");
    assert_eq!(flags & (1 << 7), 1 << 7, "DF");
    assert_eq!(flags & (1 << 8), 1 << 8, "CAN_MULTI_CONN");

    // ABORT is acknowledged, then the server closes.
    let mut c = Raw::connect(tcp(&s), true);
    c.option(2, &[]);
    assert_eq!(c.reply().1, 1);
    assert!(c.closed());
    // EXPORT_NAME without NO_ZEROES: size, flags and 124 zeros; DF is not offered
    // without structured replies.
    let mut c = Raw::connect(tcp(&s), false);
    c.option(1, b"db");
    let mut b = [0u8; 134];
    c.0.read_exact(&mut b).unwrap();
    assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), 4 * MIB);
    assert_eq!(u16::from_be_bytes([b[8], b[9]]) & (1 << 7), 0);
    assert!(b[10..].iter().all(|&z| z == 0));
    // EXPORT_NAME of an unknown export: the spec's answer is to close.
    let mut c = Raw::connect(tcp(&s), true);
    c.option(1, b"nope");
    assert!(c.closed());
}

#[test]
fn bad_requests_get_errors_and_the_connection_goes_on_until_the_framing_breaks() {
    let dir = scratch();
    let img = image(dir.path(), "web.img", 64 * MIB);
    let s = Server::start("127.0.0.1:0", &[("web", &img)]);
    let mut c = Raw::connect(tcp(&s), true);
    c.go("web");
    // Unknown command: EINVAL.
    c.request(0, 42, 1, 0, 512);
    assert_eq!(c.simple_reply(), (22, 1));
    // A write beyond the end: its payload is read and dropped, ENOSPC.
    c.request(0, 1, 2, 64 * MIB - 256, 512);
    c.0.write_all(&[0x77; 512]).unwrap();
    assert_eq!(c.simple_reply(), (28, 2));
    // A write larger than the maximum payload, within what is skipped: EINVAL.
    let big = (33 * MIB) as u32;
    c.request(0, 1, 3, 0, big);
    c.0.write_all(&vec![0x66; big as usize]).unwrap();
    assert_eq!(c.simple_reply(), (22, 3));
    assert!(
        read_at(&img, 0, 65536).iter().all(|&b| b == 0x10),
        "refused writes wrote nothing"
    );
    // Many requests in flight at once: every one is answered, by cookie.
    for i in 0..64u64 {
        c.request(0, 1, 100 + i, i * 4096, 4096);
        c.0.write_all(&[i as u8; 4096]).unwrap();
    }
    c.request(0, 3, 99, 0, 0);
    let mut cookies: Vec<u64> = (0..65)
        .map(|_| c.simple_reply())
        .map(|(e, k)| {
            assert_eq!(e, 0);
            k
        })
        .collect();
    cookies.sort();
    assert_eq!(cookies, (99..164).collect::<Vec<_>>());
    assert_eq!(read_at(&img, 63 * 4096, 4096), vec![63u8; 4096]);
    // A bad magic ends the connection.
    c.0.write_all(&[0u8; 28]).unwrap();
    assert!(c.closed());
    // So does a write too large to skip, and DISC.
    let mut c = Raw::connect(tcp(&s), true);
    c.go("web");
    c.request(0, 1, 5, 0, u32::MAX);
    assert!(c.closed());
    let mut c = Raw::connect(tcp(&s), true);
    c.go("web");
    c.request(0, 2, 6, 0, 0);
    assert!(c.closed());
}

#[test]
fn stopping_answers_what_was_read_and_closes_every_connection() {
    let dir = scratch();
    let img = image(dir.path(), "web.img", 4 * MIB);
    let s = Server::start("127.0.0.1:0", &[("web", &img)]);
    let mut idle = Raw::connect(tcp(&s), true);
    idle.go("web");
    let mut busy = Raw::connect(tcp(&s), true);
    busy.go("web");
    for i in 0..32u64 {
        busy.request(0, 1, i, i * 65536, 65536);
        busy.0.write_all(&[0xc0 | i as u8; 65536]).unwrap();
    }
    // A client in the middle of the handshake is closed too.
    let mut half = Raw::connect(tcp(&s), true);
    s.stop();
    assert!(idle.closed());
    assert!(half.closed());
    // Every write the server answered is in the file.
    let mut answered = 0;
    let mut h = [0u8; 16];
    while busy.0.read_exact(&mut h).is_ok() {
        let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
        assert_eq!(&h[4..8], &[0, 0, 0, 0]);
        assert_eq!(
            read_at(&img, cookie * 65536, 65536),
            vec![0xc0 | cookie as u8; 65536]
        );
        answered += 1;
    }
    assert!(answered > 0);
}
