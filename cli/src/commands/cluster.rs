//! `shoal cluster status`.

use anyhow::Context;
use shoal_proto::pb::ClusterStatusRequest;

use super::Ctx;
use crate::output;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let reply = ctx
        .client
        .call(|mut c| async move { c.cluster_status(ClusterStatusRequest {}).await })
        .await
        .context("read the cluster status")?;
    output::emit(ctx.format, output::cluster::json(&reply), || {
        output::cluster::table(&reply)
    })
}
