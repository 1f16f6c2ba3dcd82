//! The controller's gRPC services: `Control` for the CLI ([`control`]) and
//! `AgentSession` for agents ([`agent_session`]). Prost types are converted at this edge
//! ([`convert`]); everything behind it speaks the domain types of [`crate::state`].

pub mod agent_session;
pub mod batch;
pub mod binds;
pub mod cluster_backup;
pub mod control;
pub mod convert;
pub mod images;
pub mod metrics_report;
pub mod volumes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tonic::Status;

use crate::liveness::Liveness;
use crate::logs::LogRouter;
use crate::raft::{ProposeError, RaftNode};
use crate::state::{Command, CommandResult};
use shoal_proto::pb;

pub use shoal_proto::{LEADER_HINT, NO_LEADER};

/// What the services share.
pub struct Context {
    pub node: RaftNode,
    pub logs: LogRouter,
    pub sessions: Sessions,
    pub liveness: Mutex<Liveness>,
    pub faults: std::sync::Arc<crate::faults::Faults>,
    /// Serializes membership changes (joins and removals).
    pub join_lock: tokio::sync::Mutex<()>,
    /// [`PROPOSE_TIMEOUT`] unless configured otherwise.
    pub propose_timeout: std::time::Duration,
    /// [`READ_TIMEOUT`] unless configured otherwise.
    pub read_timeout: std::time::Duration,
    /// Cancelled when the controller stops: long-lived streams (agent sessions, followed
    /// logs) end on it, since the gRPC server's graceful shutdown waits for them.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// This controller's TLS identity, the cluster key and the certificate lifetime.
    pub pki: Arc<crate::pki::Local>,
    /// Volume transfers piped through this controller while it leads.
    pub transfers: crate::transfers::Transfers,
    /// This controller's share of the cluster's image store.
    pub blobs: crate::images::BlobStore,
    /// The nodes' autoscaling reports and what the leader's last pass read.
    pub autoscale: crate::autoscale::run::Live,
    /// `/metrics` counters and the agents' container stats (`shoal stats`).
    pub observe: crate::observe::Observe,
    /// Every node's assignments and mesh at the latest applied index, while leading
    /// ([`crate::views`]).
    pub views: tokio::sync::watch::Sender<Arc<crate::views::Views>>,
    /// Where agent sessions propose their task statuses, many sessions to an entry
    /// ([`batch`]).
    pub batcher: batch::Batcher,
}

/// How long a write may wait to commit before the client is told the cluster has no
/// quorum (a minority controller must not hang its clients).
pub const PROPOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a read may wait for the leader to confirm it still leads.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub type Shared = Arc<Context>;

