//! Properties of the scheduler over random clusters and services: it never over-commits a
//! node, constraints always hold, it is deterministic, and when nothing else constrains
//! it, replicas are spread within one of even across nodes and across spread-label values.

mod common;
use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;

use shoal_controller::scheduler::{place, Request};
use shoal_controller::state::*;
use shoal_proto::spec::*;

const ZONES: [&str; 3] = ["x", "y", "z"];

#[derive(Debug, Clone)]
struct NodeGen {
    cpus: u32,
    mem_mib: i64,
    zone: Option<usize>,
    ready: bool,
    active: bool,
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (
        1u32..8,
        256i64..4096,
        prop::option::of(0usize..3),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(cpus, mem_mib, zone, ready, active)| NodeGen {
            cpus,
            mem_mib,
            zone,
            ready,
            active,
        })
}

#[derive(Debug, Clone)]
struct SvcGen {
    replicas: u64,
    quarter_cpus: Option<i64>,
    mem_mib: Option<i64>,
    max_per_node: Option<u64>,
    zone_constraint: Option<(bool, usize)>,
    spread: bool,
    host_port: Option<u16>,
}

fn svc_gen() -> impl Strategy<Value = SvcGen> {
    (
        1u64..25,
        prop::option::of(1i64..8),
        prop::option::of(64i64..1024),
        prop::option::of(1u64..4),
        prop::option::of((any::<bool>(), 0usize..3)),
        any::<bool>(),
        prop::option::weighted(0.2, 8000u16..8003),
    )
        .prop_map(
            |(
                replicas,
                quarter_cpus,
                mem_mib,
                max_per_node,
                zone_constraint,
                spread,
                host_port,
            )| {
                SvcGen {
                    replicas,
                    quarter_cpus,
                    mem_mib,
                    max_per_node,
                    zone_constraint,
                    spread,
                    host_port,
                }
            },
        )
}

fn build(nodes: &[NodeGen], svcs: &[SvcGen]) -> (ClusterState, Vec<ServiceSpec>) {
    let ns: Vec<Node> = nodes
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut n = node(&format!("n{i:02}"), g.cpus as f64, g.mem_mib);
            if let Some(z) = g.zone {
                n.labels.insert("zone".into(), ZONES[z].into());
            }
            if !g.ready {
                n.status = NodeStatus::Down;
            }
            if !g.active {
                n.availability = Availability::Drain;
            }
            n
        })
        .collect();
    let specs: Vec<ServiceSpec> = svcs
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut s = svc(&format!("s{i}"), g.replicas);
            s.resources.reservations.nano_cpus = g.quarter_cpus.map(|q| q * 250_000_000);
            s.resources.reservations.memory_bytes = g.mem_mib.map(|m| m * 1024 * 1024);
            s.placement.max_replicas_per_node = g.max_per_node;
            if let Some((equal, z)) = g.zone_constraint {
                s.placement.constraints = vec![Constraint {
                    field: ConstraintField::Label("zone".into()),
                    equal,
                    value: ZONES[z].into(),
                }];
            }
            if g.spread {
                s.placement.spread = vec!["zone".into()];
            }
            if let Some(p) = g.host_port {
                s.ports = vec![PortSpec {
                    target: 80,
                    published: Some(p),
                    mode: PortMode::Host,
                    ..Default::default()
                }];
            }
            s
        })
        .collect();
    (deployed(ns, specs.clone()), specs)
}

fn requests(specs: &[ServiceSpec]) -> Vec<Request<'_>> {
    let mut out = Vec::new();
    for s in specs {
        for r in 0..s.replicas {
            out.push(Request {
                task: format!("{}-{r}", s.name),
                service: format!("app/{}", s.name),
                spec: s,
                pinned: None,
                nodes: None,
            });
        }
    }
    out
}

