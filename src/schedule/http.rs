//! The metrics endpoint: just enough HTTP/1.1 to answer `GET /metrics`, one request
//! per connection, so the daemon needs no web framework for one read-only page.
use super::metrics::Metrics;
use crate::config::Config;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Requests larger than this are not metrics scrapes.
const MAX_REQUEST: usize = 8192;
const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    config: watch::Receiver<Arc<Config>>,
) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (m, c) = (metrics.clone(), config.borrow().clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(TIMEOUT, answer(conn, &m, c)).await;
        });
    }
}

async fn answer(mut conn: TcpStream, metrics: &Metrics, cfg: Arc<Config>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            // Journals and cursors as they are now, so lag shows while an export hangs
            // and for cycles made by the CLI (reading them blocks: off the workers).
            let reports = tokio::task::spawn_blocking(move || {
                cfg.consistency_groups
                    .iter()
                    .map(|cg| super::report::group_report(&cfg, cg))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            reports.iter().for_each(|r| metrics.refresh(r));
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render(),
            )
        }
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "cascade serves /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        conn.write_all(body.as_bytes()).await?;
    }
    conn.shutdown().await
}
