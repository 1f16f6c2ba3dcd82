//! Where the agent's DNS server relays names that are not the cluster's.
//!
//! By default a relayed question goes to the first `nameserver` of the node's
//! `/etc/resolv.conf`. A container whose service lists `dns:` servers has its own
//! upstreams: its questions (told apart by their source address, as for cluster names)
//! go to those servers in order, the next one when one does not answer, refuses or
//! fails. The table is kept by the supervisor, which knows each running container's
//! addresses and spec ([`Upstreams::set`]); it is the agent's alone, never replicated.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use tokio::net::UdpSocket;

/// How long the host's single upstream has to answer.
const HOST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long each of a container's upstreams has: a client (libc: 5 s) still gets the
/// second server's answer after the first one timed out.
const EACH_TIMEOUT: Duration = Duration::from_secs(2);
const RCODE_SERVFAIL: u8 = 2;
const RCODE_REFUSED: u8 = 5;

/// Upstream resolvers by asker, and the host's fallback.
#[derive(Debug)]
pub struct Upstreams {
    by_asker: RwLock<BTreeMap<IpAddr, Vec<SocketAddr>>>,
    /// Where the host's resolver is read from (tests point it elsewhere).
    resolv_conf: PathBuf,
}

impl Default for Upstreams {
    fn default() -> Upstreams {
        Upstreams::with_resolv_conf("/etc/resolv.conf")
    }
}

impl Upstreams {
    /// Upstreams falling back to the first nameserver of `resolv_conf`.
    pub fn with_resolv_conf(resolv_conf: impl Into<PathBuf>) -> Upstreams {
        Upstreams {
            by_asker: RwLock::new(BTreeMap::new()),
            resolv_conf: resolv_conf.into(),
        }
    }

    /// Replace the table (by asker address: its servers in order). True if it changed.
    pub fn set(&self, table: BTreeMap<IpAddr, Vec<SocketAddr>>) -> bool {
        match self.by_asker.write() {
            Ok(mut t) if *t != table => {
                *t = table;
                true
            }
            _ => false,
        }
    }

    /// The servers of the container at `from`; `None`: it has none of its own.
    pub fn for_asker(&self, from: IpAddr) -> Option<Vec<SocketAddr>> {
        let from = match from {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(from, IpAddr::V4),
            v4 => v4,
        };
        self.by_asker.read().ok()?.get(&from).cloned()
    }

    /// The answer to `query` asked by `from`: from its own servers, else from the host's.
    pub async fn ask(&self, from: IpAddr, query: &[u8]) -> Result<Vec<u8>, String> {
        if let Some(servers) = self.for_asker(from) {
            return ask_in_order(&servers, query, EACH_TIMEOUT).await;
        }
        let conf = tokio::fs::read_to_string(&self.resolv_conf)
            .await
            .map_err(|e| format!("read {}: {e}", self.resolv_conf.display()))?;
        let server = host_upstream(&conf)
            .ok_or_else(|| format!("no nameserver in {}", self.resolv_conf.display()))?;
        ask_in_order(&[server], query, HOST_TIMEOUT).await
    }
}

/// The first `nameserver` of a resolv.conf, port 53.
pub fn host_upstream(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next())
            .flatten()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// One `dns:` entry: `IP` (port 53), `IP:PORT`, `[V6]:PORT` or a bare IPv6 address.
pub fn parse_server(entry: &str) -> Result<SocketAddr, String> {
    let s = entry.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("dns: {entry:?} is not an IP address (IP, IP:PORT or [IPv6]:PORT)"))
}

/// Every `dns:` entry of a service, in order; the first invalid one is the error.
pub fn parse_servers(entries: &[String]) -> Result<Vec<SocketAddr>, String> {
    entries.iter().map(|e| parse_server(e)).collect()
}

