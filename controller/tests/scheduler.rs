//! The scheduler's exact decisions.

mod common;
use common::*;

use shoal_controller::scheduler::{place, Request};
use shoal_controller::state::*;
use shoal_proto::spec::*;

fn req<'a>(task: &str, spec: &'a ServiceSpec) -> Request<'a> {
    Request {
        task: task.into(),
        service: format!("app/{}", spec.name),
        spec,
        pinned: None,
        nodes: None,
    }
}

fn assign(task: &str, node: &str) -> Decision {
    Decision::Assign {
        task: task.into(),
        node: node.into(),
    }
}

#[test]
fn replicas_of_a_service_spread_across_nodes() {
    let spec = svc("web", 4);
    let s = deployed(
        vec![node("a", 2.0, 1024), node("b", 2.0, 1024)],
        vec![spec.clone()],
    );
    let reqs: Vec<_> = ["t1", "t2", "t3", "t4"]
        .iter()
        .map(|t| req(t, &spec))
        .collect();
    assert_eq!(
        place(&s, &reqs),
        vec![
            assign("t1", "a"),
            assign("t2", "b"),
            assign("t3", "a"),
            assign("t4", "b")
        ]
    );
}

#[test]
fn reservations_are_counted_and_a_full_cluster_says_why() {
    let mut spec = svc("big", 3);
    spec.resources.reservations.nano_cpus = Some(1_500_000_000);
    let mut down = node("c", 8.0, 1024);
    down.status = NodeStatus::Down;
    let mut drained = node("d", 8.0, 1024);
    drained.availability = Availability::Drain;
    let s = deployed(
        vec![node("a", 2.0, 1024), node("b", 2.0, 1024), down, drained],
        vec![spec.clone()],
    );
    let reqs: Vec<_> = ["t1", "t2", "t3"].iter().map(|t| req(t, &spec)).collect();
    assert_eq!(
        place(&s, &reqs),
        vec![
            assign("t1", "a"),
            assign("t2", "b"),
            Decision::Pending {
                task: "t3".into(),
                reason: "no node can run it: a has 0.5 CPUs free, b has 0.5 (needs 1.5); \
                         d is drained; c is down"
                    .into()
            }
        ]
    );
}

#[test]
fn memory_limits_count_when_nothing_is_reserved() {
    let mut spec = svc("mem", 2);
    spec.resources.limits.memory_bytes = Some(600 * 1024 * 1024);
    let s = deployed(vec![node("a", 2.0, 1000)], vec![spec.clone()]);
    let out = place(&s, &[req("t1", &spec), req("t2", &spec)]);
    assert_eq!(out[0], assign("t1", "a"));
    assert_eq!(
        out[1],
        Decision::Pending {
            task: "t2".into(),
            reason: "no node can run it: a has 400 MiB memory free (needs 600 MiB)".into()
        }
    );
}

#[test]
fn constraints_and_max_replicas_per_node_filter_nodes() {
    let mut spec = svc("db", 3);
    spec.placement.constraints = vec![Constraint {
        field: ConstraintField::Label("disk".into()),
        equal: true,
        value: "ssd".into(),
    }];
    spec.placement.max_replicas_per_node = Some(1);
    let mut a = node("a", 2.0, 1024);
    a.labels.insert("disk".into(), "ssd".into());
    let mut b = node("b", 2.0, 1024);
    b.labels.insert("disk".into(), "ssd".into());
    let s = deployed(vec![a, b, node("c", 2.0, 1024)], vec![spec.clone()]);
    let out = place(&s, &[req("t1", &spec), req("t2", &spec), req("t3", &spec)]);
    assert_eq!(out[0], assign("t1", "a"));
    assert_eq!(out[1], assign("t2", "b"));
    assert_eq!(
        out[2],
        Decision::Pending {
            task: "t3".into(),
            reason: "no node can run it: a, b already run 1 replica each \
                     (max_replicas_per_node: 1); c does not match node.labels.disk==ssd"
                .into()
        }
    );
}

