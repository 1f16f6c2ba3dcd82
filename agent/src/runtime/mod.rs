//! The container runtime behind a narrow trait, in shoal's own words.
//!
//! [`ContainerRuntime`] is everything the agent asks of a container engine: make an image
//! present, create/start/stop/remove a container, observe shoal's containers, read their
//! logs, manage the Docker network of each cluster network and list the engine's networks
//! ([`NetworkInfo`]), create, inspect, list and
//! remove named volumes ([`VolumeRequest`], [`VolumeInfo`]), pause and resume the
//! containers mounting one (a frozen export), and list, load and remove images
//! ([`ImageInfo`]; loading is how images from the cluster's store get in), and read a
//! container's CPU time, memory, network counters and restarts ([`ContainerStats`]).
//! [`docker`] implements it with bollard; [`fake`] is an in-memory recording fake for
//! tests (hundreds of agents in one process).
//!
//! [`request::container_request`] is the pure translation of a [`ServiceSpec`] into a
//! [`ContainerRequest`]; nothing else in the agent knows how a spec becomes a container.
//!
//! [`ServiceSpec`]: shoal_proto::spec::ServiceSpec

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub mod docker;
pub mod fake;
pub mod request;

pub use request::{
    container_name, container_request, network_name, with_gpu_devices, with_gpus,
    with_volume_names, ContainerRequest, DeviceRequest, GpuDeviceMode, HealthcheckRequest,
    MountRequest, NetworkEndpoint, PortBinding, TaskIdentity, UlimitRequest,
};

/// What a runtime call failed with; callers branch on [`RuntimeError::NotFound`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The container (or network) does not exist (any more).
    #[error("no such container or network: {0}")]
    NotFound(String),
    /// The image is missing and could not be pulled; `reason` is the registry's words.
    #[error("pull image {image}: {reason}")]
    Pull { image: String, reason: String },
    /// The volume or image is still used by a container (Docker's 409 on removal).
    #[error("in use: {0}")]
    InUse(String),
    /// Anything else the engine refused, in its own words.
    #[error("{0}")]
    Engine(String),
}

pub type RuntimeResult<T> = Result<T, RuntimeError>;

/// Coarse container state, as far as shoal cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContainerState {
    /// Created, never started (or start failed).
    Created,
    /// Running (also paused or restarting: its process exists).
    Running,
    /// Its process ended (also dead or being removed).
    Exited,
}

/// Docker's health status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Health {
    /// No healthcheck.
    #[default]
    None,
    Starting,
    Healthy,
    Unhealthy,
}

/// One observed container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub state: ContainerState,
    /// Set once the container exited.
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub health: Health,
    /// Its address on the network it was created on (its service's first), else on
    /// any network: what the ingress forwards to.
    pub ip: Option<IpAddr>,
    /// Its address on each Docker network it is on, by Docker network name.
    pub ips: BTreeMap<String, IpAddr>,
    pub labels: BTreeMap<String, String>,
    /// The engine's own error for the container (e.g. why its start failed).
    pub error: Option<String>,
}

impl ContainerInfo {
    /// The shoal task this container runs, from its `io.shoal.task` label.
    pub fn task_id(&self) -> Option<&str> {
        self.labels
            .get(shoal_proto::labels::TASK)
            .map(String::as_str)
    }
}

/// One piece of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFrame {
    pub stderr: bool,
    pub data: Bytes,
}

pub type LogStream = BoxStream<'static, RuntimeResult<LogFrame>>;

/// A named volume to create.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeRequest {
    /// The engine's name of the volume.
    pub name: String,
    /// `None`: the engine's default (`local`).
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A volume as the engine describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeInfo {
    pub name: String,
    pub driver: String,
    /// Where its contents are on the engine's host (`None`: the engine gave none). Only
    /// readable by the agent when the engine runs on the same host.
    pub mountpoint: Option<std::path::PathBuf>,
    pub labels: BTreeMap<String, String>,
    /// The engine's `CreatedAt`, in ms since the epoch; 0 when not given.
    pub created_ms: u64,
}

/// An image as the engine holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageInfo {
    /// `sha256:HEX`: the digest of its config.
    pub id: String,
    /// Its `REPO:TAG` names (none for a dangling image).
    pub tags: Vec<String>,
    /// Its layers' diff ids (`sha256:HEX`), base first: which layers a load of another
    /// image can skip ([`crate::images::plan`]).
    pub layers: Vec<String>,
    pub size: u64,
}

