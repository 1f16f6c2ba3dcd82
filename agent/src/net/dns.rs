//! The agent's DNS server: one UDP socket per cluster network on this node, on the
//! network's gateway address, port 53. Containers get the gateway of their first
//! network as their DNS server (Docker's embedded resolver at 127.0.0.11 still answers
//! container names and forwards everything else here, from the container's address).
//!
//! Who asks is told by the source address ([`Names::lookup`]): the controller lists
//! this node's containers' addresses with the networks each container is on; an
//! address it does not list yet (a container that just started) is taken to be on the
//! network of the server it asked. A name (a service name or that network's
//! `networks.NET.aliases`) of one of the asker's networks is answered with the
//! addresses of that service's ready replicas on that network (the first of the
//! asker's networks that has the name), on every node, with TTL 0 so that clients ask
//! again and follow replicas as they move; a known name with no ready replica gets an
//! empty answer. A name only other networks have gets NXDOMAIN (networks limit who
//! sees whom). Other names are relayed upstream ([`super::upstream`]): to the asker's
//! own `dns:` servers when its service lists some, else to the first `nameserver` of
//! this host's `/etc/resolv.conf`. The wire format is parsed by hand:
//! only the header and the question are read, nothing else is needed to answer.
//! The same is served over TCP on the same address (length-prefixed messages, one
//! connection at a time per client, closed after 10 s idle).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::upstream::Upstreams;

/// What the servers answer, for every network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// By (network, lower-case name): ready replicas' addresses on that network.
    pub names: BTreeMap<(String, String), Vec<Ipv4Addr>>,
    /// This node's containers' addresses: the networks of each, in attachment order.
    pub members: BTreeMap<Ipv4Addr, Vec<String>>,
}

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Answer(Vec<Ipv4Addr>),
    /// The name is another network's: not for this asker.
    NxDomain,
    /// Not a cluster name: ask upstream.
    Relay,
}

impl Names {
    /// The answer to `from` asking the server on `network` for `name` (lower case).
    pub fn lookup(&self, network: &str, from: std::net::IpAddr, name: &str) -> Lookup {
        let own = [network.to_string()];
        let networks: &[String] = match from {
            std::net::IpAddr::V4(ip) => self.members.get(&ip).map_or(&own[..], Vec::as_slice),
            std::net::IpAddr::V6(_) => &own[..],
        };
        for n in networks {
            if let Some(ips) = self.names.get(&(n.clone(), name.to_string())) {
                return Lookup::Answer(ips.clone());
            }
        }
        if self.names.keys().any(|(_, known)| known == name) {
            return Lookup::NxDomain;
        }
        Lookup::Relay
    }
}

const TYPE_A: u16 = 1;
const TYPE_ANY: u16 = 255;

/// The question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub id: u16,
    /// Lower case, no trailing dot.
    pub name: String,
    pub qtype: u16,
    /// Where the question section ends in the packet.
    pub end: usize,
}

/// Parse a query's header and its single question; `None` for anything else.
pub fn parse_query(buf: &[u8]) -> Option<Question> {
    if buf.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([buf[0], buf[1]]);
    let is_response = buf[2] & 0x80 != 0;
    let qdcount = u16::from_be_bytes([buf[4], buf[5]]);
    if is_response || qdcount != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = usize::from(*buf.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // compression is not used in questions of queries
        }
        let label = std::str::from_utf8(buf.get(i..i + len)?).ok()?;
        labels.push(label.to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*buf.get(i)?, *buf.get(i + 1)?]);
    let end = i + 4;
    if buf.len() < end {
        return None;
    }
    Some(Question {
        id,
        name: labels.join("."),
        qtype,
        end,
    })
}

