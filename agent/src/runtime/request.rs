//! The pure translation of a service spec plus a task's identity into a container request.

use std::collections::BTreeMap;

use shoal_proto::container::{ContainerOptions, NetworkMode};
use shoal_proto::labels;
use shoal_proto::spec::{MountKind, PortMode, Protocol, ServiceSpec};

/// Which task a container is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskIdentity {
    pub task_id: String,
    pub stack: String,
    pub service: String,
    pub slot: u64,
    pub generation: u64,
}

/// Everything the runtime needs to create one container, in shoal's words.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerRequest {
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub healthcheck: Option<HealthcheckRequest>,
    pub stop_signal: Option<String>,
    /// Seconds between the stop signal and SIGKILL when Docker stops it on its own.
    pub stop_timeout_secs: i64,
    pub init: Option<bool>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Path to mount options (`tmpfs:` entries).
    pub tmpfs: BTreeMap<String, String>,
    pub ulimits: Vec<UlimitRequest>,
    /// `HOST:IP`.
    pub extra_hosts: Vec<String>,
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub pids_limit: Option<i64>,
    pub mounts: Vec<MountRequest>,
    /// Host-mode published ports; ingress ports are served by the agent's proxy instead.
    pub ports: Vec<PortBinding>,
    /// The Docker network the container is created on: its service's first network.
    pub network: String,
    /// Names it answers to on that network (Docker's embedded DNS). Empty when the
    /// agent's own DNS answers the names (`dns`), which knows only ready replicas.
    pub aliases: Vec<String>,
    /// The service's other networks, connected after create and before start (API 1.41
    /// takes only one network at create).
    pub extra_networks: Vec<NetworkEndpoint>,
    /// DNS servers (the agent's, on the first network's gateway); empty: Docker's default.
    pub dns: Vec<String>,
    /// GPUs handed to the container (`HostConfig.DeviceRequests`); see [`with_gpus`].
    pub device_requests: Vec<DeviceRequest>,
    /// The engine's network mode when the container is not on the cluster's networks:
    /// `host`, `none`, `container:NAME_OR_ID`, or `service:NAME`, which the supervisor
    /// resolves to `container:ID` of a replica of that service on this node before the
    /// create. `None`: [`ContainerRequest::network`] and its extra networks.
    pub network_mode: Option<String>,
    /// The service's other container options, as the spec has them (`ipc`/`pid` of the
    /// form `service:NAME` are resolved by the supervisor like `network_mode`).
    pub options: ContainerOptions,
}

/// A network a container is connected to besides the one it is created on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkEndpoint {
    pub network: String,
    /// As [`ContainerRequest::aliases`], on this network.
    pub aliases: Vec<String>,
}

/// One Docker device request, as `docker run --gpus` makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    pub driver: String,
    pub device_ids: Vec<String>,
    /// Alternatives of capability sets; Docker picks a driver that has every capability
    /// of one set.
    pub capabilities: Vec<Vec<String>>,
}

/// The environment variable the NVIDIA runtime reads to pick the visible GPUs.
pub const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";

/// `req` with the GPUs the scheduler assigned (`gpus`, UUIDs) passed to Docker as one
/// `DeviceRequest { driver, device_ids: gpus, capabilities: [caps] }` (driver and
/// capabilities from the service's first GPU request; default `nvidia` and `[gpu]`), and
/// `NVIDIA_VISIBLE_DEVICES=<uuids>` set to the same GPUs (replacing any value in the
/// spec's environment, so the two never disagree). Without GPUs, `req` is unchanged.
pub fn with_gpus(
    mut req: ContainerRequest,
    spec: &ServiceSpec,
    gpus: &[String],
) -> ContainerRequest {
    if gpus.is_empty() {
        return req;
    }
    let first = spec.gpus.first();
    let driver = first
        .and_then(|g| g.driver.clone())
        .unwrap_or_else(|| "nvidia".to_string());
    let mut caps = first.map(|g| g.capabilities.clone()).unwrap_or_default();
    if !caps.iter().any(|c| c == "gpu") {
        caps.insert(0, "gpu".to_string());
    }
    req.device_requests.push(DeviceRequest {
        driver,
        device_ids: gpus.to_vec(),
        capabilities: vec![caps],
    });
    let prefix = format!("{NVIDIA_VISIBLE_DEVICES}=");
    req.env.retain(|e| !e.starts_with(&prefix));
    req.env.push(format!("{prefix}{}", gpus.join(",")));
    req
}

