//! The long-lived bidirectional session with the controller leader.
//!
//! Connects to the controller addresses in turn (capped exponential backoff with jitter; addresses
//! where nothing answers are skipped at once, waiting only between rounds), follows a
//! leader hint (`x-shoal-leader` metadata on `FAILED_PRECONDITION`/`UNAVAILABLE`), and per
//! session: asks the supervisor to fence and snapshot, sends `Hello` with that snapshot,
//! then heartbeats, task status transitions, log chunks, the node's GPUs, device
//! paths and what overlaps the cluster's pool (when they change), its volumes and
//! images (after the Hello, then when they change), the metrics of its replicas of
//! autoscaled services (every interval while some run here) and every replica's
//! container figures with the GPUs' (every `STATS_INTERVAL_MS`) up; assignments and log
//! requests down. A lost session never touches containers: the agent reconnects and says
//! Hello again with what runs now.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::pb;
use shoal_proto::pb::agent_session_client::AgentSessionClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{debug, info, instrument, warn};

use crate::convert::{self, HelloInfo};
use crate::logs::LogStreams;
use crate::model::{AssignmentSet, ControllerEvent, LogChunk, SetUpdate, TaskReport};
use crate::runtime::ContainerRuntime;
use crate::supervisor::{Event, SupervisorHandle};
use crate::volumes::transfer::Transfers;
use shoal_proto::task::TaskState;

pub use shoal_proto::LEADER_HINT;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub controllers: Vec<String>,
    pub name: String,
    pub advertise: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub heartbeat_interval: Duration,
    /// The node's GPUs as last discovered; a change is reported on the session.
    pub gpus: tokio::sync::watch::Receiver<Vec<crate::gpu::GpuDevice>>,
    /// The node's device paths as last scanned; a change is reported on the session.
    pub devices: tokio::sync::watch::Receiver<Vec<String>>,
    /// What overlaps the cluster's pool on the node as last scanned
    /// ([`crate::net::conflicts`]); a change is reported on the session.
    pub conflicts: tokio::sync::watch::Receiver<Vec<String>>,
    /// Where the cluster's address space from each assignment set goes, for the
    /// conflict scan.
    pub space: tokio::sync::watch::Sender<crate::net::conflicts::ClusterSpace>,
    /// Touched on every message from the controller (the disconnect policy reads it).
    pub contact: crate::disconnect::Contact,
    /// The node's certificate; `None` only against in-process fake controllers.
    pub tls: Option<shoal_tls::ClientTls>,
    /// Where standby transfers keep the node's standby copies.
    pub standbys: crate::volumes::standby::Standbys,
    /// Containers the transfers paused and resumed (shared with the supervisor).
    pub thawed: crate::volumes::thawed::Thawed,
    /// The supervisor's images: a load from the cluster's store is reported at once.
    pub images: Arc<crate::images::Images>,
    /// Measures the replicas of autoscaled services; hears each assignment set.
    pub autoscale: crate::autoscale::Autoscaler,
    /// Every replica's container figures, a new pass every `STATS_INTERVAL_MS`; each
    /// goes up with the GPUs' ([`crate::stats::report`]).
    pub stats: tokio::sync::watch::Receiver<Arc<crate::stats::Measured>>,
}

enum Ended {
    Shutdown,
    /// Talk to this address instead.
    Leader(String),
    /// `established`: a Hello went through before it broke.
    Failed {
        error: String,
        established: bool,
    },
    /// The cluster revoked this node's certificate (`shoal node rm`).
    Revoked(String),
    /// Nothing answered at the address (refused, timed out, TLS failed).
    Unreachable(String),
}

/// How long a removed node waits for its containers to be stopped before it exits.
const REMOVED_STOP_BOUND: Duration = Duration::from_secs(60);

