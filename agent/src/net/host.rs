//! Host-gw routing and filtering on this node, from the controller's [`Mesh`]:
//!
//! - `ip route replace SUBNET via NODE proto 208` for every other node's subnet (proto 208
//!   marks the routes shoal owns, so stale ones are found and removed);
//! - nat chain `SHOAL-NAT` (jumped to first from `POSTROUTING`): traffic from the pool to
//!   the pool is not masqueraded, so a replica sees its peer's real address;
//! - filter chain `SHOAL-MESH` (jumped to first from Docker's `DOCKER-USER`): new
//!   connections into one of this node's stack subnets are accepted from that stack's
//!   subnets and from the cluster's nodes (their mesh proxies), dropped from anywhere
//!   else, so cluster networks stay isolated from each other across nodes as Docker
//!   isolates its networks on one; new connections from an `internal: true` network's
//!   subnet to anything outside the pool are dropped.
//!
//! The chains are rewritten whole with one `iptables-restore --noflush` (atomic per
//! table), so applying is idempotent. [`plan`] is pure; [`HostNet`] runs it through a
//! [`Shell`] (the system's, or a recording fake in tests) and, when the agent stops,
//! removes what it installed ([`HostNet::clear`]): its routes, both chains and the
//! jumps to them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;

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
    if let Some(pool) = mesh.pool {
        for key in &mesh.internal {
            if let Some((subnet, _)) = mesh.subnets.get(key) {
                rules += &format!("-A {FILTER_CHAIN} -s {subnet} ! -d {pool} -j DROP\n");
            }
        }
    }
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

/// Runs the host's commands: [`System`] on a real node, a recording fake in tests.
#[async_trait]
pub trait Shell: Send + Sync {
    /// Run `cmd args` with `input` on stdin; its stdout, or why it failed.
    async fn run(&self, cmd: &str, args: &[&str], input: Option<&str>) -> Result<String, String>;
}

/// The host's own `ip` and `iptables`.
pub struct System;

#[async_trait]
impl Shell for System {
    async fn run(&self, cmd: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
        run(cmd, args, input).await
    }
}

/// Applies plans on this host (needs root, `ip` and `iptables`). Remembers the last one
/// so an unchanged mesh costs nothing; a failure is logged once per distinct error.
pub struct HostNet {
    shell: Arc<dyn Shell>,
    applied: Option<Mesh>,
    last_error: Option<String>,
    /// Something was (or may have been) installed: [`HostNet::clear`] has work to do.
    touched: bool,
}

impl Default for HostNet {
    fn default() -> HostNet {
        HostNet::with_shell(Arc::new(System))
    }
}

impl HostNet {
    pub fn with_shell(shell: Arc<dyn Shell>) -> HostNet {
        HostNet {
            shell,
            applied: None,
            last_error: None,
            touched: false,
        }
    }

