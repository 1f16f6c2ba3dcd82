//! Placement by what a node has (issue 14): device paths, platform, `node.role`, and
//! co-location with the replicas of a service whose namespace a replica shares. Exact
//! decisions of the scheduler, and of the reconciler as the state changes through the
//! same commands the agents' reports become.

mod common;
use std::collections::{BTreeMap, BTreeSet};

use common::*;

use shoal_controller::reconciler::reconcile;
use shoal_controller::scheduler::{fitting_nodes, place, Request};
use shoal_controller::state::*;
use shoal_proto::container::{DeviceMapping, NetworkMode};
use shoal_proto::spec::*;
use shoal_proto::task::TaskState;

fn req<'a>(task: &str, spec: &'a ServiceSpec) -> Request<'a> {
    Request {
        task: task.into(),
        service: format!("app/{}", spec.name),
        spec,
        pinned: None,
        nodes: None,
    }
}

fn assign(task: &str, node: &str) -> Decision {
    Decision::Assign {
        task: task.into(),
        node: node.into(),
    }
}

fn pending(task: &str, reason: &str) -> Decision {
    Decision::Pending {
        task: task.into(),
        reason: reason.into(),
    }
}

fn with_devices(mut n: Node, paths: &[&str]) -> Node {
    n.devices = paths.iter().map(|p| p.to_string()).collect();
    n
}

fn on_platform(mut n: Node, platform: &str) -> Node {
    n.platform = platform.into();
    n
}

fn manager(mut n: Node) -> Node {
    n.manager = true;
    n
}

fn needing(name: &str, replicas: u64, paths: &[&str]) -> ServiceSpec {
    let mut s = svc(name, replicas);
    s.container.devices = paths
        .iter()
        .map(|p| DeviceMapping {
            source: p.to_string(),
            ..Default::default()
        })
        .collect();
    s
}

fn role(equal: bool, value: &str) -> Constraint {
    Constraint {
        field: ConstraintField::Role,
        equal,
        value: value.into(),
    }
}

/// Node of each live replica of `service`, by slot order of task id.
fn nodes_of(s: &ClusterState, service: &str) -> Vec<Option<String>> {
    live(s, service).iter().map(|t| t.node.clone()).collect()
}

fn errors_of(s: &ClusterState, service: &str) -> Vec<String> {
    live(s, service).iter().map(|t| t.error.clone()).collect()
}

#[test]
fn a_service_with_a_device_lands_only_on_the_node_that_has_it() {
    let spec = needing("modem", 2, &["/dev/fakeX"]);
    let plain = svc("web", 3);
    let s = deployed(
        vec![
            node("a", 4.0, 4096),
            with_devices(node("b", 4.0, 4096), &["/dev/fakeX", "/dev/null"]),
            node("c", 4.0, 4096),
        ],
        vec![spec.clone(), plain.clone()],
    );
    assert_eq!(
        place(&s, &[req("t1", &spec), req("t2", &spec)]),
        vec![assign("t1", "b"), assign("t2", "b")]
    );
    // A service that names no device is unaffected by them.
    assert_eq!(
        place(
            &s,
            &[req("w1", &plain), req("w2", &plain), req("w3", &plain)]
        ),
        vec![assign("w1", "a"), assign("w2", "b"), assign("w3", "c")]
    );
    // Every path must be there; a trailing slash names the same path; CDI names are the
    // engine's to resolve, not the scheduler's.
    let mut two = needing("two", 1, &["/dev/fakeX/", "/dev/fakeY"]);
    two.container.devices.push(DeviceMapping {
        source: "vendor.com/gpu=0".into(),
        ..Default::default()
    });
    assert_eq!(
        place(&s, &[req("t3", &two)]),
        vec![pending(
            "t3",
            "no node can run it: a, c have no device /dev/fakeX; b has no device /dev/fakeY"
        )]
    );
    assert_eq!(
        fitting_nodes(&s, &"app/modem".to_string(), &spec),
        vec!["b".to_string()]
    );
    // Agents report what is under /dev; a path elsewhere is left to the engine.
    let elsewhere = needing("elsewhere", 1, &["/run/custom-device"]);
    assert_eq!(place(&s, &[req("t4", &elsewhere)]), vec![assign("t4", "a")]);
}

