//! Starting a test server (an emulator) on a free loopback port: the one spawn-and-wait
//! loop the Azurite, GCS and moto harnesses share.
use super::s3::{free_port, tail};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Spawns `command(port)` with its output in `log`, on a free port, until it accepts
/// connections; a free port can be taken by another process before the server binds
/// it, so up to 5 ports are tried, each for `timeout`. Panics naming `what` and the
/// log's tail when none works.
pub fn spawn_on_free_port(
    what: &str,
    log: &Path,
    timeout: Duration,
    command: impl Fn(u16) -> Command,
) -> (Child, u16) {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let out = std::fs::File::create(log).unwrap();
        let mut child = command(port)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last = format!("exited with {status}: {}", tail(log));
                break;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return (child, port);
            }
            if Instant::now() >= deadline {
                last = format!("not accepting on {addr} after {timeout:?}: {}", tail(log));
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("{what} did not start: {last}");
}
