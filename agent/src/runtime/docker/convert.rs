//! How shoal's container request and Docker's container records map onto each other:
//! [`docker_config`] builds the create call (API 1.41 fields only); [`from_summary`] and
//! [`from_inspect`] read `docker ps` and `docker inspect` back into [`ContainerInfo`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use bollard::container::{Config, NetworkingConfig};
use bollard::models::{
    ContainerInspectResponse, ContainerSummary, DeviceRequest, EndpointSettings, HealthConfig,
    HealthStatusEnum, HostConfig, Mount, MountTypeEnum, PortBinding as DockerPortBinding,
    ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use shoal_proto::spec::{MountKind, Protocol};

use super::super::{network_name, ContainerInfo, ContainerRequest, ContainerState, Health};
use shoal_proto::labels;

fn port_key(target: u16, protocol: Protocol) -> String {
    match protocol {
        Protocol::Tcp => format!("{target}/tcp"),
        Protocol::Udp => format!("{target}/udp"),
    }
}

pub(super) fn docker_config(req: &ContainerRequest) -> Config<String> {
    let mut exposed: HashMap<String, HashMap<(), ()>> = HashMap::new();
    let mut bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
    for p in &req.ports {
        let key = port_key(p.target, p.protocol);
        exposed.insert(key.clone(), HashMap::new());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(DockerPortBinding {
                host_ip: p.host_ip.clone(),
                host_port: Some(p.host_port.to_string()),
            });
    }
    let mounts = req
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: m.source.clone(),
            typ: Some(match m.kind {
                MountKind::Volume => MountTypeEnum::VOLUME,
                MountKind::Bind => MountTypeEnum::BIND,
                MountKind::Tmpfs => MountTypeEnum::TMPFS,
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let host_config = HostConfig {
        network_mode: Some(req.network.clone()),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        mounts: (!mounts.is_empty()).then_some(mounts),
        tmpfs: (!req.tmpfs.is_empty()).then(|| {
            req.tmpfs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        init: req.init,
        cap_add: (!req.cap_add.is_empty()).then(|| req.cap_add.clone()),
        cap_drop: (!req.cap_drop.is_empty()).then(|| req.cap_drop.clone()),
        ulimits: (!req.ulimits.is_empty()).then(|| {
            req.ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect()
        }),
        extra_hosts: (!req.extra_hosts.is_empty()).then(|| req.extra_hosts.clone()),
        nano_cpus: req.nano_cpus,
        memory: req.memory_bytes,
        pids_limit: req.pids_limit,
        device_requests: (!req.device_requests.is_empty()).then(|| {
            req.device_requests
                .iter()
                .map(|d| DeviceRequest {
                    driver: Some(d.driver.clone()),
                    count: None,
                    device_ids: Some(d.device_ids.clone()),
                    capabilities: Some(d.capabilities.clone()),
                    options: None,
                })
                .collect()
        }),
        dns: Some(if req.dns.is_empty() {
            req.options.dns.clone()
        } else {
            req.dns.clone()
        })
        .filter(|d| !d.is_empty()),
        ..Default::default()
    };
    let host_config = super::options::with_options(host_config, &req.options);
    // Off the cluster's networks (`host`, `none`, `container:`): no endpoint of our own.
    let own_network = req.network_mode.is_none();
    // Sharing another container's network: Docker refuses what would set up our own.
    let shared = req
        .network_mode
        .as_deref()
        .is_some_and(|m| m.starts_with("container:"));
    let host_config = HostConfig {
        network_mode: Some(
            req.network_mode
                .clone()
                .unwrap_or_else(|| req.network.clone()),
        ),
        dns: host_config.dns.filter(|_| !shared),
        extra_hosts: host_config.extra_hosts.filter(|_| !shared),
        port_bindings: host_config.port_bindings.filter(|_| !shared),
        ..host_config
    };
    let healthcheck = req.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()),
        interval: h.interval_ns,
        timeout: h.timeout_ns,
        retries: h.retries,
        start_period: h.start_period_ns,
        start_interval: None,
    });
    let endpoint = EndpointSettings {
        aliases: Some(req.aliases.clone()),
        mac_address: req.options.mac_address.clone(),
        ..Default::default()
    };
    let o = &req.options;
    Config {
        image: Some(req.image.clone()),
        hostname: req.hostname.clone().filter(|_| !shared),
        domainname: o.domainname.clone().filter(|_| !shared),
        mac_address: o.mac_address.clone().filter(|_| !shared),
        tty: o.tty.then_some(true),
        open_stdin: o.stdin_open.then_some(true),
        user: req.user.clone(),
        env: Some(req.env.clone()),
        cmd: req.cmd.clone(),
        entrypoint: req.entrypoint.clone(),
        working_dir: req.working_dir.clone(),
        labels: Some(req.labels.clone().into_iter().collect()),
        exposed_ports: (!exposed.is_empty() && !shared).then_some(exposed),
        healthcheck,
        stop_signal: req.stop_signal.clone(),
        stop_timeout: Some(req.stop_timeout_secs),
        host_config: Some(host_config),
        networking_config: own_network.then(|| NetworkingConfig {
            endpoints_config: [(req.network.clone(), endpoint)].into_iter().collect(),
        }),
        ..Default::default()
    }
}

fn parse_state(s: &str) -> ContainerState {
    match s {
        "created" => ContainerState::Created,
        "running" | "paused" | "restarting" => ContainerState::Running,
        _ => ContainerState::Exited,
    }
}

/// `Exited (3) 2 seconds ago` gives 3.
fn exit_code_from_status(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split_once(')')?.0.parse().ok()
}

fn health_from_status(status: &str) -> Health {
    if status.contains("(healthy)") {
        Health::Healthy
    } else if status.contains("(unhealthy)") {
        Health::Unhealthy
    } else if status.contains("(health: starting)") {
        Health::Starting
    } else {
        Health::None
    }
}

/// The address on the network the container was created on (`NetworkMode`), else on
/// its stack's default network, else on any; and its address on every network.
fn pick_ips(
    labels: &BTreeMap<String, String>,
    network_mode: Option<&str>,
    networks: Option<&HashMap<String, EndpointSettings>>,
) -> (Option<IpAddr>, BTreeMap<String, IpAddr>) {
    let Some(networks) = networks else {
        return (None, BTreeMap::new());
    };
    let parse = |e: &EndpointSettings| -> Option<IpAddr> {
        e.ip_address
            .as_deref()
            .filter(|ip| !ip.is_empty())
            .and_then(|ip| ip.parse().ok())
    };
    let all: BTreeMap<String, IpAddr> = networks
        .iter()
        .filter_map(|(name, e)| Some((name.clone(), parse(e)?)))
        .collect();
    let stack_default = labels.get(labels::STACK).map(|s| network_name(s));
    let ip = network_mode
        .and_then(|n| all.get(n))
        .or_else(|| stack_default.and_then(|n| all.get(&n)))
        .or_else(|| all.values().next())
        .copied();
    (ip, all)
}

pub(super) fn from_summary(c: ContainerSummary) -> ContainerInfo {
    let labels: BTreeMap<String, String> = c.labels.unwrap_or_default().into_iter().collect();
    let status = c.status.unwrap_or_default();
    let state = parse_state(c.state.as_deref().unwrap_or(""));
    let (ip, ips) = pick_ips(
        &labels,
        c.host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref()),
        c.network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref()),
    );
    ContainerInfo {
        id: c.id.unwrap_or_default(),
        name: c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        state,
        exit_code: (state == ContainerState::Exited)
            .then(|| exit_code_from_status(&status))
            .flatten(),
        oom_killed: false,
        health: health_from_status(&status),
        ip,
        ips,
        labels,
        error: None,
    }
}

