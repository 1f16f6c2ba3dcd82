//! Placement: a pure function from a state snapshot and the tasks to place to one
//! decision per task, `Assign` or `Pending` with a reason a person can act on.
//!
//! Filters, in order: the node is ready and active, matches the service's placement
//! constraints, stays under `max_replicas_per_node`, has its published ports free, and
//! has the CPUs and memory the replica reserves. Among the nodes left, the one running
//! the fewest replicas of the service wins, then the one running the fewest tasks, then
//! the name (so the result is deterministic).
//!
//! A task that asks for GPUs also needs free GPUs that meet its request
//! ([`crate::gpu_fit`]); it gets `AssignGpus` with the UUIDs picked, and the node left
//! with the fewest free GPUs wins before anything else (tight packing).

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::spec::{Constraint, ConstraintField, PortMode, Protocol, ServiceSpec};

use crate::gpu_fit;
use crate::state::{
    Availability, ClusterState, Decision, Node, NodeId, NodeStatus, ServiceKey, TaskId,
};

/// One task to place.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub task: TaskId,
    pub service: ServiceKey,
    pub spec: &'a ServiceSpec,
    /// Global services: the only node this task may run on.
    pub pinned: Option<NodeId>,
}

/// Lower wins: (free GPUs left over, replicas of the service, tasks) on the node.
type Score = (usize, u64, u64);

/// What is already placed on a node.
#[derive(Debug, Clone, Default)]
struct Load {
    nano_cpus: i64,
    memory: i64,
    tasks: u64,
    per_service: BTreeMap<ServiceKey, u64>,
    /// (published port, protocol) -> service using it.
    ports: BTreeMap<(u16, Protocol), ServiceKey>,
    /// UUIDs of GPUs held by live tasks.
    gpus: BTreeSet<String>,
}

impl Load {
    fn add(&mut self, service: &ServiceKey, spec: &ServiceSpec) {
        self.nano_cpus += spec.resources.requested_nano_cpus();
        self.memory += spec.resources.requested_memory();
        self.tasks += 1;
        *self.per_service.entry(service.clone()).or_default() += 1;
        for p in &spec.ports {
            if let Some(published) = p.published {
                self.ports.insert((published, p.protocol), service.clone());
            }
        }
    }
}

