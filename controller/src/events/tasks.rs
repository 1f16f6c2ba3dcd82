//! Task events: each touched task's transition with its cause, the causes remembered
//! for later entries ([`super::memo`]), and a rollout paused by failed replicas.

use std::collections::{BTreeSet, HashMap};

use shoal_proto::spec::FailureAction;
use shoal_proto::task::{Desired, TaskState};

use super::derive::Cx;
use super::touched::{Before, TaskSnap};
use super::words::{self, lost_node, service_event, task_event, who};
use crate::state::{Availability, Command, ServiceKey, Task, TaskId};

impl Cx<'_> {
    pub(super) fn tasks(&mut self, before: &Before) {
        let mut failing: BTreeSet<ServiceKey> = BTreeSet::new();
        let mut newly_failed: HashMap<ServiceKey, Vec<(TaskId, bool)>> = HashMap::new();
        for (id, b) in &before.tasks {
            let Some(b) = b else { continue };
            let Some(t) = self.state.tasks.get(id) else {
                self.memo.forget(id);
                continue;
            };
            if t.state != b.state {
                let message = self.transition(t, b);
                self.out.push(task_event(
                    self.time,
                    t,
                    format!("task.{}", t.state),
                    message,
                ));
                let counts = |state: TaskState, desired: Desired| {
                    state == TaskState::Failed
                        || (state == TaskState::Unhealthy && desired == Desired::Running)
                };
                let (now, was) = (counts(t.state, t.desired), counts(b.state, b.desired));
                if now != was {
                    newly_failed
                        .entry(t.service_key())
                        .or_default()
                        .push((id.clone(), now));
                    if now {
                        failing.insert(t.service_key());
                    }
                }
            } else if t.state == TaskState::Pending && t.error != b.error && !t.error.is_empty() {
                let cause = self
                    .memo
                    .replacing_of(id)
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                self.out.push(task_event(
                    self.time,
                    t,
                    "task.pending".into(),
                    format!("{} cannot be placed: {}{cause}", who(t), t.error),
                ));
            }
            if b.desired == Desired::Running
                && t.desired == Desired::Shutdown
                && !t.state.is_terminal()
            {
                let why = self.stop_cause(t);
                self.memo.stopping(id, why);
            }
            if t.state.is_terminal() {
                self.memo.forget(id);
            }
        }
        self.created(before);
        for key in failing {
            self.paused(
                &key,
                newly_failed.get(&key).map(Vec::as_slice).unwrap_or(&[]),
            );
        }
    }

    /// The message of a task's new state, with the cause remembered for it.
    fn transition(&mut self, t: &Task, b: &TaskSnap) -> String {
        let base = words::transition(self.state, t);
        match t.state {
            TaskState::Assigned => match self.memo.take_replacing(&t.id) {
                Some(cause) => format!("{base} ({cause})"),
                None => base,
            },
            TaskState::Shutdown => match self.memo.take_stopping(&t.id) {
                Some(why) => format!("{base}: {why}"),
                None if b.desired == Desired::Running && t.desired == Desired::Shutdown => {
                    format!("{base}: {}", self.stop_cause(t))
                }
                None => base,
            },
            _ => base,
        }
    }

    /// Why a live task was asked to stop, read from the state after the decision.
    fn stop_cause(&self, t: &Task) -> String {
        let Some(svc) = self.state.services.get(&t.service_key()) else {
            return "its service was removed".into();
        };
        let stack_removing = self.state.stacks.get(&t.stack).is_some_and(|s| s.removing);
        let drained = t
            .node
            .as_ref()
            .and_then(|n| self.state.nodes.get(n))
            .is_some_and(|n| n.availability == Availability::Drain);
        if stack_removing {
            format!("stack {} is being removed", t.stack)
        } else if svc.removing {
            "its service was removed from the stack".into()
        } else if t.pinned.is_none() && !svc.spec.mode.is_job() && t.slot > svc.replicas {
            format!("{} was scaled down to {} replicas", svc.name, svc.replicas)
        } else if t.generation < svc.generation {
            format!("replaced by generation {}", svc.generation)
        } else if drained {
            format!(
                "moved off {}, which is drained",
                t.node.as_deref().unwrap_or("")
            )
        } else if svc.rebalancing {
            "moved by shoal rebalance: its replacement is ready".into()
        } else {
            "replaced by a newer task of its slot".into()
        }
    }

    /// Remembers why each task the command created exists, for its assignment.
    fn created(&mut self, before: &Before) {
        // Only a Reconcile's `CreateTask`s make tasks, one id each, in a row (`SetPki`
        // and `Restore` move `next_task` far without creating any).
        let Command::Reconcile { decisions, .. } = self.cmd else {
            return;
        };
        let asked = decisions
            .iter()
            .filter(|d| matches!(d, crate::state::Decision::CreateTask { .. }))
            .count() as u64;
        let made = self.state.next_task.saturating_sub(before.next_task);
        if made == 0 || made > asked {
            return;
        }
        // The tasks this command stopped or lost, by slot: what a new task replaces.
        let mut replaced: HashMap<(ServiceKey, u64, Option<String>), &Task> = HashMap::new();
        for (id, _) in &before.tasks {
            if let Some(t) = self.state.tasks.get(id) {
                if t.desired == Desired::Shutdown || t.state.is_terminal() {
                    replaced.insert((t.service_key(), t.slot, t.pinned.clone()), t);
                }
            }
        }
        for n in before.next_task + 1..=self.state.next_task {
            let id = format!("{n:010x}");
            let Some(t) = self.state.tasks.get(&id) else {
                continue;
            };
            let old = replaced
                .get(&(t.service_key(), t.slot, t.pinned.clone()))
                .copied();
            if let Some(cause) = self.replacement_cause(t, old) {
                self.memo.replacing(&id, cause);
            }
        }
    }

    fn replacement_cause(&self, t: &Task, old: Option<&Task>) -> Option<String> {
        let svc = self.state.services.get(&t.service_key())?;
        let Some(old) = old else {
            return if svc.rebalancing {
                Some("moved by shoal rebalance".into())
            } else if svc.rolled_back && !svc.rollout_complete {
                Some(format!(
                    "rollback to the previous spec, generation {}",
                    svc.generation
                ))
            } else if svc.generation > 1 && !svc.rollout_complete {
                Some(format!("rollout of generation {}", svc.generation))
            } else {
                None
            };
        };
        let node = old.node.as_deref().unwrap_or("(no node)");
        Some(match old.state {
            TaskState::Orphaned => format!("replaces the task on {}", lost_node(self.state, node)),
            _ if old.generation < t.generation => format!(
                "{} of generation {}: replaces the task of generation {} on {node}",
                if svc.rolled_back {
                    "rollback"
                } else {
                    "rollout"
                },
                t.generation,
                old.generation
            ),
            TaskState::Failed | TaskState::Unhealthy => {
                format!("restarts it: the task on {node} failed: {}", old.failure())
            }
            TaskState::Complete => format!("restarts it: the task on {node} completed"),
            TaskState::Shutdown => format!("restarts it: the task on {node} stopped"),
            _ if old
                .node
                .as_ref()
                .and_then(|n| self.state.nodes.get(n))
                .is_some_and(|n| n.availability == Availability::Drain) =>
            {
                format!("moves it off {node}, which is drained")
            }
            _ => format!("replaces the task on {node}"),
        })
    }

    /// A rollout that this command paused (more new replicas failed than allowed).
    fn paused(&mut self, key: &str, changed: &[(TaskId, bool)]) {
        let Some(svc) = self.state.services.get(key) else {
            return;
        };
        let update = svc.update_config();
        if svc.rollout_complete
            || update.failure_action == FailureAction::Continue
            || svc.rolls_back_when_paused()
        {
            return;
        }
        // Only now: a scan of the tasks, for a service whose replicas just failed.
        let tasks: Vec<&Task> = self
            .state
            .tasks
            .values()
            .filter(|t| t.stack == svc.stack && t.service == svc.name)
            .collect();
        let Some(why) = crate::reconciler::rollout_paused(svc, &tasks) else {
            return;
        };
        let current = |id: &TaskId| {
            self.state
                .tasks
                .get(id)
                .is_some_and(|t| t.generation == svc.generation)
        };
        let gained = changed
            .iter()
            .filter(|(id, now)| *now && current(id))
            .count();
        let lost = changed
            .iter()
            .filter(|(id, now)| !*now && current(id))
            .count();
        let (failed, allowed) = crate::reconciler::rollout_failures(svc, &tasks);
        if (failed + lost).saturating_sub(gained) > allowed {
            return; // It was paused already.
        }
        let first = changed
            .iter()
            .filter(|(_, now)| *now)
            .find_map(|(id, _)| self.state.tasks.get(id))
            .map(|t| format!(" (last: {}{}: {})", who(t), words::on(t), t.failure()))
            .unwrap_or_default();
        self.out.push(service_event(
            self.time,
            svc,
            "rollout.paused",
            format!("{}: {why}{first}", svc.name),
        ));
    }
}