/// Ask `servers` in order: the first answer that is not SERVFAIL or REFUSED wins; when
/// every server failed that way, the last such answer; when none answered, the errors.
pub async fn ask_in_order(
    servers: &[SocketAddr],
    query: &[u8],
    each: Duration,
) -> Result<Vec<u8>, String> {
    let mut errors = Vec::new();
    let mut refused = None;
    for server in servers {
        match ask_one(*server, query, each).await {
            Ok(reply) if matches!(reply[3] & 0x0f, RCODE_SERVFAIL | RCODE_REFUSED) => {
                errors.push(format!("{server}: rcode {}", reply[3] & 0x0f));
                refused = Some(reply);
            }
            Ok(reply) => return Ok(reply),
            Err(e) => errors.push(format!("{server}: {e}")),
        }
    }
    refused.ok_or_else(|| {
        if errors.is_empty() {
            "no upstream server".to_string()
        } else {
            errors.join("; ")
        }
    })
}

/// One server's reply to `query` (UDP, the reply's id and question checked by id).
async fn ask_one(server: SocketAddr, query: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let up = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    // Connected: an ICMP refusal ends the wait at once, and only the server is heard.
    up.connect(server).await.map_err(|e| e.to_string())?;
    up.send(query).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let wait = async {
        loop {
            let len = up.recv(&mut buf).await.map_err(|e| e.to_string())?;
            // A late answer to an earlier query of the same port is skipped.
            if len >= 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 {
                return Ok::<usize, String>(len);
            }
        }
    };
    let len = tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| "no answer".to_string())??;
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_leniently_with_port_53_by_default() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(parse_server("1.1.1.1"), Ok(sa("1.1.1.1:53")));
        assert_eq!(parse_server(" 9.9.9.9:5353 "), Ok(sa("9.9.9.9:5353")));
        assert_eq!(parse_server("2001:db8::1"), Ok(sa("[2001:db8::1]:53")));
        assert_eq!(parse_server("[2001:db8::1]:54"), Ok(sa("[2001:db8::1]:54")));
        let err = parse_server("dns.google").unwrap_err();
        assert!(err.contains("\"dns.google\""), "{err}");
        assert!(parse_server("1.1.1.1:99999").is_err());
        assert_eq!(
            parse_servers(&["8.8.8.8".into(), "1.1.1.1:53".into()]),
            Ok(vec![sa("8.8.8.8:53"), sa("1.1.1.1:53")])
        );
        assert!(parse_servers(&["8.8.8.8".into(), "nope".into()]).is_err());
    }

    #[test]
    fn host_upstream_is_the_first_nameserver() {
        let conf = "# generated\nsearch lan\nnameserver 192.168.1.1\nnameserver 8.8.8.8\n";
        assert_eq!(host_upstream(conf), Some("192.168.1.1:53".parse().unwrap()));
        assert_eq!(host_upstream("search lan\n"), None);
    }

    #[test]
    fn a_container_with_servers_gets_its_own_and_others_none() {
        let up = Upstreams::default();
        let web: IpAddr = "10.208.0.5".parse().unwrap();
        let web_back: IpAddr = "10.208.1.5".parse().unwrap();
        let servers: Vec<SocketAddr> = vec![
            "192.0.2.53:53".parse().unwrap(),
            "192.0.2.54:5353".parse().unwrap(),
        ];
        assert!(up.set([(web, servers.clone()), (web_back, servers.clone())].into()));
        assert!(!up.set([(web, servers.clone()), (web_back, servers.clone())].into()));
        assert_eq!(up.for_asker(web), Some(servers.clone()));
        assert_eq!(up.for_asker(web_back), Some(servers.clone()));
        // The same address seen by an IPv6 socket.
        let mapped: IpAddr = "::ffff:10.208.0.5".parse().unwrap();
        assert_eq!(up.for_asker(mapped), Some(servers));
        assert_eq!(up.for_asker("10.208.0.6".parse().unwrap()), None);
        // The container went: its addresses ask the host's resolver again.
        assert!(up.set(BTreeMap::new()));
        assert_eq!(up.for_asker(web), None);
    }
}
