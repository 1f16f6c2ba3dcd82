//! The namespaces a container shares and where its names resolve, decided on the node:
//!
//! - `network_mode`, `ipc` and `pid` of the form `service:NAME` become `container:ID`
//!   of a running replica of STACK/NAME on this node (the same slot if there is one,
//!   else the lowest) just before the create ([`resolve_request`]); with none running
//!   the task fails and its restart policy tries again. A container created so is
//!   labelled [`JOINED`] with the id whose network it shares;
//! - a container that joined a network namespace that has since gone away (its owner
//!   stopped or was replaced) has no network any more: it is stopped and its task
//!   failed ([`rejoins`]), so that its replacement joins the current replica, as
//!   Compose recreates it;
//! - `dns:` entries are checked before the create ([`check_dns`]); with the agent's
//!   resolver they become the upstreams of the container's addresses
//!   ([`dns_upstreams`], derived again from what runs after every change, so that a
//!   container that goes takes its upstreams with it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use shoal_proto::container::NetworkMode;
use shoal_proto::labels;
use shoal_proto::task::Desired;

use crate::model::{AssignmentSet, TaskReport};
use crate::net::upstream::parse_servers;
use crate::reconcile::{Action, AfterStop};
use crate::runtime::{ContainerInfo, ContainerRequest, ContainerState, TaskIdentity};

/// Label of a container created in another one's network namespace from
/// `network_mode: service:NAME`: that container's id.
pub const JOINED: &str = "io.shoal.joined";

const SERVICE_PREFIX: &str = "service:";

