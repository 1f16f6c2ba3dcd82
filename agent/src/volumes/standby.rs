//! Standby copies of volumes kept on this node (`x-shoal-volume: {replicas: N}`): plain
//! directories under the agent's data dir, `standby/<engine name>/current`, not engine
//! volumes. A refresh is received into `next` ([`Standbys::begin`]) and swapped in only
//! once complete and verified ([`Standbys::commit`]: `current` to `old`, `next` to
//! `current`, `old` removed), so `current` is always a whole copy; a failed one is
//! dropped ([`Standbys::abort`]) and leaves `current` as it was. When the controller
//! promotes the standby, the supervisor turns it into the engine volume before the
//! replica's container is created ([`Standbys::promote_into`]: renamed into the volume's
//! directory on the same file system, else copied with owners, modes, mtimes and
//! symlinks). `remove_volumes` removes it ([`Standbys::remove`]).
//!
//! Every method does blocking file-system work: call them on a blocking thread. Swaps,
//! promotions and removals of all names run one at a time; a refresh being received
//! when its standby is removed or promoted fails at its swap.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::warn;

use super::archive;

/// What went wrong with a standby copy.
#[derive(Debug, thiserror::Error)]
pub enum StandbyError {
    /// The controller named something that cannot be a directory name of ours.
    #[error("{0:?} is not a volume name")]
    BadName(String),
    #[error("a standby copy of {0} is already being received")]
    Busy(String),
    /// Removed or promoted while a refresh was received: the refresh is dropped.
    #[error("the standby copy of {0} was removed or promoted meanwhile")]
    Cancelled(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("copy {0}")]
    Copy(#[from] archive::ArchiveError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StandbyError {
    let what = what.into();
    move |source| StandbyError::Io { what, source }
}

/// The node's standby copies. Clones share one directory and one lock.
#[derive(Debug, Clone)]
pub struct Standbys {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `<data dir>/standby`.
    root: PathBuf,
    /// Names with a refresh being received; `true`: removed or promoted meanwhile.
    receiving: Mutex<BTreeMap<String, bool>>,
}

impl Standbys {
    /// Standby copies kept in `root` (the agent uses `<data dir>/standby`).
    pub fn new(root: PathBuf) -> Standbys {
        Standbys {
            inner: Arc::new(Inner {
                root,
                receiving: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The standby copies of the agent whose data dir is `data_dir`.
    pub fn in_data_dir(data_dir: &Path) -> Standbys {
        Standbys::new(data_dir.join("standby"))
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, bool>> {
        self.inner
            .receiving
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `standby/<name>`, for a name that is one plain path component.
    pub fn dir(&self, name: &str) -> Result<PathBuf, StandbyError> {
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']);
        if !plain {
            return Err(StandbyError::BadName(name.to_string()));
        }
        Ok(self.inner.root.join(name))
    }

    /// Whether this node holds a complete standby copy of volume `name`.
    pub fn has(&self, name: &str) -> bool {
        let Ok(dir) = self.dir(name) else {
            return false;
        };
        // A swap cut short between its two renames left the copy as `old`.
        dir.join("current").is_dir() || dir.join("old").is_dir()
    }

    /// Start receiving a refresh of `name`: an empty `next` (a leftover one removed).
    /// End it with [`Standbys::commit`] or [`Standbys::abort`].
    pub fn begin(&self, name: &str) -> Result<PathBuf, StandbyError> {
        let dir = self.dir(name)?;
        {
            let mut receiving = self.lock();
            if receiving.contains_key(name) {
                return Err(StandbyError::Busy(name.to_string()));
            }
            receiving.insert(name.to_string(), false);
        }
        let next = dir.join("next");
        let made = (|| {
            private_dirs(&dir)?;
            remove_all(&next)?;
            private_dirs(&next)
        })();
        match made {
            Ok(()) => Ok(next),
            Err(e) => {
                self.lock().remove(name);
                Err(e)
            }
        }
    }

    /// Swap the received `next` in as `current`; on any failure `next` is removed and
    /// `current` stays as it was.
    pub fn commit(&self, name: &str) -> Result<(), StandbyError> {
        let dir = self.dir(name)?;
        let mut receiving = self.lock();
        let cancelled = receiving.remove(name).unwrap_or(false);
        let swapped = if cancelled {
            Err(StandbyError::Cancelled(name.to_string()))
        } else {
            swap(&dir)
        };
        if swapped.is_err() {
            if let Err(e) = remove_all(&dir.join("next")) {
                warn!(volume = %name, error = %e, "cannot remove a partial standby copy");
            }
            let _ = fs::remove_dir(&dir);
        }
        swapped
    }

    /// Drop the refresh being received: `next` is removed, `current` stays.
    pub fn abort(&self, name: &str) {
        let Ok(dir) = self.dir(name) else {
            return;
        };
        let mut receiving = self.lock();
        receiving.remove(name);
        if let Err(e) = remove_all(&dir.join("next")) {
            warn!(volume = %name, error = %e, "cannot remove a partial standby copy");
        }
        // The first refresh failed: nothing is left of this standby.
        let _ = fs::remove_dir(&dir);
    }

    /// Remove the standby copy of `name`; `true` if there was one.
    pub fn remove(&self, name: &str) -> Result<bool, StandbyError> {
        let dir = self.dir(name)?;
        let mut receiving = self.lock();
        if let Some(cancelled) = receiving.get_mut(name) {
            *cancelled = true;
        }
        let existed = dir.exists();
        remove_all(&dir)?;
        Ok(existed)
    }

    /// Move the standby copy of `name` into `mountpoint` (an empty directory: the new
    /// engine volume's), then remove the standby. `false`: there was none. On a failure
    /// the standby stays whole and `mountpoint` is emptied again.
    pub fn promote_into(&self, name: &str, mountpoint: &Path) -> Result<bool, StandbyError> {
        let dir = self.dir(name)?;
        let mut receiving = self.lock();
        if let Some(cancelled) = receiving.get_mut(name) {
            *cancelled = true;
        }
        recover(&dir)?;
        let current = dir.join("current");
        if !current.is_dir() {
            return Ok(false);
        }
        fill(&current, mountpoint)?;
        if let Err(e) = remove_all(&dir) {
            warn!(volume = %name, error = %e, "cannot remove the promoted standby directory");
        }
        Ok(true)
    }
}

/// `current` to `old`, `next` to `current`, `old` removed.
fn swap(dir: &Path) -> Result<(), StandbyError> {
    recover(dir)?;
    let (current, next, old) = (dir.join("current"), dir.join("next"), dir.join("old"));
    remove_all(&old)?;
    let had_current = current.exists();
    if had_current {
        fs::rename(&current, &old).map_err(io_err(format!("rename {}", current.display())))?;
    }
    if let Err(e) = fs::rename(&next, &current) {
        if had_current {
            let _ = fs::rename(&old, &current);
        }
        return Err(io_err(format!("rename {}", next.display()))(e));
    }
    if let Err(e) = remove_all(&old) {
        warn!(dir = %dir.display(), error = %e, "cannot remove the previous standby copy");
    }
    Ok(())
}

/// A swap cut short after `current` became `old`: `old` is the copy again.
fn recover(dir: &Path) -> Result<(), StandbyError> {
    let (current, old) = (dir.join("current"), dir.join("old"));
    if !current.exists() && old.is_dir() {
        fs::rename(&old, &current).map_err(io_err(format!("rename {}", old.display())))?;
    }
    Ok(())
}

/// Create `dir` and its missing parents, readable by root only.
fn private_dirs(dir: &Path) -> Result<(), StandbyError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(format!("create {}", dir.display())))
}

/// Remove `path` and everything below it; a missing one is fine.
fn remove_all(path: &Path) -> Result<(), StandbyError> {
    let removed = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_err(format!("remove {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Put the contents of `src` into the empty directory `dst` (and the root's owner, mode
/// and mtime on `dst`): renamed on the same file system, else copied. On a failure
/// `src` is whole again and `dst` empty.
pub fn fill(src: &Path, dst: &Path) -> Result<(), StandbyError> {
    let same_fs = fs::metadata(src)
        .map_err(io_err(format!("read {}", src.display())))?
        .dev()
        == fs::metadata(dst)
            .map_err(io_err(format!("read {}", dst.display())))?
            .dev();
    if !same_fs {
        return copy_into(src, dst);
    }
    // One device can still be two mounts (a bind mount), which rename refuses: then
    // copy (move_into put back what it had moved).
    match move_into(src, dst) {
        Err(StandbyError::Io { source, .. }) if source.kind() == io::ErrorKind::CrossesDevices => {
            copy_into(src, dst)
        }
        other => other,
    }
}

/// Rename every entry of `src` into `dst`; moved back if one fails.
pub fn move_into(src: &Path, dst: &Path) -> Result<(), StandbyError> {
    let names = fs::read_dir(src)
        .and_then(|d| {
            d.map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(io_err(format!("read {}", src.display())))?;
    let mut moved = Vec::new();
    for name in names {
        if let Err(e) = fs::rename(src.join(&name), dst.join(&name)) {
            for back in moved.iter().rev() {
                let _ = fs::rename(dst.join(back), src.join(back));
            }
            return Err(io_err(format!(
                "move {} into {}",
                src.join(&name).display(),
                dst.display()
            ))(e));
        }
        moved.push(name);
    }
    let meta = fs::metadata(src).map_err(io_err(format!("read {}", src.display())))?;
    let root = (|| {
        std::os::unix::fs::chown(dst, Some(meta.uid()), Some(meta.gid()))?;
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        fs::File::open(dst)?.set_modified(meta.modified()?)
    })();
    root.map_err(io_err(format!(
        "set the owner, mode and mtime of {}",
        dst.display()
    )))
}

/// Copy `src` into `dst` as a tar stream through a pipe (the volume data plane's own
/// packing and unpacking: owners, modes, mtimes, symlinks); `dst` emptied on a failure.
pub fn copy_into(src: &Path, dst: &Path) -> Result<(), StandbyError> {
    let (reader, writer) = io::pipe().map_err(io_err("open a pipe"))?;
    let from = src.to_path_buf();
    let packer = std::thread::spawn(move || archive::pack(&from, writer).map(drop));
    let unpacked = archive::unpack(dst, reader);
    let packed = packer.join().unwrap_or_else(|_| {
        Err(archive::ArchiveError::Io {
            what: format!("read {}", src.display()),
            source: io::Error::other("the copying thread panicked"),
        })
    });
    // The first failure is the one to tell: a side whose other end went away fails
    // with a broken pipe (or an early end) of no interest.
    let broken_pipe = |e: &archive::ArchiveError| matches!(e, archive::ArchiveError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe);
    let copied = match (packed, unpacked) {
        (Ok(()), Ok(_)) => Ok(()),
        (Err(p), Err(u)) if broken_pipe(&p) => Err(u),
        (Err(p), _) => Err(p),
        (Ok(()), Err(u)) => Err(u),
    };
    if copied.is_err() {
        if let Err(e) = super::empty_dir(dst) {
            warn!(dir = %dst.display(), error = %e, "cannot empty a partly filled volume");
        }
    }
    Ok(copied?)
}

#[cfg(test)]
mod tests;
