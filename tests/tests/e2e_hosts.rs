//! End to end on three test hosts (`scripts/hosts.sh`: a network namespace per node, each
//! with its own Docker engine and `shoal agent`, against three `shoal controller`s).
//!
//! One harness is shared by the scenarios, which run in sequence in one test (the hosts
//! take seconds to start, and the CI budget is for behaviour, not set-up):
//! spread and power cut, revive without stale containers, partition and heal without
//! duplicates, the disconnect policy, drain and activate, constraints and
//! `max_replicas_per_node` through a cut, and global mode following nodes.
//!
//! Needs root, iproute2, iptables, nsenter, dockerd and the test image; without one, the
//! test fails saying which (scripts/test.sh runs it as root).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use shoal_tests::hosts::Hosts;
use shoal_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// An httpd answering on 8000 with a healthcheck; stops within 1 s.
fn web_service(name: &str, extra: &str) -> String {
    format!(
        r#"  {name}:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "echo ok > /tmp/index.html && exec httpd -f -p 8000 -h /tmp"]
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8000/"]
      interval: 500ms
      timeout: 2s
      retries: 3
{extra}"#
    )
}

/// A plain sleeper without a healthcheck.
fn sleeper(name: &str, extra: &str) -> String {
    format!(
        r#"  {name}:
    image: {TEST_IMAGE}
    command: ["sleep", "3600"]
    stop_grace_period: 1s
{extra}"#
    )
}

fn deploy(hosts: &Hosts, dir: &Path, stack: &str, services: &[String]) {
    let file = dir.join(format!("{stack}.yaml"));
    let yaml = format!("name: {stack}\nservices:\n{}", services.concat());
    std::fs::write(&file, yaml).expect("write compose file");
    let out = hosts.shoal(&[
        "deploy",
        "-c",
        file.to_str().expect("utf-8 path"),
        "--detach",
    ]);
    assert!(out.status.success(), "deploy {stack}: {}", text(&out));
}

/// Current tasks of the stack that should run: (service, node, state).
fn tasks(hosts: &Hosts, stack: &str) -> Vec<(String, String, String)> {
    hosts
        .ps(stack)
        .iter()
        .filter(|t| t["desired"] == "running")
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
            (s("service"), s("node"), s("state"))
        })
        .collect()
}

/// Per node, how many of `service`'s tasks are in one of `states`.
fn per_node(
    tasks: &[(String, String, String)],
    service: &str,
    states: &[&str],
) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (s, node, state) in tasks {
        if s == service && states.contains(&state.as_str()) {
            *m.entry(node.clone()).or_insert(0) += 1;
        }
    }
    m
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Running containers of `stack` on each node's own engine, by node (nodes with none
/// left out), for `service`.
fn engines(hosts: &Hosts, nodes: &[&str], stack: &str, service: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in nodes {
        let c = hosts
            .running(n, stack)
            .iter()
            .filter(|s| s.as_str() == service)
            .count();
        if c > 0 {
            m.insert(n.to_string(), c);
        }
    }
    m
}

fn status_of(hosts: &Hosts, node: &str) -> (String, String) {
    hosts
        .node_status()
        .into_iter()
        .find(|(n, _, _)| n == node)
        .map(|(_, s, a)| (s, a))
        .unwrap_or_default()
}

fn wait_status(hosts: &Hosts, node: &str, status: &str) {
    eventually(WAIT, &format!("{node} {status} in shoal nodes"), || {
        (status_of(hosts, node).0 == status).then_some(())
    });
}

fn remove_stack(hosts: &Hosts, stack: &str, nodes: &[&str]) {
    let out = hosts.shoal(&["rm", stack]);
    assert!(out.status.success(), "rm {stack}: {}", text(&out));
    eventually(WAIT, &format!("stack {stack}'s containers gone"), || {
        nodes
            .iter()
            .all(|n| hosts.containers(n, stack, true).is_empty())
            .then_some(())
    });
}

const ALL: [&str; 3] = ["n1", "n2", "n3"];

