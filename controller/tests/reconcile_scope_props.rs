//! The leader reconciles only the services that changed since its last pass and those
//! that pass found unsettled ([`reconcile_in`], the state's `changes`): over random
//! histories of deploys, scales, statuses, node losses and drains, rebalances, removals
//! and time passing, every such pass decides exactly what a pass over every service
//! decides. And a cluster at rest leaves nothing to look at.

mod common;
use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;

use shoal_controller::reconciler::{reconcile, reconcile_in, Outcome, Scope};
use shoal_controller::state::changes::Changed;
use shoal_controller::state::*;
use shoal_proto::spec::*;
use shoal_proto::task::{Desired, TaskState};

/// One step of a random history.
#[derive(Debug, Clone)]
enum Step {
    /// Deploy stack `app`: per service its replicas and a variant (see [`service`]).
    Deploy(Vec<(u64, u8)>),
    /// Deploy stack `other`, one service of this many replicas.
    Other(u64),
    /// Report the first `n` live assigned tasks of service `s{i}` as a state.
    Report(usize, u8, usize),
    Scale(usize, u64),
    /// A node goes down, or comes back.
    Flip(usize),
    /// A node is drained, or made active again.
    Drain(usize),
    Rebalance(usize),
    Remove,
    /// Time passes (ms).
    Wait(u64),
    /// The leader's pass proposes what it decided.
    Settle,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => prop::collection::vec((0u64..4, 0u8..6), 1..4).prop_map(Step::Deploy),
        1 => (0u64..3).prop_map(Step::Other),
        4 => (0usize..3, 0u8..6, 1usize..4).prop_map(|(s, st, n)| Step::Report(s, st, n)),
        1 => (0usize..3, 0u64..5).prop_map(|(s, n)| Step::Scale(s, n)),
        1 => (0usize..4).prop_map(Step::Flip),
        1 => (0usize..4).prop_map(Step::Drain),
        1 => (0usize..3).prop_map(Step::Rebalance),
        1 => Just(Step::Remove),
        3 => (0u64..12_000).prop_map(Step::Wait),
        4 => Just(Step::Settle),
    ]
}

/// Service `s{i}` of `replicas`; `variant` adds what makes a service wait on time or on
/// others: a healthcheck, a restart delay with few attempts in a window, a dependency
/// on `s0` being healthy, a start-first rollout with a delay, global mode, a job.
fn service(i: usize, replicas: u64, variant: u8) -> ServiceSpec {
    let mut s = svc(&format!("s{i}"), replicas);
    s.update.monitor_ms = 2_000;
    match variant {
        1 => {
            s.healthcheck = Some(HealthcheckSpec {
                test: vec!["CMD".into(), "true".into()],
                ..Default::default()
            })
        }
        2 => {
            s.restart = RestartPolicy {
                condition: RestartCondition::OnFailure,
                delay_ms: 3_000,
                max_attempts: Some(1),
                window_ms: Some(10_000),
            }
        }
        3 if i > 0 => {
            s.depends_on.insert(
                "s0".into(),
                Dependency {
                    condition: DependencyCondition::ServiceHealthy,
                    required: true,
                },
            );
        }
        4 => {
            s.update.order = UpdateOrder::StartFirst;
            s.update.delay_ms = 4_000;
            s.mode = if i.is_multiple_of(2) {
                ServiceMode::Global
            } else {
                ServiceMode::Replicated
            };
        }
        5 => s.mode = ServiceMode::ReplicatedJob,
        _ => {}
    }
    s
}

fn deploy(s: &mut ClusterState, name: &str, services: Vec<ServiceSpec>, now: u64) {
    s.apply(&Command::DeployStack {
        spec: StackSpec {
            name: name.into(),
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            networks: Default::default(),
            volumes: Default::default(),
            secrets: Vec::new(),
            configs: Vec::new(),
        },
        now_ms: now,
        secrets: Default::default(),
    });
}

fn apply(s: &mut ClusterState, step: &Step, now: u64) {
    match step {
        Step::Deploy(services) => {
            let specs = services
                .iter()
                .enumerate()
                .map(|(i, (r, v))| service(i, *r, *v))
                .collect();
            deploy(s, "app", specs, now);
        }
        Step::Other(replicas) => deploy(s, "other", vec![svc("web", *replicas)], now),
        Step::Report(i, state, n) => {
            let state = [
                TaskState::Starting,
                TaskState::Running,
                TaskState::Healthy,
                TaskState::Failed,
                TaskState::Complete,
                TaskState::Shutdown,
            ][*state as usize];
            let tasks: Vec<Task> = s
                .tasks
                .values()
                .filter(|t| t.service == format!("s{i}") && t.node.is_some())
                .filter(|t| !t.state.is_terminal() || t.desired == Desired::Shutdown)
                .take(*n)
                .cloned()
                .collect();
            let exit = matches!(state, TaskState::Failed | TaskState::Complete)
                .then_some(i64::from(state == TaskState::Failed));
            for t in tasks {
                status(s, &t, state, exit, now);
            }
        }
        Step::Scale(i, replicas) => {
            s.apply(&Command::Scale {
                service: service_key("app", &format!("s{i}")),
                replicas: *replicas,
            });
        }
        Step::Flip(n) => flip(s, &format!("n{n}"), now),
        Step::Drain(n) => {
            let id = format!("n{n}");
            let availability = match s.nodes.get(&id).map(|n| n.availability) {
                Some(Availability::Active) => Availability::Drain,
                _ => Availability::Active,
            };
            s.apply(&Command::SetAvailability {
                node: id,
                availability,
            });
        }
        Step::Rebalance(i) => {
            s.apply(&Command::Rebalance {
                service: service_key("app", &format!("s{i}")),
            });
        }
        Step::Remove => {
            s.apply(&Command::RemoveStack {
                stack: "app".into(),
                volumes: false,
            });
        }
        Step::Wait(_) | Step::Settle => {}
    }
}

