//! Test support: a `Control` server on 127.0.0.1 that either answers `Services` with a
//! row naming itself or refuses like a follower, pointing at a leader. As a leader it
//! also answers the volume RPCs from a scripted [`FakeVolumes`] and records what it was
//! sent, so the `shoal volume` commands are tested end to end in-process.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use shoal_proto::pb::{
    self,
    control_server::{Control, ControlServer},
};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use crate::leader::{LEADER_HEADER, NO_LEADER_HEADER};

#[derive(Clone)]
pub enum Role {
    /// Answers, with a service named after `name`.
    Leader { name: String },
    /// Refuses with `code` and, if given, the leader hint.
    Follower { code: Code, leader: Option<String> },
    /// Knows no leader for its first `refusals` calls (an election), then answers.
    Electing {
        name: String,
        refusals: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    },
}

/// What a leader answers to the volume RPCs, and what it was sent.
#[derive(Default)]
pub struct FakeVolumes {
    /// `Volumes` answers these (filtered by stack).
    pub rows: Mutex<Vec<pb::VolumeRow>>,
    /// `MoveVolume` answers the first, each `MoveStatus` the next (the last repeats).
    pub moves: Mutex<Vec<pb::MoveStatusReply>>,
    /// `BackupVolume` streams these.
    pub backup: Mutex<Vec<Result<pb::VolumeChunk, Status>>>,
    /// Every chunk `RestoreVolume` received.
    pub restored: Mutex<Vec<pb::VolumeChunk>>,
    /// Every `RemoveVolume` and `RemoveStack` request.
    pub removed: Mutex<Vec<pb::RemoveVolumeRequest>>,
    pub removed_stacks: Mutex<Vec<pb::RemoveStackRequest>>,
}

struct Fake(Role, Arc<FakeVolumes>);