#[test]
fn without_the_device_anywhere_it_is_pending_naming_the_device() {
    let spec = needing("modem", 1, &["/dev/ttyUSB0"]);
    let mut s = deployed(
        vec![
            node("a", 4.0, 4096),
            node("b", 4.0, 4096),
            node("c", 4.0, 4096),
        ],
        vec![spec.clone()],
    );
    assert_eq!(
        place(&s, &[req("t1", &spec)]),
        vec![pending(
            "t1",
            "no node has device /dev/ttyUSB0 (3 nodes checked)"
        )]
    );
    // A node that has it but is down is named apart.
    let mut down = with_devices(node("c", 4.0, 4096), &["/dev/ttyUSB0"]);
    down.status = NodeStatus::Down;
    s.nodes.insert("c".into(), down);
    assert_eq!(
        place(&s, &[req("t1", &spec)]),
        vec![pending(
            "t1",
            "no node can run it: a, b have no device /dev/ttyUSB0; c is down"
        )]
    );
}

#[test]
fn a_node_that_reports_the_device_later_gets_the_replica() {
    let mut s = deployed(
        vec![node("a", 4.0, 4096), node("b", 4.0, 4096)],
        vec![needing("modem", 1, &["/dev/fakeX"])],
    );
    settle(&mut s, 0);
    assert_eq!(nodes_of(&s, "modem"), vec![None]);
    assert_eq!(
        errors_of(&s, "modem"),
        vec!["no node has device /dev/fakeX (2 nodes checked)".to_string()]
    );
    // b's agent rescanned /dev after a USB stick was plugged in (`DeviceReport`).
    let r = s.apply(&Command::SetNodeDevices {
        node: "b".into(),
        devices: BTreeSet::from(["/dev/fakeX".to_string(), "/dev/null".to_string()]),
    });
    assert_eq!(r.error, None);
    settle(&mut s, 10);
    assert_eq!(nodes_of(&s, "modem"), vec![Some("b".to_string())]);
    // Reports about a node the cluster does not know are refused, not invented.
    let r = s.apply(&Command::SetNodeDevices {
        node: "ghost".into(),
        devices: BTreeSet::new(),
    });
    assert_eq!(r.error.as_deref(), Some("unknown node ghost"));
}

#[test]
fn a_global_service_with_a_device_runs_only_where_the_device_is() {
    let mut g = needing("collector", 1, &["/dev/fakeX"]);
    g.mode = ServiceMode::Global;
    let mut s = deployed(
        vec![
            node("a", 4.0, 4096),
            with_devices(node("b", 4.0, 4096), &["/dev/fakeX"]),
            node("c", 4.0, 4096),
        ],
        vec![g],
    );
    settle(&mut s, 0);
    assert_eq!(nodes_of(&s, "collector"), vec![Some("b".to_string())]);
    s.apply(&Command::SetNodeDevices {
        node: "c".into(),
        devices: BTreeSet::from(["/dev/fakeX".to_string()]),
    });
    settle(&mut s, 10);
    let on: BTreeSet<Option<String>> = nodes_of(&s, "collector").into_iter().collect();
    assert_eq!(on, BTreeSet::from([Some("b".into()), Some("c".into())]));
    // Unplugged on b: its slot goes.
    s.apply(&Command::SetNodeDevices {
        node: "b".into(),
        devices: BTreeSet::new(),
    });
    settle(&mut s, 20);
    assert_eq!(nodes_of(&s, "collector"), vec![Some("c".to_string())]);
}

#[test]
fn a_gpu_service_with_a_device_needs_both_on_one_node() {
    let mut spec = needing("train", 1, &["/dev/infiniband/uverbs0"]);
    spec.gpus = vec![GpuRequest {
        count: Some(1),
        capabilities: vec!["gpu".into()],
        ..Default::default()
    }];
    let gpu = |n: Node| {
        let mut n = n;
        n.gpus = vec![Gpu {
            uuid: format!("GPU-{}", n.id),
            index: 0,
            model: "H100".into(),
            memory_bytes: 80 << 30,
        }];
        n
    };
    let s = deployed(
        vec![
            gpu(node("a", 4.0, 4096)),
            with_devices(node("b", 4.0, 4096), &["/dev/infiniband/uverbs0"]),
            gpu(with_devices(
                node("c", 4.0, 4096),
                &["/dev/infiniband/uverbs0"],
            )),
        ],
        vec![spec.clone()],
    );
    assert_eq!(
        place(&s, &[req("t1", &spec), req("t2", &spec)]),
        vec![
            Decision::AssignGpus {
                task: "t1".into(),
                node: "c".into(),
                gpus: vec!["GPU-c".into()],
            },
            pending(
                "t2",
                "needs 1 GPU: a has no device /dev/infiniband/uverbs0; b has no GPUs; c has 0 free"
            ),
        ]
    );
}

