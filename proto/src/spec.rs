//! The normalized Compose model: what a stack asks to run.
//!
//! The Compose loader (`shoal_controller::compose`) produces these types, the controller
//! stores them in the Raft state, and the agent turns a [`ServiceSpec`] into a Docker
//! container. They are plain serde types: they travel as JSON inside protobuf `bytes`
//! fields, so every crate shares one definition.
//!
//! Durations are milliseconds, CPUs are in nano-CPUs (1e9 = one CPU), memory in bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A whole stack (a Compose project).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StackSpec {
    pub name: String,
    /// By service name.
    pub services: BTreeMap<String, ServiceSpec>,
    /// Top-level networks the services use (the implicit `default` too), by Compose name.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkSpec>,
    /// Top-level named volumes, by their Compose name.
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Top-level `secrets:` the services use, by their Compose name. Only names: the
    /// contents travel beside the spec (`DeployRequest.secrets`) and are sealed in the
    /// Raft state, never stored in a spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Top-level `configs:` the services use, likewise (`DeployRequest.configs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<String>,
}

/// A service's use of a secret or a config (`services.X.secrets`, `.configs`): a
/// read-only file in its containers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SecretRef {
    /// The top-level secret's name.
    pub source: String,
    /// Where the file appears: a bare name is under `/run/secrets/`, else an absolute path.
    pub target: String,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    /// File mode (default 0444, as Compose).
    #[serde(default)]
    pub mode: Option<u32>,
    /// A keyed digest of the contents, set by the controller when the stack is deployed
    /// (empty in what the loader produces): a changed secret changes the spec, so its
    /// services roll out, and a rollback finds the previous contents by it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// `external: true`: the name of the secret the cluster keeps (`shoal secret
    /// create`), whose contents the controller takes instead of the deploy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<String>,
}

impl SecretRef {
    /// The file's path inside the container.
    pub fn path(&self) -> String {
        if self.target.starts_with('/') {
            self.target.clone()
        } else {
            format!("/run/secrets/{}", self.target)
        }
    }
}

/// A Compose network of the stack, as shoal runs it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Its cluster key ([`crate::network`]): `STACK`, `STACK.NET` or `ext:NAME`.
    pub key: String,
    /// `external: true`: shared with every stack that declares the same name.
    #[serde(default)]
    pub external: bool,
    /// `internal: true`: its containers reach the cluster's networks but nothing outside
    /// (no route or NAT out of the pool).
    #[serde(default)]
    pub internal: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// `external: true`: the volume is used by its own name, never created or prefixed.
    #[serde(default)]
    pub external: bool,
    /// Docker volume name when `name:` was given (else `STACK_VOLUME`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `x-shoal-volume`: how the cluster keeps it.
    #[serde(default, skip_serializing_if = "VolumePolicy::is_default")]
    pub policy: VolumePolicy,
}

/// `x-shoal-volume` on a top-level volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumePolicy {
    /// `policy: ephemeral`: disposable; a replica may start with a new, empty copy
    /// anywhere (what Docker Swarm does). Otherwise replicas stay with their copy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
    /// `replicas: N` (N >= 2): keep N - 1 standby copies on other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// `every: DURATION`: how often standby copies are refreshed (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
}

impl VolumePolicy {
    pub fn is_default(&self) -> bool {
        *self == VolumePolicy::default()
    }
}

