//! The Docker runtime against the local engine, with `shoal-test/busybox:latest`
//! (built by `scripts/build-test-image.sh` when missing).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_agent::runtime::docker::DockerRuntime;
use shoal_agent::runtime::{
    container_request, ContainerRuntime, ContainerState, Health, RuntimeError, TaskIdentity,
};
use shoal_proto::spec::{HealthcheckSpec, ServiceSpec};

const IMAGE: &str = "shoal-test/busybox:latest";

fn ensure_test_image() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/build-test-image.sh"
    );
    let status = std::process::Command::new("bash")
        .arg(script)
        .status()
        .expect("run scripts/build-test-image.sh");
    assert!(status.success(), "building {IMAGE} failed");
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{}{nanos:x}", std::process::id())
}

#[tokio::test]
async fn container_lifecycle_on_real_docker() {
    ensure_test_image();
    let docker: Arc<dyn ContainerRuntime> = Arc::new(DockerRuntime::connect(None).await.unwrap());
    let stack = unique("dt");
    let task = TaskIdentity {
        task_id: unique("t"),
        stack: stack.clone(),
        service: "web".into(),
        slot: 1,
        generation: 1,
    };
    let spec = ServiceSpec {
        name: "web".into(),
        image: IMAGE.into(),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo hello-out; echo hello-err >&2; touch /tmp/ready; exec sleep 300".into(),
        ]),
        environment: [("GREETING".to_string(), "hi".to_string())]
            .into_iter()
            .collect(),
        labels: [("team".to_string(), "blue".to_string())]
            .into_iter()
            .collect(),
        healthcheck: Some(HealthcheckSpec {
            test: vec!["CMD-SHELL".into(), "test -f /tmp/ready".into()],
            interval_ms: Some(300),
            timeout_ms: Some(1_000),
            retries: Some(3),
            start_period_ms: Some(0),
            start_interval_ms: Some(100),
            disable: false,
        }),
        stop_grace_period_ms: Some(1_000),
        init: Some(true),
        ..Default::default()
    };
    let req = container_request(&task, &spec, "node-test");

    docker.ensure_image(IMAGE).await.expect("image present");
    assert_eq!(
        docker.ensure_network(&stack).await.unwrap(),
        format!("shoal-{stack}")
    );
    let id = docker.create(&req).await.expect("create");
    let created = docker.inspect(&id).await.unwrap();
    assert_eq!(created.state, ContainerState::Created);
    assert_eq!(created.labels["io.shoal.task"], task.task_id);
    assert_eq!(created.labels["io.shoal.node"], "node-test");
    assert_eq!(created.labels["team"], "blue");

    docker.start(&id).await.expect("start");
    let running = docker.inspect(&id).await.unwrap();
    assert_eq!(running.state, ContainerState::Running);
    assert!(running.ip.is_some(), "has an address on the stack network");

    eventually("healthy", Duration::from_secs(30), || {
        let docker = docker.clone();
        let id = id.clone();
        async move { docker.inspect(&id).await.unwrap().health == Health::Healthy }
    })
    .await;
    let listed = docker.list_managed().await.unwrap();
    let mine = listed
        .iter()
        .find(|c| c.id == id)
        .expect("listed as managed");
    assert_eq!(mine.state, ContainerState::Running);
    assert_eq!(mine.health, Health::Healthy);
    assert_eq!(mine.task_id(), Some(task.task_id.as_str()));

    let mut logs = docker.logs(&id, false, None).await.unwrap();
    let mut out = BTreeMap::new();
    while let Some(frame) = logs.next().await {
        let frame = frame.unwrap();
        out.entry(frame.stderr)
            .or_insert_with(String::new)
            .push_str(&String::from_utf8_lossy(&frame.data));
    }
    assert_eq!(out.get(&false).map(String::as_str), Some("hello-out\n"));
    assert_eq!(out.get(&true).map(String::as_str), Some("hello-err\n"));

    let t0 = Instant::now();
    docker
        .stop(&id, Duration::from_secs(1), Some("SIGTERM"))
        .await
        .expect("stop");
    assert!(t0.elapsed() < Duration::from_secs(15));
    let stopped = docker.inspect(&id).await.unwrap();
    assert_eq!(stopped.state, ContainerState::Exited);
    assert!(stopped.exit_code.is_some());
    // Stopping again is fine.
    docker
        .stop(&id, Duration::from_secs(1), None)
        .await
        .unwrap();

    docker.remove(&id).await.expect("remove");
    assert!(matches!(
        docker.inspect(&id).await,
        Err(RuntimeError::NotFound(_))
    ));
    docker.remove_network(&stack).await.expect("remove network");
}

