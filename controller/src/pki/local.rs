//! This controller's own credentials, in `DATA_DIR/tls/` next to `DATA_DIR/cluster.key`.
//!
//! - `--init`: [`init`] makes the cluster key, the CA, the token secrets, this
//!   controller's certificate and the first admin credentials (`DATA_DIR/admin/`). The
//!   [`PkiRecord`] waits in `DATA_DIR/pki-pending.json` until it is committed.
//! - `--join`: [`join`] pins the CA by the token's digest, sends a CSR and receives a
//!   certificate, the cluster key and a Raft id.
//! - Later: [`Local::renew_loop`] re-issues this controller's certificate (it holds the
//!   CA through the Raft state) two thirds into its lifetime, for new connections only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::ServerConfig;
use shoal_proto::pb;
use shoal_tls::identity::CertInfo;
use shoal_tls::{ClientTls, CredentialFiles, Identity, JoinToken, Role};
use tokio_util::sync::CancellationToken;

use super::ca::{controller_hosts, ClusterCa};
use super::listener::{server_config, CertSlot};
use super::record::PkiRecord;
use super::seal::ClusterKey;
use crate::raft::StateHandle;

pub const TLS_DIR: &str = "tls";
pub const ADMIN_DIR: &str = "admin";
const PENDING_FILE: &str = "pki-pending.json";
/// How often a failed renewal is retried.
const RENEW_RETRY: Duration = Duration::from_secs(1);

/// This controller's TLS identity and the keys it signs and unseals with.
pub struct Local {
    pub key: ClusterKey,
    pub identity: Identity,
    /// Lifetime of the certificates this controller issues.
    pub ttl: Duration,
    /// What clients dial other controllers with (Raft peers, joins).
    pub client: ClientTls,
    pub server: Arc<ServerConfig>,
    slot: Arc<CertSlot>,
    data_dir: PathBuf,
    current: Mutex<CertInfo>,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Local({})", self.identity)
    }
}

impl Local {
    /// The credentials a controller that ran in `data_dir` before left there.
    pub fn load(data_dir: &Path, ttl: Duration) -> anyhow::Result<Local> {
        let key = ClusterKey::load(data_dir)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{} has no cluster.key: this data dir was not made by a controller with TLS (start it with --init or --join ADDR --token T)",
                data_dir.display()
            )
        })?;
        let creds = CredentialFiles::require(&data_dir.join(TLS_DIR))?;
        let info = shoal_tls::identity::cert_info_pem(&creds.cert_pem).with_context(|| {
            format!("read {}", data_dir.join(TLS_DIR).join("cert.pem").display())
        })?;
        anyhow::ensure!(
            info.identity.role == Role::Controller,
            "{} holds a {} certificate, not a controller's",
            data_dir.join(TLS_DIR).display(),
            info.identity.role
        );
        let slot = Arc::new(CertSlot::new(&creds)?);
        let server = Arc::new(server_config(&creds.ca_pem, slot.clone())?);
        Ok(Local {
            key,
            identity: info.identity.clone(),
            ttl,
            client: ClientTls::from_credentials(&creds)?,
            server,
            slot,
            data_dir: data_dir.to_path_buf(),
            current: Mutex::new(info),
        })
    }

    /// A certificate for `who` (joining or renewing), signed with the CA in `record`.
    pub fn issue(
        &self,
        record: &PkiRecord,
        csr_der: &[u8],
        who: &Identity,
    ) -> anyhow::Result<String> {
        let hosts = match who.role {
            Role::Controller => controller_hosts(&who.name),
            _ => Vec::new(),
        };
        let ca = record.ca(&self.key)?;
        Ok(ca.issue_for_csr(csr_der, who, &hosts, self.ttl)?)
    }

    /// A fresh certificate for this controller; new connections use it.
    pub fn renew(&self, record: &PkiRecord) -> anyhow::Result<()> {
        let ca = record.ca(&self.key)?;
        let (cert, key) = ca.issue_with_key(
            &self.identity,
            &controller_hosts(&self.identity.name),
            SystemTime::now(),
            self.ttl,
        )?;
        let creds = CredentialFiles {
            ca_pem: ca.cert_pem().to_string(),
            cert_pem: format!("{cert}{}", ca.cert_pem()),
            key_pem: key,
        };
        creds.store(&self.data_dir.join(TLS_DIR))?;
        self.slot.set(&creds)?;
        self.client.set(shoal_tls::client::client_config(&creds)?);
        let info = shoal_tls::identity::cert_info_pem(&creds.cert_pem)?;
        tracing::info!(identity = %self.identity, not_after = ?info.not_after, "controller certificate renewed");
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = info;
        Ok(())
    }

    fn renew_at(&self) -> SystemTime {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .renew_at()
    }

    /// Renews this controller's certificate two thirds into its lifetime, until `stop`.
    pub async fn renew_loop(self: Arc<Self>, state: StateHandle, stop: CancellationToken) {
        loop {
            let wait = self
                .renew_at()
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let record = state.read().pki.clone();
            let result = match record {
                Some(r) => self.renew(&r),
                None => Err(anyhow::anyhow!("the cluster CA is not in the state yet")),
            };
            if result.is_ok() {
                state
                    .events()
                    .push_local(crate::events::local::cert_renewed(
                        "controller",
                        &self.identity.name,
                        self.ttl,
                        crate::api::control::now_ms(),
                    ));
            }
            if let Err(e) = result {
                tracing::warn!(error = %format!("{e:#}"), "renew the controller certificate");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RENEW_RETRY) => {}
                }
            }
        }
    }
}

