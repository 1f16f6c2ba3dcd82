//! Container subnets: every (network, node) pair gets a cluster-unique /24 from one
//! pool (`10.208.0.0/12` unless `shoal controller --init --pool CIDR` chose another), so a container's address says which network and node it is on, and nodes can
//! route to each other's containers without NAT (host-gw). Networks are keyed as in
//! [`shoal_proto::network`]: a stack's own networks and external ones (shared by the
//! stacks declaring them) draw from the same pool. Allocation happens in `apply` (it
//! must be deterministic: every controller applying the same log allocates the same).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::NodeId;

/// The default cluster pool, `10.208.0.0/12`: 4096 subnets of /24.
pub const POOL: &str = "10.208.0.0/12";
/// How many /24 the default pool holds.
pub const POOL_SIZE: u32 = 1 << 12;

/// A cluster's address pool: an IPv4 block of /24s, from /8 to /24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    base: u32,
    prefix: u8,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            base: u32::from_be_bytes([10, 208, 0, 0]),
            prefix: 12,
        }
    }
}

impl Pool {
    /// `A.B.C.D/P`, P from 8 to 24, with no host bits set.
    pub fn parse(cidr: &str) -> Result<Pool, String> {
        let bad = |why: &str| format!("invalid address pool `{cidr}`: {why}");
        let (ip, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| bad("write it as A.B.C.D/P, e.g. 10.240.0.0/16"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("the prefix is not a number"))?;
        if !(8..=24).contains(&prefix) {
            return Err(bad(
                "the prefix must be between /8 and /24 (each network on each node takes a /24)",
            ));
        }
        let base = u32::from(ip);
        if base & (u32::MAX >> prefix) != 0 {
            let start = Ipv4Addr::from(base & !(u32::MAX >> prefix));
            return Err(bad(&format!(
                "host bits are set: did you mean {start}/{prefix}?"
            )));
        }
        Ok(Pool { base, prefix })
    }

    /// How many /24 the pool holds.
    pub fn size(&self) -> u32 {
        1 << (24 - self.prefix)
    }

    /// The /24 of pool index `index`.
    pub fn cidr(&self, index: u32) -> String {
        format!("{}/24", Ipv4Addr::from(self.base + (index << 8)))
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// Give `network` on `node` a subnet if it has none: the lowest index no pair uses,
/// below `size` (the pool's). Returns the index, `None` when the pool is exhausted.
pub fn allocate(
    subnets: &mut BTreeMap<String, BTreeMap<NodeId, u32>>,
    network: &str,
    node: &str,
    size: u32,
) -> Option<u32> {
    if let Some(i) = subnets.get(network).and_then(|n| n.get(node)) {
        return Some(*i);
    }
    let used: BTreeSet<u32> = subnets.values().flat_map(|n| n.values().copied()).collect();
    let free = (0..size).find(|i| !used.contains(i))?;
    subnets
        .entry(network.to_string())
        .or_default()
        .insert(node.to_string(), free);
    Some(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_get_the_lowest_free_subnet_and_keep_it() {
        let mut s = BTreeMap::new();
        assert_eq!(allocate(&mut s, "shop", "n1", POOL_SIZE), Some(0));
        assert_eq!(allocate(&mut s, "shop", "n2", POOL_SIZE), Some(1));
        assert_eq!(allocate(&mut s, "blog", "n1", POOL_SIZE), Some(2));
        // Asking again changes nothing.
        assert_eq!(allocate(&mut s, "shop", "n1", POOL_SIZE), Some(0));
        // A removed stack's subnets are reused, lowest first.
        s.remove("shop");
        assert_eq!(allocate(&mut s, "wiki", "n3", POOL_SIZE), Some(0));
        assert_eq!(allocate(&mut s, "wiki", "n1", POOL_SIZE), Some(1));
        assert_eq!(allocate(&mut s, "blog", "n2", POOL_SIZE), Some(3));
    }

    #[test]
    fn an_exhausted_pool_allocates_nothing() {
        let mut s: BTreeMap<String, BTreeMap<NodeId, u32>> = BTreeMap::new();
        let big = s.entry("big".into()).or_default();
        for i in 0..POOL_SIZE - 1 {
            big.insert(format!("n{i}"), i);
        }
        assert_eq!(
            allocate(&mut s, "big", "last", POOL_SIZE),
            Some(POOL_SIZE - 1)
        );
        assert_eq!(allocate(&mut s, "big", "one-more", POOL_SIZE), None);
    }

    #[test]
    fn indexes_map_to_slash_24s_of_the_pool() {
        let pool = Pool::default();
        assert_eq!(pool.to_string(), POOL);
        assert_eq!(pool.size(), POOL_SIZE);
        assert_eq!(pool.cidr(0), "10.208.0.0/24");
        assert_eq!(pool.cidr(1), "10.208.1.0/24");
        assert_eq!(pool.cidr(256), "10.209.0.0/24");
        assert_eq!(pool.cidr(POOL_SIZE - 1), "10.223.255.0/24");
        let small = Pool::parse("192.168.64.0/22").unwrap();
        assert_eq!(small.size(), 4);
        assert_eq!(small.cidr(3), "192.168.67.0/24");
        assert_eq!(Pool::parse("10.240.0.0/24").unwrap().size(), 1);
    }

    #[test]
    fn bad_pools_are_refused_saying_why() {
        let err = |c: &str| Pool::parse(c).unwrap_err();
        assert!(err("10.240.0.0").contains("A.B.C.D/P"));
        assert!(err("10.240.0.0/25").contains("between /8 and /24"));
        assert!(err("10.240.0.0/7").contains("between /8 and /24"));
        assert!(err("fd00::/64").contains("not an IPv4 address"));
        assert!(err("10.240.1.0/16").contains("did you mean 10.240.0.0/16?"));
    }
}
