//! `shoal deploy`'s image steps end to end against the in-process fake controller
//! (which records every call): refusals before any call, builds and pushes before the
//! stack is sent, and no engine at all when the cluster has every image.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_proto::pb::ImageWhere;
use shoal_proto::spec::StackSpec;

use super::run_with;
use crate::args::{ComposeArgs, DeployArgs};
use crate::error::{exit_code, EXIT_FAILED, EXIT_USAGE};
use crate::fake_control::{lock, served, FakeVolumes, Served};
use crate::images::deploy::LazyEngine;
use crate::images::engine::Engine;
use crate::images::testing::{unique, untag};

/// An engine address nothing listens on: a deploy that touches it fails.
const NO_ENGINE: &str = "unix:///nonexistent/shoal-no-engine.sock";

async fn fixture() -> Served {
    served(Arc::default(), false).await
}

fn args(file: &Path, stack: &str) -> DeployArgs {
    DeployArgs {
        compose: ComposeArgs {
            files: vec![file.to_path_buf()],
            profiles: Vec::new(),
            stack: Some(stack.to_string()),
        },
        detach: true,
        timeout: 5,
    }
}

fn compose(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("compose.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

fn deployed_stack(fake: &FakeVolumes) -> StackSpec {
    let deployed = lock(&fake.deployed);
    assert_eq!(deployed.len(), 1, "one Deploy");
    serde_json::from_slice(&deployed[0].stack_json).unwrap()
}

/// A missing build context is refused with its file and line, exit 2, before any call
/// to the cluster and without touching an engine.
#[tokio::test]
async fn a_missing_context_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let file = compose(
        dir.path(),
        "services:\n  web:\n    build: ./nope\n  cache:\n    image: redis:7\n",
    );
    let mut f = fixture().await;
    let mut engine = LazyEngine::at(Some(NO_ENGINE.into()));
    let err = run_with(args(&file, "shop"), &mut f.ctx, &mut engine)
        .await
        .expect_err("refused");
    assert_eq!(exit_code(&err), EXIT_USAGE);
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3: service web: build context {} is not there",
            file.display(),
            dir.path().join("nope").display()
        )
    );
    assert!(lock(&f.fake.calls).is_empty(), "no RPC was made");
    assert!(!engine.was_used());
}

/// Every image in the cluster (store or nodes): the deploy needs no engine here.
#[tokio::test]
async fn images_the_cluster_has_need_no_local_engine() {
    let dir = tempfile::tempdir().unwrap();
    let file = compose(
        dir.path(),
        "services:\n  web:\n    image: web:1\n  cache:\n    image: redis:7\n",
    );
    let mut f = fixture().await;
    *lock(&f.fake.places) = vec![
        ImageWhere {
            image: "web:1".into(),
            in_cluster: true,
            id: "sha256:ab".into(),
            nodes: Vec::new(),
            every_node: false,
        },
        ImageWhere {
            image: "redis:7".into(),
            in_cluster: false,
            id: String::new(),
            nodes: vec!["n2".into()],
            every_node: true,
        },
    ];
    let mut engine = LazyEngine::at(Some(NO_ENGINE.into()));
    run_with(args(&file, "shop"), &mut f.ctx, &mut engine)
        .await
        .expect("deployed");
    assert!(!engine.was_used());
    assert_eq!(
        lock(&f.fake.calls).clone(),
        vec!["ImagesAvailable", "Deploy"]
    );

    // On some nodes only: this machine would push it if it had it; without an engine
    // the deploy goes on (the other nodes pull it from its registry).
    lock(&f.fake.places)[1].every_node = false;
    lock(&f.fake.calls).clear();
    run_with(args(&file, "shop"), &mut f.ctx, &mut engine)
        .await
        .expect("deployed with an image on some nodes");
    assert!(engine.was_used(), "this machine's engine was asked for it");
    assert_eq!(
        lock(&f.fake.calls).clone(),
        vec!["ImagesAvailable", "Deploy"]
    );
}

