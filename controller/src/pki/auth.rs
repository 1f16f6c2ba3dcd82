//! Who may call what, from the verified client certificate (rustls has already checked
//! that it chains to the cluster CA and has not expired):
//!
//! | service        | allowed roles                          |
//! |----------------|----------------------------------------|
//! | `Control`      | admin                                  |
//! | `AgentSession` | agent, and only for the node it names  |
//! | `RaftPeer`     | controller                             |
//! | `Pki`          | `Join`: anyone with a token; `Renew`: agent, controller; tokens: admin |
//!
//! A client without a certificate gets `Unauthenticated` from everything but `Pki.Join`.
// Statuses are what these checks return to tonic, as the services do.
#![allow(clippy::result_large_err)]

use shoal_tls::{Identity, Role};
use tonic::{Request, Status};

/// The caller's identity, put in the request's extensions by [`RequireRole`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer(pub Identity);

/// The identity in the caller's verified certificate, if it presented one.
pub fn peer_identity<T>(req: &Request<T>) -> Result<Option<Identity>, Status> {
    let Some(certs) = req.peer_certs() else {
        return Ok(None);
    };
    let Some(leaf) = certs.first() else {
        return Ok(None);
    };
    shoal_tls::identity::cert_info(leaf.as_ref())
        .map(|i| Some(i.identity))
        .map_err(|e| Status::permission_denied(format!("client certificate: {e}")))
}

/// The caller, who must have one of `roles`.
pub fn require<T>(req: &Request<T>, roles: &[Role]) -> Result<Identity, Status> {
    match peer_identity(req)? {
        None => Err(Status::unauthenticated(
            "this API needs a client certificate issued by the cluster CA (see --credentials)",
        )),
        Some(id) if roles.contains(&id.role) => Ok(id),
        Some(id) => Err(Status::permission_denied(format!(
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

/// A tonic interceptor admitting only callers with one of its roles.
#[derive(Debug, Clone, Copy)]
pub struct RequireRole(pub &'static [Role]);

impl tonic::service::Interceptor for RequireRole {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let id = require(&req, self.0)?;
        req.extensions_mut().insert(Peer(id));
        Ok(req)
    }
}

pub const ADMIN: RequireRole = RequireRole(&[Role::Admin]);
pub const AGENT: RequireRole = RequireRole(&[Role::Agent]);
pub const CONTROLLER: RequireRole = RequireRole(&[Role::Controller]);

/// An agent may only speak for the node its certificate names.
pub fn check_speaks_for(peer: Option<&Peer>, node: &str) -> Result<(), Status> {
    match peer {
        Some(Peer(id)) if id.role == Role::Agent && id.name == node => Ok(()),
        Some(Peer(id)) => Err(Status::permission_denied(format!(
            "this certificate speaks for {} {:?}, not for node {node:?}",
            id.role, id.name
        ))),
        None => Err(Status::unauthenticated("no client certificate")),
    }
}