#[test]
fn only_nodes_of_the_service_platform_run_it() {
    let mut arm = svc("arm", 2);
    arm.container.platform = Some("linux/arm64".into());
    let mut v7 = svc("v7", 1);
    v7.container.platform = Some("linux/arm/v7".into());
    let s = deployed(
        vec![
            on_platform(node("a", 4.0, 4096), "linux/amd64"),
            on_platform(node("b", 4.0, 4096), "linux/arm64"),
            // An agent that did not say: matches no platform.
            node("c", 4.0, 4096),
            on_platform(node("d", 4.0, 4096), "linux/amd64"),
        ],
        vec![arm.clone(), v7.clone()],
    );
    assert_eq!(
        place(&s, &[req("t1", &arm), req("t2", &arm)]),
        vec![assign("t1", "b"), assign("t2", "b")]
    );
    assert_eq!(
        place(&s, &[req("t3", &v7)]),
        vec![pending(
            "t3",
            "no node has platform linux/arm/v7 (nodes are linux/amd64, linux/arm64, unknown)"
        )]
    );
    let mut down = on_platform(node("b", 4.0, 4096), "linux/arm64");
    down.status = NodeStatus::Down;
    let mut s = s;
    s.nodes.insert("b".into(), down);
    assert_eq!(
        place(&s, &[req("t1", &arm)]),
        vec![pending(
            "t1",
            "no node can run it: a, c, d are linux/amd64 or unknown, not linux/arm64; b is down"
        )]
    );
}

#[test]
fn node_role_constraints_follow_the_recorded_role() {
    let mut on_managers = svc("ctl", 2);
    on_managers.placement.constraints = vec![role(true, "manager")];
    let mut off_managers = svc("work", 2);
    off_managers.placement.constraints = vec![role(false, "manager")];
    let mut workers = svc("w", 1);
    workers.placement.constraints = vec![role(true, "worker")];
    let s = deployed(
        vec![
            manager(node("a", 4.0, 4096)),
            node("b", 4.0, 4096),
            node("c", 4.0, 4096),
        ],
        vec![on_managers.clone(), off_managers.clone(), workers.clone()],
    );
    assert_eq!(
        place(&s, &[req("m1", &on_managers), req("m2", &on_managers)]),
        vec![assign("m1", "a"), assign("m2", "a")]
    );
    assert_eq!(
        place(&s, &[req("x1", &off_managers), req("x2", &off_managers)]),
        vec![assign("x1", "b"), assign("x2", "c")]
    );
    assert_eq!(place(&s, &[req("y1", &workers)]), vec![assign("y1", "b")]);
    let all_managers = deployed(
        vec![manager(node("a", 4.0, 4096)), manager(node("b", 4.0, 4096))],
        vec![workers.clone()],
    );
    assert_eq!(
        place(&all_managers, &[req("y1", &workers)]),
        vec![pending(
            "y1",
            "no node can run it: a, b do not match node.role==worker"
        )]
    );
}

#[test]
fn a_controller_joining_a_node_makes_it_a_manager_for_global_services() {
    let mut g = svc("backup", 1);
    g.mode = ServiceMode::Global;
    g.placement.constraints = vec![role(true, "manager")];
    let mut s = deployed(
        vec![manager(node("a", 4.0, 4096)), node("b", 4.0, 4096)],
        vec![g],
    );
    settle(&mut s, 0);
    assert_eq!(nodes_of(&s, "backup"), vec![Some("a".to_string())]);
    // The leader saw a controller join on b's address.
    s.apply(&Command::SetNodeRole {
        node: "b".into(),
        manager: true,
    });
    settle(&mut s, 10);
    let on: BTreeSet<Option<String>> = nodes_of(&s, "backup").into_iter().collect();
    assert_eq!(on, BTreeSet::from([Some("a".into()), Some("b".into())]));
    // A reconnecting agent re-registers its node: the role it is given then stands.
    s.apply(&Command::RegisterNode {
        node: node("b", 4.0, 4096),
    });
    settle(&mut s, 20);
    assert_eq!(nodes_of(&s, "backup"), vec![Some("a".to_string())]);
}

fn sharing_vpn(name: &str, replicas: u64) -> ServiceSpec {
    let mut s = svc(name, replicas);
    s.container.network_mode = Some(NetworkMode::Service("vpn".into()));
    s
}

