//! Scheduler and reconciler throughput on one core, printed (not asserted):
//! `cargo bench -p shoal-controller --bench scheduler`.
//!
//! - placing 100,000 replicas (10 services of 10,000, spread over a zone label, with CPU
//!   and memory reservations) on 1,000 nodes in one `place` call;
//! - with those 100,000 placed, one more reconcile pass (what the leader pays per change)
//!   and placing 1,000 more replicas.

use std::time::Instant;

use shoal_controller::reconciler::reconcile;
use shoal_controller::scheduler::{place, Request};
use shoal_controller::state::*;
use shoal_proto::spec::*;

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
}
