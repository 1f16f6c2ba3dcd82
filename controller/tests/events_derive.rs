//! `shoal events` derivation (issue 17): command sequences, applied as the state machine
//! applies them, and the exact events they make: a deploy's task transitions, a node
//! going down with its tasks orphaned and replaced, a rollout started and completed, a
//! paused rollout, a rollback, scaling by hand and by the autoscaler.

mod common;

use common::*;
use shoal_controller::events::{Deriver, Event};
use shoal_controller::state::*;
use shoal_proto::autoscale::{Autoscale, Behavior, Metric};
use shoal_proto::spec::{FailureAction, ServiceSpec, StackSpec};
use shoal_proto::task::{Desired, TaskState};

/// The state and the deriver, as a controller's state machine holds them.
struct World {
    state: ClusterState,
    deriver: Deriver,
}

/// The local clock of commands that carry no time.
const CLOCK: u64 = 999_999;

impl World {
    fn new(nodes: &[&str]) -> World {
        let mut state = ClusterState::default();
        for n in nodes {
            state.nodes.insert(n.to_string(), node(n, 4.0, 4096));
        }
        World {
            state,
            deriver: Deriver::default(),
        }
    }

    fn apply(&mut self, cmd: Command) -> Vec<Event> {
        let expected = self.state.clone().apply(&cmd);
        let (result, events) = self.deriver.apply(&mut self.state, &cmd, CLOCK);
        assert_eq!(result, expected, "deriving changes nothing of apply");
        events
    }

    fn deploy(&mut self, spec: ServiceSpec, now_ms: u64) -> Vec<Event> {
        self.apply(Command::DeployStack {
            spec: StackSpec {
                name: "app".into(),
                services: [(spec.name.clone(), spec)].into_iter().collect(),
                volumes: Default::default(),
                secrets: Vec::new(),
                configs: Vec::new(),
                networks: Default::default(),
            },
            now_ms,
            secrets: Default::default(),
        })
    }

    /// The reconciler's passes at `now_ms` until it has nothing to say (bounded).
    fn settle(&mut self, now_ms: u64) -> Vec<Event> {
        let mut out = Vec::new();
        for _ in 0..20 {
            let decisions = shoal_controller::reconciler::reconcile(&self.state, now_ms);
            if decisions.is_empty() {
                return out;
            }
            out.extend(self.apply(Command::Reconcile { decisions, now_ms }));
        }
        panic!("the reconciler did not settle");
    }

    /// Each live assigned task of `web` reports `state` (those on `except` do not).
    fn report(
        &mut self,
        state: TaskState,
        exit: Option<i64>,
        except: &str,
        now_ms: u64,
    ) -> Vec<Event> {
        let tasks: Vec<Task> = self
            .state
            .tasks
            .values()
            .filter(|t| t.desired == Desired::Running && !t.state.is_terminal())
            .filter(|t| t.node.as_deref().is_some_and(|n| n != except))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.extend(self.update(&t.id, state, exit, now_ms));
        }
        out
    }

    /// Every task asked to stop reports it stopped.
    fn stopped(&mut self, now_ms: u64) -> Vec<Event> {
        let tasks: Vec<Task> = self
            .state
            .tasks
            .values()
            .filter(|t| {
                t.desired == Desired::Shutdown && !t.state.is_terminal() && t.node.is_some()
            })
            .cloned()
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.extend(self.update(&t.id, TaskState::Shutdown, None, now_ms));
        }
        out
    }

    fn update(
        &mut self,
        task: &str,
        state: TaskState,
        exit: Option<i64>,
        now_ms: u64,
    ) -> Vec<Event> {
        let node = self.state.tasks[task]
            .node
            .clone()
            .expect("an assigned task");
        self.apply(Command::TaskStatus {
            node,
            updates: vec![TaskUpdate {
                task: task.into(),
                state,
                container_id: format!("c-{task}"),
                exit_code: exit,
                error: String::new(),
                ip: None,
                ips: Default::default(),
            }],
            now_ms,
        })
    }
}

