//! The page as a Prometheus parser reads it: every figure with its labels, none where
//! nothing is known, series gone with what they measured; and served over HTTP.

use std::collections::BTreeMap;

use prometheus_parse::{Scrape, Value};

use super::*;
use crate::stats::ReplicaFigures;

fn gpu(i: u32, used: Option<u64>, util: Option<u32>) -> GpuDevice {
    GpuDevice {
        uuid: format!("GPU-{i}"),
        index: i,
        model: "NVIDIA A10".into(),
        memory_bytes: 24 << 30,
        utilization_percent: util,
        memory_used_bytes: used,
    }
}

fn replica(slot: u64, cpu_percent: Option<f64>) -> ReplicaFigures {
    ReplicaFigures {
        stack: "shop".into(),
        service: "web".into(),
        slot,
        task: format!("t{slot}"),
        container: format!("c{slot}"),
        cpu_percent,
        memory_bytes: 100 << 20,
        memory_limit_bytes: if slot == 1 { 256 << 20 } else { 0 },
        net_rx_bytes: 1_000 * slot,
        net_tx_bytes: 2_000 * slot,
        restarts: slot - 1,
    }
}

struct Page {
    gpus: watch::Sender<Vec<GpuDevice>>,
    tasks: watch::Sender<Arc<Measured>>,
    images: Arc<ImageCounters>,
    registry: Registry,
}

impl Page {
    fn new(node: &str, gpus: Vec<GpuDevice>, replicas: Vec<ReplicaFigures>) -> Page {
        let (gpus, gpus_rx) = watch::channel(gpus);
        let (tasks, tasks_rx) = watch::channel(Arc::new(Measured { at_ms: 1, replicas }));
        let images = Arc::new(ImageCounters::default());
        let registry = registry(Sources {
            node: node.into(),
            gpus: gpus_rx,
            images: images.clone(),
            tasks: tasks_rx,
        });
        Page {
            gpus,
            tasks,
            images,
            registry,
        }
    }

    fn text(&self) -> String {
        render(&self.registry)
    }

    fn scrape(&self) -> Scrape {
        let text = self.text();
        assert!(
            text.ends_with("# EOF\n"),
            "an OpenMetrics page ends so:\n{text}"
        );
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the page parses")
    }
}

