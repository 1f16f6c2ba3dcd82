//! What a `/metrics` scrape and a `shoal stats` answer cost the controller with 1,000
//! tasks, printed (not asserted): `cargo bench -p shoal-controller --bench metrics_figures`.
//!
//! - `figures::count` over the applied state: the part of a scrape done under the
//!   state's read lock (the rest renders a few rows per service);
//! - `StatsStore::record` of 100 nodes' reports (one 5 s round of every agent) and
//!   `StatsStore::reply` with history for every replica.

use std::time::Instant;

use shoal_controller::observe::figures::count;
use shoal_controller::observe::stats::{NodeReport, ReplicaFigures, StatsStore};
use shoal_controller::reconciler::reconcile;
use shoal_controller::state::*;
use shoal_proto::spec::*;
use shoal_proto::task::TaskState;

const NODES: usize = 100;
const SERVICES: usize = 50;
const PER_SERVICE: u64 = 20;
const ROUNDS: u32 = 1_000;

fn cluster() -> ClusterState {
    let mut s = ClusterState::default();
    for i in 0..NODES {
        let id = format!("node-{i:03}");
        s.nodes.insert(
            id.clone(),
            Node {
                id,
                address: format!("10.1.0.{i}"),
                nano_cpus: 64_000_000_000,
                memory_bytes: 256 << 30,
                labels: Default::default(),
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
    let services = (0..SERVICES)
        .map(|i| {
            let spec = ServiceSpec {
                name: format!("svc{i}"),
                image: "img".into(),
                replicas: PER_SERVICE,
                ..Default::default()
            };
            (spec.name.clone(), spec)
        })
        .collect();
    s.apply(&Command::DeployStack {
        spec: StackSpec {
            name: "bench".into(),
            services,
            ..Default::default()
        },
        now_ms: 0,
        secrets: Default::default(),
    });
    for _ in 0..10 {
        let decisions = reconcile(&s, 1);
        if decisions.is_empty() {
            break;
        }
        s.apply(&Command::Reconcile {
            decisions,
            now_ms: 1,
        });
    }
    let placed: Vec<(String, String)> = s
        .tasks
        .values()
        .filter_map(|t| t.node.clone().map(|n| (n, t.id.clone())))
        .collect();
    for (node, task) in placed {
        s.apply(&Command::TaskStatus {
            node,
            updates: vec![TaskUpdate {
                task,
                state: TaskState::Running,
                container_id: "c".into(),
                exit_code: None,
                error: String::new(),
                ip: None,
                ips: Default::default(),
            }],
            now_ms: 2,
        });
    }
    s
}

fn main() {
    let s = cluster();
    println!(
        "state: {} nodes, {} services, {} tasks",
        s.nodes.len(),
        s.services.len(),
        s.tasks.len()
    );
    let start = Instant::now();
    let mut rows = 0;
    for _ in 0..ROUNDS {
        rows += count(&s).services.len();
    }
    let per = start.elapsed() / ROUNDS;
    println!(
        "figures::count: {per:?} per scrape ({} service rows)",
        rows / ROUNDS as usize
    );

    let reports: Vec<(String, NodeReport)> = s
        .nodes
        .keys()
        .map(|node| {
            let replicas = s
                .tasks
                .values()
                .filter(|t| t.node.as_deref() == Some(node.as_str()))
                .map(|t| ReplicaFigures {
                    task: t.id.clone(),
                    service: t.service_key(),
                    container: "c".into(),
                    cpu_percent: 12.5,
                    memory_bytes: 64 << 20,
                    memory_limit_bytes: 0,
                    net_rx_bytes: 1,
                    net_tx_bytes: 1,
                    restarts: 0,
                    at_ms: 0,
                })
                .collect();
            (
                node.clone(),
                NodeReport {
                    replicas,
                    gpus: Vec::new(),
                },
            )
        })
        .collect();
    let store = StatsStore::default();
    let start = Instant::now();
    for round in 0..60u64 {
        for (node, report) in &reports {
            store.record(node, report.clone(), round * 5_000);
        }
    }
    println!(
        "StatsStore::record: {:?} per round of {} node reports",
        start.elapsed() / 60,
        reports.len()
    );
    let start = Instant::now();
    let mut replicas = 0;
    for _ in 0..100 {
        replicas += store.reply(&s, None, true, 300_000).replicas.len();
    }
    println!(
        "StatsStore::reply (history): {:?} per answer ({} replicas)",
        start.elapsed() / 100,
        replicas / 100
    );
}
