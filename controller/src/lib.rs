//! The shoal controller: the Raft group that holds the cluster state, the Compose loader,
//! the scheduler and reconciler, and the gRPC services for the CLI and the agents.
//!
//! Map:
//! - [`compose`]: Compose files -> [`shoal_proto::spec::StackSpec`] (runs in the CLI).
//! - [`state`]: the replicated state machine (desired and observed task state) and the
//!   [`state::Command`]s that change it. Deterministic; no I/O.
//! - [`raft`]: openraft on sled: log, vote, snapshots, the Raft RPCs.
//! - [`scheduler`] / [`reconciler`]: pure functions from a state snapshot (and `now`) to
//!   decisions. No I/O, no clock.
//! - [`rebalance`]: which replicas `shoal rebalance` moves (pure).
//! - [`assignments`]: the pure per-node view sent to each agent.
//! - [`liveness`]: heartbeats in the leader's memory; only transitions are written.
//! - [`leader`]: the loop that runs the reconciler and liveness on the leader.
//! - [`observe`]: `/metrics` (Raft and cluster figures) and the agents' container stats
//!   behind `shoal stats`.
//! - [`api`]: the gRPC services (`Control`, `AgentSession`) and prost conversions.
//! - [`pki`]: the cluster CA, join tokens, certificates, the TLS listener and roles.
//! - [`events`]: `shoal events`: events derived from applied entries into a bounded
//!   ring on every controller, plus leader changes and certificate renewals.
//! - [`images`]: the cluster's image store: blobs on each controller's disk, copied
//!   between controllers, and the leader's sweep of images nothing runs.
//! - [`server`]: wiring: open the node, serve one port, run the leader loop.
//!
//! This crate must not talk to Docker: agents do.
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

pub mod api;
pub mod assignments;
pub mod autoscale;
pub mod backup;
pub mod compose;
pub mod endpoints;
pub mod events;
pub mod faults;
pub mod gpu_fit;
pub mod images;
pub mod leader;
pub mod liveness;
pub mod logs;
pub mod membership;
pub mod observe;
pub mod pki;
pub mod raft;
pub mod rebalance;
pub mod reconciler;
pub mod recovery;
pub mod scheduler;
pub mod secrets;
pub mod server;
pub mod state;
pub mod transfers;
pub mod views;

pub use server::{run, serve, Bootstrap, ControllerConfig, InitCa};
