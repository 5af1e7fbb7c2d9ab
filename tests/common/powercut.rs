//! What the power-cut tests share once a dm-log-writes log is recorded (the log
//! itself: [`super::logwrites`]): a work image rebuilt for each state, loop devices
//! over its regions that stay attached while the image changes under them, the
//! mounts of its file systems, and a loop to keep a neighbour busy while the
//! workload runs.
#![allow(dead_code)]

use super::logwrites::State;
use super::loopdev::LoopDev;
use super::vm::{dm_reload, sh};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `CASCADE_CRASH_*` settings of `make crash`: a number, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// At most `want` of `states`, evenly spread over them (in their order), so every
/// phase of the run is cut somewhere.
pub fn even_spread(states: Vec<State>, want: usize) -> Vec<State> {
    if states.len() <= want {
        return states;
    }
    let step = states.len() as f64 / want.max(1) as f64;
    (0..want)
        .map(|k| states[(k as f64 * step) as usize].clone())
        .collect()
}

/// Where the time of the states goes, to keep `make test` quick.
#[derive(Default)]
pub struct Timings {
    at: Option<std::time::Instant>,
    pub total: BTreeMap<&'static str, std::time::Duration>,
}

impl Timings {
    pub fn lap(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        if let Some(at) = self.at {
            *self.total.entry(phase).or_default() += now - at;
        }
        self.at = Some(now);
    }
}

/// Keeps running `body` on a thread until [`Background::stop`].
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Background {
    pub fn start(body: impl Fn() + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                body();
                n += 1;
            }
            n
        });
        Background {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the loop; how many times it ran.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Loop devices over regions `(offset, size)` of one image, attached once: each
/// state rewrites the image under them, and [`Views::forget`] drops their cached
/// blocks of the previous one.
pub struct Views {
    pub devices: Vec<String>,
}

impl Views {
    pub fn attach(image: &Path, regions: &[(u64, u64)]) -> Views {
        let devices = regions
            .iter()
            .map(|(offset, size)| {
                sh(&format!(
                    "losetup -f --show -o {offset} --sizelimit {size} {}",
                    image.display()
                ))
                .trim()
                .to_string()
            })
            .collect();
        Views { devices }
    }

    /// Drops every device's cached blocks, which belong to the previous state.
    pub fn forget(&self) {
        const BLKFLSBUF: libc::c_ulong = 0x1261;
        for dev in &self.devices {
            let f = File::open(dev).unwrap();
            // SAFETY: BLKFLSBUF takes no argument.
            let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), BLKFLSBUF, 0) };
            assert_eq!(
                rc,
                0,
                "BLKFLSBUF {dev}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

impl Drop for Views {
    fn drop(&mut self) {
        let _ = Command::new("losetup")
            .arg("-d")
            .args(&self.devices)
            .status();
    }
}

fn c(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap()
}

/// Mounts the ext4 on `dev` at `dir`; the error names both.
pub fn mount(dev: &str, dir: &Path, options: &str) -> Result<(), String> {
    let (src, dst) = (c(dev), c(dir.to_str().unwrap()));
    let (fs, data) = (c("ext4"), c(options));
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fs.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "{dev} does not mount on {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// Unmounts `dir`, if something is mounted there.
pub fn umount(dir: &Path) {
    let dst = c(dir.to_str().unwrap());
    // SAFETY: a valid NUL-terminated string.
    if unsafe { libc::umount2(dst.as_ptr(), 0) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            panic!("umount {}: {e}", dir.display());
        }
    }
}

/// Makes `work` a copy of `base`, copying only the ranges that hold data.
pub fn copy_sparse(base: &File, work: &File) {
    use cascade::sys::{next_data, next_hole};
    let size = base.metadata().unwrap().len();
    work.set_len(0).unwrap();
    work.set_len(size).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while let Some(start) = next_data(base, at).unwrap() {
        let end = next_hole(base, start).unwrap().min(size);
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(buf.len() as u64) as usize;
            base.read_exact_at(&mut buf[..n], pos).unwrap();
            work.write_all_at(&buf[..n], pos).unwrap();
            pos += n as u64;
        }
        at = end;
        if at >= size {
            break;
        }
    }
}

/// A read-write, truncated file of `size` bytes at `path`.
pub fn image(path: &Path, size: u64) -> File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.set_len(size).unwrap();
    f
}

