//! Named volumes and placement: the exact decisions of the reconciler and scheduler when
//! copies of a volume exist, and how moves, removals and agents' reports change the
//! copies the state records.

mod common;
use std::collections::{BTreeMap, BTreeSet};

use common::*;

use shoal_controller::reconciler::reconcile;
use shoal_controller::scheduler::{binding, Binding};
use shoal_controller::state::*;
use shoal_proto::spec::*;
use shoal_proto::task::{Desired, TaskState};

const WAIT_A_DOWN: &str = "volume app_pgdata is on a, which is down: bring a back (the data is \
there), or give up that copy (shoal volume rm app/pgdata --node a) to start empty elsewhere, or \
declare it disposable (x-shoal-volume: {policy: ephemeral})";

fn mounting(name: &str, replicas: u64, volume: &str) -> ServiceSpec {
    let mut s = svc(name, replicas);
    s.volumes = vec![MountSpec {
        kind: MountKind::Volume,
        source: Some(volume.into()),
        target: "/data".into(),
        read_only: false,
        relative: false,
    }];
    s
}

fn stack(services: Vec<ServiceSpec>, volumes: &[(&str, VolumeSpec)]) -> StackSpec {
    StackSpec {
        name: "app".into(),
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
        networks: Default::default(),
        volumes: volumes
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect(),
        secrets: Vec::new(),
        configs: Vec::new(),
    }
}

fn ephemeral() -> VolumeSpec {
    VolumeSpec {
        policy: VolumePolicy {
            ephemeral: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn cluster(nodes: &[&str], spec: StackSpec) -> ClusterState {
    let mut s = ClusterState::default();
    for n in nodes {
        s.nodes.insert(n.to_string(), node(n, 4.0, 4096));
    }
    deploy(&mut s, spec);
    s
}

fn deploy(s: &mut ClusterState, spec: StackSpec) {
    s.apply(&Command::DeployStack {
        spec,
        now_ms: 0,
        secrets: Default::default(),
    });
}

fn set_status(s: &mut ClusterState, node: &str, status: NodeStatus) {
    s.apply(&Command::SetNodeStatus {
        node: node.into(),
        status,
        now_ms: 0,
    });
}

fn status(s: &mut ClusterState, t: &Task, state: TaskState) {
    s.apply(&Command::TaskStatus {
        node: t.node.clone().unwrap(),
        updates: vec![TaskUpdate {
            task: t.id.clone(),
            state,
            container_id: if state == TaskState::Shutdown {
                String::new()
            } else {
                format!("c-{}", t.id)
            },
            exit_code: None,
            error: String::new(),
            ip: None,
            ips: Default::default(),
        }],
        now_ms: 0,
    });
}

/// Where each live replica of `service` runs, by slot.
fn placed(s: &ClusterState, service: &str) -> BTreeMap<u64, Option<String>> {
    live(s, service)
        .iter()
        .map(|t| (t.slot, t.node.clone()))
        .collect()
}

fn pending_reason(s: &ClusterState, service: &str) -> String {
    live(s, service)
        .iter()
        .find(|t| t.state == TaskState::Pending)
        .map(|t| t.error.clone())
        .unwrap_or_default()
}

fn db_on_a() -> ClusterState {
    let mut s = cluster(
        &["a", "b", "c"],
        stack(
            vec![mounting("db", 1, "pgdata")],
            &[("pgdata", VolumeSpec::default())],
        ),
    );
    settle(&mut s, 0);
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, Some("a".into()))]));
    report(&mut s, "db", TaskState::Running, None, 0);
    s
}

#[test]
fn a_copy_is_recorded_where_its_first_replica_is_assigned() {
    let s = db_on_a();
    let c = &s.volumes["app/pgdata@a"];
    assert_eq!(c.docker_name, "app_pgdata");
    assert_eq!(c.state, CopyState::Live);
    assert_eq!(
        c.slots,
        BTreeMap::from([("db".to_string(), BTreeSet::from([1]))])
    );
    assert!(
        !c.seen,
        "recorded at assignment, before the agent reports it"
    );
    assert_eq!(s.volumes.len(), 1);
}

