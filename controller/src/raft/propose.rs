//! Writing a command through Raft.

use openraft::error::{ClientWriteError, RaftError};

use super::{Raft, RaftNode, RaftNodeId};
use crate::state::{Command, CommandResult};

/// Why a proposal was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This member does not lead; the caller should send the command to the leader.
    #[error("this controller is not the raft leader{}", match (.leader_id, .leader_addr) {
        (Some(id), Some(addr)) => format!(" (the leader is {id} at {addr})"),
        (Some(id), None) => format!(" (the leader is {id})"),
        _ => " (no leader is known yet)".to_string(),
    })]
    NotLeader {
        leader_id: Option<RaftNodeId>,
        leader_addr: Option<String>,
    },
    /// Raft stopped (shut down, or a storage failure).
    #[error("raft is not running: {0}")]
    Stopped(String),
    /// Any other refusal from openraft.
    #[error("raft refused the command: {0}")]
    Rejected(String),
}

/// Proposes `cmd`, waits until it is committed and applied here, and returns what the
/// state machine answered.
pub async fn propose(raft: &Raft, cmd: Command) -> Result<CommandResult, ProposeError> {
    match raft.client_write(cmd).await {
        Ok(response) => Ok(response.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ProposeError::NotLeader {
                leader_id: f.leader_id,
                leader_addr: f.leader_node.map(|n| n.addr),
            })
        }
        Err(RaftError::APIError(e)) => Err(ProposeError::Rejected(e.to_string())),
        Err(RaftError::Fatal(e)) => Err(ProposeError::Stopped(e.to_string())),
    }
}

impl RaftNode {
    /// [`propose`], timing each proposal that commits in
    /// [`RaftNode::instruments`]`.proposals` (`shoal_raft_proposal_duration_seconds`).
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ProposeError> {
        let start = std::time::Instant::now();
        let result = propose(&self.raft, cmd).await;
        if result.is_ok() {
            self.instruments
                .proposals
                .observe(start.elapsed().as_secs_f64());
        }
        result
    }
}
