//! Host-gw routing and filtering on this node, from the controller's [`Mesh`]:
//!
//! - `ip route replace SUBNET via NODE proto 208` for every other node's subnet (proto 208
//!   marks the routes shoal owns, so stale ones are found and removed);
//! - nat chain `SHOAL-NAT` (jumped to first from `POSTROUTING`): traffic from the pool to
//!   the pool is not masqueraded, so a replica sees its peer's real address;
//! - filter chain `SHOAL-MESH` (jumped to first from Docker's `DOCKER-USER`): new
//!   connections into one of this node's stack subnets are accepted from that stack's
//!   subnets and from the cluster's nodes (their mesh proxies), dropped from anywhere
//!   else, so stacks stay isolated across nodes as Docker isolates them on one.
//!
//! The chains are rewritten whole with one `iptables-restore --noflush` (atomic per
//! table), so applying is idempotent. [`plan`] is pure; [`HostNet`] runs it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use tokio::process::Command;
use tracing::{debug, info, warn};

use super::Subnet;
use crate::model::Mesh;

/// The `proto` number of the routes shoal owns.
pub const ROUTE_PROTO: &str = "208";
pub const FILTER_CHAIN: &str = "SHOAL-MESH";
pub const NAT_CHAIN: &str = "SHOAL-NAT";

/// What to change on the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// `ip route replace SUBNET via NODE`.
    pub replace: Vec<(Subnet, Ipv4Addr)>,
    /// `ip route del SUBNET`: routes shoal owns that the mesh no longer has.
    pub delete: Vec<Subnet>,
    /// Input of `iptables-restore --noflush`.
    pub rules: String,
}

/// The host state the mesh asks for, given the routes shoal owns now and this host's
/// own addresses (never routed via: a cluster whose agents share one host routes nothing).
pub fn plan(mesh: &Mesh, owned: &[Subnet], local: &BTreeSet<Ipv4Addr>) -> Plan {
    let mine: BTreeSet<Subnet> = mesh.subnets.values().map(|(s, _)| *s).collect();
    let replace: Vec<(Subnet, Ipv4Addr)> = mesh
        .routes
        .iter()
        .filter(|(s, via)| !mine.contains(s) && !local.contains(via))
        .map(|(s, via)| (*s, *via))
        .collect();
    let keep: BTreeSet<Subnet> = replace.iter().map(|(s, _)| *s).collect();
    let delete = owned
        .iter()
        .filter(|s| !keep.contains(s))
        .copied()
        .collect();
    let mut rules = format!("*filter\n:{FILTER_CHAIN} - [0:0]\n");
    rules += &format!("-A {FILTER_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n");
    for (subnet, peers) in mesh.subnets.values() {
        for peer in peers {
            rules += &format!("-A {FILTER_CHAIN} -s {peer} -d {subnet} -j ACCEPT\n");
        }
        for node in &mesh.nodes {
            rules += &format!("-A {FILTER_CHAIN} -s {node}/32 -d {subnet} -j ACCEPT\n");
        }
        rules += &format!("-A {FILTER_CHAIN} -d {subnet} -j DROP\n");
    }
    rules += "COMMIT\n";
    rules += &format!("*nat\n:{NAT_CHAIN} - [0:0]\n");
    if let Some(pool) = mesh.pool {
        rules += &format!("-A {NAT_CHAIN} -s {pool} -d {pool} -j ACCEPT\n");
    }
    rules += "COMMIT\n";
    Plan {
        replace,
        delete,
        rules,
    }
}

/// Applies plans on this host (needs root, `ip` and `iptables`). Remembers the last one
/// so an unchanged mesh costs nothing; a failure is logged once per distinct error.
#[derive(Default)]
pub struct HostNet {
    applied: Option<Mesh>,
    last_error: Option<String>,
}

impl HostNet {
    /// Make the host match `mesh`. A mesh with no routes (a one-node cluster) changes
    /// nothing on the host unless shoal changed it before.
    pub async fn apply(&mut self, mesh: &Mesh) {
        if self.applied.as_ref() == Some(mesh) {
            return;
        }
        if mesh.routes.is_empty() && self.applied.is_none() {
            return;
        }
        match apply(mesh).await {
            Ok(()) => {
                debug!(routes = mesh.routes.len(), "host network updated");
                self.applied = Some(mesh.clone());
                self.last_error = None;
            }
            Err(e) => {
                if self.last_error.as_ref() != Some(&e) {
                    warn!(error = %e, "cannot set up cross-node routes and filters");
                }
                self.last_error = Some(e);
            }
        }
    }
}

