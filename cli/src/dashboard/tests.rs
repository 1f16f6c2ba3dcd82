//! The dashboard's server in-process, without a browser: every page and stream over
//! real HTTP against the CLI's fake control server ([`crate::fake_control`]).

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::source::Shared;
use super::*;
use crate::args::{Addrs, Format, GlobalArgs};
use crate::client::Client;
use crate::fake_control::{lock, serve_volumes, EventsScript, FakeVolumes, Role, Scripted};

fn global(addr: &str, credentials: Option<&str>) -> GlobalArgs {
    GlobalArgs {
        addr: Addrs(vec![addr.to_string()]),
        credentials: credentials.map(Into::into),
        format: Format::Table,
    }
}

fn node(name: &str, status: &str) -> pb::NodeRow {
    pb::NodeRow {
        id: format!("id-{name}"),
        name: name.into(),
        address: "10.0.0.1".into(),
        status: status.into(),
        availability: "active".into(),
        cpus: 4.0,
        memory_bytes: 8 << 30,
        ..Default::default()
    }
}

pub(super) fn scripted() -> Scripted {
    let mut n2 = node("n2", "ready");
    n2.labels.insert("zone".into(), "b".into());
    n2.gpus.push(pb::GpuRow {
        uuid: "GPU-1".into(),
        index: 0,
        model: "NVIDIA H100".into(),
        memory_bytes: 80 << 30,
        assigned_to: "hello/web.1".into(),
        utilization_percent: Some(37),
        memory_used_bytes: Some(1 << 30),
    });
    Scripted {
        services: Some(vec![
            pb::ServiceRow {
                stack: "hello".into(),
                name: "web".into(),
                image: "shoal-test/busybox:latest".into(),
                mode: "replicated".into(),
                desired: 3,
                running: 2,
                generation: 2,
                rollout: "updating".into(),
                ..Default::default()
            },
            pb::ServiceRow {
                stack: "hello".into(),
                name: "worker".into(),
                mode: "replicated".into(),
                desired: 1,
                running: 1,
                generation: 1,
                rollout: "completed".into(),
                autoscale: Some(pb::AutoscaleRow {
                    min: 1,
                    max: 4,
                    desired: 1,
                    cause: "queue_depth 0 below target".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        nodes: Some(vec![node("n1", "ready"), n2]),
        tasks: Some(vec![pb::TaskRow {
            id: "t1".into(),
            stack: "hello".into(),
            service: "web".into(),
            slot: 1,
            node: "n1".into(),
            desired: "running".into(),
            state: "running".into(),
            container: "0123456789abcdef".into(),
            ..Default::default()
        }]),
        cluster: Some(pb::ClusterStatusReply {
            leader: 1,
            term: 7,
            commit_index: 42,
            members: vec![
                pb::MemberRow {
                    id: 1,
                    address: "10.0.0.9:7370".into(),
                    role: "leader".into(),
                    reachable: true,
                },
                pb::MemberRow {
                    id: 2,
                    address: "10.0.0.8:7370".into(),
                    role: "follower".into(),
                    reachable: false,
                },
            ],
            ..Default::default()
        }),
        logs: Some(vec![
            pb::LogLine {
                task_id: "t1".into(),
                service: "web".into(),
                slot: 1,
                node: "n1".into(),
                data: b"hello from web\nsecond <line>".to_vec(),
                stderr: false,
            },
            pb::LogLine {
                task_id: "t1".into(),
                service: "web".into(),
                slot: 1,
                node: "n1".into(),
                data: b" ends\n".to_vec(),
                stderr: false,
            },
        ]),
    }
}

/// A dashboard on 127.0.0.1 in front of `shared`; its address.
async fn dashboard(shared: Shared, stop: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = server::serve(listener, Arc::new(shared)) => {}
            _ = stop.cancelled() => {}
        }
    });
    addr
}

pub(super) const NOW: u64 = 1_800_000_000_000;

/// An hour of figures: a GPU on n2 and the service hello/web, one replica now.
fn stats() -> pb::StatsReply {
    let points = |v: f64| -> Vec<pb::SeriesPoint> {
        (0..60u64)
            .map(|m| pb::SeriesPoint {
                at_ms: NOW - (59 - m) * 60_000,
                cpu_percent: v + m as f64,
                memory_bytes: (64 + m) << 20,
            })
            .collect()
    };
    pb::StatsReply {
        replicas: vec![pb::ReplicaStats {
            stack: "hello".into(),
            service: "web".into(),
            task: "t1".into(),
            slot: 1,
            node: "n1".into(),
            cpu_percent: 12.5,
            memory_bytes: 100 << 20,
            memory_limit_bytes: 512 << 20,
            restarts: 4,
            ..Default::default()
        }],
        gpus: vec![pb::NodeGpuStats {
            node: "n2".into(),
            uuid: "GPU-1".into(),
            index: 0,
            model: "NVIDIA H100".into(),
            utilization_percent: Some(37),
            memory_used_bytes: Some(1 << 30),
            history: points(10.0),
        }],
        services: vec![pb::ServiceSeries {
            stack: "hello".into(),
            service: "web".into(),
            points: points(1.0),
        }],
        at_ms: NOW,
    }
}

fn event(ms: u64, kind: &str, message: &str) -> pb::Event {
    pb::Event {
        time_ms: ms,
        kind: kind.into(),
        stack: "hello".into(),
        service: "web".into(),
        node: "n1".into(),
        message: message.into(),
        ..Default::default()
    }
}

/// A fake leader answering `scripted` and a dashboard in front of it.
async fn setup(stop: &CancellationToken) -> (String, Arc<FakeVolumes>) {
    let fake = Arc::new(FakeVolumes::default());
    *lock(&fake.scripted) = scripted();
    *lock(&fake.stats) = stats();
    // The events page's first read, then the stream it follows.
    lock(&fake.events).extend([
        EventsScript::ends(vec![event(NOW - 1000, "task.running", "web.1 runs on n1")]),
        EventsScript {
            items: vec![Ok(event(NOW, "node.down", "n1 missed its heartbeats"))],
            hang: true,
        },
    ]);
    let leader = serve_volumes(
        Role::Leader { name: "l".into() },
        fake.clone(),
        stop.clone(),
    )
    .await;
    let shared = Shared::with_client(
        global(&leader, None),
        Client::new(&Addrs(vec![leader.clone()])),
    );
    (dashboard(shared, stop).await, fake)
}

/// `GET path` with `Host: host`: the status code and the body.
async fn get_as(addr: &str, path: &str, host: &str, method: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("the page within 20 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

async fn get(addr: &str, path: &str) -> (u16, String) {
    get_as(addr, path, addr, "GET").await
}

/// Reads a server-sent event stream until `until` holds for what came so far.
async fn stream_until(addr: &str, path: &str, until: impl Fn(&str) -> bool) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 8192];
    while !until(&seen) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{path}: timed out; got {seen}"))
            .unwrap();
        assert!(n > 0, "{path} ended; got {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

#[tokio::test]
async fn every_page_renders_what_the_cluster_says() {
    let stop = CancellationToken::new();
    let (addr, fake) = setup(&stop).await;

    let (status, body) = get(&addr, "/").await;
    assert_eq!(status, 200, "{body}");
    for want in [
        "n1",
        "n2",
        "hello/web",
        "hello/worker",
        ">2/3<",
        ">1/1<",
        "term 7",
    ] {
        assert!(body.contains(want), "overview lacks {want}: {body}");
    }
    assert!(body.contains(r#"data-live="/live/""#), "{body}");

    let (status, body) = get(&addr, "/nodes").await;
    assert_eq!(status, 200, "{body}");
    for want in [
        "zone=b",
        "0: NVIDIA H100, 37 % busy",
        "8.0GiB",
        "n2 GPU 0 (NVIDIA H100): now 69 %, peak 69 % over the last hour",
        "<polyline",
    ] {
        assert!(body.contains(want), "nodes lacks {want}: {body}");
    }

    let (status, body) = get(&addr, "/services").await;
    assert_eq!(status, 200);
    for want in [
        "updating",
        "completed",
        "1 (1–4)",
        "queue_depth 0 below target",
        "<progress",
    ] {
        assert!(body.contains(want), "services lacks {want}: {body}");
    }

    let (status, body) = get(&addr, "/services/hello/web").await;
    assert_eq!(status, 200);
    for want in [
        "0123456789ab",
        r#"data-append="/logs/hello/web""#,
        "CPU (% of one CPU, all replicas)</strong>: now 60.0 %",
        "Memory (all replicas)</strong>: now 123.0MiB",
        "100.0MiB of 512.0MiB",
        "<td>4</td>",
    ] {
        assert!(body.contains(want), "service lacks {want}: {body}");
    }

    let (status, body) = get(&addr, "/tasks").await;
    assert_eq!(status, 200);
    assert!(body.contains("hello/web") && body.contains("n1"), "{body}");

    let (status, body) = get(&addr, "/cluster").await;
    assert_eq!(status, 200);
    for want in ["controller 1 at 10.0.0.9:7370", "42", "follower"] {
        assert!(body.contains(want), "cluster lacks {want}: {body}");
    }

    let (status, body) = get(&addr, "/events").await;
    assert_eq!(status, 200);
    assert!(body.contains("web.1 runs on n1"), "{body}");
    let stream = format!("/events/stream?stack=&amp;since={}", NOW - 999);
    assert!(
        body.contains(&stream),
        "the stream starts after the last event: {body}"
    );
    // The stream appends what comes next, and asked for it from there, following.
    let seen = stream_until(&addr, &stream.replace("&amp;", "&"), |s| {
        s.contains("missed")
    })
    .await;
    assert!(
        seen.contains("data: <tr data-kind=\"node.down\">"),
        "{seen}"
    );
    let asked = lock(&fake.events_asked).clone();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(!asked[0].follow && asked[1].follow && asked[1].since_ms == NOW - 999);

    let (status, body) = get(&addr, "/stacks/hello").await;
    assert_eq!(status, 200);
    assert!(body.contains("hello/worker"), "{body}");
    stop.cancel();
}

#[tokio::test]
async fn unknown_stacks_services_and_paths_are_404_pages_linking_back() {
    let stop = CancellationToken::new();
    let (addr, _fake) = setup(&stop).await;
    for (path, want) in [
        ("/stacks/nope", "no stack named nope"),
        ("/services/hello/nope", "no service named hello/nope"),
        ("/stacks/%3Cb%3E", "no stack named &lt;b&gt;"),
        (
            "/no/such/page",
            "the dashboard has no page at /no/such/page",
        ),
    ] {
        let (status, body) = get(&addr, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains(want), "{path}: {body}");
        assert!(
            body.contains(r#"<a href="/">Back to the overview</a>"#),
            "{body}"
        );
    }
    let (status, _) = get_as(&addr, "/", "evil.example:80", "GET").await;
    assert_eq!(status, 403, "a foreign Host is refused");
    let (status, _) = get_as(&addr, "/", "localhost:1", "POST").await;
    assert_eq!(status, 405);
    let (status, body) = get(&addr, "/static/dashboard.js").await;
    assert_eq!(status, 200);
    assert!(body.contains("EventSource"), "{body}");
    stop.cancel();
}

#[tokio::test]
async fn live_regions_follow_the_cluster() {
    let stop = CancellationToken::new();
    let (addr, fake) = setup(&stop).await;
    let first = stream_until(&addr, "/live/nodes", |s| {
        s.contains("\n\n") && s.contains("data: ")
    })
    .await;
    assert!(first.contains("text/event-stream"), "{first}");
    assert!(first.contains("data-node=\"n1\""), "{first}");
    // n1 goes down: a stream opened now carries it within a tick or two.
    lock(&fake.scripted).nodes.as_mut().unwrap()[0].status = "down".into();
    let later = stream_until(&addr, "/live/nodes", |s| s.contains("data-status=\"down\"")).await;
    assert!(later.contains("data-node=\"n1\""), "{later}");
    stop.cancel();
}

#[tokio::test]
async fn a_stream_sends_changes_without_a_new_request() {
    let stop = CancellationToken::new();
    let (addr, fake) = setup(&stop).await;
    let fake2 = fake.clone();
    // Changed once the first event is in: only the open stream can report it.
    let seen = stream_until(&addr, "/live/services", move |s| {
        if s.contains(">2/3<") {
            if let Some(rows) = lock(&fake2.scripted).services.as_mut() {
                rows[0].running = 3;
                rows[0].rollout = "completed".into();
            }
        }
        s.contains(">3/3<")
    })
    .await;
    assert!(seen.find(">2/3<") < seen.find(">3/3<"), "{seen}");
    stop.cancel();
}

#[tokio::test]
async fn logs_stream_whole_lines_escaped() {
    let stop = CancellationToken::new();
    let (addr, _fake) = setup(&stop).await;
    let seen = stream_until(&addr, "/logs/hello/web", |s| s.contains("ends")).await;
    assert!(
        seen.contains(
            r#"data: <div class="line"><span class="src">web.1@n1</span> hello from web</div>"#
        ),
        "{seen}"
    );
    assert!(seen.contains("second &lt;line&gt; ends"), "{seen}");
    stop.cancel();
}

#[tokio::test]
async fn missing_credentials_explain_what_to_do() {
    let stop = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let shared = Shared::new(global("127.0.0.1:1", Some(missing.to_str().unwrap())));
    let addr = dashboard(shared, &stop).await;
    for path in ["/", "/nodes", "/services/a/b"] {
        let (status, body) = get(&addr, path).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("The dashboard cannot sign in to the cluster"),
            "{body}"
        );
        assert!(
            body.contains("nothing-here"),
            "the message names the directory: {body}"
        );
        assert!(
            body.contains("--credentials DIR") && body.contains("shoal up"),
            "{body}"
        );
    }
    let live = stream_until(&addr, "/live/", |s| s.contains("cannot sign in")).await;
    assert!(live.contains("role=\"alert\""), "{live}");
    stop.cancel();
}

#[tokio::test]
async fn an_unreachable_cluster_says_so() {
    let stop = CancellationToken::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("127.0.0.1:{port}");
    let shared = Shared::with_client(
        global(&nowhere, None),
        Client::new(&Addrs(vec![nowhere.clone()])),
    );
    let addr = dashboard(shared, &stop).await;
    let (status, body) = get(&addr, "/services").await;
    assert_eq!(status, 503);
    assert!(body.contains("The cluster does not answer"), "{body}");
    assert!(body.contains(&nowhere), "{body}");
    stop.cancel();
}
