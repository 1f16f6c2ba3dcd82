//! GPUs across nodes in one process: a controller and fake agents whose GPU inventories
//! hold 0, 3 and 4 GPUs, real gRPC on 127.0.0.1. GPU services land where they fit
//! (tightly), a lost node's 4-GPU task waits with its reason and is placed again when
//! the node returns, and a rediscovered GPU set reaches `nodes`.

use std::time::Duration;

use shoal_agent::gpu::fake::{gpu, FakeInventory};
use shoal_agent::runtime::fake::Call;
use shoal_proto::pb;
use shoal_proto::spec::{GpuRequest, ServiceSpec, StackSpec};
use shoal_tests::cluster::{eventually, Cluster, Options};

const STACK: &str = "gpu-inproc";

fn service(name: &str, count: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        image: "img:1".into(),
        replicas: 1,
        gpus: vec![GpuRequest {
            count: Some(count),
            capabilities: vec!["gpu".into()],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The live task of each service: (node, state, gpus, id).
async fn placed(cl: &Cluster) -> Vec<(String, String, String, Vec<String>, String)> {
    let mut rows: Vec<_> = cl
        .client()
        .ps(STACK)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.desired == "running" && t.state != "orphaned")
        .map(|t| (t.service, t.node, t.state, t.gpus, t.error))
        .collect();
    rows.sort();
    rows
}

fn uuids(node: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("GPU-{node}-{i}")).collect()
}

fn gpu_rows(nodes: &[pb::NodeRow], name: &str) -> Vec<(String, String)> {
    nodes
        .iter()
        .find(|n| n.name == name)
        .map(|n| {
            n.gpus
                .iter()
                .map(|g| (g.uuid.clone(), g.assigned_to.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_services_land_where_they_fit_and_a_lost_node_s_task_waits_then_returns() {
    let opts = Options {
        node_grace: Duration::from_secs(2),
        ..Options::default()
    };
    let mut cl = Cluster::start_with(1, &[], opts).await;
    cl.add_agent_with_gpus("gn0", FakeInventory::default())
        .await;
    cl.add_agent_with_gpus("gn3", FakeInventory::uniform("gn3", 3, "NVIDIA A10", 24))
        .await;
    cl.add_agent_with_gpus(
        "gn4",
        FakeInventory::uniform("gn4", 4, "NVIDIA H100 80GB HBM3", 80),
    )
    .await;

    let nodes = cl.client().nodes().await.expect("nodes");
    assert!(gpu_rows(&nodes, "gn0").is_empty());
    assert_eq!(gpu_rows(&nodes, "gn3").len(), 3);
    let gn4 = nodes.iter().find(|n| n.name == "gn4").expect("gn4 listed");
    assert_eq!(gn4.gpus[3].index, 3);
    assert_eq!(gn4.gpus[3].model, "NVIDIA H100 80GB HBM3");
    assert_eq!(gn4.gpus[3].memory_bytes, 80 << 30);

    let stack = StackSpec {
        name: STACK.into(),
        services: [service("gpu1", 1), service("gpu2", 2), service("gpu4", 4)]
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect(),
        networks: Default::default(),
        volumes: Default::default(),
        secrets: Vec::new(),
        configs: Vec::new(),
    };
    cl.client().deploy(&stack).await.expect("deploy");

    // 1 and 2 GPUs pack onto gn3 (leaving it full), so gn4 stays whole for 4.
    let want = vec![
        (
            "gpu1".to_string(),
            "gn3".to_string(),
            "running".to_string(),
            uuids("gn3", 0..1),
            String::new(),
        ),
        (
            "gpu2".to_string(),
            "gn3".to_string(),
            "running".to_string(),
            uuids("gn3", 1..3),
            String::new(),
        ),
        (
            "gpu4".to_string(),
            "gn4".to_string(),
            "running".to_string(),
            uuids("gn4", 0..4),
            String::new(),
        ),
    ];
    eventually(Duration::from_secs(30), "GPU services running", || async {
        let rows = placed(&cl).await;
        (rows == want).then_some(())
    })
    .await;

    // The agent created the container with exactly its GPUs.
    let created: Vec<Vec<String>> = cl.agents["gn4"]
        .fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Create(r) => Some(r.device_requests.first()?.device_ids.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(created, vec![uuids("gn4", 0..4)]);

    // `nodes` says which task holds each GPU.
    let ps = cl.client().ps(STACK).await.expect("ps");
    let id_of = |svc: &str| {
        ps.iter()
            .find(|t| t.service == svc)
            .map(|t| t.id.clone())
            .unwrap()
    };
    let nodes = cl.client().nodes().await.expect("nodes");
    assert_eq!(
        gpu_rows(&nodes, "gn3"),
        vec![
            ("GPU-gn3-0".to_string(), id_of("gpu1")),
            ("GPU-gn3-1".to_string(), id_of("gpu2")),
            ("GPU-gn3-2".to_string(), id_of("gpu2")),
        ]
    );

    // Power cut of the 4-GPU node: its task is replaced by one that waits, saying why.
    let engine = cl.kill_agent("gn4").await;
    let reason = "needs 4 GPUs: gn0 has no GPUs; gn3 has 0 free; gn4 is down";
    eventually(
        Duration::from_secs(30),
        "the 4-GPU task pending",
        || async {
            placed(&cl)
                .await
                .iter()
                .any(|r| r.0 == "gpu4" && r.2 == "pending" && r.4 == reason)
                .then_some(())
        },
    )
    .await;

    // The node comes back: the waiting task is placed on its GPUs again.
    cl.revive_agent("gn4", engine);
    eventually(
        Duration::from_secs(30),
        "the 4-GPU task running again",
        || async {
            placed(&cl)
                .await
                .iter()
                .any(|r| {
                    r.0 == "gpu4" && r.1 == "gn4" && r.2 == "running" && r.3 == uuids("gn4", 0..4)
                })
                .then_some(())
        },
    )
    .await;

    // A GPU found on gn0 by rediscovery reaches the cluster.
    cl.agents["gn0"]
        .gpus
        .set(vec![gpu("gn0", 0, "NVIDIA A10", 24)]);
    eventually(Duration::from_secs(30), "gn0's new GPU listed", || async {
        let nodes = cl.client().nodes().await.ok()?;
        (gpu_rows(&nodes, "gn0") == vec![("GPU-gn0-0".to_string(), String::new())]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_gpu_figures_reach_nodes_through_heartbeats_and_follow_changes() {
    let mut cl = Cluster::start(1, &[]).await;
    let with = |util: u32, used_gib: u64| {
        let mut g = gpu("gf", 0, "NVIDIA A10", 24);
        g.utilization_percent = Some(util);
        g.memory_used_bytes = Some(used_gib << 30);
        vec![g, gpu("gf", 1, "NVIDIA A10", 24)]
    };
    let inventory = FakeInventory::new(with(37, 5));
    cl.add_agent_with_gpus("gf", inventory.clone()).await;
    let figures = |want: (Option<u32>, Option<u64>)| {
        let cl = &cl;
        async move {
            let nodes = cl.client().nodes().await.ok()?;
            let gpus = &nodes.iter().find(|n| n.name == "gf")?.gpus;
            let first = (gpus[0].utilization_percent, gpus[0].memory_used_bytes);
            // The GPU without figures has none.
            let second = (gpus[1].utilization_percent, gpus[1].memory_used_bytes);
            (first == want && second == (None, None)).then_some(())
        }
    };
    eventually(Duration::from_secs(20), "the first figures", || {
        figures((Some(37), Some(5 << 30)))
    })
    .await;
    // New figures (same GPUs): no state change, the next heartbeats carry them.
    inventory.set(with(90, 20));
    eventually(Duration::from_secs(20), "the new figures", || {
        figures((Some(90), Some(20 << 30)))
    })
    .await;
}
