//! Issue 18: an agent session sends its node's full set once, then deltas. Property: for
//! any sequence of node views (tasks added, changed and removed, names gaining and losing
//! addresses, ports, subnets, routes, volumes to remove), some of them skipped as a paced
//! session skips them, the deltas the controller sends (through the wire encoding),
//! applied by the agent one after the other, give exactly the set the agent would hold
//! from the full view. And a delta carries no more than what changed: no mesh when the
//! mesh is the same, only names and ports when only they changed, and the node's own
//! containers' addresses as a delta too to an agent that applies them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use proptest::prelude::*;
use prost::Message;
use shoal_agent::convert::{assignments_from_pb, set_update_from_pb};
use shoal_agent::model::{AssignmentSet, SetUpdate};
use shoal_controller::api::convert::{shared_mesh_delta, view_message};
use shoal_controller::assignments::NodeAssignment;
use shoal_controller::endpoints::{LocalMesh, MeshPort, MeshView, SharedMesh};
use shoal_controller::views::NodeView;
use shoal_proto::pb;
use shoal_proto::spec::{Protocol, ServiceSpec};
use shoal_proto::task::Desired;

const NODE: &str = "n1";

fn ip(last: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        0,
        (last / 200) as u8,
        (last % 200) as u8 + 1,
    ))
}

/// What a session's node looks like at one point, built up step by step.
#[derive(Clone)]
struct Model {
    tasks: BTreeMap<String, NodeAssignment>,
    shared: Arc<SharedMesh>,
    local: LocalMesh,
    removals: Vec<String>,
}

fn specs() -> [Arc<ServiceSpec>; 2] {
    let spec = |image: &str| {
        Arc::new(ServiceSpec {
            name: "web".into(),
            image: image.into(),
            replicas: 3,
            ..Default::default()
        })
    };
    [spec("web:1"), spec("web:2")]
}

impl Model {
    fn new() -> Model {
        Model {
            tasks: BTreeMap::new(),
            shared: Arc::new(SharedMesh {
                pool: "10.208.0.0/12".into(),
                nodes: vec![ip(500)],
                ..SharedMesh::default()
            }),
            local: LocalMesh::default(),
            removals: Vec::new(),
        }
    }

    fn view(&self) -> NodeView {
        NodeView {
            assignments: self.tasks.values().cloned().collect(),
            mesh: MeshView {
                shared: self.shared.clone(),
                local: self.local.clone(),
            },
            removals: self.removals.clone(),
        }
    }

    /// One change, chosen by `kind`, shaped by `a` and `b`.
    fn step(&mut self, kind: u8, a: u32, b: u32, specs: &[Arc<ServiceSpec>; 2]) {
        let names = [("s", "web"), ("s", "db"), ("s.back", "cache")];
        match kind % 10 {
            0 => {
                let id = format!("t{}", a % 6);
                self.tasks.insert(
                    id.clone(),
                    NodeAssignment {
                        task_id: id,
                        stack: "s".into(),
                        service: "web".into(),
                        slot: u64::from(a % 6),
                        desired: if b.is_multiple_of(2) {
                            Desired::Running
                        } else {
                            Desired::Shutdown
                        },
                        generation: u64::from(b % 3 + 1),
                        ended: b.is_multiple_of(5),
                        spec: specs[(b / 2 % 2) as usize].clone(),
                        gpus: if b.is_multiple_of(7) {
                            vec!["GPU-1".into()]
                        } else {
                            Vec::new()
                        },
                        volumes: Arc::new(Vec::new()),
                    },
                );
            }
            1 => {
                self.tasks.remove(&format!("t{}", a % 6));
            }
            2 => {
                let (net, name) = names[(a % 3) as usize];
                let list = Arc::make_mut(&mut self.shared)
                    .names
                    .entry((net.into(), name.into()))
                    .or_default();
                let new = ip(b % 40);
                if !list.contains(&new) {
                    list.push(new);
                    list.sort();
                }
            }
            3 => {
                let (net, name) = names[(a % 3) as usize];
                if let Some(list) = Arc::make_mut(&mut self.shared)
                    .names
                    .get_mut(&(net.into(), name.into()))
                {
                    if !list.is_empty() {
                        let at = b as usize % list.len();
                        list.remove(at);
                    }
                }
            }
            4 => {
                // A name going, or appearing with no ready replica.
                let (net, name) = names[(a % 3) as usize];
                let key = (net.to_string(), name.to_string());
                let names = &mut Arc::make_mut(&mut self.shared).names;
                if names.remove(&key).is_none() {
                    names.insert(key, Vec::new());
                }
            }
            5 => {
                let ports = (0..a % 3)
                    .map(|i| MeshPort {
                        published: 8000 + i as u16,
                        target: 80,
                        protocol: if b.is_multiple_of(2) {
                            Protocol::Tcp
                        } else {
                            Protocol::Udp
                        },
                        host_ip: (b.is_multiple_of(3)).then(|| "127.0.0.1".to_string()),
                        ips: (0..b % 4).map(|j| ip(j + i)).collect(),
                    })
                    .collect();
                Arc::make_mut(&mut self.shared).ports = ports;
            }
            6 => {
                let s = Arc::make_mut(&mut self.shared);
                match a % 5 {
                    0 => {
                        s.pool = if s.pool.starts_with("10.208") {
                            "10.96.0.0/12".into()
                        } else {
                            "10.208.0.0/12".into()
                        }
                    }
                    1 => {
                        s.nodes.push(ip(300 + b % 5));
                        s.nodes.sort();
                        s.nodes.dedup();
                    }
                    2 => {
                        let cidr = format!("10.208.{}.0/24", b % 4);
                        s.peers.entry("s".into()).or_default().push(cidr.clone());
                        s.routes.insert(cidr, ("n2".into(), ip(301)));
                    }
                    3 => {
                        if !s.internal.remove("s.back") {
                            s.internal.insert("s.back".into());
                        }
                    }
                    _ => {
                        s.routes.clear();
                        s.peers.clear();
                    }
                }
            }
            7 => {
                if a.is_multiple_of(2) {
                    self.local.subnets.insert(
                        ["s", "s.back"][(b % 2) as usize].into(),
                        format!("10.208.{}.0/24", 10 + b % 3),
                    );
                } else {
                    self.local.members.insert(ip(b % 40), vec!["s".into()]);
                }
            }
            8 => {
                if self.removals.is_empty() {
                    self.removals = vec![format!("s_data{}", a % 2)];
                } else {
                    self.removals.clear();
                }
            }
            _ => {
                // The same shared mesh in a new `Arc` (what no computation yields, but a
                // delta must still be right).
                self.shared = Arc::new((*self.shared).clone());
            }
        }
    }
}

