//! Events from one command: its touched set before apply ([`Before`]) compared with the
//! state after. Pure: the only clock is the `clock_ms` value given for commands that
//! carry no time of their own.

use shoal_proto::spec::ServiceMode;

use super::memo::Memo;
use super::touched::{node_snap, Before, ServiceSnap};
use super::words::{self, node_event, service_event};
use super::Event;
use crate::state::{Availability, ClusterState, Command, CommandResult, NodeStatus};

/// Derives events from applied commands, remembering causes across entries ([`Memo`]).
#[derive(Debug, Default)]
pub struct Deriver {
    memo: Memo,
}

/// The command's own time, the same on every controller.
fn command_time(cmd: &Command) -> Option<u64> {
    match cmd {
        Command::DeployStack { now_ms, .. }
        | Command::SetNodeStatus { now_ms, .. }
        | Command::Reconcile { now_ms, .. }
        | Command::TaskStatus { now_ms, .. } => Some(*now_ms),
        Command::Autoscale { at_ms, .. } => Some(*at_ms),
        _ => None,
    }
}

impl Deriver {
    /// Applies `cmd` to `state` and returns its result (exactly `state.apply`'s) and
    /// the events it made, in order (index and seq are the log's to set).
    pub fn apply(
        &mut self,
        state: &mut ClusterState,
        cmd: &Command,
        clock_ms: u64,
    ) -> (CommandResult, Vec<Event>) {
        if let Command::Batch { commands } = cmd {
            // Each command of a batch says what it changed, as its own entry would.
            let mut events = Vec::new();
            let batch = commands
                .iter()
                .map(|c| {
                    let (result, more) = self.apply(state, c, clock_ms);
                    events.extend(more);
                    result
                })
                .collect();
            let result = CommandResult {
                batch,
                ..Default::default()
            };
            return (result, events);
        }
        let before = Before::take(state, cmd);
        let result = state.apply(cmd);
        let mut cx = Cx {
            state,
            cmd,
            time: command_time(cmd).unwrap_or(clock_ms),
            memo: &mut self.memo,
            out: Vec::new(),
        };
        if result.error.is_none() {
            cx.restored();
            cx.nodes(&before);
            cx.stacks(&before, result.count);
            cx.services(&before);
        }
        cx.tasks(&before);
        (result, cx.out)
    }
}

/// One derivation: the state after apply and what is said.
pub(super) struct Cx<'a> {
    pub(super) state: &'a ClusterState,
    pub(super) cmd: &'a Command,
    pub(super) time: u64,
    pub(super) memo: &'a mut Memo,
    pub(super) out: Vec<Event>,
}

