//! What each agent is told to run: a pure view of the state for one node.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_proto::spec::{ServiceSpec, VolumeSpec};
use shoal_proto::task::{Desired, TaskState};

use crate::state::ClusterState;

/// A task as its node's agent must know it. Observed fields (state, exit code) are left
/// out on purpose: the set changes, and is re-sent, only when the agent must act.
#[derive(Debug, Clone)]
pub struct NodeAssignment {
    pub task_id: String,
    pub stack: String,
    pub service: String,
    pub slot: u64,
    pub desired: Desired,
    pub generation: u64,
    /// The task ended: the agent must never start it again.
    pub ended: bool,
    pub spec: Arc<ServiceSpec>,
    /// UUIDs of the GPUs the task holds.
    pub gpus: Vec<String>,
    /// The stack's named volumes its containers mount, by Compose name.
    pub volumes: Arc<Vec<(String, VolumeSpec)>>,
}

impl PartialEq for NodeAssignment {
    fn eq(&self, other: &Self) -> bool {
        // The shared parts by pointer first: a service's tasks share them, and views
        // reuse them while they do not change ([`all_reusing`]).
        self.task_id == other.task_id
            && self.desired == other.desired
            && self.generation == other.generation
            && self.ended == other.ended
            && self.slot == other.slot
            && self.stack == other.stack
            && self.service == other.service
            && self.gpus == other.gpus
            && (Arc::ptr_eq(&self.spec, &other.spec) || self.spec == other.spec)
            && (Arc::ptr_eq(&self.volumes, &other.volumes) || self.volumes == other.volumes)
    }
}

/// Each service's spec and the named volumes its containers mount, as its tasks share
/// them, by (stack, service).
pub type Specs = HashMap<(String, String), Shared>;

/// The full set of tasks `node` must hold. A shoal container on the node whose task is
/// not in this set is removed by the agent (fencing).
pub fn for_node(state: &ClusterState, node: &str) -> Vec<NodeAssignment> {
    all(state).remove(node).unwrap_or_default()
}

/// Every node's set, in one pass over the tasks, each service's spec shared by its tasks.
pub fn all(state: &ClusterState) -> HashMap<String, Vec<NodeAssignment>> {
    all_reusing(state, &Specs::new()).0
}

/// [`all`], keeping `previous`'s `Arc`s for every service whose spec and volumes did not
/// change (two sets then compare by pointer per task); also returns the specs used.
pub fn all_reusing(
    state: &ClusterState,
    previous: &Specs,
) -> (HashMap<String, Vec<NodeAssignment>>, Specs) {
    // Per service: its spec and the named volumes its containers mount.
    let mut services: HashMap<(&str, &str), Option<Shared>> = HashMap::new();
    let mut out: HashMap<String, Vec<NodeAssignment>> = HashMap::new();
    for t in state.tasks.values() {
        let Some(node) = t.node.as_deref() else {
            continue;
        };
        // A task that ended and whose container is gone needs nothing more from the agent
        // (and must never be started again: its replacement is a new task).
        if t.state == TaskState::Orphaned || t.state.is_terminal() && t.container_id.is_empty() {
            continue;
        }
        let shared = services
            .entry((t.stack.as_str(), t.service.as_str()))
            .or_insert_with(|| {
                let svc = state.services.get(&t.service_key())?;
                let volumes = state
                    .stacks
                    .get(&t.stack)
                    .map(|st| {
                        crate::state::volumes::named_volumes(&st.spec, &svc.spec)
                            .map(|(name, v)| (name.to_string(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let kept = previous
                    .get(&(t.stack.clone(), t.service.clone()))
                    .filter(|(spec, vols)| **spec == svc.spec && **vols == volumes);
                Some(
                    kept.cloned()
                        .unwrap_or_else(|| (Arc::new(svc.spec.clone()), Arc::new(volumes))),
                )
            });
        let Some((spec, volumes)) = shared else {
            continue;
        };
        out.entry(node.to_string())
            .or_default()
            .push(NodeAssignment {
                task_id: t.id.clone(),
                stack: t.stack.clone(),
                service: t.service.clone(),
                slot: t.slot,
                desired: t.desired,
                generation: t.generation,
                ended: t.state.is_terminal(),
                spec: spec.clone(),
                gpus: t.gpus.clone(),
                volumes: volumes.clone(),
            });
    }
    let specs = services
        .into_iter()
        .filter_map(|((stack, service), shared)| {
            Some(((stack.to_string(), service.to_string()), shared?))
        })
        .collect();
    (out, specs)
}

pub type Shared = (Arc<ServiceSpec>, Arc<Vec<(String, VolumeSpec)>>);
