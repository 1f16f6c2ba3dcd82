//! The reconciler's exact decisions, pass by pass.

mod common;
use common::*;

use shoal_controller::reconciler::reconcile;
use shoal_controller::state::*;
use shoal_proto::spec::*;
use shoal_proto::task::{Desired, TaskState};

fn create(service: &str, slot: u64, generation: u64) -> Decision {
    Decision::CreateTask {
        service: format!("app/{service}"),
        slot,
        generation,
        node: None,
    }
}

fn apply(s: &mut ClusterState, decisions: Vec<Decision>, now_ms: u64) {
    s.apply(&Command::Reconcile { decisions, now_ms });
}

fn ids(s: &ClusterState, service: &str) -> Vec<String> {
    live(s, service).iter().map(|t| t.id.clone()).collect()
}

#[test]
fn a_new_service_gets_one_task_per_slot_then_placed() {
    let mut s = deployed(vec![node("a", 2.0, 1024)], vec![svc("web", 2)]);
    let first = reconcile(&s, 10);
    assert_eq!(first, vec![create("web", 1, 1), create("web", 2, 1)]);
    apply(&mut s, first, 10);
    assert_eq!(
        reconcile(&s, 10),
        vec![
            Decision::Assign {
                task: "0000000001".into(),
                node: "a".into()
            },
            Decision::Assign {
                task: "0000000002".into(),
                node: "a".into()
            },
        ]
    );
    settle(&mut s, 10);
    assert!(
        reconcile(&s, 10).is_empty(),
        "a converged cluster needs no decision"
    );
}

#[test]
fn depends_on_holds_a_service_until_its_dependency_is_healthy() {
    let mut web = svc("web", 2);
    web.healthcheck = Some(HealthcheckSpec {
        test: vec!["CMD".into(), "true".into()],
        ..Default::default()
    });
    let mut worker = svc("worker", 1);
    worker.depends_on.insert(
        "web".into(),
        Dependency {
            condition: DependencyCondition::ServiceHealthy,
            required: true,
        },
    );
    let mut s = deployed(vec![node("a", 2.0, 1024)], vec![web, worker]);
    settle(&mut s, 0);
    let w = &live(&s, "worker")[0];
    assert_eq!(w.state, TaskState::Pending);
    assert_eq!(w.error, "waiting for web to be healthy (0/2 replicas)");

    report(&mut s, "web", TaskState::Running, None, 5);
    settle(&mut s, 5);
    assert_eq!(live(&s, "worker")[0].state, TaskState::Pending);

    report(&mut s, "web", TaskState::Healthy, None, 6);
    let wid = live(&s, "worker")[0].id.clone();
    // Web's replicas are all healthy: its rollout is complete, and the worker goes.
    assert_eq!(
        reconcile(&s, 6),
        vec![
            Decision::CompleteRollout {
                service: "app/web".into(),
                generation: 1
            },
            Decision::Assign {
                task: wid,
                node: "a".into()
            }
        ]
    );
}

#[test]
fn a_failed_replica_is_replaced_after_the_restart_delay() {
    let mut s = deployed(vec![node("a", 2.0, 1024)], vec![svc("web", 1)]);
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Running, None, 100);
    let old = ids(&s, "web")[0].clone();
    report(&mut s, "web", TaskState::Failed, Some(137), 1_000);
    // Default delay: 1 s after the task ended.
    assert!(reconcile(&s, 1_999).is_empty());
    assert_eq!(
        reconcile(&s, 2_000),
        vec![
            Decision::Shutdown { task: old.clone() },
            create("web", 1, 1)
        ]
    );
    settle(&mut s, 2_000);
    let now = live(&s, "web");
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].id, old);
    assert_eq!(now[0].slot, 1);
    assert_eq!(
        s.tasks[&old].state,
        TaskState::Failed,
        "history keeps why it ended"
    );
    assert_eq!(s.tasks[&old].desired, Desired::Shutdown);
}

#[test]
fn restart_conditions_decide_which_endings_are_replaced() {
    for (condition, state, exit, replaced) in [
        (RestartCondition::None, TaskState::Failed, 1, false),
        (RestartCondition::OnFailure, TaskState::Complete, 0, false),
        (RestartCondition::OnFailure, TaskState::Failed, 2, true),
        (RestartCondition::Any, TaskState::Complete, 0, true),
    ] {
        let mut spec = svc("web", 1);
        spec.restart.condition = condition;
        spec.restart.delay_ms = 0;
        let mut s = deployed(vec![node("a", 2.0, 1024)], vec![spec]);
        settle(&mut s, 0);
        report(&mut s, "web", state, Some(exit), 10);
        let decided = reconcile(&s, 20);
        assert_eq!(
            !decided.is_empty(),
            replaced,
            "{condition:?} after {state}: {decided:?}"
        );
    }
}

