//! `shoal image push|ls|rm` against the in-process fake controller (whose store checks
//! every blob's digest) and, for pushes, the real engine of this machine.

use std::sync::Arc;

use shoal_proto::pb::ImageRow;

use crate::args::ImageCommand;
use crate::error::{exit_code, EXIT_FAILED, EXIT_USAGE};
use crate::fake_control::{lock, served, Served};
use crate::images::deploy::LazyEngine;
use crate::images::engine::Engine;
use crate::images::testing::{service, unique, untag, write_files, BASE};

/// A fake leader; with `via_follower`, the client is given a follower pointing at it.
async fn fixture(via_follower: bool) -> Served {
    served(Arc::default(), via_follower).await
}

/// A pushed image reaches the store whole, through a follower's hint; a second push
/// of it sends no blob; an image the engine lacks is an error naming the engine.
#[tokio::test]
async fn push_sends_only_what_the_store_lacks() {
    let engine = Engine::connect_to(crate::images::engine::docker_host())
        .await
        .expect("the test engine");
    let dir = tempfile::tempdir().unwrap();
    let stamp = unique("push");
    write_files(
        dir.path(),
        &[
            ("Dockerfile", &format!("FROM {BASE}\nCOPY stamp /stamp\n")),
            ("stamp", &stamp),
        ],
    );
    let stack = unique("push");
    let built =
        crate::images::build::build(&engine, &stack, &service(dir.path(), ""), &mut Vec::new())
            .await
            .expect("build");
    let base = engine.image(BASE).await.unwrap().expect("the base image");

    let mut f = fixture(true).await;
    let mut lazy = LazyEngine::from_env();
    super::push(
        &mut f.ctx,
        std::slice::from_ref(&built.reference),
        &mut lazy,
    )
    .await
    .expect("push");
    let pushed = lock(&f.fake.pushed).clone();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].reference, built.reference);
    assert_eq!(pushed[0].id, built.id);
    let config = built.id.strip_prefix("sha256:").unwrap().to_string();
    let base_layer = base.layers[0].strip_prefix("sha256:").unwrap().to_string();
    let received = lock(&f.fake.received).clone();
    assert_eq!(received.len(), 3, "two layers and the config: {received:?}");
    assert_eq!(received[0], base_layer, "base first");
    assert_eq!(received[2], config, "the config last");
    assert_eq!(
        lock(&f.fake.calls).clone(),
        vec!["Missing", "Push"],
        "both through the follower's hint to the leader"
    );

    // Again: the store has every blob, only the image chunk is sent.
    lock(&f.fake.received).clear();
    super::push(
        &mut f.ctx,
        std::slice::from_ref(&built.reference),
        &mut lazy,
    )
    .await
    .expect("push again");
    assert!(lock(&f.fake.received).is_empty());
    assert_eq!(lock(&f.fake.pushed).len(), 2);

    let absent = format!("{}:never", unique("absent"));
    let err = super::push(&mut f.ctx, std::slice::from_ref(&absent), &mut lazy)
        .await
        .expect_err("not on the engine");
    assert_eq!(
        err.to_string(),
        format!(
            "this machine's engine ({}) has no image {absent}",
            engine.place()
        )
    );
    assert_eq!(exit_code(&err), EXIT_FAILED);
    untag(&engine, &[built.reference]).await;
}

#[test]
fn the_push_line_names_the_holders() {
    let p = crate::images::push::Pushed {
        reference: "web:shoal-0123".into(),
        id: "sha256:0123".into(),
        layers: 4,
        layers_sent: 1,
        bytes: 2048,
        holders: vec![1, 2],
    };
    assert_eq!(
        p.to_string(),
        "pushed web:shoal-0123: 1 of 4 layers, 2048 bytes sent (held by controllers 1, 2)"
    );
}

fn row(image: &str, services: &[&str]) -> ImageRow {
    ImageRow {
        image: image.into(),
        id: "sha256:0123456789abcdef".into(),
        size_bytes: 1000,
        nodes: vec!["n1".into()],
        services: services.iter().map(|s| s.to_string()).collect(),
        controllers: vec![1],
    }
}

#[tokio::test]
async fn ls_and_rm_ask_the_controllers() {
    let mut f = fixture(false).await;
    *lock(&f.fake.images) = vec![row("web:1", &["shop/web"]), row("old:1", &[])];
    let rows = super::list(&mut f.ctx).await.unwrap();
    assert_eq!(rows, lock(&f.fake.images).clone());

    let err = super::run(
        ImageCommand::Rm {
            image: "web:1".into(),
        },
        &mut f.ctx,
    )
    .await
    .expect_err("in use");
    assert_eq!(
        format!("{err:#}"),
        "remove image web:1: image web:1 is used by shop/web: remove or change those services first"
    );
    assert_eq!(exit_code(&err), EXIT_FAILED);

    super::run(
        ImageCommand::Rm {
            image: "old:1".into(),
        },
        &mut f.ctx,
    )
    .await
    .expect("unused: removed");
    assert_eq!(lock(&f.fake.images).len(), 1);
    let err = super::run(
        ImageCommand::Rm {
            image: "old:1".into(),
        },
        &mut f.ctx,
    )
    .await
    .expect_err("gone");
    assert_eq!(exit_code(&err), EXIT_USAGE);
}
