//! `shoal stats` behind the `Stats` RPC: a hand-driven agent session reports its
//! replicas' container figures and a GPU (`StatsReport`, as agents do every 5 s), and
//! the leader answers them filtered by service, with an hour of history, leaving out
//! tasks the state does not have; a follower points at the leader; the rows go when the
//! session ends.

use std::time::Duration;

use shoal_controller::pki::ClusterCa;
use shoal_proto::pb;
use shoal_proto::pb::agent_message::Msg;
use shoal_proto::pb::agent_session_client::AgentSessionClient;
use shoal_proto::spec::{Constraint, ConstraintField, ServiceSpec, StackSpec};
use shoal_tests::cluster::{channel, eventually, is_not_leader, leader_hint, mint, Cluster};
use shoal_tls::{Identity, Role};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(20);
const NODE: &str = "node-h";

/// Opens node `NODE`'s session on `addr`, with heartbeats until `stop`; returns the
/// sender of its messages and its stream of assignments.
async fn connect(
    ca: &ClusterCa,
    addr: &str,
    stop: &CancellationToken,
) -> (
    mpsc::Sender<pb::AgentMessage>,
    tonic::Streaming<pb::ControllerMessage>,
) {
    let (up, rx) = mpsc::channel(64);
    let hello = pb::Hello {
        name: NODE.into(),
        address: "192.0.2.9".into(),
        cpus: 4.0,
        memory_bytes: 8 << 30,
        deltas: true,
        ..Default::default()
    };
    up.send(msg(Msg::Hello(hello))).await.expect("queue hello");
    let tls = mint(
        ca,
        Identity::new(Role::Agent, NODE),
        std::time::SystemTime::now(),
        Duration::from_secs(3600),
    );
    let channel = channel(&tls, addr)
        .await
        .expect("connect to the controller");
    let down = AgentSessionClient::new(channel)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("open a session")
        .into_inner();
    let beat = up.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        for seq in 0..10_000u64 {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let hb = msg(Msg::Heartbeat(pb::Heartbeat {
                seq,
                ..Default::default()
            }));
            if beat.send(hb).await.is_err() {
                return;
            }
        }
    });
    (up, down)
}

fn msg(m: Msg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(m) }
}

fn service(name: &str, replicas: u64) -> ServiceSpec {
    let mut s = ServiceSpec {
        name: name.into(),
        image: "img:1".into(),
        replicas,
        ..Default::default()
    };
    s.placement.constraints = vec![Constraint {
        field: ConstraintField::Hostname,
        equal: true,
        value: NODE.into(),
    }];
    s
}

fn replica(task: &pb::Assignment, cpu: f64, memory: u64) -> pb::ReplicaStats {
    pb::ReplicaStats {
        stack: task.stack.clone(),
        service: task.service.clone(),
        task: task.task_id.clone(),
        slot: task.slot,
        node: NODE.into(),
        container: format!("c-{}", task.task_id),
        cpu_percent: cpu,
        memory_bytes: memory,
        memory_limit_bytes: 1 << 30,
        net_rx_bytes: 100,
        net_tx_bytes: 200,
        restarts: 1,
        at_ms: 1,
    }
}

