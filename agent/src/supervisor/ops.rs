//! The supervisor's operations on one task's container: get its image (from the
//! engine, the cluster's store or its registry: [`crate::images`]), create and start (with
//! its networks, secrets and GPUs), stop, remove. Each runs in its own task and reports
//! through the supervisor's channels.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::task::TaskState;
use tokio::sync::mpsc;
use tracing::{instrument, warn};

use super::{modes, OpEvent};
use crate::model::{Assignment, TaskReport};
use crate::runtime::{
    container_request, network_name, with_volume_names, ContainerInfo, ContainerRequest,
    ContainerRuntime, RuntimeError, TaskIdentity,
};

/// What a starting container needs besides its assignment: the cluster network, where
/// secrets go, how GPUs are named, the node's standby copies of volumes, its images.
pub(super) struct StartNet {
    /// Its networks in attachment order, with this node's subnet of each.
    pub networks: Vec<(String, Option<crate::net::Subnet>)>,
    pub dns: Option<Arc<tokio::sync::Mutex<crate::net::dns::Dns>>>,
    pub secrets: Option<Arc<crate::secrets::SecretStore>>,
    pub gpu_mode: crate::runtime::GpuDeviceMode,
    pub standbys: Option<crate::volumes::standby::Standbys>,
    pub images: Arc<crate::images::Images>,
    /// This cluster's id, labelling the container ([`super::SupervisorConfig::cluster`]).
    pub cluster: Option<String>,
    /// Held shared from the networks' check to the container's start (see
    /// [`super::Supervisor`]'s `network_gate`).
    pub network_gate: Arc<tokio::sync::RwLock<()>>,
}

/// Get the image, create and start one task's container, reporting `starting`, or `failed` with
/// the reason. Returns the container as it is afterwards.
#[instrument(skip_all, fields(task = %a.task.task_id, service = %a.task.service))]
pub(super) async fn start_task(
    runtime: &dyn ContainerRuntime,
    a: &Assignment,
    existing: Option<String>,
    node: &str,
    net: &StartNet,
    tx: &mpsc::UnboundedSender<OpEvent>,
) -> Option<ContainerInfo> {
    let task_id = &a.task.task_id;
    let report = |r: TaskReport| {
        let _ = tx.send(OpEvent::Report(r));
    };
    report(TaskReport::new(task_id, TaskState::Starting).container(existing.as_deref()));
    let fail = |id: Option<&str>, error: String| {
        warn!(%error, "task failed to start");
        report(
            TaskReport::new(task_id, TaskState::Failed)
                .container(id)
                .error(error),
        );
    };
    // Written before every start: after a reboot the tmpfs is empty again.
    let secret_mounts = if a.secrets.is_empty() {
        Vec::new()
    } else {
        let written = match &net.secrets {
            Some(store) => store.write(task_id, &a.secrets),
            None => Err("this agent keeps no secrets".to_string()),
        };
        match written {
            Ok(m) => m,
            Err(e) => {
                fail(existing.as_deref(), format!("secrets: {e}"));
                return match existing {
                    Some(id) => runtime.inspect(&id).await.ok(),
                    None => None,
                };
            }
        }
    };
    // Taken once the image and volumes are there (a long pull must not hold a removal
    // back), kept until the container runs on its networks.
    let mut gate = None;
    let id = match existing {
        Some(id) => id,
        None => {
            let image = &a.spec.image;
            if let Err(e) = net.images.ensure(runtime, image, a.spec.pull_policy).await {
                fail(None, e.to_string());
                return None;
            }
            // Before the container: Docker would make a missing one at create, unlabelled.
            for v in a.volumes.iter().filter(|v| !v.external) {
                let standbys = net.standbys.as_ref();
                let ensured = crate::volumes::ensure(runtime, &a.task.stack, node, v, standbys);
                if let Err(e) = ensured.await {
                    fail(None, format!("create volume {}: {e}", v.docker_name));
                    return None;
                }
            }
            // `host`, `none`, `container:`, `service:`: another network namespace, none
            // of the cluster's networks and none of the agent's DNS.
            let own_network = a.spec.container.network_mode.is_none();
            let mut first_gateway = None;
            let networks = if own_network { &net.networks[..] } else { &[] };
            gate = Some(net.network_gate.read().await);
            for (i, (key, subnet)) in networks.iter().enumerate() {
                match runtime
                    .ensure_network_in(key, *subnet, net.cluster.as_deref())
                    .await
                {
                    Ok(g) if i == 0 => first_gateway = g.map(|g| (key.clone(), g)),
                    Ok(_) => {}
                    Err(e) => {
                        fail(None, format!("create network {}: {e}", network_name(key)));
                        return None;
                    }
                }
            }
            let names = a
                .volumes
                .iter()
                .map(|v| (v.name.clone(), v.docker_name.clone()))
                .collect();
            let mut req =
                with_volume_names(container_request(&a.task, &a.spec, node), &a.spec, &names);
            // The agent's DNS answers the names of the container's networks with ready
            // replicas cluster-wide; without it (no root, no gateway) Docker's aliases
            // answer on this node.
            if let (Some(dns), Some((key, gateway))) = (&net.dns, first_gateway) {
                if dns.lock().await.serve(&key, gateway).await {
                    req.dns = vec![gateway.to_string()];
                    req.aliases.clear();
                    for extra in &mut req.extra_networks {
                        extra.aliases.clear();
                    }
                }
            }
            if !own_network {
                req.dns.clear();
                req.aliases.clear();
                req.extra_networks.clear();
            }
            // With the agent's resolver, `dns:` servers are the upstreams of the
            // container's addresses (the supervisor keeps them: modes::dns_upstreams).
            let relayed = !req.dns.is_empty();
            if let Err(e) = modes::check_dns(&mut req, relayed) {
                fail(None, e);
                return None;
            }
            if let Some(cluster) = &net.cluster {
                req.labels
                    .insert(shoal_proto::labels::CLUSTER.to_string(), cluster.clone());
            }
            let cluster = net.cluster.as_deref();
            if let Err(e) = join_namespaces(runtime, &mut req, &a.task, node, cluster).await {
                fail(None, e);
                return None;
            }
            req.mounts.extend(secret_mounts);
            let req = crate::runtime::with_gpu_devices(req, &a.spec, &a.gpus, &net.gpu_mode);
            match runtime.create(&req).await {
                Ok(id) => id,
                Err(e) => {
                    fail(None, format!("create container {}: {e}", req.name));
                    return None;
                }
            }
        }
    };
    let _gate = match gate {
        Some(g) => g,
        None => net.network_gate.read().await,
    };
    if let Err(e) = runtime.start(&id).await {
        fail(Some(&id), format!("start container: {e}"));
        return runtime.inspect(&id).await.ok();
    }
    runtime.inspect(&id).await.ok()
}

