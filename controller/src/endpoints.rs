//! What each node's agent needs to join the cluster network: a pure view of the state,
//! like [`crate::assignments`], re-sent to the agent whenever it changes.
//!
//! - its subnet for every stack it hosts, and every subnet of those stacks (the peers it
//!   accepts forwarded traffic from);
//! - a route to every other node's subnets (host-gw: via that node's address), whatever
//!   the stack: any node's mesh proxy may forward to any replica, and replies must come
//!   back the way they went (reverse-path filtering);
//! - every node's address (the mesh proxies that may forward into this node's subnets);
//! - the names containers of those stacks resolve (service names and aliases) with the
//!   addresses of the ready replicas, on any node;
//! - every published ingress TCP port of the cluster with its ready replicas, so that
//!   every node answers every published port (the routing mesh).
//!
//! A replica is listed only while it is desired running and ready (healthy, or running
//! without a healthcheck): a replica told to stop leaves names and mesh at once, before
//! its agent stops it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use shoal_proto::spec::{PortMode, Protocol};
use shoal_proto::task::{Desired, TaskState};

use crate::state::{subnets, ClusterState, Task};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeMesh {
    pub pool: String,
    /// By stack: this node's subnet, and all the stack's subnets (this one included).
    pub subnets: BTreeMap<String, (String, Vec<String>)>,
    /// Every other node's subnets, and the node address to route via.
    pub routes: BTreeMap<String, IpAddr>,
    /// Every node's address, sorted.
    pub nodes: Vec<IpAddr>,
    /// By (stack, name): ready replicas' addresses, sorted.
    pub names: BTreeMap<(String, String), Vec<IpAddr>>,
    pub ports: Vec<MeshPort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPort {
    pub published: u16,
    pub target: u16,
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

/// The task's address, when it is desired running and ready to serve.
fn ready_ip(state: &ClusterState, t: &Task) -> Option<IpAddr> {
    if t.desired != Desired::Running {
        return None;
    }
    let svc = state.services.get(&t.service_key())?;
    let ready = match t.state {
        TaskState::Healthy => true,
        TaskState::Running => !svc.spec.has_healthcheck(),
        _ => false,
    };
    ready.then_some(t.ip?)
}

/// The mesh as `node` must see it.
pub fn for_node(state: &ClusterState, node: &str) -> NodeMesh {
    let mut mesh = NodeMesh {
        pool: subnets::POOL.to_string(),
        ..NodeMesh::default()
    };
    let mut ready: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for t in state.tasks.values() {
        if let Some(ip) = ready_ip(state, t) {
            ready.entry(t.service_key()).or_default().push(ip);
        }
    }
    for v in ready.values_mut() {
        v.sort();
    }
    mesh.nodes = state
        .nodes
        .values()
        .filter_map(|n| node_ip(&n.address))
        .collect();
    mesh.nodes.sort();
    mesh.nodes.dedup();
    for nodes in state.subnets.values() {
        for (other, index) in nodes {
            if other == node {
                continue;
            }
            if let Some(ip) = state.nodes.get(other).and_then(|n| node_ip(&n.address)) {
                mesh.routes.insert(subnets::cidr(*index), ip);
            }
        }
    }
    for (stack, nodes) in &state.subnets {
        let Some(mine) = nodes.get(node) else {
            continue;
        };
        let all = nodes.values().map(|i| subnets::cidr(*i)).collect();
        mesh.subnets
            .insert(stack.clone(), (subnets::cidr(*mine), all));
        for svc in state.services.values().filter(|s| &s.stack == stack) {
            let ips = ready.get(&svc.key()).cloned().unwrap_or_default();
            let names = std::iter::once(&svc.name).chain(svc.spec.aliases.iter());
            for name in names {
                let entry = mesh.names.entry((stack.clone(), name.clone())).or_default();
                entry.extend(ips.iter().copied());
                entry.sort();
                entry.dedup();
            }
        }
    }
    for svc in state.services.values() {
        for p in &svc.spec.ports {
            let (Some(published), PortMode::Ingress, Protocol::Tcp) =
                (p.published, p.mode, p.protocol)
            else {
                continue;
            };
            mesh.ports.push(MeshPort {
                published,
                target: p.target,
                host_ip: p.host_ip.clone(),
                ips: ready.get(&svc.key()).cloned().unwrap_or_default(),
            });
        }
    }
    mesh
}