#[test]
fn host_ports_conflict_but_ingress_replicas_share_theirs() {
    let mut web = svc("web", 2);
    web.ports = vec![PortSpec {
        target: 80,
        published: Some(8080),
        ..Default::default()
    }];
    let mut other = svc("other", 1);
    other.ports = vec![PortSpec {
        target: 80,
        published: Some(8080),
        mode: PortMode::Host,
        ..Default::default()
    }];
    let mut s = deployed(vec![node("a", 2.0, 1024)], vec![web.clone(), other.clone()]);
    settle(&mut s, 0);
    let web_tasks = s.tasks.values().filter(|t| t.service == "web").count();
    let other_task = s.tasks.values().find(|t| t.service == "other").unwrap();
    assert_eq!(web_tasks, 2);
    // Tasks are placed in id order; "other" sorts first in the stack so its task was
    // created, and placed, first: it holds 8080 and web's replicas cannot share it.
    assert_eq!(other_task.state, shoal_proto::task::TaskState::Assigned);
    for t in s.tasks.values().filter(|t| t.service == "web") {
        assert_eq!(t.state, shoal_proto::task::TaskState::Pending);
        assert_eq!(
            t.error,
            "no node can run it: a has port 8080/tcp taken by app/other"
        );
    }
}

#[test]
fn a_cluster_without_nodes_says_to_start_an_agent() {
    let spec = svc("web", 1);
    let s = deployed(vec![], vec![spec.clone()]);
    assert_eq!(
        place(&s, &[req("t1", &spec)]),
        vec![Decision::Pending {
            task: "t1".into(),
            reason: "no node has joined the cluster: start an agent".into()
        }]
    );
}

fn labelled(id: &str, cpus: f64, labels: &[(&str, &str)]) -> Node {
    let mut n = node(id, cpus, 4096);
    for (k, v) in labels {
        n.labels.insert(k.to_string(), v.to_string());
    }
    n
}

fn nodes_of(out: &[Decision]) -> Vec<String> {
    out.iter()
        .map(|d| match d {
            Decision::Assign { node, .. } => node.clone(),
            other => panic!("expected an assignment, got {other:?}"),
        })
        .collect()
}

fn reqs<'a>(spec: &'a ServiceSpec, n: usize) -> Vec<Request<'a>> {
    (1..=n).map(|i| req(&format!("t{i}"), spec)).collect()
}

#[test]
fn spread_preference_balances_label_values_first_and_unlabelled_nodes_are_one_group() {
    let mut spec = svc("web", 6);
    spec.placement.spread = vec!["zone".into()];
    let s = deployed(
        vec![
            labelled("a", 2.0, &[("zone", "x")]),
            labelled("b", 2.0, &[("zone", "x")]),
            labelled("c", 2.0, &[("zone", "y")]),
            labelled("d", 2.0, &[]),
        ],
        vec![spec.clone()],
    );
    // Zones x, y and "no zone" take two each; within x, a and b one each.
    assert_eq!(
        nodes_of(&place(&s, &reqs(&spec, 6))),
        vec!["a", "c", "d", "b", "c", "d"]
    );
}

#[test]
fn spread_preferences_nest_in_the_order_given() {
    let mut spec = svc("web", 4);
    spec.placement.spread = vec!["zone".into(), "rack".into()];
    let s = deployed(
        vec![
            labelled("a", 2.0, &[("zone", "z1"), ("rack", "r1")]),
            labelled("b", 2.0, &[("zone", "z1"), ("rack", "r2")]),
            labelled("c", 2.0, &[("zone", "z2"), ("rack", "r1")]),
        ],
        vec![spec.clone()],
    );
    assert_eq!(
        nodes_of(&place(&s, &reqs(&spec, 4))),
        vec!["a", "c", "b", "c"]
    );
}

