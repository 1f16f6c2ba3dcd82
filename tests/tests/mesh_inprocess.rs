//! The cluster network as the controller tells agents about it, over the real agent
//! session on 127.0.0.1: three hand-driven agents report their replicas' addresses, and
//! each hears names and mesh ports follow readiness; Compose networks each get their own
//! subnets and names, and an external network is shared by two stacks. Prints how long
//! each update took to reach an agent (no timing is asserted).

use std::time::{Duration, Instant};

use shoal_controller::pki::ClusterCa;
use shoal_proto::pb;
use shoal_proto::pb::agent_session_client::AgentSessionClient;
use shoal_proto::spec::{
    Constraint, ConstraintField, NetworkSpec, PortMode, PortSpec, Protocol, ServiceNetwork,
    ServiceSpec, StackSpec,
};
use shoal_tests::cluster::{channel, mint, Cluster};
use shoal_tls::{Identity, Role};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(20);

/// One agent session driven by the test.
struct Agent {
    up: mpsc::Sender<pb::AgentMessage>,
    down: tonic::Streaming<pb::ControllerMessage>,
    /// The assignment set as the messages received so far make it.
    last: Option<pb::Assignments>,
    /// Whether the hello said the agent applies deltas (n3 does not: an older agent).
    deltas: bool,
}

impl Agent {
    /// Opens node `name`'s session with a certificate for it, minted with the cluster's CA.
    async fn connect(
        ca: &ClusterCa,
        addr: &str,
        name: &str,
        ip: &str,
        stop: &CancellationToken,
    ) -> Agent {
        let (up, rx) = mpsc::channel(64);
        let deltas = name != "n3";
        up.send(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
                name: name.into(),
                address: ip.into(),
                cpus: 4.0,
                memory_bytes: 8 << 30,
                deltas,
                ..Default::default()
            })),
        })
        .await
        .expect("queue hello");
        let tls = mint(
            ca,
            Identity::new(Role::Agent, name),
            std::time::SystemTime::now(),
            Duration::from_secs(3600),
        );
        let channel = channel(&tls, addr)
            .await
            .expect("connect to the controller");
        let mut client = AgentSessionClient::new(channel);
        let down = client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("open a session")
            .into_inner();
        // Heartbeats keep the node ready.
        let beat = up.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            for seq in 0.. {
                let msg = pb::AgentMessage {
                    msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
                        seq,
                        ..Default::default()
                    })),
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                if beat.send(msg).await.is_err() {
                    return;
                }
            }
        });
        Agent {
            up,
            down,
            last: None,
            deltas,
        }
    }

    /// Reads assignment sets until `f` accepts one (bounded); returns it and how long
    /// it took.
    async fn until<T>(
        &mut self,
        what: &str,
        f: impl Fn(&pb::Assignments) -> Option<T>,
    ) -> (T, Duration) {
        let start = Instant::now();
        if let Some(t) = self.last.as_ref().and_then(&f) {
            return (t, Duration::ZERO);
        }
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, self.down.message()).await else {
                panic!("timed out waiting for {what}; last: {:?}", self.last);
            };
            let msg = next.expect("session stream").expect("session open");
            if let Some(pb::controller_message::Msg::Assignments(a)) = msg.msg {
                // Later messages are deltas: `last` is the whole set they make.
                if !self.deltas {
                    assert_eq!(
                        a.base, 0,
                        "an agent that did not say it applies deltas got one"
                    );
                }
                shoal_tests::wire::apply(&mut self.last, a);
                if let Some(t) = self.last.as_ref().and_then(&f) {
                    return (t, start.elapsed());
                }
            }
        }
    }

    /// Reports `task` running with an address on each network.
    async fn report_ips(&self, task: &str, ips: &[(&str, &str)]) {
        self.up
            .send(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Status(pb::TaskStatus {
                    task_id: task.into(),
                    state: "running".into(),
                    container_id: format!("c-{task}"),
                    ip: ips[0].1.into(),
                    ips: ips
                        .iter()
                        .map(|(n, ip)| pb::NetworkAddress {
                            network: n.to_string(),
                            ip: ip.to_string(),
                        })
                        .collect(),
                    ..Default::default()
                })),
            })
            .await
            .expect("send status");
    }

    async fn report(&self, task: &str, state: &str, ip: &str) {
        self.up
            .send(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Status(pb::TaskStatus {
                    task_id: task.into(),
                    state: state.into(),
                    container_id: format!("c-{task}"),
                    ip: ip.into(),
                    ..Default::default()
                })),
            })
            .await
            .expect("send status");
    }
}

