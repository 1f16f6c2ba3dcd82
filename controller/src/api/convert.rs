//! Conversions between prost messages and the controller's domain types. The only place
//! in the controller that builds or reads wire structs field by field.

use shoal_proto::pb;
use shoal_proto::spec::ServiceSpec;
use shoal_proto::task::TaskState;

use crate::assignments::NodeAssignment;
use crate::state::{Availability, ClusterState, Gpu, Node, NodeStatus, Service, Task, TaskUpdate};

/// A wire message that does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what}: {why}")]
pub struct Invalid {
    pub what: &'static str,
    pub why: String,
}

impl From<Invalid> for tonic::Status {
    fn from(e: Invalid) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

impl TryFrom<&pb::TaskStatus> for TaskUpdate {
    type Error = Invalid;

    fn try_from(s: &pb::TaskStatus) -> Result<Self, Invalid> {
        let state = TaskState::parse(&s.state).ok_or_else(|| Invalid {
            what: "task status",
            why: format!("unknown state {:?} for task {}", s.state, s.task_id),
        })?;
        Ok(TaskUpdate {
            task: s.task_id.clone(),
            state,
            container_id: s.container_id.clone(),
            exit_code: s.has_exit_code.then_some(s.exit_code),
            error: s.error.clone(),
            ip: if s.ip.is_empty() {
                None
            } else {
                Some(s.ip.parse().map_err(|_| Invalid {
                    what: "task status",
                    why: format!("bad container address {:?} for task {}", s.ip, s.task_id),
                })?)
            },
            ips: s
                .ips
                .iter()
                .map(|a| {
                    let ip = a.ip.parse().map_err(|_| Invalid {
                        what: "task status",
                        why: format!(
                            "bad container address {:?} on network {} for task {}",
                            a.ip, a.network, s.task_id
                        ),
                    })?;
                    Ok((a.network.clone(), ip))
                })
                .collect::<Result<_, Invalid>>()?,
        })
    }
}

/// The node an agent describes in its hello.
pub fn node_from_hello(h: &pb::Hello) -> Result<Node, Invalid> {
    if h.name.is_empty() {
        return Err(Invalid {
            what: "hello",
            why: "the agent sent no node name".into(),
        });
    }
    Ok(Node {
        id: h.name.clone(),
        address: h.address.clone(),
        nano_cpus: (h.cpus * 1e9) as i64,
        memory_bytes: h.memory_bytes,
        labels: h.labels.clone().into_iter().collect(),
        status: NodeStatus::Ready,
        availability: Availability::Active,
        gpus: gpus_from_pb(&h.gpus)?,
        devices: h.devices.iter().cloned().collect(),
        platform: h.platform.clone(),
        // Decided by the leader from the controllers' addresses (`agent_session`).
        manager: false,
        conflicts: h.conflicts.clone(),
    })
}

/// GPUs as an agent reports them (hello or rediscovery), by index; UUIDs must be
/// present and distinct, since the scheduler hands GPUs out by UUID.
pub fn gpus_from_pb(list: &[pb::GpuDevice]) -> Result<Vec<Gpu>, Invalid> {
    let mut out: Vec<Gpu> = Vec::with_capacity(list.len());
    for g in list {
        if g.uuid.is_empty() {
            return Err(Invalid {
                what: "GPU list",
                why: format!("GPU {} has no UUID", g.index),
            });
        }
        if out.iter().any(|o| o.uuid == g.uuid) {
            return Err(Invalid {
                what: "GPU list",
                why: format!("GPU {} is listed twice", g.uuid),
            });
        }
        out.push(Gpu {
            uuid: g.uuid.clone(),
            index: g.index,
            model: g.model.clone(),
            memory_bytes: g.memory_bytes,
        });
    }
    out.sort_by(|a, b| (a.index, &a.uuid).cmp(&(b.index, &b.uuid)));
    Ok(out)
}

/// An agent's volume report, in the state's terms.
pub fn volumes_seen(r: &pb::VolumeReport) -> Vec<crate::state::VolumeSeen> {
    r.volumes
        .iter()
        .map(|v| crate::state::VolumeSeen {
            docker_name: v.docker_name.clone(),
            stack: v.stack.clone(),
            name: v.name.clone(),
            size_bytes: u64::try_from(v.size_bytes).ok(),
            created_ms: v.created_ms,
        })
        .collect()
}

pub fn assignments(version: u64, list: &[NodeAssignment]) -> pb::Assignments {
    pb::Assignments {
        version,
        tasks: assignment_list(list.iter()),
        ..Default::default()
    }
}

/// The delta from the set `old` (sent as version `base`) to `new`: the tasks added or
/// changed, and the ids of those gone, in `new`'s order. The mesh and the volumes to
/// remove are the caller's.
pub fn assignments_delta(
    base: u64,
    version: u64,
    old: &[NodeAssignment],
    new: &[NodeAssignment],
) -> pb::Assignments {
    let before: std::collections::HashMap<&str, &NodeAssignment> =
        old.iter().map(|a| (a.task_id.as_str(), a)).collect();
    let now: std::collections::HashSet<&str> = new.iter().map(|a| a.task_id.as_str()).collect();
    pb::Assignments {
        version,
        base,
        tasks: assignment_list(
            new.iter()
                .filter(|a| before.get(a.task_id.as_str()).is_none_or(|b| *b != *a)),
        ),
        removed_tasks: old
            .iter()
            .filter(|a| !now.contains(a.task_id.as_str()))
            .map(|a| a.task_id.clone())
            .collect(),
        ..Default::default()
    }
}

fn assignment_list<'a>(list: impl Iterator<Item = &'a NodeAssignment>) -> Vec<pb::Assignment> {
    // A service's tasks share its spec: encoded once.
    let mut encoded: std::collections::HashMap<*const ServiceSpec, Vec<u8>> = Default::default();
    list.map(|a| pb::Assignment {
        task_id: a.task_id.clone(),
        stack: a.stack.clone(),
        service: a.service.clone(),
        slot: a.slot,
        desired: a.desired.as_str().to_string(),
        generation: a.generation,
        spec_json: encoded
            .entry(std::sync::Arc::as_ptr(&a.spec))
            .or_insert_with(|| serde_json::to_vec(&*a.spec).unwrap_or_default())
            .clone(),
        ended: a.ended,
        gpus: a.gpus.clone(),
        secrets: Vec::new(),
        volumes: a
            .volumes
            .iter()
            .map(|(name, v)| pb::VolumeMount {
                name: name.clone(),
                docker_name: v.docker_name(&a.stack, name),
                external: v.external,
                driver: v.driver.clone().unwrap_or_default(),
                driver_opts: v.driver_opts.clone().into_iter().collect(),
                labels: v.labels.clone().into_iter().collect(),
            })
            .collect(),
    })
    .collect()
}

