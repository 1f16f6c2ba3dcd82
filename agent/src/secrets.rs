//! Compose secrets on the node: files in memory, bind-mounted read-only into the
//! containers of the tasks that use them.
//!
//! The store is a directory on a tmpfs (or ramfs): `--secrets-dir`, by default
//! `/run/shoal/secrets/NODE`. If that directory is on a disk, the agent mounts a tmpfs
//! on it, so a secret's contents are never written to the node's disk in clear. Each
//! task has its own subdirectory, removed once the task is no longer to run (its
//! container keeps the file it already has open through the bind mount until it is
//! removed). When no tmpfs can be had (no privilege to mount), the agent still runs, and
//! tasks that use secrets fail with the reason instead of writing them to disk.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use shoal_proto::spec::MountKind;
use tracing::{info, warn};

use crate::runtime::MountRequest;

/// Where secrets live by default: `/run/shoal/secrets/NODE-HASH`, the hash being of the
/// agent's data directory, so that two agents on one machine (test hosts) never share it.
pub fn default_dir(node: &str, data_dir: &Path) -> PathBuf {
    let path = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    // FNV-1a: stable across runs and builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    PathBuf::from("/run/shoal/secrets").join(format!("{}-{:08x}", sanitize(node), h as u32))
}

/// One secret of one task, as the controller sent it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub name: String,
    /// Its path in the container.
    pub path: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    pub data: Vec<u8>,
    /// The controller could not give the contents: the task fails with this.
    pub error: String,
}

// Hand-written so that no log line or panic message can carry the contents.
impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("bytes", &self.data.len())
            .field("error", &self.error)
            .finish()
    }
}

impl From<shoal_proto::pb::SecretFile> for SecretFile {
    fn from(s: shoal_proto::pb::SecretFile) -> SecretFile {
        SecretFile {
            name: s.name,
            path: s.path,
            uid: s.uid,
            gid: s.gid,
            mode: s.mode,
            data: s.data,
            error: s.error,
        }
    }
}

/// The node's secret files.
#[derive(Debug)]
pub struct SecretStore {
    root: PathBuf,
    /// Prepared on first use, so a node that never runs a task with secrets mounts
    /// nothing: `Ok(mounted)`, or why secrets cannot be kept in memory here.
    ready: std::sync::OnceLock<Result<bool, String>>,
}

