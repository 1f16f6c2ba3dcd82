//! `shoal rm STACK [--volumes]`: the stack's volumes are kept unless asked, as
//! `docker compose down` does.

use anyhow::Context;
use serde_json::json;
use shoal_proto::pb::RemoveStackRequest;

use super::Ctx;
use crate::args::RmArgs;
use crate::output;

pub async fn run(args: RmArgs, ctx: &mut Ctx) -> anyhow::Result<()> {
    let req = RemoveStackRequest {
        stack: args.stack.clone(),
        volumes: args.volumes,
    };
    let reply = ctx
        .client
        .call(|mut c| {
            let req = req.clone();
            async move { c.remove_stack(req).await }
        })
        .await
        .with_context(|| format!("remove stack {}", args.stack))?;
    // Only worth saying when it has some (a failed look says it anyway).
    let kept = !args.volumes
        && super::volume::list(ctx, &args.stack)
            .await
            .map_or(true, |rows| rows.iter().any(|r| r.stack == args.stack));
    let json = json!({
        "stack": args.stack,
        "tasks": reply.tasks,
        "volumes": if args.volumes { "removed" } else { "kept" },
    });
    output::emit(ctx.format, json, || {
        message(&args.stack, reply.tasks, args.volumes, kept)
    })
}

fn message(stack: &str, tasks: u64, volumes: bool, has_volumes: bool) -> String {
    let mut out = format!("stack {stack} removed ({tasks} tasks stopping)");
    if volumes {
        out.push_str("; its volumes are being removed from every node");
    } else if has_volumes {
        out.push_str(&format!(
            "\nvolumes kept: shoal volume ls {stack}; remove them with shoal rm {stack} \
             --volumes or shoal volume rm"
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_happens_to_volumes() {
        assert_eq!(
            message("realapp", 3, false, true),
            "stack realapp removed (3 tasks stopping)\nvolumes kept: shoal volume ls realapp; \
             remove them with shoal rm realapp --volumes or shoal volume rm\n"
        );
        assert_eq!(
            message("realapp", 3, false, false),
            "stack realapp removed (3 tasks stopping)\n"
        );
        assert_eq!(
            message("realapp", 0, true, true),
            "stack realapp removed (0 tasks stopping); its volumes are being removed from every node\n"
        );
    }
}
