//! The disconnect policy: a node cut off from every controller stops the replicas of
//! services that asked for it (`x-shoal-disconnect: stop`), and keeps the others running.
//!
//! The controller declares a silent node down after its grace and replaces the node's
//! replicas elsewhere. A node that is only partitioned still runs them: stopping them
//! after `stop_after` bounds how long both copies run (fencing on reconnect removes them
//! in any case). [`Contact`] is when a controller was last heard from (the session
//! touches it on every message, heartbeat acks included: the controller acks one
//! heartbeat every 400 ms at most); [`to_stop`] is the pure
//! decision, time as an input.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{AssignmentSet, TaskReport};
use crate::reconcile::{Action, AfterStop};
use crate::runtime::{ContainerInfo, ContainerState};
use shoal_proto::task::Desired;

/// When a controller was last heard from. Cloned handles share one clock reading; it
/// starts at creation, so an agent that starts cut off counts from its start.
#[derive(Debug, Clone)]
pub struct Contact(Arc<Mutex<Instant>>);

impl Default for Contact {
    fn default() -> Self {
        Contact::new()
    }
}

impl Contact {
    pub fn new() -> Contact {
        Contact(Arc::new(Mutex::new(Instant::now())))
    }

    /// A controller said something.
    pub fn touch(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// How long no controller was heard from.
    pub fn silent_for(&self) -> Duration {
        let last = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        Instant::now().saturating_duration_since(last)
    }
}

/// The stops the policy asks for after `silent` without a controller: running
/// containers of assigned, running tasks whose service says `stop_after` <= `silent`,
/// not busy and not already reported ended. Each is stopped with the service's grace
/// and signal, kept, and reported `failed` with the reason.
pub fn to_stop(
    intent: Option<&AssignmentSet>,
    containers: &BTreeMap<String, ContainerInfo>,
    busy: &BTreeSet<String>,
    reported: &BTreeMap<String, TaskReport>,
    silent: Duration,
) -> Vec<Action> {
    let Some(intent) = intent else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in containers.values() {
        let Some(task) = c.task_id() else { continue };
        let Some(a) = intent.tasks.get(task) else {
            continue;
        };
        let Some(after_ms) = a.spec.disconnect.stop_after_ms else {
            continue;
        };
        let due = silent >= Duration::from_millis(after_ms);
        let ended = a.ended || reported.get(task).is_some_and(|r| r.state.is_terminal());
        if !due
            || ended
            || a.desired != Desired::Running
            || c.state != ContainerState::Running
            || busy.contains(task)
        {
            continue;
        }
        out.push(Action::Stop {
            task_id: task.to_string(),
            container_id: c.id.clone(),
            running: true,
            grace: Duration::from_millis(a.spec.stop_grace_ms()),
            signal: a.spec.stop_signal.clone(),
            then: AfterStop::Fail(format!(
                "stopped: no controller reachable for {after_ms} ms (x-shoal-disconnect: stop)"
            )),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Assignment;
    use crate::runtime::TaskIdentity;
    use shoal_proto::spec::{DisconnectPolicy, ServiceSpec};
    use shoal_proto::task::TaskState;

    fn assignment(id: &str, stop_after_ms: Option<u64>) -> Assignment {
        Assignment {
            task: TaskIdentity {
                task_id: id.into(),
                stack: "s".into(),
                service: "db".into(),
                slot: 1,
                generation: 1,
            },
            desired: Desired::Running,
            ended: false,
            spec: Arc::new(ServiceSpec {
                name: "db".into(),
                image: "img".into(),
                stop_grace_period_ms: Some(3_000),
                stop_signal: Some("SIGINT".into()),
                disconnect: DisconnectPolicy { stop_after_ms },
                ..Default::default()
            }),
            gpus: Vec::new(),
            secrets: Vec::new(),
            volumes: Vec::new(),
        }
    }

    use crate::runtime::test_container as container;

    fn set(tasks: Vec<Assignment>) -> AssignmentSet {
        AssignmentSet {
            version: 1,
            mesh: Default::default(),
            remove_volumes: Vec::new(),
            tasks: tasks
                .into_iter()
                .map(|a| (a.task.task_id.clone(), a))
                .collect(),
        }
    }

    fn containers(cs: Vec<ContainerInfo>) -> BTreeMap<String, ContainerInfo> {
        cs.into_iter().map(|c| (c.id.clone(), c)).collect()
    }

    fn stop(task: &str, container: &str, after_ms: u64) -> Action {
        Action::Stop {
            task_id: task.into(),
            container_id: container.into(),
            running: true,
            grace: Duration::from_secs(3),
            signal: Some("SIGINT".into()),
            then: AfterStop::Fail(format!(
                "stopped: no controller reachable for {after_ms} ms (x-shoal-disconnect: stop)"
            )),
        }
    }

    #[test]
    fn stops_only_services_that_asked_once_their_time_is_up() {
        let intent = set(vec![
            assignment("keep", None),
            assignment("fast", Some(2_000)),
            assignment("slow", Some(5_000)),
        ]);
        let cs = containers(vec![
            container("c-keep", "keep", ContainerState::Running),
            container("c-fast", "fast", ContainerState::Running),
            container("c-slow", "slow", ContainerState::Running),
        ]);
        let none = BTreeSet::new();
        let reported = BTreeMap::new();
        let at = |ms| {
            to_stop(
                Some(&intent),
                &cs,
                &none,
                &reported,
                Duration::from_millis(ms),
            )
        };
        assert_eq!(at(1_999), vec![]);
        assert_eq!(at(2_000), vec![stop("fast", "c-fast", 2_000)]);
        assert_eq!(
            at(60_000),
            vec![stop("fast", "c-fast", 2_000), stop("slow", "c-slow", 5_000)],
            "a service without the extension keeps running however long it lasts"
        );
    }

    #[test]
    fn leaves_stopped_busy_ended_and_unassigned_containers_alone() {
        let mut ended = assignment("ended", Some(1_000));
        ended.ended = true;
        let mut shutdown = assignment("down", Some(1_000));
        shutdown.desired = Desired::Shutdown;
        let intent = set(vec![
            assignment("exited", Some(1_000)),
            assignment("busy", Some(1_000)),
            assignment("failed", Some(1_000)),
            ended,
            shutdown,
        ]);
        let cs = containers(vec![
            container("c1", "exited", ContainerState::Exited),
            container("c2", "busy", ContainerState::Running),
            container("c3", "failed", ContainerState::Running),
            container("c4", "ended", ContainerState::Running),
            container("c5", "down", ContainerState::Running),
            container("c6", "stranger", ContainerState::Running),
        ]);
        let busy: BTreeSet<String> = ["busy".to_string()].into();
        let reported: BTreeMap<String, TaskReport> = [(
            "failed".to_string(),
            TaskReport::new("failed", TaskState::Failed),
        )]
        .into();
        let silent = Duration::from_secs(60);
        assert_eq!(
            to_stop(Some(&intent), &cs, &busy, &reported, silent),
            vec![]
        );
        assert_eq!(
            to_stop(None, &cs, &busy, &reported, silent),
            vec![],
            "nothing is known to be assigned before the first assignments"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn contact_counts_from_creation_and_from_each_touch() {
        let c = Contact::new();
        tokio::time::advance(Duration::from_millis(700)).await;
        assert_eq!(c.silent_for(), Duration::from_millis(700));
        c.clone().touch();
        assert_eq!(c.silent_for(), Duration::ZERO, "clones share the clock");
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(c.silent_for(), Duration::from_millis(300));
    }
}
