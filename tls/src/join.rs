//! Joining: a node without credentials sends its token and a CSR to any controller,
//! having pinned the cluster CA by the token's digest.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use shoal_proto::pb;

use crate::{ClientTls, JoinToken};

pub use shoal_proto::LEADER_HINT;
/// How long a joiner keeps asking a cluster that cannot answer yet.
pub const JOIN_BOUND: Duration = Duration::from_secs(30);
const JOIN_RETRY: Duration = Duration::from_millis(300);

/// Sends `request` to any controller in `addrs` (comma separated), following leader
/// hints, retrying while the cluster cannot answer (bounded); a refusal is final.
/// The reply's CA is checked against the token's digest.
pub async fn join_any(
    addrs: &str,
    token: &JoinToken,
    request: pb::JoinRequest,
) -> anyhow::Result<pb::JoinReply> {
    let seen = Arc::new(Mutex::new(None));
    let tls = ClientTls::new(crate::client::pinned_config(&token.digest, seen.clone())?);
    let start = tokio::time::Instant::now();
    let all: Vec<String> = addrs
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    anyhow::ensure!(!all.is_empty(), "no controller address given");
    let mut next = 0usize;
    let mut hint: Option<String> = None;
    let mut last = String::new();
    while start.elapsed() < JOIN_BOUND {
        let addr = hint.take().unwrap_or_else(|| {
            next += 1;
            all[(next - 1) % all.len()].clone()
        });
        let channel = match crate::client::endpoint(&addr) {
            Ok(e) => tls.connect(e).await,
            Err(e) => anyhow::bail!("{addr:?} is not a controller address: {e}"),
        };
        let channel = match channel {
            Ok(c) => c,
            Err(e) => {
                if let Some(found) = seen.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                    anyhow::bail!(crate::client::mismatch_message(&found, &token.digest));
                }
                last = format!("{addr}: {}", error_chain(&e));
                tokio::time::sleep(JOIN_RETRY).await;
                continue;
            }
        };
        let mut client = pb::pki_client::PkiClient::new(channel);
        match client.join(request.clone()).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                let ca = crate::parse_certs(&reply.ca_pem).context("the cluster sent no CA")?;
                let digest = crate::token::ca_digest(&ca[0]);
                if digest != token.digest {
                    anyhow::bail!(crate::client::mismatch_message(&digest, &token.digest));
                }
                tracing::info!(via = %addr, "joined the cluster");
                return Ok(reply);
            }
            Err(status) => {
                let leader = status
                    .metadata()
                    .get(LEADER_HINT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match status.code() {
                    tonic::Code::PermissionDenied
                    | tonic::Code::InvalidArgument
                    | tonic::Code::Unauthenticated => {
                        anyhow::bail!(
                            "the cluster at {addr} refused to let this node join: {}",
                            status.message()
                        )
                    }
                    _ => {
                        last = format!("{addr}: {}", status.message());
                        if leader.is_some() {
                            hint = leader;
                        } else {
                            tokio::time::sleep(JOIN_RETRY).await;
                        }
                    }
                }
            }
        }
    }
    anyhow::bail!(
        "join the cluster at {addrs}: no controller answered within {JOIN_BOUND:?} (last: {last})"
    )
}

/// An error and its sources, `: `-joined (tonic hides the TLS reason in a source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `Pki.ShowToken` for `role` on any controller in `addrs` (following leader hints),
/// retried while the cluster cannot answer yet, at most `bound`.
pub async fn show_token(
    addrs: &[String],
    tls: &ClientTls,
    role: crate::Role,
    bound: Duration,
) -> anyhow::Result<String> {
    anyhow::ensure!(!addrs.is_empty(), "no controller address given");
    let start = tokio::time::Instant::now();
    let mut next = 0usize;
    let mut hint: Option<String> = None;
    loop {
        let addr = hint.take().unwrap_or_else(|| {
            next += 1;
            addrs[(next - 1) % addrs.len()].clone()
        });
        let attempt = async {
            let channel = tls.connect(crate::client::endpoint(&addr)?).await?;
            let reply = pb::pki_client::PkiClient::new(channel)
                .show_token(pb::TokenRequest {
                    role: role.as_str().to_string(),
                })
                .await;
            anyhow::Ok(reply)
        };
        let last = match attempt.await {
            Ok(Ok(reply)) => return Ok(reply.into_inner().token),
            Ok(Err(status)) => {
                hint = status
                    .metadata()
                    .get(LEADER_HINT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if matches!(
                    status.code(),
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                ) {
                    anyhow::bail!(
                        "{addr} refused to show the {role} token: {}",
                        status.message()
                    );
                }
                format!("{addr}: {}", status.message())
            }
            Err(e) => format!("{addr}: {e:#}"),
        };
        if start.elapsed() > bound {
            anyhow::bail!("get the {role} join token: {last}");
        }
        if hint.is_none() {
            tokio::time::sleep(JOIN_RETRY).await;
        }
    }
}
