//! `shoal volume backup STACK/NAME FILE [--node N]`: receive the volume's tar stream and
//! write it to FILE, all or nothing: the bytes go to `FILE.partial`, renamed to FILE only
//! once the last chunk arrived and the SHA-256 of what was received matches the one it
//! carries. A sender's error, a broken stream or Ctrl-C removes the partial file.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use futures::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use shoal_proto::pb::{BackupVolumeRequest, VolumeChunk};
use tonic::Status;

use super::super::Ctx;
use crate::args::{Format, VolumeRef};
use crate::error::ApiError;
use crate::output::volumes::human_bytes;

/// What was received, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub bytes: u64,
    pub sha256: String,
    /// The node the copy was read on, when the stream said.
    pub node: String,
}

pub async fn run(
    ctx: &mut Ctx,
    volume: &VolumeRef,
    file: &Path,
    node: Option<String>,
) -> anyhow::Result<()> {
    let req = BackupVolumeRequest {
        volume: volume.to_string(),
        node: node.clone().unwrap_or_default(),
    };
    let stream = ctx
        .client
        .call(|mut c| {
            let req = req.clone();
            async move { c.backup_volume(req).await }
        })
        .await
        .with_context(|| format!("back up volume {volume}"))?;
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let to_stdout = file.as_os_str() == "-";
    let received = if to_stdout {
        let mut out = std::io::stdout();
        tokio::select! {
            r = receive(stream, &mut out) => r,
            _ = interrupted => Err(anyhow!("interrupted")),
        }
        .and_then(|r| {
            out.flush().context("write the backup to standard output")?;
            Ok(r)
        })
    } else {
        write_file(stream, file, interrupted).await
    }
    .with_context(|| format!("back up volume {volume}"))?;
    let from = if received.node.is_empty() {
        node.unwrap_or_default()
    } else {
        received.node.clone()
    };
    let to = if to_stdout {
        "standard output".to_string()
    } else {
        file.display().to_string()
    };
    let from = if from.is_empty() {
        String::new()
    } else {
        format!(" from {from}")
    };
    eprintln!(
        "backed up {volume}{from} to {to}: {} ({} bytes), sha256 {}",
        human_bytes(received.bytes),
        received.bytes,
        received.sha256
    );
    if ctx.format == Format::Json && !to_stdout {
        let json = serde_json::json!({
            "volume": volume.to_string(),
            "node": received.node,
            "file": to,
            "bytes": received.bytes,
            "sha256": received.sha256,
        });
        crate::output::emit(ctx.format, json, String::new)?;
    }
    Ok(())
}

/// `FILE.partial`, next to FILE.
pub fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Receives `stream` into `FILE.partial` and renames it to `file` once verified; on any
/// failure, or when `cancel` completes first, the partial file is removed.
pub async fn write_file<S>(
    stream: S,
    file: &Path,
    cancel: impl Future<Output = ()>,
) -> anyhow::Result<Received>
where
    S: Stream<Item = Result<VolumeChunk, Status>> + Unpin,
{
    let partial = partial_path(file);
    let f =
        std::fs::File::create(&partial).with_context(|| format!("create {}", partial.display()))?;
    let mut out = std::io::BufWriter::new(f);
    let received = tokio::select! {
        r = receive(stream, &mut out) => r,
        _ = cancel => Err(anyhow!("interrupted")),
    };
    let result = received.and_then(|r| {
        let f = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("write {}", partial.display()))?;
        f.sync_all()
            .with_context(|| format!("write {}", partial.display()))?;
        std::fs::rename(&partial, file)
            .with_context(|| format!("rename {} to {}", partial.display(), file.display()))?;
        Ok(r)
    });
    if result.is_err() {
        if let Err(e) = std::fs::remove_file(&partial) {
            tracing::warn!(file = %partial.display(), error = %e, "cannot remove the partial backup");
        }
    }
    result
}

