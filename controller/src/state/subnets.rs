//! Container subnets: every (network, node) pair gets a cluster-unique /24 from one
//! pool, so a container's address says which network and node it is on, and nodes can
//! route to each other's containers without NAT (host-gw). Networks are keyed as in
//! [`shoal_proto::network`]: a stack's own networks and external ones (shared by the
//! stacks declaring them) draw from the same pool. Allocation happens in `apply` (it
//! must be deterministic: every controller applying the same log allocates the same).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::NodeId;

/// The cluster pool, `10.208.0.0/12`: 4096 subnets of /24.
pub const POOL: &str = "10.208.0.0/12";
const POOL_BASE: u32 = u32::from_be_bytes([10, 208, 0, 0]);
/// How many /24 the pool holds.
pub const POOL_SIZE: u32 = 1 << 12;

/// Give `network` on `node` a subnet if it has none: the lowest index no pair uses.
/// Returns the index, `None` when the pool is exhausted.
pub fn allocate(
    subnets: &mut BTreeMap<String, BTreeMap<NodeId, u32>>,
    network: &str,
    node: &str,
) -> Option<u32> {
    if let Some(i) = subnets.get(network).and_then(|n| n.get(node)) {
        return Some(*i);
    }
    let used: BTreeSet<u32> = subnets.values().flat_map(|n| n.values().copied()).collect();
    let free = (0..POOL_SIZE).find(|i| !used.contains(i))?;
    subnets
        .entry(network.to_string())
        .or_default()
        .insert(node.to_string(), free);
    Some(free)
}

/// The /24 of pool index `index`, as `10.208.0.0/24`.
pub fn cidr(index: u32) -> String {
    format!("{}/24", Ipv4Addr::from(POOL_BASE + (index << 8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_get_the_lowest_free_subnet_and_keep_it() {
        let mut s = BTreeMap::new();
        assert_eq!(allocate(&mut s, "shop", "n1"), Some(0));
        assert_eq!(allocate(&mut s, "shop", "n2"), Some(1));
        assert_eq!(allocate(&mut s, "blog", "n1"), Some(2));
        // Asking again changes nothing.
        assert_eq!(allocate(&mut s, "shop", "n1"), Some(0));
        // A removed stack's subnets are reused, lowest first.
        s.remove("shop");
        assert_eq!(allocate(&mut s, "wiki", "n3"), Some(0));
        assert_eq!(allocate(&mut s, "wiki", "n1"), Some(1));
        assert_eq!(allocate(&mut s, "blog", "n2"), Some(3));
    }

    #[test]
    fn an_exhausted_pool_allocates_nothing() {
        let mut s: BTreeMap<String, BTreeMap<NodeId, u32>> = BTreeMap::new();
        let big = s.entry("big".into()).or_default();
        for i in 0..POOL_SIZE - 1 {
            big.insert(format!("n{i}"), i);
        }
        assert_eq!(allocate(&mut s, "big", "last"), Some(POOL_SIZE - 1));
        assert_eq!(allocate(&mut s, "big", "one-more"), None);
    }

    #[test]
    fn indexes_map_to_slash_24s_of_the_pool() {
        assert_eq!(cidr(0), "10.208.0.0/24");
        assert_eq!(cidr(1), "10.208.1.0/24");
        assert_eq!(cidr(256), "10.209.0.0/24");
        assert_eq!(cidr(POOL_SIZE - 1), "10.223.255.0/24");
    }
}
