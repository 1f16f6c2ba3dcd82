//! Cluster backup files (`shoal cluster backup FILE`, `shoal controller --restore FILE`):
//! the Raft state (a snapshot in the state format, [`crate::raft::state_machine`]) and
//! the cluster key, encrypted with a key derived from the user's passphrase.
//!
//! Layout: a 49-byte header, then the ciphertext and its 16-byte tag.
//!
//! ```text
//! "SHOALBAK" | file version (1 byte) | PBKDF2 iterations (u32 BE) | salt (16)
//!            | nonce (12) | plaintext length (u64 BE) | ChaCha20-Poly1305(JSON payload)
//! ```
//!
//! The key is PBKDF2-HMAC-SHA256 of the passphrase (ring); the whole header is the
//! AEAD's associated data, so changing any byte of the file is detected. The plaintext
//! length in the header tells a truncated file from a wrong passphrase.

use std::num::NonZeroU32;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"SHOALBAK";
/// The layout above. A newer one is refused with a message saying so.
const FILE_VERSION: u8 = 1;
const SALT_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 1 + 4 + SALT_LEN + NONCE_LEN + 8;
const TAG_LEN: usize = 16;
/// OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
const ITERATIONS: u32 = 600_000;
/// A passphrase shorter than this is refused when a backup is written.
pub const MIN_PASSPHRASE: usize = 8;

/// What a backup holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// The cluster id (16 hex digits of the CA's digest).
    pub cluster_id: String,
    /// When it was taken, ms since the Unix epoch.
    pub taken_at_ms: u64,
    /// The last log index the state reflects.
    pub index: u64,
    /// The shoal version that wrote it.
    pub written_by: String,
    /// The cluster key (hex), which unseals the CA key, the join secrets and the secrets.
    pub cluster_key: String,
    /// The snapshot bytes (JSON text in the state format).
    pub snapshot: String,
}

impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Backup {{ cluster {}, index {}, {} bytes }}",
            self.cluster_id,
            self.index,
            self.snapshot.len()
        )
    }
}

/// Why a backup file cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("it is not a shoal backup (it does not start with \"SHOALBAK\")")]
    NotABackup,
    #[error("it is truncated: it holds {have} bytes, its header says {want}")]
    Truncated { have: usize, want: usize },
    #[error("it has {0} bytes after the end of the backup: it is damaged")]
    Trailing(usize),
    #[error("it was written by a newer shoal (backup file version {0}; this shoal reads version {FILE_VERSION})")]
    Newer(u8),
    #[error("the passphrase is wrong, or the file was altered")]
    Passphrase,
    #[error("its contents do not parse: {0}")]
    Payload(String),
}

/// The encrypted file for `backup`.
pub fn seal(backup: &Backup, passphrase: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        passphrase.chars().count() >= MIN_PASSPHRASE,
        "the passphrase must have at least {MIN_PASSPHRASE} characters"
    );
    let rng = SystemRandom::new();
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut salt)
        .and_then(|()| rng.fill(&mut nonce))
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    let mut buf = serde_json::to_vec(backup)?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.push(FILE_VERSION);
    header.extend_from_slice(&ITERATIONS.to_be_bytes());
    header.extend_from_slice(&salt);
    header.extend_from_slice(&nonce);
    header.extend_from_slice(&(buf.len() as u64).to_be_bytes());
    key(passphrase, &salt, ITERATIONS)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&header),
            &mut buf,
        )
        .map_err(|_| anyhow::anyhow!("encrypt the backup"))?;
    header.extend_from_slice(&buf);
    Ok(header)
}

