//! A controller and several agents in one process, on the agent's recording fake
//! runtime, talking real gRPC on 127.0.0.1: the controller-agent protocol without Docker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_agent::runtime::fake::FakeRuntime;
use shoal_agent::AgentConfig;
use shoal_controller::ControllerConfig;
use shoal_proto::pb::{self, control_client::ControlClient};
use shoal_proto::spec::{ServiceSpec, StackSpec};
use tokio_util::sync::CancellationToken;

struct Cluster {
    addr: String,
    admin: shoal_tls::ClientTls,
    agents: BTreeMap<String, FakeRuntime>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn cluster(nodes: &[&str]) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let shutdown = CancellationToken::new();
    let cfg = ControllerConfig::new(
        dir.path().join("controller"),
        listener.local_addr().unwrap(),
    );
    tokio::spawn(shoal_controller::serve(cfg, listener, shutdown.clone()));
    // `--init` wrote admin credentials; agents join with the agent token.
    let admin = admin_tls(&dir.path().join("controller").join("admin")).await;
    let token = shoal_tls::join::show_token(
        std::slice::from_ref(&addr),
        &admin,
        shoal_tls::Role::Agent,
        Duration::from_secs(20),
    )
    .await
    .expect("the agent token");
    let mut agents = BTreeMap::new();
    for name in nodes {
        let fake = FakeRuntime::new();
        let cfg = AgentConfig {
            controllers: vec![addr.clone()],
            name: name.to_string(),
            data_dir: dir.path().join(name),
            heartbeat_interval: Duration::from_millis(100),
            token: Some(token.clone()),
            ..AgentConfig::default()
        };
        tokio::spawn(shoal_agent::run_with_runtime(
            cfg,
            Arc::new(fake.clone()),
            shutdown.child_token(),
        ));
        agents.insert(name.to_string(), fake);
    }
    Cluster {
        addr,
        admin,
        agents,
        shutdown,
        _dir: dir,
    }
}

