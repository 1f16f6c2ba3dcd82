//! The cluster network each node is told about: subnets, routes, names and mesh ports,
//! by the exact view `endpoints::for_node` computes; subnets allocated per network and
//! node; names per network; external networks shared by the stacks declaring them.

mod common;
use common::*;

use std::net::IpAddr;

use shoal_controller::endpoints::{for_node, MeshPort};
use shoal_controller::state::*;
use shoal_proto::spec::*;
use shoal_proto::task::{Desired, TaskState};

fn on(name: &str, node: &str) -> ServiceSpec {
    let mut s = svc(name, 1);
    s.placement.constraints = vec![Constraint {
        field: ConstraintField::Hostname,
        equal: true,
        value: node.into(),
    }];
    s
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Reports the task of `service` as `state` with address `addr`.
fn report_ip(s: &mut ClusterState, service: &str, state: TaskState, addr: &str) {
    let t = s
        .tasks
        .values()
        .find(|t| t.service == service && t.desired == Desired::Running)
        .cloned()
        .expect("a task");
    s.apply(&Command::TaskStatus {
        node: t.node.clone().expect("assigned"),
        updates: vec![TaskUpdate {
            task: t.id.clone(),
            state,
            container_id: format!("c-{}", t.id),
            exit_code: None,
            error: String::new(),
            ip: Some(ip(addr)),
            ips: Default::default(),
        }],
        now_ms: 1,
    });
}

/// `service` on network `net` of `stack` (`ext:` for an external one), with aliases.
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

/// Reports `stack/service`'s task as running with an address on each network.
fn report_ips(s: &mut ClusterState, stack: &str, service: &str, addrs: &[(&str, &str)]) {
    let t = s
        .tasks
        .values()
        .find(|t| t.stack == stack && t.service == service && t.desired == Desired::Running)
        .cloned()
        .expect("a task");
    s.apply(&Command::TaskStatus {
        node: t.node.clone().expect("assigned"),
        updates: vec![TaskUpdate {
            task: t.id.clone(),
            state: TaskState::Running,
            container_id: format!("c-{}", t.id),
            exit_code: None,
            error: String::new(),
            ip: Some(ip(addrs[0].1)),
            ips: addrs.iter().map(|(n, a)| (n.to_string(), ip(a))).collect(),
        }],
        now_ms: 1,
    });
}

fn deploy(s: &mut ClusterState, name: &str, services: Vec<ServiceSpec>, now_ms: u64) {
    let mut networks = std::collections::BTreeMap::new();
    for svc in &services {
        for a in &svc.networks {
            networks.insert(
                a.name.clone(),
                NetworkSpec {
                    key: a.key.clone(),
                    external: a.key.starts_with("ext:"),
                    internal: a.name == "private",
                },
            );
        }
    }
    s.apply(&Command::DeployStack {
        spec: StackSpec {
            name: name.into(),
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            networks,
            ..Default::default()
        },
        now_ms,
        secrets: Default::default(),
    });
    settle(s, now_ms);
}

fn cluster() -> ClusterState {
    // Addresses: node `a` is 10.0.0.1, `bb` 10.0.0.2, `ccc` 10.0.0.3.
    let mut web = on("web", "a");
    web.ports = vec![
        PortSpec {
            target: 8080,
            published: Some(80),
            protocol: Protocol::Tcp,
            host_ip: None,
            mode: PortMode::Ingress,
        },
        PortSpec {
            target: 5353,
            published: Some(53),
            protocol: Protocol::Udp,
            host_ip: None,
            mode: PortMode::Ingress,
        },
        // Host mode: only where a replica runs, not in the mesh.
        PortSpec {
            target: 9000,
            published: Some(9000),
            protocol: Protocol::Tcp,
            host_ip: None,
            mode: PortMode::Host,
        },
    ];
    let mut db = on("db", "bb");
    db.networks = vec![attach("app", "default", &["database"])];
    let mut s = deployed(
        vec![
            node("a", 4.0, 4096),
            node("bb", 4.0, 4096),
            node("ccc", 4.0, 4096),
        ],
        vec![web, db],
    );
    settle(&mut s, 0);
    s
}

#[test]
fn subnets_are_allocated_per_stack_and_node_at_assignment() {
    let s = cluster();
    // `db` sorts first, so its node gets the first subnet.
    let app = s.subnets.get("app").expect("app has subnets");
    assert_eq!(
        app.iter()
            .map(|(n, i)| (n.as_str(), *i))
            .collect::<Vec<_>>(),
        vec![("a", 1), ("bb", 0)]
    );
}

#[test]
fn a_node_routes_to_the_other_subnets_of_its_stacks_and_answers_ready_replicas() {
    let mut s = cluster();
    report_ip(&mut s, "web", TaskState::Running, "10.208.1.2");
    report_ip(&mut s, "db", TaskState::Running, "10.208.0.2");
    let m = for_node(&s, "a");
    assert_eq!(m.pool, "10.208.0.0/12");
    assert_eq!(
        m.subnets.get("app"),
        Some(&(
            "10.208.1.0/24".to_string(),
            vec!["10.208.1.0/24".to_string(), "10.208.0.0/24".to_string()]
        ))
    );
    assert_eq!(
        m.routes.into_iter().collect::<Vec<_>>(),
        vec![("10.208.0.0/24".to_string(), ip("10.0.0.2"))]
    );
    let names: Vec<(String, Vec<IpAddr>)> =
        m.names.into_iter().map(|((_, n), ips)| (n, ips)).collect();
    assert_eq!(
        names,
        vec![
            ("database".into(), vec![ip("10.208.0.2")]),
            ("db".into(), vec![ip("10.208.0.2")]),
            ("web".into(), vec![ip("10.208.1.2")]),
        ]
    );
    // Every node serves the published ingress ports, TCP and UDP, also one hosting
    // nothing.
    let port = vec![
        MeshPort {
            published: 80,
            target: 8080,
            protocol: Protocol::Tcp,
            host_ip: None,
            ips: vec![ip("10.208.1.2")],
        },
        MeshPort {
            published: 53,
            target: 5353,
            protocol: Protocol::Udp,
            host_ip: None,
            ips: vec![ip("10.208.1.2")],
        },
    ];
    assert_eq!(m.ports, port);
    let idle = for_node(&s, "ccc");
    assert_eq!(idle.ports, port);
    assert!(idle.subnets.is_empty() && idle.members.is_empty());
    // Names are known everywhere: a node answers NXDOMAIN for other networks' names.
    assert_eq!(idle.names, for_node(&s, "a").names);
    assert_eq!(
        m.members.into_iter().collect::<Vec<_>>(),
        vec![(ip("10.208.1.2"), vec!["app".to_string()])]
    );
    assert_eq!(
        idle.routes.into_iter().collect::<Vec<_>>(),
        vec![
            ("10.208.0.0/24".to_string(), ip("10.0.0.2")),
            ("10.208.1.0/24".to_string(), ip("10.0.0.1")),
        ]
    );
    assert_eq!(
        idle.nodes,
        vec![ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]
    );
}

#[test]
fn replicas_not_ready_or_told_to_stop_are_not_answered() {
    let mut s = cluster();
    report_ip(&mut s, "db", TaskState::Starting, "10.208.0.2");
    let db = |s: &ClusterState| {
        for_node(s, "a")
            .names
            .get(&("app".to_string(), "db".to_string()))
            .cloned()
    };
    assert_eq!(db(&s), Some(vec![]));
    report_ip(&mut s, "db", TaskState::Running, "10.208.0.2");
    assert_eq!(db(&s), Some(vec![ip("10.208.0.2")]));
    let task = s
        .tasks
        .values()
        .find(|t| t.service == "db")
        .unwrap()
        .id
        .clone();
    s.apply(&Command::Reconcile {
        decisions: vec![Decision::Shutdown { task }],
        now_ms: 2,
    });
    assert_eq!(db(&s), Some(vec![]));
}

#[test]
fn removing_a_stack_frees_its_subnets() {
    let mut s = cluster();
    s.apply(&Command::Reconcile {
        decisions: vec![Decision::DropStack {
            stack: "app".into(),
        }],
        now_ms: 3,
    });
    assert!(s.subnets.is_empty());
}

#[test]
fn each_network_gets_its_own_subnet_per_node_names_and_members() {
    let nodes = vec![node("a", 4.0, 4096), node("bb", 4.0, 4096)];
    let mut web = on("web", "a");
    web.networks = vec![attach("app", "front", &[]), attach("app", "back", &["www"])];
    web.ports = vec![PortSpec {
        target: 80,
        published: Some(8080),
        protocol: Protocol::Tcp,
        host_ip: None,
        mode: PortMode::Ingress,
    }];
    let mut db = on("db", "bb");
    db.networks = vec![attach("app", "back", &["db2"])];
    let mut proxy = on("proxy", "bb");
    proxy.networks = vec![attach("app", "front", &[])];
    let mut s = deployed(nodes, vec![]);
    deploy(&mut s, "app", vec![web, db, proxy], 0);
    // Services are assigned in name order: db (back on bb), proxy (front on bb), web
    // (front and back on a): each (network, node) pair its own subnet.
    let subnets: Vec<(String, Vec<(String, u32)>)> = s
        .subnets
        .iter()
        .map(|(k, n)| (k.clone(), n.iter().map(|(n, i)| (n.clone(), *i)).collect()))
        .collect();
    assert_eq!(
        subnets,
        vec![
            ("app.back".into(), vec![("a".into(), 3), ("bb".into(), 0)]),
            ("app.front".into(), vec![("a".into(), 2), ("bb".into(), 1)]),
        ]
    );
    report_ips(&mut s, "app", "db", &[("app.back", "10.208.0.2")]);
    report_ips(&mut s, "app", "proxy", &[("app.front", "10.208.1.2")]);
    report_ips(
        &mut s,
        "app",
        "web",
        &[("app.front", "10.208.2.2"), ("app.back", "10.208.3.2")],
    );
    let m = for_node(&s, "a");
    assert_eq!(
        m.subnets.keys().cloned().collect::<Vec<_>>(),
        vec!["app.back".to_string(), "app.front".to_string()]
    );
    // web's front address is let into back too: it may reach db by its default route.
    assert_eq!(
        m.subnets.get("app.back"),
        Some(&(
            "10.208.3.0/24".to_string(),
            vec![
                "10.208.3.0/24".to_string(),
                "10.208.0.0/24".to_string(),
                "10.208.2.2/32".to_string()
            ]
        ))
    );
    assert_eq!(
        m.subnets.get("app.front").map(|(_, peers)| peers.clone()),
        Some(vec![
            "10.208.2.0/24".to_string(),
            "10.208.1.0/24".to_string(),
            "10.208.3.2/32".to_string()
        ])
    );
    let names: Vec<((String, String), Vec<IpAddr>)> = m.names.clone().into_iter().collect();
    let n = |net: &str, name: &str, a: &[&str]| {
        (
            (net.to_string(), name.to_string()),
            a.iter().map(|x| ip(x)).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        names,
        vec![
            // Aliases only on the network they were given on; db not on front.
            n("app.back", "db", &["10.208.0.2"]),
            n("app.back", "db2", &["10.208.0.2"]),
            n("app.back", "web", &["10.208.3.2"]),
            n("app.back", "www", &["10.208.3.2"]),
            n("app.front", "proxy", &["10.208.1.2"]),
            n("app.front", "web", &["10.208.2.2"]),
        ]
    );
    // web's container: both addresses, its networks in attachment order.
    assert_eq!(
        m.members.into_iter().collect::<Vec<_>>(),
        vec![
            (
                ip("10.208.2.2"),
                vec!["app.front".to_string(), "app.back".to_string()]
            ),
            (
                ip("10.208.3.2"),
                vec!["app.front".to_string(), "app.back".to_string()]
            ),
        ]
    );
    // The mesh forwards to web's address on its first network.
    assert_eq!(m.ports[0].ips, vec![ip("10.208.2.2")]);
    let bb = for_node(&s, "bb");
    assert_eq!(
        bb.members.into_iter().collect::<Vec<_>>(),
        vec![
            (ip("10.208.0.2"), vec!["app.back".to_string()]),
            (ip("10.208.1.2"), vec!["app.front".to_string()]),
        ]
    );
}

#[test]
fn an_external_network_is_shared_by_the_stacks_declaring_it() {
    let nodes = vec![node("a", 4.0, 4096), node("bb", 4.0, 4096)];
    let mut s = deployed(nodes, vec![]);
    let mut api = on("api", "a");
    api.networks = vec![attach("one", "ext:shared", &["api-alias"])];
    deploy(&mut s, "one", vec![api], 0);
    let mut client = on("client", "bb");
    client.networks = vec![
        attach("two", "default", &[]),
        attach("two", "ext:shared", &[]),
    ];
    deploy(&mut s, "two", vec![client], 1);
    let mut loner = on("loner", "a");
    loner.networks = vec![attach("three", "default", &[])];
    deploy(&mut s, "three", vec![loner], 2);
    // One network `ext:shared` across both stacks: one subnet per node.
    assert_eq!(
        s.subnets
            .get("ext:shared")
            .map(|n| n.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["a".to_string(), "bb".to_string()])
    );
    report_ips(&mut s, "one", "api", &[("ext:shared", "10.208.0.2")]);
    report_ips(
        &mut s,
        "two",
        "client",
        &[("two", "10.208.1.2"), ("ext:shared", "10.208.2.2")],
    );
    report_ips(&mut s, "three", "loner", &[("three", "10.208.3.2")]);
    let m = for_node(&s, "bb");
    let shared = &m
        .subnets
        .get("ext:shared")
        .expect("bb hosts the shared network")
        .1;
    assert_eq!(
        shared,
        &vec![
            "10.208.0.0/24".to_string(),
            "10.208.2.0/24".to_string(),
            "10.208.1.2/32".to_string()
        ],
        "both nodes' subnets of it, and client's other address"
    );
    let get = |net: &str, name: &str| m.names.get(&(net.to_string(), name.to_string())).cloned();
    assert_eq!(get("ext:shared", "api"), Some(vec![ip("10.208.0.2")]));
    assert_eq!(get("ext:shared", "api-alias"), Some(vec![ip("10.208.0.2")]));
    assert_eq!(get("ext:shared", "client"), Some(vec![ip("10.208.2.2")]));
    assert_eq!(get("two", "client"), Some(vec![ip("10.208.1.2")]));
    // The third stack's names are on its own network only.
    assert_eq!(get("three", "loner"), Some(vec![ip("10.208.3.2")]));
    assert_eq!(get("ext:shared", "loner"), None);
    // Removing one stack keeps the shared network's subnets for the other.
    s.apply(&Command::Reconcile {
        decisions: vec![Decision::DropStack {
            stack: "one".into(),
        }],
        now_ms: 3,
    });
    assert!(s.subnets.contains_key("ext:shared"));
    s.apply(&Command::Reconcile {
        decisions: vec![Decision::DropStack {
            stack: "two".into(),
        }],
        now_ms: 4,
    });
    assert!(!s.subnets.contains_key("ext:shared"));
    assert!(!s.subnets.contains_key("two"));
    assert!(s.subnets.contains_key("three"));
}

#[test]
fn internal_networks_are_marked_and_old_single_addresses_still_count() {
    let nodes = vec![node("a", 4.0, 4096)];
    let mut s = deployed(nodes, vec![]);
    let mut db = on("db", "a");
    db.networks = vec![attach("app", "private", &[])];
    deploy(&mut s, "app", vec![db], 0);
    let m = for_node(&s, "a");
    assert_eq!(
        m.internal.iter().cloned().collect::<Vec<_>>(),
        vec!["app.private".to_string()]
    );
    // A task stored with one address (before networks per service) is on its stack's
    // default network.
    let old: Task = serde_json::from_value(serde_json::json!({
        "id": "t", "stack": "app", "service": "web", "slot": 1, "generation": 1,
        "node": "a", "desired": "running", "state": "running", "error": "",
        "container_id": "", "exit_code": null, "created_at_ms": 0, "updated_at_ms": 0,
        "ip": "10.208.0.9"
    }))
    .expect("an old task reads");
    assert_eq!(old.ip_on("app"), Some(ip("10.208.0.9")));
    assert_eq!(old.ip_on("app.back"), None);
}

#[test]
fn a_spec_stored_without_networks_is_not_changed_by_saying_default() {
    // `deployed` stores specs as older controllers did: no networks listed.
    let mut s = cluster();
    let gen = |s: &ClusterState| s.services["app/web"].generation;
    assert_eq!(gen(&s), 1);
    let mut web = s.services["app/web"].spec.clone();
    let db = s.services["app/db"].spec.clone();
    web.networks = vec![attach("app", "default", &[])];
    deploy(&mut s, "app", vec![web.clone(), db], 5);
    assert_eq!(gen(&s), 1, "the same network as before: no rollout");
    assert_eq!(s.services["app/web"].spec.networks, web.networks);
}
