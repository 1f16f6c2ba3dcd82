//! Issue 14 end to end on the local engine: a Compose file using every container option
//! is deployed with `shoal up` and the CLI, and each option is checked on the created
//! container (`docker inspect`) and, where it shows, from inside it; and a real
//! PostgreSQL gets its `shm_size` and answers on the node's network (`network_mode: host`).
//!
//! Needs Docker, the test image and `shoal-test/postgres:15` (scripts/test.sh makes them).

use std::time::Duration;

use serde_json::Value;
use shoal_tests::*;

const LONG: Duration = Duration::from_secs(90);

/// A block device of this machine, for `blkio_config` (the engine checks it exists).
fn block_device() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .expect("read /sys/block")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| std::path::Path::new(&format!("/dev/{n}")).exists())
        .collect();
    names.sort();
    let name = names.first().expect("this machine has a block device");
    format!("/dev/{name}")
}

fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("linux/{arch}")
}

fn inspect(id: &str) -> Value {
    let text = docker(&["inspect", id]);
    let v: Value = serde_json::from_str(&text).expect("docker inspect prints JSON");
    v[0].clone()
}

fn exec(id: &str, script: &str) -> (bool, String) {
    let out = std::process::Command::new("docker")
        .args(["exec", id, "sh", "-c", script])
        .output()
        .expect("docker exec");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// A DNS server on 127.0.0.1 answering every A question with 192.0.2.99, standing in for
/// a service's own upstream resolver (`dns:`); stops when the test process ends.
fn fake_upstream() -> u16 {
    use shoal_agent::net::dns::{answer, parse_query};
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the fake upstream");
    let port = socket.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            if let Some(q) = parse_query(&buf[..len]) {
                let reply = answer(&buf[..len], &q, &["192.0.2.99".parse().unwrap()]);
                let _ = socket.send_to(&reply, from);
            }
        }
    });
    port
}

fn running_container(up: &ShoalUp, stack: &str, service: &str) -> Option<String> {
    up.ps(stack)
        .iter()
        .find(|r| r["service"] == service && (r["state"] == "running" || r["state"] == "healthy"))
        .and_then(|r| r["container"].as_str().map(str::to_string))
        .filter(|c| !c.is_empty())
}

#[test]
fn every_container_option_reaches_the_engine() {
    ensure_test_image();
    let up = ShoalUp::start("e2e-opts");
    let dir = tempfile::tempdir().unwrap();
    let blk = block_device();
    let cgroup_parent = if docker(&["info", "--format", "{{.CgroupDriver}}"]).trim() == "systemd" {
        "shoal-test.slice"
    } else {
        "/shoal-test"
    };
    let port = free_port();
    let upstream = fake_upstream();
    let compose = format!(
        r#"name: opts
services:
  all:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "exec sleep 600"]
    init: true
    devices:
      - /dev/null:/dev/shoal-null:rw
      - {{source: /dev/zero, target: /dev/shoal-zero, permissions: r}}
    device_cgroup_rules: ["c 1:5 r"]
    shm_size: 96m
    sysctls: {{net.core.somaxconn: 1024}}
    security_opt: [no-new-privileges:true]
    cap_drop: [NET_RAW]
    read_only: true
    tmpfs: [/tmp]
    ipc: shareable
    userns_mode: host
    cgroup: private
    cgroup_parent: {cgroup_parent}
    group_add: ["1234"]
    dns_search: [example.internal]
    dns_opt: ["ndots:2"]
    extra_hosts: ["db.example:10.0.0.5"]
    hostname: opts-host
    domainname: example.internal
    mac_address: "02:42:ac:11:00:99"
    logging:
      driver: json-file
      options: {{max-size: 1m, max-file: "2"}}
    runtime: runc
    oom_score_adj: 300
    oom_kill_disable: true
    mem_limit: 256m
    mem_swappiness: 10
    memswap_limit: 512m
    pids_limit: 64
    cpu_shares: 512
    cpu_period: 100000
    cpu_quota: 50000
    cpuset: "0"
    blkio_config:
      device_read_bps: [{{path: {blk}, rate: 10mb}}]
      device_write_iops: [{{path: {blk}, rate: 100}}]
    ulimits: {{nofile: {{soft: 1000, hard: 2000}}}}
    labels: {{team: blue}}
    stop_signal: SIGUSR1
    stop_grace_period: 1s
    tty: true
    stdin_open: true
    platform: {platform}
    deploy:
      placement:
        constraints: [node.role == manager]
  hosty:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo host-net > /www/index.html && exec httpd -f -p {port} -h /www"]
    network_mode: host
    pid: host
    uts: host
    stop_grace_period: 1s
  asker:
    image: {TEST_IMAGE}
    command: ["sleep", "600"]
    dns: ["127.0.0.1:{upstream}"]
    stop_grace_period: 1s
  side:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "exec sleep 600"]
    network_mode: service:all
    ipc: service:all
    stop_grace_period: 1s
