//! The `Pki` service: joining with a token, renewing with a current certificate, and
//! the admin's token commands. Join and token changes go to the leader (so a rotated
//! token stops working at once and controller ids are handed out once); renewal is
//! answered by any controller, since each can unseal the CA.
// Statuses are what these checks return to tonic, as the services do.
#![allow(clippy::result_large_err)]

use shoal_proto::pb::{self, pki_server::Pki};
use shoal_tls::{Identity, JoinToken, Role};
use tonic::{Request, Response, Status};

use super::auth;
use super::record::PkiRecord;
use crate::api::Shared;
use crate::state::Command;

pub struct PkiService {
    ctx: Shared,
}

impl PkiService {
    pub fn new(ctx: Shared) -> PkiService {
        PkiService { ctx }
    }

    fn record(&self) -> Result<PkiRecord, Status> {
        self.ctx.node.state.read().pki.clone().ok_or_else(|| {
            Status::unavailable("the cluster CA is not set up yet; try again shortly")
        })
    }
}

fn internal(e: anyhow::Error) -> Status {
    tracing::error!(error = %format!("{e:#}"), "pki");
    Status::internal(format!("{e:#}"))
}

fn token_role(role: &str) -> Result<Role, Status> {
    match Role::parse(role) {
        Some(r @ (Role::Agent | Role::Controller)) => Ok(r),
        _ => Err(Status::invalid_argument(format!(
            "{role:?} is not a role one joins as: use agent or controller"
        ))),
    }
}

/// Whether `given` is the current token for `role`.
fn check_token(
    record: &PkiRecord,
    key: &super::ClusterKey,
    role: Role,
    given: &str,
) -> Result<(), Status> {
    let given: JoinToken = given
        .parse()
        .map_err(|e: shoal_tls::token::TokenError| Status::invalid_argument(e.to_string()))?;
    let current = record.token(role, key).map_err(internal)?;
    if given.digest != current.digest {
        return Err(Status::permission_denied(format!(
            "the token pins CA {} but this cluster's CA is {}: it is a token for another cluster",
            given.digest, current.digest
        )));
    }
    if !shoal_tls::token::secrets_match(&given.secret, &current.secret) {
        return Err(Status::permission_denied(format!(
            "the join token is not valid for a {role}: it is wrong or was rotated; get the current one with `shoal token show {role}`"
        )));
    }
    Ok(())
}

fn check_name(role: Role, name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.contains('/')
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control());
    if !ok {
        return Err(Status::invalid_argument(format!(
            "{name:?} is not a usable {role} name"
        )));
    }
    if role == Role::Controller && !name.contains(':') {
        return Err(Status::invalid_argument(format!(
            "{name:?} is not a host:port a controller can be reached at"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Pki for PkiService {
    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        let req = req.into_inner();
        let role = token_role(&req.role)?;
        check_name(role, &req.name)?;
        self.ctx.linearizable().await?;
        let record = self.record()?;
        let local = &self.ctx.pki;
        check_token(&record, &local.key, role, &req.token)?;
        let who = Identity::new(role, req.name.clone());
        // Revocations compare whole seconds: a node removed this very second gets its
        // new certificate from the next one, so that it is not revoked too.
        let revoked_at = self.ctx.node.state.read().revoked.get(&who.uri()).copied();
        if let Some(at) = revoked_at {
            let next = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at / 1000 + 1);
            if let Ok(wait) = next.duration_since(std::time::SystemTime::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        let cert = local
            .issue(&record, &req.csr_der, &who)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        let mut reply = pb::JoinReply {
            cert_pem: cert,
            ca_pem: record.ca_cert_pem.clone(),
            cluster_key: Vec::new(),
            controller_id: 0,
        };
        if role == Role::Controller {
            // One join at a time, so two joiners never get the same id.
            let _one = self.ctx.join_lock.lock().await;
            reply.controller_id = crate::membership::add_learner(&self.ctx.node.raft, &req.name)
                .await
                .map_err(|e| Status::unavailable(format!("{e:#}")))?;
            reply.cert_pem.push_str(&record.ca_cert_pem);
            reply.cluster_key = local.key.bytes().to_vec();
        }
        tracing::info!(%who, "issued a certificate to a joiner");
        Ok(Response::new(reply))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewReply>, Status> {
        let auth::Peer(who, _) = auth::require(
            &req,
            &[Role::Agent, Role::Controller, Role::Admin],
            &self.ctx.node.state,
        )?;
        let record = self.record()?;
        let mut cert = self
            .ctx
            .pki
            .issue(&record, &req.into_inner().csr_der, &who)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        if who.role == Role::Controller {
            cert.push_str(&record.ca_cert_pem);
        }
        tracing::debug!(%who, "renewed a certificate");
        self.ctx
            .node
            .state
            .events()
            .push_local(crate::events::local::cert_renewed(
                who.role.as_str(),
                &who.name,
                self.ctx.pki.ttl,
                crate::api::control::now_ms(),
            ));
        Ok(Response::new(pb::RenewReply { cert_pem: cert }))
    }

    async fn show_token(
        &self,
        req: Request<pb::TokenRequest>,
    ) -> Result<Response<pb::TokenReply>, Status> {
        auth::require(&req, &[Role::Admin], &self.ctx.node.state)?;
        let role = token_role(&req.into_inner().role)?;
        self.ctx.linearizable().await?;
        let token = self
            .record()?
            .token(role, &self.ctx.pki.key)
            .map_err(internal)?;
        Ok(Response::new(pb::TokenReply {
            token: token.to_string(),
        }))
    }

    async fn rotate_token(
        &self,
        req: Request<pb::TokenRequest>,
    ) -> Result<Response<pb::TokenReply>, Status> {
        auth::require(&req, &[Role::Admin], &self.ctx.node.state)?;
        let role = token_role(&req.into_inner().role)?;
        self.ctx.linearizable().await?;
        let key = &self.ctx.pki.key;
        let next = self.record()?.rotated(role, key).map_err(internal)?;
        let token = next.token(role, key).map_err(internal)?;
        self.ctx.propose(Command::SetPki { record: next }).await?;
        tracing::info!(%role, "join token rotated");
        Ok(Response::new(pb::TokenReply {
            token: token.to_string(),
        }))
    }
}
