//! An NBD server of the library's own, serving image files in this process, and the
//! real clients the tests drive it with (qemu-io, qemu-img, nbdinfo, nbdcopy, nbdsh,
//! fio: the packages `make test` installs).
use cascade::nbd::{self, ExportEntry, Exports, FileExport, ListenAddr, Listener};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use tokio::sync::watch;

pub struct Server {
    pub addr: ListenAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Serves each `(name, image)` as a `FileExport` on `addr` (port 0 picks one).
    pub fn start(addr: &str, images: &[(&str, &Path)]) -> Server {
        let exports = images
            .iter()
            .map(|(name, path)| ExportEntry {
                name: name.to_string(),
                description: format!("test image {}", path.display()),
                export: Arc::new(FileExport::open(path, false).unwrap()),
            })
            .collect();
        let exports = Arc::new(Exports::new(exports));
        let addr: ListenAddr = addr.parse().unwrap();
        let (stop, stopped) = watch::channel(false);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = Listener::bind(&addr).await?;
                tx.send(l.local_addr()?).unwrap();
                nbd::serve(l, exports, stopped).await
            })
        });
        let addr = rx.recv().expect("the server did not start");
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn uri(&self, export: &str) -> String {
        nbd::uri(&self.addr, export)
    }

    /// Stops the server and waits until every connection ended.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Runs a client; panics with its output unless it succeeds.
pub fn client(cmd: &mut Command) -> Output {
    let what = super::host::describe(cmd);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run `{what}` ({e}); `make test` installs the NBD clients")
    });
    assert!(
        out.status.success(),
        "`{what}` failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `qemu-io -f raw` with each of `cmds` as a `-c`, on `uri`.
pub fn qemu_io(uri: &str, cmds: &[&str]) -> String {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c.arg(uri);
    String::from_utf8(client(&mut c).stdout).unwrap()
}

/// Runs an nbdsh script (python3-libnbd: `nbd` is imported). nbdsh runs the first
/// `python3` on `PATH`; Debian's, the one the package installs the module for, is
/// put first.
pub fn nbdsh(script: &str) -> String {
    let path = format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default());
    let out = client(Command::new("nbdsh").env("PATH", path).args(["-c", script]));
    String::from_utf8(out.stdout).unwrap()
}

/// A sparse image of `size` bytes with a pattern written at a few places.
pub fn image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    for (i, at) in [0u64, size / 3, size - 65536].iter().enumerate() {
        f.write_all_at(&vec![0x10 + i as u8; 65536], *at).unwrap();
    }
    p
}

/// A client that speaks the protocol byte by byte, to send what real clients never
/// send.
pub struct Raw(pub TcpStream);

impl Raw {
    /// Connects and reads the greeting; `no_zeroes` is the client flag to send.
    pub fn connect(addr: std::net::SocketAddr, no_zeroes: bool) -> Raw {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        // Requests are small writes that wait for replies: no Nagle delay.
        c.set_nodelay(true).unwrap();
        let mut greeting = [0u8; 18];
        c.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT");
        assert_eq!(&greeting[16..], &[0, 3]);
        c.write_all(&[0, 0, 0, if no_zeroes { 3 } else { 1 }])
            .unwrap();
        Raw(c)
    }

    pub fn option(&mut self, opt: u32, data: &[u8]) {
        let mut b = b"IHAVEOPT".to_vec();
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.0.write_all(&b).unwrap();
    }

    /// One option reply: (option, type, data).
    pub fn reply(&mut self) -> (u32, u32, Vec<u8>) {
        let mut h = [0u8; 20];
        self.0.read_exact(&mut h).unwrap();
        assert_eq!(&h[..8], &0x0003_e889_0455_65a9u64.to_be_bytes());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut data = vec![0u8; len as usize];
        self.0.read_exact(&mut data).unwrap();
        let word = |r: std::ops::Range<usize>| u32::from_be_bytes(h[r].try_into().unwrap());
        (word(8..12), word(12..16), data)
    }

    /// OPT_GO for `name`; the transmission flags.
    pub fn go(&mut self, name: &str) -> u16 {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&[0, 0]);
        self.option(7, &d);
        let mut flags = None;
        loop {
            let (opt, kind, data) = self.reply();
            assert_eq!(opt, 7);
            match kind {
                1 => break,
                3 if data[..2] == [0, 0] => flags = Some(u16::from_be_bytes([data[10], data[11]])),
                3 => {}
                other => panic!("GO answered {other:#x}: {}", String::from_utf8_lossy(&data)),
            }
        }
        flags.expect("INFO_EXPORT")
    }

    pub fn request(&mut self, flags: u16, cmd: u16, cookie: u64, offset: u64, len: u32) {
        let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&cmd.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        self.0.write_all(&b).unwrap();
    }

    /// A simple reply: (error, cookie).
    pub fn simple_reply(&mut self) -> (u32, u64) {
        let mut h = [0u8; 16];
        self.0.read_exact(&mut h).unwrap();
        assert_eq!(&h[..4], &0x6744_6698u32.to_be_bytes());
        (
            u32::from_be_bytes(h[4..8].try_into().unwrap()),
            u64::from_be_bytes(h[8..16].try_into().unwrap()),
        )
    }

    /// True when the server closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0))
    }
}

impl Raw {
    /// Connects to `export` and goes to transmission (simple replies).
    pub fn open(addr: std::net::SocketAddr, export: &str) -> Raw {
        let mut c = Raw::connect(addr, true);
        c.go(export);
        c
    }

    /// WRITE `data` at `offset` and wait for its reply, which must be a success.
    pub fn write(&mut self, cookie: u64, offset: u64, data: &[u8]) {
        self.request(0, 1, cookie, offset, data.len() as u32);
        self.0.write_all(data).unwrap();
        assert_eq!(self.simple_reply(), (0, cookie));
    }

    /// WRITE_ZEROES (cmd 6) or TRIM (cmd 4) and wait for its reply.
    pub fn zero(&mut self, cmd: u16, cookie: u64, offset: u64, len: u32) {
        self.request(0, cmd, cookie, offset, len);
        assert_eq!(self.simple_reply(), (0, cookie));
    }

    /// DISC and wait for the server to close.
    pub fn disconnect(mut self) {
        self.request(0, 2, 0, 0, 0);
        assert!(self.closed());
    }
}
