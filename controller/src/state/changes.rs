//! What applied commands changed, so that the leader's reconciler looks again only at
//! the services that changed ([`crate::reconciler::reconcile_in`]).
//!
//! Derived and local: never replicated, written in a snapshot or compared. Its stamps
//! come from one counter of the process, so they only grow, also across a state replaced
//! whole: a state restored, received in a snapshot or read from disk starts out as
//! "everything changed" at a stamp newer than any reader's cursor.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use super::model::{ClusterState, Command, Decision, ServiceKey};

static STAMPS: AtomicU64 = AtomicU64::new(1);

fn next_stamp() -> u64 {
    STAMPS.fetch_add(1, Ordering::Relaxed)
}

/// When each service last changed, and when everything last did.
#[derive(Debug, Clone)]
pub struct Changes {
    all: u64,
    services: HashMap<ServiceKey, u64>,
    last: u64,
}

impl Default for Changes {
    fn default() -> Self {
        let all = next_stamp();
        Changes {
            all,
            services: HashMap::new(),
            last: all,
        }
    }
}

/// Not part of the state's value: two states with the same content are equal whatever
/// was applied to reach them.
impl PartialEq for Changes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What changed since a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// More than services: nodes, volumes, the state as a whole.
    All,
    Services(BTreeSet<ServiceKey>),
}

/// What one command changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Touched {
    Nothing,
    Services(BTreeSet<ServiceKey>),
    All,
}

impl Changes {
    /// The cursor that [`Changes::since`] takes: everything up to now.
    pub fn cursor(&self) -> u64 {
        self.last
    }

    /// What changed after `cursor`.
    pub fn since(&self, cursor: u64) -> Changed {
        if self.all > cursor {
            return Changed::All;
        }
        Changed::Services(
            self.services
                .iter()
                .filter(|(_, at)| **at > cursor)
                .map(|(k, _)| k.clone())
                .collect(),
        )
    }

    pub(super) fn record(&mut self, touched: Touched, services_now: usize) {
        let stamp = next_stamp();
        self.last = stamp;
        match touched {
            Touched::Nothing => {}
            Touched::All => {
                self.all = stamp;
                self.services.clear();
            }
            Touched::Services(keys) => {
                for k in keys {
                    self.services.insert(k, stamp);
                }
                // Services removed long ago: a reader with an older cursor sees All.
                if self.services.len() > 64 + 2 * services_now {
                    self.all = stamp;
                    self.services.clear();
                }
            }
        }
    }
}

impl ClusterState {
    /// What `cmd` changes, read before it is applied (a task's service is known only
    /// while the task is). Commands about nodes, volumes, the cluster's keys or its
    /// state as a whole change everything: they are rare, and a node's status or
    /// labels matter to every service on it.
    pub(super) fn touched_by(&self, cmd: &Command) -> Touched {
        let task = |id: &str| self.tasks.get(id).map(|t| t.service_key());
        let of_stack = |stack: &str| {
            self.services
                .values()
                .filter(|s| s.stack == stack)
                .map(|s| s.key())
                .collect::<Vec<_>>()
        };
        let keys: BTreeSet<ServiceKey> = match cmd {
            Command::TaskStatus { updates, .. } => {
                updates.iter().filter_map(|u| task(&u.task)).collect()
            }
            Command::Reconcile { decisions, .. } => {
                let mut keys = BTreeSet::new();
                for d in decisions {
                    let key = match d {
                        Decision::CreateTask { service, .. }
                        | Decision::DropService { service }
                        | Decision::RollBack { service, .. }
                        | Decision::CompleteRollout { service, .. }
                        | Decision::CompleteRebalance { service } => Some(service.clone()),
                        Decision::Assign { task: id, .. }
                        | Decision::AssignGpus { task: id, .. }
                        | Decision::Pending { task: id, .. }
                        | Decision::Shutdown { task: id }
                        | Decision::Orphan { task: id }
                        | Decision::Forget { task: id }
                        | Decision::Fail { task: id, .. } => task(id),
                        Decision::DropStack { .. } | Decision::PromoteStandby { .. } => {
                            return Touched::All
                        }
                    };
                    keys.extend(key);
                }
                keys
            }
            Command::Scale { service, .. }
            | Command::Autoscale { service, .. }
            | Command::Rollback { service }
            | Command::Rebalance { service } => BTreeSet::from([service.clone()]),
            Command::DeployStack { spec, .. } => of_stack(&spec.name)
                .into_iter()
                .chain(
                    spec.services
                        .keys()
                        .map(|s| super::model::service_key(&spec.name, s)),
                )
                .collect(),
            Command::RemoveStack {
                stack,
                volumes: false,
            } => of_stack(stack).into_iter().collect(),
            // Images matter only where a pending task is placed, and a service with a
            // pending task is looked at every pass anyway.
            Command::NodeImages { .. } | Command::ImageHeld { .. } => return Touched::Nothing,
            // Each command of a batch records what it changed as it is applied.
            Command::Batch { .. } => return Touched::Nothing,
            _ => return Touched::All,
        };
        Touched::Services(keys)
    }
}