/// `mode` with `service:NAME` replaced by `container:ID` of the replica of `task`'s
/// stack's service NAME running on this node (`containers`: this node's); other modes
/// unchanged. `what` names the setting in the error (`network_mode`, `ipc`, `pid`).
pub fn resolve(
    what: &str,
    mode: &str,
    task: &TaskIdentity,
    node: &str,
    containers: &[ContainerInfo],
) -> Result<String, String> {
    let Some(service) = mode.strip_prefix(SERVICE_PREFIX) else {
        return Ok(mode.to_string());
    };
    let slot = |c: &ContainerInfo| {
        c.labels
            .get(labels::SLOT)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    containers
        .iter()
        .filter(|c| {
            c.state == ContainerState::Running
                && c.labels.get(labels::STACK) == Some(&task.stack)
                && c.labels.get(labels::SERVICE).map(String::as_str) == Some(service)
        })
        .min_by_key(|c| (slot(c) != task.slot, slot(c), c.id.clone()))
        .map(|c| format!("container:{}", c.id))
        .ok_or_else(|| {
            format!(
                "{what}: {mode}: no running replica of {}/{service} on node {node}",
                task.stack
            )
        })
}

/// Resolve the request's `service:` modes ([`resolve`]) and label what its network
/// joined ([`JOINED`]).
pub fn resolve_request(
    req: &mut ContainerRequest,
    task: &TaskIdentity,
    node: &str,
    containers: &[ContainerInfo],
) -> Result<(), String> {
    if let Some(mode) = &req.network_mode {
        let resolved = resolve("network_mode", mode, task, node, containers)?;
        if mode.starts_with(SERVICE_PREFIX) {
            if let Some(id) = resolved.strip_prefix("container:") {
                req.labels.insert(JOINED.to_string(), id.to_string());
            }
        }
        req.network_mode = Some(resolved);
    }
    for (what, mode) in [("ipc", &mut req.options.ipc), ("pid", &mut req.options.pid)] {
        if let Some(m) = mode {
            *m = resolve(what, m, task, node, containers)?;
        }
    }
    Ok(())
}

/// Check the request's `dns:` entries. `relayed`: the agent's resolver serves the
/// container and relays to them (any port); otherwise the engine gets them as its
/// `Dns`, which takes addresses only: they are rewritten to bare addresses, and a port
/// other than 53 is an error. A container in another one's network namespace uses
/// that one's resolvers (the engine refuses `Dns` with it).
pub fn check_dns(req: &mut ContainerRequest, relayed: bool) -> Result<(), String> {
    let servers = parse_servers(&req.options.dns)?;
    if let Some(mode) = req.network_mode.as_deref().filter(|m| {
        !servers.is_empty() && (m.starts_with("container:") || m.starts_with(SERVICE_PREFIX))
    }) {
        return Err(format!(
            "dns: a container with network_mode {mode} uses the resolvers of the one whose \
             network it shares: give dns: to that service instead"
        ));
    }
    if relayed {
        return Ok(());
    }
    if let Some(s) = servers.iter().find(|s| s.port() != 53) {
        return Err(format!(
            "dns: {s}: a port other than 53 needs the agent's resolver, which this \
             container does not use (it has a network_mode, or the agent cannot serve DNS)"
        ));
    }
    req.options.dns = servers.iter().map(|s| s.ip().to_string()).collect();
    Ok(())
}

/// The upstream resolvers of each address of this node's running containers whose
/// service lists `dns:` servers and is on the cluster's networks.
pub fn dns_upstreams(
    intent: Option<&AssignmentSet>,
    containers: &BTreeMap<String, ContainerInfo>,
) -> BTreeMap<IpAddr, Vec<SocketAddr>> {
    let mut out = BTreeMap::new();
    let Some(intent) = intent else {
        return out;
    };
    for c in containers.values() {
        if c.state != ContainerState::Running {
            continue;
        }
        let Some(a) = c.task_id().and_then(|t| intent.tasks.get(t)) else {
            continue;
        };
        let options = &a.spec.container;
        if options.dns.is_empty() || options.network_mode.is_some() {
            continue;
        }
        let Ok(servers) = parse_servers(&options.dns) else {
            continue;
        };
        for ip in c.ip.iter().chain(c.ips.values()) {
            out.insert(*ip, servers.clone());
        }
    }
    out
}

/// Stops for the running containers whose network namespace's owner ([`JOINED`]) no
/// longer runs: their task fails, and its replacement joins the current replica.
pub fn rejoins(
    intent: Option<&AssignmentSet>,
    containers: &BTreeMap<String, ContainerInfo>,
    busy: &BTreeSet<String>,
    reported: &BTreeMap<String, TaskReport>,
) -> Vec<Action> {
    let Some(intent) = intent else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in containers.values() {
        let (Some(peer), Some(task_id)) = (c.labels.get(JOINED), c.task_id()) else {
            continue;
        };
        if c.state != ContainerState::Running || busy.contains(task_id) {
            continue;
        }
        let Some(a) = intent.tasks.get(task_id) else {
            continue;
        };
        if a.desired != Desired::Running
            || reported.get(task_id).is_some_and(|r| r.state.is_terminal())
        {
            continue;
        }
        if containers
            .get(peer)
            .is_some_and(|p| p.state == ContainerState::Running)
        {
            continue;
        }
        let service = match &a.spec.container.network_mode {
            Some(NetworkMode::Service(s)) => s.as_str(),
            _ => "?",
        };
        let short: String = peer.chars().take(12).collect();
        out.push(Action::Stop {
            task_id: task_id.to_string(),
            container_id: c.id.clone(),
            running: true,
            grace: Duration::from_millis(a.spec.stop_grace_ms()),
            signal: a.spec.stop_signal.clone(),
            then: AfterStop::Fail(format!(
                "network_mode: service:{service}: the replica whose network it shared \
                 ({short}) stopped; its replacement joins the running one"
            )),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shoal_proto::container::ContainerOptions;
    use shoal_proto::spec::ServiceSpec;
    use shoal_proto::task::TaskState;

    use super::*;
    use crate::model::Assignment;
    use crate::runtime::test_container;

    fn task(service: &str, slot: u64) -> TaskIdentity {
        TaskIdentity {
            task_id: format!("{service}.{slot}"),
            stack: "shop".into(),
            service: service.into(),
            slot,
            generation: 1,
        }
    }

    /// A container of `stack/service` slot `slot`.
    fn replica(
        id: &str,
        stack: &str,
        service: &str,
        slot: u64,
        state: ContainerState,
    ) -> ContainerInfo {
        let mut c = test_container(id, &format!("{service}.{slot}"), state);
        c.labels.insert(labels::STACK.into(), stack.into());
        c.labels.insert(labels::SERVICE.into(), service.into());
        c.labels.insert(labels::SLOT.into(), slot.to_string());
        c
    }

    #[test]
    fn a_service_mode_joins_the_same_slot_else_the_lowest_running_one() {
        let vpn = [
            replica("v3", "shop", "vpn", 3, ContainerState::Running),
            replica("v2", "shop", "vpn", 2, ContainerState::Running),
            replica("v1", "shop", "vpn", 1, ContainerState::Exited),
            replica("x1", "other", "vpn", 1, ContainerState::Running),
        ];
        let r = |slot, mode| resolve("network_mode", mode, &task("app", slot), "n2", &vpn);
        assert_eq!(r(3, "service:vpn"), Ok("container:v3".into()));
        // Slot 1's replica does not run, slot 7 has none: the lowest running slot.
        assert_eq!(r(1, "service:vpn"), Ok("container:v2".into()));
        assert_eq!(r(7, "service:vpn"), Ok("container:v2".into()));
        assert_eq!(r(1, "host"), Ok("host".into()));
        assert_eq!(r(1, "container:abc"), Ok("container:abc".into()));
        assert_eq!(
            r(1, "service:db"),
            Err("network_mode: service:db: no running replica of shop/db on node n2".into())
        );
    }

    #[test]
    fn a_request_gets_every_service_mode_resolved_and_its_network_peer_labelled() {
        let running = [
            replica("vpn1", "shop", "vpn", 1, ContainerState::Running),
            replica("db1", "shop", "db", 1, ContainerState::Running),
        ];
        let mut req = ContainerRequest {
            network_mode: Some("service:vpn".into()),
            options: ContainerOptions {
                ipc: Some("service:db".into()),
                pid: Some("host".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        resolve_request(&mut req, &task("app", 1), "n1", &running).unwrap();
        assert_eq!(req.network_mode.as_deref(), Some("container:vpn1"));
        assert_eq!(req.options.ipc.as_deref(), Some("container:db1"));
        assert_eq!(req.options.pid.as_deref(), Some("host"));
        assert_eq!(req.labels.get(JOINED).map(String::as_str), Some("vpn1"));

        let mut req = ContainerRequest {
            options: ContainerOptions {
                pid: Some("service:cache".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = resolve_request(&mut req, &task("app", 1), "n1", &running).unwrap_err();
        assert_eq!(
            err,
            "pid: service:cache: no running replica of shop/cache on node n1"
        );
        assert!(req.labels.is_empty());
    }

    #[test]
    fn dns_entries_are_checked_and_given_to_the_engine_bare_when_not_relayed() {
        let req = |dns: &[&str]| ContainerRequest {
            options: ContainerOptions {
                dns: dns.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut r = req(&["9.9.9.9:53", "[2001:db8::1]:53", "1.1.1.1"]);
        check_dns(&mut r, false).unwrap();
        assert_eq!(r.options.dns, vec!["9.9.9.9", "2001:db8::1", "1.1.1.1"]);
        let mut r = req(&["9.9.9.9:5353"]);
        check_dns(&mut r, true).unwrap();
        assert_eq!(
            r.options.dns,
            vec!["9.9.9.9:5353"],
            "the relay takes any port"
        );
        let err = check_dns(&mut req(&["9.9.9.9:5353"]), false).unwrap_err();
        assert!(
            err.starts_with("dns: 9.9.9.9:5353: a port other than 53"),
            "{err}"
        );
        let err = check_dns(&mut req(&["resolver.lan"]), true).unwrap_err();
        assert!(
            err.contains("\"resolver.lan\" is not an IP address"),
            "{err}"
        );
        let mut joined = req(&["9.9.9.9"]);
        joined.network_mode = Some("service:vpn".into());
        let err = check_dns(&mut joined, false).unwrap_err();
        assert!(
            err.starts_with("dns: a container with network_mode service:vpn"),
            "{err}"
        );
        joined.options.dns.clear();
        assert_eq!(check_dns(&mut joined, false), Ok(()));
    }

    fn assignment(t: TaskIdentity, options: ContainerOptions) -> Assignment {
        Assignment {
            spec: Arc::new(ServiceSpec {
                name: t.service.clone(),
                image: "img".into(),
                container: options,
                ..Default::default()
            }),
            task: t,
            desired: Desired::Running,
            ended: false,
            gpus: Vec::new(),
            secrets: Vec::new(),
            volumes: Vec::new(),
        }
    }

    fn intent(tasks: Vec<Assignment>) -> AssignmentSet {
        AssignmentSet {
            tasks: tasks
                .into_iter()
                .map(|a| (a.task.task_id.clone(), a))
                .collect(),
            ..Default::default()
        }
    }

    fn by_id(cs: Vec<ContainerInfo>) -> BTreeMap<String, ContainerInfo> {
        cs.into_iter().map(|c| (c.id.clone(), c)).collect()
    }

    #[test]
    fn upstreams_are_those_of_running_containers_with_dns_servers_by_each_address() {
        let with_dns = ContainerOptions {
            dns: vec!["192.0.2.53".into(), "192.0.2.54:5353".into()],
            ..Default::default()
        };
        let set = intent(vec![
            assignment(task("web", 1), with_dns.clone()),
            assignment(task("web", 2), with_dns.clone()),
            assignment(task("db", 1), ContainerOptions::default()),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut web1 = replica("w1", "shop", "web", 1, ContainerState::Running);
        web1.ip = Some(ip("10.208.0.5"));
        web1.ips = [
            ("shoal-shop".to_string(), ip("10.208.0.5")),
            ("shoal-shop.back".to_string(), ip("10.208.1.5")),
        ]
        .into();
        let mut web2 = replica("w2", "shop", "web", 2, ContainerState::Exited);
        web2.ip = Some(ip("10.208.0.6"));
        let mut db = replica("d1", "shop", "db", 1, ContainerState::Running);
        db.ip = Some(ip("10.208.0.7"));
        let servers: Vec<SocketAddr> = vec![
            "192.0.2.53:53".parse().unwrap(),
            "192.0.2.54:5353".parse().unwrap(),
        ];
        assert_eq!(
            dns_upstreams(Some(&set), &by_id(vec![web1, web2, db])),
            [
                (ip("10.208.0.5"), servers.clone()),
                (ip("10.208.1.5"), servers.clone()),
            ]
            .into()
        );
        assert!(dns_upstreams(None, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_container_whose_network_owner_stopped_is_stopped_and_failed() {
        let app_options = ContainerOptions {
            network_mode: Some(NetworkMode::Service("vpn".into())),
            ..Default::default()
        };
        let set = intent(vec![
            assignment(task("vpn", 1), ContainerOptions::default()),
            assignment(task("app", 1), app_options),
        ]);
        let mut app = replica("a1", "shop", "app", 1, ContainerState::Running);
        app.labels.insert(JOINED.into(), "v1".into());
        let vpn = replica("v1", "shop", "vpn", 1, ContainerState::Running);
        let none = BTreeSet::new();
        let reported = BTreeMap::new();
        let live = by_id(vec![app.clone(), vpn.clone()]);
        assert_eq!(rejoins(Some(&set), &live, &none, &reported), vec![]);

        let mut exited = vpn.clone();
        exited.state = ContainerState::Exited;
        let stop = vec![Action::Stop {
            task_id: "app.1".into(),
            container_id: "a1".into(),
            running: true,
            grace: Duration::from_millis(ServiceSpec::default().stop_grace_ms()),
            signal: None,
            then: AfterStop::Fail(
                "network_mode: service:vpn: the replica whose network it shared (v1) \
                 stopped; its replacement joins the running one"
                    .into(),
            ),
        }];
        let peer_exited = by_id(vec![app.clone(), exited]);
        assert_eq!(rejoins(Some(&set), &peer_exited, &none, &reported), stop);
        let peer_gone = by_id(vec![app.clone()]);
        assert_eq!(rejoins(Some(&set), &peer_gone, &none, &reported), stop);
        // Not while it is busy, once it is failed, or before the controller spoke.
        let busy = BTreeSet::from(["app.1".to_string()]);
        assert_eq!(rejoins(Some(&set), &peer_gone, &busy, &reported), vec![]);
        let failed = BTreeMap::from([(
            "app.1".to_string(),
            TaskReport::new("app.1", TaskState::Failed),
        )]);
        assert_eq!(rejoins(Some(&set), &peer_gone, &none, &failed), vec![]);
        assert_eq!(rejoins(None, &peer_gone, &none, &reported), vec![]);
    }
}
