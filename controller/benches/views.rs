//! What the agent sessions cost the leader per applied entry, printed (not asserted):
//! `cargo bench -p shoal-controller --bench views`.
//!
//! A state of 10,000 running replicas (one service, no healthcheck, each with an address
//! on the stack's network) on 100 nodes, then 100,000 on 1,000:
//! - before issue 18, every agent session computed its node's assignments and mesh from
//!   the whole state after every applied entry: `assignments::for_node` +
//!   `endpoints::for_node` once per node;
//! - now `Views::compute` does every node once per applied index (and a burst of entries
//!   shares one).

use std::time::Instant;

use shoal_controller::state::*;
use shoal_controller::views::Views;
use shoal_proto::spec::*;
use shoal_proto::task::TaskState;

fn state(nodes: usize, replicas: u64) -> ClusterState {
    let mut s = ClusterState::default();
    for i in 0..nodes {
        let id = format!("node-{i:04}");
        s.nodes.insert(
            id.clone(),
            Node {
                id,
                address: format!("10.1.{}.{}", i / 250, i % 250),
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
    let web = ServiceSpec {
        name: "web".into(),
        image: "img".into(),
        replicas,
        ..Default::default()
    };
    s.apply(&Command::DeployStack {
        spec: StackSpec {
            name: "big".into(),
            services: [("web".to_string(), web)].into_iter().collect(),
            networks: Default::default(),
            volumes: Default::default(),
            secrets: Vec::new(),
            configs: Vec::new(),
        },
        now_ms: 0,
        secrets: Default::default(),
    });
    for _ in 0..4 {
        let d = shoal_controller::reconciler::reconcile(&s, 1);
        if d.is_empty() {
            break;
        }
        s.apply(&Command::Reconcile {
            decisions: d,
            now_ms: 1,
        });
    }
    let mut by_node: std::collections::BTreeMap<String, Vec<TaskUpdate>> = Default::default();
    for (k, t) in s.tasks.values().enumerate() {
        let ip = std::net::IpAddr::from([10, 208 + (k >> 16) as u8, (k >> 8) as u8, k as u8]);
        by_node
            .entry(t.node.clone().unwrap_or_default())
            .or_default()
            .push(TaskUpdate {
                task: t.id.clone(),
                state: TaskState::Running,
                container_id: format!("c-{k}"),
                exit_code: None,
                error: String::new(),
                ip: Some(ip),
                ips: Default::default(),
            });
    }
    for (node, updates) in by_node {
        s.apply(&Command::TaskStatus {
            node,
            updates,
            now_ms: 2,
        });
    }
    s
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: &[(usize, u64)] = if quick {
        &[(10, 100)]
    } else {
        &[(100, 10_000), (1_000, 100_000)]
    };
    for &(nodes, replicas) in sizes {
        let s = state(nodes, replicas);
        let running = s
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Running)
            .count();
        // The old way: each session, its own node, from the whole state. At 1,000 nodes
        // a sample of 20 sessions, scaled.
        let sample = nodes.min(20);
        let t = Instant::now();
        for name in s.nodes.keys().take(sample) {
            std::hint::black_box(shoal_controller::assignments::for_node(&s, name));
            std::hint::black_box(shoal_controller::endpoints::for_node(&s, name));
        }
        let per_session = t.elapsed().as_secs_f64() / sample as f64;
        let t = Instant::now();
        let rounds = 5;
        let mut views = Views::default();
        for i in 0..rounds {
            views = Views::compute(&s, i, &Views::default());
        }
        std::hint::black_box(&views);
        let once = t.elapsed().as_secs_f64() / rounds as f64;
        println!(
            "views: {running} running replicas on {nodes} nodes: every session on its own \
             {:.0} ms per applied entry ({:.2} ms x {nodes}); all views once {:.1} ms",
            per_session * nodes as f64 * 1e3,
            per_session * 1e3,
            once * 1e3
        );
    }
}
