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
    let shared = shared(state);
    let local = locals(state).remove(node).unwrap_or_default();
    MeshView {
        shared: std::sync::Arc::new(shared),
        local,
    }
    .full(node)
}

/// What every node's mesh view holds alike, computed once per state for all of them
/// ([`crate::views`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SharedMesh {
    pub pool: String,
    /// Every node's address, sorted.
    pub nodes: Vec<IpAddr>,
    /// As [`NodeMesh::names`].
    pub names: BTreeMap<(String, String), Vec<IpAddr>>,
    /// As [`NodeMesh::ports`].
    pub ports: Vec<MeshPort>,
    /// By network: all its subnets, then the `/32` other addresses of its containers on
    /// several networks.
    pub peers: BTreeMap<String, Vec<String>>,
    /// Networks that are `internal: true`.
    pub internal: BTreeSet<String>,
    /// Every node's subnets: the node they are on and its address.
    pub routes: BTreeMap<String, (String, IpAddr)>,
}

/// What only one node's mesh view holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalMesh {
    /// By network it hosts: its subnet there.
    pub subnets: BTreeMap<String, String>,
    /// As [`NodeMesh::members`].
    pub members: BTreeMap<IpAddr, Vec<String>>,
}

/// A node's mesh in two parts: the one every node shares and its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshView {
    pub shared: std::sync::Arc<SharedMesh>,
    pub local: LocalMesh,
}

impl MeshView {
    /// The node's whole view, as [`for_node`] gives it.
    pub fn full(&self, node: &str) -> NodeMesh {
        let s = &self.shared;
        NodeMesh {
            pool: s.pool.clone(),
            subnets: self
                .local
                .subnets
                .iter()
                .map(|(key, mine)| {
                    let all = s.peers.get(key).cloned().unwrap_or_default();
                    (key.clone(), (mine.clone(), all))
                })
                .collect(),
            internal: self
                .local
                .subnets
                .keys()
                .filter(|k| s.internal.contains(*k))
                .cloned()
                .collect(),
            routes: s
                .routes
                .iter()
                .filter(|(_, (on, _))| on != node)
                .map(|(cidr, (_, ip))| (cidr.clone(), *ip))
                .collect(),
            nodes: s.nodes.clone(),
            names: s.names.clone(),
            members: self.local.members.clone(),
            ports: s.ports.clone(),
        }
    }
}

/// The part of every node's mesh that is the same for all.
pub fn shared(state: &ClusterState) -> SharedMesh {
    let pool = state.pool();
    let mut mesh = SharedMesh {
        pool: pool.to_string(),
        ..SharedMesh::default()
    };
    // Ready tasks by service.
    let mut ready: BTreeMap<(&str, &str), Vec<&Task>> = BTreeMap::new();
    for t in state.tasks.values() {
        if is_ready(state, t) {
            ready
                .entry((t.stack.as_str(), t.service.as_str()))
                .or_default()
                .push(t);
        }
    }
    mesh.nodes = state
        .nodes
        .values()
        .filter_map(|n| node_ip(&n.address))
        .collect();
    mesh.nodes.sort();
    mesh.nodes.dedup();
    mesh.internal = state
        .stacks
        .values()
        .flat_map(|s| s.spec.networks.values())
        .filter(|n| n.internal)
        .map(|n| n.key.clone())
        .collect();
    // By network: addresses of its containers on their other networks.
    let mut also_from: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
    for t in state.tasks.values() {
        if t.state.is_terminal() || t.ips.len() < 2 {
            continue;
        }
        for key in t.ips.keys() {
            let others = t.ips.iter().filter(|(k, _)| *k != key).map(|(_, ip)| *ip);
            also_from.entry(key.as_str()).or_default().extend(others);
        }
    }
    for (key, nodes) in &state.subnets {
        for (on, index) in nodes {
            if let Some(ip) = state.nodes.get(on).and_then(|n| node_ip(&n.address)) {
                mesh.routes.insert(pool.cidr(*index), (on.clone(), ip));
            }
        }
        let mut all: Vec<String> = nodes.values().map(|i| pool.cidr(*i)).collect();
        all.extend(
            also_from
                .get(key.as_str())
                .into_iter()
                .flatten()
                .map(|ip| format!("{ip}/32")),
        );
        mesh.peers.insert(key.clone(), all);
    }
    for svc in state.services.values() {
        let tasks = ready
            .get(&(svc.stack.as_str(), svc.name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let attached = network::attachments(&svc.stack, &svc.spec);
        for a in attached.iter() {
            let mut ips: Vec<IpAddr> = tasks.iter().filter_map(|t| t.ip_on(&a.key)).collect();
            ips.sort();
            let names = std::iter::once(&svc.name).chain(a.aliases.iter());
            for name in names {
                let entry = mesh
                    .names
                    .entry((a.key.clone(), name.to_ascii_lowercase()))
                    .or_default();
                // Sorted already, unless a name (an alias) gathers several services.
                let merge = !entry.is_empty();
                entry.extend(ips.iter().copied());
                if merge {
                    entry.sort();
                }
                entry.dedup();
            }
        }
        let first = attached.first().map(|a| a.key.clone()).unwrap_or_default();
        let mut ips: Vec<IpAddr> = tasks
            .iter()
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

/// Every node's own part of its mesh, in one pass over the state.
pub fn locals(state: &ClusterState) -> std::collections::HashMap<String, LocalMesh> {
    let mut locals: std::collections::HashMap<String, LocalMesh> = state
        .nodes
        .keys()
        .map(|n| (n.clone(), LocalMesh::default()))
        .collect();
    let pool = state.pool();
    for (key, nodes) in &state.subnets {
        for (on, index) in nodes {
            locals
                .entry(on.clone())
                .or_default()
                .subnets
                .insert(key.clone(), pool.cidr(*index));
        }
    }
    for t in state.tasks.values() {
        let Some(node) = t.node.as_deref() else {
            continue;
        };
        if t.state.is_terminal() || t.ips.is_empty() && t.legacy_ip.is_none() {
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
        let members = &mut locals.entry(node.to_string()).or_default().members;
        for a in attached.iter() {
            if let Some(ip) = t.ip_on(&a.key) {
                members.insert(ip, on.clone());
            }
        }
    }
    locals
}