#[test]
fn three_hosts_spread_lose_nodes_and_come_back_without_duplicates() {
    ensure_test_image();
    let hosts = Hosts::up(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();

    spread_cut_and_revive(&hosts, dir.path());
    eprintln!("spread, cut, revive: {:?}", started.elapsed());
    partition_and_heal(&hosts);
    eprintln!("partition and heal: {:?}", started.elapsed());
    remove_stack(&hosts, "web", &ALL);

    disconnect_policy(&hosts, dir.path());
    eprintln!("disconnect policy: {:?}", started.elapsed());
    drain_and_activate(&hosts, dir.path());
    eprintln!("drain and activate: {:?}", started.elapsed());
    constraints_and_global_through_a_cut(&hosts, dir.path());
    eprintln!("constraints and global: {:?}", started.elapsed());
}

/// 6 replicas spread 2/2/2; a power cut of n3 brings its 2 back on n1 and n2, all
/// healthy, n3 down; reviving n3 leaves exactly 6 running, n3's stale ones removed.
fn spread_cut_and_revive(hosts: &Hosts, dir: &Path) {
    deploy(
        hosts,
        dir,
        "web",
        &[web_service("web", "    deploy:\n      replicas: 6\n")],
    );
    eventually(WAIT, "6 healthy replicas spread 2/2/2", || {
        let t = tasks(hosts, "web");
        (per_node(&t, "web", &["healthy"]) == counts(&[("n1", 2), ("n2", 2), ("n3", 2)]))
            .then_some(())
    });
    assert_eq!(
        engines(hosts, &ALL, "web", "web"),
        counts(&[("n1", 2), ("n2", 2), ("n3", 2)]),
        "each node's engine runs its 2"
    );

    let cut_at = hosts.cut("n3");
    let back = eventually(WAIT, "n3's replicas healthy on n1 and n2", || {
        let t = tasks(hosts, "web");
        let healthy = per_node(&t, "web", &["healthy"]);
        (healthy.values().sum::<usize>() == 6 && !healthy.contains_key("n3")).then_some(healthy)
    });
    let elapsed = epoch_ms().saturating_sub(cut_at);
    eprintln!("power cut of n3 -> its replicas healthy elsewhere in {elapsed} ms: {back:?}");
    assert_eq!(
        back,
        counts(&[("n1", 3), ("n2", 3)]),
        "spread over the two left"
    );
    assert_eq!(
        status_of(hosts, "n3").0,
        "down",
        "shoal nodes shows n3 down"
    );

    hosts.revive("n3");
    wait_status(hosts, "n3", "ready");
    eventually(WAIT, "n3's stale containers removed", || {
        hosts.containers("n3", "web", true).is_empty().then_some(())
    });
    assert_eq!(
        engines(hosts, &ALL, "web", "web"),
        counts(&[("n1", 3), ("n2", 3)]),
        "exactly 6 running cluster-wide; nothing moved back by itself"
    );
    let t = tasks(hosts, "web");
    let healthy = per_node(&t, "web", &["healthy"]);
    assert_eq!(healthy.values().sum::<usize>(), 6, "6 healthy tasks: {t:?}");
}

/// Partition n2 (3 replicas): they are replaced on n1 and n3 while n2's keep running
/// (the default disconnect policy); after heal n2's are removed: exactly 6 again.
fn partition_and_heal(hosts: &Hosts) {
    hosts.partition("n2");
    wait_status(hosts, "n2", "down");
    eventually(WAIT, "n2's replicas healthy on n1 and n3", || {
        let t = tasks(hosts, "web");
        let healthy = per_node(&t, "web", &["healthy"]);
        (healthy.values().sum::<usize>() == 6 && !healthy.contains_key("n2")).then_some(())
    });
    assert_eq!(
        hosts.running("n2", "web").len(),
        3,
        "without x-shoal-disconnect, a partitioned node keeps its replicas running"
    );
    hosts.heal("n2");
    wait_status(hosts, "n2", "ready");
    eventually(WAIT, "n2's duplicates removed after heal", || {
        hosts.containers("n2", "web", true).is_empty().then_some(())
    });
    let on_engines = engines(hosts, &ALL, "web", "web");
    assert_eq!(
        on_engines.values().sum::<usize>(),
        6,
        "no duplicates left: {on_engines:?}"
    );
    assert!(!on_engines.contains_key("n2"), "{on_engines:?}");
}

/// `db` asks to be stopped 2 s after its node loses every controller; `cache` does not.
/// Partitioning their nodes stops db there and keeps cache running; after heal exactly
/// one of each runs cluster-wide.
fn disconnect_policy(hosts: &Hosts, dir: &Path) {
    deploy(
        hosts,
        dir,
        "disc",
        &[
            sleeper("db", "    x-shoal-disconnect: {stop_after: 2s}\n"),
            sleeper("cache", ""),
        ],
    );
    let placed = eventually(WAIT, "db and cache running", || {
        let t = tasks(hosts, "disc");
        let db = per_node(&t, "db", &["running"]);
        let cache = per_node(&t, "cache", &["running"]);
        (db.len() == 1 && cache.len() == 1).then(|| {
            (
                db.keys().next().cloned().unwrap_or_default(),
                cache.keys().next().cloned().unwrap_or_default(),
            )
        })
    });
    let (db_node, cache_node) = placed;
    // Connected, db outlives its stop_after: the controller's heartbeat acks count as
    // contact. Bounded polling: db must stay running on its node for 3 s.
    let since = Instant::now();
    eventually(
        WAIT,
        "db running for 3 s while its node is connected",
        || {
            let t = tasks(hosts, "disc");
            assert_eq!(
                per_node(&t, "db", &["running"]),
                counts(&[(db_node.as_str(), 1)]),
                "db stopped or moved while its node was connected: {t:?}"
            );
            assert!(hosts.running(&db_node, "disc").contains(&"db".to_string()));
            (since.elapsed() > Duration::from_secs(3)).then_some(())
        },
    );
    let mut cut: Vec<&str> = vec![&db_node, &cache_node];
    cut.dedup();
    for n in &cut {
        hosts.partition(n);
    }
    eventually(WAIT, "db stopped on its partitioned node", || {
        (!hosts.running(&db_node, "disc").contains(&"db".to_string())).then_some(())
    });
    assert!(
        hosts
            .containers(&db_node, "disc", true)
            .contains(&"db".to_string()),
        "stopped, not removed"
    );
    assert!(
        hosts
            .running(&cache_node, "disc")
            .contains(&"cache".to_string()),
        "cache (no x-shoal-disconnect) keeps running on its partitioned node"
    );
    for n in &cut {
        hosts.heal(n);
    }
    for n in &cut {
        wait_status(hosts, n, "ready");
    }
    eventually(
        WAIT,
        "exactly one db and one cache running cluster-wide",
        || {
            let db = engines(hosts, &ALL, "disc", "db");
            let cache = engines(hosts, &ALL, "disc", "cache");
            let t = tasks(hosts, "disc");
            let ok = db.values().sum::<usize>() == 1
                && cache.values().sum::<usize>() == 1
                && per_node(&t, "db", &["running"]).values().sum::<usize>() == 1
                && per_node(&t, "cache", &["running"]).values().sum::<usize>() == 1;
            ok.then_some(())
        },
    );
    remove_stack(hosts, "disc", &ALL);
}

/// Drain n1: its replicas move off and n1's engine runs none; activate: scaling up puts
/// the new replicas on n1.
fn drain_and_activate(hosts: &Hosts, dir: &Path) {
    deploy(
        hosts,
        dir,
        "drn",
        &[sleeper("app", "    deploy:\n      replicas: 6\n")],
    );
    eventually(WAIT, "6 replicas spread 2/2/2", || {
        let t = tasks(hosts, "drn");
        (per_node(&t, "app", &["running"]) == counts(&[("n1", 2), ("n2", 2), ("n3", 2)]))
            .then_some(())
    });
    let out = hosts.shoal(&["node", "drain", "n1"]);
    assert!(out.status.success(), "drain: {}", text(&out));
    eventually(WAIT, "n1 drained: its replicas on n2 and n3", || {
        let t = tasks(hosts, "drn");
        (per_node(&t, "app", &["running"]) == counts(&[("n2", 3), ("n3", 3)])
            && hosts.running("n1", "drn").is_empty())
        .then_some(())
    });
    assert_eq!(status_of(hosts, "n1"), ("ready".into(), "drain".into()));
    let out = hosts.shoal(&["node", "activate", "n1"]);
    assert!(out.status.success(), "activate: {}", text(&out));
    assert_eq!(status_of(hosts, "n1"), ("ready".into(), "active".into()));
    let out = hosts.shoal(&["scale", "drn/app=9"]);
    assert!(out.status.success(), "scale: {}", text(&out));
    eventually(WAIT, "the 3 new replicas on the activated n1", || {
        let t = tasks(hosts, "drn");
        (per_node(&t, "app", &["running"]) == counts(&[("n1", 3), ("n2", 3), ("n3", 3)]))
            .then_some(())
    });
    remove_stack(hosts, "drn", &ALL);
}

/// `a`: 4 replicas, never on n1, at most 2 per node; `b`: 4 replicas, at most 1 per node
/// (one stays pending); `g`: global. A cut of n2 leaves a's and b's n2 replicas pending
/// (nowhere they may go) and g on n1 and n3; reviving n2 puts everything back.
fn constraints_and_global_through_a_cut(hosts: &Hosts, dir: &Path) {
    deploy(
        hosts,
        dir,
        "plc",
        &[
            sleeper(
                "a",
                "    deploy:\n      replicas: 4\n      placement:\n        constraints: [\"node.hostname != n1\"]\n        max_replicas_per_node: 2\n",
            ),
            sleeper(
                "b",
                "    deploy:\n      replicas: 4\n      placement:\n        max_replicas_per_node: 1\n",
            ),
            sleeper("g", "    deploy:\n      mode: global\n"),
        ],
    );
    let settled = |a: &[(&str, usize)], b: &[(&str, usize)], g: &[(&str, usize)], pending| {
        let t = tasks(hosts, "plc");
        let pend = t.iter().filter(|(_, _, s)| s == "pending").count();
        (per_node(&t, "a", &["running"]) == counts(a)
            && per_node(&t, "b", &["running"]) == counts(b)
            && per_node(&t, "g", &["running"]) == counts(g)
            && pend == pending)
            .then_some(t)
    };
    let full_a = [("n2", 2), ("n3", 2)];
    let full_b = [("n1", 1), ("n2", 1), ("n3", 1)];
    let full_g = [("n1", 1), ("n2", 1), ("n3", 1)];
    let t = eventually(
        WAIT,
        "a on n2/n3 2+2, b 1 per node + 1 pending, g everywhere",
        || settled(&full_a, &full_b, &full_g, 1),
    );
    let pending: Vec<_> = t.iter().filter(|(_, _, s)| s == "pending").collect();
    assert_eq!(
        pending[0].0, "b",
        "b's fourth replica has nowhere to go: {t:?}"
    );

    hosts.cut("n2");
    let t = eventually(
        WAIT,
        "after the cut: a 2 on n3, b on n1/n3, g on n1/n3",
        || {
            settled(
                &[("n3", 2)],
                &[("n1", 1), ("n3", 1)],
                &[("n1", 1), ("n3", 1)],
                4,
            )
        },
    );
    let mut pending: Vec<&str> = t
        .iter()
        .filter(|(_, _, s)| s == "pending")
        .map(|(s, _, _)| s.as_str())
        .collect();
    pending.sort();
    assert_eq!(
        pending,
        vec!["a", "a", "b", "b"],
        "constraints and max_replicas_per_node hold with a node gone: {t:?}"
    );
    let errors: Vec<String> = hosts
        .ps("plc")
        .iter()
        .filter(|t| t["state"] == "pending")
        .map(|t| t["error"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        errors.iter().all(|e| !e.is_empty()),
        "every pending task says why: {errors:?}"
    );

    hosts.revive("n2");
    eventually(WAIT, "after revive: everything back in place", || {
        settled(&full_a, &full_b, &full_g, 1)
    });
    for (svc, want) in [("a", 4usize), ("b", 3), ("g", 3)] {
        let on = engines(hosts, &ALL, "plc", svc);
        assert_eq!(
            on.values().sum::<usize>(),
            want,
            "{svc} on the engines: {on:?}"
        );
    }
    remove_stack(hosts, "plc", &ALL);
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
