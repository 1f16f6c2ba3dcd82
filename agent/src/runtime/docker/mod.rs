//! [`ContainerRuntime`] on a Docker engine, through bollard.
//!
//! Only API 1.41 fields are sent (the oldest engine shoal supports is Docker 20.10): the
//! client negotiates its version down at connect, and the request leaves out newer fields
//! such as a healthcheck's `StartInterval`. Stop signals are sent with `kill` because
//! `POST /containers/{id}/stop?signal=` needs API 1.42.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::net::Subnet;
use async_trait::async_trait;
use bollard::container::{
    CreateContainerOptions, InspectContainerOptions, KillContainerOptions, ListContainersOptions,
    LogOutput, LogsOptions, RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
    WaitContainerOptions,
};
use bollard::errors::Error as BollardError;
use bollard::models::{EndpointSettings, Ipam, IpamConfig};
use bollard::network::{ConnectNetworkOptions, CreateNetworkOptions, InspectNetworkOptions};
use bollard::Docker;
use futures::{StreamExt, TryStreamExt};
use shoal_proto::labels;
use tracing::{info, warn};

mod convert;
mod images;
mod networks;
mod options;
mod stats;
mod volumes;
use convert::{docker_config, from_inspect, from_summary};
pub use volumes::rfc3339_ms;

use super::{
    network_name, ContainerInfo, ContainerRequest, ContainerRuntime, ContainerState,
    ContainerStats, ImageInfo, LogFrame, LogStream, NetworkInfo, NodeResources, RuntimeError,
    RuntimeResult, VolumeInfo, VolumeRequest, NETWORK_LABEL,
};

/// Seconds bollard waits for an engine's response headers.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// A Docker engine.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    /// Serializes network creation: Docker 20.10's duplicate check is racy, and two
    /// replicas starting at once would otherwise create two networks of one name.
    network_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Networks this process created on a subnet Docker picked (the cluster's was
    /// refused): never recreated, a container may be about to join.
    fallback_networks: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Each image's layers by id, so that listing images inspects each only once.
    image_layers: std::sync::Arc<images::LayerCache>,
    /// Whether the engine keeps images in containerd's store (its loads then need every
    /// layer), asked once.
    image_store: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

impl DockerRuntime {
    /// Connect to `uri` (`unix:///path`, `tcp://host:port`, `http://host:port`; `None`:
    /// `DOCKER_HOST`, else the local socket) and negotiate the API version.
    pub async fn connect(uri: Option<&str>) -> anyhow::Result<DockerRuntime> {
        use anyhow::Context as _;
        let version = bollard::API_DEFAULT_VERSION;
        let docker = match uri {
            None => Docker::connect_with_defaults(),
            Some(u) if u.starts_with("unix://") || u.starts_with('/') => {
                Docker::connect_with_unix(u, REQUEST_TIMEOUT_SECS, version)
            }
            Some(u) if u.starts_with("tcp://") || u.starts_with("http://") => {
                Docker::connect_with_http(u, REQUEST_TIMEOUT_SECS, version)
            }
            Some(u) => anyhow::bail!(
                "unsupported Docker address {u:?}: use unix:///path or tcp://host:port"
            ),
        }
        .with_context(|| format!("connect to Docker at {}", uri.unwrap_or("DOCKER_HOST")))?;
        let docker = docker.negotiate_version().await.with_context(|| {
            format!(
                "negotiate the API version with Docker at {}",
                uri.unwrap_or("DOCKER_HOST")
            )
        })?;
        Ok(DockerRuntime {
            docker,
            network_lock: Default::default(),
            fallback_networks: Default::default(),
            image_layers: Default::default(),
            image_store: Default::default(),
        })
    }

    /// The underlying client, for callers that need more than the trait.
    pub fn client(&self) -> &Docker {
        &self.docker
    }
}

/// The engine's refusal of a bind mount whose source is not there, naming the node: the
/// same path may exist on the machine the stack was deployed from.
fn missing_bind_source(e: RuntimeError, req: &ContainerRequest) -> RuntimeError {
    let text = e.to_string();
    let Some(path) = text
        .split("bind source path does not exist: ")
        .nth(1)
        .map(|p| p.trim().to_string())
    else {
        return e;
    };
    let node = req
        .labels
        .get(shoal_proto::labels::NODE)
        .map(String::as_str)
        .unwrap_or("this node");
    RuntimeError::Engine(format!(
        "the bind mount's source {path} does not exist on node {node}: create it there, or pin the service to a node that has it"
    ))
}

fn engine(e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::NotFound(message),
        BollardError::DockerResponseServerError { message, .. } => RuntimeError::Engine(message),
        BollardError::DockerStreamError { error } => RuntimeError::Engine(error),
        other => RuntimeError::Engine(other.to_string()),
    }
}

fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// `repo[:tag]` / `repo@digest` split as the pull API wants (an empty tag pulls all tags).
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, digest);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

impl DockerRuntime {
    /// Whether any container, in any state (created and not yet started too), is on the
    /// network.
    async fn network_used(&self, name: &str) -> RuntimeResult<bool> {
        Ok(!self.list_all("network", name).await?.is_empty())
    }

    /// Every container, in any state, matching one `docker ps --filter KEY=VALUE`.
    async fn list_all(
        &self,
        key: &str,
        value: &str,
    ) -> RuntimeResult<Vec<bollard::models::ContainerSummary>> {
        let filters: HashMap<String, Vec<String>> = [(key.to_string(), vec![value.to_string()])]
            .into_iter()
            .collect();
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters,
                ..Default::default()
            }))
            .await
            .map_err(engine)
    }

    /// `None`: no such network (or, with `recreate`, one on the wrong subnet that no
    /// container uses and no other cluster made: it is removed, to be created again on
    /// the right one). `Some(gateway)` otherwise; a network on another subnet is kept,
    /// with a warning.
    async fn network_gateway(
        &self,
        name: &str,
        subnet: Option<Subnet>,
        recreate: bool,
        cluster: Option<&str>,
    ) -> RuntimeResult<Option<Option<Ipv4Addr>>> {
        let net = match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions<String>>)
            .await
        {
            Ok(n) => n,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(engine(e)),
        };
        // Another cluster's network is never removed (its containers may be stopped,
        // not gone); one of the same name is used as it is.
        let theirs = net
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::CLUSTER))
            .is_some_and(|c| Some(c.as_str()) != cluster);
        let config = net
            .ipam
            .and_then(|i| i.config)
            .and_then(|c| c.into_iter().next());
        let has: Option<Subnet> = config
            .as_ref()
            .and_then(|c| c.subnet.as_deref())
            .and_then(|s| s.parse().ok());
        if let (Some(want), Some(has)) = (subnet, has) {
            let fallback = self
                .fallback_networks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(name);
            if want != has && recreate && !fallback && !theirs && !self.network_used(name).await? {
                info!(network = %name, %want, %has, "recreating the unused network on its cluster subnet");
                match self.docker.remove_network(name).await {
                    Ok(()) => return Ok(None),
                    Err(e) if status_of(&e) == Some(404) => return Ok(None),
                    Err(e) => warn!(network = %name, error = %e, "cannot remove the network"),
                }
            } else if want != has {
                warn!(network = %name, %want, %has, another_cluster = theirs,
                    "the network has another subnet; keeping it (other nodes cannot route to it)");
            }
        }
        Ok(Some(
            config.and_then(|c| c.gateway).and_then(|g| g.parse().ok()),
        ))
    }
}

impl DockerRuntime {
    async fn is_running(&self, id: &str) -> RuntimeResult<bool> {
        Ok(self.inspect(id).await?.state == ContainerState::Running)
    }