#[test]
fn a_replica_whose_copy_is_on_a_lost_node_waits_and_says_why_then_returns_to_it() {
    let mut s = db_on_a();
    set_status(&mut s, "a", NodeStatus::Down);
    settle(&mut s, 10);
    // Never started empty on b or c: pending, with what to do.
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, None)]));
    assert_eq!(pending_reason(&s, "db"), WAIT_A_DOWN);
    assert_eq!(s.volumes.len(), 1, "no copy anywhere else");

    set_status(&mut s, "a", NodeStatus::Ready);
    settle(&mut s, 20);
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, Some("a".into()))]));
}

#[test]
fn a_drained_node_holding_the_copy_points_to_volume_move() {
    let mut s = db_on_a();
    s.apply(&Command::SetAvailability {
        node: "a".into(),
        availability: Availability::Drain,
    });
    let st = s.clone();
    let svc = &st.services["app/db"];
    assert_eq!(
        binding(&st, svc, 1),
        Binding::Wait(
            "volume app_pgdata is on a, which is drained: activate the node (shoal node \
             activate), or move it: shoal volume move app/pgdata --to NODE"
                .into()
        )
    );
}

#[test]
fn a_disposable_volume_lets_the_replica_start_elsewhere() {
    let mut s = cluster(
        &["a", "b", "c"],
        stack(vec![mounting("db", 1, "cache")], &[("cache", ephemeral())]),
    );
    settle(&mut s, 0);
    report(&mut s, "db", TaskState::Running, None, 0);
    set_status(&mut s, "a", NodeStatus::Down);
    settle(&mut s, 10);
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, Some("b".into()))]));
    assert!(s.volumes["app/cache@b"].ephemeral);
}

#[test]
fn external_volumes_are_not_the_clusters_to_keep() {
    let ext = VolumeSpec {
        external: true,
        ..Default::default()
    };
    let mut s = cluster(
        &["a", "b"],
        stack(vec![mounting("db", 1, "shared")], &[("shared", ext)]),
    );
    settle(&mut s, 0);
    assert!(s.volumes.is_empty());
    set_status(&mut s, "a", NodeStatus::Down);
    settle(&mut s, 10);
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, Some("b".into()))]));
}

#[test]
fn replicas_sharing_a_volume_keep_one_copy_per_node_and_slots_stay_with_theirs() {
    let mut s = cluster(
        &["a", "b", "c"],
        stack(
            vec![mounting("web", 3, "uploads")],
            &[("uploads", VolumeSpec::default())],
        ),
    );
    settle(&mut s, 0);
    let before = placed(&s, "web");
    assert_eq!(
        before.values().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([Some("a".into()), Some("b".into()), Some("c".into())])
    );
    report(&mut s, "web", TaskState::Running, None, 0);
    let slot_on_c = *before
        .iter()
        .find(|(_, n)| n.as_deref() == Some("c"))
        .unwrap()
        .0;
    // c is lost: its slot waits for c's copy rather than starting empty on a or b.
    set_status(&mut s, "c", NodeStatus::Down);
    settle(&mut s, 10);
    assert_eq!(placed(&s, "web")[&slot_on_c], None);
    assert!(pending_reason(&s, "web").starts_with("volume app_uploads is on c, which is down"));

    // A new slot (scale-out) may create a copy on a node that has none: Compose's one
    // volume per node.
    s.nodes.insert("d".into(), node("d", 4.0, 4096));
    s.apply(&Command::Scale {
        service: "app/web".into(),
        replicas: 4,
    });
    settle(&mut s, 20);
    assert_eq!(placed(&s, "web")[&4], Some("d".into()));
    assert!(s.volumes.contains_key("app/uploads@d"));
    assert_eq!(placed(&s, "web")[&slot_on_c], None, "still waits for c");
}

