//! Which of this node's replicas autoscaling measures (pure): the tasks assigned here
//! whose service has metrics measured on nodes, whose container runs (running or
//! healthy), with the address its metrics endpoints answer on.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use shoal_proto::container::NetworkMode;
use shoal_proto::spec::ServiceSpec;
use shoal_proto::task::{Desired, TaskState};

use crate::model::AssignmentSet;
use crate::reconcile::observed_report;
use crate::runtime::{ContainerInfo, TaskIdentity};
use crate::supervisor::JOINED;

/// A task assigned to this node whose service autoscales on metrics its replicas give.
#[derive(Debug, Clone, PartialEq)]
pub struct Assigned {
    pub task: TaskIdentity,
    pub spec: Arc<ServiceSpec>,
}

/// A running replica to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    pub task: TaskIdentity,
    /// The spec of its generation: which metrics, the limits CPU and memory count against.
    pub spec: Arc<ServiceSpec>,
    pub container_id: String,
    /// Where its metrics endpoints answer: its address on its service's first cluster
    /// network (`127.0.0.1` with `network_mode: host`, the address of the replica whose
    /// network it shares with `service:NAME`); otherwise why it has none.
    pub address: Result<IpAddr, String>,
}

/// The tasks of `set` to run whose service measures metrics on nodes.
pub fn autoscaled(set: &AssignmentSet) -> Vec<Assigned> {
    set.tasks
        .values()
        .filter(|a| a.desired == Desired::Running && !a.ended)
        .filter(|a| {
            a.spec
                .autoscale
                .as_ref()
                .is_some_and(|s| s.measured_on_nodes().next().is_some())
        })
        .map(|a| Assigned {
            task: a.task.clone(),
            spec: a.spec.clone(),
        })
        .collect()
}

/// The replicas of `assigned` whose container (among this node's `containers`) runs or
/// is healthy, in task order.
pub fn running(assigned: &[Assigned], containers: &[ContainerInfo]) -> Vec<Replica> {
    assigned
        .iter()
        .filter_map(|a| {
            let c = containers.iter().find(|c| {
                c.task_id() == Some(a.task.task_id.as_str())
                    && matches!(
                        observed_report(&a.task.task_id, c).state,
                        TaskState::Running | TaskState::Healthy
                    )
            })?;
            Some(Replica {
                task: a.task.clone(),
                spec: a.spec.clone(),
                container_id: c.id.clone(),
                address: address(&a.task.stack, &a.spec, c, containers),
            })
        })
        .collect()
}

