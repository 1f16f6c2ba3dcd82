//! The image store's records in the state: pushes, copies by other controllers, removal
//! refused while a service runs the image, the leader's sweep of unused images after the
//! retention, nodes' reports, and the scheduler's preference for nodes holding an image
//! (never before spread).

mod common;
use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use shoal_controller::images::gc::sweep;
use shoal_controller::state::images::{normalize_reference, BlobRef, NodeImage, StoredImage};
use shoal_controller::state::*;

fn image(reference: &str, id: &str, holder: u64) -> StoredImage {
    StoredImage {
        reference: reference.into(),
        id: format!("sha256:{}", id.repeat(64)),
        layers: vec![
            BlobRef {
                digest: "a".repeat(64),
                size: 1000,
            },
            BlobRef {
                digest: "b".repeat(64),
                size: 200,
            },
        ],
        config_size: 30,
        pushed_ms: 0,
        holders: BTreeSet::from([holder]),
        unused_since_ms: None,
    }
}

fn with_service_running(reference: &str) -> ClusterState {
    let mut s = svc("web", 2);
    s.image = reference.into();
    deployed(vec![node("a", 4.0, 4096), node("b", 4.0, 4096)], vec![s])
}

#[test]
fn a_push_records_the_image_and_copies_add_holders() {
    let mut s = ClusterState::default();
    let img = image("app-web:shoal-1", "1", 1);
    let r = s.apply(&Command::ImagePushed {
        image: img.clone(),
        now_ms: 5,
    });
    assert_eq!(r.error, None);
    let stored = &s.images["app-web:shoal-1"];
    assert_eq!(stored.pushed_ms, 5);
    assert_eq!(stored.size(), 1230);
    let blobs: Vec<&str> = stored.blobs().map(|(d, _)| d).collect();
    assert_eq!(blobs, vec!["1".repeat(64), "a".repeat(64), "b".repeat(64)]);

    s.apply(&Command::ImageHeld {
        reference: img.reference.clone(),
        id: img.id.clone(),
        controller: 2,
    });
    assert_eq!(s.images["app-web:shoal-1"].holders, BTreeSet::from([1, 2]));
    // A copy of an image the reference no longer names is refused.
    let r = s.apply(&Command::ImageHeld {
        reference: img.reference.clone(),
        id: "sha256:other".into(),
        controller: 3,
    });
    assert!(r
        .error
        .unwrap()
        .contains("no image app-web:shoal-1 with id sha256:other"));

    // Pushing the same image again keeps the copies; a moved tag replaces the record.
    s.apply(&Command::ImagePushed {
        image: image("app-web:shoal-1", "1", 3),
        now_ms: 6,
    });
    assert_eq!(
        s.images["app-web:shoal-1"].holders,
        BTreeSet::from([1, 2, 3])
    );
    s.apply(&Command::ImagePushed {
        image: image("app-web:shoal-1", "2", 1),
        now_ms: 7,
    });
    assert_eq!(s.images["app-web:shoal-1"].holders, BTreeSet::from([1]));
    assert!(s.images["app-web:shoal-1"].id.ends_with(&"2".repeat(64)));
}

#[test]
fn an_image_a_service_runs_cannot_be_removed() {
    let mut s = with_service_running("app-web:shoal-1");
    s.apply(&Command::ImagePushed {
        image: image("app-web:shoal-1", "1", 1),
        now_ms: 0,
    });
    let r = s.apply(&Command::RemoveImage {
        reference: "app-web:shoal-1".into(),
    });
    assert_eq!(
        r.error.as_deref(),
        Some("image app-web:shoal-1 is used by app/web: remove those services or deploy them with another image first")
    );
    let r = s.apply(&Command::RemoveImage {
        reference: "nothing:1".into(),
    });
    assert!(r.error.unwrap().contains("has no image nothing:1"));

    s.apply(&Command::RemoveStack {
        stack: "app".into(),
        volumes: false,
    });
    report(
        &mut s,
        "web",
        shoal_proto::task::TaskState::Shutdown,
        None,
        10,
    );
    settle(&mut s, 10);
    assert!(
        s.services.is_empty(),
        "the stack is gone once its tasks are"
    );
    assert!(s.image_users("app-web:shoal-1").is_empty());
    let r = s.apply(&Command::RemoveImage {
        reference: "app-web:shoal-1".into(),
    });
    assert_eq!(r.error, None);
    assert!(s.images.is_empty());
}

#[test]
fn the_sweep_forgets_an_image_only_after_the_retention_and_a_used_one_never() {
    let retention = Duration::from_secs(60);
    let mut s = with_service_running("app-web:shoal-1");
    s.apply(&Command::ImagePushed {
        image: image("app-web:shoal-1", "1", 1),
        now_ms: 0,
    });
    s.apply(&Command::ImagePushed {
        image: image("old:1", "2", 1),
        now_ms: 0,
    });
    // In use: nothing to say. Unused: marked now.
    let d = sweep(&s, 1_000, retention);
    assert_eq!(d.unused, vec![("old:1".to_string(), Some(1_000))]);
    assert!(d.forget.is_empty());
    s.apply(&Command::SweepImages { sweep: d });
    assert!(
        sweep(&s, 30_000, retention).is_empty(),
        "nothing is due before the retention"
    );
    let d = sweep(&s, 61_000, retention);
    assert_eq!(d.forget, vec!["old:1".to_string()]);
    let r = s.apply(&Command::SweepImages { sweep: d });
    assert_eq!(r.count, 1);
    assert!(!s.images.contains_key("old:1"));
    assert!(s.images.contains_key("app-web:shoal-1"));
    assert!(sweep(&s, 1_000_000, retention).is_empty());
}

