//! Where a replica may run because of the named volumes it mounts (pure).
//!
//! The invariant: a replica never starts with a new, empty copy of a named volume while
//! a copy of it exists on another node, unless the volume is disposable
//! (`x-shoal-volume: {policy: ephemeral}`) or external. So, for each bound volume a task
//! mounts:
//! - no copy anywhere: any node (the first copy is created where it lands);
//! - a slot that ran with a copy goes back to that copy's node;
//! - a slot of a single-replica service goes to a node holding a copy;
//! - a new slot of a service with several replicas, or a global service's task, may
//!   create a copy on a node that has none: Compose shares a named volume among the
//!   replicas of one host, and shoal keeps that meaning per node.
//!
//! A node holding a copy that is not live (set aside after a move, being removed or
//! written) takes no replica that mounts the volume. When the only nodes allowed are out
//! of service, the task waits with a reason that says what to do.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::spec::ServiceMode;

use crate::state::volumes::mounted_volumes;
use crate::state::{Availability, ClusterState, CopyState, NodeId, NodeStatus, Service};

/// Nodes a task may or may not run on, with the words for a node refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFilter {
    /// Only these nodes (None: any).
    pub only: Option<BTreeSet<NodeId>>,
    /// Why a node outside `only` is refused (e.g. "does not hold volume app_db").
    pub only_why: String,
    /// These nodes never, with why.
    pub except: BTreeMap<NodeId, String>,
}

impl NodeFilter {
    /// Why `node` is refused, or None when the filter lets it through.
    pub fn refuses(&self, node: &str) -> Option<String> {
        if let Some(why) = self.except.get(node) {
            return Some(why.clone());
        }
        match &self.only {
            Some(only) if !only.contains(node) => Some(self.only_why.clone()),
            _ => None,
        }
    }
}

/// What a task's volumes say about its placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// No bound volume, or none with a copy: anywhere.
    Free,
    /// Only where the filter lets it.
    Nodes(NodeFilter),
    /// Nowhere now: the reason, for a person.
    Wait(String),
}

/// The binding of `svc`'s replica in `slot`.
pub fn binding(state: &ClusterState, svc: &Service, slot: u64) -> Binding {
    let Some(stack) = state.stacks.get(&svc.stack) else {
        return Binding::Free;
    };
    let mut filter = NodeFilter::default();
    let mut bound_names: Vec<String> = Vec::new();
    for (name, spec) in mounted_volumes(&stack.spec, &svc.spec) {
        let docker = spec.docker_name(&svc.stack, name);
        if let Some(m) = state.move_of(&svc.stack, name) {
            let what = if m.from.is_empty() {
                format!("is being restored on {}", m.to)
            } else {
                format!("is being moved from {} to {}", m.from, m.to)
            };
            return Binding::Wait(format!("volume {docker} {what} (move {})", m.id));
        }
        for c in state.copies_of(&svc.stack, name) {
            if c.state != CopyState::Live {
                filter.except.insert(
                    c.node.clone(),
                    format!(
                        "holds a {} copy of volume {docker} (shoal volume rm {}/{name} --node {} to free it)",
                        c.state.as_str(),
                        svc.stack,
                        c.node
                    ),
                );
            }
        }
        if !spec.is_bound() {
            continue;
        }
        let live: Vec<&crate::state::VolumeCopy> = state
            .copies_of(&svc.stack, name)
            .filter(|c| c.state == CopyState::Live)
            .collect();
        if live.is_empty() {
            continue;
        }
        let mine: BTreeSet<NodeId> = live
            .iter()
            .filter(|c| c.slots.get(&svc.name).is_some_and(|s| s.contains(&slot)))
            .map(|c| c.node.clone())
            .collect();
        let single = matches!(
            svc.spec.mode,
            ServiceMode::Replicated | ServiceMode::ReplicatedJob
        ) && svc.replicas <= 1;
        let allowed: BTreeSet<NodeId> = if !mine.is_empty() {
            mine
        } else if single {
            live.iter().map(|c| c.node.clone()).collect()
        } else {
            continue;
        };
        filter.only = Some(match filter.only.take() {
            None => allowed,
            Some(prev) => prev.intersection(&allowed).cloned().collect(),
        });
        bound_names.push(docker);
        if filter.only.as_ref().is_some_and(BTreeSet::is_empty) {
            return Binding::Wait(format!(
                "its volumes {} have their copies on different nodes: move them together (shoal volume move)",
                bound_names.join(", ")
            ));
        }
    }
    let Some(only) = &filter.only else {
        return if filter.except.is_empty() {
            Binding::Free
        } else {
            Binding::Nodes(filter)
        };
    };
    let names = bound_names.join(", ");
    let (volume_word, these) = if bound_names.len() == 1 {
        ("volume", "it")
    } else {
        ("volumes", "them")
    };
    // Somewhere it may go can take it now: the scheduler picks among them.
    let usable = only.iter().any(|n| {
        state.nodes.get(n).is_some_and(|n| {
            n.status == NodeStatus::Ready && n.availability == Availability::Active
        }) && !filter.except.contains_key(n)
    });
    if usable {
        filter.only_why = format!("does not hold {volume_word} {names}");
        return Binding::Nodes(filter);
    }
    let volume_arg = |n: &str| -> String {
        mounted_volumes(&stack.spec, &svc.spec)
            .find(|(v, s)| s.docker_name(&svc.stack, v) == n)
            .map(|(v, _)| format!("{}/{v}", svc.stack))
            .unwrap_or_else(|| n.to_string())
    };
    let first = volume_arg(&bound_names[0]);
    let places: Vec<String> = only
        .iter()
        .map(|n| match state.nodes.get(n) {
            None => format!("{n}, which is not part of the cluster"),
            Some(node) if node.status == NodeStatus::Down => format!("{n}, which is down"),
            Some(node) if node.status == NodeStatus::Unknown => {
                format!("{n}, which has not reported yet")
            }
            Some(node) if node.availability == Availability::Drain => {
                format!("{n}, which is drained")
            }
            Some(_) => format!("{n}, which holds a copy it may not use"),
        })
        .collect();
    let drained = only.iter().any(|n| {
        state
            .nodes
            .get(n)
            .is_some_and(|n| n.status == NodeStatus::Ready && n.availability == Availability::Drain)
    });
    let how = if drained {
        format!(
            "activate the node (shoal node activate), or move {these}: shoal volume move {first} --to NODE"
        )
    } else {
        let node = only.iter().next().cloned().unwrap_or_default();
        format!(
            "bring {node} back (the data is there), or give up that copy (shoal volume rm {first} --node {node}) to start empty elsewhere, or declare {these} disposable (x-shoal-volume: {{policy: ephemeral}})"
        )
    };
    Binding::Wait(format!(
        "{volume_word} {names} {} on {}: {how}",
        if bound_names.len() == 1 { "is" } else { "are" },
        places.join(" and ")
    ))
}

