//! This node's device paths and platform, which the controller's scheduler matches
//! against a service's `devices:` and `platform:`.
//!
//! - Device paths: what Docker accepts as a `devices:` source under `/dev` (character
//!   and block devices, directories holding them such as `/dev/dri`, and symlinks such
//!   as `/dev/serial/by-id/...`), found by a bounded walk ([`scan`]) that leaves out the
//!   pseudo-filesystems (`/dev/shm`, `/dev/mqueue`, `/dev/pts`, `/dev/hugepages`).
//!   [`watch`] rescans every [`RESCAN_INTERVAL`] and wakes its watchers only when the
//!   set changed (a USB stick plugged in), so the session sends a `DeviceReport` then.
//! - Platform: Docker's words (`linux/amd64`, `linux/arm64`, `linux/arm/v7`) for the
//!   machine the agent runs on ([`platform`]). The runtime trait does not expose the
//!   engine's `info`, so this is the agent's own target, which is the engine's wherever
//!   the agent runs beside its engine (every supported setup; Docker Desktop's engine is
//!   a Linux VM of the host's architecture, hence `macos` reads as `linux`).
//!
//! Nothing here decides placement; it only reports what the node has.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often `/dev` is scanned again.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(5);
/// Where device paths are looked for on a real node.
pub const DEV_ROOT: &str = "/dev";
/// How deep below the root the walk goes (`/dev/a/b/.../h` is depth 8).
pub const MAX_DEPTH: usize = 8;
/// At most this many paths are reported; a node with more is truncated (and says so).
pub const MAX_ENTRIES: usize = 10_000;
/// Directories right under the root that hold no devices a container could be given.
const SKIPPED: [&str; 4] = ["shm", "mqueue", "pts", "hugepages"];

/// The outcome of one walk of the device root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceScan {
    /// Full paths (the root joined with the entry), sorted, each once.
    pub paths: Vec<String>,
    /// [`MAX_ENTRIES`] was reached: some paths are missing.
    pub truncated: bool,
}

/// Walks `root` (normally [`DEV_ROOT`]) without following symlinks, at most
/// [`MAX_DEPTH`] deep and [`MAX_ENTRIES`] paths. An unreadable root or directory is
/// skipped (a node without `/dev` has no devices, which is not an error); names that are
/// not UTF-8 are skipped too (a Compose file cannot name them portably).
pub fn scan(root: &Path) -> DeviceScan {
    let mut out = DeviceScan::default();
    // (directory, its depth below the root): iterative, so depth never costs stack.
    let mut pending: Vec<(PathBuf, usize)> = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                debug!(dir = %dir.display(), error = %e, "cannot list device directory");
                continue;
            }
        };
        for entry in entries.flatten() {
            if out.paths.len() >= MAX_ENTRIES {
                out.truncated = true;
                break;
            }
            let path = entry.path();
            if depth == 0 && SKIPPED.iter().any(|s| entry.file_name() == *s) {
                continue;
            }
            // `file_type` does not follow symlinks: a link is reported, never walked.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !is_device_source(&kind) {
                continue;
            }
            let Some(text) = path.to_str() else {
                continue;
            };
            out.paths.push(text.to_string());
            if kind.is_dir() && depth + 1 < MAX_DEPTH {
                pending.push((path, depth + 1));
            }
        }
    }
    out.paths.sort_unstable();
    out.paths.dedup();
    out
}

/// What Docker takes as a `devices:` source: a device node, a directory of them, or a
/// link to either. Sockets (`/dev/log`), pipes and regular files are not devices.
fn is_device_source(kind: &std::fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    kind.is_char_device() || kind.is_block_device() || kind.is_symlink() || kind.is_dir()
}

/// Scans `root` off the async threads.
async fn scan_blocking(root: PathBuf) -> DeviceScan {
    let shown = root.display().to_string();
    match tokio::task::spawn_blocking(move || scan(&root)).await {
        Ok(s) => s,
        Err(e) => {
            warn!(root = %shown, error = %e, "device scan failed; reporting no devices");
            DeviceScan::default()
        }
    }
}