#[tokio::test]
async fn exit_code_is_observed() {
    ensure_test_image();
    let docker = DockerRuntime::connect(None).await.unwrap();
    let stack = unique("dx");
    let task = TaskIdentity {
        task_id: unique("t"),
        stack: stack.clone(),
        service: "job".into(),
        slot: 1,
        generation: 1,
    };
    let spec = ServiceSpec {
        name: "job".into(),
        image: IMAGE.into(),
        command: Some(vec!["sh".into(), "-c".into(), "exit 3".into()]),
        ..Default::default()
    };
    docker.ensure_network(&stack).await.unwrap();
    let id = docker
        .create(&container_request(&task, &spec, "node-test"))
        .await
        .unwrap();
    docker.start(&id).await.unwrap();
    let start = Instant::now();
    let info = loop {
        let info = docker.inspect(&id).await.unwrap();
        if info.state == ContainerState::Exited {
            break info;
        }
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(info.exit_code, Some(3));
    let listed = docker.list_managed().await.unwrap();
    let summary = listed.iter().find(|c| c.id == id).unwrap();
    assert_eq!(summary.exit_code, Some(3));
    docker.remove(&id).await.unwrap();
    docker.remove_network(&stack).await.unwrap();
}

/// The one-shot stats autoscaling reads (API 1.41): CPU time that grows while the
/// container works, memory in use, and a missing container said so.
#[tokio::test]
async fn stats_give_cpu_time_and_memory_in_use() {
    ensure_test_image();
    let docker = DockerRuntime::connect(None).await.unwrap();
    let stack = unique("ds");
    let task = TaskIdentity {
        task_id: unique("t"),
        stack: stack.clone(),
        service: "busy".into(),
        slot: 1,
        generation: 1,
    };
    let spec = ServiceSpec {
        name: "busy".into(),
        image: IMAGE.into(),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec sleep 300".into(),
        ]),
        ..Default::default()
    };
    docker.ensure_network(&stack).await.unwrap();
    let id = docker
        .create(&container_request(&task, &spec, "node-test"))
        .await
        .unwrap();
    docker.start(&id).await.unwrap();
    let first = docker
        .stats(&id)
        .await
        .expect("stats of a running container");
    assert!(first.memory_bytes > 0, "memory in use: {first:?}");
    eventually("50 ms of CPU time", Duration::from_secs(30), || {
        let docker = docker.clone();
        let id = id.clone();
        async move { docker.stats(&id).await.unwrap().cpu_ns >= 50_000_000 }
    })
    .await;
    docker
        .stop(&id, Duration::from_secs(1), None)
        .await
        .unwrap();
    docker.remove(&id).await.unwrap();
    docker.remove_network(&stack).await.unwrap();
    assert!(matches!(
        docker.stats(&id).await,
        Err(RuntimeError::NotFound(_))
    ));
}

