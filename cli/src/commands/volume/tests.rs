//! The `shoal volume` commands and `shoal rm --volumes` end to end, against the
//! in-process fake controller.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use shoal_proto::pb::{self, MoveStatusReply, VolumeChunk, VolumeRow};

use super::restore::CHUNK;
use crate::args::{RmArgs, VolumeCommand, VolumeMoveArgs, VolumeRef};
use crate::error::{exit_code, EXIT_FAILED, EXIT_USAGE};
use crate::fake_control::{lock, served, FakeVolumes, Served};

async fn fixture(rows: Vec<VolumeRow>) -> Served {
    let fake = Arc::new(FakeVolumes::default());
    *lock(&fake.rows) = rows;
    served(fake, false).await
}

fn pgdata() -> VolumeRef {
    VolumeRef {
        stack: "realapp".into(),
        name: "pgdata".into(),
    }
}

fn row(node: &str, used_by: &[&str]) -> VolumeRow {
    VolumeRow {
        stack: "realapp".into(),
        name: "pgdata".into(),
        node: node.into(),
        size_bytes: 4096,
        used_by: used_by.iter().map(|s| s.to_string()).collect(),
        state: "live".into(),
        ..Default::default()
    }
}

fn status(phase: &str, bytes: u64) -> MoveStatusReply {
    MoveStatusReply {
        id: 9,
        volume: "realapp/pgdata".into(),
        from: "n2".into(),
        to: "n3".into(),
        phase: phase.into(),
        bytes,
        elapsed_ms: 1000,
        sha256: if phase == "done" {
            "ab12".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn ls_and_inspect() {
    let mut f = fixture(vec![row("n2", &["realapp/db"]), row("n3", &[])]).await;
    let rows = super::list(&mut f.ctx, "realapp").await.unwrap();
    assert_eq!(rows.len(), 2);
    super::run(VolumeCommand::Ls { stack: None }, &mut f.ctx)
        .await
        .unwrap();
    super::run(VolumeCommand::Inspect { volume: pgdata() }, &mut f.ctx)
        .await
        .unwrap();
    let err = super::run(
        VolumeCommand::Inspect {
            volume: VolumeRef {
                stack: "realapp".into(),
                name: "nope".into(),
            },
        },
        &mut f.ctx,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no volume realapp/nope: see shoal volume ls"
    );
    assert_eq!(exit_code(&err), EXIT_FAILED);
}

#[tokio::test]
async fn rm_says_the_controllers_refusal() {
    let mut f = fixture(vec![row("n2", &["realapp/db"]), row("n3", &[])]).await;
    let err = super::run(
        VolumeCommand::Rm {
            volume: pgdata(),
            node: None,
        },
        &mut f.ctx,
    )
    .await
    .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "remove volume realapp/pgdata: realapp/pgdata on n2 is in use by realapp/db: \
         remove or scale them first"
    );
    assert_eq!(exit_code(&err), EXIT_FAILED);
    super::run(
        VolumeCommand::Rm {
            volume: pgdata(),
            node: Some("n3".into()),
        },
        &mut f.ctx,
    )
    .await
    .unwrap();
    let removed = lock(&f.fake.removed).clone();
    assert_eq!(
        removed.last(),
        Some(&pb::RemoveVolumeRequest {
            volume: "realapp/pgdata".into(),
            node: "n3".into()
        })
    );
    assert_eq!(
        super::removed_line(&pgdata(), &["n3".into()]),
        "realapp/pgdata removed from n3\n"
    );
}

fn move_args(timeout_ms: u64) -> VolumeMoveArgs {
    VolumeMoveArgs {
        volume: pgdata(),
        to: "n3".into(),
        detach: false,
        timeout: std::time::Duration::from_millis(timeout_ms),
    }
}

#[tokio::test]
async fn a_move_is_followed_to_its_end() {
    let mut f = fixture(vec![row("n2", &["realapp/db"])]).await;
    *lock(&f.fake.moves) = vec![
        status("stopping", 0),
        status("copying", 1 << 20),
        status("starting", 2 << 20),
        status("done", 2 << 20),
    ];
    super::moving::run(move_args(60_000), &mut f.ctx)
        .await
        .unwrap();
    assert_eq!(lock(&f.fake.moves).len(), 1);
}

#[tokio::test]
async fn a_failed_move_says_the_source_is_intact() {
    let mut f = fixture(vec![row("n2", &["realapp/db"])]).await;
    let mut failed = status("failed", 1 << 20);
    failed.error = "the agent on n3 went away".into();
    *lock(&f.fake.moves) = vec![status("copying", 0), failed];
    let err = super::moving::run(move_args(60_000), &mut f.ctx)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "moving realapp/pgdata from n2 to n3 failed: the agent on n3 went away; the copy on \
         n2 is untouched; run the move again"
    );
    assert_eq!(exit_code(&err), EXIT_FAILED);
}

#[tokio::test]
async fn a_move_is_followed_for_a_bounded_time() {
    let mut f = fixture(vec![row("n2", &["realapp/db"])]).await;
    *lock(&f.fake.moves) = vec![status("copying", 5)];
    let err = super::moving::run(move_args(700), &mut f.ctx)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("realapp/pgdata is still moving after 700ms (phase copying, 5 B copied)"),
        "{err}"
    );
    assert_eq!(exit_code(&err), EXIT_FAILED);
}

