//! A volume's contents as a tar stream, and back. Pure file-system work on blocking
//! threads' terms (std I/O only): [`pack`] writes a directory as a tar stream and returns
//! its size and SHA-256; [`pack_frozen`] does it in two passes around a freeze (see
//! below); [`unpack`] writes a tar stream into a directory, refusing any entry that
//! would land outside it.
//!
//! Why the `tar` crate: it is the tar implementation of the Rust ecosystem (cargo uses
//! it), writes GNU/ustar headers with modes, owners and mtimes, stores symlinks as
//! symlinks, and its `unpack_in` already refuses to write through a symlink out of the
//! target; `sha2` is RustCrypto's SHA-256.
//!
//! Paths in the stream are relative to the volume's root; the root itself is the entry
//! `./`, so the root's mode and owner travel too (a database's data directory is often
//! `0700` and owned by its user). Hard links are stored as separate files; sockets are
//! left out (they mean nothing without their process).
//!
//! **Frozen streams.** [`pack_frozen`] writes the whole volume (pass 1) while its
//! containers run, calls `freeze`, then appends to the same stream the entries that
//! changed since pass 1 (pass 2) and a last regular file [`MANIFEST`] at the root
//! listing every path present during pass 2, then calls `thaw`. [`unpack`] applies the
//! entries in order (a later entry for a path replaces the earlier one) and, when the
//! stream has a manifest, deletes what it does not list: the result is the volume as it
//! was while frozen. A file named [`MANIFEST`] at a volume's root is never packed.

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

/// What went wrong packing or unpacking a volume.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An entry is absolute or goes up (`..`): the stream is refused.
    #[error("unsafe path in the archive: {0:?} (absolute or with `..`)")]
    UnsafePath(String),
    /// Pausing the volume's containers between the passes failed (their words).
    #[error("{0}")]
    Freeze(String),
    #[error("checksum mismatch: expected {expected}, got {got}")]
    ChecksumMismatch { expected: String, got: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let what = what.into();
    move |source| ArchiveError::Io { what, source }
}

/// Size and SHA-256 of a tar stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// A writer that counts and hashes what goes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn finish(self) -> (W, Digest) {
        let digest = Digest {
            bytes: self.bytes,
            sha256: hex::encode(self.hasher.finalize()),
        };
        (self.inner, digest)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `Ok` when `got` is `expected` (hex, any case).
pub fn verify(expected: &str, got: &str) -> Result<(), ArchiveError> {
    if expected.eq_ignore_ascii_case(got) {
        Ok(())
    } else {
        Err(ArchiveError::ChecksumMismatch {
            expected: expected.to_string(),
            got: got.to_string(),
        })
    }
}

mod pack;
mod unpack;

pub use pack::{pack, pack_frozen};
pub use unpack::unpack;

/// The entry closing a frozen stream: the newline-separated paths present during its
/// second pass, relative as in the stream (a `\` in a name is written `\\`, a newline
/// `\n`).
pub const MANIFEST: &str = ".shoal-freeze-paths";

/// Whether `path` (from an archive) stays below the directory it is unpacked in.
fn is_safe(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// `path` without its `.` components (the root is the empty path).
fn normal(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// One manifest line for `path` (without its newline).
fn escape(path: &Path, out: &mut Vec<u8>) {
    for &b in path.as_os_str().as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b => out.push(b),
        }
    }
}

/// The paths a manifest lists.
fn parse_manifest(data: &[u8]) -> std::collections::HashSet<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let mut paths = std::collections::HashSet::new();
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut name = Vec::with_capacity(line.len());
        let mut bytes = line.iter();
        while let Some(&b) = bytes.next() {
            match (b, bytes.as_slice().first()) {
                (b'\\', Some(b'n')) => {
                    name.push(b'\n');
                    bytes.next();
                }
                (b'\\', Some(b'\\')) => {
                    name.push(b'\\');
                    bytes.next();
                }
                (b, _) => name.push(b),
            }
        }
        paths.insert(normal(Path::new(&std::ffi::OsString::from_vec(name))));
    }
    paths
}

fn set_mtime(dir: &Path, mtime: u64) -> Result<(), ArchiveError> {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime);
    fs::File::open(dir)
        .and_then(|f| f.set_modified(time))
        .map_err(io_err(format!("set the mtime of {}", dir.display())))
}

fn set_link_mtime(link: &Path, mtime: u64) -> Result<(), ArchiveError> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
    utimensat(None, link, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| io_err(format!("set the mtime of {}", link.display()))(io::Error::from(e)))
}

/// The sum of the sizes of the regular files below `root`, not following symlinks,
/// visiting at most `max_entries` entries (beyond them, the sum so far: a lower bound).
/// `None` when `root` cannot be read (e.g. the engine runs on another host).
pub fn dir_size(root: &Path, max_entries: u64) -> Option<u64> {
    let mut total = 0u64;
    let mut seen = 0u64;
    let mut dirs = vec![root.to_path_buf()];
    let mut first = true;
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(_) if !first => continue,
            Err(_) => return None,
        };
        first = false;
        for entry in entries.flatten() {
            seen += 1;
            if seen > max_entries {
                return Some(total);
            }
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.size());
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests;