/// The answer to `query` (whose question is `q`) with `ips` for A (and ANY) questions;
/// other types of a known name get an empty answer.
pub fn answer(query: &[u8], q: &Question, ips: &[Ipv4Addr]) -> Vec<u8> {
    let records: &[Ipv4Addr] = if q.qtype == TYPE_A || q.qtype == TYPE_ANY {
        ips
    } else {
        &[]
    };
    let mut out = Vec::with_capacity(q.end + 16 * records.len());
    out.extend_from_slice(&q.id.to_be_bytes());
    // QR, opcode 0, AA, RD as asked; RA; RCODE 0.
    out.push(0x84 | (query[2] & 0x01));
    out.push(0x80);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[12..q.end]);
    for ip in records {
        out.extend_from_slice(&[0xc0, 0x0c]); // the name: a pointer to the question's
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // class IN
        out.extend_from_slice(&0u32.to_be_bytes()); // TTL 0
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// NXDOMAIN for `query` (whose question is `q`).
pub fn nxdomain(query: &[u8], q: &Question) -> Vec<u8> {
    let mut out = answer(query, q, &[]);
    out[3] = 0x83; // RA, RCODE 3 (name error)
    out
}

/// The reply to `query`, or `None` when it must be relayed upstream.
fn reply(
    names: &RwLock<Names>,
    network: &str,
    from: std::net::IpAddr,
    query: &[u8],
    q: &Question,
) -> Option<Vec<u8>> {
    let lookup = names
        .read()
        .map(|n| n.lookup(network, from, &q.name))
        .unwrap_or(Lookup::Relay);
    match lookup {
        Lookup::Answer(ips) => Some(answer(query, q, &ips)),
        Lookup::NxDomain => Some(nxdomain(query, q)),
        Lookup::Relay => None,
    }
}

/// The DNS servers of this node, one per cluster network.
pub struct Dns {
    names: Arc<RwLock<Names>>,
    /// By network key: the address served on and how to stop it.
    servers: BTreeMap<String, (Ipv4Addr, CancellationToken)>,
    /// Where other names are relayed, by asker (shared with the supervisor, which
    /// keeps it current: [`Dns::upstreams`]).
    upstreams: Arc<Upstreams>,
    shutdown: CancellationToken,
}

impl Dns {
    pub fn new(shutdown: CancellationToken) -> Dns {
        Dns {
            names: Default::default(),
            servers: BTreeMap::new(),
            upstreams: Default::default(),
            shutdown,
        }
    }

    /// The upstream resolvers by asker, for the supervisor to keep current.
    pub fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams.clone()
    }

    /// Replace the names answered.
    pub fn set_names(&self, names: Names) {
        if let Ok(mut n) = self.names.write() {
            *n = names;
        }
    }

    /// Is a server answering on network `stack`'s gateway `gateway`?
    pub fn serving(&self, stack: &str, gateway: Ipv4Addr) -> bool {
        self.servers.get(stack).is_some_and(|(g, _)| *g == gateway)
    }

    /// Serve network `stack` (a network key) on `gateway:53` (a no-op if it already
    /// is). False when the address cannot be bound (not root, not a local address yet,
    /// port taken).
    pub async fn serve(&mut self, stack: &str, gateway: Ipv4Addr) -> bool {
        if self.serving(stack, gateway) {
            return true;
        }
        self.stop(stack);
        let socket = match UdpSocket::bind(SocketAddr::from((gateway, 53))).await {
            Ok(s) => s,
            Err(e) => {
                debug!(%stack, %gateway, error = %e, "cannot serve DNS");
                return false;
            }
        };
        info!(network = %stack, %gateway, "serving names");
        let stop = self.shutdown.child_token();
        match tokio::net::TcpListener::bind(SocketAddr::from((gateway, 53))).await {
            Ok(l) => {
                tokio::spawn(serve_tcp(
                    l,
                    stack.to_string(),
                    self.names.clone(),
                    self.upstreams.clone(),
                    stop.clone(),
                ));
            }
            Err(e) => debug!(%stack, %gateway, error = %e, "cannot serve DNS over TCP"),
        }
        tokio::spawn(serve(
            socket,
            stack.to_string(),
            self.names.clone(),
            self.upstreams.clone(),
            stop.clone(),
        ));
        self.servers.insert(stack.to_string(), (gateway, stop));
        true
    }

    pub fn stop(&mut self, stack: &str) {
        if let Some((_, stop)) = self.servers.remove(stack) {
            stop.cancel();
        }
    }

    /// Networks served now.
    pub fn stacks(&self) -> Vec<String> {
        self.servers.keys().cloned().collect()
    }
}

async fn serve(
    socket: UdpSocket,
    stack: String,
    names: Arc<RwLock<Names>>,
    upstreams: Arc<Upstreams>,
    stop: CancellationToken,
) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, from) = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    warn!(%stack, error = %e, "DNS socket failed");
                    return;
                }
            },
        };
        let query = &buf[..len];
        let Some(q) = parse_query(query) else {
            continue;
        };
        match reply(&names, &stack, from.ip(), query, &q) {
            Some(r) => {
                let _ = socket.send_to(&r, from).await;
            }
            None => {
                let socket = socket.clone();
                let query = query.to_vec();
                let upstreams = upstreams.clone();
                tokio::spawn(async move {
                    if let Err(e) = relay(&socket, &upstreams, &query, from).await {
                        debug!(name = %q.name, error = %e, "upstream DNS failed");
                    }
                });
            }
        }
    }
}