impl VolumeSpec {
    /// The engine's name for the volume of stack `stack` called `compose_name`.
    pub fn docker_name(&self, stack: &str, compose_name: &str) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("{stack}_{compose_name}"),
        }
    }

    /// Replicas stay with their copy of it (neither external nor ephemeral).
    pub fn is_bound(&self) -> bool {
        !self.external && !self.policy.ephemeral
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub image: String,
    /// `None`: the image's default. Shell-form strings are split like Compose does.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Final environment: `env_file`s first, then `environment`.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub volumes: Vec<MountSpec>,
    #[serde(default)]
    pub healthcheck: Option<HealthcheckSpec>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub stop_grace_period_ms: Option<u64>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub init: Option<bool>,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `tmpfs:` entries, `PATH[:OPTIONS]`.
    #[serde(default)]
    pub tmpfs: Vec<String>,
    #[serde(default)]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// `HOST:IP` entries.
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    #[serde(default)]
    pub mode: ServiceMode,
    /// Desired replicas for replicated modes (`deploy.replicas`, default 1).
    #[serde(default = "one")]
    pub replicas: u64,
    #[serde(default)]
    pub resources: Resources,
    /// By dependency service name.
    #[serde(default)]
    pub depends_on: BTreeMap<String, Dependency>,
    #[serde(default)]
    pub placement: Placement,
    /// GPU requests from `gpus:` and `deploy.resources.reservations.devices`.
    #[serde(default)]
    pub gpus: Vec<GpuRequest>,
    /// The networks the service is attached to, in attachment order (Compose's
    /// `priority`, then as written); empty only in specs stored before networks were
    /// honoured (see [`crate::network::attachments`]).
    #[serde(default)]
    pub networks: Vec<ServiceNetwork>,
    /// How a changed spec rolls out (`deploy.update_config`).
    #[serde(default)]
    pub update: UpdateConfig,
    /// How a rollback to the previous spec rolls out (`deploy.rollback_config`); its
    /// `failure_action` never rolls back again (rollback is treated as pause).
    #[serde(default)]
    pub rollback: UpdateConfig,
    /// What a node does with this service's replicas while it cannot reach any
    /// controller (`x-shoal-disconnect`): keep them running (the default) or stop them.
    #[serde(default)]
    pub disconnect: DisconnectPolicy,
    /// Secrets mounted as files in its containers (`secrets:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    /// Configs mounted as files in its containers (`configs:`; targets are absolute).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<SecretRef>,
    /// `pull_policy`: when a node pulls the image from its registry.
    #[serde(default, skip_serializing_if = "PullPolicy::is_default")]
    pub pull_policy: PullPolicy,
    /// `build:`: how the deploying machine builds the image. Only the CLI reads it: it
    /// builds, sets [`ServiceSpec::image`] to the result's content-derived reference and
    /// clears this before the spec leaves it, so the stored spec never depends on where
    /// the build context was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSpec>,
    /// Options passed straight to the engine (`privileged`, `devices`, `network_mode`, ...).
    #[serde(
        default,
        skip_serializing_if = "crate::container::ContainerOptions::is_default"
    )]
    pub container: crate::container::ContainerOptions,
    /// `x-shoal-autoscale`: the leader sets the replica count within `min..=max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<crate::autoscale::Autoscale>,
}

/// `pull_policy` of a service (Compose's values; `if_not_present` is `missing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull only when neither the node's engine nor the cluster's store has it.
    #[default]
    Missing,
    /// Pull from the registry before every container is created.
    Always,
    /// Never pull from a registry (the node's engine or the cluster's store must have it).
    Never,
    /// Build it on the deploying machine at every deploy (also the behaviour of any
    /// service with `build:`).
    Build,
}

impl PullPolicy {
    pub fn is_default(&self) -> bool {
        *self == PullPolicy::Missing
    }
}

/// A service's `build:` (string or long form), with paths made absolute.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BuildSpec {
    /// The build context: an absolute directory (or a URL, which shoal refuses to build).
    pub context: String,
    /// The Dockerfile, relative to the context (default `Dockerfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// `dockerfile_inline`: the Dockerfile's text itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile_inline: Option<String>,
    /// Build args (`ARG`); a value-less arg takes the environment's value, or is left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The network of the build's RUN steps (`host`, `none`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `HOST:IP` entries for the build's RUN steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// Target platforms; the engine builds one (the first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// Extra tags given to the result on the deploying engine (`tags:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `no_cache: true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cache: bool,
    /// `pull: true`: pull newer base images first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pull: bool,
    /// Where `build:` is written, `FILE:LINE`, for errors found when building.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub at: String,
    /// The context directory was not there when the file was loaded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub context_missing: bool,
}

