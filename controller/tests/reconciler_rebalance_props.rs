//! A rebalance always ends, and leaves an unconstrained service within one replica of
//! even across nodes (and across spread-label values), whatever the starting spread.

mod common;
use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;

use shoal_controller::state::*;
use shoal_proto::task::TaskState;

fn per_node(s: &ClusterState) -> BTreeMap<String, usize> {
    let mut m: BTreeMap<String, usize> = s.nodes.keys().map(|n| (n.clone(), 0)).collect();
    for t in live(s, "web") {
        if let Some(n) = &t.node {
            *m.entry(n.clone()).or_default() += 1;
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    #[test]
    fn a_rebalance_ends_within_one_of_even(
        n_nodes in 2usize..7,
        up_at_start in 1usize..3,
        replicas in 1u64..25,
        parallelism in 0u64..3,
        zones in prop::collection::vec(prop::option::of(0usize..2), 7),
        spread in any::<bool>(),
    ) {
        let up_at_start = up_at_start.min(n_nodes);
        let nodes: Vec<Node> = (0..n_nodes)
            .map(|i| {
                let mut n = node(&format!("n{i}"), 8.0, 8192);
                if i >= up_at_start {
                    n.status = NodeStatus::Down;
                }
                if let Some(z) = zones[i] {
                    n.labels.insert("zone".into(), format!("z{z}"));
                }
                n
            })
            .collect();
        let mut web = svc("web", replicas);
        web.update.parallelism = parallelism;
        if spread {
            web.placement.spread = vec!["zone".into()];
        }
        let mut s = deployed(nodes, vec![web]);
        settle(&mut s, 0);
        report(&mut s, "web", TaskState::Running, None, 1);
        for i in up_at_start..n_nodes {
            s.apply(&Command::SetNodeStatus {
                node: format!("n{i}"),
                status: NodeStatus::Ready,
                now_ms: 1,
            });
        }
        settle(&mut s, 10_000);
        s.apply(&Command::Rebalance { service: "app/web".into() });
        let mut now = 10_000;
        let mut passes = 0;
        while s.services["app/web"].rebalancing {
            passes += 1;
            prop_assert!(passes <= 200, "the rebalance did not end: {:?}", per_node(&s));
            settle(&mut s, now);
            report(&mut s, "web", TaskState::Running, None, now + 1);
            now += 6_000;
        }
        settle(&mut s, now);
        let m = per_node(&s);
        prop_assert_eq!(m.values().sum::<usize>() as u64, replicas);
        if spread {
            let mut groups: BTreeMap<Option<&String>, usize> = BTreeMap::new();
            for (id, n) in &s.nodes {
                *groups.entry(n.labels.get("zone")).or_default() += m[id];
            }
            let (min, max) = (groups.values().min().unwrap(), groups.values().max().unwrap());
            prop_assert!(max - min <= 1, "groups {:?} nodes {:?}", groups, m);
        } else {
            let (min, max) = (m.values().min().unwrap(), m.values().max().unwrap());
            prop_assert!(max - min <= 1, "nodes {:?}", m);
        }
    }
}
