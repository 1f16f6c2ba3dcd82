//! Issue 14 on three test hosts (`scripts/hosts.sh`; each node has its own network and
//! mount namespace, engine and agent): devices place replicas where the device is,
//! `network_mode: host` answers on the node's address, `service:NAME` shares a replica's
//! network on its node, `node.role`, and bind mounts that are not on every node.
//!
//! The scenarios share one set of hosts and run in sequence.
//! Needs root, iproute2, iptables, nsenter, dockerd and the test image (scripts/test.sh).

use std::time::Duration;

use serde_json::Value;
use shoal_tests::hosts::Hosts;
use shoal_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// The task of `service` that should run, once `done` accepts it.
fn task_where(
    hosts: &Hosts,
    stack: &str,
    service: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(WAIT, what, || {
        hosts
            .ps(stack)
            .into_iter()
            .find(|t| t["service"] == service && done(t))
    })
}

fn running(hosts: &Hosts, stack: &str, service: &str) -> Value {
    task_where(
        hosts,
        stack,
        service,
        &format!("{stack}/{service} running"),
        |t| t["state"] == "running",
    )
}

fn pending(hosts: &Hosts, stack: &str, service: &str) -> String {
    let t = task_where(
        hosts,
        stack,
        service,
        &format!("{stack}/{service} pending"),
        |t| t["state"] == "pending" && !t["error"].as_str().unwrap_or("").is_empty(),
    );
    t["error"].as_str().unwrap_or_default().to_string()
}

fn sleeper(name: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    image: {TEST_IMAGE}\n    command: [\"sleep\", \"3600\"]\n    stop_grace_period: 1s\n{extra}"
    )
}

#[test]
fn devices_host_networking_roles_and_binds_across_nodes() {
    ensure_test_image();
    let hosts = Hosts::up(3);
    let dir = tempfile::tempdir().unwrap();

    // 1. A device on one node only: its replica lands there; a device no node has is
    //    pending naming it, until a node gets it (a USB stick plugged in).
    hosts.mknod("n2", "zigbee");
    let devices = [
        sleeper("zig", "    devices: [/dev/shoal-test/zigbee]\n"),
        sleeper(
            "usb",
            "    devices: [\"/dev/shoal-test/usb:/dev/ttyUSB0\"]\n",
        ),
    ]
    .concat();
    hosts.deploy_detached(&write_services(dir.path(), "dev", &devices));
    let zig = running(&hosts, "dev", "zig");
    assert_eq!(zig["node"], "n2", "{zig}");
    let why = pending(&hosts, "dev", "usb");
    assert!(
        why.contains("/dev/shoal-test/usb"),
        "the pending reason names the device: {why}"
    );
    hosts.mknod("n3", "usb");
    let usb = running(&hosts, "dev", "usb");
    assert_eq!(usb["node"], "n3", "{usb}");
    let container = usb["container"].as_str().unwrap();
    let listing = hosts.docker("n3", &["exec", container, "ls", "-l", "/dev/ttyUSB0"]);
    assert!(
        listing.starts_with('c'),
        "the device is in the container: {listing}"
    );

    // 2. network_mode: host answers on the node's own address; service:NAME shares the
    //    network of a replica on the same node.
    let port = 18_080;
    let net = [
        format!(
            r#"  web:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo on-the-node > /www/index.html && exec httpd -f -p {port} -h /www"]
    network_mode: host
    stop_grace_period: 1s
    deploy:
      placement:
        constraints: [node.hostname == n1]
"#
        ),
        sleeper("vpn", ""),
        sleeper("app", "    network_mode: service:vpn\n"),
    ]
    .concat();
    hosts.deploy_detached(&write_services(dir.path(), "net", &net));
    running(&hosts, "net", "web");
    let at = format!("{}:{port}", hosts.ip("n1"));
    let body = eventually(WAIT, "the host-networked replica on n1's address", || {
        http_get_at(&at, "/")
    });
    assert!(body.contains("on-the-node"), "{body}");
    let vpn = running(&hosts, "net", "vpn");
    let app = running(&hosts, "net", "app");
    let node = vpn["node"].as_str().unwrap().to_string();
    assert_eq!(
        app["node"],
        node.as_str(),
        "app shares vpn's node: {app} {vpn}"
    );
    let vpn_id = hosts
        .docker(
            &node,
            &[
                "inspect",
                "--format",
                "{{.Id}}",
                vpn["container"].as_str().unwrap(),
            ],
        )
        .trim()
        .to_string();
    let mode = hosts.docker(
        &node,
        &[
            "inspect",
            "--format",
            "{{.HostConfig.NetworkMode}}",
            app["container"].as_str().unwrap(),
        ],
    );
    assert_eq!(mode.trim(), format!("container:{vpn_id}"));

    // 3. node.role: the test hosts' controllers run beside the nodes, not on them, so
    //    every node is a worker.
    let roles = [
        sleeper(
            "boss",
            "    deploy:\n      placement:\n        constraints: [node.role == manager]\n",
        ),
        sleeper(
            "hand",
            "    deploy:\n      placement:\n        constraints: [node.role == worker]\n",
        ),
    ]
    .concat();
    hosts.deploy_detached(&write_services(dir.path(), "roles", &roles));
    running(&hosts, "roles", "hand");
    let why = pending(&hosts, "roles", "boss");
    assert!(why.contains("node.role"), "{why}");

    // 4. A relative bind mount is a directory of the deploying machine: refused on a
    //    cluster of three unless pinned; pinned, it runs where the user said.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "from the deploying machine").unwrap();
    let loose = write_services(
        dir.path(),
        "binds",
        &sleeper("files", "    volumes: [\"./data:/data:ro\"]\n"),
    );
    let out = hosts.shoal(&["deploy", "-c", &loose, "--detach"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("is a directory of the deploying machine")
            && said.contains("pin the service"),
        "{said}"
    );
    assert!(
        hosts.json(&["ps", "binds"]).is_none(),
        "nothing of it was deployed"
    );
    let pinned = write_services(dir.path(),
        "binds",
        &[
            sleeper(
                "files",
                "    volumes: [\"./data:/data:ro\"]\n    deploy:\n      placement:\n        constraints: [node.hostname == n3]\n",
            ),
            sleeper(
                "gone",
                "    restart: \"no\"\n    volumes: [\"/nonexistent-shoal-e2e:/x\"]\n    deploy:\n      placement:\n        constraints: [node.hostname == n1]\n",
            ),
        ]
        .concat(),
    );
    hosts.deploy_detached(&pinned);
    let files = running(&hosts, "binds", "files");
    assert_eq!(files["node"], "n3");
    let seen = hosts.docker(
        "n3",
        &[
            "exec",
            files["container"].as_str().unwrap(),
            "cat",
            "/data/hello.txt",
        ],
    );
    assert_eq!(seen.trim(), "from the deploying machine");
    let gone = task_where(&hosts, "binds", "gone", "the missing bind to fail", |t| {
        t["state"] == "failed"
    });
    let error = gone["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("/nonexistent-shoal-e2e") && error.contains("does not exist on node n1"),
        "{error}"
    );
}
