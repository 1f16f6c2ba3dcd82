//! Cluster networks on their subnets, on the real Docker engine: created on the subnet
//! asked for, an unused one on another subnet recreated, a used one kept; a service on
//! several networks gets a container with an address on each (connected before start);
//! networks carry their cluster's id, and another cluster's is never recreated.

use std::sync::Arc;

use shoal_agent::net::Subnet;
use shoal_agent::runtime::docker::DockerRuntime;
use shoal_agent::runtime::{container_request, network_name, ContainerRuntime, TaskIdentity};
use shoal_proto::spec::{ServiceNetwork, ServiceSpec};

const IMAGE: &str = "shoal-test/busybox:latest";

/// Removes the test's containers and networks however the test ends.
struct Cleanup {
    network: String,
    containers: Vec<String>,
    more_networks: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", c])
                .output();
        }
        for n in std::iter::once(&self.network).chain(&self.more_networks) {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", n])
                .output();
        }
    }
}

#[tokio::test]
async fn stack_networks_take_their_cluster_subnet() {
    let docker: Arc<dyn ContainerRuntime> = Arc::new(DockerRuntime::connect(None).await.unwrap());
    let pid = std::process::id();
    let stack = format!("dn{pid:x}");
    // Far from the pool's first subnets, which clusters on this engine take first.
    let third = 20 + pid % 200;
    let first: Subnet = format!("10.223.{third}.0/24").parse().unwrap();
    let second: Subnet = format!("10.222.{third}.0/24").parse().unwrap();
    let mut cleanup = Cleanup {
        network: format!("shoal-{stack}"),
        containers: vec![],
        more_networks: vec![],
    };

    let gateway = docker
        .ensure_network_in(&stack, Some(first), None)
        .await
        .unwrap();
    assert_eq!(
        gateway,
        Some(first.gateway()),
        "created on the subnet asked for"
    );
    assert_eq!(
        docker
            .ensure_network_in(&stack, Some(first), None)
            .await
            .unwrap(),
        Some(first.gateway()),
        "asking again keeps it"
    );

    // No container uses it: asked with another subnet, it is recreated there.
    let gateway = docker
        .ensure_network_in(&stack, Some(second), None)
        .await
        .unwrap();
    assert_eq!(
        gateway,
        Some(second.gateway()),
        "recreated on the new subnet"
    );

    // A container (created, not started) is on it: it is kept as it is.
    let task = TaskIdentity {
        task_id: format!("t{pid:x}"),
        stack: stack.clone(),
        service: "web".into(),
        slot: 1,
        generation: 1,
    };
    let spec = ServiceSpec {
        name: "web".into(),
        image: IMAGE.into(),
        command: Some(vec!["sleep".into(), "30".into()]),
        ..Default::default()
    };
    docker
        .ensure_image(IMAGE)
        .await
        .expect("test image present");
    let id = docker
        .create(&container_request(&task, &spec, "node-test"))
        .await
        .expect("create");
    cleanup.containers.push(id.clone());
    let gateway = docker
        .ensure_network_in(&stack, Some(first), None)
        .await
        .unwrap();
    assert_eq!(gateway, Some(second.gateway()), "a used network is kept");
    docker.remove(&id).await.unwrap();
    cleanup.containers.clear();
    docker.remove_network(&stack).await.unwrap();
}