fn on(name: &str, node: &str) -> ServiceSpec {
    let mut s = ServiceSpec {
        name: name.into(),
        image: "img:1".into(),
        replicas: 1,
        ..Default::default()
    };
    s.placement.constraints = vec![Constraint {
        field: ConstraintField::Hostname,
        equal: true,
        value: node.into(),
    }];
    s
}

fn names(a: &pb::Assignments, name: &str) -> Option<Vec<String>> {
    a.mesh
        .as_ref()?
        .names
        .iter()
        .find(|n| n.network == "app" && n.name == name)
        .map(|n| n.ips.clone())
}

fn names_on(a: &pb::Assignments, network: &str, name: &str) -> Option<Vec<String>> {
    a.mesh
        .as_ref()?
        .names
        .iter()
        .find(|n| n.network == network && n.name == name)
        .map(|n| n.ips.clone())
}

fn subnet_keys(a: &pb::Assignments) -> Vec<String> {
    a.mesh
        .iter()
        .flat_map(|m| m.subnets.iter().map(|s| s.network.clone()))
        .collect()
}

/// `stack`'s network `net` (`ext:NAME` for an external one), with aliases.
fn attach(stack: &str, net: &str, aliases: &[&str]) -> ServiceNetwork {
    let key = match net.strip_prefix("ext:") {
        Some(name) => shoal_proto::network::external_key(name),
        None => shoal_proto::network::local_key(stack, net),
    };
    ServiceNetwork {
        name: net.trim_start_matches("ext:").into(),
        key,
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    }
}

fn stack_of(name: &str, services: Vec<ServiceSpec>) -> StackSpec {
    let mut networks = std::collections::BTreeMap::new();
    for svc in &services {
        for a in &svc.networks {
            networks.insert(
                a.name.clone(),
                NetworkSpec {
                    key: a.key.clone(),
                    external: a.key.starts_with("ext:"),
                    internal: false,
                },
            );
        }
    }
    StackSpec {
        name: name.into(),
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
        networks,
        ..Default::default()
    }
}

fn port_ips(a: &pb::Assignments, published: u32) -> Option<Vec<String>> {
    a.mesh
        .as_ref()?
        .ports
        .iter()
        .find(|p| p.published == published)
        .map(|p| p.ips.clone())
}

fn task_of(a: &pb::Assignments, service: &str) -> Option<String> {
    a.tasks
        .iter()
        .find(|t| t.service == service && t.desired == "running")
        .map(|t| t.task_id.clone())
}

