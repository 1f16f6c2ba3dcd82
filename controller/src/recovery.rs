//! Starting a new one-member group from a cluster that existed: `--restore FILE` (a
//! backup, on a new data dir) and `--force-new-cluster` (a survivor's data dir, when
//! the majority of controllers is lost for good).
//!
//! Both keep the cluster's identity (its CA and cluster key, so the cluster id, its
//! agents' certificates and its admin credentials stay valid) and its whole state. The
//! new member takes an id above every id of the old membership, so a stale old
//! controller that comes back is never taken for a member (peers outside the
//! membership are refused, [`crate::raft::server`]).
//!
//! The state to seed waits in `DATA_DIR/restore-pending.json` until the new group has
//! committed it as its first command ([`commit_seed`]): a crash in between resumes.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use openraft::{BasicNode, StoredMembership};

use crate::backup::Backup;
use crate::pki::{self, ClusterKey};
use crate::raft::state_machine::{decode_snapshot, encode_snapshot, Applied};
use crate::raft::{self, RaftNode, RaftNodeId};
use crate::state::Command;

const SEED_FILE: &str = "restore-pending.json";
/// How long each old member may take to answer the reachability probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the new group may take to commit the seeded state (it is alone).
const COMMIT_BOUND: Duration = Duration::from_secs(30);

/// `--restore`: writes the backup's cluster key, this controller's certificate and new
/// admin credentials into the new `data_dir`, and the state to seed. Returns the id the
/// new member takes.
pub fn prepare_restore(
    data_dir: &Path,
    opts: &pki::local::InitOptions,
    backup: &Backup,
) -> anyhow::Result<RaftNodeId> {
    let applied = decode_snapshot(backup.snapshot.as_bytes())
        .map_err(|e| anyhow::anyhow!("the backup's state cannot be read: {e}"))?;
    let record = applied
        .state
        .pki
        .as_ref()
        .context("the backup holds no cluster CA")?;
    let key_bytes = hex::decode(&backup.cluster_key).context("the backup's cluster key")?;
    let key = ClusterKey::from_bytes(&key_bytes)?;
    pki::local::adopt(data_dir, opts, &key, record)?;
    write_seed(data_dir, &applied)?;
    let id = next_id(&applied.membership);
    tracing::info!(
        cluster = %backup.cluster_id,
        index = backup.index,
        id,
        "restoring the cluster from its backup"
    );
    Ok(id)
}

/// `--force-new-cluster` on the data dir of controller `old_id`: refuses while a
/// quorum of the old members answers; else sets the old Raft store aside and leaves
/// its state to seed. Returns the id the new one-member group's member takes
/// (`old_id` when it already was the only voter: nothing to force).
pub async fn force_new_cluster(
    data_dir: &Path,
    old_id: RaftNodeId,
    now_ms: u64,
) -> anyhow::Result<RaftNodeId> {
    let applied = raft::recover::read_offline(data_dir).await?;
    let membership = applied.membership.membership();
    let voters: Vec<(RaftNodeId, String)> = membership
        .voter_ids()
        .map(|id| {
            let addr = membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            (id, addr)
        })
        .collect();
    if voters.iter().all(|(id, _)| *id == old_id) {
        tracing::info!(
            id = old_id,
            "this controller is already its cluster's only voter: starting it as it is"
        );
        return Ok(old_id);
    }
    let tls = client_tls(data_dir)?;
    let others: Vec<&(RaftNodeId, String)> =
        voters.iter().filter(|(id, _)| *id != old_id).collect();
    let answers = futures::future::join_all(others.iter().map(|(_, addr)| probe(&tls, addr))).await;
    let reachable: Vec<String> = others
        .iter()
        .zip(answers)
        .filter(|(_, up)| *up)
        .map(|((id, addr), _)| format!("{id} at {addr}"))
        .collect();
    if (1 + reachable.len()) * 2 > voters.len() {
        anyhow::bail!(
            "a quorum of this cluster's controllers is reachable ({} of {} voters, with this one; answering: {}): the cluster can still elect a leader, so --force-new-cluster is refused. Start this controller without it; remove lost controllers with `shoal controller remove ID`",
            1 + reachable.len(),
            voters.len(),
            reachable.join(", ")
        );
    }
    let id = next_id(&applied.membership);
    write_seed(data_dir, &applied)?;
    let aside = raft::recover::set_aside(data_dir, now_ms)?;
    tracing::warn!(
        old_id,
        id,
        voters = voters.len(),
        reachable = reachable.len(),
        kept = %aside.display(),
        "forcing a new one-member cluster from this controller's state"
    );
    Ok(id)
}

/// Commits the state waiting in `data_dir` as the new group's first command (unless the
/// group already holds a cluster), then forgets it.
pub async fn commit_seed(node: &RaftNode) -> anyhow::Result<()> {
    let Some(applied) = read_seed(&node.data_dir)? else {
        return Ok(());
    };
    let start = std::time::Instant::now();
    while node.state.read().pki.is_none() {
        let cmd = Command::Restore {
            state: Box::new(applied.state.clone()),
        };
        match raft::propose(&node.raft, cmd).await {
            Ok(r) => {
                if let Some(e) = r.error {
                    anyhow::bail!("seed the restored state: {e}");
                }
            }
            Err(e) if start.elapsed() > COMMIT_BOUND => {
                anyhow::bail!("commit the restored state: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let state = node.state.read();
    tracing::info!(
        stacks = state.stacks.len(),
        tasks = state.tasks.len(),
        nodes = state.nodes.len(),
        "the cluster's state is restored"
    );
    drop(state);
    let path = node.data_dir.join(SEED_FILE);
    std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))
}

/// One more than any id the old membership used (voters and learners).
fn next_id(membership: &StoredMembership<RaftNodeId, BasicNode>) -> RaftNodeId {
    membership
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .max()
        .unwrap_or(0)
        + 1
}

fn write_seed(data_dir: &Path, applied: &Applied) -> anyhow::Result<()> {
    let bytes = encode_snapshot(applied).map_err(anyhow::Error::msg)?;
    shoal_tls::files::write_file(&data_dir.join(SEED_FILE), &bytes, true)
}

fn read_seed(data_dir: &Path) -> anyhow::Result<Option<Applied>> {
    let path = data_dir.join(SEED_FILE);
    match std::fs::read(&path) {
        Ok(b) => decode_snapshot(&b)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{} cannot be read: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

fn client_tls(data_dir: &Path) -> anyhow::Result<shoal_tls::ClientTls> {
    let creds = shoal_tls::CredentialFiles::require(&data_dir.join(pki::local::TLS_DIR))?;
    shoal_tls::ClientTls::from_credentials(&creds)
}

/// Whether a controller of this cluster answers at `addr` (a TLS handshake with the
/// cluster's CA on both sides completes).
async fn probe(tls: &shoal_tls::ClientTls, addr: &str) -> bool {
    let Ok(endpoint) = shoal_tls::client::endpoint(addr) else {
        return false;
    };
    let endpoint = endpoint.connect_timeout(PROBE_TIMEOUT);
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tls.connect(endpoint)).await,
        Ok(Ok(_))
    )
}
