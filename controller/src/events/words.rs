//! How events name things and say why, in words a person can act on.

use shoal_proto::task::TaskState;

use super::Event;
use crate::state::{ClusterState, NodeStatus, Service, Task};

/// `web slot 2`; a global service's replica is named by the node it belongs to.
pub fn who(t: &Task) -> String {
    match &t.pinned {
        Some(node) => format!("{}'s replica for {node}", t.service),
        None => format!("{} slot {}", t.service, t.slot),
    }
}

/// `on n1` when the task has a node.
pub fn on(t: &Task) -> String {
    t.node
        .as_deref()
        .map(|n| format!(" on {n}"))
        .unwrap_or_default()
}

/// An event about a task.
pub fn task_event(time_ms: u64, t: &Task, kind: String, message: String) -> Event {
    Event {
        time_ms,
        kind,
        stack: t.stack.clone(),
        service: t.service.clone(),
        node: t.node.clone().unwrap_or_default(),
        task: t.id.clone(),
        message,
        ..Default::default()
    }
}

/// An event about a service.
pub fn service_event(time_ms: u64, svc: &Service, kind: &str, message: String) -> Event {
    Event {
        time_ms,
        kind: kind.to_string(),
        stack: svc.stack.clone(),
        service: svc.name.clone(),
        message,
        ..Default::default()
    }
}

/// An event about a node.
pub fn node_event(time_ms: u64, node: &str, kind: &str, message: String) -> Event {
    Event {
        time_ms,
        kind: kind.to_string(),
        node: node.to_string(),
        message,
        ..Default::default()
    }
}

/// What became of a lost task's node: `n1, which is down`.
pub fn lost_node(state: &ClusterState, node: &str) -> String {
    match state.nodes.get(node) {
        None => format!("{node}, which was removed from the cluster"),
        Some(n) if n.status == NodeStatus::Down => format!("{node}, which is down"),
        Some(n) => format!("{node}, which was {}", n.status.as_str()),
    }
}

/// The message of a task's new state (before any cause the caller adds).
pub fn transition(state: &ClusterState, t: &Task) -> String {
    let who = who(t);
    let node = t.node.as_deref().unwrap_or("(no node)");
    match t.state {
        TaskState::Pending => format!("{who} is pending"),
        TaskState::Assigned => format!("{who} assigned to {node}"),
        TaskState::Starting => format!("{who} starting on {node}"),
        TaskState::Running => format!("{who} running on {node}"),
        TaskState::Healthy => format!("{who} on {node} is healthy"),
        TaskState::Unhealthy => format!("{who} on {node} is unhealthy: {}", t.failure()),
        TaskState::Complete => format!("{who} on {node} completed (exit code 0)"),
        TaskState::Failed => format!("{who}{} failed: {}", on(t), t.failure()),
        TaskState::Shutdown => match &t.node {
            Some(n) => format!("{who} on {n} stopped"),
            None => format!("{who} was cancelled before it was placed"),
        },
        TaskState::Orphaned => format!(
            "{who} is lost with its node {}; the reconciler replaces it elsewhere",
            lost_node(state, node)
        ),
    }
}

/// `nginx:1 -> nginx:2`, or that something else in the spec changed.
pub fn change(old_image: &str, new_image: &str) -> String {
    if old_image != new_image {
        format!("image {old_image} -> {new_image}")
    } else {
        "its spec changed".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes() {
        assert_eq!(change("a:1", "a:2"), "image a:1 -> a:2");
        assert_eq!(change("a:1", "a:1"), "its spec changed");
    }
}
