//! A credentials directory: `ca.pem` (the cluster CA), `cert.pem` (this holder's
//! certificate, followed by the CA for controllers) and `key.pem` (its private key,
//! mode 0600). Written atomically, so a crash never leaves half a key.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

#[derive(Clone, PartialEq, Eq)]
pub struct CredentialFiles {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CredentialFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialFiles { .. }")
    }
}

impl CredentialFiles {
    /// The credentials in `dir`; `None` if it holds none at all, an error if it holds
    /// some of the files only or they cannot be read.
    pub fn load(dir: &Path) -> anyhow::Result<Option<CredentialFiles>> {
        let paths = [CA_FILE, CERT_FILE, KEY_FILE].map(|f| dir.join(f));
        let present: Vec<&PathBuf> = paths.iter().filter(|p| p.exists()).collect();
        if present.is_empty() {
            return Ok(None);
        }
        if present.len() < paths.len() {
            anyhow::bail!(
                "{} holds only some of ca.pem, cert.pem and key.pem: credentials are incomplete",
                dir.display()
            );
        }
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))
        };
        let creds = CredentialFiles {
            ca_pem: read(&paths[0])?,
            cert_pem: read(&paths[1])?,
            key_pem: read(&paths[2])?,
        };
        crate::parse_certs(&creds.ca_pem).with_context(|| format!("{}", paths[0].display()))?;
        crate::parse_certs(&creds.cert_pem).with_context(|| format!("{}", paths[1].display()))?;
        crate::parse_key(&creds.key_pem).with_context(|| format!("{}", paths[2].display()))?;
        Ok(Some(creds))
    }

    /// Like [`load`](Self::load), but missing credentials are an error saying where.
    pub fn require(dir: &Path) -> anyhow::Result<CredentialFiles> {
        Self::load(dir)?.ok_or_else(|| {
            anyhow::anyhow!(
                "no credentials in {}: expected ca.pem, cert.pem and key.pem",
                dir.display()
            )
        })
    }

    /// Writes the three files into `dir` (created 0700), the key with mode 0600.
    pub fn store(&self, dir: &Path) -> anyhow::Result<()> {
        create_private_dir(dir)?;
        write_file(&dir.join(CA_FILE), self.ca_pem.as_bytes(), false)?;
        write_file(&dir.join(KEY_FILE), self.key_pem.as_bytes(), true)?;
        write_file(&dir.join(CERT_FILE), self.cert_pem.as_bytes(), false)
    }
}

/// Creates `dir` (and parents), readable by its owner only.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restrict {}", dir.display()))?;
    }
    Ok(())
}

/// Writes `path` durably (temp file, sync, rename); `private`: mode 0600.
pub fn write_file(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if private { 0o600 } else { 0o644 });
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_credentials_are_an_error_and_absent_ones_are_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(CredentialFiles::load(dir.path()).unwrap().is_none());
        let err = CredentialFiles::require(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no credentials in"), "{err}");
        std::fs::write(dir.path().join(CA_FILE), "x").unwrap();
        let err = CredentialFiles::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("only some of"), "{err}");
    }
}
