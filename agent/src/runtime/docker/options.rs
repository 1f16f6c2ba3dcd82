//! The service's container options ([`ContainerOptions`]) in the engine's create
//! request: one `HostConfig` field each, left `None` when not set so the engine's
//! defaults stay.

use std::collections::BTreeMap;

use bollard::models::{
    DeviceMapping, DeviceRequest, HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig,
    ResourcesBlkioWeightDevice, ThrottleDevice,
};
use shoal_proto::container::{ContainerOptions, DeviceRate};

/// `h` with the service's other container options (each `None` when not set, so the
/// engine's defaults stay).
pub(super) fn with_options(h: HostConfig, o: &ContainerOptions) -> HostConfig {
    let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let some_map = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    };
    let throttle = |rates: &Vec<DeviceRate>| {
        (!rates.is_empty()).then(|| {
            rates
                .iter()
                .map(|r| ThrottleDevice {
                    path: Some(r.path.clone()),
                    rate: Some(i64::try_from(r.rate).unwrap_or(i64::MAX)),
                })
                .collect()
        })
    };
    let devices: Vec<DeviceMapping> = o
        .devices
        .iter()
        .filter(|d| d.is_path())
        .map(|d| DeviceMapping {
            path_on_host: Some(d.source.clone()),
            path_in_container: Some(if d.target.is_empty() {
                d.source.clone()
            } else {
                d.target.clone()
            }),
            cgroup_permissions: Some(if d.permissions.is_empty() {
                "rwm".to_string()
            } else {
                d.permissions.clone()
            }),
        })
        .collect();
    // CDI names (`vendor.com/class=name`) go as a `cdi` device request, as `docker run
    // --device` sends them.
    let cdi: Vec<String> = o
        .devices
        .iter()
        .filter(|d| !d.is_path())
        .map(|d| d.source.clone())
        .collect();
    let mut device_requests = h.device_requests.unwrap_or_default();
    if !cdi.is_empty() {
        device_requests.push(DeviceRequest {
            driver: Some("cdi".to_string()),
            device_ids: Some(cdi),
            ..Default::default()
        });
    }
    HostConfig {
        privileged: o.privileged.then_some(true),
        devices: (!devices.is_empty()).then_some(devices),
        device_requests: (!device_requests.is_empty()).then_some(device_requests),
        device_cgroup_rules: some_vec(&o.device_cgroup_rules),
        shm_size: o.shm_size,
        sysctls: some_map(&o.sysctls),
        security_opt: some_vec(&o.security_opt),
        readonly_rootfs: o.read_only.then_some(true),
        ipc_mode: o.ipc.clone(),
        pid_mode: o.pid.clone(),
        uts_mode: o.uts.clone(),
        userns_mode: o.userns_mode.clone(),
        cgroupns_mode: o.cgroup.as_deref().and_then(|c| match c {
            "host" => Some(HostConfigCgroupnsModeEnum::HOST),
            "private" => Some(HostConfigCgroupnsModeEnum::PRIVATE),
            _ => None,
        }),
        cgroup_parent: o.cgroup_parent.clone(),
        group_add: some_vec(&o.group_add),
        dns_search: some_vec(&o.dns_search),
        dns_options: some_vec(&o.dns_opt),
        log_config: o.logging.as_ref().map(|l| HostConfigLogConfig {
            typ: l.driver.clone(),
            config: some_map(&l.options),
        }),
        runtime: o.runtime.clone(),
        oom_score_adj: o.oom_score_adj,
        oom_kill_disable: o.oom_kill_disable,
        memory_swappiness: o.mem_swappiness,
        memory_swap: o.memswap_limit,
        cpu_shares: o.cpu.shares,
        cpu_period: o.cpu.period,
        cpu_quota: o.cpu.quota,
        cpu_realtime_period: o.cpu.rt_period,
        cpu_realtime_runtime: o.cpu.rt_runtime,
        cpuset_cpus: o.cpu.cpuset.clone(),
        blkio_weight: o.blkio.weight,
        blkio_weight_device: (!o.blkio.weight_device.is_empty()).then(|| {
            o.blkio
                .weight_device
                .iter()
                .map(|w| ResourcesBlkioWeightDevice {
                    path: Some(w.path.clone()),
                    weight: Some(usize::from(w.weight)),
                })
                .collect()
        }),
        blkio_device_read_bps: throttle(&o.blkio.device_read_bps),
        blkio_device_write_bps: throttle(&o.blkio.device_write_bps),
        blkio_device_read_iops: throttle(&o.blkio.device_read_iops),
        blkio_device_write_iops: throttle(&o.blkio.device_write_iops),
        storage_opt: some_map(&o.storage_opt),
        annotations: some_map(&o.annotations),
        ..h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::container::{
        Blkio, CpuOptions, DeviceMapping as Device, DeviceWeight, Logging,
    };

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_option_lands_in_its_host_config_field() {
        let o = ContainerOptions {
            privileged: true,
            devices: vec![
                Device {
                    source: "/dev/ttyUSB0".into(),
                    ..Default::default()
                },
                Device {
                    source: "/dev/sda".into(),
                    target: "/dev/xvda".into(),
                    permissions: "r".into(),
                },
                Device {
                    source: "vendor.com/dev=one".into(),
                    ..Default::default()
                },
            ],
            device_cgroup_rules: vec!["c 188:* rmw".into()],
            shm_size: Some(1 << 27),
            sysctls: map(&[("net.core.somaxconn", "1024")]),
            security_opt: vec!["no-new-privileges:true".into()],
            read_only: true,
            ipc: Some("shareable".into()),
            pid: Some("host".into()),
            uts: Some("host".into()),
            userns_mode: Some("host".into()),
            cgroup: Some("private".into()),
            cgroup_parent: Some("/shoal".into()),
            group_add: vec!["audio".into()],
            dns_search: vec!["lan".into()],
            dns_opt: vec!["ndots:2".into()],
            logging: Some(Logging {
                driver: Some("json-file".into()),
                options: map(&[("max-size", "1m")]),
            }),
            runtime: Some("runc".into()),
            oom_score_adj: Some(300),
            oom_kill_disable: Some(true),
            mem_swappiness: Some(10),
            memswap_limit: Some(-1),
            cpu: CpuOptions {
                shares: Some(512),
                period: Some(100_000),
                quota: Some(50_000),
                rt_period: Some(1_000_000),
                rt_runtime: Some(950_000),
                cpuset: Some("0-1".into()),
            },
            blkio: Blkio {
                weight: Some(300),
                weight_device: vec![DeviceWeight {
                    path: "/dev/sda".into(),
                    weight: 200,
                }],
                device_read_bps: vec![DeviceRate {
                    path: "/dev/sda".into(),
                    rate: 1_048_576,
                }],
                device_write_bps: vec![DeviceRate {
                    path: "/dev/sda".into(),
                    rate: 2_097_152,
                }],
                device_read_iops: vec![DeviceRate {
                    path: "/dev/sda".into(),
                    rate: 100,
                }],
                device_write_iops: vec![DeviceRate {
                    path: "/dev/sda".into(),
                    rate: 200,
                }],
            },
            storage_opt: map(&[("size", "1G")]),
            annotations: map(&[("com.example.k", "v")]),
            ..Default::default()
        };
        let h = with_options(HostConfig::default(), &o);
        assert_eq!(h.privileged, Some(true));
        let devices = h.devices.unwrap();
        assert_eq!(devices.len(), 2, "CDI names are not host devices");
        assert_eq!(
            devices[0].path_in_container.as_deref(),
            Some("/dev/ttyUSB0")
        );
        assert_eq!(devices[0].cgroup_permissions.as_deref(), Some("rwm"));
        assert_eq!(devices[1].path_on_host.as_deref(), Some("/dev/sda"));
        assert_eq!(devices[1].path_in_container.as_deref(), Some("/dev/xvda"));
        assert_eq!(devices[1].cgroup_permissions.as_deref(), Some("r"));
        let cdi = h.device_requests.unwrap();
        assert_eq!(cdi[0].driver.as_deref(), Some("cdi"));
        assert_eq!(
            cdi[0].device_ids,
            Some(vec!["vendor.com/dev=one".to_string()])
        );
        assert_eq!(h.device_cgroup_rules, Some(vec!["c 188:* rmw".to_string()]));
        assert_eq!(h.shm_size, Some(1 << 27));
        assert_eq!(h.sysctls.unwrap()["net.core.somaxconn"], "1024");
        assert_eq!(
            h.security_opt,
            Some(vec!["no-new-privileges:true".to_string()])
        );
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.ipc_mode.as_deref(), Some("shareable"));
        assert_eq!(h.pid_mode.as_deref(), Some("host"));
        assert_eq!(h.uts_mode.as_deref(), Some("host"));
        assert_eq!(h.userns_mode.as_deref(), Some("host"));
        assert_eq!(h.cgroupns_mode, Some(HostConfigCgroupnsModeEnum::PRIVATE));
        assert_eq!(h.cgroup_parent.as_deref(), Some("/shoal"));
        assert_eq!(h.group_add, Some(vec!["audio".to_string()]));
        assert_eq!(h.dns_search, Some(vec!["lan".to_string()]));
        assert_eq!(h.dns_options, Some(vec!["ndots:2".to_string()]));
        let log = h.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.unwrap()["max-size"], "1m");
        assert_eq!(h.runtime.as_deref(), Some("runc"));
        assert_eq!(h.oom_score_adj, Some(300));
        assert_eq!(h.oom_kill_disable, Some(true));
        assert_eq!(h.memory_swappiness, Some(10));
        assert_eq!(h.memory_swap, Some(-1));
        assert_eq!(h.cpu_shares, Some(512));
        assert_eq!(h.cpu_period, Some(100_000));
        assert_eq!(h.cpu_quota, Some(50_000));
        assert_eq!(h.cpu_realtime_period, Some(1_000_000));
        assert_eq!(h.cpu_realtime_runtime, Some(950_000));
        assert_eq!(h.cpuset_cpus.as_deref(), Some("0-1"));
        assert_eq!(h.blkio_weight, Some(300));
        assert_eq!(h.blkio_weight_device.unwrap()[0].weight, Some(200));
        assert_eq!(h.blkio_device_read_bps.unwrap()[0].rate, Some(1_048_576));
        assert_eq!(h.blkio_device_write_bps.unwrap()[0].rate, Some(2_097_152));
        assert_eq!(h.blkio_device_read_iops.unwrap()[0].rate, Some(100));
        assert_eq!(h.blkio_device_write_iops.unwrap()[0].rate, Some(200));
        assert_eq!(h.storage_opt.unwrap()["size"], "1G");
        assert_eq!(h.annotations.unwrap()["com.example.k"], "v");
    }

    #[test]
    fn unset_options_leave_the_engine_defaults() {
        let h = with_options(HostConfig::default(), &ContainerOptions::default());
        assert_eq!(h, HostConfig::default());
    }
}
