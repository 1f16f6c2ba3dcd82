//! A fresh key pair and a certificate signing request for it. The CSR's subject is
//! ignored by the controller, which names the certificate after what the token and the
//! caller's current certificate allow.

/// A new private key (PEM) and a CSR (DER) for its public key.
pub fn new_key_and_csr() -> anyhow::Result<(String, Vec<u8>)> {
    let key = rcgen::KeyPair::generate().map_err(|e| anyhow::anyhow!("generate a key: {e}"))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| anyhow::anyhow!("make a certificate signing request: {e}"))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}
