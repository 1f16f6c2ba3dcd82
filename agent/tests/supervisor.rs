//! The supervisor against the recording fake runtime, on paused time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_agent::model::{Assignment, AssignmentSet, TaskReport};
use shoal_agent::runtime::fake::{Call, FakeRuntime};
use shoal_agent::runtime::{ContainerState, Health, TaskIdentity};
use shoal_agent::supervisor::{self, Event, SupervisorConfig, SupervisorHandle};
use shoal_agent::volumes::standby::Standbys;
use shoal_proto::spec::{HealthcheckSpec, ServiceSpec};
use shoal_proto::task::{Desired, TaskState};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

struct Node {
    handle: SupervisorHandle,
    events: UnboundedReceiver<Event>,
    _stop: tokio_util::sync::DropGuard,
}

fn start(fake: &FakeRuntime) -> Node {
    start_with(fake, None)
}

/// A supervisor keeping standby copies in `standbys`.
fn start_with(fake: &FakeRuntime, standbys: Option<Standbys>) -> Node {
    start_thawed(fake, standbys, Default::default())
}

/// A supervisor sharing `thawed` with a (would-be) frozen export.
fn start_thawed(
    fake: &FakeRuntime,
    standbys: Option<Standbys>,
    thawed: shoal_agent::volumes::thawed::Thawed,
) -> Node {
    let stop = CancellationToken::new();
    let (handle, events) = supervisor::spawn(
        SupervisorConfig {
            standbys,
            thawed,
            ..SupervisorConfig::new("node-a")
        },
        Arc::new(fake.clone()),
        stop.clone(),
    );
    Node {
        handle,
        events,
        _stop: stop.drop_guard(),
    }
}

fn spec(image: &str) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        image: image.into(),
        stop_grace_period_ms: Some(4_000),
        stop_signal: Some("SIGINT".into()),
        ..Default::default()
    }
}

fn assignment(id: &str, desired: Desired, spec: &ServiceSpec) -> Assignment {
    Assignment {
        task: TaskIdentity {
            task_id: id.into(),
            stack: "shop".into(),
            service: "web".into(),
            slot: 1,
            generation: 1,
        },
        desired,
        ended: false,
        gpus: Vec::new(),
        secrets: Vec::new(),
        volumes: Vec::new(),
        spec: Arc::new(spec.clone()),
    }
}

fn set(tasks: Vec<Assignment>) -> AssignmentSet {
    AssignmentSet {
        version: 1,
        mesh: Default::default(),
        remove_volumes: Vec::new(),
        tasks: tasks
            .into_iter()
            .map(|a| (a.task.task_id.clone(), a))
            .collect(),
    }
}

