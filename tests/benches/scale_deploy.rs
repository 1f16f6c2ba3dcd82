//! Deploy throughput and memory of an in-process cluster on fake agents, printed (not
//! asserted): `cargo bench -p shoal-tests --bench scale_deploy`.
//!
//! 1. RSS at rest: this process's resident memory before starting anything, then with one
//!    controller and 10 fake agents running 1,000 tasks, after they settled. Controller
//!    and agents share the process, so the figure is their sum (the agents' fake engines
//!    included); the agent binary has no fake runtime, so separate processes are not
//!    measured here.
//! 2. `deploy` of 10,000 replicas onto 100 fake agents until `ps` reports every one
//!    running: wall time and replicas per second.
//!
//! `cargo test --benches` runs it small (100 replicas) so the bench stays compiled and
//! working without costing the test suite much.

use std::time::{Duration, Instant};

use shoal_proto::spec::{ServiceSpec, StackSpec};
use shoal_tests::cluster::{Cluster, Options};
use shoal_tests::rss_kib;

fn stack(name: &str, replicas: u64) -> StackSpec {
    let web = ServiceSpec {
        name: "web".into(),
        image: "shoal-test/busybox:latest".into(),
        replicas,
        ..Default::default()
    };
    StackSpec {
        name: name.into(),
        services: [("web".to_string(), web)].into_iter().collect(),
        volumes: Default::default(),
        secrets: Vec::new(),
        configs: Vec::new(),
        networks: Default::default(),
    }
}

fn opts() -> Options {
    Options {
        heartbeat_interval: Duration::from_millis(500),
        node_grace: Duration::from_secs(10),
        ..Options::default()
    }
}

/// Deploys `replicas` onto `agents` fake nodes; returns the seconds until all run, or
/// None if they did not within `bound`.
async fn deploy_until_running(
    cl: &Cluster,
    name: &str,
    replicas: u64,
    bound: Duration,
) -> Option<f64> {
    let client = cl.client();
    let start = Instant::now();
    client.deploy(&stack(name, replicas)).await.expect("deploy");
    loop {
        if let Ok(rows) = client.ps(name).await {
            let running = rows
                .iter()
                .filter(|r| r.desired == "running" && r.state == "running")
                .count() as u64;
            if running == replicas {
                return Some(start.elapsed().as_secs_f64());
            }
        }
        if start.elapsed() > bound {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn agent_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("bench-n{i:03}")).collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (rss_tasks, deploy_replicas, deploy_agents) = if quick {
        (100, 100, 10)
    } else {
        (1_000, 10_000, 100)
    };
    let bound = Duration::from_secs(600);

    let base = rss_kib();
    {
        let names = agent_names(10);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let cl = Cluster::start_with(1, &refs, opts()).await;
        let took = deploy_until_running(&cl, "rss", rss_tasks, bound).await;
        // At rest: let the post-deploy status traffic drain.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let at_rest = rss_kib();
        println!(
            "rss: process {base} KiB before; {at_rest} KiB with 1 controller + 10 fake agents \
             running {rss_tasks} tasks at rest (+{} KiB); deploy took {}",
            at_rest.saturating_sub(base),
            took.map_or("(not all running)".to_string(), |t| format!("{t:.2} s"))
        );
        cl.shutdown();
    }

    let names = agent_names(deploy_agents);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let t = Instant::now();
    let cl = Cluster::start_with(1, &refs, opts()).await;
    let startup = t.elapsed().as_secs_f64();
    match deploy_until_running(&cl, "big", deploy_replicas, bound).await {
        Some(secs) => println!(
            "deploy: {deploy_replicas} replicas onto {deploy_agents} fake agents all running in \
             {secs:.2} s ({:.0} replicas/s; cluster start {startup:.1} s); rss {} KiB",
            deploy_replicas as f64 / secs,
            rss_kib()
        ),
        None => println!(
            "deploy: {deploy_replicas} replicas onto {deploy_agents} fake agents NOT all running \
             within {bound:?}"
        ),
    }
    cl.shutdown();
}
