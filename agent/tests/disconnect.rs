//! The disconnect policy in the supervisor, against the recording fake runtime on paused
//! time: with no controller heard from, replicas of `x-shoal-disconnect: stop` services
//! are stopped after their time and reported failed with the reason; the others keep
//! running; contact in time keeps everything running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_agent::disconnect::Contact;
use shoal_agent::model::{Assignment, AssignmentSet, TaskReport};
use shoal_agent::runtime::fake::{Call, FakeRuntime};
use shoal_agent::runtime::{ContainerState, TaskIdentity};
use shoal_agent::supervisor::{self, Event, SupervisorConfig};
use shoal_proto::spec::{DisconnectPolicy, ServiceSpec};
use shoal_proto::task::{Desired, TaskState};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

fn assignment(id: &str, service: &str, stop_after_ms: Option<u64>) -> Assignment {
    Assignment {
        task: TaskIdentity {
            task_id: id.into(),
            stack: "shop".into(),
            service: service.into(),
            slot: 1,
            generation: 1,
        },
        desired: Desired::Running,
        ended: false,
        spec: Arc::new(ServiceSpec {
            name: service.into(),
            image: "img".into(),
            stop_grace_period_ms: Some(1_000),
            disconnect: DisconnectPolicy { stop_after_ms },
            ..Default::default()
        }),
        gpus: Vec::new(),
        secrets: Vec::new(),
        volumes: Vec::new(),
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

/// Reports until `until` (paused time), by task.
async fn reports(
    events: &mut UnboundedReceiver<Event>,
    until: Duration,
) -> BTreeMap<String, Vec<TaskReport>> {
    let mut out: BTreeMap<String, Vec<TaskReport>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + until;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if let Event::Report(r) = ev {
            out.entry(r.task_id.clone()).or_default().push(r);
        }
    }
    out
}

fn states(r: &BTreeMap<String, Vec<TaskReport>>, task: &str) -> Vec<TaskState> {
    r.get(task)
        .map(|v| v.iter().map(|r| r.state).collect())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn a_cut_off_node_stops_only_the_services_that_asked() {
    let fake = FakeRuntime::new();
    let contact = Contact::new();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (handle, mut events) = supervisor::spawn_with_contact(
        SupervisorConfig {
            poll_interval: Duration::from_millis(100),
            ..SupervisorConfig::new("node-a")
        },
        Arc::new(fake.clone()),
        Some(contact.clone()),
        stop,
    );
    handle.assign(set(vec![
        assignment("db", "db", Some(2_000)),
        assignment("web", "web", None),
    ]));
    let first = reports(&mut events, Duration::from_millis(1_500)).await;
    assert_eq!(
        states(&first, "db"),
        vec![TaskState::Starting, TaskState::Running]
    );
    assert_eq!(
        states(&first, "web"),
        vec![TaskState::Starting, TaskState::Running]
    );
    let db = fake.container_of("db").expect("db container");
    fake.clear_calls();

    // 1.5 s in; silence until 2 s stops db, within one poll.
    let second = reports(&mut events, Duration::from_millis(700)).await;
    let db_reports = &second["db"];
    assert_eq!(db_reports.len(), 1, "{db_reports:?}");
    assert_eq!(db_reports[0].state, TaskState::Failed);
    assert_eq!(
        db_reports[0].error.as_deref(),
        Some("stopped: no controller reachable for 2000 ms (x-shoal-disconnect: stop)")
    );
    assert_eq!(
        fake.calls(),
        vec![Call::Stop {
            id: db.id.clone(),
            grace: Duration::from_secs(1),
            signal: None,
        }],
        "stopped with its grace, never removed: its logs stay"
    );
    assert_eq!(
        fake.container_of("db").map(|c| c.state),
        Some(ContainerState::Exited)
    );

    // However long the silence lasts, web keeps running and db stays stopped.
    fake.clear_calls();
    let later = reports(&mut events, Duration::from_secs(60)).await;
    assert_eq!(states(&later, "web"), vec![]);
    assert_eq!(states(&later, "db"), vec![]);
    assert_eq!(
        fake.calls(),
        vec![],
        "nothing restarted, nothing stopped again"
    );
    assert_eq!(
        fake.container_of("web").map(|c| c.state),
        Some(ContainerState::Running)
    );
}

#[tokio::test(start_paused = true)]
async fn contact_in_time_keeps_the_replicas_running() {
    let fake = FakeRuntime::new();
    let contact = Contact::new();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (handle, mut events) = supervisor::spawn_with_contact(
        SupervisorConfig {
            poll_interval: Duration::from_millis(100),
            ..SupervisorConfig::new("node-a")
        },
        Arc::new(fake.clone()),
        Some(contact.clone()),
        stop,
    );
    handle.assign(set(vec![assignment("db", "db", Some(2_000))]));
    let mut seen = Vec::new();
    // Heard from every 1.5 s for 30 s: never silent for 2 s.
    for _ in 0..20 {
        let r = reports(&mut events, Duration::from_millis(1_500)).await;
        seen.extend(states(&r, "db"));
        contact.touch();
    }
    assert_eq!(seen, vec![TaskState::Starting, TaskState::Running]);
    assert_eq!(
        fake.container_of("db").map(|c| c.state),
        Some(ContainerState::Running)
    );
}