impl ServiceSpec {
    /// The image reference a built service's result is named by: `REPO:shoal-HEX12`
    /// where REPO is `image:`'s repository (without its tag) or `STACK-SERVICE`, and
    /// HEX12 the first 12 hex digits of the built image's id (`sha256:HEX`). A rebuild
    /// that changes nothing keeps the reference, so nothing rolls out.
    pub fn built_reference(&self, stack: &str, image_id: &str) -> String {
        let repo = if self.image.is_empty() {
            format!("{stack}-{}", self.name).to_lowercase()
        } else {
            image_repository(&self.image).to_string()
        };
        let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
        format!("{repo}:shoal-{}", &hex[..hex.len().min(12)])
    }
}

/// The repository part of an image reference: without its `:TAG` and `@DIGEST` (a
/// `:` before the last `/` is a registry's port).
pub fn image_repository(reference: &str) -> &str {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// One network a service is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceNetwork {
    /// The Compose name in the stack (`default`, `back`, ...).
    pub name: String,
    /// The cluster key ([`crate::network`]).
    pub key: String,
    /// Names the service answers to on this network only, besides its own name.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// `x-shoal-disconnect`: the agent-side policy for replicas on a node cut off from every
/// controller. The controller replaces them elsewhere once the node is declared down;
/// stopping bounds how long the old and the new replica can both run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DisconnectPolicy {
    /// `Some(ms)`: stop the replicas once no controller was heard from for this long.
    /// `None`: keep them running (as Nomad and Swarm do).
    #[serde(default)]
    pub stop_after_ms: Option<u64>,
}

impl DisconnectPolicy {
    /// `x-shoal-disconnect: stop` without a time: longer than a leader failover with the
    /// default Raft timings (about 2.5 s), so an election alone never stops replicas.
    pub const DEFAULT_STOP_AFTER_MS: u64 = 5_000;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop an old replica, then start its replacement (Compose's default).
    #[default]
    StopFirst,
    /// Start the replacement, and stop the old replica once the new one is ready.
    StartFirst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Stop rolling out; a new deploy resumes it.
    #[default]
    Pause,
    Continue,
    Rollback,
}

/// `deploy.update_config`. A replica counts as updated once it is ready: healthy when it
/// has a healthcheck, else running for `monitor_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Replicas updated at once; 0: all at once.
    #[serde(default = "one")]
    pub parallelism: u64,
    /// Wait between one batch becoming ready and the next starting.
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub order: UpdateOrder,
    /// How long a new replica is watched after it starts; a failure in that time counts.
    #[serde(default = "default_monitor")]
    pub monitor_ms: u64,
    #[serde(default)]
    pub failure_action: FailureAction,
    /// Failures tolerated during an update, as a fraction of the replicas (0 to 1).
    #[serde(default)]
    pub max_failure_ratio: f32,
}

fn default_monitor() -> u64 {
    5_000
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            order: UpdateOrder::StopFirst,
            monitor_ms: default_monitor(),
            failure_action: FailureAction::Pause,
            max_failure_ratio: 0.0,
        }
    }
}

fn one() -> u64 {
    1
}

impl ServiceSpec {
    /// The grace period Docker gives between the stop signal and SIGKILL (Compose: 10 s).
    pub fn stop_grace_ms(&self) -> u64 {
        self.stop_grace_period_ms.unwrap_or(10_000)
    }

    /// Whether the service has an active healthcheck (its replicas report `healthy`).
    pub fn has_healthcheck(&self) -> bool {
        self.healthcheck.as_ref().is_some_and(|h| !h.disable)
    }

