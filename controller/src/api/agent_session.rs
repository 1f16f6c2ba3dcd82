//! `AgentSession`: one long-lived bidirectional stream per agent, on the leader only.
//!
//! Up: hello (node registration and what runs), heartbeats (liveness, in memory), task
//! status transitions (written through Raft), log chunks (routed to CLI streams), the
//! containers' stats (in memory, [`crate::observe::stats`]), and
//! the node's GPUs, device paths, volumes, images and what overlaps the cluster's address
//! pool (routes, other Docker networks) when they change.
//! The session also keeps the node's role (`node.role`) current: a node is a manager
//! while a controller's address is its own ([`crate::state::nodes::is_manager`]).
//! Down: the node's assignment set (whole on the first send, then deltas) whenever it
//! changes, and log requests.

use crate::state::images::NodeImage;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use shoal_proto::pb::{self, agent_message::Msg, agent_session_server::AgentSession};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::control::now_ms;
use super::{convert, SessionHandle, Shared};
use crate::logs::Chunk;
use crate::state::{Command, TaskUpdate};
use crate::views::NodeView;
use shoal_proto::task::Desired;

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a session compares its node's role with the controllers' addresses (a
/// controller joined or left on the node's machine).
const ROLE_CHECK: Duration = Duration::from_secs(1);
/// How often a session checks that this controller still leads and the agent's
/// certificate stands, when nothing else woke it.
const STANDING_CHECK: Duration = Duration::from_millis(250);
/// The least time between two heartbeat acks to one agent. An ack is only the agent's
/// sign that a controller hears it (its disconnect policy counts from the last message
/// it got, and `stop_after` may be as short as a couple of seconds); acking every
/// heartbeat (4 a second) would double the messages of an idle cluster of 1,000 nodes.
/// At the agent's default interval (250 ms), every other heartbeat is acked.
const ACK_EVERY: Duration = Duration::from_millis(400);

pub struct AgentSessionService {
    ctx: Shared,
    serial: AtomicU64,
}

impl AgentSessionService {
    pub fn new(ctx: Shared) -> Self {
        AgentSessionService {
            ctx,
            serial: AtomicU64::new(0),
        }
    }
}

type Down = Pin<Box<dyn Stream<Item = Result<pb::ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentSession for AgentSessionService {
    type SessionStream = Down;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Down>, Status> {
        if self.ctx.faults.is_isolated() {
            return Err(Status::unavailable("this controller is partitioned"));
        }
        // Only the leader holds sessions: a follower tells the agent where to go.
        self.ctx.linearizable().await?;
        let speaker = req.extensions().get::<crate::pki::auth::Peer>().cloned();
        let mut up = req.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, up.next()).await {
            Ok(Some(Ok(pb::AgentMessage {
                msg: Some(Msg::Hello(h)),
            }))) => h,
            Ok(Some(Ok(_))) => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ))
            }
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => return Err(Status::cancelled("the agent closed the session")),
            Err(_) => return Err(Status::deadline_exceeded("no hello within 10 s")),
        };
        let mut node = convert::node_from_hello(&hello)?;
        node.manager = runs_a_controller(&self.ctx, &node.address);
        let name = node.id.clone();
        // An agent speaks only for the node its certificate names.
        crate::pki::auth::check_speaks_for(speaker.as_ref(), &name)?;
        let observed = hello
            .observed
            .iter()
            .map(TaskUpdate::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        self.ctx.lock_liveness().seen(&name, Instant::now());
        let before = self
            .ctx
            .node
            .state
            .read()
            .nodes
            .get(&name)
            .map(|n| n.conflicts.clone());
        warn_conflicts(
            &name,
            before.as_deref().unwrap_or_default(),
            &node.conflicts,
        );
        self.ctx.propose(Command::RegisterNode { node }).await?;
        if !observed.is_empty() {
            self.ctx
                .propose(Command::TaskStatus {
                    node: name.clone(),
                    updates: observed,
                    now_ms: now_ms(),
                })
                .await?;
        }
        tracing::info!(node = %name, address = %hello.address, "agent connected");

        let (tx, rx) = mpsc::channel(256);
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        self.ctx.sessions.insert(
            &name,
            SessionHandle {
                serial,
                tx: tx.clone(),
            },
        );
        let ctx = self.ctx.clone();
        let applies = Applies {
            deltas: hello.deltas,
            member_deltas: hello.member_deltas,
        };
        tokio::spawn(async move {
            let ended = tx.clone();
            if let Err(e) = serve(&ctx, &name, speaker, applies, up, tx).await {
                tracing::warn!(node = %name, error = %e, "agent session ended");
                // The agent learns why (e.g. its certificate was revoked).
                let _ = ended.send(Err(e)).await;
            } else {
                tracing::info!(node = %name, "agent session closed");
            }
            ctx.sessions.remove(&name, serial);
            // Unless a newer session of the node took over, its figures are stale now.
            if ctx.sessions.get(&name).is_none() {
                ctx.observe.stats.forget_node(&name, now_ms());
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves one session; `deltas`: the agent said it applies deltas (else every send is
/// the whole set, for an agent of an earlier release).
async fn serve(
    ctx: &Shared,
    node: &str,
    speaker: Option<crate::pki::auth::Peer>,
    applies: Applies,
    mut up: Streaming<pb::AgentMessage>,
    tx: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
) -> Result<(), Status> {
    let mut views = ctx.views.subscribe();
    // The views must reflect at least what this session proposed at its start.
    let floor = ctx.node.state.read().last_applied().map_or(0, |l| l.index);
    let mut last_sent: Option<Arc<NodeView>> = None;
    // The shared mesh's epoch in the last send, when it went, and when a change that only
    // adds to the shared mesh is due (`views::MESH_PACE`).
    let mut sent_epoch = 0;
    let mut sent_at = Instant::now();
    // The version (applied index) of the last set sent: the next is a delta against it.
    let mut sent_version = 0;
    let mut role_check = tokio::time::interval(ROLE_CHECK);
    role_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One timer for the whole session: a sleep made anew on each turn of the loop
    // would never fire while the agent's heartbeats come faster than it.
    let mut standing = tokio::time::interval(STANDING_CHECK);
    standing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the agent was last sent anything (the hello's answer is the first set).
    let mut last_down = Instant::now();
    let (statuses, batches) = mpsc::channel(STATUS_QUEUE);
    let proposer = tokio::spawn(propose_statuses(ctx.clone(), node.to_string(), batches));
    let _stop = AbortOnDrop(proposer.abort_handle());
    let mut proposer = proposer;
    loop {
        // Send the node its assignments (and its view of the mesh) whenever they change.
        let (current, view) = {
            let views = views.borrow_and_update();
            let view = (views.index >= floor).then(|| views.node(node)).flatten();
            (views.clone(), view)
        };
        let (epoch, removal_epoch) = (current.shared_epoch, current.removal_epoch);
        let view = view.filter(|v| !last_sent.as_ref().is_some_and(|l| Arc::ptr_eq(l, v)));
        // Only the shared mesh grew since the last send: that may wait for the pace.
        let paced = view.as_ref().and_then(|v| {
            let last = last_sent.as_ref()?;
            let only_grew = removal_epoch <= sent_epoch
                && last.assignments == v.assignments
                && last.removals == v.removals
                && last.mesh.local == v.mesh.local;
            let due = sent_at + crate::views::MESH_PACE;
            (only_grew && Instant::now() < due).then_some(due)
        });
        let deferred = paced.map(tokio::time::Instant::from_std);
        if let Some(view) = view.filter(|_| paced.is_none()) {
            let last = last_sent
                .as_deref()
                .filter(|_| applies.deltas)
                .map(|l| (l, sent_version, sent_epoch));
            let (set, version) =
                assignment_message(ctx, node, &view, last, applies.member_deltas, &current);
            let msg = pb::ControllerMessage {
                msg: Some(pb::controller_message::Msg::Assignments(set)),
            };
            if tx.send(Ok(msg)).await.is_err() {
                return Ok(());
            }
            last_down = Instant::now();
            last_sent = Some(view);
            sent_version = version;
            sent_epoch = epoch;
            sent_at = Instant::now();
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                return Err(Status::unavailable("the controller is shutting down"));
            }
            changed = views.changed() => {
                if changed.is_err() {
                    return Err(Status::unavailable("the controller is shutting down"));
                }
                check_standing(ctx, speaker.as_ref())?;
            }
            // A paced send is due: the loop sends it.
            _ = tokio::time::sleep_until(deferred.unwrap_or_else(tokio::time::Instant::now)), if deferred.is_some() => {}
            _ = standing.tick() => {
                if ctx.faults.is_isolated() {
                    return Err(Status::unavailable("this controller is partitioned"));
                }
                check_standing(ctx, speaker.as_ref())?;
            }
            ended = &mut proposer => {
                return match ended {
                    Ok(result) => result,
                    Err(e) => Err(Status::internal(format!("task statuses: {e}"))),
                };
            }
            msg = up.next() => {
                let Some(msg) = msg else {
                    // The agent closed the session: what it said last is still proposed.
                    drop(statuses);
                    return finish_statuses(ctx, proposer).await;
                };
                let msg = msg?;
                ctx.lock_liveness().seen(node, Instant::now());
                match msg.msg {
                    Some(Msg::Heartbeat(h)) => {
                        if !h.gpus.is_empty() {
                            let usage = convert::gpu_usage_from_pb(&h.gpus);
                            ctx.lock_liveness().gpu_usage_seen(node, usage);
                        }
                        if last_down.elapsed() >= ACK_EVERY {
                            let ack = pb::ControllerMessage {
                                msg: Some(pb::controller_message::Msg::HeartbeatAck(
                                    pb::HeartbeatAck { seq: h.seq },
                                )),
                            };
                            // A full queue means the agent is behind on reading; it
                            // will hear the next one.
                            if tx.try_send(Ok(ack)).is_ok() {
                                last_down = Instant::now();
                            }
                        }
                    }
                    Some(Msg::Status(s)) => {
                        let update = TaskUpdate::try_from(&s)?;
                        tracing::debug!(node, task = %update.task, state = %update.state, "task status");
                        // A full queue holds the agent back (it stops being read).
                        if statuses.send(update).await.is_err() {
                            return Err(Status::internal("the task status proposer stopped"));
                        }
                    }
                    other => handle(ctx, node, other).await?,
                }
            }
            _ = role_check.tick() => keep_role(ctx, node).await?,
            _ = tx.closed() => {
                drop(statuses);
                return finish_statuses(ctx, proposer).await;
            }
        }
    }
}

/// The message that brings the agent from `last` (the view sent as a version, with the
/// shared mesh's epoch then) to `view`: the full set on a session's first send, a delta
/// after (issue 18). Returns it with its version.
fn assignment_message(
    ctx: &Shared,
    node: &str,
    view: &NodeView,
    last: Option<(&NodeView, u64, u64)>,
    member_deltas: bool,
    views: &crate::views::Views,
) -> (pb::Assignments, u64) {
    let version = ctx.node.state.read().last_applied().map_or(0, |l| l.index);
    // Built without the state's lock: the mesh delta may wait for another session's.
    let mut set = convert::view_message(
        node,
        version,
        view,
        last.map(|(l, base, _)| (l, base)),
        member_deltas,
        |old| views.shared_delta(last.map_or(0, |(_, _, epoch)| epoch), old),
    );
    // Secrets' contents, unsealed here, only for the tasks sent that are to be run.
    let wanted: std::collections::HashMap<&str, &crate::assignments::NodeAssignment> = view
        .assignments
        .iter()
        .filter(|a| {
            a.desired == Desired::Running
                && !a.ended
                && !(a.spec.secrets.is_empty() && a.spec.configs.is_empty())
        })
        .map(|a| (a.task_id.as_str(), a))
        .collect();
    if !wanted.is_empty() {
        let state = ctx.node.state.read();
        for pb_task in set.tasks.iter_mut() {
            if let Some(a) = wanted.get(pb_task.task_id.as_str()) {
                pb_task.secrets = crate::secrets::files(&state, &a.spec, &ctx.pki.key);
            }
        }
    }
    (set, version)
}

/// What the agent said, in its hello, it can apply.
#[derive(Debug, Clone, Copy)]
struct Applies {
    /// `Assignments` deltas (else every send is the whole set).
    deltas: bool,
    /// `MeshDelta.members` (else a change of its containers' addresses sends the mesh
    /// whole).
    member_deltas: bool,
}

/// Ends the session when this controller no longer leads, or the agent's certificate was
/// revoked while it was connected (`node rm`).
#[allow(clippy::result_large_err)] // tonic's Status, as in the other services
fn check_standing(ctx: &Shared, speaker: Option<&crate::pki::auth::Peer>) -> Result<(), Status> {
    if ctx.node.raft.metrics().borrow().current_leader != Some(ctx.node.id) {
        return Err(Status::unavailable("this controller no longer leads"));
    }
    if let Some(crate::pki::auth::Peer(id, issued)) = speaker {
        crate::pki::auth::check_revoked(&ctx.node.state.read().revoked, id, *issued)?;
    }
    Ok(())
}

/// Waits, at most one proposal timeout, for the statuses already queued to be proposed
/// (the queue is closed).
#[allow(clippy::result_large_err)] // tonic's Status, as in the other services
async fn finish_statuses(
    ctx: &Shared,
    proposer: tokio::task::JoinHandle<Result<(), Status>>,
) -> Result<(), Status> {
    match tokio::time::timeout(ctx.propose_timeout, proposer).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(Status::internal(format!("task statuses: {e}"))),
        Err(_) => Err(Status::unavailable(
            "the agent's last task statuses were not committed in time",
        )),
    }
}

/// How many task statuses may wait for the next proposal before the agent is held back.
const STATUS_QUEUE: usize = 4096;
/// The most task statuses one proposal carries.
const STATUS_BATCH: usize = 1024;

/// Proposes the session's task statuses: one proposal at a time, each carrying every
/// status that arrived while the one before was in flight, in arrival order (so a later
/// status of a task is never overwritten by an earlier one).
async fn propose_statuses(
    ctx: Shared,
    node: String,
    batches: mpsc::Receiver<TaskUpdate>,
) -> Result<(), Status> {
    drain_in_batches(batches, STATUS_BATCH, |updates| {
        ctx.batcher.propose(Command::TaskStatus {
            node: node.clone(),
            updates,
            now_ms: now_ms(),
        })
    })
    .await
}

/// Takes what `rx` holds, at most `max` at a time and in order, and awaits `send` of each
/// batch before taking the next; ends at the first error, or when `rx` closes.
async fn drain_in_batches<T, R, E, F, Fut>(
    mut rx: mpsc::Receiver<T>,
    max: usize,
    mut send: F,
) -> Result<(), E>
where
    F: FnMut(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Result<R, E>>,
{
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, max).await > 0 {
        send(std::mem::take(&mut batch)).await?;
    }
    Ok(())
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records what the node's agent found overlapping the cluster's address pool, when it
/// differs from what the state holds, and says what changed.
async fn set_conflicts(ctx: &Shared, node: &str, conflicts: Vec<String>) -> Result<(), Status> {
    let known = ctx
        .node
        .state
        .read()
        .nodes
        .get(node)
        .map(|n| n.conflicts.clone());
    if known.as_ref() == Some(&conflicts) {
        return Ok(());
    }
    warn_conflicts(node, known.as_deref().unwrap_or_default(), &conflicts);
    let cmd = Command::SetNodeConflicts {
        node: node.to_string(),
        conflicts,
    };
    let behind = ctx.controllers_behind(cmd.min_protocol());
    if !behind.is_empty() {
        // Mid-upgrade: the report waits for the agent's next hello.
        tracing::info!(
            node,
            ?behind,
            "not stored until every controller is upgraded"
        );
        return Ok(());
    }
    ctx.propose(cmd).await?;
    Ok(())
}

/// A node's conflicts changed from `before` to `now`: each new one at warn (degraded:
/// traffic to those addresses may go astray), or at info that none is left.
fn warn_conflicts(node: &str, before: &[String], now: &[String]) {
    if before == now {
        return;
    }
    if now.is_empty() {
        tracing::info!(
            node,
            "nothing on the node overlaps the cluster pool any more"
        );
    }
    for c in now.iter().filter(|c| !before.contains(c)) {
        tracing::warn!(node, conflict = %c, "the node has something overlapping the cluster pool");
    }
}

/// Whether a controller of the current membership (voters and learners) runs on the
/// machine at `address`.
fn runs_a_controller(ctx: &Shared, address: &str) -> bool {
    let members = crate::membership::members(&ctx.node.raft);
    crate::state::nodes::is_manager(address, members.values().map(|m| m.addr.as_str()))
}

/// Proposes the node's role when the membership changed it since it was recorded.
async fn keep_role(ctx: &Shared, node: &str) -> Result<(), Status> {
    let Some((address, recorded)) = ctx
        .node
        .state
        .read()
        .nodes
        .get(node)
        .map(|n| (n.address.clone(), n.manager))
    else {
        return Ok(());
    };
    let manager = runs_a_controller(ctx, &address);
    if manager == recorded {
        return Ok(());
    }
    tracing::info!(node, manager, "node role changed");
    ctx.propose(Command::SetNodeRole {
        node: node.to_string(),
        manager,
    })
    .await?;
    Ok(())
}

async fn handle(ctx: &Shared, node: &str, msg: Option<Msg>) -> Result<(), Status> {
    match msg {
        Some(Msg::Heartbeat(_)) | None => Ok(()),
        Some(Msg::Stats(r)) => {
            // Kept in the leader's memory only (`shoal stats`); a bad report is
            // dropped, not worth ending the session over.
            match crate::observe::stats::NodeReport::try_from(&r) {
                Ok(report) => ctx.observe.stats.record(node, report, now_ms()),
                Err(e) => tracing::warn!(node, error = %e, "stats report dropped"),
            }
            Ok(())
        }
        Some(Msg::Hello(_)) => Err(Status::invalid_argument("hello sent twice")),
        Some(Msg::Status(_)) => Err(Status::internal("task statuses are batched by the session")),
        Some(Msg::Gpus(r)) => {
            let gpus = convert::gpus_from_pb(&r.gpus)?;
            tracing::info!(node, gpus = gpus.len(), "node GPUs changed");
            ctx.propose(Command::SetNodeGpus {
                node: node.to_string(),
                gpus,
            })
            .await?;
            Ok(())
        }
        Some(Msg::Devices(r)) => {
            let devices: std::collections::BTreeSet<String> = r.paths.into_iter().collect();
            let same = ctx
                .node
                .state
                .read()
                .nodes
                .get(node)
                .is_some_and(|n| n.devices == devices);
            if same {
                return Ok(());
            }
            tracing::info!(node, devices = devices.len(), "node device paths changed");
            ctx.propose(Command::SetNodeDevices {
                node: node.to_string(),
                devices,
            })
            .await?;
            Ok(())
        }
        Some(Msg::Conflicts(r)) => set_conflicts(ctx, node, r.conflicts).await,
        Some(Msg::Metrics(r)) => {
            // Kept in the leader's memory only: decisions are what goes through Raft.
            let reports = super::metrics_report::reports_from_pb(&r)?;
            ctx.autoscale.signals.record(node, reports, now_ms());
            Ok(())
        }
        Some(Msg::Volumes(r)) => {
            let volumes = convert::volumes_seen(&r);
            if !ctx.node.state.read().volume_report_changes(node, &volumes) {
                return Ok(());
            }
            tracing::debug!(node, volumes = volumes.len(), "volume report");
            ctx.propose(Command::VolumeReport {
                node: node.to_string(),
                volumes,
                now_ms: now_ms(),
            })
            .await?;
            Ok(())
        }
        Some(Msg::Images(r)) => {
            let images: Vec<NodeImage> = r
                .images
                .into_iter()
                .map(|i| NodeImage {
                    id: i.id,
                    tags: i.tags,
                    size: i.size_bytes,
                })
                .collect();
            if !ctx.node.state.read().node_images_change(node, &images) {
                return Ok(());
            }
            tracing::debug!(node, images = images.len(), "image report");
            ctx.propose(Command::NodeImages {
                node: node.to_string(),
                images,
            })
            .await?;
            Ok(())
        }
        Some(Msg::TransferDone(d)) => {
            tracing::info!(node, transfer = d.transfer_id, bytes = d.bytes, frozen_ms = d.frozen_ms, error = %d.error, "volume transfer ended");
            ctx.transfers.finish(
                d.transfer_id,
                node,
                crate::transfers::Done {
                    error: d.error,
                    bytes: d.bytes,
                    sha256: d.sha256,
                    frozen_ms: d.frozen_ms,
                    reported: true,
                },
            );
            Ok(())
        }
        Some(Msg::Log(c)) => {
            let chunk = Chunk {
                task_id: c.task_id,
                data: c.data,
                stderr: c.stderr,
                eof: c.eof,
                error: c.error,
            };
            ctx.logs.deliver(c.request_id, chunk).await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Whatever arrives while a batch is in flight goes in the next one, in order, never
    /// more than the maximum at once.
    #[tokio::test]
    async fn statuses_go_in_batches_in_arrival_order() {
        let (tx, rx) = mpsc::channel(64);
        let sent: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let drained = {
            let sent = sent.clone();
            tokio::spawn(drain_in_batches(rx, 10, move |batch| {
                let sent = sent.clone();
                async move {
                    sent.lock().unwrap().push(batch);
                    // A proposal in flight: the sender goes on meanwhile.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok::<(), String>(())
                }
            }))
        };
        for i in 0..200u32 {
            tx.send(i).await.unwrap();
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        drop(tx);
        drained.await.unwrap().unwrap();
        let batches = sent.lock().unwrap().clone();
        let flat: Vec<u32> = batches.iter().flatten().copied().collect();
        assert_eq!(flat, (0..200).collect::<Vec<_>>(), "every status, in order");
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 10));
        assert!(
            batches.len() < 200,
            "statuses arriving during a proposal share the next: {} batches",
            batches.len()
        );
    }

    /// The first failed proposal ends the draining (and the session with it).
    #[tokio::test]
    async fn a_failed_batch_ends_the_draining() {
        let (tx, rx) = mpsc::channel(8);
        for i in 0..3u32 {
            tx.send(i).await.unwrap();
        }
        let result = drain_in_batches(rx, 1, |b: Vec<u32>| async move {
            if b == [1] {
                Err("no quorum")
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(result, Err("no quorum"));
    }
}
