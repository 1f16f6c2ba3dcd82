//! The `Events` RPC of a real controller (issue 17), over gRPC with mTLS: the kept
//! events in log order, `since` and `stack` filters, and a follow that gets each new
//! event as it is applied, in order, until the controller shuts down.

use std::time::Duration;

use shoal_controller::{serve, ControllerConfig};
use shoal_proto::pb::{self, control_client::ControlClient};
use shoal_proto::spec::{ServiceSpec, StackSpec};
use shoal_tls::{ClientTls, CredentialFiles};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const BOUND: Duration = Duration::from_secs(30);

struct Controller {
    client: ControlClient<Channel>,
    channel: Channel,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

/// A one-controller cluster (`--init`) and an admin client of it.
async fn controller() -> Controller {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = ControllerConfig::new(dir.path().join("c1"), addr);
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(cfg, listener, stop.clone()));
    let admin = dir.path().join("c1").join("admin");
    let start = std::time::Instant::now();
    let client = loop {
        assert!(
            start.elapsed() < BOUND,
            "the controller did not start within {BOUND:?}"
        );
        if task.is_finished() {
            panic!("the controller stopped: {:?}", task.await);
        }
        if let Ok(Some(creds)) = CredentialFiles::load(&admin) {
            let tls = ClientTls::from_credentials(&creds).unwrap();
            let endpoint = shoal_tls::client::endpoint(&addr.to_string())
                .unwrap()
                .connect_timeout(Duration::from_secs(2));
            match tokio::time::timeout(Duration::from_secs(5), tls.connect(endpoint)).await {
                Ok(Ok(channel)) => break channel,
                other => eprintln!("not connected yet: {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Controller {
        client: ControlClient::new(client.clone()),
        channel: client,
        stop,
        task,
        _dir: dir,
    }
}

fn stack(name: &str, replicas: u64) -> pb::DeployRequest {
    let spec = StackSpec {
        name: name.into(),
        services: [(
            "web".to_string(),
            ServiceSpec {
                name: "web".into(),
                image: "busybox".into(),
                replicas,
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        networks: Default::default(),
        volumes: Default::default(),
        secrets: Vec::new(),
        configs: Vec::new(),
    };
    pb::DeployRequest {
        stack_json: serde_json::to_vec(&spec).unwrap(),
        ..Default::default()
    }
}

/// Deploys, retrying while the new controller has no leader yet (bounded).
async fn deploy(c: &mut Controller, req: pb::DeployRequest) {
    let start = std::time::Instant::now();
    loop {
        match c.client.deploy(req.clone()).await {
            Ok(_) => return,
            Err(e) if start.elapsed() < BOUND => {
                eprintln!("deploy not taken yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("deploy: {e}"),
        }
    }
}

async fn kept(c: &mut Controller, since_ms: u64, stack: &str) -> Vec<pb::Event> {
    let req = pb::EventsRequest {
        since_ms,
        stack: stack.into(),
        follow: false,
    };
    let mut stream = c.client.events(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(e) = tokio::time::timeout(BOUND, stream.message())
        .await
        .expect("the kept events within the bound")
        .unwrap()
    {
        out.push(e);
    }
    out
}

/// The next event of a followed stream, within the bound.
async fn next(stream: &mut tonic::Streaming<pb::Event>) -> pb::Event {
    tokio::time::timeout(BOUND, stream.message())
        .await
        .expect("an event within the bound")
        .unwrap()
        .expect("the stream is open")
}

fn summary(e: &pb::Event) -> (String, String, String) {
    (e.kind.clone(), e.stack.clone(), e.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_filtered_and_followed_in_log_order() {
    let mut c = controller().await;
    deploy(&mut c, stack("first", 1)).await;

    // Kept: the controller's own leader change, then the deploy, in log order.
    let all = kept(&mut c, 0, "").await;
    assert!(
        all.iter().any(|e| e.kind == "leader.changed"
            && e.index == 0
            && e.message.starts_with("controller 1 (")),
        "{all:#?}"
    );
    let first = all
        .iter()
        .find(|e| e.kind == "rollout.started")
        .expect("the deploy's rollout");
    assert_eq!(
        summary(first),
        (
            "rollout.started".into(),
            "first".into(),
            "web: deploying generation 1 of a new service (1 replicas of busybox)".into()
        )
    );
    let entries: Vec<(u64, u64)> = all
        .iter()
        .filter(|e| e.index > 0)
        .map(|e| (e.index, e.seq))
        .collect();
    assert!(
        entries.windows(2).all(|w| w[0] < w[1]),
        "in (index, seq) order: {entries:?}"
    );

    // Following stack `second` only: the first stack's new events are not sent.
    let req = pb::EventsRequest {
        since_ms: 0,
        stack: "second".into(),
        follow: true,
    };
    let mut followed = c.client.events(req).await.unwrap().into_inner();
    deploy(&mut c, stack("first", 2)).await;
    deploy(&mut c, stack("second", 1)).await;
    let started = next(&mut followed).await;
    assert_eq!(
        summary(&started),
        (
            "rollout.started".into(),
            "second".into(),
            "web: deploying generation 1 of a new service (1 replicas of busybox)".into()
        )
    );
    // No node: its task waits, saying why.
    let pending = next(&mut followed).await;
    assert_eq!(
        (pending.kind.as_str(), pending.stack.as_str()),
        ("task.pending", "second")
    );
    assert!(
        pending.message.starts_with("web slot 1 cannot be placed: "),
        "{}",
        pending.message
    );
    assert!(pending.index > started.index, "after the deploy's entry");

    // Since: only what happened at or after the second stack's deploy.
    let recent = kept(&mut c, started.time_ms, "").await;
    assert!(
        recent.iter().all(|e| e.time_ms >= started.time_ms),
        "{recent:#?}"
    );
    assert!(!recent
        .iter()
        .any(|e| e.index == first.index && e.seq == first.seq));
    assert!(recent
        .iter()
        .any(|e| e.index == started.index && e.seq == started.seq));
    let scale = kept(&mut c, 0, "first").await;
    assert!(
        scale
            .iter()
            .any(|e| e.kind == "scale" && e.message == "web: 1 -> 2 replicas (deploy)"),
        "{scale:#?}"
    );
    assert!(scale.iter().all(|e| e.stack == "first"));

    // A certificate renewed by this controller is its own event (index 0).
    let (_, csr_der) = shoal_tls::csr::new_key_and_csr().unwrap();
    pb::pki_client::PkiClient::new(c.channel.clone())
        .renew(pb::RenewRequest { csr_der })
        .await
        .unwrap();
    let renewed = kept(&mut c, 0, "").await;
    let cert = renewed
        .iter()
        .find(|e| e.kind == "cert.renewed")
        .unwrap_or_else(|| panic!("no cert.renewed in {renewed:#?}"));
    assert_eq!(cert.index, 0);
    assert!(
        cert.message
            .starts_with("renewed the certificate of admin ")
            && cert.message.ends_with(": valid for 90 days"),
        "{}",
        cert.message
    );

    // Shutdown ends the followed stream.
    c.stop.cancel();
    let end = tokio::time::timeout(BOUND, async {
        loop {
            match followed.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await
    .expect("the stream ends when the controller stops");
    let _ = end;
    tokio::time::timeout(BOUND, c.task)
        .await
        .expect("the controller stops")
        .unwrap()
        .unwrap();
}