fn request(service: &str, history: bool) -> pb::StatsRequest {
    pb::StatsRequest {
        service: service.into(),
        history,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_reach_the_stats_rpc_filtered_with_history() {
    let cl = Cluster::start(2, &[]).await;
    let leader = cl.wait_leader().await;
    let follower = 1 - leader;
    let stop = CancellationToken::new();
    let (up, mut down) = connect(&cl.ca, &cl.addr(leader), &stop).await;
    let app = StackSpec {
        name: "app".into(),
        services: [service("web", 2), service("db", 1)]
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect(),
        ..Default::default()
    };
    cl.client().deploy(&app).await.expect("deploy");
    // The three replicas' assignments.
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut held = None;
    let tasks: Vec<pb::Assignment> = loop {
        let next = tokio::time::timeout_at(deadline, down.message())
            .await
            .expect("three assignments in time")
            .expect("session stream")
            .expect("session open");
        if let Some(pb::controller_message::Msg::Assignments(a)) = next.msg {
            // Later messages are deltas: `held` is the whole set they make.
            shoal_tests::wire::apply(&mut held, a);
            if let Some(set) = held.as_ref().filter(|s| s.tasks.len() == 3) {
                break set.tasks.clone();
            }
        }
    };
    let web: Vec<&pb::Assignment> = tasks.iter().filter(|t| t.service == "web").collect();
    let db = tasks.iter().find(|t| t.service == "db").expect("a db task");
    let mut gone = replica(db, 99.0, 99);
    gone.task = "no-such-task".into();
    let report = pb::StatsReport {
        replicas: vec![
            replica(web[0], 10.0, 100 << 20),
            replica(web[1], 30.0, 300 << 20),
            replica(db, 5.0, 50 << 20),
            gone,
        ],
        gpus: vec![pb::NodeGpuStats {
            node: NODE.into(),
            uuid: "GPU-h0".into(),
            index: 0,
            model: "NVIDIA T4".into(),
            utilization_percent: Some(30),
            memory_used_bytes: Some(1 << 30),
            history: vec![],
        }],
    };
    up.send(msg(Msg::Stats(report))).await.expect("send stats");

    let client = cl.client();
    let all = eventually(BOUND, "the report in Stats", || async {
        let r = client
            .call(|mut c| async move { c.stats(request("", false)).await })
            .await
            .ok()?;
        (!r.replicas.is_empty()).then_some(r)
    })
    .await;
    // The task the state does not have is left out; rows are ordered by service, slot.
    let rows: Vec<(String, u64, f64)> = all
        .replicas
        .iter()
        .map(|r| (format!("{}/{}", r.stack, r.service), r.slot, r.cpu_percent))
        .collect();
    let mut web_slots: Vec<u64> = web.iter().map(|t| t.slot).collect();
    web_slots.sort();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0], ("app/db".into(), db.slot, 5.0));
    assert_eq!(rows[1..].iter().map(|r| r.1).collect::<Vec<_>>(), web_slots);
    assert!(all
        .replicas
        .iter()
        .all(|r| r.node == NODE && r.restarts == 1));
    assert_eq!(all.gpus.len(), 1);
    assert_eq!(all.gpus[0].utilization_percent, Some(30));
    assert!(all.services.is_empty(), "no history unless asked");
    assert!(all.at_ms > 0);

    // Filtered: SERVICE alone (unambiguous) and STACK/SERVICE.
    let only_web = client
        .call(|mut c| async move { c.stats(request("web", true)).await })
        .await
        .expect("stats of web");
    assert_eq!(only_web.replicas.len(), 2);
    assert!(only_web.replicas.iter().all(|r| r.service == "web"));
    assert!(only_web.gpus.is_empty(), "web holds no GPU");
    assert_eq!(only_web.services.len(), 1);
    let series = &only_web.services[0];
    assert_eq!(
        (series.stack.as_str(), series.service.as_str()),
        ("app", "web")
    );
    assert_eq!(series.points.len(), 1);
    assert_eq!(series.points[0].cpu_percent, 40.0);
    assert_eq!(series.points[0].memory_bytes, 400 << 20);
    let only_db = client
        .call(|mut c| async move { c.stats(request("app/db", false)).await })
        .await
        .expect("stats of app/db");
    assert_eq!(only_db.replicas.len(), 1);
    let with_history = client
        .call(|mut c| async move { c.stats(request("", true)).await })
        .await
        .expect("stats with history");
    assert_eq!(with_history.services.len(), 2);
    assert_eq!(with_history.gpus[0].history.len(), 1);
    assert_eq!(with_history.gpus[0].history[0].cpu_percent, 30.0);
    assert_eq!(with_history.gpus[0].history[0].memory_bytes, 1 << 30);

    // An unknown service is NOT_FOUND, naming it.
    let err = client
        .call(|mut c| async move { c.stats(request("nope", false)).await })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "no service named nope");

    // A follower answers with the leader's address.
    let err = cl
        .direct(follower)
        .await
        .expect("reach the follower")
        .stats(request("", false))
        .await
        .unwrap_err();
    assert!(is_not_leader(&err), "{err:?}");
    assert_eq!(leader_hint(&err), Some(cl.addr(leader)));

    // The session ends: the node's rows go.
    stop.cancel();
    drop(up);
    drop(down);
    eventually(BOUND, "the rows gone with the session", || async {
        let r = client
            .call(|mut c| async move { c.stats(request("", false)).await })
            .await
            .ok()?;
        (r.replicas.is_empty() && r.gpus.is_empty()).then_some(())
    })
    .await;
}
