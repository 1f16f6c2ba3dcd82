//! A rolling update on the real Docker engine: 4 healthchecked replicas move from image
//! tag A to tag B one at a time. Throughout the rollout it is sampled three ways: the
//! tasks' states in `ps`, requests to each running replica's own address, and a stream of
//! requests through the published (ingress) port. Never fewer than 3 replicas are healthy
//! and answer (stop-first), or 4 (start-first), and no request through the port fails:
//! a replica leaves the ingress and its connections drain before it is stopped.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use shoal_tests::*;

fn write_stack(
    dir: &std::path::Path,
    stack: &str,
    tag: &str,
    order: &str,
    port: u16,
) -> std::path::PathBuf {
    let compose = format!(
        r#"name: {stack}
services:
  web:
    image: shoal-test/busybox:{tag}
    # /cgi-bin/v answers the version after 0.2 s: a request is always in flight.
    command:
      - sh
      - -c
      - |
        mkdir -p /www/cgi-bin
        echo {tag} > /www/index.html
        cat > /www/cgi-bin/v <<'EOS'
        #!/bin/sh
        sleep 0.2
        echo "Content-Type: text/plain"
        echo
        echo {tag}
        EOS
        chmod +x /www/cgi-bin/v
        exec httpd -f -p 8080 -h /www
    # With an init, httpd dies on SIGTERM at once, as a real server would.
    init: true
    stop_grace_period: 1s
    ports: ["{port}:8080"]
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
    let file = dir.join(format!("compose-{tag}-{order}.yaml"));
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

/// What the samplers saw during one rollout.
#[derive(Debug, Default)]
struct Seen {
    /// Fewest healthy replicas in `ps`.
    fewest_healthy: usize,
    /// Fewest running replicas answering on their own address.
    fewest_answering: usize,
    /// Requests through the published port: answered, failed, and the versions answering.
    ingress_ok: usize,
    ingress_failed: usize,
    versions: BTreeSet<String>,
}

/// Runs `f` every `period` on its own thread until `done` (bounded by `max` rounds).
fn sample(
    done: &Arc<AtomicBool>,
    max: usize,
    period: Duration,
    mut f: impl FnMut() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let done = done.clone();
    std::thread::spawn(move || {
        for _ in 0..max {
            if done.load(Ordering::SeqCst) {
                break;
            }
            f();
            std::thread::sleep(period);
        }
    })
}

/// Deploys `file` while sampling the rollout three ways.
fn deploy_sampling(up: &ShoalUp, stack: &str, file: &std::path::Path, port: u16) -> Seen {
    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen {
        fewest_healthy: usize::MAX,
        fewest_answering: usize::MAX,
        ..Default::default()
    }));
    // Bounded: the deploy itself times out long before any of these.
    let states = {
        let (seen, addr, stack) = (seen.clone(), up.addr.clone(), stack.to_string());
        let config_home = up.config_home.clone();
        sample(&done, 3_000, Duration::from_millis(100), move || {
            let out = std::process::Command::new(shoal_bin())
                .args(["ps", &stack, "--format", "json", "--addr", &addr])
                .env("XDG_CONFIG_HOME", &config_home)
                .output()
                .expect("run shoal ps");
            if let Ok(Value::Array(ps)) = serde_json::from_slice::<Value>(&out.stdout) {
                let mut s = seen.lock().unwrap();
                s.fewest_healthy = s.fewest_healthy.min(healthy(&ps, "").0);
            }
        })
    };
    let replicas = {
        let (seen, stack) = (seen.clone(), stack.to_string());
        sample(&done, 3_000, Duration::from_millis(100), move || {
            let before = running_service_ips(&stack, "web");
            let answering = before
                .iter()
                .filter(|ip| http_get_at(&format!("{ip}:8080"), "/").is_some())
                .count();
            // The replicas are asked one after the other: a sample counts only if none
            // started or stopped meanwhile (one stopping mid-sample is not a replica
            // that stopped answering while it should).
            if running_service_ips(&stack, "web") != before {
                return;
            }
            let mut s = seen.lock().unwrap();
            s.fewest_answering = s.fewest_answering.min(answering);
        })
    };
    // Four clients, each with a slow request in flight nearly all the time: a replica
    // stopped before its connections drain fails some of them.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let seen = seen.clone();
            sample(&done, 20_000, Duration::from_millis(1), move || {
                let answer = http_get(port, "/cgi-bin/v");
                let mut s = seen.lock().unwrap();
                match answer {
                    Some(body) => {
                        s.ingress_ok += 1;
                        s.versions.insert(body.trim().to_string());
                    }
                    None => s.ingress_failed += 1,
                }
            })
        })
        .collect();
    let out = up.shoal(&["deploy", "-c", file.to_str().unwrap(), "--timeout", "180"]);
    done.store(true, Ordering::SeqCst);
    for t in [states, replicas].into_iter().chain(clients) {
        t.join().unwrap();
    }
    assert!(
        out.status.success(),
        "rolling deploy failed: {}",
        text(&out)
    );
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    seen
}

/// Asserts what one rollout must have kept: `least` replicas healthy and answering, no
/// failed request through the port, both versions answering it.
fn assert_kept(seen: &Seen, least: usize, order: &str) {
    assert!(
        seen.fewest_healthy >= least && seen.fewest_healthy != usize::MAX,
        "{order}: went down to {} healthy in ps: {seen:?}",
        seen.fewest_healthy
    );
    assert!(
        seen.fewest_answering >= least && seen.fewest_answering != usize::MAX,
        "{order}: went down to {} replicas answering: {seen:?}",
        seen.fewest_answering
    );
    assert_eq!(
        seen.ingress_failed, 0,
        "{order}: requests through the published port failed: {seen:?}"
    );
    assert!(
        seen.ingress_ok > 20,
        "{order}: too few requests made: {seen:?}"
    );
    assert_eq!(
        seen.versions,
        ["a", "b"].into_iter().map(String::from).collect(),
        "{order}: both versions answer during the rollout: {seen:?}"
    );
}

#[test]
fn a_rolling_update_keeps_replicas_healthy_in_both_orders() {
    ensure_test_image();
    for tag in ["a", "b"] {
        docker(&["tag", TEST_IMAGE, &format!("shoal-test/busybox:{tag}")]);
    }
    let stack = "e2eroll";
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let up = ShoalUp::start("e2e-roll");

    let first_file = write_stack(dir.path(), stack, "a", "stop-first", port);
    let out = up.shoal(&["deploy", "-c", first_file.to_str().unwrap()]);
    assert!(out.status.success(), "first deploy failed: {}", text(&out));
    assert_eq!(healthy(&up.ps(stack), "shoal-test/busybox:a"), (4, 4));
    let first: Vec<String> = service_containers(stack, "web");
    eventually(
        Duration::from_secs(20),
        "the published port to answer",
        || http_get(port, "/cgi-bin/v").filter(|b| b.trim() == "a"),
    );

    // A -> B, stop-first: one replica down at a time.
    let seen = deploy_sampling(
        &up,
        stack,
        &write_stack(dir.path(), stack, "b", "stop-first", port),
        port,
    );
    assert_kept(&seen, 3, "stop-first");
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
    let seen = deploy_sampling(
        &up,
        stack,
        &write_stack(dir.path(), stack, "a", "start-first", port),
        port,
    );
    assert_kept(&seen, 4, "start-first");
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