/// Removes a container and a network with the Docker CLI when dropped, so that a
/// failed assertion leaves nothing behind.
struct Leftovers {
    container: String,
    network: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for args in [
            vec!["rm", "-f", self.container.as_str()],
            vec!["network", "rm", self.network.as_str()],
        ] {
            let _ = std::process::Command::new("docker")
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// What `shoal stats` and the per-task metrics read beyond CPU and memory, from a real
/// container: its network bytes (ICMP echoes to its gateway both ways) and the engine's
/// restart count (the restart policy brings it back once after its first run fails),
/// and its memory limit.
#[tokio::test]
async fn stats_give_network_bytes_restarts_and_the_memory_limit() {
    use bollard::container::{Config, CreateContainerOptions};
    use bollard::models::{HostConfig, RestartPolicy, RestartPolicyNameEnum};
    use shoal_agent::runtime::network_name;

    ensure_test_image();
    let runtime = DockerRuntime::connect(None).await.unwrap();
    let engine = bollard::Docker::connect_with_defaults().expect("the local engine");
    let stack = unique("dn");
    runtime.ensure_network(&stack).await.unwrap();
    let name = unique("shoal-stats-");
    let _leftovers = Leftovers {
        container: name.clone(),
        network: network_name(&stack),
    };
    // Ten 1000-byte echoes per run; the first run then fails, the second sleeps.
    let script = "ping -c 10 -i 0.1 -s 1000 $(ip route | awk '/default/ {print $3}') >/dev/null; \
                  if [ ! -f /tmp/ran ]; then touch /tmp/ran; exit 1; fi; exec sleep 300";
    let config = Config {
        image: Some(IMAGE.to_string()),
        cmd: Some(vec!["sh".to_string(), "-c".to_string(), script.to_string()]),
        host_config: Some(HostConfig {
            network_mode: Some(network_name(&stack)),
            memory: Some(64 << 20),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: Some(3),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = engine
        .create_container(
            Some(CreateContainerOptions {
                name: name.clone(),
                platform: None,
            }),
            config,
        )
        .await
        .expect("create")
        .id;
    runtime.start(&id).await.unwrap();

    // Restarted once, running its second run, whose echoes went out and came back.
    let mut last = None;
    let start = Instant::now();
    let stats = loop {
        let info = runtime.inspect(&id).await.unwrap();
        if info.state == ContainerState::Running {
            if let Ok(s) = runtime.stats(&id).await {
                if s.restarts >= 1 && s.net_rx_bytes >= 10_000 && s.net_tx_bytes >= 10_000 {
                    break s;
                }
                last = Some(s);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no restart with network traffic within 60 s; last stats: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stats.restarts, 1, "{stats:?}");
    assert_eq!(stats.memory_limit_bytes, 64 << 20, "{stats:?}");
    assert!(stats.memory_bytes > 0, "{stats:?}");
    // Bounded by what ten echoes each way and a few neighbour-discovery packets take.
    assert!(stats.net_rx_bytes < 1 << 20, "{stats:?}");

    runtime
        .stop(&id, Duration::from_secs(1), None)
        .await
        .unwrap();
    runtime.remove(&id).await.unwrap();
    runtime.remove_network(&stack).await.unwrap();
}

#[tokio::test]
async fn missing_image_is_an_error_naming_it() {
    let docker = DockerRuntime::connect(None).await.unwrap();
    let image = "shoal-test/does-not-exist:nope";
    let err = docker.ensure_image(image).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RuntimeError::Pull { .. }), "{err:?}");
    assert!(text.contains(image), "{text}");
}

#[tokio::test]
async fn volumes_on_real_docker() {
    use shoal_agent::runtime::{with_volume_names, VolumeRequest};
    use shoal_agent::volumes::{report, volume_labels};
    use shoal_proto::spec::{MountKind, MountSpec};

    ensure_test_image();
    let docker: Arc<dyn ContainerRuntime> = Arc::new(DockerRuntime::connect(None).await.unwrap());
    let name = unique("shoalvol");
    let node = unique("node");
    let labels = volume_labels(
        "st",
        "data",
        &node,
        &[("team".to_string(), "db".to_string())].into(),
    );
    let req = VolumeRequest {
        name: name.clone(),
        labels: labels.clone(),
        ..Default::default()
    };
    let v = docker.create_volume(&req).await.unwrap();
    assert_eq!(v.name, name);
    assert_eq!(v.driver, "local");
    assert_eq!(v.labels, labels);
    assert!(v.created_ms > 1_600_000_000_000, "{}", v.created_ms);
    let dir = v
        .mountpoint
        .clone()
        .expect("a local volume has a directory");
    // Creating it again returns it as it is.
    assert_eq!(docker.create_volume(&req).await.unwrap(), v);
    assert_eq!(docker.inspect_volume(&name).await.unwrap(), v);
    let listed = docker.list_volumes(&node).await.unwrap();
    assert_eq!(listed, vec![v.clone()]);
    assert!(docker
        .list_volumes(&unique("other"))
        .await
        .unwrap()
        .is_empty());

    std::fs::write(dir.join("f"), vec![1u8; 4321]).unwrap();
    let seen = report::collect(&docker, &node).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].size_bytes, 4321);
    assert_eq!(
        (seen[0].stack.as_str(), seen[0].name.as_str()),
        ("st", "data")
    );

    // A container mounting it by its engine name: the volume is in use until it goes.
    let stack = unique("vs");
    docker.ensure_network(&stack).await.unwrap();
    let task = TaskIdentity {
        task_id: unique("t"),
        stack: stack.clone(),
        service: "db".into(),
        slot: 1,
        generation: 1,
    };
    let spec = ServiceSpec {
        name: "db".into(),
        image: IMAGE.into(),
        command: Some(vec!["sleep".into(), "300".into()]),
        volumes: vec![MountSpec {
            kind: MountKind::Volume,
            source: Some("data".into()),
            target: "/data".into(),
            read_only: false,
            relative: false,
        }],
        ..Default::default()
    };
    let names = [("data".to_string(), name.clone())].into();
    let req = with_volume_names(container_request(&task, &spec, &node), &spec, &names);
    let id = docker.create(&req).await.unwrap();
    docker.start(&id).await.unwrap();
    assert_eq!(
        docker.running_with_volume(&name).await.unwrap(),
        vec![id.clone()]
    );
    docker.pause(&id).await.unwrap();
    docker.unpause(&id).await.unwrap();
    let err = docker.remove_volume(&name).await.unwrap_err();
    assert!(matches!(err, RuntimeError::InUse(_)), "{err:?}");
    docker
        .stop(&id, Duration::from_secs(1), None)
        .await
        .unwrap();
    let err = docker.remove_volume(&name).await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::InUse(_)),
        "stopped still counts: {err:?}"
    );
    docker.remove(&id).await.unwrap();
    docker.remove_volume(&name).await.unwrap();
    assert!(matches!(
        docker.inspect_volume(&name).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(matches!(
        docker.remove_volume(&name).await,
        Err(RuntimeError::NotFound(_))
    ));
    docker.remove_network(&stack).await.unwrap();
}
