//! Snapshot files: a snapshot's data is a file of `DATA_DIR/raft/snapshots`, recorded in
//! sled. A data dir written when snapshots were kept in sled still starts and moves its
//! snapshot to a file; a crash's leftovers are removed on open; a missing or newer file is
//! a clear error; a received snapshot is decoded and checked before it is installed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::raft::{snapshot_dir, snapshot_files, timings, ADDR};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use shoal_controller::raft::state_machine::{encode_snapshot, SNAPSHOT_FORMAT};
use shoal_controller::raft::{initialize_single, open, propose, trees, RaftNode, StateMachine};
use shoal_controller::state::Command;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(dir: &Path) -> RaftNode {
    open(dir, 1, ADDR.to_string(), timings())
        .await
        .expect("open raft node")
}

async fn stop(node: RaftNode) {
    node.raft.shutdown().await.expect("shutdown");
    assert!(node.wait_closed(Duration::from_secs(10)).await);
}

/// A one-member group with a few commands applied and a snapshot of them, stopped.
async fn node_with_snapshot(dir: &Path) -> shoal_controller::raft::state_machine::Applied {
    let node = start(dir).await;
    initialize_single(&node).await.unwrap();
    for i in 0..5 {
        propose(
            &node.raft,
            Command::Scale {
                service: "web/api".into(),
                replicas: i,
            },
        )
        .await
        .unwrap();
    }
    snapshot_now(&node).await;
    let applied = node.state.applied();
    stop(node).await;
    applied
}

async fn snapshot_now(node: &RaftNode) {
    let index = node.state.last_applied().unwrap().index;
    node.raft.trigger().snapshot().await.unwrap();
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= index),
            "snapshot built",
        )
        .await
        .unwrap();
}

/// The snapshot record: (`file`, `data`) as sled holds them.
fn record(dir: &Path) -> (Option<String>, Option<Vec<u8>>) {
    let db = sled::open(dir.join("raft")).unwrap();
    let tree = db.open_tree(trees::SNAPSHOTS).unwrap();
    let file = tree
        .get("file")
        .unwrap()
        .map(|v| String::from_utf8(v.to_vec()).unwrap());
    let data = tree.get("data").unwrap().map(|v| v.to_vec());
    (file, data)
}

/// Rewrites a stopped node's data dir as a shoal before snapshot files left it: the
/// snapshot's bytes in sled under `data`, no `file`, no snapshot dir.
fn as_before_snapshot_files(dir: &Path) -> Vec<u8> {
    let db = sled::open(dir.join("raft")).unwrap();
    let tree = db.open_tree(trees::SNAPSHOTS).unwrap();
    let name = tree.get("file").unwrap().expect("a recorded file");
    let path = snapshot_dir(dir).join(std::str::from_utf8(&name).unwrap());
    let bytes = std::fs::read(&path).unwrap();
    let mut batch = sled::Batch::default();
    batch.insert("data", bytes.clone());
    batch.remove("file");
    tree.apply_batch(batch).unwrap();
    db.flush().unwrap();
    std::fs::remove_dir_all(snapshot_dir(dir)).unwrap();
    bytes
}

#[tokio::test]
async fn a_data_dir_with_its_snapshot_in_sled_loads_and_the_next_snapshot_moves_it() {
    let dir = TempDir::new().unwrap();
    let before = node_with_snapshot(dir.path()).await;
    let bytes = as_before_snapshot_files(dir.path());

    // Opened alone (as `--force-new-cluster` reads a stopped node), nothing is written.
    let db = sled::open(dir.path().join("raft")).unwrap();
    let mut sm = StateMachine::open(&db, dir.path()).expect("a snapshot in sled loads");
    assert_eq!(sm.handle().applied(), before);
    assert_eq!(sm.handle().snapshot_bytes(), bytes.len() as u64);
    assert!(snapshot_files(dir.path()).is_empty());

    // The next snapshot saved is a file, and the bytes in sled go.
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    drop((sm, db));
    let (file, data) = record(dir.path());
    assert_eq!(data, None, "the bytes in sled are removed");
    assert_eq!(file, Some(format!("{}.json", built.meta.snapshot_id)));
    assert_eq!(snapshot_files(dir.path()), vec![file.unwrap()]);

    let node = start(dir.path()).await;
    assert_eq!(node.state.applied(), before);
    stop(node).await;
}

#[tokio::test]
async fn a_node_on_a_data_dir_with_its_snapshot_in_sled_starts_and_serves_it_from_a_file() {
    let dir = TempDir::new().unwrap();
    let before = node_with_snapshot(dir.path()).await;
    let bytes = as_before_snapshot_files(dir.path());

    let node = start(dir.path()).await;
    assert_eq!(node.state.applied(), before);
    // What a follower would be sent: the same bytes, read from a file.
    let mut current = node.raft.get_snapshot().await.unwrap().expect("a snapshot");
    assert_eq!(current.meta.last_log_id, before.last_applied);
    let mut sent = Vec::new();
    current.snapshot.read_to_end(&mut sent).await.unwrap();
    assert_eq!(sent, bytes);
    stop(node).await;

    let (file, data) = record(dir.path());
    assert_eq!(data, None, "moved out of sled");
    assert_eq!(snapshot_files(dir.path()), vec![file.unwrap()]);
    let node = start(dir.path()).await;
    assert_eq!(node.state.applied(), before);
    stop(node).await;
}