#[test]
fn a_slot_moves_only_with_its_volume_move() {
    let mut s = db_on_a();
    let r = s.apply(&Command::StartMove {
        stack: "app".into(),
        name: "pgdata".into(),
        to: "b".into(),
        restore: false,
        now_ms: 100,
    });
    assert_eq!(r.error, None);
    let id = r.count;
    assert_eq!(s.moves[&id].phase, MovePhase::Stopping);
    assert_eq!(s.volumes["app/pgdata@b"].state, CopyState::Incoming);

    // The reconciler stops the replica using the copy; its replacement waits.
    let old = live(&s, "db")[0].clone();
    let d = reconcile(&s, 200);
    assert!(d.contains(&Decision::Shutdown {
        task: old.id.clone()
    }));
    settle(&mut s, 200);
    let t = s.tasks[&old.id].clone();
    assert_eq!(t.desired, Desired::Shutdown);
    assert_eq!(s.tasks_blocking_move(&s.moves[&id]).len(), 1);
    status(&mut s, &t, TaskState::Shutdown);
    assert!(s.tasks_blocking_move(&s.moves[&id]).is_empty());
    settle(&mut s, 300);
    assert_eq!(
        pending_reason(&s, "db"),
        format!("volume app_pgdata is being moved from a to b (move {id})")
    );

    s.apply(&Command::MoveProgress {
        id,
        phase: MovePhase::Copying,
        error: String::new(),
        bytes: 0,
        sha256: String::new(),
        now_ms: 400,
        partial: false,
    });
    s.apply(&Command::MoveProgress {
        id,
        phase: MovePhase::Done,
        error: String::new(),
        bytes: 4096,
        sha256: "ab".repeat(32),
        now_ms: 500,
        partial: false,
    });
    assert_eq!(s.volumes["app/pgdata@b"].state, CopyState::Live);
    assert_eq!(
        s.volumes["app/pgdata@b"].slots,
        BTreeMap::from([("db".to_string(), BTreeSet::from([1]))])
    );
    assert_eq!(s.volumes["app/pgdata@a"].state, CopyState::SetAside);
    settle(&mut s, 600);
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, Some("b".into()))]));

    // b lost now: the set-aside copy on a is never used in its place.
    report(&mut s, "db", TaskState::Running, None, 700);
    set_status(&mut s, "b", NodeStatus::Down);
    settle(&mut s, 800);
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, None)]));
    assert!(pending_reason(&s, "db").starts_with("volume app_pgdata is on b, which is down"));
}

#[test]
fn a_failed_move_leaves_the_source_live_and_removes_the_partial_copy() {
    let mut s = db_on_a();
    let id = s
        .apply(&Command::StartMove {
            stack: "app".into(),
            name: "pgdata".into(),
            to: "c".into(),
            restore: false,
            now_ms: 100,
        })
        .count;
    s.apply(&Command::MoveProgress {
        id,
        phase: MovePhase::Failed,
        error: "import on c: c went away during the transfer".into(),
        bytes: 0,
        sha256: String::new(),
        now_ms: 200,
        partial: true,
    });
    assert_eq!(s.volumes["app/pgdata@a"].state, CopyState::Live);
    assert_eq!(s.volumes["app/pgdata@c"].state, CopyState::Removing);
    assert_eq!(s.volumes_to_remove("c"), vec!["app_pgdata".to_string()]);
    // c's agent removed it and says so: the record goes.
    s.apply(&Command::VolumeReport {
        node: "c".into(),
        volumes: vec![],
        now_ms: 300,
    });
    assert!(!s.volumes.contains_key("app/pgdata@c"));
    // The move can be tried again.
    let again = s.apply(&Command::StartMove {
        stack: "app".into(),
        name: "pgdata".into(),
        to: "c".into(),
        restore: false,
        now_ms: 400,
    });
    assert_eq!(again.error, None);
}

#[test]
fn moves_are_refused_when_they_cannot_be_done_safely() {
    let mut s = db_on_a();
    let mv = |s: &mut ClusterState, to: &str| {
        s.apply(&Command::StartMove {
            stack: "app".into(),
            name: "pgdata".into(),
            to: to.into(),
            restore: false,
            now_ms: 1,
        })
        .error
        .unwrap_or_default()
    };
    assert_eq!(
        mv(&mut s, "a"),
        "a already holds a copy of app/pgdata (live): remove it first with shoal volume rm \
         app/pgdata --node a"
    );
    assert_eq!(mv(&mut s, "zz"), "no node named zz");
    set_status(&mut s, "a", NodeStatus::Down);
    assert_eq!(
        mv(&mut s, "b"),
        "a is down: its copy cannot be read; bring it back first"
    );
    set_status(&mut s, "a", NodeStatus::Ready);
    assert_eq!(mv(&mut s, "b"), "");
    assert!(mv(&mut s, "c").starts_with("volume app/pgdata is already being moved to b"));
}