#[test]
fn max_attempts_stops_replacing() {
    let mut spec = svc("web", 1);
    spec.restart = RestartPolicy {
        condition: RestartCondition::OnFailure,
        delay_ms: 0,
        max_attempts: Some(1),
        window_ms: None,
    };
    let mut s = deployed(vec![node("a", 2.0, 1024)], vec![spec]);
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Failed, Some(1), 10);
    settle(&mut s, 10);
    assert_eq!(live(&s, "web").len(), 1, "one restart is allowed");
    report(&mut s, "web", TaskState::Failed, Some(1), 20);
    assert!(reconcile(&s, 30).is_empty(), "the second failure is final");
}

#[test]
fn a_job_that_completed_is_not_run_again() {
    let mut job = svc("migrate", 1);
    job.mode = ServiceMode::ReplicatedJob;
    let mut s = deployed(vec![node("a", 2.0, 1024)], vec![job]);
    settle(&mut s, 0);
    report(&mut s, "migrate", TaskState::Complete, Some(0), 10);
    assert!(reconcile(&s, 100_000).is_empty());
}

#[test]
fn scaling_down_shuts_down_the_highest_slots() {
    let mut s = deployed(vec![node("a", 2.0, 1024)], vec![svc("web", 3)]);
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Running, None, 1);
    s.apply(&Command::Scale {
        service: "app/web".into(),
        replicas: 1,
    });
    let by_slot = |slot: u64| {
        s.tasks
            .values()
            .find(|t| t.slot == slot)
            .unwrap()
            .id
            .clone()
    };
    assert_eq!(
        reconcile(&s, 2),
        vec![
            Decision::Shutdown { task: by_slot(2) },
            Decision::Shutdown { task: by_slot(3) },
        ]
    );
}

#[test]
fn a_changed_spec_replaces_replicas_with_the_new_generation() {
    let mut s = deployed(vec![node("a", 2.0, 1024)], vec![svc("web", 1)]);
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Running, None, 1);
    let old = ids(&s, "web")[0].clone();
    let mut v2 = svc("web", 1);
    v2.image = "img:2".into();
    let result = s.apply(&Command::DeployStack {
        spec: StackSpec {
            name: "app".into(),
            services: [("web".to_string(), v2)].into_iter().collect(),
            volumes: Default::default(),
            secrets: Vec::new(),
            configs: Vec::new(),
            networks: Default::default(),
        },
        now_ms: 2,
        secrets: Default::default(),
    });
    assert_eq!(result.generations, vec![("web".to_string(), 2, true)]);
    assert_eq!(
        reconcile(&s, 3),
        vec![Decision::Shutdown { task: old }, create("web", 1, 2)]
    );
}

#[test]
fn removing_a_stack_stops_everything_then_forgets_it() {
    let mut s = deployed(vec![node("a", 2.0, 1024)], vec![svc("web", 2)]);
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Running, None, 1);
    s.apply(&Command::RemoveStack {
        stack: "app".into(),
        volumes: false,
    });
    let all: Vec<String> = s.tasks.keys().cloned().collect();
    assert_eq!(
        reconcile(&s, 2),
        all.iter()
            .map(|t| Decision::Shutdown { task: t.clone() })
            .collect::<Vec<_>>()
    );
    let d = reconcile(&s, 2);
    apply(&mut s, d, 2);
    assert!(
        reconcile(&s, 3).is_empty(),
        "waits for the agent to stop them"
    );
    for t in &all {
        s.apply(&Command::TaskStatus {
            node: "a".into(),
            updates: vec![TaskUpdate {
                task: t.clone(),
                state: TaskState::Shutdown,
                container_id: String::new(),
                exit_code: Some(0),
                error: String::new(),
                ip: None,
                ips: Default::default(),
            }],
            now_ms: 4,
        });
    }
    assert_eq!(
        reconcile(&s, 5),
        vec![Decision::DropService {
            service: "app/web".into()
        }]
    );
    let d = reconcile(&s, 5);
    apply(&mut s, d, 5);
    assert_eq!(
        reconcile(&s, 6),
        vec![Decision::DropStack {
            stack: "app".into()
        }]
    );
    let d = reconcile(&s, 6);
    apply(&mut s, d, 6);
    assert!(s.stacks.is_empty() && s.services.is_empty() && s.tasks.is_empty());
}

#[test]
fn tasks_of_a_lost_node_are_orphaned_and_replaced_elsewhere() {
    let mut s = deployed(
        vec![node("a", 2.0, 1024), node("b", 2.0, 1024)],
        vec![svc("web", 2)],
    );
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Running, None, 1);
    let on_a = s
        .tasks
        .values()
        .find(|t| t.node.as_deref() == Some("a"))
        .unwrap()
        .id
        .clone();
    s.apply(&Command::SetNodeStatus {
        node: "a".into(),
        status: NodeStatus::Down,
        now_ms: 2,
    });
    assert_eq!(
        reconcile(&s, 2),
        vec![Decision::Orphan { task: on_a.clone() }]
    );
    settle(&mut s, 2);
    let placed: Vec<_> = live(&s, "web")
        .iter()
        .map(|t| t.node.clone().unwrap())
        .collect();
    assert_eq!(placed, vec!["b".to_string(), "b".to_string()]);
    assert_eq!(s.tasks[&on_a].state, TaskState::Orphaned);
}