    /// How long a running replica with a healthcheck may stay not yet healthy before it
    /// counts as failed: the time Docker needs to declare it unhealthy when every check
    /// fails or times out (start period, then `retries` checks of interval + timeout,
    /// Docker's defaults where unset), plus the update's `monitor`. A replica still not
    /// healthy after that has a check that hangs or never settles.
    pub fn health_deadline_ms(&self) -> Option<u64> {
        let h = self.healthcheck.as_ref().filter(|h| !h.disable)?;
        let interval = h.interval_ms.filter(|ms| *ms > 0).unwrap_or(30_000);
        let timeout = h.timeout_ms.filter(|ms| *ms > 0).unwrap_or(30_000);
        let retries = h.retries.filter(|r| *r > 0).unwrap_or(3);
        let start = h.start_period_ms.unwrap_or(0);
        Some(start + (interval + timeout) * retries + self.update.monitor_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceMode {
    #[default]
    Replicated,
    Global,
    ReplicatedJob,
    GlobalJob,
}

impl ServiceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceMode::Replicated => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob => "replicated-job",
            ServiceMode::GlobalJob => "global-job",
        }
    }

    pub fn is_job(self) -> bool {
        matches!(self, ServiceMode::ReplicatedJob | ServiceMode::GlobalJob)
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// Answered by the node's agent and forwarded to a healthy replica.
    #[default]
    Ingress,
    /// Bound by Docker on the node that runs the replica.
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortSpec {
    pub target: u16,
    /// `None`: not published (reachable on the service's networks only).
    #[serde(default)]
    pub published: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub host_ip: Option<String>,
    #[serde(default)]
    pub mode: PortMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A named volume (`source` is the Compose volume name) or anonymous (`source` None).
    #[default]
    Volume,
    /// A host path (`source` is absolute, resolved against the Compose file's directory).
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MountSpec {
    pub kind: MountKind,
    #[serde(default)]
    pub source: Option<String>,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    /// A bind mount whose source was written relative to the Compose file (`./data`):
    /// a directory of the deploying machine, which other nodes may not have.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relative: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HealthcheckSpec {
    /// Docker's form: `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    #[serde(default)]
    pub test: Vec<String>,
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub retries: Option<u64>,
    #[serde(default)]
    pub start_period_ms: Option<u64>,
    #[serde(default)]
    pub start_interval_ms: Option<u64>,
    #[serde(default)]
    pub disable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Never replace a replica that ended.
    None,
    /// Replace only replicas that exited non-zero or failed to start.
    OnFailure,
    /// Replace a replica whenever it ends (Swarm's default and shoal's).
    #[default]
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    /// Wait between a replica ending and its replacement starting.
    #[serde(default = "default_restart_delay")]
    pub delay_ms: u64,
    /// `None`: unlimited.
    #[serde(default)]
    pub max_attempts: Option<u64>,
    /// Window in which `max_attempts` is counted; `None`: the whole life of the spec.
    #[serde(default)]
    pub window_ms: Option<u64>,
}

fn default_restart_delay() -> u64 {
    1_000
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: default_restart_delay(),
            max_attempts: None,
            window_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default)]
    pub nano_cpus: Option<i64>,
    #[serde(default)]
    pub memory_bytes: Option<i64>,
    #[serde(default)]
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Enforced by Docker on the container.
    #[serde(default)]
    pub limits: Limits,
    /// Counted by the scheduler against the node's capacity.
    #[serde(default)]
    pub reservations: Limits,
}

impl Resources {
    /// What the scheduler counts for one replica: the reservation, else the limit.
    pub fn requested_nano_cpus(&self) -> i64 {
        self.reservations
            .nano_cpus
            .or(self.limits.nano_cpus)
            .unwrap_or(0)
    }

