//! An in-memory [`ContainerRuntime`] that records calls, for tests.
//!
//! Cheap enough for hundreds of agents in one process: no threads or tasks per container,
//! one mutex and one [`Notify`] per fake. Tests drive it by task id: make a task's container
//! exit, become healthy or unhealthy, print logs; make any operation fail or hang.
//!
//! Mutating calls and log requests are recorded ([`Call`]); the polling calls
//! (`list_managed`, `inspect`, `resources`, `stats`) are only counted, so that a long test does not
//! grow a list of observations; so are `inspect_volume`, `list_volumes` and
//! `list_networks`. Networks keep their labels and subnet ([`FakeRuntime::insert_network`]
//! puts one there as an earlier agent or someone else would have).
//!
//! Images live in memory too ([`FakeRuntime::insert_image`]). Pulls always succeed unless
//! told to fail ([`FakeRuntime::fail_pull`]) and add no image; loads are checked as a
//! real engine checks them ([`load`]), so tests prove the agent sends what is needed
//! (the classic store by default; containerd's with
//! [`FakeRuntime::set_loads_need_every_layer`]).
//!
//! Volumes live in memory, each with a directory of its own under the system's temp
//! directory as its mountpoint (removed with the volume, and all of them when the last
//! clone of the fake is dropped), so that the volume data plane runs without Docker.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use shoal_proto::labels;
use tokio::sync::Notify;

mod images;

use super::{
    network_name, ContainerInfo, ContainerRequest, ContainerRuntime, ContainerState,
    ContainerStats, Health, ImageInfo, LogFrame, LogStream, NetworkInfo, NodeResources,
    RuntimeError, RuntimeResult, VolumeInfo, VolumeRequest,
};
use shoal_proto::spec::MountKind;

/// A recorded call, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    EnsureImage(String),
    /// `pull_policy: always`'s pull.
    PullImage(String),
    /// A `docker load` of a tar of this many bytes (its bytes: [`FakeRuntime::loads`]).
    LoadImage(u64),
    RemoveImage(String),
    Create(Box<ContainerRequest>),
    Start(String),
    Stop {
        id: String,
        grace: Duration,
        signal: Option<String>,
    },
    Remove(String),
    Logs {
        id: String,
        follow: bool,
        tail: Option<u64>,
    },
    EnsureNetwork(String),
    RemoveNetwork(String),
    CreateVolume(VolumeRequest),
    RemoveVolume(String),
    Pause(String),
    Unpause(String),
}

/// An operation, to make it fail or hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Also `pull_image`.
    EnsureImage,
    /// `images` and `image`.
    Images,
    LoadImage,
    RemoveImage,
    Create,
    Start,
    Stop,
    Remove,
    ListManaged,
    Inspect,
    Logs,
    EnsureNetwork,
    RemoveNetwork,
    ListNetworks,
    Resources,
    CreateVolume,
    InspectVolume,
    ListVolumes,
    RemoveVolume,
    Pause,
    Unpause,
    Stats,
}

