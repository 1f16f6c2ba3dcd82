//! Who may call what, from the verified client certificate (rustls has already checked
//! that it chains to the cluster CA and has not expired):
//!
//! | service        | allowed roles                          |
//! |----------------|----------------------------------------|
//! | `Control`      | admin                                  |
//! | `AgentSession` | agent, and only for the node it names  |
//! | `RaftPeer`     | controller                             |
//! | `ImagePush`    | admin                                  |
//! | `ImageStore`   | agent, controller, admin (`Held`: controller) |
//! | `Pki`          | `Join`: anyone with a token; `Renew`: any role, for itself; tokens: admin |
//!
//! A client without a certificate gets `Unauthenticated` from everything but `Pki.Join`,
//! and a revoked certificate (`ClusterState::revoked`) `PermissionDenied`.
// Statuses are what these checks return to tonic, as the services do.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use shoal_tls::identity::CertInfo;
use shoal_tls::{Identity, Role};
use tonic::{Request, Status};

use crate::raft::StateHandle;

/// The caller's identity, put in the request's extensions by [`Guard`], and when its
/// certificate was issued (ms since the epoch), for revocations made later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer(pub Identity, pub u64);

/// What the caller's verified certificate says, if it presented one.
pub fn peer_cert<T>(req: &Request<T>) -> Result<Option<CertInfo>, Status> {
    let Some(certs) = req.peer_certs() else {
        return Ok(None);
    };
    let Some(leaf) = certs.first() else {
        return Ok(None);
    };
    shoal_tls::identity::cert_info(leaf.as_ref())
        .map(Some)
        .map_err(|e| Status::permission_denied(format!("client certificate: {e}")))
}

/// When `info`'s certificate was issued, in ms since the epoch.
pub fn issued_ms(info: &CertInfo) -> u64 {
    info.issued_at()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Refuses a certificate of `id` issued at or before its revocation. Times are compared
/// to the second (X.509 times are), so a certificate issued in the second of the
/// revocation is refused too.
pub fn check_revoked(
    revoked: &BTreeMap<String, u64>,
    id: &Identity,
    issued_ms: u64,
) -> Result<(), Status> {
    match revoked.get(&id.uri()) {
        Some(at) if issued_ms / 1000 <= at / 1000 => Err(Status::permission_denied(format!(
            "the certificate of {id} was revoked (the node or controller was removed); join again with a token"
        ))),
        _ => Ok(()),
    }
}

/// The caller, who must have one of `roles` and an unrevoked certificate.
pub fn require<T>(req: &Request<T>, roles: &[Role], state: &StateHandle) -> Result<Peer, Status> {
    match peer_cert(req)? {
        None => Err(Status::unauthenticated(
            "this API needs a client certificate issued by the cluster CA (see --credentials)",
        )),
        Some(info) if roles.contains(&info.identity.role) => {
            let issued = issued_ms(&info);
            check_revoked(&state.read().revoked, &info.identity, issued)?;
            Ok(Peer(info.identity, issued))
        }
        Some(CertInfo { identity: id, .. }) => Err(Status::permission_denied(format!(
            "a {} certificate may not call this API (it needs {})",
            id.role,
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
    }
}

/// A tonic interceptor admitting only callers with one of its roles and a certificate
/// the cluster has not revoked.
#[derive(Clone)]
pub struct Guard {
    roles: &'static [Role],
    state: StateHandle,
}

impl Guard {
    pub fn admin(state: StateHandle) -> Guard {
        Guard {
            roles: &[Role::Admin],
            state,
        }
    }

    pub fn agent(state: StateHandle) -> Guard {
        Guard {
            roles: &[Role::Agent],
            state,
        }
    }

    /// Agents, controllers and admins: the image store's reads.
    pub fn readers(state: StateHandle) -> Guard {
        Guard {
            roles: &[Role::Agent, Role::Controller, Role::Admin],
            state,
        }
    }

    pub fn controller(state: StateHandle) -> Guard {
        Guard {
            roles: &[Role::Controller],
            state,
        }
    }
}

impl tonic::service::Interceptor for Guard {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        check_protocol(&req)?;
        let peer = require(&req, self.roles, &self.state)?;
        req.extensions_mut().insert(peer);
        Ok(req)
    }
}

/// An agent may only speak for the node its certificate names.
pub fn check_speaks_for(peer: Option<&Peer>, node: &str) -> Result<(), Status> {
    match peer {
        Some(Peer(id, _)) if id.role == Role::Agent && id.name == node => Ok(()),
        Some(Peer(id, _)) => Err(Status::permission_denied(format!(
            "this certificate speaks for {} {:?}, not for node {node:?}",
            id.role, id.name
        ))),
        None => Err(Status::unauthenticated("no client certificate")),
    }
}

/// Refuses a peer whose wire protocol this controller cannot work with
/// ([`shoal_proto::protocol`]), saying which side to upgrade.
fn check_protocol(req: &Request<()>) -> Result<(), Status> {
    let Some(agent) = req
        .metadata()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    match shoal_proto::protocol::incompatible(agent, shoal_proto::protocol::ours()) {
        None => Ok(()),
        Some(why) => {
            tracing::warn!(peer = agent, "refused a request: {why}");
            Err(Status::failed_precondition(why))
        }
    }
}