/// An image that is nowhere (not here, not in the cluster, not pullable): exit 1, the
/// message says where it was looked for, nothing deployed.
#[tokio::test]
async fn an_image_found_nowhere_fails_the_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let image = format!("{}:never", unique("nowhere"));
    let file = compose(
        dir.path(),
        &format!("services:\n  web:\n    image: {image}\n"),
    );
    let mut f = fixture().await;
    let mut engine = LazyEngine::from_env();
    let err = run_with(args(&file, "shop"), &mut f.ctx, &mut engine)
        .await
        .expect_err("nowhere");
    assert_eq!(exit_code(&err), EXIT_FAILED);
    let place = Engine::connect_to(crate::images::engine::docker_host())
        .await
        .unwrap()
        .place()
        .to_string();
    let msg = err.to_string();
    let expected = format!(
        "image {image} is not on this machine's engine ({place}), not in the cluster's store, not on any node, and pulling it failed: "
    );
    assert!(msg.starts_with(&expected), "{msg}");
    assert!(msg.ends_with("\nnothing was deployed"), "{msg}");
    assert_eq!(lock(&f.fake.calls).clone(), vec!["ImagesAvailable"]);
}

/// `pull_policy: never`: an image nowhere is not pulled here either.
#[tokio::test]
async fn never_pull_images_are_not_pulled_here() {
    let dir = tempfile::tempdir().unwrap();
    let image = format!("{}:never", unique("nopull"));
    let file = compose(
        dir.path(),
        &format!("services:\n  web:\n    image: {image}\n    pull_policy: never\n"),
    );
    let mut f = fixture().await;
    let err = run_with(args(&file, "shop"), &mut f.ctx, &mut LazyEngine::from_env())
        .await
        .expect_err("nowhere");
    let msg = err.to_string();
    assert!(
        msg.ends_with(", not in the cluster's store, not on any node, and pull_policy: never forbids pulling it\nnothing was deployed"),
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!("image {image} is not on this machine's engine (")),
        "{msg}"
    );
    assert_eq!(lock(&f.fake.calls).clone(), vec!["ImagesAvailable"]);
}

/// The fixture stack of tests/fixtures/images: both services are built here, pushed
/// (the shared base layer once), and the stack sent runs the built references with no
/// `build:` left in it. A second deploy finds them in the store and pushes nothing.
#[tokio::test]
async fn build_services_are_built_pushed_then_deployed() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images");
    let file = fixtures.join("compose.yaml");
    let stack = unique("deploy");
    let mut f = fixture().await;
    let mut engine = LazyEngine::from_env();
    run_with(args(&file, &stack), &mut f.ctx, &mut engine)
        .await
        .expect("deployed");
    let sent = deployed_stack(&f.fake);
    let mut references = Vec::new();
    for name in ["web", "worker"] {
        let svc = &sent.services[name];
        assert!(svc.build.is_none(), "{name}: build cleared");
        assert!(
            svc.image.starts_with(&format!("{stack}-{name}:shoal-")),
            "{name}: {}",
            svc.image
        );
        references.push(svc.image.clone());
    }
    let pushed: Vec<String> = lock(&f.fake.pushed)
        .iter()
        .map(|m| m.reference.clone())
        .collect();
    assert_eq!(pushed.len(), 2);
    for r in &references {
        assert!(pushed.contains(r), "{r} pushed: {pushed:?}");
    }
    let received = lock(&f.fake.received).clone();
    let mut unique_received = received.clone();
    unique_received.sort();
    unique_received.dedup();
    assert_eq!(received.len(), unique_received.len(), "no blob sent twice");
    assert_eq!(
        lock(&f.fake.calls).clone(),
        vec![
            "ImagesAvailable",
            "Missing",
            "Push",
            "Missing",
            "Push",
            "Deploy"
        ]
    );

    // Unchanged: the same references, already in the store: nothing is pushed.
    lock(&f.fake.calls).clear();
    lock(&f.fake.deployed).clear();
    run_with(args(&file, &stack), &mut f.ctx, &mut engine)
        .await
        .expect("deployed again");
    let again = deployed_stack(&f.fake);
    assert_eq!(again.services["web"].image, references[0]);
    assert_eq!(
        lock(&f.fake.calls).clone(),
        vec!["ImagesAvailable", "Deploy"]
    );
    if let Ok(e) = engine.get().await {
        untag(e, &references).await;
    }
}