#[derive(Debug)]
struct FakeContainer {
    info: ContainerInfo,
    /// The Docker networks it was created on and connected to, in order.
    networks: Vec<String>,
    /// `ContainerRequest::network_mode` (`host`, `container:ID`, ...): it gets no
    /// address of its own when started.
    network_mode: Option<String>,
    has_healthcheck: bool,
    logs: Vec<LogFrame>,
    /// The named volumes it mounts: a volume is in use while such a container exists.
    volumes: Vec<String>,
    /// Its image as the request named it: an image is in use while such a container exists.
    image: String,
    paused: bool,
    /// What `stats` answers ([`FakeRuntime::set_stats`]; zero until set).
    stats: ContainerStats,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    observations: u64,
    containers: BTreeMap<String, FakeContainer>,
    /// By Docker name.
    networks: BTreeMap<String, NetworkInfo>,
    /// Op to (message, remaining count; None = until cleared).
    failures: BTreeMap<Op, (String, Option<u32>)>,
    /// Image to pull error.
    pull_failures: BTreeMap<String, String>,
    hung: BTreeSet<Op>,
    next_id: u64,
    auto_healthy: bool,
    ingress: bool,
    resources: Option<NodeResources>,
    volumes: BTreeMap<String, VolumeInfo>,
    /// Where the volumes' directories are made (created with the first volume).
    volume_root: Option<std::path::PathBuf>,
    /// Stands in for the engine's clock in `created_ms`.
    volume_clock: u64,
    images: Vec<ImageInfo>,
    /// The bytes of every tar loaded, in order.
    loads: Vec<Vec<u8>>,
    /// The engine keeps images in containerd's store: loads need every layer.
    containerd_store: bool,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    /// Woken on every change: releases hung calls and feeds followed logs.
    changed: Notify,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(root) = st.volume_root.take() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// Tells the directories of fakes in one process apart.
static FAKE_ROOTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl State {
    /// Make the volume (with an empty directory) unless it exists.
    fn make_volume(&mut self, req: &VolumeRequest) -> RuntimeResult<VolumeInfo> {
        if let Some(v) = self.volumes.get(&req.name) {
            return Ok(v.clone());
        }
        let root = match &self.volume_root {
            Some(r) => r.clone(),
            None => {
                let n = FAKE_ROOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let r = std::env::temp_dir()
                    .join(format!("shoal-fake-volumes-{}-{n}", std::process::id()));
                self.volume_root = Some(r.clone());
                r
            }
        };
        let dir = root.join(&req.name).join("_data");
        std::fs::create_dir_all(&dir)
            .map_err(|e| RuntimeError::Engine(format!("create {}: {e}", dir.display())))?;
        self.volume_clock += 1;
        let info = VolumeInfo {
            name: req.name.clone(),
            driver: req.driver.clone().unwrap_or_else(|| "local".to_string()),
            mountpoint: Some(dir),
            labels: req.labels.clone(),
            created_ms: 1_700_000_000_000 + self.volume_clock,
        };
        self.volumes.insert(req.name.clone(), info.clone());
        Ok(info)
    }
}

/// The recording fake. Clones share one engine.
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    inner: Arc<Inner>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime::new()
    }
}

impl FakeRuntime {
    /// An empty engine: every image pulls, healthchecks pass at once (see
    /// [`FakeRuntime::set_auto_healthy`]), no ingress.
    pub fn new() -> FakeRuntime {
        let fake = FakeRuntime {
            inner: Arc::new(Inner::default()),
        };
        fake.lock().auto_healthy = true;
        fake
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the fake from the others.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self) {
        self.inner.changed.notify_waiters();
    }

    /// Every recorded call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// How many `list_managed`/`inspect`/`resources`/`stats` calls were made.
    pub fn observations(&self) -> u64 {
        self.lock().observations
    }