/// What the leader keeps between passes.
struct Leader {
    cursor: u64,
    unsettled: BTreeSet<ServiceKey>,
}

impl Leader {
    /// One pass over what changed and what was unsettled, checked against a pass over
    /// everything; returns the decisions.
    fn pass(&mut self, s: &ClusterState, now: u64) -> Result<Vec<Decision>, TestCaseError> {
        let everything = reconcile(s, now);
        let Outcome {
            decisions,
            unsettled,
        } = match s.changes.since(self.cursor) {
            Changed::All => reconcile_in(s, now, Scope::All),
            Changed::Services(mut keys) => {
                keys.extend(self.unsettled.iter().cloned());
                reconcile_in(s, now, Scope::Services(&keys))
            }
        };
        prop_assert_eq!(&decisions, &everything, "at {} ms", now);
        self.cursor = s.changes.cursor();
        self.unsettled = unsettled;
        Ok(decisions)
    }
}

fn cluster() -> ClusterState {
    let nodes = (0..4).map(|i| node(&format!("n{i}"), 8.0, 8192)).collect();
    deployed(nodes, Vec::new())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_pass_over_what_changed_decides_what_a_pass_over_everything_decides(
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let mut s = cluster();
        let mut leader = Leader { cursor: 0, unsettled: BTreeSet::new() };
        let mut now = 1_000;
        for st in &steps {
            now += match st {
                Step::Wait(ms) => *ms,
                _ => 100,
            };
            apply(&mut s, st, now);
            let decisions = leader.pass(&s, now)?;
            if matches!(st, Step::Settle) && !decisions.is_empty() {
                s.apply(&Command::Reconcile { decisions, now_ms: now });
                leader.pass(&s, now)?;
            }
        }
    }
}

/// Replicas that run and are ready, with nothing waiting on time, leave the next pass
/// nothing to look at; a status of one service puts only that one in scope.
#[test]
fn a_cluster_at_rest_leaves_nothing_to_look_at() {
    let mut s = cluster();
    deploy(
        &mut s,
        "app",
        vec![service(0, 3, 1), service(1, 2, 0), service(2, 2, 3)],
        0,
    );
    let mut now = 0;
    for _ in 0..4 {
        now += 100;
        settle(&mut s, now);
        for i in 0..3 {
            report(&mut s, &format!("s{i}"), TaskState::Healthy, None, now);
        }
    }
    now += 10_000;
    settle(&mut s, now);
    let all = reconcile_in(&s, now, Scope::All);
    assert_eq!(all.decisions, Vec::new());
    assert_eq!(all.unsettled, BTreeSet::new(), "every service settled");
    let cursor = s.changes.cursor();
    assert_eq!(s.changes.since(cursor), Changed::Services(BTreeSet::new()));

    // A replica of s1 fails: s1 alone changed, and its pass replaces the replica.
    let failed = live(&s, "s1")[0].clone();
    status(&mut s, &failed, TaskState::Failed, Some(1), now);
    let Changed::Services(keys) = s.changes.since(cursor) else {
        panic!("a status changes only its service");
    };
    assert_eq!(keys, BTreeSet::from(["app/s1".to_string()]));
    // The restart waits for its delay: s1 is unsettled until then.
    let waiting = reconcile_in(&s, now, Scope::Services(&keys));
    assert_eq!(waiting.decisions, Vec::new());
    assert_eq!(waiting.unsettled, keys);
    let replaced = reconcile_in(&s, now + 1_000, Scope::Services(&keys));
    assert!(
        replaced
            .decisions
            .iter()
            .any(|d| matches!(d, Decision::CreateTask { service, .. } if service == "app/s1")),
        "{:?}",
        replaced.decisions
    );
    // A node going down changes everything.
    let cursor = s.changes.cursor();
    s.apply(&Command::SetNodeStatus {
        node: "n0".into(),
        status: NodeStatus::Down,
        now_ms: now,
    });
    assert_eq!(s.changes.since(cursor), Changed::All);
}
