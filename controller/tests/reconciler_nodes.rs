//! The reconciler's exact decisions as nodes come and go: returning nodes are not
//! reshuffled, `shoal rebalance` moves replicas start-first at update parallelism, and
//! global services follow nodes as they join, drain, go down, return and get labelled.

mod common;
use std::collections::BTreeMap;

use common::*;

use shoal_controller::reconciler::reconcile;
use shoal_controller::state::*;
use shoal_proto::spec::*;
use shoal_proto::task::TaskState;

fn spread_of(s: &ClusterState, service: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in live(s, service) {
        if let Some(n) = &t.node {
            *m.entry(n.clone()).or_default() += 1;
        }
    }
    m
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

fn set_status(s: &mut ClusterState, node: &str, status: NodeStatus) {
    s.apply(&Command::SetNodeStatus {
        node: node.into(),
        status,
        now_ms: 0,
    });
}

/// Three nodes, six replicas running 2/2/2; then c is lost and comes back.
fn after_a_node_returned() -> ClusterState {
    let mut s = deployed(
        vec![
            node("a", 4.0, 4096),
            node("b", 4.0, 4096),
            node("c", 4.0, 4096),
        ],
        vec![svc("web", 6)],
    );
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Running, None, 1);
    assert_eq!(
        spread_of(&s, "web"),
        counts(&[("a", 2), ("b", 2), ("c", 2)])
    );
    set_status(&mut s, "c", NodeStatus::Down);
    settle(&mut s, 10_000);
    report(&mut s, "web", TaskState::Running, None, 10_001);
    assert_eq!(spread_of(&s, "web"), counts(&[("a", 3), ("b", 3)]));
    set_status(&mut s, "c", NodeStatus::Ready);
    s
}

#[test]
fn a_returning_node_takes_new_work_but_running_replicas_stay_put() {
    let mut s = after_a_node_returned();
    assert_eq!(reconcile(&s, 20_000), vec![], "nothing moves by itself");
    s.apply(&Command::Scale {
        service: "app/web".into(),
        replicas: 7,
    });
    settle(&mut s, 20_000);
    assert_eq!(
        spread_of(&s, "web"),
        counts(&[("a", 3), ("b", 3), ("c", 1)])
    );
}

#[test]
fn rebalance_moves_one_replica_at_a_time_and_stops_the_old_one_once_the_new_is_ready() {
    let mut s = after_a_node_returned();
    let r = s.apply(&Command::Rebalance {
        service: "app/web".into(),
    });
    assert_eq!(r.error, None);
    // The replica of a's highest slot moves first (a and b tie; a sorts first).
    let on_a: Vec<&Task> = live(&s, "web")
        .into_iter()
        .filter(|t| t.node.as_deref() == Some("a"))
        .collect();
    let first = on_a.iter().max_by_key(|t| t.slot).unwrap();
    let (first_id, first_slot) = (first.id.clone(), first.slot);
    assert_eq!(
        reconcile(&s, 20_000),
        vec![Decision::CreateTask {
            service: "app/web".into(),
            slot: first_slot,
            generation: 1,
            node: None,
        }]
    );
    settle(&mut s, 20_000);
    let new = live(&s, "web")
        .into_iter()
        .find(|t| t.slot == first_slot && t.id != first_id)
        .unwrap()
        .clone();
    assert_eq!(new.node.as_deref(), Some("c"));
    // Start-first: the old replica runs on until the new one is ready (monitor: 5 s).
    report(&mut s, "web", TaskState::Running, None, 20_001);
    assert_eq!(reconcile(&s, 21_000), vec![]);
    assert_eq!(live(&s, "web").len(), 7);
    // Ready: the old one stops and the next move (b's highest slot) starts, in one pass.
    let d = reconcile(&s, 25_001);
    assert_eq!(d[0], Decision::Shutdown { task: first_id });
    assert!(
        matches!(&d[1], Decision::CreateTask { slot, .. } if s.tasks.values().any(|t| t.slot == *slot && t.node.as_deref() == Some("b") && t.desired == shoal_proto::task::Desired::Running)),
        "second move comes from b: {d:?}"
    );
    assert_eq!(d.len(), 2);
    let mut now = 25_001;
    for _ in 0..5 {
        settle(&mut s, now);
        report(&mut s, "web", TaskState::Running, None, now + 1);
        now += 6_000;
    }
    settle(&mut s, now);
    assert_eq!(
        spread_of(&s, "web"),
        counts(&[("a", 2), ("b", 2), ("c", 2)])
    );
    assert!(!s.services["app/web"].rebalancing, "the rebalance is over");
    assert_eq!(reconcile(&s, now + 10_000), vec![]);
}

#[test]
fn rebalancing_a_balanced_service_ends_at_once() {
    let mut s = deployed(
        vec![node("a", 4.0, 4096), node("b", 4.0, 4096)],
        vec![svc("web", 3)],
    );
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Running, None, 1);
    settle(&mut s, 10_000);
    s.apply(&Command::Rebalance {
        service: "app/web".into(),
    });
    assert_eq!(
        reconcile(&s, 10_000),
        vec![Decision::CompleteRebalance {
            service: "app/web".into()
        }]
    );
}

