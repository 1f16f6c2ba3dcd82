//! The views every agent session sends, computed once per applied index for all nodes
//! ([`shoal_controller::views`]), equal what each node's session used to compute from
//! the whole state for itself (kept below as the reference), over random histories of
//! deploys, placements, statuses with addresses, node losses and removals; and a view
//! that did not change keeps its `Arc` (what the sessions compare).

mod common;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use common::*;
use proptest::prelude::*;

use shoal_controller::assignments::NodeAssignment;
use shoal_controller::endpoints::{MeshPort, NodeMesh};
use shoal_controller::state::*;
use shoal_controller::views::Views;
use shoal_proto::network;
use shoal_proto::spec::*;
use shoal_proto::task::{Desired, TaskState};

/// `assignments::for_node` as it was: one node's set from the whole state.
fn reference_assignments(state: &ClusterState, node: &str) -> Vec<NodeAssignment> {
    state
        .tasks
        .values()
        .filter(|t| t.node.as_deref() == Some(node))
        .filter(|t| t.state != TaskState::Orphaned)
        .filter(|t| !(t.state.is_terminal() && t.container_id.is_empty()))
        .filter_map(|t| {
            let svc = state.services.get(&t.service_key())?;
            let volumes = state
                .stacks
                .get(&t.stack)
                .map(|st| {
                    shoal_controller::state::volumes::named_volumes(&st.spec, &svc.spec)
                        .map(|(name, v)| (name.to_string(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            Some(NodeAssignment {
                task_id: t.id.clone(),
                stack: t.stack.clone(),
                service: t.service.clone(),
                slot: t.slot,
                desired: t.desired,
                generation: t.generation,
                ended: t.state.is_terminal(),
                spec: Arc::new(svc.spec.clone()),
                gpus: t.gpus.clone(),
                volumes: Arc::new(volumes),
            })
        })
        .collect()
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

/// The mesh as `node` must see it: `endpoints::for_node` as it was before the views
/// were shared, computed from the whole state for one node.
fn reference_mesh(state: &ClusterState, node: &str) -> NodeMesh {
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

/// One step of a random history.
#[derive(Debug, Clone)]
enum Step {
    /// Deploy stack `app` with `n` services of these replica counts (a port published
    /// on the even ones, a healthcheck on those divisible by 3, an alias on the second
    /// network on the odd ones).
    Deploy(Vec<u64>),
    /// Report every running-desired task of a service as `state`, with addresses.
    Report(usize, u8),
    /// A node goes down, or comes back.
    Flip(usize),
    /// The stack goes.
    Remove,
    /// The reconciler acts.
    Settle,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        prop::collection::vec(0u64..6, 1..4).prop_map(Step::Deploy),
        (0usize..3, 0u8..4).prop_map(|(s, st)| Step::Report(s, st)),
        (0usize..4).prop_map(Step::Flip),
        Just(Step::Remove),
        Just(Step::Settle),
    ]
}

fn service(i: usize, replicas: u64) -> ServiceSpec {
    let mut s = svc(&format!("s{i}"), replicas);
    if i.is_multiple_of(2) {
        s.ports = vec![PortSpec {
            target: 80,
            published: Some(8000 + i as u16),
            protocol: Protocol::Tcp,
            host_ip: None,
            mode: PortMode::Ingress,
        }];
    }
    if i.is_multiple_of(3) {
        s.healthcheck = Some(HealthcheckSpec {
            test: vec!["CMD".into(), "true".into()],
            ..Default::default()
        });
    }
    let back = ServiceNetwork {
        name: "back".into(),
        key: network::local_key("app", "back"),
        aliases: if i % 2 == 1 {
            vec![format!("alias{i}")]
        } else {
            Vec::new()
        },
    };
    let default = ServiceNetwork {
        name: "default".into(),
        key: network::local_key("app", "default"),
        ..Default::default()
    };
    s.networks = if i == 1 {
        vec![default, back]
    } else {
        vec![default]
    };
    s
}

fn apply(s: &mut ClusterState, step: &Step, now: u64) {
    match step {
        Step::Deploy(counts) => {
            let services: Vec<ServiceSpec> = counts
                .iter()
                .enumerate()
                .map(|(i, r)| service(i, *r))
                .collect();
            let mut networks = BTreeMap::new();
            for name in ["default", "back"] {
                networks.insert(
                    name.to_string(),
                    NetworkSpec {
                        key: network::local_key("app", name),
                        internal: name == "back",
                        ..Default::default()
                    },
                );
            }
            s.apply(&Command::DeployStack {
                spec: StackSpec {
                    name: "app".into(),
                    services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
                    networks,
                    volumes: Default::default(),
                    secrets: Vec::new(),
                    configs: Vec::new(),
                },
                now_ms: now,
                secrets: Default::default(),
            });
        }
        Step::Report(svc, state) => {
            let state = [
                TaskState::Starting,
                TaskState::Running,
                TaskState::Healthy,
                TaskState::Failed,
            ][*state as usize];
            let tasks: Vec<Task> = s
                .tasks
                .values()
                .filter(|t| t.service == format!("s{svc}") && t.node.is_some())
                .filter(|t| t.desired == Desired::Running && !t.state.is_terminal())
                .cloned()
                .collect();
            for (k, t) in tasks.into_iter().enumerate() {
                let ips = t
                    .ips
                    .keys()
                    .cloned()
                    .chain([network::local_key("app", "default")])
                    .chain((svc == &1).then(|| network::local_key("app", "back")))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .enumerate()
                    .map(|(n, key)| (key, IpAddr::from([10, 208, n as u8, 2 + k as u8])))
                    .collect();
                s.apply(&Command::TaskStatus {
                    node: t.node.clone().unwrap_or_default(),
                    updates: vec![TaskUpdate {
                        task: t.id.clone(),
                        state,
                        container_id: format!("c-{}", t.id),
                        exit_code: (state == TaskState::Failed).then_some(1),
                        error: String::new(),
                        ip: None,
                        ips,
                    }],
                    now_ms: now,
                });
            }
        }
        Step::Flip(n) => flip(s, &format!("n{n}"), now),
        Step::Remove => {
            s.apply(&Command::RemoveStack {
                stack: "app".into(),
                volumes: false,
            });
        }
        Step::Settle => settle(s, now),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn shared_views_equal_each_node_s_own_and_keep_what_did_not_change(
        steps in prop::collection::vec(step(), 1..24),
    ) {
        let nodes = (0..4).map(|i| {
            let mut n = node(&format!("n{i}"), 8.0, 8192);
            n.address = format!("192.168.1.{}", 10 + i);
            n
        }).collect();
        let mut s = deployed(nodes, Vec::new());
        let mut previous = Views::default();
        for (i, st) in steps.iter().enumerate() {
            let now = 1_000 * (i as u64 + 1);
            apply(&mut s, st, now);
            let views = Views::compute(&s, i as u64 + 1, &previous);
            // A change that takes an address away from a name or a port is marked as one
            // (sessions send it at once); one that only adds is not.
            if let Some(name) = s.nodes.keys().next() {
                let before = previous.node(name).map(|v| v.mesh.full(name));
                let after = reference_mesh(&s, name);
                if let Some(before) = before {
                    let lost = before.names.iter().any(|(k, ips)| match after.names.get(k) {
                        Some(now) => ips.iter().any(|ip| !now.contains(ip)),
                        None => true,
                    }) || before.ports.iter().any(|p| {
                        !after.ports.iter().any(|q| {
                            q.published == p.published && p.ips.iter().all(|ip| q.ips.contains(ip))
                        })
                    });
                    // The rest of the shared part: an entry gone or changed takes away.
                    let (old, new) = (
                        previous.node(name).expect("a view").mesh.shared.clone(),
                        views.node(name).expect("a view").mesh.shared.clone(),
                    );
                    let rest_lost = old.nodes.iter().any(|n| !new.nodes.contains(n))
                        || old.pool != new.pool
                        || old.routes.iter().any(|(k, v)| new.routes.get(k) != Some(v))
                        || old.peers.iter().any(|(k, list)| {
                            list.iter().any(|p| !new.peers.get(k).is_some_and(|l| l.contains(p)))
                        })
                        || old.internal != new.internal;
                    if lost || rest_lost {
                        prop_assert_eq!(views.removal_epoch, views.shared_epoch, "a loss is marked");
                    } else if views.shared_epoch != previous.shared_epoch {
                        prop_assert!(
                            views.removal_epoch < views.shared_epoch,
                            "a change that only adds is not marked as a loss"
                        );
                    }
                }
            }
            for name in s.nodes.keys() {
                let view = views.node(name).expect("every node has a view");
                prop_assert_eq!(&view.assignments, &reference_assignments(&s, name));
                prop_assert_eq!(view.mesh.full(name), reference_mesh(&s, name));
                prop_assert_eq!(&view.removals, &s.volumes_to_remove(name));
                if let Some(old) = previous.node(name) {
                    prop_assert_eq!(Arc::ptr_eq(&old, &view), *old == *view);
                }
            }
            previous = views;
        }
    }
}
