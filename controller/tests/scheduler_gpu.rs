//! GPU placement: the scheduler's exact decisions, apply-time exclusivity, and property
//! tests (no GPU is ever held by two live tasks; requests get exactly what they asked;
//! the tightest node wins; a pending GPU task really fitted nowhere).

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use shoal_controller::scheduler::{place, Request};
use shoal_controller::state::*;
use shoal_proto::spec::*;
use shoal_proto::task::{Desired, TaskState};

const GIB: u64 = 1 << 30;

fn gnode(id: &str, n: u32, gib: u64, model: &str) -> Node {
    let mut node = node(id, 64.0, 1 << 20);
    node.gpus = (0..n)
        .map(|i| Gpu {
            uuid: format!("GPU-{id}-{i}"),
            index: i,
            model: model.into(),
            memory_bytes: gib * GIB,
        })
        .collect();
    node
}

fn gpu_svc(name: &str, r: GpuRequest) -> ServiceSpec {
    let mut s = svc(name, 1);
    s.gpus = vec![r];
    s
}

fn count(n: u64) -> GpuRequest {
    GpuRequest {
        count: Some(n),
        capabilities: vec!["gpu".into()],
        ..Default::default()
    }
}

fn req<'a>(task: &str, spec: &'a ServiceSpec) -> Request<'a> {
    Request {
        task: task.into(),
        service: format!("app/{}", spec.name),
        spec,
        pinned: None,
        nodes: None,
    }
}

fn gassign(task: &str, node: &str, gpus: &[&str]) -> Decision {
    Decision::AssignGpus {
        task: task.into(),
        node: node.into(),
        gpus: gpus.iter().map(|g| g.to_string()).collect(),
    }
}

fn pending(task: &str, reason: &str) -> Decision {
    Decision::Pending {
        task: task.into(),
        reason: reason.into(),
    }
}

/// Three nodes: `n0` without GPUs, `n2` with two and `n4` with four (24 GiB A10s).
fn three(services: Vec<ServiceSpec>) -> ClusterState {
    deployed(
        vec![
            gnode("n0", 0, 0, ""),
            gnode("n2", 2, 24, "NVIDIA A10"),
            gnode("n4", 4, 24, "NVIDIA A10"),
        ],
        services,
    )
}

/// A live task of `service` on `node` holding `gpus` (as if placed earlier).
fn holding(s: &mut ClusterState, id: &str, service: &str, node: &str, gpus: &[&str]) {
    s.tasks.insert(
        id.into(),
        Task {
            ips: Default::default(),
            legacy_ip: None,
            id: id.into(),
            stack: "app".into(),
            service: service.into(),
            slot: 1,
            generation: 1,
            node: Some(node.into()),
            desired: Desired::Running,
            state: TaskState::Running,
            error: String::new(),
            container_id: format!("c-{id}"),
            exit_code: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            pinned: None,
            image: "img".into(),
            gpus: gpus.iter().map(|g| g.to_string()).collect(),
        },
    );
}

#[test]
fn the_tightest_node_wins_and_gets_the_lowest_free_index() {
    let one = gpu_svc("one", count(1));
    let s = three(vec![one.clone()]);
    // n2 keeps 1 free GPU, n4 would keep 3: the small job goes where it fits tightly.
    assert_eq!(
        place(&s, &[req("t1", &one)]),
        vec![gassign("t1", "n2", &["GPU-n2-0"])]
    );
}

#[test]
fn gpus_are_never_handed_out_twice_in_one_pass_or_across_passes() {
    let one = gpu_svc("one", count(1));
    let mut s = three(vec![one.clone()]);
    holding(&mut s, "old", "one", "n2", &["GPU-n2-0"]);
    let reqs: Vec<_> = ["t1", "t2", "t3"].iter().map(|t| req(t, &one)).collect();
    assert_eq!(
        place(&s, &reqs),
        vec![
            gassign("t1", "n2", &["GPU-n2-1"]),
            gassign("t2", "n4", &["GPU-n4-0"]),
            gassign("t3", "n4", &["GPU-n4-1"]),
        ]
    );
}

