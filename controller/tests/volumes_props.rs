//! Properties of placement with volume copies, over random clusters: a slot that ran
//! with a copy is only ever placed where that copy is, a single-replica service only
//! where a copy is (never with a new, empty one while a copy exists), no replica lands
//! on a node holding a copy that is not live, and the decisions are deterministic.

mod common;
use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;

use shoal_controller::reconciler::reconcile;
use shoal_controller::state::*;
use shoal_proto::spec::*;

#[derive(Debug, Clone)]
struct NodeGen {
    ready: bool,
    active: bool,
    /// None: no copy; Some((live, slots that ran with it)).
    copy: Option<(bool, BTreeSet<u64>)>,
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.85),
        prop::option::weighted(
            0.5,
            (
                prop::bool::weighted(0.8),
                prop::collection::btree_set(1u64..5, 0..3),
            ),
        ),
    )
        .prop_map(|(ready, active, copy)| NodeGen {
            ready,
            active,
            copy,
        })
}

fn build(nodes: &[NodeGen], replicas: u64) -> ClusterState {
    let mut s = ClusterState::default();
    for (i, g) in nodes.iter().enumerate() {
        let mut n = node(&format!("n{i}"), 4.0, 4096);
        n.status = if g.ready {
            NodeStatus::Ready
        } else {
            NodeStatus::Down
        };
        n.availability = if g.active {
            Availability::Active
        } else {
            Availability::Drain
        };
        s.nodes.insert(n.id.clone(), n);
    }
    let mut db = svc("db", replicas);
    db.volumes = vec![MountSpec {
        kind: MountKind::Volume,
        source: Some("v".into()),
        target: "/data".into(),
        read_only: false,
        relative: false,
    }];
    s.apply(&Command::DeployStack {
        spec: StackSpec {
            name: "app".into(),
            services: BTreeMap::from([("db".to_string(), db)]),
            volumes: BTreeMap::from([("v".to_string(), VolumeSpec::default())]),
            ..Default::default()
        },
        now_ms: 0,
        secrets: Default::default(),
    });
    for (i, g) in nodes.iter().enumerate() {
        let Some((live, slots)) = &g.copy else {
            continue;
        };
        let id = format!("n{i}");
        s.volumes.insert(
            copy_key("app", "v", &id),
            VolumeCopy {
                stack: "app".into(),
                name: "v".into(),
                node: id,
                docker_name: "app_v".into(),
                created_ms: 0,
                size_bytes: Some(1),
                last_used_ms: 0,
                slots: BTreeMap::from([("db".to_string(), slots.clone())]),
                state: if *live {
                    CopyState::Live
                } else {
                    CopyState::SetAside
                },
                note: String::new(),
                seen: true,
                ephemeral: false,
                synced_ms: None,
                frozen_ms: None,
            },
        );
    }
    s
}

/// Checks one assignment of `db`'s slot to `node` against the copies before it.
fn allowed(s: &ClusterState, replicas: u64, slot: u64, node: &str) -> Result<(), String> {
    let copies: Vec<&VolumeCopy> = s.copies_of("app", "v").collect();
    if copies
        .iter()
        .any(|c| c.node == node && c.state != CopyState::Live)
    {
        return Err(format!(
            "slot {slot} placed on {node}, which holds a non-live copy"
        ));
    }
    let live: Vec<&&VolumeCopy> = copies
        .iter()
        .filter(|c| c.state == CopyState::Live)
        .collect();
    let mine: BTreeSet<&str> = live
        .iter()
        .filter(|c| c.slots.get("db").is_some_and(|x| x.contains(&slot)))
        .map(|c| c.node.as_str())
        .collect();
    if !mine.is_empty() && !mine.contains(node) {
        return Err(format!(
            "slot {slot} ran with copies on {mine:?} but went to {node}"
        ));
    }
    if replicas == 1 && !live.is_empty() && !live.iter().any(|c| c.node == node) {
        return Err(format!(
            "the single replica started with a new copy on {node} while copies exist"
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn placements_respect_the_copies(
        nodes in prop::collection::vec(node_gen(), 1..6),
        replicas in 1u64..5,
    ) {
        let mut s = build(&nodes, replicas);
        for round in 0..10u64 {
            let d = reconcile(&s, round);
            prop_assert_eq!(&d, &reconcile(&s, round), "deterministic");
            if d.is_empty() {
                break;
            }
            for dec in &d {
                if let Decision::Assign { task, node } = dec {
                    let slot = s.tasks[task].slot;
                    if let Err(e) = allowed(&s, replicas, slot, node) {
                        return Err(TestCaseError::fail(e));
                    }
                }
            }
            s.apply(&Command::Reconcile { decisions: d, now_ms: round });
        }
        // Whatever waits says why in words that name the volume or the nodes.
        for t in s.tasks.values().filter(|t| t.state == shoal_proto::task::TaskState::Pending) {
            prop_assert!(!t.error.is_empty(), "a pending task says why");
        }
    }
}
