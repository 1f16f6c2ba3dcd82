//! Workloads end to end on three test hosts (`scripts/hosts.sh`: a network namespace per
//! node, each with its own Docker engine and `shoal agent`, three `shoal controller`s).
//!
//! One harness, scenarios in sequence (the hosts take seconds to start):
//! 1. GPUs (issue 7): n1, n2, n3 have 0, 3 and 4 GPUs (inventory files). 0/2/4 cannot
//!    hold 1 + 2 + 4 = 7 GPUs, so n2 gets 3: tasks asking 1, 2 and 4 GPUs then fit only
//!    as g1, g2 -> n2 and g4 -> n3. Their containers carry the device requests, fail
//!    with the engine's words (no NVIDIA runtime here), and a power cut of n3 leaves g4
//!    pending with the reason, placed on n3 again once it is back.
//! 2. A rolling update over the three nodes (issue 6), stop-first then start-first,
//!    sampled in `ps` and by requests to every running replica inside its node.
//! 3. A failing update rolled back on every node, the deploy naming the replica and why.
//! 4. Start order across nodes: db (n1, healthy) -> migrate (job, n2) -> api (n3) ->
//!    worker (n1), checked with each engine's container timestamps; a failing migration
//!    holds api back and fails the deploy.
//!
//! Needs root, iproute2, iptables, nsenter, dockerd and the test image; without one, the
//! test fails saying which (scripts/test.sh runs it as root).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::hosts::Hosts;
use shoal_tests::*;

const WAIT: Duration = Duration::from_secs(60);
const ALL: [&str; 3] = ["n1", "n2", "n3"];

#[test]
fn three_hosts_run_gpus_rollouts_rollbacks_and_start_order() {
    ensure_test_image();
    // Declared before the hosts so the inventory files outlive the agents reading them.
    let dir = tempfile::tempdir().expect("tempdir");
    let inv2 = inventory(dir.path(), "n2", 3);
    let inv3 = inventory(dir.path(), "n3", 4);
    let a2 = format!("--gpu-inventory {}", inv2.display());
    let a3 = format!("--gpu-inventory {}", inv3.display());
    let hosts = Hosts::up_with_agent_args(3, &[(2, &a2), (3, &a3)]);
    for n in ALL {
        for tag in ["a", "b"] {
            hosts.docker(
                n,
                &["tag", TEST_IMAGE, &format!("shoal-test/busybox:{tag}")],
            );
        }
    }
    let started = Instant::now();

    gpus_land_where_they_fit(&hosts, dir.path());
    eprintln!("gpus: {:?}", started.elapsed());
    rolling_update_across_nodes(&hosts, dir.path());
    eprintln!("rolling update: {:?}", started.elapsed());
    let unnamed = rollback_across_nodes(&hosts, dir.path());
    eprintln!("rollback: {:?}", started.elapsed());
    start_order_across_nodes(&hosts, dir.path());
    eprintln!("start order: {:?}", started.elapsed());
    // Checked last so the start-order scenario runs even when this one fails.
    assert!(
        unnamed.is_none(),
        "the rolled-back deploy does not name the failed replica and why: {}",
        unnamed.unwrap_or_default()
    );
}

// --- helpers -----------------------------------------------------------------------

/// An inventory file of `count` H100s with UUIDs `GPU-<node>-<i>`.
fn inventory(dir: &Path, node: &str, count: usize) -> PathBuf {
    let gpus: Vec<String> = (0..count)
        .map(|i| {
            format!(
                r#"{{"uuid":"GPU-{node}-{i}","index":{i},"model":"NVIDIA H100 80GB HBM3","memory_bytes":85899345920}}"#
            )
        })
        .collect();
    let file = dir.join(format!("gpus-{node}.json"));
    std::fs::write(&file, format!("[{}]", gpus.join(","))).expect("write inventory");
    file
}

