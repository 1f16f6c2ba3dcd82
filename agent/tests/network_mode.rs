//! `network_mode`, `ipc`/`pid: service:NAME` and `dns:` on the node: the supervisor
//! against the recording fake runtime, on paused time.

use std::sync::Arc;
use std::time::Duration;

use shoal_agent::model::{Assignment, AssignmentSet, TaskReport};
use shoal_agent::runtime::fake::{Call, FakeRuntime};
use shoal_agent::runtime::{ContainerRequest, ContainerState, TaskIdentity};
use shoal_agent::supervisor::{self, Event, SupervisorConfig, JOINED};
use shoal_proto::container::{ContainerOptions, NetworkMode};
use shoal_proto::spec::ServiceSpec;
use shoal_proto::task::{Desired, TaskState};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

struct Node {
    handle: supervisor::SupervisorHandle,
    events: UnboundedReceiver<Event>,
    _stop: tokio_util::sync::DropGuard,
}

fn start(fake: &FakeRuntime) -> Node {
    let stop = CancellationToken::new();
    let (handle, events) = supervisor::spawn(
        SupervisorConfig::new("node-a"),
        Arc::new(fake.clone()),
        stop.clone(),
    );
    Node {
        handle,
        events,
        _stop: stop.drop_guard(),
    }
}

impl Node {
    /// The next report of `task` in state `state` (paused time makes the wait instant).
    async fn wait_for(&mut self, task: &str, state: TaskState) -> TaskReport {
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match self.events.recv().await.expect("supervisor alive") {
                    Event::Report(r) if r.task_id == task && r.state == state => return r,
                    _ => {}
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {state} report for {task}"))
    }
}

/// Task `id` of service `shop/service`, slot `slot`, with container options `options`.
fn task(id: &str, service: &str, slot: u64, options: ContainerOptions) -> Assignment {
    Assignment {
        task: TaskIdentity {
            task_id: id.into(),
            stack: "shop".into(),
            service: service.into(),
            slot,
            generation: 1,
        },
        desired: Desired::Running,
        ended: false,
        gpus: Vec::new(),
        secrets: Vec::new(),
        volumes: Vec::new(),
        spec: Arc::new(ServiceSpec {
            name: service.into(),
            image: "img:1".into(),
            container: options,
            ..Default::default()
        }),
    }
}

fn set(tasks: Vec<Assignment>) -> AssignmentSet {
    AssignmentSet {
        version: 1,
        mesh: Default::default(),
        remove_volumes: Vec::new(),
        tasks: tasks
            .into_iter()
            .map(|a| (a.task.task_id.clone(), a))
            .collect(),
    }
}

fn joins_vpn() -> ContainerOptions {
    ContainerOptions {
        network_mode: Some(NetworkMode::Service("vpn".into())),
        ipc: Some("service:vpn".into()),
        ..Default::default()
    }
}

/// The create request of the container named like task `task`'s.
fn created(fake: &FakeRuntime, task: &str) -> Option<ContainerRequest> {
    fake.calls().into_iter().find_map(|c| match c {
        Call::Create(req) if req.labels.get("io.shoal.task").map(String::as_str) == Some(task) => {
            Some(*req)
        }
        _ => None,
    })
}

fn id_of(fake: &FakeRuntime, task: &str) -> String {
    fake.container_of(task)
        .unwrap_or_else(|| panic!("a container for {task}"))
        .id
}

#[tokio::test(start_paused = true)]
async fn a_service_network_mode_joins_the_same_slot_of_that_service_on_the_node() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    let vpn = |id: &str, slot| task(id, "vpn", slot, ContainerOptions::default());
    node.handle.assign(set(vec![vpn("v1", 1), vpn("v2", 2)]));
    node.wait_for("v1", TaskState::Running).await;
    node.wait_for("v2", TaskState::Running).await;
    let v2 = id_of(&fake, "v2");