/// How the assigned GPUs are named to Docker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GpuDeviceMode {
    /// `DeviceRequest {driver: nvidia, device_ids: UUIDs}` and `NVIDIA_VISIBLE_DEVICES`
    /// ([`with_gpus`]): the NVIDIA container runtime's way.
    #[default]
    Nvidia,
    /// CDI device names, `KIND=UUID` (e.g. `nvidia.com/gpu=GPU-…`) in a `cdi` device
    /// request (Docker 25+ with CDI specs generated by `nvidia-ctk cdi generate`); the
    /// CDI spec sets the container's environment itself.
    Cdi(String),
}

/// `req` with `gpus` named to Docker as `mode` says.
pub fn with_gpu_devices(
    mut req: ContainerRequest,
    spec: &ServiceSpec,
    gpus: &[String],
    mode: &GpuDeviceMode,
) -> ContainerRequest {
    match mode {
        GpuDeviceMode::Nvidia => with_gpus(req, spec, gpus),
        GpuDeviceMode::Cdi(_) if gpus.is_empty() => req,
        GpuDeviceMode::Cdi(kind) => {
            req.device_requests.push(DeviceRequest {
                driver: "cdi".to_string(),
                device_ids: gpus.iter().map(|g| format!("{kind}={g}")).collect(),
                capabilities: Vec::new(),
            });
            req
        }
    }
}

/// A Docker healthcheck; durations in nanoseconds as Docker wants them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthcheckRequest {
    pub test: Vec<String>,
    pub interval_ns: Option<i64>,
    pub timeout_ns: Option<i64>,
    pub retries: Option<i64>,
    pub start_period_ns: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UlimitRequest {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub kind: MountKind,
    /// Docker volume name or host path; `None` for anonymous volumes and tmpfs.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    pub target: u16,
    pub protocol: Protocol,
    pub host_ip: Option<String>,
    pub host_port: u16,
}

/// The Docker network of the cluster network `key` (`shoal_proto::network`): `shoal-KEY`
/// for a stack's own networks (`shoal-STACK` for its default one), the external
/// network's own name for an external one.
pub fn network_name(key: &str) -> String {
    match shoal_proto::network::external_name(key) {
        Some(name) => docker_safe(name),
        None => format!("shoal-{}", docker_safe(key)),
    }
}

/// `STACK_SERVICE.SLOT.TASK`, with characters Docker refuses in names replaced by `-`.
pub fn container_name(task: &TaskIdentity) -> String {
    let raw = format!(
        "{}_{}.{}.{}",
        task.stack, task.service, task.slot, task.task_id
    );
    let mut name = docker_safe(&raw);
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 's');
    }
    name
}

fn docker_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

/// `req` with its named volumes mounted by their engine names: `names` maps a volume's
/// Compose name (the mount's source in `spec`) to its engine name (the assignment's
/// `docker_name`). Volumes not in `names` keep [`container_request`]'s `STACK_NAME`.
pub fn with_volume_names(
    mut req: ContainerRequest,
    spec: &ServiceSpec,
    names: &BTreeMap<String, String>,
) -> ContainerRequest {
    // `container_request` makes one mount per entry of `spec.volumes`, in order.
    for (mount, m) in req.mounts.iter_mut().zip(&spec.volumes) {
        if m.kind != MountKind::Volume {
            continue;
        }
        if let Some(engine_name) = m.source.as_ref().and_then(|s| names.get(s)) {
            mount.source = Some(engine_name.clone());
        }
    }
    req
}

