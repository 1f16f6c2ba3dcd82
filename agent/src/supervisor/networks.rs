//! Which Docker networks on the engine are this cluster's to remove, and removing them.
//!
//! The supervisor removes a network once no assigned task and no container of its own
//! needs it. The networks it knows of are those it made sure of while running, and, at
//! start, those of this cluster already on the engine ([`left_on_engine`]): a stack
//! removed while the agent was down, or just before it stopped, still has its networks
//! there, and they go once the first assignments arrive.
//!
//! Whose a network is ([`is_ours`]): shoal made it when it is labelled with a stack
//! (`io.shoal.stack`) or a network key (`io.shoal.network`); it is this cluster's when
//! its `io.shoal.cluster` is this cluster's id. One labelled with another cluster's id is
//! never removed (that cluster's containers may be stopped, and a stopped container does
//! not show as on its network). One made before networks carried the cluster label is
//! taken as this cluster's (as unlabelled containers are, `reconcile::is_ours`) only
//! while the engine holds no container of another cluster, which could be using it. A
//! network without shoal's labels (a user's own, even one named by `external: true`) is
//! never removed.

use std::collections::BTreeSet;
use std::sync::Arc;

use shoal_proto::labels;
use tracing::{debug, info, warn};

use crate::runtime::{ContainerInfo, ContainerRuntime, NetworkInfo, RuntimeError};

/// Whether `network` is this cluster's (`cluster`; `None`: the agent has no cluster id,
/// and only unlabelled networks are its own) while `others_here` says whether the engine
/// holds containers of another cluster.
pub fn is_ours(network: &NetworkInfo, cluster: Option<&str>, others_here: bool) -> bool {
    if network.shoal_key().is_none() {
        return false;
    }
    match network.cluster() {
        Some(theirs) => Some(theirs) == cluster,
        None => !others_here,
    }
}

/// Whether any of `containers` (any node's) is labelled with another cluster's id.
pub fn another_clusters_containers(containers: &[ContainerInfo], cluster: Option<&str>) -> bool {
    containers.iter().any(|c| {
        c.labels
            .get(labels::CLUSTER)
            .is_some_and(|theirs| Some(theirs.as_str()) != cluster)
    })
}

/// The keys of this cluster's networks among `networks`.
pub fn keys_of_ours(
    networks: &[NetworkInfo],
    cluster: Option<&str>,
    others_here: bool,
) -> BTreeSet<String> {
    networks
        .iter()
        .filter(|n| is_ours(n, cluster, others_here))
        .filter_map(NetworkInfo::shoal_key)
        .collect()
}

/// Whether the engine holds containers of another cluster; an engine that cannot say
/// is taken to hold some (nothing unlabelled is removed then).
async fn others_here(runtime: &dyn ContainerRuntime, cluster: Option<&str>) -> bool {
    match runtime.list_managed().await {
        Ok(list) => another_clusters_containers(&list, cluster),
        Err(e) => {
            debug!(error = %e, "cannot list containers");
            true
        }
    }
}

/// The keys of this cluster's networks on the engine now (none when it cannot list them).
pub(super) async fn left_on_engine(
    runtime: &dyn ContainerRuntime,
    cluster: Option<&str>,
) -> BTreeSet<String> {
    let networks = match runtime.list_networks().await {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "cannot list the engine's networks; those of removed stacks stay until a task uses them");
            return BTreeSet::new();
        }
    };
    let others = others_here(runtime, cluster).await;
    let keys = keys_of_ours(&networks, cluster, others);
    if !keys.is_empty() {
        debug!(networks = ?keys, "this cluster's networks on the engine; removed once unused");
    }
    keys
}

/// Removes the Docker network of `key` if it is this cluster's.
pub(super) async fn remove_if_ours(
    runtime: Arc<dyn ContainerRuntime>,
    key: String,
    cluster: Option<String>,
) {
    let name = shoal_proto::network::docker_name(&key);
    let networks = match runtime.list_networks().await {
        Ok(n) => n,
        Err(e) => {
            debug!(network = %name, error = %e, "cannot list networks; not removed");
            return;
        }
    };
    let Some(network) = networks.iter().find(|n| n.name == name) else {
        return;
    };
    let others = others_here(&*runtime, cluster.as_deref()).await;
    if !is_ours(network, cluster.as_deref(), others) {
        debug!(network = %name, "not this cluster's network; left on the engine");
        return;
    }
    match runtime.remove_network(&key).await {
        Ok(()) => info!(network = %name, "unused network removed"),
        Err(RuntimeError::NotFound(_)) => {}
        Err(e) => debug!(network = %name, error = %e, "cannot remove network"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::NETWORK_LABEL;

    const OURS: &str = "c0ffee0000000001";
    const THEIRS: &str = "bada550000000002";

    fn network(name: &str, tags: &[(&str, &str)]) -> NetworkInfo {
        NetworkInfo {
            name: name.into(),
            labels: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_shoal_networks_of_this_cluster_are_ours() {
        let engine = vec![
            network(
                "shoal-shop",
                &[(labels::STACK, "shop"), (labels::CLUSTER, OURS)],
            ),
            network(
                "shoal-shop.back",
                &[(labels::STACK, "shop"), (labels::CLUSTER, OURS)],
            ),
            network(
                "shared",
                &[(NETWORK_LABEL, "ext:shared"), (labels::CLUSTER, OURS)],
            ),
            network(
                "shoal-old",
                &[(labels::STACK, "old"), (labels::CLUSTER, THEIRS)],
            ),
            network("shoal-legacy", &[(labels::STACK, "legacy")]),
            network("users_default", &[("com.docker.compose.project", "users")]),
            network("bridge", &[]),
        ];
        let keys = |cluster, others| -> Vec<String> {
            keys_of_ours(&engine, cluster, others).into_iter().collect()
        };
        assert_eq!(
            keys(Some(OURS), false),
            vec!["ext:shared", "legacy", "shop", "shop.back"]
        );
        // Another cluster's containers on the engine: unlabelled networks may be theirs.
        assert_eq!(
            keys(Some(OURS), true),
            vec!["ext:shared", "shop", "shop.back"]
        );
        // Without a cluster id, only unlabelled ones.
        assert_eq!(keys(None, false), vec!["legacy"]);
    }

    #[test]
    fn containers_of_another_cluster_are_seen_on_any_node() {
        let mut c =
            crate::runtime::test_container("c1", "t1", crate::runtime::ContainerState::Exited);
        assert!(!another_clusters_containers(&[c.clone()], Some(OURS)));
        c.labels.insert(labels::CLUSTER.into(), OURS.into());
        assert!(!another_clusters_containers(&[c.clone()], Some(OURS)));
        c.labels.insert(labels::CLUSTER.into(), THEIRS.into());
        c.labels.insert(labels::NODE.into(), "elsewhere".into());
        assert!(another_clusters_containers(&[c.clone()], Some(OURS)));
        assert!(another_clusters_containers(&[c], None));
    }
}