fn shoal_labels(task: &str, node: &str) -> BTreeMap<String, String> {
    [
        ("io.shoal.task", task),
        ("io.shoal.stack", "shop"),
        ("io.shoal.service", "web"),
        ("io.shoal.slot", "1"),
        ("io.shoal.node", node),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Node {
    /// The next report of `task` in state `state` (paused time makes the wait instant).
    async fn wait_for(&mut self, task: &str, state: TaskState) -> TaskReport {
        let deadline = Duration::from_secs(60);
        let found = tokio::time::timeout(deadline, async {
            loop {
                match self.events.recv().await.expect("supervisor alive") {
                    Event::Report(r) if r.task_id == task && r.state == state => return r,
                    _ => {}
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {state} report for {task}"))
    }

    /// Every report until no more come for a while.
    async fn drain(&mut self) -> Vec<TaskReport> {
        let mut out = Vec::new();
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_secs(3), self.events.recv()).await
        {
            if let Event::Report(r) = ev {
                out.push(r);
            }
        }
        out
    }

    async fn snapshot(&mut self) -> Vec<TaskReport> {
        self.handle.sync();
        loop {
            if let Event::Snapshot(s) = self.events.recv().await.expect("alive") {
                return s;
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn assignment_creates_and_starts_then_reports_running() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    node.handle.assign(set(vec![assignment(
        "t1",
        Desired::Running,
        &spec("img:1"),
    )]));
    node.wait_for("t1", TaskState::Starting).await;
    let running = node.wait_for("t1", TaskState::Running).await;
    let c = fake.container_of("t1").expect("container created");
    assert_eq!(running.container_id.as_deref(), Some(c.id.as_str()));
    assert_eq!(c.state, ContainerState::Running);
    assert_eq!(c.labels["io.shoal.node"], "node-a");

    let calls = fake.calls();
    assert_eq!(calls[0], Call::EnsureImage("img:1".into()));
    assert_eq!(calls[1], Call::EnsureNetwork("shop".into()));
    match &calls[2] {
        Call::Create(req) => {
            assert_eq!(req.name, "shop_web.1.t1");
            assert_eq!(req.labels["io.shoal.task"], "t1");
            assert_eq!(req.network, "shoal-shop");
        }
        other => panic!("expected create, got {other:?}"),
    }
    assert_eq!(calls[3], Call::Start(c.id.clone()));
    assert_eq!(calls.len(), 4);

    // Reassigning the same set changes nothing.
    node.handle.assign(set(vec![assignment(
        "t1",
        Desired::Running,
        &spec("img:1"),
    )]));
    assert_eq!(node.drain().await, vec![]);
    assert_eq!(
        fake.calls().len(),
        4,
        "no second container: {:?}",
        fake.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_with_grace_and_signal_then_removes() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    let s = spec("img:1");
    node.handle
        .assign(set(vec![assignment("t1", Desired::Running, &s)]));
    node.wait_for("t1", TaskState::Running).await;
    let id = fake.container_of("t1").unwrap().id;
    fake.clear_calls();

    node.handle
        .assign(set(vec![assignment("t1", Desired::Shutdown, &s)]));
    let r = node.wait_for("t1", TaskState::Shutdown).await;
    assert_eq!(r.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        fake.calls(),
        vec![
            Call::Stop {
                id: id.clone(),
                grace: Duration::from_secs(4),
                signal: Some("SIGINT".into()),
            },
            Call::Remove(id),
        ]
    );
    assert!(fake.containers().is_empty());
    // The stack's last task is gone: its network goes too.
    node.handle.assign(set(vec![]));
    node.drain().await;
    assert!(fake.calls().contains(&Call::RemoveNetwork("shop".into())));
}

#[tokio::test(start_paused = true)]
async fn fencing_at_connect_removes_unassigned_shoal_containers_only() {
    let fake = FakeRuntime::new();
    let stale = fake.insert_container(
        "shop_web.1.old",
        shoal_labels("old", "node-a"),
        ContainerState::Running,
    );
    let kept = fake.insert_container(
        "shop_web.2.t1",
        shoal_labels("t1", "node-a"),
        ContainerState::Running,
    );
    let other_node = fake.insert_container(
        "shop_web.3.t9",
        shoal_labels("t9", "node-b"),
        ContainerState::Running,
    );
    let not_shoal = fake.insert_container(
        "postgres",
        [("com.example".to_string(), "x".to_string())]
            .into_iter()
            .collect(),
        ContainerState::Running,
    );
    let mut node = start(&fake);

    // Before the controller said anything, nothing is fenced: the snapshot says what runs.
    let first = node.snapshot().await;
    let mut tasks: Vec<_> = first.iter().map(|r| r.task_id.clone()).collect();
    tasks.sort();
    assert_eq!(tasks, vec!["old", "t1"]);
    assert!(fake.calls().is_empty());

    // The controller's set has t1 only: old is fenced, t1 adopted (not recreated).
    node.handle
        .assign(set(vec![assignment("t1", Desired::Running, &spec("img"))]));
    node.drain().await;
    // On the next connect, fencing happens before the snapshot is taken.
    let snapshot = node.snapshot().await;
    assert_eq!(
        snapshot,
        vec![TaskReport::new("t1", TaskState::Running)
            .container(Some(&kept))
            // The fake's address for the second container it made: reported for the mesh.
            .ip("10.88.0.2".parse().ok())]
    );
    let calls = fake.calls();
    assert!(calls.contains(&Call::Remove(stale.clone())), "{calls:?}");
    assert!(!calls
        .iter()
        .any(|c| matches!(c, Call::Create(_) | Call::Start(_))));
    let left: Vec<_> = fake.containers().into_iter().map(|c| c.id).collect();
    assert_eq!(left, vec![kept, other_node, not_shoal]);
}

#[tokio::test(start_paused = true)]
async fn fencing_before_snapshot_on_reconnect() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    node.handle
        .assign(set(vec![assignment("t1", Desired::Running, &spec("img"))]));
    node.wait_for("t1", TaskState::Running).await;
    // Something (an earlier incarnation) left a container of a task moved elsewhere.
    let stale = fake.insert_container(
        "shop_web.1.moved",
        shoal_labels("moved", "node-a"),
        ContainerState::Running,
    );
    let snapshot = node.snapshot().await;
    assert_eq!(
        snapshot
            .iter()
            .map(|r| r.task_id.as_str())
            .collect::<Vec<_>>(),
        vec!["t1"]
    );
    assert!(fake.calls().contains(&Call::Remove(stale)));
}

#[tokio::test(start_paused = true)]
async fn exit_code_three_is_failed_and_not_restarted() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    node.handle
        .assign(set(vec![assignment("t1", Desired::Running, &spec("img"))]));
    node.wait_for("t1", TaskState::Running).await;
    assert!(fake.exit("t1", 3));
    let r = node.wait_for("t1", TaskState::Failed).await;
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.error.as_deref(), Some("exited with code 3"));
    fake.clear_calls();
    assert_eq!(node.drain().await, vec![]);
    assert!(
        fake.calls().is_empty(),
        "never restarted: {:?}",
        fake.calls()
    );
    assert!(fake.container_of("t1").is_some(), "kept until shutdown");
}

#[tokio::test(start_paused = true)]
async fn exit_zero_is_complete_and_oom_is_named() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    node.handle.assign(set(vec![
        assignment("ok", Desired::Running, &spec("img")),
        assignment("oom", Desired::Running, &spec("img")),
    ]));
    node.wait_for("ok", TaskState::Running).await;
    node.wait_for("oom", TaskState::Running).await;
    fake.exit("ok", 0);
    fake.oom_kill("oom");
    let mut got = node.drain().await;
    got.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].state, TaskState::Complete);
    assert_eq!(got[0].exit_code, Some(0));
    assert_eq!(got[1].state, TaskState::Failed);
    assert_eq!(
        got[1].error.as_deref(),
        Some("OOM-killed (exited with code 137)")
    );
}

#[tokio::test(start_paused = true)]
async fn pull_failure_is_failed_with_the_registrys_reason() {
    let fake = FakeRuntime::new();
    fake.fail_pull("ghost:1", "manifest for ghost:1 not found");
    let mut node = start(&fake);
    node.handle.assign(set(vec![assignment(
        "t1",
        Desired::Running,
        &spec("ghost:1"),
    )]));
    let r = node.wait_for("t1", TaskState::Failed).await;
    let error = r.error.unwrap();
    assert!(error.contains("ghost:1"), "{error}");
    assert!(error.contains("manifest for ghost:1 not found"), "{error}");
    assert_eq!(r.container_id, None);
    assert!(fake.containers().is_empty());
    fake.clear_calls();
    node.drain().await;
    assert!(fake.calls().is_empty(), "no retry: {:?}", fake.calls());

    // Shutting it down reports nothing new: it stays failed.
    node.handle.assign(set(vec![assignment(
        "t1",
        Desired::Shutdown,
        &spec("ghost:1"),
    )]));
    assert_eq!(node.drain().await, vec![]);
}

#[tokio::test(start_paused = true)]
async fn start_failure_is_failed_with_the_engines_words() {
    let fake = FakeRuntime::new();
    fake.fail(
        shoal_agent::runtime::fake::Op::Start,
        "port is already allocated",
    );
    let mut node = start(&fake);
    node.handle
        .assign(set(vec![assignment("t1", Desired::Running, &spec("img"))]));
    let r = node.wait_for("t1", TaskState::Failed).await;
    assert!(r.error.unwrap().contains("port is already allocated"));
    assert!(r.container_id.is_some());
}

#[tokio::test(start_paused = true)]
async fn health_transitions_are_reported() {
    let fake = FakeRuntime::new();
    fake.set_auto_healthy(false);
    let mut s = spec("img");
    s.healthcheck = Some(HealthcheckSpec {
        test: vec!["CMD-SHELL".into(), "true".into()],
        ..Default::default()
    });
    let mut node = start(&fake);
    node.handle
        .assign(set(vec![assignment("t1", Desired::Running, &s)]));
    node.wait_for("t1", TaskState::Running).await;
    fake.set_health("t1", Health::Healthy);
    node.wait_for("t1", TaskState::Healthy).await;
    fake.set_health("t1", Health::Unhealthy);
    node.wait_for("t1", TaskState::Unhealthy).await;
    fake.set_health("t1", Health::Healthy);
    node.wait_for("t1", TaskState::Healthy).await;
    assert_eq!(node.drain().await, vec![], "transitions only");
}

#[tokio::test(start_paused = true)]
async fn the_unhealthy_a_pause_leaves_behind_is_not_reported_but_a_real_one_is() {
    let fake = FakeRuntime::new();
    fake.set_auto_healthy(false);
    let mut s = spec("img");
    s.healthcheck = Some(HealthcheckSpec {
        test: vec!["CMD-SHELL".into(), "true".into()],
        ..Default::default()
    });
    let thawed = shoal_agent::volumes::thawed::Thawed::default();
    let mut node = start_thawed(&fake, None, thawed.clone());
    node.handle
        .assign(set(vec![assignment("t1", Desired::Running, &s)]));
    node.wait_for("t1", TaskState::Running).await;
    fake.set_health("t1", Health::Healthy);
    let r = node.wait_for("t1", TaskState::Healthy).await;
    // A frozen export paused and resumed it: the engine says unhealthy until its next
    // probe; nothing is reported.
    thawed.resumed(&r.container_id.clone().unwrap());
    fake.set_health("t1", Health::Unhealthy);
    assert_eq!(
        node.drain().await,
        vec![],
        "the pause's unhealthy is not the service's"
    );
    // A probe passed: from then on its health is its own again.
    fake.set_health("t1", Health::Healthy);
    node.drain().await;
    fake.set_health("t1", Health::Unhealthy);
    node.wait_for("t1", TaskState::Unhealthy).await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_pull_does_not_hold_up_shutdowns() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    let s = spec("img");
    node.handle
        .assign(set(vec![assignment("t1", Desired::Running, &s)]));
    node.wait_for("t1", TaskState::Running).await;
    fake.hang(shoal_agent::runtime::fake::Op::EnsureImage);
    node.handle.assign(set(vec![
        assignment("t1", Desired::Shutdown, &s),
        assignment("t2", Desired::Running, &s),
    ]));
    node.wait_for("t1", TaskState::Shutdown).await;
    fake.release(shoal_agent::runtime::fake::Op::EnsureImage);
    node.wait_for("t2", TaskState::Running).await;
}

#[tokio::test(start_paused = true)]
async fn unassigned_task_is_removed_quietly() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    node.handle
        .assign(set(vec![assignment("t1", Desired::Running, &spec("img"))]));
    node.wait_for("t1", TaskState::Running).await;
    let id = fake.container_of("t1").unwrap().id;
    node.handle.assign(set(vec![]));
    assert_eq!(node.drain().await, vec![]);
    assert!(fake.calls().contains(&Call::Remove(id)));
    assert!(fake.containers().is_empty());
}

#[tokio::test]
async fn ingress_port_forwards_to_a_running_replica_and_conflicts_fail_the_task() {
    use shoal_proto::spec::PortSpec;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // The "replica": an echo server at 127.0.0.1:target.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = backend.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = backend.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 16];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = s.write_all(&buf[..n]).await;
            });
        }
    });
    let published = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();

    let port = |published| PortSpec {
        target,
        published: Some(published),
        host_ip: Some("127.0.0.1".into()),
        ..Default::default()
    };
    let mut web = spec("img");
    web.ports = vec![port(published)];
    let mut clash = spec("img");
    clash.name = "clash".into();
    clash.ports = vec![port(taken_port)];

    let fake = FakeRuntime::new();
    fake.set_ingress(true);
    let stop = CancellationToken::new();
    let (handle, mut events) = supervisor::spawn(
        SupervisorConfig {
            poll_interval: Duration::from_millis(50),
            ingress: true,
            ..SupervisorConfig::new("node-a")
        },
        Arc::new(fake.clone()),
        stop.clone(),
    );
    let _guard = stop.drop_guard();
    handle.assign(set(vec![
        assignment("t1", Desired::Running, &web),
        assignment("t2", Desired::Running, &clash),
    ]));
    let mut failed = None;
    let mut ip_set = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while failed.is_none() {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap();
        if let Some(Event::Report(r)) = ev {
            if r.task_id == "t1" && r.state == TaskState::Running && !ip_set {
                fake.set_ip("t1", "127.0.0.1".parse().unwrap());
                ip_set = true;
            }
            if r.task_id == "t2" && r.state == TaskState::Failed {
                failed = r.error;
            }
        }
    }
    let error = failed.unwrap();
    assert!(error.contains(&taken_port.to_string()), "{error}");

    let mut answered = false;
    for _ in 0..100 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", published)).await {
            s.write_all(b"ping").await.unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            if out == b"ping" {
                answered = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "ingress port forwards to the replica");
    drop(taken);
}

