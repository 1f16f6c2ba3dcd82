//! The service keys passed straight to the engine (issue 14): each is read into
//! `ServiceSpec.container` and reported honored; bad values are errors at file:line.

use std::collections::BTreeMap;

use shoal_controller::compose::{load, render, Disposition, LoadOptions, Loaded};
use shoal_proto::container::*;
use shoal_proto::spec::{DependencyCondition, MountKind};

struct Scratch(tempdir_lite::Dir);

mod tempdir_lite {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let p = std::env::temp_dir().join(format!(
                "shoal-compose-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Scratch {
    fn with(tag: &str, compose: &str) -> Scratch {
        let d = tempdir_lite::Dir::new(tag);
        std::fs::write(d.0.join("compose.yaml"), compose).unwrap();
        Scratch(d)
    }

    fn opts(&self) -> LoadOptions {
        LoadOptions {
            files: vec![self.0 .0.join("compose.yaml")],
            project_name: Some("opts".into()),
            ..Default::default()
        }
    }

    fn ok(&self) -> Loaded {
        load(&self.opts()).unwrap_or_else(|e| panic!("should load:\n{e}"))
    }

    /// The errors as `LINE:COL: KEY: MESSAGE`.
    fn errors(&self) -> Vec<String> {
        match load(&self.opts()) {
            Ok(l) => panic!("should fail, loaded {:#?}", l.stack),
            Err(e) => e
                .diagnostics
                .iter()
                .map(|d| {
                    format!(
                        "{}:{}: {}: {}",
                        d.line.unwrap_or(0),
                        d.column.unwrap_or(0),
                        d.key,
                        d.message
                    )
                })
                .collect(),
        }
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const ALL: &str = r#"
services:
  app:
    image: busybox
    privileged: true
    devices:
      - /dev/ttyUSB0
      - /dev/ttyUSB1:/dev/zigbee:rw
      - {source: /dev/dri/renderD128, target: /dev/dri/renderD128, permissions: rwm}
      - vendor.com/device=gpu0
    device_cgroup_rules: ["c 188:* rmw"]
    shm_size: 256m
    sysctls: {net.core.somaxconn: 1024}
    security_opt: [no-new-privileges:true]
    cap_drop: [NET_RAW]
    read_only: true
    ipc: shareable
    pid: host
    userns_mode: host
    cgroup: private
    cgroup_parent: /shoal
    group_add: [audio, 1234]
    dns: [192.0.2.1, 192.0.2.2]
    dns_search: lan
    dns_opt: [ndots:2]
    extra_hosts: ["db.lan:10.0.0.5"]
    hostname: app-host
    domainname: example.lan
    mac_address: 02:42:ac:11:00:99
    logging:
      driver: json-file
      options: {max-size: 10m, max-file: 3}
    runtime: runc
    oom_score_adj: -500
    oom_kill_disable: true
    mem_swappiness: 10
    memswap_limit: 1g
    pids_limit: 64
    cpu_shares: 512
    cpu_period: 100000
    cpu_quota: 50ms
    cpu_rt_period: 1000000
    cpu_rt_runtime: 950000
    cpuset: 0-1
    blkio_config:
      weight: 300
      weight_device: [{path: /dev/sda, weight: 400}]
      device_read_bps: [{path: /dev/sda, rate: 12mb}]
      device_write_bps: [{path: /dev/sda, rate: 1024k}]
      device_read_iops: [{path: /dev/sda, rate: 120}]
      device_write_iops: [{path: /dev/sda, rate: 30}]
    storage_opt: {size: 1G}
    annotations: {com.example.k: v}
    labels: {team: blue}
    stop_signal: SIGUSR1
    tty: true
    stdin_open: true
    platform: linux/arm64
  host:
    image: busybox
    network_mode: host
    uts: host
    ports: ["8080:8080"]
  side:
    image: busybox
    network_mode: service:app
    ipc: service:app
"#;

#[test]
fn every_container_key_is_read_and_honored() {
    let s = Scratch::with("all", ALL);
    let l = s.ok();
    let app = &l.stack.services["app"];
    let c = &app.container;
    assert!(c.privileged);
    assert_eq!(
        c.devices,
        vec![
            DeviceMapping {
                source: "/dev/ttyUSB0".into(),
                ..Default::default()
            },
            DeviceMapping {
                source: "/dev/ttyUSB1".into(),
                target: "/dev/zigbee".into(),
                permissions: "rw".into()
            },
            DeviceMapping {
                source: "/dev/dri/renderD128".into(),
                target: "/dev/dri/renderD128".into(),
                permissions: "rwm".into()
            },
            DeviceMapping {
                source: "vendor.com/device=gpu0".into(),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        c.device_paths().collect::<Vec<_>>(),
        vec!["/dev/ttyUSB0", "/dev/ttyUSB1", "/dev/dri/renderD128"]
    );
    assert_eq!(c.device_cgroup_rules, vec!["c 188:* rmw"]);
    assert_eq!(c.shm_size, Some(256 << 20));
    assert_eq!(c.sysctls, map(&[("net.core.somaxconn", "1024")]));
    assert_eq!(c.security_opt, vec!["no-new-privileges:true"]);
    assert_eq!(app.cap_drop, vec!["NET_RAW"]);
    assert!(c.read_only);
    assert_eq!(c.ipc.as_deref(), Some("shareable"));
    assert_eq!(c.pid.as_deref(), Some("host"));
    assert_eq!(c.userns_mode.as_deref(), Some("host"));
    assert_eq!(c.cgroup.as_deref(), Some("private"));
    assert_eq!(c.cgroup_parent.as_deref(), Some("/shoal"));
    assert_eq!(c.group_add, vec!["audio", "1234"]);
    assert_eq!(c.dns, vec!["192.0.2.1", "192.0.2.2"]);
    assert_eq!(c.dns_search, vec!["lan"]);
    assert_eq!(c.dns_opt, vec!["ndots:2"]);
    assert_eq!(app.extra_hosts, vec!["db.lan:10.0.0.5"]);
    assert_eq!(app.hostname.as_deref(), Some("app-host"));
    assert_eq!(c.domainname.as_deref(), Some("example.lan"));
    assert_eq!(c.mac_address.as_deref(), Some("02:42:ac:11:00:99"));
    assert_eq!(
        c.logging,
        Some(Logging {
            driver: Some("json-file".into()),
            options: map(&[("max-size", "10m"), ("max-file", "3")]),
        })
    );
    assert_eq!(c.runtime.as_deref(), Some("runc"));
    assert_eq!(c.oom_score_adj, Some(-500));
    assert_eq!(c.oom_kill_disable, Some(true));
    assert_eq!(c.mem_swappiness, Some(10));
    assert_eq!(c.memswap_limit, Some(1 << 30));
    assert_eq!(app.resources.limits.pids, Some(64));
    assert_eq!(
        c.cpu,
        CpuOptions {
            shares: Some(512),
            period: Some(100_000),
            quota: Some(50_000),
            rt_period: Some(1_000_000),
            rt_runtime: Some(950_000),
            cpuset: Some("0-1".into()),
        }
    );
    let sda = |rate| DeviceRate {
        path: "/dev/sda".into(),
        rate,
    };
    assert_eq!(
        c.blkio,
        Blkio {
            weight: Some(300),
            weight_device: vec![DeviceWeight {
                path: "/dev/sda".into(),
                weight: 400
            }],
            device_read_bps: vec![sda(12 << 20)],
            device_write_bps: vec![sda(1 << 20)],
            device_read_iops: vec![sda(120)],
            device_write_iops: vec![sda(30)],
        }
    );
    assert_eq!(c.storage_opt, map(&[("size", "1G")]));
    assert_eq!(c.annotations, map(&[("com.example.k", "v")]));
    assert_eq!(app.labels, map(&[("team", "blue")]));
    assert_eq!(app.stop_signal.as_deref(), Some("SIGUSR1"));
    assert!(c.tty && c.stdin_open);
    assert_eq!(c.platform.as_deref(), Some("linux/arm64"));
    assert_eq!(c.network_mode, None);

    let host = &l.stack.services["host"];
    assert_eq!(host.container.network_mode, Some(NetworkMode::Host));
    assert_eq!(host.container.uts.as_deref(), Some("host"));
    assert!(host.ports.is_empty(), "host networking publishes nothing");
    assert!(host.networks.is_empty());

    let side = &l.stack.services["side"];
    assert_eq!(
        side.container.network_mode,
        Some(NetworkMode::Service("app".into()))
    );
    assert_eq!(side.container.ipc.as_deref(), Some("service:app"));
    assert_eq!(
        side.depends_on["app"].condition,
        DependencyCondition::ServiceStarted,
        "sharing app's namespaces starts after it, as Compose does"
    );

    // `shoal config` lists every key as honored (ports of the host service excepted).
    let text = render(&l);
    let mut keys: Vec<&str> = ALL
        .lines()
        .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
        .filter_map(|l| l.trim().split(':').next())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        for k in l.keys.iter().filter(|k| k.key == key) {
            if k.service == "host" && key == "ports" {
                assert!(matches!(k.disposition, Disposition::Ignored(_)));
            } else {
                assert_eq!(k.disposition, Disposition::Honored, "{}.{key}", k.service);
            }
        }
        assert!(
            key == "ports"
                || text
                    .lines()
                    .any(|line| line.starts_with(&format!("#   {key} "))
                        && line.ends_with("honored")),
            "shoal config must list {key} as honored:\n{text}"
        );
    }
    let warned: Vec<&str> = l.diagnostics.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(warned, vec!["services.host.ports"]);
}

#[test]
fn bad_values_are_errors_at_their_line() {
    let s = Scratch::with(
        "bad",
        r#"services:
  app:
    image: busybox
    devices: [ttyUSB0, "/dev/a:/dev/b:rw:x", {target: /dev/x}, "/dev/c:relative"]
    device_cgroup_rules: ["c 188 rwm"]
    shm_size: lots
    ipc: sideways
    cgroup: shared
    mac_address: 02:42
    oom_score_adj: 5000
    mem_swappiness: 101
    platform: arm64
    network_mode: bridge2
    blkio_config: {weight: 5}
"#,
    );
    let errors = s.errors();
    let want = [
        ("4:", "services.app.devices[0]", "invalid device `ttyUSB0`"),
        ("4:", "services.app.devices[1]", "too many `:`"),
        (
            "4:",
            "services.app.devices[2]",
            "missing required key `source`",
        ),
        ("4:", "services.app.devices[3]", "must be absolute"),
        (
            "5:",
            "services.app.device_cgroup_rules[0]",
            "invalid device cgroup rule",
        ),
        ("6:", "services.app.shm_size", "invalid size `lots`"),
        ("7:", "services.app.ipc", "invalid mode `sideways`"),
        ("8:", "services.app.cgroup", ""),
        ("9:", "services.app.mac_address", "invalid MAC address"),
        ("10:", "services.app.oom_score_adj", "at most 1000"),
        ("11:", "services.app.mem_swappiness", "between 0 and 100"),
        ("12:", "services.app.platform", "invalid platform `arm64`"),
        (
            "13:",
            "services.app.network_mode",
            "invalid network_mode `bridge2`",
        ),
        (
            "14:",
            "services.app.blkio_config.weight",
            "between 10 and 1000",
        ),
    ];
    for (line, key, words) in want {
        assert!(
            errors.iter().any(|e| e.starts_with(line)
                && e.contains(&format!(" {key}: "))
                && e.contains(words)),
            "no error {line} {key} ({words}) in:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn sharing_a_network_refuses_a_network_of_its_own() {
    let s = Scratch::with(
        "shared",
        r#"services:
  vpn:
    image: busybox
  app:
    image: busybox
    network_mode: service:vpn
    ports: ["80:80"]
    hostname: app
    dns: [1.1.1.1]
  lonely:
    image: busybox
    network_mode: service:nobody
  selfish:
    image: busybox
    pid: service:selfish
"#,
    );
    let errors = s.errors();
    for (key, words) in [
        ("services.app.ports", "conflicts with network_mode"),
        ("services.app.hostname", "conflicts with network_mode"),
        ("services.app.dns", "conflicts with network_mode"),
        (
            "services.lonely.depends_on.nobody",
            "undefined service `nobody`",
        ),
        ("services.selfish", "cannot share its own namespaces"),
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!(" {key}: ")) && e.contains(words)),
            "no error {key} ({words}) in:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn relative_bind_mounts_are_marked_and_absolute_ones_are_not() {
    let s = Scratch::with(
        "binds",
        r#"services:
  app:
    image: busybox
    volumes:
      - ./data:/data
      - /srv/abs:/abs
      - type: bind
        source: ../up
        target: /up
      - type: bind
        source: /srv/long
        target: /long
"#,
    );
    let l = s.ok();
    let marks: Vec<(MountKind, bool)> = l.stack.services["app"]
        .volumes
        .iter()
        .map(|m| (m.kind, m.relative))
        .collect();
    assert_eq!(
        marks,
        vec![
            (MountKind::Bind, true),
            (MountKind::Bind, false),
            (MountKind::Bind, true),
            (MountKind::Bind, false)
        ]
    );
    let data = &l.stack.services["app"].volumes[0];
    assert!(
        data.source.as_deref().unwrap().ends_with("/data"),
        "resolved against the file's directory: {data:?}"
    );
}
