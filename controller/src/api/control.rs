//! `Control`: the CLI's API. Writes go through Raft on the leader; reads are answered by
//! the leader after `ensure_linearizable`, so an acknowledged deploy is always visible.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::Stream;
use shoal_proto::pb::{self, control_server::Control};
use shoal_proto::spec::StackSpec;
use shoal_proto::task::Desired;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{convert, Shared};
use crate::state::{Command, ResolveError};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct ControlService {
    ctx: Shared,
}

impl ControlService {
    pub fn new(ctx: Shared) -> Self {
        ControlService { ctx }
    }

    /// The service a user named, read on the confirmed leader.
    async fn resolve(&self, name: &str) -> Result<crate::state::ServiceKey, Status> {
        self.ctx.linearizable().await?;
        let state = self.ctx.node.state.read();
        state.resolve_service(name).map_err(resolve_status)
    }

    /// Proposes `cmd`; a command the state machine refused is `FAILED_PRECONDITION`.
    async fn apply(&self, cmd: Command) -> Result<crate::state::CommandResult, Status> {
        let result = self.ctx.propose(cmd).await?;
        match result.error {
            Some(e) => Err(Status::failed_precondition(e)),
            None => Ok(result),
        }
    }
}

fn resolve_status(e: ResolveError) -> Status {
    match e {
        ResolveError::NotFound(_) => Status::not_found(e.to_string()),
        ResolveError::Ambiguous { .. } => Status::invalid_argument(e.to_string()),
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogLine, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    async fn deploy(
        &self,
        req: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployReply>, Status> {
        let req = req.into_inner();
        let mut spec: StackSpec = serde_json::from_slice(&req.stack_json)
            .map_err(|e| Status::invalid_argument(format!("stack spec: {e}")))?;
        if spec.name.is_empty() {
            return Err(Status::invalid_argument("the stack has no name"));
        }
        if spec.services.is_empty() {
            return Err(Status::invalid_argument(format!(
                "stack {} has no services",
                spec.name
            )));
        }
        let stack = spec.name.clone();
        if let Some(why) = super::binds::refusal(&spec, &self.ctx.node.state.read()) {
            return Err(Status::invalid_argument(why));
        }
        // Sealed here, before anything is proposed: the Raft log never holds them in clear.
        let kept = self.ctx.node.state.read().cluster_secrets.clone();
        let secrets = crate::secrets::seal_stack(
            &mut spec,
            &req.secrets,
            &req.configs,
            &kept,
            &self.ctx.pki.key,
        )
        .map_err(Status::invalid_argument)?;
        let result = self
            .apply(Command::DeployStack {
                spec,
                now_ms: now_ms(),
                secrets,
            })
            .await?;
        tracing::info!(%stack, "stack deployed");
        Ok(Response::new(pb::DeployReply {
            stack,
            services: result
                .generations
                .into_iter()
                .map(|(service, generation, changed)| pb::ServiceGeneration {
                    service,
                    generation,
                    changed,
                })
                .collect(),
        }))
    }

    async fn ps(&self, req: Request<pb::PsRequest>) -> Result<Response<pb::PsReply>, Status> {
        self.ctx.linearizable().await?;
        let req = req.into_inner();
        // Read in place, not copied: nothing below awaits.
        let state = self.ctx.node.state.read();
        let now = now_ms();
        if !req.stack.is_empty() && !state.stacks.contains_key(&req.stack) {
            return Err(Status::not_found(format!("no stack named {}", req.stack)));
        }
        let mut tasks: Vec<_> = state
            .tasks
            .values()
            .filter(|t| req.stack.is_empty() || t.stack == req.stack)
            .filter(|t| req.all || t.desired == Desired::Running || !t.state.is_terminal())
            .collect();
        tasks.sort_by(|a, b| {
            (&a.stack, &a.service, a.slot, &a.pinned, a.created_at_ms).cmp(&(
                &b.stack,
                &b.service,
                b.slot,
                &b.pinned,
                b.created_at_ms,
            ))
        });
        let rows = tasks
            .into_iter()
            .map(|t| {
                let mut row = convert::task_row(t, state.services.get(&t.service_key()));
                if let Some(why) = convert::stalled(t, now) {
                    row.error = why;
                }
                row
            })
            .collect();
        Ok(Response::new(pb::PsReply { tasks: rows }))
    }

    async fn services(
        &self,
        _req: Request<pb::ServicesRequest>,
    ) -> Result<Response<pb::ServicesReply>, Status> {
        self.ctx.linearizable().await?;
        let state = self.ctx.node.state.read();
        let services = state
            .services
            .values()
            .map(|s| {
                let mut row = convert::service_row(&state, s);
                // What the metrics read lives in the leader's memory, not in the state.
                if let Some(a) = &mut row.autoscale {
                    a.readings = self.ctx.autoscale.readings(&s.key());
                }
                row
            })
            .collect();
        Ok(Response::new(pb::ServicesReply { services }))
    }

    async fn nodes(
        &self,
        _req: Request<pb::NodesRequest>,
    ) -> Result<Response<pb::NodesReply>, Status> {
        self.ctx.linearizable().await?;
        let state = self.ctx.node.state.read();
        let live = self.ctx.lock_liveness();
        let now = std::time::Instant::now();
        let nodes = state
            .nodes
            .values()
            .map(|n| {
                let mut row = convert::node_row(&state, n);
                // Figures live in the leader's memory, not in the replicated state.
                for g in &mut row.gpus {
                    let u = live.gpu_usage(&n.id, &g.uuid, now);
                    g.utilization_percent = u.utilization_percent;
                    g.memory_used_bytes = u.memory_used_bytes;
                }
                row
            })
            .collect();
        drop(live);
        Ok(Response::new(pb::NodesReply { nodes }))
    }

    async fn cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        let s = crate::raft::metrics_summary(&self.ctx.node.raft);
        // Only the leader hears from every member: send the client there when one is
        // known; without a leader, answer with what this member knows.
        if let Some(leader) = s.leader.filter(|l| *l != s.id) {
            let addr = s
                .members
                .iter()
                .find(|m| m.id == leader)
                .map(|m| m.address.clone());
            return Err(super::propose_status(
                crate::raft::ProposeError::NotLeader {
                    leader_id: Some(leader),
                    leader_addr: addr,
                },
            ));
        }
        let recent =
            std::time::Duration::from_millis(self.ctx.node.raft.config().election_timeout_min);
        Ok(Response::new(pb::ClusterStatusReply {
            leader: s.leader.unwrap_or(0),
            term: s.term,
            commit_index: s.commit_index.unwrap_or(0),
            last_applied: s.last_applied.unwrap_or(0),
            snapshot_index: s.snapshot_index.unwrap_or(0),
            members: s
                .members
                .iter()
                .map(|m| pb::MemberRow {
                    id: m.id,
                    address: m.address.clone(),
                    role: m.role.as_str().to_string(),
                    // This member answers; the others are reachable when they answered
                    // its Raft RPCs within an election timeout.
                    reachable: m.id == s.id
                        || (!self.ctx.faults.is_isolated()
                            && self.ctx.node.contacts.recent(m.id, recent)),
                })
                .collect(),
        }))
    }

    async fn scale(
        &self,
        req: Request<pb::ScaleRequest>,
    ) -> Result<Response<pb::ScaleReply>, Status> {
        let req = req.into_inner();
        let key = self.resolve(&req.service).await?;
        let autoscale = self.ctx.node.state.read().services.get(&key).and_then(|s| {
            s.spec
                .autoscale
                .as_ref()
                .map(|a| crate::state::autoscaled_words(&key, a))
        });
        if let Some(why) = autoscale {
            // The user's mistake (exit 2), not a refusal of the state machine.
            return Err(Status::invalid_argument(why));
        }
        self.apply(Command::Scale {
            service: key.clone(),
            replicas: req.replicas,
        })
        .await?;
        tracing::info!(service = %key, replicas = req.replicas, "service scaled");
        Ok(Response::new(pb::ScaleReply {
            service: key,
            replicas: req.replicas,
        }))
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackReply>, Status> {
        let req = req.into_inner();
        let key = self.resolve(&req.service).await?;
        let result = self
            .apply(Command::Rollback {
                service: key.clone(),
            })
            .await?;
        let generation = result.generations.first().map_or(0, |g| g.1);
        tracing::info!(service = %key, generation, "rollback started");
        Ok(Response::new(pb::RollbackReply {
            service: key,
            generation,
        }))
    }

    async fn rebalance(
        &self,
        req: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceReply>, Status> {
        let req = req.into_inner();
        let key = self.resolve(&req.service).await?;
        self.apply(Command::Rebalance {
            service: key.clone(),
        })
        .await?;
        tracing::info!(service = %key, "rebalance started");
        let state = self.ctx.node.state.read();
        Ok(Response::new(rebalance_reply(&state, &key)))
    }

    async fn rebalance_status(
        &self,
        req: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceReply>, Status> {
        let req = req.into_inner();
        let key = self.resolve(&req.service).await?;
        let state = self.ctx.node.state.read();
        Ok(Response::new(rebalance_reply(&state, &key)))
    }

    async fn update_node(
        &self,
        req: Request<pb::UpdateNodeRequest>,
    ) -> Result<Response<pb::UpdateNodeReply>, Status> {
        self.ctx.linearizable().await?;
        let req = req.into_inner();
        if !self.ctx.node.state.read().nodes.contains_key(&req.node) {
            return Err(Status::not_found(format!("no node named {}", req.node)));
        }
        let availability = match req.availability.as_str() {
            "" => None,
            "active" => Some(crate::state::Availability::Active),
            "drain" => Some(crate::state::Availability::Drain),
            other => {
                return Err(Status::invalid_argument(format!(
                    "availability {other:?}: use active or drain"
                )))
            }
        };
        if let Some(availability) = availability {
            self.apply(Command::SetAvailability {
                node: req.node.clone(),
                availability,
            })
            .await?;
            tracing::info!(node = %req.node, availability = availability.as_str(), "node availability changed");
        }
        let mut labels: std::collections::BTreeMap<String, Option<String>> = req
            .set_labels
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        labels.extend(req.remove_labels.into_iter().map(|k| (k, None)));
        if !labels.is_empty() {
            self.apply(Command::LabelNode {
                node: req.node.clone(),
                labels,
            })
            .await?;
        }
        Ok(Response::new(pb::UpdateNodeReply {}))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeReply>, Status> {
        self.ctx.linearizable().await?;
        let req = req.into_inner();
        let status = self
            .ctx
            .node
            .state
            .read()
            .nodes
            .get(&req.node)
            .map(|n| n.status);
        match status {
            None => return Err(Status::not_found(format!("no node named {}", req.node))),
            Some(crate::state::NodeStatus::Ready) if !req.force => {
                return Err(Status::failed_precondition(format!(
                    "node {} is ready: drain it and stop its agent first, or use --force",
                    req.node
                )))
            }
            _ => {}
        }
        // First its certificate: the agent's session ends, and it cannot open another
        // or renew; joining again needs a token.
        self.apply(Command::Revoke {
            identity: shoal_tls::Identity::new(shoal_tls::Role::Agent, &req.node).uri(),
            before_ms: now_ms(),
        })
        .await?;
        let r = self
            .apply(Command::RemoveNode {
                node: req.node.clone(),
            })
            .await?;
        tracing::info!(node = %req.node, tasks = r.count, "node removed");
        Ok(Response::new(pb::RemoveNodeReply { tasks: r.count }))
    }

    async fn remove_stack(
        &self,
        req: Request<pb::RemoveStackRequest>,
    ) -> Result<Response<pb::RemoveStackReply>, Status> {
        self.ctx.linearizable().await?;
        let req = req.into_inner();
        let stack = req.stack;
        if !self.ctx.node.state.read().stacks.contains_key(&stack) {
            return Err(Status::not_found(format!("no stack named {stack}")));
        }
        let result = self
            .apply(Command::RemoveStack {
                stack: stack.clone(),
                volumes: req.volumes,
            })
            .await?;
        tracing::info!(%stack, volumes = req.volumes, "stack removal started");
        Ok(Response::new(pb::RemoveStackReply {
            tasks: result.count,
        }))
    }

    async fn join_controller(
        &self,
        req: Request<pb::JoinControllerRequest>,
    ) -> Result<Response<pb::JoinControllerReply>, Status> {
        self.ctx.linearizable().await?;
        let addr = req.into_inner().address;
        if addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
            return Err(Status::invalid_argument(format!(
                "{addr:?} is not a host:port a controller can be reached at"
            )));
        }
        // One join at a time, so two joiners never get the same id.
        let _one = self.ctx.join_lock.lock().await;
        let id = crate::membership::add_learner(&self.ctx.node.raft, &addr)
            .await
            .map_err(|e| Status::unavailable(format!("{e:#}")))?;
        Ok(Response::new(pb::JoinControllerReply { id }))
    }

    async fn remove_controller(
        &self,
        req: Request<pb::RemoveControllerRequest>,
    ) -> Result<Response<pb::RemoveControllerReply>, Status> {
        self.ctx.linearizable().await?;
        let id = req.into_inner().id;
        let _one = self.ctx.join_lock.lock().await;
        let addr = crate::membership::remove(&self.ctx.node.raft, id)
            .await
            .map_err(|e| match e {
                crate::membership::RemoveError::NotAMember(_) => Status::not_found(e.to_string()),
                crate::membership::RemoveError::LastVoter(_) => {
                    Status::failed_precondition(e.to_string())
                }
                crate::membership::RemoveError::Raft(_) => Status::unavailable(e.to_string()),
            })?;
        // Its certificate may no longer speak Raft (nor renew); joining again needs a token.
        self.apply(Command::Revoke {
            identity: shoal_tls::Identity::new(shoal_tls::Role::Controller, &addr).uri(),
            before_ms: now_ms(),
        })
        .await?;
        Ok(Response::new(pb::RemoveControllerReply {}))
    }

    type LogsStream = LogStream;

    type EventsStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

    /// Answered by any controller (no leader needed): each derives the same events from
    /// the entries it applies ([`crate::events`]).
    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let req = req.into_inner();
        let rx = crate::events::stream::open(
            self.ctx.node.state.events(),
            (&req).into(),
            req.follow,
            self.ctx.shutdown.clone(),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    /// Served by the leader, which the agents report to; the figures are in its memory
    /// ([`crate::observe::stats`]).
    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsReply>, Status> {
        self.ctx.linearizable().await?;
        let req = req.into_inner();
        let state = self.ctx.node.state.read();
        let only = match req.service.as_str() {
            "" => None,
            name => Some(state.resolve_service(name).map_err(resolve_status)?),
        };
        let reply = self
            .ctx
            .observe
            .stats
            .reply(&state, only.as_deref(), req.history, now_ms());
        Ok(Response::new(reply))
    }

    async fn logs(&self, req: Request<pb::LogsRequest>) -> Result<Response<LogStream>, Status> {
        self.ctx.linearizable().await?;
        let req = req.into_inner();
        let state = self.ctx.node.state.snapshot();
        let key = state
            .resolve_service(&req.service)
            .map_err(resolve_status)?;
        // Tasks that have (or had) a container: running ones first, else the last ended.
        let mut tasks: Vec<_> = state
            .tasks
            .values()
            .filter(|t| t.service_key() == key && t.node.is_some() && !t.container_id.is_empty())
            .collect();
        if tasks.iter().any(|t| t.desired == Desired::Running) {
            tasks.retain(|t| t.desired == Desired::Running);
        }
        let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut meta = BTreeMap::new();
        for t in &tasks {
            let node = t.node.clone().unwrap_or_default();
            by_node.entry(node.clone()).or_default().push(t.id.clone());
            meta.insert(t.id.clone(), (t.service.clone(), t.slot, node));
        }
        let (out_tx, out_rx) = mpsc::channel::<Result<pb::LogLine, Status>>(256);
        let (request_id, mut chunks) = self.ctx.logs.open();
        let mut open_tasks = 0usize;
        let mut reached = Vec::new();
        for (node, ids) in by_node {
            match self.ctx.sessions.get(&node) {
                Some(session) => {
                    open_tasks += ids.len();
                    let msg = pb::ControllerMessage {
                        msg: Some(pb::controller_message::Msg::LogRequest(pb::LogRequest {
                            request_id,
                            task_ids: ids,
                            follow: req.follow,
                            tail: req.tail,
                        })),
                    };
                    if session.tx.send(Ok(msg)).await.is_ok() {
                        reached.push(session);
                    }
                }
                None => {
                    let line = pb::LogLine {
                        node: node.clone(),
                        service: req.service.clone(),
                        data: format!(
                            "shoal: node {node} is not connected; its logs are unavailable\n"
                        )
                        .into_bytes(),
                        stderr: true,
                        ..Default::default()
                    };
                    let _ = out_tx.send(Ok(line)).await;
                }
            }
        }
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            while open_tasks > 0 {
                tokio::select! {
                    chunk = chunks.recv() => {
                        let Some(chunk) = chunk else { break };
                        let (service, slot, node) = meta.get(&chunk.task_id).cloned().unwrap_or_default();
                        if !chunk.data.is_empty() || !chunk.error.is_empty() {
                            let data = if chunk.error.is_empty() { chunk.data } else {
                                format!("shoal: {}\n", chunk.error).into_bytes()
                            };
                            let line = pb::LogLine { task_id: chunk.task_id.clone(), service, slot, node, data, stderr: chunk.stderr || !chunk.error.is_empty() };
                            if out_tx.send(Ok(line)).await.is_err() { break; }
                        }
                        if chunk.eof { open_tasks -= 1; }
                    }
                    _ = out_tx.closed() => break,
                    _ = ctx.shutdown.cancelled() => break,
                }
            }
            ctx.logs.close(request_id);
            for session in reached {
                let cancel = pb::ControllerMessage {
                    msg: Some(pb::controller_message::Msg::LogCancel(pb::LogCancel {
                        request_id,
                    })),
                };
                let _ = session.tx.send(Ok(cancel)).await;
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(out_rx);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_secret(
        &self,
        req: Request<pb::CreateSecretRequest>,
    ) -> Result<Response<pb::CreateSecretReply>, Status> {
        let req = req.into_inner();
        crate::secrets::check_name(&req.name).map_err(Status::invalid_argument)?;
        let max = crate::compose::MAX_SECRET_BYTES;
        if req.data.len() > max {
            return Err(Status::invalid_argument(format!(
                "the secret is {} bytes; at most {max} are allowed",
                req.data.len()
            )));
        }
        let key = &self.ctx.pki.key;
        let sealed = key
            .seal(&req.data)
            .map_err(|e| Status::internal(format!("seal the secret: {e}")))?;
        self.apply(Command::CreateSecret {
            name: req.name.clone(),
            digest: crate::secrets::digest(key, &req.data),
            sealed: crate::state::SealedSecret(sealed),
            now_ms: now_ms(),
        })
        .await?;
        tracing::info!(secret = %req.name, "secret created");
        Ok(Response::new(pb::CreateSecretReply {}))
    }

    async fn list_secrets(
        &self,
        _req: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsReply>, Status> {
        self.ctx.linearizable().await?;
        let state = self.ctx.node.state.read();
        let secrets = state
            .cluster_secrets
            .iter()
            .map(|(name, c)| pb::SecretRow {
                name: name.clone(),
                created_ms: c.created_ms,
                used_by: state.secret_users(name),
            })
            .collect();
        Ok(Response::new(pb::ListSecretsReply { secrets }))
    }

    async fn remove_secret(
        &self,
        req: Request<pb::RemoveSecretRequest>,
    ) -> Result<Response<pb::RemoveSecretReply>, Status> {
        let name = req.into_inner().name;
        self.apply(Command::RemoveSecret { name: name.clone() })
            .await?;
        tracing::info!(secret = %name, "secret removed");
        Ok(Response::new(pb::RemoveSecretReply {}))
    }

    async fn volumes(
        &self,
        req: Request<pb::VolumesRequest>,
    ) -> Result<Response<pb::VolumesReply>, Status> {
        super::volumes::volumes(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_volume(
        &self,
        req: Request<pb::RemoveVolumeRequest>,
    ) -> Result<Response<pb::RemoveVolumeReply>, Status> {
        super::volumes::remove(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn move_volume(
        &self,
        req: Request<pb::MoveVolumeRequest>,
    ) -> Result<Response<pb::MoveStatusReply>, Status> {
        super::volumes::start_move(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn move_status(
        &self,
        req: Request<pb::MoveStatusRequest>,
    ) -> Result<Response<pb::MoveStatusReply>, Status> {
        super::volumes::move_status(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    type BackupClusterStream = super::cluster_backup::BackupStream;

    async fn backup_cluster(
        &self,
        _req: Request<pb::BackupClusterRequest>,
    ) -> Result<Response<Self::BackupClusterStream>, Status> {
        super::cluster_backup::backup(&self.ctx)
            .await
            .map(Response::new)
    }

    type BackupVolumeStream = super::volumes::ChunkStream;

    async fn backup_volume(
        &self,
        req: Request<pb::BackupVolumeRequest>,
    ) -> Result<Response<Self::BackupVolumeStream>, Status> {
        super::volumes::backup(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn restore_volume(
        &self,
        req: Request<tonic::Streaming<pb::VolumeChunk>>,
    ) -> Result<Response<pb::RestoreVolumeReply>, Status> {
        super::volumes::restore(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn images(
        &self,
        _req: Request<pb::ImagesRequest>,
    ) -> Result<Response<pb::ImagesReply>, Status> {
        super::images::list(&self.ctx).await.map(Response::new)
    }

    async fn remove_image(
        &self,
        req: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageReply>, Status> {
        super::images::remove(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn images_available(
        &self,
        req: Request<pb::ImagesAvailableRequest>,
    ) -> Result<Response<pb::ImagesAvailableReply>, Status> {
        super::images::available(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }
}

/// Where `key`'s live replicas run, and whether its rebalance is under way.
fn rebalance_reply(state: &crate::state::ClusterState, key: &str) -> pb::RebalanceReply {
    let mut replicas_by_node = std::collections::HashMap::new();
    for t in state.tasks.values() {
        if t.service_key() != key
            || t.desired != shoal_proto::task::Desired::Running
            || t.state.is_terminal()
        {
            continue;
        }
        if let Some(n) = &t.node {
            *replicas_by_node.entry(n.clone()).or_insert(0u64) += 1;
        }
    }
    pb::RebalanceReply {
        service: key.to_string(),
        rebalancing: state.services.get(key).is_some_and(|s| s.rebalancing),
        replicas_by_node,
    }
}