/// Places `requests` on the nodes of `state`, in order, each placement counting against
/// the next. Returns one `Assign` or `Pending` per request.
pub fn place(state: &ClusterState, requests: &[Request<'_>]) -> Vec<Decision> {
    let mut loads: BTreeMap<&NodeId, Load> =
        state.nodes.keys().map(|id| (id, Load::default())).collect();
    for t in state.tasks.values() {
        if t.state.is_terminal() {
            continue;
        }
        if let Some(load) = t.node.as_ref().and_then(|n| loads.get_mut(n)) {
            load.gpus.extend(t.gpus.iter().cloned());
        }
        let (Some(node), Some(svc)) = (&t.node, state.services.get(&t.service_key())) else {
            continue;
        };
        if let Some(load) = loads.get_mut(node) {
            load.add(&t.service_key(), &svc.spec);
        }
    }

    let mut out = Vec::with_capacity(requests.len());
    for req in requests {
        let mut best: Option<(&NodeId, Score, Vec<String>)> = None;
        let mut refusals: Vec<String> = Vec::new();
        for (id, node) in &state.nodes {
            if req.pinned.as_ref().is_some_and(|p| p != id) {
                continue;
            }
            let load = &loads[id];
            let gpus = fits(node, load, req)
                .and_then(|()| gpu_fit::choose(node, &load.gpus, &req.spec.gpus));
            match gpus {
                Ok(gpus) => {
                    let score = (
                        gpus.left_over,
                        load.per_service.get(&req.service).copied().unwrap_or(0),
                        load.tasks,
                    );
                    if best.as_ref().is_none_or(|(_, s, _)| score < *s) {
                        best = Some((id, score, gpus.gpus));
                    }
                }
                Err(why) => refusals.push(format!("{id} {why}")),
            }
        }
        match best {
            Some((id, _, gpus)) => {
                let id = (*id).clone();
                if let Some(load) = loads.get_mut(&id) {
                    load.add(&req.service, req.spec);
                    load.gpus.extend(gpus.iter().cloned());
                }
                out.push(if gpus.is_empty() {
                    Decision::Assign {
                        task: req.task.clone(),
                        node: id,
                    }
                } else {
                    Decision::AssignGpus {
                        task: req.task.clone(),
                        node: id,
                        gpus,
                    }
                });
            }
            None => out.push(Decision::Pending {
                task: req.task.clone(),
                reason: no_fit_reason(req, &refusals),
            }),
        }
    }
    out
}

fn no_fit_reason(req: &Request<'_>, refusals: &[String]) -> String {
    if refusals.is_empty() {
        return match &req.pinned {
            Some(p) => format!("node {p} is not part of the cluster"),
            None => "no node has joined the cluster: start an agent".to_string(),
        };
    }
    if !req.spec.gpus.is_empty() {
        return format!(
            "needs {}: {}",
            gpu_fit::describe(&req.spec.gpus),
            refusals.join("; ")
        );
    }
    format!("no node can run it: {}", refusals.join("; "))
}

fn cpus(nano: i64) -> String {
    let c = nano as f64 / 1e9;
    format!("{c:.2}")
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

fn mib(bytes: i64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}

/// Why `node` cannot take `req`, in words; Ok when it can.
fn fits(node: &Node, load: &Load, req: &Request<'_>) -> Result<(), String> {
    match node.status {
        NodeStatus::Ready => {}
        NodeStatus::Down => return Err("is down".into()),
        NodeStatus::Unknown => return Err("has not reported yet".into()),
    }
    if node.availability == Availability::Drain {
        return Err("is drained".into());
    }
    if let Some(c) = unmet_constraint(node, req.spec) {
        return Err(format!("does not match {c}"));
    }
    let mine = load.per_service.get(&req.service).copied().unwrap_or(0);
    if let Some(max) = req.spec.placement.max_replicas_per_node {
        if mine >= max {
            return Err(format!(
                "already runs {mine} replicas (max_replicas_per_node: {max})"
            ));
        }
    }
    for p in &req.spec.ports {
        let Some(published) = p.published else {
            continue;
        };
        match load.ports.get(&(published, p.protocol)) {
            // Replicas of one service share an ingress port through the agent's proxy;
            // a host-mode port belongs to one container.
            Some(owner) if owner == &req.service && p.mode == PortMode::Ingress => {}
            Some(owner) => {
                return Err(format!(
                    "has port {published}/{} taken by {owner}",
                    proto_name(p.protocol)
                ))
            }
            None => {}
        }
    }
    let want_cpu = req.spec.resources.requested_nano_cpus();
    if want_cpu > 0 {
        let free = node.nano_cpus - load.nano_cpus;
        if want_cpu > free {
            return Err(format!(
                "has {} CPUs free (needs {})",
                cpus(free.max(0)),
                cpus(want_cpu)
            ));
        }
    }
    let want_mem = req.spec.resources.requested_memory();
    if want_mem > 0 {
        let free = node.memory_bytes - load.memory;
        if want_mem > free {
            return Err(format!(
                "has {} memory free (needs {})",
                mib(free.max(0)),
                mib(want_mem)
            ));
        }
    }
    Ok(())
}

/// The first placement constraint of `spec` that `node` does not satisfy.
fn unmet_constraint<'a>(node: &Node, spec: &'a ServiceSpec) -> Option<&'a Constraint> {
    spec.placement.constraints.iter().find(|c| {
        let actual = match &c.field {
            ConstraintField::Hostname | ConstraintField::Id => Some(node.id.as_str()),
            ConstraintField::Label(k) => node.labels.get(k).map(String::as_str),
        };
        (actual == Some(c.value.as_str())) != c.equal
    })
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// The set of node ids a request could ever run on, ignoring load (for global services).
pub fn eligible_nodes(state: &ClusterState, spec: &ServiceSpec) -> BTreeSet<NodeId> {
    state
        .nodes
        .values()
        .filter(|n| n.status == NodeStatus::Ready && n.availability == Availability::Active)
        .filter(|n| unmet_constraint(n, spec).is_none())
        .filter(|n| gpu_fit::could_fit(n, &spec.gpus))
        .map(|n| n.id.clone())
        .collect()
}