    /// Wait until the container is no longer running, at most `grace`.
    async fn wait_exit(&self, id: &str, grace: Duration) -> bool {
        let mut wait = self.docker.wait_container(
            id,
            Some(WaitContainerOptions {
                condition: "not-running",
            }),
        );
        // A non-zero exit shows up as an error item; either way the container stopped.
        tokio::time::timeout(grace, wait.next()).await.is_ok()
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn ensure_image(&self, image: &str) -> RuntimeResult<()> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => images::pull(&self.docker, image).await,
            Err(e) => Err(engine(e)),
        }
    }

    async fn pull_image(&self, image: &str) -> RuntimeResult<()> {
        images::pull(&self.docker, image).await
    }

    async fn images(&self) -> RuntimeResult<Vec<ImageInfo>> {
        images::list(&self.docker, &self.image_layers).await
    }

    async fn image(&self, reference: &str) -> RuntimeResult<Option<ImageInfo>> {
        images::inspect(&self.docker, reference).await
    }

    async fn load_image(&self, tar: &std::path::Path) -> RuntimeResult<()> {
        images::load(&self.docker, tar).await
    }

    async fn remove_image(&self, reference: &str) -> RuntimeResult<()> {
        images::remove(&self.docker, reference).await
    }

    async fn loads_need_every_layer(&self) -> bool {
        images::loads_need_every_layer(&self.docker, &self.image_store).await
    }

    async fn create(&self, req: &ContainerRequest) -> RuntimeResult<String> {
        // Older engines drop annotations without a word; say so instead.
        if !req.options.annotations.is_empty() {
            let v = self.docker.client_version();
            if v.major_version == 1 && v.minor_version < 43 {
                return Err(RuntimeError::Engine(format!(
                    "annotations need Docker API 1.43 (Docker 24) or later; this node's engine speaks {}.{}",
                    v.major_version, v.minor_version
                )));
            }
        }
        let options = CreateContainerOptions {
            name: req.name.clone(),
            platform: req.options.platform.clone(),
        };
        let created = self
            .docker
            .create_container(Some(options), docker_config(req))
            .await
            .map_err(|e| missing_bind_source(engine(e), req))?;
        // API 1.41 attaches one network at create: connect the others before start.
        for extra in &req.extra_networks {
            let connect = ConnectNetworkOptions {
                container: created.id.clone(),
                endpoint_config: EndpointSettings {
                    aliases: Some(extra.aliases.clone()),
                    ..Default::default()
                },
            };
            if let Err(e) = self.docker.connect_network(&extra.network, connect).await {
                let _ = self.remove(&created.id).await;
                return Err(RuntimeError::Engine(format!(
                    "connect to network {}: {}",
                    extra.network,
                    engine(e)
                )));
            }
        }
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> RuntimeResult<()> {
        self.docker
            .start_container(id, None::<StartContainerOptions<String>>)
            .await
            .map_err(engine)
    }

    async fn stop(&self, id: &str, grace: Duration, signal: Option<&str>) -> RuntimeResult<()> {
        let Some(signal) = signal else {
            let t = i64::try_from(grace.as_secs_f64().ceil() as u64).unwrap_or(i64::MAX);
            return match self
                .docker
                .stop_container(id, Some(StopContainerOptions { t }))
                .await
            {
                // 304: already stopped.
                Err(e) if status_of(&e) == Some(304) => Ok(()),
                other => other.map_err(engine),
            };
        };
        if !self.is_running(id).await? {
            return Ok(());
        }
        match self
            .docker
            .kill_container(id, Some(KillContainerOptions { signal }))
            .await
        {
            Err(e) if status_of(&e) == Some(409) => return Ok(()), // not running any more
            other => other.map_err(engine)?,
        }
        if self.wait_exit(id, grace).await {
            return Ok(());
        }
        match self
            .docker
            .kill_container(id, Some(KillContainerOptions { signal: "SIGKILL" }))
            .await
        {
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            other => other.map_err(engine),
        }?;
        self.wait_exit(id, Duration::from_secs(10)).await;
        Ok(())
    }

    async fn remove(&self, id: &str) -> RuntimeResult<()> {
        self.docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    v: true,
                    force: true,
                    link: false,
                }),
            )
            .await
            .map_err(engine)
    }

    async fn list_managed(&self) -> RuntimeResult<Vec<ContainerInfo>> {
        let list = self.list_all("label", labels::TASK).await?;
        Ok(list.into_iter().map(from_summary).collect())
    }

    async fn inspect(&self, id: &str) -> RuntimeResult<ContainerInfo> {
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map(from_inspect)
            .map_err(engine)
    }

    async fn logs(&self, id: &str, follow: bool, tail: Option<u64>) -> RuntimeResult<LogStream> {
        // Fail early for a missing container rather than inside the stream.
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(engine)?;
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.map_or_else(|| "all".to_string(), |n| n.to_string()),
            ..Default::default()
        };
        let stream = self
            .docker
            .logs(id, Some(options))
            .map_err(engine)
            .try_filter_map(|out| async move {
                Ok(match out {
                    LogOutput::StdErr { message } => Some(LogFrame {
                        stderr: true,
                        data: message,
                    }),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        Some(LogFrame {
                            stderr: false,
                            data: message,
                        })
                    }
                    LogOutput::StdIn { .. } => None,
                })
            });
        Ok(stream.boxed())
    }

    async fn ensure_network(&self, key: &str) -> RuntimeResult<String> {
        self.ensure_network_in(key, None, None).await?;
        Ok(network_name(key))
    }

    async fn ensure_network_in(
        &self,
        key: &str,
        subnet: Option<Subnet>,
        cluster: Option<&str>,
    ) -> RuntimeResult<Option<Ipv4Addr>> {
        let name = network_name(key);
        // A stack's own network is labelled with its stack, an external one with its key;
        // both with the cluster that made it.
        let mut network_labels: HashMap<String, String> = HashMap::new();
        match shoal_proto::network::stack_of(key) {
            Some(stack) => network_labels.insert(labels::STACK.to_string(), stack.to_string()),
            None => network_labels.insert(NETWORK_LABEL.to_string(), key.to_string()),
        };
        if let Some(cluster) = cluster {
            network_labels.insert(labels::CLUSTER.to_string(), cluster.to_string());
        }
        let _one_at_a_time = self.network_lock.lock().await;
        if let Some(gateway) = self.network_gateway(&name, subnet, true, cluster).await? {
            return Ok(gateway);
        }
        let create = |subnet: Option<Subnet>| CreateNetworkOptions {
            name: name.clone(),
            check_duplicate: true,
            driver: "bridge".to_string(),
            labels: network_labels.clone(),
            ipam: Ipam {
                config: subnet.map(|s| {
                    vec![IpamConfig {
                        subnet: Some(s.to_string()),
                        gateway: Some(s.gateway().to_string()),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = match self.docker.create_network(create(subnet)).await {
            Err(e) if subnet.is_some() && status_of(&e) != Some(409) => {
                // Typically "Pool overlaps": another network of this engine holds the
                // subnet (two clusters, or two agents, on one engine). Containers still
                // run and find each other on this node; other nodes cannot route here.
                warn!(network = %name, subnet = ?subnet, error = %e,
                    "cannot create the network with its cluster subnet; using one Docker picks");
                self.fallback_networks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone());
                self.docker.create_network(create(None)).await
            }
            other => other,
        };
        match created {
            Ok(_) => {}
            // Created concurrently by another start.
            Err(e) if status_of(&e) == Some(409) => {}
            Err(e) => return Err(engine(e)),
        }
        Ok(self
            .network_gateway(&name, subnet, false, cluster)
            .await?
            .flatten())
    }

    async fn container_pid(&self, id: &str) -> Option<u32> {
        let c = self.docker.inspect_container(id, None).await.ok()?;
        c.state?
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
    }

    async fn list_networks(&self) -> RuntimeResult<Vec<NetworkInfo>> {
        networks::list(&self.docker).await
    }

    async fn remove_network(&self, key: &str) -> RuntimeResult<()> {
        match self.docker.remove_network(&network_name(key)).await {
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            other => other.map_err(engine),
        }
    }

    async fn resources(&self) -> RuntimeResult<NodeResources> {
        let info = self.docker.info().await.map_err(engine)?;
        Ok(NodeResources {
            nano_cpus: info.ncpu.unwrap_or(0).saturating_mul(1_000_000_000),
            memory_bytes: info.mem_total.unwrap_or(0),
        })
    }

    async fn stats(&self, id: &str) -> RuntimeResult<ContainerStats> {
        stats::read(&self.docker, id).await
    }

    async fn create_volume(&self, req: &VolumeRequest) -> RuntimeResult<VolumeInfo> {
        volumes::create(&self.docker, req).await
    }

    async fn inspect_volume(&self, name: &str) -> RuntimeResult<VolumeInfo> {
        volumes::inspect(&self.docker, name).await
    }

    async fn list_volumes(&self, node: &str) -> RuntimeResult<Vec<VolumeInfo>> {
        volumes::list(&self.docker, node).await
    }

    async fn remove_volume(&self, name: &str) -> RuntimeResult<()> {
        volumes::remove(&self.docker, name).await
    }

    async fn running_with_volume(&self, name: &str) -> RuntimeResult<Vec<String>> {
        let list = self.list_all("volume", name).await?;
        Ok(list
            .into_iter()
            .filter(|c| c.state.as_deref() == Some("running"))
            .filter_map(|c| c.id)
            .collect())
    }

    async fn pause(&self, id: &str) -> RuntimeResult<()> {
        self.docker.pause_container(id).await.map_err(engine)
    }

    async fn unpause(&self, id: &str) -> RuntimeResult<()> {
        self.docker.unpause_container(id).await.map_err(engine)
    }

    async fn paused(&self, node: &str) -> RuntimeResult<Vec<String>> {
        let filters: HashMap<String, Vec<String>> = [
            ("status".to_string(), vec!["paused".to_string()]),
            (
                "label".to_string(),
                vec![format!("{}={node}", labels::NODE)],
            ),
        ]
        .into();
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters,
                ..Default::default()
            }))
            .await
            .map_err(engine)?;
        Ok(list
            .into_iter()
            .filter(|c| c.state.as_deref() == Some("paused"))
            .filter(|c| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get(labels::NODE))
                    .map(String::as_str)
                    == Some(node)
            })
            .filter_map(|c| c.id)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_reference("localhost:5000/a/b"),
            ("localhost:5000/a/b", "latest")
        );
        assert_eq!(
            split_reference("localhost:5000/a/b:v2"),
            ("localhost:5000/a/b", "v2")
        );
        assert_eq!(split_reference("a@sha256:00"), ("a", "sha256:00"));
    }

    #[test]
    fn a_missing_bind_source_is_named_with_its_node() {
        let req = ContainerRequest {
            labels: [(shoal_proto::labels::NODE.to_string(), "n2".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let refused = RuntimeError::Engine(
            "invalid mount config for type \"bind\": bind source path does not exist: /srv/data"
                .into(),
        );
        let e = missing_bind_source(refused, &req).to_string();
        assert!(
            e.starts_with("the bind mount's source /srv/data does not exist on node n2"),
            "{e}"
        );
        let other = RuntimeError::Engine("no space left on device".into());
        assert_eq!(
            missing_bind_source(other, &req).to_string(),
            "no space left on device"
        );
    }
}