#[tokio::test]
async fn agents_hear_names_and_mesh_ports_follow_ready_replicas() {
    shoal_tests::cluster::init_tracing();
    // One controller, no agents of its own: the three sessions below are the test's.
    let cl = Cluster::start(1, &[]).await;
    let addr = cl.addrs()[0].clone();
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let client = cl.client();
    let mut n1 = Agent::connect(&cl.ca, &addr, "n1", "192.0.2.1", &stop).await;
    let mut n2 = Agent::connect(&cl.ca, &addr, "n2", "192.0.2.2", &stop).await;
    let mut n3 = Agent::connect(&cl.ca, &addr, "n3", "192.0.2.3", &stop).await;

    let mut web = on("web", "n1");
    web.ports = vec![PortSpec {
        target: 80,
        published: Some(8080),
        protocol: Protocol::Tcp,
        host_ip: None,
        mode: PortMode::Ingress,
    }];
    let mut db = on("db", "n2");
    db.networks = vec![attach("app", "default", &["database"])];
    let stack = StackSpec {
        name: "app".into(),
        services: [("web".to_string(), web), ("db".to_string(), db)]
            .into_iter()
            .collect(),
        networks: Default::default(),
        volumes: Default::default(),
        secrets: Vec::new(),
        configs: Vec::new(),
    };
    client.deploy(&stack).await.expect("deploy");

    let (web_task, _) = n1.until("web assigned to n1", |a| task_of(a, "web")).await;
    let (db_task, _) = n2.until("db assigned to n2", |a| task_of(a, "db")).await;
    // n1 hosts app: it gets its subnet and a route to n2's.
    let (mesh, _) = n1
        .until("n1's subnet and route", |a| {
            let m = a.mesh.as_ref()?;
            (m.subnets.len() == 1 && m.routes.len() == 1).then(|| m.clone())
        })
        .await;
    assert_eq!(mesh.pool, "10.208.0.0/12");
    assert_eq!(mesh.subnets[0].network, "app");
    assert_eq!(
        mesh.routes[0].via, "192.0.2.2",
        "n2's subnet is routed via n2"
    );
    assert_ne!(mesh.routes[0].subnet, mesh.subnets[0].subnet);

    // Not ready yet: db is known, with no address.
    n2.report(&db_task, "starting", "").await;
    let (ips, _) = n1.until("db named, no replica", |a| names(a, "db")).await;
    assert_eq!(ips, Vec::<String>::new());

    let sent = Instant::now();
    n2.report(&db_task, "running", "10.208.0.2").await;
    let (ips, took) = n1
        .until("db answers with its replica", |a| {
            names(a, "db").filter(|ips| !ips.is_empty())
        })
        .await;
    eprintln!(
        "db ready -> n1 told in {:?} (since report {:?})",
        took,
        sent.elapsed()
    );
    assert_eq!(ips, vec!["10.208.0.2".to_string()]);
    assert_eq!(
        n1.last.as_ref().and_then(|a| names(a, "database")),
        Some(vec!["10.208.0.2".to_string()]),
        "the alias too"
    );

    // The published port: every node hears of it, n3 (no replica) included.
    n1.report(&web_task, "running", "10.208.1.2").await;
    let (ips, took) = n3
        .until("n3 serves web's port", |a| {
            port_ips(a, 8080).filter(|ips| !ips.is_empty())
        })
        .await;
    eprintln!("web ready -> n3's mesh told in {took:?}");
    assert_eq!(ips, vec!["10.208.1.2".to_string()]);
    assert!(
        n3.last
            .as_ref()
            .and_then(|a| a.mesh.as_ref())
            .is_some_and(|m| m.subnets.is_empty() && m.members.is_empty() && m.routes.len() == 2),
        "n3 hosts no stack: no subnet, no containers, but routes to both subnets"
    );

    // db turns unhealthy: it leaves the names at once.
    n2.report(&db_task, "unhealthy", "10.208.0.2").await;
    let (_, took) = n1
        .until("db leaves the names", |a| {
            names(a, "db").filter(|ips| ips.is_empty())
        })
        .await;
    eprintln!("db unhealthy -> n1 told in {took:?}");
}

