//! A removed stack's Docker networks go even when the agent stopped right after the
//! removal (issue 15): the supervisor seeds the networks it may remove from the engine
//! at start, and removes those no assigned task and no container of its own needs once
//! the first assignments arrive; networks of another cluster, and ones made before
//! networks carried a cluster label while another cluster's containers are on the
//! engine, stay. Against the recording fake runtime, on paused time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[allow(dead_code)]
mod common;

use common::until;

use shoal_agent::model::{Assignment, AssignmentSet};
use shoal_agent::runtime::fake::{Call, FakeRuntime};
use shoal_agent::runtime::{ContainerRuntime, ContainerState, NetworkInfo};
use shoal_agent::supervisor::{self, Event, SupervisorConfig, SupervisorHandle};
use shoal_proto::labels;
use shoal_proto::task::TaskState;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

/// How long a condition of these tests may take.
const WAIT: Duration = Duration::from_secs(60);

const OURS: &str = "c0ffee0000000001";
const THEIRS: &str = "bada550000000002";

fn assignment(id: &str, stack: &str) -> Assignment {
    common::assignment(id, stack, "web")
}

fn set(version: u64, tasks: Vec<Assignment>) -> AssignmentSet {
    AssignmentSet {
        version,
        tasks: tasks
            .into_iter()
            .map(|a| (a.task.task_id.clone(), a))
            .collect(),
        ..Default::default()
    }
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn network(name: &str, pairs: &[(&str, &str)]) -> NetworkInfo {
    NetworkInfo {
        name: name.into(),
        labels: tags(pairs),
        ..Default::default()
    }
}

/// A supervisor of node-a in cluster OURS (an agent starting), stopped when the token is.
fn start(
    fake: &FakeRuntime,
    stop: &CancellationToken,
) -> (SupervisorHandle, UnboundedReceiver<Event>) {
    supervisor::spawn(
        SupervisorConfig {
            cluster: Some(OURS.into()),
            ..SupervisorConfig::new("node-a")
        },
        Arc::new(fake.clone()),
        stop.clone(),
    )
}

async fn wait_running(events: &mut UnboundedReceiver<Event>, task: &str) {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Event::Report(r) = events.recv().await.expect("supervisor alive") {
                if r.task_id == task && r.state == TaskState::Running {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{task} runs within 60 s"));
}

#[tokio::test(start_paused = true)]
async fn a_removed_stacks_network_goes_after_a_restart_and_another_clusters_stays() {
    let fake = FakeRuntime::new();
    // What another cluster left on the engine: its network and a stopped container on it.
    fake.insert_network(network(
        "shoal-left",
        &[(labels::STACK, "left"), (labels::CLUSTER, THEIRS)],
    ));
    fake.insert_container(
        "left_web.1.0bada55001",
        tags(&[
            (labels::TASK, "0bada55001"),
            (labels::STACK, "left"),
            (labels::SERVICE, "web"),
            (labels::SLOT, "1"),
            (labels::NODE, "node-a"),
            (labels::CLUSTER, THEIRS),
        ]),
        ContainerState::Exited,
    );
    // Made by an older shoal (no cluster label): it may be the other cluster's.
    fake.insert_network(network("shoal-legacy", &[(labels::STACK, "legacy")]));
    // Somebody else's network.
    fake.insert_network(network("users_default", &[]));

    // The agent runs a replica of `gone`, whose network it creates, labelled as ours.
    let first = CancellationToken::new();
    let (handle, mut events) = start(&fake, &first);
    handle.assign(set(1, vec![assignment("0c0ffee001", "gone")]));
    wait_running(&mut events, "0c0ffee001").await;
    let made = fake.list_networks().await.expect("list networks");
    let gone = made.iter().find(|n| n.name == "shoal-gone").expect("made");
    assert_eq!(gone.cluster(), Some(OURS));

    // `shoal rm gone`, and the agent stops before it hears of it: container and network
    // stay on the engine.
    first.cancel();
    handle.stopped().await;
    assert!(fake.networks().contains(&"shoal-gone".to_string()));

    // Started again, it hears assignments without `gone`.
    let second = CancellationToken::new();
    let _guard = second.clone().drop_guard();
    let (handle, mut events) = start(&fake, &second);
    fake.clear_calls();
    handle.assign(set(2, vec![assignment("0c0ffee002", "shop")]));
    wait_running(&mut events, "0c0ffee002").await;
    until(WAIT, "the removed stack's network is removed", || {
        !fake.networks().contains(&"shoal-gone".to_string())
    })
    .await;
    assert!(
        fake.container_of("0c0ffee001").is_none(),
        "its container went first"
    );
    assert_eq!(
        fake.networks(),
        vec!["shoal-left", "shoal-legacy", "shoal-shop", "users_default"]
    );
    let removed: Vec<Call> = fake
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::RemoveNetwork(_)))
        .collect();
    assert_eq!(removed, vec![Call::RemoveNetwork("gone".into())]);
}

#[tokio::test(start_paused = true)]
async fn an_unlabelled_shoal_network_is_ours_when_no_other_cluster_is_on_the_engine() {
    let fake = FakeRuntime::new();
    // A stack removed while an older agent (no cluster labels yet) was down.
    fake.insert_network(network("shoal-legacy", &[(labels::STACK, "legacy")]));
    fake.insert_network(network("users_default", &[]));
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (handle, mut events) = start(&fake, &stop);
    handle.assign(set(1, vec![assignment("0c0ffee001", "shop")]));
    wait_running(&mut events, "0c0ffee001").await;
    until(WAIT, "the older shoal's unused network is removed", || {
        !fake.networks().contains(&"shoal-legacy".to_string())
    })
    .await;
    assert_eq!(fake.networks(), vec!["shoal-shop", "users_default"]);
}

/// A network found unused is not removed between a new replica's check that it exists
/// and its container's start: the removal and the start take turns (the removal here
/// hangs in the engine while the new replica of the same stack arrives).
#[tokio::test(start_paused = true)]
async fn a_network_removal_never_pulls_the_network_from_under_a_starting_replica() {
    let fake = FakeRuntime::new();
    let stop = CancellationToken::new();
    let (handle, mut events) = start(&fake, &stop);
    handle.assign(set(1, vec![assignment("t1", "shop")]));
    wait_running(&mut events, "t1").await;

    // The stack's only replica goes: its network is unused, and its removal hangs.
    fake.hang(shoal_agent::runtime::fake::Op::RemoveNetwork);
    handle.assign(set(2, vec![]));
    until(WAIT, "the removal to be under way", || {
        fake.calls().contains(&Call::RemoveNetwork("shop".into()))
    })
    .await;

    // A new replica of the same stack arrives while the removal is in the engine.
    handle.assign(set(3, vec![assignment("t2", "shop")]));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        fake.container_of("t2").is_none(),
        "the new replica waits for the removal instead of creating on a network about to go"
    );
    fake.release(shoal_agent::runtime::fake::Op::RemoveNetwork);
    wait_running(&mut events, "t2").await;
    assert!(
        fake.networks().contains(&"shoal-shop".to_string()),
        "the network of the running replica exists: {:?}",
        fake.networks()
    );
    let calls = fake.calls();
    let removed = calls
        .iter()
        .position(|c| *c == Call::RemoveNetwork("shop".into()));
    let ensured = calls
        .iter()
        .rposition(|c| *c == Call::EnsureNetwork("shop".into()));
    assert!(
        removed < ensured,
        "the new replica made sure of its network after the removal: {calls:?}"
    );
    stop.cancel();
}
