//! Opening a Raft member on its data dir, and bootstrapping a one-member group.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};

use super::network::Contacts;
use super::{LogStore, Network, Raft, RaftNodeId, StateHandle, StateMachine};

/// Raft timings and log-compaction knobs. The defaults suit a LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTimings {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// A follower that stops hearing its leader first waits out the leader's lease, which
    /// openraft 0.9 sets to `election_timeout_max_ms`, then a random time in this range,
    /// and then starts an election: a lost leader is replaced after max + [min, max].
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot every this many applied entries.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind the latest snapshot (so a briefly lagging follower
    /// catches up from the log, not a snapshot); everything older is purged.
    pub max_in_snapshot_log_to_keep: u64,
    /// Purge only once at least this many entries can go.
    pub purge_batch_size: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat_ms: 100,
            election_timeout_min_ms: 1000,
            // Kept close to the minimum: it is also the lease every election waits out.
            election_timeout_max_ms: 1250,
            snapshot_logs_since_last: 500,
            max_in_snapshot_log_to_keep: 100,
            purge_batch_size: 32,
        }
    }
}

impl RaftTimings {
    /// The openraft configuration these timings make.
    pub fn config(&self) -> anyhow::Result<Config> {
        let config = Config {
            cluster_name: "shoal".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            purge_batch_size: self.purge_batch_size.max(1),
            // A chunk travels as JSON (about 3-4x its size), well under the gRPC limit.
            snapshot_max_chunk_size: 1024 * 1024,
            // Per snapshot chunk.
            install_snapshot_timeout: 5_000,
            ..Config::default()
        };
        config.validate().context("invalid raft timings")
    }
}

/// A running Raft member and the handle on its applied state.
pub struct RaftNode {
    pub raft: Raft,
    pub state: StateHandle,
    pub id: RaftNodeId,
    /// The address peers reach this member at (its `--advertise`), as stored in the
    /// membership.
    pub addr: String,
    pub data_dir: PathBuf,
    /// When each peer last answered this member's Raft RPCs.
    pub contacts: Contacts,
    /// Proposal latency and the committed index, for `/metrics`.
    pub instruments: super::RaftInstruments,
    /// The log store's and the state machine's liveness: after `Raft::shutdown`,
    /// openraft's replication and state machine tasks may still hold them (and the sled
    /// lock on the data dir) for a moment; see [`RaftNode::wait_closed`].
    stores: [std::sync::Weak<()>; 2],
}

impl RaftNode {
    /// After `raft.shutdown()`: waits (at most `bound`) until every task openraft spawned
    /// has dropped the stores, so the data dir can be opened again in this process.
    /// Returns whether they were released.
    pub async fn wait_closed(&self, bound: Duration) -> bool {
        let start = std::time::Instant::now();
        loop {
            if self.stores.iter().all(|w| w.strong_count() == 0) {
                return true;
            }
            if start.elapsed() > bound {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Opens (or creates) the member `node_id` on `data_dir` (sled database at
/// `data_dir/raft`) and starts it. The applied state is restored from the latest snapshot
/// and the committed log after it. A damaged data dir, or one that belongs to another node
/// id, is an error saying so.
pub async fn open(
    data_dir: &Path,
    node_id: RaftNodeId,
    addr: String,
    timings: RaftTimings,
) -> anyhow::Result<RaftNode> {
    open_with_faults(data_dir, node_id, addr, timings, Arc::default()).await
}

/// [`open`], with the fault switch tests use to partition this member.
pub async fn open_with_faults(
    data_dir: &Path,
    node_id: RaftNodeId,
    addr: String,
    timings: RaftTimings,
    faults: Arc<crate::faults::Faults>,
) -> anyhow::Result<RaftNode> {
    open_with_tls(data_dir, node_id, addr, timings, faults, None).await
}

/// [`open_with_faults`], dialing peers over mutual TLS with `tls`.
#[tracing::instrument(skip(timings, faults, tls), fields(dir = %data_dir.display()))]
pub async fn open_with_tls(
    data_dir: &Path,
    node_id: RaftNodeId,
    addr: String,
    timings: RaftTimings,
    faults: Arc<crate::faults::Faults>,
    tls: Option<shoal_tls::ClientTls>,
) -> anyhow::Result<RaftNode> {
    let config = Arc::new(timings.config()?);
    let dir = data_dir.to_path_buf();
    // sled's recovery and our integrity scan are blocking reads of the whole store.
    let (log_store, state_machine) =
        tokio::task::spawn_blocking(move || open_stores(&dir, node_id))
            .await
            .context("open the raft store: task failed")??;
    let state = state_machine.handle();
    let stores = [log_store.open_handle(), state_machine.open_handle()];
    let instruments = super::RaftInstruments::new(log_store.committed_index());
    let contacts = Contacts::default();
    let raft = Raft::new(
        node_id,
        config,
        Network::with_faults(faults, contacts.clone()).with_tls(tls),
        log_store,
        state_machine,
    )
    .await
    .with_context(|| format!("start raft node {node_id} on {}", data_dir.display()))?;
    Ok(RaftNode {
        raft,
        state,
        id: node_id,
        addr,
        data_dir: data_dir.to_path_buf(),
        contacts,
        instruments,
        stores,
    })
}

fn open_stores(data_dir: &Path, node_id: RaftNodeId) -> anyhow::Result<(LogStore, StateMachine)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create data dir {}", data_dir.display()))?;
    let db_path = data_dir.join("raft");
    let db = sled::Config::new()
        .path(&db_path)
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .with_context(|| {
            format!(
                "open the raft store {} (if it is locked, another shoal controller uses this data dir)",
                db_path.display()
            )
        })?;
    let log_store = LogStore::open(&db, data_dir)?;
    log_store.claim_node_id(node_id)?;
    let state_machine = StateMachine::open(&db, data_dir)?;
    Ok((log_store, state_machine))
}

/// Makes `node` the only member of a new group, unless it already holds a cluster (it has
/// a vote or a log): a restart with the same command line resumes, and `--init` on a data
/// dir that holds a cluster never creates a second one. Returns whether it created the
/// group; when it did, waits (bounded) until the node leads it.
pub async fn initialize_single(node: &RaftNode) -> anyhow::Result<bool> {
    if node
        .raft
        .is_initialized()
        .await
        .context("raft is not running")?
    {
        tracing::info!(node = node.id, "raft group already initialized; resuming");
        return Ok(false);
    }
    let members = BTreeMap::from([(node.id, BasicNode::new(&node.addr))]);
    match node.raft.initialize(members).await {
        Ok(()) => {}
        Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
            tracing::info!(node = node.id, reason = %e, "raft group already initialized");
            return Ok(false);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("initialize raft group with node {}", node.id))
        }
    }
    tracing::info!(node = node.id, addr = %node.addr, "initialized a new one-member raft group");
    let timeout = Duration::from_millis(node.raft.config().election_timeout_max * 5);
    wait_for_leader(&node.raft, timeout).await?;
    Ok(true)
}

/// Waits until `raft` knows a leader, and returns its id.
pub async fn wait_for_leader(raft: &Raft, timeout: Duration) -> anyhow::Result<RaftNodeId> {
    let metrics = raft
        .wait(Some(timeout))
        .metrics(|m| m.current_leader.is_some(), "a leader is known")
        .await
        .context("wait for a raft leader")?;
    metrics
        .current_leader
        .context("wait for a raft leader: none known")
}
