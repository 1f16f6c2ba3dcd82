//! The pure part of the conflict scan: reading `/proc/net/route` and deciding which
//! routes and Docker networks overlap the cluster's address pool without being shoal's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::net::Subnet;
use crate::runtime::NetworkInfo;

/// `RTF_UP`: the route is usable.
const RTF_UP: u32 = 0x0001;
/// `RTF_GATEWAY`: the route goes via a gateway.
const RTF_GATEWAY: u32 = 0x0002;

/// One IPv4 route of the main table, as `/proc/net/route` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dest: Subnet,
    /// `None`: a link route (the destination is on the device's own network).
    pub gateway: Option<Ipv4Addr>,
    /// `*` for a route without a device (unreachable, prohibit, blackhole).
    pub device: String,
}

impl std::fmt::Display for Route {
    /// As `ip route` prints it: `10.208.5.0/24 via 192.168.1.1 dev eth1`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dest)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if self.device != "*" {
            write!(f, " dev {}", self.device)?;
        }
        Ok(())
    }
}

/// What is shoal's own on the node, besides its Docker networks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Own {
    /// Other nodes' subnets and the node each is routed via (host-gw routes).
    pub routes: BTreeMap<Subnet, Ipv4Addr>,
    /// Host interfaces of the engine's Docker networks: their routes are the networks'
    /// own, reported as networks (when they are not shoal's) rather than as routes.
    pub bridges: BTreeSet<String>,
}

/// The usable routes of a `/proc/net/route` text; lines that do not parse are skipped.
pub fn parse_routes(text: &str) -> Vec<Route> {
    text.lines().filter_map(parse_route).collect()
}

/// One line: `Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT`,
/// addresses as the kernel's in-memory (network order) words in hex.
fn parse_route(line: &str) -> Option<Route> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    let flags = u32::from_str_radix(f[3], 16).ok()?;
    if flags & RTF_UP == 0 {
        return None;
    }
    let base = hex_addr(f[1])?;
    let mask = u32::from(hex_addr(f[7])?);
    if mask.leading_ones() != mask.count_ones() {
        return None;
    }
    let gateway = hex_addr(f[2])?;
    Some(Route {
        dest: Subnet {
            base,
            prefix: mask.count_ones() as u8,
        },
        gateway: (flags & RTF_GATEWAY != 0 && !gateway.is_unspecified()).then_some(gateway),
        device: f[0].to_string(),
    })
}

/// `0005D00A` on a little-endian machine (the bytes 10.208.5.0 read as a native word).
fn hex_addr(hex: &str) -> Option<Ipv4Addr> {
    let word = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(word.to_ne_bytes()))
}

/// Whether the two networks share any address.
pub fn overlaps(a: Subnet, b: Subnet) -> bool {
    a.contains(b.base) || b.contains(a.base)
}

/// Whether a route takes addresses of the pool elsewhere: one inside the pool, or a
/// link route covering it (the node's own network, or a VPN's, holds the pool's
/// addresses). A route via a gateway that covers the pool (`10.0.0.0/8 via ..`) only
/// says where the rest of the pool goes: shoal's more specific routes win.
pub fn route_overlaps(route: &Route, pool: Subnet) -> bool {
    let inside = route.dest.prefix >= pool.prefix && pool.contains(route.dest.base);
    let covering = route.dest.prefix < pool.prefix && route.dest.contains(pool.base);
    inside || (covering && route.gateway.is_none())
}

/// The routes that overlap `pool` and are not shoal's, one sentence each: neither the
/// default route, nor a route on a Docker network's bridge, nor shoal's route to
/// another node's subnet.
pub fn route_conflicts(routes: &[Route], pool: Subnet, own: &Own) -> Vec<String> {
    routes
        .iter()
        .filter(|r| r.dest.prefix > 0)
        .filter(|r| !own.bridges.contains(&r.device))
        .filter(|r| !is_shoal_route(r, own))
        .filter(|r| route_overlaps(r, pool))
        .map(|r| format!("route {r} overlaps the cluster pool {pool}"))
        .collect()
}