/// node -> the specs placed on it.
fn placed<'a>(
    decisions: &[Decision],
    reqs: &[Request<'a>],
) -> BTreeMap<String, Vec<&'a ServiceSpec>> {
    let mut m: BTreeMap<String, Vec<&ServiceSpec>> = BTreeMap::new();
    for (d, r) in decisions.iter().zip(reqs) {
        if let Decision::Assign { node, task } = d {
            assert_eq!(task, &r.task, "decisions come in request order");
            m.entry(node.clone()).or_default().push(r.spec);
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn never_over_commits_and_constraints_hold(
        nodes in prop::collection::vec(node_gen(), 1..10),
        svcs in prop::collection::vec(svc_gen(), 1..4),
    ) {
        let (state, specs) = build(&nodes, &svcs);
        let reqs = requests(&specs);
        let out = place(&state, &reqs);
        prop_assert_eq!(out.len(), reqs.len());
        for (node, on) in placed(&out, &reqs) {
            let n = &state.nodes[&node];
            prop_assert_eq!(n.status, NodeStatus::Ready);
            prop_assert_eq!(n.availability, Availability::Active);
            let cpu: i64 = on.iter().map(|s| s.resources.requested_nano_cpus()).sum();
            let mem: i64 = on.iter().map(|s| s.resources.requested_memory()).sum();
            prop_assert!(cpu <= n.nano_cpus, "{node}: {cpu} CPUs of {}", n.nano_cpus);
            prop_assert!(mem <= n.memory_bytes, "{node}: {mem} bytes of {}", n.memory_bytes);
            let mut per_service: BTreeMap<&str, u64> = BTreeMap::new();
            let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
            for s in &on {
                *per_service.entry(&s.name).or_default() += 1;
                for c in &s.placement.constraints {
                    let ConstraintField::Label(k) = &c.field else { unreachable!() };
                    let actual = n.labels.get(k);
                    prop_assert_eq!(actual == Some(&c.value), c.equal, "{} on {}", s.name, node);
                }
                for p in &s.ports {
                    let port = p.published.unwrap();
                    // A host-mode port is one container's: not even a second replica.
                    prop_assert!(ports.insert(port, &s.name).is_none(), "{node}: port {port} twice");
                }
            }
            for s in &on {
                if let Some(max) = s.placement.max_replicas_per_node {
                    prop_assert!(per_service[s.name.as_str()] <= max);
                }
            }
        }
        // Deterministic: the same input gives the same decisions.
        prop_assert_eq!(place(&state, &reqs), out);
    }

    #[test]
    fn unconstrained_replicas_spread_within_one_of_even(
        n_nodes in 1usize..12,
        zones in prop::collection::vec(prop::option::of(0usize..3), 12),
        replicas in 1u64..60,
        spread in any::<bool>(),
    ) {
        let nodes: Vec<NodeGen> = (0..n_nodes)
            .map(|i| NodeGen { cpus: 4, mem_mib: 4096, zone: zones[i], ready: true, active: true })
            .collect();
        let svcs = vec![SvcGen {
            replicas,
            quarter_cpus: None,
            mem_mib: None,
            max_per_node: None,
            zone_constraint: None,
            spread,
            host_port: None,
        }];
        let (state, specs) = build(&nodes, &svcs);
        let reqs = requests(&specs);
        let out = place(&state, &reqs);
        let on = placed(&out, &reqs);
        let per_node: Vec<usize> = state.nodes.keys().map(|n| on.get(n).map_or(0, Vec::len)).collect();
        prop_assert_eq!(per_node.iter().sum::<usize>() as u64, replicas, "every replica placed");
        if spread {
            // Across label values (no label: one more group)...
            let mut groups: BTreeMap<Option<&String>, usize> = BTreeMap::new();
            for (id, n) in &state.nodes {
                *groups.entry(n.labels.get("zone")).or_default() += on.get(id).map_or(0, Vec::len);
            }
            let (min, max) = (groups.values().min().unwrap(), groups.values().max().unwrap());
            prop_assert!(max - min <= 1, "groups {groups:?}");
            // ...and across the nodes of each value.
            let mut within: BTreeMap<Option<&String>, Vec<usize>> = BTreeMap::new();
            for (id, n) in &state.nodes {
                within.entry(n.labels.get("zone")).or_default().push(on.get(id).map_or(0, Vec::len));
            }
            for counts in within.values() {
                let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                prop_assert!(max - min <= 1, "within a group {counts:?}");
            }
        } else {
            let (min, max) = (per_node.iter().min().unwrap(), per_node.iter().max().unwrap());
            prop_assert!(max - min <= 1, "nodes {per_node:?}");
        }
    }

    #[test]
    fn a_pending_replica_fits_nowhere(
        nodes in prop::collection::vec(node_gen(), 1..8),
        svcs in prop::collection::vec(svc_gen(), 1..3),
    ) {
        // Placing once more after everything placed: a request still pending must also be
        // refused by every node when it is asked alone against the placements made.
        let (mut state, specs) = build(&nodes, &svcs);
        settle(&mut state, 0);
        for t in state.tasks.values() {
            if t.state == shoal_proto::task::TaskState::Pending {
                prop_assert!(t.error.starts_with("no node can run it: "), "{}", t.error);
                let spec = &state.services[&t.service_key()].spec;
                let r = Request { task: t.id.clone(), service: t.service_key(), spec, pinned: None, nodes: None };
                let again = place(&state, &[r]);
                let pending = matches!(again[0], Decision::Pending { .. });
                prop_assert!(pending);
            }
        }
        let _ = specs;
    }
}
