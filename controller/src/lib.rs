//! The shoal controller: the Raft group that holds the cluster state, the Compose loader,
//! the scheduler and reconciler, and the gRPC services for the CLI and the agents.
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

pub mod compose;
pub mod raft;
pub mod state;
