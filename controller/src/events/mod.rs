//! `shoal events`: what happened in the cluster and why, for people.
//!
//! Every controller keeps the same events: they are derived from the entries it applies
//! ([`Recorder`], called by the state machine for each command), so a follower answers
//! `Events` as well as the leader. Derivation is deterministic: the command's own time
//! (`now_ms`/`at_ms`) where it carries one, and only the tasks, services and nodes the
//! command names ([`touched`]) are compared before and after apply; the state is never
//! copied whole (it may hold 100,000 tasks).
//!
//! Map:
//! - [`log`]: the ring of the last [`CAPACITY`] events in memory, with a watch for
//!   followers. Retention is that ring only: nothing is written to disk, a restarted
//!   controller derives again the events of the entries it replays after its snapshot.
//! - [`touched`]: what a command touches, captured before apply.
//! - [`derive`] (+ `tasks.rs` for tasks, [`words`]): before vs after into events;
//!   [`memo`] the causes carried from one entry to a later one (why a task was
//!   replaced, why it was asked to stop).
//! - [`stream`]: the `Events` RPC's stream (backlog, filters, follow, falling behind).
//! - [`local`]: events seen by this controller only (leader changes, certificates).
//! - [`wire`]: the domain event as `pb::Event`.
//!
//! Invariants:
//! - Deriving never changes what `apply` does: [`Recorder::apply`] returns exactly
//!   `ClusterState::apply`'s result.
//! - Events of an entry are pushed while the state's write lock is held, so the ring is
//!   in log order; `(index, seq)` identifies an entry's event on every controller.
//! - A snapshot install derives nothing for the entries it covers (their events are
//!   missing on that controller) and keeps what the ring holds.

pub mod derive;
pub mod local;
pub mod log;
pub mod memo;
pub mod stream;
mod tasks;
pub mod touched;
pub mod wire;
pub mod words;

pub use derive::Deriver;
pub use log::{EventLog, CAPACITY};

use crate::state::{ClusterState, Command, CommandResult};

/// One thing that happened. Text fields that do not apply are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// When it happened, ms since the epoch.
    pub time_ms: u64,
    /// A dotted word: `task.running`, `node.down`, `rollout.started`, `autoscale`...
    pub kind: String,
    pub stack: String,
    pub service: String,
    pub node: String,
    pub task: String,
    /// What happened and why, in words a person can act on.
    pub message: String,
    /// The Raft log index of the entry it came from; 0 for a local event.
    pub index: u64,
    /// Its place among the events of its entry (local events: this controller's count).
    pub seq: u64,
}

/// The state machine's hook: applies a command and records the events it made.
pub struct Recorder {
    log: std::sync::Arc<EventLog>,
    deriver: Deriver,
}

impl Recorder {
    pub fn new(log: std::sync::Arc<EventLog>) -> Recorder {
        Recorder {
            log,
            deriver: Deriver::default(),
        }
    }

    /// `state.apply(cmd)`, recording its events as those of log entry `index`.
    pub fn apply(&mut self, index: u64, state: &mut ClusterState, cmd: &Command) -> CommandResult {
        let (result, events) = self
            .deriver
            .apply(state, cmd, crate::api::control::now_ms());
        self.log.push_entry(index, events);
        result
    }
}
