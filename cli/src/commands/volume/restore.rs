//! `shoal volume restore STACK/NAME FILE [--node N]`: stream a tar written by `shoal
//! volume backup` (FILE, or standard input for `-`) to the controller: a first chunk
//! naming the volume and the node, then the data in 256 KiB chunks, then a last chunk
//! with the SHA-256 of everything sent.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context as _};
use futures::Stream;
use sha2::{Digest as _, Sha256};
use shoal_proto::pb::{VolumeChunk, VolumesRequest};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tonic::Status;

use super::super::Ctx;
use crate::args::VolumeRef;
use crate::error::UsageError;
use crate::output;
use crate::output::volumes::human_bytes;

/// The size of each data chunk.
pub const CHUNK: usize = 256 * 1024;

type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// What the stream sent (filled in as it goes).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sent {
    pub bytes: u64,
    /// Set once the last chunk was sent.
    pub sha256: Option<String>,
    /// Reading the input failed (the stream then ended with an error chunk).
    pub error: Option<String>,
}

pub async fn run(
    ctx: &mut Ctx,
    volume: &VolumeRef,
    file: &Path,
    node: Option<String>,
) -> anyhow::Result<()> {
    let from_stdin = file.as_os_str() == "-";
    let what = if from_stdin {
        "standard input".to_string()
    } else {
        check_file(file)?;
        file.display().to_string()
    };
    // Find the leader first: a stream cannot be sent twice (standard input), so it
    // should not be spent on a follower's redirect.
    let stack = VolumesRequest {
        stack: volume.stack.clone(),
    };
    if let Err(e) = ctx
        .client
        .call(|mut c| {
            let req = stack.clone();
            async move { c.volumes(req).await }
        })
        .await
    {
        tracing::debug!(error = %format!("{e:#}"), "cannot list the stack's volumes");
    }
    let mut stdin: Option<Reader> = from_stdin.then(|| Box::new(tokio::io::stdin()) as Reader);
    let mut sent: Option<Arc<Mutex<Sent>>> = None;
    let node_name = node.clone().unwrap_or_default();
    let reply = ctx
        .client
        .call_upload(|mut c| {
            let reader: Result<Reader, Status> = if from_stdin {
                stdin.take().ok_or_else(|| {
                    Status::aborted(
                        "standard input was already sent to a controller that did not take it; \
                         run the restore again",
                    )
                })
            } else {
                std::fs::File::open(file)
                    .map(|f| Box::new(tokio::fs::File::from_std(f)) as Reader)
                    .map_err(|e| Status::aborted(format!("open {}: {e}", file.display())))
            };
            let tracker = Arc::new(Mutex::new(Sent::default()));
            sent = Some(tracker.clone());
            let header = VolumeChunk {
                volume: volume.to_string(),
                node: node_name.clone(),
                ..Default::default()
            };
            async move {
                let stream = chunks(header, reader?, tracker);
                c.restore_volume(stream).await
            }
        })
        .await;
    let sent = sent
        .map(|s| s.lock().map(|s| s.clone()).unwrap_or_default())
        .unwrap_or_default();
    if let Some(e) = &sent.error {
        return Err(anyhow!("read {what}: {e}"))
            .with_context(|| format!("restore volume {volume}"));
    }
    let reply = reply.with_context(|| format!("restore volume {volume} from {what}"))?;
    let ours = sent.sha256.unwrap_or_default();
    if (!reply.sha256.is_empty() && !reply.sha256.eq_ignore_ascii_case(&ours))
        || reply.bytes != sent.bytes
    {
        return Err(anyhow!(
            "restore volume {volume}: the controller received {} bytes with sha256 {}, \
             but {} bytes with sha256 {ours} were sent; run the restore again",
            reply.bytes,
            reply.sha256,
            sent.bytes
        ));
    }
    let json = serde_json::json!({
        "volume": volume.to_string(),
        "node": reply.node,
        "bytes": reply.bytes,
        "sha256": ours,
    });
    output::emit(ctx.format, json, || {
        format!(
            "restored {volume} on {} from {what}: {} ({} bytes), sha256 {ours}\n",
            reply.node,
            human_bytes(reply.bytes),
            reply.bytes
        )
    })
}

/// FILE can be read and starts like a tar (a ustar header, or the zero block of an
/// empty archive); else a usage error.
fn check_file(file: &Path) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(file)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
    let mut block = Vec::with_capacity(512);
    (&mut f)
        .take(512)
        .read_to_end(&mut block)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
    looks_like_tar(&block).map_err(|why| {
        UsageError(format!(
            "{} is not a tar as written by shoal volume backup: {why}",
            file.display()
        ))
        .into()
    })
}