/// Whether the route is shoal's own to another node's subnet (host-gw, via that node).
fn is_shoal_route(route: &Route, own: &Own) -> bool {
    own.routes.get(&route.dest).map(|via| Some(*via)) == Some(route.gateway)
}

/// The engine's networks that overlap `pool` and that shoal did not make for this
/// cluster (`ours` says which it did), one sentence each naming the overlapping subnets.
pub fn network_conflicts(
    networks: &[NetworkInfo],
    pool: Subnet,
    ours: impl Fn(&NetworkInfo) -> bool,
) -> Vec<String> {
    networks
        .iter()
        .filter(|n| !ours(n))
        .filter_map(|n| {
            let over: Vec<String> = n
                .subnets
                .iter()
                .filter(|s| overlaps(**s, pool))
                .map(Subnet::to_string)
                .collect();
            if over.is_empty() {
                return None;
            }
            let whose = match (n.shoal_key(), n.cluster()) {
                (Some(_), Some(c)) => format!(" of shoal cluster {c}"),
                _ => String::new(),
            };
            Some(format!(
                "docker network {:?}{whose} ({}) overlaps the cluster pool {pool}",
                n.name,
                over.join(", ")
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Subnet {
        x.parse().unwrap()
    }

    fn hex(ip: &str) -> String {
        let ip: Ipv4Addr = ip.parse().unwrap();
        format!("{:08X}", u32::from_ne_bytes(ip.octets()))
    }

    /// A `/proc/net/route` line, whatever the machine's byte order.
    fn line(dev: &str, dest: &str, gw: &str, flags: u32, mask: &str) -> String {
        format!(
            "{dev}\t{}\t{}\t{flags:04X}\t0\t0\t0\t{}\t0\t0\t0",
            hex(dest),
            hex(gw),
            hex(mask)
        )
    }

    fn route(dest: &str, gateway: Option<&str>, device: &str) -> Route {
        Route {
            dest: s(dest),
            gateway: gateway.map(|g| g.parse().unwrap()),
            device: device.into(),
        }
    }

    #[test]
    fn the_route_table_parses_as_ip_route_prints_it() {
        let text = [
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"
                .to_string(),
            line("eth0", "0.0.0.0", "10.77.7.1", 0x3, "0.0.0.0"),
            line("eth0", "10.77.7.0", "0.0.0.0", 0x1, "255.255.255.0"),
            line("eth0", "10.208.1.0", "10.77.7.12", 0x3, "255.255.255.0"),
            line("*", "10.208.9.0", "0.0.0.0", 0x201, "255.255.255.0"),
            // Down: not a route that takes traffic.
            line("eth1", "10.208.5.0", "0.0.0.0", 0x0, "255.255.255.0"),
            // A mask with a hole is no prefix.
            line("eth1", "10.208.6.0", "0.0.0.0", 0x1, "255.0.255.0"),
            "garbage".to_string(),
        ]
        .join("\n");
        let routes = parse_routes(&text);
        assert_eq!(
            routes,
            vec![
                route("0.0.0.0/0", Some("10.77.7.1"), "eth0"),
                route("10.77.7.0/24", None, "eth0"),
                route("10.208.1.0/24", Some("10.77.7.12"), "eth0"),
                route("10.208.9.0/24", None, "*"),
            ]
        );
        let shown: Vec<String> = routes.iter().map(Route::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "0.0.0.0/0 via 10.77.7.1 dev eth0",
                "10.77.7.0/24 dev eth0",
                "10.208.1.0/24 via 10.77.7.12 dev eth0",
                "10.208.9.0/24",
            ]
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn a_line_as_a_little_endian_kernel_writes_it() {
        let text = "eth1\t004DD00A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_routes(text),
            vec![route("10.208.77.0/24", None, "eth1")]
        );
    }

    #[test]
    fn overlap_is_either_way_and_only_where_addresses_are_shared() {
        let pool = s("10.208.0.0/12");
        assert!(overlaps(s("10.208.5.0/24"), pool));
        assert!(overlaps(s("10.223.255.0/24"), pool));
        assert!(overlaps(s("10.0.0.0/8"), pool));
        assert!(overlaps(pool, pool));
        assert!(!overlaps(s("10.224.0.0/24"), pool));
        assert!(!overlaps(s("10.207.255.0/24"), pool));
        assert!(!overlaps(s("192.168.1.0/24"), pool));
    }

    #[test]
    fn routes_inside_the_pool_and_link_routes_covering_it_conflict() {
        let pool = s("10.208.0.0/12");
        assert!(route_overlaps(&route("10.208.77.0/24", None, "eth0"), pool));
        assert!(route_overlaps(
            &route("10.210.0.1/32", Some("192.168.1.1"), "wg0"),
            pool
        ));
        assert!(route_overlaps(&route("10.0.0.0/8", None, "eth0"), pool));
        assert!(!route_overlaps(
            &route("10.0.0.0/8", Some("192.168.1.1"), "eth0"),
            pool
        ));
        assert!(!route_overlaps(&route("10.77.7.0/24", None, "eth0"), pool));
    }

    #[test]
    fn shoal_routes_bridges_and_the_default_route_are_not_conflicts() {
        let pool = s("10.208.0.0/12");
        let routes = vec![
            route("0.0.0.0/0", Some("10.77.7.1"), "eth0"),
            // A bridge of a Docker network: reported as the network, if at all.
            route("10.208.0.0/24", None, "br-0123456789ab"),
            // shoal's host-gw route to n2's subnet.
            route("10.208.1.0/24", Some("10.77.7.12"), "eth0"),
            // The same subnet via somebody else: not shoal's.
            route("10.208.2.0/24", Some("10.77.7.99"), "eth0"),
            route("10.208.77.0/24", None, "eth0"),
            route("10.208.9.0/24", None, "*"),
            route("192.168.0.0/16", None, "eth1"),
        ];
        let own = Own {
            routes: [
                (s("10.208.1.0/24"), "10.77.7.12".parse().unwrap()),
                (s("10.208.2.0/24"), "10.77.7.13".parse().unwrap()),
            ]
            .into(),
            bridges: ["br-0123456789ab".to_string()].into(),
        };
        assert_eq!(
            route_conflicts(&routes, pool, &own),
            vec![
                "route 10.208.2.0/24 via 10.77.7.99 dev eth0 overlaps the cluster pool 10.208.0.0/12",
                "route 10.208.77.0/24 dev eth0 overlaps the cluster pool 10.208.0.0/12",
                "route 10.208.9.0/24 overlaps the cluster pool 10.208.0.0/12",
            ]
        );
    }

    #[test]
    fn networks_not_made_for_this_cluster_conflict_with_their_overlapping_subnets() {
        let pool = s("10.208.0.0/12");
        let net = |name: &str, subnets: &[&str], tags: &[(&str, &str)]| NetworkInfo {
            name: name.into(),
            subnets: subnets.iter().map(|x| s(x)).collect(),
            labels: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let stack = shoal_proto::labels::STACK;
        let cluster = shoal_proto::labels::CLUSTER;
        let networks = vec![
            net("old_default", &["10.208.1.0/24"], &[]),
            net("bridge", &["172.17.0.0/16"], &[]),
            net(
                "shoal-left",
                &["10.208.0.0/24"],
                &[(stack, "left"), (cluster, "bada550000000002")],
            ),
            net(
                "shoal-shop",
                &["10.208.3.0/24"],
                &[(stack, "shop"), (cluster, "c0ffee0000000001")],
            ),
            net(
                "two",
                &["10.209.0.0/24", "192.168.9.0/24", "10.210.0.0/16"],
                &[],
            ),
            net("host", &[], &[]),
        ];
        let ours = |n: &NetworkInfo| n.cluster() == Some("c0ffee0000000001");
        assert_eq!(
            network_conflicts(&networks, pool, ours),
            vec![
                "docker network \"old_default\" (10.208.1.0/24) overlaps the cluster pool 10.208.0.0/12",
                "docker network \"shoal-left\" of shoal cluster bada550000000002 (10.208.0.0/24) overlaps the cluster pool 10.208.0.0/12",
                "docker network \"two\" (10.209.0.0/24, 10.210.0.0/16) overlaps the cluster pool 10.208.0.0/12",
            ]
        );
    }
}
