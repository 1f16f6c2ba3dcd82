//! Ingress ports and the routing mesh: the agent answers every published ingress port of
//! the cluster on this node and forwards each TCP connection to a ready replica,
//! round-robin, on this node or any other (their container addresses are routed, see
//! [`crate::net`]). This is how several replicas share one published port, how every
//! node answers it even with no replica of its own, and how a rolling update keeps the
//! port open while replicas come and go. A userspace proxy: the replica sees the
//! connection come from the forwarding node, not from the client (like Swarm's mesh).
//!
//! A listener is open while a local replica runs behind it or the controller lists the
//! port; connections already forwarded live on. A replica is ready when it is healthy,
//! or running when it has no healthcheck. UDP ingress ports are not served (TCP only).
//! [`ingress_routes`] and [`mesh_routes`] are the pure part; [`Proxy`] owns the sockets.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shoal_proto::spec::{PortMode, Protocol};
use shoal_proto::task::Desired;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::model::{AssignmentSet, Mesh};
use crate::runtime::{ContainerInfo, ContainerState, Health};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
) -> BTreeMap<SocketAddr, Route> {
    let mut routes: BTreeMap<SocketAddr, Route> = BTreeMap::new();
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
            let (Some(published), PortMode::Ingress, Protocol::Tcp) =
                (p.published, p.mode, p.protocol)
            else {
                continue;
            };
            let ip = p
                .host_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let route = routes.entry(SocketAddr::new(ip, published)).or_default();
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
    mut local: BTreeMap<SocketAddr, Route>,
    mesh: &Mesh,
    containers: &BTreeMap<String, ContainerInfo>,
) -> BTreeMap<SocketAddr, Route> {
    let here: std::collections::BTreeSet<IpAddr> = containers
        .values()
        .flat_map(|c| c.ip.into_iter().chain(c.ips.values().copied()))
        .collect();
    for p in &mesh.ports {
        let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let route = local.entry(SocketAddr::new(ip, p.published)).or_default();
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

type Backends = Arc<RwLock<Vec<SocketAddr>>>;

/// Connections being forwarded, by backend container IP, across every listener of a
/// node. A replica leaving the ingress is stopped only once its count drops to zero (or
/// its drain bound passes): that is how a rolling update drains it.
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<std::sync::Mutex<BTreeMap<IpAddr, usize>>>);

impl Connections {
    /// Connections now forwarded to `ip`.
    pub fn active(&self, ip: IpAddr) -> usize {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ip).copied().unwrap_or(0)
    }

    /// Waits until no connection is forwarded to `ip`, at most `bound`. Returns how many
    /// were still open when it stopped waiting.
    pub async fn drain(&self, ip: IpAddr, bound: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let n = self.active(ip);
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn open(&self, ip: IpAddr) -> ConnectionGuard {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(ip)
            .or_default() += 1;
        ConnectionGuard {
            connections: self.clone(),
            ip,
        }
    }
}

/// Counts one forwarded connection while it lives.
struct ConnectionGuard {
    connections: Connections,
    ip: IpAddr,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut map = self.connections.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

struct Listener {
    backends: Backends,
    stop: CancellationToken,
}

/// The open ingress listeners of one node.
pub struct Proxy {
    listeners: BTreeMap<SocketAddr, Listener>,
    connections: Connections,
    /// Ends listeners and forwarded connections (agent shutdown).
    shutdown: CancellationToken,
}

impl Proxy {
    pub fn new(shutdown: CancellationToken) -> Proxy {
        Proxy {
            listeners: BTreeMap::new(),
            connections: Connections::default(),
            shutdown,
        }
    }

    /// The live connection counts, to drain a replica before stopping it.
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    /// Listen addresses now open.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.listeners.keys().copied().collect()
    }

    /// Open, update and close listeners to match `routes`. Returns, per task, why its
    /// port could not be opened.
    pub async fn update(
        &mut self,
        routes: &BTreeMap<SocketAddr, Route>,
    ) -> BTreeMap<String, String> {
        let mut errors = BTreeMap::new();
        self.listeners.retain(|addr, l| {
            let keep = routes.contains_key(addr);
            if !keep {
                info!(%addr, "closing ingress listener");
                l.stop.cancel();
            }
            keep
        });
        for (addr, route) in routes {
            if let Some(l) = self.listeners.get(addr) {
                *l.backends.write().unwrap_or_else(|p| p.into_inner()) = route.backends.clone();
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(socket) => {
                    info!(%addr, backends = route.backends.len(), "opened ingress listener");
                    let backends: Backends = Arc::new(RwLock::new(route.backends.clone()));
                    let stop = self.shutdown.child_token();
                    tokio::spawn(accept_loop(
                        socket,
                        backends.clone(),
                        self.connections.clone(),
                        stop.clone(),
                        self.shutdown.clone(),
                    ));
                    self.listeners.insert(*addr, Listener { backends, stop });
                }
                Err(e) => {
                    let error = format!("ingress port {addr}: {e}");
                    warn!(%error, "cannot open ingress listener");
                    for t in &route.tasks {
                        errors.insert(t.clone(), error.clone());
                    }
                }
            }
        }
        errors
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for l in self.listeners.values() {
            l.stop.cancel();
        }
    }
}

async fn accept_loop(
    socket: TcpListener,
    backends: Backends,
    connections: Connections,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = socket.accept() => a,
        };
        let (client, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                debug!(error = %e, "ingress accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let candidates = backends.read().unwrap_or_else(|p| p.into_inner()).clone();
        let first = next.fetch_add(1, Ordering::Relaxed);
        let shutdown = shutdown.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = forward(client, peer, candidates, first, &connections) => {}
            }
        });
    }
}

