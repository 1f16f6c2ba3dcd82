//! The cluster CA: makes the CA, and issues certificates naming a shoal identity.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateSigningRequestDer;
use shoal_tls::Identity;

/// How long the CA itself is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default lifetime of node and admin certificates.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
use shoal_tls::identity::BACKDATE_MAX;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(String),
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
}

pub struct ClusterCa {
    cert_pem: String,
    key: KeyPair,
    /// The CA as rcgen signs with it (same name and key as `cert_pem`).
    issuer: rcgen::Certificate,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCa { .. }")
    }
}

impl ClusterCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<ClusterCa, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "shoal cluster CA");
        dn.push(DnType::OrganizationName, "shoal");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE_MAX).into();
        params.not_after = (now + CA_LIFETIME).into();
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        Ok(ClusterCa {
            cert_pem,
            key,
            issuer: cert,
        })
    }

    /// The CA from its certificate and key (as stored).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = CertificateParams::from_ca_cert_pem(cert_pem)?.self_signed(&key)?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            key,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Hex SHA-256 of the CA certificate's DER, as join tokens carry it.
    pub fn digest(&self) -> String {
        match shoal_tls::parse_certs(&self.cert_pem) {
            Ok(certs) => shoal_tls::token::ca_digest(&certs[0]),
            Err(_) => String::new(),
        }
    }

    /// Signs the public key of `csr_der` into a certificate for `who`, valid for `ttl`
    /// from now, for the host names or IPs in `hosts` (controllers' addresses).
    pub fn issue_for_csr(
        &self,
        csr_der: &[u8],
        who: &Identity,
        hosts: &[String],
        ttl: Duration,
    ) -> Result<String, CaError> {
        let der = CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut csr = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        // Only the public key comes from the requester; the name is ours to give.
        csr.params = leaf_params(who, hosts, SystemTime::now(), ttl)?;
        Ok(csr.signed_by(&self.issuer, &self.key)?.pem())
    }

    /// A certificate and a fresh key for `who` (admin credentials, a controller's own).
    pub fn issue_with_key(
        &self,
        who: &Identity,
        hosts: &[String],
        not_before: SystemTime,
        ttl: Duration,
    ) -> Result<(String, String), CaError> {
        let key = KeyPair::generate()?;
        let cert =
            leaf_params(who, hosts, not_before, ttl)?.signed_by(&key, &self.issuer, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn leaf_params(
    who: &Identity,
    hosts: &[String],
    now: SystemTime,
    ttl: Duration,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, who.name.as_str());
    dn.push(DnType::OrganizationalUnitName, who.role.as_str());
    dn.push(DnType::OrganizationName, "shoal");
    params.distinguished_name = dn;
    let mut sans = vec![SanType::URI(who.uri().try_into()?)];
    for h in hosts {
        match h.parse::<IpAddr>() {
            Ok(ip) => sans.push(SanType::IpAddress(ip)),
            Err(_) => sans.push(SanType::DnsName(h.clone().try_into()?)),
        }
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = (now - ttl.min(BACKDATE_MAX)).into();
    params.not_after = (now + ttl).into();
    params.serial_number = Some(random_serial());
    Ok(params)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // A failing RNG leaves a zero serial; the key itself would have failed first.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// The host part of `host:port` (`[v6]:port` included), for a certificate's SANs.
pub fn host_of(addr: &str) -> String {
    let addr = addr.trim();
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return sa.ip().to_string();
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
            h.trim_start_matches('[').trim_end_matches(']').to_string()
        }
        _ => addr.to_string(),
    }
}

/// What a controller's certificate names: its advertised host and the loopback names
/// (so a local CLI can reach a controller listening on every address).
pub fn controller_hosts(advertise: &str) -> Vec<String> {
    let mut hosts = vec![host_of(advertise)];
    for h in ["127.0.0.1", "::1", "localhost"] {
        if !hosts.iter().any(|x| x == h) {
            hosts.push(h.to_string());
        }
    }
    hosts.retain(|h| !h.is_empty() && h != "0.0.0.0" && h != "::");
    hosts
}
