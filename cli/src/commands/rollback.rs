//! `shoal rollback SERVICE`: return a service to its previous spec.

use anyhow::Context;
use serde_json::json;
use shoal_proto::pb::RollbackRequest;

use super::Ctx;
use crate::args::RollbackArgs;
use crate::output;

pub async fn run(args: RollbackArgs, ctx: &mut Ctx) -> anyhow::Result<()> {
    let req = RollbackRequest {
        service: args.service.clone(),
    };
    let reply = ctx
        .client
        .call(|mut c| {
            let req = req.clone();
            async move { c.rollback(req).await }
        })
        .await
        .with_context(|| format!("roll back {}", args.service))?;
    let json = json!({"service": reply.service, "generation": reply.generation});
    output::emit(ctx.format, json, || {
        format!(
            "{} rolling back to its previous spec as generation {}: follow it with `shoal services`\n",
            reply.service, reply.generation
        )
    })
}
