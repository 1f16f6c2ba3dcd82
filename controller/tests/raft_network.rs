//! Three Raft members talking over real gRPC on 127.0.0.1: membership changes, snapshot
//! transfer to a new member, leader failover and the "not the leader" answer.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::BasicNode;
use shoal_controller::raft::{
    self, initialize_single, open, propose, wait_for_leader, ProposeError, RaftNode,
    RaftPeerService, RaftTimings,
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
    _dir: TempDir,
}

async fn start(id: u64) -> Member {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = TempDir::new().unwrap();
    let node = open(dir.path(), id, addr, timings()).await.unwrap();
    let svc = RaftPeerService::new(node.raft.clone()).into_server();
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
        _dir: dir,
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
