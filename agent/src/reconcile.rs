//! The supervisor's pure core: given what should run here and what does, the actions
//! that make them match. No I/O, no clock; [`crate::supervisor`] executes the actions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_proto::labels;
use shoal_proto::task::{Desired, TaskState};

use crate::model::{Assignment, AssignmentSet, TaskReport};
use crate::runtime::{ContainerInfo, ContainerState, Health};

/// Grace period for containers the agent removes without a spec (fencing).
pub const FENCE_GRACE: Duration = Duration::from_secs(10);

/// A snapshot of the supervisor's knowledge.
#[derive(Debug, Clone, Copy)]
pub struct Local<'a> {
    /// `None` until the controller first said what runs here: then nothing is fenced.
    pub intent: Option<&'a AssignmentSet>,
    /// This node's shoal containers, by container id.
    pub containers: &'a BTreeMap<String, ContainerInfo>,
    /// Tasks with a runtime operation in flight; they are left alone.
    pub busy: &'a BTreeSet<String>,
    /// The last state reported per task.
    pub reported: &'a BTreeMap<String, TaskReport>,
    /// Tasks whose ingress port could not be opened.
    pub ingress_errors: &'a BTreeMap<String, String>,
}

/// What happens to a container after it is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStop {
    /// Remove it and report the task `shutdown`.
    RemoveAndReport,
    /// Remove it quietly: its task is not assigned here (fencing).
    Remove,
    /// Keep it and report the task `failed` with this error.
    Fail(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Pull, create and start the task's container (`existing`: start that one instead).
    Start {
        assignment: Assignment,
        existing: Option<String>,
    },
    Stop {
        task_id: String,
        container_id: String,
        /// Whether its process runs (else only the after-stop step is needed).
        running: bool,
        grace: Duration,
        signal: Option<String>,
        then: AfterStop,
    },
    Report(TaskReport),
}

/// The task state a container shows.
pub fn observed_report(task_id: &str, c: &ContainerInfo) -> TaskReport {
    let base = |state| {
        TaskReport::new(task_id, state)
            .container(Some(&c.id))
            .ip(c.ip)
            .ips(&c.ips)
    };
    match c.state {
        ContainerState::Created => base(TaskState::Starting),
        ContainerState::Running => base(match c.health {
            Health::Healthy => TaskState::Healthy,
            Health::Unhealthy => TaskState::Unhealthy,
            Health::None | Health::Starting => TaskState::Running,
        }),
        ContainerState::Exited => match (c.exit_code, c.oom_killed) {
            (Some(0), false) => base(TaskState::Complete).exit_code(0),
            (code, true) => {
                let code = code.unwrap_or(137);
                base(TaskState::Failed)
                    .exit_code(code)
                    .error(format!("OOM-killed (exited with code {code})"))
            }
            (Some(code), false) => base(TaskState::Failed)
                .exit_code(code)
                .error(format!("exited with code {code}")),
            (None, false) => base(TaskState::Failed).error(
                c.error
                    .clone()
                    .unwrap_or_else(|| "container stopped".to_string()),
            ),
        },
    }
}

fn is_terminal(r: Option<&TaskReport>) -> bool {
    r.is_some_and(|r| r.state.is_terminal())
}

/// Whether `new` is news after `old`: a terminal state is final.
fn changed(old: Option<&TaskReport>, new: &TaskReport) -> bool {
    match old {
        None => true,
        Some(old) if old.state.is_terminal() => false,
        Some(old) => old != new,
    }
}