pub(super) fn from_inspect(c: ContainerInspectResponse) -> ContainerInfo {
    let labels: BTreeMap<String, String> = c
        .config
        .as_ref()
        .and_then(|cfg| cfg.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let st = c.state.unwrap_or_default();
    let state = parse_state(&st.status.map(|s| s.to_string()).unwrap_or_default());
    let health = match st.health.and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    };
    let (ip, ips) = pick_ips(
        &labels,
        c.host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref()),
        c.network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref()),
    );
    ContainerInfo {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        state,
        exit_code: (state == ContainerState::Exited)
            .then_some(st.exit_code)
            .flatten(),
        oom_killed: st.oom_killed.unwrap_or(false),
        health,
        ip,
        ips,
        labels,
        error: st.error.filter(|e| !e.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_status_gives_exit_code_and_health() {
        assert_eq!(exit_code_from_status("Exited (3) 2 seconds ago"), Some(3));
        assert_eq!(exit_code_from_status("Up 2 seconds"), None);
        assert_eq!(health_from_status("Up 5 s (healthy)"), Health::Healthy);
        assert_eq!(health_from_status("Up 5 s (unhealthy)"), Health::Unhealthy);
        assert_eq!(
            health_from_status("Up 1 s (health: starting)"),
            Health::Starting
        );
        assert_eq!(health_from_status("Up 1 s"), Health::None);
    }
}
