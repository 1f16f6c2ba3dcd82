//! Every replica's container figures (issue 17), with the recording fake runtime's
//! stats: on the agent's `/metrics` (parsed as Prometheus text) and in the
//! `StatsReport`s its session sends a stand-in controller, with the node's GPUs; a
//! removed replica gone from both.

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, serve, web_assignments, Leader};
use shoal_agent::gpu::fake::{gpu, FakeInventory};
use shoal_agent::gpu::GpuSource;
use shoal_agent::runtime::fake::FakeRuntime;
use shoal_agent::runtime::ContainerStats;
use shoal_agent::AgentConfig;
use shoal_proto::pb;
use shoal_proto::pb::agent_message::Msg;
use shoal_proto::spec::ServiceSpec;
use tokio_util::sync::CancellationToken;

/// How long a condition of these tests may take.
const WAIT: Duration = Duration::from_secs(15);

/// `shop/web` (image `img:1`) in `slots`.
fn assignments(version: u64, slots: &[u64]) -> pb::ControllerMessage {
    let spec = ServiceSpec {
        name: "web".into(),
        image: "img:1".into(),
        ..Default::default()
    };
    web_assignments(version, &spec, 1, slots)
}

/// What the engine says of slot `slot`'s container.
fn figures(slot: u64, cpu_ns: u64) -> ContainerStats {
    ContainerStats {
        cpu_ns,
        memory_bytes: slot * (64 << 20),
        memory_limit_bytes: if slot == 1 { 256 << 20 } else { 0 },
        net_rx_bytes: slot * 1_000,
        net_tx_bytes: slot * 2_000,
        restarts: slot - 1,
    }
}

fn reports(leader: &Leader) -> Vec<pb::StatsReport> {
    leader.sent(|m| match m {
        Msg::Stats(r) => Some(r.clone()),
        _ => None,
    })
}

fn last_report(leader: &Leader) -> Option<pb::StatsReport> {
    reports(leader).pop()
}

/// `GET /metrics`, parsed: each series of the page by name, its labels and value.
async fn scrape(addr: std::net::SocketAddr) -> Page {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to /metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("sent");
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.expect("read");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let page = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("the page parses");
    page.samples
        .into_iter()
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Some((s.metric, labels, v))
        })
        .collect()
}

type Page = Vec<(String, BTreeMap<String, String>, f64)>;

