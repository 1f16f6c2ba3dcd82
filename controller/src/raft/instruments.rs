//! What a Raft member measures of itself for `/metrics` beyond openraft's own metrics:
//! how long proposals take to commit and apply, and the committed index (openraft 0.9
//! publishes neither). The snapshot size is kept by the state machine
//! ([`super::StateHandle::snapshot_bytes`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// One member's own Raft figures; cloning shares them.
#[derive(Debug, Clone)]
pub struct RaftInstruments {
    /// Seconds from proposing a command to its being applied on this member, for
    /// proposals that committed (a refusal such as "not the leader" is not a latency).
    pub proposals: Histogram,
    /// Set by the log store each time openraft saves the committed log id.
    committed: Arc<AtomicU64>,
}

impl RaftInstruments {
    pub fn new(committed: Arc<AtomicU64>) -> RaftInstruments {
        RaftInstruments {
            proposals: proposal_histogram(),
            committed,
        }
    }

    /// The last committed log index this member knows of (0 before the first commit
    /// since it started).
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }
}

/// 1 ms to about 16 s, doubling: a commit on a LAN takes a few ms; one that waits out an
/// election takes seconds.
pub fn proposal_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}