"#,
        platform = platform()
    );
    std::fs::write(dir.path().join("compose.yaml"), &compose).unwrap();

    // `shoal config` lists every key as honored.
    let config = up.shoal_in(dir.path(), &["config", "-c", "compose.yaml"]);
    let text = String::from_utf8_lossy(&config.stdout).to_string();
    assert!(config.status.success(), "config: {}", self::text(&config));
    for key in [
        "devices",
        "device_cgroup_rules",
        "shm_size",
        "sysctls",
        "security_opt",
        "read_only",
        "ipc",
        "userns_mode",
        "cgroup",
        "cgroup_parent",
        "group_add",
        "dns",
        "dns_search",
        "dns_opt",
        "domainname",
        "mac_address",
        "logging",
        "runtime",
        "oom_score_adj",
        "oom_kill_disable",
        "mem_swappiness",
        "memswap_limit",
        "cpu_shares",
        "cpu_period",
        "cpu_quota",
        "cpuset",
        "blkio_config",
        "tty",
        "stdin_open",
        "platform",
        "network_mode",
        "pid",
        "uts",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("#   {key} ")) && l.ends_with("honored")),
            "config must list {key} as honored:\n{text}"
        );
    }

    let out = up.shoal_in(dir.path(), &["deploy", "-c", "compose.yaml"]);
    assert!(
        out.status.success(),
        "deploy: {}\n{}",
        self::text(&out),
        up.log()
    );
    let all = eventually(LONG, "all running", || {
        running_container(&up, "opts", "all")
    });
    let side = eventually(LONG, "side running", || {
        running_container(&up, "opts", "side")
    });
    let hosty = eventually(LONG, "hosty running", || {
        running_container(&up, "opts", "hosty")
    });

    let c = inspect(&all);
    let h = &c["HostConfig"];
    let devices = h["Devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 2, "{h}");
    assert_eq!(devices[0]["PathOnHost"], "/dev/null");
    assert_eq!(devices[0]["PathInContainer"], "/dev/shoal-null");
    assert_eq!(devices[0]["CgroupPermissions"], "rw");
    assert_eq!(devices[1]["PathInContainer"], "/dev/shoal-zero");
    assert_eq!(devices[1]["CgroupPermissions"], "r");
    assert_eq!(h["DeviceCgroupRules"][0], "c 1:5 r");
    assert_eq!(h["ShmSize"], 96 << 20);
    assert_eq!(h["Sysctls"]["net.core.somaxconn"], "1024");
    assert_eq!(h["SecurityOpt"][0], "no-new-privileges:true");
    assert_eq!(h["CapDrop"][0], "NET_RAW");
    assert_eq!(h["ReadonlyRootfs"], true);
    assert_eq!(h["IpcMode"], "shareable");
    assert_eq!(h["UsernsMode"], "host");
    assert_eq!(h["CgroupnsMode"], "private");
    assert_eq!(h["CgroupParent"], cgroup_parent);
    assert_eq!(h["GroupAdd"][0], "1234");
    assert_eq!(h["DnsSearch"][0], "example.internal");
    assert_eq!(h["DnsOptions"][0], "ndots:2");
    assert_eq!(h["ExtraHosts"][0], "db.example:10.0.0.5");
    assert_eq!(h["LogConfig"]["Type"], "json-file");
    assert_eq!(h["LogConfig"]["Config"]["max-size"], "1m");
    assert_eq!(h["LogConfig"]["Config"]["max-file"], "2");
    assert_eq!(h["Runtime"], "runc");
    assert_eq!(h["OomScoreAdj"], 300);
    assert_eq!(h["OomKillDisable"], true);
    assert_eq!(h["Memory"], 256 << 20);
    assert_eq!(h["MemorySwappiness"], 10);
    assert_eq!(h["MemorySwap"], 512 << 20);
    assert_eq!(h["PidsLimit"], 64);
    assert_eq!(h["CpuShares"], 512);
    assert_eq!(h["CpuPeriod"], 100_000);
    assert_eq!(h["CpuQuota"], 50_000);
    assert_eq!(h["CpusetCpus"], "0");
    assert_eq!(h["BlkioDeviceReadBps"][0]["Path"], blk.as_str());
    assert_eq!(h["BlkioDeviceReadBps"][0]["Rate"], 10 << 20);
    assert_eq!(h["BlkioDeviceWriteIOps"][0]["Rate"], 100);
    assert_eq!(h["Init"], true);
    assert_eq!(h["Ulimits"][0]["Name"], "nofile");
    assert_eq!(h["Ulimits"][0]["Hard"], 2000);
    let cfg = &c["Config"];
    assert_eq!(cfg["Hostname"], "opts-host");
    assert_eq!(cfg["Domainname"], "example.internal");
    assert_eq!(cfg["Labels"]["team"], "blue");
    assert_eq!(cfg["StopSignal"], "SIGUSR1");
    assert_eq!(cfg["Tty"], true);
    assert_eq!(cfg["OpenStdin"], true);

    // `shoal up` runs the controller on the node: it is a manager.
    assert_eq!(c["Config"]["Labels"]["io.shoal.node"], "e2e-opts");

    // From inside.
    let inside = |script: &str| {
        let (ok, out) = exec(&all, script);
        assert!(ok, "`{script}` failed in the container: {out}");
        out
    };
    assert_eq!(inside("cat /proc/sys/net/core/somaxconn"), "1024");
    assert!(inside("grep ' /dev/shm ' /proc/mounts").contains("size=98304k"));
    assert!(!exec(&all, "touch /rootfs-is-writable").0, "read_only");
    inside("touch /tmp/tmpfs-is-writable");
    assert!(inside("id -G").split_whitespace().any(|g| g == "1234"));
    assert_eq!(
        inside("cat /proc/sys/kernel/domainname"),
        "example.internal"
    );
    let resolv = inside("cat /etc/resolv.conf");
    assert!(
        resolv.contains("example.internal") && resolv.contains("ndots:2"),
        "{resolv}"
    );
    assert!(inside("cat /etc/hosts").contains("db.example"));
    assert!(inside("ls -l /dev/shoal-null").starts_with('c'));
    let mac = inside("cat /sys/class/net/eth0/address");
    assert_eq!(mac, "02:42:ac:11:00:99");

    // `network_mode: service:all` and `ipc: service:all`: the same namespaces.
    let s = inspect(&side);
    let all_id = c["Id"].as_str().unwrap().to_string();
    assert_eq!(
        s["HostConfig"]["NetworkMode"],
        format!("container:{all_id}")
    );
    assert_eq!(s["HostConfig"]["IpcMode"], format!("container:{all_id}"));
    let (ok, side_mac) = exec(&side, "cat /sys/class/net/eth0/address");
    assert!(ok && side_mac == mac, "side sees {side_mac}");

    // `dns:` is the container's upstream for other names; cluster names still resolve.
    let asker = eventually(LONG, "asker running", || {
        running_container(&up, "opts", "asker")
    });
    let outside = eventually(
        LONG,
        "the outside name from the service's own resolver",
        || {
            let (ok, out) = exec(&asker, "nslookup outside.example");
            (ok && out.contains("192.0.2.99")).then_some(out)
        },
    );
    assert!(outside.contains("192.0.2.99"));
    let (ok, inside_name) = exec(&asker, "nslookup all");
    assert!(ok && !inside_name.contains("192.0.2.99"), "{inside_name}");

    // `network_mode: host` (with pid and uts): answers on the node's ports.
    let hc = inspect(&hosty);
    assert_eq!(hc["HostConfig"]["NetworkMode"], "host");
    assert_eq!(hc["HostConfig"]["PidMode"], "host");
    assert_eq!(hc["HostConfig"]["UTSMode"], "host");
    let body = eventually(LONG, "the host-networked replica to answer", || {
        http_get(port, "/")
    });
    assert!(body.contains("host-net"), "{body}");
    drop(up);
}

