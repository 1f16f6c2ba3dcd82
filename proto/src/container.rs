//! The container options of a service that Compose passes straight to the engine
//! (`privileged`, `devices`, `shm_size`, `sysctls`, `network_mode`, ...): what
//! [`crate::spec::ServiceSpec::container`] holds.
//!
//! They are kept apart from the fields the scheduler and the rollout read so that
//! [`crate::spec::ServiceSpec`] stays readable, and they serialize only when set, so a
//! spec stored before they existed compares equal to the same spec loaded again (no
//! rollout on upgrade). Sizes are bytes, durations microseconds where the engine wants
//! them (`cpu_period`, `cpu_quota`, ...), as Compose writes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything else a service asks of its containers. Every field maps to one field of
/// the engine's container create request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerOptions {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Host devices (`devices:`); a node runs the service only if it has every
    /// [`DeviceMapping::source`] that is a path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceMapping>,
    /// `device_cgroup_rules`, e.g. `c 188:* rmw`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    /// `shm_size` in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `security_opt`, e.g. `no-new-privileges:true`, `seccomp:unconfined`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// `read_only`: the container's root filesystem is read-only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// `ipc`: `private`, `shareable`, `host`, `none`, `container:NAME` or `service:NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    /// `pid`: `host`, `container:NAME` or `service:NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// `uts`: `host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uts: Option<String>,
    /// `userns_mode`: `host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
    /// `cgroup`: `host` or `private` (the cgroup namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    /// `group_add`: extra groups, by name or id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// `dns`: the container's upstream resolvers for names outside the cluster (the
    /// agent's resolver keeps answering cluster names and relays the rest to these).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// `logging`: the engine's log driver and its options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// `runtime`: the engine's OCI runtime (`runc`, `nvidia`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kill_disable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_swappiness: Option<i64>,
    /// `memswap_limit` in bytes; -1: unlimited swap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memswap_limit: Option<i64>,
    /// `cpu_shares`, `cpu_period`, `cpu_quota`, `cpuset`, ... .
    #[serde(skip_serializing_if = "CpuOptions::is_default")]
    pub cpu: CpuOptions,
    /// `blkio_config`.
    #[serde(skip_serializing_if = "Blkio::is_default")]
    pub blkio: Blkio,
    /// `storage_opt`, e.g. `size: 1G`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_opt: BTreeMap<String, String>,
    /// `annotations` (the OCI spec's; engines with API 1.43 and later apply them).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stdin_open: bool,
    /// `platform`, e.g. `linux/arm64`: only nodes of that platform run the service, and
    /// the engine is asked for that variant of the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `network_mode`; `None`: the service's Compose networks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
}

impl ContainerOptions {
    pub fn is_default(&self) -> bool {
        *self == ContainerOptions::default()
    }

    /// The services of the same stack whose replicas a replica of this one must share a
    /// node with (`network_mode`, `ipc` or `pid` of the form `service:NAME`).
    pub fn colocated_with(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        if let Some(NetworkMode::Service(s)) = &self.network_mode {
            out.push(s);
        }
        for mode in [&self.ipc, &self.pid].into_iter().flatten() {
            if let Some(s) = mode.strip_prefix("service:") {
                out.push(s);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The device paths a node must have: every `devices:` source that is a path
    /// (CDI names such as `vendor.com/class=name` are the engine's to resolve).
    pub fn device_paths(&self) -> impl Iterator<Item = &str> {
        self.devices
            .iter()
            .filter(|d| d.is_path())
            .map(|d| d.source.as_str())
    }
}

/// One `devices:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceMapping {
    /// The host path (`/dev/ttyUSB0`), or a CDI device name (`vendor.com/class=name`).
    pub source: String,
    /// Where it appears in the container (default: the same path).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Cgroup permissions, some of `rwm` (default `rwm`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub permissions: String,
}

impl DeviceMapping {
    /// A host path, as opposed to a CDI device name.
    pub fn is_path(&self) -> bool {
        self.source.starts_with('/')
    }
}

/// `logging:`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Logging {
    /// `None`: the engine's default driver (with the options given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// `network_mode:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The node's own network stack: the replica answers on the node's addresses.
    Host,
    /// No network but loopback.
    None,
    /// `service:NAME`: the network namespace of a replica of service NAME of the same
    /// stack on the same node (the scheduler places it beside one).
    Service(String),
    /// `container:NAME`: the network namespace of a container of that name or id on
    /// the node (made outside shoal).
    Container(String),
}

/// CPU options beside `cpus` / `deploy.resources` (Compose's names; the engine's units).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shares: Option<i64>,
    /// Microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<i64>,
    /// Microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<i64>,
    /// Microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rt_period: Option<i64>,
    /// Microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rt_runtime: Option<i64>,
    /// `cpuset`, e.g. `0-1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
}

impl CpuOptions {
    pub fn is_default(&self) -> bool {
        *self == CpuOptions::default()
    }
}

/// `blkio_config`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Blkio {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weight_device: Vec<DeviceWeight>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_read_bps: Vec<DeviceRate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_write_bps: Vec<DeviceRate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_read_iops: Vec<DeviceRate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_write_iops: Vec<DeviceRate>,
}

impl Blkio {
    pub fn is_default(&self) -> bool {
        *self == Blkio::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceWeight {
    pub path: String,
    pub weight: u16,
}

/// A rate limit on a device: bytes per second, or operations per second.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceRate {
    pub path: String,
    pub rate: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_serialize_to_nothing() {
        assert_eq!(
            serde_json::to_string(&ContainerOptions::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn colocation_comes_from_service_modes_only() {
        let o = ContainerOptions {
            network_mode: Some(NetworkMode::Service("vpn".into())),
            ipc: Some("service:db".into()),
            pid: Some("host".into()),
            ..Default::default()
        };
        assert_eq!(o.colocated_with(), vec!["db", "vpn"]);
        let host = ContainerOptions {
            network_mode: Some(NetworkMode::Host),
            ipc: Some("shareable".into()),
            ..Default::default()
        };
        assert!(host.colocated_with().is_empty());
    }

    #[test]
    fn only_paths_are_device_paths() {
        let o = ContainerOptions {
            devices: vec![
                DeviceMapping {
                    source: "/dev/ttyUSB0".into(),
                    ..Default::default()
                },
                DeviceMapping {
                    source: "nvidia.com/gpu=all".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(o.device_paths().collect::<Vec<_>>(), vec!["/dev/ttyUSB0"]);
    }
}