    /// Every container, in id order.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        self.lock()
            .containers
            .values()
            .map(|c| c.info.clone())
            .collect()
    }

    /// The container (the newest, if several) of a task.
    pub fn container_of(&self, task_id: &str) -> Option<ContainerInfo> {
        self.lock()
            .containers
            .values()
            .rev()
            .find(|c| c.info.task_id() == Some(task_id))
            .map(|c| c.info.clone())
    }

    pub fn networks(&self) -> Vec<String> {
        self.lock().networks.keys().cloned().collect()
    }

    /// Put a network there as if someone else (or an earlier agent) had made it.
    pub fn insert_network(&self, network: NetworkInfo) {
        self.lock().networks.insert(network.name.clone(), network);
    }

    /// Whether the task's container is paused.
    pub fn is_paused(&self, task_id: &str) -> bool {
        self.lock()
            .containers
            .values()
            .rev()
            .find(|c| c.info.task_id() == Some(task_id))
            .is_some_and(|c| c.paused)
    }

    /// Every volume, in name order.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        self.lock().volumes.values().cloned().collect()
    }

    /// Put a volume there as if someone else (or an earlier agent) had made it; returns
    /// its directory.
    pub fn insert_volume(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> std::path::PathBuf {
        let req = VolumeRequest {
            name: name.to_string(),
            labels,
            ..Default::default()
        };
        let v = self
            .lock()
            .make_volume(&req)
            .expect("fake volume directory");
        v.mountpoint.expect("fake volumes have a directory")
    }

    /// Put a container there as if someone else (or an earlier agent) had made it.
    pub fn insert_container(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        state: ContainerState,
    ) -> String {
        let mut st = self.lock();
        st.next_id += 1;
        let id = format!("fake{:012}", st.next_id);
        let ip = ip_for(st.next_id);
        st.containers.insert(
            id.clone(),
            FakeContainer {
                info: ContainerInfo {
                    id: id.clone(),
                    name: name.to_string(),
                    state,
                    exit_code: (state == ContainerState::Exited).then_some(0),
                    oom_killed: false,
                    health: Health::None,
                    ip: (state == ContainerState::Running).then_some(ip),
                    ips: BTreeMap::new(),
                    labels,
                    error: None,
                },
                networks: Vec::new(),
                network_mode: None,
                has_healthcheck: false,
                logs: Vec::new(),
                volumes: Vec::new(),
                image: String::new(),
                paused: false,
                stats: ContainerStats::default(),
            },
        );
        id
    }

    /// Put an image on the engine as if it had been pulled or built here. Its tags are
    /// taken from any other image that has them, as the engine does.
    pub fn insert_image(&self, image: ImageInfo) {
        self.lock().add_image(image);
        self.changed();
    }

    /// Make the engine keep images in containerd's store (off by default): its loads
    /// then need every layer's file, and name images by a manifest digest.
    pub fn set_loads_need_every_layer(&self, on: bool) {
        self.lock().containerd_store = on;
    }

    /// The bytes of every tar loaded so far, in order.
    pub fn loads(&self) -> Vec<Vec<u8>> {
        self.lock().loads.clone()
    }

    /// Make `op` fail with `message` until [`FakeRuntime::clear_failure`].
    pub fn fail(&self, op: Op, message: &str) {
        self.lock().failures.insert(op, (message.to_string(), None));
    }

    /// Make the next `times` calls of `op` fail with `message`.
    pub fn fail_times(&self, op: Op, times: u32, message: &str) {
        self.lock()
            .failures
            .insert(op, (message.to_string(), Some(times)));
    }

    pub fn clear_failure(&self, op: Op) {
        self.lock().failures.remove(&op);
    }

    /// A pull from the fake registry: fails as [`FakeRuntime::fail_pull`] says, else
    /// the engine then has the image (under a made-up id), as a real pull leaves it.
    async fn pull(&self, image: &str, call: Call) -> RuntimeResult<()> {
        self.enter(Op::EnsureImage, Some(call))
            .await
            .map_err(|e| RuntimeError::Pull {
                image: image.to_string(),
                reason: e.to_string(),
            })?;
        let mut st = self.lock();
        if let Some(reason) = st.pull_failures.get(image) {
            return Err(RuntimeError::Pull {
                image: image.to_string(),
                reason: reason.clone(),
            });
        }
        if st.find_image(image).is_none() {
            use sha2::Digest as _;
            let id = format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(image.as_bytes()))
            );
            st.add_image(ImageInfo {
                id,
                tags: vec![image.to_string()],
                layers: Vec::new(),
                size: 0,
            });
        }
        Ok(())
    }

    /// Make pulling `image` fail with the registry's `reason`.
    pub fn fail_pull(&self, image: &str, reason: &str) {
        self.lock()
            .pull_failures
            .insert(image.to_string(), reason.to_string());
    }

    /// Calls of `op` wait until [`FakeRuntime::release`].
    pub fn hang(&self, op: Op) {
        self.lock().hung.insert(op);
    }

    pub fn release(&self, op: Op) {
        self.lock().hung.remove(&op);
        self.changed();
    }

    /// Whether containers with a healthcheck become healthy as soon as they start
    /// (default) or stay `starting` until [`FakeRuntime::set_health`].
    pub fn set_auto_healthy(&self, on: bool) {
        self.lock().auto_healthy = on;
    }

    /// Let the agent open ingress listeners for this fake's containers (off by default).
    pub fn set_ingress(&self, on: bool) {
        self.lock().ingress = on;
    }

    pub fn set_resources(&self, resources: NodeResources) {
        self.lock().resources = Some(resources);
    }

    fn with_task<R>(&self, task_id: &str, f: impl FnOnce(&mut FakeContainer) -> R) -> Option<R> {
        let r = {
            let mut st = self.lock();
            st.containers
                .values_mut()
                .rev()
                .find(|c| c.info.task_id() == Some(task_id))
                .map(f)
        };
        self.changed();
        r
    }

    /// The task's container exits with `code`. Returns false if it has none.
    pub fn exit(&self, task_id: &str, code: i64) -> bool {
        self.with_task(task_id, |c| {
            c.info.state = ContainerState::Exited;
            c.info.exit_code = Some(code);
            c.info.health = Health::None;
        })
        .is_some()
    }

    /// The task's container is killed by the kernel's OOM killer (exit 137).
    pub fn oom_kill(&self, task_id: &str) -> bool {
        self.with_task(task_id, |c| {
            c.info.state = ContainerState::Exited;
            c.info.exit_code = Some(137);
            c.info.oom_killed = true;
            c.info.health = Health::None;
        })
        .is_some()
    }

    pub fn set_health(&self, task_id: &str, health: Health) -> bool {
        self.with_task(task_id, |c| c.info.health = health)
            .is_some()
    }

    pub fn set_ip(&self, task_id: &str, ip: IpAddr) -> bool {
        self.with_task(task_id, |c| {
            c.info.ip = Some(ip);
            if let Some(first) = c.networks.first() {
                c.info.ips.insert(first.clone(), ip);
            }
        })
        .is_some()
    }

    /// What the engine's stats say of the task's container from now on (its CPU time
    /// and memory in use). Returns false if it has none.
    pub fn set_stats(&self, task_id: &str, stats: ContainerStats) -> bool {
        self.with_task(task_id, |c| c.stats = stats).is_some()
    }

    /// The task's container prints `data`.
    pub fn log(&self, task_id: &str, stderr: bool, data: &str) -> bool {
        let frame = LogFrame {
            stderr,
            data: Bytes::copy_from_slice(data.as_bytes()),
        };
        self.with_task(task_id, |c| c.logs.push(frame)).is_some()
    }

    /// Record the call, wait while the op hangs, then fail it if told to.
    async fn enter(&self, op: Op, call: Option<Call>) -> RuntimeResult<()> {
        {
            let mut st = self.lock();
            match call {
                Some(call) => st.calls.push(call),
                None => st.observations += 1,
            }
        }
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.lock().hung.contains(&op) {
                break;
            }
            notified.await;
        }
        let mut st = self.lock();
        let Some((message, remaining)) = st.failures.get_mut(&op) else {
            return Ok(());
        };
        let message = message.clone();
        if let Some(n) = remaining {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.failures.remove(&op);
            }
        }
        Err(RuntimeError::Engine(message))
    }
}

