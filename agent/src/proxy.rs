//! Ingress ports and the routing mesh: the agent answers every published ingress port of
//! the cluster on this node and forwards each TCP connection (and each UDP client's
//! datagrams) to a ready replica, round-robin, on this node or any other (their container addresses are routed, see
//! [`crate::net`]). This is how several replicas share one published port, how every
//! node answers it even with no replica of its own, and how a rolling update keeps the
//! port open while replicas come and go. A userspace proxy: the replica sees the
//! connection come from the forwarding node, not from the client (like Swarm's mesh).
//!
//! A listener is open while a local replica runs behind it or the controller lists the
//! port; connections already forwarded live on. A replica is ready when it is healthy,
//! or running when it has no healthcheck. UDP has no connections: each client address
//! gets a session bound to one replica, which ends after [`UDP_IDLE`] without replies or
//! when that replica leaves the route (its next datagram picks another); a replica is
//! not drained of UDP sessions before it stops.
//! [`ingress_routes`] and [`mesh_routes`] are the pure part; [`Proxy`] owns the sockets.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shoal_proto::spec::{PortMode, Protocol};
use shoal_proto::task::Desired;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::model::{AssignmentSet, Mesh};
use crate::runtime::{ContainerInfo, ContainerState, Health};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a UDP session lives without a reply from its replica.
pub const UDP_IDLE: Duration = Duration::from_secs(60);

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
    listeners: BTreeMap<RouteKey, Listener>,
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

    /// Ports now open.
    pub fn listening(&self) -> Vec<RouteKey> {
        self.listeners.keys().copied().collect()
    }

    /// Open, update and close listeners to match `routes`. Returns, per task, why its
    /// port could not be opened.
    pub async fn update(&mut self, routes: &BTreeMap<RouteKey, Route>) -> BTreeMap<String, String> {
        let mut errors = BTreeMap::new();
        self.listeners.retain(|key, l| {
            let keep = routes.contains_key(key);
            if !keep {
                info!(port = %key, "closing ingress listener");
                l.stop.cancel();
            }
            keep
        });
        for (key, route) in routes {
            if let Some(l) = self.listeners.get(key) {
                *l.backends.write().unwrap_or_else(|p| p.into_inner()) = route.backends.clone();
                continue;
            }
            let backends: Backends = Arc::new(RwLock::new(route.backends.clone()));
            let stop = self.shutdown.child_token();
            let opened = match key.protocol {
                Protocol::Tcp => TcpListener::bind(key.addr).await.map(|socket| {
                    tokio::spawn(accept_loop(
                        socket,
                        backends.clone(),
                        self.connections.clone(),
                        stop.clone(),
                        self.shutdown.clone(),
                    ));
                }),
                Protocol::Udp => UdpSocket::bind(key.addr).await.map(|socket| {
                    tokio::spawn(udp_loop(socket, backends.clone(), stop.clone()));
                }),
            };
            match opened {
                Ok(()) => {
                    info!(port = %key, backends = route.backends.len(), "opened ingress listener");
                    self.listeners.insert(*key, Listener { backends, stop });
                }
                Err(e) => {
                    let error = format!("ingress port {key}: {e}");
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

/// A UDP client's session: the replica it was given and the socket facing it.
struct UdpSession {
    backend: SocketAddr,
    upstream: Arc<UdpSocket>,
}

type UdpSessions = Arc<std::sync::Mutex<std::collections::HashMap<SocketAddr, UdpSession>>>;

/// Relay datagrams between clients of `socket` and the backends, one session (and one
/// upstream socket) per client address, until `stop`.
async fn udp_loop(socket: UdpSocket, backends: Backends, stop: CancellationToken) {
    let socket = Arc::new(socket);
    let sessions: UdpSessions = Arc::default();
    let next = AtomicUsize::new(0);
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "ingress UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let candidates = backends.read().unwrap_or_else(|p| p.into_inner()).clone();
        let existing = {
            let mut map = sessions.lock().unwrap_or_else(|p| p.into_inner());
            // A session whose replica left the route ends; the client gets another.
            if map
                .get(&client)
                .is_some_and(|s| !candidates.contains(&s.backend))
            {
                map.remove(&client);
            }
            map.get(&client).map(|s| s.upstream.clone())
        };
        let upstream = match existing {
            Some(u) => u,
            None => {
                if candidates.is_empty() {
                    debug!(%client, "no ready backend for ingress datagram");
                    continue;
                }
                let backend = candidates[next.fetch_add(1, Ordering::Relaxed) % candidates.len()];
                match udp_upstream(backend).await {
                    Ok(up) => {
                        let up = Arc::new(up);
                        sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(
                            client,
                            UdpSession {
                                backend,
                                upstream: up.clone(),
                            },
                        );
                        tokio::spawn(udp_replies(
                            up.clone(),
                            socket.clone(),
                            client,
                            sessions.clone(),
                            stop.clone(),
                        ));
                        up
                    }
                    Err(e) => {
                        debug!(%backend, error = %e, "cannot open a UDP upstream");
                        continue;
                    }
                }
            }
        };
        if let Err(e) = upstream.send(&buf[..n]).await {
            debug!(%client, error = %e, "ingress datagram not forwarded");
        }
    }
}

async fn udp_upstream(backend: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = match backend {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let up = UdpSocket::bind(any).await?;
    up.connect(backend).await?;
    Ok(up)
}

/// Send `upstream`'s replies back to `client` until the session idles out, the replica
/// refuses (ICMP), the session is replaced or `stop`.
async fn udp_replies(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    sessions: UdpSessions,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let got = tokio::select! {
            _ = stop.cancelled() => break,
            r = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)) => r,
        };
        match got {
            Ok(Ok(n)) => {
                let _ = socket.send_to(&buf[..n], client).await;
            }
            Ok(Err(_)) | Err(_) => break,
        }
        // Replaced (its replica left the route): the new session answers from now on.
        let current = sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&client)
            .is_some_and(|s| Arc::ptr_eq(&s.upstream, &upstream));
        if !current {
            return;
        }
    }
    let mut map = sessions.lock().unwrap_or_else(|p| p.into_inner());
    if map
        .get(&client)
        .is_some_and(|s| Arc::ptr_eq(&s.upstream, &upstream))
    {
        map.remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Assignment;
    use crate::runtime::TaskIdentity;
    use shoal_proto::labels;
    use shoal_proto::spec::{HealthcheckSpec, PortSpec, ServiceSpec};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    /// A UDP echo server that prefixes replies with its name.
    async fn udp_echo(name: &'static str) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let reply = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
                let _ = s.send_to(reply.as_bytes(), from).await;
            }
        });
        addr
    }

    /// Sends `msg` from `client` to `to`; the reply, if one comes within a second.
    async fn udp_ask(client: &UdpSocket, to: SocketAddr, msg: &str) -> Option<String> {
        client.send_to(msg.as_bytes(), to).await.unwrap();
        let mut buf = [0u8; 512];
        let r = tokio::time::timeout(Duration::from_secs(1), client.recv_from(&mut buf)).await;
        let (n, from) = r.ok()?.ok()?;
        assert_eq!(from, to, "the reply comes from the published port");
        Some(String::from_utf8_lossy(&buf[..n]).to_string())
    }

    #[tokio::test]
    async fn udp_clients_keep_their_replica_and_move_when_it_leaves() {
        let a = udp_echo("a").await;
        let b = udp_echo("b").await;
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let listen = port.local_addr().unwrap();
        drop(port);
        let mut proxy = Proxy::new(CancellationToken::new());
        let route = |backends: Vec<SocketAddr>| {
            [(
                udp(listen),
                Route {
                    tasks: vec!["t1".into()],
                    backends,
                },
            )]
            .into_iter()
            .collect::<BTreeMap<_, _>>()
        };
        assert!(proxy.update(&route(vec![a, b])).await.is_empty());
        assert_eq!(proxy.listening(), vec![udp(listen)]);

        // Two clients, round-robin; each keeps its replica (its session).
        let c1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let c2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(udp_ask(&c1, listen, "1").await.as_deref(), Some("a:1"));
        assert_eq!(udp_ask(&c2, listen, "2").await.as_deref(), Some("b:2"));
        assert_eq!(udp_ask(&c1, listen, "3").await.as_deref(), Some("a:3"));
        assert_eq!(udp_ask(&c2, listen, "4").await.as_deref(), Some("b:4"));

        // `a` leaves the route: its client goes to `b` with its next datagram.
        proxy.update(&route(vec![b])).await;
        assert_eq!(udp_ask(&c1, listen, "5").await.as_deref(), Some("b:5"));

        // No ready replica: datagrams are dropped, nothing answers.
        proxy.update(&route(vec![])).await;
        let c3 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(udp_ask(&c3, listen, "6").await, None);
        // A TCP port of the same number is another route.
        assert!(TcpStream::connect(listen).await.is_err());
    }

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
        let routes = [(tcp(listen), route)].into_iter().collect();
        assert!(proxy.update(&routes).await.is_empty());
        let mut seen = vec![ask(listen).await, ask(listen).await, ask(listen).await];
        assert_eq!(seen[0], "a:hi");
        assert_eq!(seen[1], "b:hi");
        assert_eq!(seen[2], "a:hi");

        // One replica left: all traffic goes there.
        let routes = [(
            tcp(listen),
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
            tcp(listen),
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
            tcp(listen),
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
