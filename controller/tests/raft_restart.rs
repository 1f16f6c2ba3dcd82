//! A single-node Raft member on a temp dir: what survives a restart, log compaction,
//! and what a damaged data dir does.

mod common;

use std::path::Path;
use std::time::Duration;

use common::raft::{snapshot_dir, snapshot_files, timings, ADDR};
use openraft::storage::RaftLogStorage;
use shoal_controller::raft::{
    self, initialize_single, open, propose, trees, wait_for_leader, LogStore, RaftNode, RaftTimings,
};
use shoal_controller::state::Command;
use tempfile::TempDir;

fn compacting() -> RaftTimings {
    RaftTimings {
        snapshot_logs_since_last: 20,
        max_in_snapshot_log_to_keep: 5,
        purge_batch_size: 1,
        ..timings()
    }
}

fn scale(i: u64) -> Command {
    Command::Scale {
        service: "web/api".to_string(),
        replicas: i,
    }
}

async fn start(dir: &Path, id: u64, t: RaftTimings) -> RaftNode {
    open(dir, id, ADDR.to_string(), t)
        .await
        .expect("open raft node")
}

async fn stop(node: RaftNode) {
    node.raft.shutdown().await.expect("shutdown");
    drop(node);
}

async fn propose_n(node: &RaftNode, n: u64) {
    for i in 0..n {
        propose(&node.raft, scale(i)).await.expect("propose");
    }
}

/// Opens the stopped node's sled store directly, as an operator's tool would.
fn open_db(dir: &Path) -> sled::Db {
    sled::open(dir.join("raft")).expect("open sled")
}

fn log_bounds(db: &sled::Db) -> (Option<u64>, usize) {
    let log = db.open_tree(trees::LOG).unwrap();
    let first = log
        .first()
        .unwrap()
        .map(|(k, _)| u64::from_be_bytes(k.as_ref().try_into().unwrap()));
    (first, log.len())
}

#[tokio::test]
async fn restart_keeps_vote_log_and_applied_state() {
    let dir = TempDir::new().unwrap();
    let node = start(dir.path(), 1, timings()).await;
    assert!(
        initialize_single(&node).await.unwrap(),
        "a fresh dir is initialized"
    );
    propose_n(&node, 10).await;

    let before = node.raft.metrics().borrow().clone();
    let applied_before = node.state.last_applied().expect("applied");
    assert_eq!(Some(applied_before.index), before.last_log_index);
    assert!(applied_before.index >= 10);
    let state_before = node.state.snapshot();
    stop(node).await;

    {
        // What is on disk, read the way openraft reads it.
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db, dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(before.vote));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, before.last_applied);
        assert_eq!(store.read_committed().await.unwrap(), before.last_applied);
    }

    let node = start(dir.path(), 1, timings()).await;
    // Committed entries are re-applied while the node opens: nothing is lost.
    assert_eq!(node.state.last_applied(), Some(applied_before));
    assert_eq!(node.state.snapshot(), state_before);
    let after = node
        .raft
        .wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.last_log_index.is_some(), "restored state published")
        .await
        .unwrap();
    assert_eq!(after.vote, before.vote, "vote survives");
    assert_eq!(after.last_log_index, before.last_log_index, "log survives");
    assert_eq!(
        after
            .membership_config
            .membership()
            .voter_ids()
            .collect::<Vec<_>>(),
        vec![1]
    );

    // `--init` again on a dir that holds a cluster does nothing.
    assert!(!initialize_single(&node).await.unwrap());
    assert_eq!(
        wait_for_leader(&node.raft, Duration::from_secs(10))
            .await
            .unwrap(),
        1
    );

    let mut changes = node.state.subscribe();
    propose(&node.raft, scale(99))
        .await
        .expect("propose after restart");
    assert!(node.state.last_applied().unwrap().index > applied_before.index);
    assert!(changes.has_changed().unwrap(), "watchers see the apply");
    assert!(*changes.borrow_and_update() > applied_before.index);

    let summary = raft::metrics_summary(&node.raft);
    assert_eq!(summary.leader, Some(1));
    assert_eq!(summary.members.len(), 1);
    assert_eq!(summary.members[0].address, ADDR);
    assert_eq!(summary.members[0].role, raft::MemberRole::Leader);
    stop(node).await;
}

