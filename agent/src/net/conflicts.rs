//! What on this node overlaps the cluster's address pool without being shoal's: IPv4
//! routes of the node's network namespace (`/proc/net/route`) and Docker networks of
//! its engine that shoal did not make for this cluster. Either takes traffic meant for
//! the cluster's subnets elsewhere (a LAN on the pool's addresses, a leftover network's
//! bridge and MASQUERADE rule), in ways that are hard to see, so the agent reports them
//! and `shoal nodes` shows them.
//!
//! [`watch`] scans every [`RESCAN_INTERVAL`] and soon after the cluster's address space
//! changes (the pool is first heard with the assignments; the scan waits [`SETTLE`] so
//! that the mesh's own routes are in place first), and wakes its watchers only when the
//! list changed; the session then sends a `ConflictReport`. A new conflict is logged
//! once at warn. The decisions are the pure functions of [`scan`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::model::Mesh;
use crate::net::Subnet;
use crate::runtime::ContainerRuntime;

pub mod scan;

/// How often the node is scanned again.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(10);
/// Where the node's IPv4 routes are read.
pub const ROUTES_FILE: &str = "/proc/net/route";
/// How long after a change of the address space the node is scanned.
pub const SETTLE: Duration = Duration::from_secs(1);

/// What the scan needs to know of the cluster, from the controller's mesh.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterSpace {
    /// `None`: not heard yet, and nothing is reported.
    pub pool: Option<Subnet>,
    /// Other nodes' subnets and the node each is routed via: shoal's own routes.
    pub routes: BTreeMap<Subnet, Ipv4Addr>,
}

impl ClusterSpace {
    pub fn of(mesh: &Mesh) -> ClusterSpace {
        ClusterSpace {
            pool: mesh.pool,
            routes: mesh.routes.clone(),
        }
    }
}

/// Where and how often to look.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    /// [`ROUTES_FILE`] on a real node.
    pub routes_file: PathBuf,
    pub interval: Duration,
    /// This cluster's id: its networks are its own, not conflicts.
    pub cluster: Option<String>,
}

/// Everything on the node that overlaps the pool and is not shoal's, sorted.
pub async fn scan_node(
    runtime: &dyn ContainerRuntime,
    cfg: &ScanConfig,
    space: &ClusterSpace,
) -> Vec<String> {
    let Some(pool) = space.pool else {
        return Vec::new();
    };
    let routes = match tokio::fs::read_to_string(&cfg.routes_file).await {
        Ok(text) => scan::parse_routes(&text),
        Err(e) => {
            debug!(file = %cfg.routes_file.display(), error = %e, "cannot read the node's routes");
            Vec::new()
        }
    };
    let networks = runtime.list_networks().await.unwrap_or_else(|e| {
        debug!(error = %e, "cannot list the engine's networks");
        Vec::new()
    });
    let own = scan::Own {
        routes: space.routes.clone(),
        bridges: networks.iter().filter_map(|n| n.bridge.clone()).collect(),
    };
    let cluster = cfg.cluster.as_deref();
    let ours = |n: &_| crate::supervisor::networks::is_ours(n, cluster, false);
    let mut out = scan::route_conflicts(&routes, pool, &own);
    out.extend(scan::network_conflicts(&networks, pool, ours));
    out.sort();
    out.dedup();
    out
}

/// Scans whenever `space` changes and every `cfg.interval` until `shutdown`; the
/// receiver holds the latest list and is marked changed only when it differs.
pub fn watch(
    runtime: Arc<dyn ContainerRuntime>,
    cfg: ScanConfig,
    mut space: watch::Receiver<ClusterSpace>,
    shutdown: CancellationToken,
) -> watch::Receiver<Vec<String>> {
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                changed = space.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(SETTLE) => {}
                    }
                }
            }
            let now = space.borrow_and_update().clone();
            let next = scan_node(&*runtime, &cfg, &now).await;
            tx.send_if_modified(|current| {
                if *current == next {
                    return false;
                }
                say_what_changed(current, &next);
                *current = next;
                true
            });
        }
    });
    rx
}

/// Each new conflict once at warn; that none is left at info.
fn say_what_changed(before: &[String], now: &[String]) {
    for c in now.iter().filter(|c| !before.contains(c)) {
        warn!(conflict = %c, "this node has something overlapping the cluster's address pool: traffic to those addresses may go astray");
    }
    if now.is_empty() {
        info!("nothing on this node overlaps the cluster's address pool any more");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::NetworkInfo;

    fn config(routes_file: PathBuf) -> ScanConfig {
        ScanConfig {
            routes_file,
            interval: Duration::from_secs(10),
            cluster: Some("c0ffee0000000001".into()),
        }
    }

    fn pool() -> ClusterSpace {
        ClusterSpace {
            pool: Some("10.208.0.0/12".parse().unwrap()),
            routes: BTreeMap::new(),
        }
    }

    /// A route table file with one link route to `dest` (a /24) on eth1.
    fn routes_with(dir: &std::path::Path, dest: Option<&str>) -> PathBuf {
        let mut text =
            String::from("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n");
        if let Some(dest) = dest {
            let ip: Ipv4Addr = dest.parse().unwrap();
            let mask: Ipv4Addr = "255.255.255.0".parse().unwrap();
            let hex = |a: Ipv4Addr| format!("{:08X}", u32::from_ne_bytes(a.octets()));
            text += &format!(
                "eth1\t{}\t00000000\t0001\t0\t0\t0\t{}\n",
                hex(ip),
                hex(mask)
            );
        }
        let path = dir.join("route");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn a_scan_names_routes_and_other_networks_and_nothing_before_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeRuntime::new();
        fake.insert_network(NetworkInfo {
            name: "old_default".into(),
            subnets: vec!["10.208.1.0/24".parse().unwrap()],
            ..Default::default()
        });
        let cfg = config(routes_with(dir.path(), Some("10.208.77.0")));
        assert_eq!(
            scan_node(&fake, &cfg, &ClusterSpace::default()).await,
            Vec::<String>::new()
        );
        assert_eq!(
            scan_node(&fake, &cfg, &pool()).await,
            vec![
                "docker network \"old_default\" (10.208.1.0/24) overlaps the cluster pool 10.208.0.0/12",
                "route 10.208.77.0/24 dev eth1 overlaps the cluster pool 10.208.0.0/12",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watch_wakes_when_the_pool_is_heard_and_when_the_list_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = routes_with(dir.path(), Some("10.208.77.0"));
        let fake = FakeRuntime::new();
        let (space_tx, space_rx) = watch::channel(ClusterSpace::default());
        let stop = CancellationToken::new();
        let mut rx = watch(Arc::new(fake), config(file), space_rx, stop.clone());
        // Nothing to say before the pool is known.
        let quiet = tokio::time::timeout(Duration::from_secs(30), rx.changed()).await;
        assert!(quiet.is_err(), "woken without a pool: {:?}", *rx.borrow());
        space_tx.send(pool()).unwrap();
        tokio::time::timeout(SETTLE * 2, rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            *rx.borrow_and_update(),
            vec!["route 10.208.77.0/24 dev eth1 overlaps the cluster pool 10.208.0.0/12"]
        );
        // The route is removed: the next rescan says so.
        routes_with(dir.path(), None);
        tokio::time::timeout(RESCAN_INTERVAL * 2, rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(rx.borrow_and_update().is_empty());
        stop.cancel();
    }
}