#[test]
fn a_sweep_decided_before_a_deploy_does_not_forget_what_the_deploy_runs() {
    let mut s = ClusterState::default();
    s.nodes.insert("a".into(), node("a", 4.0, 4096));
    s.apply(&Command::ImagePushed {
        image: image("app-web:shoal-1", "1", 1),
        now_ms: 0,
    });
    s.apply(&Command::SweepImages {
        sweep: sweep(&s, 0, Duration::ZERO),
    });
    let stale = sweep(&s, 10, Duration::ZERO);
    assert_eq!(stale.forget, vec!["app-web:shoal-1".to_string()]);
    // A deploy that runs it commits in between.
    let mut web = svc("web", 1);
    web.image = "app-web:shoal-1".into();
    s.apply(&Command::DeployStack {
        spec: shoal_proto::spec::StackSpec {
            name: "app".into(),
            services: [("web".to_string(), web)].into(),
            ..Default::default()
        },
        now_ms: 5,
        secrets: Default::default(),
    });
    s.apply(&Command::SweepImages { sweep: stale });
    assert!(s.images.contains_key("app-web:shoal-1"));
    // And the next sweep clears its mark.
    let d = sweep(&s, 20, Duration::ZERO);
    assert_eq!(d.unused, vec![("app-web:shoal-1".to_string(), None)]);
}

#[test]
fn nodes_reports_say_where_images_are_and_unchanged_ones_are_not_written() {
    let mut s = ClusterState::default();
    let seen = vec![
        NodeImage {
            id: "sha256:2".into(),
            tags: vec!["shoal-test/busybox:latest".into()],
            size: 10,
        },
        NodeImage {
            id: "sha256:1".into(),
            tags: vec!["docker.io/library/nginx:1".into()],
            size: 20,
        },
    ];
    assert!(s.node_images_change("a", &seen));
    s.apply(&Command::NodeImages {
        node: "a".into(),
        images: seen.clone(),
    });
    let mut reordered = seen.clone();
    reordered.reverse();
    assert!(
        !s.node_images_change("a", &reordered),
        "order does not matter"
    );
    assert_eq!(
        s.nodes_holding("shoal-test/busybox", None),
        vec!["a".to_string()]
    );
    assert_eq!(s.nodes_holding("nginx:1", None), vec!["a".to_string()]);
    assert_eq!(s.nodes_holding("sha256:1", None), vec!["a".to_string()]);
    assert!(s.nodes_holding("nginx:2", None).is_empty());
    assert_eq!(
        s.nodes_holding("anything", Some("sha256:2")),
        vec!["a".to_string()]
    );

    s.nodes.insert("a".into(), node("a", 1.0, 100));
    s.apply(&Command::RemoveNode { node: "a".into() });
    assert!(
        s.nodes_holding("nginx:1", None).is_empty(),
        "a removed node holds nothing"
    );
}

#[test]
fn references_compare_as_engines_compare_them() {
    assert_eq!(normalize_reference("busybox"), "busybox:latest");
    assert_eq!(
        normalize_reference("docker.io/library/busybox:1"),
        "busybox:1"
    );
    assert_eq!(
        normalize_reference("localhost:5000/x"),
        "localhost:5000/x:latest"
    );
    assert_eq!(normalize_reference("x@sha256:ab"), "x@sha256:ab");
}

#[test]
fn placement_prefers_nodes_holding_the_image_but_never_before_spread() {
    let mut web = svc("web", 1);
    web.image = "app-web:shoal-1".into();
    let nodes = vec![
        node("a", 4.0, 4096),
        node("b", 4.0, 4096),
        node("c", 4.0, 4096),
    ];
    let mut s = ClusterState::default();
    for n in nodes {
        s.nodes.insert(n.id.clone(), n);
    }
    s.apply(&Command::NodeImages {
        node: "c".into(),
        images: vec![NodeImage {
            id: "sha256:1".into(),
            tags: vec!["app-web:shoal-1".into()],
            size: 1,
        }],
    });
    let stack = |replicas: u64| {
        let mut w = web.clone();
        w.replicas = replicas;
        shoal_proto::spec::StackSpec {
            name: "app".into(),
            services: [("web".to_string(), w)].into(),
            ..Default::default()
        }
    };
    let mut one = s.clone();
    one.apply(&Command::DeployStack {
        spec: stack(1),
        now_ms: 0,
        secrets: Default::default(),
    });
    settle(&mut one, 0);
    let placed: Vec<String> = live(&one, "web")
        .iter()
        .filter_map(|t| t.node.clone())
        .collect();
    assert_eq!(
        placed,
        vec!["c".to_string()],
        "the node holding the image wins the tie"
    );

    // Three replicas on three nodes: spread first, one on each, image or not.
    let mut three = s.clone();
    three.apply(&Command::DeployStack {
        spec: stack(3),
        now_ms: 0,
        secrets: Default::default(),
    });
    settle(&mut three, 0);
    let mut placed: Vec<String> = live(&three, "web")
        .iter()
        .filter_map(|t| t.node.clone())
        .collect();
    placed.sort();
    assert_eq!(placed, vec!["a", "b", "c"]);
}
