//! The receiving side of the Raft RPCs: the `RaftPeer` gRPC service, handing each request
//! to the local [`Raft`] and answering with its result as JSON (see [`super::codec`]).
//!
//! `install_snapshot` receives one chunk per call (openraft 0.9's chunked protocol); the
//! local Raft reassembles them.

use shoal_proto::pb::raft_peer_server::{RaftPeer, RaftPeerServer};
use shoal_proto::pb::RaftPayload;
use tonic::{Request, Response, Status};

use super::codec::{
    self, AppendReply, AppendRequest, SnapshotReply, SnapshotRequest, VoteReply, VoteReq,
};
use super::network::MAX_MESSAGE_BYTES;
use super::{Raft, RaftNodeId};
use crate::faults::Faults;
use std::sync::Arc;

/// `RaftPeer` served by a local Raft member.
#[derive(Clone)]
pub struct RaftPeerService {
    raft: Raft,
    faults: Arc<Faults>,
}

impl RaftPeerService {
    pub fn new(raft: Raft) -> RaftPeerService {
        RaftPeerService::with_faults(raft, Arc::default())
    }

    /// A service that refuses every RPC while `faults` isolates this controller.
    pub fn with_faults(raft: Raft, faults: Arc<Faults>) -> RaftPeerService {
        RaftPeerService { raft, faults }
    }

    fn check(&self) -> Result<(), Status> {
        if self.faults.is_isolated() {
            return Err(Status::unavailable("this controller is partitioned"));
        }
        Ok(())
    }

    /// Refuses a Raft RPC from a controller outside this member's membership: after
    /// `--force-new-cluster` or `--restore`, an old controller that comes back with its
    /// old data dir must not take part (its votes would depose the new leader). A member
    /// that knows no membership yet (a joiner waiting for its first entries) accepts all.
    fn check_sender(&self, sender: Option<RaftNodeId>) -> Result<(), Status> {
        let Some(sender) = sender else {
            return Ok(());
        };
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        if membership.nodes().next().is_none() || membership.get_node(&sender).is_some() {
            return Ok(());
        }
        tracing::warn!(
            sender,
            "refused a Raft RPC from a controller that is not a member of this cluster (an old controller started with its old data dir? wipe it and join it with a token)"
        );
        Err(Status::permission_denied(format!(
            "controller {sender} is not a member of this cluster: after --force-new-cluster or --restore, start old controllers only with a new data dir and --join"
        )))
    }

    /// The tonic service, with message limits large enough for Raft batches.
    pub fn into_server(self) -> RaftPeerServer<RaftPeerService> {
        RaftPeerServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn invalid(e: codec::CodecError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn reply<T: serde::Serialize>(
    what: &'static str,
    value: &T,
) -> Result<Response<RaftPayload>, Status> {
    let mut response = codec::encode(what, value)
        .map(Response::new)
        .map_err(|e| Status::internal(e.to_string()))?;
    // Tells the leader which commands this member can apply ([`super::network::Contacts`]).
    response.metadata_mut().insert(
        shoal_proto::protocol::HEADER,
        shoal_proto::protocol::PROTOCOL.into(),
    );
    Ok(response)
}

#[tonic::async_trait]
impl RaftPeer for RaftPeerService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check()?;
        let rpc: AppendRequest =
            codec::decode("append_entries", request.get_ref()).map_err(invalid)?;
        self.check_sender(rpc.vote.leader_id().voted_for())?;
        let result: AppendReply = self.raft.append_entries(rpc).await;
        reply("append_entries", &result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check()?;
        let rpc: VoteReq = codec::decode("vote", request.get_ref()).map_err(invalid)?;
        self.check_sender(rpc.vote.leader_id().voted_for())?;
        let result: VoteReply = self.raft.vote(rpc).await;
        reply("vote", &result)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check()?;
        let rpc: SnapshotRequest =
            codec::decode("install_snapshot", request.get_ref()).map_err(invalid)?;
        self.check_sender(rpc.vote.leader_id().voted_for())?;
        let result: SnapshotReply = self.raft.install_snapshot(rpc).await;
        reply("install_snapshot", &result)
    }
}
