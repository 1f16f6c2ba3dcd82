//! Autoscaling's node side (issue 16): replicas' metrics endpoints served as real
//! Prometheus text over HTTP on 127.0.0.x, read by the agent, with CPU and memory from
//! the recording fake runtime's stats. First one measuring pass after another with
//! explicit `now` values and exact report values; then the whole agent reporting to a
//! stand-in controller on its session.

#[allow(dead_code)]
mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{serve, until, web_assignments, Leader};
use shoal_agent::autoscale::{Measurer, MetricReport, Replica, ServiceReport};
use shoal_agent::runtime::fake::FakeRuntime;
use shoal_agent::runtime::{ContainerState, ContainerStats, TaskIdentity};
use shoal_agent::AgentConfig;
use shoal_proto::autoscale::{Autoscale, Behavior, Metric};
use shoal_proto::container::{ContainerOptions, NetworkMode};
use shoal_proto::pb;
use shoal_proto::pb::agent_message::Msg;
use shoal_proto::spec::{Limits, Resources, ServiceSpec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a condition of these tests may take.
const WAIT: Duration = Duration::from_secs(15);

const INF: f64 = f64::INFINITY;

/// A replica's metrics endpoint: `/metrics` answers `body`, anything else 404.
#[derive(Clone)]
struct Endpoint {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    /// Requests answered.
    hits: Arc<AtomicUsize>,
}

impl Endpoint {
    async fn start(ip: &str, port: u16) -> Endpoint {
        let listener = tokio::net::TcpListener::bind((ip, port))
            .await
            .unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"));
        let ep = Endpoint {
            addr: listener.local_addr().expect("bound"),
            body: Arc::new(Mutex::new(String::new())),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let served = ep.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let ep = served.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let Ok(Some(request)) = lines.next_line().await else {
                        return;
                    };
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.is_empty() {
                            break;
                        }
                    }
                    ep.hits.fetch_add(1, Ordering::SeqCst);
                    let answer = if request.starts_with("GET /metrics ") {
                        let body = ep.body.lock().expect("body").clone();
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    };
                    let _ = write.write_all(answer.as_bytes()).await;
                    let _ = write.shutdown().await;
                });
            }
        });
        ep
    }

    fn set(&self, body: &str) {
        *self.body.lock().expect("body") = body.to_string();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Prometheus text of a queue gauge (two series) and a latency histogram.
fn text(queue: [f64; 2], le_01: f64, le_05: f64, inf: f64) -> String {
    format!(
        "# HELP inference_queue_depth Requests waiting.\n\
         # TYPE inference_queue_depth gauge\n\
         inference_queue_depth{{model=\"a\"}} {}\n\
         inference_queue_depth{{model=\"b\"}} {}\n\
         # HELP inference_duration_seconds Time to answer.\n\
         # TYPE inference_duration_seconds histogram\n\
         inference_duration_seconds_bucket{{le=\"0.1\"}} {le_01}\n\
         inference_duration_seconds_bucket{{le=\"0.5\"}} {le_05}\n\
         inference_duration_seconds_bucket{{le=\"+Inf\"}} {inf}\n\
         inference_duration_seconds_sum 12.5\n\
         inference_duration_seconds_count {inf}\n",
        queue[0], queue[1]
    )
}

fn spec(port: u16) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        image: "img:1".into(),
        resources: Resources {
            limits: Limits {
                nano_cpus: Some(500_000_000),
                memory_bytes: None,
                pids: None,
            },
            reservations: Limits {
                nano_cpus: Some(250_000_000),
                memory_bytes: Some(512 << 20),
                pids: None,
            },
        },
        autoscale: Some(Autoscale {
            min: 1,
            max: 10,
            metrics: vec![
                Metric::Gauge {
                    port,
                    path: "/metrics".into(),
                    name: "inference_queue_depth".into(),
                    per_replica: 15.0,
                },
                Metric::Histogram {
                    port,
                    path: "/metrics".into(),
                    name: "inference_duration_seconds".into(),
                    quantile: 0.95,
                    window_ms: 120_000,
                    above: 0.8,
                },
                Metric::Cpu { target: 0.7 },
                Metric::Memory { target: 0.8 },
            ],
            scale_up: Behavior::up(),
            scale_down: Behavior::down(),
        }),
        ..Default::default()
    }
}

fn task(slot: u64) -> TaskIdentity {
    TaskIdentity {
        task_id: format!("t{slot}"),
        stack: "shop".into(),
        service: "web".into(),
        slot,
        generation: 7,
    }
}