/// Every series of `name`: its labels and value.
fn series(scrape: &Scrape, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| {
            let value = match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                ref other => panic!("{name}: not a number: {other:?}"),
            };
            let labels: BTreeMap<String, String> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (labels, value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn gpu_labels(i: &str) -> BTreeMap<String, String> {
    labels(&[
        ("node", "n1"),
        ("uuid", &format!("GPU-{i}")),
        ("index", i),
        ("model", "NVIDIA A10"),
    ])
}

fn task_labels(slot: &str) -> BTreeMap<String, String> {
    labels(&[
        ("stack", "shop"),
        ("service", "web"),
        ("slot", slot),
        ("task", &format!("t{slot}")),
        ("node", "n1"),
    ])
}

#[test]
fn every_gpu_shows_with_the_figures_nvml_gave() {
    let page = Page::new(
        "n1",
        vec![gpu(0, Some(1024), Some(37)), gpu(1, None, None)],
        Vec::new(),
    );
    let s = page.scrape();
    assert_eq!(
        series(&s, "shoal_gpus"),
        vec![(labels(&[("node", "n1")]), 2.0)]
    );
    let total = (24u64 << 30) as f64;
    assert_eq!(
        series(&s, "shoal_gpu_memory_total_bytes"),
        vec![(gpu_labels("0"), total), (gpu_labels("1"), total)]
    );
    // No figure where NVML gave none.
    assert_eq!(
        series(&s, "shoal_gpu_memory_used_bytes"),
        vec![(gpu_labels("0"), 1024.0)]
    );
    assert_eq!(
        series(&s, "shoal_gpu_utilization_percent"),
        vec![(gpu_labels("0"), 37.0)]
    );
    // The lines readers match as text (tests and scripts) keep their shape.
    let text = page.text();
    let line = "shoal_gpu_utilization_percent{node=\"n1\",uuid=\"GPU-0\",index=\"0\",model=\"NVIDIA A10\"} 37";
    assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");

    // A rediscovery's figures show on the next scrape.
    page.gpus.send_replace(vec![gpu(0, Some(2048), Some(80))]);
    let s = page.scrape();
    assert_eq!(series(&s, "shoal_gpus")[0].1, 1.0);
    assert_eq!(
        series(&s, "shoal_gpu_utilization_percent"),
        vec![(gpu_labels("0"), 80.0)]
    );
}

#[test]
fn no_gpus_is_a_zero_count() {
    let page = Page::new("cpu-only", Vec::new(), Vec::new());
    let s = page.scrape();
    assert_eq!(
        series(&s, "shoal_gpus"),
        vec![(labels(&[("node", "cpu-only")]), 0.0)]
    );
    assert!(series(&s, "shoal_gpu_memory_total_bytes").is_empty());
}

#[test]
fn image_counters_are_counters_by_node() {
    let page = Page::new("n1", Vec::new(), Vec::new());
    page.images.received(10);
    page.images.received(5);
    page.images.loaded();
    let text = page.text();
    assert!(
        text.contains("# TYPE shoal_agent_image_bytes_received counter\n"),
        "{text}"
    );
    assert!(
        text.contains("shoal_agent_image_bytes_received_total{node=\"n1\"} 15\n"),
        "{text}"
    );
    let s = page.scrape();
    assert_eq!(
        series(&s, "shoal_agent_images_loaded_total"),
        vec![(labels(&[("node", "n1")]), 1.0)]
    );
}

#[test]
fn every_replica_shows_with_its_container_figures_until_it_is_gone() {
    let page = Page::new(
        "n1",
        Vec::new(),
        vec![replica(1, Some(12.5)), replica(2, None)],
    );
    let s = page.scrape();
    // A first sample has no CPU figure yet.
    assert_eq!(
        series(&s, "shoal_task_cpu_percent"),
        vec![(task_labels("1"), 12.5)]
    );
    let mem = (100u64 << 20) as f64;
    assert_eq!(
        series(&s, "shoal_task_memory_bytes"),
        vec![(task_labels("1"), mem), (task_labels("2"), mem)]
    );
    assert_eq!(
        series(&s, "shoal_task_memory_limit_bytes"),
        vec![
            (task_labels("1"), (256u64 << 20) as f64),
            (task_labels("2"), 0.0)
        ]
    );
    assert_eq!(
        series(&s, "shoal_task_network_receive_bytes_total"),
        vec![(task_labels("1"), 1_000.0), (task_labels("2"), 2_000.0)]
    );
    assert_eq!(
        series(&s, "shoal_task_network_transmit_bytes_total"),
        vec![(task_labels("1"), 2_000.0), (task_labels("2"), 4_000.0)]
    );
    assert_eq!(
        series(&s, "shoal_task_restarts_total"),
        vec![(task_labels("1"), 0.0), (task_labels("2"), 1.0)]
    );
    let text = page.text();
    for counter in [
        "shoal_task_network_receive_bytes",
        "shoal_task_network_transmit_bytes",
        "shoal_task_restarts",
    ] {
        assert!(
            text.contains(&format!("# TYPE {counter} counter\n")),
            "{text}"
        );
    }

    // Replica 1 removed: its series go with it.
    page.tasks.send_replace(Arc::new(Measured {
        at_ms: 2,
        replicas: vec![replica(2, Some(3.0))],
    }));
    let s = page.scrape();
    assert_eq!(
        series(&s, "shoal_task_cpu_percent"),
        vec![(task_labels("2"), 3.0)]
    );
    assert_eq!(
        series(&s, "shoal_task_memory_bytes"),
        vec![(task_labels("2"), mem)]
    );
    assert!(!page.text().contains("task=\"t1\""));
}

#[test]
fn label_values_are_escaped() {
    let mut odd = gpu(0, None, None);
    odd.model = "A \"quoted\" back\\slash\nmodel".into();
    let page = Page::new("n1", vec![odd], Vec::new());
    let text = page.text();
    let line = "shoal_gpu_memory_total_bytes{node=\"n1\",uuid=\"GPU-0\",index=\"0\",model=\"A \\\"quoted\\\" back\\\\slash\\nmodel\"} 25769803776";
    assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
}

#[tokio::test]
async fn the_page_is_served_on_metrics() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = bind("127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("bound");
    let addr = listener.local_addr().expect("an address");
    let (_gpus, gpus) = watch::channel(vec![gpu(0, Some(5), Some(9))]);
    let (_tasks, tasks) = watch::channel(Arc::new(Measured {
        at_ms: 1,
        replicas: vec![replica(1, Some(50.0))],
    }));
    let stop = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        Sources {
            node: "n1".into(),
            gpus,
            images: Arc::new(ImageCounters::default()),
            tasks,
        },
        stop.clone(),
    ));
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("sent");
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.expect("read");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains(shoal_tls::metrics_http::CONTENT_TYPE),
        "{reply}"
    );
    let line = "shoal_task_cpu_percent{stack=\"shop\",service=\"web\",slot=\"1\",task=\"t1\",node=\"n1\"} 50.0";
    assert!(reply.lines().any(|l| l == line), "no {line} in\n{reply}");
    assert!(reply.contains("shoal_gpu_utilization_percent{"), "{reply}");
    stop.cancel();
}
