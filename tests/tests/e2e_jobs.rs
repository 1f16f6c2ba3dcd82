//! Start order and jobs on the real Docker engine: db (healthy) -> migrate (a job that
//! must complete) -> api -> worker. The migration runs exactly once per spec, and a
//! failing migration holds api back and fails the deploy.

use serde_json::Value;
use shoal_tests::*;

fn write_stack(dir: &std::path::Path, stack: &str, migrate_exit: u8) -> std::path::PathBuf {
    let compose = format!(
        r#"name: {stack}
x-base: &base
  image: {TEST_IMAGE}
  stop_grace_period: 1s
services:
  db:
    <<: *base
    command: ["sh", "-c", "mkdir -p /www && echo db > /www/index.html && exec httpd -f -p 8080 -h /www"]
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ >/dev/null"]
      interval: 1s
      retries: 3
  migrate:
    <<: *base
    command: ["sh", "-c", "sleep 1; echo migrated; exit {migrate_exit}"]
    deploy:
      mode: replicated-job
    depends_on:
      db:
        condition: service_healthy
  api:
    <<: *base
    command: ["sleep", "3600"]
    depends_on:
      migrate:
        condition: service_completed_successfully
      db:
        condition: service_healthy
  worker:
    <<: *base
    command: ["sleep", "3600"]
    depends_on:
      api:
        condition: service_started
"#
    );
    let file = dir.join(format!("{stack}.yaml"));
    std::fs::write(&file, compose).unwrap();
    file
}

fn tasks_of<'a>(ps: &'a [Value], service: &str) -> Vec<&'a Value> {
    ps.iter().filter(|r| r["service"] == service).collect()
}

fn all_tasks(up: &ShoalUp, stack: &str) -> Vec<Value> {
    let out = up.shoal(&["ps", stack, "--all", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Docker's RFC 3339 timestamp of `field` (`StartedAt`, `FinishedAt`) of a container.
fn when(container: &str, field: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        &format!("{{{{.State.{field}}}}}"),
        container,
    ])
    .trim()
    .to_string()
}

#[test]
fn dependencies_start_in_order_and_the_migration_runs_once() {
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let up = ShoalUp::start("e2e-jobs");
    let stack = "e2ejobs";
    let file = write_stack(dir.path(), stack, 0);
    let out = up.shoal(&["deploy", "-c", file.to_str().unwrap(), "--timeout", "120"]);
    assert!(out.status.success(), "deploy failed: {}", text(&out));

    let ps = all_tasks(&up, stack);
    let migrate = tasks_of(&ps, "migrate");
    assert_eq!(migrate.len(), 1, "{ps:#?}");
    assert_eq!(migrate[0]["state"], "complete");
    let container = |service: &str| {
        tasks_of(&ps, service)
            .iter()
            .find(|r| r["desired"] == "running")
            .and_then(|r| r["container"].as_str())
            .unwrap_or_else(|| panic!("no container for {service}: {ps:#?}"))
            .to_string()
    };
    let (db, mig, api, worker) = (
        container("db"),
        container("migrate"),
        container("api"),
        container("worker"),
    );
    // RFC 3339 timestamps of one engine compare as strings.
    assert!(
        when(&db, "StartedAt") < when(&mig, "StartedAt"),
        "migrate before db"
    );
    assert!(
        when(&mig, "FinishedAt") <= when(&api, "StartedAt"),
        "api before the migration finished"
    );
    assert!(
        when(&api, "StartedAt") <= when(&worker, "StartedAt"),
        "worker before api"
    );
    assert!(docker(&["logs", &mig]).contains("migrated"));

    // Deploying the same file again changes no generation, so nothing runs again: a job
    // only gets a new task for a new generation (the reconciler's tests pin that down).
    let out = up.shoal(&["deploy", "-c", file.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let reply: Value = serde_json::from_slice(&out.stdout).expect("deploy prints JSON");
    for s in reply["services"].as_array().expect("services") {
        assert_eq!(s["changed"], false, "{reply:#}");
        assert_eq!(s["generation"], 1, "{reply:#}");
    }
    assert_eq!(tasks_of(&all_tasks(&up, stack), "migrate").len(), 1);
}

#[test]
fn a_failing_migration_blocks_what_depends_on_it_and_fails_the_deploy() {
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let up = ShoalUp::start("e2e-jobfail");
    let stack = "e2ejobfail";
    let file = write_stack(dir.path(), stack, 1);
    let out = up.shoal(&["deploy", "-c", file.to_str().unwrap(), "--timeout", "120"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("migrate slot 1"), "{}", text(&out));
    assert!(err.contains("exited with code 1"), "{}", text(&out));
    let ps = all_tasks(&up, stack);
    let api = tasks_of(&ps, "api");
    assert!(!api.is_empty(), "{ps:#?}");
    for t in api {
        assert_eq!(t["state"], "pending", "{ps:#?}");
        assert!(
            t["error"].as_str().unwrap().contains("waiting for migrate"),
            "{ps:#?}"
        );
    }
    assert!(
        service_containers(stack, "api").is_empty(),
        "api must not have started"
    );
}