/// A running container of task `t{slot}` on the fake, as a replica at `ip`.
fn replica(fake: &FakeRuntime, spec: &Arc<ServiceSpec>, slot: u64, ip: &str) -> Replica {
    let t = task(slot);
    let id = fake.insert_container(
        &format!("web.{slot}"),
        [(shoal_proto::labels::TASK.to_string(), t.task_id.clone())].into(),
        ContainerState::Running,
    );
    Replica {
        task: t,
        spec: spec.clone(),
        container_id: id,
        address: Ok(ip.parse::<IpAddr>().expect("an address")),
    }
}

fn stats(cpu_ns: u64, memory_mib: u64) -> ContainerStats {
    ContainerStats {
        cpu_ns,
        memory_bytes: memory_mib << 20,
        ..Default::default()
    }
}

fn metric(report: &[ServiceReport], index: u32) -> MetricReport {
    assert_eq!(report.len(), 1, "one service: {report:?}");
    let s = &report[0];
    assert_eq!(
        (s.stack.as_str(), s.service.as_str(), s.generation),
        ("shop", "web", 7)
    );
    s.values
        .iter()
        .find(|v| v.index == index)
        .cloned()
        .unwrap_or_else(|| panic!("metric {index} in {s:?}"))
}

#[tokio::test]
async fn a_pass_reads_gauges_histograms_cpu_and_memory_of_every_replica() {
    // Two replicas answer (each on its own loopback address, on the service's port);
    // the third's endpoint refuses connections.
    let one = Endpoint::start("127.0.0.1", 0).await;
    let port = one.addr.port();
    let two = Endpoint::start("127.0.0.2", port).await;
    let spec = Arc::new(spec(port));
    let fake = FakeRuntime::new();
    let replicas = vec![
        replica(&fake, &spec, 1, "127.0.0.1"),
        replica(&fake, &spec, 2, "127.0.0.2"),
        replica(&fake, &spec, 3, "127.0.0.3"),
    ];
    let refused = format!("web slot 3: GET http://127.0.0.3:{port}/metrics: connection refused");
    let mut measurer = Measurer::new(Arc::new(fake.clone()));

    // First pass: gauges and memory have values; a histogram's growth and CPU use need
    // a second sample.
    one.set(&text([3.0, 4.0], 10.0, 30.0, 40.0));
    two.set(&text([5.0, 0.5], 2.0, 3.0, 4.0));
    fake.set_stats("t1", stats(2_000_000_000, 128));
    fake.set_stats("t2", stats(0, 256));
    fake.set_stats("t3", stats(0, 64));
    let t0 = Instant::now();
    let first = measurer.measure(&replicas, t0).await;
    assert_eq!(
        metric(&first, 0),
        MetricReport {
            index: 0,
            replicas: 3,
            read: 2,
            sum: 3.0 + 4.0 + 5.0 + 0.5,
            error: Some(refused.clone()),
            ..Default::default()
        }
    );
    assert_eq!(
        metric(&first, 1),
        MetricReport {
            index: 1,
            replicas: 3,
            read: 0,
            error: Some(
                "web slot 1: inference_duration_seconds: first sample, its growth is known from the next"
                    .into()
            ),
            ..Default::default()
        }
    );
    assert_eq!(
        metric(&first, 2),
        MetricReport {
            index: 2,
            replicas: 3,
            read: 0,
            error: Some("web slot 1: cpu: first sample, its use is known from the next".into()),
            ..Default::default()
        }
    );
    // Memory of the reservation (no limit): 128, 256 and 64 MiB of 512.
    assert_eq!(
        metric(&first, 3),
        MetricReport {
            index: 3,
            replicas: 3,
            read: 3,
            sum: 0.25 + 0.5 + 0.125,
            ..Default::default()
        }
    );
    assert_eq!(
        (one.hits(), two.hits()),
        (1, 1),
        "one GET per endpoint for the gauge and the histogram"
    );

    // Second pass, 5 s later: replica 2's process restarted (its counters went down).
    one.set(&text([6.0, 1.0], 12.0, 36.0, 50.0));
    two.set(&text([2.0, 2.0], 1.0, 1.0, 1.0));
    // 1 s of CPU in 5 s is 0.2 cores of the 0.5 limit; 2.5 s is 0.5 cores.
    fake.set_stats("t1", stats(3_000_000_000, 128));
    fake.set_stats("t2", stats(2_500_000_000, 256));
    fake.set_stats("t3", stats(500_000_000, 64));
    let t1 = t0 + Duration::from_secs(5);
    let second = measurer.measure(&replicas, t1).await;
    assert_eq!(metric(&second, 0).sum, 6.0 + 1.0 + 2.0 + 2.0);
    assert_eq!(
        metric(&second, 1),
        MetricReport {
            index: 1,
            replicas: 3,
            read: 2,
            buckets: vec![(0.1, 2.0 + 1.0), (0.5, 6.0 + 1.0), (INF, 10.0 + 1.0)],
            window_ms: 5_000,
            error: Some(refused.clone()),
            ..Default::default()
        }
    );
    assert_eq!(
        metric(&second, 2),
        MetricReport {
            index: 2,
            replicas: 3,
            read: 3,
            sum: 0.4 + 1.0 + 0.2,
            ..Default::default()
        }
    );

    // Third pass: replica 1 is gone and replica 2 no longer serves the gauge.
    two.set(
        "# TYPE inference_duration_seconds histogram\n\
         inference_duration_seconds_bucket{le=\"0.1\"} 4\n\
         inference_duration_seconds_bucket{le=\"0.5\"} 5\n\
         inference_duration_seconds_bucket{le=\"+Inf\"} 6\n",
    );
    let t2 = t1 + Duration::from_secs(5);
    let third = measurer.measure(&replicas[1..], t2).await;
    assert_eq!(
        metric(&third, 0),
        MetricReport {
            index: 0,
            replicas: 2,
            read: 0,
            error: Some(format!(
                "web slot 2: GET http://127.0.0.2:{port}/metrics: no metric named inference_queue_depth"
            )),
            ..Default::default()
        }
    );
    // Replica 2's growth over the 10 s it was watched: 0 -> 1 (reset) -> 4.
    assert_eq!(
        metric(&third, 1),
        MetricReport {
            index: 1,
            replicas: 2,
            read: 1,
            buckets: vec![(0.1, 1.0 + 3.0), (0.5, 1.0 + 4.0), (INF, 1.0 + 5.0)],
            window_ms: 10_000,
            error: Some(refused),
            ..Default::default()
        }
    );
    // Replica 1's histogram window and CPU sample are forgotten; replica 2's window and
    // the CPU samples of replicas 2 and 3 remain.
    assert_eq!(measurer.memory().len(), 3);
}

