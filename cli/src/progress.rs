//! Whether a deploy has converged: a pure function over what `Services` and `Ps` return
//! and the generations the controller gave the stack's services when it took the deploy.
//!
//! A service is done when its tasks of the deployed generation (or a later one) that
//! should run number exactly its desired replicas and each is `running`, or `healthy`
//! when it has a healthcheck, or `complete` for jobs. The rollout fails as soon as one
//! of those tasks is `failed` (failures that predate the deploy, of services it did not
//! change, are history and do not count: see [`prior_failures`]).

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::pb::{DeployReply, ServiceRow, TaskRow};
use shoal_proto::task::TaskState;

/// What the deploy is waiting for: the stack and, by service, the generation that must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generations {
    pub stack: String,
    pub services: BTreeMap<String, u64>,
    /// Services the deploy left as they were: their current tasks may have failed before.
    pub unchanged: BTreeSet<String>,
    /// Ids of failed tasks seen before the rollout was followed (see [`prior_failures`]).
    pub prior_failures: BTreeSet<String>,
}

impl From<&DeployReply> for Generations {
    fn from(r: &DeployReply) -> Self {
        Generations {
            stack: r.stack.clone(),
            services: r
                .services
                .iter()
                .map(|s| (s.service.clone(), s.generation))
                .collect(),
            unchanged: r
                .services
                .iter()
                .filter(|s| !s.changed)
                .map(|s| s.service.clone())
                .collect(),
            prior_failures: BTreeSet::new(),
        }
    }
}

/// The failed tasks of unchanged services in the first poll: a replica that crashed an
/// hour ago and was replaced must not fail a deploy that did not touch its service.
pub fn prior_failures(tasks: &[TaskRow], generations: &Generations) -> BTreeSet<String> {
    tasks
        .iter()
        .filter(|t| t.stack == generations.stack && generations.unchanged.contains(&t.service))
        .filter(|t| t.state == TaskState::Failed.as_str())
        .map(|t| t.id.clone())
        .collect()
}

/// One service's state, as a line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProgress {
    pub service: String,
    /// `web: 1/2 healthy (1 starting)`.
    pub line: String,
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every service is done; one line per service.
    Converged(Vec<ServiceProgress>),
    /// One line per service, done or not.
    Waiting(Vec<ServiceProgress>),
    /// `SERVICE slot N on NODE: ERROR`.
    Failed(String),
}

