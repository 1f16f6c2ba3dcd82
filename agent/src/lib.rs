//! The shoal agent: one per node. It owns this node's side of the cluster:
//!
//! - [`session`]: the long-lived gRPC session with the controller leader (Hello,
//!   heartbeats, task status and logs up; assignments and log requests down).
//! - [`supervisor`]: the local reconciler that makes the container runtime match the
//!   assignments, fences containers not assigned here, and reports state transitions;
//!   its decisions are the pure [`reconcile::plan`].
//! - [`runtime`]: the [`runtime::ContainerRuntime`] trait, its Docker implementation and
//!   the recording fake; [`runtime::container_request`] turns a spec into a container.
//! - [`disconnect`]: the disconnect policy, stopping replicas of services that ask for it
//!   while no controller is reachable.
//! - [`proxy`]: ingress ports, forwarding a published port to ready replicas on any node
//!   (the routing mesh).
//! - [`net`]: the cluster network on this node: stack subnets, host-gw routes, iptables
//!   isolation, the DNS server that answers service names cluster-wide, and what on the
//!   node overlaps the cluster's pool (routes, other Docker networks; reported when it
//!   changes).
//! - [`logs`]: container output streamed for the controller's log requests.
//! - [`gpu`]: this node's GPUs ([`gpu::GpuInventory`]: NVML, an inventory file, or a
//!   fake), rediscovered periodically and reported to the controller when they change.
//! - [`devices`]: this node's device paths (rescanned, reported when they change) and
//!   its platform, which the scheduler matches against `devices:` and `platform:`.
//! - [`volumes`]: named volumes: made with shoal's labels before their containers,
//!   reported with their sizes, removed when the controller says, and their contents
//!   exported to or imported from another node through the leader (tar streams, in two
//!   passes around a short pause of their containers for a frozen export); standby
//!   copies kept under `DATA_DIR/standby/` and promoted into the volume when asked.
//! - [`images`]: images from the cluster's own store when the engine lacks them (by
//!   `pull_policy`), loaded with only the layers the engine lacks; the node's images
//!   reported on the session; the images it loaded removed once unused and forgotten by
//!   the store.
//! - [`autoscale`]: the `scrape`, `cpu` and `memory` metrics of this node's replicas of
//!   autoscaled services, measured every 5 s and reported to the leader, which decides.
//! - [`stats`]: every replica's container figures (CPU, memory, network, restarts),
//!   measured every 5 s, sent to the leader with the GPUs' and shown on [`metrics`]
//!   (`--metrics ADDR`: a `prometheus-client` registry on `/metrics`).
//! - [`credentials`]: the node's certificate: joined with a token, reused, renewed.
//! - [`model`] and [`convert`]: the agent's domain types and their wire conversions (the
//!   only place that knows prost types, besides the data planes: volume transfers and
//!   [`images::source`], with [`images::convert`]).
//!
//! What it must not do: decide placement or restarts (the controller does: an ended task
//! stays ended, and the agent never restarts a container), touch containers without the
//! `io.shoal.task` label or labelled for another node, or stop containers because the
//! session was lost or the agent shut down (an agent restart must not restart containers),
//! except the replicas whose service asked for it (`x-shoal-disconnect: stop`).
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub mod autoscale;
pub mod convert;
pub mod credentials;
pub mod devices;
pub mod disconnect;
pub mod gpu;
pub mod images;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod net;
pub mod proxy;
pub mod reconcile;
pub mod runtime;
pub mod secrets;
pub mod session;
pub mod stats;
pub mod supervisor;
pub mod volumes;

use runtime::ContainerRuntime;

/// How often the agent heartbeats on its session (the controller acks each one, which
/// is how the agent knows a controller is reachable; see [`disconnect`]).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);

/// How often the supervisor looks at the runtime.
pub const OBSERVE_INTERVAL: Duration = Duration::from_millis(500);

