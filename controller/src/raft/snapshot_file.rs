//! [`SnapshotFile`]: a snapshot's data as openraft handles it (`TypeConfig::SnapshotData`),
//! a file in the snapshot dir read and written in chunks, never held whole in memory.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// A snapshot file open for openraft: the stored snapshot it sends to a follower in
/// chunks, or the temp file a snapshot being received is written to. Its I/O errors name
/// the file and the operation.
#[derive(Debug)]
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
    /// Made by `begin_receiving_snapshot` for a snapshot being received: installing it
    /// renames it into place instead of copying it.
    incoming: bool,
}

impl SnapshotFile {
    /// A stored snapshot (or one being built) at `path`, open for reading.
    pub(super) fn stored(file: tokio::fs::File, path: PathBuf) -> SnapshotFile {
        SnapshotFile {
            file,
            path,
            incoming: false,
        }
    }

    /// The temp file at `path` a snapshot being received is written to.
    pub(super) fn incoming(file: tokio::fs::File, path: PathBuf) -> SnapshotFile {
        SnapshotFile {
            file,
            path,
            incoming: true,
        }
    }

    /// The file's path (a temp name while it is being received).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is a temp file made to receive a snapshot into `dir`.
    pub(super) fn is_incoming_in(&self, dir: &Path) -> bool {
        self.incoming && self.path.parent() == Some(dir)
    }

    /// The open file, once every write in flight completed, for blocking reads.
    pub(super) async fn into_std(self) -> (std::fs::File, PathBuf) {
        (self.file.into_std().await, self.path)
    }

    fn named(&self, op: &str, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{op} {}: {e}", self.path.display()))
    }

    fn named_poll<T>(&self, op: &str, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        p.map_err(|e| self.named(op, e))
    }
}

// `tokio::fs::File` is `Unpin`, so is `SnapshotFile`: each call pins the file in place.
impl AsyncRead for SnapshotFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.file).poll_read(cx, buf);
        this.named_poll("read snapshot file", p)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.file).poll_write(cx, buf);
        this.named_poll("write snapshot file", p)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.file).poll_flush(cx);
        this.named_poll("flush snapshot file", p)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.file).poll_shutdown(cx);
        this.named_poll("flush snapshot file", p)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        Pin::new(&mut this.file)
            .start_seek(position)
            .map_err(|e| this.named("seek in snapshot file", e))
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.file).poll_complete(cx);
        this.named_poll("seek in snapshot file", p)
    }
}
