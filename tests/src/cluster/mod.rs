//! An in-process shoal cluster for high-availability tests: N controllers (each a real
//! Raft member serving real gRPC on its own 127.0.0.1 port) and M agents on the recording
//! [`FakeRuntime`], all in the test's own tokio runtime.
//!
//! What a test can do to it:
//! - [`Cluster::kill`] a controller (cancel it and wait, bounded, until it has let go of
//!   its port and its data dir) and [`Cluster::restart`] it with the same data dir, port
//!   and bootstrap ("the same command line");
//! - [`Cluster::isolate`] / [`Cluster::heal`] a controller: its Raft RPCs are dropped both
//!   ways and agent sessions refused, while its `Control` API still answers;
//! - [`Cluster::add_agent`], [`Cluster::kill_agent`] (a power cut) and
//!   [`Cluster::revive_agent`] (the node comes back with what its engine still runs);
//! - find the [`Cluster::leader`], talk to the cluster through a [`Client`] that follows
//!   leader hints, or to one controller through [`Cluster::direct`].
//!
//! Security is real: the first controller is `--init`ed with the harness's own CA
//! ([`Cluster::ca`]), the others join with the controller token, agents with the agent
//! token, and every client call uses the admin credentials `--init` wrote.
//!
//! Waiting is always bounded polling ([`eventually`]); nothing relies on a fixed sleep.
//! Dropping the cluster cancels every controller and agent, also when the test panics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_agent::gpu::{fake::FakeInventory, GpuSource};
use shoal_agent::runtime::fake::FakeRuntime;
use shoal_agent::AgentConfig;
use shoal_controller::faults::Faults;
use shoal_controller::pki::ClusterCa;
use shoal_controller::raft::RaftTimings;
use shoal_controller::{Bootstrap, ControllerConfig, InitCa};
use shoal_proto::pb::{self, control_client::ControlClient};
use shoal_tls::{ClientTls, CredentialFiles, Role};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Status;

/// The leader hint a follower answers with (`x-shoal-leader`).
mod client;
use client::connect;
pub use client::{is_not_leader, leader_hint, Client};
mod helpers;
pub use helpers::{channel, eventually, init_tracing, mint, stack};

pub const LEADER_HINT: &str = shoal_controller::api::LEADER_HINT;

/// How long a controller may take to stop after its token is cancelled (it waits up to
/// 10 s itself for Raft's background tasks to close its storage).
const STOP_BOUND: Duration = Duration::from_secs(15);
/// How long one client call may keep retrying (following hints, waiting for a leader).
const CALL_BOUND: Duration = Duration::from_secs(20);
/// Poll period of [`eventually`] and of the client's retries.
const POLL: Duration = Duration::from_millis(50);

/// Knobs of the cluster under test. The defaults are fast LAN timings that still hold
/// on a loaded two-core machine.
#[derive(Debug, Clone)]
pub struct Options {
    pub timings: RaftTimings,
    /// How long a write may wait to commit before the controller answers UNAVAILABLE.
    pub propose_timeout: Duration,
    /// How long a read may wait for the leader to confirm it leads.
    pub read_timeout: Duration,
    /// How long a node may stay silent before the leader declares it down.
    pub node_grace: Duration,
    pub heartbeat_interval: Duration,
    /// Lifetime of node certificates (agents renew theirs two thirds into it).
    pub cert_ttl: Duration,
    /// How long an image no service runs stays in the cluster's store.
    pub image_retention: Duration,
    /// Every controller serves `/metrics` on a port of its own ([`Cluster::metrics_addr`]).
    pub metrics: bool,
    /// How often the fake agents list their containers. A bench of 1,000 agents in one
    /// process lengthens it: listing is the harness's cost, not the controller's.
    pub agent_observe: Duration,
    /// Run the controllers on a runtime of their own, on threads named
    /// [`CONTROLLER_THREADS`] (a bench measures their CPU apart from the fake agents').
    pub controller_runtime: bool,
}

/// The name of the threads the controllers run on with [`Options::controller_runtime`].
pub const CONTROLLER_THREADS: &str = "shoal-ctl";

