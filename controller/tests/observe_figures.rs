//! The figures `/metrics` counts from the applied state, and the leader's stats store
//! behind `shoal stats`: exact values from hand-built states and reports.

mod common;
use common::*;

use shoal_controller::observe::figures::{count, RolloutPhase};
use shoal_controller::observe::stats::{GpuFigures, NodeReport, ReplicaFigures, StatsStore};
use shoal_controller::observe::{Observe, Tally, DECISION_KINDS};
use shoal_controller::reconciler::{reconcile, rollout_paused};
use shoal_controller::state::*;
use shoal_proto::spec::{FailureAction, ServiceSpec, UpdateConfig};
use shoal_proto::task::TaskState;

fn web(replicas: u64, image: &str) -> ServiceSpec {
    let mut s = svc("web", replicas);
    s.image = image.into();
    s
}

/// Index of `state` in the figures' task counts.
fn tasks_in(s: &ClusterState, state: TaskState) -> u64 {
    let i = TaskState::ALL.iter().position(|x| *x == state).unwrap();
    count(s).tasks[i]
}

fn phase(s: &ClusterState) -> RolloutPhase {
    count(s).services[0].phase
}

#[test]
fn nodes_tasks_and_replicas_follow_the_state() {
    let mut down = node("b", 4.0, 4096);
    down.status = NodeStatus::Down;
    let mut drained = node("c", 4.0, 4096);
    drained.availability = Availability::Drain;
    let mut s = deployed(
        vec![node("a", 4.0, 4096), down, drained],
        vec![web(3, "img:1")],
    );
    let f = count(&s);
    // ready, down, unknown; active, drain.
    assert_eq!(f.nodes, [2, 1, 0]);
    assert_eq!(f.availability, [2, 1]);
    assert_eq!(f.services.len(), 1);
    // No task exists before the reconciler's first pass.
    assert_eq!(f.tasks, [0; 10]);
    assert_eq!(phase(&s), RolloutPhase::Updating);
    settle(&mut s, 0);
    assert_eq!(tasks_in(&s, TaskState::Assigned), 3);
    report(&mut s, "web", TaskState::Running, None, 1);
    let f = count(&s);
    assert_eq!(tasks_in(&s, TaskState::Running), 3);
    let w = &f.services[0];
    assert_eq!((w.stack, w.name), ("app", "web"));
    assert_eq!(
        (w.desired, w.running, w.healthy, w.generation),
        (3, 3, 3, 1)
    );
    // Complete once the monitor period has passed.
    settle(&mut s, 1_000_000);
    assert_eq!(phase(&s), RolloutPhase::Completed);
    assert_eq!(count(&s).rollouts, [0, 0, 0, 1, 0]);
}

#[test]
fn a_failing_rollout_reads_paused_and_one_that_rolls_back_rolling_back() {
    for (action, expected) in [
        (FailureAction::Pause, RolloutPhase::Paused),
        (FailureAction::Rollback, RolloutPhase::RollingBack),
    ] {
        let update = UpdateConfig {
            failure_action: action,
            ..Default::default()
        };
        let mut one = web(2, "img:1");
        one.update = update;
        let mut s = deployed(vec![node("a", 4.0, 4096)], vec![one.clone()]);
        settle(&mut s, 0);
        report(&mut s, "web", TaskState::Running, None, 1);
        settle(&mut s, 2);
        let mut two = one;
        two.image = "img:2".into();
        redeploy(&mut s, two, 3);
        assert_eq!(phase(&s), RolloutPhase::Updating);
        let d = reconcile(&s, 4);
        s.apply(&Command::Reconcile {
            decisions: d,
            now_ms: 4,
        });
        let d = reconcile(&s, 5);
        s.apply(&Command::Reconcile {
            decisions: d,
            now_ms: 5,
        });
        // The new replica fails.
        let new: Vec<Task> = s
            .tasks
            .values()
            .filter(|t| t.generation == 2 && t.node.is_some() && !t.state.is_terminal())
            .cloned()
            .collect();
        assert!(!new.is_empty(), "a new replica was placed");
        for t in new {
            s.apply(&Command::TaskStatus {
                node: t.node.clone().unwrap(),
                updates: vec![TaskUpdate {
                    task: t.id.clone(),
                    state: TaskState::Failed,
                    container_id: String::new(),
                    exit_code: Some(1),
                    error: "exit 1".into(),
                    ip: None,
                    ips: Default::default(),
                }],
                now_ms: 6,
            });
        }
        assert_eq!(phase(&s), expected, "{action:?}");
        assert_eq!(count(&s).services[0].generation, 2);
    }
}