pub fn task_row(t: &Task, svc: Option<&Service>) -> pb::TaskRow {
    pb::TaskRow {
        id: t.id.clone(),
        stack: t.stack.clone(),
        service: t.service.clone(),
        slot: t.slot,
        node: t.node.clone().unwrap_or_default(),
        desired: t.desired.as_str().to_string(),
        state: t.state.as_str().to_string(),
        container: t.container_id.clone(),
        image: if t.image.is_empty() {
            svc.map(|s| s.spec.image.clone()).unwrap_or_default()
        } else {
            t.image.clone()
        },
        error: t.error.clone(),
        generation: t.generation,
        has_exit_code: t.exit_code.is_some(),
        exit_code: t.exit_code.unwrap_or_default(),
        has_healthcheck: svc.is_some_and(|s| s.spec.has_healthcheck()),
        updated_at_ms: t.updated_at_ms as i64,
        gpus: t.gpus.clone(),
    }
}

/// How long a task may stay `assigned` (its agent has not said `starting`) before `ps`
/// says so: an agent acts on an assignment within a second when it is connected.
pub const STALLED_AFTER_MS: u64 = 10_000;

/// Why an assigned task has not started, when it has been assigned for longer than
/// [`STALLED_AFTER_MS`] with nothing said about it: never silently stuck.
pub fn stalled(t: &Task, now_ms: u64) -> Option<String> {
    if t.state != shoal_proto::task::TaskState::Assigned || !t.error.is_empty() {
        return None;
    }
    let waited = now_ms.saturating_sub(t.updated_at_ms);
    (waited > STALLED_AFTER_MS).then(|| {
        format!(
            "assigned to {} {} s ago and not started by its agent yet: check the node with `shoal nodes` and its agent's log",
            t.node.as_deref().unwrap_or("a node"),
            waited / 1000
        )
    })
}

