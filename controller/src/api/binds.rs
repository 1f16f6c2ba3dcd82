//! Relative bind mounts (`./data:/data`) on a cluster of several nodes.
//!
//! The loader resolves `./data` against the Compose file's directory on the deploying
//! machine; another node may not have that directory, or may have a different one of
//! the same name. shoal therefore refuses a service with a relative bind mount on a
//! cluster of more than one node unless the service is pinned to one node
//! (`node.hostname == NODE` or `node.id == NODE`), where the user says the directory is.
//! On a one-node cluster (`shoal up`) it runs as `docker compose up` would. A missing
//! absolute source fails the task on its node, naming node and path (the agent).

use shoal_proto::spec::{ConstraintField, MountKind, StackSpec};

use crate::state::ClusterState;

/// Why `stack` cannot be deployed on `state`'s nodes, or `None`.
pub fn refusal(stack: &StackSpec, state: &ClusterState) -> Option<String> {
    let nodes = state.nodes.len();
    if nodes <= 1 {
        return None;
    }
    let mut problems = Vec::new();
    for (name, svc) in &stack.services {
        let pinned =
            svc.placement.constraints.iter().any(|c| {
                c.equal && matches!(c.field, ConstraintField::Hostname | ConstraintField::Id)
            });
        if pinned {
            continue;
        }
        for m in &svc.volumes {
            if m.kind == MountKind::Bind && m.relative {
                problems.push(format!(
                    "service {name}: the bind mount of {} on {} is a directory of the deploying machine, and this cluster has {nodes} nodes",
                    m.source.as_deref().unwrap_or(""),
                    m.target
                ));
            }
        }
    }
    if problems.is_empty() {
        return None;
    }
    let names: Vec<&str> = state.nodes.keys().map(String::as_str).collect();
    Some(format!(
        "{}; pin the service to the node that has the directory (deploy.placement.constraints: [node.hostname == NODE], one of {}) or use a named volume, which shoal keeps with its replica",
        problems.join("; "),
        names.join(", ")
    ))
}
