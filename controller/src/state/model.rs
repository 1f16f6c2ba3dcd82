use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_proto::spec::{ServiceSpec, StackSpec};
use shoal_proto::task::{Desired, TaskState};

/// `STACK/SERVICE`.
pub type ServiceKey = String;
pub type TaskId = String;
/// A node's id is its name (the agent's `--name`).
pub type NodeId = String;

pub fn service_key(stack: &str, service: &str) -> ServiceKey {
    format!("{stack}/{service}")
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub stacks: BTreeMap<String, Stack>,
    pub services: BTreeMap<ServiceKey, Service>,
    pub tasks: BTreeMap<TaskId, Task>,
    pub nodes: BTreeMap<NodeId, Node>,
    /// Source of task ids: monotonically increasing, so ids are never reused.
    pub next_task: u64,
    /// Each (network, node) pair's container subnet, by network key
    /// ([`shoal_proto::network`]): an index into the cluster pool
    /// ([`crate::state::subnets`]), allocated when the first task on the network is
    /// assigned to the node, freed when the last stack using the network is removed.
    #[serde(default)]
    pub subnets: BTreeMap<String, BTreeMap<NodeId, u32>>,
    /// The cluster CA and join token secrets (sealed); set once by `--init`.
    #[serde(default)]
    pub pki: Option<crate::pki::PkiRecord>,
    /// Compose secrets' contents, sealed with the cluster key, by their keyed digest
    /// (`SecretRef::digest`). Kept while a service's spec or previous spec refers to it.
    #[serde(default)]
    pub secrets: BTreeMap<String, SealedSecret>,
    /// Revoked identities (`shoal://ROLE/NAME`): a certificate naming one that was
    /// issued at or before this time (ms since the epoch) is refused. A node removed
    /// with `node rm` (or a controller removed) is revoked; joining again with a token
    /// gives a newer certificate, which is accepted.
    #[serde(default)]
    pub revoked: BTreeMap<String, u64>,
    /// Secrets the cluster keeps by name (`shoal secret create`), for Compose secrets
    /// declared `external: true`; their sealed contents are in `secrets`.
    #[serde(default)]
    pub cluster_secrets: BTreeMap<String, ClusterSecret>,
    /// Every copy of a named volume, by `STACK/NAME@NODE` ([`super::volumes`]).
    #[serde(default)]
    pub volumes: BTreeMap<String, super::volumes::VolumeCopy>,
    /// Volume moves and restores, under way and the last few finished, by id.
    #[serde(default)]
    pub moves: BTreeMap<u64, super::volumes::VolumeMove>,
    /// Source of move ids.
    #[serde(default)]
    pub next_move: u64,
    /// The cluster's image store, by reference ([`super::images`]).
    #[serde(default)]
    pub images: BTreeMap<String, super::images::StoredImage>,
    /// The images on each node's engine, as its agent last reported them.
    #[serde(default)]
    pub node_images: BTreeMap<NodeId, Vec<super::images::NodeImage>>,
    /// The address pool given at `--init --pool`; `None`: the default
    /// ([`super::subnets::POOL`]). A state that has one is written as snapshot format 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// What applied commands changed, for the leader's reconciler
    /// ([`super::changes`]): derived and local, never written.
    #[serde(skip)]
    pub changes: super::changes::Changes,
}

impl ClusterState {
    /// The cluster's address pool.
    pub fn pool(&self) -> super::subnets::Pool {
        self.pool
            .as_deref()
            .and_then(|p| super::subnets::Pool::parse(p).ok())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSecret {
    /// The key of its sealed contents in `ClusterState::secrets`.
    pub digest: String,
    pub created_ms: u64,
}

/// A secret's contents sealed with the cluster key ([`crate::pki::seal`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret(#[serde(with = "serde_bytes_hex")] pub Vec<u8>);

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSecret({} bytes)", self.0.len())
    }
}