fn with_volumes(spec: &ServiceSpec) -> ServiceSpec {
    use shoal_proto::spec::{MountKind, MountSpec};
    let mount = |source: Option<&str>, target: &str| MountSpec {
        kind: MountKind::Volume,
        source: source.map(str::to_string),
        target: target.into(),
        read_only: false,
        relative: false,
    };
    ServiceSpec {
        volumes: vec![
            mount(Some("data"), "/data"),
            mount(None, "/cache"),
            mount(Some("shared"), "/shared"),
        ],
        ..spec.clone()
    }
}

fn volume_mounts() -> Vec<shoal_agent::model::VolumeMount> {
    use shoal_agent::model::VolumeMount;
    vec![
        VolumeMount {
            name: "data".into(),
            docker_name: "pgdata".into(),
            driver: Some("local".into()),
            driver_opts: [("type".to_string(), "none".to_string())].into(),
            labels: [("team".to_string(), "db".to_string())].into(),
            ..Default::default()
        },
        VolumeMount {
            name: "shared".into(),
            docker_name: "company-shared".into(),
            external: true,
            ..Default::default()
        },
    ]
}

fn volume_assignment(id: &str, desired: Desired) -> Assignment {
    let mut a = assignment(id, desired, &with_volumes(&spec("img:1")));
    a.volumes = volume_mounts();
    a
}

