//! Controller membership: joining (as a learner, promoted to voter once caught up) and
//! removal. The decisions are small pure functions over openraft's metrics; the leader
//! loop and the `Control` service carry them out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;
use openraft::{BasicNode, ChangeMembers, RaftMetrics};

use crate::raft::{Raft, RaftNodeId};

/// A learner this close to the leader's last log index is promoted to voter.
pub const PROMOTE_LAG: u64 = 20;

/// File in the data dir holding this controller's Raft id, written once.
const NODE_ID_FILE: &str = "node-id";

/// The id stored in `data_dir`, if this controller ran there before.
pub fn stored_id(data_dir: &Path) -> anyhow::Result<Option<RaftNodeId>> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map(Some).with_context(|| {
            format!(
                "{} is damaged: expected a controller id, found {s:?}",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Records this controller's id in `data_dir` (durably: written, synced, renamed).
pub fn store_id(data_dir: &Path, id: RaftNodeId) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create data dir {}", data_dir.display()))?;
    let tmp = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
    let path = data_dir.join(NODE_ID_FILE);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{id}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().with_context(|| format!("write {}", path.display()))
}

/// The id a new member at `addr` gets: its old id if it is already a member (a joiner
/// that retries), else one more than any id the group has used.
pub fn id_for_joiner(members: &BTreeMap<RaftNodeId, BasicNode>, addr: &str) -> RaftNodeId {
    if let Some((id, _)) = members.iter().find(|(_, n)| n.addr == addr) {
        return *id;
    }
    members.keys().max().copied().unwrap_or(0) + 1
}

/// Learners that have caught up with the leader, to be promoted to voters.
pub fn learners_to_promote(m: &RaftMetrics<RaftNodeId, BasicNode>) -> BTreeSet<RaftNodeId> {
    if m.current_leader != Some(m.id) {
        return BTreeSet::new();
    }
    let membership = m.membership_config.membership();
    let voters: BTreeSet<RaftNodeId> = membership.voter_ids().collect();
    let last = m.last_log_index.unwrap_or(0);
    let Some(replication) = &m.replication else {
        return BTreeSet::new();
    };
    membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| !voters.contains(id))
        .filter(|id| {
            replication
                .get(id)
                .and_then(|l| l.as_ref())
                .is_some_and(|l| l.index + PROMOTE_LAG >= last)
        })
        .collect()
}

/// Every member (voters and learners) with its address.
pub fn members(raft: &Raft) -> BTreeMap<RaftNodeId, BasicNode> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, n)| (*id, n.clone()))
        .collect()
}

/// Adds `addr` as a learner (without waiting for it to catch up) and returns its id.
pub async fn add_learner(raft: &Raft, addr: &str) -> anyhow::Result<RaftNodeId> {
    let members = members(raft);
    let id = id_for_joiner(&members, addr);
    if members.contains_key(&id) {
        return Ok(id);
    }
    raft.add_learner(id, BasicNode::new(addr), false)
        .await
        .with_context(|| format!("add controller {id} at {addr} as a learner"))?;
    tracing::info!(id, %addr, "controller joined as a learner");
    Ok(id)
}

/// Promotes caught-up learners (run by the leader loop).
pub async fn promote(raft: &Raft) -> anyhow::Result<()> {
    let ready = learners_to_promote(&raft.metrics().borrow());
    if ready.is_empty() {
        return Ok(());
    }
    raft.change_membership(ChangeMembers::AddVoterIds(ready.clone()), false)
        .await
        .with_context(|| format!("promote controllers {ready:?} to voters"))?;
    tracing::info!(ids = ?ready, "controllers promoted to voters");
    Ok(())
}

/// Takes controller `id` out of the group; it no longer votes or receives the log.
/// Returns the removed controller's address (its certificate's name).
pub async fn remove(raft: &Raft, id: RaftNodeId) -> Result<String, RemoveError> {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let Some(addr) = membership
        .nodes()
        .find(|(n, _)| **n == id)
        .map(|(_, node)| node.addr.clone())
    else {
        return Err(RemoveError::NotAMember(id));
    };
    let voters: BTreeSet<RaftNodeId> = membership.voter_ids().collect();
    if voters.len() == 1 && voters.contains(&id) {
        return Err(RemoveError::LastVoter(id));
    }
    let change = if voters.contains(&id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    raft.change_membership(change, false)
        .await
        .map_err(|e| RemoveError::Raft(e.to_string()))?;
    tracing::info!(id, "controller removed");
    Ok(addr)
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("controller {0} is not a member of the cluster")]
    NotAMember(RaftNodeId),
    #[error("controller {0} is the only voter: removing it would leave no cluster")]
    LastVoter(RaftNodeId),
    #[error("{0}")]
    Raft(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joiner_gets_the_next_id_or_its_own_on_retry() {
        let members = BTreeMap::from([
            (1, BasicNode::new("10.0.0.1:7370")),
            (3, BasicNode::new("10.0.0.3:7370")),
        ]);
        assert_eq!(id_for_joiner(&members, "10.0.0.4:7370"), 4);
        assert_eq!(id_for_joiner(&members, "10.0.0.3:7370"), 3);
        assert_eq!(id_for_joiner(&BTreeMap::new(), "x:1"), 1);
    }

    #[test]
    fn the_node_id_file_round_trips_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stored_id(dir.path()).unwrap(), None);
        store_id(dir.path(), 7).unwrap();
        assert_eq!(stored_id(dir.path()).unwrap(), Some(7));
        std::fs::write(dir.path().join(NODE_ID_FILE), "seven").unwrap();
        let err = stored_id(dir.path()).unwrap_err().to_string();
        assert!(err.contains("node-id is damaged"), "{err}");
    }
}