/// Sealed bytes as one hex string in the JSON of commands and snapshots (a byte array
/// would be a number per byte).
mod serde_bytes_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    pub name: String,
    /// The stack as last deployed (services included), for `shoal config`-like views.
    pub spec: StackSpec,
    /// Set by `shoal rm`: tasks are being shut down; the stack goes when they are.
    pub removing: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub stack: String,
    pub name: String,
    pub spec: ServiceSpec,
    /// Bumped whenever a deploy changes the spec.
    pub generation: u64,
    /// Desired replicas (from the spec, then `shoal scale`).
    pub replicas: u64,
    pub removing: bool,
    /// The spec before the last change: what a rollback returns to.
    #[serde(default)]
    pub previous: Option<ServiceSpec>,
    /// The current generation is a rollback (by hand or after a failed rollout).
    #[serde(default)]
    pub rolled_back: bool,
    /// Why an automatic rollback happened: the first failed replica of the rolled-back
    /// generation, e.g. `web slot 1 on node-a: its healthcheck fails` (kept here because
    /// that replica is shut down as the rollback proceeds).
    #[serde(default)]
    pub rollback_cause: String,
    /// Every replica of the current generation became ready once: failures after this
    /// are crashes handled by the restart policy, not a failed rollout.
    #[serde(default)]
    pub rollout_complete: bool,
    /// Set by `shoal rebalance`: the reconciler moves replicas from the most loaded
    /// nodes to the least loaded, start-first, and clears it when nothing is left to move.
    #[serde(default)]
    pub rebalancing: bool,
    /// `x-shoal-autoscale`: the last decision that changed `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaled: Option<Autoscaled>,
}

/// A change of a service's count by its autoscaler, as replicated: a new leader knows
/// what was decided and when, and never repeats it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Autoscaled {
    pub from: u64,
    pub to: u64,
    /// The metric that drove it and what it read, e.g.
    /// `inference_queue_depth 41 (13.7/15 per replica) above target`.
    pub cause: String,
    pub at_ms: u64,
}

impl Service {
    pub fn key(&self) -> ServiceKey {
        service_key(&self.stack, &self.name)
    }

    /// How the current generation rolls out: `rollback_config` when it is a rollback.
    pub fn update_config(&self) -> shoal_proto::spec::UpdateConfig {
        if self.rolled_back {
            self.spec.rollback
        } else {
            self.spec.update
        }
    }

    /// A paused rollout of this service is rolled back by the reconciler's next pass
    /// (`failure_action: rollback`, a previous spec to go back to, not a rollback itself).
    pub fn rolls_back_when_paused(&self) -> bool {
        self.spec.update.failure_action == shoal_proto::spec::FailureAction::Rollback
            && !self.rolled_back
            && self.previous.is_some()
    }

