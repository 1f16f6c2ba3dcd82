//! `shoal ps [STACK] [--all]`.

use anyhow::Context;
use shoal_proto::pb::PsRequest;

use super::Ctx;
use crate::args::PsArgs;
use crate::output;

pub async fn run(args: PsArgs, ctx: &mut Ctx) -> anyhow::Result<()> {
    let req = PsRequest {
        stack: args.stack.clone().unwrap_or_default(),
        all: args.all,
    };
    let reply = ctx
        .client
        .call(|mut c| {
            let req = req.clone();
            async move { c.ps(req).await }
        })
        .await
        .context("list tasks")?;
    output::emit(ctx.format, output::ps::json(&reply.tasks), || {
        output::ps::table(&reply.tasks, args.stack.is_some())
    })
}