fn address(
    stack: &str,
    spec: &ServiceSpec,
    c: &ContainerInfo,
    containers: &[ContainerInfo],
) -> Result<IpAddr, String> {
    match &spec.container.network_mode {
        Some(NetworkMode::Host) => return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Some(NetworkMode::None) => {
            return Err("network_mode none: its metrics endpoint cannot be reached".into())
        }
        _ => {}
    }
    if let Some(owner) = c.labels.get(JOINED) {
        return containers
            .iter()
            .find(|o| &o.id == owner)
            .and_then(|o| o.ip)
            .ok_or_else(|| "the container whose network it shares has no address".to_string());
    }
    if let Some(NetworkMode::Container(name)) = &spec.container.network_mode {
        return Err(format!(
            "network_mode container:{name}: the address of that container is not known"
        ));
    }
    let first = shoal_proto::network::attachments(stack, spec)
        .first()
        .map(|n| shoal_proto::network::docker_name(&n.key));
    first
        .and_then(|name| c.ips.get(&name).copied())
        .or(c.ip)
        .ok_or_else(|| "no address on its network yet".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{test_container, ContainerState, Health};
    use shoal_proto::autoscale::{Autoscale, Behavior, Metric};
    use shoal_proto::labels;

    fn autoscale(metrics: Vec<Metric>) -> Option<Autoscale> {
        Some(Autoscale {
            min: 1,
            max: 5,
            metrics,
            scale_up: Behavior::up(),
            scale_down: Behavior::down(),
        })
    }

    fn task(id: &str, service: &str) -> TaskIdentity {
        TaskIdentity {
            task_id: id.into(),
            stack: "shop".into(),
            service: service.into(),
            slot: 1,
            generation: 1,
        }
    }

    fn assignment(id: &str, spec: ServiceSpec) -> crate::model::Assignment {
        crate::model::Assignment {
            task: task(id, &spec.name.clone()),
            desired: Desired::Running,
            ended: false,
            spec: Arc::new(spec),
            gpus: Vec::new(),
            secrets: Vec::new(),
            volumes: Vec::new(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn only_tasks_to_run_of_services_measured_on_nodes_are_autoscaled() {
        let cpu = ServiceSpec {
            name: "web".into(),
            autoscale: autoscale(vec![Metric::Cpu { target: 0.7 }]),
            ..Default::default()
        };
        let prometheus = ServiceSpec {
            name: "api".into(),
            autoscale: autoscale(vec![Metric::Prometheus {
                url: "http://prom:9090".into(),
                query: "up".into(),
                per_replica: 1.0,
            }]),
            ..Default::default()
        };
        let plain = ServiceSpec {
            name: "db".into(),
            ..Default::default()
        };
        let mut set = AssignmentSet::default();
        let mut stopping = assignment("t4", cpu.clone());
        stopping.desired = Desired::Shutdown;
        let mut ended = assignment("t5", cpu.clone());
        ended.ended = true;
        for a in [
            assignment("t1", cpu),
            assignment("t2", prometheus),
            assignment("t3", plain),
            stopping,
            ended,
        ] {
            set.tasks.insert(a.task.task_id.clone(), a);
        }
        let ids: Vec<String> = autoscaled(&set)
            .into_iter()
            .map(|a| a.task.task_id)
            .collect();
        assert_eq!(ids, vec!["t1".to_string()]);
    }

    #[test]
    fn running_and_healthy_replicas_are_measured_at_their_first_network_address() {
        let spec = Arc::new(ServiceSpec {
            name: "web".into(),
            autoscale: autoscale(vec![Metric::Cpu { target: 0.7 }]),
            ..Default::default()
        });
        let assigned: Vec<Assigned> = ["t1", "t2", "t3", "t4", "t5"]
            .iter()
            .map(|id| Assigned {
                task: task(id, "web"),
                spec: spec.clone(),
            })
            .collect();
        let mut running = test_container("c1", "t1", ContainerState::Running);
        running.ip = Some(ip("10.0.0.9"));
        running.ips.insert("shoal-other".into(), ip("10.0.1.1"));
        running.ips.insert("shoal-shop".into(), ip("10.208.1.5"));
        let mut healthy = test_container("c2", "t2", ContainerState::Running);
        healthy.health = Health::Healthy;
        let mut unhealthy = test_container("c3", "t3", ContainerState::Running);
        unhealthy.health = Health::Unhealthy;
        let starting = test_container("c4", "t4", ContainerState::Created);
        let exited = test_container("c5", "t5", ContainerState::Exited);
        let containers = vec![running, healthy, unhealthy, starting, exited];
        let got: Vec<(String, String, Result<IpAddr, String>)> =
            super::running(&assigned, &containers)
                .into_iter()
                .map(|r| (r.task.task_id, r.container_id, r.address))
                .collect();
        assert_eq!(
            got,
            vec![
                ("t1".into(), "c1".into(), Ok(ip("10.208.1.5"))),
                (
                    "t2".into(),
                    "c2".into(),
                    Err("no address on its network yet".into())
                ),
            ]
        );
    }

    #[test]
    fn host_and_shared_network_replicas_are_reached_where_their_network_is() {
        let host = Arc::new(ServiceSpec {
            name: "web".into(),
            container: shoal_proto::container::ContainerOptions {
                network_mode: Some(NetworkMode::Host),
                ..Default::default()
            },
            ..Default::default()
        });
        let sidecar = Arc::new(ServiceSpec {
            name: "side".into(),
            container: shoal_proto::container::ContainerOptions {
                network_mode: Some(NetworkMode::Service("app".into())),
                ..Default::default()
            },
            ..Default::default()
        });
        let assigned = vec![
            Assigned {
                task: task("t1", "web"),
                spec: host,
            },
            Assigned {
                task: task("t2", "side"),
                spec: sidecar,
            },
        ];
        let c1 = test_container("c1", "t1", ContainerState::Running);
        let mut c2 = test_container("c2", "t2", ContainerState::Running);
        c2.labels.insert(JOINED.into(), "c9".into());
        let mut owner = test_container("c9", "t9", ContainerState::Running);
        owner.ip = Some(ip("10.208.3.4"));
        owner.labels.insert(labels::SERVICE.into(), "app".into());
        let got: Vec<Result<IpAddr, String>> = running(&assigned, &[c1, c2, owner])
            .into_iter()
            .map(|r| r.address)
            .collect();
        assert_eq!(got, vec![Ok(ip("127.0.0.1")), Ok(ip("10.208.3.4"))]);
    }
}