/// The container for `task` of `spec` on `node`. Pure; unit tested by exact output.
pub fn container_request(task: &TaskIdentity, spec: &ServiceSpec, node: &str) -> ContainerRequest {
    let mut labels_map = spec.labels.clone();
    labels_map.insert(labels::TASK.into(), task.task_id.clone());
    labels_map.insert(labels::STACK.into(), task.stack.clone());
    labels_map.insert(labels::SERVICE.into(), task.service.clone());
    labels_map.insert(labels::SLOT.into(), task.slot.to_string());
    labels_map.insert(labels::NODE.into(), node.to_string());
    labels_map.insert(labels::GENERATION.into(), task.generation.to_string());

    let healthcheck = spec.healthcheck.as_ref().map(|h| {
        if h.disable {
            HealthcheckRequest {
                test: vec!["NONE".into()],
                ..Default::default()
            }
        } else {
            HealthcheckRequest {
                test: h.test.clone(),
                interval_ns: h.interval_ms.map(ms_to_ns),
                timeout_ns: h.timeout_ms.map(ms_to_ns),
                retries: h.retries.map(|r| i64::try_from(r).unwrap_or(i64::MAX)),
                start_period_ns: h.start_period_ms.map(ms_to_ns),
            }
        }
    });

    let tmpfs = spec
        .tmpfs
        .iter()
        .map(|entry| match entry.split_once(':') {
            Some((path, opts)) => (path.to_string(), opts.to_string()),
            None => (entry.clone(), String::new()),
        })
        .collect();

    let mounts = spec
        .volumes
        .iter()
        .map(|m| MountRequest {
            kind: m.kind,
            source: match m.kind {
                MountKind::Volume => m.source.as_ref().map(|s| format!("{}_{}", task.stack, s)),
                MountKind::Bind => m.source.clone(),
                MountKind::Tmpfs => None,
            },
            target: m.target.clone(),
            read_only: m.read_only,
        })
        .collect();

    let ports = spec
        .ports
        .iter()
        .filter(|p| p.mode == PortMode::Host)
        .filter_map(|p| {
            p.published.map(|host_port| PortBinding {
                target: p.target,
                protocol: p.protocol,
                host_ip: p.host_ip.clone(),
                host_port,
            })
        })
        .collect();

    let attached = shoal_proto::network::attachments(&task.stack, spec);
    let endpoint = |a: &shoal_proto::spec::ServiceNetwork| NetworkEndpoint {
        network: network_name(&a.key),
        aliases: std::iter::once(spec.name.clone())
            .chain(a.aliases.iter().filter(|x| **x != spec.name).cloned())
            .collect(),
    };
    let mut endpoints = attached.iter().map(endpoint);
    let first = endpoints.next().unwrap_or_else(|| NetworkEndpoint {
        network: network_name(&task.stack),
        aliases: vec![spec.name.clone()],
    });
    let extra_networks: Vec<NetworkEndpoint> = endpoints.collect();

    ContainerRequest {
        name: container_name(task),
        image: spec.image.clone(),
        labels: labels_map,
        env: spec
            .environment
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        healthcheck,
        stop_signal: spec.stop_signal.clone(),
        stop_timeout_secs: i64::try_from(spec.stop_grace_ms().div_ceil(1000)).unwrap_or(i64::MAX),
        init: spec.init,
        cap_add: spec.cap_add.clone(),
        cap_drop: spec.cap_drop.clone(),
        tmpfs,
        ulimits: spec
            .ulimits
            .iter()
            .map(|(name, u)| UlimitRequest {
                name: name.clone(),
                soft: u.soft,
                hard: u.hard,
            })
            .collect(),
        extra_hosts: spec.extra_hosts.clone(),
        nano_cpus: spec.resources.limits.nano_cpus,
        memory_bytes: spec.resources.limits.memory_bytes,
        pids_limit: spec.resources.limits.pids,
        mounts,
        ports,
        network: first.network,
        aliases: first.aliases,
        extra_networks,
        device_requests: Vec::new(),
        dns: Vec::new(),
        network_mode: spec.container.network_mode.as_ref().map(|m| match m {
            NetworkMode::Host => "host".to_string(),
            NetworkMode::None => "none".to_string(),
            NetworkMode::Service(s) => format!("service:{s}"),
            NetworkMode::Container(c) => format!("container:{c}"),
        }),
        options: ContainerOptions {
            network_mode: None,
            ..spec.container.clone()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::spec::{
        HealthcheckSpec, Limits, MountSpec, PortSpec, Resources, ServiceNetwork, Ulimit,
    };

    fn task() -> TaskIdentity {
        TaskIdentity {
            task_id: "t1abc".into(),
            stack: "shop".into(),
            service: "web".into(),
            slot: 2,
            generation: 7,
        }
    }

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            image: "nginx:1.25".into(),
            command: Some(vec!["nginx".into(), "-g".into(), "daemon off;".into()]),
            entrypoint: Some(vec!["/docker-entrypoint.sh".into()]),
            environment: [("B".to_string(), "2".to_string()), ("A".into(), "1".into())]
                .into_iter()
                .collect(),
            working_dir: Some("/srv".into()),
            user: Some("101:101".into()),
            hostname: Some("web-host".into()),
            labels: [("team".to_string(), "blue".to_string())]
                .into_iter()
                .collect(),
            ports: vec![
                PortSpec {
                    target: 80,
                    published: Some(8080),
                    mode: PortMode::Ingress,
                    ..Default::default()
                },
                PortSpec {
                    target: 443,
                    published: Some(8443),
                    host_ip: Some("127.0.0.1".into()),
                    mode: PortMode::Host,
                    ..Default::default()
                },
                PortSpec {
                    target: 53,
                    published: Some(5353),
                    protocol: Protocol::Udp,
                    mode: PortMode::Host,
                    ..Default::default()
                },
                PortSpec {
                    target: 9000,
                    published: None,
                    mode: PortMode::Host,
                    ..Default::default()
                },
            ],
            volumes: vec![
                MountSpec {
                    kind: MountKind::Volume,
                    source: Some("data".into()),
                    target: "/data".into(),
                    read_only: false,
                    relative: false,
                },
                MountSpec {
                    kind: MountKind::Volume,
                    source: None,
                    target: "/cache".into(),
                    read_only: false,
                    relative: false,
                },
                MountSpec {
                    kind: MountKind::Bind,
                    source: Some("/etc/app".into()),
                    target: "/etc/app".into(),
                    read_only: true,
                    relative: false,
                },
                MountSpec {
                    kind: MountKind::Tmpfs,
                    source: None,
                    target: "/run".into(),
                    read_only: false,
                    relative: false,
                },
            ],
            healthcheck: Some(HealthcheckSpec {
                test: vec!["CMD-SHELL".into(), "wget -q -O- localhost".into()],
                interval_ms: Some(1_500),
                timeout_ms: Some(250),
                retries: Some(4),
                start_period_ms: Some(2_000),
                start_interval_ms: Some(100),
                disable: false,
            }),
            stop_grace_period_ms: Some(2_500),
            stop_signal: Some("SIGQUIT".into()),
            init: Some(true),
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["MKNOD".into()],
            tmpfs: vec!["/tmp:size=64m".into(), "/scratch".into()],
            ulimits: [(
                "nofile".to_string(),
                Ulimit {
                    soft: 1024,
                    hard: 2048,
                },
            )]
            .into_iter()
            .collect(),
            extra_hosts: vec!["db:10.0.0.5".into()],
            resources: Resources {
                limits: Limits {
                    nano_cpus: Some(500_000_000),
                    memory_bytes: Some(64 << 20),
                    pids: Some(100),
                },
                ..Default::default()
            },
            networks: vec![
                ServiceNetwork {
                    name: "default".into(),
                    key: "shop".into(),
                    aliases: vec!["www".into(), "web".into()],
                },
                ServiceNetwork {
                    name: "back".into(),
                    key: "shop.back".into(),
                    aliases: vec!["api".into()],
                },
                ServiceNetwork {
                    name: "shared".into(),
                    key: "ext:shared".into(),
                    aliases: vec![],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn name_follows_docker_rules() {
        assert_eq!(container_name(&task()), "shop_web.2.t1abc");
        let odd = TaskIdentity {
            task_id: "t/1".into(),
            stack: "_my stack".into(),
            ..task()
        };
        assert_eq!(container_name(&odd), "s_my-stack_web.2.t-1");
        assert_eq!(network_name("shop"), "shoal-shop");
    }

    #[test]
    fn labels_are_exact() {
        let req = container_request(&task(), &spec(), "node-a");
        let want: BTreeMap<String, String> = [
            ("io.shoal.task", "t1abc"),
            ("io.shoal.stack", "shop"),
            ("io.shoal.service", "web"),
            ("io.shoal.slot", "2"),
            ("io.shoal.node", "node-a"),
            ("io.shoal.generation", "7"),
            ("team", "blue"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(req.labels, want);
    }

    #[test]
    fn service_labels_cannot_override_shoal_labels() {
        let mut s = spec();
        s.labels.insert("io.shoal.task".into(), "forged".into());
        let req = container_request(&task(), &s, "node-a");
        assert_eq!(req.labels["io.shoal.task"], "t1abc");
    }

    #[test]
    fn only_host_mode_published_ports_are_bound() {
        let req = container_request(&task(), &spec(), "node-a");
        assert_eq!(
            req.ports,
            vec![
                PortBinding {
                    target: 443,
                    protocol: Protocol::Tcp,
                    host_ip: Some("127.0.0.1".into()),
                    host_port: 8443,
                },
                PortBinding {
                    target: 53,
                    protocol: Protocol::Udp,
                    host_ip: None,
                    host_port: 5353,
                },
            ]
        );
    }

    #[test]
    fn mounts_prefix_named_volumes_with_the_stack() {
        let req = container_request(&task(), &spec(), "node-a");
        assert_eq!(
            req.mounts,
            vec![
                MountRequest {
                    kind: MountKind::Volume,
                    source: Some("shop_data".into()),
                    target: "/data".into(),
                    read_only: false,
                },
                MountRequest {
                    kind: MountKind::Volume,
                    source: None,
                    target: "/cache".into(),
                    read_only: false,
                },
                MountRequest {
                    kind: MountKind::Bind,
                    source: Some("/etc/app".into()),
                    target: "/etc/app".into(),
                    read_only: true,
                },
                MountRequest {
                    kind: MountKind::Tmpfs,
                    source: None,
                    target: "/run".into(),
                    read_only: false,
                },
            ]
        );
        assert_eq!(
            req.tmpfs,
            [
                ("/tmp".to_string(), "size=64m".to_string()),
                ("/scratch".into(), String::new())
            ]
            .into_iter()
            .collect()
        );
    }

    #[test]
    fn named_volumes_mount_by_their_engine_names() {
        let names: BTreeMap<String, String> =
            [("data".to_string(), "pgdata-prod".to_string())].into();
        let req = with_volume_names(
            container_request(&task(), &spec(), "node-a"),
            &spec(),
            &names,
        );
        let sources: Vec<Option<&str>> = req.mounts.iter().map(|m| m.source.as_deref()).collect();
        assert_eq!(
            sources,
            vec![Some("pgdata-prod"), None, Some("/etc/app"), None]
        );
        // Without a name from the assignment: STACK_NAME, as before.
        let req = with_volume_names(
            container_request(&task(), &spec(), "node-a"),
            &spec(),
            &BTreeMap::new(),
        );
        assert_eq!(req.mounts[0].source.as_deref(), Some("shop_data"));
    }

    #[test]
    fn healthcheck_durations_are_nanoseconds() {
        let req = container_request(&task(), &spec(), "node-a");
        assert_eq!(
            req.healthcheck,
            Some(HealthcheckRequest {
                test: vec!["CMD-SHELL".into(), "wget -q -O- localhost".into()],
                interval_ns: Some(1_500_000_000),
                timeout_ns: Some(250_000_000),
                retries: Some(4),
                start_period_ns: Some(2_000_000_000),
            })
        );
        let mut s = spec();
        s.healthcheck.as_mut().unwrap().disable = true;
        let req = container_request(&task(), &s, "node-a");
        assert_eq!(req.healthcheck.unwrap().test, vec!["NONE".to_string()]);
    }

    #[test]
    fn process_settings_and_limits_are_carried() {
        let req = container_request(&task(), &spec(), "node-a");
        assert_eq!(req.name, "shop_web.2.t1abc");
        assert_eq!(req.image, "nginx:1.25");
        assert_eq!(req.env, vec!["A=1".to_string(), "B=2".to_string()]);
        assert_eq!(req.cmd.as_deref().unwrap()[2], "daemon off;");
        assert_eq!(req.entrypoint, Some(vec!["/docker-entrypoint.sh".into()]));
        assert_eq!(req.working_dir.as_deref(), Some("/srv"));
        assert_eq!(req.user.as_deref(), Some("101:101"));
        assert_eq!(req.hostname.as_deref(), Some("web-host"));
        assert_eq!(req.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(req.stop_timeout_secs, 3, "2.5 s rounds up");
        assert_eq!(req.init, Some(true));
        assert_eq!(req.cap_add, vec!["NET_ADMIN".to_string()]);
        assert_eq!(req.cap_drop, vec!["MKNOD".to_string()]);
        assert_eq!(
            req.ulimits,
            vec![UlimitRequest {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }]
        );
        assert_eq!(req.extra_hosts, vec!["db:10.0.0.5".to_string()]);
        assert_eq!(req.nano_cpus, Some(500_000_000));
        assert_eq!(req.memory_bytes, Some(64 << 20));
        assert_eq!(req.pids_limit, Some(100));
        assert_eq!(req.network, "shoal-shop");
        assert_eq!(req.aliases, vec!["web".to_string(), "www".to_string()]);
        // The other networks are connected before start, each with its own aliases.
        assert_eq!(
            req.extra_networks,
            vec![
                NetworkEndpoint {
                    network: "shoal-shop.back".into(),
                    aliases: vec!["web".into(), "api".into()],
                },
                NetworkEndpoint {
                    network: "shared".into(),
                    aliases: vec!["web".into()],
                },
            ]
        );
    }

    #[test]
    fn defaults_give_ten_second_stop_timeout_and_no_healthcheck() {
        let s = ServiceSpec {
            name: "job".into(),
            image: "busybox".into(),
            ..Default::default()
        };
        let req = container_request(&task(), &s, "n");
        assert_eq!(req.stop_timeout_secs, 10);
        assert_eq!(req.healthcheck, None);
        assert!(req.ports.is_empty());
        assert_eq!(req.cmd, None);
    }

    #[test]
    fn gpus_take_the_driver_and_capabilities_of_the_request() {
        let mut s = spec();
        s.gpus = vec![shoal_proto::spec::GpuRequest {
            count: Some(1),
            driver: Some("cdi".into()),
            ..Default::default()
        }];
        let cdi = with_gpu_devices(
            container_request(&task(), &s, "n"),
            &s,
            &["GPU-9".into(), "GPU-7".into()],
            &GpuDeviceMode::Cdi("nvidia.com/gpu".into()),
        );
        assert_eq!(
            cdi.device_requests,
            vec![DeviceRequest {
                driver: "cdi".into(),
                device_ids: vec!["nvidia.com/gpu=GPU-9".into(), "nvidia.com/gpu=GPU-7".into()],
                capabilities: Vec::new(),
            }]
        );
        assert!(!cdi
            .env
            .iter()
            .any(|e| e.starts_with(NVIDIA_VISIBLE_DEVICES)));
        let req = with_gpus(container_request(&task(), &s, "n"), &s, &["GPU-9".into()]);
        assert_eq!(
            req.device_requests,
            vec![DeviceRequest {
                driver: "cdi".into(),
                device_ids: vec!["GPU-9".into()],
                capabilities: vec![vec!["gpu".into()]],
            }]
        );
        assert_eq!(
            req.env.last().map(String::as_str),
            Some("NVIDIA_VISIBLE_DEVICES=GPU-9")
        );
    }

    #[test]
    fn container_options_travel_and_network_modes_are_named_for_the_engine() {
        let mut s = spec();
        s.container.privileged = true;
        s.container.shm_size = Some(64 << 20);
        for (mode, want) in [
            (NetworkMode::Host, "host"),
            (NetworkMode::None, "none"),
            (NetworkMode::Service("vpn".into()), "service:vpn"),
            (NetworkMode::Container("c1".into()), "container:c1"),
        ] {
            s.container.network_mode = Some(mode);
            let req = container_request(&task(), &s, "node-a");
            assert_eq!(req.network_mode.as_deref(), Some(want));
            assert!(req.options.privileged);
            assert_eq!(req.options.shm_size, Some(64 << 20));
            assert_eq!(
                req.options.network_mode, None,
                "carried in network_mode only"
            );
        }
        s.container.network_mode = None;
        assert_eq!(container_request(&task(), &s, "node-a").network_mode, None);
    }
}
