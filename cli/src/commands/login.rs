//! `shoal login --addr ADDR --credentials DIR`: checks that the cluster answers these
//! credentials, then saves both so later commands need no flags.

use anyhow::Context as _;
use shoal_proto::pb::ClusterStatusRequest;

use super::Ctx;
use crate::error::UsageError;
use crate::login::{save_config, CliConfig};

pub async fn run(
    ctx: &mut Ctx,
    credentials: Option<&std::path::Path>,
    addr: &str,
) -> anyhow::Result<()> {
    let Some(dir) = credentials else {
        return Err(UsageError(
            "shoal login needs --credentials DIR (holding ca.pem, cert.pem, key.pem)".into(),
        )
        .into());
    };
    let dir = std::fs::canonicalize(dir).with_context(|| format!("find {}", dir.display()))?;
    let status = ctx
        .client
        .call(|mut c| async move { c.cluster_status(ClusterStatusRequest {}).await })
        .await
        .with_context(|| format!("check the credentials in {} against {addr}", dir.display()))?;
    let path = save_config(&CliConfig {
        addr: Some(addr.to_string()),
        credentials: dir.clone(),
    })?;
    println!(
        "logged in to {addr} (leader {}, {} controllers) with {}; saved in {}",
        status.leader,
        status.members.len(),
        dir.display(),
        path.display()
    );
    Ok(())
}