/// One agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Controller `host:port`s; any of them, the agent follows the leader.
    pub controllers: Vec<String>,
    /// The node's name, which is also its id.
    pub name: String,
    /// The agent's own files: its credentials (`tls/`), the standby copies of volumes
    /// it keeps (`standby/<engine name>/current`), the tars of images being loaded
    /// (`images/tmp/`) and the record of the images it loaded (`images/loaded.json`).
    pub data_dir: PathBuf,
    /// `unix:///path` or `tcp://host:port`; `None`: `DOCKER_HOST`, else the local socket.
    pub docker: Option<String>,
    /// This node's IP as others reach it; `None`: the source IP toward the controller.
    pub advertise: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub heartbeat_interval: Duration,
    /// Where the node's GPUs come from (NVML unless `--gpu-inventory` is given).
    pub gpus: gpu::GpuSource,
    /// How often GPUs are rediscovered.
    pub gpu_rediscover_interval: Duration,
    /// `--metrics ADDR`: serve Prometheus metrics (per-GPU and per-task figures, image
    /// transfers) on `/metrics`.
    pub metrics: Option<std::net::SocketAddr>,
    /// Join token, needed on the first start only (later starts reuse the credentials
    /// in `DATA_DIR/tls/`).
    pub token: Option<String>,
    /// Talk to the controller without TLS. Only tests against in-process fake
    /// controllers set it: real controllers have no plaintext listener.
    pub plaintext: bool,
    /// Where tasks' secret files are kept (a tmpfs is mounted there if it is on a disk);
    /// `None`: [`secrets::default_dir`].
    pub secrets_dir: Option<PathBuf>,
    /// How assigned GPUs are named to Docker (`--gpu-cdi`: CDI names).
    pub gpu_mode: runtime::GpuDeviceMode,
    /// Where the node's device paths are scanned ([`devices::DEV_ROOT`]; tests point it
    /// at a directory of their own).
    pub devices_root: PathBuf,
    /// How often the device paths are scanned again.
    pub device_rescan_interval: Duration,
    /// Where the node's IPv4 routes are read for the pool conflict scan
    /// ([`net::conflicts::ROUTES_FILE`]; tests point it at a file of their own).
    pub routes_file: PathBuf,
    /// How often the node is scanned for what overlaps the cluster's pool.
    pub conflict_rescan_interval: Duration,
    /// How often the replicas of autoscaled services are measured
    /// ([`autoscale::INTERVAL`]; tests shorten it).
    pub autoscale_interval: Duration,
    /// How often every replica's container is measured ([`stats::INTERVAL`]; tests
    /// shorten it).
    pub stats_interval: Duration,
    /// How often the supervisor lists the runtime's containers ([`OBSERVE_INTERVAL`]).
    pub observe_interval: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            controllers: vec![format!("127.0.0.1:{}", shoal_proto::DEFAULT_PORT)],
            name: hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "node".to_string()),
            data_dir: PathBuf::from("shoal-agent"),
            docker: None,
            advertise: None,
            labels: BTreeMap::new(),
            heartbeat_interval: HEARTBEAT_INTERVAL,
            gpus: gpu::GpuSource::default(),
            gpu_rediscover_interval: gpu::REDISCOVER_INTERVAL,
            metrics: None,
            token: None,
            plaintext: false,
            secrets_dir: None,
            gpu_mode: runtime::GpuDeviceMode::Nvidia,
            devices_root: PathBuf::from(devices::DEV_ROOT),
            device_rescan_interval: devices::RESCAN_INTERVAL,
            routes_file: PathBuf::from(net::conflicts::ROUTES_FILE),
            conflict_rescan_interval: net::conflicts::RESCAN_INTERVAL,
            autoscale_interval: autoscale::INTERVAL,
            stats_interval: stats::INTERVAL,
            observe_interval: OBSERVE_INTERVAL,
        }
    }
}

/// Run an agent on the Docker engine `cfg.docker` until `shutdown`.
pub async fn run(cfg: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let docker = runtime::docker::DockerRuntime::connect(cfg.docker.as_deref()).await?;
    // Asked now so that the log says at start which image store the engine has.
    docker.loads_need_every_layer().await;
    run_with_runtime(cfg, Arc::new(docker), shutdown).await
}