#[tokio::test]
async fn a_service_on_several_networks_has_an_address_on_each() {
    let docker: Arc<dyn ContainerRuntime> = Arc::new(DockerRuntime::connect(None).await.unwrap());
    let pid = std::process::id();
    let stack = format!("dm{pid:x}");
    let third = 20 + pid % 200;
    let front: Subnet = format!("10.221.{third}.0/24").parse().unwrap();
    let back: Subnet = format!("10.220.{third}.0/24").parse().unwrap();
    let (front_key, back_key) = (format!("{stack}.front"), format!("{stack}.back"));
    let mut cleanup = Cleanup {
        network: network_name(&front_key),
        containers: vec![],
        more_networks: vec![network_name(&back_key)],
    };
    docker
        .ensure_network_in(&front_key, Some(front), None)
        .await
        .unwrap();
    docker
        .ensure_network_in(&back_key, Some(back), None)
        .await
        .unwrap();
    docker
        .ensure_image(IMAGE)
        .await
        .expect("test image present");
    let task = TaskIdentity {
        task_id: format!("t{pid:x}m"),
        stack: stack.clone(),
        service: "web".into(),
        slot: 1,
        generation: 1,
    };
    let net = |name: &str, key: &str| ServiceNetwork {
        name: name.into(),
        key: key.into(),
        aliases: vec![],
    };
    let spec = ServiceSpec {
        name: "web".into(),
        image: IMAGE.into(),
        command: Some(vec!["sleep".into(), "30".into()]),
        networks: vec![net("front", &front_key), net("back", &back_key)],
        ..Default::default()
    };
    let id = docker
        .create(&container_request(&task, &spec, "node-test"))
        .await
        .expect("create on front, connect to back");
    cleanup.containers.push(id.clone());
    docker.start(&id).await.expect("start");
    let info = docker.inspect(&id).await.unwrap();
    let on = |name: &str| info.ips.get(name).copied();
    let (Some(std::net::IpAddr::V4(f)), Some(std::net::IpAddr::V4(b))) =
        (on(&network_name(&front_key)), on(&network_name(&back_key)))
    else {
        panic!("an address on each network: {:?}", info.ips);
    };
    assert!(front.contains(f) && back.contains(b), "{f} {b}");
    assert_eq!(
        info.ip,
        Some(std::net::IpAddr::V4(f)),
        "the first network's address first"
    );
    docker
        .stop(&id, std::time::Duration::from_secs(1), None)
        .await
        .unwrap();
    docker.remove(&id).await.unwrap();
    cleanup.containers.clear();
    docker.remove_network(&front_key).await.unwrap();
    docker.remove_network(&back_key).await.unwrap();
}

/// Networks carry the cluster that made them; one of another cluster is never recreated
/// (removed) for this one, even unused on another subnet; `list_networks` reads both.
#[tokio::test]
async fn networks_carry_their_cluster_and_another_clusters_is_never_recreated() {
    let docker: Arc<dyn ContainerRuntime> = Arc::new(DockerRuntime::connect(None).await.unwrap());
    let pid = std::process::id();
    let (ours, theirs) = (format!("dno{pid:x}"), format!("dnt{pid:x}"));
    let third = 20 + pid % 200;
    // Apart from the other tests' subnets: they run at the same time.
    let a: Subnet = format!("10.219.{third}.0/24").parse().unwrap();
    let b: Subnet = format!("10.218.{third}.0/24").parse().unwrap();
    let _cleanup = Cleanup {
        network: network_name(&ours),
        containers: vec![],
        more_networks: vec![network_name(&theirs)],
    };
    docker
        .ensure_network_in(&ours, Some(a), Some("c0ffee0000000001"))
        .await
        .unwrap();
    docker
        .ensure_network_in(&theirs, Some(b), Some("bada550000000002"))
        .await
        .unwrap();
    // This cluster asks for the other's network on another subnet: it is kept as it is.
    let gateway = docker
        .ensure_network_in(&theirs, Some(a), Some("c0ffee0000000001"))
        .await
        .unwrap();
    assert_eq!(
        gateway,
        Some(b.gateway()),
        "another cluster's network is kept"
    );

    let listed = docker.list_networks().await.expect("list networks");
    let find = |name: &str| {
        listed
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("{name} listed: {listed:?}"))
    };
    let o = find(&network_name(&ours));
    assert_eq!(o.cluster(), Some("c0ffee0000000001"));
    assert_eq!(o.shoal_key().as_deref(), Some(ours.as_str()));
    assert_eq!(o.subnets, vec![a]);
    assert_eq!(o.bridge, Some(format!("br-{}", &o.id[..12])));
    let t = find(&network_name(&theirs));
    assert_eq!(t.cluster(), Some("bada550000000002"));
    assert_eq!(t.subnets, vec![b]);
    // The engine's default bridge is listed too, with its own interface name.
    assert_eq!(find("bridge").bridge.as_deref(), Some("docker0"));
}