#[test]
fn volume_rm_is_refused_while_a_replica_uses_it() {
    let mut s = db_on_a();
    let rm = |s: &mut ClusterState| {
        s.apply(&Command::RemoveVolume {
            stack: "app".into(),
            name: "pgdata".into(),
            node: None,
        })
    };
    assert_eq!(
        rm(&mut s).error.unwrap_or_default(),
        "volume app/pgdata on a is used by app/db: stop it first (shoal scale app/db=0, or shoal \
         rm app)"
    );
    s.apply(&Command::Scale {
        service: "app/db".into(),
        replicas: 0,
    });
    settle(&mut s, 10);
    let t = s.tasks.values().next().unwrap().clone();
    status(&mut s, &t, TaskState::Shutdown);
    assert_eq!(rm(&mut s).error, None);
    assert_eq!(s.volumes["app/pgdata@a"].state, CopyState::Removing);
    assert_eq!(s.volumes_to_remove("a"), vec!["app_pgdata".to_string()]);
}

#[test]
fn shoal_rm_keeps_volumes_unless_asked_and_a_redeploy_finds_its_copy() {
    let mut s = db_on_a();
    let spec = s.stacks["app"].spec.clone();
    s.apply(&Command::RemoveStack {
        stack: "app".into(),
        volumes: false,
    });
    for t in live(&s, "db").into_iter().cloned().collect::<Vec<_>>() {
        status(&mut s, &t, TaskState::Shutdown);
    }
    settle(&mut s, 10);
    assert!(s.stacks.is_empty());
    assert_eq!(s.volumes["app/pgdata@a"].state, CopyState::Live);
    // Deployed again while a is drained: it waits for a rather than starting empty.
    s.apply(&Command::SetAvailability {
        node: "a".into(),
        availability: Availability::Drain,
    });
    deploy(&mut s, spec.clone());
    settle(&mut s, 20);
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, None)]));
    s.apply(&Command::SetAvailability {
        node: "a".into(),
        availability: Availability::Active,
    });
    settle(&mut s, 30);
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, Some("a".into()))]));

    s.apply(&Command::RemoveStack {
        stack: "app".into(),
        volumes: true,
    });
    assert_eq!(s.volumes["app/pgdata@a"].state, CopyState::Removing);
}

#[test]
fn a_copy_an_agent_finds_on_its_engine_is_adopted() {
    let mut s = ClusterState::default();
    for n in ["a", "b", "c"] {
        s.nodes.insert(n.to_string(), node(n, 4.0, 4096));
    }
    s.apply(&Command::VolumeReport {
        node: "c".into(),
        volumes: vec![VolumeSeen {
            docker_name: "app_pgdata".into(),
            stack: "app".into(),
            name: "pgdata".into(),
            size_bytes: Some(40 << 20),
            created_ms: 5,
        }],
        now_ms: 10,
    });
    assert_eq!(s.volumes["app/pgdata@c"].size_bytes, Some(40 << 20));
    deploy(
        &mut s,
        stack(
            vec![mounting("db", 1, "pgdata")],
            &[("pgdata", VolumeSpec::default())],
        ),
    );
    settle(&mut s, 20);
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, Some("c".into()))]));
}

#[test]
fn a_copy_removed_by_hand_on_its_node_is_forgotten_once_it_was_seen() {
    let mut s = db_on_a();
    let seen = VolumeSeen {
        docker_name: "app_pgdata".into(),
        stack: "app".into(),
        name: "pgdata".into(),
        size_bytes: Some(1),
        created_ms: 1,
    };
    // Not seen yet: a report without it keeps it (the agent may not have created it).
    s.apply(&Command::VolumeReport {
        node: "a".into(),
        volumes: vec![],
        now_ms: 1,
    });
    assert!(s.volumes.contains_key("app/pgdata@a"));
    s.apply(&Command::VolumeReport {
        node: "a".into(),
        volumes: vec![seen],
        now_ms: 2,
    });
    assert!(s.volumes["app/pgdata@a"].seen);
    s.apply(&Command::VolumeReport {
        node: "a".into(),
        volumes: vec![],
        now_ms: 3,
    });
    assert!(!s.volumes.contains_key("app/pgdata@a"));
}

