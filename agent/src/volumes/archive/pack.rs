//! Writing a volume as a tar stream: in one pass ([`pack`]), or in two around a freeze
//! ([`pack_frozen`]), the second pass sending only what changed since the first.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tar::{Builder, EntryType, Header, HeaderMode};

use super::{escape, io_err, ArchiveError, Digest, HashingWriter, MANIFEST};

/// Entries modified this close to (or after) the start of pass 1 are sent again in
/// pass 2 whatever their stamps say: a file's mtime only moves with the file system's
/// clock (a tick of a few ms, a second on some file systems), so a write landing in the
/// same tick as pass 1's look at it can leave size, mtime and ctime as they were.
const RACY: Duration = Duration::from_secs(2);

/// Write the contents of `root` to `out` as a tar stream (entries in name order,
/// parents before children, symlinks never followed); returns `out` and the stream's
/// size and SHA-256.
pub fn pack<W: Write>(root: &Path, out: W) -> Result<(W, Digest), ArchiveError> {
    let mut packer = Packer::new(root, out);
    walk(root, &mut |rel, path, meta| {
        packer.append(rel, path, meta).map(drop)
    })?;
    packer.finish()
}

/// A crash-consistent copy of `root` with its writers paused only briefly: pass 1 writes
/// the whole volume to `out` as [`pack`] does, then `freeze` is called (it pauses the
/// writers; its error ends the stream), then pass 2 appends to the same stream every
/// entry that is new or changed since pass 1 (type, size, mtime, ctime, mode, owner,
/// inode or link target; directories too), then the entry [`MANIFEST`] listing every
/// path present, and `thaw` is called once pass 2 has read the volume, also when it
/// failed. [`super::unpack`] of the stream gives the volume as it was while frozen.
pub fn pack_frozen<W: Write>(
    root: &Path,
    out: W,
    freeze: impl FnOnce() -> Result<(), String>,
    thaw: impl FnOnce(),
) -> Result<(W, Digest), ArchiveError> {
    let since = SystemTime::now()
        .checked_sub(RACY)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut packer = Packer::new(root, out);
    // What pass 1 sent, and whether it must go again anyway.
    let mut sent: HashMap<PathBuf, (Stamp, bool)> = HashMap::new();
    walk(root, &mut |rel, path, meta| {
        if packer.append(rel, path, meta)? {
            let racy = meta.modified().map_or(true, |m| m >= since);
            sent.insert(rel.to_path_buf(), (Stamp::of(path, meta), racy));
        }
        Ok(())
    })?;
    freeze().map_err(ArchiveError::Freeze)?;
    let pass2 = second_pass(root, &mut packer, &sent);
    thaw();
    pass2?;
    packer.finish()
}

/// Append what changed since `sent`, then the manifest.
fn second_pass<W: Write>(
    root: &Path,
    packer: &mut Packer<'_, W>,
    sent: &HashMap<PathBuf, (Stamp, bool)>,
) -> Result<(), ArchiveError> {
    let mut manifest = Vec::new();
    walk(root, &mut |rel, path, meta| {
        if !rel.as_os_str().is_empty() {
            escape(rel, &mut manifest);
            manifest.push(b'\n');
        }
        let changed = match sent.get(rel) {
            Some((stamp, racy)) => *racy || *stamp != Stamp::of(path, meta),
            None => true,
        };
        if changed {
            packer.append(rel, path, meta)?;
        }
        Ok(())
    })?;
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_mode(0o600);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(manifest.len() as u64);
    packer
        .builder
        .append_data(&mut header, MANIFEST, &manifest[..])
        .map_err(io_err("write the list of paths"))
}

/// What pass 1 saw of an entry, to tell in pass 2 whether it changed.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    /// Type and permission bits.
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    uid: u32,
    gid: u32,
    link: Option<PathBuf>,
}

impl Stamp {
    fn of(path: &Path, meta: &fs::Metadata) -> Stamp {
        Stamp {
            mode: meta.mode(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            uid: meta.uid(),
            gid: meta.gid(),
            link: meta
                .file_type()
                .is_symlink()
                .then(|| fs::read_link(path).ok())
                .flatten(),
        }
    }
}

type Visit<'a> = dyn FnMut(&Path, &Path, &fs::Metadata) -> Result<(), ArchiveError> + 'a;

/// Call `visit(rel, path, meta)` on `root` (as the empty path) and everything below it:
/// entries in name order, a directory's entries before its subdirectories', symlinks
/// never followed. Sockets, a [`MANIFEST`] at the root, and what vanishes while we walk
/// are left out.
fn walk(root: &Path, visit: &mut Visit<'_>) -> Result<(), ArchiveError> {
    let meta = fs::symlink_metadata(root).map_err(io_err(format!("read {}", root.display())))?;
    if !meta.is_dir() {
        return Err(ArchiveError::Io {
            what: format!("read {}", root.display()),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    visit(Path::new(""), root, &meta)?;
    // Explicit stack: a deep tree must not overflow ours.
    let mut dirs: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = dirs.pop() {
        let dir = root.join(&rel_dir);
        let top = rel_dir.as_os_str().is_empty();
        let listed = fs::read_dir(&dir).and_then(|d| {
            d.map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
        });
        let mut names = match listed {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !top => continue,
            Err(e) => return Err(io_err(format!("read {}", dir.display()))(e)),
        };
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            if top && name == MANIFEST {
                continue;
            }
            let rel = rel_dir.join(&name);
            let path = root.join(&rel);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
            };
            if meta.file_type().is_socket() {
                continue;
            }
            visit(&rel, &path, &meta)?;
            if meta.is_dir() {
                subdirs.push(rel);
            }
        }
        dirs.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// A tar stream being written, counted and hashed.
struct Packer<'a, W: Write> {
    root: &'a Path,
    builder: Builder<HashingWriter<W>>,
}

impl<'a, W: Write> Packer<'a, W> {
    fn new(root: &'a Path, out: W) -> Packer<'a, W> {
        let mut builder = Builder::new(HashingWriter::new(out));
        builder.mode(HeaderMode::Complete);
        builder.follow_symlinks(false);
        Packer { root, builder }
    }

    /// Append the entry at `path` (`rel` in the stream; the root when empty). `false`:
    /// it vanished before it could be read, nothing was written.
    fn append(
        &mut self,
        rel: &Path,
        path: &Path,
        meta: &fs::Metadata,
    ) -> Result<bool, ArchiveError> {
        let written = if rel.as_os_str().is_empty() {
            self.builder.append_path_with_name(self.root, ".")
        } else if meta.is_file() {
            append_file(&mut self.builder, path, rel, meta)
        } else {
            self.builder.append_path_with_name(path, rel)
        };
        match written {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(format!("archive {}", path.display()))(e)),
        }
    }

    fn finish(self) -> Result<(W, Digest), ArchiveError> {
        let hashing = self
            .builder
            .into_inner()
            .map_err(io_err("finish the archive"))?;
        Ok(hashing.finish())
    }
}

/// A regular file, exactly as long as its header says even if it changes meanwhile.
/// A file gone before it is opened is `NotFound`, with nothing written.
fn append_file<W: Write>(
    builder: &mut Builder<W>,
    path: &Path,
    rel: &Path,
    meta: &fs::Metadata,
) -> io::Result<()> {
    let file = fs::File::open(path)?;
    let mut header = Header::new_gnu();
    header.set_metadata_in_mode(meta, HeaderMode::Complete);
    header.set_entry_type(EntryType::Regular);
    let len = meta.len();
    let data = file.take(len).chain(io::repeat(0)).take(len);
    builder.append_data(&mut header, rel, data)
}
