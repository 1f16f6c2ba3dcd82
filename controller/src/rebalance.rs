//! `shoal rebalance SERVICE`: which replicas to move so the service's spread evens out.
//! Pure, like the scheduler: the reconciler asks for at most `budget` moves per pass and
//! rolls each like a drained replica (the replacement is placed by the scheduler, the old
//! replica stops once the new one is ready).
//!
//! A move takes a replica from node S to node T (a node it fits on now). It is made only
//! when it strictly evens things out, level by level as the scheduler spreads: first the
//! groups of the first `spread` label, then of the next, then the nodes themselves. At
//! the first level where S and T are in different groups, moving one replica changes the
//! sum of squared counts by `2 (cT - cS + 1)`; a move must make the first such change
//! negative (cT + 1 < cS). Each move so lowers that potential, so rebalancing ends.

use std::collections::{BTreeMap, BTreeSet};

use crate::scheduler;
use crate::state::{ClusterState, NodeId, Service, TaskId};

/// Replicas to move, best move first: at most `budget`. `counted` is every live replica
/// of the service by node (replacements in flight included); `movable` the ready ones
/// that may be moved, by node.
pub fn moves(
    state: &ClusterState,
    svc: &Service,
    counted: &BTreeMap<NodeId, u64>,
    movable: &BTreeMap<NodeId, Vec<TaskId>>,
    budget: usize,
) -> Vec<TaskId> {
    if budget == 0 || movable.is_empty() {
        return Vec::new();
    }
    let spread = &svc.spec.placement.spread;
    let targets: BTreeSet<NodeId> = scheduler::fitting_nodes(state, &svc.key(), &svc.spec)
        .into_iter()
        .collect();
    // The group key of each node at each level: the first `l + 1` spread values, and at
    // the last level the node itself.
    let keys = |node: &NodeId| -> Vec<Vec<Option<String>>> {
        let path = state
            .nodes
            .get(node)
            .map(|n| scheduler::spread_path(n, spread))
            .unwrap_or_else(|| vec![None; spread.len()]);
        let mut out: Vec<Vec<Option<String>>> =
            (1..=spread.len()).map(|l| path[..l].to_vec()).collect();
        let mut leaf = path.clone();
        leaf.push(Some(node.clone()));
        out.push(leaf);
        out
    };
    let mut counts: BTreeMap<Vec<Option<String>>, i64> = BTreeMap::new();
    let all: BTreeSet<&NodeId> = counted.keys().chain(&targets).collect();
    let node_keys: BTreeMap<&NodeId, Vec<Vec<Option<String>>>> =
        all.iter().map(|n| (*n, keys(n))).collect();
    for (node, c) in counted {
        for k in &node_keys[node] {
            *counts.entry(k.clone()).or_default() += *c as i64;
        }
    }
    let mut movable = movable.clone();
    let mut out = Vec::new();
    while out.len() < budget {
        // Within a group of the last spread level only node counts differ, so the most
        // loaded source and the least loaded target of each group are the only ones to
        // weigh: pairs of groups, not of nodes.
        let node_count = |n: &NodeId| {
            counts
                .get(&node_keys[n][spread.len()])
                .copied()
                .unwrap_or(0)
        };
        let group = |n: &NodeId| node_keys[n][..spread.len()].to_vec();
        let mut sources: BTreeMap<Vec<Vec<Option<String>>>, &NodeId> = BTreeMap::new();
        for (s, tasks) in &movable {
            if tasks.is_empty() {
                continue;
            }
            let e = sources.entry(group(s)).or_insert(s);
            if node_count(s) > node_count(e) {
                *e = s;
            }
        }
        let mut lightest: BTreeMap<Vec<Vec<Option<String>>>, &NodeId> = BTreeMap::new();
        for t in &targets {
            let e = lightest.entry(group(t)).or_insert(t);
            if node_count(t) < node_count(e) {
                *e = t;
            }
        }
        let mut best: Option<(Vec<i64>, &NodeId, &NodeId)> = None;
        for s in sources.values() {
            for t in lightest.values() {
                if s == t {
                    continue;
                }
                let (ks, kt) = (&node_keys[*s], &node_keys[*t]);
                let delta: Vec<i64> = ks
                    .iter()
                    .zip(kt)
                    .map(|(a, b)| {
                        if a == b {
                            0
                        } else {
                            counts.get(b).copied().unwrap_or(0)
                                - counts.get(a).copied().unwrap_or(0)
                                + 1
                        }
                    })
                    .collect();
                let improves = delta.iter().find(|d| **d != 0).is_some_and(|d| *d < 0);
                if improves && best.as_ref().is_none_or(|(b, _, _)| delta < *b) {
                    best = Some((delta, s, t));
                }
            }
        }
        let Some((_, s, t)) = best else { break };
        let (s, t) = (s.clone(), t.clone());
        for k in &node_keys[&s] {
            *counts.entry(k.clone()).or_default() -= 1;
        }
        for k in &node_keys[&t] {
            *counts.entry(k.clone()).or_default() += 1;
        }
        if let Some(task) = movable.get_mut(&s).and_then(Vec::pop) {
            out.push(task);
        }
    }
    out
}
