//! Many nodes in one process: controllers and 50+ fake agents (the recording
//! `FakeRuntime`) over real gRPC on 127.0.0.1. Spread, a node lost and returning (no
//! reshuffle, then `rebalance`), drain and activate, constraints and
//! max_replicas_per_node, global services following nodes, and the leader dying together
//! with an agent. Waiting is bounded polling; clusters are cancelled on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_proto::pb;
use shoal_proto::spec::{Constraint, ConstraintField, ServiceMode, ServiceSpec, StackSpec};
use shoal_tests::cluster::{eventually, Client, Cluster, Options};

const WAIT: Duration = Duration::from_secs(90);

fn opts() -> Options {
    Options {
        node_grace: Duration::from_secs(3),
        heartbeat_interval: Duration::from_millis(250),
        ..Options::default()
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:02}")).collect()
}

fn service(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        image: "shoal-test/busybox:latest".into(),
        replicas,
        ..Default::default()
    }
}

fn stack_of(name: &str, services: Vec<ServiceSpec>) -> StackSpec {
    StackSpec {
        name: name.into(),
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
        volumes: Default::default(),
        secrets: Vec::new(),
        configs: Vec::new(),
        networks: Default::default(),
    }
}

/// Running replicas of `stack/service` by node.
async fn running(client: &Client, stack: &str, service: &str) -> Option<BTreeMap<String, usize>> {
    let rows = client.ps(stack).await.ok()?;
    let mut m = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.service == service && r.desired == "running" && r.state == "running")
    {
        *m.entry(r.node.clone()).or_default() += 1;
    }
    Some(m)
}

/// Live tasks of `stack/service` (desired running): id -> (state, node, error).
async fn tasks(client: &Client, stack: &str, service: &str) -> Vec<pb::TaskRow> {
    client
        .ps(stack)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.service == service && r.desired == "running")
        .collect()
}

async fn node_status(client: &Client, node: &str) -> Option<String> {
    let nodes = client.nodes().await.ok()?;
    nodes.into_iter().find(|n| n.name == node).map(|n| n.status)
}