#[tokio::test(start_paused = true)]
async fn named_volumes_are_created_labelled_before_the_container_and_mounted_by_engine_name() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    node.handle
        .assign(set(vec![volume_assignment("t1", Desired::Running)]));
    node.wait_for("t1", TaskState::Running).await;

    let calls = fake.calls();
    let created_volume = calls
        .iter()
        .position(|c| matches!(c, Call::CreateVolume(_)))
        .expect("volume created");
    let created_container = calls
        .iter()
        .position(|c| matches!(c, Call::Create(_)))
        .expect("container created");
    assert!(created_volume < created_container, "{calls:?}");
    let expected = shoal_agent::runtime::VolumeRequest {
        name: "pgdata".into(),
        driver: Some("local".into()),
        driver_opts: [("type".to_string(), "none".to_string())].into(),
        labels: [
            ("team", "db"),
            ("io.shoal.stack", "shop"),
            ("io.shoal.volume", "data"),
            ("io.shoal.node", "node-a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    // Only the shoal volume: the external one is someone else's.
    let volume_calls: Vec<_> = calls
        .iter()
        .filter(|c| matches!(c, Call::CreateVolume(_)))
        .collect();
    assert_eq!(volume_calls, vec![&Call::CreateVolume(expected)]);
    let Call::Create(req) = &calls[created_container] else {
        unreachable!()
    };
    let sources: Vec<Option<&str>> = req.mounts.iter().map(|m| m.source.as_deref()).collect();
    assert_eq!(
        sources,
        vec![Some("pgdata"), None, Some("company-shared")],
        "named volumes by their engine names, the anonymous one stays per container"
    );
}

#[tokio::test(start_paused = true)]
async fn an_existing_volume_is_reused_as_it_is() {
    let fake = FakeRuntime::new();
    let dir = fake.insert_volume("pgdata", BTreeMap::new());
    std::fs::write(dir.join("PG_VERSION"), "16").unwrap();
    let mut node = start(&fake);
    node.handle
        .assign(set(vec![volume_assignment("t1", Desired::Running)]));
    node.wait_for("t1", TaskState::Running).await;
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| matches!(c, Call::CreateVolume(_))),
        "{:?}",
        fake.calls()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("PG_VERSION")).unwrap(),
        "16"
    );
    assert!(fake.volumes()[0].labels.is_empty(), "not relabelled");
}