/// `(time, kind, node, message)` of each event, to compare whole sequences.
fn said(events: &[Event]) -> Vec<(u64, String, String, String)> {
    events
        .iter()
        .map(|e| (e.time_ms, e.kind.clone(), e.node.clone(), e.message.clone()))
        .collect()
}

fn e(time: u64, kind: &str, node: &str, message: &str) -> (u64, String, String, String) {
    (time, kind.into(), node.into(), message.into())
}

/// Three nodes, `web` with three replicas running, one on each, its rollout complete.
fn running_web(spec: ServiceSpec) -> World {
    let mut w = World::new(&["n1", "n2", "n3"]);
    w.deploy(spec, 1_000);
    w.settle(1_000);
    w.report(TaskState::Running, None, "", 2_000);
    w.settle(10_000);
    assert!(w.state.services["app/web"].rollout_complete);
    w
}

#[test]
fn a_deploy_says_each_task_transition_then_the_rollout_completes() {
    let mut w = World::new(&["n1", "n2", "n3"]);
    assert_eq!(
        said(&w.deploy(svc("web", 3), 1_000)),
        [e(
            1_000,
            "rollout.started",
            "",
            "web: deploying generation 1 of a new service (3 replicas of img)"
        )]
    );
    assert_eq!(
        said(&w.settle(1_100)),
        [
            e(1_100, "task.assigned", "n1", "web slot 1 assigned to n1"),
            e(1_100, "task.assigned", "n2", "web slot 2 assigned to n2"),
            e(1_100, "task.assigned", "n3", "web slot 3 assigned to n3"),
        ]
    );
    let starting = w.report(TaskState::Starting, None, "", 1_500);
    assert_eq!(starting[0].kind, "task.starting");
    assert_eq!(starting[0].message, "web slot 1 starting on n1");
    assert_eq!(
        (starting[0].stack.as_str(), starting[0].service.as_str()),
        ("app", "web")
    );
    assert_eq!(starting[0].task, w.state.tasks.values().next().unwrap().id);
    let running = w.report(TaskState::Running, None, "", 2_000);
    assert_eq!(
        said(&running),
        [
            e(2_000, "task.running", "n1", "web slot 1 running on n1"),
            e(2_000, "task.running", "n2", "web slot 2 running on n2"),
            e(2_000, "task.running", "n3", "web slot 3 running on n3"),
        ]
    );
    assert_eq!(
        said(&w.settle(7_000)),
        [e(
            7_000,
            "rollout.completed",
            "",
            "web: the rollout (generation 1) is complete: every replica is ready"
        )]
    );
}

#[test]
fn a_node_that_goes_down_has_its_tasks_orphaned_and_replaced_with_the_cause() {
    let mut w = running_web(svc("web", 3));
    assert_eq!(
        said(&w.apply(Command::SetNodeStatus {
            node: "n1".into(),
            status: NodeStatus::Down,
            now_ms: 20_000,
        })),
        [e(
            20_000,
            "node.down",
            "n1",
            "node n1 is down: its agent's heartbeats stopped reaching the leader; its replicas are replaced on other nodes"
        )]
    );
    assert_eq!(
        said(&w.settle(20_100)),
        [
            e(
                20_100,
                "task.orphaned",
                "n1",
                "web slot 1 is lost with its node n1, which is down; the reconciler replaces it elsewhere"
            ),
            e(
                20_100,
                "task.assigned",
                "n2",
                "web slot 1 assigned to n2 (replaces the task on n1, which is down)"
            ),
        ]
    );
    assert_eq!(
        said(&w.report(TaskState::Running, None, "n1", 21_000)),
        [e(21_000, "task.running", "n2", "web slot 1 running on n2")]
    );
    // The node returns: ready, and it takes new work only.
    assert_eq!(
        said(&w.apply(Command::SetNodeStatus {
            node: "n1".into(),
            status: NodeStatus::Ready,
            now_ms: 30_000,
        })),
        [e(
            30_000,
            "node.ready",
            "n1",
            "node n1 is ready: its agent reports again; it takes new work (replicas moved away stay where they are: `shoal rebalance` moves them back)"
        )]
    );
}

