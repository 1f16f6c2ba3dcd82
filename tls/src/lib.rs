//! Credentials and TLS plumbing shared by the controller, the agent and the CLI.
//!
//! - [`identity`]: who a certificate speaks for (`shoal://ROLE/NAME` in its SAN URIs).
//! - [`token`]: join tokens, `SHOAL-1-<CA digest>-<secret>`, and the CA digest.
//! - [`files`]: a credentials directory (`ca.pem`, `cert.pem`, `key.pem`).
//! - [`client`]: rustls client configs (the cluster CA, or a CA pinned by digest for a
//!   first contact) and tonic channels over them, swappable for renewal.
//! - [`join`]: asking a cluster for a certificate with a join token.
//! - [`csr`]: a fresh key and certificate signing request for joining and renewing.
//! - [`metrics_http`]: the plain-HTTP `/metrics` endpoint the controller and agent serve.
//!
//! What it must not do: hold a CA key or decide who may join (the controller does).
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

pub mod client;
pub mod csr;
pub mod files;
pub mod identity;
pub mod join;
pub mod metrics_http;
pub mod token;

pub use client::ClientTls;
pub use files::CredentialFiles;
pub use identity::{Identity, Role};
pub use token::JoinToken;

use std::sync::Arc;

/// The crypto provider every shoal TLS config uses (ring, as tonic's `tls` feature does).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// ALPN for gRPC over HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// Certificates in a PEM string, in order.
pub fn parse_certs(pem: &str) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    anyhow::ensure!(!certs.is_empty(), "no PEM certificate found");
    Ok(certs)
}

/// The private key in a PEM string.
pub fn parse_key(pem: &str) -> anyhow::Result<rustls::pki_types::PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM private key: {e}"))?
        .ok_or_else(|| anyhow::anyhow!("no PEM private key found"))
}
