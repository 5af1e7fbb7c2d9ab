//! thin_delta's XML, read as it is printed: one line at a time from the command's
//! stdout, each `different`/`right_only`/`left_only` range merged into runs and handed
//! on, so memory stays a line and a run whatever the size of the LV or the number of
//! its changed ranges (a fragmented multi-TiB LV prints gigabytes).
use crate::diff::{Change, ChangeKind, RunBuilder};
use std::collections::VecDeque;
use std::io::BufRead;

/// Longer lines are not thin_delta's: refused rather than buffered.
const MAX_LINE: u64 = 64 << 10;

/// Changed ranges from thin_delta's XML: `different` and `right_only` blocks hold new
/// data, `left_only` blocks are unmapped now and read as zeros, `same` is skipped.
/// Blocks are `data_block_size` sectors of 512 bytes; ranges are clipped to `size`.
/// An error is a description of what is wrong with the text.
pub(super) struct DeltaRuns<R> {
    input: R,
    size: u64,
    line: Vec<u8>,
    block: Option<u64>,
    runs: RunBuilder,
    ready: VecDeque<Change>,
    done: bool,
}

impl<R: BufRead> DeltaRuns<R> {
    pub fn new(input: R, size: u64) -> DeltaRuns<R> {
        DeltaRuns {
            input,
            size,
            line: Vec::new(),
            block: None,
            runs: RunBuilder::default(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    /// Gives the input back (to learn how the command that printed it ended).
    pub fn into_inner(self) -> R {
        self.input
    }

    /// Reads one line and queues the runs it closes; false at the end of the input.
    fn step(&mut self) -> Result<bool, String> {
        self.line.clear();
        let n = std::io::Read::take(&mut self.input, MAX_LINE)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| format!("cannot read: {e}"))?;
        if n == 0 {
            return Ok(false);
        }
        if n as u64 == MAX_LINE && self.line.last() != Some(&b'\n') {
            return Err(format!("a line longer than {MAX_LINE} bytes"));
        }
        let line =
            std::str::from_utf8(&self.line).map_err(|_| "text that is not UTF-8".to_string())?;
        for tag in line.split('<').map(str::trim).filter(|t| !t.is_empty()) {
            let kind = match tag.split_whitespace().next().unwrap_or("") {
                "superblock" => {
                    let bs =
                        attr(tag, "data_block_size").ok_or("superblock without data_block_size")?;
                    self.block = Some(bs * 512);
                    continue;
                }
                "different" | "right_only" => ChangeKind::Data,
                "left_only" => ChangeKind::Zero,
                _ => continue,
            };
            let bs = self.block.ok_or("a range before the superblock")?;
            let (begin, length) = attr(tag, "begin")
                .zip(attr(tag, "length"))
                .ok_or_else(|| format!("range without begin and length: <{tag}"))?;
            let offset = begin
                .checked_mul(bs)
                .ok_or_else(|| format!("range past 2^64 bytes: <{tag}"))?;
            if offset >= self.size {
                continue;
            }
            let len = length.saturating_mul(bs).min(self.size - offset);
            self.ready.extend(self.runs.push(offset, len, kind));
        }
        Ok(true)
    }
}

fn attr(tag: &str, name: &str) -> Option<u64> {
    let key = format!("{name}=\"");
    let at = tag.find(&key)? + key.len();
    tag[at..].split('"').next()?.parse().ok()
}

impl<R: BufRead> Iterator for DeltaRuns<R> {
    type Item = Result<Change, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(c) = self.ready.pop_front() {
                return Some(Ok(c));
            }
            if self.done {
                return None;
            }
            match self.step() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    self.ready.extend(self.runs.finish());
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str, size: u64) -> Result<Vec<(u64, u64, ChangeKind)>, String> {
        DeltaRuns::new(xml.as_bytes(), size)
            .map(|c| c.map(|c| (c.offset, c.len, c.kind)))
            .collect()
    }

    #[test]
    fn thin_delta_xml_becomes_byte_ranges() {
        let xml = r#"<superblock uuid="" time="1" transaction="2" flags="0" version="2" data_block_size="128" nr_data_blocks="4096">
  <diff left="1" right="2">
    <same begin="0" length="4"/>
    <different begin="4" length="2"/>
    <right_only begin="6" length="1"/>
    <same begin="7" length="3"/>
    <left_only begin="10" length="2"/> <right_only begin="100" length="50"/>
  </diff>
</superblock>"#;
        let k = 64 << 10;
        let want = [
            (4 * k, 3 * k, ChangeKind::Data),
            (10 * k, 2 * k, ChangeKind::Zero),
            (100 * k, 20 * k, ChangeKind::Data),
        ];
        assert_eq!(parse(xml, 120 * k).unwrap(), want);
        assert!(parse("<different begin=\"1\" length=\"1\"/>", 1 << 30).is_err());
        let long = format!(
            "<superblock data_block_size=\"128\">\n<same begin=\"{}\"/>\n",
            "9".repeat(70_000)
        );
        assert!(parse(&long, 1 << 30).unwrap_err().contains("longer than"));
    }

    /// Mapped blocks of each thin device in the generated metadata: every one its
    /// own range, every other one changed, spread over 4 TiB of 64 KiB blocks.
    const MAPPED: u64 = 150_000;
    const BLOCK: u64 = 64 << 10;
    const SIZE: u64 = 4 << 40;
    const CHILD: &str = "CASCADE_THIN_DELTA_METADATA";

    /// thin_restore's input: devices 1 and 2 map the same scattered blocks, and
    /// device 2 maps every odd one of them elsewhere (a snapshot written since).
    fn fragmented_metadata_xml(path: &std::path::Path) {
        use std::io::Write;
        let stride = SIZE / BLOCK / MAPPED;
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        writeln!(f, r#"<superblock uuid="" time="1" transaction="2" flags="0" version="2" data_block_size="128" nr_data_blocks="{}">"#, 2 * MAPPED).unwrap();
        for dev in [1, 2] {
            writeln!(f, r#"<device dev_id="{dev}" mapped_blocks="{MAPPED}" transaction="0" creation_time="0" snap_time="1">"#).unwrap();
            for i in 0..MAPPED {
                let data = if dev == 2 && i % 2 == 1 {
                    MAPPED + i
                } else {
                    i
                };
                writeln!(
                    f,
                    r#"<single_mapping origin_block="{}" data_block="{data}" time="0"/>"#,
                    i * stride
                )
                .unwrap();
            }
            writeln!(f, "</device>").unwrap();
        }
        writeln!(f, "</superblock>").unwrap();
    }

    fn status_kib(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The real thin_delta on metadata made by thin_restore (no VM needed), parsed as
    /// it prints, in a process of its own so the peak RSS is this parse's alone.
    #[test]
    fn a_large_delta_streams_in_bounded_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (xml, bin) = (dir.path().join("meta.xml"), dir.path().join("meta.bin"));
        fragmented_metadata_xml(&xml);
        std::fs::File::create(&bin)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        let argv = |a: &[&std::ffi::OsStr]| {
            a.iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        crate::command::run(
            &argv(&[
                "thin_restore".as_ref(),
                "-i".as_ref(),
                xml.as_os_str(),
                "-o".as_ref(),
                bin.as_os_str(),
            ]),
            std::time::Duration::from_secs(300),
        )
        .expect("thin_restore (thin-provisioning-tools; `make vm-deps` installs it)");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "volume::lvm_thin::delta::tests::large_delta_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, &bin)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let growth: u64 = text
            .lines()
            .find_map(|l| l.split("peak RSS growth KiB: ").nth(1))
            .unwrap_or_else(|| panic!("the child reports its peak: {text}"))
            .trim()
            .parse()
            .unwrap();
        eprintln!(
            "thin_delta of {MAPPED} scattered blocks over 4 TiB: peak RSS growth {growth} KiB"
        );
        // The output is megabytes; a parse that holds it (or its ranges) shows here.
        assert!(growth < 2048, "peak RSS grew by {growth} KiB while parsing");
    }

    #[test]
    #[ignore = "run by a_large_delta_streams_in_bounded_memory, in a process of its own"]
    fn large_delta_child() {
        let bin = std::env::var(CHILD).expect("set by the parent test");
        let argv: Vec<String> = ["thin_delta", "--snap1", "1", "--snap2", "2", &bin]
            .map(String::from)
            .to_vec();
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let before = status_kib("VmRSS:");
        let stream =
            crate::command::stream(&argv, &[], std::time::Duration::from_secs(300)).unwrap();
        let mut runs = DeltaRuns::new(std::io::BufReader::new(stream), SIZE);
        let stride = SIZE / BLOCK / MAPPED;
        let mut i = 1;
        for c in runs.by_ref() {
            let c = c.unwrap();
            assert_eq!(
                (c.offset, c.len, c.kind),
                (i * stride * BLOCK, BLOCK, ChangeKind::Data)
            );
            i += 2;
        }
        assert_eq!(i, MAPPED + 1, "every changed block, once");
        runs.into_inner().into_inner().finish(None).unwrap();
        println!(
            "peak RSS growth KiB: {}",
            status_kib("VmHWM:").saturating_sub(before)
        );
    }
}
