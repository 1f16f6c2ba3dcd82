//! Which ports this node serves and where each goes, from the assignments, the observed
//! containers and the cluster's mesh view. Pure; [`super::Proxy`] owns the sockets.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use shoal_proto::spec::{PortMode, Protocol};
use shoal_proto::task::Desired;

use crate::model::{AssignmentSet, Mesh};
use crate::runtime::{ContainerInfo, ContainerState, Health};

/// A published port: its protocol and listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(f, "{}/{p}", self.addr)
    }
}

/// One published port on this node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    /// Every running replica behind the port (they own an error opening it).
    pub tasks: Vec<String>,
    /// The ready replicas' `container IP:target`.
    pub backends: Vec<SocketAddr>,
}

/// The ingress listeners this node needs, by listen address. Pure.
pub fn ingress_routes(
    intent: &AssignmentSet,
    containers: &BTreeMap<String, ContainerInfo>,
) -> BTreeMap<RouteKey, Route> {
    let mut routes: BTreeMap<RouteKey, Route> = BTreeMap::new();
    for c in containers.values() {
        if c.state != ContainerState::Running {
            continue;
        }
        let Some(a) = c.task_id().and_then(|t| intent.tasks.get(t)) else {
            continue;
        };
        if a.desired != Desired::Running {
            continue;
        }
        let ready = match c.health {
            Health::Healthy => true,
            Health::None => !a.spec.has_healthcheck(),
            Health::Starting | Health::Unhealthy => false,
        };
        for p in &a.spec.ports {
            let (Some(published), PortMode::Ingress) = (p.published, p.mode) else {
                continue;
            };
            let ip = p
                .host_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let key = RouteKey {
                protocol: p.protocol,
                addr: SocketAddr::new(ip, published),
            };
            let route = routes.entry(key).or_default();
            route.tasks.push(a.task.task_id.clone());
            if let (true, Some(ip)) = (ready, c.ip) {
                route.backends.push(SocketAddr::new(ip, p.target));
            }
        }
    }
    routes
}

