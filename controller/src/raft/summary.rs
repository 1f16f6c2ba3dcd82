//! What `shoal cluster status` shows about the Raft group, from openraft's metrics.

use serde::Serialize;

use super::{Raft, RaftNodeId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Leader,
    Follower,
    Learner,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Leader => "leader",
            MemberRole::Follower => "follower",
            MemberRole::Learner => "learner",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberSummary {
    pub id: RaftNodeId,
    pub address: String,
    pub role: MemberRole,
    /// On the leader: the last log index known to be replicated to this member
    /// (`None` on followers, or before the first reply).
    pub matched_index: Option<u64>,
}

/// The Raft group as this member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterSummary {
    /// The member answering.
    pub id: RaftNodeId,
    pub leader: Option<RaftNodeId>,
    pub term: u64,
    /// openraft 0.9 does not publish the commit index; this member's last applied index
    /// stands in for it (it trails the commit index by the entries being applied).
    pub commit_index: Option<u64>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Entries up to here are purged from the log.
    pub purged_index: Option<u64>,
    /// Members by id.
    pub members: Vec<MemberSummary>,
}

pub fn metrics_summary(raft: &Raft) -> ClusterSummary {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<RaftNodeId> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let role = if m.current_leader == Some(*id) {
                MemberRole::Leader
            } else if voters.contains(id) {
                MemberRole::Follower
            } else {
                MemberRole::Learner
            };
            let matched_index = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .and_then(|l| l.as_ref().map(|l| l.index));
            MemberSummary {
                id: *id,
                address: node.addr.clone(),
                role,
                matched_index,
            }
        })
        .collect();
    let last_applied = m.last_applied.map(|l| l.index);
    ClusterSummary {
        id: m.id,
        leader: m.current_leader,
        term: m.current_term,
        commit_index: last_applied,
        last_log_index: m.last_log_index,
        last_applied,
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        members,
    }
}