#[test]
fn rebalance_evens_out_spread_label_values_first() {
    let mut web = svc("web", 4);
    web.placement.spread = vec!["zone".into()];
    web.update.parallelism = 2;
    let mut a = node("a", 4.0, 4096);
    a.labels.insert("zone".into(), "x".into());
    let mut b = node("b", 4.0, 4096);
    b.labels.insert("zone".into(), "y".into());
    let mut c = node("c", 4.0, 4096);
    c.labels.insert("zone".into(), "y".into());
    b.status = NodeStatus::Down;
    c.status = NodeStatus::Down;
    let mut s = deployed(vec![a, b, c], vec![web]);
    settle(&mut s, 0);
    report(&mut s, "web", TaskState::Running, None, 1);
    assert_eq!(spread_of(&s, "web"), counts(&[("a", 4)]));
    set_status(&mut s, "b", NodeStatus::Ready);
    set_status(&mut s, "c", NodeStatus::Ready);
    settle(&mut s, 10_000);
    s.apply(&Command::Rebalance {
        service: "app/web".into(),
    });
    // parallelism 2: two moves at once, both off a, toward zone y.
    let d = reconcile(&s, 10_000);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d.iter().all(|d| matches!(d, Decision::CreateTask { .. })));
    let mut now = 10_000;
    for _ in 0..4 {
        settle(&mut s, now);
        report(&mut s, "web", TaskState::Running, None, now + 1);
        now += 6_000;
    }
    settle(&mut s, now);
    assert_eq!(
        spread_of(&s, "web"),
        counts(&[("a", 2), ("b", 1), ("c", 1)])
    );
    assert!(!s.services["app/web"].rebalancing);
}

#[test]
fn only_replicated_services_can_be_rebalanced() {
    let mut g = svc("agent", 1);
    g.mode = ServiceMode::Global;
    let mut s = deployed(vec![node("a", 4.0, 4096)], vec![g]);
    let r = s.apply(&Command::Rebalance {
        service: "app/agent".into(),
    });
    assert_eq!(
        r.error.as_deref(),
        Some("service app/agent runs in global mode: there is nothing to rebalance")
    );
    let r = s.apply(&Command::Rebalance {
        service: "app/nope".into(),
    });
    assert_eq!(r.error.as_deref(), Some("no service named app/nope"));
}

fn create_on(node: &str) -> Decision {
    Decision::CreateTask {
        service: "app/agent".into(),
        slot: 0,
        generation: 1,
        node: Some(node.into()),
    }
}

fn task_on<'a>(s: &'a ClusterState, node: &str) -> &'a Task {
    live(s, "agent")
        .into_iter()
        .find(|t| t.pinned.as_deref() == Some(node))
        .unwrap_or_else(|| panic!("no live agent task on {node}"))
}

#[test]
fn global_services_follow_nodes_as_they_join_drain_go_down_return_and_get_labelled() {
    let mut g = svc("agent", 1);
    g.mode = ServiceMode::Global;
    g.placement.constraints = vec![Constraint {
        field: ConstraintField::Label("role".into()),
        equal: false,
        value: "db".into(),
    }];
    let mut s = deployed(vec![node("a", 4.0, 4096), node("b", 4.0, 4096)], vec![g]);
    assert_eq!(reconcile(&s, 0), vec![create_on("a"), create_on("b")]);
    settle(&mut s, 0);
    report(&mut s, "agent", TaskState::Running, None, 1);

    // A node joins.
    s.apply(&Command::RegisterNode {
        node: node("c", 4.0, 4096),
    });
    assert_eq!(reconcile(&s, 10), vec![create_on("c")]);
    settle(&mut s, 10);
    let on_c = task_on(&s, "c").id.clone();
    assert_eq!(task_on(&s, "c").node.as_deref(), Some("c"));

    // Drained: its replica stops; activated: a new one starts.
    s.apply(&Command::SetAvailability {
        node: "c".into(),
        availability: Availability::Drain,
    });
    assert_eq!(
        reconcile(&s, 20),
        vec![Decision::Shutdown { task: on_c.clone() }]
    );
    settle(&mut s, 20);
    s.apply(&Command::SetAvailability {
        node: "c".into(),
        availability: Availability::Active,
    });
    assert_eq!(reconcile(&s, 30), vec![create_on("c")]);
    settle(&mut s, 30);

    // Down: orphaned, not replaced anywhere else; back: a new replica there.
    let on_a = task_on(&s, "a").id.clone();
    set_status(&mut s, "a", NodeStatus::Down);
    assert_eq!(
        reconcile(&s, 40),
        vec![
            Decision::Orphan { task: on_a.clone() },
            Decision::Shutdown { task: on_a.clone() }
        ]
    );
    settle(&mut s, 40);
    assert_eq!(live(&s, "agent").len(), 2);
    set_status(&mut s, "a", NodeStatus::Ready);
    assert_eq!(reconcile(&s, 50), vec![create_on("a")]);
    settle(&mut s, 50);

    // Labelled out of the constraint, then back in.
    let on_b = task_on(&s, "b").id.clone();
    let label = |v: Option<&str>| Command::LabelNode {
        node: "b".into(),
        labels: [("role".to_string(), v.map(str::to_string))]
            .into_iter()
            .collect(),
    };
    s.apply(&label(Some("db")));
    assert_eq!(
        reconcile(&s, 60),
        vec![Decision::Shutdown { task: on_b.clone() }]
    );
    settle(&mut s, 60);
    s.apply(&label(None));
    assert_eq!(reconcile(&s, 70), vec![create_on("b")]);
    settle(&mut s, 70);
    let mut nodes: Vec<String> = live(&s, "agent")
        .iter()
        .map(|t| t.node.clone().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, vec!["a", "b", "c"]);
}