/// Reads `stream` to its last chunk, writing the data to `out`, and checks the SHA-256
/// of what was received against the one the last chunk carries.
pub async fn receive<S>(mut stream: S, out: &mut impl Write) -> anyhow::Result<Received>
where
    S: Stream<Item = Result<VolumeChunk, Status>> + Unpin,
{
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut node = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(ApiError::from)
            .with_context(|| format!("the stream broke after {bytes} bytes"))?;
        if node.is_empty() && !chunk.node.is_empty() {
            node = chunk.node.clone();
        }
        if !chunk.error.is_empty() {
            let on = if node.is_empty() {
                String::new()
            } else {
                format!(" on {node}")
            };
            return Err(anyhow!(
                "the copy{on} could not be read after {bytes} bytes: {}",
                chunk.error
            ));
        }
        if !chunk.data.is_empty() {
            hasher.update(&chunk.data);
            out.write_all(&chunk.data).context("write the backup")?;
            bytes += chunk.data.len() as u64;
        }
        if chunk.last {
            let got = hex::encode(hasher.finalize());
            if chunk.sha256.is_empty() {
                return Err(anyhow!(
                    "the stream's last chunk carries no SHA-256: the {bytes} bytes received cannot be verified"
                ));
            }
            if !got.eq_ignore_ascii_case(&chunk.sha256) {
                return Err(anyhow!(
                    "checksum mismatch: the {bytes} bytes received have sha256 {got}, the sender says {}",
                    chunk.sha256
                ));
            }
            return Ok(Received {
                bytes,
                sha256: got,
                node,
            });
        }
    }
    Err(anyhow!(
        "the stream ended after {bytes} bytes without its last chunk"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(b: &[u8]) -> VolumeChunk {
        VolumeChunk {
            data: b.to_vec(),
            ..Default::default()
        }
    }

    fn last(sha: &str) -> VolumeChunk {
        VolumeChunk {
            last: true,
            sha256: sha.into(),
            ..Default::default()
        }
    }

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    async fn write(
        chunks: Vec<Result<VolumeChunk, Status>>,
        file: &Path,
    ) -> anyhow::Result<Received> {
        write_file(futures::stream::iter(chunks), file, std::future::pending()).await
    }

    #[tokio::test]
    async fn a_verified_stream_becomes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg.tar");
        let header = Ok(VolumeChunk {
            node: "n2".into(),
            volume: "realapp/pgdata".into(),
            ..Default::default()
        });
        let r = write(
            vec![
                header,
                Ok(data(b"hello ")),
                Ok(data(b"world")),
                Ok(last(&sha(b"hello world"))),
            ],
            &file,
        )
        .await
        .unwrap();
        assert_eq!(
            r,
            Received {
                bytes: 11,
                sha256: sha(b"hello world"),
                node: "n2".into()
            }
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"hello world");
        assert!(!partial_path(&file).exists());
    }

    #[tokio::test]
    async fn the_last_chunk_may_carry_data_and_an_uppercase_sum() {
        let mut out = Vec::new();
        let chunks = vec![
            Ok(data(b"ab")),
            Ok(VolumeChunk {
                data: b"c".to_vec(),
                last: true,
                sha256: sha(b"abc").to_uppercase(),
                ..Default::default()
            }),
        ];
        let r = receive(futures::stream::iter(chunks), &mut out)
            .await
            .unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(r.sha256, sha(b"abc"));
    }

    #[tokio::test]
    async fn a_checksum_mismatch_removes_the_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg.tar");
        let err = write(vec![Ok(data(b"hello")), Ok(last(&sha(b"other")))], &file)
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("checksum mismatch"), "{err}");
        assert!(!file.exists());
        assert!(!partial_path(&file).exists());
    }

    #[tokio::test]
    async fn failures_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg.tar");
        let cases: Vec<(Vec<Result<VolumeChunk, Status>>, &str)> = vec![
            (
                vec![
                    Ok(data(b"x")),
                    Ok(VolumeChunk {
                        node: "n2".into(),
                        error: "docker: no such volume".into(),
                        ..Default::default()
                    }),
                ],
                "the copy on n2 could not be read after 1 bytes: docker: no such volume",
            ),
            (
                vec![Ok(data(b"x")), Err(Status::unavailable("agent gone"))],
                "the stream broke after 1 bytes",
            ),
            (
                vec![Ok(data(b"xy"))],
                "the stream ended after 2 bytes without its last chunk",
            ),
            (
                vec![Ok(data(b"xy")), Ok(last(""))],
                "the stream's last chunk carries no SHA-256",
            ),
        ];
        for (chunks, want) in cases {
            let err = write(chunks, &file).await.unwrap_err();
            assert!(err.to_string().starts_with(want), "{err:#}");
            assert!(!file.exists());
            assert!(!partial_path(&file).exists());
        }
    }

    #[tokio::test]
    async fn an_interrupted_backup_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg.tar");
        // A stream that never ends, cancelled.
        let stream = futures::stream::iter(vec![Ok(data(b"x"))]).chain(futures::stream::pending());
        let err = write_file(stream, &file, async {}).await.unwrap_err();
        assert_eq!(err.to_string(), "interrupted");
        assert!(!partial_path(&file).exists());
        assert!(!file.exists());
    }

    #[tokio::test]
    async fn an_existing_file_is_kept_until_the_new_one_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg.tar");
        std::fs::write(&file, b"old").unwrap();
        write(vec![Ok(data(b"new")), Ok(last(&sha(b"bad")))], &file)
            .await
            .unwrap_err();
        assert_eq!(std::fs::read(&file).unwrap(), b"old");
        write(vec![Ok(data(b"new")), Ok(last(&sha(b"new")))], &file)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
    }
}
