//! Rolling updates: the reconciler's exact decisions as a changed spec rolls out.

mod common;
use common::*;

use shoal_controller::reconciler::{reconcile, rollout_paused};
use shoal_controller::state::*;
use shoal_proto::spec::*;
use shoal_proto::task::{Desired, TaskState};

fn web(replicas: u64, image: &str, update: UpdateConfig) -> ServiceSpec {
    let mut s = svc("web", replicas);
    s.image = image.into();
    s.healthcheck = Some(HealthcheckSpec {
        test: vec!["CMD".into(), "true".into()],
        ..Default::default()
    });
    s.update = update;
    s
}

/// The live task of `slot` with the given generation.
fn task_of(s: &ClusterState, slot: u64, generation: u64) -> String {
    live(s, "web")
        .into_iter()
        .find(|t| t.slot == slot && t.generation == generation)
        .unwrap_or_else(|| panic!("no live task gen {generation} in slot {slot}"))
        .id
        .clone()
}

fn create(slot: u64) -> Decision {
    Decision::CreateTask {
        service: "app/web".into(),
        slot,
        generation: 2,
        node: None,
    }
}

/// Three healthy replicas of generation 1, then generation 2 deployed.
fn updating(update: UpdateConfig) -> ClusterState {
    let mut s = deployed(vec![node("a", 4.0, 4096)], vec![web(3, "img:1", update)]);
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Healthy, None, 1);
    redeploy(&mut s, web(3, "img:2", update), 2);
    s
}

/// Places the pending tasks and reports the new generation's replicas as `state`.
fn new_ones(s: &mut ClusterState, state: TaskState, now_ms: u64) {
    let d: Vec<Decision> = reconcile(s, now_ms)
        .into_iter()
        .filter(|d| matches!(d, Decision::Assign { .. }))
        .collect();
    s.apply(&Command::Reconcile {
        decisions: d,
        now_ms,
    });
    let ids: Vec<(String, String)> = live(s, "web")
        .into_iter()
        .filter(|t| t.generation == 2 && t.node.is_some())
        .map(|t| (t.id.clone(), t.node.clone().unwrap()))
        .collect();
    for (id, node) in ids {
        s.apply(&Command::TaskStatus {
            node,
            updates: vec![TaskUpdate {
                task: id,
                state,
                container_id: "c".into(),
                exit_code: (state == TaskState::Failed).then_some(1),
                error: String::new(),
                ip: None,
                ips: Default::default(),
            }],
            now_ms,
        });
    }
}

#[test]
fn stop_first_replaces_one_replica_at_a_time_gated_on_health() {
    let mut s = updating(UpdateConfig::default());
    let old1 = task_of(&s, 1, 1);
    assert_eq!(
        reconcile(&s, 3),
        vec![Decision::Shutdown { task: old1 }, create(1)]
    );
    let d = reconcile(&s, 3);
    s.apply(&Command::Reconcile {
        decisions: d,
        now_ms: 3,
    });

    // The new replica runs but is not healthy yet: slot 2 waits.
    new_ones(&mut s, TaskState::Running, 4);
    assert!(
        !reconcile(&s, 5)
            .iter()
            .any(|d| matches!(d, Decision::Shutdown { .. } | Decision::CreateTask { .. })),
        "{:?}",
        reconcile(&s, 5)
    );
    // Healthy: the next slot's turn.
    new_ones(&mut s, TaskState::Healthy, 6);
    let old2 = task_of(&s, 2, 1);
    assert_eq!(
        reconcile(&s, 7),
        vec![Decision::Shutdown { task: old2 }, create(2)]
    );
}

#[test]
fn start_first_keeps_the_old_replica_until_its_replacement_is_healthy() {
    let update = UpdateConfig {
        order: UpdateOrder::StartFirst,
        ..Default::default()
    };
    let mut s = updating(update);
    assert_eq!(reconcile(&s, 3), vec![create(1)]);
    let d = reconcile(&s, 3);
    s.apply(&Command::Reconcile {
        decisions: d,
        now_ms: 3,
    });
    new_ones(&mut s, TaskState::Running, 4);
    assert_eq!(live(&s, "web").len(), 4, "old and new run side by side");

    new_ones(&mut s, TaskState::Healthy, 5);
    let old1 = task_of(&s, 1, 1);
    assert_eq!(
        reconcile(&s, 6),
        vec![Decision::Shutdown { task: old1 }, create(2)]
    );
}

#[test]
fn parallelism_bounds_the_batch_and_zero_means_all_at_once() {
    let two = UpdateConfig {
        parallelism: 2,
        ..Default::default()
    };
    let s = updating(two);
    let d = reconcile(&s, 3);
    assert_eq!(
        d.iter()
            .filter(|d| matches!(d, Decision::CreateTask { .. }))
            .count(),
        2
    );

    let all = UpdateConfig {
        parallelism: 0,
        ..Default::default()
    };
    let s = updating(all);
    let d = reconcile(&s, 3);
    assert_eq!(
        d.iter()
            .filter(|d| matches!(d, Decision::CreateTask { .. }))
            .count(),
        3
    );
}

