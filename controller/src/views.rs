//! What every agent session sends, computed once per applied index for every node and
//! shared, instead of by each session from the whole state on every applied entry.
//!
//! While this controller leads, [`run`] recomputes the [`Views`] after each applied
//! change (changes that arrive during a computation are taken together by the next) and
//! publishes them on a watch channel. A node's [`NodeView`] that did not change keeps its
//! `Arc`, and so does the mesh part every node shares: a session compares pointers and
//! sends its agent only when its own view moved.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::Shared;
use crate::assignments::NodeAssignment;
use crate::endpoints::{MeshView, SharedMesh};
use crate::state::ClusterState;

/// How long a recomputation waits after the change that woke it.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(10);

/// What one node's agent is sent: its tasks, its mesh, the volumes it must remove.
#[derive(Debug, PartialEq)]
pub struct NodeView {
    pub assignments: Vec<NodeAssignment>,
    pub mesh: MeshView,
    pub removals: Vec<String>,
}

/// Every node's view at one applied index.
#[derive(Debug, Default)]
pub struct Views {
    /// The applied log index they reflect (0: none yet).
    pub index: u64,
    nodes: HashMap<String, Arc<NodeView>>,
    shared: Option<Arc<SharedMesh>>,
}

impl Views {
    /// The views of `state` at `index`, keeping the `Arc`s of `previous` for what did
    /// not change.
    pub fn compute(state: &ClusterState, index: u64, previous: &Views) -> Views {
        let mut shared = Arc::new(crate::endpoints::shared(state));
        if let Some(old) = previous.shared.as_ref().filter(|old| **old == shared) {
            shared = old.clone();
        }
        let mut assignments = crate::assignments::all(state);
        let mut locals = crate::endpoints::locals(state);
        let mut removals: HashMap<&str, Vec<String>> = HashMap::new();
        for c in state.volumes.values() {
            if c.state == crate::state::volumes::CopyState::Removing {
                removals
                    .entry(c.node.as_str())
                    .or_default()
                    .push(c.docker_name.clone());
            }
        }
        let nodes = state
            .nodes
            .keys()
            .map(|name| {
                let view = NodeView {
                    assignments: assignments.remove(name).unwrap_or_default(),
                    mesh: MeshView {
                        shared: shared.clone(),
                        local: locals.remove(name).unwrap_or_default(),
                    },
                    removals: removals.remove(name.as_str()).unwrap_or_default(),
                };
                let view = match previous.nodes.get(name) {
                    Some(old) if **old == view => old.clone(),
                    _ => Arc::new(view),
                };
                (name.clone(), view)
            })
            .collect();
        Views {
            index,
            nodes,
            shared: Some(shared),
        }
    }

    /// `node`'s view; `None` for a node the state did not hold at [`Views::index`].
    pub fn node(&self, node: &str) -> Option<Arc<NodeView>> {
        self.nodes.get(node).cloned()
    }
}

/// A channel holding no views yet; [`run`] fills it while this controller leads.
pub fn channel() -> watch::Sender<Arc<Views>> {
    watch::Sender::new(Arc::default())
}

/// Recomputes the views after each applied change while this controller leads; empties
/// them when it stops leading (there are no sessions to serve then).
pub async fn run(ctx: Shared, shutdown: CancellationToken) {
    let mut applied = ctx.node.state.subscribe();
    let mut metrics = ctx.node.raft.metrics();
    loop {
        let leading = metrics.borrow_and_update().current_leader == Some(ctx.node.id);
        if leading {
            let previous = ctx.views.borrow().clone();
            let views = {
                let state = ctx.node.state.read();
                let index = state.last_applied().map_or(0, |l| l.index);
                (index != previous.index || previous.shared.is_none())
                    .then(|| Views::compute(&state, index, &previous))
            };
            if let Some(views) = views {
                ctx.views.send_replace(Arc::new(views));
            }
        } else if ctx.views.borrow().shared.is_some() {
            ctx.views.send_replace(Arc::default());
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = applied.changed() => {
                if changed.is_err() {
                    return;
                }
                // The entries of a burst (every agent's statuses) are taken together.
                tokio::time::sleep(COALESCE).await;
            }
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}
