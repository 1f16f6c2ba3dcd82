//! A rolling update on the real Docker engine: 4 healthchecked replicas move from image
//! tag A to tag B one at a time, and never fewer than 3 are healthy (stop-first) or 4
//! (start-first), sampled from `ps` throughout the rollout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use shoal_tests::*;

fn write_stack(dir: &std::path::Path, stack: &str, tag: &str, order: &str) -> std::path::PathBuf {
    let compose = format!(
        r#"name: {stack}
services:
  web:
    image: shoal-test/busybox:{tag}
    command: ["sh", "-c", "mkdir -p /www && echo {tag} > /www/index.html && exec httpd -f -p 8080 -h /www"]
    stop_grace_period: 1s
    deploy:
      replicas: 4
      update_config:
        parallelism: 1
        order: {order}
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ >/dev/null"]
      interval: 1s
      timeout: 2s
      retries: 3
"#
    );
    let file = dir.join(format!("compose-{tag}.yaml"));
    std::fs::write(&file, compose).unwrap();
    file
}

/// (healthy replicas, healthy replicas on `image`) of the desired-running web tasks.
fn healthy(ps: &[Value], image: &str) -> (usize, usize) {
    let h: Vec<&Value> = ps
        .iter()
        .filter(|r| r["service"] == "web" && r["desired"] == "running" && r["state"] == "healthy")
        .collect();
    (h.len(), h.iter().filter(|r| r["image"] == image).count())
}

