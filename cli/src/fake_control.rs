//! Test support: a `Control` server on 127.0.0.1 that either answers `Services` with a
//! row naming itself or refuses like a follower, pointing at a leader. As a leader it
//! also answers the volume RPCs from a scripted [`FakeVolumes`] and records what it was
//! sent, so the `shoal volume` commands are tested end to end in-process. It also
//! serves `ImagePush` with an in-memory blob store that checks every digest, and the
//! image RPCs of `Control`, recording the calls a deploy makes.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use shoal_proto::pb::{
    self,
    control_server::{Control, ControlServer},
    image_push_server::{ImagePush, ImagePushServer},
};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use crate::leader::{LEADER_HINT, NO_LEADER};

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
    /// The name of every deploy, image and push RPC received, in order.
    pub calls: Mutex<Vec<String>>,
    /// Every `Deploy` request (answered with each service at generation 1).
    pub deployed: Mutex<Vec<pb::DeployRequest>>,
    /// `Images` answers these; `RemoveImage` refuses one whose `services` is not empty.
    pub images: Mutex<Vec<pb::ImageRow>>,
    /// `ImagesAvailable` answers these (an image not listed is nowhere).
    pub places: Mutex<Vec<pb::ImageWhere>>,
    /// The store: blobs by sha256 hex (checked on receipt) and the images registered.
    pub blobs: Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
    pub pushed: Mutex<Vec<pb::ImageManifest>>,
    /// Digests of the blobs received by `Push`, in order.
    pub received: Mutex<Vec<String>>,
    /// What each `Events` call answers, in turn; none left: UNAVAILABLE, as a
    /// controller that went away.
    pub events: Mutex<std::collections::VecDeque<EventsScript>>,
    /// Every `Events` request.
    pub events_asked: Mutex<Vec<pb::EventsRequest>>,
    /// `Stats` answers this; a named service none of its replicas belongs to is
    /// NOT_FOUND, as the controller answers.
    pub stats: Mutex<pb::StatsReply>,
    /// Every `Stats` request.
    pub stats_asked: Mutex<Vec<pb::StatsRequest>>,
    /// What the read RPCs answer when scripted (the dashboard's tests).
    pub scripted: Mutex<Scripted>,
}

/// Rows the read RPCs answer; `None`: the RPC answers as it does unscripted
/// (UNIMPLEMENTED, or for `Services` the one row naming the server).
#[derive(Default)]
pub struct Scripted {
    pub services: Option<Vec<pb::ServiceRow>>,
    pub nodes: Option<Vec<pb::NodeRow>>,
    pub tasks: Option<Vec<pb::TaskRow>>,
    pub cluster: Option<pb::ClusterStatusReply>,
    /// `Logs` sends these, then keeps the stream open (as `follow` does).
    pub logs: Option<Vec<pb::LogLine>>,
}

#[derive(Clone)]
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
                    md.insert(LEADER_HINT, l.parse().expect("ascii hint"));
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
                md.insert(NO_LEADER, "1".parse().expect("ascii"));
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

impl Fake {
    fn record(&self, call: &str) {
        lock(&self.1.calls).push(call.to_string());
    }
}

