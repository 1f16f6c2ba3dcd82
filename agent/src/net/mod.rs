//! The cluster network on this node (issue 8, host-gw):
//!
//! - every (network, node) pair has a cluster-unique /24 from one pool (allocated by the
//!   controller); the network's Docker network (`shoal_proto::network::docker_name`) is
//!   created with it on the node;
//! - [`host`]: a route to every other node's subnets via that node's address, no
//!   masquerade between pool addresses, and forwarding into a network's subnet accepted
//!   only from the network's own peers and from the nodes (their mesh proxies); removed
//!   when the agent stops;
//! - [`dns`]: a DNS server on each network's gateway answering a container the names of
//!   its networks with the ready replicas cluster-wide, NXDOMAIN for other networks'
//!   names, forwarding other names upstream;
//! - [`conflicts`]: routes and other Docker networks on the node that overlap the
//!   cluster's pool, reported to the controller (`shoal nodes` shows them).
//!
//! The pure parts ([`host::plan`], [`dns::answer`], [`dns::Names::lookup`]) are unit
//! tested, [`host::HostNet`] on a recording shell; the rest shells out to `ip` and
//! `iptables` and binds sockets.

use std::net::Ipv4Addr;

pub mod conflicts;
pub mod dns;
pub mod drain;
pub mod host;
pub mod node;
pub mod upstream;

/// An IPv4 network, `BASE/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// The first host address: where Docker puts the bridge (and shoal its DNS server).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        u32::from(ip) & mask == u32::from(self.base) & mask
    }
}

impl std::str::FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Subnet, String> {
        let (base, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("subnet {s:?} is not BASE/PREFIX"))?;
        let base: Ipv4Addr = base
            .parse()
            .map_err(|_| format!("subnet {s:?}: {base:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("subnet {s:?}: {prefix:?} is not a prefix length"))?;
        Ok(Subnet { base, prefix })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_print_and_contain() {
        let s: Subnet = "10.208.3.0/24".parse().unwrap();
        assert_eq!(s.to_string(), "10.208.3.0/24");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 208, 3, 1));
        assert!(s.contains(Ipv4Addr::new(10, 208, 3, 77)));
        assert!(!s.contains(Ipv4Addr::new(10, 208, 4, 1)));
        let pool: Subnet = "10.208.0.0/12".parse().unwrap();
        assert!(pool.contains(Ipv4Addr::new(10, 223, 255, 1)));
        assert!(!pool.contains(Ipv4Addr::new(10, 224, 0, 1)));
        assert!("10.208.0.0".parse::<Subnet>().is_err());
        assert!("10.208.0.0/33".parse::<Subnet>().is_err());
        assert!("nope/24".parse::<Subnet>().is_err());
    }
}
