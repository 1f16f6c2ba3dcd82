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
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shoal_proto::spec::Protocol;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
mod routes;
mod udp;
pub use routes::{ingress_routes, mesh_routes, Route, RouteKey};
use udp::udp_loop;
pub use udp::UDP_IDLE;

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn tcp(addr: SocketAddr) -> RouteKey {
        RouteKey {
            protocol: Protocol::Tcp,
            addr,
        }
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
}