/// DNS over TCP: each message is prefixed by its length (RFC 1035 4.2.2).
async fn serve_tcp(
    listener: tokio::net::TcpListener,
    stack: String,
    names: Arc<RwLock<Names>>,
    upstreams: Arc<Upstreams>,
    stop: CancellationToken,
) {
    loop {
        let (conn, from) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    debug!(%stack, error = %e, "DNS accept failed");
                    continue;
                }
            },
        };
        let (stack, names, stop) = (stack.clone(), names.clone(), stop.clone());
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = tcp_conversation(conn, &stack, from.ip(), &names, &upstreams) => {
                    if let Err(e) = r {
                        debug!(%stack, error = %e, "DNS over TCP ended");
                    }
                }
            }
        });
    }
}

async fn tcp_conversation(
    mut conn: tokio::net::TcpStream,
    stack: &str,
    from: std::net::IpAddr,
    names: &RwLock<Names>,
    upstreams: &Upstreams,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut query).await?;
        let Some(q) = parse_query(&query) else {
            return Ok(());
        };
        let reply = match reply(names, stack, from, &query, &q) {
            Some(r) => r,
            None => match upstreams.ask(from, &query).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(name = %q.name, error = %e, "upstream DNS failed");
                    return Ok(());
                }
            },
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        conn.write_all(&n.to_be_bytes()).await?;
        conn.write_all(&reply).await?;
    }
}

