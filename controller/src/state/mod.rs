//! The replicated state machine: desired state (stacks, services, tasks and their
//! placement) plus the observed task states agents report, changed only by [`Command`]s
//! committed through Raft.
//!
//! `apply` is deterministic: it reads no clock (times come inside commands) and does no
//! I/O, so every controller that applies the same log holds the same state.

mod apply;
pub mod changes;
pub mod images;
mod model;
pub mod nodes;
mod secrets;
mod standby;
pub mod subnets;
pub mod volumes;

pub use apply::{autoscaled_words, CommandResult};
pub use model::*;
pub use volumes::{copy_key, CopyState, MovePhase, VolumeCopy, VolumeMove, VolumeSeen};