#[tokio::test]
async fn a_slow_endpoint_is_given_up_after_the_timeout() {
    // Accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("bound").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let mut spec = spec(port);
    if let Some(a) = spec.autoscale.as_mut() {
        a.metrics.truncate(1);
    }
    let spec = Arc::new(spec);
    let fake = FakeRuntime::new();
    let replicas = vec![replica(&fake, &spec, 1, "127.0.0.1")];
    let mut measurer =
        Measurer::new(Arc::new(fake.clone())).with_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let report = measurer.measure(&replicas, Instant::now()).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        metric(&report, 0).error,
        Some(format!(
            "web slot 1: GET http://127.0.0.1:{port}/metrics: timed out after 200 ms"
        ))
    );
    held.abort();
}

#[tokio::test]
async fn a_hundred_replicas_are_read_well_within_an_interval() {
    let endpoint = Endpoint::start("127.0.0.1", 0).await;
    endpoint.set(&text([1.0, 0.5], 1.0, 2.0, 3.0));
    let mut spec = spec(endpoint.addr.port());
    if let Some(a) = spec.autoscale.as_mut() {
        a.metrics.truncate(1);
    }
    let spec = Arc::new(spec);
    let fake = FakeRuntime::new();
    let replicas: Vec<Replica> = (1..=100)
        .map(|slot| replica(&fake, &spec, slot, "127.0.0.1"))
        .collect();
    let mut measurer = Measurer::new(Arc::new(fake.clone()));
    let started = std::time::Instant::now();
    let report = measurer.measure(&replicas, Instant::now()).await;
    let took = started.elapsed();
    assert_eq!(
        metric(&report, 0),
        MetricReport {
            index: 0,
            replicas: 100,
            read: 100,
            sum: 150.0,
            ..Default::default()
        }
    );
    assert_eq!(endpoint.hits(), 100);
    assert!(
        took < shoal_agent::autoscale::INTERVAL,
        "100 replicas took {took:?}"
    );
}

fn reports(leader: &Leader) -> Vec<pb::MetricsReport> {
    leader.sent(|m| match m {
        Msg::Metrics(r) => Some(r.clone()),
        _ => None,
    })
}

fn count(leader: &Leader, f: impl Fn(&Msg) -> bool) -> usize {
    leader
        .got
        .lock()
        .expect("got")
        .iter()
        .filter(|m| f(m))
        .count()
}

