//! TLS for the cluster's gRPC clients. tonic's own TLS cannot pin a CA by digest or
//! swap the client certificate, so channels dial through [`ClientTls::connector`]: TCP,
//! then a rustls handshake with whatever config is current (renewal swaps it; channels
//! already open keep their connection).

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::files::CredentialFiles;
use crate::token::ca_digest;

/// TCP connect plus TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A client TLS config that renewal can replace for new connections.
#[derive(Clone)]
pub struct ClientTls(Arc<RwLock<Arc<ClientConfig>>>);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    pub fn new(config: ClientConfig) -> ClientTls {
        ClientTls(Arc::new(RwLock::new(Arc::new(config))))
    }

    /// Trusts the CA in `creds` and presents its certificate.
    pub fn from_credentials(creds: &CredentialFiles) -> anyhow::Result<ClientTls> {
        Ok(ClientTls::new(client_config(creds)?))
    }

    /// New connections use `config` from now on.
    pub fn set(&self, config: ClientConfig) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    pub fn current(&self) -> Arc<ClientConfig> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Dials `host:port` over TLS.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        endpoint.connect_with_connector(self.connector()).await
    }

    /// A channel that dials on first use and redials after failures.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(self.connector())
    }

    /// The tower connector tonic dials through.
    pub fn connector(
        &self,
    ) -> impl tower::Service<
        Uri,
        Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
        Error = std::io::Error,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        let tls = self.clone();
        tower::service_fn(move |uri: Uri| {
            let config = tls.current();
            async move {
                let io_err = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
                let host = uri
                    .host()
                    .ok_or_else(|| io_err(format!("{uri} names no host")))?
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let port = uri.port_u16().unwrap_or(shoal_default_port());
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| io_err(format!("{host} is not a host name: {e}")))?;
                let dial = async {
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                    tcp.set_nodelay(true)?;
                    tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, dial).await {
                    Ok(Ok(stream)) => Ok(hyper_util::rt::TokioIo::new(stream)),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no TLS handshake with {host}:{port} within {HANDSHAKE_TIMEOUT:?}"),
                    )),
                }
            }
        })
    }
}

fn shoal_default_port() -> u16 {
    7370
}

/// `http://addr` (the scheme only tells tonic to speak HTTP/2; TLS is the connector's).
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    let addr = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    Endpoint::from_shared(format!("http://{addr}"))?.user_agent(shoal_proto::protocol::user_agent())
}

/// Trusts only the cluster CA and presents `creds`' certificate.
pub fn client_config(creds: &CredentialFiles) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in crate::parse_certs(&creds.ca_pem)? {
        roots
            .add(ca)
            .map_err(|e| anyhow::anyhow!("the CA certificate is not usable: {e}"))?;
    }
    let chain = crate::parse_certs(&creds.cert_pem)?;
    let key = crate::parse_key(&creds.key_pem)?;
    let mut config = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| anyhow::anyhow!("the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![crate::ALPN_H2.to_vec()];
    Ok(config)
}

/// For a first contact: no client certificate; the server's chain must contain a CA
/// whose digest is `digest` and its certificate must be signed by it. A different CA
/// is recorded in `seen` so the caller can say which one it was.
pub fn pinned_config(
    digest: &str,
    seen: Arc<Mutex<Option<String>>>,
) -> anyhow::Result<ClientConfig> {
    let provider = crate::provider();
    let verifier = PinnedCa {
        digest: digest.to_string(),
        seen,
        provider: provider.clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![crate::ALPN_H2.to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct PinnedCa {
    digest: String,
    seen: Arc<Mutex<Option<String>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| ca_digest(c.as_ref()) == self.digest)
        else {
            let shown = intermediates.last().unwrap_or(end_entity);
            let found = ca_digest(shown.as_ref());
            *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(found.clone());
            return Err(rustls::Error::General(mismatch_message(
                &found,
                &self.digest,
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a joiner says when the cluster shows it another CA than its token pins.
pub fn mismatch_message(found: &str, pinned: &str) -> String {
    format!("the cluster's CA digest is {found} but the token pins {pinned}: refusing to join")
}
