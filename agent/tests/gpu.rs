//! The agent's GPU side: discovery reported in Hello and re-reported on change (fake
//! inventory, NVML as this machine has it, a bad inventory file), and assignments with
//! GPUs turned into the exact Docker device request and environment (recording fake).

use std::sync::Arc;
use std::time::Duration;

#[allow(dead_code)]
mod common;

use common::eventually;
use common::*;

use shoal_agent::gpu::fake::{gpu, FakeInventory};
use shoal_agent::gpu::{GpuInventory, GpuSource};
use shoal_agent::model::{Assignment, AssignmentSet};
use shoal_agent::runtime::fake::{Call, FakeRuntime, Op};
use shoal_agent::runtime::{DeviceRequest, TaskIdentity};
use shoal_agent::supervisor::{self, Event, SupervisorConfig};
use shoal_agent::AgentConfig;
use shoal_proto::pb;
use shoal_proto::pb::agent_message::Msg;
use shoal_proto::spec::{GpuRequest, ServiceSpec};
use shoal_proto::task::{Desired, TaskState};
use tokio_util::sync::CancellationToken;

/// How long a condition of these tests may take.
const WAIT: Duration = Duration::from_secs(10);

/// `GET /metrics` on `addr`; the whole reply.
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to /metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn config(addr: String, dir: &std::path::Path, gpus: GpuSource) -> AgentConfig {
    AgentConfig {
        controllers: vec![addr],
        name: "gpu-node".into(),
        data_dir: dir.join("agent"),
        heartbeat_interval: Duration::from_millis(100),
        gpus,
        gpu_rediscover_interval: Duration::from_millis(100),
        // The fake controller here serves plaintext.
        plaintext: true,
        ..AgentConfig::default()
    }
}

fn hello(leader: &Leader) -> Option<pb::Hello> {
    leader.got.lock().unwrap().iter().find_map(|m| match m {
        Msg::Hello(h) => Some(h.clone()),
        _ => None,
    })
}

fn uuids(list: &[pb::GpuDevice]) -> Vec<String> {
    list.iter().map(|g| g.uuid.clone()).collect()
}

