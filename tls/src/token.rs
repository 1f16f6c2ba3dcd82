//! Join tokens: `SHOAL-1-<CA digest>-<secret>`. The digest (hex SHA-256 of the CA
//! certificate's DER) lets a joiner pin the cluster's CA before it trusts anything the
//! controller says; the secret authorizes it to join in one role.

use std::fmt;

/// The version prefix of every token.
const PREFIX: &str = "SHOAL-1-";
/// Bytes of randomness in a token's secret.
pub const SECRET_BYTES: usize = 16;

#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the cluster CA certificate (DER).
    pub digest: String,
    pub secret: String,
}

// Never print the secret by accident (e.g. in a debug log of a config).
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken({PREFIX}{}-…)", self.digest)
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}-{}", self.digest, self.secret)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a shoal join token: it should look like SHOAL-1-<64 hex digits>-<secret> (see `shoal token show agent|controller`)")]
    Malformed,
}

impl std::str::FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<JoinToken, TokenError> {
        let rest = s.trim().strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let (digest, secret) = rest.split_once('-').ok_or(TokenError::Malformed)?;
        let hex = |x: &str| x.chars().all(|c| c.is_ascii_hexdigit());
        if digest.len() != 64 || !hex(digest) || secret.len() < 16 || !hex(secret) {
            return Err(TokenError::Malformed);
        }
        Ok(JoinToken {
            digest: digest.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
        })
    }
}

/// The cluster id: the first 16 hex digits of its CA's [`ca_digest`]. Containers are
/// labelled with it (`io.shoal.cluster`), and a restored cluster keeps it.
pub fn cluster_id(ca_digest: &str) -> String {
    ca_digest.chars().take(16).collect()
}

/// Hex SHA-256 of a certificate's DER: what tokens pin.
pub fn ca_digest(der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// A new random secret (hex).
pub fn new_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; SECRET_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(hex(&bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets in time independent of where they differ.
pub fn secrets_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_malformed_ones_are_refused() {
        let t = JoinToken {
            digest: "ab".repeat(32),
            secret: "0123456789abcdef0123456789abcdef".into(),
        };
        let s = t.to_string();
        assert!(s.starts_with("SHOAL-1-abab"));
        assert_eq!(s.parse::<JoinToken>(), Ok(t.clone()));
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        for bad in [
            "",
            "SHOAL-2-abc",
            &s.replace("SHOAL-1-", "SHOAL-1"),
            &format!("SHOAL-1-{}-short", "ab".repeat(32)),
            &format!("SHOAL-1-{}-{}", "zz".repeat(32), "0".repeat(32)),
        ] {
            assert_eq!(
                bad.parse::<JoinToken>(),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn secret_comparison() {
        assert!(secrets_match("abcd", "abcd"));
        assert!(!secrets_match("abcd", "abce"));
        assert!(!secrets_match("abcd", "abc"));
    }
}
