//! Upgrades (issue 15): snapshots written by every released format are kept as golden
//! files in `tests/fixtures/state/` and must load in every later version; a snapshot of
//! a newer format than this shoal reads is refused with a clear error, not misread.
//!
//! `format-1.json` was written by this test with `SHOAL_WRITE_GOLDEN=1` when format 1
//! was current; it is never rewritten by a later version (a new format gets a new file).

mod common;

use std::path::PathBuf;

use common::*;
use shoal_controller::raft::state_machine::{
    decode_snapshot, decode_snapshot_from, encode_snapshot, encode_snapshot_to, Applied,
    SNAPSHOT_FORMAT,
};
use shoal_controller::state::*;
use shoal_proto::container::{ContainerOptions, DeviceMapping, NetworkMode};
use shoal_proto::task::TaskState;

/// Where a three-controller cluster's snapshot stands: its last entry and membership
/// (maps keyed by node ids, which a snapshot must read back).
fn as_applied(state: ClusterState) -> Applied {
    use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, StoredMembership};
    let log_id = LogId::new(CommittedLeaderId::new(3, 1), 42);
    let nodes: std::collections::BTreeMap<u64, BasicNode> = (1..=3)
        .map(|i| (i, BasicNode::new(format!("10.0.0.{i}:7370"))))
        .collect();
    let voters = vec![nodes.keys().copied().collect()];
    Applied {
        last_applied: Some(log_id),
        membership: StoredMembership::new(Some(log_id), Membership::new(voters, nodes)),
        state,
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/state")
        .join(name)
}

/// A state that uses what format 1 has: nodes with labels, devices, platform and role;
/// services with container options, devices and `service:` networking; running tasks.
fn rich_state() -> ClusterState {
    rich_state_in(ClusterState::default())
}

fn rich_state_in(base: ClusterState) -> ClusterState {
    let mut a = node("a", 4.0, 4096);
    a.labels.insert("zone".into(), "eu".into());
    a.devices = ["/dev/null".to_string(), "/dev/ttyUSB0".to_string()].into();
    a.platform = "linux/amd64".into();
    a.manager = true;
    let mut b = node("b", 2.0, 2048);
    b.platform = "linux/arm64".into();
    let mut zigbee = svc("zigbee", 1);
    zigbee.container = ContainerOptions {
        devices: vec![DeviceMapping {
            source: "/dev/ttyUSB0".into(),
            ..Default::default()
        }],
        shm_size: Some(64 << 20),
        ..Default::default()
    };
    let mut vpn_app = svc("app", 1);
    vpn_app.container.network_mode = Some(NetworkMode::Service("web".into()));
    let mut s = deployed(vec![a, b], vec![svc("web", 2), zigbee, vpn_app]);
    s.pool = base.pool;
    settle(&mut s, 1_000);
    for service in ["web", "zigbee", "app"] {
        report(&mut s, service, TaskState::Running, None, 2_000);
    }
    settle(&mut s, 3_000);
    s
}

#[test]
fn the_golden_snapshot_of_format_1_loads() {
    let path = fixture("format-1.json");
    if std::env::var_os("SHOAL_WRITE_GOLDEN").is_some() && !path.exists() {
        let applied = as_applied(rich_state());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, encode_snapshot(&applied).unwrap()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the golden file of format 1 must be in the repository)",
            path.display()
        )
    });
    let loaded = decode_snapshot(&bytes).unwrap_or_else(|e| panic!("format 1 must load: {e}"));
    assert_eq!(loaded.last_applied.map(|l| l.index), Some(42));
    assert_eq!(loaded.membership.nodes().count(), 3);
    let s = &loaded.state;
    assert_eq!(s.stacks.keys().collect::<Vec<_>>(), vec!["app"]);
    assert_eq!(s.services.len(), 3);
    let a = &s.nodes["a"];
    assert!(a.manager && a.devices.contains("/dev/ttyUSB0"));
    assert_eq!(a.platform, "linux/amd64");
    assert_eq!(a.labels["zone"], "eu");
    let zigbee = &s.services["app/zigbee"].spec.container;
    assert_eq!(zigbee.shm_size, Some(64 << 20));
    assert_eq!(zigbee.devices[0].source, "/dev/ttyUSB0");
    assert_eq!(
        s.services["app/app"].spec.container.network_mode,
        Some(NetworkMode::Service("web".into()))
    );
    let running = s
        .tasks
        .values()
        .filter(|t| t.state == TaskState::Running)
        .count();
    assert_eq!(running, 4, "web x2, zigbee, app");
    // The zigbee replica is where its device is; the app beside its web replica.
    let node_of = |svc: &str| {
        s.tasks
            .values()
            .find(|t| t.service == svc)
            .and_then(|t| t.node.clone())
    };
    assert_eq!(node_of("zigbee").as_deref(), Some("a"));
    // What this version writes for the same state reads back the same.
    let again = decode_snapshot(&encode_snapshot(&loaded).unwrap()).unwrap();
    assert_eq!(again, loaded);
}