/// The first 512-byte block of a tar: a header with the `ustar` magic (POSIX and GNU),
/// or zeros (an empty archive).
pub fn looks_like_tar(block: &[u8]) -> Result<(), &'static str> {
    if block.len() < 512 {
        return Err("it is shorter than one tar block (512 bytes)");
    }
    if &block[257..262] == b"ustar" || block[..512].iter().all(|&b| b == 0) {
        Ok(())
    } else {
        Err("its first block is not a tar header")
    }
}

/// The request stream: `header`, then `reader`'s bytes in [`CHUNK`]-sized chunks, then a
/// last chunk with the SHA-256 of them all; a read error ends it with an error chunk.
/// `sent` follows what was sent.
pub fn chunks(
    header: VolumeChunk,
    reader: Reader,
    sent: Arc<Mutex<Sent>>,
) -> impl Stream<Item = VolumeChunk> + Send + 'static {
    enum State {
        Header(VolumeChunk, Reader),
        Data(Reader, Sha256),
        Done,
    }
    futures::stream::unfold(
        (State::Header(header, reader), sent),
        |(state, sent)| async move {
            match state {
                State::Header(h, r) => Some((h, (State::Data(r, Sha256::new()), sent))),
                State::Data(mut r, mut hasher) => match fill(&mut r).await {
                    Ok(buf) if buf.is_empty() => {
                        let sum = hex::encode(hasher.finalize());
                        record(&sent, |s| s.sha256 = Some(sum.clone()));
                        let last = VolumeChunk {
                            last: true,
                            sha256: sum,
                            ..Default::default()
                        };
                        Some((last, (State::Done, sent)))
                    }
                    Ok(buf) => {
                        hasher.update(&buf);
                        let n = buf.len() as u64;
                        record(&sent, |s| s.bytes += n);
                        let chunk = VolumeChunk {
                            data: buf,
                            ..Default::default()
                        };
                        Some((chunk, (State::Data(r, hasher), sent)))
                    }
                    Err(e) => {
                        let error = e.to_string();
                        record(&sent, |s| s.error = Some(error.clone()));
                        let chunk = VolumeChunk {
                            error,
                            ..Default::default()
                        };
                        Some((chunk, (State::Done, sent)))
                    }
                },
                State::Done => None,
            }
        },
    )
}

fn record(sent: &Mutex<Sent>, f: impl FnOnce(&mut Sent)) {
    if let Ok(mut s) = sent.lock() {
        f(&mut s);
    }
}

/// Up to [`CHUNK`] bytes: fewer only at the end of the input (none: the end).
async fn fill(r: &mut Reader) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0;
    while n < CHUNK {
        let got = r.read(&mut buf[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    fn header() -> VolumeChunk {
        VolumeChunk {
            volume: "realapp/pgdata".into(),
            node: "n3".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn header_then_full_chunks_then_the_sum() {
        let input: Vec<u8> = (0..(2 * CHUNK + 10)).map(|i| i as u8).collect();
        let sent = Arc::new(Mutex::new(Sent::default()));
        let reader: Reader = Box::new(std::io::Cursor::new(input.clone()));
        let got: Vec<VolumeChunk> = chunks(header(), reader, sent.clone()).collect().await;
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], header());
        assert_eq!(
            got[1..4].iter().map(|c| c.data.len()).collect::<Vec<_>>(),
            vec![CHUNK, CHUNK, 10]
        );
        assert!(got[1..4].iter().all(|c| !c.last && c.volume.is_empty()));
        let sum = hex::encode(Sha256::digest(&input));
        assert_eq!(
            got[4],
            VolumeChunk {
                last: true,
                sha256: sum.clone(),
                ..Default::default()
            }
        );
        assert_eq!(
            *sent.lock().unwrap(),
            Sent {
                bytes: input.len() as u64,
                sha256: Some(sum),
                error: None
            }
        );
    }

    #[tokio::test]
    async fn an_empty_input_is_a_header_and_a_last_chunk() {
        let sent = Arc::new(Mutex::new(Sent::default()));
        let reader: Reader = Box::new(tokio::io::empty());
        let got: Vec<VolumeChunk> = chunks(header(), reader, sent).collect().await;
        assert_eq!(got.len(), 2);
        assert!(got[1].last);
        assert_eq!(got[1].sha256, hex::encode(Sha256::digest(b"")));
    }

    #[test]
    fn tar_headers() {
        let mut block = vec![0u8; 512];
        assert_eq!(looks_like_tar(&block), Ok(()));
        block[0] = b'a';
        assert!(looks_like_tar(&block).is_err());
        block[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(looks_like_tar(&block), Ok(()));
        assert!(looks_like_tar(b"short").is_err());
    }
}