/// Run an agent on any runtime (tests pass a [`runtime::fake::FakeRuntime`]).
/// On `shutdown` the session closes and containers are left running.
pub async fn run_with_runtime(
    cfg: AgentConfig,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(!cfg.name.is_empty(), "the node needs a name (--name)");
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("create agent data directory {}", cfg.data_dir.display()))?;
    info!(node = %cfg.name, controllers = ?cfg.controllers, "agent starting");
    // A bad inventory file stops start-up here, before anything else runs.
    let gpus = gpu::watch(
        cfg.gpus.open(),
        cfg.gpu_rediscover_interval,
        shutdown.child_token(),
    )
    .await
    .context("discover GPUs")?;
    let devices = devices::watch(
        cfg.devices_root.clone(),
        cfg.device_rescan_interval,
        shutdown.child_token(),
    )
    .await;
    let image_counters = Arc::new(images::ImageCounters::default());
    // Filled once the cluster is known (its id tells its containers), read by `/metrics`
    // from the start.
    let (task_stats, task_stats_rx) = stats::channel();
    if let Some(addr) = cfg.metrics {
        let listener = metrics::bind(addr).await?;
        tokio::spawn(metrics::serve(
            listener,
            metrics::Sources {
                node: cfg.name.clone(),
                gpus: gpus.clone(),
                images: image_counters.clone(),
                tasks: task_stats_rx.clone(),
            },
            shutdown.child_token(),
        ));
    }
    let credentials = if cfg.plaintext {
        None
    } else {
        let obtain = credentials::AgentCredentials::obtain(
            &cfg.data_dir,
            &cfg.name,
            &cfg.controllers,
            cfg.token.as_deref(),
        );
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            c = obtain => Some(c?),
        }
    };
    let renewal = credentials
        .clone()
        .map(|c| tokio::spawn(c.renew_loop(shutdown.child_token())));
    // Any controller answers for the cluster's image store, over the node's mTLS.
    let store = images::GrpcSource::new(
        cfg.controllers.clone(),
        credentials.as_ref().map(|c| c.tls.clone()),
    );
    let images = Arc::new(images::Images::new(
        Some(Arc::new(store)),
        &cfg.data_dir,
        image_counters,
    ));
    // The images this agent loaded, removed once unused and gone from the store.
    tokio::spawn(images::Pruner::new(images.clone(), runtime.clone()).run(shutdown.child_token()));
    let (space, space_rx) = tokio::sync::watch::channel(Default::default());
    let conflicts = net::conflicts::watch(
        runtime.clone(),
        net::conflicts::ScanConfig {
            routes_file: cfg.routes_file.clone(),
            interval: cfg.conflict_rescan_interval,
            cluster: credentials.as_ref().and_then(|c| c.cluster_id()),
        },
        space_rx,
        shutdown.child_token(),
    );
    let stop_supervisor = shutdown.child_token();
    let contact = disconnect::Contact::new();
    let standbys = volumes::standby::Standbys::in_data_dir(&cfg.data_dir);
    let thawed = volumes::thawed::Thawed::default();
    let (handle, events) = supervisor::spawn_with_contact(
        supervisor::SupervisorConfig {
            node: cfg.name.clone(),
            poll_interval: cfg.observe_interval,
            ingress: runtime.supports_ingress(),
            secrets: Some(Arc::new(secrets::SecretStore::open(
                &cfg.secrets_dir
                    .clone()
                    .unwrap_or_else(|| secrets::default_dir(&cfg.name, &cfg.data_dir)),
            ))),
            gpu_mode: cfg.gpu_mode.clone(),
            standbys: Some(standbys.clone()),
            thawed: thawed.clone(),
            images: images.clone(),
            cluster: credentials.as_ref().and_then(|c| c.cluster_id()),
        },
        runtime.clone(),
        Some(contact.clone()),
        stop_supervisor.clone(),
    );
    let supervisor = handle.clone();
    tokio::spawn(stats::watch(
        runtime.clone(),
        cfg.name.clone(),
        credentials.as_ref().and_then(|c| c.cluster_id()),
        cfg.stats_interval,
        task_stats,
        shutdown.child_token(),
    ));
    let autoscaler = autoscale::Autoscaler::new(&cfg.name, runtime.clone(), cfg.autoscale_interval);
    let result = session::run(
        session::SessionConfig {
            controllers: cfg.controllers,
            name: cfg.name.clone(),
            advertise: cfg.advertise,
            labels: cfg.labels,
            heartbeat_interval: cfg.heartbeat_interval,
            gpus,
            devices,
            conflicts,
            space,
            contact,
            tls: credentials.as_ref().map(|c| c.tls.clone()),
            standbys,
            thawed,
            images,
            autoscale: autoscaler,
            stats: task_stats_rx,
        },
        runtime,
        handle,
        events,
        shutdown,
    )
    .await;
    stop_supervisor.cancel();
    // The supervisor removes the routes and filters it installed on the host.
    if tokio::time::timeout(std::time::Duration::from_secs(10), supervisor.stopped())
        .await
        .is_err()
    {
        warn!(node = %cfg.name, "the supervisor did not stop within 10 s");
    }
    if let Some(r) = renewal {
        r.abort();
    }
    info!(node = %cfg.name, "agent stopped");
    result
}
