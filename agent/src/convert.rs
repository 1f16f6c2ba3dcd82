//! Wire types (prost) to and from the agent's domain types. The only module that names
//! `shoal_proto::pb` message types besides the session's transport code.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use shoal_proto::pb;
use shoal_proto::spec::ServiceSpec;
use shoal_proto::task::Desired;

use crate::gpu::GpuDevice;
use crate::model::{
    Assignment, AssignmentSet, ControllerEvent, LogChunk, LogRequest, Mesh, MeshChange, MeshPort,
    NameChange, SetDelta, SetUpdate, Subnet, TaskReport, TransferDirection, TransferDone,
    VolumeMount, VolumeSeen, VolumeTransfer,
};
use crate::runtime::TaskIdentity;

/// An assignment the agent cannot act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid assignment of task {task_id}: {reason}")]
pub struct InvalidAssignment {
    pub task_id: String,
    pub reason: String,
}

impl TryFrom<pb::Assignment> for Assignment {
    type Error = InvalidAssignment;

    fn try_from(a: pb::Assignment) -> Result<Assignment, InvalidAssignment> {
        let invalid = |reason: String| InvalidAssignment {
            task_id: a.task_id.clone(),
            reason,
        };
        let desired = Desired::parse(&a.desired)
            .ok_or_else(|| invalid(format!("unknown desired state {:?}", a.desired)))?;
        let spec: ServiceSpec = serde_json::from_slice(&a.spec_json)
            .map_err(|e| invalid(format!("service spec: {e}")))?;
        Ok(Assignment {
            task: TaskIdentity {
                task_id: a.task_id.clone(),
                stack: a.stack.clone(),
                service: a.service.clone(),
                slot: a.slot,
                generation: a.generation,
            },
            desired,
            ended: a.ended,
            spec: Arc::new(spec),
            gpus: a.gpus.clone(),
            secrets: a.secrets.into_iter().map(Into::into).collect(),
            volumes: a.volumes.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<pb::VolumeMount> for VolumeMount {
    fn from(v: pb::VolumeMount) -> VolumeMount {
        VolumeMount {
            name: v.name,
            docker_name: v.docker_name,
            external: v.external,
            driver: (!v.driver.is_empty()).then_some(v.driver),
            driver_opts: v.driver_opts.into_iter().collect(),
            labels: v.labels.into_iter().collect(),
        }
    }
}

impl TryFrom<pb::VolumeTransfer> for VolumeTransfer {
    type Error = String;

    fn try_from(t: pb::VolumeTransfer) -> Result<VolumeTransfer, String> {
        let direction = match t.direction.as_str() {
            "export" => TransferDirection::Export,
            "import" => TransferDirection::Import,
            "standby" => TransferDirection::Standby,
            other => return Err(format!("unknown transfer direction {other:?}")),
        };
        if t.docker_name.is_empty() {
            return Err("the transfer names no volume".to_string());
        }
        Ok(VolumeTransfer {
            transfer_id: t.transfer_id,
            direction,
            docker_name: t.docker_name,
            stack: t.stack,
            name: t.name,
            sha256: (!t.sha256.is_empty()).then_some(t.sha256),
            freeze: t.freeze,
        })
    }
}

/// The node's shoal volumes.
pub fn volume_report_message(volumes: &[VolumeSeen]) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Volumes(pb::VolumeReport {
            volumes: volumes
                .iter()
                .map(|v| pb::VolumeSeen {
                    docker_name: v.docker_name.clone(),
                    stack: v.stack.clone(),
                    name: v.name.clone(),
                    size_bytes: v.size_bytes,
                    created_ms: v.created_ms,
                })
                .collect(),
        })),
    }
}

pub fn transfer_done_message(d: &TransferDone) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::TransferDone(
            pb::VolumeTransferDone {
                transfer_id: d.transfer_id,
                error: d.error.clone().unwrap_or_default(),
                bytes: d.bytes,
                sha256: d.sha256.clone(),
                frozen_ms: d.frozen_ms,
            },
        )),
    }
}

/// The assignment set, plus the tasks that could not be understood (they are left out of
/// the set, so their containers are not kept; the caller reports them failed).
pub fn assignments_from_pb(msg: pb::Assignments) -> (AssignmentSet, Vec<InvalidAssignment>) {
    let (tasks, invalid) = tasks_from_pb(msg.tasks);
    let mesh = msg.mesh.map(mesh_from_pb).unwrap_or_default();
    (
        AssignmentSet {
            version: msg.version,
            tasks,
            mesh: Arc::new(mesh),
            remove_volumes: msg.remove_volumes,
        },
        invalid,
    )
}