/// The disk of a power-cut run: one dm-log-writes device `PREFIX-lw` (its data and
/// its log in sparse files) holding the journal's file system (behind a delay device,
/// `PREFIX-jd`), the state file system (`PREFIX-s`), then one raw region per volume
/// (`PREFIX-ID`).
pub struct Disk<'a> {
    pub prefix: &'a str,
    pub journal_fs: u64,
    /// What the delay device adds to each write of the journal's file system.
    pub journal_delay_ms: u64,
    /// The journal file system's mount options.
    pub journal_mount: &'a str,
    pub state_fs: u64,
    pub volumes: &'a [(&'a str, u64)],
}

impl Disk<'_> {
    pub fn state_at(&self) -> u64 {
        self.journal_fs
    }

    /// Where volume `v` (by index) starts.
    pub fn volume_at(&self, v: usize) -> u64 {
        self.journal_fs + self.state_fs + self.volumes[..v].iter().map(|(_, s)| s).sum::<u64>()
    }

    pub fn size(&self) -> u64 {
        self.volume_at(self.volumes.len())
    }

    /// Every region, in order, as `(offset, size)`: for [`Views::attach`].
    pub fn regions(&self) -> Vec<(u64, u64)> {
        let mut r = vec![(0, self.journal_fs), (self.state_at(), self.state_fs)];
        r.extend((0..self.volumes.len()).map(|v| (self.volume_at(v), self.volumes[v].1)));
        r
    }

    /// Sets what the delay device adds to each write of the journal's file system.
    pub fn delay_journal(&self, ms: u64) {
        let p = self.prefix;
        let n = self.journal_fs / 512;
        dm_reload(
            &format!("{p}-jd"),
            &format!("0 {n} delay /dev/mapper/{p}-j 0 0 /dev/mapper/{p}-j 0 {ms}"),
        );
    }

    /// Puts a mark in the log.
    pub fn mark(&self, name: &str) {
        sh(&format!("dmsetup message {}-lw 0 mark {name}", self.prefix));
    }

    /// Makes the devices over `data.img` and `log.img` in `root`, makes ext4 on the
    /// two file systems and mounts them at `journal_mnt` and `state_mnt`.
    pub fn build(&self, root: &Path, journal_mnt: &Path, state_mnt: &Path) -> Stack {
        sh("modprobe -a dm-log-writes dm-delay");
        let log_img = root.join("log.img");
        image(&root.join("data.img"), self.size());
        image(&log_img, 1536 << 20);
        let data = LoopDev::attach(&root.join("data.img")).unwrap();
        let log = LoopDev::attach(&log_img).unwrap();
        let p = self.prefix;
        let sectors = |b: u64| b / 512;
        let dm = |name: &str, table: String| {
            sh(&format!("dmsetup create {p}-{name} --table '0 {table}'"))
        };
        let lw = format!("/dev/mapper/{p}-lw");
        let j = format!("/dev/mapper/{p}-j");
        dm(
            "lw",
            format!(
                "{} log-writes {} {}",
                sectors(self.size()),
                data.path(),
                log.path()
            ),
        );
        dm("j", format!("{} linear {lw} 0", sectors(self.journal_fs)));
        dm(
            "jd",
            format!(
                "{} delay {j} 0 0 {j} 0 {}",
                sectors(self.journal_fs),
                self.journal_delay_ms
            ),
        );
        dm(
            "s",
            format!(
                "{} linear {lw} {}",
                sectors(self.state_fs),
                sectors(self.state_at())
            ),
        );
        for (v, (id, size)) in self.volumes.iter().enumerate() {
            dm(
                id,
                format!(
                    "{} linear {lw} {}",
                    sectors(*size),
                    sectors(self.volume_at(v))
                ),
            );
        }
        let mkfs = "mkfs.ext4 -q -F -b 4096 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0";
        sh(&format!(
            "{mkfs} /dev/mapper/{p}-jd && {mkfs} /dev/mapper/{p}-s && \
             mount -o {} /dev/mapper/{p}-jd {} && mount /dev/mapper/{p}-s {}",
            self.journal_mount,
            journal_mnt.display(),
            state_mnt.display()
        ));
        Stack {
            log_img,
            mounts: [journal_mnt.to_path_buf(), state_mnt.to_path_buf()],
            prefix: p.to_string(),
            volumes: self.volumes.iter().map(|(id, _)| id.to_string()).collect(),
            _data: data,
            _log: log,
        }
    }
}