#[test]
fn ended_and_orphaned_tasks_free_their_gpus() {
    let two = gpu_svc("two", count(2));
    let mut s = three(vec![two.clone()]);
    holding(&mut s, "dead", "two", "n2", &["GPU-n2-0", "GPU-n2-1"]);
    s.tasks.get_mut("dead").unwrap().state = TaskState::Failed;
    holding(&mut s, "lost", "two", "n4", &["GPU-n4-0", "GPU-n4-1"]);
    s.tasks.get_mut("lost").unwrap().state = TaskState::Orphaned;
    assert_eq!(
        place(&s, &[req("t1", &two)]),
        vec![gassign("t1", "n2", &["GPU-n2-0", "GPU-n2-1"])]
    );
}

#[test]
fn count_all_takes_every_gpu_of_a_node_that_is_wholly_free() {
    let all = gpu_svc("all", GpuRequest::default());
    let mut s = three(vec![all.clone()]);
    assert_eq!(
        place(&s, &[req("t1", &all)]),
        vec![gassign("t1", "n2", &["GPU-n2-0", "GPU-n2-1"])]
    );
    holding(&mut s, "busy", "all", "n2", &["GPU-n2-1"]);
    assert_eq!(
        place(&s, &[req("t1", &all), req("t2", &all)]),
        vec![
            gassign(
                "t1",
                "n4",
                &["GPU-n4-0", "GPU-n4-1", "GPU-n4-2", "GPU-n4-3"]
            ),
            pending(
                "t2",
                "needs all GPUs: n0 has no GPUs; n2 has 1 of its 2 GPUs in use; \
                 n4 has 4 of its 4 GPUs in use"
            ),
        ]
    );
}

#[test]
fn device_ids_name_gpus_by_index_or_uuid() {
    let by_index = gpu_svc(
        "idx",
        GpuRequest {
            device_ids: vec!["1".into()],
            ..Default::default()
        },
    );
    let by_uuid = gpu_svc(
        "uuid",
        GpuRequest {
            device_ids: vec!["GPU-n4-3".into(), "GPU-n4-0".into()],
            ..Default::default()
        },
    );
    let missing = gpu_svc(
        "missing",
        GpuRequest {
            device_ids: vec!["3".into()],
            ..Default::default()
        },
    );
    let s = three(vec![by_index.clone(), by_uuid.clone(), missing.clone()]);
    assert_eq!(
        place(
            &s,
            &[
                req("t1", &by_index),
                req("t2", &by_uuid),
                req("t3", &by_index),
                req("t4", &missing)
            ]
        ),
        vec![
            gassign("t1", "n2", &["GPU-n2-1"]),
            gassign("t2", "n4", &["GPU-n4-3", "GPU-n4-0"]),
            gassign("t3", "n4", &["GPU-n4-1"]),
            pending(
                "t4",
                "needs GPU 3: n0 has no GPUs; n2 has no GPU 3; n4 has GPU 3 in use"
            ),
        ]
    );
}

