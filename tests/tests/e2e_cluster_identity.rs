//! Issue 15 on the local engine: a cluster's containers are its own, and a restarted
//! agent restarts none of them.
//!
//! Needs Docker and the test image (scripts/test.sh provides both).

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_tests::*;

const LONG: Duration = Duration::from_secs(120);

/// Container id to its `State.StartedAt`, for the stack's running replicas.
fn started(up: &ShoalUp, stack: &str) -> BTreeMap<String, String> {
    up.ps(stack)
        .iter()
        .filter(|r| r["state"] == "running")
        .filter_map(|r| r["container"].as_str().map(str::to_string))
        .map(|id| {
            let at = docker(&["inspect", "--format", "{{.State.StartedAt}}", &id]);
            (id, at.trim().to_string())
        })
        .collect()
}

#[test]
fn another_clusters_leftovers_are_left_alone_and_an_agent_restart_restarts_nothing() {
    ensure_test_image();
    let mut up = ShoalUp::start("e2e-identity");
    let dir = tempfile::tempdir().unwrap();

    // What an earlier cluster left on this engine: a stopped replica of the same stack,
    // service and slot, with the first task id every cluster used to have.
    let leftover = docker(&[
        "create",
        "--name",
        "ident_web.1.0000000001",
        "--label",
        "io.shoal.task=0000000001",
        "--label",
        "io.shoal.stack=ident",
        "--label",
        "io.shoal.service=web",
        "--label",
        "io.shoal.slot=1",
        "--label",
        "io.shoal.node=e2e-identity",
        "--label",
        "io.shoal.generation=1",
        "--label",
        "io.shoal.cluster=0123456789abcdef",
        TEST_IMAGE,
        "sleep",
        "600",
    ])
    .trim()
    .to_string();
    let cleanup = Leftover(leftover.clone());

    std::fs::write(
        dir.path().join("compose.yaml"),
        format!(
            "name: ident\nservices:\n  web:\n    image: {TEST_IMAGE}\n    command: [\"sleep\", \"3600\"]\n    stop_grace_period: 1s\n    deploy:\n      replicas: 20\n"
        ),
    )
    .unwrap();
    let out = up.shoal_in(dir.path(), &["deploy", "-c", "compose.yaml"]);
    assert!(out.status.success(), "deploy: {}\n{}", text(&out), up.log());
    let before = started(&up, "ident");
    assert_eq!(before.len(), 20, "{before:?}");
    assert!(!before.contains_key(&leftover));
    // Left alone, and said.
    let state = docker(&["inspect", "--format", "{{.State.Status}}", &leftover]);
    assert_eq!(state.trim(), "created");
    assert!(
        up.log().contains("containers of another shoal cluster"),
        "{}",
        up.log()
    );
    // This cluster's containers carry its id.
    let first = before.keys().next().unwrap();
    let label = docker(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"io.shoal.cluster\"}}",
        first,
    ]);
    assert_eq!(label.trim().len(), 16, "{label}");
    assert_ne!(label.trim(), "0123456789abcdef");

    // Restarting shoal (controller and agent, as an upgrade would) restarts no container.
    up.restart();
    let after = eventually(
        LONG,
        "every replica running again after the restart",
        || {
            let now = started(&up, "ident");
            (now.len() == 20).then_some(now)
        },
    );
    assert_eq!(
        after, before,
        "the same containers, started at the same times"
    );
    drop(cleanup);
}

/// Removes the leftover container when the test ends, also when it fails.
struct Leftover(String);

impl Drop for Leftover {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

#[test]
fn the_address_pool_given_at_init_is_used_for_every_network() {
    ensure_test_image();
    let up = ShoalUp::start_with("e2e-pool", &["--pool", "10.240.0.0/16"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        format!(
            "name: pooled\nservices:\n  web:\n    image: {TEST_IMAGE}\n    command: [\"sleep\", \"3600\"]\n    stop_grace_period: 1s\n    networks: [default, back]\nnetworks:\n  back: {{}}\n"
        ),
    )
    .unwrap();
    let out = up.shoal_in(dir.path(), &["deploy", "-c", "compose.yaml"]);
    assert!(out.status.success(), "deploy: {}\n{}", text(&out), up.log());
    for network in ["shoal-pooled", "shoal-pooled.back"] {
        let subnet = docker(&[
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
            network,
        ]);
        assert!(
            subnet.trim().starts_with("10.240.") && subnet.trim().ends_with("/24"),
            "{network}: {subnet}"
        );
    }
    let rm = up.shoal(&["rm", "pooled"]);
    assert!(rm.status.success(), "{}", text(&rm));
}