/// How `--init` sets up the PKI.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub advertise: String,
    pub ttl: Duration,
    /// Lifetime of the first admin credentials.
    pub admin_ttl: Duration,
}

/// Creates the cluster key, the CA (or takes `ca`), this controller's certificate and
/// the admin credentials, and leaves the record to commit in the pending file.
pub fn init(data_dir: &Path, opts: &InitOptions, ca: Option<ClusterCa>) -> anyhow::Result<()> {
    let key = ClusterKey::generate()?;
    let ca = match ca {
        Some(ca) => ca,
        None => ClusterCa::generate()?,
    };
    let record = PkiRecord::new(&ca, &key)?;
    write_credentials(data_dir, opts, &key, &ca)?;
    let json = serde_json::to_vec(&record)?;
    shoal_tls::files::write_file(&data_dir.join(PENDING_FILE), &json, true)?;
    tracing::info!(digest = %ca.digest(), admin = %data_dir.join(ADMIN_DIR).display(), "cluster CA created");
    Ok(())
}

/// `--restore` and `--force-new-cluster`: the cluster key and CA of a cluster that
/// existed, this controller's certificate and new admin credentials from them. The
/// cluster keeps its identity: its agents and old admin credentials stay valid.
pub fn adopt(
    data_dir: &Path,
    opts: &InitOptions,
    key: &ClusterKey,
    record: &PkiRecord,
) -> anyhow::Result<()> {
    let ca = record
        .ca(key)
        .context("the backup's cluster key does not unseal its CA")?;
    write_credentials(data_dir, opts, key, &ca)?;
    tracing::info!(digest = %ca.digest(), admin = %data_dir.join(ADMIN_DIR).display(), "cluster CA restored");
    Ok(())
}

/// The cluster key, this controller's certificate and admin credentials, in `data_dir`.
fn write_credentials(
    data_dir: &Path,
    opts: &InitOptions,
    key: &ClusterKey,
    ca: &ClusterCa,
) -> anyhow::Result<()> {
    let now = SystemTime::now();
    let me = Identity::new(Role::Controller, opts.advertise.clone());
    let (cert, cert_key) =
        ca.issue_with_key(&me, &controller_hosts(&opts.advertise), now, opts.ttl)?;
    let admin = Identity::new(Role::Admin, "admin");
    let (admin_cert, admin_key) = ca.issue_with_key(&admin, &[], now, opts.admin_ttl)?;
    key.store(data_dir)?;
    CredentialFiles {
        ca_pem: ca.cert_pem().to_string(),
        cert_pem: format!("{cert}{}", ca.cert_pem()),
        key_pem: cert_key,
    }
    .store(&data_dir.join(TLS_DIR))?;
    CredentialFiles {
        ca_pem: ca.cert_pem().to_string(),
        cert_pem: admin_cert,
        key_pem: admin_key,
    }
    .store(&data_dir.join(ADMIN_DIR))
}

/// The record `--init` made that is not committed yet.
pub fn pending(data_dir: &Path) -> anyhow::Result<Option<PkiRecord>> {
    let path = data_dir.join(PENDING_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is damaged", path.display()))
            .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

pub fn clear_pending(data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join(PENDING_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
    }
}

/// `--join ADDR --token T` for a controller: pins the CA by the token's digest, sends a
/// CSR, stores the certificate and the cluster key; returns its Raft id.
pub async fn join(
    data_dir: &Path,
    addrs: &str,
    advertise: &str,
    token: &str,
) -> anyhow::Result<u64> {
    let token: JoinToken = token.parse()?;
    let (key_pem, csr) = shoal_tls::csr::new_key_and_csr()?;
    let request = pb::JoinRequest {
        token: token.to_string(),
        role: Role::Controller.as_str().to_string(),
        name: advertise.to_string(),
        csr_der: csr,
    };
    let reply = shoal_tls::join::join_any(addrs, &token, request).await?;
    let key = ClusterKey::from_bytes(&reply.cluster_key)
        .context("the cluster sent no usable cluster key")?;
    key.store(data_dir)?;
    CredentialFiles {
        ca_pem: reply.ca_pem,
        cert_pem: reply.cert_pem,
        key_pem,
    }
    .store(&data_dir.join(TLS_DIR))?;
    Ok(reply.controller_id)
}
