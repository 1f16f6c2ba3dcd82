//! What overlaps the cluster's pool on a node reaches the controller (issue 15): after
//! the pool is heard with the assignments, the agent reports a conflicting route, and
//! again when it goes, only when the list changed. Against a stand-in controller on
//! 127.0.0.1 and the recording fake runtime, with a route table file of the test's own.

#[allow(dead_code)]
mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{serve, until, Leader};
use shoal_agent::runtime::fake::FakeRuntime;
use shoal_agent::AgentConfig;
use shoal_proto::pb;
use shoal_proto::pb::agent_message::Msg;
use tokio_util::sync::CancellationToken;

/// How long a condition of these tests may take.
const WAIT: Duration = Duration::from_secs(15);

const ROUTE: &str = "route 10.208.77.0/24 dev eth1 overlaps the cluster pool 10.208.0.0/12";

/// A route table with, when `conflict`, a link route to 10.208.77.0/24 on eth1.
fn write_routes(path: &Path, conflict: bool) {
    let hex = |a: &str| {
        let ip: Ipv4Addr = a.parse().unwrap();
        format!("{:08X}", u32::from_ne_bytes(ip.octets()))
    };
    let mut text = String::from("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n");
    text += &format!(
        "eth0\t{}\t{}\t0003\t0\t0\t0\t{}\n",
        hex("0.0.0.0"),
        hex("192.168.1.1"),
        hex("0.0.0.0")
    );
    if conflict {
        text += &format!(
            "eth1\t{}\t00000000\t0001\t0\t0\t0\t{}\n",
            hex("10.208.77.0"),
            hex("255.255.255.0")
        );
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn reports(leader: &Leader) -> Vec<Vec<String>> {
    leader
        .got
        .lock()
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            Msg::Conflicts(r) => Some(r.conflicts.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_conflicting_route_is_reported_once_and_its_removal_too() {
    let leader = Leader::default();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let addr = serve(leader.clone(), stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("route");
    write_routes(&routes, true);
    let cfg = AgentConfig {
        controllers: vec![addr],
        name: "n2".into(),
        data_dir: dir.path().join("agent"),
        heartbeat_interval: Duration::from_millis(50),
        plaintext: true,
        routes_file: routes.clone(),
        conflict_rescan_interval: Duration::from_millis(100),
        ..AgentConfig::default()
    };
    tokio::spawn(shoal_agent::run_with_runtime(
        cfg,
        Arc::new(FakeRuntime::new()),
        stop.clone(),
    ));
    until(WAIT, "the session to open", || {
        leader.to_agent.lock().unwrap().is_some()
    })
    .await;
    // Before the pool is known, nothing is reported: the hello has no conflicts.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(reports(&leader), Vec::<Vec<String>>::new());
    match &leader.got.lock().unwrap()[0] {
        Msg::Hello(h) => assert!(h.conflicts.is_empty(), "{:?}", h.conflicts),
        other => panic!("not a hello first: {other:?}"),
    }
    let to_agent = leader.to_agent.lock().unwrap().clone().unwrap();
    let assignments = pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::Assignments(pb::Assignments {
            version: 1,
            mesh: Some(pb::Mesh {
                pool: "10.208.0.0/12".into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    to_agent.send(Ok(assignments)).await.unwrap();
    until(WAIT, "the route reported", || !reports(&leader).is_empty()).await;
    // Several rescans later, still one report: it is sent only when the list changes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reports(&leader), vec![vec![ROUTE.to_string()]]);
    write_routes(&routes, false);
    until(WAIT, "the removal reported", || reports(&leader).len() == 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reports(&leader), vec![vec![ROUTE.to_string()], vec![]]);
}