/// The first page scraped (every 50 ms, for at most 15 s) for which `ok` holds.
async fn page_where(addr: std::net::SocketAddr, what: &str, ok: impl Fn(&Page) -> bool) -> Page {
    for _ in 0..300 {
        let page = scrape(addr).await;
        if ok(&page) {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 15 s: {what}");
}

/// The value of `name` for task `t{slot}` on `page`, if the page has it.
fn task_value(page: &Page, name: &str, slot: u64) -> Option<f64> {
    let want: BTreeMap<String, String> = [
        ("stack", "shop".to_string()),
        ("service", "web".to_string()),
        ("slot", slot.to_string()),
        ("task", format!("t{slot}")),
        ("node", "node-a".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    page.iter()
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| *v)
}

#[tokio::test]
async fn replicas_figures_show_on_metrics_and_go_to_the_controller_until_removed() {
    let leader = Leader::default();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let addr = serve(leader.clone(), stop.clone()).await;
    let mut busy = gpu("a", 0, "NVIDIA A10", 24);
    busy.utilization_percent = Some(61);
    busy.memory_used_bytes = Some(3 << 30);
    let inventory = FakeInventory::new(vec![busy]);
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("an address");
    let fake = FakeRuntime::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = CancellationToken::new();
    let cfg = AgentConfig {
        controllers: vec![addr],
        name: "node-a".into(),
        data_dir: dir.path().join("agent"),
        heartbeat_interval: Duration::from_millis(50),
        plaintext: true,
        gpus: GpuSource::Inventory(Arc::new(inventory)),
        metrics: Some(metrics),
        stats_interval: Duration::from_millis(100),
        ..AgentConfig::default()
    };
    let agent = tokio::spawn(shoal_agent::run_with_runtime(
        cfg,
        Arc::new(fake.clone()),
        shutdown.clone(),
    ));

    // No replica yet: the GPUs alone, with NVML's figures.
    let first = eventually(WAIT, "a report of the GPUs", || last_report(&leader)).await;
    assert!(first.replicas.is_empty(), "{first:?}");
    assert_eq!(
        first.gpus,
        vec![pb::NodeGpuStats {
            node: "node-a".into(),
            uuid: "GPU-a-0".into(),
            index: 0,
            model: "NVIDIA A10".into(),
            utilization_percent: Some(61),
            memory_used_bytes: Some(3 << 30),
            history: Vec::new(),
        }]
    );

    let tx = eventually(WAIT, "the session", || {
        leader.to_agent.lock().expect("tx").clone()
    })
    .await;
    tx.send(Ok(assignments(1, &[1, 2]))).await.expect("sent");
    eventually(WAIT, "both replicas running", || {
        (fake.containers().len() == 2
            && ["t1", "t2"]
                .iter()
                .all(|t| fake.set_stats(t, figures(if *t == "t1" { 1 } else { 2 }, 0))))
        .then_some(())
    })
    .await;

    // Every figure of both replicas, as the engine gave them.
    let report = eventually(WAIT, "a report of both replicas' figures", || {
        last_report(&leader)
            .filter(|r| r.replicas.len() == 2 && r.replicas.iter().all(|x| x.memory_bytes > 0))
    })
    .await;
    let containers: BTreeMap<String, String> = fake
        .containers()
        .into_iter()
        .filter_map(|c| Some((c.task_id()?.to_string(), c.id)))
        .collect();
    for (r, slot) in report.replicas.iter().zip([1u64, 2]) {
        let want = figures(slot, 0);
        assert_eq!(
            pb::ReplicaStats {
                cpu_percent: 0.0,
                at_ms: 0,
                ..r.clone()
            },
            pb::ReplicaStats {
                stack: "shop".into(),
                service: "web".into(),
                task: format!("t{slot}"),
                slot,
                node: "node-a".into(),
                container: containers[&format!("t{slot}")].clone(),
                cpu_percent: 0.0,
                memory_bytes: want.memory_bytes,
                memory_limit_bytes: want.memory_limit_bytes,
                net_rx_bytes: want.net_rx_bytes,
                net_tx_bytes: want.net_tx_bytes,
                restarts: want.restarts,
                at_ms: 0,
            }
        );
        assert!(
            r.at_ms > 1_700_000_000_000,
            "when it was measured: {}",
            r.at_ms
        );
    }
    assert_eq!(report.gpus.len(), 1, "the GPUs go with the replicas");

    // Replica 1 works (a second of CPU time per pass): its CPU use shows; replica 2's
    // did not move.
    let mut cpu_ns = 0;
    let busy_report = eventually(WAIT, "replica 1's CPU use", || {
        cpu_ns += 1_000_000_000;
        fake.set_stats("t1", figures(1, cpu_ns));
        last_report(&leader).filter(|r| r.replicas.len() == 2 && r.replicas[0].cpu_percent > 0.0)
    })
    .await;
    assert_eq!(busy_report.replicas[1].cpu_percent, 0.0);

    // The page shows the same figures, labelled by stack, service, slot, task and node.
    let page = page_where(metrics, "both replicas on /metrics", |page| {
        task_value(page, "shoal_task_cpu_percent", 1).is_some_and(|v| v > 0.0)
    })
    .await;
    for (name, slot, want) in [
        ("shoal_task_memory_bytes", 1, (64u64 << 20) as f64),
        ("shoal_task_memory_bytes", 2, (128u64 << 20) as f64),
        ("shoal_task_memory_limit_bytes", 1, (256u64 << 20) as f64),
        ("shoal_task_memory_limit_bytes", 2, 0.0),
        ("shoal_task_network_receive_bytes_total", 2, 2_000.0),
        ("shoal_task_network_transmit_bytes_total", 2, 4_000.0),
        ("shoal_task_restarts_total", 1, 0.0),
        ("shoal_task_restarts_total", 2, 1.0),
        ("shoal_task_cpu_percent", 2, 0.0),
    ] {
        assert_eq!(
            task_value(&page, name, slot),
            Some(want),
            "{name} of t{slot}"
        );
    }

    // Replica 1 leaves the node: gone from the page and from the reports.
    tx.send(Ok(assignments(2, &[2]))).await.expect("sent");
    eventually(WAIT, "replica 1 removed", || {
        (fake.container_of("t1").is_none()).then_some(())
    })
    .await;
    let page = page_where(metrics, "replica 1 gone from /metrics", |page| {
        task_value(page, "shoal_task_memory_bytes", 1).is_none()
    })
    .await;
    assert!(
        page.iter()
            .all(|(_, l, _)| l.get("task").map(String::as_str) != Some("t1")),
        "no series of t1 left"
    );
    assert_eq!(
        task_value(&page, "shoal_task_memory_bytes", 2),
        Some((128u64 << 20) as f64)
    );
    let after = eventually(WAIT, "a report without replica 1", || {
        last_report(&leader).filter(|r| r.replicas.len() == 1)
    })
    .await;
    assert_eq!(after.replicas[0].task, "t2");

    shutdown.cancel();
    agent
        .await
        .expect("joined")
        .expect("the agent ends cleanly");
}
