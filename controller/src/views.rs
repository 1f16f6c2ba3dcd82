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
    /// Counts the changes of the mesh part every node shares.
    pub shared_epoch: u64,
    /// The latest `shared_epoch` whose change took something away (a replica leaving a
    /// name or a port, a node, a subnet): such a change is sent at once, while one that
    /// only adds may wait for [`MESH_PACE`].
    pub removal_epoch: u64,
    /// The services' specs the assignments share, kept for the next computation.
    specs: crate::assignments::Specs,
    /// The changes of the names and ports from an earlier shared mesh to this one, by
    /// the earlier one's epoch: sessions that sent the same one share the work.
    shared_deltas: std::sync::Mutex<HashMap<u64, SharedDelta>>,
}

/// An earlier shared mesh, and what changed from it ([`Views::shared_delta`]). The mesh
/// is held weakly: at 100,000 replicas each is megabytes, and sessions that sent from
/// many epochs would otherwise keep every one of them alive in the cache of the last
/// views, long after every session moved on.
type SharedDelta = (
    std::sync::Weak<SharedMesh>,
    Option<Arc<shoal_proto::pb::MeshDelta>>,
);

/// How often, at most, a session sends its agent a change of the shared mesh that only
/// adds (replicas becoming ready): with 1,000 nodes, every replica becoming ready would
/// otherwise send 1,000 agents the whole mesh. What takes something away, and every
/// change of the node's own tasks or mesh, goes at once.
pub const MESH_PACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether going from `old` to `new` takes anything away: an address from a name or a
/// port, or any change of the rest (subnets, routes, nodes, pool).
pub fn removes(old: &SharedMesh, new: &SharedMesh) -> bool {
    let kept = |old: &[std::net::IpAddr], new: &[std::net::IpAddr]| {
        // Both sorted: every old address is still there.
        let mut new = new.iter().peekable();
        old.iter().all(|ip| {
            while new.next_if(|n| *n < ip).is_some() {}
            new.next_if(|n| *n == ip).is_some()
        })
    };
    // A new node, subnet or route only adds (a node joining must not send every agent
    // the whole mesh at once); an `internal` mark or the pool changing restricts.
    if old.pool != new.pool || old.internal != new.internal || !kept(&old.nodes, &new.nodes) {
        return true;
    }
    if old
        .routes
        .iter()
        .any(|(cidr, via)| new.routes.get(cidr) != Some(via))
    {
        return true;
    }
    let peers_lost = old
        .peers
        .iter()
        .any(|(key, list)| match new.peers.get(key) {
            Some(now) if now == list => false,
            Some(now) => {
                let now: std::collections::HashSet<&String> = now.iter().collect();
                list.iter().any(|p| !now.contains(p))
            }
            None => true,
        });
    if peers_lost {
        return true;
    }
    let names_lost = old
        .names
        .iter()
        .any(|(k, ips)| !new.names.get(k).is_some_and(|n| kept(ips, n)));
    let ports_lost = old.ports.iter().any(|p| {
        !new.ports.iter().any(|q| {
            (q.published, q.target, q.protocol, &q.host_ip)
                == (p.published, p.target, p.protocol, &p.host_ip)
                && kept(&p.ips, &q.ips)
        })
    });
    names_lost || ports_lost
}

impl Views {
    /// The views of `state` at `index`, keeping the `Arc`s of `previous` for what did
    /// not change.
    pub fn compute(state: &ClusterState, index: u64, previous: &Views) -> Views {
        let mut shared = Arc::new(crate::endpoints::shared(state));
        let (mut shared_epoch, mut removal_epoch) = (previous.shared_epoch, previous.removal_epoch);
        match previous.shared.as_ref() {
            Some(old) if **old == *shared => shared = old.clone(),
            Some(old) => {
                shared_epoch += 1;
                if removes(old, &shared) {
                    removal_epoch = shared_epoch;
                }
            }
            None => shared_epoch += 1,
        }
        let (mut assignments, specs) = crate::assignments::all_reusing(state, &previous.specs);
        let mut locals = crate::endpoints::locals(state);
        let mut removals = state.volumes_to_remove_by_node();
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
                // Compared only when the shared part is the same `Arc`: a deep compare of
                // the shared part per node would cost nodes x mesh.
                let view = match previous.nodes.get(name) {
                    Some(old)
                        if Arc::ptr_eq(&old.mesh.shared, &view.mesh.shared)
                            && old.assignments == view.assignments
                            && old.mesh.local == view.mesh.local
                            && old.removals == view.removals =>
                    {
                        old.clone()
                    }
                    _ => Arc::new(view),
                };
                (name.clone(), view)
            })
            .collect();
        Views {
            index,
            nodes,
            shared: Some(shared),
            shared_epoch,
            removal_epoch,
            specs,
            shared_deltas: Default::default(),
        }
    }

    /// What changed in the names and ports from `old` (the shared mesh of `epoch`) to
    /// this shared mesh; `None` when anything else changed too (send the mesh whole).
    pub fn shared_delta(
        &self,
        epoch: u64,
        old: &Arc<SharedMesh>,
    ) -> Option<Arc<shoal_proto::pb::MeshDelta>> {
        let new = self.shared.as_ref()?;
        // A panic elsewhere while it was held leaves a cache that is still sound.
        let mut cache = self
            .shared_deltas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((known, delta)) = cache.get(&epoch) {
            if known.upgrade().is_some_and(|k| Arc::ptr_eq(&k, old)) {
                return delta.clone();
            }
        }
        // Entries whose mesh no session holds any more are of no use.
        cache.retain(|_, (known, _)| known.strong_count() > 0);
        let delta = crate::api::convert::shared_mesh_delta(old, new).map(Arc::new);
        cache.insert(epoch, (Arc::downgrade(old), delta.clone()));
        delta
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
    // How long the last computation took: the next one waits at least as long, so that
    // with a large state (190 ms at 100,000 tasks) the state's lock is free for applying
    // entries at least half the time, and each computation takes a larger batch.
    let mut took = std::time::Duration::ZERO;
    loop {
        let leading = metrics.borrow_and_update().current_leader == Some(ctx.node.id);
        if leading {
            let previous = ctx.views.borrow().clone();
            let start = std::time::Instant::now();
            // Off the async workers: at 100,000 tasks this holds a thread for a while.
            let on = ctx.clone();
            let views = tokio::task::spawn_blocking(move || {
                let state = on.node.state.read();
                let index = state.last_applied().map_or(0, |l| l.index);
                (index != previous.index || previous.shared.is_none())
                    .then(|| Views::compute(&state, index, &previous))
            })
            .await;
            let Ok(views) = views else {
                return; // the runtime is shutting down
            };
            if let Some(views) = views {
                took = start.elapsed();
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
                tokio::time::sleep(COALESCE.max(took)).await;
            }
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}