/// A Docker network as the engine lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkInfo {
    pub name: String,
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Its IPAM subnets (IPv4 only; none when the engine gave none).
    pub subnets: Vec<crate::net::Subnet>,
    /// The host's interface of a bridge network (`br-` and the id's first 12 digits, or
    /// the name its `com.docker.network.bridge.name` option gives, e.g. `docker0`);
    /// `None` for other drivers.
    pub bridge: Option<String>,
}

impl NetworkInfo {
    /// The cluster network key of a network shoal made (labelled `io.shoal.stack` or
    /// `io.shoal.network`); `None` for anyone else's.
    pub fn shoal_key(&self) -> Option<String> {
        if let Some(key) = self.labels.get(NETWORK_LABEL) {
            return Some(key.clone());
        }
        self.labels
            .contains_key(shoal_proto::labels::STACK)
            .then(|| shoal_proto::network::key_of_docker_name(&self.name))
    }

    /// The `io.shoal.cluster` label: which cluster made it (`None`: unlabelled).
    pub fn cluster(&self) -> Option<&str> {
        self.labels
            .get(shoal_proto::labels::CLUSTER)
            .map(String::as_str)
    }
}

/// On the Docker network of an external cluster network: its key (`ext:NAME`).
pub const NETWORK_LABEL: &str = "io.shoal.network";

/// The node's capacity as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeResources {
    /// 1e9 per CPU.
    pub nano_cpus: i64,
    pub memory_bytes: i64,
}

/// What the engine measures of one container now ([`ContainerRuntime::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContainerStats {
    /// CPU time its processes used since it started (cumulative, all cores).
    pub cpu_ns: u64,
    /// Memory in use without the page cache the kernel can reclaim, as `docker stats`
    /// counts it (usage less `inactive_file` on cgroup v2, `total_inactive_file` on v1).
    pub memory_bytes: u64,
    /// The container's memory limit (`HostConfig.Memory`); 0: none.
    pub memory_limit_bytes: u64,
    /// Bytes received and sent over all its interfaces since it (last) started; 0 for a
    /// container without a network of its own (`network_mode: host`, `container:`).
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    /// How many times the engine restarted it (`RestartCount`, by its restart policy).
    pub restarts: u64,
}

