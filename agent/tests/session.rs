//! The agent end to end against a stand-in controller (real gRPC on 127.0.0.1) and the
//! fake runtime: leader hint, Hello, assignments, status, logs, reconnect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

#[allow(dead_code)]
mod common;

use common::until;
use common::*;

use shoal_agent::runtime::fake::FakeRuntime;
use shoal_agent::AgentConfig;
use shoal_proto::pb;
use shoal_proto::pb::agent_message::Msg;
use shoal_proto::pb::agent_session_server::AgentSession;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// How long a condition of these tests may take.
const WAIT: Duration = Duration::from_secs(10);

/// A follower that points at the leader.
struct Follower(String);

#[tonic::async_trait]
impl AgentSession for Follower {
    type SessionStream = Out;
    async fn session(
        &self,
        _req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Out>, Status> {
        let mut status = Status::failed_precondition("not the leader");
        status
            .metadata_mut()
            .insert(shoal_proto::LEADER_HINT, self.0.parse().unwrap());
        Err(status)
    }
}

fn statuses(got: &Arc<Mutex<Vec<Msg>>>) -> Vec<(String, String)> {
    got.lock()
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            Msg::Status(s) => Some((s.task_id.clone(), s.state.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn follows_the_leader_reports_and_streams_logs() {
    let leader = Leader::default();
    let leader_stop = CancellationToken::new();
    let leader_addr = serve(leader.clone(), leader_stop.clone()).await;
    let follower_addr = serve(Follower(leader_addr.clone()), CancellationToken::new()).await;

    let fake = FakeRuntime::new();
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let cfg = AgentConfig {
        controllers: vec![follower_addr],
        name: "node-a".into(),
        data_dir: dir.path().join("agent"),
        docker: None,
        advertise: None,
        labels: [("zone".to_string(), "z1".to_string())]
            .into_iter()
            .collect(),
        heartbeat_interval: Duration::from_millis(50),
        // The fake controllers here serve plaintext.
        plaintext: true,
        ..AgentConfig::default()
    };
    let agent = tokio::spawn(shoal_agent::run_with_runtime(
        cfg,
        Arc::new(fake.clone()),
        shutdown.clone(),
    ));

    until(WAIT, "hello at the leader", || {
        leader
            .got
            .lock()
            .unwrap()
            .iter()
            .any(|m| matches!(m, Msg::Hello(_)))
    })
    .await;
    {
        let got = leader.got.lock().unwrap();
        let Msg::Hello(h) = &got[0] else {
            panic!("first message is Hello: {:?}", got[0])
        };
        assert_eq!(h.name, "node-a");
        assert_eq!(h.address, "127.0.0.1");
        assert_eq!(h.cpus, 4.0);
        assert_eq!(h.memory_bytes, 8 << 30);
        assert_eq!(h.labels["zone"], "z1");
        assert!(h.observed.is_empty());
    }
    until(WAIT, "heartbeats", || {
        leader
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|m| matches!(m, Msg::Heartbeat(_)))
            .count()
            >= 2
    })
    .await;

    let spec = br#"{"name":"web","image":"img:1"}"#.to_vec();
    let assignments = pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::Assignments(pb::Assignments {
            version: 1,
            mesh: None,
            remove_volumes: Vec::new(),
            tasks: vec![pb::Assignment {
                task_id: "t1".into(),
                stack: "shop".into(),
                service: "web".into(),
                slot: 1,
                desired: "running".into(),
                generation: 1,
                spec_json: spec,
                ended: false,
                gpus: Vec::new(),
                secrets: Vec::new(),
                volumes: Vec::new(),
            }],
            ..Default::default()
        })),
    };
    let tx = leader.to_agent.lock().unwrap().clone().unwrap();
    tx.send(Ok(assignments)).await.unwrap();
    until(WAIT, "t1 running", || {
        statuses(&leader.got).contains(&("t1".into(), "running".into()))
    })
    .await;
    assert_eq!(
        statuses(&leader.got),
        vec![
            ("t1".into(), "starting".into()),
            ("t1".into(), "running".into())
        ]
    );

    fake.log("t1", false, "line one\n");
    fake.log("t1", true, "oops\n");
    let logs = pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::LogRequest(pb::LogRequest {
            request_id: 7,
            task_ids: vec!["t1".into(), "nope".into()],
            follow: false,
            tail: -1,
        })),
    };
    tx.send(Ok(logs)).await.unwrap();
    let chunks = || -> Vec<pb::LogChunk> {
        leader
            .got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| match m {
                Msg::Log(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    };
    until(WAIT, "both log streams end", || {
        chunks().iter().filter(|c| c.eof).count() == 2
    })
    .await;
    let got = chunks();
    let t1: Vec<_> = got.iter().filter(|c| c.task_id == "t1").collect();
    assert_eq!(t1.len(), 3);
    assert_eq!(t1[0].data, b"line one\n");
    assert!(!t1[0].stderr);
    assert_eq!(t1[1].data, b"oops\n");
    assert!(t1[1].stderr);
    assert!(t1[2].eof && t1[2].error.is_empty());
    let nope = got.iter().find(|c| c.task_id == "nope").unwrap();
    assert!(nope.eof && nope.error.contains("no container"));
    assert!(got.iter().all(|c| c.request_id == 7));

    // The session drops: the container keeps running and the next Hello reports it.
    leader.got.lock().unwrap().clear();
    drop(tx);
    *leader.to_agent.lock().unwrap() = None;
    until(WAIT, "a second hello", || {
        leader
            .got
            .lock()
            .unwrap()
            .iter()
            .any(|m| matches!(m, Msg::Hello(_)))
    })
    .await;
    {
        // The old stream may still deliver a heartbeat after `clear()`: find the Hello.
        let got = leader.got.lock().unwrap();
        let h = got
            .iter()
            .find_map(|m| match m {
                Msg::Hello(h) => Some(h),
                _ => None,
            })
            .expect("a second hello");
        assert_eq!(h.observed.len(), 1);
        assert_eq!(h.observed[0].task_id, "t1");
        assert_eq!(h.observed[0].state, "running");
    }
    assert_eq!(fake.containers().len(), 1);

    shutdown.cancel();
    agent.await.unwrap().unwrap();
    assert_eq!(
        fake.containers()[0].state,
        shoal_agent::runtime::ContainerState::Running,
        "shutdown leaves containers running"
    );
    leader_stop.cancel();
}
