//! The cluster figures `/metrics` shows from the applied state: nodes by status and
//! availability, tasks by state, services with their replicas, rollouts by phase.
//! Pure: one pass over the state's tasks and services, borrowing names from the state,
//! so a scrape holds the state's read lock only while it counts (no copy).

use std::collections::BTreeMap;

use shoal_proto::task::{Desired, TaskState};

use crate::state::{Availability, ClusterState, NodeStatus, Service, Task};

/// Where a service's rollout stands, as `shoal services` words it
/// ([`Service::rollout_state`]) without the why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RolloutPhase {
    Updating,
    Paused,
    RollingBack,
    Completed,
    RolledBack,
}

impl RolloutPhase {
    pub const ALL: [RolloutPhase; 5] = [
        RolloutPhase::Updating,
        RolloutPhase::Paused,
        RolloutPhase::RollingBack,
        RolloutPhase::Completed,
        RolloutPhase::RolledBack,
    ];

    /// The `phase` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Updating => "updating",
            RolloutPhase::Paused => "paused",
            RolloutPhase::RollingBack => "rolling_back",
            RolloutPhase::Completed => "completed",
            RolloutPhase::RolledBack => "rolled_back",
        }
    }

    /// The phase of `svc`'s current generation; `paused`: its rollout is paused by
    /// failed replicas ([`crate::reconciler::rollout_paused`]). Follows
    /// [`Service::rollout_state`] case by case: a pause the next pass rolls back is
    /// already "rolling back".
    pub fn of(svc: &Service, paused: bool) -> RolloutPhase {
        match (svc.rollout_complete, svc.rolled_back, paused) {
            (true, true, _) => RolloutPhase::RolledBack,
            (true, false, _) => RolloutPhase::Completed,
            (false, false, true) if svc.rolls_back_when_paused() => RolloutPhase::RollingBack,
            (false, _, true) => RolloutPhase::Paused,
            (false, true, false) => RolloutPhase::RollingBack,
            (false, false, false) => RolloutPhase::Updating,
        }
    }
}

pub const NODE_STATUSES: [NodeStatus; 3] =
    [NodeStatus::Ready, NodeStatus::Down, NodeStatus::Unknown];
pub const AVAILABILITIES: [Availability; 2] = [Availability::Active, Availability::Drain];

/// One service's row, names borrowed from the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFigures<'a> {
    pub stack: &'a str,
    pub name: &'a str,
    pub desired: u64,
    /// Replicas of any generation that should run and are up (as `shoal services`).
    pub running: u64,
    /// Up and passing their healthcheck (or up, without one).
    pub healthy: u64,
    pub phase: RolloutPhase,
    pub generation: u64,
}

/// Everything `/metrics` shows of the applied state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFigures<'a> {
    /// In [`NODE_STATUSES`] order, every status present.
    pub nodes: [u64; 3],
    /// In [`AVAILABILITIES`] order.
    pub availability: [u64; 2],
    /// In [`TaskState::ALL`] order: every task the state keeps (finished ones too).
    pub tasks: [u64; 10],
    /// Services not being removed, by key.
    pub services: Vec<ServiceFigures<'a>>,
    /// In [`RolloutPhase::ALL`] order.
    pub rollouts: [u64; 5],
}

/// Counts the figures of `state`.
pub fn count(state: &ClusterState) -> ClusterFigures<'_> {
    let mut nodes = [0; 3];
    let mut availability = [0; 2];
    for n in state.nodes.values() {
        if let Some(i) = NODE_STATUSES.iter().position(|s| *s == n.status) {
            nodes[i] += 1;
        }
        if let Some(i) = AVAILABILITIES.iter().position(|a| *a == n.availability) {
            availability[i] += 1;
        }
    }
    let mut tasks = [0; 10];
    let mut by_service: BTreeMap<(&str, &str), Vec<&Task>> = BTreeMap::new();
    for t in state.tasks.values() {
        if let Some(i) = TaskState::ALL.iter().position(|s| *s == t.state) {
            tasks[i] += 1;
        }
        by_service
            .entry((t.stack.as_str(), t.service.as_str()))
            .or_default()
            .push(t);
    }
    let mut rollouts = [0; 5];
    let services = state
        .services
        .values()
        .filter(|s| !s.removing)
        .map(|svc| {
            let list = by_service
                .get(&(svc.stack.as_str(), svc.name.as_str()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let paused = crate::reconciler::rollout_paused(svc, list).is_some();
            let phase = RolloutPhase::of(svc, paused);
            if let Some(i) = RolloutPhase::ALL.iter().position(|p| *p == phase) {
                rollouts[i] += 1;
            }
            let (running, healthy) = replicas_up(svc, list);
            ServiceFigures {
                stack: &svc.stack,
                name: &svc.name,
                desired: crate::reconciler::desired_replicas(state, svc),
                running,
                healthy,
                phase,
                generation: svc.generation,
            }
        })
        .collect();
    ClusterFigures {
        nodes,
        availability,
        tasks,
        services,
        rollouts,
    }
}

/// Running and healthy replicas, counted as `shoal services` counts them.
fn replicas_up(svc: &Service, tasks: &[&Task]) -> (u64, u64) {
    let checked = svc.spec.has_healthcheck();
    let (mut running, mut healthy) = (0, 0);
    for t in tasks.iter().filter(|t| t.desired == Desired::Running) {
        if t.state.is_up() {
            running += 1;
        }
        if t.state == TaskState::Healthy || (!checked && t.state.is_up()) {
            healthy += 1;
        }
    }
    (running, healthy)
}