#[test]
fn a_full_spread_group_leaves_the_rest_to_the_others() {
    let mut spec = svc("web", 4);
    spec.placement.spread = vec!["zone".into()];
    spec.resources.reservations.nano_cpus = Some(1_000_000_000);
    let s = deployed(
        vec![
            labelled("a", 1.0, &[("zone", "x")]),
            labelled("b", 4.0, &[("zone", "y")]),
        ],
        vec![spec.clone()],
    );
    assert_eq!(
        nodes_of(&place(&s, &reqs(&spec, 4))),
        vec!["a", "b", "b", "b"]
    );
}

#[test]
fn after_spread_the_node_with_the_smaller_share_reserved_wins() {
    let mut spec = svc("web", 4);
    spec.resources.reservations.nano_cpus = Some(1_000_000_000);
    let s = deployed(
        vec![node("a", 2.0, 4096), node("b", 4.0, 4096)],
        vec![spec.clone()],
    );
    // t2: a has 1 of 2 CPUs reserved, b none. t3: both run one replica, a has half of
    // its CPUs reserved, b a quarter. t4: fewer replicas of the service wins first.
    assert_eq!(
        nodes_of(&place(&s, &reqs(&spec, 4))),
        vec!["a", "b", "b", "a"]
    );
}

#[test]
fn replicas_already_running_count_against_their_node() {
    let spec = svc("web", 3);
    let mut s = deployed(
        vec![
            node("a", 2.0, 1024),
            node("b", 2.0, 1024),
            node("c", 2.0, 1024),
        ],
        vec![svc("web", 2)],
    );
    settle(&mut s, 0);
    let used: Vec<String> = live(&s, "web")
        .iter()
        .map(|t| t.node.clone().unwrap())
        .collect();
    assert_eq!(used, vec!["a", "b"]);
    assert_eq!(nodes_of(&place(&s, &reqs(&spec, 2))), vec!["c", "a"]);
}

#[test]
fn a_reason_names_a_few_nodes_per_cause_and_counts_the_rest() {
    let mut nodes = Vec::new();
    for i in 0..8 {
        let mut n = node(&format!("n{i}"), 2.0, 1024);
        n.status = NodeStatus::Down;
        nodes.push(n);
    }
    let spec = svc("web", 1);
    let s = deployed(nodes, vec![spec.clone()]);
    assert_eq!(
        place(&s, &[req("t1", &spec)]),
        vec![Decision::Pending {
            task: "t1".into(),
            reason: "no node can run it: n0, n1, n2, n3, n4 and 3 more are down".into()
        }]
    );
}

#[test]
fn a_global_replica_says_what_its_own_node_lacks() {
    let mut spec = svc("agent", 1);
    spec.mode = ServiceMode::Global;
    spec.resources.reservations.memory_bytes = Some(2048 * 1024 * 1024);
    let s = deployed(vec![node("a", 2.0, 1024)], vec![spec.clone()]);
    let r = Request {
        pinned: Some("a".into()),
        ..req("t1", &spec)
    };
    assert_eq!(
        place(&s, &[r]),
        vec![Decision::Pending {
            task: "t1".into(),
            reason: "cannot run on its node: a has 1024 MiB memory free (needs 2048 MiB)".into()
        }]
    );
}

#[test]
fn many_nodes_short_of_cpus_are_named_five_at_a_time() {
    let nodes: Vec<Node> = (0..7).map(|i| node(&format!("n{i}"), 1.0, 1024)).collect();
    let mut spec = svc("big", 1);
    spec.resources.reservations.nano_cpus = Some(2_000_000_000);
    let s = deployed(nodes, vec![spec.clone()]);
    assert_eq!(
        place(&s, &[req("t1", &spec)]),
        vec![Decision::Pending {
            task: "t1".into(),
            reason: "no node can run it: n0 has 1 CPUs free, n1 has 1, n2 has 1, n3 has 1, \
                     n4 has 1, and 2 more with too few (needs 2)"
                .into()
        }]
    );
}