impl Context {
    /// Proposes `cmd` and maps "not the leader" to a status that carries the leader hint.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, Status> {
        let behind = self.controllers_behind(cmd.min_protocol());
        if !behind.is_empty() {
            return Err(Status::failed_precondition(format!(
                "not every controller can apply this change yet ({}): finish upgrading the controllers",
                behind_words(&behind, cmd.min_protocol())
            )));
        }
        let propose = self.node.propose(cmd);
        match tokio::time::timeout(self.propose_timeout, propose).await {
            Ok(result) => result.map_err(propose_status),
            Err(_) => Err(Status::unavailable(format!(
                "the change was not committed within {:?}: a majority of controllers is not reachable",
                self.propose_timeout
            ))),
        }
    }

    /// Fails unless this controller leads, so reads it answers are linearizable.
    ///
    /// openraft confirms leadership with one round of heartbeats, each bounded by the
    /// heartbeat interval (100 ms by default): one follower answering late, as on a busy
    /// machine, fails the round with `QuorumNotEnough` although this controller leads.
    /// Such a round is tried again, once per heartbeat interval, until `read_timeout`:
    /// only a controller that cannot confirm it leads for that long answers UNAVAILABLE.
    pub async fn linearizable(&self) -> Result<(), Status> {
        use openraft::error::{CheckIsLeaderError, RaftError};
        let deadline = tokio::time::Instant::now() + self.read_timeout;
        let pause = std::time::Duration::from_millis(self.node.raft.config().heartbeat_interval);
        let unconfirmed = || {
            Status::unavailable(format!(
                "this controller could not confirm it leads within {:?}: a majority of controllers is not reachable",
                self.read_timeout
            ))
        };
        loop {
            let read = tokio::time::timeout_at(deadline, self.node.raft.ensure_linearizable());
            let Ok(result) = read.await else {
                return Err(unconfirmed());
            };
            match result {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    return Err(propose_status(ProposeError::NotLeader {
                        leader_id: f.leader_id,
                        leader_addr: f.leader_node.map(|n| n.addr),
                    }))
                }
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(unconfirmed());
                    }
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(Status::unavailable(format!("raft: {e}"))),
            }
        }
    }

    /// The other controllers that answered this one with a wire protocol older than
    /// `need` (id, protocol). A controller that has not answered it is not counted: a
    /// down one must not hold every newer change back.
    pub fn controllers_behind(&self, need: u32) -> Vec<(u64, u32)> {
        if need == 0 {
            return Vec::new();
        }
        let metrics = self.node.raft.metrics();
        let members: Vec<u64> = metrics
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id != self.node.id)
            .collect();
        behind(
            members
                .into_iter()
                .map(|id| (id, self.node.contacts.protocol(id))),
            need,
        )
    }

    pub fn lock_liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn propose_status(e: ProposeError) -> Status {
    match &e {
        ProposeError::NotLeader {
            leader_addr: Some(addr),
            ..
        } => {
            let mut status = Status::failed_precondition(e.to_string());
            if let Ok(v) = addr.parse() {
                status.metadata_mut().insert(LEADER_HINT, v);
            }
            status
        }
        ProposeError::NotLeader { .. } => {
            let mut status = Status::unavailable(e.to_string());
            status
                .metadata_mut()
                .insert(NO_LEADER, tonic::metadata::MetadataValue::from_static("1"));
            status
        }
        ProposeError::Stopped(_) => Status::unavailable(e.to_string()),
        ProposeError::Rejected(_) => Status::internal(e.to_string()),
    }
}

/// The open agent sessions, by node: how the controller reaches an agent.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, SessionHandle>>,
}

#[derive(Clone)]
pub struct SessionHandle {
    /// Distinguishes a node's successive sessions, so an old one cannot unregister a new one.
    pub serial: u64,
    pub tx: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
}

impl Sessions {
    pub fn insert(&self, node: &str, h: SessionHandle) {
        self.lock().insert(node.to_string(), h);
    }

    pub fn remove(&self, node: &str, serial: u64) {
        let mut m = self.lock();
        if m.get(node).is_some_and(|h| h.serial == serial) {
            m.remove(node);
        }
    }

    pub fn get(&self, node: &str) -> Option<SessionHandle> {
        self.lock().get(node).cloned()
    }

    /// How many sessions are open (`shoal_agent_sessions`).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionHandle>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The members, of those whose protocol is known, older than `need`.
pub fn behind(members: impl Iterator<Item = (u64, Option<u32>)>, need: u32) -> Vec<(u64, u32)> {
    members
        .filter_map(|(id, p)| p.filter(|p| *p < need).map(|p| (id, p)))
        .collect()
}

fn behind_words(behind: &[(u64, u32)], need: u32) -> String {
    let each: Vec<String> = behind
        .iter()
        .map(|(id, p)| format!("controller {id} speaks wire protocol {p}"))
        .collect();
    format!("it needs protocol {need}; {}", each.join(", "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_members_known_to_be_older_hold_a_change_back() {
        let members = [(2, Some(0)), (3, None), (4, Some(1))];
        assert_eq!(super::behind(members.into_iter(), 1), vec![(2, 0)]);
        assert!(super::behind(members.into_iter(), 0).is_empty());
        assert_eq!(
            super::behind_words(&[(2, 0)], 1),
            "it needs protocol 1; controller 2 speaks wire protocol 0"
        );
    }
}
