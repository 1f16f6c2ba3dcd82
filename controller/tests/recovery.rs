//! What `--restore` and `--force-new-cluster` start from (issue 15): a stopped
//! member's whole state read offline (snapshot and the log after it), and the
//! `Restore` command that seeds a new group with it.

use std::path::Path;
use std::time::Duration;

use shoal_controller::pki::{ClusterCa, ClusterKey, PkiRecord};
use shoal_controller::raft::{self, initialize_single, open, propose, RaftNode, RaftTimings};
use shoal_controller::state::{ClusterState, Command};
use shoal_proto::spec::{ServiceSpec, StackSpec};
use tempfile::TempDir;

fn compacting() -> RaftTimings {
    RaftTimings {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_logs_since_last: 20,
        max_in_snapshot_log_to_keep: 5,
        purge_batch_size: 1,
    }
}

fn deploy(name: &str) -> Command {
    let web = ServiceSpec {
        name: "web".into(),
        image: "img".into(),
        replicas: 2,
        ..Default::default()
    };
    Command::DeployStack {
        spec: StackSpec {
            name: name.into(),
            services: [("web".to_string(), web)].into_iter().collect(),
            ..Default::default()
        },
        now_ms: 0,
        secrets: Default::default(),
    }
}

async fn start(dir: &Path) -> RaftNode {
    let node = open(dir, 1, "127.0.0.1:7370".into(), compacting())
        .await
        .expect("open raft node");
    initialize_single(&node).await.expect("initialize");
    node
}

#[tokio::test]
async fn a_stopped_members_state_is_read_whole_from_its_snapshot_and_log() {
    let dir = TempDir::new().unwrap();
    let node = start(dir.path()).await;
    // Enough entries for a snapshot, then some after it that only the log holds.
    for i in 0..30 {
        let r = propose(&node.raft, deploy(&format!("s{i}"))).await.unwrap();
        assert_eq!(r.error, None);
    }
    let live = node.state.applied();
    node.raft.shutdown().await.unwrap();
    assert!(node.wait_closed(Duration::from_secs(10)).await);
    drop(node);

    let read = raft::recover::read_offline(dir.path()).await.unwrap();
    assert_eq!(read.state, live.state);
    assert_eq!(read.last_applied, live.last_applied);
    assert_eq!(read.state.stacks.len(), 30);

    let aside = raft::recover::set_aside(dir.path(), 7).unwrap();
    assert!(aside.ends_with("raft.before-force-new-cluster-7"));
    let again = raft::recover::read_offline(dir.path()).await.unwrap_err();
    assert!(
        format!("{again:#}").contains("holds no Raft store"),
        "{again:#}"
    );
}

#[test]
fn restore_seeds_an_empty_state_and_never_overwrites_a_cluster() {
    let key = ClusterKey::generate().unwrap();
    let record = PkiRecord::new(&ClusterCa::generate().unwrap(), &key).unwrap();
    let mut old = ClusterState::default();
    old.apply(&Command::SetPki {
        record: record.clone(),
    });
    old.apply(&deploy("app"));

    let mut fresh = ClusterState::default();
    let r = fresh.apply(&Command::Restore {
        state: Box::new(old.clone()),
    });
    assert_eq!(r.error, None);
    assert_eq!(fresh, old);

    let other = ClusterState::default();
    let r = fresh.apply(&Command::Restore {
        state: Box::new(other),
    });
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("already has a state")),
        "{r:?}"
    );
    assert_eq!(fresh, old, "a refused restore changes nothing");
}