#[test]
fn a_rollout_replaces_each_replica_then_completes() {
    let mut w = running_web(svc("web", 2));
    let mut v2 = svc("web", 2);
    v2.image = "img:2".into();
    assert_eq!(
        said(&w.deploy(v2, 20_000)),
        [e(
            20_000,
            "rollout.started",
            "",
            "web: rolling out generation 2 (image img -> img:2), replacing generation 1"
        )]
    );
    // Stop-first, one at a time: slot 1's old task is asked to stop, its replacement placed.
    assert_eq!(
        said(&w.settle(20_100)),
        [e(
            20_100,
            "task.assigned",
            "n3",
            "web slot 1 assigned to n3 (rollout of generation 2: replaces the task of generation 1 on n1)"
        )]
    );
    assert_eq!(
        said(&w.stopped(20_200)),
        [e(
            20_200,
            "task.shutdown",
            "n1",
            "web slot 1 on n1 stopped: replaced by generation 2"
        )]
    );
    w.report(TaskState::Running, None, "", 21_000);
    let second = w.settle(26_000);
    assert_eq!(
        said(&second),
        [e(
            26_000,
            "task.assigned",
            "n1",
            "web slot 2 assigned to n1 (rollout of generation 2: replaces the task of generation 1 on n2)"
        )]
    );
    w.stopped(26_100);
    w.report(TaskState::Running, None, "", 27_000);
    assert_eq!(
        said(&w.settle(32_000)),
        [e(
            32_000,
            "rollout.completed",
            "",
            "web: the rollout (generation 2) is complete: every replica is ready"
        )]
    );
}

fn failing_update(action: FailureAction) -> (World, ServiceSpec) {
    let w = running_web(svc("web", 2));
    let mut v2 = svc("web", 2);
    v2.image = "broken".into();
    v2.update.failure_action = action;
    (w, v2)
}

#[test]
fn a_paused_rollout_says_why() {
    let (mut w, v2) = failing_update(FailureAction::Pause);
    w.deploy(v2, 20_000);
    w.settle(20_100);
    w.stopped(20_200);
    let new = w
        .state
        .tasks
        .values()
        .find(|t| t.generation == 2)
        .map(|t| t.id.clone())
        .unwrap();
    assert_eq!(
        said(&w.update(&new, TaskState::Failed, Some(1), 21_000)),
        [
            e(21_000, "task.failed", "n3", "web slot 1 on n3 failed: exited with code 1"),
            e(
                21_000,
                "rollout.paused",
                "",
                "web: rollout of generation 2 paused: 1 new replica(s) failed (max_failure_ratio 0); fix the service and deploy again (last: web slot 1 on n3: exited with code 1)"
            ),
        ]
    );
    // Said once: the pass that follows adds no pause.
    assert!(!said(&w.settle(21_100))
        .iter()
        .any(|e| e.1 == "rollout.paused"));
}