fn uuids(node: &str, count: usize) -> BTreeSet<String> {
    (0..count).map(|i| format!("GPU-{node}-{i}")).collect()
}

/// Writes `name: stack` + `services` and runs `shoal deploy` with `extra` flags.
fn deploy(hosts: &Hosts, dir: &Path, stack: &str, services: &str, extra: &[&str]) -> Output {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let n = FILES.fetch_add(1, Ordering::SeqCst);
    let file = dir.join(format!("{stack}-{n}.yaml"));
    std::fs::write(&file, format!("name: {stack}\nservices:\n{services}"))
        .expect("write compose file");
    let mut args = vec!["deploy", "-c", file.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    hosts.shoal(&args)
}

/// `shoal ps STACK --all`: every task, current and past.
fn all_tasks(hosts: &Hosts, stack: &str) -> Vec<Value> {
    eventually(Duration::from_secs(20), "shoal ps --all to answer", || {
        hosts.json(&["ps", stack, "--all"])?.as_array().cloned()
    })
}

fn current<'a>(ps: &'a [Value], service: &str) -> Vec<&'a Value> {
    ps.iter()
        .filter(|t| t["service"] == service && t["desired"] == "running")
        .collect()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn gpus_of(t: &Value) -> Vec<String> {
    t["gpus"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default()
}

fn inspect(hosts: &Hosts, node: &str, container: &str) -> Value {
    let out = hosts.docker(node, &["inspect", container]);
    let v: Value = serde_json::from_str(&out).expect("docker inspect prints JSON");
    v[0].clone()
}

fn remove_stack(hosts: &Hosts, stack: &str) {
    let out = hosts.shoal(&["rm", stack]);
    assert!(out.status.success(), "rm {stack}: {}", text(&out));
    eventually(WAIT, &format!("stack {stack}'s containers gone"), || {
        ALL.iter()
            .all(|n| hosts.containers(n, stack, true).is_empty())
            .then_some(())
    });
}

/// Docker's RFC 3339 `State.<field>` of a container, made comparable as a string: the
/// fraction padded to 9 digits (Docker trims trailing zeros). All engines run on this
/// machine, so they share one clock and their timestamps compare across nodes.
fn when(hosts: &Hosts, node: &str, container: &str, field: &str) -> String {
    let raw = hosts
        .docker(
            node,
            &[
                "inspect",
                "-f",
                &format!("{{{{.State.{field}}}}}"),
                container,
            ],
        )
        .trim()
        .to_string();
    let body = raw
        .strip_suffix('Z')
        .unwrap_or_else(|| panic!("{field} of {container} on {node} is not UTC: {raw:?}"));
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    format!("{secs}.{frac:0<9}")
}

// --- 1. GPUs ------------------------------------------------------------------------

fn gpu_service(name: &str, count: usize, restart: &str) -> String {
    format!(
        r#"  {name}:
    image: {TEST_IMAGE}
    command: ["sleep", "300"]
    stop_grace_period: 1s
    deploy:
      restart_policy:
        condition: {restart}
      resources:
        reservations:
          devices:
            - capabilities: [gpu]
              count: {count}
"#
    )
}

fn gpus_land_where_they_fit(hosts: &Hosts, dir: &Path) {
    // shoal nodes lists each node's inventory.
    let nodes = eventually(WAIT, "shoal nodes to list the GPUs", || {
        let v = hosts.json(&["nodes"])?;
        let by: BTreeMap<String, usize> = v
            .as_array()?
            .iter()
            .map(|n| (s(&n["name"]), n["gpus"].as_array().map_or(0, Vec::len)))
            .collect();
        (by.len() == 3 && by["n2"] == 3 && by["n3"] == 4).then_some(by)
    });
    assert_eq!(nodes["n1"], 0, "{nodes:?}");

    // restart_policy none: a failed GPU task stays failed instead of being replaced in a
    // loop, so each service has exactly one task whose container and error we can read.
    let stack = "wgpu";
    let services = [
        gpu_service("g1", 1, "none"),
        gpu_service("g2", 2, "none"),
        gpu_service("g4", 4, "none"),
    ]
    .concat();
    let start = Instant::now();
    let out = deploy(hosts, dir, stack, &services, &["--timeout", "90"]);
    assert!(!out.status.success(), "deploy should fail: {}", text(&out));
    assert!(
        start.elapsed() < Duration::from_secs(85),
        "deploy ran into its timeout: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("could not select device driver"),
        "deploy does not say why: {}",
        text(&out)
    );

    let ps = eventually(WAIT, "all three GPU tasks failed", || {
        let ps = hosts.ps(stack);
        let failed = ["g1", "g2", "g4"].iter().all(|svc| {
            let t = current(&ps, svc);
            t.len() == 1 && t[0]["state"] == "failed"
        });
        failed.then_some(ps)
    });
    let expected = [("g1", 1, "n2"), ("g2", 2, "n2"), ("g4", 4, "n3")];
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (svc, count, node) in expected {
        let t = current(&ps, svc)[0];
        assert_eq!(t["node"], node, "{svc} lands where it fits: {t}");
        let gpus = gpus_of(t);
        assert_eq!(gpus.len(), count, "{svc}: {t}");
        let inv = uuids(node, if node == "n2" { 3 } else { 4 });
        for g in &gpus {
            assert!(inv.contains(g), "{svc}: {g} is not in {node}'s inventory");
            assert!(seen.insert(g.clone()), "{g} handed out twice: {ps:#?}");
        }
        let error = s(&t["error"]);
        assert!(
            error.contains("could not select device driver \"nvidia\" with capabilities: [[gpu]]"),
            "{svc}: {error}"
        );

        // The container on that node's own engine carries the request and the variable.
        let container = s(&t["container"]);
        assert!(!container.is_empty(), "{svc} keeps its container: {t}");
        let c = inspect(hosts, node, &container);
        let req = &c["HostConfig"]["DeviceRequests"];
        assert_eq!(req.as_array().map(Vec::len), Some(1), "{svc}: {req}");
        assert_eq!(req[0]["Driver"], "nvidia", "{svc}: {req}");
        assert_eq!(req[0]["DeviceIDs"], serde_json::json!(gpus), "{svc}: {req}");
        assert_eq!(
            req[0]["Capabilities"],
            serde_json::json!([["gpu"]]),
            "{svc}"
        );
        let env: Vec<String> = c["Config"]["Env"]
            .as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default();
        let visible = format!("NVIDIA_VISIBLE_DEVICES={}", gpus.join(","));
        assert!(env.contains(&visible), "{svc}: {env:?}");
    }

    // g4 again, restarted on failure (a new generation): its task loops on n3, the only
    // node with 4 GPUs. A power cut of n3 leaves it pending, saying why.
    let services = [
        gpu_service("g1", 1, "none"),
        gpu_service("g2", 2, "none"),
        gpu_service("g4", 4, "any"),
    ]
    .concat();
    let out = deploy(hosts, dir, stack, &services, &["--detach"]);
    assert!(out.status.success(), "{}", text(&out));
    eventually(WAIT, "the new g4 task placed on n3", || {
        let ps = hosts.json(&["ps", stack])?;
        let ps = ps.as_array()?;
        current(ps, "g4")
            .iter()
            .any(|t| t["node"] == "n3" && !gpus_of(t).is_empty())
            .then_some(())
    });
    hosts.cut("n3");
    let pending = eventually(WAIT, "g4 pending while n3 is down", || {
        let ps = hosts.json(&["ps", stack])?;
        let t = current(ps.as_array()?, "g4").first().cloned().cloned()?;
        (t["state"] == "pending" && s(&t["error"]).contains("n3 is down")).then_some(t)
    });
    let reason = s(&pending["error"]);
    assert!(reason.contains("needs 4 GPUs"), "{reason}");
    assert!(reason.contains("n1 has no GPUs"), "{reason}");
    assert!(reason.contains("n2 has"), "{reason}");
    assert!(gpus_of(&pending).is_empty(), "{pending}");

    hosts.revive("n3");
    let back = eventually(WAIT, "g4 placed on n3 again", || {
        let ps = hosts.json(&["ps", stack])?;
        let t = current(ps.as_array()?, "g4").first().cloned().cloned()?;
        (t["node"] == "n3" && gpus_of(&t).len() == 4).then_some(t)
    });
    let got: BTreeSet<String> = gpus_of(&back).into_iter().collect();
    assert_eq!(got, uuids("n3", 4), "{back}");
    remove_stack(hosts, stack);
}

// --- 2. rolling update --------------------------------------------------------------

/// 4 healthchecked httpd replicas serving `tag` on 8080.
fn web(tag: &str, order: &str, www: &str, failure_action: &str) -> String {
    format!(
        r#"  web:
    image: shoal-test/busybox:{tag}
    command: ["sh", "-c", "mkdir -p /www /empty && echo {tag} > /www/index.html && exec httpd -f -p 8080 -h {www}"]
    # With an init, httpd dies on SIGTERM at once, as a real server would.
    init: true
    stop_grace_period: 1s
    deploy:
      replicas: 4
      update_config:
        parallelism: 1
        order: {order}
        failure_action: {failure_action}
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ >/dev/null"]
      interval: 1s
      timeout: 2s
      retries: 2
"#
    )
}

/// (healthy, healthy on `image`) of the desired-running web tasks.
fn healthy(ps: &[Value], image: &str) -> (usize, usize) {
    let h: Vec<&Value> = current(ps, "web")
        .into_iter()
        .filter(|t| t["state"] == "healthy")
        .collect();
    (h.len(), h.iter().filter(|t| t["image"] == image).count())
}

/// Running web replicas of `stack` on `node` that answer on their own address, asked
/// from inside the node's network namespace (where its engine's bridge is).
fn answering_on(hosts: &Hosts, node: &str, stack: &str) -> usize {
    let d = format!("docker -H unix://{}", hosts.docker_sock(node));
    let script = format!(
        r#"n=0
for c in $({d} ps -q --filter label=io.shoal.stack={stack} --filter label=io.shoal.service=web); do
  ip=$({d} inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}} {{{{end}}}}' "$c" 2>/dev/null | awk '{{print $1}}')
  [ -n "$ip" ] && wget -q -T 2 -O /dev/null "http://$ip:8080/" 2>/dev/null && n=$((n+1))
done
echo "$n""#
    );
    let out = hosts.exec(node, &["sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The running web containers of `stack` on `node`.
fn web_containers(hosts: &Hosts, node: &str, stack: &str) -> String {
    let d = format!("docker -H unix://{}", hosts.docker_sock(node));
    let script = format!(
        "{d} ps -q --filter label=io.shoal.stack={stack} --filter label=io.shoal.service=web"
    );
    String::from_utf8_lossy(&hosts.exec(node, &["sh", "-c", &script]).stdout).to_string()
}

#[derive(Debug)]
struct Seen {
    fewest_healthy: usize,
    fewest_answering: usize,
    samples: usize,
}

/// Deploys `services` (must succeed) while sampling `ps` and the replicas' answers.
fn deploy_sampling(hosts: &Hosts, dir: &Path, stack: &str, services: &str) -> Seen {
    let done = AtomicBool::new(false);
    let seen = Mutex::new(Seen {
        fewest_healthy: usize::MAX,
        fewest_answering: usize::MAX,
        samples: 0,
    });
    let out = std::thread::scope(|scope| {
        // Bounded: the deploy times out (180 s) long before 2 000 rounds end.
        scope.spawn(|| {
            for _ in 0..2_000 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                if let Some(Value::Array(ps)) = hosts.json(&["ps", stack]) {
                    let mut s = seen.lock().expect("lock");
                    s.fewest_healthy = s.fewest_healthy.min(healthy(&ps, "").0);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        scope.spawn(|| {
            for _ in 0..2_000 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                // The nodes are asked one after the other: a sample counts only if no
                // replica started or stopped meanwhile, or a replica moving between
                // nodes could be missed on both (or counted on both).
                let before: Vec<String> = ALL
                    .iter()
                    .map(|n| web_containers(hosts, n, stack))
                    .collect();
                let answering: usize = ALL.iter().map(|n| answering_on(hosts, n, stack)).sum();
                let after: Vec<String> = ALL
                    .iter()
                    .map(|n| web_containers(hosts, n, stack))
                    .collect();
                if before != after {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                let mut s = seen.lock().expect("lock");
                s.fewest_answering = s.fewest_answering.min(answering);
                s.samples += 1;
                drop(s);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let out = deploy(hosts, dir, stack, services, &["--timeout", "180"]);
        done.store(true, Ordering::SeqCst);
        out
    });
    assert!(
        out.status.success(),
        "rolling deploy failed: {}",
        text(&out)
    );
    seen.into_inner().expect("lock")
}

fn assert_kept(seen: &Seen, least: usize, order: &str) {
    assert!(seen.samples >= 3, "{order}: too few samples: {seen:?}");
    assert!(
        seen.fewest_healthy >= least && seen.fewest_healthy != usize::MAX,
        "{order}: went down to {} healthy in ps: {seen:?}",
        seen.fewest_healthy
    );
    assert!(
        seen.fewest_answering >= least,
        "{order}: went down to {} replicas answering: {seen:?}",
        seen.fewest_answering
    );
}

/// Nodes of the healthy web tasks on `image`, counted; and the same from the engines.
fn web_on_nodes(
    hosts: &Hosts,
    stack: &str,
    image: &str,
) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut ps_nodes = BTreeMap::new();
    for t in current(&hosts.ps(stack), "web") {
        if t["state"] == "healthy" && t["image"] == image {
            *ps_nodes.entry(s(&t["node"])).or_insert(0) += 1;
        }
    }
    let mut engines = BTreeMap::new();
    for n in ALL {
        let filter = format!("label=io.shoal.stack={stack}");
        let images = hosts.docker(n, &["ps", "--filter", &filter, "--format", "{{.Image}}"]);
        let here = images.lines().filter(|i| *i == image).count();
        if here > 0 {
            engines.insert(n.to_string(), here);
        }
    }
    (ps_nodes, engines)
}

const ROLL: &str = "wroll";

fn rolling_update_across_nodes(hosts: &Hosts, dir: &Path) {
    let out = deploy(
        hosts,
        dir,
        ROLL,
        &web("a", "stop-first", "/www", "pause"),
        &["--timeout", "120"],
    );
    assert!(out.status.success(), "first deploy: {}", text(&out));
    let (ps_nodes, engines) = web_on_nodes(hosts, ROLL, "shoal-test/busybox:a");
    assert_eq!(ps_nodes.values().sum::<usize>(), 4, "{ps_nodes:?}");
    assert_eq!(
        ps_nodes.len(),
        3,
        "spread over the three nodes: {ps_nodes:?}"
    );
    assert_eq!(ps_nodes, engines, "ps and the engines agree");
    eventually(WAIT, "4 replicas answering on their nodes", || {
        (ALL.iter()
            .map(|n| answering_on(hosts, n, ROLL))
            .sum::<usize>()
            == 4)
            .then_some(())
    });

    let seen = deploy_sampling(hosts, dir, ROLL, &web("b", "stop-first", "/www", "pause"));
    eprintln!("stop-first A->B: {seen:?}");
    assert_kept(&seen, 3, "stop-first");
    let (ps_nodes, _) = web_on_nodes(hosts, ROLL, "shoal-test/busybox:b");
    assert_eq!(
        ps_nodes.values().sum::<usize>(),
        4,
        "all on B: {ps_nodes:?}"
    );
    eventually(WAIT, "only B containers on the engines", || {
        let (_, e) = web_on_nodes(hosts, ROLL, "shoal-test/busybox:b");
        let total: usize = ALL.iter().map(|n| hosts.running(n, ROLL).len()).sum();
        (e == ps_nodes && total == 4).then_some(())
    });

    let seen = deploy_sampling(hosts, dir, ROLL, &web("a", "start-first", "/www", "pause"));
    eprintln!("start-first B->A: {seen:?}");
    assert_kept(&seen, 4, "start-first");
    let (ps_nodes, _) = web_on_nodes(hosts, ROLL, "shoal-test/busybox:a");
    assert_eq!(
        ps_nodes.values().sum::<usize>(),
        4,
        "all on A: {ps_nodes:?}"
    );
}

// --- 3. rollback --------------------------------------------------------------------

/// Returns the deploy's output when it failed without naming the replica and why (the
/// caller fails the test once the remaining scenarios ran).
fn rollback_across_nodes(hosts: &Hosts, dir: &Path) -> Option<String> {
    // The rollout's stack, on A, moves to B serving an empty directory: its healthcheck
    // gets a 404, and the update is rolled back.
    let good = web("a", "stop-first", "/www", "rollback");
    let out = deploy(hosts, dir, ROLL, &good, &["--timeout", "120"]);
    assert!(out.status.success(), "{}", text(&out));
    let (before, _) = web_on_nodes(hosts, ROLL, "shoal-test/busybox:a");
    assert_eq!(before.values().sum::<usize>(), 4, "{before:?}");

    let bad = web("b", "stop-first", "/empty", "rollback");
    let out = deploy(hosts, dir, ROLL, &bad, &["--timeout", "120"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("rolled back"), "{}", text(&out));
    let unnamed =
        (!(err.contains("web slot ") && err.contains("healthcheck fails"))).then(|| text(&out));

    eventually(WAIT, "every replica back on A, on the engines too", || {
        let ps = hosts.ps(ROLL);
        if healthy(&ps, "shoal-test/busybox:a") != (4, 4) {
            return None;
        }
        let (ps_nodes, engines) = web_on_nodes(hosts, ROLL, "shoal-test/busybox:a");
        let total: usize = ALL.iter().map(|n| hosts.running(n, ROLL).len()).sum();
        (ps_nodes == engines && total == 4).then_some(())
    });
    remove_stack(hosts, ROLL);
    unnamed
}

// --- 4. start order -----------------------------------------------------------------

fn jobs(migrate_exit: u8) -> String {
    format!(
        r#"  db:
    image: {TEST_IMAGE}
    stop_grace_period: 1s
    command: ["sh", "-c", "mkdir -p /www && echo db > /www/index.html && exec httpd -f -p 8080 -h /www"]
    deploy: {{placement: {{constraints: ["node.hostname == n1"]}}}}
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ >/dev/null"]
      interval: 1s
      retries: 3
  migrate:
    image: {TEST_IMAGE}
    stop_grace_period: 1s
    command: ["sh", "-c", "sleep 1; echo migrated; exit {migrate_exit}"]
    deploy:
      mode: replicated-job
      placement: {{constraints: ["node.hostname == n2"]}}
    depends_on:
      db:
        condition: service_healthy
  api:
    image: {TEST_IMAGE}
    stop_grace_period: 1s
    command: ["sleep", "3600"]
    deploy: {{placement: {{constraints: ["node.hostname == n3"]}}}}
    depends_on:
      migrate:
        condition: service_completed_successfully
      db:
        condition: service_healthy
  worker:
    image: {TEST_IMAGE}
    stop_grace_period: 1s
    command: ["sleep", "3600"]
    deploy: {{placement: {{constraints: ["node.hostname == n1"]}}}}
    depends_on:
      api:
        condition: service_started
"#
    )
}

fn start_order_across_nodes(hosts: &Hosts, dir: &Path) {
    let stack = "wjobs";
    let file = dir.join("wjobs.yaml");
    std::fs::write(&file, format!("name: {stack}\nservices:\n{}", jobs(0))).expect("write");
    let f = file.to_str().expect("utf-8 path");
    let out = hosts.shoal(&["deploy", "-c", f, "--timeout", "120"]);
    assert!(out.status.success(), "deploy failed: {}", text(&out));

    let ps = all_tasks(hosts, stack);
    let migrate: Vec<&Value> = ps.iter().filter(|t| t["service"] == "migrate").collect();
    assert_eq!(migrate.len(), 1, "the migration runs once: {ps:#?}");
    assert_eq!(migrate[0]["state"], "complete", "{ps:#?}");
    let placed = |service: &str| -> (String, String) {
        let t = current(&ps, service)
            .into_iter()
            .next()
            .or_else(|| ps.iter().find(|t| t["service"] == service))
            .unwrap_or_else(|| panic!("no {service} task: {ps:#?}"));
        (s(&t["node"]), s(&t["container"]))
    };
    let (db, mig, api, worker) = (
        placed("db"),
        placed("migrate"),
        placed("api"),
        placed("worker"),
    );
    assert_eq!(
        [
            db.0.as_str(),
            mig.0.as_str(),
            api.0.as_str(),
            worker.0.as_str()
        ],
        ["n1", "n2", "n3", "n1"],
        "the constraints place them"
    );
    let at = |(node, c): &(String, String), field: &str| when(hosts, node, c, field);
    assert!(
        at(&db, "StartedAt") < at(&mig, "StartedAt"),
        "migrate before db"
    );
    assert!(
        at(&mig, "FinishedAt") <= at(&api, "StartedAt"),
        "api before the migration finished"
    );
    assert!(
        at(&api, "StartedAt") <= at(&worker, "StartedAt"),
        "worker before api"
    );
    assert!(
        hosts.docker("n2", &["logs", &mig.1]).contains("migrated"),
        "the migration ran on n2"
    );

    // The same file again changes nothing, so the migration does not run again.
    let out = hosts.shoal(&["deploy", "-c", f, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let reply: Value = serde_json::from_slice(&out.stdout).expect("deploy prints JSON");
    for svc in reply["services"].as_array().expect("services") {
        assert_eq!(svc["changed"], false, "{reply:#}");
    }
    let ps = all_tasks(hosts, stack);
    assert_eq!(
        ps.iter().filter(|t| t["service"] == "migrate").count(),
        1,
        "{ps:#?}"
    );
    assert_eq!(
        hosts.containers("n2", stack, true),
        vec!["migrate".to_string()],
        "one migration container on n2"
    );
    remove_stack(hosts, stack);

    // A failing migration holds api back and fails the deploy.
    let stack = "wjobfail";
    let out = deploy(hosts, dir, stack, &jobs(1), &["--timeout", "120"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("migrate slot 1"), "{}", text(&out));
    assert!(err.contains("exited with code 1"), "{}", text(&out));
    let ps = all_tasks(hosts, stack);
    let api: Vec<&Value> = ps.iter().filter(|t| t["service"] == "api").collect();
    assert!(!api.is_empty(), "{ps:#?}");
    for t in api {
        assert_eq!(t["state"], "pending", "{ps:#?}");
        assert!(s(&t["error"]).contains("waiting for migrate"), "{ps:#?}");
    }
    assert!(
        hosts.containers("n3", stack, true).is_empty(),
        "api must not have started on n3"
    );
    remove_stack(hosts, stack);
}