impl Cx<'_> {
    fn restored(&mut self) {
        if let Command::Restore { .. } = self.cmd {
            self.out.push(Event {
                time_ms: self.time,
                kind: "cluster.restored".into(),
                message: format!(
                    "the cluster state was restored (--restore or --force-new-cluster): {} stacks, {} nodes",
                    self.state.stacks.len(),
                    self.state.nodes.len()
                ),
                ..Default::default()
            });
        }
    }

    fn nodes(&mut self, before: &Before) {
        for (id, b) in &before.nodes {
            let a = node_snap(self.state, id);
            let (kind, message) = match (self.cmd, b, a) {
                (Command::RegisterNode { node }, None, Some(_)) => (
                    "node.ready",
                    format!(
                        "node {id} joined the cluster: {} CPUs, {} MiB of memory, {} GPUs",
                        node.nano_cpus as f64 / 1e9,
                        node.memory_bytes / (1024 * 1024),
                        node.gpus.len()
                    ),
                ),
                (Command::RegisterNode { .. }, Some(b), Some(_))
                    if b.status != NodeStatus::Ready =>
                {
                    (
                        "node.ready",
                        format!("node {id} is ready: its agent connected again; it takes new work"),
                    )
                }
                (Command::SetNodeStatus { .. }, Some(b), Some(a)) if b.status != a.status => {
                    match a.status {
                        NodeStatus::Down => (
                            "node.down",
                            format!(
                                "node {id} is down: its agent's heartbeats stopped reaching the leader; its replicas are replaced on other nodes"
                            ),
                        ),
                        NodeStatus::Ready => (
                            "node.ready",
                            format!(
                                "node {id} is ready: its agent reports again; it takes new work (replicas moved away stay where they are: `shoal rebalance` moves them back)"
                            ),
                        ),
                        NodeStatus::Unknown => (
                            "node.unknown",
                            format!("node {id}'s status is unknown"),
                        ),
                    }
                }
                (Command::SetAvailability { .. }, Some(b), Some(a))
                    if b.availability != a.availability =>
                {
                    match a.availability {
                        Availability::Drain => (
                            "node.drained",
                            format!(
                                "node {id} is drained (shoal node drain): its replicas move to other nodes, update_config.parallelism at a time"
                            ),
                        ),
                        Availability::Active => (
                            "node.active",
                            format!(
                                "node {id} is active again (shoal node activate): it takes new work; replicas are not moved back"
                            ),
                        ),
                    }
                }
                (Command::RemoveNode { .. }, Some(_), None) => (
                    "node.removed",
                    format!(
                        "node {id} was removed from the cluster (shoal node rm): its {} live tasks are orphaned and replaced elsewhere",
                        before.tasks.len()
                    ),
                ),
                _ => continue,
            };
            self.out.push(node_event(self.time, id, kind, message));
        }
    }

    fn stacks(&mut self, before: &Before, count: u64) {
        let Command::RemoveStack { stack, volumes } = self.cmd else {
            return;
        };
        let was = before.stacks.iter().find(|(s, _)| s == stack);
        if !matches!(was, Some((_, Some(false)))) {
            return;
        }
        let volumes = if *volumes {
            ", and its volumes removed"
        } else {
            "; its volumes are kept"
        };
        self.out.push(Event {
            time_ms: self.time,
            kind: "stack.removed".into(),
            stack: stack.clone(),
            message: format!(
                "stack {stack} is being removed (shoal rm): {count} tasks are stopped, then its services go{volumes}"
            ),
            ..Default::default()
        });
    }

    fn services(&mut self, before: &Before) {
        for (key, b) in &before.services {
            let Some(svc) = self.state.services.get(key) else {
                continue;
            };
            let name = &svc.name;
            let mut said = Vec::new();
            match b {
                None => {
                    if let Command::DeployStack { .. } = self.cmd {
                        let count = match svc.spec.mode {
                            ServiceMode::Replicated | ServiceMode::ReplicatedJob => {
                                format!("{} replicas", svc.replicas)
                            }
                            mode => format!("{} mode", mode.as_str()),
                        };
                        said.push((
                            "rollout.started",
                            format!(
                                "{name}: deploying generation {} of a new service ({count} of {})",
                                svc.generation, svc.spec.image
                            ),
                        ));
                    }
                }
                Some(b) => self.service_changes(svc, b, &mut said),
            }
            for (kind, message) in said {
                self.out.push(service_event(self.time, svc, kind, message));
            }
        }
    }

    fn service_changes(
        &self,
        svc: &crate::state::Service,
        b: &ServiceSnap,
        said: &mut Vec<(&'static str, String)>,
    ) {
        let name = &svc.name;
        if svc.generation > b.generation && svc.rolled_back {
            let how = match self.cmd {
                Command::Rollback { .. } => "by hand (shoal rollback)".to_string(),
                _ if svc.rollback_cause.is_empty() => {
                    format!("after the rollout of generation {} failed", b.generation)
                }
                _ => format!(
                    "after the rollout of generation {} failed: {}",
                    b.generation, svc.rollback_cause
                ),
            };
            said.push((
                "rollout.rolled_back",
                format!(
                    "{name}: rolled back {how}; generation {} returns to the previous spec ({})",
                    svc.generation, svc.spec.image
                ),
            ));
        } else if svc.generation > b.generation {
            let why = if b.removing {
                "deployed again while it was being removed".to_string()
            } else {
                words::change(&b.image, &svc.spec.image)
            };
            said.push((
                "rollout.started",
                format!(
                    "{name}: rolling out generation {} ({why}), replacing generation {}",
                    svc.generation, b.generation
                ),
            ));
        } else if svc.rollout_complete && !b.rollout_complete {
            let what = if svc.rolled_back {
                "the rollback to the previous spec"
            } else {
                "the rollout"
            };
            said.push((
                "rollout.completed",
                format!(
                    "{name}: {what} (generation {}) is complete: every replica is ready",
                    svc.generation
                ),
            ));
        }
        if svc.replicas != b.replicas {
            let (from, to) = (b.replicas, svc.replicas);
            match self.cmd {
                Command::Autoscale {
                    cause, to: asked, ..
                } => {
                    let bounded = if *asked != to {
                        format!(" (it asked for {asked}; min and max bound it)")
                    } else {
                        String::new()
                    };
                    said.push((
                        "autoscale",
                        format!(
                            "{name}: {from} -> {to} replicas by its autoscaler{bounded}: {cause}"
                        ),
                    ));
                }
                Command::Scale { .. } => said.push((
                    "scale",
                    format!("{name}: {from} -> {to} replicas (shoal scale)"),
                )),
                _ => said.push(("scale", format!("{name}: {from} -> {to} replicas (deploy)"))),
            }
        }
        if svc.removing && !b.removing {
            if let Command::DeployStack { .. } = self.cmd {
                said.push((
                    "service.removed",
                    format!(
                        "{name}: removed by a deploy of stack {} whose files no longer have it; its tasks are stopped",
                        svc.stack
                    ),
                ));
            }
        }
    }
}
