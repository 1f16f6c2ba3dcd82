//! Raft: the controllers' replicated log, on openraft 0.9 (`storage-v2`) with sled.
//!
//! Map of this module:
//! - [`log_store`]: the Raft log, the vote and the committed id in sled. Every write that
//!   openraft must be able to rely on (appended entries, the vote) is flushed to disk before
//!   openraft is told it completed.
//! - [`state_machine`]: applies committed [`Command`]s to the in-memory
//!   [`ClusterState`](crate::state::ClusterState), builds and installs snapshots, and hands
//!   the rest of the controller a [`StateHandle`] to read the applied state and wait for
//!   changes. `snapshot_format` is the snapshot's bytes (JSON, numbered formats),
//!   `snapshot_store` where the latest one is kept (a file in [`SNAPSHOT_DIR`], recorded
//!   in sled), `snapshot_file` the file as openraft reads and writes it ([`SnapshotFile`]).
//! - [`open`]: opens a node on a data dir ([`open()`]), bootstraps a one-member group
//!   ([`initialize_single`]).
//! - [`propose`]: writes a command through Raft, with a typed "not the leader" error.
//! - [`instruments`]: proposal latency and the committed index, for `/metrics`.
//! - [`network`] / [`server`]: the Raft RPCs between controllers over gRPC (`RaftPeer`),
//!   payloads are openraft's serde types as JSON ([`codec`]).
//! - [`summary`]: what `shoal cluster status` shows.
//!
//! Invariants:
//! - openraft is never told that a log append or a vote is done before sled flushed it.
//! - The recorded snapshot's file is complete and on disk before sled records it, and a
//!   snapshot never replaces a newer one.
//! - A data dir that cannot be read (corrupt entry, unreadable snapshot, another node's id)
//!   is an error naming the dir and the problem; it is never reset silently.
//! - This module knows nothing of what commands mean: `ClusterState::apply` is a black box.

// openraft's `StorageError`/`RPCError` and tonic's `Status` are large, and the trait
// signatures we implement fix them as our error types.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod instruments;
pub mod log_store;
pub mod network;
pub mod open;
pub mod propose;
pub mod recover;
pub mod server;
mod snapshot_file;
mod snapshot_format;
mod snapshot_store;
pub mod state_machine;
mod storage_error;
pub mod summary;

use crate::state::{Command, CommandResult};

pub use instruments::RaftInstruments;
pub use log_store::LogStore;
pub use network::Network;
pub use open::{
    initialize_single, open, open_with_faults, open_with_tls, wait_for_leader, RaftNode,
    RaftTimings,
};
pub use propose::{propose, ProposeError};
pub use server::RaftPeerService;
pub use state_machine::{SnapshotFile, StateHandle, StateMachine};
pub use summary::{metrics_summary, ClusterSummary, MemberRole, MemberSummary};

/// A Raft member's id, as configured on the command line.
pub type RaftNodeId = u64;

openraft::declare_raft_types!(
    /// shoal's openraft type configuration: commands are [`Command`], a member is known by
    /// its advertised `host:port` ([`openraft::BasicNode`]), a snapshot's data is a file.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = RaftNodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
);

/// A running Raft member.
pub type Raft = openraft::Raft<TypeConfig>;

/// Names of the sled trees under `DATA_DIR/raft`, for tools and tests that inspect a
/// stopped node's data dir.
pub mod trees {
    /// Log entries, keyed by big-endian index, values JSON of `openraft::Entry`.
    pub const LOG: &str = "log";
    /// Vote, last purged log id, committed log id, node id (JSON).
    pub const META: &str = "meta";
    /// The latest snapshot: `meta` (JSON of `SnapshotMeta`) and `file` (the name of the
    /// file in `DATA_DIR/raft/`[`SNAPSHOT_DIR`](super::SNAPSHOT_DIR) that holds its bytes).
    /// A store written before snapshots moved to files has `data` (the bytes) instead of
    /// `file`, read until the next snapshot replaces it.
    pub const SNAPSHOTS: &str = "snapshots";
}

/// The dir of snapshot files, in `DATA_DIR/raft` beside sled's own files (`conf`, `db`,
/// `blobs/`, `snap.*`): setting `raft/` aside keeps a snapshot with its log. It holds the
/// recorded snapshot (`<snapshot id>.json`) and, while one is written or received, temp
/// files (`*.tmp`); opening a node removes every other file.
pub const SNAPSHOT_DIR: &str = "snapshots";
