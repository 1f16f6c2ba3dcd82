//! The cluster's PKI as the Raft state holds it: the CA certificate in clear, its key
//! and the join token secrets sealed with the cluster key ([`super::seal`]).

use serde::{Deserialize, Serialize};
use shoal_tls::{JoinToken, Role};

use super::ca::ClusterCa;
use super::seal::ClusterKey;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkiRecord {
    pub ca_cert_pem: String,
    pub sealed_ca_key: Vec<u8>,
    pub sealed_agent_secret: Vec<u8>,
    pub sealed_controller_secret: Vec<u8>,
}

impl PkiRecord {
    /// A record for `ca` with fresh token secrets.
    pub fn new(ca: &ClusterCa, key: &ClusterKey) -> anyhow::Result<PkiRecord> {
        Ok(PkiRecord {
            ca_cert_pem: ca.cert_pem().to_string(),
            sealed_ca_key: key.seal(ca.key_pem().as_bytes())?,
            sealed_agent_secret: key.seal(shoal_tls::token::new_secret()?.as_bytes())?,
            sealed_controller_secret: key.seal(shoal_tls::token::new_secret()?.as_bytes())?,
        })
    }

    pub fn ca(&self, key: &ClusterKey) -> anyhow::Result<ClusterCa> {
        let ca_key = String::from_utf8(key.open(&self.sealed_ca_key)?)?;
        Ok(ClusterCa::from_pem(&self.ca_cert_pem, &ca_key)?)
    }

    pub fn digest(&self) -> anyhow::Result<String> {
        let certs = shoal_tls::parse_certs(&self.ca_cert_pem)?;
        Ok(shoal_tls::token::ca_digest(&certs[0]))
    }

    /// The current join token for `role` (agent or controller).
    pub fn token(&self, role: Role, key: &ClusterKey) -> anyhow::Result<JoinToken> {
        let sealed = match role {
            Role::Agent => &self.sealed_agent_secret,
            Role::Controller => &self.sealed_controller_secret,
            Role::Admin => anyhow::bail!("there is no join token for admins"),
        };
        Ok(JoinToken {
            digest: self.digest()?,
            secret: String::from_utf8(key.open(sealed)?)?,
        })
    }

    /// This record with a new secret for `role`: the old token stops working.
    pub fn rotated(&self, role: Role, key: &ClusterKey) -> anyhow::Result<PkiRecord> {
        let sealed = key.seal(shoal_tls::token::new_secret()?.as_bytes())?;
        let mut next = self.clone();
        match role {
            Role::Agent => next.sealed_agent_secret = sealed,
            Role::Controller => next.sealed_controller_secret = sealed,
            Role::Admin => anyhow::bail!("there is no join token for admins"),
        }
        Ok(next)
    }
}