#[test]
fn volumes_on_different_nodes_cannot_be_joined() {
    let mut s = cluster(
        &["a", "b"],
        stack(
            vec![mounting("one", 1, "x"), mounting("two", 1, "y")],
            &[("x", VolumeSpec::default()), ("y", VolumeSpec::default())],
        ),
    );
    settle(&mut s, 0);
    let x = s
        .volumes
        .keys()
        .find(|k| k.starts_with("app/x@"))
        .unwrap()
        .clone();
    let y = s
        .volumes
        .keys()
        .find(|k| k.starts_with("app/y@"))
        .unwrap()
        .clone();
    assert_ne!(x.rsplit('@').next(), y.rsplit('@').next());
    // A third service mounting both cannot run anywhere without a new empty copy.
    let mut both = mounting("both", 1, "x");
    both.volumes.push(MountSpec {
        kind: MountKind::Volume,
        source: Some("y".into()),
        target: "/y".into(),
        read_only: false,
        relative: false,
    });
    let mut spec = s.stacks["app"].spec.clone();
    spec.services.insert("both".into(), both);
    deploy(&mut s, spec);
    settle(&mut s, 10);
    assert_eq!(
        pending_reason(&s, "both"),
        "its volumes app_x, app_y have their copies on different nodes: move them together \
         (shoal volume move)"
    );
}

fn replicated(every_ms: u64) -> VolumeSpec {
    VolumeSpec {
        policy: VolumePolicy {
            replicas: Some(2),
            every_ms: Some(every_ms),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn seen_everywhere(s: &mut ClusterState) {
    let copies: Vec<VolumeCopy> = s.volumes.values().cloned().collect();
    for c in copies.iter().filter(|c| c.state == CopyState::Live) {
        s.apply(&Command::VolumeReport {
            node: c.node.clone(),
            volumes: vec![VolumeSeen {
                docker_name: c.docker_name.clone(),
                stack: c.stack.clone(),
                name: c.name.clone(),
                size_bytes: Some(10),
                created_ms: 1,
            }],
            now_ms: 1,
        });
    }
}

#[test]
fn a_replicated_volume_gets_a_standby_refreshed_every_period() {
    use shoal_controller::transfers::{syncs_due, SyncDue};
    let mut s = cluster(
        &["a", "b", "c"],
        stack(
            vec![mounting("db", 1, "pgdata")],
            &[("pgdata", replicated(30_000))],
        ),
    );
    settle(&mut s, 0);
    // Not before the agent has the copy.
    assert_eq!(syncs_due(&s, 1_000), vec![]);
    seen_everywhere(&mut s);
    let first = SyncDue {
        stack: "app".into(),
        name: "pgdata".into(),
        docker_name: "app_pgdata".into(),
        from: "a".into(),
        to: "b".into(),
    };
    assert_eq!(syncs_due(&s, 1_000), vec![first.clone()]);
    let r = s.apply(&Command::StandbySynced {
        stack: "app".into(),
        name: "pgdata".into(),
        node: "b".into(),
        docker_name: "app_pgdata".into(),
        bytes: 10,
        frozen_ms: 12,
        at_ms: 1_000,
    });
    assert_eq!(r.error, None);
    assert_eq!(s.volumes["app/pgdata@b"].state, CopyState::Standby);
    assert_eq!(syncs_due(&s, 30_999), vec![]);
    assert_eq!(syncs_due(&s, 31_000), vec![first]);
    // A standby never takes a new empty replica of its own.
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, Some("a".into()))]));
}

