//! A supervisor's settings ([`SupervisorConfig`]).

use std::sync::Arc;
use std::time::Duration;

/// Settings of one supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// This node's name: it labels the containers and selects which ones are ours.
    pub node: String,
    pub poll_interval: Duration,
    /// Open ingress listeners for published ingress ports.
    pub ingress: bool,
    /// Where tasks' secrets are written; `None`: tasks that use secrets fail.
    pub secrets: Option<Arc<crate::secrets::SecretStore>>,
    /// How assigned GPUs are named to Docker (NVIDIA runtime or CDI).
    pub gpu_mode: crate::runtime::GpuDeviceMode,
    /// The node's standby copies of volumes (under the agent's data dir): promoted into
    /// the engine volume before a container mounting it is created, removed with
    /// `remove_volumes`. `None`: the node keeps none.
    pub standbys: Option<crate::volumes::standby::Standbys>,
    /// Containers a frozen export paused and resumed: their `unhealthy` right after is
    /// the pause's ([`crate::volumes::thawed`]).
    pub thawed: crate::volumes::thawed::Thawed,
    /// How tasks' images are made present (the engine, the cluster's store, the
    /// registry); its default has no cluster store.
    pub images: Arc<crate::images::Images>,
    /// This cluster's id (from its CA): labels the containers made here; containers
    /// labelled with another are left alone. `None` (no credentials): no label, and
    /// every container of this node is taken as ours.
    pub cluster: Option<String>,
}

impl SupervisorConfig {
    /// A supervisor of `node` polling every 500 ms, without ingress, secrets, standby
    /// copies, a cluster store or a cluster id: what the fields' absence means, to be
    /// filled in with struct update syntax.
    pub fn new(node: &str) -> SupervisorConfig {
        SupervisorConfig {
            node: node.to_string(),
            poll_interval: Duration::from_millis(500),
            ingress: false,
            secrets: None,
            gpu_mode: Default::default(),
            standbys: None,
            thawed: Default::default(),
            images: Default::default(),
            cluster: None,
        }
    }
}
