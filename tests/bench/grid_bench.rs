//! For `make bench` (tests/bench/grid.sh): grid bookmark latency, measured in the
//! library, next to the round trip of one conditional put to the same store.
//!
//!   grid-bench CONFIG BOOKMARKS PREFIX [EVERY_MS]
//!
//! Takes BOOKMARKS bookmarks (PREFIX-0, PREFIX-1, …) of the grid of CONFIG, EVERY_MS
//! apart (default: back to back), and as many conditional creates; prints one JSON
//! line: the percentiles of both, in milliseconds, and how many were complete.
use std::time::Duration;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let [_, config, n, prefix, rest @ ..] = a.as_slice() else {
        anyhow::bail!("usage: grid-bench CONFIG BOOKMARKS PREFIX [EVERY_MS]");
    };
    let every = rest
        .first()
        .map(|s| s.parse::<u64>())
        .transpose()?
        .map(Duration::from_millis);
    let cfg = cascade::config::Config::load(std::path::Path::new(config))?;
    let grid = cascade::grid::Grid::open(&cfg, None)?;
    let n: usize = n.parse()?;
    let (mut took, mut held, mut puts) = (Vec::new(), Vec::new(), Vec::new());
    let mut complete = 0;
    for i in 0..n {
        let o = cascade::grid::bookmark::bookmark(&grid.asker(), &format!("{prefix}-{i}")).await?;
        complete += o.complete as usize;
        took.push(o.total_ms);
        held.push(o.hold_ms);
        puts.push(grid.counter.probe_put().await?.as_secs_f64() * 1e3);
        if let Some(e) = every {
            tokio::time::sleep(e).await;
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "bookmarks": n, "complete": complete,
            "p50_ms": pct(&mut took, 0.5), "p99_ms": pct(&mut took, 0.99),
            "hold_p99_ms": pct(&mut held, 0.99),
            "put_p50_ms": pct(&mut puts, 0.5), "put_p99_ms": pct(&mut puts, 0.99),
        })
    );
    Ok(())
}