/// The phase reads as `shoal services` words it, in every case.
#[test]
fn phases_agree_with_the_words_of_shoal_services() {
    let s = deployed(vec![node("a", 4.0, 4096)], vec![web(1, "img:1")]);
    let base = s.services["app/web"].clone();
    for complete in [false, true] {
        for rolled_back in [false, true] {
            for previous in [false, true] {
                for action in [FailureAction::Pause, FailureAction::Rollback] {
                    for paused in [false, true] {
                        let mut svc = base.clone();
                        svc.rollout_complete = complete;
                        svc.rolled_back = rolled_back;
                        svc.previous = previous.then(|| svc.spec.clone());
                        svc.spec.update.failure_action = action;
                        let words = svc.rollout_state(paused.then_some("why"));
                        let phase = RolloutPhase::of(&svc, paused);
                        let expected = phase.as_str().replace('_', " ");
                        assert!(
                            words.starts_with(&expected),
                            "{words:?} vs {phase:?} ({complete} {rolled_back} {previous} {action:?} {paused})"
                        );
                    }
                }
            }
        }
    }
    // `rollout_paused` is what decides `paused` in the figures.
    let tasks: Vec<&Task> = s.tasks.values().collect();
    assert!(rollout_paused(&s.services["app/web"], &tasks).is_none());
}

#[test]
fn decisions_are_tallied_by_kind() {
    let d = vec![
        Decision::Assign {
            task: "1".into(),
            node: "a".into(),
        },
        Decision::Assign {
            task: "2".into(),
            node: "a".into(),
        },
        Decision::Orphan { task: "3".into() },
    ];
    let o = Observe::default();
    o.count(&Tally::of(&d));
    let get = |kind: &'static str| o.decisions.get_or_create(&[("kind", kind)]).get();
    assert_eq!(get("assign"), 2);
    assert_eq!(get("orphan"), 1);
    assert_eq!(get("create"), 0);
    assert_eq!(DECISION_KINDS.len(), 14);
}

fn replica(task: &str, service: &str, cpu: f64, mem: u64) -> ReplicaFigures {
    ReplicaFigures {
        task: task.into(),
        service: service.into(),
        container: format!("c-{task}"),
        cpu_percent: cpu,
        memory_bytes: mem,
        memory_limit_bytes: 0,
        net_rx_bytes: 10,
        net_tx_bytes: 20,
        restarts: 0,
        at_ms: 0,
    }
}

/// Two nodes running `app/web` (3 replicas) and `app/db` (1).
fn two_nodes() -> (ClusterState, Vec<Task>) {
    let mut db = svc("db", 1);
    db.image = "pg".into();
    let mut s = deployed(
        vec![node("a", 1.0, 1024), node("b", 1.0, 1024)],
        vec![web(3, "img:1"), db],
    );
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Running, None, 1);
    report(&mut s, "db", TaskState::Running, None, 1);
    let tasks = s.tasks.values().cloned().collect();
    (s, tasks)
}

fn report_of(node: &str, tasks: &[Task], cpu: f64) -> NodeReport {
    NodeReport {
        replicas: tasks
            .iter()
            .filter(|t| t.node.as_deref() == Some(node))
            .map(|t| replica(&t.id, &t.service_key(), cpu, 1000))
            .collect(),
        gpus: vec![GpuFigures {
            uuid: format!("GPU-{node}"),
            index: 0,
            model: "T4".into(),
            utilization_percent: Some(40),
            memory_used_bytes: Some(5),
        }],
    }
}

const T0: u64 = 1_700_000_000_000 / 60_000 * 60_000;