/// A set or a delta ([`pb::Assignments::base`]), plus the tasks that could not be
/// understood (left out, and a delta removes them, as a full set would not hold them).
pub fn set_update_from_pb(msg: pb::Assignments) -> (SetUpdate, Vec<InvalidAssignment>) {
    if msg.base == 0 {
        let (set, invalid) = assignments_from_pb(msg);
        return (SetUpdate::Full(set), invalid);
    }
    let (tasks, invalid) = tasks_from_pb(msg.tasks);
    let mut removed = msg.removed_tasks;
    removed.extend(invalid.iter().map(|bad| bad.task_id.clone()));
    let mesh = match (msg.mesh, msg.mesh_delta) {
        (Some(mesh), _) => MeshChange::Whole(mesh_from_pb(mesh)),
        (None, Some(delta)) => MeshChange::Names {
            names: delta
                .names
                .into_iter()
                .map(|n| NameChange {
                    key: (n.network, n.name.to_ascii_lowercase()),
                    added: n
                        .added
                        .iter()
                        .filter_map(|ip| parse("address", ip))
                        .collect(),
                    removed: n
                        .removed
                        .iter()
                        .filter_map(|ip| parse("address", ip))
                        .collect(),
                    gone: n.gone,
                })
                .collect(),
            ports: delta.ports_changed.then(|| ports_from_pb(&delta.ports)),
            members: delta
                .members_changed
                .then(|| members_from_pb(&delta.members)),
        },
        (None, None) => MeshChange::Same,
    };
    let delta = SetDelta {
        base: msg.base,
        version: msg.version,
        tasks,
        removed,
        mesh,
        remove_volumes: msg.remove_volumes,
    };
    (SetUpdate::Delta(delta), invalid)
}

/// The tasks by id, and those that could not be understood.
fn tasks_from_pb(
    list: Vec<pb::Assignment>,
) -> (BTreeMap<String, Assignment>, Vec<InvalidAssignment>) {
    let mut tasks = BTreeMap::new();
    let mut invalid = Vec::new();
    // Replicas of one service share a spec: parse each distinct spec once.
    let mut specs: HashMap<Vec<u8>, Arc<ServiceSpec>> = HashMap::new();
    for a in list {
        let cached = specs.get(&a.spec_json).cloned();
        let json = a.spec_json.clone();
        match Assignment::try_from(a) {
            Ok(mut assignment) => {
                match cached {
                    Some(spec) => assignment.spec = spec,
                    None => {
                        specs.insert(json, assignment.spec.clone());
                    }
                }
                tasks.insert(assignment.task.task_id.clone(), assignment);
            }
            Err(e) => invalid.push(e),
        }
    }
    (tasks, invalid)
}

/// A mesh entry parsed, or `None` with a warning.
fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Option<T> {
    let v = s.parse().ok();
    if v.is_none() {
        tracing::warn!(what, value = s, "ignoring a mesh entry that does not parse");
    }
    v
}

pub fn mesh_from_pb(m: pb::Mesh) -> Mesh {
    let ips =
        |v: &[String]| -> Vec<Ipv4Addr> { v.iter().filter_map(|s| parse("address", s)).collect() };
    Mesh {
        pool: (!m.pool.is_empty())
            .then(|| parse("pool", &m.pool))
            .flatten(),
        subnets: m
            .subnets
            .iter()
            .filter_map(|s| {
                let mine: Subnet = parse("subnet", &s.subnet)?;
                let peers = s.peers.iter().filter_map(|p| parse("subnet", p)).collect();
                Some((s.network.clone(), (mine, peers)))
            })
            .collect(),
        internal: m
            .subnets
            .iter()
            .filter(|s| s.internal)
            .map(|s| s.network.clone())
            .collect(),
        routes: m
            .routes
            .iter()
            .filter_map(|r| Some((parse("subnet", &r.subnet)?, parse("route", &r.via)?)))
            .collect(),
        nodes: ips(&m.nodes),
        names: m
            .names
            .iter()
            .map(|n| {
                (
                    (n.network.clone(), n.name.to_ascii_lowercase()),
                    ips(&n.ips),
                )
            })
            .collect(),
        members: members_from_pb(&m.members),
        ports: ports_from_pb(&m.ports),
    }
}