/// The actions that move this node toward its assignments.
pub fn plan(local: Local<'_>) -> Vec<Action> {
    let mut actions = Vec::new();
    // The container of each task (the first by id); further ones are duplicates.
    let mut by_task: BTreeMap<&str, &ContainerInfo> = BTreeMap::new();
    let mut duplicates: Vec<(&str, &ContainerInfo)> = Vec::new();
    for c in local.containers.values() {
        let Some(task) = c.task_id() else { continue };
        if by_task.contains_key(task) {
            duplicates.push((task, c));
        } else {
            by_task.insert(task, c);
        }
    }

    let Some(intent) = local.intent else {
        // Not told yet: only say what runs.
        for (task, c) in &by_task {
            let report = observed_report(task, c);
            if changed(local.reported.get(*task), &report) {
                actions.push(Action::Report(report));
            }
        }
        return actions;
    };

    let fence = |task: &str, c: &ContainerInfo| Action::Stop {
        task_id: task.to_string(),
        container_id: c.id.clone(),
        running: c.state == ContainerState::Running,
        grace: FENCE_GRACE,
        signal: None,
        then: AfterStop::Remove,
    };

    for (task, c) in &by_task {
        if !intent.tasks.contains_key(*task) && !local.busy.contains(*task) {
            actions.push(fence(task, c));
        }
    }
    for (task, c) in &duplicates {
        if !local.busy.contains(*task) {
            actions.push(fence(task, c));
        }
    }

    for (task_id, a) in &intent.tasks {
        if local.busy.contains(task_id) {
            continue;
        }
        let reported = local.reported.get(task_id);
        let container = by_task.get(task_id.as_str()).copied();
        match (a.desired, container) {
            (Desired::Running, None) => {
                if a.ended {
                    // Its container is gone and it must not run again: nothing to do.
                } else if reported.is_none() {
                    actions.push(Action::Start {
                        assignment: a.clone(),
                        existing: None,
                    });
                } else if !is_terminal(reported) {
                    actions.push(Action::Report(
                        TaskReport::new(task_id, TaskState::Failed).error("container disappeared"),
                    ));
                }
            }
            (Desired::Running, Some(c)) => {
                if c.state == ContainerState::Created && !is_terminal(reported) && !a.ended {
                    actions.push(Action::Start {
                        assignment: a.clone(),
                        existing: Some(c.id.clone()),
                    });
                    continue;
                }
                if let Some(error) = local.ingress_errors.get(task_id) {
                    if c.state == ContainerState::Running && !is_terminal(reported) {
                        actions.push(Action::Stop {
                            task_id: task_id.clone(),
                            container_id: c.id.clone(),
                            running: true,
                            grace: Duration::from_millis(a.spec.stop_grace_ms()),
                            signal: a.spec.stop_signal.clone(),
                            then: AfterStop::Fail(error.clone()),
                        });
                        continue;
                    }
                }
                let report = observed_report(task_id, c);
                if changed(reported, &report) {
                    actions.push(Action::Report(report));
                }
            }
            (Desired::Shutdown, Some(c)) => actions.push(Action::Stop {
                task_id: task_id.clone(),
                container_id: c.id.clone(),
                running: c.state == ContainerState::Running,
                grace: Duration::from_millis(a.spec.stop_grace_ms()),
                signal: a.spec.stop_signal.clone(),
                then: AfterStop::RemoveAndReport,
            }),
            (Desired::Shutdown, None) => {
                if !is_terminal(reported) {
                    actions.push(Action::Report(TaskReport::new(
                        task_id,
                        TaskState::Shutdown,
                    )));
                }
            }
        }
    }
    actions
}