fn ip_for(n: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 88, (n >> 8) as u8, (n & 0xff) as u8))
}

fn not_found(id: &str) -> RuntimeError {
    RuntimeError::NotFound(format!("No such container: {id}"))
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn ensure_image(&self, image: &str) -> RuntimeResult<()> {
        self.pull(image, Call::EnsureImage(image.to_string())).await
    }

    async fn pull_image(&self, image: &str) -> RuntimeResult<()> {
        self.pull(image, Call::PullImage(image.to_string())).await
    }

    async fn images(&self) -> RuntimeResult<Vec<ImageInfo>> {
        self.enter(Op::Images, None).await?;
        Ok(self.lock().images.clone())
    }

    async fn image(&self, reference: &str) -> RuntimeResult<Option<ImageInfo>> {
        self.enter(Op::Images, None).await?;
        let st = self.lock();
        Ok(st.find_image(reference).map(|i| st.images[i].clone()))
    }

    async fn load_image(&self, tar: &std::path::Path) -> RuntimeResult<()> {
        let bytes = tokio::fs::read(tar)
            .await
            .map_err(|e| RuntimeError::Engine(format!("open {}: {e}", tar.display())))?;
        let call = Call::LoadImage(bytes.len() as u64);
        self.enter(Op::LoadImage, Some(call)).await?;
        let result = {
            let mut st = self.lock();
            let loaded = images::load(&st.images, &bytes, st.containerd_store);
            st.loads.push(bytes);
            loaded.map(|images| images.into_iter().for_each(|i| st.add_image(i)))
        };
        self.changed();
        result
    }

    async fn remove_image(&self, reference: &str) -> RuntimeResult<()> {
        let call = Call::RemoveImage(reference.to_string());
        self.enter(Op::RemoveImage, Some(call)).await?;
        let removed = self.lock().remove_image(reference);
        self.changed();
        removed
    }

    async fn loads_need_every_layer(&self) -> bool {
        self.lock().containerd_store
    }

    async fn create(&self, req: &ContainerRequest) -> RuntimeResult<String> {
        self.enter(Op::Create, Some(Call::Create(Box::new(req.clone()))))
            .await?;
        let mut st = self.lock();
        if st.containers.values().any(|c| c.info.name == req.name) {
            return Err(RuntimeError::Engine(format!(
                "Conflict. The container name \"/{}\" is already in use",
                req.name
            )));
        }
        st.next_id += 1;
        let id = format!("fake{:012}", st.next_id);
        let has_healthcheck = req
            .healthcheck
            .as_ref()
            .is_some_and(|h| h.test.first().is_some_and(|t| t != "NONE"));
        st.containers.insert(
            id.clone(),
            FakeContainer {
                info: ContainerInfo {
                    id: id.clone(),
                    name: req.name.clone(),
                    state: ContainerState::Created,
                    exit_code: None,
                    oom_killed: false,
                    health: Health::None,
                    ip: None,
                    ips: BTreeMap::new(),
                    labels: req.labels.clone(),
                    error: None,
                },
                networks: std::iter::once(req.network.clone())
                    .chain(req.extra_networks.iter().map(|e| e.network.clone()))
                    .filter(|_| req.network_mode.is_none())
                    .collect(),
                network_mode: req.network_mode.clone(),
                has_healthcheck,
                logs: Vec::new(),
                volumes: req
                    .mounts
                    .iter()
                    .filter(|m| m.kind == MountKind::Volume)
                    .filter_map(|m| m.source.clone())
                    .collect(),
                image: req.image.clone(),
                paused: false,
                stats: ContainerStats::default(),
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> RuntimeResult<()> {
        self.enter(Op::Start, Some(Call::Start(id.to_string())))
            .await?;
        {
            let mut st = self.lock();
            let auto_healthy = st.auto_healthy;
            let n = st.next_id + 1;
            let c = st.containers.get_mut(id).ok_or_else(|| not_found(id))?;
            c.info.state = ContainerState::Running;
            c.info.exit_code = None;
            c.info.health = match (c.has_healthcheck, auto_healthy) {
                (false, _) => Health::None,
                (true, true) => Health::Healthy,
                (true, false) => Health::Starting,
            };
            let mut took_id = false;
            if c.info.ip.is_none() && c.network_mode.is_none() {
                c.info.ip = Some(ip_for(n));
                took_id = true;
            }
            if c.info.ips.is_empty() {
                // The first network gets `ip`; the others one each in 10.89 and up.
                for (i, net) in c.networks.iter().enumerate() {
                    let ip = match (i, c.info.ip) {
                        (0, Some(ip)) => ip,
                        _ => {
                            let low = n.to_be_bytes();
                            IpAddr::V4(Ipv4Addr::new(
                                10,
                                88u8.wrapping_add(i as u8),
                                low[6],
                                low[7],
                            ))
                        }
                    };
                    c.info.ips.insert(net.clone(), ip);
                }
            }
            if took_id {
                st.next_id = n;
            }
        }
        self.changed();
        Ok(())
    }

    async fn stop(&self, id: &str, grace: Duration, signal: Option<&str>) -> RuntimeResult<()> {
        let call = Call::Stop {
            id: id.to_string(),
            grace,
            signal: signal.map(str::to_string),
        };
        self.enter(Op::Stop, Some(call)).await?;
        {
            let mut st = self.lock();
            let c = st.containers.get_mut(id).ok_or_else(|| not_found(id))?;
            if c.info.state == ContainerState::Running {
                c.info.state = ContainerState::Exited;
                c.info.exit_code = Some(0);
                c.info.health = Health::None;
            }
        }
        self.changed();
        Ok(())
    }

    async fn remove(&self, id: &str) -> RuntimeResult<()> {
        self.enter(Op::Remove, Some(Call::Remove(id.to_string())))
            .await?;
        let removed = self.lock().containers.remove(id);
        self.changed();
        removed.map(|_| ()).ok_or_else(|| not_found(id))
    }

    async fn list_managed(&self) -> RuntimeResult<Vec<ContainerInfo>> {
        self.enter(Op::ListManaged, None).await?;
        Ok(self
            .lock()
            .containers
            .values()
            .filter(|c| c.info.labels.contains_key(labels::TASK))
            .map(|c| c.info.clone())
            .collect())
    }

    async fn inspect(&self, id: &str) -> RuntimeResult<ContainerInfo> {
        self.enter(Op::Inspect, None).await?;
        self.lock()
            .containers
            .get(id)
            .map(|c| c.info.clone())
            .ok_or_else(|| not_found(id))
    }

    async fn logs(&self, id: &str, follow: bool, tail: Option<u64>) -> RuntimeResult<LogStream> {
        let call = Call::Logs {
            id: id.to_string(),
            follow,
            tail,
        };
        self.enter(Op::Logs, Some(call)).await?;
        let start = {
            let st = self.lock();
            let c = st.containers.get(id).ok_or_else(|| not_found(id))?;
            let n = c.logs.len();
            tail.map_or(0, |t| n.saturating_sub(usize::try_from(t).unwrap_or(n)))
        };
        let fake = self.clone();
        let id = id.to_string();
        let stream = futures::stream::unfold(start, move |next| {
            let fake = fake.clone();
            let id = id.clone();
            async move {
                loop {
                    let notified = fake.inner.changed.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    {
                        let st = fake.lock();
                        let c = st.containers.get(&id)?;
                        if let Some(frame) = c.logs.get(next) {
                            return Some((Ok(frame.clone()), next + 1));
                        }
                        if !follow || c.info.state != ContainerState::Running {
                            return None;
                        }
                    }
                    notified.await;
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn ensure_network(&self, stack: &str) -> RuntimeResult<String> {
        self.ensure_network_in(stack, None, None).await?;
        Ok(network_name(stack))
    }

    /// Labelled as the engine's would be; an existing network is kept as it is.
    async fn ensure_network_in(
        &self,
        key: &str,
        subnet: Option<crate::net::Subnet>,
        cluster: Option<&str>,
    ) -> RuntimeResult<Option<Ipv4Addr>> {
        self.enter(
            Op::EnsureNetwork,
            Some(Call::EnsureNetwork(key.to_string())),
        )
        .await?;
        let name = network_name(key);
        let mut tags = BTreeMap::new();
        match shoal_proto::network::stack_of(key) {
            Some(stack) => tags.insert(labels::STACK.to_string(), stack.to_string()),
            None => tags.insert(super::NETWORK_LABEL.to_string(), key.to_string()),
        };
        if let Some(cluster) = cluster {
            tags.insert(labels::CLUSTER.to_string(), cluster.to_string());
        }
        self.lock()
            .networks
            .entry(name.clone())
            .or_insert(NetworkInfo {
                name,
                labels: tags,
                subnets: subnet.into_iter().collect(),
                ..Default::default()
            });
        // No gateway: the agent's DNS servers are never bound on a fake's networks.
        Ok(None)
    }

    async fn list_networks(&self) -> RuntimeResult<Vec<NetworkInfo>> {
        self.enter(Op::ListNetworks, None).await?;
        Ok(self.lock().networks.values().cloned().collect())
    }

    async fn remove_network(&self, stack: &str) -> RuntimeResult<()> {
        self.enter(
            Op::RemoveNetwork,
            Some(Call::RemoveNetwork(stack.to_string())),
        )
        .await?;
        self.lock().networks.remove(&network_name(stack));
        Ok(())
    }

    async fn resources(&self) -> RuntimeResult<NodeResources> {
        self.enter(Op::Resources, None).await?;
        Ok(self.lock().resources.unwrap_or(NodeResources {
            nano_cpus: 4_000_000_000,
            memory_bytes: 8 << 30,
        }))
    }

    async fn stats(&self, id: &str) -> RuntimeResult<ContainerStats> {
        self.enter(Op::Stats, None).await?;
        self.lock()
            .containers
            .get(id)
            .map(|c| c.stats)
            .ok_or_else(|| not_found(id))
    }

    async fn create_volume(&self, req: &VolumeRequest) -> RuntimeResult<VolumeInfo> {
        self.enter(Op::CreateVolume, Some(Call::CreateVolume(req.clone())))
            .await?;
        let v = self.lock().make_volume(req);
        self.changed();
        v
    }

    async fn inspect_volume(&self, name: &str) -> RuntimeResult<VolumeInfo> {
        self.enter(Op::InspectVolume, None).await?;
        self.lock()
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("get {name}: no such volume")))
    }

    async fn list_volumes(&self, node: &str) -> RuntimeResult<Vec<VolumeInfo>> {
        self.enter(Op::ListVolumes, None).await?;
        Ok(self
            .lock()
            .volumes
            .values()
            .filter(|v| v.labels.get(labels::NODE).map(String::as_str) == Some(node))
            .cloned()
            .collect())
    }

    async fn remove_volume(&self, name: &str) -> RuntimeResult<()> {
        self.enter(Op::RemoveVolume, Some(Call::RemoveVolume(name.to_string())))
            .await?;
        let removed = {
            let mut st = self.lock();
            let users: Vec<String> = st
                .containers
                .values()
                .filter(|c| c.volumes.iter().any(|v| v == name))
                .map(|c| c.info.id.clone())
                .collect();
            if !users.is_empty() {
                return Err(RuntimeError::InUse(format!(
                    "remove {name}: volume is in use - {users:?}"
                )));
            }
            st.volumes.remove(name)
        };
        self.changed();
        let v =
            removed.ok_or_else(|| RuntimeError::NotFound(format!("get {name}: no such volume")))?;
        if let Some(dir) = v.mountpoint.as_ref().and_then(|d| d.parent()) {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }

    async fn running_with_volume(&self, name: &str) -> RuntimeResult<Vec<String>> {
        self.enter(Op::ListManaged, None).await?;
        Ok(self
            .lock()
            .containers
            .values()
            .filter(|c| c.info.state == ContainerState::Running)
            .filter(|c| c.volumes.iter().any(|v| v == name))
            .map(|c| c.info.id.clone())
            .collect())
    }

    async fn pause(&self, id: &str) -> RuntimeResult<()> {
        self.enter(Op::Pause, Some(Call::Pause(id.to_string())))
            .await?;
        let mut st = self.lock();
        let c = st.containers.get_mut(id).ok_or_else(|| not_found(id))?;
        if c.info.state != ContainerState::Running || c.paused {
            return Err(RuntimeError::Engine(format!(
                "container {id} is not running"
            )));
        }
        c.paused = true;
        Ok(())
    }

    async fn unpause(&self, id: &str) -> RuntimeResult<()> {
        self.enter(Op::Unpause, Some(Call::Unpause(id.to_string())))
            .await?;
        let mut st = self.lock();
        let c = st.containers.get_mut(id).ok_or_else(|| not_found(id))?;
        if !c.paused {
            return Err(RuntimeError::Engine(format!(
                "container {id} is not paused"
            )));
        }
        c.paused = false;
        Ok(())
    }

    async fn paused(&self, node: &str) -> RuntimeResult<Vec<String>> {
        self.enter(Op::ListManaged, None).await?;
        Ok(self
            .lock()
            .containers
            .values()
            .filter(|c| c.paused)
            .filter(|c| c.info.labels.get(labels::NODE).map(String::as_str) == Some(node))
            .map(|c| c.info.id.clone())
            .collect())
    }

    fn supports_ingress(&self) -> bool {
        self.lock().ingress
    }
}