#[tokio::test]
async fn what_a_crash_leaves_in_the_snapshot_dir_is_removed_on_open() {
    let dir = TempDir::new().unwrap();
    let before = node_with_snapshot(dir.path()).await;
    let recorded = snapshot_files(dir.path());
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let files = snapshot_dir(dir.path());
    // A build and a receive cut short, and a file renamed but never recorded.
    std::fs::write(files.join("build-0.tmp"), b"{\"format\":1,").unwrap();
    std::fs::write(files.join("incoming-3.tmp"), b"").unwrap();
    std::fs::write(files.join("T9-N9-999-0.json"), b"{}").unwrap();

    let node = start(dir.path()).await;
    assert_eq!(node.state.applied().state, before.state);
    assert_eq!(snapshot_files(dir.path()), recorded);
    stop(node).await;
}

#[tokio::test]
async fn a_missing_snapshot_file_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    node_with_snapshot(dir.path()).await;
    let (file, _) = record(dir.path());
    let path = snapshot_dir(dir.path()).join(file.unwrap());
    std::fs::remove_file(&path).unwrap();

    let err = open(dir.path(), 1, ADDR.to_string(), timings())
        .await
        .err()
        .expect("a missing snapshot must not open");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!("open raft snapshot file {}", path.display())),
        "{msg}"
    );
}

#[tokio::test]
async fn a_snapshot_file_of_a_newer_format_is_refused_saying_so() {
    let dir = TempDir::new().unwrap();
    node_with_snapshot(dir.path()).await;
    let (file, _) = record(dir.path());
    let path = snapshot_dir(dir.path()).join(file.unwrap());
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["format"] = serde_json::json!(SNAPSHOT_FORMAT + 1);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();

    let err = open(dir.path(), 1, ADDR.to_string(), timings())
        .await
        .err()
        .expect("a newer snapshot must not open");
    let msg = format!("{err:#}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("written by a newer shoal"), "{msg}");
}

/// A received snapshot goes through the temp file `begin_receiving_snapshot` gave: a good
/// one becomes the current snapshot's file; a newer format is refused and its temp file
/// removed; a receive openraft abandons for another leaves nothing behind.
#[tokio::test]
async fn a_received_snapshot_is_checked_then_recorded_as_a_file() {
    let leader_dir = TempDir::new().unwrap();
    let applied = node_with_snapshot(leader_dir.path()).await;
    let dir = TempDir::new().unwrap();
    let db = sled::open(dir.path().join("raft")).unwrap();
    let mut sm = StateMachine::open(&db, dir.path()).unwrap();
    let meta = openraft::SnapshotMeta {
        last_log_id: applied.last_applied,
        last_membership: applied.membership.clone(),
        snapshot_id: "T1-N1-7-0".into(),
    };

    let abandoned = sm.begin_receiving_snapshot().await.unwrap();
    drop(abandoned);

    let mut v: serde_json::Value =
        serde_json::from_slice(&encode_snapshot(&applied).unwrap()).unwrap();
    v["format"] = serde_json::json!(SNAPSHOT_FORMAT + 1);
    let mut newer = sm.begin_receiving_snapshot().await.unwrap();
    newer
        .write_all(&serde_json::to_vec(&v).unwrap())
        .await
        .unwrap();
    newer.shutdown().await.unwrap();
    let err = sm.install_snapshot(&meta, newer).await.unwrap_err();
    assert!(
        err.to_string().contains("written by a newer shoal"),
        "{err}"
    );
    assert!(snapshot_files(dir.path()).is_empty(), "temp files removed");
    assert_eq!(sm.handle().last_applied(), None, "nothing installed");

    let mut good = sm.begin_receiving_snapshot().await.unwrap();
    let bytes = encode_snapshot(&applied).unwrap();
    // In two chunks, the second written first, as a retried transfer may.
    let half = bytes.len() / 2;
    use tokio::io::AsyncSeekExt;
    good.seek(std::io::SeekFrom::Start(half as u64))
        .await
        .unwrap();
    good.write_all(&bytes[half..]).await.unwrap();
    good.seek(std::io::SeekFrom::Start(0)).await.unwrap();
    good.write_all(&bytes[..half]).await.unwrap();
    good.shutdown().await.unwrap();
    sm.install_snapshot(&meta, good).await.unwrap();
    assert_eq!(sm.handle().applied(), applied);
    assert_eq!(
        snapshot_files(dir.path()),
        vec!["T1-N1-7-0.json".to_string()]
    );
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, meta);
    drop((sm, db));

    let db = sled::open(dir.path().join("raft")).unwrap();
    let sm = StateMachine::open(&db, dir.path()).unwrap();
    assert_eq!(sm.handle().applied(), applied);
}