/// The backup in `file`, decrypted with `passphrase`.
pub fn open(file: &[u8], passphrase: &str) -> Result<Backup, OpenError> {
    if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
        return Err(OpenError::NotABackup);
    }
    if file.len() > MAGIC.len() && file[MAGIC.len()] > FILE_VERSION {
        return Err(OpenError::Newer(file[MAGIC.len()]));
    }
    if file.len() < HEADER_LEN {
        return Err(OpenError::Truncated {
            have: file.len(),
            want: HEADER_LEN,
        });
    }
    let (header, sealed) = file.split_at(HEADER_LEN);
    let mut at = MAGIC.len() + 1;
    let iterations = u32::from_be_bytes(take(header, &mut at));
    let salt: [u8; SALT_LEN] = take(header, &mut at);
    let nonce: [u8; NONCE_LEN] = take(header, &mut at);
    let plain_len = u64::from_be_bytes(take(header, &mut at));
    let want = usize::try_from(plain_len)
        .ok()
        .and_then(|n| n.checked_add(HEADER_LEN + TAG_LEN))
        .ok_or(OpenError::Truncated {
            have: file.len(),
            want: usize::MAX,
        })?;
    match file.len().cmp(&want) {
        std::cmp::Ordering::Less => {
            return Err(OpenError::Truncated {
                have: file.len(),
                want,
            })
        }
        std::cmp::Ordering::Greater => return Err(OpenError::Trailing(file.len() - want)),
        std::cmp::Ordering::Equal => {}
    }
    let iterations = iterations.clamp(1, 10 * ITERATIONS);
    let mut buf = sealed.to_vec();
    let plain = key(passphrase, &salt, iterations)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(header),
            &mut buf,
        )
        .map_err(|_| OpenError::Passphrase)?;
    serde_json::from_slice(plain).map_err(|e| OpenError::Payload(e.to_string()))
}

/// The next `N` bytes of `header` from `at`; `open` checked its length.
fn take<const N: usize>(header: &[u8], at: &mut usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&header[*at..*at + N]);
    *at += N;
    out
}

fn key(passphrase: &str, salt: &[u8], iterations: u32) -> LessSafeKey {
    let mut k = [0u8; 32];
    let n = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        n,
        salt,
        passphrase.as_bytes(),
        &mut k,
    );
    // A 32-byte key is always valid for ChaCha20-Poly1305.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &k).expect("a 32-byte ChaCha20 key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        Backup {
            cluster_id: "0123456789abcdef".into(),
            taken_at_ms: 1,
            index: 42,
            written_by: "0.1.0".into(),
            cluster_key: "00".repeat(32),
            snapshot: r#"{"format":1}"#.into(),
        }
    }

    #[test]
    fn a_sealed_backup_opens_with_its_passphrase_only() {
        let file = seal(&sample(), "correct horse").unwrap();
        assert_eq!(open(&file, "correct horse").unwrap(), sample());
        assert_eq!(open(&file, "correct horsf"), Err(OpenError::Passphrase));
    }

    #[test]
    fn damage_is_told_apart_from_a_wrong_passphrase() {
        let file = seal(&sample(), "correct horse").unwrap();
        let want = file.len();
        assert_eq!(
            open(&file[..want - 10], "correct horse"),
            Err(OpenError::Truncated {
                have: want - 10,
                want
            })
        );
        assert_eq!(
            open(&file[..20], "correct horse"),
            Err(OpenError::Truncated {
                have: 20,
                want: HEADER_LEN
            })
        );
        let mut longer = file.clone();
        longer.extend_from_slice(b"xx");
        assert_eq!(open(&longer, "correct horse"), Err(OpenError::Trailing(2)));
        let mut flipped = file.clone();
        flipped[HEADER_LEN + 3] ^= 1;
        assert_eq!(open(&flipped, "correct horse"), Err(OpenError::Passphrase));
        assert_eq!(open(b"{\"json\":1}", "x"), Err(OpenError::NotABackup));
        let mut newer = file;
        newer[MAGIC.len()] = FILE_VERSION + 1;
        assert_eq!(
            open(&newer, "correct horse"),
            Err(OpenError::Newer(FILE_VERSION + 1))
        );
    }

    #[test]
    fn a_short_passphrase_is_refused() {
        let e = seal(&sample(), "short").unwrap_err().to_string();
        assert!(e.contains("at least 8 characters"), "{e}");
    }
}