    /// Where the rollout of the current generation stands, in words for `services`. A
    /// pause about to be rolled back reads "rolling back", not "paused", so a client
    /// that polls in between does not report a pause that the next pass undoes.
    pub fn rollout_state(&self, paused: Option<&str>) -> String {
        match (self.rollout_complete, self.rolled_back, paused) {
            (false, false, Some(why)) if self.rolls_back_when_paused() => {
                format!("rolling back: {why}")
            }
            (true, true, _) if !self.rollback_cause.is_empty() => {
                format!("rolled back after {}", self.rollback_cause)
            }
            (true, true, _) => "rolled back".into(),
            (true, false, _) => "completed".into(),
            (false, _, Some(why)) => format!("paused: {why}"),
            (false, true, None) if !self.rollback_cause.is_empty() => {
                format!("rolling back after {}", self.rollback_cause)
            }
            (false, true, None) => "rolling back".into(),
            (false, false, None) => "updating".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub stack: String,
    pub service: String,
    pub slot: u64,
    /// The spec generation this task runs.
    pub generation: u64,
    pub node: Option<NodeId>,
    pub desired: Desired,
    pub state: TaskState,
    /// Why the task is pending or failed, for a person to act on.
    pub error: String,
    pub container_id: String,
    pub exit_code: Option<i64>,
    pub created_at_ms: u64,
    /// When `state` last changed.
    pub updated_at_ms: u64,
    /// Global services pin each task to its node; the scheduler only checks it fits.
    #[serde(default)]
    pub pinned: Option<NodeId>,
    /// The image of the spec this task runs (during a rollout, old and new differ).
    #[serde(default)]
    pub image: String,
    /// UUIDs of the node's GPUs this task holds, exclusively while it is live.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// The container's address on each of its networks (by network key), as its agent
    /// reported them: what the names and the routing mesh answer with.
    #[serde(default)]
    pub ips: BTreeMap<String, std::net::IpAddr>,
    /// The single address of a task stored before tasks had one per network: its
    /// address on the stack's default network.
    #[serde(default, rename = "ip", skip_serializing_if = "Option::is_none")]
    pub legacy_ip: Option<std::net::IpAddr>,
}

impl Task {
    pub fn service_key(&self) -> ServiceKey {
        service_key(&self.stack, &self.service)
    }

    /// Why the task failed, in words: its error, else a failing healthcheck, else its
    /// exit code.
    pub fn failure(&self) -> String {
        if !self.error.is_empty() {
            self.error.clone()
        } else if self.state == TaskState::Unhealthy {
            "its healthcheck fails".to_string()
        } else if let Some(code) = self.exit_code {
            format!("exited with code {code}")
        } else {
            "failed".to_string()
        }
    }

    /// The container's address on network `key`.
    pub fn ip_on(&self, key: &str) -> Option<std::net::IpAddr> {
        self.ips.get(key).copied().or_else(|| {
            (key == self.stack && self.ips.is_empty())
                .then_some(self.legacy_ip)
                .flatten()
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Ready,
    Down,
    Unknown,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
            NodeStatus::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    Active,
    Drain,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Drain => "drain",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub address: String,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub labels: BTreeMap<String, String>,
    pub status: NodeStatus,
    pub availability: Availability,
    /// The GPUs its agent reported (NVML or `--gpu-inventory`), by index.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// The device paths its agent found under `/dev` (hello, then `DeviceReport`): a
    /// service's `devices:` sources must all be here.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub devices: BTreeSet<String>,
    /// Docker's `os/arch[/variant]` of the node (`linux/amd64`); empty: unknown (an
    /// older agent), which matches no service that names a `platform:`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub platform: String,
    /// A controller runs on this node too (`node.role == manager`); decided by the
    /// leader from the controllers' addresses ([`super::nodes::is_manager`]) and
    /// recorded through `RegisterNode` and `SetNodeRole`, so placement reads only the
    /// state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manager: bool,
    /// What its agent found on the node overlapping the cluster's address pool (routes,
    /// Docker networks of others), each a sentence naming it; shown by `shoal nodes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
}

impl Node {
    /// `node.role` as placement constraints name it.
    pub fn role(&self) -> &'static str {
        if self.manager {
            "manager"
        } else {
            "worker"
        }
    }
}

/// One GPU of a node (a MIG instance counts as its own GPU).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub uuid: String,
    pub index: u32,
    pub model: String,
    pub memory_bytes: u64,
}

/// A change to the cluster state. Every change goes through Raft as one of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create or update a stack: new services get generation 1, changed ones a bump.
    DeployStack {
        spec: StackSpec,
        now_ms: u64,
        /// The stack's secrets, sealed by the controller that took the request, by digest.
        #[serde(default)]
        secrets: BTreeMap<String, SealedSecret>,
    },
    /// Keep a secret by name; refused if the name is taken (secrets are immutable).
    CreateSecret {
        name: String,
        digest: String,
        sealed: SealedSecret,
        now_ms: u64,
    },
    /// Forget a kept secret; refused while a service's spec or previous spec uses it.
    RemoveSecret {
        name: String,
    },
    /// Refuse the certificates of `identity` issued at or before `before_ms`.
    Revoke {
        identity: String,
        before_ms: u64,
    },
    /// Shut down all of a stack's tasks; the stack is dropped once they are gone. Its
    /// volumes are kept unless `volumes`.
    RemoveStack {
        stack: String,
        #[serde(default)]
        volumes: bool,
    },
    /// The shoal volumes an agent found on its engine, with their sizes.
    VolumeReport {
        node: NodeId,
        volumes: Vec<super::volumes::VolumeSeen>,
        now_ms: u64,
    },
    /// `shoal volume rm`: the copies (on `node`, or all) are removed by their agents;
    /// refused while a replica uses one.
    RemoveVolume {
        stack: String,
        name: String,
        node: Option<NodeId>,
    },
    /// `shoal volume move` (`restore`: `shoal volume restore`, from a file): a new
    /// copy on `to`; the move's id is `next_move` + 1.
    StartMove {
        stack: String,
        name: String,
        to: NodeId,
        #[serde(default)]
        restore: bool,
        now_ms: u64,
    },
    /// A standby copy was refreshed on `node` (`x-shoal-volume: {replicas}`).
    StandbySynced {
        stack: String,
        name: String,
        node: NodeId,
        docker_name: String,
        bytes: u64,
        frozen_ms: u64,
        /// When the copy was taken (its final, frozen pass).
        at_ms: u64,
    },
    /// The leader's word on a move (copying, done or failed).
    MoveProgress {
        id: u64,
        phase: super::volumes::MovePhase,
        error: String,
        bytes: u64,
        sha256: String,
        now_ms: u64,
        /// Failed: the target may hold a partial copy its agent must remove (it did not
        /// say it cleaned up itself, e.g. its node went away).
        #[serde(default)]
        partial: bool,
    },
    /// The leader's autoscaler changes a service's count: applied only while the count
    /// is still `from` (a decision taken on an older state, or proposed twice across a
    /// leader change, is refused instead of stepping twice).
    Autoscale {
        service: ServiceKey,
        from: u64,
        to: u64,
        cause: String,
        at_ms: u64,
    },
    Scale {
        service: ServiceKey,
        replicas: u64,
    },
    /// `shoal rollback SERVICE`: return to the previous spec as a new generation.
    Rollback {
        service: ServiceKey,
    },
    /// `shoal node drain|activate NODE`.
    SetAvailability {
        node: NodeId,
        availability: Availability,
    },
    /// `shoal node label NODE k=v k-`: set (Some) or remove (None) labels.
    LabelNode {
        node: NodeId,
        labels: BTreeMap<String, Option<String>>,
    },
    /// `shoal node rm NODE`: forget a node; its tasks are orphaned and replaced.
    RemoveNode {
        node: NodeId,
    },
    /// An agent connected: record or refresh its node.
    RegisterNode {
        node: Node,
    },
    SetNodeStatus {
        node: NodeId,
        status: NodeStatus,
        now_ms: u64,
    },
    /// The reconciler's decisions, applied together.
    Reconcile {
        decisions: Vec<Decision>,
        now_ms: u64,
    },
    /// Observed task states reported by an agent.
    TaskStatus {
        node: NodeId,
        updates: Vec<TaskUpdate>,
        now_ms: u64,
    },
    /// An agent rediscovered its GPUs and found a different set.
    SetNodeGpus {
        node: NodeId,
        gpus: Vec<Gpu>,
    },
    /// An agent rescanned its device paths and found a different set.
    SetNodeDevices {
        node: NodeId,
        devices: BTreeSet<String>,
    },
    /// An agent found a different list of routes and networks overlapping the pool.
    SetNodeConflicts {
        node: NodeId,
        conflicts: Vec<String>,
    },
    /// The leader saw a controller start or stop running on the node's address.
    SetNodeRole {
        node: NodeId,
        manager: bool,
    },
    /// `shoal rebalance SERVICE`: move replicas to even out the service's spread.
    Rebalance {
        service: ServiceKey,
    },
    /// `--init --pool CIDR`: the cluster's address pool; refused once a network has a
    /// subnet (their addresses would leave the pool).
    SetPool {
        pool: String,
    },
    /// The cluster's PKI: written by `--init` and when a join token is rotated.
    SetPki {
        record: crate::pki::PkiRecord,
    },
    /// `--restore FILE` / `--force-new-cluster`: a new one-member group takes over a
    /// cluster's whole state (its first entry after the membership). Refused on a state
    /// that already holds a cluster.
    Restore {
        state: Box<super::ClusterState>,
    },
    /// A push stored every blob of an image on the controllers in `image.holders`.
    ImagePushed {
        image: super::images::StoredImage,
        now_ms: u64,
    },
    /// A controller copied every blob of an image.
    ImageHeld {
        reference: String,
        id: String,
        controller: u64,
    },
    /// `shoal image rm`: refused while a service runs it.
    RemoveImage {
        reference: String,
    },
    /// The leader's image pass: unused marks and images past their retention.
    SweepImages {
        sweep: super::images::ImageSweep,
    },
    /// The images on a node's engine (its agent's report, written when it changed).
    NodeImages {
        node: NodeId,
        images: Vec<super::images::NodeImage>,
    },
    /// Several commands in one entry, applied in order, each as if it were its own
    /// entry (its own result, events and refusal): the agent sessions' task statuses
    /// proposed together ([`crate::api::batch`]).
    Batch {
        commands: Vec<Command>,
    },
}

impl Command {
    /// The protocol from which controllers read [`Command::Batch`].
    pub const BATCH_PROTOCOL: u32 = 3;

    /// The wire protocol ([`shoal_proto::protocol`]) a controller must speak to apply
    /// this command: a leader proposes it only once every controller that answered it
    /// speaks that or newer, so a rolling upgrade never hands an older controller an
    /// entry it cannot read (it would stop applying). 0: every shoal reads it.
    pub fn min_protocol(&self) -> u32 {
        match self {
            Command::SetNodeConflicts { .. } | Command::Restore { .. } => 1,
            Command::Autoscale { .. } => 2,
            Command::Batch { commands } => commands
                .iter()
                .map(Command::min_protocol)
                .fold(Self::BATCH_PROTOCOL, u32::max),
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskUpdate {
    pub task: TaskId,
    pub state: TaskState,
    pub container_id: String,
    pub exit_code: Option<i64>,
    pub error: String,
    /// The container's address on its first network (None: not reported); only read
    /// when `ips` is empty (an agent that predates networks per service).
    #[serde(default)]
    pub ip: Option<std::net::IpAddr>,
    /// The container's address on each of its networks (empty: not reported, keep
    /// what is known).
    #[serde(default)]
    pub ips: BTreeMap<String, std::net::IpAddr>,
}

/// One decision of the reconciler or scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Decision {
    /// A new task for `service`'s `slot` (its id is allocated at apply time).
    CreateTask {
        service: ServiceKey,
        slot: u64,
        generation: u64,
        /// Pinned node (global services); `None`: the scheduler places it.
        node: Option<NodeId>,
    },
    /// Place a pending task on a node.
    Assign {
        task: TaskId,
        node: NodeId,
    },
    /// Keep a task pending, saying why.
    Pending {
        task: TaskId,
        reason: String,
    },
    /// Ask for a task to be stopped.
    Shutdown {
        task: TaskId,
    },
    /// The task's node is lost.
    Orphan {
        task: TaskId,
    },
    /// Forget a finished task.
    Forget {
        task: TaskId,
    },
    /// Forget a service (or stack) that has no tasks left and is being removed.
    DropService {
        service: ServiceKey,
    },
    DropStack {
        stack: String,
    },
    /// The rollout of `generation` failed and its service asked to roll back.
    RollBack {
        service: ServiceKey,
        generation: u64,
    },
    /// Every replica of `generation` is ready: its rollout is over.
    CompleteRollout {
        service: ServiceKey,
        generation: u64,
    },
    /// A running task counts as failed (it did not become healthy in time): it is
    /// stopped and keeps `reason` as its error.
    Fail {
        task: TaskId,
        reason: String,
    },
    /// Place a pending task that asks for GPUs on a node, holding these GPUs (UUIDs).
    AssignGpus {
        task: TaskId,
        node: NodeId,
        gpus: Vec<String>,
    },
    /// A rebalance has nothing left to move.
    CompleteRebalance {
        service: ServiceKey,
    },
    /// The live copy of a replicated volume is on a lost node: the standby on `node`
    /// becomes live, the lost copy is set aside.
    PromoteStandby {
        stack: String,
        name: String,
        node: NodeId,
    },
}

/// Why a service name given by a user does not name one service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no service named {0}")]
    NotFound(String),
    #[error("{name} is ambiguous: say which of {}", candidates.join(", "))]
    Ambiguous {
        name: String,
        candidates: Vec<String>,
    },
}

impl ClusterState {
    /// `STACK/SERVICE`, or `SERVICE` alone where only one stack has it.
    pub fn resolve_service(&self, name: &str) -> Result<ServiceKey, ResolveError> {
        if name.contains('/') {
            return match self.services.get(name) {
                Some(s) if !s.removing => Ok(name.to_string()),
                _ => Err(ResolveError::NotFound(name.to_string())),
            };
        }
        let candidates: Vec<String> = self
            .services
            .values()
            .filter(|s| s.name == name && !s.removing)
            .map(Service::key)
            .collect();
        match candidates.len() {
            0 => Err(ResolveError::NotFound(name.to_string())),
            1 => Ok(candidates[0].clone()),
            _ => Err(ResolveError::Ambiguous {
                name: name.to_string(),
                candidates,
            }),
        }
    }
}
