//! What a block device is, as opposed to which node names it: device nodes are
//! recreated at every boot and udev re-add (new inode, new birth time), and a
//! device's minor number can change with attach order (loop, device-mapper), so a
//! replica kept on a device is recognised by what sysfs says the device is.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A file's birth time in nanoseconds since the epoch, 0 where the file system does
/// not record one: with the inode number it tells a file from a later one that
/// reused the number.
pub fn birth_ns(m: &std::fs::Metadata) -> u128 {
    m.created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// A stable name for block device `major:minor`, read from
/// `/sys/dev/block/MAJOR:MINOR`:
/// - a loop device: the inode and birth time of its backing file (not the file
///   system's device number, which can change across boots either);
/// - a device-mapper device (LVM, dm-crypt…): its `dm/uuid`;
/// - a disk: its `device/wwid`, else `device/serial`, else `wwid`;
/// - a partition: its disk's name and `part N`;
/// - anything else: `major:minor`, the best there is.
pub fn stable_id(major: u32, minor: u32) -> String {
    stable_id_in(Path::new("/sys/dev/block"), major, minor)
}

fn stable_id_in(sys: &Path, major: u32, minor: u32) -> String {
    let dev = sys.join(format!("{major}:{minor}"));
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    if let Some(part) = read(&dev.join("partition")) {
        let disk = dev.join("..");
        if let Some(id) = device_id(&disk, &read) {
            return format!("{id} part {part}");
        }
    }
    device_id(&dev, &read).unwrap_or_else(|| format!("{major}:{minor}"))
}

fn device_id(dev: &Path, read: &dyn Fn(&Path) -> Option<String>) -> Option<String> {
    if let Some(backing) = read(&dev.join("loop/backing_file")) {
        return Some(match std::fs::metadata(&backing) {
            Ok(m) => {
                let born = birth_ns(&m);
                format!("loop over inode {} born {born}", m.ino())
            }
            // Deleted or out of reach: its name is what is left.
            Err(_) => format!("loop over {backing}"),
        });
    }
    if let Some(uuid) = read(&dev.join("dm/uuid")) {
        return Some(format!("dm {uuid}"));
    }
    ["device/wwid", "device/serial", "wwid"]
        .iter()
        .find_map(|f| read(&dev.join(f)).map(|id| format!("disk {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs tree as the kernel lays it out, in a temp dir.
    #[test]
    fn names_what_sysfs_says_the_device_is() {
        let sys = tempfile::tempdir().unwrap();
        let put = |p: &str, text: &str| {
            let p = sys.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put("253:4/dm/uuid", "LVM-abc123\n");
        put("253:5/dm/uuid", "\n");
        put("8:0/device/wwid", "naa.5000c500a1b2c3d4\n");
        put("8:0/8:1/partition", "1\n");
        put("259:0/wwid", "eui.0025388b91b2c3d4\n");
        let id = |maj, min| stable_id_in(sys.path(), maj, min);
        assert_eq!(id(253, 4), "dm LVM-abc123");
        assert_eq!(id(253, 5), "253:5", "an empty uuid names nothing");
        assert_eq!(id(8, 0), "disk naa.5000c500a1b2c3d4");
        assert_eq!(id(259, 0), "disk eui.0025388b91b2c3d4");
        assert_eq!(id(7, 9), "7:9", "nothing known");
        // A partition is found through its disk (sysfs nests it there).
        std::os::unix::fs::symlink(sys.path().join("8:0/8:1"), sys.path().join("8:1")).unwrap();
        assert_eq!(id(8, 1), "disk naa.5000c500a1b2c3d4 part 1");
    }
}