/// The runtime the controllers run on with [`Options::controller_runtime`]: two workers
/// (like the machine's cores), kept for the rest of the process.
fn controller_runtime() -> tokio::runtime::Handle {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(CONTROLLER_THREADS.into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .thread_name(CONTROLLER_THREADS)
                        .enable_all()
                        .build()
                        .expect("a runtime for the controllers");
                    let _ = tx.send(rt.handle().clone());
                    rt.block_on(std::future::pending::<()>());
                })
                .expect("a thread for the controllers' runtime");
            rx.recv().expect("the controllers' runtime")
        })
        .clone()
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timings: RaftTimings {
                heartbeat_ms: 50,
                election_timeout_min_ms: 300,
                election_timeout_max_ms: 600,
                ..RaftTimings::default()
            },
            propose_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(2),
            node_grace: Duration::from_secs(5),
            heartbeat_interval: Duration::from_millis(100),
            cert_ttl: shoal_controller::pki::DEFAULT_CERT_TTL,
            image_retention: shoal_controller::images::DEFAULT_RETENTION,
            metrics: false,
            agent_observe: shoal_agent::OBSERVE_INTERVAL,
            controller_runtime: false,
        }
    }
}

/// One controller slot: what survives a kill (address, data dir, command line, fault
/// switch) and the running instance, if any.
struct Controller {
    addr: SocketAddr,
    data_dir: PathBuf,
    bootstrap: Bootstrap,
    faults: Arc<Faults>,
    /// Its `--metrics` address (kept across restarts), with [`Options::metrics`].
    metrics: Option<SocketAddr>,
    running: Option<Running>,
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// One fake agent.
pub struct Agent {
    pub name: String,
    /// The agent's container engine: what runs on the node.
    pub fake: FakeRuntime,
    /// The node's GPUs (none unless the test gave some).
    pub gpus: FakeInventory,
    /// The agent's `--labels`.
    pub labels: BTreeMap<String, String>,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

pub struct Cluster {
    controllers: Vec<Controller>,
    /// Raft id of each controller slot, learnt when it first started.
    ids: Vec<u64>,
    pub agents: BTreeMap<String, Agent>,
    /// The GPUs and labels of agents killed with [`Cluster::kill_agent`], for revival.
    killed: BTreeMap<String, (FakeInventory, BTreeMap<String, String>)>,
    opts: Options,
    /// Parent of every controller's and agent's token: cancelled on drop.
    root: CancellationToken,
    /// The cluster CA, made here and given to the first controller's `--init`, so
    /// tests can mint certificates of their own (other roles, expired ones).
    pub ca: Arc<ClusterCa>,
    /// The admin credentials the first controller's `--init` wrote.
    admin: Option<ClientTls>,
    /// Join tokens (learnt from the first controller once it runs).
    controller_token: Option<String>,
    agent_token: Option<String>,
    _dir: tempfile::TempDir,
    /// The agents' secrets, on /dev/shm (a tmpfs, so no agent mounts one).
    secrets: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` controllers (the first with `--init`, the others joining it, one at a
    /// time, so controller `i` gets Raft id `i + 1`) and one fake agent per name, and
    /// waits until every controller votes and every node is ready.
    pub async fn start(n: usize, agents: &[&str]) -> Cluster {
        Cluster::start_with(n, agents, Options::default()).await
    }

    pub async fn start_with(n: usize, agents: &[&str], opts: Options) -> Cluster {
        init_tracing();
        assert!(n >= 1, "a cluster needs a controller");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut listeners = Vec::new();
        for _ in 0..n {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a controller port");
            listeners.push(l);
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local addr"))
            .collect();
        let first = addrs[0].to_string();
        let controllers = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| Controller {
                addr: *addr,
                data_dir: dir.path().join(format!("controller-{}", i + 1)),
                bootstrap: if i == 0 {
                    Bootstrap::Init
                } else {
                    Bootstrap::Join(first.clone())
                },
                faults: Arc::default(),
                metrics: opts.metrics.then(free_port),
                running: None,
            })
            .collect();
        let mut cl = Cluster {
            controllers,
            ids: Vec::new(),
            agents: BTreeMap::new(),
            killed: BTreeMap::new(),
            opts,
            root: CancellationToken::new(),
            ca: Arc::new(ClusterCa::generate().expect("make a CA")),
            secrets: tempfile::tempdir_in("/dev/shm").expect("a directory on /dev/shm"),
            admin: None,
            controller_token: None,
            agent_token: None,
            _dir: dir,
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            if i == 1 {
                cl.controller_token = Some(cl.token(Role::Controller).await);
            }
            cl.spawn_controller(i, listener);
            let id = eventually(Duration::from_secs(20), "the controller's id", || async {
                shoal_controller::membership::stored_id(&cl.controllers[i].data_dir)
                    .ok()
                    .flatten()
            })
            .await;
            cl.ids.push(id);
            if i == 0 {
                let admin = cl.controllers[0].data_dir.join("admin");
                let creds = eventually(Duration::from_secs(20), "admin credentials", || async {
                    CredentialFiles::load(&admin).ok().flatten()
                })
                .await;
                cl.admin = Some(ClientTls::from_credentials(&creds).expect("admin credentials"));
            }
            let voters = i + 1;
            eventually(
                Duration::from_secs(30),
                &format!("{voters} voting controllers"),
                || async {
                    let s = cl.status_of_leader().await?;
                    let followers = s
                        .members
                        .iter()
                        .filter(|m| m.role == "leader" || m.role == "follower")
                        .count();
                    (followers == voters).then_some(())
                },
            )
            .await;
        }
        // Agents may also be added later (`add_agent`, `add_agent_with_gpus`).
        cl.agent_token = Some(cl.token(Role::Agent).await);
        for name in agents {
            cl.spawn_agent(name);
        }
        cl.wait_nodes_ready().await;
        cl
    }

    fn spawn_controller(&mut self, i: usize, listener: tokio::net::TcpListener) {
        let c = &mut self.controllers[i];
        assert!(c.running.is_none(), "controller {i} is already running");
        let mut cfg = ControllerConfig::new(c.data_dir.clone(), c.addr);
        cfg.advertise = Some(c.addr.to_string());
        cfg.bootstrap = c.bootstrap.clone();
        cfg.timings = self.opts.timings.clone();
        cfg.faults = c.faults.clone();
        cfg.node_grace = self.opts.node_grace;
        cfg.propose_timeout = self.opts.propose_timeout;
        cfg.read_timeout = self.opts.read_timeout;
        cfg.cert_ttl = self.opts.cert_ttl;
        cfg.image_retention = self.opts.image_retention;
        cfg.metrics = c.metrics;
        cfg.token = self.controller_token.clone();
        cfg.init_ca = Some(InitCa {
            cert_pem: self.ca.cert_pem().to_string(),
            key_pem: self.ca.key_pem(),
        });
        let stop = self.root.child_token();
        let task = if self.opts.controller_runtime {
            let listener = listener.into_std().expect("the controller's listener");
            let stopped = stop.clone();
            controller_runtime().spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                shoal_controller::serve(cfg, listener, stopped).await
            })
        } else {
            tokio::spawn(shoal_controller::serve(cfg, listener, stop.clone()))
        };
        c.running = Some(Running { stop, task });
    }

    fn spawn_agent(&mut self, name: &str) {
        self.spawn_agent_on(
            name,
            FakeRuntime::new(),
            FakeInventory::default(),
            BTreeMap::new(),
        );
    }

    /// Starts one more fake agent, with these GPUs, and waits until its node is ready.
    pub async fn add_agent_with_gpus(&mut self, name: &str, gpus: FakeInventory) {
        self.spawn_agent_on(name, FakeRuntime::new(), gpus, BTreeMap::new());
        self.wait_nodes_ready().await;
    }

    fn spawn_agent_on(
        &mut self,
        name: &str,
        fake: FakeRuntime,
        gpus: FakeInventory,
        labels: BTreeMap<String, String>,
    ) {
        let cfg = AgentConfig {
            controllers: self.addrs(),
            name: name.to_string(),
            data_dir: self.agent_dir(name),
            heartbeat_interval: self.opts.heartbeat_interval,
            gpus: GpuSource::Inventory(Arc::new(gpus.clone())),
            // The fake inventory is cheap: rediscover often so tests see changes soon.
            gpu_rediscover_interval: Duration::from_millis(200),
            labels: labels.clone(),
            token: self.agent_token.clone(),
            secrets_dir: Some(self.secrets_dir(name)),
            observe_interval: self.opts.agent_observe,
            ..AgentConfig::default()
        };
        let stop = self.root.child_token();
        let task = tokio::spawn(shoal_agent::run_with_runtime(
            cfg,
            Arc::new(fake.clone()),
            stop.clone(),
        ));
        self.agents.insert(
            name.to_string(),
            Agent {
                name: name.to_string(),
                fake,
                gpus,
                labels,
                stop,
                task,
            },
        );
    }

    /// Starts one more fake agent (with `--labels`), without waiting for it.
    pub fn add_agent(&mut self, name: &str, labels: &[(&str, &str)]) {
        assert!(!self.agents.contains_key(name), "agent {name} already runs");
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.spawn_agent_on(name, FakeRuntime::new(), FakeInventory::default(), labels);
    }

    /// Stops agent `name` abruptly (as a power cut does: nothing is cleaned up) and waits,
    /// bounded, until its task ended. Its fake engine is returned: what ran there.
    pub async fn kill_agent(&mut self, name: &str) -> FakeRuntime {
        let Some(agent) = self.agents.remove(name) else {
            panic!("agent {name} is not running");
        };
        agent.stop.cancel();
        agent.task.abort();
        let _ = tokio::time::timeout(STOP_BOUND, agent.task).await;
        self.killed
            .insert(name.to_string(), (agent.gpus, agent.labels));
        agent.fake
    }

    /// Waits (at most `bound`) for agent `name` to end by itself; what it returned, and
    /// its engine. `None`: it still runs (it is left running).
    pub async fn agent_exit(
        &mut self,
        name: &str,
        bound: Duration,
    ) -> Option<(anyhow::Result<()>, FakeRuntime)> {
        let deadline = tokio::time::Instant::now() + bound;
        while !self.agents.get(name)?.task.is_finished() {
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
        let agent = self.agents.remove(name)?;
        let result = agent
            .task
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the agent task panicked: {e}")));
        Some((result, agent.fake))
    }

    /// Starts agent `name` again with the same data dir and the engine `fake` (what was
    /// left running on the node), as a machine that comes back, with its GPUs and labels.
    pub fn revive_agent(&mut self, name: &str, fake: FakeRuntime) {
        assert!(!self.agents.contains_key(name), "agent {name} already runs");
        let (gpus, labels) = self.killed.remove(name).unwrap_or_default();
        self.spawn_agent_on(name, fake, gpus, labels);
    }

    /// Waits until every agent's node is `ready`.
    pub async fn wait_nodes_ready(&self) {
        let want: Vec<&String> = self.agents.keys().collect();
        if want.is_empty() {
            return;
        }
        eventually(Duration::from_secs(30), "every node ready", || async {
            let nodes = self.client().nodes().await.ok()?;
            want.iter()
                .all(|n| nodes.iter().any(|r| &&r.name == n && r.status == "ready"))
                .then_some(())
        })
        .await;
    }

    /// Every controller's `host:port`, running or not.
    pub fn addrs(&self) -> Vec<String> {
        self.controllers
            .iter()
            .map(|c| c.addr.to_string())
            .collect()
    }

    /// Where controller `i` serves `/metrics` (the cluster was started with
    /// [`Options::metrics`]).
    pub fn metrics_addr(&self, i: usize) -> SocketAddr {
        self.controllers[i]
            .metrics
            .expect("the cluster was started with Options::metrics")
    }

    pub fn addr(&self, i: usize) -> String {
        self.controllers[i].addr.to_string()
    }

    pub fn len(&self) -> usize {
        self.controllers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.controllers.is_empty()
    }

    /// Raft id of controller slot `i`.
    pub fn id(&self, i: usize) -> u64 {
        self.ids[i]
    }

    /// The slot of Raft member `id`.
    pub fn slot(&self, id: u64) -> Option<usize> {
        self.ids.iter().position(|x| *x == id)
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.controllers[i].running.is_some()
    }

    pub fn is_isolated(&self, i: usize) -> bool {
        self.controllers[i].faults.is_isolated()
    }

    /// Running controllers that are not isolated.
    pub fn live(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|i| self.is_running(*i) && !self.is_isolated(*i))
            .collect()
    }

    /// Stops controller `i` (cancels it and waits until `serve` returned, at most
    /// [`STOP_BOUND`]); panics if it does not stop or stopped with an error.
    pub async fn kill(&mut self, i: usize) {
        let Some(running) = self.controllers[i].running.take() else {
            panic!("controller {i} is not running");
        };
        running.stop.cancel();
        let mut task = running.task;
        match tokio::time::timeout(STOP_BOUND, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("controller {i} stopped with an error: {e:#}"),
            Ok(Err(e)) => panic!("controller {i} panicked: {e}"),
            Err(_) => {
                task.abort();
                panic!("controller {i} did not stop within {STOP_BOUND:?} of being cancelled");
            }
        }
    }

    /// Starts controller `i` again with its data dir, port and bootstrap.
    pub async fn restart(&mut self, i: usize) {
        let addr = self.controllers[i].addr;
        // The old listener is closed once `serve` returned; the port is ours again (the
        // listener sets SO_REUSEADDR, so connections in TIME_WAIT do not block it).
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("rebind controller {i} on {addr}: {e}"));
        self.spawn_controller(i, listener);
    }

    /// Whether controller `i`'s `serve` has ended (e.g. failed to open its data dir).
    pub fn has_exited(&self, i: usize) -> bool {
        self.controllers[i]
            .running
            .as_ref()
            .is_some_and(|r| r.task.is_finished())
    }

    /// Drops controller `i`'s Raft traffic both ways and refuses its agent sessions.
    pub fn isolate(&self, i: usize) {
        self.controllers[i].faults.isolate();
    }

    pub fn heal(&self, i: usize) {
        self.controllers[i].faults.heal();
    }

    pub fn heal_all(&self) {
        for c in &self.controllers {
            c.faults.heal();
        }
    }

    /// `cluster_status` as controller `i` answers it (a follower refuses with a hint).
    pub async fn status_of(&self, i: usize) -> Result<pb::ClusterStatusReply, Status> {
        let mut c = self.direct(i).await?;
        c.cluster_status(pb::ClusterStatusRequest {})
            .await
            .map(|r| r.into_inner())
    }

    /// The status of the leader of the majority: among running, non-isolated
    /// controllers, the one that says it leads in the highest term.
    async fn status_of_leader(&self) -> Option<pb::ClusterStatusReply> {
        let mut best: Option<pb::ClusterStatusReply> = None;
        for i in self.live() {
            if let Ok(s) = self.status_of(i).await {
                if s.leader == self.ids.get(i).copied().unwrap_or(0)
                    && best.as_ref().is_none_or(|b| s.term > b.term)
                {
                    best = Some(s);
                }
            }
        }
        best
    }

    /// The slot of the leader of the live (running, not isolated) controllers, polling
    /// for at most 10 s; `None` if there is none by then.
    pub async fn leader(&self) -> Option<usize> {
        self.leader_within(Duration::from_secs(10)).await
    }

    pub async fn leader_within(&self, bound: Duration) -> Option<usize> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status_of_leader().await {
                if let Some(i) = self.slot(s.leader) {
                    return Some(i);
                }
            }
            if start.elapsed() > bound {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Like [`Cluster::leader`], but panics when there is none.
    pub async fn wait_leader(&self) -> usize {
        match self.leader_within(Duration::from_secs(20)).await {
            Some(i) => i,
            None => panic!("no leader among the live controllers {:?}", self.live()),
        }
    }

    /// A client of the whole cluster: tries every controller, follows leader hints.
    pub fn client(&self) -> Client {
        Client::new(self.addrs(), self.admin_tls())
    }

    /// The admin credentials' TLS config (the first controller's `DATA_DIR/admin/`).
    pub fn admin_tls(&self) -> ClientTls {
        self.admin
            .clone()
            .expect("the first controller wrote admin credentials")
    }

    /// Controller `i`'s data dir (the first one's `admin/` holds the admin credentials,
    /// each one's `tls/` its own certificate).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.controllers[i].data_dir.clone()
    }

    /// Agent `name`'s data dir (its `tls/` holds its certificate).
    /// Where agent `name` keeps its tasks' secret files.
    pub fn secrets_dir(&self, name: &str) -> PathBuf {
        self.secrets.path().join(name)
    }

    pub fn agent_dir(&self, name: &str) -> PathBuf {
        self._dir.path().join(format!("agent-{name}"))
    }

    /// The current join token for `role`, asked of the cluster with the admin
    /// credentials.
    pub async fn token(&self, role: Role) -> String {
        shoal_tls::join::show_token(&self.addrs(), &self.admin_tls(), role, CALL_BOUND)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A client of the controllers in `slots` only (e.g. the side of a partition).
    pub fn client_of(&self, slots: &[usize]) -> Client {
        Client::new(
            slots.iter().map(|i| self.addr(*i)).collect(),
            self.admin_tls(),
        )
    }

    /// A raw `Control` client of controller `i`, following nothing.
    pub async fn direct(&self, i: usize) -> Result<ControlClient<Channel>, Status> {
        connect(&self.addr(i), &self.admin_tls()).await
    }

    /// Cancels every controller and agent (also done on drop).
    pub fn shutdown(&self) {
        self.root.cancel();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.root.cancel();
        // Nothing can be awaited here; the tasks see their tokens and end, and aborting
        // them makes sure no controller outlives the test even if one is stuck.
        for c in &mut self.controllers {
            if let Some(r) = c.running.take() {
                r.stop.cancel();
                r.task.abort();
            }
        }
        for a in self.agents.values() {
            a.stop.cancel();
            a.task.abort();
        }
    }
}

/// A port on 127.0.0.1 nothing listens on now (bound and let go): controllers bind their
/// metrics address themselves, so the harness can only pick one for them.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
}