#[test]
fn a_failed_rollout_rolled_back_says_the_cause() {
    let (mut w, v2) = failing_update(FailureAction::Rollback);
    w.deploy(v2, 20_000);
    w.settle(20_100);
    w.stopped(20_200);
    let new = w
        .state
        .tasks
        .values()
        .find(|t| t.generation == 2)
        .map(|t| t.id.clone())
        .unwrap();
    let failed = w.update(&new, TaskState::Failed, Some(1), 21_000);
    assert_eq!(
        said(&failed),
        [e(
            21_000,
            "task.failed",
            "n3",
            "web slot 1 on n3 failed: exited with code 1"
        )],
        "a rollout that rolls back is not said paused"
    );
    let back = w.settle(21_100);
    assert_eq!(
        said(&back)[0],
        e(
            21_100,
            "rollout.rolled_back",
            "",
            "web: rolled back after the rollout of generation 2 failed: web slot 1 on n3: exited with code 1; generation 3 returns to the previous spec (img)"
        )
    );
    // The rollback's own replacement of slot 1 says what it is.
    assert!(
        said(&back).iter().any(|e| e.1 == "task.assigned"
            && e.3 == "web slot 1 assigned to n1 (rollback of generation 3: replaces the task of generation 2 on n3)"),
        "{back:#?}"
    );
    assert_eq!(
        said(&w.apply(Command::Rollback {
            service: "app/web".into()
        }))[0]
            .3,
        "web: rolled back by hand (shoal rollback); generation 4 returns to the previous spec (broken)"
    );
}

#[test]
fn scaling_by_hand_and_by_the_autoscaler_say_from_to_and_the_cause() {
    let mut w = running_web(svc("web", 3));
    assert_eq!(
        said(&w.apply(Command::Scale {
            service: "app/web".into(),
            replicas: 1,
        })),
        [e(CLOCK, "scale", "", "web: 3 -> 1 replicas (shoal scale)")]
    );
    assert_eq!(
        said(&w.settle(30_000)),
        Vec::<(u64, String, String, String)>::new(),
        "asking tasks to stop is said when they stop"
    );
    let stopped = w.stopped(30_100);
    assert_eq!(
        said(&stopped)[0],
        e(
            30_100,
            "task.shutdown",
            "n2",
            "web slot 2 on n2 stopped: web was scaled down to 1 replicas"
        )
    );

    let mut spec = svc("api", 2);
    spec.autoscale = Some(Autoscale {
        min: 2,
        max: 4,
        metrics: vec![Metric::Cpu { target: 0.7 }],
        scale_up: Behavior::up(),
        scale_down: Behavior::down(),
    });
    w.deploy(spec, 40_000);
    let scaled = w.apply(Command::Autoscale {
        service: "app/api".into(),
        from: 2,
        to: 9,
        cause: "cpu 140%/70% above target".into(),
        at_ms: 41_000,
    });
    assert_eq!(
        said(&scaled),
        [e(
            41_000,
            "autoscale",
            "",
            "api: 2 -> 4 replicas by its autoscaler (it asked for 9; min and max bound it): cpu 140%/70% above target"
        )]
    );
    // A stale decision is refused and says nothing.
    assert!(w
        .apply(Command::Autoscale {
            service: "app/api".into(),
            from: 2,
            to: 3,
            cause: "stale".into(),
            at_ms: 42_000,
        })
        .is_empty());
}

#[test]
fn nodes_drained_activated_and_removed_and_a_stack_removed() {
    let mut w = running_web(svc("web", 3));
    let drain = |availability| Command::SetAvailability {
        node: "n3".into(),
        availability,
    };
    assert_eq!(
        said(&w.apply(drain(Availability::Drain))),
        [e(CLOCK, "node.drained", "n3", "node n3 is drained (shoal node drain): its replicas move to other nodes, update_config.parallelism at a time")]
    );
    let moved = w.settle(20_000);
    assert_eq!(
        said(&moved),
        [e(
            20_000,
            "task.assigned",
            "n1",
            "web slot 3 assigned to n1 (moves it off n3, which is drained)"
        )]
    );
    assert_eq!(
        said(&w.stopped(20_100)),
        [e(
            20_100,
            "task.shutdown",
            "n3",
            "web slot 3 on n3 stopped: moved off n3, which is drained"
        )]
    );
    assert_eq!(
        said(&w.apply(drain(Availability::Active)))[0].1,
        "node.active"
    );
    assert_eq!(
        said(&w.apply(drain(Availability::Active))),
        [],
        "no change, nothing said"
    );

    let removed = w.apply(Command::RemoveNode { node: "n2".into() });
    assert_eq!(
        said(&removed),
        [
            e(CLOCK, "node.removed", "n2", "node n2 was removed from the cluster (shoal node rm): its 1 live tasks are orphaned and replaced elsewhere"),
            e(CLOCK, "task.orphaned", "n2", "web slot 2 is lost with its node n2, which was removed from the cluster; the reconciler replaces it elsewhere"),
        ]
    );
    assert_eq!(
        said(&w.apply(Command::RemoveStack {
            stack: "app".into(),
            volumes: false,
        })),
        [e(CLOCK, "stack.removed", "", "stack app is being removed (shoal rm): 2 tasks are stopped, then its services go; its volumes are kept")]
    );
}