/// Waits until `want` replicas run, spread as `check` accepts; returns the spread.
async fn wait_running(
    client: &Client,
    stack: &str,
    service: &str,
    want: usize,
    what: &str,
    check: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> BTreeMap<String, usize> {
    eventually(WAIT, what, || async {
        let m = running(client, stack, service).await?;
        (m.values().sum::<usize>() == want && check(&m)).then_some(m)
    })
    .await
}

fn even_within_one(m: &BTreeMap<String, usize>, nodes: &[String]) -> bool {
    let counts: Vec<usize> = nodes
        .iter()
        .map(|n| m.get(n).copied().unwrap_or(0))
        .collect();
    counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_is_replaced_returns_without_reshuffle_and_rebalance_evens_out() {
    let nodes = names("spread-n", 52);
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let mut cl = Cluster::start_with(1, &refs, opts()).await;
    let client = cl.client();
    let mut web = service("web", 104);
    web.update.parallelism = 4;
    client
        .deploy(&stack_of("spread", vec![web]))
        .await
        .expect("deploy");
    let m = wait_running(
        &client,
        "spread",
        "web",
        104,
        "104 replicas, 2 per node",
        |m| nodes.iter().all(|n| m.get(n) == Some(&2)),
    )
    .await;
    assert_eq!(m.len(), 52);

    // Power cut: the node is shown down and its two replicas run elsewhere.
    let lost = nodes[0].clone();
    let engine = cl.kill_agent(&lost).await;
    eventually(WAIT, "the lost node shown down", || async {
        (node_status(&client, &lost).await? == "down").then_some(())
    })
    .await;
    let m = wait_running(
        &client,
        "spread",
        "web",
        104,
        "replacements elsewhere",
        |m| !m.contains_key(&lost),
    )
    .await;
    assert!(m.values().all(|c| *c <= 3), "replacements spread: {m:?}");
    let before: BTreeSet<String> = tasks(&client, "spread", "web")
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(before.len(), 104);

    // It comes back with its old containers: they are fenced, and nothing is moved to it.
    cl.revive_agent(&lost, engine.clone());
    eventually(WAIT, "the node ready again", || async {
        (node_status(&client, &lost).await? == "ready").then_some(())
    })
    .await;
    eventually(
        WAIT,
        "stale containers removed on the returning node",
        || async { engine.containers().is_empty().then_some(()) },
    )
    .await;
    let after: BTreeSet<String> = tasks(&client, "spread", "web")
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(after, before, "no replica was shuffled");

    // New work goes to it.
    client.scale("spread/web", 105).await.expect("scale");
    wait_running(
        &client,
        "spread",
        "web",
        105,
        "the new replica on the returned node",
        |m| m.get(&lost) == Some(&1),
    )
    .await;

    // `shoal rebalance`: replicas move to it until the spread is even again; the CLI
    // waits for the end (bounded by its --timeout and by ours).
    let cli = tokio::process::Command::new(shoal_tests::shoal_bin())
        .args([
            "rebalance",
            "spread/web",
            "--timeout",
            "80",
            "--format",
            "json",
        ])
        .args(["--addr", &cl.addrs().join(",")])
        // The admin credentials the first controller wrote at --init.
        .arg("--credentials")
        .arg(cl.data_dir(0).join("admin"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, cli)
        .await
        .expect("shoal rebalance ends")
        .expect("run shoal rebalance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "shoal rebalance failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON value");
    assert_eq!(reply["service"], "spread/web");
    assert_eq!(reply["rebalancing"], false);
    assert_eq!(reply["before"][&lost], 1, "{reply}");
    assert!(reply["after"][&lost].as_u64().unwrap_or(0) >= 2, "{reply}");
    let r = client.rebalance_status("spread/web").await.expect("status");
    assert!(!r.rebalancing);
    let m = wait_running(&client, "spread", "web", 105, "an even spread", |m| {
        even_within_one(m, &nodes)
    })
    .await;
    assert!(m.get(&lost).copied().unwrap_or(0) >= 2, "{m:?}");
    cl.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_activate_constraints_max_per_node_and_global_services_on_50_nodes() {
    let zone_a = names("place-a", 25);
    let zone_b = names("place-b", 25);
    let mut cl = Cluster::start_with(1, &[], opts()).await;
    for n in &zone_a {
        cl.add_agent(n, &[("zone", "a")]);
    }
    for n in &zone_b {
        cl.add_agent(n, &[("zone", "b")]);
    }
    cl.wait_nodes_ready().await;
    let client = cl.client();
    let all: Vec<String> = zone_a.iter().chain(&zone_b).cloned().collect();

    let in_a = Constraint {
        field: ConstraintField::Label("zone".into()),
        equal: true,
        value: "a".into(),
    };
    let mut db = service("db", 30);
    db.placement.constraints = vec![in_a.clone()];
    db.placement.max_replicas_per_node = Some(1);
    let mut mon = service("mon", 1);
    mon.mode = ServiceMode::Global;
    mon.placement.constraints = vec![Constraint {
        equal: false,
        value: "b".into(),
        ..in_a.clone()
    }];
    let web = service("web", 50);
    let stack = stack_of("place", vec![db, mon, web]);
    client.deploy(&stack).await.expect("deploy");

    let m = wait_running(&client, "place", "db", 25, "db on each zone-a node", |m| {
        m.len() == 25 && m.values().all(|c| *c == 1)
    })
    .await;
    assert!(m.keys().all(|n| zone_a.contains(n)), "{m:?}");
    let pending: Vec<pb::TaskRow> = eventually(WAIT, "five db replicas pending", || async {
        let p: Vec<pb::TaskRow> = tasks(&client, "place", "db")
            .await
            .into_iter()
            .filter(|t| t.state == "pending" && !t.error.is_empty())
            .collect();
        (p.len() == 5).then_some(p)
    })
    .await;
    assert_eq!(
        pending[0].error,
        "no node can run it: place-a00, place-a01, place-a02, place-a03, place-a04 and 20 more \
         already run 1 replica each (max_replicas_per_node: 1); place-b00, place-b01, place-b02, \
         place-b03, place-b04 and 20 more do not match node.labels.zone==a"
    );
    wait_running(
        &client,
        "place",
        "mon",
        25,
        "mon on every zone-a node",
        |m| zone_a.iter().all(|n| m.get(n) == Some(&1)),
    )
    .await;
    wait_running(&client, "place", "web", 50, "web one per node", |m| {
        all.iter().all(|n| m.get(n) == Some(&1))
    })
    .await;

    // Drain a zone-a node: web moves off it, mon stops there; db's replica cannot move
    // (every other zone-a node has its one), so it waits pending.
    let drained = zone_a[3].clone();
    client
        .update_node(pb::UpdateNodeRequest {
            node: drained.clone(),
            availability: "drain".into(),
            ..Default::default()
        })
        .await
        .expect("drain");
    wait_running(
        &client,
        "place",
        "web",
        50,
        "web off the drained node",
        |m| !m.contains_key(&drained),
    )
    .await;
    wait_running(
        &client,
        "place",
        "mon",
        24,
        "mon off the drained node",
        |m| !m.contains_key(&drained),
    )
    .await;

    // Activate: mon comes back there; web is not moved back.
    client
        .update_node(pb::UpdateNodeRequest {
            node: drained.clone(),
            availability: "active".into(),
            ..Default::default()
        })
        .await
        .expect("activate");
    wait_running(
        &client,
        "place",
        "mon",
        25,
        "mon back on the activated node",
        |m| m.get(&drained) == Some(&1),
    )
    .await;
    let web_now = running(&client, "place", "web").await.unwrap();
    assert!(!web_now.contains_key(&drained), "web was not moved back");

    // A new zone-a node joins: mon follows it and a pending db replica takes it.
    cl.add_agent("place-a25", &[("zone", "a")]);
    wait_running(&client, "place", "mon", 26, "mon on the new node", |m| {
        m.get("place-a25") == Some(&1)
    })
    .await;
    wait_running(
        &client,
        "place",
        "db",
        26,
        "a pending db replica on the new node",
        |m| m.get("place-a25") == Some(&1) && m.values().all(|c| *c == 1),
    )
    .await;

    // Labelled out of the constraint: mon leaves it.
    client
        .update_node(pb::UpdateNodeRequest {
            node: "place-a25".into(),
            set_labels: [("zone".to_string(), "b".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await
        .expect("label");
    wait_running(
        &client,
        "place",
        "mon",
        25,
        "mon off the relabelled node",
        |m| !m.contains_key("place-a25"),
    )
    .await;
    cl.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_and_an_agent_die_together_and_the_new_leader_replaces_its_replicas() {
    let nodes = names("both-n", 50);
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let mut cl = Cluster::start_with(3, &refs, opts()).await;
    let client = cl.client();
    client
        .deploy(&stack_of("both", vec![service("web", 100)]))
        .await
        .expect("deploy");
    wait_running(
        &client,
        "both",
        "web",
        100,
        "100 replicas, 2 per node",
        |m| nodes.iter().all(|n| m.get(n) == Some(&2)),
    )
    .await;

    let leader = cl.wait_leader().await;
    let lost = nodes[7].clone();
    // Both at once, as one machine running a controller and an agent loses power.
    let _engine = cl.kill_agent(&lost).await;
    cl.kill(leader).await;
    let new_leader = cl.wait_leader().await;
    assert_ne!(new_leader, leader);

    eventually(
        WAIT,
        "the lost node shown down by the new leader",
        || async { (node_status(&client, &lost).await? == "down").then_some(()) },
    )
    .await;
    let m = wait_running(
        &client,
        "both",
        "web",
        100,
        "its replicas running elsewhere",
        |m| !m.contains_key(&lost),
    )
    .await;
    assert_eq!(m.len(), 49);
    // The other nodes were not declared down on the way.
    for n in nodes.iter().filter(|n| **n != lost) {
        assert_eq!(
            node_status(&client, n).await.as_deref(),
            Some("ready"),
            "{n}"
        );
    }
    cl.shutdown();
}