#[tokio::test]
async fn snapshots_bound_the_log_and_restore_on_open() {
    let dir = TempDir::new().unwrap();
    let node = start(dir.path(), 1, compacting()).await;
    assert!(initialize_single(&node).await.unwrap());
    propose_n(&node, 200).await;
    let applied = node.state.last_applied().unwrap();
    // Snapshots are built in the background; wait for the one covering (almost) everything.
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index + 20 > applied.index) && m.purged.is_some(),
            "snapshot and purge caught up",
        )
        .await
        .expect("snapshot built and log purged");
    let state = node.state.snapshot();
    stop(node).await;

    {
        let db = open_db(dir.path());
        let (first, len) = log_bounds(&db);
        let first = first.expect("log keeps a tail");
        assert!(
            first > 100,
            "log purged up to a recent snapshot, first index {first}"
        );
        assert!(
            len <= 20 + 5 + 2,
            "log bounded by snapshot policy, {len} entries"
        );
        let snaps = db.open_tree(trees::SNAPSHOTS).unwrap();
        assert!(snaps.get("meta").unwrap().is_some(), "snapshot persisted");
        let name = snaps.get("file").unwrap().expect("in a file");
        assert!(snaps.get("data").unwrap().is_none(), "not in sled");
        // Only the latest snapshot's file is kept.
        assert_eq!(
            snapshot_files(dir.path()),
            vec![String::from_utf8(name.to_vec()).unwrap()]
        );
    }

    let node = start(dir.path(), 1, compacting()).await;
    assert_eq!(
        node.state.last_applied(),
        Some(applied),
        "restored from snapshot + log tail"
    );
    assert_eq!(node.state.snapshot(), state);
    let m = node
        .raft
        .wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.last_log_index.is_some(), "restored state published")
        .await
        .unwrap();
    assert!(
        m.snapshot.is_some_and(|s| s.index + 20 > applied.index),
        "{m:?}"
    );
    assert!(!initialize_single(&node).await.unwrap());
    wait_for_leader(&node.raft, Duration::from_secs(10))
        .await
        .unwrap();
    propose_n(&node, 3).await;
    // 3 commands, and a blank entry if the restarted leader started a new term.
    let now = node.state.last_applied().unwrap().index;
    assert!(
        now == applied.index + 3 || now == applied.index + 4,
        "{now}"
    );
    stop(node).await;
}

#[tokio::test]
async fn corrupt_log_entry_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let node = start(dir.path(), 1, timings()).await;
    initialize_single(&node).await.unwrap();
    propose_n(&node, 5).await;
    stop(node).await;

    {
        let db = open_db(dir.path());
        let log = db.open_tree(trees::LOG).unwrap();
        let (key, _) = log.last().unwrap().unwrap();
        log.insert(key, &b"{\"log_id\": garbage"[..]).unwrap();
        db.flush().unwrap();
    }

    let err = open(dir.path(), 1, ADDR.to_string(), timings())
        .await
        .err()
        .expect("a corrupt entry must not open");
    let msg = format!("{err:#}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("corrupt") && msg.contains("entry"), "{msg}");
}

#[tokio::test]
async fn corrupt_snapshot_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let node = start(dir.path(), 1, timings()).await;
    initialize_single(&node).await.unwrap();
    propose_n(&node, 5).await;
    node.raft.trigger().snapshot().await.unwrap();
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some(), "snapshot built")
        .await
        .unwrap();
    stop(node).await;

    {
        let db = open_db(dir.path());
        let snaps = db.open_tree(trees::SNAPSHOTS).unwrap();
        let name = snaps
            .get("file")
            .unwrap()
            .expect("the snapshot's file is recorded");
        let file = snapshot_dir(dir.path()).join(std::str::from_utf8(&name).unwrap());
        std::fs::write(file, b"\x00\x01 not json").unwrap();
    }

    let err = open(dir.path(), 1, ADDR.to_string(), timings())
        .await
        .err()
        .expect("an unreadable snapshot must not open");
    let msg = format!("{err:#}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("snapshot"), "{msg}");
}

#[tokio::test]
async fn data_dir_of_another_node_is_refused() {
    let dir = TempDir::new().unwrap();
    let node = start(dir.path(), 1, timings()).await;
    initialize_single(&node).await.unwrap();
    stop(node).await;

    let err = open(dir.path(), 2, ADDR.to_string(), timings())
        .await
        .err()
        .expect("another node's data dir");
    assert!(
        format!("{err:#}").contains("belongs to raft node 1"),
        "{err:#}"
    );
}

#[tokio::test]
async fn proposals_before_initialization_say_no_leader() {
    let dir = TempDir::new().unwrap();
    let node = start(dir.path(), 1, timings()).await;
    let err = propose(&node.raft, scale(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            raft::ProposeError::NotLeader {
                leader_id: None,
                ..
            }
        ),
        "{err:?}"
    );
    stop(node).await;
}
