//! The agent's own words for what the controller asks and what the agent reports.
//! [`crate::convert`] translates them from and to the wire types.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use shoal_proto::spec::ServiceSpec;
use shoal_proto::task::{Desired, TaskState};

pub use crate::net::Subnet;
use crate::runtime::TaskIdentity;

/// One task the controller assigned to this node.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub task: TaskIdentity,
    pub desired: Desired,
    /// The task ended: never (re)start it, whatever is left of its container.
    pub ended: bool,
    /// Shared: many replicas of one service carry the same spec.
    pub spec: Arc<ServiceSpec>,
    /// UUIDs of the GPUs the scheduler gave this task (empty: none).
    pub gpus: Vec<String>,
    /// Its secrets with their contents (only while it is to run).
    pub secrets: Vec<crate::secrets::SecretFile>,
    /// The named volumes its containers mount, made before its container.
    pub volumes: Vec<VolumeMount>,
}

/// A named volume of a task: created with shoal's labels before its container when
/// missing (unless external), and mounted by its engine name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeMount {
    /// The Compose name (the mount's source in the spec).
    pub name: String,
    /// The engine's name.
    pub docker_name: String,
    /// Made by someone else: never created (nor removed) by shoal.
    pub external: bool,
    /// `None`: the engine's default.
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// The full set of tasks assigned to this node; anything else must not run here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AssignmentSet {
    pub version: u64,
    /// By task id.
    pub tasks: BTreeMap<String, Assignment>,
    /// This node's part of the cluster network.
    pub mesh: Arc<Mesh>,
    /// Volumes (engine names) to remove from this node once no container uses them.
    pub remove_volumes: Vec<String>,
}

/// An assignment set as the controller sends it: whole (a session's first), or what
/// changed since the one the agent holds (issue 18).
#[derive(Debug, Clone, PartialEq)]
pub enum SetUpdate {
    Full(AssignmentSet),
    Delta(SetDelta),
}

/// What changed from the set of version `base` to the set of version `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct SetDelta {
    pub base: u64,
    pub version: u64,
    /// Tasks added or changed, by task id.
    pub tasks: BTreeMap<String, Assignment>,
    /// Tasks gone, and those sent that could not be understood.
    pub removed: Vec<String>,
    pub mesh: MeshChange,
    /// The full list, as in a set.
    pub remove_volumes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MeshChange {
    Same,
    Whole(Mesh),
    /// Only names, ports and the node's own containers' addresses changed.
    Names {
        names: Vec<NameChange>,
        /// The new list, whole, when it changed.
        ports: Option<Vec<MeshPort>>,
        /// The new [`Mesh::members`], whole, when it changed.
        members: Option<BTreeMap<Ipv4Addr, Vec<String>>>,
    },
}

/// A name of the mesh that appeared, changed or went.
#[derive(Debug, Clone, PartialEq)]
pub struct NameChange {
    /// (network, name), as in [`Mesh::names`].
    pub key: (String, String),
    pub added: Vec<Ipv4Addr>,
    pub removed: Vec<Ipv4Addr>,
    pub gone: bool,
}

impl AssignmentSet {
    /// This set brought to `delta`'s version; an error (and no change) when this is not
    /// the version the delta was computed against.
    pub fn apply(&mut self, delta: SetDelta) -> Result<(), String> {
        if delta.base != self.version {
            return Err(format!(
                "the controller sent a change to assignments version {}, but this agent holds \
                 version {}",
                delta.base, self.version
            ));
        }
        self.version = delta.version;
        for id in &delta.removed {
            self.tasks.remove(id);
        }
        self.tasks.extend(delta.tasks);
        match delta.mesh {
            MeshChange::Same => {}
            MeshChange::Whole(mesh) => self.mesh = Arc::new(mesh),
            MeshChange::Names {
                names,
                ports,
                members,
            } => {
                let mesh = Arc::make_mut(&mut self.mesh);
                for change in names {
                    if change.gone {
                        mesh.names.remove(&change.key);
                        continue;
                    }
                    let ips = mesh.names.entry(change.key).or_default();
                    if !change.removed.is_empty() {
                        // One occurrence each, in one pass (a name may hold 100,000).
                        let mut left: std::collections::HashMap<Ipv4Addr, usize> =
                            std::collections::HashMap::new();
                        for ip in change.removed {
                            *left.entry(ip).or_default() += 1;
                        }
                        ips.retain(|ip| match left.get_mut(ip) {
                            Some(n) if *n > 0 => {
                                *n -= 1;
                                false
                            }
                            _ => true,
                        });
                    }
                    ips.extend(change.added);
                    ips.sort();
                }
                if let Some(ports) = ports {
                    mesh.ports = ports;
                }
                if let Some(members) = members {
                    mesh.members = members;
                }
            }
        }
        self.remove_volumes = delta.remove_volumes;
        Ok(())
    }
}

