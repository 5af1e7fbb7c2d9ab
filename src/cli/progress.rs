//! Draws the library's [`Progress`] on stderr, as `--progress` says: a bar for a person
//! at a terminal, JSON lines for a program that supervises cascade, or nothing.
//! Standard output is left to each command's report.
use cascade::progress::{NoProgress, Progress};
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How to show the progress of long work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, nothing otherwise.
    #[default]
    Auto,
    /// Always a bar: phase, bytes done of the total, rate and time left.
    Bar,
    /// One JSON object a line, at most about one a second and a last one as each
    /// phase ends: {"progress":PHASE,"done_bytes":N,"total_bytes":M,"final":BOOL}.
    Json,
    /// Nothing.
    None,
}

static MODE: OnceLock<ProgressMode> = OnceLock::new();

/// Sets the mode from the command line, once, before any verb runs.
pub fn set_mode(mode: ProgressMode) {
    let _ = MODE.set(mode);
}

/// The progress observer for this run's long work.
pub fn observer() -> Box<dyn Progress> {
    let mode = MODE.get().copied().unwrap_or_default();
    match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => Box::new(Bar::default()),
        ProgressMode::Bar => Box::new(Bar::default()),
        ProgressMode::Json => Box::new(JsonLines::new(Box::new(std::io::stderr()))),
        ProgressMode::Auto | ProgressMode::None => Box::new(NoProgress),
    }
}

/// An indicatif bar on stderr, one per phase; a finished phase's bar stays on its line.
#[derive(Default)]
struct Bar(Mutex<Option<indicatif::ProgressBar>>);

impl Bar {
    fn with(&self, f: impl FnOnce(&indicatif::ProgressBar)) {
        if let Some(bar) = self.0.lock().expect("progress lock").as_ref() {
            f(bar)
        }
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total_bytes: u64) {
        let style = indicatif::ProgressStyle::with_template(
            "{msg:>8} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total_bytes),
            indicatif::ProgressDrawTarget::stderr(),
        )
        .with_style(style)
        .with_message(phase.to_string());
        // A finished phase's bar was taken at its finish; one still here was cut short.
        if let Some(old) = self.0.lock().expect("progress lock").replace(bar) {
            cut(&old);
        }
    }
    fn add_total(&self, bytes: u64) {
        self.with(|b| b.inc_length(bytes))
    }
    fn inc(&self, bytes: u64) {
        self.with(|b| b.inc(bytes))
    }
    fn finish(&self) {
        if let Some(bar) = self.0.lock().expect("progress lock").take() {
            bar.finish();
            end_line(&bar);
        }
    }
}

/// Leaves an unfinished bar where it stopped.
fn cut(bar: &indicatif::ProgressBar) {
    bar.abandon();
    end_line(bar);
}

/// indicatif leaves the cursor at the end of a bar's line; the next phase's bar
/// would overwrite a finished one and the report would start beside it.
fn end_line(bar: &indicatif::ProgressBar) {
    if !bar.is_hidden() {
        eprintln!();
    }
}

impl Drop for Bar {
    /// Work that failed leaves its bar where it stopped, so the error prints below it.
    fn drop(&mut self) {
        self.with(cut)
    }
}

/// How often JSON lines are written at most, besides the last one of a phase.
const JSON_EVERY: Duration = Duration::from_secs(1);

struct JsonLines(Mutex<JsonState>);

struct JsonState {
    out: Box<dyn Write + Send>,
    phase: String,
    done: u64,
    total: u64,
    /// When the last line was written; None before the phase starts.
    written: Option<Instant>,
}

/// One JSON line, its fields in this order.
#[derive(serde::Serialize)]
struct Line<'a> {
    progress: &'a str,
    done_bytes: u64,
    total_bytes: u64,
    r#final: bool,
}

impl JsonState {
    fn write(&mut self, last: bool) {
        let line = serde_json::to_string(&Line {
            progress: &self.phase,
            done_bytes: self.done,
            total_bytes: self.total,
            r#final: last,
        })
        .expect("progress serialises");
        // Progress must never fail the work: a closed stderr only loses the lines.
        let _ = writeln!(self.out, "{line}");
        self.written = Some(Instant::now());
    }
}

impl JsonLines {
    fn new(out: Box<dyn Write + Send>) -> JsonLines {
        JsonLines(Mutex::new(JsonState {
            out,
            phase: String::new(),
            done: 0,
            total: 0,
            written: None,
        }))
    }

    fn update(&self, f: impl FnOnce(&mut JsonState)) {
        let mut s = self.0.lock().expect("progress lock");
        f(&mut s);
        if s.written.is_some_and(|t| t.elapsed() >= JSON_EVERY) {
            s.write(false);
        }
    }
}

impl Progress for JsonLines {
    fn start(&self, phase: &str, total_bytes: u64) {
        let mut s = self.0.lock().expect("progress lock");
        s.phase = phase.to_string();
        s.done = 0;
        s.total = total_bytes;
        // The first line comes a second in, or as the phase ends.
        s.written = Some(Instant::now());
    }
    fn add_total(&self, bytes: u64) {
        self.update(|s| s.total += bytes)
    }
    fn inc(&self, bytes: u64) {
        self.update(|s| s.done += bytes)
    }
    fn finish(&self) {
        let mut s = self.0.lock().expect("progress lock");
        if s.written.is_some() {
            s.write(true);
            s.written = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// What the JSON lines wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(out: &Shared) -> Vec<serde_json::Value> {
        String::from_utf8(out.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn json_lines_are_rate_limited_and_end_each_phase() {
        let out = Shared::default();
        let p = JsonLines::new(Box::new(out.clone()));
        p.start("replay", 3000);
        for _ in 0..1000 {
            p.inc(1);
        }
        assert!(
            lines(&out).is_empty(),
            "a thousand updates in no time write nothing"
        );
        std::thread::sleep(JSON_EVERY + Duration::from_millis(50));
        p.inc(1000);
        p.inc(1000);
        p.add_total(10);
        p.inc(10);
        p.finish();
        p.finish();
        let l = lines(&out);
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(
            l[0],
            serde_json::json!({"progress": "replay", "done_bytes": 2000, "total_bytes": 3000, "final": false})
        );
        assert_eq!(
            l[1],
            serde_json::json!({"progress": "replay", "done_bytes": 3010, "total_bytes": 3010, "final": true})
        );
        // A new phase starts from zero.
        p.start("check", 5);
        p.inc(5);
        p.finish();
        assert_eq!(lines(&out)[2]["done_bytes"], 5);
        assert_eq!(lines(&out)[2]["progress"], "check");
    }
}
