//! Wiring: opens the Raft node, serves every gRPC service on one port, runs the
//! reconciler while this controller leads.
//!
//! Start-up: a data dir that already holds a controller (its `node-id` file) is resumed,
//! whatever `--init`/`--join` say, so a service manager can restart a controller with its
//! original command line. A new `--init` controller is member 1 of a new group; a new
//! `--join ADDR` controller asks the cluster at ADDR for an id, is added as a learner and
//! is promoted to voter by the leader once it has caught up.
//!
//! Security: `--init` creates the cluster CA and admin credentials; `--join` needs a
//! controller token and gets a certificate and the cluster key over TLS pinned to the
//! token's CA digest. Everything is served behind mutual TLS ([`crate::pki`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shoal_proto::pb;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::api::{self, Context};
use crate::faults::Faults;
use crate::liveness::Liveness;
use crate::logs::LogRouter;
use crate::membership;
use crate::pki;
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
    /// `--restore FILE`: a new one-member cluster with a backup's state and identity
    /// (unless the data dir already holds a controller, which resumes).
    Restore(Box<crate::backup::Backup>),
    /// `--force-new-cluster`: the data dir's controller becomes the only member of a new
    /// group with its state and identity ([`crate::recovery`]).
    ForceNewCluster,
}

impl Bootstrap {
    fn is_join(&self) -> bool {
        matches!(self, Bootstrap::Join(_))
    }
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
    /// `--join`: the controller join token (`shoal token show controller`).
    pub token: Option<String>,
    /// Lifetime of the node certificates this controller issues and of its own.
    pub cert_ttl: Duration,
    /// Lifetime of the admin credentials `--init` writes to `DATA_DIR/admin/`.
    pub admin_cert_ttl: Duration,
    /// `--init` with this CA instead of a new one. Tests set it to mint certificates of
    /// their own (expired ones, other roles); production never does.
    pub init_ca: Option<InitCa>,
    /// How long an image no service runs stays in the cluster's store.
    pub image_retention: Duration,
    /// `--init --pool CIDR`: the new cluster's address pool (default `10.208.0.0/12`).
    pub pool: Option<String>,
    /// `--metrics ADDR`: serve Prometheus metrics there on `/metrics` (default off).
    pub metrics: Option<SocketAddr>,
}