fn data(b: &[u8]) -> VolumeChunk {
    VolumeChunk {
        data: b.to_vec(),
        ..Default::default()
    }
}

fn last(sum: String) -> VolumeChunk {
    VolumeChunk {
        last: true,
        sha256: sum,
        ..Default::default()
    }
}

#[tokio::test]
async fn backup_writes_the_verified_file() {
    let mut f = fixture(vec![row("n2", &[])]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg.tar");
    *lock(&f.fake.backup) = vec![
        Ok(VolumeChunk {
            node: "n2".into(),
            ..Default::default()
        }),
        Ok(data(b"tar ")),
        Ok(data(b"bytes")),
        Ok(last(hex::encode(Sha256::digest(b"tar bytes")))),
    ];
    super::backup::run(&mut f.ctx, &pgdata(), &file, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"tar bytes");

    // A sender's error: no file, not even a partial one.
    let file = dir.path().join("broken.tar");
    *lock(&f.fake.backup) = vec![
        Ok(data(b"tar ")),
        Ok(VolumeChunk {
            error: "n2 is down".into(),
            ..Default::default()
        }),
    ];
    let err = super::backup::run(&mut f.ctx, &pgdata(), &file, Some("n2".into()))
        .await
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "back up volume realapp/pgdata: the copy could not be read after 4 bytes: n2 is down"
    );
    assert_eq!(exit_code(&err), EXIT_FAILED);
    assert!(!file.exists());
    assert!(!super::backup::partial_path(&file).exists());

    // A stream that ends early.
    *lock(&f.fake.backup) = vec![Ok(data(b"tar "))];
    let err = super::backup::run(&mut f.ctx, &pgdata(), &file, None)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("without its last chunk"),
        "{err:#}"
    );
    assert!(!file.exists());
    assert!(!super::backup::partial_path(&file).exists());
}

#[tokio::test]
async fn restore_streams_the_file_in_chunks() {
    let mut f = fixture(vec![row("n2", &[])]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg.tar");
    let mut tar = vec![0u8; CHUNK + 1000];
    tar[257..263].copy_from_slice(b"ustar\0");
    std::fs::write(&file, &tar).unwrap();
    super::restore::run(&mut f.ctx, &pgdata(), &file, Some("n3".into()))
        .await
        .unwrap();
    let got = lock(&f.fake.restored).clone();
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[0],
        VolumeChunk {
            volume: "realapp/pgdata".into(),
            node: "n3".into(),
            ..Default::default()
        }
    );
    assert_eq!(got[1].data.len(), CHUNK);
    assert_eq!(got[2].data.len(), 1000);
    assert!(got[3].last);
    assert_eq!(got[3].sha256, hex::encode(Sha256::digest(&tar)));

    // Not a tar: a usage error, nothing sent.
    let bad = dir.path().join("notes.txt");
    std::fs::write(&bad, b"hello").unwrap();
    lock(&f.fake.restored).clear();
    let err = super::restore::run(&mut f.ctx, &pgdata(), &bad, None)
        .await
        .unwrap_err();
    assert_eq!(exit_code(&err), EXIT_USAGE);
    assert!(err.to_string().contains("is not a tar"), "{err}");
    assert!(lock(&f.fake.restored).is_empty());
    let missing = dir.path().join("missing.tar");
    let err = super::restore::run(&mut f.ctx, &pgdata(), &missing, None)
        .await
        .unwrap_err();
    assert_eq!(exit_code(&err), EXIT_USAGE);
}

#[tokio::test]
async fn rm_stack_sends_whether_to_remove_volumes() {
    let mut f = fixture(vec![row("n2", &[])]).await;
    for volumes in [false, true] {
        crate::commands::rm::run(
            RmArgs {
                stack: "realapp".into(),
                volumes,
            },
            &mut f.ctx,
        )
        .await
        .unwrap();
    }
    let sent: Vec<bool> = lock(&f.fake.removed_stacks)
        .iter()
        .map(|r| r.volumes)
        .collect();
    assert_eq!(sent, vec![false, true]);
}
