//! End to end on the local Docker engine: `shoal up`, then the CLI, as a user would.
//!
//! Needs Docker and the test image (scripts/test.sh provides both).

use std::time::Duration;

use serde_json::Value;
use shoal_tests::*;

const LONG: Duration = Duration::from_secs(90);

fn write_stack(dir: &std::path::Path, stack: &str, port: u16) {
    let compose = format!(
        r#"name: {stack}
x-common: &common
  image: {TEST_IMAGE}
  stop_grace_period: 2s
services:
  web:
    <<: *common
    command: ["sh", "-c", "mkdir -p /www && echo hello from $$HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www"]
    deploy:
      replicas: 2
    ports:
      - "{port}:8080"
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ >/dev/null"]
      interval: 1s
      timeout: 2s
      retries: 3
  worker:
    <<: *common
    command: ["sh", "-c", "while true; do wget -q -O- http://web:8080/ || echo unreachable; sleep 2; done"]
    depends_on:
      web:
        condition: service_healthy
"#
    );
    std::fs::write(dir.join("compose.yaml"), compose).unwrap();
}

fn rows<'a>(ps: &'a [Value], service: &str) -> Vec<&'a Value> {
    ps.iter()
        .filter(|r| r["service"] == service && r["desired"] == "running")
        .collect()
}

/// (task id, container id) of every row.
fn task_containers(ps: &[Value]) -> Vec<(String, String)> {
    ps.iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (field("id"), field("container"))
        })
        .collect()
}

fn count_state(ps: &[Value], service: &str, state: &str) -> usize {
    rows(ps, service)
        .iter()
        .filter(|r| r["state"] == state)
        .count()
}

