//! The controllers' `/metrics`, parsed with a Prometheus parser, follow an in-process
//! cluster (3 controllers, fake agents): nodes by status through a power cut, a
//! rollout's phase (updating, completed, paused), tasks by state, decisions, sessions,
//! and leader changes through a failover. Followers serve the page too, with their own
//! Raft view and the figures of their applied state.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use shoal_proto::pb;
use shoal_proto::spec::{Constraint, ConstraintField};
use shoal_tests::cluster::{eventually, stack, Cluster, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOUND: Duration = Duration::from_secs(30);

/// One scrape of `addr`'s `/metrics`, parsed (`None` while it does not answer).
async fn scrape(addr: SocketAddr) -> Option<Scrape> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let (_, body) = out.split_once("\r\n\r\n")?;
    assert!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).ok()
}

/// The value of the sample `name` with these labels (and maybe others).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .and_then(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// Polls controller `i`'s page until `f` accepts it (bounded).
async fn until<T>(cl: &Cluster, i: usize, what: &str, f: impl Fn(&Scrape) -> Option<T>) -> T {
    let addr = cl.metrics_addr(i);
    eventually(BOUND, what, || async {
        scrape(addr).await.as_ref().and_then(&f)
    })
    .await
}

fn nodes(s: &Scrape, status: &str) -> Option<f64> {
    value(s, "shoal_nodes", &[("status", status)])
}