/// The devices a [`Disk`] made, mounted.
pub struct Stack {
    /// The log, complete once [`Stack::finish`] returned.
    pub log_img: std::path::PathBuf,
    mounts: [std::path::PathBuf; 2],
    prefix: String,
    volumes: Vec<String>,
    // Detached once the devices over them are removed.
    _data: LoopDev,
    _log: LoopDev,
}

impl Stack {
    /// Unmounts the file systems and removes the devices: every write is logged.
    pub fn finish(&self) {
        let p = &self.prefix;
        let over: Vec<String> = self
            .volumes
            .iter()
            .map(String::as_str)
            .chain(["s", "jd", "j"])
            .map(|d| format!("{p}-{d}"))
            .collect();
        sh(&format!(
            "umount {} {} && dmsetup remove {} && dmsetup remove {p}-lw",
            self.mounts[0].display(),
            self.mounts[1].display(),
            over.join(" ")
        ));
    }

    /// The mapped device of volume `id`.
    pub fn volume(&self, id: &str) -> String {
        format!("/dev/mapper/{}-{id}", self.prefix)
    }
}

impl Disk<'_> {
    /// The images under `root` that the states of a run are rebuilt in, with loop
    /// devices over the first `views` regions of the state (the two file systems
    /// first), which mount at `journal_mnt` and `state_mnt`.
    pub fn replay(
        &self,
        root: &Path,
        views: usize,
        journal_mnt: &Path,
        state_mnt: &Path,
    ) -> Replay {
        let work_path = root.join("work.img");
        let work = image(&work_path, self.size());
        Replay {
            base: image(&root.join("base.img"), self.size()),
            views: Views::attach(&work_path, &self.regions()[..views]),
            work,
            mounts: [journal_mnt.to_path_buf(), state_mnt.to_path_buf()],
            journal_mount: self.journal_mount.to_string(),
        }
    }
}

/// Where the states of a run are rebuilt: `base` holds the log up to the latest
/// durability point tried, `work` one state (base and its writes after that point).
pub struct Replay {
    base: File,
    pub work: File,
    pub views: Views,
    mounts: [std::path::PathBuf; 2],
    journal_mount: String,
}

impl Replay {
    /// Tries `states` (in log order): rebuilds each in `work`, mounts its file
    /// systems, runs `check` (which says what it saw, or what is wrong) and unmounts
    /// them. Then prints the failures by reason, and panics if there were any.
    pub fn try_states(
        &self,
        log: &super::logwrites::Log,
        states: &[State],
        mut check: impl FnMut(&State, &mut Timings) -> Result<String, String>,
    ) {
        let mut applied = 0;
        let mut failed = Vec::new();
        let mut t = Timings::default();
        let started = std::time::Instant::now();
        for (n, s) in states.iter().enumerate() {
            while applied <= s.upto {
                log.apply(applied, &self.base);
                applied += 1;
            }
            copy_sparse(&self.base, &self.work);
            for &i in &s.extra {
                log.apply(i, &self.work);
            }
            self.views.forget();
            t.lap("replay the log");
            let [journal, state] = [&self.views.devices[0], &self.views.devices[1]];
            let result = mount(journal, &self.mounts[0], &self.journal_mount)
                .and_then(|()| mount(state, &self.mounts[1], ""))
                .and_then(|()| {
                    t.lap("mount");
                    check(s, &mut t)
                });
            umount(&self.mounts[0]);
            umount(&self.mounts[1]);
            t.lap("unmount");
            match result {
                Ok(seen) => eprintln!("state {n}: {seen}"),
                Err(why) => {
                    eprintln!("FAILED state {n} ({}): {why}", s.describe());
                    failed.push(why);
                }
            }
        }
        eprintln!(
            "power-cut harness: {} states tried, {} failed ({:.0} s)",
            states.len(),
            failed.len(),
            started.elapsed().as_secs_f64()
        );
        eprintln!("  time per phase: {:?}", t.total);
        let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
        for why in &failed {
            *by_reason.entry(why).or_default() += 1;
        }
        for (why, n) in &by_reason {
            eprintln!("  {n} × {why}");
        }
        assert!(
            failed.is_empty(),
            "{} of {} power-cut states failed",
            failed.len(),
            states.len()
        );
    }
}
