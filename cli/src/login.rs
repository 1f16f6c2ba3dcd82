//! Where the CLI finds its credentials and cluster: `--credentials DIR` /
//! `SHOAL_CREDENTIALS`, else the config file `shoal login` and `shoal up` write
//! (`$XDG_CONFIG_HOME/shoal/config`, else `~/.config/shoal/config`), a JSON object
//! `{"addr": "host:port", "credentials": "/abs/dir"}`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use shoal_tls::{ClientTls, CredentialFiles};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliConfig {
    /// Controller address(es), as `--addr` takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Directory holding ca.pem, cert.pem, key.pem.
    pub credentials: PathBuf,
}

/// The config file's path, from `XDG_CONFIG_HOME` or `HOME`.
pub fn config_path() -> Option<PathBuf> {
    config_path_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

fn config_path_from(
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(x) = xdg.filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("shoal/config"));
    }
    home.filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/shoal/config"))
}

/// The saved config, if there is one.
pub fn load_config() -> anyhow::Result<Option<CliConfig>> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| {
                format!(
                    "{} is not a shoal CLI config (JSON with \"credentials\")",
                    path.display()
                )
            })
            .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Writes the config file (creating its directory).
pub fn save_config(cfg: &CliConfig) -> anyhow::Result<PathBuf> {
    let path = config_path().ok_or_else(|| {
        anyhow::anyhow!("neither XDG_CONFIG_HOME nor HOME is set: nowhere to save the CLI config")
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(cfg)?;
    shoal_tls::files::write_file(&path, &json, true)?;
    Ok(path)
}

/// What a client command authenticates with.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub dir: PathBuf,
    pub tls: ClientTls,
    pub creds: CredentialFiles,
    /// The saved cluster address, when the credentials came from the config.
    pub addr: Option<String>,
}

/// The credentials of `--credentials`/`SHOAL_CREDENTIALS`, else of the config file.
pub fn resolve(flag: Option<&Path>) -> anyhow::Result<Resolved> {
    let (dir, addr) = match flag {
        Some(d) => (d.to_path_buf(), None),
        None => match load_config()? {
            Some(c) => (c.credentials, c.addr),
            None => anyhow::bail!(
                "no credentials found: pass --credentials DIR (holding ca.pem, cert.pem, key.pem), set SHOAL_CREDENTIALS, or run `shoal login --addr ADDR --credentials DIR`; `shoal controller --init` writes admin credentials to DATA_DIR/admin"
            ),
        },
    };
    let creds = CredentialFiles::require(&dir)?;
    let tls = ClientTls::from_credentials(&creds)
        .with_context(|| format!("the credentials in {}", dir.display()))?;
    Ok(Resolved {
        dir,
        tls,
        creds,
        addr,
    })
}

/// Renews the CLI's certificate once it is two thirds into its lifetime, as agents
/// and controllers renew theirs: a fresh key and CSR to `Pki.Renew`, the new
/// certificate and key written over the old ones. A failure only warns: the old
/// certificate is still valid.
pub async fn renew_if_due(client: &mut crate::client::Client, r: &Resolved) {
    let Ok(info) = shoal_tls::identity::cert_info_pem(&r.creds.cert_pem) else {
        return;
    };
    if std::time::SystemTime::now() < info.renew_at() {
        return;
    }
    let renewed = async {
        let (key_pem, csr) = shoal_tls::csr::new_key_and_csr()?;
        let reply = client
            .call_pki(|mut c| {
                let csr_der = csr.clone();
                async move { c.renew(shoal_proto::pb::RenewRequest { csr_der }).await }
            })
            .await?;
        let creds = CredentialFiles {
            ca_pem: r.creds.ca_pem.clone(),
            cert_pem: reply.cert_pem,
            key_pem,
        };
        let config = shoal_tls::client::client_config(&creds)?;
        creds
            .store(&r.dir)
            .with_context(|| format!("save the renewed credentials in {}", r.dir.display()))?;
        r.tls.set(config);
        anyhow::Ok(())
    };
    match renewed.await {
        Ok(()) => tracing::info!(dir = %r.dir.display(), "renewed the CLI certificate"),
        Err(e) => eprintln!(
            "shoal: warning: could not renew the certificate in {} ({e:#}); it expires at {}",
            r.dir.display(),
            humantime::format_rfc3339_seconds(info.not_after)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_follows_xdg_then_home() {
        assert_eq!(
            config_path_from(Some("/x".into()), Some("/home/u".into())),
            Some(PathBuf::from("/x/shoal/config"))
        );
        assert_eq!(
            config_path_from(Some("".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.config/shoal/config"))
        );
        assert_eq!(config_path_from(None, None), None);
    }
}
