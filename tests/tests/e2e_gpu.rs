//! End to end on the local Docker engine with `shoal up --gpu-inventory FILE`: a task
//! asking one GPU is assigned a UUID from the file, its container carries the Docker
//! device request and `NVIDIA_VISIBLE_DEVICES`, and, as this engine has no NVIDIA
//! runtime, the task fails with the engine's own words instead of anything hanging.
//!
//! Needs Docker and the test image (scripts/test.sh provides both).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shoal_tests::*;

const STACK: &str = "gpu-e2e";

fn inventory(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("gpus.json");
    std::fs::write(
        &file,
        r#"[{"uuid":"GPU-e2e-0000","index":0,"model":"NVIDIA H100 80GB HBM3","memory_bytes":85899345920},
            {"uuid":"GPU-e2e-0001","index":1,"model":"NVIDIA H100 80GB HBM3","memory_bytes":85899345920}]"#,
    )
    .unwrap();
    file
}

fn compose(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("compose.yaml");
    std::fs::write(
        &file,
        format!(
            r#"name: {STACK}
services:
  train:
    image: {TEST_IMAGE}
    command: ["sleep", "300"]
    stop_grace_period: 1s
    deploy:
      restart_policy:
        condition: none
      resources:
        reservations:
          devices:
            - capabilities: [gpu]
              count: 1
    x-shoal-gpu:
      model: "H100*"
"#
        ),
    )
    .unwrap();
    file
}

#[test]
fn a_one_gpu_task_gets_a_uuid_from_the_inventory_and_fails_with_docker_s_reason() {
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let gpus = inventory(dir.path());
    let node = format!("gpu-e2e-{}", std::process::id());
    let up = ShoalUp::start_with(&node, &["--gpu-inventory", gpus.to_str().unwrap()]);

    // The node lists the inventory's GPUs, none assigned yet.
    let out = up.shoal(&["nodes", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let nodes: Value = serde_json::from_slice(&out.stdout).unwrap();
    let me = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node.as_str())
        .expect("our node is listed")
        .clone();
    assert_eq!(
        me["gpus"],
        json!([
            {"uuid": "GPU-e2e-0000", "index": 0, "model": "NVIDIA H100 80GB HBM3",
             "memory_bytes": 85899345920u64, "assigned_to": ""},
            {"uuid": "GPU-e2e-0001", "index": 1, "model": "NVIDIA H100 80GB HBM3",
             "memory_bytes": 85899345920u64, "assigned_to": ""}
        ])
    );

    // The deploy ends (non-zero) with the engine's reason; it does not hang.
    let file = compose(dir.path());
    let start = Instant::now();
    let out = up.shoal(&["deploy", "-c", file.to_str().unwrap(), "--timeout", "90"]);
    assert!(!out.status.success(), "deploy should fail: {}", text(&out));
    assert!(
        start.elapsed() < Duration::from_secs(85),
        "deploy ran into its timeout"
    );
    let said = text(&out);
    assert!(
        said.contains("could not select device driver"),
        "deploy does not say why: {said}"
    );

    // ps: the task holds GPU 0 and failed with Docker's message.
    let ps = up.ps(STACK);
    let task = ps
        .iter()
        .find(|r| r["service"] == "train")
        .expect("a train task")
        .clone();
    assert_eq!(task["state"], "failed", "{task}");
    assert_eq!(task["node"], node.as_str());
    assert_eq!(task["gpus"], json!(["GPU-e2e-0000"]));
    let error = task["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("could not select device driver \"nvidia\" with capabilities: [[gpu]]"),
        "{error}"
    );

    // The container Docker created carries the request and the variable.
    let container = task["container"].as_str().unwrap_or_default().to_string();
    assert!(
        !container.is_empty(),
        "the failed task keeps its container: {task}"
    );
    let inspect: Value =
        serde_json::from_str(&docker(&["inspect", &container])).expect("inspect prints JSON");
    let requests = inspect[0]["HostConfig"]["DeviceRequests"]
        .as_array()
        .cloned();
    assert_eq!(
        requests.map(|r| r.len()),
        Some(1),
        "{}",
        inspect[0]["HostConfig"]
    );
    let req = &inspect[0]["HostConfig"]["DeviceRequests"][0];
    assert_eq!(req["Driver"], "nvidia");
    assert_eq!(req["DeviceIDs"], json!(["GPU-e2e-0000"]));
    assert_eq!(req["Capabilities"], json!([["gpu"]]));
    let env: Vec<&str> = inspect[0]["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        env.contains(&"NVIDIA_VISIBLE_DEVICES=GPU-e2e-0000"),
        "{env:?}"
    );
    // The failed task no longer holds its GPU.
    let out = up.shoal(&["nodes", "--format", "json"]);
    let nodes: Value = serde_json::from_slice(&out.stdout).unwrap();
    let me = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node.as_str())
        .unwrap()
        .clone();
    assert_eq!(me["gpus"][0]["assigned_to"], "");

    let out = up.shoal(&["rm", STACK]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_malformed_inventory_file_is_a_usage_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("gpus.json");
    std::fs::write(&bad, r#"[{"uuid":"GPU-1","index":"zero"}]"#).unwrap();
    let port = free_port();
    let mut child = Command::new(shoal_bin())
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--name"])
        .arg(format!("gpu-bad-{}", std::process::id()))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--gpu-inventory")
        .arg(&bad)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal up");
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = status.expect("shoal up exits at once on a bad inventory file");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
    assert!(stderr.contains("invalid JSON"), "{stderr}");
}
