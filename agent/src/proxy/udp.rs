//! The routing mesh for UDP ports: no connections, so each client address gets a
//! session bound to one replica (an upstream socket connected to it), which ends after
//! [`UDP_IDLE`] without replies, on an ICMP refusal, or when that replica leaves the
//! route (the client's next datagram picks another). Not drained before a replica stops.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Backends;

/// How long a UDP session lives without a reply from its replica.
pub const UDP_IDLE: Duration = Duration::from_secs(60);

/// A UDP client's session: the replica it was given and the socket facing it.
struct UdpSession {
    backend: SocketAddr,
    upstream: Arc<UdpSocket>,
}

type UdpSessions = Arc<std::sync::Mutex<std::collections::HashMap<SocketAddr, UdpSession>>>;

/// Relay datagrams between clients of `socket` and the backends, one session (and one
/// upstream socket) per client address, until `stop`.
pub(super) async fn udp_loop(socket: UdpSocket, backends: Backends, stop: CancellationToken) {
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
    use std::collections::BTreeMap;

    use shoal_proto::spec::Protocol;
    use tokio::net::TcpStream;

    use super::super::{Proxy, Route, RouteKey};
    use super::*;

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
}
