//! Free helpers of the in-process harness: bounded polling, a one-service stack,
//! tracing for test output, and certificates and channels tests make themselves.

use std::future::Future;
use std::time::Duration;

use shoal_controller::pki::ClusterCa;
use shoal_proto::spec::{ServiceSpec, StackSpec};
use shoal_tls::ClientTls;
use tonic::transport::Channel;

use super::POLL;

/// Sets up `tracing` once for the test binary (`RUST_LOG`, default `warn`), written to
/// the test's captured output so a failing test shows what the controllers said.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Polls `f` every 50 ms until it returns `Some`, at most `timeout` (each attempt is
/// also cut off at the deadline); panics naming `what` otherwise.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(v)) = tokio::time::timeout_at(deadline, f()).await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A one-service stack `name` running `replicas` of `image`.
pub fn stack(name: &str, image: &str, replicas: u64) -> StackSpec {
    let web = ServiceSpec {
        name: "web".into(),
        image: image.into(),
        replicas,
        ..Default::default()
    };
    StackSpec {
        name: name.into(),
        services: [("web".to_string(), web)].into_iter().collect(),
        networks: Default::default(),
        volumes: Default::default(),
        secrets: Vec::new(),
        configs: Vec::new(),
    }
}

/// A certificate for `who` from `ca`, valid from `not_before` for `ttl` (tests mint
/// their own: other roles, expired ones, other clusters').
pub fn mint(
    ca: &ClusterCa,
    who: shoal_tls::Identity,
    not_before: std::time::SystemTime,
    ttl: Duration,
) -> ClientTls {
    let (cert_pem, key_pem) = ca.issue_with_key(&who, &[], not_before, ttl).unwrap();
    ClientTls::from_credentials(&shoal_tls::CredentialFiles {
        ca_pem: ca.cert_pem().to_string(),
        cert_pem,
        key_pem,
    })
    .unwrap()
}

/// A channel to `addr` over `tls`, or the whole error chain of why not.
pub async fn channel(tls: &ClientTls, addr: &str) -> Result<Channel, String> {
    tls.connect(shoal_tls::client::endpoint(addr).unwrap())
        .await
        .map_err(|e| shoal_tls::join::error_chain(&e))
}