/// A message as the agent receives it: through the wire encoding.
fn wire(msg: pb::Assignments) -> pb::Assignments {
    pb::Assignments::decode(msg.encode_to_vec().as_slice()).expect("decodes")
}

/// The set the agent holds after the full message for `view`.
fn full_set(view: &NodeView, version: u64) -> AssignmentSet {
    let (set, invalid) =
        assignments_from_pb(wire(view_message(NODE, version, view, None, true, |_| {
            None
        })));
    assert!(invalid.is_empty());
    set
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn deltas_applied_equal_the_full_set(
        steps in proptest::collection::vec((any::<u8>(), 0u32..1000, 0u32..1000, 0u8..3), 1..40),
        member_deltas in any::<bool>(),
    ) {
        let specs = specs();
        let mut model = Model::new();
        let first = model.view();
        let mut held = full_set(&first, 1);
        let mut last = (first, 1u64);
        let mut sent = 1;
        for (i, (kind, a, b, skip)) in steps.into_iter().enumerate() {
            model.step(kind, a, b, &specs);
            // A paced session does not send every view.
            if skip == 0 {
                continue;
            }
            let version = i as u64 + 2;
            let view = model.view();
            let delta = view_message(NODE, version, &view, Some((&last.0, last.1)), member_deltas, |old| {
                shared_mesh_delta(old, &view.mesh.shared).map(Arc::new)
            });
            let (last_view, _) = &last;
            // The delta holds no more than what changed.
            let changed: BTreeSet<&str> = view
                .assignments
                .iter()
                .filter(|a| !last_view.assignments.contains(a))
                .map(|a| a.task_id.as_str())
                .collect();
            let sent_tasks: BTreeSet<&str> = delta.tasks.iter().map(|t| t.task_id.as_str()).collect();
            prop_assert_eq!(sent_tasks, changed);
            let same_mesh = Arc::ptr_eq(&last_view.mesh.shared, &view.mesh.shared)
                && last_view.mesh.local == view.mesh.local;
            if same_mesh {
                prop_assert!(delta.mesh.is_none() && delta.mesh_delta.is_none());
            }
            let (old, new) = (&last_view.mesh.shared, &view.mesh.shared);
            // An agent that applies member deltas gets its containers' addresses as one.
            let local_same = if member_deltas {
                last_view.mesh.local.subnets == view.mesh.local.subnets
            } else {
                last_view.mesh.local == view.mesh.local
            };
            let only_names_ports = local_same
                && (old.pool.clone(), &old.nodes, &old.peers, &old.internal, &old.routes)
                    == (new.pool.clone(), &new.nodes, &new.peers, &new.internal, &new.routes);
            if only_names_ports {
                prop_assert!(delta.mesh.is_none(), "only names and ports changed, yet the mesh went whole");
            }
            prop_assert_eq!(delta.base, last.1);

            let (update, invalid) = set_update_from_pb(wire(delta));
            prop_assert!(invalid.is_empty());
            let SetUpdate::Delta(d) = update else {
                return Err(TestCaseError::fail("a session's later message must be a delta"));
            };
            held.apply(d).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&held, &full_set(&view, version));
            last = (view, version);
            sent += 1;
        }
        prop_assert!(sent >= 1);
    }
}

/// A delta against a version the agent does not hold is refused, the set unchanged.
#[test]
fn a_delta_against_another_version_is_refused() {
    let specs = specs();
    let mut model = Model::new();
    let first = model.view();
    let mut held = full_set(&first, 5);
    model.step(0, 1, 2, &specs);
    let view = model.view();
    let delta = view_message(NODE, 7, &view, Some((&first, 4)), true, |_| None);
    let (SetUpdate::Delta(d), _) = set_update_from_pb(wire(delta)) else {
        panic!("a delta");
    };
    let before = held.clone();
    let err = held.apply(d).expect_err("version 4 is not held");
    assert!(
        err.contains("version 4") && err.contains("version 5"),
        "{err}"
    );
    assert_eq!(held, before);
}
