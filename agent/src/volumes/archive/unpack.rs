//! Reading a tar stream into a directory: entries applied in order (a later entry for a
//! path replaces the earlier one), never through a symlink, and, for a frozen stream,
//! what its [`MANIFEST`] does not list deleted at the end.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tar::{Archive, EntryType};

use super::{
    io_err, is_safe, normal, parse_manifest, set_link_mtime, set_mtime, ArchiveError, MANIFEST,
};

/// Write the tar stream `input` into the directory `root` (which must exist), keeping
/// modes, owners (the agent runs as root) and mtimes. Entries are applied in order: an
/// entry for a path that exists replaces it (a directory by a directory keeps its
/// contents; anything else is removed first, symlinks never followed). A stream with a
/// [`MANIFEST`] then has every path it does not list deleted (the manifest itself is
/// never written). Any absolute path or `..`, and any entry below a symlink, refuses the
/// whole stream, and nothing is written outside `root`; what was written before the
/// refusal stays (the caller removes it). Returns the number of entries.
pub fn unpack<R: Read>(root: &Path, input: R) -> Result<u64, ArchiveError> {
    let mut archive = Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    // Directory and symlink mtimes are set at the end (writing into a directory changes
    // its mtime); the last entry of a path wins.
    let mut times: BTreeMap<PathBuf, (Kind, u64)> = BTreeMap::new();
    let mut root_header: Option<(u32, u64, u64, u64)> = None;
    let mut manifest: Option<Vec<u8>> = None;
    let mut count = 0u64;
    let entries = archive.entries().map_err(io_err("read the archive"))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("read the archive"))?;
        let path = entry
            .path()
            .map_err(io_err("read an entry's path"))?
            .into_owned();
        if !is_safe(&path) {
            return Err(ArchiveError::UnsafePath(path.display().to_string()));
        }
        count += 1;
        let rel = normal(&path);
        let header = entry.header();
        let kind = header.entry_type();
        let mtime = header.mtime().unwrap_or(0);
        if rel.as_os_str().is_empty() {
            let mode = header.mode().map_err(io_err("read the root's mode"))?;
            let uid = header.uid().map_err(io_err("read the root's owner"))?;
            let gid = header.gid().map_err(io_err("read the root's group"))?;
            root_header = Some((mode, uid, gid, mtime));
            continue;
        }
        if kind == EntryType::XGlobalHeader {
            continue;
        }
        if rel == Path::new(MANIFEST) {
            let mut list = Vec::new();
            entry
                .read_to_end(&mut list)
                .map_err(io_err("read the list of paths"))?;
            manifest = Some(list);
            continue;
        }
        real_parents(root, &rel)?;
        make_way(root, &rel, kind.is_dir())?;
        if kind.is_dir() {
            times.insert(rel.clone(), (Kind::Dir, mtime));
        } else if kind.is_symlink() {
            times.insert(rel.clone(), (Kind::Link, mtime));
        } else {
            times.remove(&rel);
        }
        let unpacked = entry
            .unpack_in(root)
            .map_err(io_err(format!("unpack {}", path.display())))?;
        if !unpacked {
            return Err(ArchiveError::UnsafePath(path.display().to_string()));
        }
    }
    if let Some(list) = manifest {
        delete_unlisted(root, &parse_manifest(&list))?;
    }
    // Deepest first; an entry since replaced or deleted is left alone.
    let mut times: Vec<_> = times.into_iter().collect();
    times.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (rel, (kind, mtime)) in times {
        if real_parents(root, &rel).is_err() {
            continue;
        }
        let path = root.join(&rel);
        match (kind, fs::symlink_metadata(&path)) {
            (Kind::Dir, Ok(m)) if m.is_dir() => set_mtime(&path, mtime)?,
            (Kind::Link, Ok(m)) if m.file_type().is_symlink() => set_link_mtime(&path, mtime)?,
            _ => {}
        }
    }
    if let Some((mode, uid, gid, mtime)) = root_header {
        let (uid, gid) = (u32::try_from(uid).ok(), u32::try_from(gid).ok());
        std::os::unix::fs::chown(root, uid, gid)
            .map_err(io_err(format!("set the owner of {}", root.display())))?;
        fs::set_permissions(root, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io_err(format!("set the mode of {}", root.display())))?;
        set_mtime(root, mtime)?;
    }
    Ok(count)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Dir,
    Link,
}

/// Refuse `rel` when a directory above it (below `root`) is a symlink or not a
/// directory: nothing is ever written, removed or changed through a symlink.
fn real_parents(root: &Path, rel: &Path) -> Result<(), ArchiveError> {
    let mut at = root.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for part in &parents[..parents.len().saturating_sub(1)] {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(ArchiveError::UnsafePath(rel.display().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(format!("read {}", at.display()))(e)),
        }
    }
    Ok(())
}

/// Remove what is at `rel` unless a directory is there and `dir` (a directory entry
/// keeps the contents of the directory it replaces).
fn make_way(root: &Path, rel: &Path, dir: bool) -> Result<(), ArchiveError> {
    let path = root.join(rel);
    let removed = match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() && dir => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
        Ok(_) => fs::remove_file(&path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    removed.map_err(io_err(format!("replace {}", path.display())))
}

/// Delete every path below `root` that `keep` does not list, deepest first, never
/// following symlinks.
fn delete_unlisted(root: &Path, keep: &HashSet<PathBuf>) -> Result<(), ArchiveError> {
    let mut doomed: Vec<(PathBuf, bool)> = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel_dir) = dirs.pop() {
        let dir = root.join(&rel_dir);
        for entry in fs::read_dir(&dir).map_err(io_err(format!("read {}", dir.display())))? {
            let entry = entry.map_err(io_err(format!("read {}", dir.display())))?;
            let rel = rel_dir.join(entry.file_name());
            let is_dir = entry
                .file_type()
                .map_err(io_err(format!("read {}", root.join(&rel).display())))?
                .is_dir();
            if is_dir {
                dirs.push(rel.clone());
            }
            if !keep.contains(&rel) {
                doomed.push((rel, is_dir));
            }
        }
    }
    doomed.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (rel, is_dir) in doomed {
        let path = root.join(&rel);
        let removed = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("delete {}", path.display()))(e)),
        }
    }
    Ok(())
}
