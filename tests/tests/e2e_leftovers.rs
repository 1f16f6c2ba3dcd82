//! Issue 15 on three test hosts (`scripts/hosts.sh`): machines that ran a shoal cluster
//! are given a new one, and what the old one left is neither reused nor disturbed.
//!
//! 1. A stack runs in a first cluster; `hosts.sh new-cluster` gives the machines a new
//!    cluster (new data dirs, the engines kept: the old replicas keep running). The same
//!    stack deployed in the new cluster runs every replica in containers of its own; the
//!    old containers are left as they were, and each agent names them in a warning.
//! 2. What overlaps the pool is reported: the old cluster's networks, and a route added
//!    on n2, which `shoal nodes` names within seconds and forgets once it is removed.
//! 3. A stack removed just before its node's agent stops, or while it is stopped, loses
//!    its networks on that node once the agent is back.
//!
//! The scenarios share one set of hosts and run in sequence.
//! Needs root, iproute2, iptables, nsenter, dockerd and the test image (scripts/test.sh).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::hosts::Hosts;
use shoal_tests::*;

const WAIT: Duration = Duration::from_secs(90);
const STACK: &str = "left";
/// The services of [`STACK`] and their replicas.
const SERVICES: [(&str, usize); 3] = [("web", 3), ("cache", 2), ("db", 1)];
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const ROUTE: &str = "10.208.77.0/24";
/// The Docker networks of the stack `fresh`.
const FRESH: [&str; 2] = ["shoal-fresh", "shoal-fresh.back"];

fn write(dir: &Path, stack: &str, body: &str) -> String {
    let file = dir.join(format!("{stack}.yaml"));
    std::fs::write(&file, format!("name: {stack}\n{body}")).unwrap();
    file.display().to_string()
}

fn sleeper(name: &str, deploy: &str) -> String {
    format!(
        "  {name}:\n    image: {TEST_IMAGE}\n    command: [\"sleep\", \"3600\"]\n    stop_grace_period: 1s\n    deploy:\n{deploy}"
    )
}

fn left_stack(dir: &Path) -> String {
    let services: String = SERVICES
        .iter()
        .map(|(name, n)| sleeper(name, &format!("      replicas: {n}\n")))
        .collect();
    write(dir, STACK, &format!("services:\n{services}"))
}

/// `shoal deploy` without `--detach`: returns once every replica runs.
fn deploy(hosts: &Hosts, file: &str) {
    let out = hosts.shoal(&["deploy", "-c", file]);
    assert!(out.status.success(), "deploy {file}: {}", text(&out));
}

/// Task id to container id of the stack's replicas, once `count` run.
fn running_replicas(hosts: &Hosts, stack: &str, count: usize) -> BTreeMap<String, String> {
    eventually(
        WAIT,
        &format!("{count} replicas of {stack} running"),
        || {
            let running: BTreeMap<String, String> = hosts
                .ps(stack)
                .iter()
                .filter(|t| t["desired"] == "running" && t["state"] == "running")
                .map(|t| (s(&t["id"]), s(&t["container"])))
                .collect();
            (running.len() == count).then_some(running)
        },
    )
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// One container on an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    name: String,
    cluster: String,
    state: String,
}

/// The stack's containers on the node's engine, any state, by full id.
fn on_engine(hosts: &Hosts, node: &str, stack: &str) -> BTreeMap<String, Seen> {
    let filter = format!("label=io.shoal.stack={stack}");
    let format = "{{.ID}} {{.Names}} {{.Label \"io.shoal.cluster\"}} {{.State}}";
    let out = hosts.docker(
        node,
        &[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &filter,
            "--format",
            format,
        ],
    );
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [id, name, cluster, state] = f[..] else {
                return None;
            };
            let seen = Seen {
                name: name.into(),
                cluster: cluster.into(),
                state: state.into(),
            };
            Some((id.to_string(), seen))
        })
        .collect()
}