#[test]
fn agents_speak_only_for_their_own_tasks() {
    let mut s = deployed(
        vec![node("a", 2.0, 1024), node("b", 2.0, 1024)],
        vec![svc("web", 1)],
    );
    settle(&mut s, 0);
    let t = live(&s, "web")[0].clone();
    let other = if t.node.as_deref() == Some("a") {
        "b"
    } else {
        "a"
    };
    let r = s.apply(&Command::TaskStatus {
        node: other.into(),
        updates: vec![TaskUpdate {
            task: t.id.clone(),
            state: TaskState::Failed,
            container_id: "x".into(),
            exit_code: Some(1),
            error: String::new(),
            ip: None,
            ips: Default::default(),
        }],
        now_ms: 1,
    });
    assert_eq!(r.count, 0);
    assert_eq!(s.tasks[&t.id].state, TaskState::Assigned);
}

#[test]
fn history_is_bounded_per_slot() {
    let mut spec = svc("web", 1);
    spec.restart.delay_ms = 0;
    let mut s = deployed(vec![node("a", 2.0, 1024)], vec![spec]);
    settle(&mut s, 0);
    for i in 0..10 {
        report(&mut s, "web", TaskState::Failed, Some(1), 10 + i);
        settle(&mut s, 10 + i);
        // The agent removes each replaced container.
        let ended: Vec<Task> = s
            .tasks
            .values()
            .filter(|t| t.desired == Desired::Shutdown && !t.container_id.is_empty())
            .cloned()
            .collect();
        for t in ended {
            s.apply(&Command::TaskStatus {
                node: "a".into(),
                updates: vec![TaskUpdate {
                    task: t.id,
                    state: TaskState::Shutdown,
                    container_id: String::new(),
                    exit_code: None,
                    error: String::new(),
                    ip: None,
                    ips: Default::default(),
                }],
                now_ms: 10 + i,
            });
        }
        settle(&mut s, 10 + i);
    }
    assert_eq!(
        s.tasks.len(),
        1 + shoal_controller::reconciler::HISTORY_PER_SLOT
    );
}

#[test]
fn draining_a_node_moves_its_replicas_one_at_a_time() {
    let mut s = deployed(
        vec![node("a", 4.0, 4096), node("b", 4.0, 4096)],
        vec![svc("web", 4)],
    );
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Running, None, 1);
    let on_a: Vec<String> = live(&s, "web")
        .iter()
        .filter(|t| t.node.as_deref() == Some("a"))
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(on_a.len(), 2);
    s.apply(&Command::SetAvailability {
        node: "a".into(),
        availability: Availability::Drain,
    });
    let slot_of = |id: &str| s.tasks[id].slot;
    // update_config.parallelism (1): one replica moves first (once the replicas are past
    // their monitor period, as a service that has been running is).
    assert_eq!(
        reconcile(&s, 6_000),
        vec![
            Decision::Shutdown {
                task: on_a[0].clone()
            },
            create("web", slot_of(&on_a[0]), 1)
        ]
    );
    settle(&mut s, 6_000);
    report(&mut s, "web", TaskState::Running, None, 6_001);
    settle(&mut s, 12_000);
    report(&mut s, "web", TaskState::Running, None, 12_001);
    settle(&mut s, 18_000);
    let nodes: Vec<String> = live(&s, "web")
        .iter()
        .map(|t| t.node.clone().unwrap())
        .collect();
    assert_eq!(nodes, vec!["b"; 4], "every replica left the drained node");
    // Labels set by hand survive the agent's reconnect; availability too.
    s.apply(&Command::LabelNode {
        node: "a".into(),
        labels: [("zone".to_string(), Some("eu".to_string()))]
            .into_iter()
            .collect(),
    });
    let mut again = node("a", 4.0, 4096);
    again.labels.insert("disk".into(), "ssd".into());
    s.apply(&Command::RegisterNode { node: again });
    let a = &s.nodes["a"];
    assert_eq!(a.availability, Availability::Drain);
    assert_eq!(a.labels.get("zone").map(String::as_str), Some("eu"));
    assert_eq!(a.labels.get("disk").map(String::as_str), Some("ssd"));
}

#[test]
fn removing_a_node_orphans_its_tasks_for_replacement() {
    let mut s = deployed(
        vec![node("a", 4.0, 4096), node("b", 4.0, 4096)],
        vec![svc("web", 2)],
    );
    settle(&mut s, 0);
    let r = s.apply(&Command::RemoveNode { node: "a".into() });
    assert_eq!(r.count, 1);
    settle(&mut s, 1);
    let nodes: Vec<String> = live(&s, "web")
        .iter()
        .map(|t| t.node.clone().unwrap())
        .collect();
    assert_eq!(nodes, vec!["b", "b"]);
    let r = s.apply(&Command::RemoveNode { node: "a".into() });
    assert_eq!(r.error.as_deref(), Some("no node named a"));
}