async fn run(cmd: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = c
        .spawn()
        .map_err(|e| format!("run {cmd} {}: {e}", args.join(" ")))?;
    if let Some(mut stdin) = child.stdin.take() {
        if let Some(input) = input {
            let _ = stdin.write_all(input.as_bytes()).await;
        }
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("run {cmd} {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// This host's IPv4 addresses.
async fn local_addresses() -> Result<BTreeSet<Ipv4Addr>, String> {
    let out = run("ip", &["-4", "-o", "addr", "show"], None).await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

async fn owned_routes() -> Result<Vec<Subnet>, String> {
    let out = run("ip", &["-4", "route", "show", "proto", ROUTE_PROTO], None).await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect())
}

/// Make `-j CHAIN` the first rule of `parent`. Docker inserts its own rules at the top
/// (a new network's MASQUERADE goes first in POSTROUTING), so being present is not
/// enough: a jump that is no longer first is moved back up.
async fn ensure_first(table: &str, parent: &str, chain: &str) -> Result<(), String> {
    let rules = run("iptables", &["-w", "-t", table, "-S", parent], None).await?;
    let jump = format!("-A {parent} -j {chain}");
    if rules.lines().find(|l| l.starts_with("-A ")) == Some(jump.as_str()) {
        return Ok(());
    }
    let delete = ["-w", "-t", table, "-D", parent, "-j", chain];
    for _ in 0..8 {
        if run("iptables", &delete, None).await.is_err() {
            break;
        }
    }
    run(
        "iptables",
        &["-w", "-t", table, "-I", parent, "1", "-j", chain],
        None,
    )
    .await
    .map(|_| ())
}

async fn apply(mesh: &Mesh) -> Result<(), String> {
    let local = local_addresses().await?;
    let owned = owned_routes().await?;
    let p = plan(mesh, &owned, &local);
    for (subnet, via) in &p.replace {
        let (s, v) = (subnet.to_string(), via.to_string());
        run(
            "ip",
            &["route", "replace", &s, "via", &v, "proto", ROUTE_PROTO],
            None,
        )
        .await?;
    }
    for subnet in &p.delete {
        let s = subnet.to_string();
        run("ip", &["route", "del", &s, "proto", ROUTE_PROTO], None).await?;
        info!(subnet = %s, "removed stale mesh route");
    }
    run("iptables-restore", &["-w", "--noflush"], Some(&p.rules)).await?;
    // Docker creates DOCKER-USER; without Docker's chains there is nothing to filter.
    if let Err(e) = ensure_first("filter", "DOCKER-USER", FILTER_CHAIN).await {
        debug!(error = %e, "no DOCKER-USER chain to filter in");
    }
    ensure_first("nat", "POSTROUTING", NAT_CHAIN).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Subnet {
        x.parse().unwrap()
    }

    #[test]
    fn routes_to_other_nodes_and_filters_into_own_subnets() {
        let mesh = Mesh {
            pool: Some(s("10.208.0.0/12")),
            subnets: [(
                "app".to_string(),
                (
                    s("10.208.1.0/24"),
                    vec![s("10.208.0.0/24"), s("10.208.1.0/24")],
                ),
            )]
            .into_iter()
            .collect(),
            routes: [
                (s("10.208.0.0/24"), Ipv4Addr::new(10, 77, 7, 12)),
                (s("10.208.2.0/24"), Ipv4Addr::new(10, 77, 7, 11)),
            ]
            .into_iter()
            .collect(),
            nodes: vec![Ipv4Addr::new(10, 77, 7, 11), Ipv4Addr::new(10, 77, 7, 12)],
            ..Mesh::default()
        };
        let owned = [s("10.208.0.0/24"), s("10.208.9.0/24")];
        // 10.77.7.11 is this host: nothing is routed via it.
        let local = [Ipv4Addr::new(10, 77, 7, 11)].into_iter().collect();
        let p = plan(&mesh, &owned, &local);
        assert_eq!(
            p.replace,
            vec![(s("10.208.0.0/24"), Ipv4Addr::new(10, 77, 7, 12))]
        );
        assert_eq!(p.delete, vec![s("10.208.9.0/24")]);
        assert_eq!(
            p.rules,
            "*filter\n:SHOAL-MESH - [0:0]\n\
             -A SHOAL-MESH -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n\
             -A SHOAL-MESH -s 10.208.0.0/24 -d 10.208.1.0/24 -j ACCEPT\n\
             -A SHOAL-MESH -s 10.208.1.0/24 -d 10.208.1.0/24 -j ACCEPT\n\
             -A SHOAL-MESH -s 10.77.7.11/32 -d 10.208.1.0/24 -j ACCEPT\n\
             -A SHOAL-MESH -s 10.77.7.12/32 -d 10.208.1.0/24 -j ACCEPT\n\
             -A SHOAL-MESH -d 10.208.1.0/24 -j DROP\n\
             COMMIT\n\
             *nat\n:SHOAL-NAT - [0:0]\n\
             -A SHOAL-NAT -s 10.208.0.0/12 -d 10.208.0.0/12 -j ACCEPT\n\
             COMMIT\n"
        );
    }

    #[test]
    fn an_empty_mesh_removes_every_owned_route_and_empties_the_chains() {
        let p = plan(&Mesh::default(), &[s("10.208.4.0/24")], &BTreeSet::new());
        assert!(p.replace.is_empty());
        assert_eq!(p.delete, vec![s("10.208.4.0/24")]);
        assert!(!p.rules.contains("-A SHOAL-MESH -s"));
        assert!(!p.rules.contains("-A SHOAL-NAT"));
    }
}