#[test]
fn delay_waits_between_batches() {
    let update = UpdateConfig {
        delay_ms: 1_000,
        ..Default::default()
    };
    let mut s = updating(update);
    let d = reconcile(&s, 3);
    s.apply(&Command::Reconcile {
        decisions: d,
        now_ms: 3,
    });
    new_ones(&mut s, TaskState::Healthy, 10);
    assert!(
        reconcile(&s, 1_009).is_empty(),
        "{:?}",
        reconcile(&s, 1_009)
    );
    assert_eq!(reconcile(&s, 1_010).len(), 2, "shutdown + create of slot 2");
}

#[test]
fn a_failing_new_version_pauses_the_rollout() {
    let mut s = updating(UpdateConfig::default());
    let d = reconcile(&s, 3);
    s.apply(&Command::Reconcile {
        decisions: d,
        now_ms: 3,
    });
    new_ones(&mut s, TaskState::Failed, 4);
    let svc = &s.services["app/web"];
    let tasks: Vec<&Task> = s.tasks.values().collect();
    assert_eq!(
        rollout_paused(svc, &tasks).as_deref(),
        Some(
            "rollout of generation 2 paused: 1 new replica(s) failed (max_failure_ratio 0); \
             fix the service and deploy again"
        )
    );
    // Slots 2 and 3 keep the old version: no decision touches them.
    let old2 = task_of(&s, 2, 1);
    let old3 = task_of(&s, 3, 1);
    for d in reconcile(&s, 100_000) {
        assert!(
            !matches!(&d, Decision::Shutdown { task } if *task == old2 || *task == old3),
            "{d:?}"
        );
        assert!(
            !matches!(d, Decision::CreateTask { slot: 2 | 3, .. }),
            "{d:?}"
        );
    }
}

#[test]
fn without_a_healthcheck_a_replica_is_updated_after_the_monitor_period() {
    let update = UpdateConfig {
        monitor_ms: 500,
        ..Default::default()
    };
    let plain = |image: &str| {
        let mut w = web(2, image, update);
        w.healthcheck = None;
        w
    };
    let mut s = deployed(vec![node("a", 4.0, 4096)], vec![plain("img:1")]);
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Running, None, 1);
    redeploy(&mut s, plain("img:2"), 2);
    let d = reconcile(&s, 3);
    s.apply(&Command::Reconcile {
        decisions: d,
        now_ms: 3,
    });
    new_ones(&mut s, TaskState::Running, 10);
    assert!(!reconcile(&s, 509)
        .iter()
        .any(|d| matches!(d, Decision::CreateTask { .. })));
    assert!(reconcile(&s, 510)
        .iter()
        .any(|d| matches!(d, Decision::CreateTask { slot: 2, .. })));
}

#[test]
fn a_failed_rollout_with_failure_action_rollback_returns_to_the_old_spec() {
    let update = UpdateConfig {
        failure_action: FailureAction::Rollback,
        ..Default::default()
    };
    let mut s = updating(update);
    let untouched: Vec<String> = vec![task_of(&s, 2, 1), task_of(&s, 3, 1)];
    let d = reconcile(&s, 3);
    s.apply(&Command::Reconcile {
        decisions: d,
        now_ms: 3,
    });
    new_ones(&mut s, TaskState::Failed, 4);
    // Between the failure and the rollback's commit, `services` must not say "paused"
    // (a deploy polling then would report a pause the next pass undoes).
    let svc = &s.services["app/web"];
    let why = "rollout of generation 2 paused: 1 new replica(s) failed";
    assert!(svc.rolls_back_when_paused());
    assert_eq!(svc.rollout_state(Some(why)), format!("rolling back: {why}"));
    assert_eq!(
        reconcile(&s, 5),
        vec![Decision::RollBack {
            service: "app/web".into(),
            generation: 2
        }]
    );
    let d = reconcile(&s, 5);
    s.apply(&Command::Reconcile {
        decisions: d,
        now_ms: 5,
    });
    let svc = &s.services["app/web"];
    assert_eq!((svc.generation, svc.spec.image.as_str()), (3, "img:1"));
    // A rollback that fails too only pauses.
    assert!(!svc.rolls_back_when_paused());
    assert_eq!(svc.rollout_state(Some("x")), "paused: x");
    // It says which replica failed and why, even once that replica is gone.
    assert_eq!(
        svc.rollout_state(None),
        "rolling back after web slot 1 on a: exited with code 1"
    );
    // The replicas that never left the old version are current again, untouched.
    for id in &untouched {
        assert_eq!(s.tasks[id].generation, 3);
    }
    // Only the failed slot gets a replica of the restored spec.
    let d = reconcile(&s, 10_000);
    assert_eq!(
        d.iter()
            .filter(|d| matches!(d, Decision::CreateTask { .. }))
            .collect::<Vec<_>>(),
        vec![&Decision::CreateTask {
            service: "app/web".into(),
            slot: 1,
            generation: 3,
            node: None
        }]
    );
    assert!(!d
        .iter()
        .any(|d| matches!(d, Decision::Shutdown { task } if untouched.contains(task))));
    settle(&mut s, 10_000);
    report(&mut s, "web", TaskState::Healthy, None, 10_001);
    settle(&mut s, 10_002);
    let svc = &s.services["app/web"];
    assert!(svc.rollout_complete);
    assert_eq!(
        svc.rollout_state(None),
        "rolled back after web slot 1 on a: exited with code 1"
    );
    // A rollback that is complete does not bounce: a later crash is a restart.
    assert_eq!(live(&s, "web").len(), 3);
}

