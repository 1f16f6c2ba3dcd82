//! A cluster's tasks are its own (issue 15): task ids unique across clusters (they name
//! containers, which engines keep), and a task its agent never started is said so.

use shoal_controller::pki::{ClusterCa, ClusterKey, PkiRecord};

/// Task ids name containers, and engines keep containers between clusters: a new
/// cluster's ids start in a block derived from its CA, so two clusters never share one.
#[test]
fn each_cluster_numbers_its_tasks_in_a_block_of_its_own() {
    use shoal_controller::state::{ClusterState, Command};
    use shoal_proto::spec::{ServiceSpec, StackSpec};

    fn first_task_id(record: &PkiRecord) -> String {
        let mut s = ClusterState::default();
        s.apply(&Command::SetPki {
            record: record.clone(),
        });
        s.apply(&Command::RegisterNode {
            node: shoal_controller::state::Node {
                id: "n1".into(),
                address: "10.0.0.1".into(),
                nano_cpus: 4_000_000_000,
                memory_bytes: 1 << 32,
                labels: Default::default(),
                status: shoal_controller::state::NodeStatus::Ready,
                availability: shoal_controller::state::Availability::Active,
                gpus: Vec::new(),
                devices: Default::default(),
                platform: String::new(),
                manager: false,
                conflicts: Vec::new(),
            },
        });
        let web = ServiceSpec {
            name: "web".into(),
            image: "img".into(),
            replicas: 1,
            ..Default::default()
        };
        s.apply(&Command::DeployStack {
            spec: StackSpec {
                name: "app".into(),
                services: [("web".to_string(), web)].into_iter().collect(),
                ..Default::default()
            },
            now_ms: 0,
            secrets: Default::default(),
        });
        let d = shoal_controller::reconciler::reconcile(&s, 0);
        s.apply(&Command::Reconcile {
            decisions: d,
            now_ms: 0,
        });
        s.tasks.keys().next().expect("a task").clone()
    }

    let key = ClusterKey::generate().unwrap();
    let one = PkiRecord::new(&ClusterCa::generate().unwrap(), &key).unwrap();
    let two = PkiRecord::new(&ClusterCa::generate().unwrap(), &key).unwrap();
    let (a, b) = (first_task_id(&one), first_task_id(&two));
    assert_ne!(a, b, "two clusters start at different task ids");
    assert_ne!(a, "0000000001");
    // Every controller applying the same record computes the same start.
    assert_eq!(a, first_task_id(&one));
    // The block is the CA digest's first 7 hex digits; the id keeps its 10-digit form.
    let digest = one.digest().unwrap();
    assert_eq!(a, format!("0{}01", &digest[..7]));
}

#[test]
fn a_task_assigned_and_not_started_is_said_so_within_seconds() {
    use shoal_controller::api::convert::{stalled, STALLED_AFTER_MS};
    let mut t = shoal_controller::state::Task {
        id: "t1".into(),
        stack: "shop".into(),
        service: "db".into(),
        slot: 1,
        generation: 1,
        node: Some("n2".into()),
        desired: shoal_proto::task::Desired::Running,
        state: shoal_proto::task::TaskState::Assigned,
        error: String::new(),
        container_id: String::new(),
        exit_code: None,
        created_at_ms: 1_000,
        updated_at_ms: 1_000,
        pinned: None,
        image: "img".into(),
        gpus: Vec::new(),
        ips: Default::default(),
        legacy_ip: None,
    };
    assert_eq!(stalled(&t, 1_000 + STALLED_AFTER_MS), None, "not yet");
    let why = stalled(&t, 1_000 + STALLED_AFTER_MS + 2_000).expect("said");
    assert!(
        why.starts_with("assigned to n2 12 s ago and not started by its agent yet"),
        "{why}"
    );
    // A reason already given, or a task that moved on, is left as it is.
    t.error = "pull image img: not found".into();
    assert_eq!(stalled(&t, 100_000), None);
    t.error.clear();
    t.state = shoal_proto::task::TaskState::Starting;
    assert_eq!(stalled(&t, 100_000), None);
}

/// `--init --pool`: the pool is the cluster's from the start; it cannot move once
/// networks have subnets (their containers' addresses would leave it).
#[test]
fn the_pool_is_set_before_any_subnet_and_kept() {
    use shoal_controller::state::{ClusterState, Command};
    let mut s = ClusterState::default();
    assert_eq!(s.pool().to_string(), "10.208.0.0/12");
    let set = |s: &mut ClusterState, pool: &str| {
        s.apply(&Command::SetPool {
            pool: pool.to_string(),
        })
        .error
    };
    assert!(set(&mut s, "10.240.1.0/16")
        .unwrap()
        .contains("did you mean 10.240.0.0/16?"));
    assert_eq!(set(&mut s, "10.240.0.0/16"), None);
    assert_eq!(s.pool().to_string(), "10.240.0.0/16");
    s.subnets
        .entry("app".into())
        .or_default()
        .insert("n1".into(), 0);
    // The same again is fine; another is refused, naming both.
    assert_eq!(set(&mut s, "10.240.0.0/16"), None);
    let refused = set(&mut s, "10.96.0.0/16").expect("refused");
    assert!(
        refused.contains("10.240.0.0/16") && refused.contains("10.96.0.0/16"),
        "{refused}"
    );
    assert_eq!(s.pool().to_string(), "10.240.0.0/16");
}
