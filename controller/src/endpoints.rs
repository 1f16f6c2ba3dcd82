//! What each node's agent needs to join the cluster network: a pure view of the state,
//! like [`crate::assignments`], re-sent to the agent whenever it changes.
//!
//! Networks are keyed as in [`shoal_proto::network`]: each Compose network of a stack
//! (its implicit `default` too) is its own network, and an external network is one
//! network shared by every stack declaring it.
//!
//! - its subnet on every network it hosts, and all that network's subnets (the peers it
//!   accepts forwarded traffic from), and which of them are `internal`. The peers also
//!   hold, as `/32`, the other addresses of every container on the network that is on
//!   other networks too: such a container reaches another node by its default route,
//!   from the address of whichever of its networks that route goes through;
//! - a route to every other node's subnets (host-gw: via that node's address), whatever
//!   the network: any node's mesh proxy may forward to any replica, and replies must
//!   come back the way they went (reverse-path filtering);
//! - every node's address (the mesh proxies that may forward into this node's subnets);
//! - the names of every network (service names, and the aliases given on that network)
//!   with the ready replicas' addresses on that network, on any node: the DNS server
//!   answers a container the names of its own networks and NXDOMAIN for the others';
//! - its containers' addresses with the networks each is on (how the DNS server tells
//!   who asks);
//! - every published ingress port (TCP and UDP) of the cluster with its ready replicas (each by
//!   its address on its first network), so that every node answers every published
//!   port (the routing mesh).
//!
//! A replica is listed only while it is desired running and ready (healthy, or running
//! without a healthcheck): a replica told to stop leaves names and mesh at once, before
//! its agent stops it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use shoal_proto::network;
use shoal_proto::spec::{PortMode, Protocol};
use shoal_proto::task::{Desired, TaskState};

use crate::state::{ClusterState, Task};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeMesh {
    pub pool: String,
    /// By network: this node's subnet, and all the network's subnets (this one
    /// included), then the `/32` other addresses of its containers on several networks.
    pub subnets: BTreeMap<String, (String, Vec<String>)>,
    /// Networks of `subnets` that are `internal: true`.
    pub internal: BTreeSet<String>,
    /// Every other node's subnets, and the node address to route via.
    pub routes: BTreeMap<String, IpAddr>,
    /// Every node's address, sorted.
    pub nodes: Vec<IpAddr>,
    /// By (network, name): ready replicas' addresses on that network, sorted.
    pub names: BTreeMap<(String, String), Vec<IpAddr>>,
    /// This node's containers: each address, and the networks of its container in
    /// attachment order.
    pub members: BTreeMap<IpAddr, Vec<String>>,
    pub ports: Vec<MeshPort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPort {
    pub published: u16,
    pub target: u16,
    pub protocol: Protocol,
    pub host_ip: Option<String>,
    /// Ready replicas' addresses, sorted.
    pub ips: Vec<IpAddr>,
}

/// The address part of a node's advertised address (`IP` or `IP:PORT`).
fn node_ip(address: &str) -> Option<IpAddr> {
    address
        .parse::<IpAddr>()
        .ok()
        .or_else(|| address.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// Whether the task is desired running and ready to serve.
fn is_ready(state: &ClusterState, t: &Task) -> bool {
    if t.desired != Desired::Running {
        return false;
    }
    let Some(svc) = state.services.get(&t.service_key()) else {
        return false;
    };
    match t.state {
        TaskState::Healthy => true,
        TaskState::Running => !svc.spec.has_healthcheck(),
        _ => false,
    }
}

/// The mesh as `node` must see it.
pub fn for_node(state: &ClusterState, node: &str) -> NodeMesh {
    let pool = state.pool();
    let mut mesh = NodeMesh {
        pool: pool.to_string(),
        ..NodeMesh::default()
    };
    // Ready tasks by service.
    let mut ready: BTreeMap<String, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks.values() {
        if is_ready(state, t) {
            ready.entry(t.service_key()).or_default().push(t);
        }
    }
    mesh.nodes = state
        .nodes
        .values()
        .filter_map(|n| node_ip(&n.address))
        .collect();
    mesh.nodes.sort();
    mesh.nodes.dedup();
    let internal: BTreeSet<&str> = state
        .stacks
        .values()
        .flat_map(|s| s.spec.networks.values())
        .filter(|n| n.internal)
        .map(|n| n.key.as_str())
        .collect();
    // By network: addresses of its containers on their other networks.
    let mut also_from: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    for t in state.tasks.values() {
        if t.state.is_terminal() || t.ips.len() < 2 {
            continue;
        }
        for key in t.ips.keys() {
            let others = t.ips.iter().filter(|(k, _)| *k != key).map(|(_, ip)| *ip);
            also_from.entry(key.clone()).or_default().extend(others);
        }
    }
    for (key, nodes) in &state.subnets {
        for (other, index) in nodes {
            if other == node {
                continue;
            }
            if let Some(ip) = state.nodes.get(other).and_then(|n| node_ip(&n.address)) {
                mesh.routes.insert(pool.cidr(*index), ip);
            }
        }
        let Some(mine) = nodes.get(node) else {
            continue;
        };
        let mut all: Vec<String> = nodes.values().map(|i| pool.cidr(*i)).collect();
        all.extend(
            also_from
                .get(key)
                .into_iter()
                .flatten()
                .map(|ip| format!("{ip}/32")),
        );
        mesh.subnets.insert(key.clone(), (pool.cidr(*mine), all));
        if internal.contains(key.as_str()) {
            mesh.internal.insert(key.clone());
        }
    }
    for svc in state.services.values() {
        let tasks = ready.get(&svc.key()).map(Vec::as_slice).unwrap_or_default();
        for a in network::attachments(&svc.stack, &svc.spec).iter() {
            let ips: Vec<IpAddr> = tasks.iter().filter_map(|t| t.ip_on(&a.key)).collect();
            let names = std::iter::once(&svc.name).chain(a.aliases.iter());
            for name in names {
                let entry = mesh
                    .names
                    .entry((a.key.clone(), name.to_ascii_lowercase()))
                    .or_default();
                entry.extend(ips.iter().copied());
                entry.sort();
                entry.dedup();
            }
        }
    }
    for t in state.tasks.values() {
        if t.node.as_deref() != Some(node) || t.state.is_terminal() {
            continue;
        }
        let Some(svc) = state.services.get(&t.service_key()) else {
            continue;
        };
        let attached = network::attachments(&svc.stack, &svc.spec);
        let on: Vec<String> = attached
            .iter()
            .filter(|a| t.ip_on(&a.key).is_some())
            .map(|a| a.key.clone())
            .collect();
        for a in attached.iter() {
            if let Some(ip) = t.ip_on(&a.key) {
                mesh.members.insert(ip, on.clone());
            }
        }
    }
    for svc in state.services.values() {
        let first = network::attachments(&svc.stack, &svc.spec)
            .first()
            .map(|a| a.key.clone())
            .unwrap_or_default();
        let mut ips: Vec<IpAddr> = ready
            .get(&svc.key())
            .into_iter()
            .flatten()
            .filter_map(|t| t.ip_on(&first).or_else(|| t.ips.values().next().copied()))
            .collect();
        ips.sort();
        for p in &svc.spec.ports {
            let (Some(published), PortMode::Ingress) = (p.published, p.mode) else {
                continue;
            };
            mesh.ports.push(MeshPort {
                published,
                target: p.target,
                protocol: p.protocol,
                host_ip: p.host_ip.clone(),
                ips: ips.clone(),
            });
        }
    }
    mesh
}