#[test]
fn memory_and_model_constraints_and_the_pending_reason_say_why() {
    let big = gpu_svc(
        "big",
        GpuRequest {
            count: Some(2),
            min_memory_bytes: Some(40 * GIB),
            ..Default::default()
        },
    );
    let h100 = gpu_svc(
        "h100",
        GpuRequest {
            count: Some(1),
            model: Some("H100*".into()),
            ..Default::default()
        },
    );
    let mut s = deployed(
        vec![
            gnode("node-a", 2, 80, "NVIDIA H100 80GB HBM3"),
            gnode("node-b", 4, 24, "NVIDIA A10"),
        ],
        vec![big.clone(), h100.clone()],
    );
    assert_eq!(
        place(&s, &[req("t1", &h100)]),
        vec![gassign("t1", "node-a", &["GPU-node-a-0"])]
    );
    holding(&mut s, "x", "h100", "node-a", &["GPU-node-a-0"]);
    assert_eq!(
        place(&s, &[req("t2", &big), req("t3", &h100)]),
        vec![
            pending(
                "t2",
                "needs 2 GPUs with >= 40 GiB: node-a has 1 free; node-b has 4 free of 24 GiB"
            ),
            gassign("t3", "node-a", &["GPU-node-a-1"]),
        ]
    );
    assert_eq!(
        place(&s, &[req("t4", &h100), req("t5", &h100)]),
        vec![
            gassign("t4", "node-a", &["GPU-node-a-1"]),
            pending(
                "t5",
                "needs 1 GPU of model H100*: node-a has 0 free; \
                 node-b has 4 free of model NVIDIA A10"
            ),
        ]
    );
}

#[test]
fn another_driver_fits_nowhere_and_other_refusals_are_listed_too() {
    let amd = gpu_svc(
        "amd",
        GpuRequest {
            count: Some(1),
            driver: Some("amd".into()),
            ..Default::default()
        },
    );
    let mut s = three(vec![amd.clone()]);
    s.nodes.get_mut("n4").unwrap().status = NodeStatus::Down;
    assert_eq!(
        place(&s, &[req("t1", &amd)]),
        vec![pending(
            "t1",
            "needs 1 GPU (driver amd): n0 has no GPUs; \
             n2 has no GPUs for driver amd (only nvidia); n4 is down"
        )]
    );
}

#[test]
fn services_without_gpus_are_placed_as_before() {
    let web = svc("web", 2);
    let s = three(vec![web.clone()]);
    let out = place(&s, &[req("t1", &web)]);
    assert!(
        matches!(&out[..], [Decision::Assign { task, .. }] if task == "t1"),
        "{out:?}"
    );
}

#[test]
fn apply_refuses_a_gpu_that_another_live_task_holds() {
    let one = gpu_svc("one", count(1));
    let mut s = three(vec![one.clone()]);
    settle(&mut s, 0);
    let placed = live(&s, "one")[0].clone();
    assert_eq!(placed.node.as_deref(), Some("n2"));
    assert_eq!(placed.gpus, vec!["GPU-n2-0".to_string()]);
    // A stale decision handing the same GPU to a second task is not applied.
    s.apply(&Command::Scale {
        service: "app/one".into(),
        replicas: 2,
    });
    s.apply(&Command::Reconcile {
        decisions: vec![Decision::CreateTask {
            service: "app/one".into(),
            slot: 2,
            generation: 1,
            node: None,
        }],
        now_ms: 1,
    });
    let second = s
        .tasks
        .values()
        .find(|t| t.slot == 2)
        .map(|t| t.id.clone())
        .unwrap();
    let r = s.apply(&Command::Reconcile {
        decisions: vec![gassign(&second, "n2", &["GPU-n2-0"])],
        now_ms: 2,
    });
    assert_eq!(r.count, 0);
    assert_eq!(s.tasks[&second].state, TaskState::Pending);
    // A GPU the node does not have is refused as well.
    let r = s.apply(&Command::Reconcile {
        decisions: vec![gassign(&second, "n2", &["GPU-n9-0"])],
        now_ms: 2,
    });
    assert_eq!(r.count, 0);
    settle(&mut s, 3);
    assert_eq!(s.tasks[&second].gpus, vec!["GPU-n2-1".to_string()]);
}

