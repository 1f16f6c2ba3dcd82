//! `shoal rm STACK`.

use anyhow::Context;
use serde_json::json;
use shoal_proto::pb::RemoveStackRequest;

use super::Ctx;
use crate::args::RmArgs;
use crate::output;

pub async fn run(args: RmArgs, ctx: &mut Ctx) -> anyhow::Result<()> {
    let req = RemoveStackRequest {
        stack: args.stack.clone(),
    };
    let reply = ctx
        .client
        .call(|mut c| {
            let req = req.clone();
            async move { c.remove_stack(req).await }
        })
        .await
        .with_context(|| format!("remove stack {}", args.stack))?;
    let json = json!({"stack": args.stack, "tasks": reply.tasks});
    output::emit(ctx.format, json, || {
        format!(
            "stack {} removed ({} tasks stopping)\n",
            args.stack, reply.tasks
        )
    })
}
