//! Issue 15 on three test hosts: a cluster backup taken while a deploy runs, every
//! controller's data dir deleted, the cluster restored from the backup (agents
//! reconnect, containers keep their ids and start times, stacks, secrets and tokens as
//! they were), then two of three controllers lost for good and `--force-new-cluster` on
//! the third (refused while a quorum answers), deploys again, two fresh controllers join.
//!
//! One set of hosts for every step, in sequence.
//! Needs root, iproute2, iptables, nsenter, dockerd and the test image (scripts/test.sh).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::hosts::Hosts;
use shoal_tests::*;

const WAIT: Duration = Duration::from_secs(60);
const PASSPHRASE: &str = "a long enough passphrase";

fn stack_file(dir: &Path, stack: &str, services: &[(&str, u32)]) -> String {
    let mut yaml = format!("name: {stack}\nservices:\n");
    for (name, replicas) in services {
        yaml += &format!(
            "  {name}:\n    image: {TEST_IMAGE}\n    command: [\"sleep\", \"3600\"]\n    stop_grace_period: 1s\n    deploy: {{replicas: {replicas}}}\n"
        );
    }
    let file = dir.join(format!("{stack}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    file.display().to_string()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every running task of `stack` (`shoal ps`), once there are `n`.
fn all_running(hosts: &Hosts, stack: &str, n: usize) -> Vec<Value> {
    eventually(WAIT, &format!("{n} replicas of {stack} running"), || {
        let tasks = hosts.json(&["ps", stack])?.as_array()?.clone();
        let running: Vec<Value> = tasks
            .into_iter()
            .filter(|t| t["state"] == "running")
            .collect();
        (running.len() == n).then_some(running)
    })
}

/// `shoal ARGS`, killed after `bound` if it has not exited (a command expected to
/// refuse must not hang the test when it does not).
fn run_bounded(args: &[&str], bound: Duration) -> Output {
    let mut child = Command::new(shoal_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal");
    let start = Instant::now();
    while child.try_wait().expect("wait for shoal").is_none() {
        if start.elapsed() > bound {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("shoal output")
}

fn tokens(hosts: &Hosts) -> (String, String) {
    let show = |role: &str| ok(&hosts.shoal(&["token", "show", role]), "token show");
    (show("agent"), show("controller"))
}

#[test]
fn backup_restore_and_force_new_cluster_on_three_hosts() {
    ensure_test_image();
    let mut hosts = Hosts::up(3);
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let pass = pass.display().to_string();

    // A running stack and a cluster secret.
    let keep = stack_file(dir.path(), "keep", &[("web", 3), ("db", 1)]);
    ok(
        &hosts.shoal(&["deploy", "-c", &keep, "--detach"]),
        "deploy keep",
    );
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let secret = secret.display().to_string();
    ok(
        &hosts.shoal(&["secret", "create", "db_password", &secret]),
        "secret create",
    );
    all_running(&hosts, "keep", 4);
    let before = hosts.started("keep");
    assert_eq!(before.len(), 4, "{before:?}");
    let tokens_before = tokens(&hosts);
    let secrets_before = hosts.json(&["secret", "ls"]).expect("secret ls");

    // The backup, taken while another deploy rolls out.
    let busy = stack_file(dir.path(), "busy", &[("worker", 6)]);
    ok(
        &hosts.shoal(&["deploy", "-c", &busy, "--detach"]),
        "deploy busy",
    );
    let file = dir.path().join("cluster.backup");
    let file_s = file.display().to_string();
    let out = hosts.shoal(&["cluster", "backup", &file_s, "--passphrase-file", &pass]);
    let said = ok(&out, "cluster backup");
    assert!(said.contains("2 stacks"), "{said}");

    refusals(&file, dir.path(), &pass);
    eprintln!("backup taken and refusals checked; restoring");

    // Every controller lost with its data dir; the cluster restored from the backup.
    for k in 1..=3 {
        hosts.wipe_controller(k);
    }
    hosts.start_controller(1, &["--restore", &file_s, "--passphrase-file", &pass]);
    let restored = hosts.members(1);
    assert!(
        restored.iter().all(|(id, _)| *id > 3),
        "the restored controller takes an id no old member had: {restored:?}"
    );
    // The old controller token (saved by hosts.sh at the start) still joins.
    hosts.start_controller(2, &[]);
    hosts.start_controller(3, &[]);
    hosts.members(3);
    hosts.all_ready();
    all_running(&hosts, "keep", 4);
    all_running(&hosts, "busy", 6);
    assert_eq!(
        hosts.started("keep"),
        before,
        "every container keeps its id and start time"
    );
    assert_eq!(
        tokens(&hosts),
        tokens_before,
        "the join tokens are the backup's"
    );
    assert_eq!(hosts.json(&["secret", "ls"]), Some(secrets_before));

    eprintln!("restored: 3 controllers, every node ready, containers kept");
    force_new_cluster(&mut hosts, dir.path(), &before);
    eprintln!("forced a new cluster; two controllers joined it");
    hosts.down();
}

/// A wrong passphrase and a truncated file, restored on a scratch data dir.
fn refusals(file: &Path, dir: &Path, pass: &str) {
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let restore = |from: &Path, pass: &str| -> String {
        let data = tempfile::tempdir().unwrap();
        let out = run_bounded(
            &[
                "controller",
                "--data-dir",
                &data.path().display().to_string(),
                "--listen",
                &listen,
                "--restore",
                &from.display().to_string(),
                "--passphrase-file",
                pass,
            ],
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            !data.path().join("node-id").exists(),
            "a refused restore leaves nothing"
        );
        text(&out)
    };
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "not the passphrase").unwrap();
    let said = restore(file, &wrong.display().to_string());
    assert!(
        said.contains("passphrase is wrong") && said.contains(&file.display().to_string()),
        "{said}"
    );
    let bytes = std::fs::read(file).unwrap();
    let cut = dir.join("truncated.backup");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let said = restore(&cut, pass);
    assert!(said.contains("truncated"), "{said}");
}

/// Two of three controllers lost for good; the third forced into a new cluster.
fn force_new_cluster(hosts: &mut Hosts, dir: &Path, before: &BTreeMap<String, String>) {
    // Refused while the other two answer.
    hosts.kill_controller(3);
    let c3 = hosts.controller_dir(3).display().to_string();
    let addr3 = hosts.controller_addr(3);
    let out = run_bounded(
        &[
            "controller",
            "--data-dir",
            &c3,
            "--listen",
            &addr3,
            "--advertise",
            &addr3,
            "--force-new-cluster",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("quorum"), "{}", text(&out));
    hosts.start_controller(3, &[]);
    hosts.members(3);

    // The admin credentials live with the user, not in a controller's data dir.
    let admin: PathBuf = dir.join("admin");
    copy_dir(&hosts.controller_dir(1).join("admin"), &admin);
    hosts.use_credentials(&admin);
    let token = tokens(hosts).1;
    hosts.wipe_controller(1);
    hosts.wipe_controller(2);
    hosts.kill_controller(3);
    hosts.start_controller(3, &["--force-new-cluster"]);
    let alone = hosts.members(1);
    assert_eq!(alone.len(), 1, "{alone:?}");
    assert!(
        std::fs::read_dir(hosts.controller_dir(3))
            .unwrap()
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with("raft.before-force-new-cluster")),
        "the old Raft store is kept aside"
    );
    hosts.all_ready();
    let after = stack_file(dir, "after", &[("app", 2)]);
    ok(
        &hosts.shoal(&["deploy", "-c", &after, "--detach"]),
        "deploy after",
    );
    all_running(hosts, "after", 2);

    // Two fresh controllers join the survivor.
    let addr = hosts.controller_addr(3);
    for k in [1, 2] {
        hosts.start_controller(k, &["--join", &addr, "--token", token.trim()]);
    }
    hosts.members(3);
    all_running(hosts, "keep", 4);
    assert_eq!(&hosts.started("keep"), before, "no container restarted");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