#[tokio::test]
async fn the_agent_reports_its_replicas_metrics_on_its_session_while_they_run() {
    let endpoint = Endpoint::start("127.0.0.1", 0).await;
    endpoint.set(&text([2.0, 1.0], 5.0, 8.0, 10.0));
    // Two replicas with host networking: both answer on 127.0.0.1 at the same endpoint.
    let spec = ServiceSpec {
        container: ContainerOptions {
            network_mode: Some(NetworkMode::Host),
            ..Default::default()
        },
        ..spec(endpoint.addr.port())
    };

    let leader = Leader::default();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let addr = serve(leader.clone(), stop.clone()).await;
    let fake = FakeRuntime::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = CancellationToken::new();
    let cfg = AgentConfig {
        controllers: vec![addr],
        name: "node-a".into(),
        data_dir: dir.path().join("agent"),
        heartbeat_interval: Duration::from_millis(50),
        plaintext: true,
        autoscale_interval: Duration::from_millis(100),
        ..AgentConfig::default()
    };
    let agent = tokio::spawn(shoal_agent::run_with_runtime(
        cfg,
        Arc::new(fake.clone()),
        shutdown.clone(),
    ));
    until(WAIT, "the session", || {
        leader.to_agent.lock().expect("tx").is_some()
    })
    .await;
    // Nothing autoscales here yet: heartbeats, and no report.
    until(WAIT, "heartbeats", || {
        count(&leader, |m| matches!(m, Msg::Heartbeat(_))) >= 10
    })
    .await;
    assert!(reports(&leader).is_empty(), "no report without replicas");

    let tx = leader
        .to_agent
        .lock()
        .expect("tx")
        .clone()
        .expect("a session");
    tx.send(Ok(web_assignments(1, &spec, 7, &[1, 2])))
        .await
        .expect("sent");
    until(WAIT, "both replicas running", || {
        count(
            &leader,
            |m| matches!(m, Msg::Status(s) if s.state == "running"),
        ) == 2
    })
    .await;
    fake.set_stats("t1", stats(0, 128));
    fake.set_stats("t2", stats(0, 384));

    // The gauge of both replicas, and their memory; then, once the histogram changed
    // and was read again, its growth (twice: both replicas read the one endpoint).
    until(WAIT, "a report of both replicas' gauge and memory", || {
        reports(&leader).iter().any(|r| {
            r.services.len() == 1
                && r.services[0].values.len() == 4
                && r.services[0].values[0]
                    == pb::MetricValue {
                        index: 0,
                        replicas: 2,
                        read: 2,
                        sum: 6.0,
                        ..Default::default()
                    }
                && r.services[0].values[3]
                    == pb::MetricValue {
                        index: 3,
                        replicas: 2,
                        read: 2,
                        sum: 0.25 + 0.75,
                        ..Default::default()
                    }
        })
    })
    .await;
    let s = &reports(&leader)[0].services[0];
    assert_eq!(
        (s.stack.as_str(), s.service.as_str(), s.generation),
        ("shop", "web", 7)
    );
    endpoint.set(&text([2.0, 1.0], 6.0, 10.0, 13.0));
    until(WAIT, "the histogram's growth", || {
        reports(&leader).iter().any(|r| {
            let v = &r.services[0].values[1];
            v.read == 2
                && v.buckets
                    == vec![
                        pb::Bucket {
                            le: 0.1,
                            count: 2.0,
                        },
                        pb::Bucket {
                            le: 0.5,
                            count: 4.0,
                        },
                        pb::Bucket {
                            le: INF,
                            count: 6.0,
                        },
                    ]
        })
    })
    .await;
    // CPU that did not move is 0 of the limit, once read twice.
    until(WAIT, "CPU use of both replicas", || {
        reports(&leader).iter().any(|r| {
            let v = &r.services[0].values[2];
            v.read == 2 && v.sum == 0.0 && v.error.is_empty()
        })
    })
    .await;

    // The service leaves the node: the reports stop.
    tx.send(Ok(web_assignments(2, &spec, 7, &[])))
        .await
        .expect("sent");
    until(WAIT, "the replicas removed", || {
        fake.containers().is_empty()
    })
    .await;
    let before = reports(&leader).len();
    let beats = count(&leader, |m| matches!(m, Msg::Heartbeat(_)));
    // Twenty heartbeats (50 ms) are ten measuring intervals (100 ms).
    until(WAIT, "twenty more heartbeats", || {
        count(&leader, |m| matches!(m, Msg::Heartbeat(_))) >= beats + 20
    })
    .await;
    assert!(
        reports(&leader).len() <= before + 1,
        "at most one pass was under way when the replicas went"
    );

    shutdown.cancel();
    agent
        .await
        .expect("joined")
        .expect("the agent ends cleanly");
}
