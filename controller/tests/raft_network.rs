//! Three Raft members talking over real gRPC on 127.0.0.1: membership changes, snapshot
//! transfer to a new member and to a follower far behind, leader failover and the "not
//! the leader" answer.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::raft::snapshot_files;
use openraft::BasicNode;
use shoal_controller::faults::Faults;
use shoal_controller::raft::{
    self, initialize_single, open, open_with_faults, propose, wait_for_leader, ProposeError,
    RaftNode, RaftPeerService, RaftTimings,
};
use shoal_controller::state::Command;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

fn timings() -> RaftTimings {
    RaftTimings {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_logs_since_last: 10,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
    }
}

struct Member {
    node: RaftNode,
    server: JoinHandle<()>,
    dir: TempDir,
    /// Cuts this member off from the others (both ways) while set.
    faults: Arc<Faults>,
}

async fn start(id: u64) -> Member {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = TempDir::new().unwrap();
    let faults = Arc::new(Faults::default());
    let node = open_with_faults(dir.path(), id, addr, timings(), faults.clone())
        .await
        .unwrap();
    let svc = RaftPeerService::with_faults(node.raft.clone(), faults.clone()).into_server();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    Member {
        node,
        server,
        dir,
        faults,
    }
}

fn scale(i: u64) -> Command {
    Command::Scale {
        service: "web/api".into(),
        replicas: i,
    }
}

async fn wait_applied(m: &Member, index: u64) {
    m.node
        .raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(index), "caught up")
        .await
        .unwrap_or_else(|e| panic!("node {} did not catch up: {e}", m.node.id));
    assert!(m.node.state.last_applied().unwrap().index >= index);
}

/// Members 2 and 3 join the group that member 1 (`members[0]`) leads, as voters.
async fn join_followers(members: &[Member]) {
    let leader = &members[0];
    for m in &members[1..] {
        leader
            .node
            .raft
            .add_learner(m.node.id, BasicNode::new(&m.node.addr), true)
            .await
            .unwrap();
    }
    leader
        .node
        .raft
        .change_membership([1, 2, 3], false)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_over_grpc() {
    let members = vec![start(1).await, start(2).await, start(3).await];
    let leader = &members[0];
    assert!(initialize_single(&leader.node).await.unwrap());
    for i in 0..30 {
        propose(&leader.node.raft, scale(i)).await.unwrap();
    }
    // Everything before the snapshot is purged: new members must get the snapshot.
    leader
        .node
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some(), "log purged")
        .await
        .unwrap();

    join_followers(&members).await;
    propose(&leader.node.raft, scale(100)).await.unwrap();
    let index = leader.node.state.last_applied().unwrap().index;
    for m in &members {
        wait_applied(m, index).await;
        assert!(m.node.raft.metrics().borrow().snapshot.is_some() || m.node.id == 1);
    }
    let states: Vec<_> = members.iter().map(|m| m.node.state.snapshot()).collect();
    assert!(states.windows(2).all(|w| w[0] == w[1]));

    let summary = raft::metrics_summary(&leader.node.raft);
    assert_eq!(summary.leader, Some(1));
    let roles: BTreeMap<u64, &str> = summary
        .members
        .iter()
        .map(|m| (m.id, m.role.as_str()))
        .collect();
    assert_eq!(
        roles,
        BTreeMap::from([(1, "leader"), (2, "follower"), (3, "follower")])
    );

    // A follower names the leader.
    let err = propose(&members[1].node.raft, scale(1)).await.unwrap_err();
    assert_eq!(
        err,
        ProposeError::NotLeader {
            leader_id: Some(1),
            leader_addr: Some(leader.node.addr.clone()),
        }
    );

    // The leader dies; the other two elect one of themselves and keep going.
    let mut members = members;
    let dead = members.remove(0);
    dead.node.raft.shutdown().await.unwrap();
    dead.server.abort();
    let new_leader = {
        let m = members[0]
            .node
            .raft
            .wait(Some(Duration::from_secs(15)))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != 1),
                "new leader elected",
            )
            .await
            .unwrap();
        m.current_leader.unwrap()
    };
    let leader = members.iter().find(|m| m.node.id == new_leader).unwrap();
    wait_for_leader(&leader.node.raft, Duration::from_secs(5))
        .await
        .unwrap();
    propose(&leader.node.raft, scale(7)).await.unwrap();
    let index = leader.node.state.last_applied().unwrap().index;
    for m in &members {
        wait_applied(m, index).await;
    }
    for m in members {
        m.node.raft.shutdown().await.unwrap();
        m.server.abort();
    }
}

/// A node whose labels weigh `kib` KiB: a few of them make a state of several snapshot
/// chunks (1 MiB each).
fn heavy_node(i: usize, kib: usize) -> Command {
    let mut node = common::node(&format!("heavy-{i:03}"), 4.0, 4096);
    for l in 0..kib {
        node.labels
            .insert(format!("label-{l:04}"), "x".repeat(1000));
    }
    Command::RegisterNode { node }
}

/// A follower cut off while the others go on (and purge their logs) catches up through
/// a snapshot of several chunks, received into a file: it ends with the leader's state,
/// the snapshot recorded as its file, and loads it again on a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_from_a_snapshot_file() {
    let members = vec![start(1).await, start(2).await, start(3).await];
    let leader = &members[0];
    assert!(initialize_single(&leader.node).await.unwrap());
    join_followers(&members).await;
    propose(&leader.node.raft, scale(1)).await.unwrap();
    let index = leader.node.state.last_applied().unwrap().index;
    for m in &members {
        wait_applied(m, index).await;
    }

    let behind = &members[2];
    behind.faults.isolate();
    let left_at = behind.node.state.last_applied().unwrap().index;
    // About 2.4 MiB of state: three chunks.
    for i in 0..40 {
        propose(&leader.node.raft, heavy_node(i, 60)).await.unwrap();
    }
    leader
        .node
        .raft
        .wait(Some(Duration::from_secs(20)))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > left_at + 20),
            "the leader purged what the follower lacks",
        )
        .await
        .unwrap();
    let index = leader.node.state.last_applied().unwrap().index;
    let purged = leader.node.raft.metrics().borrow().purged.unwrap().index;

    behind.faults.heal();
    wait_applied(behind, index).await;
    let m = behind.node.raft.metrics().borrow().clone();
    assert!(
        m.snapshot.is_some_and(|s| s.index >= purged),
        "caught up through a snapshot: {m:?}"
    );
    let state = leader.node.state.snapshot();
    assert_eq!(behind.node.state.snapshot(), state);
    let bytes = behind.node.state.snapshot_bytes();
    assert!(
        bytes > 1024 * 1024,
        "a snapshot of several chunks: {bytes} bytes"
    );
    let files = snapshot_files(behind.dir.path());
    assert_eq!(files.len(), 1, "only the recorded snapshot: {files:?}");
    assert!(files[0].ends_with(".json"), "{files:?}");

    // Restarted, it loads the snapshot from its file (and the log after it).
    let mut members = members;
    let behind = members.pop().unwrap();
    behind.node.raft.shutdown().await.unwrap();
    behind.server.abort();
    assert!(behind.node.wait_closed(Duration::from_secs(10)).await);
    let addr = behind.node.addr.clone();
    drop(behind.node);
    let node = open(behind.dir.path(), 3, addr, timings()).await.unwrap();
    assert_eq!(node.state.snapshot(), state);
    node.raft.shutdown().await.unwrap();
    for m in members {
        m.node.raft.shutdown().await.unwrap();
        m.server.abort();
    }
}
