//! Wiring: opens the Raft node, serves every gRPC service on one port, runs the
//! reconciler while this controller leads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::api::{self, Context};
use crate::liveness::Liveness;
use crate::logs::LogRouter;
use crate::raft::{self, RaftTimings};
use shoal_proto::pb;

/// How a controller starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// `--init`: create a cluster of one, unless the data dir already holds one.
    Init,
    /// `--join ADDR`: join an existing cluster (a later issue).
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
}

impl ControllerConfig {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        ControllerConfig {
            data_dir,
            listen,
            advertise: None,
            bootstrap: Bootstrap::Init,
            node_grace: Duration::from_secs(2),
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

/// Like [`run`], on a listener the caller bound (tests bind port 0).
pub async fn serve(
    cfg: ControllerConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| local.to_string());
    if let Bootstrap::Join(addr) = &cfg.bootstrap {
        anyhow::bail!(
            "joining an existing cluster ({addr}) is not supported yet: start this controller with --init"
        );
    }
    let raft_dir = cfg.data_dir.join("raft-node");
    let node = raft::open(&cfg.data_dir, 1, advertise.clone(), RaftTimings::default())
        .await
        .with_context(|| format!("open the controller data dir {}", cfg.data_dir.display()))?;
    let _ = raft_dir;
    raft::initialize_single(&node).await?;
    raft::wait_for_leader(&node.raft, Duration::from_secs(10)).await?;

    let ctx = Arc::new(Context {
        node,
        logs: LogRouter::default(),
        sessions: api::Sessions::default(),
        liveness: Mutex::new(Liveness::new(cfg.node_grace, Instant::now())),
    });
    tracing::info!(listen = %local, %advertise, "controller serving");

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
        .add_service(raft::RaftPeerService::new(ctx.node.raft.clone()).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await
        .context("serve gRPC");
    let _ = leader.await;
    if let Err(e) = ctx.node.raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    result
}
