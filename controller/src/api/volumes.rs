//! The volume RPCs: `Control.Volumes|RemoveVolume|MoveVolume|MoveStatus|BackupVolume|
//! RestoreVolume` for the CLI, and `VolumeData` (upload and download of a volume's tar
//! stream) for agents. The bytes go through the leader's pipes ([`crate::transfers`]).
#![allow(clippy::result_large_err)] // tonic's Status, as in the other services

use std::pin::Pin;

use futures::{Stream, StreamExt};
use shoal_proto::pb::{self, volume_data_server::VolumeData};
use tonic::{Request, Response, Status, Streaming};

use super::control::now_ms;
use super::Shared;
use crate::state::{copy_key, ClusterState, Command, CopyState, MovePhase, NodeStatus, VolumeMove};

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::VolumeChunk, Status>> + Send>>;

/// `STACK/NAME` into its parts.
pub fn split_volume(v: &str) -> Result<(String, String), Status> {
    match v.split_once('/') {
        Some((s, n)) if !s.is_empty() && !n.is_empty() && !n.contains('/') => {
            Ok((s.to_string(), n.to_string()))
        }
        _ => Err(Status::invalid_argument(format!(
            "{v:?} is not a volume: name it STACK/NAME (see shoal volume ls)"
        ))),
    }
}

/// The rows of `shoal volume ls` (every copy, or one stack's); `progress` gives the bytes
/// copied so far by a move under way, where this controller drives it.
pub fn rows(
    state: &ClusterState,
    stack: &str,
    progress: &dyn Fn(u64) -> Option<u64>,
) -> Vec<pb::VolumeRow> {
    state
        .volumes
        .values()
        .filter(|c| stack.is_empty() || c.stack == stack)
        .map(|c| {
            let used_by = if c.state == CopyState::Live {
                state
                    .users_of(&c.stack, &c.name, Some(&c.node))
                    .into_iter()
                    .collect()
            } else {
                Vec::new()
            };
            let mut note = c.note.clone();
            if let Some(m) = state.move_of(&c.stack, &c.name) {
                if m.from == c.node {
                    note = format!("moving to {} ({})", m.to, m.phase.as_str());
                }
                if m.to == c.node && m.phase == MovePhase::Copying {
                    let bytes = progress(m.id).unwrap_or(0);
                    note = if m.from.is_empty() {
                        format!("being restored (move {}): {bytes} bytes so far", m.id)
                    } else {
                        format!(
                            "being copied from {} (move {}): {bytes} bytes so far",
                            m.from, m.id
                        )
                    };
                }
            }
            if c.state == CopyState::Live
                && state
                    .nodes
                    .get(&c.node)
                    .is_some_and(|n| n.status == NodeStatus::Down)
            {
                note = format!("{} is down: replicas using it wait for it", c.node);
            }
            pb::VolumeRow {
                stack: c.stack.clone(),
                name: c.name.clone(),
                node: c.node.clone(),
                slot: 0,
                size_bytes: c.size_bytes.map_or(-1, |b| b as i64),
                used_by,
                state: if c.state == CopyState::Live && !c.seen {
                    "creating".into()
                } else {
                    c.state.as_str().to_string()
                },
                docker_name: c.docker_name.clone(),
                created_ms: c.created_ms,
                last_used_ms: c.last_used_ms,
                policy: if c.ephemeral { "ephemeral" } else { "bound" }.into(),
                note,
                bound_slots: c
                    .slots
                    .iter()
                    .flat_map(|(svc, slots)| {
                        slots.iter().map(move |s| format!("{}/{svc}.{s}", c.stack))
                    })
                    .collect(),
                synced_ms: c.synced_ms.unwrap_or(0),
                frozen_ms: c.frozen_ms.unwrap_or(0),
            }
        })
        .collect()
}