#[tokio::test(start_paused = true)]
async fn a_volume_failing_to_be_created_fails_the_task_without_a_container() {
    let fake = FakeRuntime::new();
    fake.fail(
        shoal_agent::runtime::fake::Op::CreateVolume,
        "plugin not found",
    );
    let mut node = start(&fake);
    node.handle
        .assign(set(vec![volume_assignment("t1", Desired::Running)]));
    let failed = node.wait_for("t1", TaskState::Failed).await;
    assert_eq!(
        failed.error.as_deref(),
        Some("create volume pgdata: plugin not found")
    );
    assert!(fake.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn volumes_to_remove_wait_until_no_container_uses_them() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    node.handle
        .assign(set(vec![volume_assignment("t1", Desired::Running)]));
    node.wait_for("t1", TaskState::Running).await;
    let container = fake.container_of("t1").unwrap().id;
    fake.insert_volume(
        "leftover",
        BTreeMap::from([("io.shoal.node".to_string(), "node-a".to_string())]),
    );
    // A volume of that name the node's owner made (no shoal label for this node) is
    // never removed for the cluster, though the controller lists it.
    let foreign = fake.insert_volume("theirs", BTreeMap::new());
    std::fs::write(foreign.join("keep"), b"mine").unwrap();

    // Still assigned to run here: pgdata is skipped, the others go ("ghost" is missing,
    // which counts as removed).
    let mut s = set(vec![volume_assignment("t1", Desired::Running)]);
    s.remove_volumes = vec![
        "pgdata".into(),
        "leftover".into(),
        "ghost".into(),
        "theirs".into(),
    ];
    node.handle.assign(s);
    // One change per volume gone: leftover, ghost, theirs (forgotten, not removed).
    wait_volumes_changed(&mut node).await;
    wait_volumes_changed(&mut node).await;
    wait_volumes_changed(&mut node).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut names: Vec<String> = fake.volumes().into_iter().map(|v| v.name).collect();
    names.sort();
    assert_eq!(names, vec!["pgdata".to_string(), "theirs".to_string()]);
    assert_eq!(std::fs::read(foreign.join("keep")).unwrap(), b"mine");
    assert!(
        !fake.calls().contains(&Call::RemoveVolume("pgdata".into())),
        "{:?}",
        fake.calls()
    );

    // Its task shut down: removed once its container is gone.
    let mut s = set(vec![]);
    s.remove_volumes = vec!["pgdata".into()];
    node.handle.assign(s);
    wait_volumes_changed(&mut node).await;
    let left: Vec<String> = fake.volumes().into_iter().map(|v| v.name).collect();
    assert_eq!(left, vec!["theirs".to_string()]);
    let calls = fake.calls();
    let removed_container = calls
        .iter()
        .position(|c| *c == Call::Remove(container.clone()))
        .expect("container removed");
    let removed_volume = calls
        .iter()
        .rposition(|c| *c == Call::RemoveVolume("pgdata".into()))
        .expect("volume removed");
    assert!(removed_container < removed_volume, "{calls:?}");
}

async fn wait_volumes_changed(node: &mut Node) {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Event::VolumesChanged = node.events.recv().await.expect("alive") {
                return;
            }
        }
    })
    .await
    .expect("volumes removed");
}