    node.handle.assign(set(vec![
        vpn("v1", 1),
        vpn("v2", 2),
        task("a2", "app", 2, joins_vpn()),
    ]));
    node.wait_for("a2", TaskState::Running).await;
    let req = created(&fake, "a2").expect("app created");
    assert_eq!(req.network_mode, Some(format!("container:{v2}")));
    assert_eq!(req.options.ipc, Some(format!("container:{v2}")));
    assert_eq!(req.labels.get(JOINED), Some(&v2));
    // None of the cluster's: no aliases, no other network, not the agent's DNS.
    assert!(req.aliases.is_empty(), "{:?}", req.aliases);
    assert!(req.extra_networks.is_empty());
    assert!(req.dns.is_empty());
    assert_eq!(fake.container_of("a2").expect("app").ip, None);
}

#[tokio::test(start_paused = true)]
async fn with_no_running_replica_to_join_the_task_fails_and_nothing_is_created() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    node.handle
        .assign(set(vec![task("a1", "app", 1, joins_vpn())]));
    let failed = node.wait_for("a1", TaskState::Failed).await;
    assert_eq!(
        failed.error.as_deref(),
        Some("network_mode: service:vpn: no running replica of shop/vpn on node node-a")
    );
    assert!(created(&fake, "a1").is_none(), "{:?}", fake.calls());
}

#[tokio::test(start_paused = true)]
async fn a_replica_whose_network_owner_stopped_is_stopped_and_its_replacement_joins_the_new_one() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    let vpn = |id: &str| task(id, "vpn", 1, ContainerOptions::default());
    node.handle.assign(set(vec![vpn("v1")]));
    node.wait_for("v1", TaskState::Running).await;
    node.handle
        .assign(set(vec![vpn("v1"), task("a1", "app", 1, joins_vpn())]));
    node.wait_for("a1", TaskState::Running).await;
    let app = id_of(&fake, "a1");

    // The vpn replica dies: the app has no network any more.
    assert!(fake.exit("v1", 137));
    let failed = node.wait_for("a1", TaskState::Failed).await;
    let error = failed.error.unwrap_or_default();
    assert!(
        error.starts_with("network_mode: service:vpn: the replica whose network it shared"),
        "{error}"
    );
    assert!(fake
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Stop { id, .. } if *id == app)));
    assert_eq!(
        fake.container_of("a1").expect("kept").state,
        ContainerState::Exited
    );

    // The controller replaces both (restart policy; the scheduler places the app
    // beside a live vpn): the new app joins the new vpn.
    node.handle.assign(set(vec![vpn("v1b")]));
    node.wait_for("v1b", TaskState::Running).await;
    let v1b = id_of(&fake, "v1b");
    node.handle
        .assign(set(vec![vpn("v1b"), task("a1b", "app", 1, joins_vpn())]));
    node.wait_for("a1b", TaskState::Running).await;
    let req = created(&fake, "a1b").expect("the replacement created");
    assert_eq!(req.network_mode, Some(format!("container:{v1b}")));
}

#[tokio::test(start_paused = true)]
async fn host_mode_uses_no_cluster_network_and_gives_dns_servers_to_the_engine() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    let options = ContainerOptions {
        network_mode: Some(NetworkMode::Host),
        dns: vec!["192.0.2.53:53".into(), "2001:db8::53".into()],
        ..Default::default()
    };
    node.handle
        .assign(set(vec![task("h1", "edge", 1, options)]));
    node.wait_for("h1", TaskState::Running).await;
    let req = created(&fake, "h1").expect("created");
    assert_eq!(req.network_mode.as_deref(), Some("host"));
    assert_eq!(req.options.dns, vec!["192.0.2.53", "2001:db8::53"]);
    assert!(req.dns.is_empty() && req.aliases.is_empty() && req.extra_networks.is_empty());
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| matches!(c, Call::EnsureNetwork(_))),
        "no cluster network: {:?}",
        fake.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_dns_entries_fail_the_task_before_anything_is_created() {
    let fake = FakeRuntime::new();
    let mut node = start(&fake);
    let options = ContainerOptions {
        dns: vec!["192.0.2.53".into(), "resolver.lan".into()],
        ..Default::default()
    };
    node.handle.assign(set(vec![task("w1", "web", 1, options)]));
    let failed = node.wait_for("w1", TaskState::Failed).await;
    let error = failed.error.unwrap_or_default();
    assert!(
        error.starts_with("dns: \"resolver.lan\" is not an IP address"),
        "{error}"
    );
    assert!(created(&fake, "w1").is_none());
}