fn members_from_pb(members: &[pb::DnsMember]) -> BTreeMap<Ipv4Addr, Vec<String>> {
    members
        .iter()
        .filter_map(|d| Some((parse("address", &d.ip)?, d.networks.clone())))
        .collect()
}

fn ports_from_pb(ports: &[pb::MeshPort]) -> Vec<MeshPort> {
    let ips =
        |v: &[String]| -> Vec<Ipv4Addr> { v.iter().filter_map(|s| parse("address", s)).collect() };
    ports
        .iter()
        .filter_map(|p| {
            Some(MeshPort {
                published: u16::try_from(p.published).ok()?,
                target: u16::try_from(p.target).ok()?,
                protocol: if p.protocol == "udp" {
                    shoal_proto::spec::Protocol::Udp
                } else {
                    shoal_proto::spec::Protocol::Tcp
                },
                host_ip: (!p.host_ip.is_empty())
                    .then(|| parse("host ip", &p.host_ip))
                    .flatten(),
                ips: ips(&p.ips),
            })
        })
        .collect()
}

impl From<pb::LogRequest> for LogRequest {
    fn from(r: pb::LogRequest) -> LogRequest {
        LogRequest {
            request_id: r.request_id,
            task_ids: r.task_ids,
            follow: r.follow,
            tail: u64::try_from(r.tail).ok(),
        }
    }
}

/// A controller message in the agent's words; `Err` lists assignments it could not use.
pub fn controller_event(
    msg: pb::ControllerMessage,
) -> Option<(ControllerEvent, Vec<InvalidAssignment>)> {
    use pb::controller_message::Msg;
    Some(match msg.msg? {
        Msg::Assignments(a) => {
            let (update, invalid) = set_update_from_pb(a);
            (ControllerEvent::Assignments(update), invalid)
        }
        Msg::LogRequest(r) => (ControllerEvent::Logs(r.into()), Vec::new()),
        Msg::LogCancel(c) => (ControllerEvent::CancelLogs(c.request_id), Vec::new()),
        // Only says the controller is there; the session notes that on any message.
        Msg::HeartbeatAck(_) => return None,
        Msg::VolumeTransfer(t) => {
            let transfer_id = t.transfer_id;
            let event = match VolumeTransfer::try_from(t) {
                Ok(t) => ControllerEvent::VolumeTransfer(t),
                Err(error) => ControllerEvent::InvalidTransfer { transfer_id, error },
            };
            (event, Vec::new())
        }
    })
}

impl From<&TaskReport> for pb::TaskStatus {
    fn from(r: &TaskReport) -> pb::TaskStatus {
        pb::TaskStatus {
            task_id: r.task_id.clone(),
            state: r.state.as_str().to_string(),
            container_id: r.container_id.clone().unwrap_or_default(),
            has_exit_code: r.exit_code.is_some(),
            exit_code: r.exit_code.unwrap_or(0),
            error: r.error.clone().unwrap_or_default(),
            ip: r.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            ips: r
                .ips
                .iter()
                .map(|(network, ip)| pb::NetworkAddress {
                    network: network.clone(),
                    ip: ip.to_string(),
                })
                .collect(),
        }
    }
}

pub fn status_message(r: &TaskReport) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Status(r.into())),
    }
}

pub fn log_message(c: LogChunk) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Log(pb::LogChunk {
            request_id: c.request_id,
            task_id: c.task_id,
            data: c.data.to_vec(),
            stderr: c.stderr,
            eof: c.eof,
            error: c.error.unwrap_or_default(),
        })),
    }
}

/// A heartbeat, with the figures of the GPUs that have any.
pub fn heartbeat_message(seq: u64, gpus: &[GpuDevice]) -> pb::AgentMessage {
    let gpus = gpus
        .iter()
        .filter(|g| g.utilization_percent.is_some() || g.memory_used_bytes.is_some())
        .map(|g| pb::GpuUsage {
            uuid: g.uuid.clone(),
            utilization_percent: g.utilization_percent,
            memory_used_bytes: g.memory_used_bytes,
        })
        .collect();
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
            seq,
            gpus,
        })),
    }
}

/// What the agent tells a controller when its session opens.
#[derive(Debug, Clone, PartialEq)]
pub struct HelloInfo {
    pub name: String,
    pub address: String,
    pub cpus: f64,
    pub memory_bytes: i64,
    pub labels: BTreeMap<String, String>,
    pub observed: Vec<TaskReport>,
    pub gpus: Vec<GpuDevice>,
    /// The node's device paths ([`crate::devices::scan`]), sorted.
    pub devices: Vec<String>,
    /// Docker's `os/arch[/variant]` ([`crate::devices::platform`]).
    pub platform: String,
    /// What overlaps the cluster's pool on the node ([`crate::net::conflicts`]).
    pub conflicts: Vec<String>,
}