#[test]
fn options_an_engine_refuses_fail_the_task_with_its_words() {
    ensure_test_image();
    let up = ShoalUp::start("e2e-opts-refused");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        format!(
            r#"name: refused
services:
  annotated:
    image: {TEST_IMAGE}
    command: ["sleep", "600"]
    annotations: {{com.example.k: v}}
    restart: "no"
  privileged:
    image: {TEST_IMAGE}
    command: ["sleep", "600"]
    privileged: true
    restart: "no"
  sized:
    image: {TEST_IMAGE}
    command: ["sleep", "600"]
    storage_opt: {{size: 1G}}
    restart: "no"
"#
        ),
    )
    .unwrap();
    let out = up.shoal_in(dir.path(), &["deploy", "-c", "compose.yaml", "--detach"]);
    assert!(out.status.success(), "deploy: {}", text(&out));
    let api: f64 = docker(&["version", "--format", "{{.Server.APIVersion}}"])
        .trim()
        .parse()
        .expect("API version");
    if api >= 1.43 {
        let id = eventually(LONG, "annotated running", || {
            running_container(&up, "refused", "annotated")
        });
        assert_eq!(
            inspect(&id)["HostConfig"]["Annotations"]["com.example.k"],
            "v"
        );
    } else {
        let error = eventually(LONG, "annotated to fail", || {
            up.ps("refused")
                .iter()
                .find(|r| r["service"] == "annotated" && r["state"] == "failed")
                .map(|r| r["error"].as_str().unwrap_or_default().to_string())
        });
        assert!(
            error.contains("annotations need Docker API 1.43"),
            "{error}"
        );
    }
    // A privileged container: created as asked; it runs where the machine lets the
    // engine give every capability (this sandbox does not: runc says so).
    let privileged = eventually(LONG, "privileged to run or fail", || {
        up.ps("refused").into_iter().find(|r| {
            r["service"] == "privileged" && (r["state"] == "running" || r["state"] == "failed")
        })
    });
    let id = privileged["container"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "the container was created: {privileged}");
    assert_eq!(inspect(id)["HostConfig"]["Privileged"], true);
    if privileged["state"] == "failed" {
        let error = privileged["error"].as_str().unwrap_or_default();
        assert!(error.contains("caps"), "{error}");
    }
    // Whatever the engine says of storage_opt, it was asked: it applied the size or
    // refused it in its own words.
    let sized = eventually(LONG, "sized to run or fail", || {
        up.ps("refused").into_iter().find(|r| {
            r["service"] == "sized" && (r["state"] == "running" || r["state"] == "failed")
        })
    });
    if sized["state"] == "running" {
        let id = sized["container"].as_str().unwrap();
        assert_eq!(inspect(id)["HostConfig"]["StorageOpt"]["size"], "1G");
    } else {
        let error = sized["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(error.contains("storage"), "{error}");
    }
    drop(up);
}