/// Each node's conflicts in `shoal nodes --format json`.
fn conflicts(hosts: &Hosts) -> BTreeMap<String, Vec<String>> {
    let nodes = eventually(WAIT, "shoal nodes to answer", || hosts.json(&["nodes"]));
    nodes
        .as_array()
        .expect("nodes is an array")
        .iter()
        .map(|n| {
            let list = n["conflicts"].as_array().expect("conflicts is an array");
            (s(&n["name"]), list.iter().map(s).collect())
        })
        .collect()
}

/// Until `shoal nodes` shows the node ready.
fn wait_ready(hosts: &Hosts, node: &str) {
    eventually(WAIT, &format!("{node} ready"), || {
        hosts
            .node_status()
            .iter()
            .any(|(name, status, _)| name == node && status == "ready")
            .then_some(())
    });
}

fn docker_networks(hosts: &Hosts, node: &str) -> BTreeSet<String> {
    let out = hosts.docker(node, &["network", "ls", "--format", "{{.Name}}"]);
    out.lines().map(str::to_string).collect()
}

#[test]
fn a_new_cluster_on_used_machines_leaves_the_old_one_alone_and_reports_overlaps() {
    ensure_test_image();
    let started = Instant::now();
    let mut hosts = Hosts::up(3);
    let dir = tempfile::tempdir().unwrap();
    let total: usize = SERVICES.iter().map(|(_, n)| n).sum();

    // The first cluster runs the stack.
    let file = left_stack(dir.path());
    deploy(&hosts, &file);
    let old_tasks = running_replicas(&hosts, STACK, total);
    let old: BTreeMap<&str, BTreeMap<String, Seen>> = NODES
        .iter()
        .map(|n| (*n, on_engine(&hosts, n, STACK)))
        .collect();
    let old_ids: BTreeSet<&String> = old.values().flat_map(|m| m.keys()).collect();
    assert_eq!(old_ids.len(), total, "{old:?}");
    let old_cluster = old
        .values()
        .flat_map(|m| m.values())
        .next()
        .unwrap()
        .cluster
        .clone();
    assert_eq!(old_cluster.len(), 16, "{old:?}");
    eprintln!("first cluster running after {:?}", started.elapsed());

    // A new cluster on the same machines: the old replicas are still on the engines.
    let logged: BTreeMap<&str, usize> = NODES
        .iter()
        .map(|n| (*n, hosts.agent_log(n).len()))
        .collect();
    hosts.new_cluster();
    for node in NODES {
        assert_eq!(
            on_engine(&hosts, node, STACK),
            old[node],
            "{node} after new-cluster"
        );
    }
    eprintln!("new cluster ready after {:?}", started.elapsed());

    // The same stack in the new cluster: every replica runs in a container of its own.
    deploy(&hosts, &file);
    let new_tasks = running_replicas(&hosts, STACK, total);
    let shared: Vec<&String> = new_tasks
        .keys()
        .filter(|t| old_tasks.contains_key(*t))
        .collect();
    assert!(
        shared.is_empty(),
        "task ids repeat the old cluster's: {shared:?}"
    );
    let mut new_ids: BTreeSet<String> = BTreeSet::new();
    for node in NODES {
        let now = on_engine(&hosts, node, STACK);
        // The old cluster's containers are as they were: not adopted, stopped or removed.
        for (id, seen) in &old[node] {
            assert_eq!(now.get(id), Some(seen), "{node}: old container {id}");
        }
        for (id, seen) in now.iter().filter(|(id, _)| !old[node].contains_key(*id)) {
            assert_ne!(seen.cluster, old_cluster, "{node}: {id}");
            assert_eq!(seen.cluster.len(), 16, "{node}: {id} {seen:?}");
            assert_eq!(seen.state, "running", "{node}: {id} {seen:?}");
            new_ids.insert(id.clone());
        }
    }
    let in_ps: BTreeSet<String> = new_tasks.values().cloned().collect();
    assert_eq!(in_ps, new_ids, "ps names exactly the new containers");
    assert!(
        in_ps.iter().all(|c| !old_ids.contains(c)),
        "no replica matched an old container"
    );
    // Each agent named the old containers on its engine in a warning.
    for node in NODES.iter().filter(|n| !old[**n].is_empty()) {
        let log = eventually(WAIT, &format!("{node}'s agent to warn"), || {
            let log = hosts.agent_log(node)[logged[node]..].to_string();
            log.contains("containers of another shoal cluster")
                .then_some(log)
        });
        for seen in old[*node].values() {
            assert!(
                log.contains(&seen.name),
                "{node} does not name {}: {log}",
                seen.name
            );
        }
    }
    eprintln!("new cluster's stack running after {:?}", started.elapsed());

    // 2. The old cluster's network holding its replicas overlaps the pool: reported.
    let holder = NODES.iter().find(|n| !old[**n].is_empty()).unwrap();
    let theirs = format!("docker network \"shoal-{STACK}\" of shoal cluster {old_cluster}");
    eventually(WAIT, "the old cluster's network reported", || {
        conflicts(&hosts)[*holder]
            .iter()
            .any(|c| c.starts_with(&theirs))
            .then_some(())
    });
    // A route into the pool on n2.
    let add = hosts.exec("n2", &["ip", "route", "add", ROUTE, "dev", "eth0"]);
    assert!(add.status.success(), "{}", text(&add));
    let at = Instant::now();
    let named = eventually(Duration::from_secs(60), "n2's route reported", || {
        conflicts(&hosts)["n2"]
            .iter()
            .find(|c| c.contains(ROUTE))
            .cloned()
    });
    assert_eq!(
        named,
        format!("route {ROUTE} dev eth0 overlaps the cluster pool 10.208.0.0/12")
    );
    eprintln!("route reported {:?} after it was added", at.elapsed());
    let table = hosts.shoal(&["nodes"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains(&format!("n2: {named}")),
        "{}",
        text(&table)
    );
    let del = hosts.exec("n2", &["ip", "route", "del", ROUTE, "dev", "eth0"]);
    assert!(del.status.success(), "{}", text(&del));
    eventually(
        Duration::from_secs(60),
        "n2's route no longer reported",
        || (!conflicts(&hosts)["n2"].iter().any(|c| c.contains(ROUTE))).then_some(()),
    );

    // 3. A stack on every node, removed just before n1's agent stops; then again,
    //    removed while it is stopped (it cannot have heard of it: only what it finds on
    //    the engine at start tells it the networks are there).
    let fresh = write(
        dir.path(),
        "fresh",
        &format!(
            "services:\n{}networks:\n  back: {{}}\n",
            sleeper("probe", "      mode: global\n")
                .replace("    deploy:", "    networks: [default, back]\n    deploy:")
        ),
    );
    for stopped_first in [false, true] {
        deploy(&hosts, &fresh);
        let before = docker_networks(&hosts, "n1");
        assert!(FRESH.iter().all(|n| before.contains(*n)), "{before:?}");
        if stopped_first {
            hosts.stop_agent("n1");
        }
        let rm = hosts.shoal(&["rm", "fresh"]);
        assert!(rm.status.success(), "{}", text(&rm));
        if !stopped_first {
            hosts.stop_agent("n1");
        }
        hosts.start_agent("n1");
        eventually(WAIT, "the removed stack's networks gone from n1", || {
            let now = docker_networks(&hosts, "n1");
            FRESH.iter().all(|n| !now.contains(*n)).then_some(())
        });
        wait_ready(&hosts, "n1");
    }
    // The old cluster's network of the first stack stays where it was.
    if !old["n1"].is_empty() {
        assert!(docker_networks(&hosts, "n1").contains(&format!("shoal-{STACK}")));
    }
    eprintln!("e2e_leftovers done after {:?}", started.elapsed());
}
