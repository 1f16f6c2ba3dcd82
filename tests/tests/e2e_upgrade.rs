//! A rolling upgrade on three test hosts (issue 15): a cluster runs the previous
//! release (`scripts/old-shoal.sh` builds it from this clone's history); its
//! controllers are upgraded to this build one at a time, then its agents. After every
//! step the cluster takes a deploy and runs it, and no container of the first stack is
//! ever restarted (same ids and start times at the end).
//!
//! Needs root, iproute2, iptables, nsenter, dockerd, the test image, and a clone that
//! holds the previous release's commit (scripts/test.sh builds it first).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shoal_tests::hosts::Hosts;
use shoal_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// The previous release's binary: `SHOAL_OLD_BIN`, else built by the script.
fn old_shoal() -> PathBuf {
    if let Ok(bin) = std::env::var("SHOAL_OLD_BIN") {
        return PathBuf::from(bin);
    }
    let out = Command::new("bash")
        .arg(workspace().join("scripts/old-shoal.sh"))
        .output()
        .expect("run scripts/old-shoal.sh");
    assert!(
        out.status.success(),
        "scripts/old-shoal.sh failed: {}",
        text(&out)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn deploy(hosts: &Hosts, dir: &Path, stack: &str, replicas: u32) {
    let yaml = format!(
        "name: {stack}\nservices:\n  app:\n    image: {TEST_IMAGE}\n    command: [\"sleep\", \"3600\"]\n    stop_grace_period: 1s\n    deploy: {{replicas: {replicas}}}\n"
    );
    let file = dir.join(format!("{stack}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let out = hosts.shoal(&["deploy", "-c", &file.display().to_string(), "--detach"]);
    assert!(out.status.success(), "deploy {stack}: {}", text(&out));
    eventually(WAIT, &format!("{stack}: {replicas} running"), || {
        let tasks = hosts.json(&["ps", stack])?;
        let running = tasks
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "running")
            .count();
        (running == replicas as usize).then_some(())
    });
}

/// The version a running process of `bin` reports.
fn version_of(bin: &Path) -> String {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .expect("version");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn controllers_then_agents_upgrade_one_at_a_time_without_restarting_a_container() {
    ensure_test_image();
    let old = old_shoal();
    let new = shoal_bin();
    assert!(!version_of(&old).is_empty(), "{} runs", old.display());
    let mut hosts = Hosts::up_with_bin(3, &old);
    let dir = tempfile::tempdir().unwrap();
    deploy(&hosts, dir.path(), "keep", 3);
    let before = hosts.started("keep");
    assert_eq!(before.len(), 3, "{before:?}");

    hosts.set_bin(&new);
    for k in 1..=3 {
        hosts.kill_controller(k);
        hosts.start_controller(k, &[]);
        hosts.members(3);
        // A mixed cluster takes writes and schedules them.
        deploy(&hosts, dir.path(), &format!("after-c{k}"), 1);
        eprintln!("controller {k} upgraded");
    }
    for node in hosts.names() {
        hosts.stop_agent(&node);
        hosts.start_agent(&node);
        hosts.all_ready();
        eprintln!("agent {node} upgraded");
    }
    deploy(&hosts, dir.path(), "after-agents", 3);
    assert_eq!(
        hosts.started("keep"),
        before,
        "no container restarted during the upgrade"
    );
    hosts.down();
}
