//! shoal's wire contract and its shared domain model.
//!
//! - [`pb`]: the tonic/prost code generated from `proto/shoal.proto`. Only this crate and
//!   the thin conversion modules of the other crates name these types.
//! - [`spec`]: the normalized Compose model, shared by the CLI, controller and agent;
//!   [`container`] its options passed straight to the engine.
//! - [`task`]: task states as the controller and the agent both speak of them.
//!
//! This crate does no I/O.
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

pub mod autoscale;
pub mod container;
pub mod network;
pub mod protocol;
pub mod spec;
pub mod task;

/// Generated protobuf and gRPC code.
#[allow(clippy::all, rust_2018_idioms)]
pub mod pb {
    tonic::include_proto!("shoal.v1");
}

/// How often agents measure every replica's container (and their GPUs) and send the
/// figures to the leader (`StatsReport`), for `shoal stats` and the dashboard.
pub const STATS_INTERVAL_MS: u64 = 5_000;

/// The gRPC metadata key in which a controller that is not the leader names the
/// leader's address (on `FAILED_PRECONDITION` and `UNAVAILABLE`), for the CLI, the
/// agents and a joining controller to follow.
pub const LEADER_HINT: &str = "x-shoal-leader";
/// The gRPC metadata key a controller sets (on `UNAVAILABLE`) when it knows no leader:
/// an election is under way, the request was not acted on, and may be tried again.
pub const NO_LEADER: &str = "x-shoal-no-leader";

/// Default port for every controller gRPC service.
pub const DEFAULT_PORT: u16 = 7370;

/// Container labels that every container shoal starts carries.
pub mod labels {
    pub const TASK: &str = "io.shoal.task";
    pub const STACK: &str = "io.shoal.stack";
    pub const SERVICE: &str = "io.shoal.service";
    pub const SLOT: &str = "io.shoal.slot";
    pub const NODE: &str = "io.shoal.node";
    pub const GENERATION: &str = "io.shoal.generation";
    /// The cluster the container belongs to: the first 16 hex digits of the SHA-256 of
    /// its CA certificate (kept by `--restore` and `--force-new-cluster`). An agent
    /// leaves containers of another cluster alone.
    pub const CLUSTER: &str = "io.shoal.cluster";
    /// On volumes shoal creates: the Compose name of the volume (with `STACK` and `NODE`).
    pub const VOLUME: &str = "io.shoal.volume";
}
