//! The node's images on the session: reported at once, then only when they change.

use std::sync::Arc;

use shoal_agent::images::report::{run_reporter, REPORT_INTERVAL};
use shoal_agent::runtime::fake::FakeRuntime;
use shoal_agent::runtime::ImageInfo;
use shoal_proto::pb;
use shoal_proto::pb::agent_message::Msg;
use tokio::sync::{mpsc, Notify};

fn img(id: &str, tag: &str) -> ImageInfo {
    ImageInfo {
        id: format!("sha256:{id}"),
        tags: vec![tag.to_string()],
        layers: vec!["sha256:l1".into()],
        size: 42,
    }
}

fn report(msg: pb::AgentMessage) -> Vec<pb::NodeImage> {
    match msg.msg {
        Some(Msg::Images(r)) => r.images,
        other => panic!("not an image report: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn images_are_reported_at_once_then_on_changes_only() {
    let fake = FakeRuntime::new();
    fake.insert_image(img("a", "web:1"));
    let (tx, mut rx) = mpsc::channel(8);
    let wake = Arc::new(Notify::new());
    let reporter = tokio::spawn(run_reporter(Arc::new(fake.clone()), tx, wake.clone()));

    let first = report(rx.recv().await.unwrap());
    assert_eq!(
        first,
        vec![pb::NodeImage {
            id: "sha256:a".into(),
            tags: vec!["web:1".into()],
            size_bytes: 42
        }]
    );
    // Nothing changed over two intervals: nothing sent.
    tokio::time::sleep(REPORT_INTERVAL * 2 + REPORT_INTERVAL / 2).await;
    assert!(rx.try_recv().is_err());

    // A new image shows in the next look (a load wakes the reporter at once).
    fake.insert_image(img("b", "api:1"));
    wake.notify_one();
    let second = report(rx.recv().await.unwrap());
    let ids: Vec<&str> = second.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, vec!["sha256:a", "sha256:b"]);
    reporter.abort();
}

#[tokio::test]
async fn a_new_session_gets_the_images_after_its_hello() {
    use crate::common::{serve, Leader};
    use shoal_agent::AgentConfig;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    let leader = Leader::default();
    let stop = CancellationToken::new();
    let addr = serve(leader.clone(), stop.clone()).await;
    let fake = FakeRuntime::new();
    fake.insert_image(img("c", "db:1"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = AgentConfig {
        controllers: vec![addr],
        name: "node-a".into(),
        data_dir: dir.path().join("agent"),
        heartbeat_interval: Duration::from_millis(50),
        plaintext: true,
        ..AgentConfig::default()
    };
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(shoal_agent::run_with_runtime(
        cfg,
        Arc::new(fake.clone()),
        shutdown.clone(),
    ));
    let mut found = None;
    for _ in 0..200 {
        found = leader.got.lock().unwrap().iter().find_map(|m| match m {
            Msg::Images(r) => Some(r.clone()),
            _ => None,
        });
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let found = found.expect("an image report on the session");
    assert_eq!(found.images.len(), 1);
    assert_eq!(found.images[0].tags, vec!["db:1".to_string()]);
    assert!(matches!(
        leader.got.lock().unwrap().first(),
        Some(Msg::Hello(_))
    ));
    shutdown.cancel();
    agent.await.unwrap().unwrap();
    stop.cancel();
}