/// The routing mesh: `local` (from [`ingress_routes`]) plus every published ingress
/// port of the cluster with its ready replicas on other nodes, so this node answers
/// every port even with no replica of its own. Replicas on this node are taken from the
/// local view only (it is fresher: a replica told to stop leaves it before it stops).
pub fn mesh_routes(
    mut local: BTreeMap<RouteKey, Route>,
    mesh: &Mesh,
    containers: &BTreeMap<String, ContainerInfo>,
) -> BTreeMap<RouteKey, Route> {
    let here: std::collections::BTreeSet<IpAddr> = containers
        .values()
        .flat_map(|c| c.ip.into_iter().chain(c.ips.values().copied()))
        .collect();
    for p in &mesh.ports {
        let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let key = RouteKey {
            protocol: p.protocol,
            addr: SocketAddr::new(ip, p.published),
        };
        let route = local.entry(key).or_default();
        for ip in &p.ips {
            let ip = IpAddr::V4(*ip);
            let backend = SocketAddr::new(ip, p.target);
            if !here.contains(&ip) && !route.backends.contains(&backend) {
                route.backends.push(backend);
            }
        }
    }
    local
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Assignment;
    use crate::runtime::TaskIdentity;
    use shoal_proto::labels;
    use shoal_proto::spec::{HealthcheckSpec, PortSpec, ServiceSpec};

    fn tcp(addr: SocketAddr) -> RouteKey {
        RouteKey {
            protocol: Protocol::Tcp,
            addr,
        }
    }

    fn udp(addr: SocketAddr) -> RouteKey {
        RouteKey {
            protocol: Protocol::Udp,
            addr,
        }
    }

    fn running(id: &str, task: &str, ip: &str, health: Health) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: id.into(),
            state: ContainerState::Running,
            exit_code: None,
            oom_killed: false,
            health,
            ip: Some(ip.parse().unwrap()),
            ips: Default::default(),
            labels: [(labels::TASK.to_string(), task.to_string())]
                .into_iter()
                .collect(),
            error: None,
        }
    }

    #[test]
    fn routes_only_ready_replicas_of_ingress_ports() {
        let spec = |hc: bool| {
            Arc::new(ServiceSpec {
                name: "web".into(),
                image: "img".into(),
                ports: vec![
                    PortSpec {
                        target: 80,
                        published: Some(8080),
                        ..Default::default()
                    },
                    PortSpec {
                        target: 53,
                        published: Some(5353),
                        protocol: Protocol::Udp,
                        ..Default::default()
                    },
                    PortSpec {
                        target: 443,
                        published: Some(8443),
                        mode: PortMode::Host,
                        ..Default::default()
                    },
                ],
                healthcheck: hc.then(|| HealthcheckSpec {
                    test: vec!["CMD".into(), "true".into()],
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let task = |id: &str, hc: bool| Assignment {
            task: TaskIdentity {
                task_id: id.into(),
                stack: "s".into(),
                service: "web".into(),
                slot: 1,
                generation: 1,
            },
            desired: Desired::Running,
            ended: false,
            gpus: Vec::new(),
            secrets: Vec::new(),
            volumes: Vec::new(),
            spec: spec(hc),
        };
        let intent = AssignmentSet {
            version: 1,
            mesh: Default::default(),
            remove_volumes: Vec::new(),
            tasks: [
                ("t1".to_string(), task("t1", true)),
                ("t2".to_string(), task("t2", true)),
                ("t3".to_string(), task("t3", false)),
            ]
            .into_iter()
            .collect(),
        };
        let containers = [
            running("c1", "t1", "10.0.0.1", Health::Healthy),
            running("c2", "t2", "10.0.0.2", Health::Starting),
            running("c3", "t3", "10.0.0.3", Health::None),
        ]
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
        let routes = ingress_routes(&intent, &containers);
        let tasks = vec!["t1".into(), "t2".into(), "t3".into()];
        assert_eq!(
            routes,
            [
                (
                    tcp("0.0.0.0:8080".parse().unwrap()),
                    Route {
                        tasks: tasks.clone(),
                        backends: vec![
                            "10.0.0.1:80".parse().unwrap(),
                            "10.0.0.3:80".parse().unwrap()
                        ],
                    }
                ),
                (
                    udp("0.0.0.0:5353".parse().unwrap()),
                    Route {
                        tasks,
                        backends: vec![
                            "10.0.0.1:53".parse().unwrap(),
                            "10.0.0.3:53".parse().unwrap()
                        ],
                    }
                ),
            ]
            .into_iter()
            .collect()
        );
    }

    #[test]
    fn the_mesh_adds_every_published_port_and_remote_replicas_only() {
        let local_backend: SocketAddr = "10.208.1.2:80".parse().unwrap();
        let local: BTreeMap<RouteKey, Route> = [(
            tcp("0.0.0.0:8080".parse().unwrap()),
            Route {
                tasks: vec!["t1".into()],
                backends: vec![local_backend],
            },
        )]
        .into_iter()
        .collect();
        // t2 runs here but is not ready: the controller still lists it, the local view
        // decides.
        let containers = [
            running("c1", "t1", "10.208.1.2", Health::Healthy),
            running("c2", "t2", "10.208.1.3", Health::Unhealthy),
        ]
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mesh = Mesh {
            ports: vec![
                crate::model::MeshPort {
                    published: 8080,
                    target: 80,
                    protocol: Protocol::Tcp,
                    host_ip: None,
                    ips: vec![ip("10.208.0.5"), ip("10.208.1.2"), ip("10.208.1.3")],
                },
                crate::model::MeshPort {
                    published: 9000,
                    target: 9,
                    protocol: Protocol::Udp,
                    host_ip: None,
                    ips: vec![ip("10.208.2.7")],
                },
            ],
            ..Mesh::default()
        };
        let routes = mesh_routes(local, &mesh, &containers);
        assert_eq!(
            routes,
            [
                (
                    tcp("0.0.0.0:8080".parse().unwrap()),
                    Route {
                        tasks: vec!["t1".into()],
                        backends: vec![local_backend, "10.208.0.5:80".parse().unwrap()],
                    }
                ),
                (
                    udp("0.0.0.0:9000".parse().unwrap()),
                    Route {
                        tasks: vec![],
                        backends: vec!["10.208.2.7:9".parse().unwrap()],
                    }
                ),
            ]
            .into_iter()
            .collect()
        );
    }
}
