//! What a command touches, with the fields events compare, taken before it is applied.
//!
//! Only what the command names is read (its tasks, services, nodes): a scan of every
//! task happens only for `RemoveNode` (rare), so deriving stays cheap with 100,000 tasks.

use shoal_proto::task::{Desired, TaskState};

use crate::state::{
    service_key, Availability, ClusterState, Command, Decision, NodeId, NodeStatus, ServiceKey,
    TaskId,
};

/// A task's fields that events follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSnap {
    pub state: TaskState,
    pub desired: Desired,
    pub node: Option<NodeId>,
    pub error: String,
}

/// A service's fields that events follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSnap {
    pub generation: u64,
    pub replicas: u64,
    pub removing: bool,
    pub rollout_complete: bool,
    pub rolled_back: bool,
    pub image: String,
}

/// A node's fields that events follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSnap {
    pub status: NodeStatus,
    pub availability: Availability,
}

/// The touched set of one command, as it was before apply (`None`: did not exist).
#[derive(Debug, Default)]
pub struct Before {
    /// In the order the command names them, each once.
    pub tasks: Vec<(TaskId, Option<TaskSnap>)>,
    pub services: Vec<(ServiceKey, Option<ServiceSnap>)>,
    pub nodes: Vec<(NodeId, Option<NodeSnap>)>,
    /// Stacks and whether each was being removed.
    pub stacks: Vec<(String, Option<bool>)>,
    /// Task ids above this were created by the command.
    pub next_task: u64,
    /// The ids in `tasks` (a Reconcile may name 10,000).
    seen: std::collections::HashSet<TaskId>,
}

pub fn task_snap(state: &ClusterState, id: &str) -> Option<TaskSnap> {
    state.tasks.get(id).map(|t| TaskSnap {
        state: t.state,
        desired: t.desired,
        node: t.node.clone(),
        error: t.error.clone(),
    })
}

pub fn service_snap(state: &ClusterState, key: &str) -> Option<ServiceSnap> {
    state.services.get(key).map(|s| ServiceSnap {
        generation: s.generation,
        replicas: s.replicas,
        removing: s.removing,
        rollout_complete: s.rollout_complete,
        rolled_back: s.rolled_back,
        image: s.spec.image.clone(),
    })
}

pub fn node_snap(state: &ClusterState, id: &str) -> Option<NodeSnap> {
    state.nodes.get(id).map(|n| NodeSnap {
        status: n.status,
        availability: n.availability,
    })
}

impl Before {
    /// The touched set of `cmd` in `state` (not yet applied).
    pub fn take(state: &ClusterState, cmd: &Command) -> Before {
        let mut b = Before {
            next_task: state.next_task,
            ..Default::default()
        };
        match cmd {
            Command::TaskStatus { updates, .. } => {
                for u in updates {
                    b.task(state, &u.task);
                }
            }
            Command::Reconcile { decisions, .. } => {
                for d in decisions {
                    match d {
                        Decision::Assign { task, .. }
                        | Decision::AssignGpus { task, .. }
                        | Decision::Pending { task, .. }
                        | Decision::Shutdown { task }
                        | Decision::Orphan { task }
                        | Decision::Fail { task, .. }
                        | Decision::Forget { task } => b.task(state, task),
                        Decision::CreateTask { service, .. }
                        | Decision::DropService { service }
                        | Decision::RollBack { service, .. }
                        | Decision::CompleteRollout { service, .. }
                        | Decision::CompleteRebalance { service } => b.service(state, service),
                        Decision::DropStack { stack } => b.stack(state, stack),
                        Decision::PromoteStandby { .. } => {}
                    }
                }
            }
            Command::DeployStack { spec, .. } => {
                for name in spec.services.keys() {
                    b.service(state, &service_key(&spec.name, name));
                }
                // Services the new file no longer has are removed by the deploy.
                let pruned: Vec<ServiceKey> = state
                    .services
                    .values()
                    .filter(|s| s.stack == spec.name && !spec.services.contains_key(&s.name))
                    .map(|s| s.key())
                    .collect();
                for key in pruned {
                    b.service(state, &key);
                }
                b.stack(state, &spec.name);
            }
            Command::RemoveStack { stack, .. } => b.stack(state, stack),
            Command::Scale { service, .. }
            | Command::Autoscale { service, .. }
            | Command::Rollback { service }
            | Command::Rebalance { service } => b.service(state, service),
            Command::SetAvailability { node, .. } | Command::SetNodeStatus { node, .. } => {
                b.node(state, node)
            }
            Command::RegisterNode { node } => b.node(state, &node.id),
            Command::RemoveNode { node } => {
                b.node(state, node);
                let lost: Vec<TaskId> = state
                    .tasks
                    .values()
                    .filter(|t| t.node.as_deref() == Some(node.as_str()) && !t.state.is_terminal())
                    .map(|t| t.id.clone())
                    .collect();
                for id in lost {
                    b.task(state, &id);
                }
            }
            _ => {}
        }
        b
    }

    fn task(&mut self, state: &ClusterState, id: &str) {
        if self.seen.insert(id.to_string()) {
            self.tasks.push((id.to_string(), task_snap(state, id)));
        }
    }

    fn service(&mut self, state: &ClusterState, key: &str) {
        if !self.services.iter().any(|(s, _)| s == key) {
            self.services
                .push((key.to_string(), service_snap(state, key)));
        }
    }

    fn node(&mut self, state: &ClusterState, id: &str) {
        if !self.nodes.iter().any(|(n, _)| n == id) {
            self.nodes.push((id.to_string(), node_snap(state, id)));
        }
    }

    fn stack(&mut self, state: &ClusterState, name: &str) {
        if !self.stacks.iter().any(|(s, _)| s == name) {
            let removing = state.stacks.get(name).map(|s| s.removing);
            self.stacks.push((name.to_string(), removing));
        }
    }
}
