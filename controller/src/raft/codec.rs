//! Raft RPC payloads on the wire: openraft's own serde types as JSON inside
//! `RaftPayload { json }`.
//!
//! Requests are the openraft request types; replies are `Result<Response, RaftError<..>>`,
//! so a peer's refusal (e.g. a fatal error on the remote) reaches the sender as openraft's
//! `RemoteError` rather than as an opaque transport failure.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_proto::pb::RaftPayload;

use super::{RaftNodeId, TypeConfig};

pub type AppendRequest = AppendEntriesRequest<TypeConfig>;
pub type AppendReply = Result<AppendEntriesResponse<RaftNodeId>, RaftError<RaftNodeId>>;
pub type VoteReq = VoteRequest<RaftNodeId>;
pub type VoteReply = Result<VoteResponse<RaftNodeId>, RaftError<RaftNodeId>>;
pub type SnapshotRequest = InstallSnapshotRequest<TypeConfig>;
pub type SnapshotReply =
    Result<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>;

/// A payload that is not the JSON of the expected type.
#[derive(Debug, thiserror::Error)]
#[error("raft payload ({what}): {source}")]
pub struct CodecError {
    what: &'static str,
    #[source]
    source: serde_json::Error,
}

pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<RaftPayload, CodecError> {
    let json = serde_json::to_vec(value).map_err(|source| CodecError { what, source })?;
    Ok(RaftPayload { json })
}

pub fn decode<T: DeserializeOwned>(
    what: &'static str,
    payload: &RaftPayload,
) -> Result<T, CodecError> {
    serde_json::from_slice(&payload.json).map_err(|source| CodecError { what, source })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::error::Fatal;
    use openraft::{
        BasicNode, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
    };

    use super::*;
    use crate::state::Command;

    fn log_id(term: u64, index: u64) -> LogId<RaftNodeId> {
        openraft::testing::log_id(term, 1, index)
    }

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let payload = encode("test", &value).expect("encode");
        let back: T = decode("test", &payload).expect("decode");
        assert_eq!(back, value);
    }

    #[test]
    fn append_entries_round_trips() {
        let members = BTreeMap::from([(1, BasicNode::new("10.0.0.1:7370"))]);
        let membership = Membership::new(vec![BTreeSet::from([1])], members);
        let entries = vec![
            Entry::<TypeConfig> {
                log_id: log_id(1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(1, 2),
                payload: EntryPayload::Membership(membership),
            },
            Entry {
                log_id: log_id(1, 3),
                payload: EntryPayload::Normal(Command::Scale {
                    service: "web/api".into(),
                    replicas: 3,
                }),
            },
        ];
        let request = AppendRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(1, 0)),
            entries,
            leader_commit: Some(log_id(1, 2)),
        };
        let payload = encode("append_entries", &request).unwrap();
        let back: AppendRequest = decode("append_entries", &payload).unwrap();
        assert_eq!(back.vote, request.vote);
        assert_eq!(back.prev_log_id, request.prev_log_id);
        assert_eq!(back.entries, request.entries);
        assert_eq!(back.leader_commit, request.leader_commit);
        let ok: AppendReply = Ok(AppendEntriesResponse::Success);
        round_trip(ok);
        let conflict: AppendReply = Ok(AppendEntriesResponse::Conflict);
        round_trip(conflict);
        let higher: AppendReply = Ok(AppendEntriesResponse::HigherVote(Vote::new(5, 2)));
        round_trip(higher);
        let fatal: AppendReply = Err(RaftError::Fatal(Fatal::Stopped));
        round_trip(fatal);
    }

    #[test]
    fn vote_round_trips() {
        round_trip(VoteReq::new(Vote::new(3, 2), Some(log_id(2, 9))));
        let reply: VoteReply = Ok(VoteResponse::new(Vote::new(3, 2), Some(log_id(2, 9)), true));
        round_trip(reply);
    }

    #[test]
    fn install_snapshot_round_trips() {
        let members = BTreeMap::from([(1, BasicNode::new("10.0.0.1:7370"))]);
        let membership = Membership::new(vec![BTreeSet::from([1])], members);
        round_trip(SnapshotRequest {
            vote: Vote::new_committed(4, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(4, 120)),
                last_membership: StoredMembership::new(Some(log_id(1, 2)), membership),
                snapshot_id: "4-1-120-0".into(),
            },
            offset: 0,
            data: br#"{"state":{}}"#.to_vec(),
            done: true,
        });
        let reply: SnapshotReply = Ok(InstallSnapshotResponse {
            vote: Vote::new_committed(4, 1),
        });
        round_trip(reply);
        let refused: SnapshotReply = Err(RaftError::APIError(
            InstallSnapshotError::SnapshotMismatch(openraft::error::SnapshotMismatch {
                expect: openraft::SnapshotSegmentId {
                    id: "a".into(),
                    offset: 0,
                },
                got: openraft::SnapshotSegmentId {
                    id: "b".into(),
                    offset: 10,
                },
            }),
        ));
        round_trip(refused);
    }

    #[test]
    fn garbage_is_a_codec_error() {
        let payload = RaftPayload {
            json: b"not json".to_vec(),
        };
        let err = decode::<AppendRequest>("append_entries", &payload).unwrap_err();
        assert!(err.to_string().contains("append_entries"), "{err}");
    }
}