/// Connect to the backends from `first` on, round-robin, and pipe the connection through
/// the first that answers. Without a ready backend, the client's connection is closed.
async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    backends: Vec<SocketAddr>,
    first: usize,
    connections: &Connections,
) {
    let n = backends.len();
    for i in 0..n {
        let backend = backends[(first + i) % n];
        let _open = connections.open(backend.ip());
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(mut upstream)) => {
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    debug!(%peer, %backend, error = %e, "ingress connection ended");
                }
                return;
            }
            Ok(Err(e)) => debug!(%backend, error = %e, "ingress backend refused"),
            Err(_) => debug!(%backend, "ingress backend connect timed out"),
        }
    }
    debug!(%peer, "no ready backend for ingress connection");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Assignment;
    use crate::runtime::TaskIdentity;
    use shoal_proto::labels;
    use shoal_proto::spec::{HealthcheckSpec, PortSpec, ServiceSpec};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server that prefixes replies with its name.
    async fn echo(name: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let _ = s.write_all(name.as_bytes()).await;
                    let _ = s.write_all(&buf[..n]).await;
                });
            }
        });
        addr
    }

    async fn ask(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b":hi").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn round_robins_over_replicas_and_closes_when_none_remain() {
        let a = echo("a").await;
        let b = echo("b").await;
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut proxy = Proxy::new(CancellationToken::new());
        let route = Route {
            tasks: vec!["t1".into(), "t2".into()],
            backends: vec![a, b],
        };
        let routes = [(listen, route)].into_iter().collect();
        assert!(proxy.update(&routes).await.is_empty());
        let mut seen = vec![ask(listen).await, ask(listen).await, ask(listen).await];
        assert_eq!(seen[0], "a:hi");
        assert_eq!(seen[1], "b:hi");
        assert_eq!(seen[2], "a:hi");

        // One replica left: all traffic goes there.
        let routes = [(
            listen,
            Route {
                tasks: vec!["t2".into()],
                backends: vec![b],
            },
        )]
        .into_iter()
        .collect();
        proxy.update(&routes).await;
        seen.clear();
        for _ in 0..3 {
            seen.push(ask(listen).await);
        }
        assert!(seen.iter().all(|s| s == "b:hi"), "{seen:?}");

        proxy.update(&BTreeMap::new()).await;
        assert!(proxy.listening().is_empty());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(listen).await.is_err(), "listener closed");
    }

    #[tokio::test]
    async fn a_backend_drains_once_its_forwarded_connections_close() {
        // A backend that keeps each connection open until the client closes it.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut proxy = Proxy::new(CancellationToken::new());
        let routes = [(
            listen,
            Route {
                tasks: vec!["t1".into()],
                backends: vec![backend],
            },
        )]
        .into_iter()
        .collect();
        proxy.update(&routes).await;
        let connections = proxy.connections();
        assert_eq!(connections.active(backend.ip()), 0);

        let mut client = TcpStream::connect(listen).await.unwrap();
        client.write_all(b"hold").await.unwrap();
        let opened = connections.drain_until_open(backend.ip()).await;
        assert_eq!(opened, 1, "the forwarded connection is counted");
        // Still open: the drain waits out its bound and says one is left.
        assert_eq!(
            connections
                .drain(backend.ip(), Duration::from_millis(100))
                .await,
            1
        );
        drop(client);
        assert_eq!(
            connections
                .drain(backend.ip(), Duration::from_secs(5))
                .await,
            0
        );
    }

    impl Connections {
        /// Waits (bounded) until a connection to `ip` is counted; returns the count.
        async fn drain_until_open(&self, ip: IpAddr) -> usize {
            for _ in 0..250 {
                if self.active(ip) > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.active(ip)
        }
    }

    #[tokio::test]
    async fn address_in_use_is_a_task_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = taken.local_addr().unwrap();
        let mut proxy = Proxy::new(CancellationToken::new());
        let routes = [(
            listen,
            Route {
                tasks: vec!["t1".into()],
                backends: vec![],
            },
        )]
        .into_iter()
        .collect();
        let errors = proxy.update(&routes).await;
        assert!(
            errors["t1"].contains(&listen.to_string()) && errors["t1"].contains("in use"),
            "{errors:?}"
        );
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
    fn routes_only_ready_replicas_of_ingress_tcp_ports() {
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
            spec: spec(hc),
        };
        let intent = AssignmentSet {
            version: 1,
            mesh: Default::default(),
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
        assert_eq!(
            routes,
            [(
                "0.0.0.0:8080".parse().unwrap(),
                Route {
                    tasks: vec!["t1".into(), "t2".into(), "t3".into()],
                    backends: vec![
                        "10.0.0.1:80".parse().unwrap(),
                        "10.0.0.3:80".parse().unwrap()
                    ],
                }
            )]
            .into_iter()
            .collect()
        );
    }

    #[test]
    fn the_mesh_adds_every_published_port_and_remote_replicas_only() {
        let local_backend: SocketAddr = "10.208.1.2:80".parse().unwrap();
        let local: BTreeMap<SocketAddr, Route> = [(
            "0.0.0.0:8080".parse().unwrap(),
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
                    host_ip: None,
                    ips: vec![ip("10.208.0.5"), ip("10.208.1.2"), ip("10.208.1.3")],
                },
                crate::model::MeshPort {
                    published: 9000,
                    target: 9,
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
                    "0.0.0.0:8080".parse().unwrap(),
                    Route {
                        tasks: vec!["t1".into()],
                        backends: vec![local_backend, "10.208.0.5:80".parse().unwrap()],
                    }
                ),
                (
                    "0.0.0.0:9000".parse().unwrap(),
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