/// The container engine of one node. Object safe; every method is cancel safe in the sense
/// that dropping the future leaves the engine in some valid state.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Make `image` present locally, pulling it if missing.
    async fn ensure_image(&self, image: &str) -> RuntimeResult<()>;
    /// Pull `image` from its registry even when the engine has it (`pull_policy:
    /// always`). A failure is [`RuntimeError::Pull`].
    async fn pull_image(&self, image: &str) -> RuntimeResult<()>;
    /// Every image of the engine.
    async fn images(&self) -> RuntimeResult<Vec<ImageInfo>>;
    /// The image `reference` (a `REPO:TAG`, or an id) names; `None`: the engine has none.
    async fn image(&self, reference: &str) -> RuntimeResult<Option<ImageInfo>>;
    /// Load a `docker save` tar (the engine's `POST /images/load`), streamed from the
    /// file; the engine's own words when it refuses it.
    async fn load_image(&self, tar: &std::path::Path) -> RuntimeResult<()>;
    /// Remove an image (not forced): [`RuntimeError::NotFound`] when missing,
    /// [`RuntimeError::InUse`] while a container uses it. A reference naming an image
    /// that has other names only loses that name.
    async fn remove_image(&self, reference: &str) -> RuntimeResult<()>;
    /// Whether `docker load` needs every layer's file in the tar: true on engines that
    /// keep images in containerd's store (Docker 24+ with the containerd snapshotter, the
    /// default of fresh Docker 29 installs), whose loader imports every blob the archive
    /// names; false on the classic graphdriver store, whose loader skips a layer whose
    /// chain it has without opening its file ([`crate::images::plan`]).
    async fn loads_need_every_layer(&self) -> bool {
        false
    }
    /// Create (not start) a container; returns its id.
    async fn create(&self, req: &ContainerRequest) -> RuntimeResult<String>;
    async fn start(&self, id: &str) -> RuntimeResult<()>;
    /// Send `signal` (the container's stop signal when `None`), wait up to `grace`, then
    /// kill. Stopping a container that is not running succeeds.
    async fn stop(&self, id: &str, grace: Duration, signal: Option<&str>) -> RuntimeResult<()>;
    /// Remove a stopped container (and its anonymous volumes). A missing container is
    /// [`RuntimeError::NotFound`].
    async fn remove(&self, id: &str) -> RuntimeResult<()>;
    /// Every container labelled `io.shoal.task`, in any state.
    async fn list_managed(&self) -> RuntimeResult<Vec<ContainerInfo>>;
    async fn inspect(&self, id: &str) -> RuntimeResult<ContainerInfo>;
    /// The container's output: the last `tail` frames (`None`: all), then, with `follow`,
    /// new output until the container stops.
    async fn logs(&self, id: &str, follow: bool, tail: Option<u64>) -> RuntimeResult<LogStream>;
    /// Create the Docker network [`network_name`] of cluster network `key` if missing;
    /// returns its name.
    async fn ensure_network(&self, key: &str) -> RuntimeResult<String>;
    async fn remove_network(&self, key: &str) -> RuntimeResult<()>;
    /// Like [`ContainerRuntime::ensure_network`], with the network's cluster subnet on
    /// this node, labelled with `cluster` (`io.shoal.cluster`) when it is created;
    /// returns the network's gateway address when known.
    async fn ensure_network_in(
        &self,
        key: &str,
        subnet: Option<crate::net::Subnet>,
        cluster: Option<&str>,
    ) -> RuntimeResult<Option<std::net::Ipv4Addr>> {
        let _ = (subnet, cluster);
        self.ensure_network(key).await.map(|_| None)
    }
    /// Every network of the engine, shoal's or not.
    async fn list_networks(&self) -> RuntimeResult<Vec<NetworkInfo>>;
    /// The process id of a running container's init (to read its sockets from `/proc`).
    async fn container_pid(&self, id: &str) -> Option<u32> {
        let _ = id;
        None
    }
    async fn resources(&self) -> RuntimeResult<NodeResources>;
    /// The container's CPU time, memory, network counters and restarts now (one
    /// sample, not a stream): what autoscaling's `cpu` and `memory` metrics and the
    /// node's per-task figures ([`crate::stats`]) are computed from.
    async fn stats(&self, id: &str) -> RuntimeResult<ContainerStats>;
    /// Create a named volume. An existing volume of that name is returned as it is (the
    /// engine's own behaviour).
    async fn create_volume(&self, req: &VolumeRequest) -> RuntimeResult<VolumeInfo>;
    /// A missing volume is [`RuntimeError::NotFound`].
    async fn inspect_volume(&self, name: &str) -> RuntimeResult<VolumeInfo>;
    /// Every volume labelled `io.shoal.node=NODE`.
    async fn list_volumes(&self, node: &str) -> RuntimeResult<Vec<VolumeInfo>>;
    /// Remove a volume: [`RuntimeError::NotFound`] when missing, [`RuntimeError::InUse`]
    /// while a container (in any state) uses it.
    async fn remove_volume(&self, name: &str) -> RuntimeResult<()>;
    /// Ids of the running containers that mount volume `name`.
    async fn running_with_volume(&self, name: &str) -> RuntimeResult<Vec<String>>;
    /// Freeze a running container's processes (the engine's pause).
    async fn pause(&self, id: &str) -> RuntimeResult<()>;
    async fn unpause(&self, id: &str) -> RuntimeResult<()>;
    /// Ids of the paused containers labelled `io.shoal.node=NODE`.
    async fn paused(&self, node: &str) -> RuntimeResult<Vec<String>>;
    /// Whether containers are reachable from this process at their [`ContainerInfo::ip`],
    /// so that the agent's ingress proxy can forward to them. The fake says no unless told
    /// otherwise: hundreds of fake agents in one process cannot all bind the same ports.
    fn supports_ingress(&self) -> bool {
        true
    }
}

/// A container of task `task` with nothing else set, for unit tests.
#[cfg(test)]
pub(crate) fn test_container(id: &str, task: &str, state: ContainerState) -> ContainerInfo {
    ContainerInfo {
        id: id.into(),
        name: id.into(),
        state,
        exit_code: None,
        oom_killed: false,
        health: Health::None,
        ip: None,
        ips: BTreeMap::new(),
        labels: [(shoal_proto::labels::TASK.to_string(), task.to_string())].into(),
        error: None,
    }
}
