//! Causes carried from the entry that knows them to the later entry whose event says
//! them: a replacement is created in one entry (next to the `Shutdown` of the task it
//! replaces) and assigned in a later one; a task is asked to stop in one entry and its
//! agent reports it stopped in another.
//!
//! Kept in memory, bounded ([`MEMO_CAP`] per map, the oldest task ids dropped first:
//! ids grow monotonically). A controller that restarted, or installed a snapshot, in
//! between gives the later event without that cause.

use std::collections::BTreeMap;

use crate::state::TaskId;

/// At most this many causes of each kind are remembered.
pub const MEMO_CAP: usize = 20_000;

#[derive(Debug, Default)]
pub struct Memo {
    /// Why a new task exists, until it is assigned: `replaces the task on n1, which is down`.
    replacing: BTreeMap<TaskId, String>,
    /// Why a task was asked to stop, until it stopped: `replaced by generation 3`.
    stopping: BTreeMap<TaskId, String>,
}

fn remember(map: &mut BTreeMap<TaskId, String>, task: &str, why: String) {
    map.insert(task.to_string(), why);
    while map.len() > MEMO_CAP {
        map.pop_first();
    }
}

impl Memo {
    pub fn replacing(&mut self, task: &str, why: String) {
        remember(&mut self.replacing, task, why);
    }

    pub fn stopping(&mut self, task: &str, why: String) {
        remember(&mut self.stopping, task, why);
    }

    /// Why `task` was created, taken (it is said once, at its assignment).
    pub fn take_replacing(&mut self, task: &str) -> Option<String> {
        self.replacing.remove(task)
    }

    /// Why `task` was asked to stop, taken.
    pub fn take_stopping(&mut self, task: &str) -> Option<String> {
        self.stopping.remove(task)
    }

    /// Why `task` was created, still kept (for a pending reason).
    pub fn replacing_of(&self, task: &str) -> Option<&str> {
        self.replacing.get(task).map(String::as_str)
    }

    /// A task ended or was forgotten: nothing more will be said of it.
    pub fn forget(&mut self, task: &str) {
        self.replacing.remove(task);
        self.stopping.remove(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_dropping_the_oldest_ids() {
        let mut m = Memo::default();
        for i in 0..MEMO_CAP + 2 {
            m.replacing(&format!("{i:010x}"), format!("cause {i}"));
        }
        assert_eq!(m.replacing.len(), MEMO_CAP);
        assert_eq!(m.replacing_of(&format!("{:010x}", 0)), None);
        assert_eq!(
            m.take_replacing(&format!("{:010x}", MEMO_CAP + 1)),
            Some(format!("cause {}", MEMO_CAP + 1))
        );
    }
}