#[test]
fn stats_keep_each_nodes_latest_report_and_an_hour_per_service() {
    let (mut s, tasks) = two_nodes();
    let store = StatsStore::default();
    store.record("a", report_of("a", &tasks, 10.0), T0);
    store.record("b", report_of("b", &tasks, 10.0), T0 + 1);
    let all = store.reply(&s, None, false, T0 + 2);
    assert_eq!(all.replicas.len(), 4);
    assert_eq!(all.at_ms, T0 + 2);
    assert!(all.services.is_empty(), "no history unless asked");
    let web = store.reply(&s, Some("app/web"), true, T0 + 2);
    assert_eq!(web.replicas.len(), 3);
    assert!(web.replicas.iter().all(|r| r.service == "web"));
    let slots: Vec<u64> = web.replicas.iter().map(|r| r.slot).collect();
    assert_eq!(slots, vec![1, 2, 3]);
    // No web replica holds a GPU: none is shown for it.
    assert!(web.gpus.is_empty());
    assert_eq!(web.services.len(), 1);
    // Samples of this minute: web on a alone (a's share), then on both nodes.
    let on_a = tasks
        .iter()
        .filter(|t| t.service == "web" && t.node.as_deref() == Some("a"))
        .count() as f64;
    let p = &web.services[0].points;
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].at_ms, T0);
    assert_eq!(p[0].cpu_percent, (on_a * 10.0 + 30.0) / 2.0);
    // A new minute, a new report from a: its figures replace the old ones.
    store.record("a", report_of("a", &tasks, 50.0), T0 + 60_000);
    let later = store.reply(&s, None, true, T0 + 60_001);
    let web_points = &later
        .services
        .iter()
        .find(|x| x.service == "web")
        .unwrap()
        .points;
    assert_eq!(web_points.len(), 2);
    assert_eq!(web_points[1].cpu_percent, on_a * 50.0 + (3.0 - on_a) * 10.0);
    assert_eq!(later.gpus.len(), 2);
    assert_eq!(later.gpus[0].history.len(), 2, "{:?}", later.gpus[0]);
    assert_eq!(later.gpus[0].utilization_percent, Some(40));
    // Node b is down: its rows go.
    s.nodes.get_mut("b").unwrap().status = NodeStatus::Down;
    let without_b = store.reply(&s, None, false, T0 + 60_002);
    assert!(without_b.replicas.iter().all(|r| r.node == "a"));
    assert!(without_b.gpus.iter().all(|g| g.node == "a"));
    // A task the state no longer has is left out.
    let gone = tasks
        .iter()
        .find(|t| t.node.as_deref() == Some("a"))
        .unwrap();
    s.tasks.remove(&gone.id);
    let fewer = store.reply(&s, None, false, T0 + 60_003);
    assert!(fewer.replicas.iter().all(|r| r.task != gone.id));
    // A session that ends drops the node's rows.
    store.forget_node("a", T0 + 60_004);
    assert!(store
        .reply(&s, None, false, T0 + 60_005)
        .replicas
        .is_empty());
    assert_eq!(store.nodes(), vec!["b".to_string()]);
    // History ages out after an hour without samples.
    store.forget_node("b", T0 + 60_006);
    store.prune(T0 + 3 * 3_600_000);
    s.nodes.get_mut("b").unwrap().status = NodeStatus::Ready;
    assert!(store
        .reply(&s, None, true, T0 + 3 * 3_600_000)
        .services
        .is_empty());
}

#[test]
fn a_service_filter_shows_the_gpus_its_replicas_hold() {
    let (mut s, tasks) = two_nodes();
    let db = tasks.iter().find(|t| t.service == "db").unwrap();
    let db_node = db.node.clone().unwrap();
    s.tasks.get_mut(&db.id).unwrap().gpus = vec![format!("GPU-{db_node}")];
    let store = StatsStore::default();
    for n in ["a", "b"] {
        store.record(n, report_of(n, &tasks, 1.0), T0);
    }
    let reply = store.reply(&s, Some("app/db"), false, T0);
    assert_eq!(reply.replicas.len(), 1);
    assert_eq!(reply.gpus.len(), 1);
    assert_eq!(reply.gpus[0].node, db_node);
    assert!(reply.gpus[0].history.is_empty(), "no history unless asked");
}

#[test]
fn bad_reports_are_refused_naming_what() {
    use shoal_proto::pb;
    let bad = pb::StatsReport {
        replicas: vec![pb::ReplicaStats {
            task: "t9".into(),
            cpu_percent: f64::NAN,
            ..Default::default()
        }],
        gpus: vec![],
    };
    let err = NodeReport::try_from(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid stats report: task t9: cpu_percent NaN is not a percentage"
    );
    let no_task = pb::StatsReport {
        replicas: vec![pb::ReplicaStats {
            stack: "app".into(),
            service: "web".into(),
            slot: 2,
            ..Default::default()
        }],
        gpus: vec![],
    };
    assert_eq!(
        NodeReport::try_from(&no_task).unwrap_err().to_string(),
        "invalid stats report: a replica of app/web slot 2 names no task"
    );
}
