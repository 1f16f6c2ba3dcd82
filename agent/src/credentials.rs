//! The agent's certificate, in `DATA_DIR/tls/` (`ca.pem`, `cert.pem`, `key.pem`).
//!
//! First start: the agent needs `--token`; it pins the cluster CA by the token's digest,
//! sends a CSR and stores the certificate it gets, which names its node. Later starts
//! reuse the stored certificate (the token is then not needed). Two thirds into the
//! certificate's lifetime the agent renews it with a `Pki.Renew` call authenticated by
//! the current one; new connections use the new certificate, the open session goes on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use shoal_proto::pb;
use shoal_tls::identity::CertInfo;
use shoal_tls::{ClientTls, CredentialFiles, JoinToken, Role};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub const TLS_DIR: &str = "tls";
const RENEW_RETRY: Duration = Duration::from_secs(1);

pub struct AgentCredentials {
    pub tls: ClientTls,
    dir: PathBuf,
    controllers: Vec<String>,
    current: Mutex<(CredentialFiles, CertInfo)>,
}

/// The cluster id of a CA certificate ([`shoal_proto::labels::CLUSTER`]).
pub fn cluster_id(ca_pem: &str) -> Option<String> {
    let certs = shoal_tls::parse_certs(ca_pem).ok()?;
    Some(shoal_tls::token::cluster_id(&shoal_tls::token::ca_digest(
        certs.first()?,
    )))
}

impl AgentCredentials {
    /// This cluster's id, from the CA the node's certificate chains to.
    pub fn cluster_id(&self) -> Option<String> {
        let ca = self.lock().0.ca_pem.clone();
        cluster_id(&ca)
    }

    /// The stored credentials, or new ones obtained with `token`.
    pub async fn obtain(
        data_dir: &Path,
        name: &str,
        controllers: &[String],
        token: Option<&str>,
    ) -> anyhow::Result<Arc<AgentCredentials>> {
        let dir = data_dir.join(TLS_DIR);
        let creds = match CredentialFiles::load(&dir)? {
            Some(c) => c,
            None => {
                let token = token.ok_or_else(|| {
                    anyhow::anyhow!(
                        "this node has no credentials yet ({} is empty): pass --token T (get T with `shoal token show agent`)",
                        dir.display()
                    )
                })?;
                let creds = join(name, controllers, token).await?;
                creds.store(&dir)?;
                info!(node = %name, dir = %dir.display(), "joined the cluster; credentials stored");
                creds
            }
        };
        let info = shoal_tls::identity::cert_info_pem(&creds.cert_pem)
            .with_context(|| format!("read {}", dir.join("cert.pem").display()))?;
        anyhow::ensure!(
            info.identity.role == Role::Agent && info.identity.name == name,
            "the credentials in {} are for {} {:?}, not for node {name:?}: use that node's data dir or remove {}",
            dir.display(),
            info.identity.role,
            info.identity.name,
            dir.display()
        );
        Ok(Arc::new(AgentCredentials {
            tls: ClientTls::from_credentials(&creds)?,
            dir,
            controllers: controllers.to_vec(),
            current: Mutex::new((creds, info)),
        }))
    }

    /// When the current certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.lock().1.not_after
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (CredentialFiles, CertInfo)> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Renews two thirds into each certificate's lifetime, until `stop`.
    pub async fn renew_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let at = self.lock().1.renew_at();
            let wait = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = self.renew().await {
                warn!(error = %format!("{e:#}"), "renew the node certificate");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RENEW_RETRY) => {}
                }
            }
        }
    }

    /// Asks any controller for a new certificate and switches to it.
    pub async fn renew(&self) -> anyhow::Result<()> {
        let (key_pem, csr) = shoal_tls::csr::new_key_and_csr()?;
        let mut last = anyhow::anyhow!("no controller address");
        for addr in &self.controllers {
            let attempt = async {
                let channel = self.tls.connect(shoal_tls::client::endpoint(addr)?).await?;
                let reply = pb::pki_client::PkiClient::new(channel)
                    .renew(pb::RenewRequest {
                        csr_der: csr.clone(),
                    })
                    .await?;
                anyhow::Ok(reply.into_inner().cert_pem)
            };
            match attempt.await {
                Ok(cert_pem) => {
                    let creds = CredentialFiles {
                        ca_pem: self.lock().0.ca_pem.clone(),
                        cert_pem,
                        key_pem: key_pem.clone(),
                    };
                    let info = shoal_tls::identity::cert_info_pem(&creds.cert_pem)?;
                    let config = shoal_tls::client::client_config(&creds)?;
                    creds.store(&self.dir)?;
                    self.tls.set(config);
                    info!(not_after = ?info.not_after, "node certificate renewed");
                    *self.lock() = (creds, info);
                    return Ok(());
                }
                Err(e) => last = e.context(format!("renew via {addr}")),
            }
        }
        Err(last)
    }
}

async fn join(name: &str, controllers: &[String], token: &str) -> anyhow::Result<CredentialFiles> {
    let token: JoinToken = token.parse()?;
    let (key_pem, csr) = shoal_tls::csr::new_key_and_csr()?;
    let request = pb::JoinRequest {
        token: token.to_string(),
        role: Role::Agent.as_str().to_string(),
        name: name.to_string(),
        csr_der: csr,
    };
    let reply = shoal_tls::join::join_any(&controllers.join(","), &token, request).await?;
    Ok(CredentialFiles {
        ca_pem: reply.ca_pem,
        cert_pem: reply.cert_pem,
        key_pem,
    })
}