/// A CA's certificate and key (PEM), for [`ControllerConfig::init_ca`].
#[derive(Clone)]
pub struct InitCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for InitCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InitCa { .. }")
    }
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
            token: None,
            cert_ttl: pki::DEFAULT_CERT_TTL,
            admin_cert_ttl: pki::DEFAULT_CERT_TTL,
            init_ca: None,
            image_retention: crate::images::DEFAULT_RETENTION,
            pool: None,
            metrics: None,
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
    // Bound before anything starts: a taken metrics address stops the controller at once.
    let metrics_listener = match cfg.metrics {
        Some(addr) => Some(shoal_tls::metrics_http::bind(addr).await?),
        None => None,
    };
    let advertise = cfg.advertise.clone().unwrap_or_else(|| local.to_string());
    let init_opts = pki::local::InitOptions {
        advertise: advertise.clone(),
        ttl: cfg.cert_ttl,
        admin_ttl: cfg.admin_cert_ttl,
    };
    let (id, fresh) = match membership::stored_id(&cfg.data_dir)? {
        Some(old) if cfg.bootstrap == Bootstrap::ForceNewCluster => {
            let id = crate::recovery::force_new_cluster(&cfg.data_dir, old, api::control::now_ms())
                .await?;
            membership::store_id(&cfg.data_dir, id)?;
            (id, id != old)
        }
        Some(id) => {
            tracing::info!(id, dir = %cfg.data_dir.display(), "resuming controller from its data dir");
            (id, false)
        }
        None => {
            let id = match &cfg.bootstrap {
                Bootstrap::ForceNewCluster => anyhow::bail!(
                    "{} holds no controller: --force-new-cluster needs the data dir of a controller that survived",
                    cfg.data_dir.display()
                ),
                Bootstrap::Restore(backup) => {
                    crate::recovery::prepare_restore(&cfg.data_dir, &init_opts, backup)?
                }
                Bootstrap::Init => {
                    let ca = match &cfg.init_ca {
                        Some(c) => Some(pki::ClusterCa::from_pem(&c.cert_pem, &c.key_pem)?),
                        None => None,
                    };
                    pki::local::init(&cfg.data_dir, &init_opts, ca)?;
                    1
                }
                Bootstrap::Join(addrs) => {
                    let token = cfg.token.as_deref().ok_or_else(|| {
                        anyhow::anyhow!(
                            "--join needs --token T: run `shoal token show controller` against the cluster"
                        )
                    })?;
                    pki::local::join(&cfg.data_dir, addrs, &advertise, token)
                        .await
                        .with_context(|| format!("join the cluster at {addrs}"))?
                }
            };
            membership::store_id(&cfg.data_dir, id)?;
            (id, true)
        }
    };
    let me = Arc::new(pki::Local::load(&cfg.data_dir, cfg.cert_ttl)?);
    let host = pki::ca::host_of(&advertise);
    if host == "0.0.0.0" || host == "::" {
        tracing::warn!(%advertise, "the controller's certificate names only loopback addresses: pass --advertise HOST:PORT so other machines can verify it");
    }
    let node = raft::open_with_tls(
        &cfg.data_dir,
        id,
        advertise.clone(),
        cfg.timings.clone(),
        cfg.faults.clone(),
        Some(me.client.clone()),
    )
    .await
    .with_context(|| format!("open the controller data dir {}", cfg.data_dir.display()))?;
    if fresh && !cfg.bootstrap.is_join() {
        raft::initialize_single(&node).await?;
    }
    crate::recovery::commit_seed(&node).await?;
    if let Some(record) = pki::local::pending(&cfg.data_dir)? {
        commit_pki(&node, record).await?;
        pki::local::clear_pending(&cfg.data_dir)?;
    }
    if let (true, Bootstrap::Init, Some(pool)) = (fresh, &cfg.bootstrap, &cfg.pool) {
        commit_pool(&node, pool).await?;
    }

    let (batcher, batched) = api::batch::channel();
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
        pki: me.clone(),
        transfers: Default::default(),
        blobs: crate::images::BlobStore::open(&cfg.data_dir)
            .with_context(|| format!("open the image store in {}", cfg.data_dir.display()))?,
        autoscale: Default::default(),
        observe: Default::default(),
        views: crate::views::channel(),
        batcher,
    });
    let metrics =
        metrics_listener.map(|l| crate::observe::metrics::serve(&ctx, l, shutdown.clone()));
    tracing::info!(id, listen = %local, %advertise, "controller serving");

    let leader = tokio::spawn(crate::leader::run(
        ctx.clone(),
        cfg.node_grace,
        shutdown.clone(),
    ));
    let autoscale = tokio::spawn(crate::autoscale::run::run(ctx.clone(), shutdown.clone()));
    let observe = tokio::spawn(crate::observe::run(ctx.clone(), shutdown.clone()));
    let views = tokio::spawn(crate::views::run(ctx.clone(), shutdown.clone()));
    let batches = tokio::spawn(api::batch::run(ctx.clone(), batched, shutdown.clone()));
    let images = tokio::spawn(crate::images::replicate::run(
        ctx.clone(),
        cfg.image_retention,
        shutdown.clone(),
    ));
    let renew = tokio::spawn(
        me.clone()
            .renew_loop(ctx.node.state.clone(), shutdown.clone()),
    );
    let leaders = tokio::spawn(crate::events::local::watch_leader(
        ctx.node.raft.clone(),
        ctx.node.state.events(),
        shutdown.clone(),
    ));
    // Every service behind TLS; roles per service (see `pki::auth`).
    let (incoming, accepting) =
        pki::listener::incoming(listener, me.server.clone(), shutdown.clone());
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(InterceptedService::new(
            pb::control_server::ControlServer::new(api::control::ControlService::new(ctx.clone())),
            pki::auth::Guard::admin(ctx.node.state.clone()),
        ))
        .add_service(InterceptedService::new(
            pb::agent_session_server::AgentSessionServer::new(
                api::agent_session::AgentSessionService::new(ctx.clone()),
            ),
            pki::auth::Guard::agent(ctx.node.state.clone()),
        ))
        .add_service(InterceptedService::new(
            pb::volume_data_server::VolumeDataServer::new(api::volumes::VolumeDataService::new(
                ctx.clone(),
            )),
            pki::auth::Guard::agent(ctx.node.state.clone()),
        ))
        .add_service(InterceptedService::new(
            pb::image_push_server::ImagePushServer::new(api::images::ImagePushService::new(
                ctx.clone(),
            ))
            .max_decoding_message_size(4 << 20),
            pki::auth::Guard::admin(ctx.node.state.clone()),
        ))
        .add_service(InterceptedService::new(
            pb::image_store_server::ImageStoreServer::new(api::images::ImageStoreService::new(
                ctx.clone(),
            )),
            pki::auth::Guard::readers(ctx.node.state.clone()),
        ))
        .add_service(InterceptedService::new(
            raft::RaftPeerService::with_faults(ctx.node.raft.clone(), cfg.faults.clone())
                .into_server(),
            pki::auth::Guard::controller(ctx.node.state.clone()),
        ))
        .add_service(pb::pki_server::PkiServer::new(
            pki::service::PkiService::new(ctx.clone()),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await
        .context("serve gRPC");
    let _ = leader.await;
    let _ = autoscale.await;
    let _ = observe.await;
    let _ = views.await;
    let _ = batches.await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    let _ = images.await;
    let _ = renew.await;
    let _ = leaders.await;
    // The port is free again once the accept loop has dropped the listener.
    let _ = accepting.await;
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

/// How long `--init` waits to commit its PKI record (it is alone, so it leads at once).
const COMMIT_PKI_BOUND: Duration = Duration::from_secs(20);

/// Commits the address pool `--init --pool` gave (a fresh cluster is alone, so it
/// leads at once).
async fn commit_pool(node: &raft::RaftNode, pool: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let cmd = crate::state::Command::SetPool {
            pool: pool.to_string(),
        };
        match raft::propose(&node.raft, cmd).await {
            Ok(r) => match r.error {
                None => return Ok(()),
                Some(e) => anyhow::bail!("set the address pool: {e}"),
            },
            Err(e) if start.elapsed() > COMMIT_PKI_BOUND => {
                anyhow::bail!("store the address pool in the Raft state: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Commits the record `--init` made, unless the state already has one.
async fn commit_pki(node: &raft::RaftNode, record: pki::PkiRecord) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if node.state.read().pki.is_some() {
            return Ok(());
        }
        let cmd = crate::state::Command::SetPki {
            record: record.clone(),
        };
        match raft::propose(&node.raft, cmd).await {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() > COMMIT_PKI_BOUND => {
                anyhow::bail!("store the cluster CA in the Raft state: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
