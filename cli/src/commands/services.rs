//! `shoal services`.

use anyhow::Context;
use shoal_proto::pb::ServicesRequest;

use super::Ctx;
use crate::output;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let reply = ctx
        .client
        .call(|mut c| async move { c.services(ServicesRequest {}).await })
        .await
        .context("list services")?;
    output::emit(ctx.format, output::services::json(&reply.services), || {
        output::services::table(&reply.services)
    })
}
