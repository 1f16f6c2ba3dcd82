//! What a node has that placement reads beside its resources and GPUs: its device
//! paths, its platform (both from its agent) and its role, `manager` when a controller
//! runs on it too.
//!
//! The role is decided outside `apply` (which must not read Raft's membership) by the
//! leader's session with the node's agent: at hello, `RegisterNode` carries it, and
//! while the session lasts the leader compares it with the controllers' addresses and
//! proposes `SetNodeRole` when a controller was added or removed on the node's
//! address. `apply` only records it, so every controller holds the same roles.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::apply::CommandResult;
use super::model::ClusterState;

impl ClusterState {
    pub(super) fn set_node_devices(
        &mut self,
        node: &str,
        devices: &BTreeSet<String>,
    ) -> CommandResult {
        match self.nodes.get_mut(node) {
            Some(n) => {
                n.devices = devices.clone();
                CommandResult::default()
            }
            None => CommandResult::error(format!("unknown node {node}")),
        }
    }

    pub(super) fn set_node_conflicts(&mut self, node: &str, conflicts: &[String]) -> CommandResult {
        match self.nodes.get_mut(node) {
            Some(n) => {
                n.conflicts = conflicts.to_vec();
                CommandResult::default()
            }
            None => CommandResult::error(format!("unknown node {node}")),
        }
    }

    pub(super) fn set_node_role(&mut self, node: &str, manager: bool) -> CommandResult {
        match self.nodes.get_mut(node) {
            Some(n) => {
                n.manager = manager;
                CommandResult::default()
            }
            None => CommandResult::error(format!("unknown node {node}")),
        }
    }
}

/// Whether a node whose agent advertises `address` (an IP, or `host:port`) shares a
/// machine with one of the controllers at `controllers` (`host:port`, as in Raft's
/// membership): the hosts are the same address. A controller that advertises a
/// loopback or unspecified address (`shoal up`, `--listen 127.0.0.1:7370`) can only be
/// told apart by a node that is itself reached on loopback, which then counts as its
/// machine. Host names are compared as written (no lookups: the answer must not depend
/// on a resolver).
pub fn is_manager<'a>(address: &str, controllers: impl IntoIterator<Item = &'a str>) -> bool {
    let node = host_of(address);
    if node.is_empty() {
        return false;
    }
    let node_local = is_local(node);
    controllers.into_iter().any(|c| {
        let c = host_of(c);
        same_host(node, c) || (node_local && is_local(c))
    })
}

/// The host of `host:port`, `[v6]:port`, `v6` or `host`.
pub fn host_of(addr: &str) -> &str {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    if addr.parse::<IpAddr>().is_ok() {
        return addr;
    }
    match addr.rsplit_once(':') {
        Some((host, _port)) => host,
        None => addr,
    }
}

fn same_host(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a.to_canonical() == b.to_canonical(),
        _ => a.eq_ignore_ascii_case(b),
    }
}

fn is_local(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.is_unspecified(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_from_every_address_form() {
        assert_eq!(host_of("10.0.0.1:7370"), "10.0.0.1");
        assert_eq!(host_of("10.0.0.1"), "10.0.0.1");
        assert_eq!(host_of("[fd00::1]:7370"), "fd00::1");
        assert_eq!(host_of("fd00::1"), "fd00::1");
        assert_eq!(host_of("ctl1.lan:7370"), "ctl1.lan");
    }

    #[test]
    fn a_node_is_a_manager_when_a_controller_shares_its_address() {
        let controllers = ["10.77.1.11:7370", "10.77.1.12:7371"];
        assert!(is_manager("10.77.1.11", controllers));
        assert!(is_manager("10.77.1.12", controllers));
        assert!(!is_manager("10.77.1.13", controllers));
        assert!(!is_manager("", controllers));
        assert!(is_manager("::ffff:10.77.1.11", controllers));
        assert!(is_manager("CTL1.lan", ["ctl1.lan:7370"]));
    }

    #[test]
    fn loopback_controllers_make_loopback_nodes_managers() {
        // `shoal up`: controller and agent on 127.0.0.1.
        assert!(is_manager("127.0.0.1", ["127.0.0.1:7370"]));
        assert!(is_manager("127.0.0.1", ["0.0.0.0:7370"]));
        assert!(is_manager("::1", ["localhost:7370"]));
        // A node elsewhere is not the loopback controller's machine.
        assert!(!is_manager("10.0.0.5", ["127.0.0.1:7370"]));
        assert!(!is_manager("127.0.0.1", ["10.0.0.5:7370"]));
    }

    #[test]
    fn roles_and_devices_are_recorded_for_known_nodes_only() {
        let mut s = ClusterState::default();
        assert!(s.set_node_role("a", true).error.is_some());
        assert!(s
            .set_node_devices("a", &BTreeSet::from(["/dev/null".to_string()]))
            .error
            .is_some());
    }
}
