//! The tar threads' side of a transfer: bytes to upload chunks ([`ChunkWriter`]) and
//! downloaded chunks to bytes ([`ChunkReader`]), through bounded channels.

use std::io::{self, Read, Write};

use shoal_proto::pb;
use tokio::sync::mpsc;

use super::CHUNK_BYTES;

/// The tar thread's output as upload chunks of [`CHUNK_BYTES`].
pub(super) struct ChunkWriter {
    pub tx: mpsc::Sender<pb::VolumeChunk>,
    pub transfer_id: u64,
    pub buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&self, data: Vec<u8>, last: bool, sha256: &str) -> io::Result<()> {
        let chunk = pb::VolumeChunk {
            transfer_id: self.transfer_id,
            data,
            last,
            sha256: sha256.to_string(),
            ..Default::default()
        };
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload ended"))
    }

    /// Send what is left as the last chunk, with the stream's SHA-256.
    pub fn finish(mut self, sha256: &str) -> io::Result<()> {
        let rest = std::mem::take(&mut self.buf);
        self.send(rest, true, sha256)
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        while self.buf.len() >= CHUNK_BYTES {
            let rest = self.buf.split_off(CHUNK_BYTES);
            let full = std::mem::replace(&mut self.buf, rest);
            self.send(full, false, "")?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Downloaded chunks as a reader for the tar thread; ends when the sender is dropped.
pub(super) struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    pub fn new(rx: mpsc::Receiver<Vec<u8>>) -> ChunkReader {
        ChunkReader {
            rx,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.blocking_recv() {
                Some(c) => {
                    self.current = c;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
