//! Test support: a `Control` server on 127.0.0.1 that either answers `Services` with a
//! row naming itself or refuses like a follower, pointing at a leader.

use std::pin::Pin;

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

struct Fake(Role);

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
        _: Request<pb::RemoveStackRequest>,
    ) -> Result<Response<pb::RemoveStackReply>, Status> {
        Err(Status::unimplemented("fake"))
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
    type LogsStream = LogStream;
    async fn logs(&self, _: Request<pb::LogsRequest>) -> Result<Response<LogStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves `role` until `stop` is cancelled; returns its `127.0.0.1:PORT`.
pub async fn serve(role: Role, stop: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(ControlServer::new(Fake(role)))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            )
            .await;
    });
    addr
}