#[test]
fn a_replica_sharing_a_network_namespace_waits_for_and_joins_its_partner() {
    let web = sharing_vpn("web", 2);
    let vpn = svc("vpn", 1);
    let mut s = deployed(
        vec![
            node("a", 4.0, 4096),
            node("b", 4.0, 4096),
            node("c", 4.0, 4096),
        ],
        vec![web.clone(), vpn.clone()],
    );
    assert_eq!(
        place(&s, &[req("w1", &web)]),
        vec![pending(
            "w1",
            "waits for a replica of app/vpn on the same node (network_mode: service:vpn)"
        )]
    );
    // vpn placed first in the same pass: web follows it there.
    let both = place(&s, &[req("v1", &vpn), req("w1", &web), req("w2", &web)]);
    assert_eq!(
        both,
        vec![assign("v1", "a"), assign("w1", "a"), assign("w2", "a")]
    );

    // Through the reconciler, with vpn scaled from 0: web waits, then joins vpn.
    s.apply(&Command::Scale {
        service: "app/vpn".into(),
        replicas: 0,
    });
    settle(&mut s, 0);
    assert_eq!(nodes_of(&s, "web"), vec![None, None]);
    assert_eq!(
        errors_of(&s, "web")[0],
        "waits for a replica of app/vpn on the same node (network_mode: service:vpn)"
    );
    s.apply(&Command::Scale {
        service: "app/vpn".into(),
        replicas: 1,
    });
    settle(&mut s, 10);
    let vpn_on = nodes_of(&s, "vpn");
    assert_eq!(vpn_on.len(), 1);
    assert!(vpn_on[0].is_some());
    assert_eq!(
        nodes_of(&s, "web"),
        vec![vpn_on[0].clone(), vpn_on[0].clone()]
    );
    report(&mut s, "vpn", TaskState::Running, None, 11);
    report(&mut s, "web", TaskState::Running, None, 11);
    let key = "app/web".to_string();
    assert_eq!(
        fitting_nodes(&s, &key, &web),
        vpn_on.into_iter().flatten().collect::<Vec<_>>()
    );
}

#[test]
fn a_partner_told_to_stop_or_on_another_stack_does_not_count() {
    let mut ipc = svc("app2", 1);
    ipc.container.ipc = Some("service:vpn".into());
    let vpn = svc("vpn", 1);
    let mut s = deployed(
        vec![node("a", 4.0, 4096), node("b", 4.0, 4096)],
        vec![vpn.clone(), ipc.clone()],
    );
    s.apply(&Command::Scale {
        service: "app/app2".into(),
        replicas: 0,
    });
    settle(&mut s, 0);
    let vpn_task = live(&s, "vpn")[0].clone();
    let on = vpn_task.node.clone().expect("vpn placed");
    // Another stack's vpn does not anchor app/app2.
    let other = place(
        &s,
        &[Request {
            task: "o1".into(),
            service: "other/app2".into(),
            spec: &ipc,
            pinned: None,
            nodes: None,
        }],
    );
    assert_eq!(
        other,
        vec![pending(
            "o1",
            "waits for a replica of other/vpn on the same node (ipc: service:vpn)"
        )]
    );
    assert_eq!(place(&s, &[req("i1", &ipc)]), vec![assign("i1", &on)]);
    // vpn's replica is being stopped: it anchors nothing new.
    s.apply(&Command::Reconcile {
        decisions: vec![Decision::Shutdown {
            task: vpn_task.id.clone(),
        }],
        now_ms: 5,
    });
    assert_eq!(
        place(&s, &[req("i1", &ipc)]),
        vec![pending(
            "i1",
            "waits for a replica of app/vpn on the same node (ipc: service:vpn)"
        )]
    );
}

#[test]
fn a_global_service_sharing_a_namespace_runs_where_its_partner_runs() {
    let mut g = sharing_vpn("sidecar", 1);
    g.mode = ServiceMode::Global;
    let mut vpn = svc("vpn", 1);
    vpn.placement.constraints = vec![Constraint {
        field: ConstraintField::Hostname,
        equal: true,
        value: "b".into(),
    }];
    let mut s = deployed(
        vec![
            node("a", 4.0, 4096),
            node("b", 4.0, 4096),
            node("c", 4.0, 4096),
        ],
        vec![vpn, g],
    );
    settle(&mut s, 0);
    // Settled: the sidecar's slots follow vpn's nodes, with no pending slot elsewhere.
    assert_eq!(nodes_of(&s, "vpn"), vec![Some("b".to_string())]);
    assert_eq!(nodes_of(&s, "sidecar"), vec![Some("b".to_string())]);
    assert!(reconcile(&s, 1).is_empty());
    let per_node: BTreeMap<String, usize> = s
        .nodes
        .keys()
        .map(|n| {
            let c = live(&s, "sidecar")
                .iter()
                .filter(|t| t.node.as_deref() == Some(n))
                .count();
            (n.clone(), c)
        })
        .collect();
    assert_eq!(
        per_node,
        BTreeMap::from([("a".into(), 0), ("b".into(), 1), ("c".into(), 0)])
    );
}