pub fn move_reply(m: &VolumeMove, progress: Option<u64>, now: u64) -> pb::MoveStatusReply {
    let end = if m.phase.is_over() { m.updated_ms } else { now };
    pb::MoveStatusReply {
        id: m.id,
        volume: format!("{}/{}", m.stack, m.name),
        from: m.from.clone(),
        to: m.to.clone(),
        phase: m.phase.as_str().to_string(),
        bytes: progress.unwrap_or(m.bytes),
        error: m.error.clone(),
        sha256: m.sha256.clone(),
        elapsed_ms: end.saturating_sub(m.started_ms),
    }
}

pub async fn volumes(ctx: &Shared, req: pb::VolumesRequest) -> Result<pb::VolumesReply, Status> {
    ctx.linearizable().await?;
    let state = ctx.node.state.read();
    Ok(pb::VolumesReply {
        volumes: rows(&state, &req.stack, &|id| ctx.transfers.progress(id)),
    })
}

async fn apply(ctx: &Shared, cmd: Command) -> Result<crate::state::CommandResult, Status> {
    let result = ctx.propose(cmd).await?;
    match result.error {
        Some(e) => Err(Status::failed_precondition(e)),
        None => Ok(result),
    }
}

pub async fn remove(
    ctx: &Shared,
    req: pb::RemoveVolumeRequest,
) -> Result<pb::RemoveVolumeReply, Status> {
    let (stack, name) = split_volume(&req.volume)?;
    let node = (!req.node.is_empty()).then_some(req.node.clone());
    ctx.linearizable().await?;
    let nodes: Vec<String> = ctx
        .node
        .state
        .read()
        .copies_of(&stack, &name)
        .filter(|c| node.as_ref().is_none_or(|n| &c.node == n))
        .map(|c| c.node.clone())
        .collect();
    apply(
        ctx,
        Command::RemoveVolume {
            stack: stack.clone(),
            name: name.clone(),
            node,
        },
    )
    .await?;
    tracing::info!(volume = %req.volume, ?nodes, "volume removal started");
    Ok(pb::RemoveVolumeReply { nodes })
}

pub async fn start_move(
    ctx: &Shared,
    req: pb::MoveVolumeRequest,
) -> Result<pb::MoveStatusReply, Status> {
    let (stack, name) = split_volume(&req.volume)?;
    if req.to.is_empty() {
        return Err(Status::invalid_argument("say where to move it: --to NODE"));
    }
    let r = apply(
        ctx,
        Command::StartMove {
            stack,
            name,
            to: req.to.clone(),
            restore: false,
            now_ms: now_ms(),
        },
    )
    .await?;
    tracing::info!(volume = %req.volume, to = %req.to, move_id = r.count, "volume move started");
    move_status(ctx, pb::MoveStatusRequest { id: r.count }).await
}

pub async fn move_status(
    ctx: &Shared,
    req: pb::MoveStatusRequest,
) -> Result<pb::MoveStatusReply, Status> {
    ctx.linearizable().await?;
    let state = ctx.node.state.read();
    let m = state
        .moves
        .get(&req.id)
        .ok_or_else(|| Status::not_found(format!("no move {}", req.id)))?;
    Ok(move_reply(m, ctx.transfers.progress(m.id), now_ms()))
}