/// Deploys `file` while sampling `ps`; returns the fewest healthy replicas seen.
fn deploy_sampling(up: &ShoalUp, stack: &str, file: &std::path::Path) -> usize {
    let done = Arc::new(AtomicBool::new(false));
    let fewest = Arc::new(Mutex::new(usize::MAX));
    let sampler = {
        let (done, fewest) = (done.clone(), fewest.clone());
        let addr = up.addr.clone();
        let config_home = up.config_home.clone();
        let stack = stack.to_string();
        std::thread::spawn(move || {
            // Bounded: the deploy itself times out long before this.
            for _ in 0..3_000 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let out = std::process::Command::new(shoal_bin())
                    .args(["ps", &stack, "--format", "json", "--addr", &addr])
                    .env("XDG_CONFIG_HOME", &config_home)
                    .output()
                    .expect("run shoal ps");
                if let Ok(Value::Array(ps)) = serde_json::from_slice::<Value>(&out.stdout) {
                    let (n, _) = healthy(&ps, "");
                    let mut f = fewest.lock().unwrap();
                    *f = (*f).min(n);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let out = up.shoal(&["deploy", "-c", file.to_str().unwrap(), "--timeout", "180"]);
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    assert!(
        out.status.success(),
        "rolling deploy failed: {}",
        text(&out)
    );
    let f = *fewest.lock().unwrap();
    f
}

#[test]
fn a_rolling_update_keeps_replicas_healthy_in_both_orders() {
    ensure_test_image();
    for tag in ["a", "b"] {
        docker(&["tag", TEST_IMAGE, &format!("shoal-test/busybox:{tag}")]);
    }
    let stack = "e2eroll";
    let dir = tempfile::tempdir().unwrap();
    let up = ShoalUp::start("e2e-roll");

    let out = up.shoal(&[
        "deploy",
        "-c",
        write_stack(dir.path(), stack, "a", "stop-first")
            .to_str()
            .unwrap(),
    ]);
    assert!(out.status.success(), "first deploy failed: {}", text(&out));
    assert_eq!(healthy(&up.ps(stack), "shoal-test/busybox:a"), (4, 4));
    let first: Vec<String> = service_containers(stack, "web");

    // A -> B, stop-first: one replica down at a time.
    let fewest = deploy_sampling(
        &up,
        stack,
        &write_stack(dir.path(), stack, "b", "stop-first"),
    );
    assert!(
        fewest >= 3 && fewest != usize::MAX,
        "stop-first went down to {fewest} healthy"
    );
    assert_eq!(healthy(&up.ps(stack), "shoal-test/busybox:b"), (4, 4));
    eventually(
        Duration::from_secs(60),
        "the old containers to be removed",
        || {
            let now = service_containers(stack, "web");
            (now.len() == 4 && first.iter().all(|c| !now.contains(c))).then_some(())
        },
    );

    // B -> A, start-first: the old replica stays until its replacement is healthy.
    let fewest = deploy_sampling(
        &up,
        stack,
        &write_stack(dir.path(), stack, "a", "start-first"),
    );
    assert!(
        fewest >= 4 && fewest != usize::MAX,
        "start-first went down to {fewest} healthy"
    );
    assert_eq!(healthy(&up.ps(stack), "shoal-test/busybox:a"), (4, 4));

    let out = up.shoal(&["rm", stack]);
    assert!(out.status.success(), "{}", text(&out));
    eventually(
        Duration::from_secs(60),
        "the stack's containers to go",
        || {
            containers_with("io.shoal.stack", stack, true)
                .is_empty()
                .then_some(())
        },
    );
}

fn write_failing(
    dir: &std::path::Path,
    stack: &str,
    good: bool,
    failure_action: &str,
) -> std::path::PathBuf {
    // The bad version serves an empty directory: its healthcheck gets a 404.
    let (tag, www) = if good { ("a", "/www") } else { ("b", "/empty") };
    let compose = format!(
        r#"name: {stack}
services:
  web:
    image: shoal-test/busybox:{tag}
    command: ["sh", "-c", "mkdir -p /www /empty && echo {tag} > /www/index.html && exec httpd -f -p 8080 -h {www}"]
    stop_grace_period: 1s
    deploy:
      replicas: 3
      update_config:
        parallelism: 1
        failure_action: {failure_action}
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ >/dev/null"]
      interval: 1s
      timeout: 2s
      retries: 2
"#
    );
    let file = dir.join(format!("compose-{tag}-{failure_action}.yaml"));
    std::fs::write(&file, compose).unwrap();
    file
}

/// Deploys the good version (which must converge), then the bad one (which must fail
/// with exit 1); returns the second deploy's output and stderr.
fn good_then_bad(
    up: &ShoalUp,
    dir: &std::path::Path,
    stack: &str,
    failure_action: &str,
) -> (std::process::Output, String) {
    let good = write_failing(dir, stack, true, failure_action);
    let out = up.shoal(&["deploy", "-c", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let bad = write_failing(dir, stack, false, failure_action);
    let out = up.shoal(&["deploy", "-c", bad.to_str().unwrap(), "--timeout", "120"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

#[test]
fn a_failing_update_is_rolled_back_or_paused_as_asked() {
    ensure_test_image();
    for tag in ["a", "b"] {
        docker(&["tag", TEST_IMAGE, &format!("shoal-test/busybox:{tag}")]);
    }
    let dir = tempfile::tempdir().unwrap();
    let up = ShoalUp::start("e2e-rollback");

    // failure_action: rollback -> every replica ends on the old version.
    let stack = "e2erollback";
    let (out, err) = good_then_bad(&up, dir.path(), stack, "rollback");
    assert!(err.contains("web slot 1"), "{}", text(&out));
    assert!(err.contains("healthcheck fails"), "{}", text(&out));
    assert!(err.contains("rolled back"), "{}", text(&out));
    eventually(
        Duration::from_secs(60),
        "all replicas back on the old version",
        || (healthy(&up.ps(stack), "shoal-test/busybox:a") == (3, 3)).then_some(()),
    );
    eventually(
        Duration::from_secs(20),
        "services to say rolled back",
        || {
            let out = up.shoal(&["services"]);
            String::from_utf8_lossy(&out.stdout)
                .contains("rolled back")
                .then_some(())
        },
    );

    // failure_action: pause -> it stops after the first bad replica and says so.
    let stack = "e2epause";
    let (out, err) = good_then_bad(&up, dir.path(), stack, "pause");
    assert!(err.contains("paused"), "{}", text(&out));
    let ps = up.ps(stack);
    assert_eq!(
        healthy(&ps, "shoal-test/busybox:a"),
        (2, 2),
        "the two replicas not yet updated keep the old version: {ps:#?}"
    );
}
