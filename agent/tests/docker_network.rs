//! Stack networks on their cluster subnets, on the real Docker engine: created on the
//! subnet asked for, an unused one on another subnet recreated, a used one kept.

use std::sync::Arc;

use shoal_agent::net::Subnet;
use shoal_agent::runtime::docker::DockerRuntime;
use shoal_agent::runtime::{container_request, ContainerRuntime, TaskIdentity};
use shoal_proto::spec::ServiceSpec;

const IMAGE: &str = "shoal-test/busybox:latest";

/// Removes the test's container and network however the test ends.
struct Cleanup {
    network: String,
    containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", c])
                .output();
        }
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
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
    };

    let gateway = docker.ensure_network_in(&stack, Some(first)).await.unwrap();
    assert_eq!(
        gateway,
        Some(first.gateway()),
        "created on the subnet asked for"
    );
    assert_eq!(
        docker.ensure_network_in(&stack, Some(first)).await.unwrap(),
        Some(first.gateway()),
        "asking again keeps it"
    );

    // No container uses it: asked with another subnet, it is recreated there.
    let gateway = docker
        .ensure_network_in(&stack, Some(second))
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
    let gateway = docker.ensure_network_in(&stack, Some(first)).await.unwrap();
    assert_eq!(gateway, Some(second.gateway()), "a used network is kept");
    docker.remove(&id).await.unwrap();
    cleanup.containers.clear();
    docker.remove_network(&stack).await.unwrap();
}