    /// Remove what shoal installed on the host: its routes, the jumps to its chains and
    /// the chains. Called when the agent stops; a host it never changed is left alone.
    pub async fn clear(&mut self) {
        if !self.touched {
            return;
        }
        let sh = &*self.shell;
        match owned_routes(sh).await {
            Ok(routes) => {
                for subnet in routes {
                    let s = subnet.to_string();
                    if let Err(e) = sh
                        .run("ip", &["route", "del", &s, "proto", ROUTE_PROTO], None)
                        .await
                    {
                        warn!(subnet = %s, error = %e, "cannot remove a mesh route");
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot list the mesh routes to remove them"),
        }
        for (table, parent, chain) in [
            ("filter", "DOCKER-USER", FILTER_CHAIN),
            ("nat", "POSTROUTING", NAT_CHAIN),
        ] {
            let delete = ["-w", "-t", table, "-D", parent, "-j", chain];
            for _ in 0..8 {
                if sh.run("iptables", &delete, None).await.is_err() {
                    break;
                }
            }
            let _ = sh
                .run("iptables", &["-w", "-t", table, "-F", chain], None)
                .await;
            let _ = sh
                .run("iptables", &["-w", "-t", table, "-X", chain], None)
                .await;
        }
        info!("removed the mesh routes and filters from the host");
        self.applied = None;
        self.touched = false;
    }

    /// Make the host match `mesh`. A mesh with no routes (a one-node cluster) changes
    /// nothing on the host unless shoal changed it before.
    pub async fn apply(&mut self, mesh: &Mesh) {
        if self.applied.as_ref() == Some(mesh) {
            return;
        }
        if mesh.routes.is_empty() && self.applied.is_none() {
            return;
        }
        self.touched = true;
        match apply(&*self.shell, mesh).await {
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
async fn local_addresses(sh: &dyn Shell) -> Result<BTreeSet<Ipv4Addr>, String> {
    let out = sh.run("ip", &["-4", "-o", "addr", "show"], None).await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

async fn owned_routes(sh: &dyn Shell) -> Result<Vec<Subnet>, String> {
    let out = sh
        .run("ip", &["-4", "route", "show", "proto", ROUTE_PROTO], None)
        .await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect())
}

/// Make `-j CHAIN` the first rule of `parent`. Docker inserts its own rules at the top
/// (a new network's MASQUERADE goes first in POSTROUTING), so being present is not
/// enough: a jump that is no longer first is moved back up.
async fn ensure_first(
    sh: &dyn Shell,
    table: &str,
    parent: &str,
    chain: &str,
) -> Result<(), String> {
    let rules = sh
        .run("iptables", &["-w", "-t", table, "-S", parent], None)
        .await?;
    let jump = format!("-A {parent} -j {chain}");
    if rules.lines().find(|l| l.starts_with("-A ")) == Some(jump.as_str()) {
        return Ok(());
    }
    let delete = ["-w", "-t", table, "-D", parent, "-j", chain];
    for _ in 0..8 {
        if sh.run("iptables", &delete, None).await.is_err() {
            break;
        }
    }
    sh.run(
        "iptables",
        &["-w", "-t", table, "-I", parent, "1", "-j", chain],
        None,
    )
    .await
    .map(|_| ())
}

async fn apply(sh: &dyn Shell, mesh: &Mesh) -> Result<(), String> {
    let local = local_addresses(sh).await?;
    let owned = owned_routes(sh).await?;
    let p = plan(mesh, &owned, &local);
    for (subnet, via) in &p.replace {
        let (s, v) = (subnet.to_string(), via.to_string());
        sh.run(
            "ip",
            &["route", "replace", &s, "via", &v, "proto", ROUTE_PROTO],
            None,
        )
        .await?;
    }
    for subnet in &p.delete {
        let s = subnet.to_string();
        sh.run("ip", &["route", "del", &s, "proto", ROUTE_PROTO], None)
            .await?;
        info!(subnet = %s, "removed stale mesh route");
    }
    sh.run("iptables-restore", &["-w", "--noflush"], Some(&p.rules))
        .await?;
    // Docker creates DOCKER-USER; without Docker's chains there is nothing to filter.
    if let Err(e) = ensure_first(sh, "filter", "DOCKER-USER", FILTER_CHAIN).await {
        debug!(error = %e, "no DOCKER-USER chain to filter in");
    }
    ensure_first(sh, "nat", "POSTROUTING", NAT_CHAIN).await?;
    Ok(())
}

/// A recording [`Shell`] for tests: a host that remembers routes, chains and jumps.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    /// A host that remembers routes and jumps, and records every command.
    #[derive(Default)]
    pub(crate) struct FakeHost {
        pub(crate) state: std::sync::Mutex<FakeState>,
    }

    #[derive(Default)]
    pub(crate) struct FakeState {
        pub(crate) calls: Vec<String>,
        pub(crate) routes: BTreeSet<String>,
        pub(crate) jumps: std::collections::BTreeMap<String, usize>,
        pub(crate) chains: BTreeSet<String>,
    }

    #[async_trait]
    impl Shell for FakeHost {
        async fn run(
            &self,
            cmd: &str,
            args: &[&str],
            input: Option<&str>,
        ) -> Result<String, String> {
            let mut st = self.state.lock().unwrap();
            st.calls.push(format!("{cmd} {}", args.join(" ")));
            match (cmd, args) {
                ("ip", ["-4", "-o", "addr", "show"]) => {
                    Ok("2: eth0    inet 10.77.7.11/24 brd 10.77.7.255 scope global eth0\n".into())
                }
                ("ip", ["-4", "route", "show", "proto", _]) => Ok(st
                    .routes
                    .iter()
                    .map(|r| format!("{r} via 10.77.7.12 dev eth0 proto 208\n"))
                    .collect()),
                ("ip", ["route", "replace", subnet, ..]) => {
                    st.routes.insert(subnet.to_string());
                    Ok(String::new())
                }
                ("ip", ["route", "del", subnet, ..]) => {
                    st.routes.remove(*subnet);
                    Ok(String::new())
                }
                ("iptables-restore", _) => {
                    for line in input.unwrap_or("").lines() {
                        if let Some(chain) = line.strip_prefix(':') {
                            st.chains
                                .insert(chain.split(' ').next().unwrap().to_string());
                        }
                    }
                    Ok(String::new())
                }
                ("iptables", ["-w", "-t", _, "-S", _]) => Ok(String::new()),
                ("iptables", ["-w", "-t", t, "-I", parent, "1", "-j", chain]) => {
                    *st.jumps.entry(format!("{t} {parent} {chain}")).or_default() += 1;
                    Ok(String::new())
                }
                ("iptables", ["-w", "-t", t, "-D", parent, "-j", chain]) => {
                    let k = format!("{t} {parent} {chain}");
                    match st.jumps.get_mut(&k) {
                        Some(n) if *n > 0 => {
                            *n -= 1;
                            Ok(String::new())
                        }
                        _ => Err("no such rule".into()),
                    }
                }
                ("iptables", ["-w", "-t", _, "-F", _]) => Ok(String::new()),
                ("iptables", ["-w", "-t", _, "-X", chain]) => {
                    st.chains.remove(*chain);
                    Ok(String::new())
                }
                _ => Err(format!("unexpected {cmd} {args:?}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHost;
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

    #[tokio::test]
    async fn clearing_removes_the_routes_chains_and_jumps_installed() {
        let fake = Arc::new(FakeHost::default());
        let mut host = HostNet::with_shell(fake.clone());
        // A host shoal never changed is left alone.
        host.clear().await;
        assert!(fake.state.lock().unwrap().calls.is_empty());
        let mesh = Mesh {
            pool: Some(s("10.208.0.0/12")),
            subnets: [(
                "app".to_string(),
                (s("10.208.1.0/24"), vec![s("10.208.0.0/24")]),
            )]
            .into_iter()
            .collect(),
            routes: [(s("10.208.0.0/24"), Ipv4Addr::new(10, 77, 7, 12))]
                .into_iter()
                .collect(),
            ..Mesh::default()
        };
        host.apply(&mesh).await;
        {
            let st = fake.state.lock().unwrap();
            assert_eq!(st.routes.iter().collect::<Vec<_>>(), vec!["10.208.0.0/24"]);
            assert_eq!(st.chains.len(), 2);
            assert_eq!(st.jumps.values().sum::<usize>(), 2);
        }
        host.clear().await;
        let st = fake.state.lock().unwrap();
        assert!(st.routes.is_empty(), "routes left: {:?}", st.routes);
        assert!(st.chains.is_empty(), "chains left: {:?}", st.chains);
        assert_eq!(
            st.jumps.values().sum::<usize>(),
            0,
            "jumps left: {:?}",
            st.jumps
        );
        assert!(st
            .calls
            .contains(&"ip route del 10.208.0.0/24 proto 208".to_string()));
    }

    #[test]
    fn internal_networks_may_not_leave_the_pool() {
        let mesh = Mesh {
            pool: Some(s("10.208.0.0/12")),
            subnets: [(
                "app.private".to_string(),
                (s("10.208.4.0/24"), vec![s("10.208.4.0/24")]),
            )]
            .into_iter()
            .collect(),
            internal: ["app.private".to_string()].into_iter().collect(),
            ..Mesh::default()
        };
        let p = plan(&mesh, &[], &BTreeSet::new());
        assert!(
            p.rules.contains(
                "-A SHOAL-MESH -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n\
                 -A SHOAL-MESH -s 10.208.4.0/24 ! -d 10.208.0.0/12 -j DROP\n"
            ),
            "{}",
            p.rules
        );
    }
}
