//! The cluster network each node is told about: subnets, routes, names and mesh ports,
//! by the exact view `endpoints::for_node` computes.

mod common;
use common::*;

use std::net::IpAddr;

use shoal_controller::endpoints::{for_node, MeshPort};
use shoal_controller::state::*;
use shoal_proto::spec::*;
use shoal_proto::task::{Desired, TaskState};

fn on(name: &str, node: &str) -> ServiceSpec {
    let mut s = svc(name, 1);
    s.placement.constraints = vec![Constraint {
        field: ConstraintField::Hostname,
        equal: true,
        value: node.into(),
    }];
    s
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Reports the task of `service` as `state` with address `addr`.
fn report_ip(s: &mut ClusterState, service: &str, state: TaskState, addr: &str) {
    let t = s
        .tasks
        .values()
        .find(|t| t.service == service && t.desired == Desired::Running)
        .cloned()
        .expect("a task");
    s.apply(&Command::TaskStatus {
        node: t.node.clone().expect("assigned"),
        updates: vec![TaskUpdate {
            task: t.id.clone(),
            state,
            container_id: format!("c-{}", t.id),
            exit_code: None,
            error: String::new(),
            ip: Some(ip(addr)),
        }],
        now_ms: 1,
    });
}

fn cluster() -> ClusterState {
    // Addresses: node `a` is 10.0.0.1, `bb` 10.0.0.2, `ccc` 10.0.0.3.
    let mut web = on("web", "a");
    web.ports = vec![PortSpec {
        target: 8080,
        published: Some(80),
        protocol: Protocol::Tcp,
        host_ip: None,
        mode: PortMode::Ingress,
    }];
    let mut db = on("db", "bb");
    db.aliases = vec!["database".into()];
    let mut s = deployed(
        vec![
            node("a", 4.0, 4096),
            node("bb", 4.0, 4096),
            node("ccc", 4.0, 4096),
        ],
        vec![web, db],
    );
    settle(&mut s, 0);
    s
}

#[test]
fn subnets_are_allocated_per_stack_and_node_at_assignment() {
    let s = cluster();
    // `db` sorts first, so its node gets the first subnet.
    let app = s.subnets.get("app").expect("app has subnets");
    assert_eq!(
        app.iter()
            .map(|(n, i)| (n.as_str(), *i))
            .collect::<Vec<_>>(),
        vec![("a", 1), ("bb", 0)]
    );
}

#[test]
fn a_node_routes_to_the_other_subnets_of_its_stacks_and_answers_ready_replicas() {
    let mut s = cluster();
    report_ip(&mut s, "web", TaskState::Running, "10.208.1.2");
    report_ip(&mut s, "db", TaskState::Running, "10.208.0.2");
    let m = for_node(&s, "a");
    assert_eq!(m.pool, "10.208.0.0/12");
    assert_eq!(
        m.subnets.get("app"),
        Some(&(
            "10.208.1.0/24".to_string(),
            vec!["10.208.1.0/24".to_string(), "10.208.0.0/24".to_string()]
        ))
    );
    assert_eq!(
        m.routes.into_iter().collect::<Vec<_>>(),
        vec![("10.208.0.0/24".to_string(), ip("10.0.0.2"))]
    );
    let names: Vec<(String, Vec<IpAddr>)> =
        m.names.into_iter().map(|((_, n), ips)| (n, ips)).collect();
    assert_eq!(
        names,
        vec![
            ("database".into(), vec![ip("10.208.0.2")]),
            ("db".into(), vec![ip("10.208.0.2")]),
            ("web".into(), vec![ip("10.208.1.2")]),
        ]
    );
    // Every node serves the published port, also one hosting nothing.
    let port = vec![MeshPort {
        published: 80,
        target: 8080,
        host_ip: None,
        ips: vec![ip("10.208.1.2")],
    }];
    assert_eq!(m.ports, port);
    let idle = for_node(&s, "ccc");
    assert_eq!(idle.ports, port);
    assert!(idle.subnets.is_empty() && idle.names.is_empty());
    assert_eq!(
        idle.routes.into_iter().collect::<Vec<_>>(),
        vec![
            ("10.208.0.0/24".to_string(), ip("10.0.0.2")),
            ("10.208.1.0/24".to_string(), ip("10.0.0.1")),
        ]
    );
    assert_eq!(
        idle.nodes,
        vec![ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]
    );
}

#[test]
fn replicas_not_ready_or_told_to_stop_are_not_answered() {
    let mut s = cluster();
    report_ip(&mut s, "db", TaskState::Starting, "10.208.0.2");
    let db = |s: &ClusterState| {
        for_node(s, "a")
            .names
            .get(&("app".to_string(), "db".to_string()))
            .cloned()
    };
    assert_eq!(db(&s), Some(vec![]));
    report_ip(&mut s, "db", TaskState::Running, "10.208.0.2");
    assert_eq!(db(&s), Some(vec![ip("10.208.0.2")]));
    let task = s
        .tasks
        .values()
        .find(|t| t.service == "db")
        .unwrap()
        .id
        .clone();
    s.apply(&Command::Reconcile {
        decisions: vec![Decision::Shutdown { task }],
        now_ms: 2,
    });
    assert_eq!(db(&s), Some(vec![]));
}

#[test]
fn removing_a_stack_frees_its_subnets() {
    let mut s = cluster();
    s.apply(&Command::Reconcile {
        decisions: vec![Decision::DropStack {
            stack: "app".into(),
        }],
        now_ms: 3,
    });
    assert!(s.subnets.is_empty());
}
