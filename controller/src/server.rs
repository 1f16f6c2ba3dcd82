//! Wiring: opens the Raft node, serves every gRPC service on one port, runs the
//! reconciler while this controller leads.
//!
//! Start-up: a data dir that already holds a controller (its `node-id` file) is resumed,
//! whatever `--init`/`--join` say, so a service manager can restart a controller with its
//! original command line. A new `--init` controller is member 1 of a new group; a new
//! `--join ADDR` controller asks the cluster at ADDR for an id, is added as a learner and
//! is promoted to voter by the leader once it has caught up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shoal_proto::pb;
use tokio_util::sync::CancellationToken;

use crate::api::{self, Context};
use crate::faults::Faults;
use crate::liveness::Liveness;
use crate::logs::LogRouter;
use crate::membership;
use crate::raft::{self, RaftTimings};

/// How long a stopping controller waits for Raft's background tasks to close its
/// storage (a replication RPC in flight finishes or times out first).
const STORES_CLOSE_BOUND: Duration = Duration::from_secs(10);

/// How a controller starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// `--init`: create a cluster of one, unless the data dir already holds one.
    Init,
    /// `--join ADDR[,ADDR..]`: join the cluster any of these controllers belongs to.
    Join(String),
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// host:port other members, agents and clients reach this controller at.
    pub advertise: Option<String>,
    pub bootstrap: Bootstrap,
    /// How long a node may stay silent before it is declared down.
    pub node_grace: Duration,
    pub timings: RaftTimings,
    /// Tests partition a controller through this; production never sets it.
    pub faults: Arc<Faults>,
    /// How long a write may wait to commit ([`api::PROPOSE_TIMEOUT`] by default; tests
    /// with partitions use shorter ones).
    pub propose_timeout: Duration,
    /// How long a read may wait to confirm leadership ([`api::READ_TIMEOUT`] by default).
    pub read_timeout: Duration,
}

impl ControllerConfig {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        ControllerConfig {
            data_dir,
            listen,
            advertise: None,
            bootstrap: Bootstrap::Init,
            node_grace: crate::liveness::DEFAULT_NODE_GRACE,
            timings: RaftTimings::default(),
            faults: Arc::default(),
            propose_timeout: api::PROPOSE_TIMEOUT,
            read_timeout: api::READ_TIMEOUT,
        }
    }
}

/// Runs a controller until `shutdown` is cancelled.
pub async fn run(cfg: ControllerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.listen))?;
    serve(cfg, listener, shutdown).await
}

/// Like [`run`], on a listener the caller bound (tests bind port 0). Returns once the
/// controller let go of its port and its data dir, so it can be started again at once.
pub async fn serve(
    cfg: ControllerConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| local.to_string());
    let (id, fresh) = match membership::stored_id(&cfg.data_dir)? {
        Some(id) => {
            tracing::info!(id, dir = %cfg.data_dir.display(), "resuming controller from its data dir");
            (id, false)
        }
        None => {
            let id = match &cfg.bootstrap {
                Bootstrap::Init => 1,
                Bootstrap::Join(addrs) => join(addrs, &advertise).await?,
            };
            membership::store_id(&cfg.data_dir, id)?;
            (id, true)
        }
    };
    let node = raft::open_with_faults(
        &cfg.data_dir,
        id,
        advertise.clone(),
        cfg.timings.clone(),
        cfg.faults.clone(),
    )
    .await
    .with_context(|| format!("open the controller data dir {}", cfg.data_dir.display()))?;
    if fresh && cfg.bootstrap == Bootstrap::Init {
        raft::initialize_single(&node).await?;
    }

    let ctx = Arc::new(Context {
        node,
        logs: LogRouter::default(),
        sessions: api::Sessions::default(),
        liveness: Mutex::new(Liveness::new(cfg.node_grace, Instant::now())),
        faults: cfg.faults.clone(),
        join_lock: tokio::sync::Mutex::new(()),
        propose_timeout: cfg.propose_timeout,
        read_timeout: cfg.read_timeout,
        shutdown: shutdown.clone(),
    });
    tracing::info!(id, listen = %local, %advertise, "controller serving");

    let leader = tokio::spawn(crate::leader::run(
        ctx.clone(),
        cfg.node_grace,
        shutdown.clone(),
    ));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(pb::control_server::ControlServer::new(
            api::control::ControlService::new(ctx.clone()),
        ))
        .add_service(pb::agent_session_server::AgentSessionServer::new(
            api::agent_session::AgentSessionService::new(ctx.clone()),
        ))
        .add_service(
            raft::RaftPeerService::with_faults(ctx.node.raft.clone(), cfg.faults.clone())
                .into_server(),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await
        .context("serve gRPC");
    let _ = leader.await;
    if let Err(e) = ctx.node.raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    // Raft's detached tasks (replication, snapshot building) let go of the data dir
    // shortly after; a controller restarted in the same process must find it unlocked.
    if !ctx.node.wait_closed(STORES_CLOSE_BOUND).await {
        tracing::warn!(dir = %cfg.data_dir.display(), "raft storage still open after shutdown");
    }
    result
}

/// Asks the cluster (any of `addrs`, following leader hints) to add `advertise` as a
/// member; returns the id it was given.
async fn join(addrs: &str, advertise: &str) -> anyhow::Result<u64> {
    let mut last_error = None;
    let mut targets: Vec<String> = addrs.split(',').map(|s| s.trim().to_string()).collect();
    let mut hops = 0;
    while let Some(addr) = targets.pop() {
        let attempt = async {
            let mut client =
                pb::control_client::ControlClient::connect(format!("http://{addr}")).await?;
            let reply = client
                .join_controller(pb::JoinControllerRequest {
                    address: advertise.to_string(),
                })
                .await;
            anyhow::Ok(reply)
        };
        match tokio::time::timeout(Duration::from_secs(15), attempt).await {
            Ok(Ok(Ok(reply))) => {
                let id = reply.into_inner().id;
                tracing::info!(id, via = %addr, "joined the cluster");
                return Ok(id);
            }
            Ok(Ok(Err(status))) => {
                let hint = status
                    .metadata()
                    .get(api::LEADER_HINT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match hint {
                    Some(leader) if hops < 3 => {
                        hops += 1;
                        targets.push(leader);
                    }
                    _ => last_error = Some(anyhow::anyhow!("{addr}: {}", status.message())),
                }
            }
            Ok(Err(e)) => last_error = Some(anyhow::anyhow!("{addr}: {e}")),
            Err(_) => last_error = Some(anyhow::anyhow!("{addr}: no answer within 15 s")),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no address given")))
        .with_context(|| format!("join the cluster at {addrs}"))
}