pub fn service_row(state: &ClusterState, svc: &Service) -> pb::ServiceRow {
    let current = state
        .tasks
        .values()
        .filter(|t| t.stack == svc.stack && t.service == svc.name)
        .filter(|t| t.desired == shoal_proto::task::Desired::Running);
    let (mut running, mut healthy) = (0, 0);
    for t in current {
        if t.state.is_up() {
            running += 1;
        }
        // Without a healthcheck, a running replica is as healthy as it can be.
        if t.state == TaskState::Healthy || (!svc.spec.has_healthcheck() && t.state.is_up()) {
            healthy += 1;
        }
    }
    pb::ServiceRow {
        stack: svc.stack.clone(),
        name: svc.name.clone(),
        image: svc.spec.image.clone(),
        mode: svc.spec.mode.as_str().to_string(),
        desired: if svc.removing {
            0
        } else {
            crate::reconciler::desired_replicas(state, svc)
        },
        running,
        healthy,
        generation: svc.generation,
        has_healthcheck: svc.spec.has_healthcheck(),
        rollout: {
            let tasks: Vec<&Task> = state
                .tasks
                .values()
                .filter(|t| t.stack == svc.stack && t.service == svc.name)
                .collect();
            svc.rollout_state(crate::reconciler::rollout_paused(svc, &tasks).as_deref())
        },
        previous_generation: if svc.previous.is_some() {
            svc.generation - 1
        } else {
            0
        },
        autoscale: svc.spec.autoscale.as_ref().map(|a| pb::AutoscaleRow {
            min: a.min,
            max: a.max,
            desired: svc.replicas,
            cause: svc
                .autoscaled
                .as_ref()
                .map(|d| d.cause.clone())
                .unwrap_or_default(),
            readings: Vec::new(),
            changed_ms: svc.autoscaled.as_ref().map_or(0, |d| d.at_ms),
        }),
    }
}

/// A node with its GPUs; `assigned_to` is the live task holding each GPU.
pub fn node_row(state: &ClusterState, n: &Node) -> pb::NodeRow {
    let holders: std::collections::BTreeMap<&str, &str> = state
        .tasks
        .values()
        .filter(|t| t.node.as_deref() == Some(n.id.as_str()) && !t.state.is_terminal())
        .flat_map(|t| t.gpus.iter().map(|g| (g.as_str(), t.id.as_str())))
        .collect();
    pb::NodeRow {
        id: n.id.clone(),
        name: n.id.clone(),
        address: n.address.clone(),
        status: n.status.as_str().to_string(),
        availability: n.availability.as_str().to_string(),
        labels: n.labels.clone().into_iter().collect(),
        cpus: n.nano_cpus as f64 / 1e9,
        memory_bytes: n.memory_bytes,
        gpus: n
            .gpus
            .iter()
            .map(|g| pb::GpuRow {
                uuid: g.uuid.clone(),
                index: g.index,
                model: g.model.clone(),
                memory_bytes: i64::try_from(g.memory_bytes).unwrap_or(i64::MAX),
                assigned_to: holders.get(g.uuid.as_str()).unwrap_or(&"").to_string(),
                utilization_percent: None,
                memory_used_bytes: None,
            })
            .collect(),
        conflicts: n.conflicts.clone(),
    }
}