/// Real software (Debian's PostgreSQL 15, `shoal-test/postgres:15` from
/// scripts/build-postgres-image.sh, which scripts/test.sh runs): a database that asks for
/// `shm_size` gets it, and with `network_mode: host` it answers on the node's own port.
#[test]
fn a_real_postgresql_gets_its_shm_size_and_answers_on_the_nodes_network() {
    const PG_IMAGE: &str = "shoal-test/postgres:15";
    let up = ShoalUp::start("e2e-opts-pg");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("compose.yaml"),
        format!(
            r#"name: pgopts
services:
  db:
    image: {PG_IMAGE}
    user: postgres
    network_mode: host
    shm_size: 256m
    command:
      - sh
      - -c
      - |
        /usr/lib/postgresql/15/bin/initdb -D /tmp/data -U postgres --auth=trust >/dev/null &&
        exec /usr/lib/postgresql/15/bin/postgres -D /tmp/data -c listen_addresses=127.0.0.1 -c port={port} -k /tmp
    stop_grace_period: 10s
    stop_signal: SIGINT
    healthcheck:
      test: ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", "{port}", "-U", "postgres"]
      interval: 1s
      timeout: 3s
      retries: 30
"#
        ),
    )
    .unwrap();
    let out = up.shoal_in(dir.path(), &["deploy", "-c", "compose.yaml"]);
    assert!(out.status.success(), "deploy: {}\n{}", text(&out), up.log());
    let db = eventually(LONG, "db running", || {
        running_container(&up, "pgopts", "db")
    });
    assert_eq!(inspect(&db)["HostConfig"]["ShmSize"], 256 << 20);
    let (ok, mounts) = exec(&db, "grep ' /dev/shm ' /proc/mounts");
    assert!(ok && mounts.contains("size=262144k"), "{mounts}");
    // PostgreSQL's dynamic shared memory lives in /dev/shm: a parallel query uses it.
    let (ok, rows) = exec(
        &db,
        &format!(
            "psql -h 127.0.0.1 -p {port} -U postgres -tAc \"set max_parallel_workers_per_gather = 2; set parallel_setup_cost = 0; set parallel_tuple_cost = 0; set min_parallel_table_scan_size = 0; select count(*) from generate_series(1, 200000)\""
        ),
    );
    // Each `set` prints its tag; the count is the last line.
    assert!(ok && rows.lines().last() == Some("200000"), "{rows}");
    // From outside the container, on the node's own network.
    let ready = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "host", PG_IMAGE])
        .args(["pg_isready", "-h", "127.0.0.1", "-p", &port.to_string()])
        .output()
        .expect("docker run pg_isready");
    assert!(
        String::from_utf8_lossy(&ready.stdout).contains("accepting connections"),
        "{}",
        text(&ready)
    );
    drop(up);
}