    pub fn requested_memory(&self) -> i64 {
        self.reservations
            .memory_bytes
            .or(self.limits.memory_bytes)
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    #[default]
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

impl DependencyCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::ServiceStarted => "service_started",
            DependencyCondition::ServiceHealthy => "service_healthy",
            DependencyCondition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub condition: DependencyCondition,
    /// `required: false`: a missing dependency does not block the service.
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

impl Default for Dependency {
    fn default() -> Self {
        Dependency {
            condition: DependencyCondition::ServiceStarted,
            required: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// Label keys to spread over (`preferences: - spread: node.labels.zone` gives "zone").
    #[serde(default)]
    pub spread: Vec<String>,
    #[serde(default)]
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintField {
    /// `node.hostname` (the agent's `--name`).
    Hostname,
    /// `node.id` (the node's id, which is its name).
    Id,
    /// `node.labels.KEY`.
    Label(String),
    /// `node.role`: `manager` when the node also runs a controller, else `worker`.
    Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    pub field: ConstraintField,
    /// `true` for `==`, `false` for `!=`.
    pub equal: bool,
    pub value: String,
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let field = match &self.field {
            ConstraintField::Hostname => "node.hostname".to_string(),
            ConstraintField::Id => "node.id".to_string(),
            ConstraintField::Label(k) => format!("node.labels.{k}"),
            ConstraintField::Role => "node.role".to_string(),
        };
        let op = if self.equal { "==" } else { "!=" };
        write!(f, "{field}{op}{}", self.value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuRequest {
    /// `None` with empty `device_ids`: all GPUs of the node (`count: all`).
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub device_ids: Vec<String>,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// `x-shoal-gpu: {min_memory}`.
    #[serde(default)]
    pub min_memory_bytes: Option<u64>,
    /// `x-shoal-gpu: {model}`, a glob.
    #[serde(default)]
    pub model: Option<String>,
}

#[cfg(test)]
mod image_reference_tests {
    use super::*;

    #[test]
    fn image_repository_drops_the_tag_and_digest_but_not_a_registry_port() {
        for (reference, repo) in [
            ("nginx", "nginx"),
            ("nginx:1.25", "nginx"),
            ("library/nginx:latest", "library/nginx"),
            ("registry:5000/app", "registry:5000/app"),
            ("registry:5000/team/app:v1", "registry:5000/team/app"),
            ("app@sha256:0123abcd", "app"),
            ("app:v1@sha256:0123abcd", "app"),
            (
                "localhost:5000/a/b:tag@sha256:0123abcd",
                "localhost:5000/a/b",
            ),
        ] {
            assert_eq!(image_repository(reference), repo, "{reference}");
        }
    }

    fn service(name: &str, image: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            image: image.into(),
            ..Default::default()
        }
    }

    const ID: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn built_reference_is_the_repository_and_a_content_tag() {
        // Without image: STACK-SERVICE, lowercased (Docker refuses uppercase repositories).
        assert_eq!(
            service("Web", "").built_reference("Shop", ID),
            "shop-web:shoal-0123456789ab"
        );
        // image: names the repository; its own tag gives way to the content tag.
        assert_eq!(
            service("web", "registry:5000/team/app:dev").built_reference("shop", ID),
            "registry:5000/team/app:shoal-0123456789ab"
        );
        assert_eq!(
            service("web", "app@sha256:feed").built_reference("shop", ID),
            "app:shoal-0123456789ab"
        );
        // An id without its algorithm, or shorter than 12 digits, is used as it is.
        assert_eq!(
            service("web", "app").built_reference("shop", "0123456789abcdef"),
            "app:shoal-0123456789ab"
        );
        assert_eq!(
            service("web", "app").built_reference("shop", "sha256:abc"),
            "app:shoal-abc"
        );
    }

    #[test]
    fn an_unchanged_build_keeps_its_reference_and_a_changed_one_does_not() {
        let s = service("web", "");
        let other = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
        assert_eq!(s.built_reference("shop", ID), s.built_reference("shop", ID));
        assert_ne!(
            s.built_reference("shop", ID),
            s.built_reference("shop", other)
        );
    }
}