/// What the controller says this node needs to reach the rest of the cluster
/// (see `shoal_controller::endpoints`). Empty on a cluster that sent none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mesh {
    /// The pool every stack subnet comes from.
    pub pool: Option<Subnet>,
    /// By network key (`shoal_proto::network`): this node's subnet, and all the
    /// network's subnets.
    pub subnets: BTreeMap<String, (Subnet, Vec<Subnet>)>,
    /// Networks of `subnets` that are `internal: true`: nothing leaves the pool from them.
    pub internal: BTreeSet<String>,
    /// Other nodes' subnets and the node to route each via.
    pub routes: BTreeMap<Subnet, Ipv4Addr>,
    /// Every node's address.
    pub nodes: Vec<Ipv4Addr>,
    /// By (network, name): the ready replicas' addresses on that network.
    pub names: BTreeMap<(String, String), Vec<Ipv4Addr>>,
    /// This node's containers' addresses, and the networks each container is on in
    /// attachment order: who asks the DNS server.
    pub members: BTreeMap<Ipv4Addr, Vec<String>>,
    pub ports: Vec<MeshPort>,
}

/// A published ingress TCP port and its ready replicas anywhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPort {
    pub published: u16,
    pub target: u16,
    pub protocol: shoal_proto::spec::Protocol,
    pub host_ip: Option<IpAddr>,
    pub ips: Vec<Ipv4Addr>,
}

/// An observed state of one task, as reported to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReport {
    pub task_id: String,
    pub state: TaskState,
    pub container_id: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    /// The container's address on its first network.
    pub ip: Option<IpAddr>,
    /// Its address on each of its networks, by network key.
    pub ips: BTreeMap<String, IpAddr>,
}

impl TaskReport {
    pub fn new(task_id: &str, state: TaskState) -> TaskReport {
        TaskReport {
            task_id: task_id.to_string(),
            state,
            container_id: None,
            exit_code: None,
            error: None,
            ip: None,
            ips: BTreeMap::new(),
        }
    }

    pub fn ip(mut self, ip: Option<IpAddr>) -> TaskReport {
        self.ip = ip;
        self
    }

    /// Its addresses by Docker network name, reported by network key.
    pub fn ips(mut self, by_docker_name: &BTreeMap<String, IpAddr>) -> TaskReport {
        self.ips = by_docker_name
            .iter()
            .map(|(name, ip)| (shoal_proto::network::key_of_docker_name(name), *ip))
            .collect();
        self
    }

    pub fn container(mut self, id: Option<&str>) -> TaskReport {
        self.container_id = id.map(str::to_string);
        self
    }

    pub fn error(mut self, error: impl Into<String>) -> TaskReport {
        self.error = Some(error.into());
        self
    }

    pub fn exit_code(mut self, code: i64) -> TaskReport {
        self.exit_code = Some(code);
        self
    }
}

/// The controller wants the output of some tasks' containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRequest {
    pub request_id: u64,
    pub task_ids: Vec<String>,
    pub follow: bool,
    /// `None`: everything.
    pub tail: Option<u64>,
}

/// One chunk of a task's output, tagged with the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub request_id: u64,
    pub task_id: String,
    pub data: bytes::Bytes,
    pub stderr: bool,
    /// The last chunk of this task for this request.
    pub eof: bool,
    pub error: Option<String>,
}

/// Which way a volume's contents go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferDirection {
    /// Tar the volume and upload it to the leader.
    Export,
    /// Download a tar stream from the leader into a new volume.
    Import,
    /// Download a tar stream from the leader into a fresh standby directory under the
    /// agent's data dir (not an engine volume), swapped in for the previous one only
    /// once complete and verified.
    Standby,
}

/// The controller asks this node to send or receive a volume's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeTransfer {
    pub transfer_id: u64,
    pub direction: TransferDirection,
    pub docker_name: String,
    pub stack: String,
    /// The Compose name.
    pub name: String,
    /// Import and standby: the SHA-256 (hex) the stream must have; `None`: the one on
    /// its last chunk.
    pub sha256: Option<String>,
    /// Export: a crash-consistent copy in two passes: the whole volume while its
    /// containers run, then, with the running containers that mount it paused, what
    /// changed since and the list of the paths present (see
    /// [`crate::volumes::archive::pack_frozen`]); resumed after.
    pub freeze: bool,
}

/// A transfer ended on this side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransferDone {
    pub transfer_id: u64,
    /// `None`: it succeeded.
    pub error: Option<String>,
    /// Bytes of the tar stream sent or received.
    pub bytes: u64,
    /// Hex SHA-256 of the tar stream.
    pub sha256: String,
    /// Export with freeze: how long the containers were paused.
    pub frozen_ms: u64,
}

/// One shoal volume on this node's engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSeen {
    pub docker_name: String,
    pub stack: String,
    /// The Compose name.
    pub name: String,
    /// Sum of its files' sizes; -1 when its directory cannot be read.
    pub size_bytes: i64,
    /// 0: the engine did not say.
    pub created_ms: u64,
}

/// What the controller says on the session.
#[derive(Debug, Clone, PartialEq)]
pub enum ControllerEvent {
    Assignments(SetUpdate),
    Logs(LogRequest),
    CancelLogs(u64),
    VolumeTransfer(VolumeTransfer),
    /// A transfer this agent cannot act on (e.g. an unknown direction).
    InvalidTransfer {
        transfer_id: u64,
        error: String,
    },
}