#[tokio::test]
async fn hello_carries_the_gpus_and_a_changed_set_is_reported_again() {
    let leader = Leader::default();
    let stop = CancellationToken::new();
    let addr = serve(leader.clone(), stop.clone()).await;
    let inventory = FakeInventory::uniform("a", 2, "NVIDIA H100 80GB HBM3", 80);
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let mut cfg = config(
        addr,
        dir.path(),
        GpuSource::Inventory(Arc::new(inventory.clone())),
    );
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cfg.metrics = Some(metrics);
    let agent = tokio::spawn(shoal_agent::run_with_runtime(
        cfg,
        Arc::new(FakeRuntime::new()),
        shutdown.clone(),
    ));

    let h = eventually(WAIT, "hello", || hello(&leader)).await;
    assert_eq!(
        h.gpus,
        vec![
            pb::GpuDevice {
                uuid: "GPU-a-0".into(),
                index: 0,
                model: "NVIDIA H100 80GB HBM3".into(),
                memory_bytes: 80 << 30,
            },
            pb::GpuDevice {
                uuid: "GPU-a-1".into(),
                index: 1,
                model: "NVIDIA H100 80GB HBM3".into(),
                memory_bytes: 80 << 30,
            },
        ]
    );

    // Utilization is not identity: rediscoveries that see only new figures say nothing.
    let mut busy = gpu("a", 0, "NVIDIA H100 80GB HBM3", 80);
    busy.utilization_percent = Some(93);
    busy.memory_used_bytes = Some(1 << 30);
    inventory.set(vec![busy.clone(), gpu("a", 1, "NVIDIA H100 80GB HBM3", 80)]);
    let calls = inventory.calls();
    eventually(WAIT, "two more rediscoveries", || {
        (inventory.calls() >= calls + 2).then_some(())
    })
    .await;
    let reports = |l: &Leader| -> Vec<Vec<String>> {
        l.got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| match m {
                Msg::Gpus(r) => Some(uuids(&r.gpus)),
                _ => None,
            })
            .collect()
    };
    assert!(reports(&leader).is_empty(), "{:?}", reports(&leader));
    // ... but `/metrics` shows them.
    let page = scrape(metrics).await;
    let labels = "node=\"gpu-node\",uuid=\"GPU-a-0\",index=\"0\",model=\"NVIDIA H100 80GB HBM3\"";
    for line in [
        format!("shoal_gpu_utilization_percent{{{labels}}} 93"),
        format!("shoal_gpu_memory_used_bytes{{{labels}}} 1073741824"),
    ] {
        assert!(page.lines().any(|l| l == line), "no {line} in\n{page}");
    }

    // A GPU disappears: the new set goes up on the open session.
    inventory.set(vec![busy]);
    let got = eventually(WAIT, "a GPU report", || {
        let r = reports(&leader);
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(got, vec![vec!["GPU-a-0".to_string()]]);

    shutdown.cancel();
    agent.await.unwrap().unwrap();
    stop.cancel();
}

#[tokio::test]
async fn without_nvml_the_agent_starts_and_reports_no_gpus() {
    // What NVML itself says on this machine: none here (no libnvidia-ml, no driver).
    let expected = shoal_agent::gpu::nvml::NvmlInventory::new()
        .discover()
        .expect("NVML absent is zero GPUs, not an error");
    let leader = Leader::default();
    let stop = CancellationToken::new();
    let addr = serve(leader.clone(), stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(shoal_agent::run_with_runtime(
        config(addr, dir.path(), GpuSource::Nvml),
        Arc::new(FakeRuntime::new()),
        shutdown.clone(),
    ));
    let h = eventually(WAIT, "hello", || hello(&leader)).await;
    assert_eq!(
        uuids(&h.gpus),
        expected.iter().map(|g| g.uuid.clone()).collect::<Vec<_>>()
    );
    if nvml_wrapper::Nvml::init().is_err() {
        assert!(h.gpus.is_empty(), "no NVML, yet GPUs: {:?}", h.gpus);
    }
    // It keeps running (heartbeats) through rediscoveries.
    let beats = |l: &Leader| {
        l.got
            .lock()
            .unwrap()
            .iter()
            .filter(|m| matches!(m, Msg::Heartbeat(_)))
            .count()
    };
    eventually(WAIT, "heartbeats", || (beats(&leader) >= 3).then_some(())).await;
    assert!(!agent.is_finished());
    shutdown.cancel();
    agent.await.unwrap().unwrap();
    stop.cancel();
}

#[tokio::test]
async fn a_malformed_inventory_file_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gpus.json");
    std::fs::write(&file, r#"[{"uuid":"GPU-1","index":0,"model":"x"}]"#).unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        shoal_agent::run_with_runtime(
            config(
                "127.0.0.1:9".into(),
                dir.path(),
                GpuSource::File(file.clone()),
            ),
            Arc::new(FakeRuntime::new()),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("start-up fails at once");
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("missing field `memory_bytes`"), "{err}");
}

fn gpu_spec() -> ServiceSpec {
    ServiceSpec {
        name: "train".into(),
        image: "img:1".into(),
        environment: [("NVIDIA_VISIBLE_DEVICES".to_string(), "all".to_string())]
            .into_iter()
            .collect(),
        gpus: vec![GpuRequest {
            count: Some(2),
            capabilities: vec!["gpu".into(), "utility".into()],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn gpu_assignment(gpus: &[&str]) -> AssignmentSet {
    let a = Assignment {
        task: TaskIdentity {
            task_id: "t1".into(),
            stack: "ml".into(),
            service: "train".into(),
            slot: 1,
            generation: 1,
        },
        desired: Desired::Running,
        ended: false,
        spec: Arc::new(gpu_spec()),
        gpus: gpus.iter().map(|g| g.to_string()).collect(),
        secrets: Vec::new(),
        volumes: Vec::new(),
    };
    AssignmentSet {
        version: 1,
        tasks: [("t1".to_string(), a)].into_iter().collect(),
        mesh: Default::default(),
        remove_volumes: Vec::new(),
    }
}

/// The create request of task t1, assigned `gpus`, under `mode`.
async fn created_with(
    gpus: &[&str],
    mode: shoal_agent::runtime::GpuDeviceMode,
) -> shoal_agent::runtime::ContainerRequest {
    let fake = FakeRuntime::new();
    let stop = CancellationToken::new();
    let (handle, mut events) = supervisor::spawn(
        SupervisorConfig {
            gpu_mode: mode,
            ..SupervisorConfig::new("gpu-node")
        },
        Arc::new(fake.clone()),
        stop.clone(),
    );
    handle.assign(gpu_assignment(gpus));
    loop {
        match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
            Ok(Some(Event::Report(r))) if r.task_id == "t1" && r.state == TaskState::Running => {
                break
            }
            Ok(Some(_)) => {}
            other => panic!("no running report: {other:?}"),
        }
    }
    stop.cancel();
    fake.calls()
        .into_iter()
        .find_map(|c| match c {
            Call::Create(req) => Some(*req),
            _ => None,
        })
        .expect("a create call")
}

#[tokio::test(start_paused = true)]
async fn assigned_gpus_become_one_device_request_and_nvidia_visible_devices() {
    let create = created_with(&["GPU-a-3", "GPU-a-1"], Default::default()).await;
    assert_eq!(
        create.device_requests,
        vec![DeviceRequest {
            driver: "nvidia".into(),
            device_ids: vec!["GPU-a-3".into(), "GPU-a-1".into()],
            capabilities: vec![vec!["gpu".into(), "utility".into()]],
        }]
    );
    let visible: Vec<&String> = create
        .env
        .iter()
        .filter(|e| e.starts_with("NVIDIA_VISIBLE_DEVICES="))
        .collect();
    assert_eq!(visible, vec!["NVIDIA_VISIBLE_DEVICES=GPU-a-3,GPU-a-1"]);
}

#[tokio::test(start_paused = true)]
async fn with_cdi_the_gpus_are_cdi_device_names() {
    let mode = shoal_agent::runtime::GpuDeviceMode::Cdi("nvidia.com/gpu".into());
    let create = created_with(&["GPU-a-3"], mode).await;
    assert_eq!(
        create.device_requests,
        vec![DeviceRequest {
            driver: "cdi".into(),
            device_ids: vec!["nvidia.com/gpu=GPU-a-3".into()],
            capabilities: Vec::new(),
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn an_engine_without_the_gpu_runtime_fails_the_task_with_its_message() {
    let fake = FakeRuntime::new();
    let refusal = "could not select device driver \"nvidia\" with capabilities: [[gpu utility]]";
    fake.fail(Op::Start, refusal);
    let stop = CancellationToken::new();
    let (handle, mut events) = supervisor::spawn(
        SupervisorConfig::new("gpu-node"),
        Arc::new(fake.clone()),
        stop.clone(),
    );
    handle.assign(gpu_assignment(&["GPU-a-0"]));
    let failed = loop {
        match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
            Ok(Some(Event::Report(r))) if r.task_id == "t1" && r.state == TaskState::Failed => {
                break r
            }
            Ok(Some(_)) => {}
            other => panic!("no failed report: {other:?}"),
        }
    };
    let error = failed.error.unwrap_or_default();
    assert!(error.contains(refusal), "{error}");
    // Without GPUs the request carries no device request and no NVIDIA variable of ours.
    let plain = shoal_agent::runtime::with_gpus(
        shoal_agent::runtime::container_request(
            &gpu_assignment(&[]).tasks["t1"].task,
            &gpu_spec(),
            "gpu-node",
        ),
        &gpu_spec(),
        &[],
    );
    assert!(plain.device_requests.is_empty());
    assert_eq!(plain.env, vec!["NVIDIA_VISIBLE_DEVICES=all".to_string()]);
    stop.cancel();
}