/// The node's part of the cluster network, for its assignment stream.
pub fn mesh(m: &crate::endpoints::NodeMesh) -> pb::Mesh {
    let strings = |ips: &[std::net::IpAddr]| ips.iter().map(|ip| ip.to_string()).collect();
    pb::Mesh {
        pool: m.pool.clone(),
        subnets: m
            .subnets
            .iter()
            .map(|(network, (subnet, peers))| pb::StackSubnet {
                network: network.clone(),
                subnet: subnet.clone(),
                peers: peers.clone(),
                internal: m.internal.contains(network),
            })
            .collect(),
        routes: m
            .routes
            .iter()
            .map(|(subnet, via)| pb::SubnetRoute {
                subnet: subnet.clone(),
                via: via.to_string(),
            })
            .collect(),
        names: m
            .names
            .iter()
            .map(|((network, name), ips)| pb::DnsName {
                network: network.clone(),
                name: name.clone(),
                ips: strings(ips),
            })
            .collect(),
        ports: mesh_ports(&m.ports),
        nodes: strings(&m.nodes),
        members: members(&m.members),
    }
}

/// A node's containers' addresses and their networks, for the wire.
fn members(m: &std::collections::BTreeMap<std::net::IpAddr, Vec<String>>) -> Vec<pb::DnsMember> {
    m.iter()
        .map(|(ip, networks)| pb::DnsMember {
            ip: ip.to_string(),
            networks: networks.clone(),
        })
        .collect()
}

fn mesh_ports(ports: &[crate::endpoints::MeshPort]) -> Vec<pb::MeshPort> {
    ports
        .iter()
        .map(|p| pb::MeshPort {
            published: p.published.into(),
            target: p.target.into(),
            ips: p.ips.iter().map(|ip| ip.to_string()).collect(),
            host_ip: p.host_ip.clone().unwrap_or_default(),
            protocol: match p.protocol {
                shoal_proto::spec::Protocol::Tcp => "tcp",
                shoal_proto::spec::Protocol::Udp => "udp",
            }
            .to_string(),
        })
        .collect()
}

/// The message that brings an agent from `last` (the view it was sent, as version
/// `base`) to `view`: the whole set when there is no `last`, a delta otherwise (issue
/// 18). `shared_delta` gives the change of names and ports from an earlier shared mesh
/// to `view`'s ([`shared_mesh_delta`], shared by the sessions through
/// [`crate::views::Views::shared_delta`]). Secrets are the caller's.
pub fn view_message(
    node: &str,
    version: u64,
    view: &crate::views::NodeView,
    last: Option<(&crate::views::NodeView, u64)>,
    member_deltas: bool,
    shared_delta: impl FnOnce(
        &std::sync::Arc<crate::endpoints::SharedMesh>,
    ) -> Option<std::sync::Arc<pb::MeshDelta>>,
) -> pb::Assignments {
    let mut set = match last {
        None => assignments(version, &view.assignments),
        Some((last, base)) => {
            assignments_delta(base, version, &last.assignments, &view.assignments)
        }
    };
    set.mesh = match last {
        None => Some(mesh(&view.mesh.full(node))),
        Some((last, _)) => match mesh_change(&last.mesh, &view.mesh, member_deltas, shared_delta) {
            MeshSend::Nothing => None,
            MeshSend::Delta(delta) => {
                set.mesh_delta = Some(delta);
                None
            }
            MeshSend::Whole => Some(mesh(&view.mesh.full(node))),
        },
    };
    set.remove_volumes = view.removals.clone();
    set
}

/// How a session brings its agent's mesh up to date.
enum MeshSend {
    Nothing,
    Delta(pb::MeshDelta),
    Whole,
}