/// A standby copy of `name` holding `PG_VERSION` = `version`, as a refresh leaves it.
fn standby_copy(standbys: &Standbys, name: &str, version: &str) {
    let next = standbys.begin(name).unwrap();
    std::fs::create_dir(next.join("base")).unwrap();
    std::fs::write(next.join("base/PG_VERSION"), version).unwrap();
    std::os::unix::fs::symlink("base/PG_VERSION", next.join("current")).unwrap();
    standbys.commit(name).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_promoted_standby_becomes_the_volume_before_the_container_starts() {
    let data = tempfile::tempdir().unwrap();
    let standbys = Standbys::in_data_dir(data.path());
    standby_copy(&standbys, "pgdata", "16");
    let fake = FakeRuntime::new();
    let mut node = start_with(&fake, Some(standbys.clone()));
    node.handle
        .assign(set(vec![volume_assignment("t1", Desired::Running)]));
    node.wait_for("t1", TaskState::Running).await;

    let volumes = fake.volumes();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].name, "pgdata");
    assert_eq!(volumes[0].labels.get("io.shoal.node").unwrap(), "node-a");
    assert_eq!(volumes[0].labels.get("team").unwrap(), "db");
    let dir = volumes[0].mountpoint.clone().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("base/PG_VERSION")).unwrap(),
        "16"
    );
    assert_eq!(
        std::fs::read_link(dir.join("current")).unwrap(),
        std::path::Path::new("base/PG_VERSION")
    );
    assert!(
        !data.path().join("standby/pgdata").exists(),
        "standby used up"
    );
    assert!(!standbys.has("pgdata"));
}