impl From<&GpuDevice> for pb::GpuDevice {
    fn from(g: &GpuDevice) -> pb::GpuDevice {
        pb::GpuDevice {
            uuid: g.uuid.clone(),
            index: g.index,
            model: g.model.clone(),
            memory_bytes: g.memory_bytes,
        }
    }
}

/// The node's GPUs changed: the full new set.
pub fn gpu_report_message(gpus: &[GpuDevice]) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Gpus(pb::GpuReport {
            gpus: gpus.iter().map(Into::into).collect(),
        })),
    }
}

/// The node's device paths changed: the full new set.
pub fn device_report_message(paths: &[String]) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Devices(pb::DeviceReport {
            paths: paths.to_vec(),
        })),
    }
}

pub fn hello_message(h: &HelloInfo) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            name: h.name.clone(),
            address: h.address.clone(),
            cpus: h.cpus,
            memory_bytes: h.memory_bytes,
            labels: h.labels.clone().into_iter().collect(),
            observed: h.observed.iter().map(Into::into).collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            gpus: h.gpus.iter().map(Into::into).collect(),
            devices: h.devices.clone(),
            platform: h.platform.clone(),
            conflicts: h.conflicts.clone(),
            deltas: true,
            member_deltas: true,
        })),
    }
}

/// What overlaps the cluster's pool on the node changed: the full new list.
pub fn conflict_report_message(conflicts: &[String]) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Conflicts(pb::ConflictReport {
            conflicts: conflicts.to_vec(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::task::TaskState;

    fn pb_assignment(id: &str, desired: &str, spec: &[u8]) -> pb::Assignment {
        pb::Assignment {
            task_id: id.into(),
            stack: "s".into(),
            service: "web".into(),
            slot: 1,
            desired: desired.into(),
            generation: 3,
            spec_json: spec.to_vec(),
            ended: false,
            gpus: Vec::new(),
            secrets: Vec::new(),
            volumes: Vec::new(),
        }
    }

    #[test]
    fn assignments_parse_specs_and_set_aside_invalid_ones() {
        let spec = br#"{"name":"web","image":"busybox"}"#;
        let (set, invalid) = assignments_from_pb(pb::Assignments {
            version: 9,
            mesh: None,
            remove_volumes: vec!["s_old".into()],
            tasks: vec![
                pb_assignment("a", "running", spec),
                pb_assignment("b", "shutdown", spec),
                pb_assignment("c", "paused", spec),
                pb_assignment("d", "running", b"{not json"),
            ],
            ..Default::default()
        });
        assert_eq!(set.version, 9);
        assert_eq!(set.remove_volumes, vec!["s_old".to_string()]);
        assert_eq!(set.tasks.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(set.tasks["a"].spec.image, "busybox");
        assert_eq!(set.tasks["b"].desired, Desired::Shutdown);
        assert_eq!(set.tasks["a"].task.generation, 3);
        assert!(Arc::ptr_eq(&set.tasks["a"].spec, &set.tasks["b"].spec));
        let ids: Vec<_> = invalid.iter().map(|i| i.task_id.as_str()).collect();
        assert_eq!(ids, vec!["c", "d"]);
    }

    #[test]
    fn volume_mounts_and_transfers_convert() {
        let mut a = pb_assignment("a", "running", br#"{"name":"web","image":"busybox"}"#);
        a.volumes = vec![pb::VolumeMount {
            name: "data".into(),
            docker_name: "s_data".into(),
            external: false,
            driver: String::new(),
            driver_opts: [("type".to_string(), "tmpfs".to_string())].into(),
            labels: [("team".to_string(), "db".to_string())].into(),
        }];
        let a = Assignment::try_from(a).unwrap();
        assert_eq!(
            a.volumes,
            vec![VolumeMount {
                name: "data".into(),
                docker_name: "s_data".into(),
                external: false,
                driver: None,
                driver_opts: [("type".to_string(), "tmpfs".to_string())].into(),
                labels: [("team".to_string(), "db".to_string())].into(),
            }]
        );
        let transfer = |direction: &str| pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::VolumeTransfer(
                pb::VolumeTransfer {
                    transfer_id: 4,
                    direction: direction.into(),
                    docker_name: "s_data".into(),
                    stack: "s".into(),
                    name: "data".into(),
                    ..Default::default()
                },
            )),
        };
        let (event, _) = controller_event(transfer("import")).unwrap();
        assert_eq!(
            event,
            ControllerEvent::VolumeTransfer(VolumeTransfer {
                transfer_id: 4,
                direction: TransferDirection::Import,
                docker_name: "s_data".into(),
                stack: "s".into(),
                name: "data".into(),
                sha256: None,
                freeze: false,
            })
        );
        let (event, _) = controller_event(transfer("standby")).unwrap();
        assert!(matches!(
            event,
            ControllerEvent::VolumeTransfer(VolumeTransfer {
                direction: TransferDirection::Standby,
                ..
            })
        ));
        let (event, _) = controller_event(transfer("sideways")).unwrap();
        assert!(matches!(
            event,
            ControllerEvent::InvalidTransfer { transfer_id: 4, .. }
        ));
    }

    #[test]
    fn reports_become_task_status() {
        let r = TaskReport::new("t", TaskState::Failed)
            .container(Some("c1"))
            .exit_code(3)
            .error("exited with code 3");
        let s = pb::TaskStatus::from(&r);
        assert_eq!(s.state, "failed");
        assert!(s.has_exit_code);
        assert_eq!(s.exit_code, 3);
        assert_eq!(s.container_id, "c1");
        assert_eq!(s.error, "exited with code 3");
    }

    #[test]
    fn negative_tail_means_everything() {
        let r = LogRequest::from(pb::LogRequest {
            request_id: 1,
            task_ids: vec!["t".into()],
            follow: true,
            tail: -1,
        });
        assert_eq!(r.tail, None);
    }

    #[test]
    fn the_mesh_parses_and_drops_entries_that_do_not() {
        let m = mesh_from_pb(pb::Mesh {
            pool: "10.208.0.0/12".into(),
            subnets: vec![pb::StackSubnet {
                network: "shop".into(),
                subnet: "10.208.1.0/24".into(),
                peers: vec!["10.208.0.0/24".into(), "bad".into()],
                internal: true,
            }],
            routes: vec![
                pb::SubnetRoute {
                    subnet: "10.208.0.0/24".into(),
                    via: "10.77.7.12".into(),
                },
                pb::SubnetRoute {
                    subnet: "10.208.2.0/24".into(),
                    via: "not-an-ip".into(),
                },
            ],
            names: vec![pb::DnsName {
                network: "shop".into(),
                name: "DB".into(),
                ips: vec!["10.208.0.2".into()],
            }],
            ports: vec![
                pb::MeshPort {
                    published: 8080,
                    target: 80,
                    ips: vec!["10.208.0.3".into()],
                    host_ip: String::new(),
                    protocol: "udp".into(),
                },
                pb::MeshPort {
                    published: 70000,
                    target: 80,
                    ips: vec![],
                    host_ip: String::new(),
                    protocol: String::new(),
                },
            ],
            nodes: vec!["10.77.7.11".into()],
            members: vec![
                pb::DnsMember {
                    ip: "10.208.1.2".into(),
                    networks: vec!["shop".into(), "ext:shared".into()],
                },
                pb::DnsMember {
                    ip: "nope".into(),
                    networks: vec![],
                },
            ],
        });
        let s = |x: &str| x.parse::<Subnet>().unwrap();
        let ip = |x: &str| x.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            m,
            Mesh {
                pool: Some(s("10.208.0.0/12")),
                subnets: [(
                    "shop".to_string(),
                    (s("10.208.1.0/24"), vec![s("10.208.0.0/24")])
                )]
                .into_iter()
                .collect(),
                internal: ["shop".to_string()].into_iter().collect(),
                members: [(
                    ip("10.208.1.2"),
                    vec!["shop".to_string(), "ext:shared".to_string()]
                )]
                .into_iter()
                .collect(),
                routes: [(s("10.208.0.0/24"), ip("10.77.7.12"))]
                    .into_iter()
                    .collect(),
                nodes: vec![ip("10.77.7.11")],
                names: [(
                    ("shop".to_string(), "db".to_string()),
                    vec![ip("10.208.0.2")]
                )]
                .into_iter()
                .collect(),
                ports: vec![MeshPort {
                    published: 8080,
                    target: 80,
                    protocol: shoal_proto::spec::Protocol::Udp,
                    host_ip: None,
                    ips: vec![ip("10.208.0.3")],
                }],
            }
        );
    }
}