/// Keep a session open until `shutdown`.
pub async fn run(
    cfg: SessionConfig,
    runtime: Arc<dyn ContainerRuntime>,
    supervisor: SupervisorHandle,
    mut events: mpsc::UnboundedReceiver<Event>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !cfg.controllers.is_empty(),
        "no controller address given: pass --addr HOST:PORT"
    );
    let mut backoff = BACKOFF_MIN;
    let mut next = 0usize;
    let mut hint: Option<String> = None;
    let mut hops = 0u32;
    let transfer_limit = crate::volumes::transfer::transfer_limit();
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let addr = match hint.take() {
            Some(h) => h,
            None => {
                let a = cfg.controllers[next % cfg.controllers.len()].clone();
                next += 1;
                a
            }
        };
        let ended = session(
            &cfg,
            &addr,
            &runtime,
            &supervisor,
            &mut events,
            &transfer_limit,
            &shutdown,
        )
        .await;
        match ended {
            Ended::Shutdown => return Ok(()),
            Ended::Leader(leader) => {
                info!(from = %addr, to = %leader, "following leader hint");
                hops += 1;
                // Two confused followers must not bounce the agent in a hot loop.
                if hops > 3 {
                    sleep(jittered(backoff), &shutdown).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                hint = Some(leader);
            }
            Ended::Revoked(error) => return removed(&supervisor, &error).await,
            Ended::Failed { error, established } => {
                if established {
                    warn!(controller = %addr, %error, "session lost; reconnecting");
                    backoff = BACKOFF_MIN;
                    hops = 0;
                } else {
                    debug!(controller = %addr, %error, "cannot open session");
                }
                sleep(jittered(backoff), &shutdown).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Ended::Unreachable(error) => {
                debug!(controller = %addr, %error, "controller unreachable");
                // An address where nothing answers costs the controllers nothing: the
                // next one is tried at once, and the backoff waits between rounds of
                // the list, so with most controllers down the one that runs is found
                // within a round.
                if next.is_multiple_of(cfg.controllers.len()) {
                    sleep(jittered(backoff), &shutdown).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

async fn sleep(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

fn leader_hint(status: &tonic::Status) -> Option<String> {
    if !matches!(
        status.code(),
        tonic::Code::FailedPrecondition | tonic::Code::Unavailable
    ) {
        return None;
    }
    status
        .metadata()
        .get(LEADER_HINT)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// This node was removed from the cluster: its replicas were replaced elsewhere, so its
/// containers are stopped and removed (an empty assignment set fences them all), and
/// the agent ends with what to do to bring the node back.
async fn removed(supervisor: &SupervisorHandle, error: &str) -> anyhow::Result<()> {
    warn!(%error, "this node was removed from the cluster; stopping its containers");
    supervisor.assign(crate::model::AssignmentSet::default());
    let deadline = tokio::time::Instant::now() + REMOVED_STOP_BOUND;
    loop {
        let left = supervisor.containers().await.len();
        if left == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(left, "containers still there after {REMOVED_STOP_BOUND:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!(
        "{error}: its containers were stopped. To bring this node back, delete DATA_DIR/tls and start the agent with a join token (`shoal token show agent`)"
    )
}

fn ended_by(status: tonic::Status, established: bool) -> Ended {
    if status.code() == tonic::Code::PermissionDenied && status.message().contains("was revoked") {
        return Ended::Revoked(status.message().to_string());
    }
    if status.message().contains("wire protocol") {
        // An upgrade is half done: said at warn, every attempt, until it is finished.
        warn!(error = %status.message(), "the controller cannot work with this agent's version");
    }
    match leader_hint(&status) {
        Some(l) => Ended::Leader(l),
        None => Ended::Failed {
            error: format!("{}: {}", status.code(), status.message()),
            established,
        },
    }
}

async fn connect(
    endpoint: Endpoint,
    tls: Option<&shoal_tls::ClientTls>,
) -> Result<tonic::transport::Channel, String> {
    match tls {
        Some(tls) => tls.connect(endpoint).await,
        None => endpoint.connect().await,
    }
    .map_err(|e| shoal_tls::join::error_chain(&e))
}

/// `backoff` less up to half of it, at random: after a controller fails over, 1,000
/// agents retrying on one schedule would all reconnect in the same instant.
fn jittered(backoff: Duration) -> Duration {
    backoff.mul_f64(1.0 - fastrand::f64() / 2.0)
}

/// The local IP this host uses to reach `addr` (no packet is sent).
async fn source_ip(addr: &str) -> Option<IpAddr> {
    let target: SocketAddr = tokio::net::lookup_host(addr).await.ok()?.next()?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[instrument(name = "session", skip_all, fields(node = %cfg.name, controller = %addr))]
async fn session(
    cfg: &SessionConfig,
    addr: &str,
    runtime: &Arc<dyn ContainerRuntime>,
    supervisor: &SupervisorHandle,
    events: &mut mpsc::UnboundedReceiver<Event>,
    transfer_limit: &Arc<tokio::sync::Semaphore>,
    shutdown: &CancellationToken,
) -> Ended {
    let failed = |error: String| Ended::Failed {
        error,
        established: false,
    };
    let endpoint = match Endpoint::from_shared(format!("http://{addr}"))
        .and_then(|e| e.user_agent(shoal_proto::protocol::user_agent()))
    {
        Ok(e) => e
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true),
        Err(e) => return failed(format!("bad controller address {addr:?}: {e}")),
    };
    let channel = tokio::select! {
        _ = shutdown.cancelled() => return Ended::Shutdown,
        c = connect(endpoint, cfg.tls.as_ref()) => match c {
            Ok(c) => c,
            Err(e) => return Ended::Unreachable(format!("connect: {e}")),
        },
    };
    let address = match &cfg.advertise {
        Some(a) => a.clone(),
        None => source_ip(addr)
            .await
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
    };
    let resources = match runtime.resources().await {
        Ok(r) => r,
        Err(e) => return failed(format!("read node resources: {e}")),
    };

    // Fence and snapshot; reports queued before the snapshot are superseded by it.
    supervisor.sync();
    let observed = loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ended::Shutdown,
            ev = events.recv() => match ev {
                None => return Ended::Shutdown,
                Some(Event::Snapshot(s)) => break s,
                Some(Event::Report(_) | Event::VolumesChanged) => {}
            },
        }
    };
    // Whatever changes after this snapshot is reported on the session.
    let mut gpus = cfg.gpus.clone();
    let mut devices = cfg.devices.clone();
    let mut conflicts = cfg.conflicts.clone();
    let hello = HelloInfo {
        name: cfg.name.clone(),
        address,
        cpus: resources.nano_cpus as f64 / 1e9,
        memory_bytes: resources.memory_bytes,
        labels: cfg.labels.clone(),
        observed,
        gpus: gpus.borrow_and_update().clone(),
        devices: devices.borrow_and_update().clone(),
        platform: crate::devices::platform(),
        conflicts: conflicts.borrow_and_update().clone(),
    };
    let (out, out_rx) = mpsc::channel::<pb::AgentMessage>(1024);
    if out.send(convert::hello_message(&hello)).await.is_err() {
        return failed("session closed".into());
    }
    let data_channel = channel.clone();
    let mut client = AgentSessionClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let response = tokio::select! {
        _ = shutdown.cancelled() => return Ended::Shutdown,
        r = client.session(ReceiverStream::new(out_rx)) => r,
    };
    let mut inbound = match response {
        Ok(r) => r.into_inner(),
        Err(status) => return ended_by(status, false),
    };
    cfg.contact.touch();
    info!(observed = hello.observed.len(), "session open");

    let (log_tx, mut log_rx) = mpsc::channel::<LogChunk>(256);
    let mut logs = LogStreams::new(runtime.clone(), log_tx);
    // The node's volumes now (after the Hello), then periodically and on changes; the
    // reporter ends with the session (a dropped JoinSet aborts), transfers run on.
    let volumes_changed = Arc::new(tokio::sync::Notify::new());
    let mut reporter = tokio::task::JoinSet::new();
    reporter.spawn(crate::volumes::report::run_reporter(
        runtime.clone(),
        cfg.name.clone(),
        out.clone(),
        volumes_changed.clone(),
    ));
    // The node's images likewise, when they changed since this session's last report.
    reporter.spawn(crate::images::report::run_reporter(
        runtime.clone(),
        out.clone(),
        cfg.images.loaded(),
    ));
    // The metrics of autoscaled services' replicas, every interval while some run here.
    reporter.spawn(cfg.autoscale.clone().run_reporter(out.clone()));
    // Every replica's figures and the GPUs', after each measuring pass.
    reporter.spawn(crate::stats::report::run_reporter(
        cfg.name.clone(),
        cfg.stats.clone(),
        cfg.gpus.clone(),
        out.clone(),
    ));
    let mut transfers = Transfers::new(
        runtime.clone(),
        cfg.name.clone(),
        data_channel,
        out.clone(),
        volumes_changed.clone(),
        transfer_limit.clone(),
        cfg.standbys.clone(),
        cfg.thawed.clone(),
    );
    let mut heartbeat = tokio::time::interval(cfg.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    // The assignments as this session last said them: what its deltas apply to.
    let mut held: Option<AssignmentSet> = None;
    let lost = |error: String| Ended::Failed {
        error,
        established: true,
    };
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return Ended::Shutdown,
            _ = heartbeat.tick() => {
                seq += 1;
                convert::heartbeat_message(seq, &gpus.borrow())
            }
            ev = events.recv() => match ev {
                None => return Ended::Shutdown,
                Some(Event::Report(r)) => convert::status_message(&r),
                Some(Event::Snapshot(_)) => continue,
                Some(Event::VolumesChanged) => {
                    volumes_changed.notify_one();
                    continue;
                }
            },
            Some(chunk) = log_rx.recv() => convert::log_message(chunk),
            Ok(()) = gpus.changed() => convert::gpu_report_message(&gpus.borrow_and_update()),
            Ok(()) = devices.changed() => {
                convert::device_report_message(&devices.borrow_and_update())
            }
            Ok(()) = conflicts.changed() => {
                convert::conflict_report_message(&conflicts.borrow_and_update())
            }
            m = inbound.message() => match m {
                Ok(Some(m)) => {
                    cfg.contact.touch();
                    let (mut session, out) = (Session { logs: &mut logs, transfers: &mut transfers, held: &mut held }, &out);
                    if let Err(e) = handle(m, cfg, supervisor, &mut session, out).await {
                        return lost(e);
                    }
                    continue;
                }
                Ok(None) => return lost("controller closed the session".into()),
                Err(status) => return ended_by(status, true),
            },
        };
        if out.send(msg).await.is_err() {
            return lost("session stream closed".into());
        }
    }
}

/// What one session keeps between the controller's messages.
struct Session<'a> {
    logs: &'a mut LogStreams,
    transfers: &'a mut Transfers,
    held: &'a mut Option<AssignmentSet>,
}

/// Acts on one controller message; an error ends the session (a delta this agent cannot
/// apply: the next session starts with a full set).
async fn handle(
    msg: pb::ControllerMessage,
    cfg: &SessionConfig,
    supervisor: &SupervisorHandle,
    session: &mut Session<'_>,
    out: &mpsc::Sender<pb::AgentMessage>,
) -> Result<(), String> {
    let Session {
        logs,
        transfers,
        held,
    } = session;
    let Some((event, invalid)) = convert::controller_event(msg) else {
        return Ok(());
    };
    for bad in invalid {
        warn!(task = %bad.task_id, reason = %bad.reason, "invalid assignment");
        let r = TaskReport::new(&bad.task_id, TaskState::Failed).error(bad.to_string());
        let _ = out.send(convert::status_message(&r)).await;
    }
    match event {
        ControllerEvent::Assignments(update) => {
            let set = match (update, held.take()) {
                (SetUpdate::Full(set), _) => set,
                (SetUpdate::Delta(delta), Some(mut set)) => {
                    set.apply(delta)?;
                    set
                }
                (SetUpdate::Delta(delta), None) => {
                    return Err(format!(
                        "the controller sent a change to assignments version {} before any set",
                        delta.base
                    ))
                }
            };
            **held = Some(set.clone());
            let now = crate::net::conflicts::ClusterSpace::of(&set.mesh);
            cfg.space.send_if_modified(|known| {
                let changed = *known != now;
                *known = now;
                changed
            });
            cfg.autoscale.assign(&set);
            supervisor.assign(set)
        }
        ControllerEvent::Logs(req) => {
            let containers = supervisor.containers().await;
            logs.start(req, &containers);
        }
        ControllerEvent::CancelLogs(id) => logs.cancel(id),
        ControllerEvent::VolumeTransfer(t) => transfers.start(t),
        ControllerEvent::InvalidTransfer { transfer_id, error } => {
            warn!(transfer = transfer_id, %error, "invalid volume transfer");
            let done = crate::model::TransferDone {
                transfer_id,
                error: Some(error),
                ..Default::default()
            };
            let _ = out.send(convert::transfer_done_message(&done)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jittered_backoff_stays_between_half_and_all_of_it_and_varies() {
        let waits: Vec<Duration> = (0..200).map(|_| jittered(BACKOFF_MAX)).collect();
        assert!(waits
            .iter()
            .all(|w| *w >= BACKOFF_MAX / 2 && *w <= BACKOFF_MAX));
        let distinct: std::collections::BTreeSet<Duration> = waits.iter().copied().collect();
        assert!(
            distinct.len() > 100,
            "{} distinct waits of 200",
            distinct.len()
        );
    }
}