impl Drop for SecretStore {
    fn drop(&mut self) {
        // The store mounted the tmpfs itself: unmount it (containers that still run
        // keep their files through their own bind mounts).
        if let Some(Ok(true)) = self.ready.get() {
            let _ = nix::mount::umount2(&self.root, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Whether `dir` is on a file system that lives in memory.
pub fn in_memory(dir: &Path) -> std::io::Result<bool> {
    let st = nix::sys::statfs::statfs(dir).map_err(std::io::Error::from)?;
    let kind = st.filesystem_type().0 as i64;
    Ok(kind == TMPFS_MAGIC || kind == RAMFS_MAGIC)
}

impl SecretStore {
    /// The store at `root`; a tmpfs is mounted there on first use if it is on a disk.
    pub fn open(root: &Path) -> SecretStore {
        SecretStore {
            root: root.to_path_buf(),
            ready: std::sync::OnceLock::new(),
        }
    }

    fn ready(&self) -> Result<(), String> {
        let r = self.ready.get_or_init(|| {
            let r = prepare(&self.root);
            match &r {
                Ok(_) => info!(dir = %self.root.display(), "secrets are kept in memory"),
                Err(e) => {
                    warn!(dir = %self.root.display(), error = %e, "tasks that use secrets cannot run on this node")
                }
            }
            r
        });
        r.clone().map(|_| ())
    }

    /// Write `files` for `task_id` and return the read-only bind mounts for them.
    pub fn write(&self, task_id: &str, files: &[SecretFile]) -> Result<Vec<MountRequest>, String> {
        if let Some(f) = files.iter().find(|f| !f.error.is_empty()) {
            return Err(f.error.clone());
        }
        self.ready()?;
        let dir = self.root.join(task_dir_name(task_id));
        create_private_dir(&dir)
            .map_err(|e| format!("create the secrets directory {}: {e}", dir.display()))?;
        let mut mounts = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let file = dir.join(format!("{i}-{}", sanitize(&f.name)));
            write_one(&file, f).map_err(|e| format!("write secret {}: {e}", f.name))?;
            mounts.push(MountRequest {
                kind: MountKind::Bind,
                source: Some(file.display().to_string()),
                target: f.path.clone(),
                read_only: true,
            });
        }
        Ok(mounts)
    }

    /// Remove the files of every task not in `keep`.
    pub fn retain(&self, keep: &BTreeSet<String>) {
        match self.ready.get() {
            Some(Ok(_)) => {}
            Some(Err(_)) => return,
            // Not used yet by this agent: files of an earlier run can only be on a tmpfs
            // that is still mounted (the agent was killed); clean that one up.
            None => {
                if !self.root.exists() || !in_memory(&self.root).unwrap_or(false) {
                    return;
                }
                if self.ready().is_err() {
                    return;
                }
            }
        }
        let keep: BTreeSet<String> = keep.iter().map(|t| task_dir_name(t)).collect();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !keep.contains(&name) {
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    warn!(dir = %e.path().display(), error = %err, "cannot remove secret files");
                }
            }
        }
    }
}

/// Make `root` a private directory in memory; true when a tmpfs was mounted for it.
fn prepare(root: &Path) -> Result<bool, String> {
    create_private_dir(root).map_err(|e| format!("create {}: {e}", root.display()))?;
    if in_memory(root).map_err(|e| format!("statfs {}: {e}", root.display()))? {
        return Ok(false);
    }
    use nix::mount::{mount, MsFlags};
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700,size=64m"),
    )
    .map_err(|e| {
        format!(
            "{} is on a disk and mounting a tmpfs on it failed ({e}); run the agent as root or give --secrets-dir on a tmpfs",
            root.display()
        )
    })?;
    if in_memory(root).map_err(|e| format!("statfs {}: {e}", root.display()))? {
        // The mount point's own mode is the tmpfs root's (mode=0700 above).
        Ok(true)
    } else {
        Err(format!(
            "{} is still not in memory after mounting a tmpfs",
            root.display()
        ))
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn write_one(path: &Path, f: &SecretFile) -> std::io::Result<()> {
    // Written private first, then given its mode and owner.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    out.write_all(&f.data)?;
    out.sync_all()?;
    drop(out);
    std::os::unix::fs::chown(path, Some(f.uid.unwrap_or(0)), Some(f.gid.unwrap_or(0)))?;
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(f.mode.unwrap_or(0o444)),
    )
}

fn task_dir_name(task_id: &str) -> String {
    sanitize(task_id)
}

/// A file name made of the safe characters of `s`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, data: &str) -> SecretFile {
        SecretFile {
            name: name.into(),
            path: format!("/run/secrets/{name}"),
            uid: None,
            gid: None,
            mode: None,
            data: data.as_bytes().to_vec(),
            error: String::new(),
        }
    }

    #[test]
    fn a_directory_on_disk_gets_a_tmpfs_and_files_land_in_it() {
        // A directory on a disk: the system's temporary directory, unless that is a
        // tmpfs already (then the crate's own directory).
        let tmp = std::env::temp_dir();
        let base = if in_memory(&tmp).unwrap() {
            tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap()
        } else {
            tempfile::tempdir_in(tmp).unwrap()
        };
        let root = base.path().join("secrets");
        std::fs::create_dir_all(&root).unwrap();
        assert!(
            !in_memory(&root).unwrap(),
            "the test needs a disk directory"
        );
        let store = SecretStore::open(&root);
        assert!(
            !in_memory(&root).unwrap(),
            "nothing is mounted before first use"
        );

        let mut f = file("db_password", "hunter2");
        f.mode = Some(0o440);
        f.uid = Some(1000);
        let mounts = store.write("t-1", &[f]).unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].target, "/run/secrets/db_password");
        assert!(mounts[0].read_only);
        assert_eq!(store.ready.get(), Some(&Ok(true)), "it mounted a tmpfs");
        assert!(in_memory(&root).unwrap());
        let src = PathBuf::from(mounts[0].source.clone().unwrap());
        assert!(src.starts_with(&root));
        assert!(in_memory(src.parent().unwrap()).unwrap());
        assert_eq!(std::fs::read_to_string(&src).unwrap(), "hunter2");
        let meta = std::fs::metadata(&src).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o440);
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(meta.uid(), 1000);

        store.retain(&BTreeSet::new());
        assert!(!src.exists(), "files of a task no longer kept are removed");
        drop(store);
        assert!(
            !root.exists(),
            "the store unmounts its tmpfs and removes its directory"
        );
    }

    #[test]
    fn default_dirs_differ_by_data_dir_and_stay_put() {
        let a = default_dir("n1", Path::new("/var/lib/shoal/a"));
        assert_eq!(a, default_dir("n1", Path::new("/var/lib/shoal/a")));
        assert_ne!(a, default_dir("n1", Path::new("/var/lib/shoal/b")));
        assert!(a.starts_with("/run/shoal/secrets"));
        assert!(a.file_name().unwrap().to_string_lossy().starts_with("n1-"));
    }

    #[test]
    fn an_error_from_the_controller_fails_the_task_with_it() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let store = SecretStore::open(dir.path());
        let mut f = file("x", "");
        f.error = "secret x: its contents are not in the cluster state".into();
        assert_eq!(
            store.write("t", &[f]).unwrap_err(),
            "secret x: its contents are not in the cluster state"
        );
    }

    #[test]
    fn debug_output_never_shows_the_contents() {
        let f = file("api_key", "s3cr3t-value");
        assert!(!format!("{f:?}").contains("s3cr3t-value"));
    }
}