#[test]
fn deploy_scale_restart_recover_and_remove_on_real_docker() {
    ensure_test_image();
    let stack = "e2efirst";
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    write_stack(dir.path(), stack, port);
    let (controller_metrics, agent_metrics) = (free_port(), free_port());
    let mut up = ShoalUp::start_with(
        "e2e-first",
        &[
            "--metrics",
            &format!("127.0.0.1:{controller_metrics}"),
            "--agent-metrics",
            &format!("127.0.0.1:{agent_metrics}"),
        ],
    );

    // 1. deploy exits 0 once both web replicas are healthy and the worker started.
    let out = up.shoal_in(dir.path(), &["deploy", "-c", "compose.yaml"]);
    assert!(out.status.success(), "deploy failed: {}", text(&out));
    let ps = up.ps(stack);
    assert_eq!(count_state(&ps, "web", "healthy"), 2, "{ps:#?}");
    assert_eq!(rows(&ps, "worker").len(), 1, "{ps:#?}");
    for r in rows(&ps, "web") {
        assert_eq!(r["node"], "e2e-first");
        assert_eq!(r["image"], TEST_IMAGE);
        assert_eq!(r["stack"], stack);
        let labels = docker(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"io.shoal.task\"}} {{index .Config.Labels \"io.shoal.service\"}} {{index .Config.Labels \"io.shoal.node\"}}",
            r["container"].as_str().unwrap(),
        ]);
        assert_eq!(
            labels.trim(),
            format!("{} web e2e-first", r["id"].as_str().unwrap())
        );
    }
    let body = eventually(
        Duration::from_secs(20),
        "the published port to answer",
        || http_get(port, "/"),
    );
    assert!(body.starts_with("hello from"), "{body}");
    // The worker reaches web by its service name on the stack network.
    let worker = rows(&ps, "worker")[0]["container"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(
        Duration::from_secs(20),
        "the worker to reach web by name",
        || {
            docker(&["logs", &worker])
                .contains("hello from")
                .then_some(())
        },
    );

    // Logs come from Docker through the agent and the controller.
    eventually(
        Duration::from_secs(20),
        "shoal logs to show the worker's output",
        || {
            let out = up.shoal(&["logs", "--tail", "5", "worker"]);
            (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("hello from"))
                .then_some(())
        },
    );
    let out = up.shoal(&["logs", "nosuchservice"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // 1b. What the cluster shows of it: the replicas' figures from the real engine in
    //     `shoal stats` and on the agent's /metrics, the tasks by state on the
    //     controller's, and the transitions in `shoal events`.
    let stats = eventually(LONG, "shoal stats to show both web replicas", || {
        let out = up.shoal(&["stats", "web", "--format", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let rows = v.as_array()?.clone();
        (rows.len() == 2
            && rows
                .iter()
                .all(|r| r["memory_bytes"].as_u64().unwrap_or(0) > 0))
        .then_some(rows)
    });
    for r in &stats {
        assert_eq!(r["stack"], stack, "{r}");
        assert_eq!(r["node"], "e2e-first", "{r}");
        assert!(r["net_rx_bytes"].is_u64() && r["restarts"] == 0, "{r}");
    }
    eventually(
        LONG,
        "the controller's /metrics to count 2 healthy tasks",
        || {
            http_get(controller_metrics, "/metrics")
                .filter(|page| page.contains("shoal_tasks{state=\"healthy\"} 2\n"))
        },
    );
    let page = eventually(LONG, "the agent's /metrics to show web's replicas", || {
        http_get(agent_metrics, "/metrics").filter(|page| {
            page.matches(&format!(
                "shoal_task_memory_bytes{{stack=\"{stack}\",service=\"web\""
            ))
            .count()
                == 2
        })
    });
    assert!(page.contains("shoal_task_restarts_total{"), "{page}");
    let out = up.shoal(&["events", "--stack", stack, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let healthy = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "task.healthy" && e["service"] == "web")
        .count();
    assert_eq!(healthy, 2, "{}", text(&out));

    // 2. scale up and down.
    let out = up.shoal(&["scale", "web=3"]);
    assert!(out.status.success(), "{}", text(&out));
    eventually(LONG, "3 healthy web replicas", || {
        (count_state(&up.ps(stack), "web", "healthy") == 3).then_some(())
    });
    let out = up.shoal(&["scale", &format!("{stack}/web=1")]);
    assert!(out.status.success(), "{}", text(&out));
    eventually(LONG, "web scaled down to one container", || {
        let web = service_containers(stack, "web").len();
        (web == 1 && rows(&up.ps(stack), "web").len() == 1).then_some(())
    });

    // 3. a killed replica is replaced (restart policy: any, the default).
    let ps = up.ps(stack);
    let victim = rows(&ps, "web")[0].clone();
    let victim_container = victim["container"].as_str().unwrap().to_string();
    docker(&["kill", &victim_container]);
    let replacement = eventually(LONG, "the killed replica to be replaced", || {
        let ps = up.ps(stack);
        let web = rows(&ps, "web");
        (web.len() == 1 && web[0]["id"] != victim["id"] && web[0]["state"] == "healthy")
            .then(|| web[0].clone())
    });
    assert_eq!(replacement["slot"], victim["slot"]);
    eventually(LONG, "the killed container to be removed", || {
        (!docker(&["ps", "-aq", "--no-trunc"]).contains(&victim_container)).then_some(())
    });

    // 4. restart `shoal up` on the same data dir: same tasks, same containers.
    let before = task_containers(&up.ps(stack));
    let mut containers_before = containers_with("io.shoal.stack", stack, false);
    containers_before.sort();
    up.restart();
    eventually(
        LONG,
        "the stack to report healthy again after restart",
        || {
            let ps = up.ps(stack);
            (count_state(&ps, "web", "healthy") == 1 && rows(&ps, "worker").len() == 1)
                .then_some(())
        },
    );
    let after = task_containers(&up.ps(stack));
    assert_eq!(before, after, "the restart changed tasks or containers");
    let mut containers_after = containers_with("io.shoal.stack", stack, false);
    containers_after.sort();
    assert_eq!(
        containers_before, containers_after,
        "nothing may be started twice"
    );

    // 5. rm leaves no container with the stack's label.
    let out = up.shoal(&["rm", stack]);
    assert!(out.status.success(), "{}", text(&out));
    eventually(LONG, "every container of the stack to be removed", || {
        containers_with("io.shoal.stack", stack, true)
            .is_empty()
            .then_some(())
    });
    eventually(LONG, "the stack to be forgotten", || {
        let out = up.shoal(&["services", "--format", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (!v.as_array()?.iter().any(|s| s["stack"] == stack)).then_some(())
    });
}

#[test]
fn a_stack_whose_image_is_nowhere_is_refused_before_anything_is_deployed() {
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        "name: e2epull\nservices:\n  app:\n    image: shoal-test/does-not-exist:404\n",
    )
    .unwrap();
    let up = ShoalUp::start("e2e-pull");
    let out = up.shoal_in(
        dir.path(),
        &["deploy", "-c", "compose.yaml", "--timeout", "120"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shoal-test/does-not-exist:404"),
        "{}",
        text(&out)
    );
    // Where it was looked for, and the registry's own words.
    assert!(err.contains("not in the cluster's store"), "{}", text(&out));
    assert!(err.to_lowercase().contains("pull"), "{}", text(&out));
    assert!(err.contains("nothing was deployed"), "{}", text(&out));
    let ps = up.shoal(&["ps", "e2epull"]);
    assert!(
        !ps.status.success(),
        "the stack was not deployed: {}",
        text(&ps)
    );
    assert!(
        String::from_utf8_lossy(&ps.stderr).contains("no stack named e2epull"),
        "{}",
        text(&ps)
    );
}

/// `shoal config -c FILE`, no cluster needed.
fn shoal_config(file: &std::path::Path) -> std::process::Output {
    std::process::Command::new(shoal_bin())
        .args(["config", "-c"])
        .arg(file)
        .output()
        .expect("run shoal config")
}

#[test]
fn config_on_broken_files_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, "services:\n  web:\n    imagee: nginx\n").unwrap();
    let out = shoal_config(&file);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("compose.yaml:3"), "{}", text(&out));
    assert!(err.contains("imagee"), "{}", text(&out));

    std::fs::write(
        &file,
        "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n",
    )
    .unwrap();
    let out = shoal_config(&file);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cycle"),
        "{}",
        text(&out)
    );
}