#[tokio::test(start_paused = true)]
async fn an_empty_volume_is_filled_from_the_standby_and_one_with_data_is_left_alone() {
    let data = tempfile::tempdir().unwrap();
    let standbys = Standbys::in_data_dir(data.path());
    let fake = FakeRuntime::new();
    let mount = &volume_mounts()[0];

    // Empty (made by hand, or by a failed earlier promotion): filled.
    let empty = fake.insert_volume("pgdata", BTreeMap::new());
    standby_copy(&standbys, "pgdata", "16");
    shoal_agent::volumes::ensure(&fake, "shop", "node-a", mount, Some(&standbys))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(empty.join("base/PG_VERSION")).unwrap(),
        "16"
    );
    assert!(!standbys.has("pgdata"));

    // Holding data: used as it is, the standby kept.
    standby_copy(&standbys, "pgdata", "17");
    shoal_agent::volumes::ensure(&fake, "shop", "node-a", mount, Some(&standbys))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(empty.join("base/PG_VERSION")).unwrap(),
        "16"
    );
    assert!(standbys.has("pgdata"));
}

#[tokio::test(start_paused = true)]
async fn removing_a_volume_removes_its_standby_copy() {
    let data = tempfile::tempdir().unwrap();
    let standbys = Standbys::in_data_dir(data.path());
    standby_copy(&standbys, "shop_cache", "1");
    let fake = FakeRuntime::new();
    let mut node = start_with(&fake, Some(standbys.clone()));
    let mut s = set(vec![]);
    s.remove_volumes = vec!["shop_cache".into()];
    node.handle.assign(s);
    wait_volumes_changed(&mut node).await;
    assert!(!data.path().join("standby/shop_cache").exists());
    assert!(!standbys.has("shop_cache"));
}

#[tokio::test(start_paused = true)]
async fn containers_left_paused_by_a_dead_agent_are_resumed_at_start() {
    use shoal_agent::runtime::ContainerRuntime;
    let fake = FakeRuntime::new();
    let ours = fake.insert_container(
        "shop_db.1.t1",
        shoal_labels("t1", "node-a"),
        ContainerState::Running,
    );
    let theirs = fake.insert_container(
        "shop_db.1.t2",
        shoal_labels("t2", "node-b"),
        ContainerState::Running,
    );
    let running = fake.insert_container(
        "shop_web.1.t3",
        shoal_labels("t3", "node-a"),
        ContainerState::Running,
    );
    fake.pause(&ours).await.unwrap();
    fake.pause(&theirs).await.unwrap();
    fake.clear_calls();

    let node = start(&fake);
    // Answered only once the supervisor runs its loop: after the resume.
    node.handle.containers().await;
    assert!(!fake.is_paused("t1"));
    assert!(fake.is_paused("t2"), "another node's container is not ours");
    let calls = fake.calls();
    assert!(calls.contains(&Call::Unpause(ours)), "{calls:?}");
    assert!(!calls.contains(&Call::Unpause(running)), "{calls:?}");
}

/// The image pruner keeps what the assignments name: every task's image, ended ones'
/// included, from the supervisor's latest assignments.
#[tokio::test(start_paused = true)]
async fn assignments_tell_the_images_which_are_in_use() {
    let fake = FakeRuntime::new();
    let images = Arc::new(shoal_agent::images::Images::default());
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (handle, events) = supervisor::spawn(
        SupervisorConfig {
            images: images.clone(),
            ..SupervisorConfig::new("node-a")
        },
        Arc::new(fake.clone()),
        stop,
    );
    let mut node = Node {
        handle,
        events,
        _stop: CancellationToken::new().drop_guard(),
    };
    assert_eq!(images.assigned(), None, "nothing known before assignments");
    let mut ended = assignment("t2", Desired::Shutdown, &spec("old"));
    ended.ended = true;
    node.handle.assign(set(vec![
        assignment("t1", Desired::Running, &spec("img:1")),
        ended,
    ]));
    node.wait_for("t1", TaskState::Running).await;
    let want = ["img:1", "old:latest"].map(String::from).into();
    assert_eq!(images.assigned(), Some(want));

    node.handle.assign(set(vec![]));
    // Commands are handled in order: once this answers, the assignments are in.
    node.handle.containers().await;
    assert_eq!(images.assigned(), Some(Default::default()));
}
