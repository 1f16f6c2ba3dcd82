//! The cluster key: 32 random bytes in `DATA_DIR/cluster.key` on every controller (and
//! nowhere else). Secrets in the Raft state (the CA key, the join token secrets) are
//! sealed with it (ChaCha20-Poly1305), so a copy of the Raft log or a snapshot alone
//! does not give them away, and any controller can still unseal them.

use std::path::Path;

use anyhow::Context as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

pub const CLUSTER_KEY_FILE: &str = "cluster.key";
const KEY_LEN: usize = 32;

#[derive(Clone)]
pub struct ClusterKey([u8; KEY_LEN]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    pub fn generate() -> anyhow::Result<ClusterKey> {
        let mut k = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
        Ok(ClusterKey(k))
    }

    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<ClusterKey> {
        let k: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            anyhow::anyhow!("a cluster key is {KEY_LEN} bytes, not {}", bytes.len())
        })?;
        Ok(ClusterKey(k))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key in `data_dir`, if there is one.
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<ClusterKey>> {
        let path = data_dir.join(CLUSTER_KEY_FILE);
        match std::fs::read(&path) {
            Ok(b) => ClusterKey::from_bytes(&b)
                .with_context(|| format!("{} is damaged", path.display()))
                .map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    pub fn store(&self, data_dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("create {}", data_dir.display()))?;
        shoal_tls::files::write_file(&data_dir.join(CLUSTER_KEY_FILE), &self.0, true)
    }

    /// nonce || ciphertext || tag.
    pub fn seal(&self, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
        let mut buf = plain.to_vec();
        self.key()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .map_err(|_| anyhow::anyhow!("seal failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(sealed.len() > NONCE_LEN, "the sealed value is truncated");
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| anyhow::anyhow!("the sealed value is damaged"))?;
        let mut buf = rest.to_vec();
        let plain = self
            .key()
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot unseal the cluster secrets: this controller's cluster.key is not the cluster's"
                )
            })?;
        Ok(plain.to_vec())
    }

    fn key(&self) -> LessSafeKey {
        // A 32-byte key is always valid for ChaCha20-Poly1305.
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &self.0).expect("a 32-byte ChaCha20 key"),
        )
    }
}