/// Send `query` upstream (the asker's servers, else the host's) and its answer back
/// to the asker `to`.
async fn relay(
    socket: &UdpSocket,
    upstreams: &Upstreams,
    query: &[u8],
    to: SocketAddr,
) -> Result<(), String> {
    let reply = upstreams.ask(to.ip(), query).await?;
    socket
        .send_to(&reply, to)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A query as `nslookup`/libc send it (for the tests here and in `relay_tests`).
#[cfg(test)]
fn test_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_query as query;

    #[test]
    fn queries_parse_to_their_lower_case_name_and_type() {
        let q = query(0x1234, "DB.Shop", TYPE_A);
        let parsed = parse_query(&q).unwrap();
        assert_eq!(
            parsed,
            Question {
                id: 0x1234,
                name: "db.shop".into(),
                qtype: 1,
                end: q.len()
            }
        );
        assert_eq!(parse_query(&q[..q.len() - 1]), None);
        let mut response = q.clone();
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), None);
    }

    #[test]
    fn a_questions_get_every_address_with_ttl_zero() {
        let q = query(7, "db", TYPE_A);
        let parsed = parse_query(&q).unwrap();
        let ips = [Ipv4Addr::new(10, 208, 0, 2), Ipv4Addr::new(10, 208, 1, 3)];
        let a = answer(&q, &parsed, &ips);
        let mut expect = vec![0, 7, 0x85, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        expect.extend_from_slice(&q[12..]);
        for ip in ips {
            expect.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
            expect.extend_from_slice(&ip.octets());
        }
        assert_eq!(a, expect);
    }

    #[test]
    fn other_types_and_names_without_replicas_get_empty_answers() {
        let q = query(9, "db", 28);
        let a = answer(
            &q,
            &parse_query(&q).unwrap(),
            &[Ipv4Addr::new(10, 208, 0, 2)],
        );
        assert_eq!(&a[6..8], &[0, 0], "no AAAA records");
        let q = query(9, "db", TYPE_A);
        let a = answer(&q, &parse_query(&q).unwrap(), &[]);
        assert_eq!(&a[2..8], &[0x85, 0x80, 0, 1, 0, 0]);
    }

    #[test]
    fn askers_get_the_names_of_their_own_networks_and_nxdomain_for_others() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let n = |net: &str, name: &str, ips: &[&str]| {
            (
                (net.to_string(), name.to_string()),
                ips.iter().map(|s| ip(s)).collect::<Vec<_>>(),
            )
        };
        let names = Names {
            names: [
                n("app.front", "web", &["10.208.0.2"]),
                n("app.back", "web", &["10.208.1.2"]),
                n("app.back", "db", &["10.208.1.3"]),
                n("app.back", "db2", &["10.208.1.3"]),
                n("app.front", "proxy", &["10.208.0.4"]),
            ]
            .into_iter()
            .collect(),
            members: [
                (
                    ip("10.208.0.2"),
                    vec!["app.front".into(), "app.back".into()],
                ),
                (
                    ip("10.208.1.2"),
                    vec!["app.front".into(), "app.back".into()],
                ),
                (ip("10.208.0.4"), vec!["app.front".into()]),
            ]
            .into_iter()
            .collect(),
        };
        let from = |s: &str| std::net::IpAddr::V4(ip(s));
        // web (front and back) asks through the front server: db on back.
        assert_eq!(
            names.lookup("app.front", from("10.208.0.2"), "db"),
            Lookup::Answer(vec![ip("10.208.1.3")])
        );
        // A name on both: the asker's first network's addresses.
        assert_eq!(
            names.lookup("app.front", from("10.208.0.2"), "web"),
            Lookup::Answer(vec![ip("10.208.0.2")])
        );
        // proxy (front only) does not see db or its back-only alias.
        assert_eq!(
            names.lookup("app.front", from("10.208.0.4"), "db"),
            Lookup::NxDomain
        );
        assert_eq!(
            names.lookup("app.front", from("10.208.0.4"), "db2"),
            Lookup::NxDomain
        );
        assert_eq!(
            names.lookup("app.front", from("10.208.0.4"), "web"),
            Lookup::Answer(vec![ip("10.208.0.2")])
        );
        // An address not listed yet: the network of the server asked.
        assert_eq!(
            names.lookup("app.back", from("10.208.1.9"), "db"),
            Lookup::Answer(vec![ip("10.208.1.3")])
        );
        assert_eq!(
            names.lookup("app.front", from("10.208.0.9"), "db"),
            Lookup::NxDomain
        );
        // Not a cluster name: upstream.
        assert_eq!(
            names.lookup("app.front", from("10.208.0.4"), "example.com"),
            Lookup::Relay
        );
    }

    #[test]
    fn nxdomain_keeps_the_question_and_says_name_error() {
        let q = query(3, "db", TYPE_A);
        let r = nxdomain(&q, &parse_query(&q).unwrap());
        assert_eq!(&r[..8], &[0, 3, 0x85, 0x83, 0, 1, 0, 0]);
        assert_eq!(&r[12..], &q[12..]);
    }

    #[tokio::test]
    async fn a_server_answers_its_stack_names_only() {
        let stop = CancellationToken::new();
        let dns = Dns::new(stop.clone());
        let db = Ipv4Addr::new(10, 208, 0, 2);
        dns.set_names(Names {
            names: [(("shop".to_string(), "db".to_string()), vec![db])]
                .into_iter()
                .collect(),
            ..Names::default()
        });
        // 127.0.0.1 port 53 needs root; the test binds the socket itself instead.
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(serve(
            socket,
            "shop".into(),
            dns.names.clone(),
            dns.upstreams(),
            stop.clone(),
        ));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(&query(1, "db", TYPE_A), addr).await.unwrap();
        let mut buf = [0u8; 512];
        let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(&buf[6..8], &[0, 1]);
        assert_eq!(&buf[len - 4..len], &db.octets());
        stop.cancel();
    }

    #[tokio::test]
    async fn tcp_queries_are_answered_too() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stop = CancellationToken::new();
        let db = Ipv4Addr::new(10, 208, 0, 9);
        let names: Arc<RwLock<Names>> = Arc::new(RwLock::new(Names {
            names: [(("shop".to_string(), "db".to_string()), vec![db])]
                .into_iter()
                .collect(),
            ..Names::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstreams = Arc::new(Upstreams::default());
        tokio::spawn(serve_tcp(
            listener,
            "shop".into(),
            names,
            upstreams,
            stop.clone(),
        ));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let q = query(5, "db", TYPE_A);
        conn.write_all(&(q.len() as u16).to_be_bytes())
            .await
            .unwrap();
        conn.write_all(&q).await.unwrap();
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut len))
            .await
            .expect("an answer")
            .unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, answer(&q, &parse_query(&q).unwrap(), &[db]));
        stop.cancel();
    }
}

#[cfg(test)]
mod relay_tests;
