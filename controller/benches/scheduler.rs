//! Scheduler and reconciler throughput on one core, printed (not asserted):
//! `cargo bench -p shoal-controller --bench scheduler`.
//!
//! - placing 100,000 replicas (10 services of 10,000, spread over a zone label, with CPU
//!   and memory reservations) on 1,000 nodes in one `place` call;
//! - with those 100,000 placed, one more reconcile pass (what the leader pays per change)
//!   and placing 1,000 more replicas;
//! - with every replica running and every service settled, the leader's pass at rest
//!   (nothing changed), after one replica's status, and a pass over everything
//!   ([`reconcile_in`]: what the leader pays when only some services changed).

use std::time::Instant;

use shoal_controller::reconciler::{reconcile, reconcile_in, Scope};
use shoal_controller::scheduler::{place, Request};
use shoal_controller::state::changes::Changed;
use shoal_controller::state::*;
use shoal_proto::spec::*;
use shoal_proto::task::TaskState;

const NODES: usize = 1_000;
const SERVICES: usize = 10;
const PER_SERVICE: u64 = 10_000;

fn cluster() -> (ClusterState, Vec<ServiceSpec>) {
    let mut s = ClusterState::default();
    for i in 0..NODES {
        let id = format!("node-{i:04}");
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("zone".to_string(), format!("z{}", i % 3));
        s.nodes.insert(
            id.clone(),
            Node {
                id,
                address: format!("10.1.{}.{}", i / 250, i % 250),
                nano_cpus: 64_000_000_000,
                memory_bytes: 256 << 30,
                labels,
                status: NodeStatus::Ready,
                availability: Availability::Active,
                gpus: Vec::new(),
                devices: Default::default(),
                platform: String::new(),
                manager: false,
                conflicts: Vec::new(),
            },
        );
    }
    let specs: Vec<ServiceSpec> = (0..SERVICES)
        .map(|i| {
            let mut spec = ServiceSpec {
                name: format!("svc{i}"),
                image: "img".into(),
                replicas: PER_SERVICE,
                ..Default::default()
            };
            spec.resources.reservations.nano_cpus = Some(50_000_000);
            spec.resources.reservations.memory_bytes = Some(64 << 20);
            spec.placement.spread = vec!["zone".into()];
            spec
        })
        .collect();
    s.apply(&Command::DeployStack {
        spec: StackSpec {
            name: "bench".into(),
            services: specs.iter().map(|s| (s.name.clone(), s.clone())).collect(),
            volumes: Default::default(),
            secrets: Vec::new(),
            configs: Vec::new(),
            networks: Default::default(),
        },
        now_ms: 0,
        secrets: Default::default(),
    });
    (s, specs)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (mut state, specs) = cluster();
    let per = if quick { 100 } else { PER_SERVICE };
    let reqs: Vec<Request<'_>> = specs
        .iter()
        .flat_map(|s| {
            (0..per).map(move |r| Request {
                task: format!("{}-{r}", s.name),
                service: format!("bench/{}", s.name),
                spec: s,
                pinned: None,
                nodes: None,
            })
        })
        .collect();
    let rounds = if quick { 1 } else { 3 };
    let mut best = f64::MAX;
    let mut out = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        out = place(&state, &reqs);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let assigned = out
        .iter()
        .filter(|d| matches!(d, Decision::Assign { .. }))
        .count();
    println!(
        "scheduler: {} replicas on {NODES} nodes in {:.3} s (best of {rounds}): {:.0} placements/s, {assigned} assigned",
        reqs.len(),
        best,
        reqs.len() as f64 / best
    );

    // Make them real tasks: the reconciler creates them, the scheduler places them.
    let t = Instant::now();
    let create = reconcile(&state, 0);
    let created = create.len();
    state.apply(&Command::Reconcile {
        decisions: create,
        now_ms: 0,
    });
    let first_pass = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let assign = reconcile(&state, 0);
    let place_pass = t.elapsed().as_secs_f64();
    state.apply(&Command::Reconcile {
        decisions: assign,
        now_ms: 0,
    });
    println!(
        "reconciler: pass creating {created} tasks {first_pass:.3} s; pass placing them {place_pass:.3} s"
    );
    let t = Instant::now();
    let idle = reconcile(&state, 0);
    println!(
        "reconciler: pass over {} placed tasks with nothing to do: {:.3} s ({} decisions)",
        state.tasks.len(),
        t.elapsed().as_secs_f64(),
        idle.len()
    );
    let extra: Vec<Request<'_>> = (0..1_000)
        .map(|r| Request {
            task: format!("extra-{r}"),
            service: format!("bench/{}", specs[0].name),
            spec: &specs[0],
            pinned: None,
            nodes: None,
        })
        .collect();
    let t = Instant::now();
    let _ = place(&state, &extra);
    println!(
        "scheduler: 1,000 more replicas with {} tasks placed: {:.3} s",
        state.tasks.len(),
        t.elapsed().as_secs_f64()
    );
    at_rest(&mut state);
}

/// Every replica reported running, the monitor period over: what the leader's passes
/// cost then.
fn at_rest(state: &mut ClusterState) {
    let mut by_node: std::collections::BTreeMap<NodeId, Vec<TaskUpdate>> = Default::default();
    for t in state.tasks.values() {
        by_node
            .entry(t.node.clone().unwrap_or_default())
            .or_default()
            .push(running(&t.id, TaskState::Running));
    }
    for (node, updates) in by_node {
        state.apply(&Command::TaskStatus {
            node,
            updates,
            now_ms: 0,
        });
    }
    let later = 600_000;
    let done = reconcile(state, later);
    state.apply(&Command::Reconcile {
        decisions: done,
        now_ms: later,
    });
    let best = |f: &dyn Fn() -> usize| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let n = f();
                (t.elapsed().as_secs_f64(), n)
            })
            .fold((f64::MAX, 0), |a, b| if b.0 < a.0 { b } else { a })
    };
    let (all, unsettled) = best(&|| reconcile_in(state, later, Scope::All).unsettled.len());
    let cursor = state.changes.cursor();
    let Changed::Services(none) = state.changes.since(cursor) else {
        unreachable!("nothing was applied since the cursor")
    };
    let (rest, _) = best(&|| {
        reconcile_in(state, later, Scope::Services(&none))
            .decisions
            .len()
    });
    let one = state
        .tasks
        .values()
        .next()
        .map(|t| (t.id.clone(), t.node.clone()));
    if let Some((id, node)) = one {
        state.apply(&Command::TaskStatus {
            node: node.unwrap_or_default(),
            updates: vec![running(&id, TaskState::Failed)],
            now_ms: later,
        });
    }
    let Changed::Services(changed) = state.changes.since(cursor) else {
        unreachable!("a status changes its service only")
    };
    let (status, decided) = best(&|| {
        reconcile_in(state, later + 10_000, Scope::Services(&changed))
            .decisions
            .len()
    });
    println!(
        "reconciler at rest, {} tasks of {} services: pass over every service {all:.3} s \
         ({unsettled} unsettled); pass with nothing changed {rest:.6} s; pass after one \
         replica's status ({} service) {status:.3} s ({decided} decisions)",
        state.tasks.len(),
        state.services.len(),
        changed.len()
    );
}

fn running(task: &str, state: TaskState) -> TaskUpdate {
    TaskUpdate {
        task: task.to_string(),
        state,
        container_id: format!("c-{task}"),
        exit_code: (state == TaskState::Failed).then_some(1),
        error: String::new(),
        ip: None,
        ips: Default::default(),
    }
}