pub fn progress(services: &[ServiceRow], tasks: &[TaskRow], generations: &Generations) -> Progress {
    let stack = generations.stack.as_str();
    let mut lines = Vec::new();
    for (name, &generation) in &generations.services {
        let of_service = |t: &&TaskRow| t.stack == stack && t.service == *name;
        let mut current: Vec<&TaskRow> = tasks
            .iter()
            .filter(of_service)
            .filter(|t| t.generation >= generation)
            .collect();
        current.sort_by_key(|t| (t.slot, t.updated_at_ms));
        if let Some(t) = current.iter().find(|t| {
            t.state == TaskState::Failed.as_str() && !generations.prior_failures.contains(&t.id)
        }) {
            return Progress::Failed(failure(t));
        }
        let Some(row) = services
            .iter()
            .find(|s| s.stack == stack && s.name == *name)
        else {
            lines.push(ServiceProgress {
                service: name.clone(),
                line: format!("{name}: not known to the controller yet"),
                done: false,
            });
            continue;
        };
        // The controller paused the rollout, or rolled it back: the deploy failed.
        let rolled_back = row.generation > generation && row.rollout.contains("roll");
        if row.rollout.starts_with("paused") || rolled_back {
            let culprit = current.iter().find(|t| {
                t.generation == generation
                    && (t.state == TaskState::Failed.as_str()
                        || t.state == TaskState::Unhealthy.as_str())
            });
            let what = culprit.map_or_else(|| name.clone(), |t| failure(t));
            let outcome = if rolled_back {
                format!("rolled back to the previous spec ({})", row.rollout)
            } else {
                row.rollout.clone()
            };
            return Progress::Failed(format!("{what}; {name}: {outcome}"));
        }
        let job = row.mode.ends_with("job");
        let active: Vec<&TaskRow> = current
            .iter()
            .copied()
            .filter(|t| t.desired == "running" || (job && t.state == TaskState::Complete.as_str()))
            .collect();
        let is_ready = |t: &TaskRow| {
            if job {
                t.state == TaskState::Complete.as_str()
            } else if t.has_healthcheck || row.has_healthcheck {
                t.state == TaskState::Healthy.as_str()
            } else {
                t.state == TaskState::Running.as_str() || t.state == TaskState::Healthy.as_str()
            }
        };
        let ready = active.iter().filter(|t| is_ready(t)).count() as u64;
        let done = active.len() as u64 == row.desired && ready == row.desired;
        let word = if job {
            "complete"
        } else if row.has_healthcheck {
            "healthy"
        } else {
            "running"
        };

        // Not-ready tasks grouped by state (in lifecycle order) and reason.
        let mut groups: BTreeMap<(Option<TaskState>, String, String), usize> = BTreeMap::new();
        for t in active.iter().filter(|t| !is_ready(t)) {
            *groups
                .entry((TaskState::parse(&t.state), t.state.clone(), t.error.clone()))
                .or_default() += 1;
        }
        let mut details: Vec<String> = groups
            .into_iter()
            .map(|((_, state, error), n)| {
                if error.is_empty() {
                    format!("{n} {state}")
                } else {
                    format!("{n} {state}: {error}")
                }
            })
            .collect();
        let old = tasks
            .iter()
            .filter(of_service)
            .filter(|t| t.generation < generation && t.desired == "running")
            .filter(|t| TaskState::parse(&t.state).is_some_and(TaskState::is_up))
            .count();
        if old > 0 {
            details.push(format!("{old} of the previous version running"));
        }
        let extra = (active.len() as u64).saturating_sub(row.desired);
        if extra > 0 && details.is_empty() {
            details.push(format!("{extra} more than wanted"));
        }
        let mut line = format!("{name}: {ready}/{} {word}", row.desired);
        if !details.is_empty() {
            line.push_str(&format!(" ({})", details.join(", ")));
        }
        lines.push(ServiceProgress {
            service: name.clone(),
            line,
            done,
        });
    }
    if lines.iter().all(|l| l.done) {
        Progress::Converged(lines)
    } else {
        Progress::Waiting(lines)
    }
}