#[test]
fn a_gpu_task_of_a_lost_node_is_replaced_on_free_gpus_and_waits_when_there_are_none() {
    let four = gpu_svc("four", count(4));
    let mut s = three(vec![four.clone()]);
    settle(&mut s, 0);
    let first = live(&s, "four")[0].clone();
    assert_eq!(first.node.as_deref(), Some("n4"));
    s.apply(&Command::SetNodeStatus {
        node: "n4".into(),
        status: NodeStatus::Down,
        now_ms: 10,
    });
    settle(&mut s, 10);
    assert_eq!(s.tasks[&first.id].state, TaskState::Orphaned);
    let waiting = live(&s, "four");
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].state, TaskState::Pending);
    assert_eq!(
        waiting[0].error,
        "needs 4 GPUs: n0 has no GPUs; n2 has 2 free; n4 is down"
    );
    let id = waiting[0].id.clone();
    s.apply(&Command::RegisterNode {
        node: gnode("n4", 4, 24, "NVIDIA A10"),
    });
    settle(&mut s, 20);
    assert_eq!(s.tasks[&id].node.as_deref(), Some("n4"));
    assert_eq!(
        s.tasks[&id].gpus,
        (0..4).map(|i| format!("GPU-n4-{i}")).collect::<Vec<_>>()
    );
}

#[test]
fn a_task_whose_gpu_vanished_fails_and_its_replacement_waits_for_gpus_that_are_there() {
    let four = gpu_svc("four", count(4));
    let mut s = three(vec![four]);
    settle(&mut s, 0);
    let first = live(&s, "four")[0].clone();
    assert_eq!(first.node.as_deref(), Some("n4"));
    // Rediscovery on n4 finds three GPUs: GPU-n4-3 fell off the bus.
    let mut n4 = gnode("n4", 4, 24, "NVIDIA A10").gpus;
    n4.pop();
    s.apply(&Command::SetNodeGpus {
        node: "n4".into(),
        gpus: n4,
    });
    settle(&mut s, 10);
    let failed = &s.tasks[&first.id];
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(
        failed.error,
        "GPU GPU-n4-3 is gone from node n4 (its last GPU discovery did not find it)"
    );
    // After the restart delay its replacement looks for 4 GPUs where they are.
    settle(&mut s, 5_000);
    let waiting = live(&s, "four");
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].state, TaskState::Pending);
    assert_eq!(
        waiting[0].error,
        "needs 4 GPUs: n0 has no GPUs; n2 has 2 free; n4 has 3 free"
    );
    // A task whose GPUs are all there is left alone.
    let two = gpu_svc("two", count(2));
    let mut s = three(vec![two]);
    settle(&mut s, 0);
    let t = live(&s, "two")[0].clone();
    let node = t.node.clone().unwrap();
    let same = s.nodes[&node].gpus.clone();
    s.apply(&Command::SetNodeGpus { node, gpus: same });
    assert!(shoal_controller::reconciler::reconcile(&s, 10).is_empty());
}

#[test]
fn global_gpu_services_run_only_on_nodes_that_have_the_gpus() {
    let mut g = gpu_svc("g", count(2));
    g.mode = ServiceMode::Global;
    let mut s = three(vec![g]);
    settle(&mut s, 0);
    let mut nodes: Vec<_> = live(&s, "g")
        .iter()
        .map(|t| (t.node.clone().unwrap_or_default(), t.gpus.len()))
        .collect();
    nodes.sort();
    assert_eq!(nodes, vec![("n2".into(), 2), ("n4".into(), 2)]);
}

#[test]
fn nodes_show_which_task_holds_each_gpu() {
    let one = gpu_svc("one", count(1));
    let mut s = three(vec![one]);
    settle(&mut s, 0);
    let t = live(&s, "one")[0].id.clone();
    let row = shoal_controller::api::convert::node_row(&s, &s.nodes["n2"]);
    let held: Vec<(&str, &str)> = row
        .gpus
        .iter()
        .map(|g| (g.uuid.as_str(), g.assigned_to.as_str()))
        .collect();
    assert_eq!(held, vec![("GPU-n2-0", t.as_str()), ("GPU-n2-1", "")]);
    assert_eq!(row.gpus[0].memory_bytes, 24 << 30);
    assert_eq!(row.gpus[0].model, "NVIDIA A10");
}

// ---- properties ----