/// The copy a backup reads: on `node`, or the only live one.
fn backup_source(
    state: &ClusterState,
    stack: &str,
    name: &str,
    node: &str,
) -> Result<(String, String), Status> {
    let live: Vec<_> = state
        .copies_of(stack, name)
        .filter(|c| c.state == CopyState::Live)
        .filter(|c| node.is_empty() || c.node == node)
        .collect();
    match live.as_slice() {
        [] if node.is_empty() => Err(Status::not_found(format!(
            "no volume {stack}/{name}: see shoal volume ls"
        ))),
        [] => Err(Status::not_found(format!(
            "{node} holds no live copy of {stack}/{name}"
        ))),
        [c] => Ok((c.node.clone(), c.docker_name.clone())),
        many => Err(Status::invalid_argument(format!(
            "{stack}/{name} has a copy on each of {}: say which with --node",
            many.iter()
                .map(|c| c.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

pub async fn backup(ctx: &Shared, req: pb::BackupVolumeRequest) -> Result<ChunkStream, Status> {
    let (stack, name) = split_volume(&req.volume)?;
    ctx.linearizable().await?;
    let (node, docker_name) = backup_source(&ctx.node.state.read(), &stack, &name, &req.node)?;
    let (tid, bytes) = ctx.transfers.open();
    let rx = ctx
        .transfers
        .receiver(tid)
        .ok_or_else(|| Status::internal("transfer pipe"))?;
    let done = ctx.transfers.expect(tid, &node);
    let what = crate::transfers::Ask {
        direction: "export",
        stack: &stack,
        name: &name,
        docker_name: &docker_name,
        freeze: true,
    };
    if let Err(e) = crate::transfers::ask(ctx, &node, tid, what).await {
        ctx.transfers.close(tid);
        return Err(Status::unavailable(e));
    }
    tracing::info!(volume = %req.volume, %node, "volume backup started");
    let ctx2 = ctx.clone();
    tokio::spawn(async move {
        let d = crate::transfers::wait_done(&ctx2, &node, done, &bytes).await;
        if d.error.is_empty() {
            // The CLI still reads what is in the pipe.
            ctx2.transfers.forget(tid);
            tracing::info!(%node, bytes = d.bytes, frozen_ms = d.frozen_ms, "volume backup read");
        } else {
            ctx2.transfers.close(tid);
            tracing::warn!(%node, error = %d.error, "volume backup failed");
        }
    });
    Ok(Box::pin(rx.map(Ok)))
}

pub async fn restore(
    ctx: &Shared,
    mut up: Streaming<pb::VolumeChunk>,
) -> Result<pb::RestoreVolumeReply, Status> {
    let first = up
        .next()
        .await
        .ok_or_else(|| Status::invalid_argument("empty restore stream"))??;
    let (stack, name) = split_volume(&first.volume)?;
    ctx.linearizable().await?;
    let node = if first.node.is_empty() {
        let state = ctx.node.state.read();
        // Where a copy was (a set-aside one is in the way there), else the first ready
        // active node in name order.
        state
            .nodes
            .values()
            .find(|n| {
                n.status == NodeStatus::Ready
                    && n.availability == crate::state::Availability::Active
                    && !state.volumes.contains_key(&copy_key(&stack, &name, &n.id))
            })
            .map(|n| n.id.clone())
            .ok_or_else(|| Status::failed_precondition("no ready node can take the volume"))?
    } else {
        first.node.clone()
    };
    let volume = format!("{stack}/{name}");
    if !ctx.transfers.claim(&volume) {
        return Err(Status::failed_precondition(format!(
            "{volume} is already being moved or restored"
        )));
    }
    let result = restore_into(ctx, &stack, &name, &node, up).await;
    ctx.transfers.release(&volume);
    result
}

async fn restore_into(
    ctx: &Shared,
    stack: &str,
    name: &str,
    node: &str,
    mut up: Streaming<pb::VolumeChunk>,
) -> Result<pb::RestoreVolumeReply, Status> {
    let r = apply(
        ctx,
        Command::StartMove {
            stack: stack.to_string(),
            name: name.to_string(),
            to: node.to_string(),
            restore: true,
            now_ms: now_ms(),
        },
    )
    .await?;
    let (m, docker_name) = {
        let state = ctx.node.state.read();
        let m = state
            .moves
            .get(&r.count)
            .cloned()
            .ok_or_else(|| Status::internal("move vanished"))?;
        let docker = state
            .volumes
            .get(&copy_key(stack, name, node))
            .map(|c| c.docker_name.clone())
            .unwrap_or_else(|| format!("{stack}_{name}"));
        (m, docker)
    };
    let (tid, bytes) = ctx.transfers.open();
    ctx.transfers.track(m.id, bytes.clone());
    let pipe = ctx
        .transfers
        .sender(tid)
        .ok_or_else(|| Status::internal("transfer pipe"))?;
    let done = ctx.transfers.expect(tid, node);
    let outcome: Result<crate::transfers::Done, String> = async {
        let what = crate::transfers::Ask {
            direction: "import",
            stack,
            name,
            docker_name: &docker_name,
            freeze: false,
        };
        crate::transfers::ask(ctx, node, tid, what).await?;
        let feed = async {
            while let Some(chunk) = up.next().await {
                let mut chunk =
                    chunk.map_err(|e| format!("the backup stream broke: {}", e.message()))?;
                chunk.transfer_id = tid;
                let last = chunk.last;
                pipe.send(chunk)
                    .await
                    .map_err(|e| format!("{node} stopped reading: {e}"))?;
                if last {
                    return Ok(());
                }
            }
            Err("the backup stream ended before its last chunk".to_string())
        };
        let fed: Result<(), String> = feed.await;
        drop(pipe);
        let d = crate::transfers::wait_done(ctx, node, done, &bytes).await;
        fed?;
        if d.error.is_empty() {
            Ok(d)
        } else {
            Err(d.error)
        }
    }
    .await;
    ctx.transfers.close(tid);
    ctx.transfers.untrack(m.id);
    match outcome {
        Ok(d) => {
            apply(
                ctx,
                Command::MoveProgress {
                    id: m.id,
                    phase: MovePhase::Done,
                    error: String::new(),
                    bytes: d.bytes,
                    sha256: d.sha256.clone(),
                    now_ms: now_ms(),
                    partial: false,
                },
            )
            .await?;
            tracing::info!(volume = %format!("{stack}/{name}"), %node, bytes = d.bytes, "volume restored");
            Ok(pb::RestoreVolumeReply {
                node: node.to_string(),
                bytes: d.bytes,
                sha256: d.sha256,
            })
        }
        Err(e) => {
            let _ = ctx
                .propose(Command::MoveProgress {
                    id: m.id,
                    phase: MovePhase::Failed,
                    error: e.clone(),
                    bytes: 0,
                    sha256: String::new(),
                    now_ms: now_ms(),
                    partial: true,
                })
                .await;
            Err(Status::aborted(format!("restore on {node} failed: {e}")))
        }
    }
}

/// `VolumeData`: agents' side of the pipes.
pub struct VolumeDataService {
    ctx: Shared,
}

impl VolumeDataService {
    pub fn new(ctx: Shared) -> Self {
        VolumeDataService { ctx }
    }
}

#[tonic::async_trait]
impl VolumeData for VolumeDataService {
    async fn upload(
        &self,
        req: Request<Streaming<pb::VolumeChunk>>,
    ) -> Result<Response<pb::UploadReply>, Status> {
        let mut up = req.into_inner();
        let mut pipe: Option<crate::transfers::PipeSender> = None;
        while let Some(chunk) = up.next().await {
            let chunk = chunk?;
            if pipe.is_none() {
                pipe = Some(
                    self.ctx
                        .transfers
                        .sender(chunk.transfer_id)
                        .ok_or_else(|| {
                            Status::not_found(format!("no transfer {}", chunk.transfer_id))
                        })?,
                );
            }
            let Some(p) = &pipe else { break };
            let last = chunk.last || !chunk.error.is_empty();
            if let Err(e) = p.send(chunk).await {
                return Err(Status::aborted(e));
            }
            if last {
                break;
            }
        }
        Ok(Response::new(pb::UploadReply {}))
    }

    type DownloadStream = ChunkStream;

    async fn download(
        &self,
        req: Request<pb::DownloadRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let id = req.into_inner().transfer_id;
        let rx = self
            .ctx
            .transfers
            .receiver(id)
            .ok_or_else(|| Status::not_found(format!("no transfer {id}")))?;
        Ok(Response::new(Box::pin(rx.map(Ok))))
    }
}
