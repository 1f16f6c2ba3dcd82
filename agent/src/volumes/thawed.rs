//! Containers this agent paused for a frozen export, and when it resumed them.
//!
//! Docker (20.10 at least) shows a container that was paused and resumed as `unhealthy`
//! until its next healthcheck probe passes, with no failed probe behind it. That is not
//! the service's health: the supervisor keeps the health it saw before the pause for
//! such a container until a probe says otherwise or [`GRACE`] has passed
//! (`supervisor::observe`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after a resume an `unhealthy` status may be the pause's and not the service's
/// (longer than Docker's default probe interval, 30 s).
pub const GRACE: Duration = Duration::from_secs(35);

/// Shared by the agent's transfers (which pause and resume) and its supervisor.
#[derive(Debug, Clone, Default)]
pub struct Thawed(Arc<Mutex<HashMap<String, Instant>>>);

impl Thawed {
    /// Container `id` was resumed now.
    pub fn resumed(&self, id: &str) {
        self.lock().insert(id.to_string(), Instant::now());
    }

    /// Whether container `id` was resumed within [`GRACE`] (and forgets older entries).
    pub fn recently(&self, id: &str) -> bool {
        let mut m = self.lock();
        m.retain(|_, at| at.elapsed() < GRACE);
        m.contains_key(id)
    }

    /// A probe passed (or the container is gone): its health is its own again.
    pub fn settled(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_container_is_recent_until_it_settles() {
        let t = Thawed::default();
        assert!(!t.recently("c1"));
        t.resumed("c1");
        assert!(t.recently("c1"));
        assert!(!t.recently("c2"));
        t.settled("c1");
        assert!(!t.recently("c1"));
    }
}
