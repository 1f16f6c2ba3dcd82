//! Fault injection for tests: a controller can be cut off from its peers and agents
//! ("partitioned") without stopping it. Production code holds a `Faults` that is never
//! set; the checks are one relaxed atomic load.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Faults {
    isolated: AtomicBool,
}

impl Faults {
    /// Drop this controller's Raft traffic both ways and refuse agent sessions. Clients
    /// of the `Control` API still reach it, so a test can show it cannot acknowledge.
    pub fn isolate(&self) {
        self.isolated.store(true, Ordering::Relaxed);
    }

    pub fn heal(&self) {
        self.isolated.store(false, Ordering::Relaxed);
    }

    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::Relaxed)
    }
}