/// Scans `root` now, then every `interval` until `shutdown`; the receiver holds the
/// latest set and is marked changed only when the set differs from the last one.
pub async fn watch(
    root: PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
) -> watch::Receiver<Vec<String>> {
    let first = scan_blocking(root.clone()).await;
    warn_truncated(&root, &first);
    info!(root = %root.display(), devices = first.paths.len(), "device paths scanned");
    let (tx, rx) = watch::channel(first.paths);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let next = scan_blocking(root.clone()).await;
            tx.send_if_modified(|current| {
                if *current == next.paths {
                    return false;
                }
                warn_truncated(&root, &next);
                info!(devices = next.paths.len(), "device paths changed");
                *current = next.paths;
                true
            });
        }
    });
    rx
}

fn warn_truncated(root: &Path, s: &DeviceScan) {
    if s.truncated {
        warn!(
            root = %root.display(),
            "more than {MAX_ENTRIES} device paths: the rest are not reported"
        );
    }
}

/// This machine's platform in Docker's words, e.g. `linux/amd64`.
pub fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        // Rust names every 32-bit ARM `arm`; the target's features tell v7 from v6.
        "arm" if cfg!(target_feature = "v7") => "armv7l",
        "arm" => "armv6l",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        a => a,
    };
    platform_of(std::env::consts::OS, arch)
}