#[test]
fn rollback_by_hand_needs_a_previous_version() {
    let mut s = deployed(
        vec![node("a", 4.0, 4096)],
        vec![web(1, "img:1", UpdateConfig::default())],
    );
    let r = s.apply(&Command::Rollback {
        service: "app/web".into(),
    });
    assert_eq!(
        r.error.as_deref(),
        Some("app/web has no previous version to roll back to")
    );
    redeploy(&mut s, web(1, "img:2", UpdateConfig::default()), 1);
    let r = s.apply(&Command::Rollback {
        service: "app/web".into(),
    });
    assert_eq!(r.generations, vec![("web".to_string(), 3, true)]);
    assert_eq!(s.services["app/web"].spec.image, "img:1");
    // Rolling back again returns to img:2: a rollback is itself a change.
    s.apply(&Command::Rollback {
        service: "app/web".into(),
    });
    assert_eq!(s.services["app/web"].spec.image, "img:2");
}

#[test]
fn a_crash_after_the_rollout_completed_is_not_a_failed_rollout() {
    let update = UpdateConfig {
        failure_action: FailureAction::Rollback,
        ..Default::default()
    };
    let mut s = deployed(vec![node("a", 4.0, 4096)], vec![web(1, "img:1", update)]);
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Healthy, None, 1);
    redeploy(&mut s, web(1, "img:2", update), 2);
    settle(&mut s, 3);
    report(&mut s, "web", TaskState::Healthy, None, 4);
    settle(&mut s, 5);
    assert!(s.services["app/web"].rollout_complete);
    report(&mut s, "web", TaskState::Failed, Some(1), 6);
    let d = reconcile(&s, 10_000);
    assert!(
        !d.iter().any(|d| matches!(d, Decision::RollBack { .. })),
        "{d:?}"
    );
    assert_eq!(s.services["app/web"].spec.image, "img:2");
}

#[test]
fn a_new_replica_not_healthy_within_its_deadline_fails_and_pauses_the_rollout() {
    let mut s = deployed(
        vec![node("a", 4.0, 4096)],
        vec![web(3, "img:1", UpdateConfig::default())],
    );
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Healthy, None, 1);
    let mut spec = web(3, "img:2", UpdateConfig::default());
    spec.healthcheck = Some(HealthcheckSpec {
        test: vec!["CMD".into(), "true".into()],
        interval_ms: Some(1_000),
        timeout_ms: Some(500),
        retries: Some(2),
        start_period_ms: Some(2_000),
        ..Default::default()
    });
    redeploy(&mut s, spec, 2);
    // start 2 s + 2 x (1 s + 0.5 s) + monitor 5 s = 10 s.
    assert_eq!(
        s.services["app/web"].spec.health_deadline_ms(),
        Some(10_000)
    );
    let d = reconcile(&s, 3);
    s.apply(&Command::Reconcile {
        decisions: d,
        now_ms: 3,
    });
    new_ones(&mut s, TaskState::Running, 4);
    let new1 = task_of(&s, 1, 2);

    // Still within the deadline: waiting, nothing fails.
    assert!(!reconcile(&s, 10_003)
        .iter()
        .any(|d| matches!(d, Decision::Fail { .. })));
    // At the deadline it fails, with a reason saying why.
    let d = reconcile(&s, 10_004);
    assert!(
        d.contains(&Decision::Fail {
            task: new1.clone(),
            reason: "not healthy 10s after it started (healthcheck start period, retries \
                     and monitor)"
                .into(),
        }),
        "{d:?}"
    );
    s.apply(&Command::Reconcile {
        decisions: d,
        now_ms: 10_004,
    });
    let t = &s.tasks[&new1];
    assert_eq!((t.state, t.desired), (TaskState::Failed, Desired::Shutdown));

    // One failed new replica with max_failure_ratio 0: the rollout pauses, and the
    // other slots keep the old version.
    let svc = &s.services["app/web"];
    let tasks: Vec<&Task> = s.tasks.values().collect();
    assert!(rollout_paused(svc, &tasks).is_some_and(|why| why.contains("1 new replica(s) failed")));
    let (old2, old3) = (task_of(&s, 2, 1), task_of(&s, 3, 1));
    for d in reconcile(&s, 10_005) {
        assert!(
            !matches!(&d, Decision::Shutdown { task } if *task == old2 || *task == old3),
            "{d:?}"
        );
        assert!(
            !matches!(d, Decision::CreateTask { slot: 2 | 3, .. }),
            "{d:?}"
        );
    }
}