/// From `old` to `new`: a delta when only the names, the ports and (to an agent that
/// applies them, `member_deltas`) the node's own containers' addresses changed; those
/// change with every replica the node starts, and must not resend the whole mesh
/// (100,000 names at scale) each time.
fn mesh_change(
    old: &crate::endpoints::MeshView,
    new: &crate::endpoints::MeshView,
    member_deltas: bool,
    shared_delta: impl FnOnce(
        &std::sync::Arc<crate::endpoints::SharedMesh>,
    ) -> Option<std::sync::Arc<pb::MeshDelta>>,
) -> MeshSend {
    let same_shared = std::sync::Arc::ptr_eq(&old.shared, &new.shared);
    if same_shared && old.local == new.local {
        return MeshSend::Nothing;
    }
    let members_changed = old.local.members != new.local.members;
    if old.local.subnets != new.local.subnets || (members_changed && !member_deltas) {
        return MeshSend::Whole;
    }
    let delta = if same_shared {
        Some(pb::MeshDelta::default())
    } else {
        shared_delta(&old.shared).map(|d| (*d).clone())
    };
    let Some(mut delta) = delta else {
        return MeshSend::Whole;
    };
    if members_changed {
        delta.members_changed = true;
        delta.members = members(&new.local.members);
    }
    MeshSend::Delta(delta)
}

/// What changed from `old` to `new` in the names and ports, when nothing else of the
/// shared mesh did (pool, nodes, subnets, routes, `internal`); `None` when something
/// else did (the mesh is then sent whole).
pub fn shared_mesh_delta(
    old: &crate::endpoints::SharedMesh,
    new: &crate::endpoints::SharedMesh,
) -> Option<pb::MeshDelta> {
    if old.pool != new.pool
        || old.nodes != new.nodes
        || old.peers != new.peers
        || old.internal != new.internal
        || old.routes != new.routes
    {
        return None;
    }
    let mut names = Vec::new();
    let empty = Vec::new();
    let keys: std::collections::BTreeSet<&(String, String)> =
        old.names.keys().chain(new.names.keys()).collect();
    for key in keys {
        let before = old.names.get(key);
        let Some(after) = new.names.get(key) else {
            names.push(pb::DnsNameDelta {
                network: key.0.clone(),
                name: key.1.clone(),
                gone: true,
                ..Default::default()
            });
            continue;
        };
        if before == Some(after) {
            continue;
        }
        let (added, removed) = sorted_difference(before.unwrap_or(&empty), after);
        names.push(pb::DnsNameDelta {
            network: key.0.clone(),
            name: key.1.clone(),
            added,
            removed,
            gone: false,
        });
    }
    let ports_changed = old.ports != new.ports;
    Some(pb::MeshDelta {
        names,
        ports_changed,
        ports: if ports_changed {
            mesh_ports(&new.ports)
        } else {
            Vec::new()
        },
        ..Default::default()
    })
}

/// The addresses only in `after` and those only in `before`, both lists sorted.
fn sorted_difference(
    before: &[std::net::IpAddr],
    after: &[std::net::IpAddr],
) -> (Vec<String>, Vec<String>) {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut b, mut a) = (before.iter().peekable(), after.iter().peekable());
    loop {
        match (b.peek().copied(), a.peek().copied()) {
            (None, None) => break,
            (Some(x), Some(y)) if x == y => {
                b.next();
                a.next();
            }
            (Some(x), Some(y)) if x < y => {
                removed.push(x.to_string());
                b.next();
            }
            (Some(x), None) => {
                removed.push(x.to_string());
                b.next();
            }
            (_, Some(y)) => {
                added.push(y.to_string());
                a.next();
            }
        }
    }
    (added, removed)
}

/// A heartbeat's per-GPU figures, by UUID.
pub fn gpu_usage_from_pb(
    gpus: &[pb::GpuUsage],
) -> std::collections::HashMap<String, crate::liveness::GpuUsage> {
    gpus.iter()
        .map(|g| {
            (
                g.uuid.clone(),
                crate::liveness::GpuUsage {
                    utilization_percent: g.utilization_percent,
                    memory_used_bytes: g.memory_used_bytes,
                },
            )
        })
        .collect()
}