/// Whether a container belongs to `node` (containers without a node label are taken as
/// this node's: an engine is shared only by agents that label their containers).
pub fn is_ours(c: &ContainerInfo, node: &str, cluster: Option<&str>) -> bool {
    let node_ok = !matches!(c.labels.get(labels::NODE), Some(n) if n != node);
    // Containers made before clusters labelled theirs have no label: this cluster's.
    let cluster_ok = match (cluster, c.labels.get(labels::CLUSTER)) {
        (Some(ours), Some(theirs)) => ours == theirs,
        _ => true,
    };
    node_ok && cluster_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::TaskIdentity;
    use shoal_proto::spec::ServiceSpec;
    use std::sync::Arc;

    fn assignment(id: &str, desired: Desired) -> Assignment {
        Assignment {
            task: TaskIdentity {
                task_id: id.into(),
                stack: "s".into(),
                service: "web".into(),
                slot: 1,
                generation: 1,
            },
            desired,
            ended: false,
            gpus: Vec::new(),
            secrets: Vec::new(),
            volumes: Vec::new(),
            spec: Arc::new(ServiceSpec {
                name: "web".into(),
                image: "img".into(),
                stop_grace_period_ms: Some(3_000),
                stop_signal: Some("SIGINT".into()),
                ..Default::default()
            }),
        }
    }

    use crate::runtime::test_container as container;

    struct World {
        intent: Option<AssignmentSet>,
        containers: BTreeMap<String, ContainerInfo>,
        busy: BTreeSet<String>,
        reported: BTreeMap<String, TaskReport>,
        ingress: BTreeMap<String, String>,
    }

    impl World {
        fn new(tasks: Vec<Assignment>, containers: Vec<ContainerInfo>) -> World {
            World {
                intent: Some(AssignmentSet {
                    version: 1,
                    mesh: Default::default(),
                    remove_volumes: Vec::new(),
                    tasks: tasks
                        .into_iter()
                        .map(|a| (a.task.task_id.clone(), a))
                        .collect(),
                }),
                containers: containers.into_iter().map(|c| (c.id.clone(), c)).collect(),
                busy: BTreeSet::new(),
                reported: BTreeMap::new(),
                ingress: BTreeMap::new(),
            }
        }
        fn plan(&self) -> Vec<Action> {
            plan(Local {
                intent: self.intent.as_ref(),
                containers: &self.containers,
                busy: &self.busy,
                reported: &self.reported,
                ingress_errors: &self.ingress,
            })
        }
    }

    #[test]
    fn new_assignment_starts_once() {
        let mut w = World::new(vec![assignment("t1", Desired::Running)], vec![]);
        assert_eq!(
            w.plan(),
            vec![Action::Start {
                assignment: assignment("t1", Desired::Running),
                existing: None
            }]
        );
        w.busy.insert("t1".into());
        assert_eq!(w.plan(), vec![]);
    }

    #[test]
    fn an_ended_task_is_never_started_again() {
        // After an agent restart nothing is reported yet; the controller's word that the
        // task ended is what keeps it from being recreated or restarted.
        let mut ended = assignment("t1", Desired::Running);
        ended.ended = true;
        let w = World::new(vec![ended.clone()], vec![]);
        assert_eq!(w.plan(), vec![]);
        let w = World::new(
            vec![ended],
            vec![container("c1", "t1", ContainerState::Created)],
        );
        assert!(
            !w.plan().iter().any(|a| matches!(a, Action::Start { .. })),
            "{:?}",
            w.plan()
        );
    }

    #[test]
    fn unassigned_containers_are_fenced_only_once_intent_is_known() {
        let mut w = World::new(
            vec![],
            vec![container("c1", "old", ContainerState::Running)],
        );
        assert_eq!(
            w.plan(),
            vec![Action::Stop {
                task_id: "old".into(),
                container_id: "c1".into(),
                running: true,
                grace: FENCE_GRACE,
                signal: None,
                then: AfterStop::Remove
            }]
        );
        w.intent = None;
        assert_eq!(
            w.plan(),
            vec![Action::Report(
                TaskReport::new("old", TaskState::Running).container(Some("c1"))
            )]
        );
    }

    #[test]
    fn shutdown_stops_with_the_specs_grace_and_signal() {
        let w = World::new(
            vec![assignment("t1", Desired::Shutdown)],
            vec![container("c1", "t1", ContainerState::Running)],
        );
        assert_eq!(
            w.plan(),
            vec![Action::Stop {
                task_id: "t1".into(),
                container_id: "c1".into(),
                running: true,
                grace: Duration::from_secs(3),
                signal: Some("SIGINT".into()),
                then: AfterStop::RemoveAndReport
            }]
        );
    }

    #[test]
    fn exits_are_reported_once_and_never_restarted() {
        let mut c = container("c1", "t1", ContainerState::Exited);
        c.exit_code = Some(3);
        let mut w = World::new(vec![assignment("t1", Desired::Running)], vec![c]);
        let failed = TaskReport::new("t1", TaskState::Failed)
            .container(Some("c1"))
            .exit_code(3)
            .error("exited with code 3");
        assert_eq!(w.plan(), vec![Action::Report(failed.clone())]);
        w.reported.insert("t1".into(), failed);
        assert_eq!(w.plan(), vec![]);
        w.containers.clear();
        assert_eq!(w.plan(), vec![], "a failed task is not started again");
    }

    #[test]
    fn oom_kill_is_named() {
        let mut c = container("c1", "t1", ContainerState::Exited);
        c.exit_code = Some(137);
        c.oom_killed = true;
        assert_eq!(
            observed_report("t1", &c).error.as_deref(),
            Some("OOM-killed (exited with code 137)")
        );
    }

    #[test]
    fn a_vanished_container_fails_its_task() {
        let mut w = World::new(vec![assignment("t1", Desired::Running)], vec![]);
        w.reported.insert(
            "t1".into(),
            TaskReport::new("t1", TaskState::Running).container(Some("c1")),
        );
        assert_eq!(
            w.plan(),
            vec![Action::Report(
                TaskReport::new("t1", TaskState::Failed).error("container disappeared")
            )]
        );
    }

    #[test]
    fn a_created_container_is_started_not_recreated() {
        let w = World::new(
            vec![assignment("t1", Desired::Running)],
            vec![container("c1", "t1", ContainerState::Created)],
        );
        assert_eq!(
            w.plan(),
            vec![Action::Start {
                assignment: assignment("t1", Desired::Running),
                existing: Some("c1".into())
            }]
        );
    }

    #[test]
    fn ingress_error_fails_a_running_task() {
        let mut w = World::new(
            vec![assignment("t1", Desired::Running)],
            vec![container("c1", "t1", ContainerState::Running)],
        );
        w.ingress.insert("t1".into(), "address in use".into());
        assert!(matches!(
            &w.plan()[..],
            [Action::Stop { then: AfterStop::Fail(e), running: true, .. }] if e == "address in use"
        ));
    }

    #[test]
    fn other_nodes_containers_are_not_ours() {
        let mut c = container("c1", "t1", ContainerState::Running);
        assert!(is_ours(&c, "a", None));
        c.labels.insert(labels::NODE.into(), "b".into());
        assert!(!is_ours(&c, "a", None));
        assert!(is_ours(&c, "b", None));
    }

    #[test]
    fn other_clusters_containers_are_not_ours() {
        let mut c = container("c1", "t1", ContainerState::Running);
        // Made before containers carried their cluster: this cluster's.
        assert!(is_ours(&c, "a", Some("c0ffee")));
        c.labels.insert(labels::CLUSTER.into(), "c0ffee".into());
        assert!(is_ours(&c, "a", Some("c0ffee")));
        assert!(!is_ours(&c, "a", Some("bada55")));
        // An agent that does not know its cluster (no credentials) cannot tell.
        assert!(is_ours(&c, "a", None));
    }
}