fn failure(t: &TaskRow) -> String {
    let node = if t.node.is_empty() {
        String::new()
    } else {
        format!(" on {}", t.node)
    };
    let why = if !t.error.is_empty() {
        t.error.clone()
    } else if t.state == TaskState::Unhealthy.as_str() {
        "its healthcheck fails".to_string()
    } else if t.has_exit_code {
        format!("exited with code {}", t.exit_code)
    } else {
        "failed".to_string()
    };
    format!("{} slot {}{node}: {why}", t.service, t.slot)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn svc(name: &str, desired: u64, health: bool) -> ServiceRow {
        ServiceRow {
            stack: "hello".into(),
            name: name.into(),
            image: "shoal-test/busybox:latest".into(),
            mode: "replicated".into(),
            desired,
            running: 0,
            healthy: 0,
            generation: 2,
            has_healthcheck: health,
            ..Default::default()
        }
    }

    #[test]
    fn a_paused_or_rolled_back_rollout_fails_the_deploy_naming_the_replica() {
        let g = gens(&[("web", 2)]);
        let mut web = svc("web", 2, true);
        web.rollout = "paused: rollout of generation 2 paused: 1 new replica(s) failed".into();
        let tasks = [task("web", 1, 2, "unhealthy"), task("web", 2, 1, "healthy")];
        assert_eq!(
            progress(&[web.clone()], &tasks, &g),
            Progress::Failed(
                "web slot 1 on node-a: its healthcheck fails; web: paused: rollout of \
                 generation 2 paused: 1 new replica(s) failed"
                    .into()
            )
        );
        web.generation = 3;
        web.rollout = "rolling back".into();
        assert_eq!(
            progress(&[web], &tasks, &g),
            Progress::Failed(
                "web slot 1 on node-a: its healthcheck fails; web: rolled back to the \
                 previous spec (rolling back)"
                    .into()
            )
        );
    }

    fn task(service: &str, slot: u64, generation: u64, state: &str) -> TaskRow {
        TaskRow {
            id: format!("{service}-{slot}-{generation}"),
            stack: "hello".into(),
            service: service.into(),
            slot,
            node: "node-a".into(),
            desired: "running".into(),
            state: state.into(),
            generation,
            has_healthcheck: service == "web",
            ..Default::default()
        }
    }

    fn gens(pairs: &[(&str, u64)]) -> Generations {
        Generations {
            stack: "hello".into(),
            services: pairs.iter().map(|(s, g)| (s.to_string(), *g)).collect(),
            unchanged: BTreeSet::new(),
            prior_failures: BTreeSet::new(),
        }
    }

    pub(crate) fn p(service: &str, line: &str, done: bool) -> ServiceProgress {
        ServiceProgress {
            service: service.into(),
            line: line.into(),
            done,
        }
    }

    #[test]
    fn waiting_for_health_and_placement() {
        let services = [svc("web", 2, true), svc("worker", 1, false)];
        let mut pending = task("worker", 1, 2, "pending");
        pending.node = String::new();
        pending.error = "waiting for web to be healthy".into();
        let tasks = [
            task("web", 1, 2, "healthy"),
            task("web", 2, 2, "starting"),
            pending,
        ];
        assert_eq!(
            progress(&services, &tasks, &gens(&[("web", 2), ("worker", 2)])),
            Progress::Waiting(vec![
                p("web", "web: 1/2 healthy (1 starting)", false),
                p(
                    "worker",
                    "worker: 0/1 running (1 pending: waiting for web to be healthy)",
                    false
                ),
            ])
        );
    }

    #[test]
    fn running_is_not_enough_with_a_healthcheck() {
        let services = [svc("web", 1, true)];
        let tasks = [task("web", 1, 2, "running")];
        assert_eq!(
            progress(&services, &tasks, &gens(&[("web", 2)])),
            Progress::Waiting(vec![p("web", "web: 0/1 healthy (1 running)", false)])
        );
    }

    #[test]
    fn converged() {
        let services = [svc("web", 2, true), svc("worker", 1, false)];
        let mut stopped = task("web", 1, 1, "shutdown");
        stopped.desired = "shutdown".into();
        let mut elsewhere = task("web", 1, 1, "running");
        elsewhere.stack = "other".into();
        let tasks = [
            task("web", 1, 2, "healthy"),
            task("web", 2, 3, "healthy"),
            task("worker", 1, 2, "running"),
            stopped,
            elsewhere,
        ];
        assert_eq!(
            progress(&services, &tasks, &gens(&[("web", 2), ("worker", 2)])),
            Progress::Converged(vec![
                p("web", "web: 2/2 healthy", true),
                p("worker", "worker: 1/1 running", true),
            ])
        );
    }

    #[test]
    fn old_generation_does_not_count() {
        let services = [svc("web", 2, true)];
        let tasks = [
            task("web", 1, 1, "healthy"),
            task("web", 2, 1, "healthy"),
            task("web", 1, 2, "starting"),
        ];
        assert_eq!(
            progress(&services, &tasks, &gens(&[("web", 2)])),
            Progress::Waiting(vec![p(
                "web",
                "web: 0/2 healthy (1 starting, 2 of the previous version running)",
                false
            )])
        );
    }

    #[test]
    fn too_many_replicas_is_not_converged() {
        let services = [svc("worker", 1, false)];
        let tasks = [
            task("worker", 1, 2, "running"),
            task("worker", 2, 2, "running"),
        ];
        assert_eq!(
            progress(&services, &tasks, &gens(&[("worker", 2)])),
            Progress::Waiting(vec![p(
                "worker",
                "worker: 2/1 running (1 more than wanted)",
                false
            )])
        );
    }

    #[test]
    fn a_failed_current_task_fails_the_deploy() {
        let services = [svc("web", 2, true)];
        let mut failed = task("web", 2, 2, "failed");
        failed.node = "node-b".into();
        failed.error = "pull shoal-test/nope:latest: not found".into();
        let tasks = [task("web", 1, 2, "healthy"), failed.clone()];
        assert_eq!(
            progress(&services, &tasks, &gens(&[("web", 2)])),
            Progress::Failed("web slot 2 on node-b: pull shoal-test/nope:latest: not found".into())
        );
        failed.error = String::new();
        failed.has_exit_code = true;
        failed.exit_code = 3;
        assert_eq!(
            progress(&services, &[failed.clone()], &gens(&[("web", 2)])),
            Progress::Failed("web slot 2 on node-b: exited with code 3".into())
        );
        // A failure of the previous generation is not this rollout's.
        failed.generation = 1;
        assert_eq!(
            progress(&services, &[failed], &gens(&[("web", 2)])),
            Progress::Waiting(vec![p("web", "web: 0/2 healthy", false)])
        );
    }

    #[test]
    fn old_failures_of_unchanged_services_are_history() {
        let services = [svc("worker", 1, false)];
        let mut old = task("worker", 1, 2, "failed");
        old.id = "old".into();
        old.desired = "shutdown".into();
        old.error = "exited with code 1".into();
        let replacement = task("worker", 1, 2, "running");
        let tasks = [old.clone(), replacement];
        let mut g = gens(&[("worker", 2)]);
        g.unchanged = BTreeSet::from(["worker".to_string()]);
        assert_eq!(
            prior_failures(&tasks, &g),
            BTreeSet::from(["old".to_string()])
        );
        g.prior_failures = prior_failures(&tasks, &g);
        assert_eq!(
            progress(&services, &tasks, &g),
            Progress::Converged(vec![p("worker", "worker: 1/1 running", true)])
        );
        // A new failure still fails the deploy.
        let mut fresh = task("worker", 1, 2, "failed");
        fresh.id = "fresh".into();
        fresh.error = "exited with code 1".into();
        assert_eq!(
            progress(&services, &[old, fresh], &g),
            Progress::Failed("worker slot 1 on node-a: exited with code 1".into())
        );
        // A changed service has no history to ignore.
        let mut changed = gens(&[("worker", 2)]);
        changed.prior_failures = prior_failures(&tasks, &changed);
        assert!(changed.prior_failures.is_empty());
    }

    #[test]
    fn jobs_converge_when_complete() {
        let mut migrate = svc("migrate", 1, false);
        migrate.mode = "replicated-job".into();
        let mut done = task("migrate", 1, 2, "complete");
        done.desired = "shutdown".into();
        assert_eq!(
            progress(&[migrate.clone()], &[done], &gens(&[("migrate", 2)])),
            Progress::Converged(vec![p("migrate", "migrate: 1/1 complete", true)])
        );
        assert_eq!(
            progress(
                &[migrate],
                &[task("migrate", 1, 2, "running")],
                &gens(&[("migrate", 2)])
            ),
            Progress::Waiting(vec![p(
                "migrate",
                "migrate: 0/1 complete (1 running)",
                false
            )])
        );
    }

    #[test]
    fn unknown_services_and_empty_stacks() {
        assert_eq!(
            progress(&[], &[], &gens(&[("web", 1)])),
            Progress::Waiting(vec![p(
                "web",
                "web: not known to the controller yet",
                false
            )])
        );
        assert_eq!(progress(&[], &[], &gens(&[])), Progress::Converged(vec![]));
        assert_eq!(
            progress(&[svc("web", 0, true)], &[], &gens(&[("web", 1)])),
            Progress::Converged(vec![p("web", "web: 0/0 healthy", true)])
        );
    }

    #[test]
    fn generations_from_the_deploy_reply() {
        let reply = DeployReply {
            stack: "hello".into(),
            services: vec![
                shoal_proto::pb::ServiceGeneration {
                    service: "web".into(),
                    generation: 4,
                    changed: true,
                },
                shoal_proto::pb::ServiceGeneration {
                    service: "worker".into(),
                    generation: 1,
                    changed: false,
                },
            ],
        };
        let mut want = gens(&[("web", 4), ("worker", 1)]);
        want.unchanged = BTreeSet::from(["worker".to_string()]);
        assert_eq!(Generations::from(&reply), want);
    }
}