#[test]
fn a_lost_live_copy_fails_over_to_its_standby_and_the_returning_copy_is_set_aside() {
    let mut s = cluster(
        &["a", "b", "c"],
        stack(
            vec![mounting("db", 1, "pgdata")],
            &[("pgdata", replicated(30_000))],
        ),
    );
    settle(&mut s, 0);
    report(&mut s, "db", TaskState::Running, None, 0);
    seen_everywhere(&mut s);
    s.apply(&Command::StandbySynced {
        stack: "app".into(),
        name: "pgdata".into(),
        node: "b".into(),
        docker_name: "app_pgdata".into(),
        bytes: 10,
        frozen_ms: 12,
        at_ms: 40_000,
    });
    set_status(&mut s, "a", NodeStatus::Down);
    let d = reconcile(&s, 50_000);
    assert!(d.contains(&Decision::PromoteStandby {
        stack: "app".into(),
        name: "pgdata".into(),
        node: "b".into()
    }));
    settle(&mut s, 50_000);
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, Some("b".into()))]));
    let b = &s.volumes["app/pgdata@b"];
    assert_eq!(b.state, CopyState::Live);
    assert_eq!(
        b.note,
        "promoted from standby after a was lost; its last copy was taken 10s before (what \
         was written since is on the old copy)"
    );
    assert_eq!(s.volumes["app/pgdata@a"].state, CopyState::SetAside);
    // a returns: its stale copy is neither used nor merged; the replica stays on b.
    set_status(&mut s, "a", NodeStatus::Ready);
    settle(&mut s, 60_000);
    assert_eq!(placed(&s, "db"), BTreeMap::from([(1, Some("b".into()))]));
    assert_eq!(s.volumes["app/pgdata@a"].state, CopyState::SetAside);
    // The next standby goes to c (a holds the set-aside copy).
    seen_everywhere(&mut s);
    let due = shoal_controller::transfers::syncs_due(&s, 60_000);
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].from.as_str(), due[0].to.as_str()), ("b", "c"));
}

#[test]
fn a_move_the_target_refused_leaves_nothing_for_it_to_remove() {
    let mut s = db_on_a();
    let id = s
        .apply(&Command::StartMove {
            stack: "app".into(),
            name: "pgdata".into(),
            to: "c".into(),
            restore: false,
            now_ms: 100,
        })
        .count;
    // c said it failed (it holds another volume of that name with data): it cleaned up
    // what it wrote, and its own volume must not be removed for the cluster.
    s.apply(&Command::MoveProgress {
        id,
        phase: MovePhase::Failed,
        error: "import on c: c already has a volume app_pgdata holding data: remove it first"
            .into(),
        bytes: 0,
        sha256: String::new(),
        now_ms: 200,
        partial: false,
    });
    assert!(!s.volumes.contains_key("app/pgdata@c"));
    assert!(s.volumes_to_remove("c").is_empty());
    assert_eq!(s.volumes["app/pgdata@a"].state, CopyState::Live);
    assert_eq!(
        s.moves[&id].error,
        "import on c: c already has a volume app_pgdata holding data: remove it first"
    );
}

#[test]
fn an_unchanged_volume_report_changes_nothing_and_costs_no_write() {
    let mut s = db_on_a();
    let seen = vec![VolumeSeen {
        docker_name: "app_pgdata".into(),
        stack: "app".into(),
        name: "pgdata".into(),
        size_bytes: Some(100),
        created_ms: 7,
    }];
    // Recorded at assignment, not seen yet: a change.
    assert!(s.volume_report_changes("a", &seen));
    assert!(!s.volume_report_changes("b", &[]), "nothing on b");
    s.apply(&Command::VolumeReport {
        node: "a".into(),
        volumes: seen.clone(),
        now_ms: 1,
    });
    assert!(
        !s.volume_report_changes("a", &seen),
        "the same report again"
    );
    let mut grown = seen.clone();
    grown[0].size_bytes = Some(200);
    assert!(s.volume_report_changes("a", &grown), "a new size");
    assert!(s.volume_report_changes("a", &[]), "gone from the engine");
    let mut foreign = seen.clone();
    foreign[0].stack = "other".into();
    foreign[0].docker_name = "other_pgdata".into();
    foreign.push(seen[0].clone());
    assert!(s.volume_report_changes("a", &foreign), "one to adopt");
}