#[tokio::test]
async fn networks_get_their_own_subnets_and_names_and_external_ones_are_shared() {
    shoal_tests::cluster::init_tracing();
    let cl = Cluster::start(1, &[]).await;
    let addr = cl.addrs()[0].clone();
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let client = cl.client();
    let mut n1 = Agent::connect(&cl.ca, &addr, "n1", "192.0.2.1", &stop).await;
    let mut n2 = Agent::connect(&cl.ca, &addr, "n2", "192.0.2.2", &stop).await;
    let mut n3 = Agent::connect(&cl.ca, &addr, "n3", "192.0.2.3", &stop).await;

    // web (front + back) on n1, db (back, alias db2 there) on n2, proxy (front) on n3.
    let mut web = on("web", "n1");
    web.networks = vec![attach("app", "front", &[]), attach("app", "back", &[])];
    let mut db = on("db", "n2");
    db.networks = vec![attach("app", "back", &["db2"])];
    let mut proxy = on("proxy", "n3");
    proxy.networks = vec![attach("app", "front", &[])];
    client
        .deploy(&stack_of("app", vec![web, db, proxy]))
        .await
        .expect("deploy app");
    // Two stacks on the external network `shared`: api on n1, client on n2.
    let mut api = on("api", "n1");
    api.networks = vec![attach("one", "ext:shared", &[])];
    client
        .deploy(&stack_of("one", vec![api]))
        .await
        .expect("deploy one");
    let mut cli = on("client", "n2");
    cli.networks = vec![
        attach("two", "default", &[]),
        attach("two", "ext:shared", &[]),
    ];
    client
        .deploy(&stack_of("two", vec![cli]))
        .await
        .expect("deploy two");

    let (web_task, _) = n1.until("web on n1", |a| task_of(a, "web")).await;
    let (api_task, _) = n1.until("api on n1", |a| task_of(a, "api")).await;
    let (db_task, _) = n2.until("db on n2", |a| task_of(a, "db")).await;
    let (client_task, _) = n2.until("client on n2", |a| task_of(a, "client")).await;
    let (proxy_task, _) = n3.until("proxy on n3", |a| task_of(a, "proxy")).await;

    let (keys, _) = n1
        .until("n1's three networks", |a| {
            let k = subnet_keys(a);
            (k.len() == 3).then_some(k)
        })
        .await;
    assert_eq!(keys, vec!["app.back", "app.front", "ext:shared"]);
    let (keys, _) = n3
        .until("n3's one network", |a| {
            let k = subnet_keys(a);
            (!k.is_empty()).then_some(k)
        })
        .await;
    assert_eq!(keys, vec!["app.front"], "proxy's node hosts front only");
    // Every (network, node) pair has its own subnet: none shared between networks.
    let (subnets, _) = n2
        .until("n2's three networks", |a| {
            let m = a.mesh.as_ref()?;
            (m.subnets.len() == 3).then(|| m.subnets.clone())
        })
        .await;
    let mut mine: Vec<&str> = subnets.iter().map(|s| s.subnet.as_str()).collect();
    mine.sort();
    mine.dedup();
    assert_eq!(mine.len(), 3);
    let shared = subnets.iter().find(|s| s.network == "ext:shared").unwrap();
    assert_eq!(
        shared.peers.len(),
        2,
        "n1's and n2's subnets of the shared network"
    );

    n1.report_ips(
        &web_task,
        &[("app.front", "10.208.1.2"), ("app.back", "10.208.0.2")],
    )
    .await;
    n2.report_ips(&db_task, &[("app.back", "10.208.3.2")]).await;
    n3.report_ips(&proxy_task, &[("app.front", "10.208.6.2")])
        .await;
    n1.report_ips(&api_task, &[("ext:shared", "10.208.2.2")])
        .await;
    n2.report_ips(
        &client_task,
        &[("two", "10.208.5.2"), ("ext:shared", "10.208.4.2")],
    )
    .await;

    let (ips, took) = n3
        .until("db on back, with its alias", |a| {
            names_on(a, "app.back", "db2").filter(|ips| !ips.is_empty())
        })
        .await;
    eprintln!("db ready -> n3 told in {took:?}");
    assert_eq!(ips, vec!["10.208.3.2".to_string()]);
    let last = n3.last.clone().unwrap();
    assert_eq!(
        names_on(&last, "app.front", "db"),
        None,
        "db is not on front"
    );
    assert_eq!(
        names_on(&last, "app.front", "db2"),
        None,
        "the alias is back's only"
    );
    let (web_front, _) = n3
        .until("web on front", |a| {
            names_on(a, "app.front", "web").filter(|ips| !ips.is_empty())
        })
        .await;
    assert_eq!(web_front, vec!["10.208.1.2".to_string()]);
    // n1 knows web's container is on both networks (the DNS server tells who asks).
    let (members, _) = n1
        .until("web's addresses as members", |a| {
            let m = a.mesh.as_ref()?;
            let web = m.members.iter().find(|d| d.ip == "10.208.1.2")?;
            Some(web.networks.clone())
        })
        .await;
    assert_eq!(members, vec!["app.front", "app.back"]);
    // Both stacks' services are named on the shared network.
    let (ips, _) = n2
        .until("api on the shared network", |a| {
            names_on(a, "ext:shared", "api").filter(|ips| !ips.is_empty())
        })
        .await;
    assert_eq!(ips, vec!["10.208.2.2".to_string()]);
    let (ips, _) = n1
        .until("client on the shared network", |a| {
            names_on(a, "ext:shared", "client").filter(|ips| !ips.is_empty())
        })
        .await;
    assert_eq!(ips, vec!["10.208.4.2".to_string()]);
}