#[test]
fn commands_that_change_nothing_it_follows_say_nothing() {
    let mut w = running_web(svc("web", 1));
    let n1 = w.state.nodes["n1"].clone();
    assert_eq!(said(&w.apply(Command::RegisterNode { node: n1 })), []);
    assert_eq!(
        said(&w.deploy(svc("web", 1), 50_000)),
        [],
        "the same spec rolls nothing out"
    );
    assert_eq!(
        said(&w.report(TaskState::Running, None, "", 50_100)),
        [],
        "no transition"
    );
}

#[test]
fn a_restore_says_so_and_the_jump_of_task_ids_creates_nothing() {
    let mut restored = running_web(svc("web", 2)).state;
    // A restored cluster's task ids start far away (each cluster has its own block).
    restored.next_task += 1 << 36;
    let mut w = World::new(&[]);
    w.state.nodes.clear();
    assert_eq!(
        said(&w.apply(Command::Restore {
            state: Box::new(restored)
        })),
        [e(
            CLOCK,
            "cluster.restored",
            "",
            "the cluster state was restored (--restore or --force-new-cluster): 1 stacks, 3 nodes"
        )]
    );
}

#[test]
fn a_batch_changes_says_and_answers_what_its_commands_would_one_entry_each() {
    let setup = || {
        let mut w = World::new(&["n1", "n2", "n3"]);
        w.deploy(svc("web", 3), 1_000);
        w.settle(1_000);
        w
    };
    let (mut one_by_one, mut batched) = (setup(), setup());
    assert_eq!(one_by_one.state, batched.state);
    // Each node's status as its session proposes it, and one the state refuses (a
    // task on another node than the one reporting it is ignored, a scale of an
    // unknown service is an error) to show each command keeps its own answer.
    let mut commands: Vec<Command> = one_by_one
        .state
        .tasks
        .values()
        .map(|t| status_command(t, TaskState::Running, None, 2_000))
        .collect();
    commands.insert(
        1,
        Command::Scale {
            service: "app/nope".into(),
            replicas: 2,
        },
    );
    let mut events = Vec::new();
    let mut results = Vec::new();
    for cmd in &commands {
        let expected = one_by_one.state.clone().apply(cmd);
        let (result, told) = one_by_one.deriver.apply(&mut one_by_one.state, cmd, CLOCK);
        assert_eq!(result, expected);
        results.push(result);
        events.extend(told);
    }
    assert!(results[1].error.is_some(), "{:?}", results[1]);
    let batch = Command::Batch { commands };
    let expected = batched.state.clone().apply(&batch);
    let (result, told) = batched.deriver.apply(&mut batched.state, &batch, CLOCK);
    assert_eq!(result, expected, "deriving changes nothing of apply");
    assert_eq!(result.batch, results, "each command's own answer, in order");
    assert_eq!(batched.state, one_by_one.state);
    assert_eq!(said(&told), said(&events));
    assert_eq!(
        told.iter().filter(|e| e.kind == "task.running").count(),
        3,
        "{:?}",
        said(&told)
    );
    assert!(batch.min_protocol() >= Command::BATCH_PROTOCOL);
}