impl Fake {
    // tonic's own handler signature: the Status is what the trait returns anyway.
    #[allow(clippy::result_large_err)]
    fn answer<T>(&self, ok: impl FnOnce(&str) -> T) -> Result<Response<T>, Status> {
        match &self.0 {
            Role::Leader { name } => Ok(Response::new(ok(name))),
            Role::Follower { code, leader } => {
                let mut md = MetadataMap::new();
                if let Some(l) = leader {
                    md.insert(LEADER_HEADER, l.parse().expect("ascii hint"));
                }
                Err(Status::with_metadata(*code, "not the leader", md))
            }
            Role::Electing { name, refusals } => {
                use std::sync::atomic::Ordering;
                let left = refusals.load(Ordering::SeqCst);
                if left == 0 {
                    return Ok(Response::new(ok(name)));
                }
                refusals.store(left - 1, Ordering::SeqCst);
                let mut md = MetadataMap::new();
                md.insert(NO_LEADER_HEADER, "1".parse().expect("ascii"));
                Err(Status::with_metadata(
                    Code::Unavailable,
                    "no leader is known yet",
                    md,
                ))
            }
        }
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogLine, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::VolumeChunk, Status>> + Send>>;

/// Reads or scripts a [`FakeVolumes`] field (a panicked test does not poison the rest).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[tonic::async_trait]
impl Control for Fake {
    async fn deploy(
        &self,
        _: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn ps(&self, _: Request<pb::PsRequest>) -> Result<Response<pb::PsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn services(
        &self,
        _: Request<pb::ServicesRequest>,
    ) -> Result<Response<pb::ServicesReply>, Status> {
        self.answer(|name| pb::ServicesReply {
            services: vec![pb::ServiceRow {
                name: name.to_string(),
                ..Default::default()
            }],
        })
    }
    async fn nodes(
        &self,
        _: Request<pb::NodesRequest>,
    ) -> Result<Response<pb::NodesReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn cluster_status(
        &self,
        _: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn scale(
        &self,
        _: Request<pb::ScaleRequest>,
    ) -> Result<Response<pb::ScaleReply>, Status> {
        Err(Status::not_found("no service named nope"))
    }
    async fn remove_stack(
        &self,
        req: Request<pb::RemoveStackRequest>,
    ) -> Result<Response<pb::RemoveStackReply>, Status> {
        lock(&self.1.removed_stacks).push(req.into_inner());
        self.answer(|_| pb::RemoveStackReply { tasks: 2 })
    }
    async fn join_controller(
        &self,
        _: Request<pb::JoinControllerRequest>,
    ) -> Result<Response<pb::JoinControllerReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove_controller(
        &self,
        _: Request<pb::RemoveControllerRequest>,
    ) -> Result<Response<pb::RemoveControllerReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn rollback(
        &self,
        _: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn rebalance(
        &self,
        _: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn rebalance_status(
        &self,
        _: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn create_secret(
        &self,
        _: Request<pb::CreateSecretRequest>,
    ) -> Result<Response<pb::CreateSecretReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_secrets(
        &self,
        _: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove_secret(
        &self,
        _: Request<pb::RemoveSecretRequest>,
    ) -> Result<Response<pb::RemoveSecretReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn update_node(
        &self,
        _: Request<pb::UpdateNodeRequest>,
    ) -> Result<Response<pb::UpdateNodeReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove_node(
        &self,
        _: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn volumes(
        &self,
        req: Request<pb::VolumesRequest>,
    ) -> Result<Response<pb::VolumesReply>, Status> {
        let stack = req.into_inner().stack;
        let volumes = lock(&self.1.rows)
            .iter()
            .filter(|r| stack.is_empty() || r.stack == stack)
            .cloned()
            .collect();
        self.answer(|_| pb::VolumesReply { volumes })
    }
    async fn remove_volume(
        &self,
        req: Request<pb::RemoveVolumeRequest>,
    ) -> Result<Response<pb::RemoveVolumeReply>, Status> {
        let req = req.into_inner();
        lock(&self.1.removed).push(req.clone());
        let rows = lock(&self.1.rows).clone();
        let copies: Vec<&pb::VolumeRow> = rows
            .iter()
            .filter(|r| format!("{}/{}", r.stack, r.name) == req.volume)
            .filter(|r| req.node.is_empty() || r.node == req.node)
            .collect();
        if copies.is_empty() {
            return Err(Status::not_found(format!("no volume {}", req.volume)));
        }
        if let Some(used) = copies.iter().find(|r| !r.used_by.is_empty()) {
            return Err(Status::failed_precondition(format!(
                "{} on {} is in use by {}: remove or scale them first",
                req.volume,
                used.node,
                used.used_by.join(", ")
            )));
        }
        let nodes = copies.iter().map(|r| r.node.clone()).collect();
        self.answer(|_| pb::RemoveVolumeReply { nodes })
    }
    async fn move_volume(
        &self,
        _: Request<pb::MoveVolumeRequest>,
    ) -> Result<Response<pb::MoveStatusReply>, Status> {
        let first = lock(&self.1.moves).first().cloned();
        let first = first.ok_or_else(|| Status::not_found("no such volume"))?;
        self.answer(|_| first)
    }
    async fn move_status(
        &self,
        _: Request<pb::MoveStatusRequest>,
    ) -> Result<Response<pb::MoveStatusReply>, Status> {
        let mut moves = lock(&self.1.moves);
        if moves.len() > 1 {
            moves.remove(0);
        }
        let next = moves.first().cloned();
        drop(moves);
        let next = next.ok_or_else(|| Status::not_found("no such move"))?;
        self.answer(|_| next)
    }
    type BackupVolumeStream = ChunkStream;
    async fn backup_volume(
        &self,
        _: Request<pb::BackupVolumeRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let chunks = std::mem::take(&mut *lock(&self.1.backup));
        self.answer(|_| Box::pin(futures::stream::iter(chunks)) as ChunkStream)
    }
    async fn restore_volume(
        &self,
        req: Request<tonic::Streaming<pb::VolumeChunk>>,
    ) -> Result<Response<pb::RestoreVolumeReply>, Status> {
        use sha2::Digest as _;
        let mut stream = req.into_inner();
        let mut hasher = sha2::Sha256::new();
        let mut bytes = 0u64;
        let mut node = String::new();
        while let Some(chunk) = stream.message().await? {
            if node.is_empty() {
                node = if chunk.node.is_empty() {
                    "n2".into()
                } else {
                    chunk.node.clone()
                };
            }
            hasher.update(&chunk.data);
            bytes += chunk.data.len() as u64;
            let error = chunk.error.clone();
            lock(&self.1.restored).push(chunk);
            if !error.is_empty() {
                return Err(Status::aborted(format!("the client failed: {error}")));
            }
        }
        let sha256 = hex::encode(hasher.finalize());
        self.answer(|_| pb::RestoreVolumeReply {
            node,
            bytes,
            sha256,
        })
    }
    type LogsStream = LogStream;
    async fn logs(&self, _: Request<pb::LogsRequest>) -> Result<Response<LogStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves `role` until `stop` is cancelled; returns its `127.0.0.1:PORT`.
pub async fn serve(role: Role, stop: CancellationToken) -> String {
    serve_volumes(role, Arc::default(), stop).await
}

/// [`serve`], answering the volume RPCs from `volumes`.
pub async fn serve_volumes(
    role: Role,
    volumes: Arc<FakeVolumes>,
    stop: CancellationToken,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(ControlServer::new(Fake(role, volumes)))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            )
            .await;
    });
    addr
}