/// Replicated volumes whose live copy is on a lost node and that have a standby on a
/// ready node: the freshest standby is promoted (the replicas then start there).
pub fn promotions(state: &ClusterState) -> Vec<crate::state::Decision> {
    let mut by_volume: BTreeMap<(&str, &str), Vec<&crate::state::VolumeCopy>> = BTreeMap::new();
    for c in state.volumes.values() {
        by_volume
            .entry((c.stack.as_str(), c.name.as_str()))
            .or_default()
            .push(c);
    }
    let status = |n: &str| state.nodes.get(n).map(|n| n.status);
    let mut out = Vec::new();
    for ((stack, name), copies) in by_volume {
        if state.move_of(stack, name).is_some() {
            continue;
        }
        let live: Vec<_> = copies
            .iter()
            .filter(|c| c.state == CopyState::Live)
            .collect();
        let lost = !live.is_empty()
            && live
                .iter()
                .all(|c| status(&c.node).is_none_or(|s| s == NodeStatus::Down));
        if !lost {
            continue;
        }
        let best = copies
            .iter()
            .filter(|c| c.state == CopyState::Standby && c.synced_ms.is_some())
            .filter(|c| status(&c.node) == Some(NodeStatus::Ready))
            .max_by_key(|c| (c.synced_ms, std::cmp::Reverse(c.node.clone())));
        if let Some(c) = best {
            out.push(crate::state::Decision::PromoteStandby {
                stack: stack.to_string(),
                name: name.to_string(),
                node: c.node.clone(),
            });
        }
    }
    out
}

/// Where the next standby copy of a replicated volume goes: a ready, active node holding
/// no copy of it, the one holding the fewest copies of any volume, then by name.
pub fn standby_node(state: &ClusterState, stack: &str, name: &str) -> Option<NodeId> {
    let holding: BTreeSet<&str> = state
        .copies_of(stack, name)
        .map(|c| c.node.as_str())
        .collect();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for c in state.volumes.values() {
        *count.entry(c.node.as_str()).or_default() += 1;
    }
    state
        .nodes
        .values()
        .filter(|n| n.status == NodeStatus::Ready && n.availability == Availability::Active)
        .filter(|n| !holding.contains(n.id.as_str()))
        .min_by_key(|n| (count.get(n.id.as_str()).copied().unwrap_or(0), n.id.clone()))
        .map(|n| n.id.clone())
}
