//! Who a certificate speaks for. Every certificate the cluster CA issues names exactly
//! one `shoal://ROLE/NAME` URI in its subject alternative names; the controller's
//! authorization reads only that (never the CN, which is for humans).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The CLI of an operator: may call every `Control` RPC and manage tokens.
    Admin,
    /// A controller: may call `RaftPeer`.
    Controller,
    /// An agent: may open an `AgentSession` for its own node only.
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Controller => "controller",
            Role::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "controller" => Some(Role::Controller),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    /// The node's name for agents, the advertised address for controllers, a label for
    /// admins.
    pub name: String,
}

impl Identity {
    pub fn new(role: Role, name: impl Into<String>) -> Identity {
        Identity {
            role,
            name: name.into(),
        }
    }

    pub fn uri(&self) -> String {
        format!("{URI_SCHEME}{}/{}", self.role, self.name)
    }

    fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(URI_SCHEME)?;
        let (role, name) = rest.split_once('/')?;
        let role = Role::parse(role)?;
        (!name.is_empty()).then(|| Identity::new(role, name))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

const URI_SCHEME: &str = "shoal://";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the certificate names no shoal identity (a shoal://ROLE/NAME URI)")]
    Missing,
}

/// How far back the cluster CA starts a certificate's validity (at most half its
/// lifetime), for clocks slightly behind the issuer's.
pub const BACKDATE_MAX: Duration = Duration::from_secs(60);

/// What a certificate says about itself (its chain is verified elsewhere, by rustls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub identity: Identity,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertInfo {
    /// When to renew: two thirds into the certificate's lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + life * 2 / 3
    }

    /// When the cluster CA issued it: its validity starts [`BACKDATE_MAX`] earlier, or
    /// half its lifetime for shorter ones (to the second, as X.509 times are).
    pub fn issued_at(&self) -> SystemTime {
        let total = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        let back = if total >= 2 * BACKDATE_MAX {
            BACKDATE_MAX
        } else {
            total / 2
        };
        self.not_before + back
    }
}

/// Reads the shoal identity and validity of a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, IdentityError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let validity = cert.validity();
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let identity = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::URI(u) => Identity::from_uri(u),
                _ => None,
            })
        })
        .ok_or(IdentityError::Missing)?;
    Ok(CertInfo {
        identity,
        not_before: at(validity.not_before.timestamp()),
        not_after: at(validity.not_after.timestamp()),
    })
}

/// [`cert_info`] of the first certificate in a PEM string.
pub fn cert_info_pem(pem: &str) -> anyhow::Result<CertInfo> {
    let certs = crate::parse_certs(pem)?;
    Ok(cert_info(&certs[0])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uris_round_trip_and_reject_junk() {
        let id = Identity::new(Role::Agent, "node-1");
        assert_eq!(id.uri(), "shoal://agent/node-1");
        assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        assert_eq!(Identity::from_uri("shoal://root/x"), None);
        assert_eq!(Identity::from_uri("shoal://agent/"), None);
        assert_eq!(Identity::from_uri("https://agent/x"), None);
    }
}
