//! What a node's agent finds overlapping the cluster's address pool (issue 15): kept on
//! the node through `SetNodeConflicts` and the hello, shown by `shoal nodes`, and absent
//! from the snapshot bytes of a node without any (older states read unchanged).

mod common;

use common::*;
use shoal_controller::api::convert::{node_from_hello, node_row};
use shoal_controller::state::*;
use shoal_proto::pb;

const ROUTE: &str = "route 10.208.77.0/24 dev eth0 overlaps the cluster pool 10.208.0.0/12";
const NETWORK: &str =
    "docker network \"old_default\" (10.208.1.0/24) overlaps the cluster pool 10.208.0.0/12";

#[test]
fn a_nodes_conflicts_are_stored_replaced_and_shown() {
    let mut s = deployed(vec![node("n1", 4.0, 4096), node("n2", 4.0, 4096)], vec![]);
    let r = s.apply(&Command::SetNodeConflicts {
        node: "n2".into(),
        conflicts: vec![NETWORK.into(), ROUTE.into()],
    });
    assert_eq!(r.error, None);
    assert_eq!(s.nodes["n2"].conflicts, vec![NETWORK, ROUTE]);
    assert_eq!(node_row(&s, &s.nodes["n2"]).conflicts, vec![NETWORK, ROUTE]);
    assert!(node_row(&s, &s.nodes["n1"]).conflicts.is_empty());

    // The route was removed: the agent's next list replaces the old one.
    s.apply(&Command::SetNodeConflicts {
        node: "n2".into(),
        conflicts: vec![NETWORK.into()],
    });
    assert_eq!(node_row(&s, &s.nodes["n2"]).conflicts, vec![NETWORK]);

    // A reconnecting agent's hello carries its current list.
    let hello = pb::Hello {
        name: "n2".into(),
        address: "10.0.0.2".into(),
        cpus: 4.0,
        memory_bytes: 4 << 30,
        conflicts: vec![ROUTE.into()],
        ..Default::default()
    };
    let registered = node_from_hello(&hello).expect("a valid hello");
    s.apply(&Command::RegisterNode { node: registered });
    assert_eq!(s.nodes["n2"].conflicts, vec![ROUTE]);

    let r = s.apply(&Command::SetNodeConflicts {
        node: "ghost".into(),
        conflicts: vec![ROUTE.into()],
    });
    assert_eq!(r.error.as_deref(), Some("unknown node ghost"));
}

#[test]
fn a_node_without_conflicts_serializes_as_before() {
    let plain = node("n1", 4.0, 4096);
    let text = serde_json::to_string(&plain).unwrap();
    assert!(!text.contains("conflicts"), "{text}");
    let back: Node = serde_json::from_str(&text).unwrap();
    assert_eq!(back, plain);

    let mut with = plain;
    with.conflicts = vec![ROUTE.into()];
    let back: Node = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
    assert_eq!(back.conflicts, vec![ROUTE]);
}
