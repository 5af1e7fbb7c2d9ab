//! An NBD server of the library's own, serving image files in this process, and the
//! real clients the tests drive it with (qemu-io, qemu-img, nbdinfo, nbdcopy, nbdsh,
//! fio: the packages `make test` installs).
use cascade::nbd::{self, ExportEntry, Exports, FileExport, ListenAddr, Listener};
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