/// Requests the properties draw from: counts 1-4, optionally at least 40 GiB.
fn arb_request() -> impl Strategy<Value = GpuRequest> {
    (1u64..=4, any::<bool>()).prop_map(|(n, big)| GpuRequest {
        count: Some(n),
        min_memory_bytes: big.then_some(40 * GIB),
        ..Default::default()
    })
}

/// Up to 4 nodes with 0-4 GPUs of 24 or 80 GiB each.
fn arb_nodes() -> impl Strategy<Value = Vec<Node>> {
    prop::collection::vec(prop::collection::vec(prop::bool::ANY, 0..=4), 1..=4).prop_map(|ns| {
        ns.into_iter()
            .enumerate()
            .map(|(i, mems)| {
                let id = format!("n{i}");
                let mut n = node(&id, 64.0, 1 << 20);
                n.gpus = mems
                    .into_iter()
                    .enumerate()
                    .map(|(j, big)| Gpu {
                        uuid: format!("GPU-{id}-{j}"),
                        index: j as u32,
                        model: "m".into(),
                        memory_bytes: if big { 80 * GIB } else { 24 * GIB },
                    })
                    .collect();
                n
            })
            .collect()
    })
}

fn matching_free(n: &Node, used: &BTreeSet<String>, r: &GpuRequest) -> Vec<String> {
    n.gpus
        .iter()
        .filter(|g| !used.contains(&g.uuid))
        .filter(|g| r.min_memory_bytes.is_none_or(|m| g.memory_bytes >= m))
        .map(|g| g.uuid.clone())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Walking the decisions of one pass in order: every GPU handed out is on the node,
    /// free, meets the request and is handed out once; the node chosen keeps the fewest
    /// free GPUs among those that could take the task; a pending task fitted nowhere.
    #[test]
    fn one_pass_is_exclusive_exact_tight_and_pends_only_when_nothing_fits(
        nodes in arb_nodes(),
        asks in prop::collection::vec(arb_request(), 1..8),
    ) {
        let specs: Vec<ServiceSpec> = asks
            .iter()
            .enumerate()
            .map(|(i, r)| gpu_svc(&format!("s{i}"), r.clone()))
            .collect();
        let s = deployed(nodes.clone(), specs.clone());
        let reqs: Vec<_> = specs
            .iter()
            .enumerate()
            .map(|(i, sp)| req(&format!("t{i}"), sp))
            .collect();
        let out = place(&s, &reqs);
        prop_assert_eq!(out.len(), reqs.len());
        let mut used: BTreeMap<String, BTreeSet<String>> =
            nodes.iter().map(|n| (n.id.clone(), BTreeSet::new())).collect();
        for (d, r) in out.iter().zip(&asks) {
            let fitting: Vec<(&Node, usize)> = nodes
                .iter()
                .filter(|n| matching_free(n, &used[&n.id], r).len() as u64 >= r.count.unwrap())
                .map(|n| (n, n.gpus.len() - used[&n.id].len() - r.count.unwrap() as usize))
                .collect();
            match d {
                Decision::AssignGpus { node, gpus, .. } => {
                    let n = nodes.iter().find(|n| &n.id == node).unwrap();
                    prop_assert_eq!(gpus.len() as u64, r.count.unwrap());
                    let free = matching_free(n, &used[node], r);
                    for g in gpus {
                        prop_assert!(free.contains(g), "{} is not a free matching GPU of {}", g, node);
                        prop_assert!(used.get_mut(node).unwrap().insert(g.clone()), "{} twice", g);
                    }
                    let best = fitting.iter().map(|(_, left)| *left).min().unwrap();
                    let mine = fitting.iter().find(|(f, _)| &f.id == node).unwrap().1;
                    prop_assert_eq!(mine, best, "not the tightest node");
                }
                Decision::Pending { reason, .. } => {
                    prop_assert!(fitting.is_empty(), "pending although {:?} fit", fitting);
                    prop_assert!(reason.starts_with("needs "), "{}", reason);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }

    /// Through the replicated state: deploys, failures, lost and returning nodes, and
    /// reconcile passes in any order never leave one GPU with two live tasks.
    #[test]
    fn no_gpu_is_ever_held_by_two_live_tasks(
        nodes in arb_nodes(),
        asks in prop::collection::vec((arb_request(), 1u64..=3), 1..5),
        events in prop::collection::vec((0u8..3, 0usize..8), 0..12),
    ) {
        let specs: Vec<ServiceSpec> = asks
            .iter()
            .enumerate()
            .map(|(i, (r, replicas))| {
                let mut sp = gpu_svc(&format!("s{i}"), r.clone());
                sp.replicas = *replicas;
                sp
            })
            .collect();
        let mut s = deployed(nodes.clone(), specs);
        let mut now = 0;
        for (kind, pick) in events {
            now += 1000;
            settle(&mut s, now);
            check_exclusive(&s)?;
            let ids: Vec<TaskId> = s.tasks.keys().cloned().collect();
            match kind {
                0 if !ids.is_empty() => {
                    let t = s.tasks[&ids[pick % ids.len()]].clone();
                    if let Some(node) = t.node {
                        s.apply(&Command::TaskStatus {
                            node,
                            updates: vec![TaskUpdate { ip: None, ips: Default::default(),
                                task: t.id,
                                state: TaskState::Failed,
                                container_id: String::new(),
                                exit_code: Some(1),
                                error: "boom".into(),
                            }],
                            now_ms: now,
                        });
                    }
                }
                1 => {
                    let n = &nodes[pick % nodes.len()];
                    s.apply(&Command::SetNodeStatus { node: n.id.clone(), status: NodeStatus::Down, now_ms: now });
                }
                _ => {
                    let n = &nodes[pick % nodes.len()];
                    s.apply(&Command::RegisterNode { node: n.clone() });
                }
            }
        }
        settle(&mut s, now + 1000);
        check_exclusive(&s)?;
    }
}

fn check_exclusive(s: &ClusterState) -> Result<(), TestCaseError> {
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    for t in s.tasks.values().filter(|t| !t.state.is_terminal()) {
        let Some(node) = &t.node else {
            prop_assert!(t.gpus.is_empty(), "unplaced task {} holds GPUs", t.id);
            continue;
        };
        let want = s.services[&t.service_key()].spec.gpus[0].count.unwrap();
        prop_assert_eq!(
            t.gpus.len() as u64,
            want,
            "task {} holds {:?}",
            &t.id,
            &t.gpus
        );
        for g in &t.gpus {
            prop_assert!(
                s.nodes[node].gpus.iter().any(|have| &have.uuid == g),
                "{} is not a GPU of {}",
                g,
                node
            );
            if let Some(other) = seen.insert((node.clone(), g.clone()), t.id.clone()) {
                prop_assert!(false, "{} on {} held by {} and {}", g, node, other, t.id);
            }
        }
    }
    Ok(())
}

#[test]
fn gpu_lists_from_agents_need_distinct_uuids() {
    use shoal_controller::api::convert::gpus_from_pb;
    use shoal_proto::pb::GpuDevice;
    let g = |uuid: &str, index: u32| GpuDevice {
        uuid: uuid.into(),
        index,
        model: "m".into(),
        memory_bytes: 1,
    };
    let sorted = gpus_from_pb(&[g("GPU-b", 1), g("GPU-a", 0)]).unwrap();
    assert_eq!(
        sorted.iter().map(|x| x.uuid.as_str()).collect::<Vec<_>>(),
        vec!["GPU-a", "GPU-b"]
    );
    let err = gpus_from_pb(&[g("GPU-a", 0), g("GPU-a", 1)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid GPU list: GPU GPU-a is listed twice"
    );
    let err = gpus_from_pb(&[g("", 3)]).unwrap_err();
    assert_eq!(err.to_string(), "invalid GPU list: GPU 3 has no UUID");
}
