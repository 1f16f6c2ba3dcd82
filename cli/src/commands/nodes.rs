//! `shoal nodes`.

use anyhow::Context;
use shoal_proto::pb::NodesRequest;

use super::Ctx;
use crate::output;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let reply = ctx
        .client
        .call(|mut c| async move { c.nodes(NodesRequest {}).await })
        .await
        .context("list nodes")?;
    output::emit(ctx.format, output::nodes::json(&reply.nodes), || {
        output::nodes::table(&reply.nodes)
    })
}
