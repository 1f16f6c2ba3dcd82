// Shared builders for the pure scheduler and reconciler tests (included with `mod`).
#![allow(dead_code)]

pub mod raft;

use shoal_controller::state::*;
use shoal_proto::spec::{ServiceSpec, StackSpec};
use shoal_proto::task::{Desired, TaskState};

pub fn node(id: &str, cpus: f64, mem_mib: i64) -> Node {
    Node {
        id: id.into(),
        address: format!("10.0.0.{}", id.len()),
        nano_cpus: (cpus * 1e9) as i64,
        memory_bytes: mem_mib * 1024 * 1024,
        labels: Default::default(),
        status: NodeStatus::Ready,
        availability: Availability::Active,
        gpus: Vec::new(),
        devices: Default::default(),
        platform: String::new(),
        manager: false,
        conflicts: Vec::new(),
    }
}

pub fn svc(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        image: "img".into(),
        replicas,
        ..Default::default()
    }
}

pub fn deployed(nodes: Vec<Node>, services: Vec<ServiceSpec>) -> ClusterState {
    let mut s = ClusterState::default();
    for n in nodes {
        // Inserted as given (RegisterNode would mark every node ready).
        s.nodes.insert(n.id.clone(), n);
    }
    let stack = StackSpec {
        name: "app".into(),
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
        networks: Default::default(),
        volumes: Default::default(),
        secrets: Vec::new(),
        configs: Vec::new(),
    };
    s.apply(&Command::DeployStack {
        spec: stack,
        now_ms: 0,
        secrets: Default::default(),
    });
    s
}

/// Deploys the stack `app` again with `spec` as its only service, `web`.
pub fn redeploy(s: &mut ClusterState, spec: ServiceSpec, now_ms: u64) {
    s.apply(&Command::DeployStack {
        spec: StackSpec {
            name: "app".into(),
            services: [("web".to_string(), spec)].into_iter().collect(),
            volumes: Default::default(),
            secrets: Vec::new(),
            configs: Vec::new(),
            networks: Default::default(),
        },
        now_ms,
        secrets: Default::default(),
    });
}

/// Applies the reconciler's decisions until it has nothing left to say (bounded).
pub fn settle(s: &mut ClusterState, now_ms: u64) {
    for _ in 0..20 {
        let d = shoal_controller::reconciler::reconcile(s, now_ms);
        if d.is_empty() {
            return;
        }
        s.apply(&Command::Reconcile {
            decisions: d,
            now_ms,
        });
    }
    panic!("reconciler did not settle");
}

/// Reports every assigned task of `service` as `state` on its node.
pub fn report(
    s: &mut ClusterState,
    service: &str,
    state: TaskState,
    exit: Option<i64>,
    now_ms: u64,
) {
    let tasks: Vec<Task> = s
        .tasks
        .values()
        .filter(|t| t.service == service && t.desired == Desired::Running && t.node.is_some())
        .filter(|t| !t.state.is_terminal())
        .cloned()
        .collect();
    for t in tasks {
        status(s, &t, state, exit, now_ms);
    }
}

/// `t`'s agent reports it as `state` (container `c-ID`, no address).
pub fn status(s: &mut ClusterState, t: &Task, state: TaskState, exit: Option<i64>, now_ms: u64) {
    s.apply(&status_command(t, state, exit, now_ms));
}

/// What `t`'s agent proposes to report it as `state` (container `c-ID`, no address).
pub fn status_command(t: &Task, state: TaskState, exit: Option<i64>, now_ms: u64) -> Command {
    Command::TaskStatus {
        node: t.node.clone().unwrap_or_default(),
        updates: vec![TaskUpdate {
            task: t.id.clone(),
            state,
            container_id: format!("c-{}", t.id),
            exit_code: exit,
            error: String::new(),
            ip: None,
            ips: Default::default(),
        }],
        now_ms,
    }
}

/// Node `id` goes down if it is ready, else comes back ready.
pub fn flip(s: &mut ClusterState, id: &str, now_ms: u64) {
    let status = match s.nodes.get(id).map(|n| n.status) {
        Some(NodeStatus::Ready) => NodeStatus::Down,
        _ => NodeStatus::Ready,
    };
    s.apply(&Command::SetNodeStatus {
        node: id.to_string(),
        status,
        now_ms,
    });
}

pub fn live<'a>(s: &'a ClusterState, service: &str) -> Vec<&'a Task> {
    s.tasks
        .values()
        .filter(|t| t.service == service && t.desired == Desired::Running && !t.state.is_terminal())
        .collect()
}