/// The admin credentials in `dir`, once the controller has written them (at most 5 s).
async fn admin_tls(dir: &std::path::Path) -> shoal_tls::ClientTls {
    for _ in 0..100 {
        if let Ok(Some(c)) = shoal_tls::CredentialFiles::load(dir) {
            return shoal_tls::ClientTls::from_credentials(&c).expect("admin credentials");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no admin credentials in {}", dir.display());
}

async fn client(cl: &Cluster) -> ControlClient<tonic::transport::Channel> {
    let addr = &cl.addr;
    for _ in 0..100 {
        let endpoint = shoal_tls::client::endpoint(addr).expect("an address");
        if let Ok(c) = cl.admin.connect(endpoint).await {
            return ControlClient::new(c);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("controller at {addr} never answered");
}

/// Waits (at most 5 s) until `n` nodes are registered and ready; panics otherwise.
async fn wait_ready(c: &mut ControlClient<tonic::transport::Channel>, n: usize) {
    for _ in 0..100 {
        let nodes = c
            .nodes(pb::NodesRequest {})
            .await
            .map(|r| r.into_inner().nodes);
        if nodes.is_ok_and(|l| l.len() == n && l.iter().all(|x| x.status == "ready")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} nodes never became ready");
}

async fn ps(c: &mut ControlClient<tonic::transport::Channel>) -> Vec<pb::TaskRow> {
    match c
        .ps(pb::PsRequest {
            stack: String::new(),
            all: false,
        })
        .await
    {
        Ok(r) => r.into_inner().tasks,
        Err(_) => Vec::new(),
    }
}

/// Polls `ps` until `ok` holds (at most 20 s).
async fn until(
    c: &mut ControlClient<tonic::transport::Channel>,
    what: &str,
    ok: impl Fn(&[pb::TaskRow]) -> bool,
) -> Vec<pb::TaskRow> {
    for _ in 0..200 {
        let rows = ps(c).await;
        if ok(&rows) {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}: {:#?}", ps(c).await);
}

fn stack(replicas: u64) -> StackSpec {
    let web = ServiceSpec {
        name: "web".into(),
        image: "img:1".into(),
        replicas,
        ..Default::default()
    };
    StackSpec {
        name: "app".into(),
        services: [("web".to_string(), web)].into_iter().collect(),
        volumes: Default::default(),
        secrets: Vec::new(),
        configs: Vec::new(),
        networks: Default::default(),
    }
}

fn running_per_node(rows: &[pb::TaskRow]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rows.iter().filter(|r| r.state == "running") {
        *m.entry(r.node.clone()).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_over_agents_and_a_failed_one_is_replaced() {
    let cl = cluster(&["n1", "n2", "n3"]).await;
    let mut c = client(&cl).await;
    wait_ready(&mut c, 3).await;
    let reply = c
        .deploy(pb::DeployRequest {
            stack_json: serde_json::to_vec(&stack(6)).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.services[0].generation, 1);

    let rows = until(&mut c, "6 running replicas", |r| {
        r.iter().filter(|t| t.state == "running").count() == 6
    })
    .await;
    let spread: Vec<usize> = running_per_node(&rows).into_values().collect();
    assert_eq!(spread, vec![2, 2, 2], "{rows:#?}");
    // Each agent created exactly the containers of its own tasks, with shoal's labels.
    for (node, fake) in &cl.agents {
        let mine: Vec<&pb::TaskRow> = rows.iter().filter(|r| &r.node == node).collect();
        let containers = fake.containers();
        assert_eq!(containers.len(), mine.len(), "{node}");
        for r in mine {
            let c = fake.container_of(&r.id).expect("a container for each task");
            assert_eq!(c.labels.get("io.shoal.node"), Some(node));
            assert_eq!(
                c.labels.get("io.shoal.service").map(String::as_str),
                Some("web")
            );
        }
    }

    // A replica that exits non-zero is replaced in its slot by a new task.
    let victim = rows[0].clone();
    assert!(cl.agents[&victim.node].exit(&victim.id, 3));
    let rows = until(&mut c, "the failed replica's replacement", |r| {
        r.iter().filter(|t| t.state == "running").count() == 6
            && !r.iter().any(|t| t.id == victim.id && t.state == "running")
    })
    .await;
    let replacement = rows
        .iter()
        .find(|t| t.slot == victim.slot && t.state == "running")
        .expect("the slot runs again");
    assert_ne!(replacement.id, victim.id);

    // Scaling to 2 leaves two containers in the whole cluster.
    c.scale(pb::ScaleRequest {
        service: "web".into(),
        replicas: 2,
    })
    .await
    .unwrap();
    for _ in 0..200 {
        let total: usize = cl.agents.values().map(|f| f.containers().len()).sum();
        if total == 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("scale down left containers behind: {:#?}", ps(&mut c).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_failure_is_reported_with_its_reason() {
    let cl = cluster(&["n1"]).await;
    cl.agents["n1"].fail_pull("img:1", "manifest unknown: img:1 not found");
    let mut c = client(&cl).await;
    for _ in 0..100 {
        if c.deploy(pb::DeployRequest {
            stack_json: serde_json::to_vec(&stack(1)).unwrap(),
            ..Default::default()
        })
        .await
        .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = until(&mut c, "the task to fail", |r| {
        r.iter().any(|t| t.state == "failed")
    })
    .await;
    let failed = rows.iter().find(|t| t.state == "failed").unwrap();
    assert!(failed.error.contains("manifest unknown"), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_label_and_activate_steer_placement() {
    let cl = cluster(&["n1", "n2"]).await;
    let mut c = client(&cl).await;
    wait_ready(&mut c, 2).await;
    let mut spec = stack(4);
    let web = spec.services.get_mut("web").unwrap();
    web.update.monitor_ms = 0; // no healthcheck: count a running replica as moved at once
    c.deploy(pb::DeployRequest {
        stack_json: serde_json::to_vec(&spec).unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    until(&mut c, "4 running on two nodes", |r| {
        running_per_node(r).values().copied().collect::<Vec<_>>() == vec![2, 2]
    })
    .await;

    c.update_node(pb::UpdateNodeRequest {
        node: "n1".into(),
        availability: "drain".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    until(&mut c, "every replica moved to n2", |r| {
        running_per_node(r) == BTreeMap::from([("n2".to_string(), 4)])
    })
    .await;
    for _ in 0..100 {
        if cl.agents["n1"].containers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cl.agents["n1"].containers().is_empty(),
        "the drained node still runs containers"
    );

    // A label and activation make n1 the only place for a constrained service.
    c.update_node(pb::UpdateNodeRequest {
        node: "n1".into(),
        availability: "active".into(),
        set_labels: [("zone".to_string(), "eu".to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut eu = stack(1);
    eu.name = "eu".into();
    eu.services.get_mut("web").unwrap().placement.constraints =
        vec![shoal_proto::spec::Constraint {
            field: shoal_proto::spec::ConstraintField::Label("zone".into()),
            equal: true,
            value: "eu".into(),
        }];
    c.deploy(pb::DeployRequest {
        stack_json: serde_json::to_vec(&eu).unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let rows = until(&mut c, "the constrained replica on n1", |r| {
        r.iter().any(|t| t.stack == "eu" && t.state == "running")
    })
    .await;
    let placed = rows.iter().find(|t| t.stack == "eu").unwrap();
    assert_eq!(placed.node, "n1");
    // Activation does not shuffle: app's replicas stay on n2.
    assert_eq!(
        running_per_node(
            &rows
                .iter()
                .filter(|t| t.stack == "app")
                .cloned()
                .collect::<Vec<_>>()
        ),
        BTreeMap::from([("n2".to_string(), 4)])
    );
    // A ready node is not forgotten by accident.
    let refused = c
        .remove_node(pb::RemoveNodeRequest {
            node: "n1".into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
}