#[test]
fn the_golden_snapshot_of_format_2_loads_with_its_pool() {
    let path = fixture("format-2.json");
    if std::env::var_os("SHOAL_WRITE_GOLDEN").is_some() && !path.exists() {
        let mut state = ClusterState::default();
        state.apply(&Command::SetPool {
            pool: "10.240.0.0/16".into(),
        });
        let mut rich = rich_state_in(state);
        settle(&mut rich, 4_000);
        let applied = as_applied(rich);
        std::fs::write(&path, encode_snapshot(&applied).unwrap()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["format"], 2, "a state with a pool is format 2");
    let loaded = decode_snapshot(&bytes).unwrap_or_else(|e| panic!("format 2 must load: {e}"));
    assert_eq!(loaded.state.pool().to_string(), "10.240.0.0/16");
    // Every subnet it gave out is in its pool.
    for nodes in loaded.state.subnets.values() {
        for i in nodes.values() {
            assert!(loaded.state.pool().cidr(*i).starts_with("10.240."));
        }
    }
    assert!(!loaded.state.subnets.is_empty());
}

#[test]
fn a_snapshot_written_before_formats_were_numbered_is_format_1() {
    let bytes = std::fs::read(fixture("format-1.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["format"], 1);
    v.as_object_mut().unwrap().remove("format");
    let legacy = serde_json::to_vec(&v).unwrap();
    let loaded = decode_snapshot(&legacy).expect("an unnumbered snapshot loads");
    assert_eq!(loaded.state.services.len(), 3);
}

#[test]
fn a_snapshot_of_a_newer_format_is_refused_saying_so() {
    let bytes = std::fs::read(fixture("format-1.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["format"] = serde_json::json!(SNAPSHOT_FORMAT + 1);
    // A newer version may also store things this one cannot parse at all.
    v["state"]["tasks"] = serde_json::json!("stored some other way");
    let newer = serde_json::to_vec(&v).unwrap();
    let err = decode_snapshot(&newer).expect_err("must be refused");
    assert!(
        err.contains(&format!(
            "written by a newer shoal (state format {}; this shoal reads formats up to {SNAPSHOT_FORMAT})",
            SNAPSHOT_FORMAT + 1
        )),
        "{err}"
    );
}

#[test]
fn streamed_snapshots_are_the_same_bytes_and_read_back_the_same() {
    let bytes = std::fs::read(fixture("format-2.json")).unwrap();
    let loaded = decode_snapshot(&bytes).unwrap();
    let from_reader = decode_snapshot_from(std::io::Cursor::new(&bytes)).unwrap();
    assert_eq!(from_reader, loaded);
    let mut streamed = Vec::new();
    encode_snapshot_to(&mut streamed, &loaded).unwrap();
    assert_eq!(streamed, encode_snapshot(&loaded).unwrap());
}

/// A newer shoal's snapshot is refused as such even when its format comes after what this
/// shoal cannot parse, or after a state it could misread, from memory or from a reader.
#[test]
fn a_newer_snapshot_is_refused_wherever_its_format_is() {
    let bytes = std::fs::read(fixture("format-1.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let newer = SNAPSHOT_FORMAT + 1;
    let state = serde_json::to_string(&v["state"]).unwrap();
    let membership = serde_json::to_string(&v["membership"]).unwrap();
    let unparsable = format!(
        r#"{{"state":"stored some other way","last_applied":null,"membership":{membership},"format":{newer}}}"#
    );
    let parsable = format!(
        r#"{{"state":{state},"last_applied":null,"membership":{membership},"format":{newer}}}"#
    );
    for json in [unparsable, parsable] {
        for err in [
            decode_snapshot(json.as_bytes()).expect_err("must be refused"),
            decode_snapshot_from(std::io::Cursor::new(json.as_bytes())).expect_err("refused"),
        ] {
            assert!(
                err.contains(&format!("written by a newer shoal (state format {newer};")),
                "{err}"
            );
        }
    }
    // Bytes that are no snapshot at all say so.
    let err = decode_snapshot(b"\x00\x01 not json").unwrap_err();
    assert!(err.starts_with("it does not parse"), "{err}");
    let err = decode_snapshot(br#"{"format":1,"state":7}"#).unwrap_err();
    assert!(err.starts_with("its data does not parse"), "{err}");
}