fn phase_of(s: &Scrape, service: &str) -> Option<String> {
    s.samples
        .iter()
        .find(|x| {
            x.metric == "shoal_service_rollout_phase"
                && x.labels.get("service") == Some(service)
                && x.value == Value::Gauge(1.0)
        })
        .and_then(|x| x.labels.get("phase").map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_follow_nodes_rollouts_tasks_and_failovers() {
    let opts = Options {
        metrics: true,
        node_grace: Duration::from_secs(2),
        ..Options::default()
    };
    let mut cl = Cluster::start_with(3, &["node-a", "node-b"], opts).await;
    let leader = cl.wait_leader().await;
    let follower = (0..3).find(|i| *i != leader).unwrap();

    // Every status and phase shows, also at 0.
    let first = until(&cl, leader, "two ready nodes", |s| {
        (nodes(s, "ready") == Some(2.0)).then(|| s.clone())
    })
    .await;
    assert_eq!(nodes(&first, "down"), Some(0.0));
    assert_eq!(nodes(&first, "unknown"), Some(0.0));
    assert_eq!(
        value(
            &first,
            "shoal_nodes_availability",
            &[("availability", "active")]
        ),
        Some(2.0)
    );
    for phase in [
        "updating",
        "paused",
        "rolling_back",
        "completed",
        "rolled_back",
    ] {
        assert_eq!(
            value(&first, "shoal_rollouts", &[("phase", phase)]),
            Some(0.0),
            "{phase}"
        );
    }
    assert_eq!(value(&first, "shoal_raft_is_leader", &[]), Some(1.0));
    assert!(value(&first, "shoal_raft_term", &[]).unwrap() >= 1.0);
    let applied = value(&first, "shoal_raft_applied_index", &[]).unwrap();
    assert!(applied > 0.0);
    assert!(value(&first, "shoal_raft_commit_index", &[]).unwrap() >= applied);
    assert_eq!(value(&first, "shoal_agent_sessions", &[]), Some(2.0));
    assert!(value(&first, "shoal_raft_proposal_duration_seconds_count", &[]).unwrap() > 0.0);
    assert!(value(&first, "shoal_reconcile_duration_seconds_count", &[]).unwrap() > 0.0);
    let f = until(&cl, follower, "a follower's page", |s| {
        (nodes(s, "ready") == Some(2.0)).then(|| s.clone())
    })
    .await;
    assert_eq!(value(&f, "shoal_raft_is_leader", &[]), Some(0.0));
    assert_eq!(value(&f, "shoal_agent_sessions", &[]), Some(0.0));

    // A rollout that cannot place its replicas stays "updating"...
    let mut app = stack("app", "img:1", 2);
    if let Some(web) = app.services.get_mut("web") {
        web.placement.constraints = vec![Constraint {
            field: ConstraintField::Label("tier".into()),
            equal: true,
            value: "web".into(),
        }];
    }
    cl.client().deploy(&app).await.expect("deploy");
    let s = until(&cl, leader, "2 pending tasks", |s| {
        (value(s, "shoal_tasks", &[("state", "pending")]) == Some(2.0)).then(|| s.clone())
    })
    .await;
    assert_eq!(phase_of(&s, "web").as_deref(), Some("updating"));
    assert_eq!(
        value(&s, "shoal_rollouts", &[("phase", "updating")]),
        Some(1.0)
    );
    assert_eq!(value(&s, "shoal_services", &[]), Some(1.0));
    let replicas = |s: &Scrape, kind: &str| {
        value(
            s,
            "shoal_service_replicas",
            &[("stack", "app"), ("service", "web"), ("kind", kind)],
        )
    };
    assert_eq!(replicas(&s, "desired"), Some(2.0));
    assert_eq!(replicas(&s, "running"), Some(0.0));
    assert!(
        value(&s, "shoal_scheduler_decisions_total", &[("kind", "create")]).unwrap() >= 2.0,
        "the two tasks were created"
    );
    // ... until a node takes them: then "completed", with both running.
    let mut label = pb::UpdateNodeRequest {
        node: "node-a".into(),
        ..Default::default()
    };
    label.set_labels.insert("tier".into(), "web".into());
    cl.client().update_node(label).await.expect("label node-a");
    let s = until(&cl, leader, "the rollout completed", |s| {
        (phase_of(s, "web").as_deref() == Some("completed")).then(|| s.clone())
    })
    .await;
    assert_eq!(replicas(&s, "running"), Some(2.0));
    assert_eq!(replicas(&s, "healthy"), Some(2.0));
    assert_eq!(value(&s, "shoal_tasks", &[("state", "running")]), Some(2.0));
    assert_eq!(value(&s, "shoal_tasks", &[("state", "pending")]), Some(0.0));
    assert_eq!(
        value(&s, "shoal_service_generation", &[("service", "web")]),
        Some(1.0)
    );
    assert!(value(&s, "shoal_scheduler_decisions_total", &[("kind", "assign")]).unwrap() >= 2.0);
    // The follower's applied state says the same.
    until(
        &cl,
        follower,
        "the follower sees the rollout completed",
        |s| (phase_of(s, "web").as_deref() == Some("completed")).then_some(()),
    )
    .await;

    // A new version that cannot be pulled pauses the rollout.
    for agent in cl.agents.values() {
        agent.fake.fail_pull("img:2", "manifest unknown");
    }
    if let Some(web) = app.services.get_mut("web") {
        web.image = "img:2".into();
    }
    cl.client().deploy(&app).await.expect("deploy img:2");
    let s = until(&cl, leader, "the rollout paused", |s| {
        (phase_of(s, "web").as_deref() == Some("paused")).then(|| s.clone())
    })
    .await;
    assert_eq!(
        value(&s, "shoal_service_generation", &[("service", "web")]),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "shoal_rollouts", &[("phase", "paused")]),
        Some(1.0)
    );
    assert!(value(&s, "shoal_tasks", &[("state", "failed")]).unwrap() >= 1.0);

    // A power cut: the node shows down, on the leader and on a follower.
    cl.kill_agent("node-b").await;
    let s = until(&cl, leader, "node-b down", |s| {
        (nodes(s, "down") == Some(1.0)).then(|| s.clone())
    })
    .await;
    assert_eq!(nodes(&s, "ready"), Some(1.0));
    assert_eq!(value(&s, "shoal_agent_sessions", &[]), Some(1.0));
    until(&cl, follower, "node-b down on a follower", |s| {
        (nodes(s, "down") == Some(1.0)).then_some(())
    })
    .await;

    // A failover: the survivors count a new leader.
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    let before = until(&cl, survivor, "leader changes", |s| {
        value(s, "shoal_raft_leader_changes_total", &[])
    })
    .await;
    assert!(before >= 1.0, "the first leader a controller learns counts");
    cl.kill(leader).await;
    let new_leader = cl.wait_leader().await;
    until(&cl, survivor, "a leader change counted", |s| {
        (value(s, "shoal_raft_leader_changes_total", &[])? > before).then_some(())
    })
    .await;
    until(&cl, new_leader, "the new leader says it leads", |s| {
        (value(s, "shoal_raft_is_leader", &[]) == Some(1.0)
            && value(s, "shoal_agent_sessions", &[]) == Some(1.0))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_taken_metrics_address_stops_the_controller_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address");
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the controller port");
    let data = dir.path().join("controller");
    let mut cfg = shoal_controller::ControllerConfig::new(
        data.clone(),
        listener.local_addr().expect("local addr"),
    );
    cfg.metrics = Some(addr);
    let stop = tokio_util::sync::CancellationToken::new();
    let err = tokio::time::timeout(BOUND, shoal_controller::serve(cfg, listener, stop))
        .await
        .expect("the controller stops at once")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains(&format!("bind the metrics address {addr}")),
        "{err:#}"
    );
    assert!(
        !data.exists(),
        "nothing was started before the address was checked"
    );
}
