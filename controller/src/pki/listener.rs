//! The controller's TLS listener: every connection is TLS (there is no plaintext
//! listener). A client certificate is asked for but optional at the handshake, so a
//! joiner without one can reach `Pki.Join`; [`super::auth`] refuses every other RPC to
//! it. A certificate that is presented must chain to the cluster CA and be unexpired,
//! or the handshake fails. The server certificate can be swapped (renewal) without
//! touching connections already up.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use shoal_tls::CredentialFiles;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server certificate, swappable.
#[derive(Debug)]
pub struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl CertSlot {
    pub fn new(creds: &CredentialFiles) -> anyhow::Result<CertSlot> {
        Ok(CertSlot(RwLock::new(Arc::new(certified_key(creds)?))))
    }

    pub fn set(&self, creds: &CredentialFiles) -> anyhow::Result<()> {
        let key = Arc::new(certified_key(creds)?);
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn certified_key(creds: &CredentialFiles) -> anyhow::Result<CertifiedKey> {
    let chain = shoal_tls::parse_certs(&creds.cert_pem)?;
    let key = shoal_tls::parse_key(&creds.key_pem)?;
    let signing = shoal_tls::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow::anyhow!("the controller key is not usable: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// The rustls server config: client certificates from the cluster CA only, optional.
pub fn server_config(ca_pem: &str, slot: Arc<CertSlot>) -> anyhow::Result<ServerConfig> {
    let provider = shoal_tls::provider();
    let mut roots = RootCertStore::empty();
    for ca in shoal_tls::parse_certs(ca_pem)? {
        roots
            .add(ca)
            .map_err(|e| anyhow::anyhow!("the CA certificate is not usable: {e}"))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| anyhow::anyhow!("client verifier: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(slot);
    config.alpn_protocols = vec![shoal_tls::ALPN_H2.to_vec()];
    Ok(config)
}

/// Accepts TCP connections and yields them once their TLS handshake is done (each
/// handshake runs on its own task, so a slow client holds up nobody). Ends on `stop`;
/// the handle finishes once the listener is closed.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    stop: CancellationToken,
) -> (
    tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let accepting = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), accepting)
}