/// Resolve `service:NAME` in the request's network, IPC and PID modes against the
/// node's containers as they are now.
async fn join_namespaces(
    runtime: &dyn ContainerRuntime,
    req: &mut ContainerRequest,
    task: &TaskIdentity,
    node: &str,
    cluster: Option<&str>,
) -> Result<(), String> {
    let modes = [
        req.network_mode.as_deref(),
        req.options.ipc.as_deref(),
        req.options.pid.as_deref(),
    ];
    if !modes.iter().flatten().any(|m| m.starts_with("service:")) {
        return Ok(());
    }
    let containers: Vec<ContainerInfo> = runtime
        .list_managed()
        .await
        .map_err(|e| format!("list containers to join a service's namespaces: {e}"))?
        .into_iter()
        .filter(|c| crate::reconcile::is_ours(c, node, cluster))
        .collect();
    modes::resolve_request(req, task, node, &containers)
}

pub(super) async fn stop_container(
    runtime: &dyn ContainerRuntime,
    id: &str,
    running: bool,
    grace: Duration,
    signal: Option<&str>,
) {
    if !running {
        return;
    }
    match runtime.stop(id, grace, signal).await {
        Ok(()) | Err(RuntimeError::NotFound(_)) => {}
        Err(e) => warn!(container = %id, error = %e, "cannot stop container"),
    }
}

/// Whether the container is gone afterwards.
pub(super) async fn remove_container(runtime: &dyn ContainerRuntime, id: &str) -> bool {
    match runtime.remove(id).await {
        Ok(()) | Err(RuntimeError::NotFound(_)) => true,
        Err(e) => {
            warn!(container = %id, error = %e, "cannot remove container");
            false
        }
    }
}