/// `os/arch[/variant]` as Docker writes it, from an OS and an architecture in the
/// kernel's (`uname -m`), Rust's or Docker's own words.
pub fn platform_of(os: &str, arch: &str) -> String {
    let os = match os {
        "macos" | "darwin" => "linux",
        o => o,
    };
    let arch = match arch {
        "x86_64" | "amd64" | "x64" => "amd64",
        "aarch64" | "arm64" | "armv8l" | "armv8" => "arm64",
        "armv7l" | "armv7" | "armhf" => "arm/v7",
        "armv6l" | "armv6" | "armel" => "arm/v6",
        "x86" | "i386" | "i486" | "i586" | "i686" | "386" => "386",
        "ppc64le" | "powerpc64le" => "ppc64le",
        "loongarch64" | "loong64" => "loong64",
        a => a,
    };
    format!("{os}/{arch}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake `/dev`: directories, symlinks, a regular file, a socket, skipped dirs.
    fn fake_dev() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        for d in [
            "dri",
            "serial/by-id",
            "shm/sub",
            "pts",
            "mqueue",
            "hugepages",
        ] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        symlink("/nonexistent/renderD128", root.join("dri/renderD128")).expect("link");
        symlink("../../ttyUSB0", root.join("serial/by-id/usb-FTDI_1234")).expect("link");
        symlink("/dev/null", root.join("shm/sub/hidden")).expect("link");
        symlink("/dev/null", root.join("pts/0")).expect("link");
        std::fs::write(root.join("notes.txt"), b"not a device").expect("file");
        let _sock = std::os::unix::net::UnixListener::bind(root.join("log")).expect("socket");
        dir
    }

    fn rel(root: &Path, s: &DeviceScan) -> Vec<String> {
        let prefix = format!("{}/", root.display());
        s.paths
            .iter()
            .map(|p| p.strip_prefix(&prefix).unwrap_or(p).to_string())
            .collect()
    }

    #[test]
    fn scan_lists_devices_dirs_and_links_and_skips_pseudo_filesystems() {
        let dev = fake_dev();
        let s = scan(dev.path());
        assert_eq!(
            rel(dev.path(), &s),
            vec![
                "dri",
                "dri/renderD128",
                "serial",
                "serial/by-id",
                "serial/by-id/usb-FTDI_1234",
            ]
        );
        assert!(!s.truncated);
        assert!(s.paths.iter().all(|p| p.starts_with('/')));
    }

    #[test]
    fn scan_reports_real_character_devices() {
        // /dev/null is a character device on every Linux machine these tests run on.
        let s = scan(Path::new("/dev"));
        assert!(s.paths.contains(&"/dev/null".to_string()), "{:?}", s.paths);
        assert!(!s.paths.iter().any(|p| p.starts_with("/dev/pts/")));
        let mut sorted = s.paths.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, s.paths);
    }

    #[test]
    fn scan_is_bounded_in_depth_and_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let deep: PathBuf = (1..=12).map(|i| format!("d{i}")).collect();
        std::fs::create_dir_all(dir.path().join(&deep)).expect("mkdir");
        let s = scan(dir.path());
        // d1 .. d8: the walk lists depth 8 and goes no further.
        assert_eq!(s.paths.len(), MAX_DEPTH);
        assert!(s.paths.iter().any(|p| p.ends_with("/d8")));
        assert!(!s.paths.iter().any(|p| p.ends_with("/d9")));

        let wide = tempfile::tempdir().expect("temp dir");
        for i in 0..MAX_ENTRIES + 5 {
            symlink("/dev/null", wide.path().join(format!("l{i}"))).expect("link");
        }
        let s = scan(wide.path());
        assert_eq!(s.paths.len(), MAX_ENTRIES);
        assert!(s.truncated);
    }

    #[test]
    fn a_missing_root_has_no_devices() {
        let s = scan(Path::new("/nonexistent/shoal-dev"));
        assert_eq!(s, DeviceScan::default());
    }

    #[tokio::test]
    async fn watch_wakes_only_when_the_set_changes() {
        let dev = fake_dev();
        let shutdown = CancellationToken::new();
        let mut rx = watch(
            dev.path().to_path_buf(),
            Duration::from_millis(20),
            shutdown.clone(),
        )
        .await;
        assert_eq!(rx.borrow_and_update().len(), 5);
        // Several rescans of an unchanged /dev wake nobody.
        let quiet = tokio::time::timeout(Duration::from_millis(150), rx.changed()).await;
        assert!(quiet.is_err(), "woken without a change");
        // A USB stick appears.
        symlink("/dev/null", dev.path().join("ttyUSB0")).expect("link");
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("a change within 5 s")
            .expect("watcher alive");
        let now = rx.borrow_and_update().clone();
        let usb = format!("{}/ttyUSB0", dev.path().display());
        assert!(now.contains(&usb), "{now:?}");
        assert_eq!(now.len(), 6);
        shutdown.cancel();
    }

    #[test]
    fn hello_and_report_carry_the_paths_and_platform() {
        use shoal_proto::pb::agent_message::Msg;
        let paths = vec!["/dev/null".to_string(), "/dev/ttyUSB0".to_string()];
        let hello = crate::convert::HelloInfo {
            name: "a".into(),
            address: "10.0.0.1".into(),
            cpus: 1.0,
            memory_bytes: 1,
            labels: Default::default(),
            observed: Vec::new(),
            gpus: Vec::new(),
            devices: paths.clone(),
            platform: "linux/arm64".into(),
            conflicts: Vec::new(),
        };
        match crate::convert::hello_message(&hello).msg {
            Some(Msg::Hello(h)) => {
                assert_eq!(h.devices, paths);
                assert_eq!(h.platform, "linux/arm64");
            }
            other => panic!("not a hello: {other:?}"),
        }
        match crate::convert::device_report_message(&paths).msg {
            Some(Msg::Devices(r)) => assert_eq!(r.paths, paths),
            other => panic!("not a device report: {other:?}"),
        }
    }

    #[test]
    fn platforms_read_as_docker_writes_them() {
        assert_eq!(platform_of("linux", "x86_64"), "linux/amd64");
        assert_eq!(platform_of("linux", "aarch64"), "linux/arm64");
        assert_eq!(platform_of("linux", "armv7l"), "linux/arm/v7");
        assert_eq!(platform_of("linux", "armv6l"), "linux/arm/v6");
        assert_eq!(platform_of("linux", "i686"), "linux/386");
        assert_eq!(platform_of("macos", "aarch64"), "linux/arm64");
        assert_eq!(platform_of("linux", "s390x"), "linux/s390x");
        let here = platform();
        assert!(here.starts_with("linux/"), "{here}");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(here, "linux/amd64");
        #[cfg(target_arch = "aarch64")]
        assert_eq!(here, "linux/arm64");
    }
}
