//! A cluster's containers are its own (issue 15): the supervisor labels what it makes
//! with its cluster's id and leaves containers of another cluster alone, even one that
//! names the same task and slot. Against the recording fake runtime, on paused time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[allow(dead_code)]
mod common;

use shoal_agent::model::AssignmentSet;
use shoal_agent::runtime::fake::{Call, FakeRuntime};
use shoal_agent::runtime::ContainerState;
use shoal_agent::supervisor::{self, Event, SupervisorConfig};
use shoal_proto::labels;
use shoal_proto::task::TaskState;
use tokio_util::sync::CancellationToken;

const OURS: &str = "c0ffee0000000001";
const THEIRS: &str = "bada550000000002";

fn assignment(id: &str) -> AssignmentSet {
    AssignmentSet {
        version: 1,
        mesh: Default::default(),
        remove_volumes: Vec::new(),
        tasks: [(id.to_string(), common::assignment(id, "shop", "db"))]
            .into_iter()
            .collect(),
    }
}

#[tokio::test(start_paused = true)]
async fn another_clusters_container_is_left_alone_and_ours_is_labelled() {
    let fake = FakeRuntime::new();
    // What an earlier cluster left on this engine: stopped, in the same slot.
    let old_labels: BTreeMap<String, String> = [
        (labels::TASK, "0000000001"),
        (labels::STACK, "shop"),
        (labels::SERVICE, "db"),
        (labels::SLOT, "1"),
        (labels::NODE, "node-a"),
        (labels::GENERATION, "1"),
        (labels::CLUSTER, THEIRS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let old = fake.insert_container("shop_db.1.0000000001", old_labels, ContainerState::Exited);

    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (handle, mut events) = supervisor::spawn(
        SupervisorConfig {
            cluster: Some(OURS.into()),
            ..SupervisorConfig::new("node-a")
        },
        Arc::new(fake.clone()),
        stop.clone(),
    );
    // This cluster's ids start in a block of their own (`first_task_number`).
    handle.assign(assignment("0c0ffee001"));
    let running = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.recv().await.expect("supervisor alive") {
                Event::Report(r) if r.task_id == "0c0ffee001" => {
                    assert_ne!(
                        r.state,
                        TaskState::Failed,
                        "the old cluster's exit is not this task's: {r:?}"
                    );
                    if r.state == TaskState::Running {
                        return r;
                    }
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the task runs");
    let ours = fake.containers().into_iter().find(|c| c.id != old);
    let ours = ours.expect("a container of this cluster was created");
    assert_eq!(running.container_id.as_deref(), Some(ours.id.as_str()));
    assert_eq!(
        ours.labels.get(labels::CLUSTER).map(String::as_str),
        Some(OURS)
    );
    // The old container was neither adopted, stopped nor removed.
    let calls = fake.calls();
    assert!(
        !calls.iter().any(|c| match c {
            Call::Remove(id) | Call::Stop { id, .. } | Call::Start(id) => id == &old,
            _ => false,
        }),
        "{calls:?}"
    );
    assert!(fake.containers().iter().any(|c| c.id == old));
}