#[tonic::async_trait]
impl Control for Fake {
    async fn deploy(
        &self,
        req: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployReply>, Status> {
        self.record("Deploy");
        let req = req.into_inner();
        let stack: shoal_proto::spec::StackSpec = serde_json::from_slice(&req.stack_json)
            .map_err(|e| Status::invalid_argument(format!("stack_json: {e}")))?;
        lock(&self.1.deployed).push(req);
        self.answer(|_| pb::DeployReply {
            stack: stack.name.clone(),
            services: stack
                .services
                .keys()
                .map(|s| pb::ServiceGeneration {
                    service: s.clone(),
                    generation: 1,
                    changed: true,
                })
                .collect(),
        })
    }
    async fn images(
        &self,
        _: Request<pb::ImagesRequest>,
    ) -> Result<Response<pb::ImagesReply>, Status> {
        self.record("Images");
        let images = lock(&self.1.images).clone();
        self.answer(|_| pb::ImagesReply { images })
    }
    async fn remove_image(
        &self,
        req: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageReply>, Status> {
        self.record("RemoveImage");
        let image = req.into_inner().image;
        let rows = lock(&self.1.images).clone();
        let Some(row) = rows.iter().find(|r| r.image == image) else {
            return Err(Status::not_found(format!(
                "the cluster's image store has no image {image}"
            )));
        };
        if !row.services.is_empty() {
            return Err(Status::failed_precondition(format!(
                "image {image} is used by {}: remove or change those services first",
                row.services.join(", ")
            )));
        }
        lock(&self.1.images).retain(|r| r.image != image);
        self.answer(|_| pb::RemoveImageReply {})
    }
    async fn images_available(
        &self,
        req: Request<pb::ImagesAvailableRequest>,
    ) -> Result<Response<pb::ImagesAvailableReply>, Status> {
        self.record("ImagesAvailable");
        let places = lock(&self.1.places).clone();
        let pushed = lock(&self.1.pushed).clone();
        let images = req
            .into_inner()
            .images
            .into_iter()
            .map(|image| {
                let stored = pushed.iter().find(|m| m.reference == image);
                places
                    .iter()
                    .find(|w| w.image == image)
                    .cloned()
                    .unwrap_or_else(|| pb::ImageWhere {
                        in_cluster: stored.is_some(),
                        id: stored.map(|m| m.id.clone()).unwrap_or_default(),
                        image,
                        nodes: Vec::new(),
                        every_node: false,
                    })
            })
            .collect();
        self.answer(|_| pb::ImagesAvailableReply { images })
    }
    async fn ps(&self, req: Request<pb::PsRequest>) -> Result<Response<pb::PsReply>, Status> {
        let stack = req.into_inner().stack;
        let Some(tasks) = lock(&self.1.scripted).tasks.clone() else {
            return Err(Status::unimplemented("fake"));
        };
        let tasks = tasks
            .into_iter()
            .filter(|t| stack.is_empty() || t.stack == stack)
            .collect();
        self.answer(|_| pb::PsReply { tasks })
    }
    async fn services(
        &self,
        _: Request<pb::ServicesRequest>,
    ) -> Result<Response<pb::ServicesReply>, Status> {
        if let Some(services) = lock(&self.1.scripted).services.clone() {
            return self.answer(|_| pb::ServicesReply { services });
        }
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
        match lock(&self.1.scripted).nodes.clone() {
            Some(nodes) => self.answer(|_| pb::NodesReply { nodes }),
            None => Err(Status::unimplemented("fake")),
        }
    }
    async fn cluster_status(
        &self,
        _: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        match lock(&self.1.scripted).cluster.clone() {
            Some(c) => self.answer(|_| c),
            None => Err(Status::unimplemented("fake")),
        }
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
        let Some(lines) = lock(&self.1.scripted).logs.clone() else {
            return Err(Status::unimplemented("fake"));
        };
        use futures::StreamExt as _;
        let stream =
            futures::stream::iter(lines.into_iter().map(Ok)).chain(futures::stream::pending());
        self.answer(|_| Box::pin(stream) as LogStream)
    }
    type EventsStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;
    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        lock(&self.1.events_asked).push(req.into_inner());
        let Some(script) = lock(&self.1.events).pop_front() else {
            return Err(Status::unavailable(
                "this fake controller has no more events",
            ));
        };
        self.answer(|_| ())?;
        let items = futures::stream::iter(script.items);
        let stream: Self::EventsStream = if script.hang {
            Box::pin(futures::StreamExt::chain(items, futures::stream::pending()))
        } else {
            Box::pin(items)
        };
        Ok(Response::new(stream))
    }
    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsReply>, Status> {
        let req = req.into_inner();
        lock(&self.1.stats_asked).push(req.clone());
        let reply = lock(&self.1.stats).clone();
        let named = |r: &pb::ReplicaStats| {
            req.service == r.service || req.service == format!("{}/{}", r.stack, r.service)
        };
        let known = req.service.is_empty() || reply.replicas.iter().any(named);
        // A follower refuses as for any call; only the leader knows the services.
        match self.answer(|_| reply) {
            Ok(_) if !known => Err(Status::not_found(format!(
                "no service named {}",
                req.service
            ))),
            answered => answered,
        }
    }
    type BackupClusterStream =
        Pin<Box<dyn Stream<Item = Result<pb::BackupClusterChunk, Status>> + Send>>;
    async fn backup_cluster(
        &self,
        _: Request<pb::BackupClusterRequest>,
    ) -> Result<Response<Self::BackupClusterStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl ImagePush for Fake {
    async fn missing(
        &self,
        req: Request<pb::MissingBlobsRequest>,
    ) -> Result<Response<pb::MissingBlobsReply>, Status> {
        self.record("Missing");
        let blobs = lock(&self.1.blobs);
        let digests = req
            .into_inner()
            .digests
            .into_iter()
            .filter(|d| !blobs.contains_key(d))
            .collect();
        drop(blobs);
        self.answer(|_| pb::MissingBlobsReply { digests })
    }

    #[allow(clippy::result_large_err)]
    async fn push(
        &self,
        req: Request<tonic::Streaming<pb::ImagePushChunk>>,
    ) -> Result<Response<pb::ImagePushReply>, Status> {
        use pb::image_push_chunk::Msg;
        use sha2::Digest as _;
        self.record("Push");
        if !matches!(self.0, Role::Leader { .. }) {
            return self.answer(|_| pb::ImagePushReply::default());
        }
        let mut stream = req.into_inner();
        let mut current: Option<(pb::BlobStart, Vec<u8>)> = None;
        let mut bytes = 0u64;
        let keep = |blob: Option<(pb::BlobStart, Vec<u8>)>| -> Result<u64, Status> {
            let Some((start, data)) = blob else {
                return Ok(0);
            };
            let digest = hex::encode(sha2::Sha256::digest(&data));
            if digest != start.digest || data.len() as u64 != start.size {
                return Err(Status::data_loss(format!(
                    "blob {} arrived as {digest} ({} bytes, {} announced)",
                    start.digest,
                    data.len(),
                    start.size
                )));
            }
            lock(&self.1.received).push(digest.clone());
            lock(&self.1.blobs).insert(digest, data);
            Ok(start.size)
        };
        while let Some(chunk) = stream.message().await? {
            match chunk.msg {
                Some(Msg::Start(start)) => {
                    bytes += keep(current.take())?;
                    current = Some((start, Vec::new()));
                }
                Some(Msg::Data(d)) => match &mut current {
                    Some((_, data)) => data.extend_from_slice(&d),
                    None => return Err(Status::invalid_argument("data before start")),
                },
                Some(Msg::Image(m)) => {
                    bytes += keep(current.take())?;
                    let blobs = lock(&self.1.blobs);
                    let config = m.id.strip_prefix("sha256:").unwrap_or_default();
                    let absent: Vec<&str> = std::iter::once(config)
                        .chain(m.layers.iter().map(|l| l.digest.as_str()))
                        .filter(|d| !blobs.contains_key(*d))
                        .collect();
                    if !absent.is_empty() {
                        return Err(Status::failed_precondition(format!(
                            "image {}: lacks blobs {}",
                            m.reference,
                            absent.join(", ")
                        )));
                    }
                    drop(blobs);
                    let reference = m.reference.clone();
                    lock(&self.1.pushed).push(m);
                    return Ok(Response::new(pb::ImagePushReply {
                        reference,
                        bytes,
                        holders: vec![1, 2],
                    }));
                }
                None => {}
            }
        }
        Err(Status::invalid_argument(
            "the push ended before naming its image",
        ))
    }
}

/// Serves `role` until `stop` is cancelled; returns its `127.0.0.1:PORT`.
pub async fn serve(role: Role, stop: CancellationToken) -> String {
    serve_volumes(role, Arc::default(), stop).await
}

/// One answer of the fake's `Events`: these items, then the end of the stream, or
/// (`hang`) a stream kept open as a follow is.
pub struct EventsScript {
    pub items: Vec<Result<pb::Event, Status>>,
    pub hang: bool,
}

impl EventsScript {
    /// These events, then the end.
    pub fn ends(events: Vec<pb::Event>) -> EventsScript {
        EventsScript {
            items: events.into_iter().map(Ok).collect(),
            hang: false,
        }
    }
}

/// [`serve`], its `Events` answering `scripts` in turn; returns its address and state.
pub async fn serve_scripted(
    role: Role,
    scripts: Vec<EventsScript>,
    stop: CancellationToken,
) -> (String, Arc<FakeVolumes>) {
    let fake = Arc::new(FakeVolumes::default());
    lock(&fake.events).extend(scripts);
    (serve_volumes(role, fake.clone(), stop).await, fake)
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
    let fake = Fake(role, volumes);
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(ControlServer::new(fake.clone()))
            .add_service(ImagePushServer::new(fake))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            )
            .await;
    });
    addr
}

/// A fake leader answering from `fake` (reached through a follower's hint when
/// `via_follower`), and a JSON-output client context pointed at it; stops on drop.
pub struct Served {
    pub ctx: crate::commands::Ctx,
    pub fake: Arc<FakeVolumes>,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn served(fake: Arc<FakeVolumes>, via_follower: bool) -> Served {
    let stop = CancellationToken::new();
    let leader = Role::Leader {
        name: "leader".into(),
    };
    let mut addr = serve_volumes(leader, fake.clone(), stop.clone()).await;
    if via_follower {
        let follower = Role::Follower {
            code: Code::FailedPrecondition,
            leader: Some(addr),
        };
        addr = serve_volumes(follower, Arc::default(), stop.clone()).await;
    }
    Served {
        ctx: crate::commands::Ctx {
            format: crate::args::Format::Json,
            client: crate::client::Client::new(&crate::args::Addrs(vec![addr])),
        },
        fake,
        stop,
    }
}
