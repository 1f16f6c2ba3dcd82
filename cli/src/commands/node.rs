//! `shoal node drain|activate|label|rm NODE`.

use std::collections::HashMap;

use anyhow::Context;
use shoal_proto::pb::{RemoveNodeRequest, UpdateNodeRequest};

use super::Ctx;
use crate::args::NodeCommand;
use crate::error::UsageError;

pub async fn run(cmd: NodeCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    let (node, done) = match cmd {
        NodeCommand::Drain { node } => {
            update(ctx, availability(&node, "drain")).await?;
            (node, "drained: its replicas move elsewhere")
        }
        NodeCommand::Activate { node } => {
            update(ctx, availability(&node, "active")).await?;
            (node, "active: it takes new work again")
        }
        NodeCommand::Label { node, labels } => {
            let mut req = parse_labels(&labels)?;
            req.node = node.clone();
            update(ctx, req).await?;
            (node, "labelled")
        }
        NodeCommand::Rm { node, force } => {
            let req = RemoveNodeRequest {
                node: node.clone(),
                force,
            };
            let reply = ctx
                .client
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.remove_node(req).await }
                })
                .await
                .with_context(|| format!("remove node {node}"))?;
            println!("node {node} removed ({} replicas to replace)", reply.tasks);
            return Ok(());
        }
    };
    println!("node {node} {done}");
    Ok(())
}

fn availability(node: &str, a: &str) -> UpdateNodeRequest {
    UpdateNodeRequest {
        node: node.to_string(),
        availability: a.to_string(),
        ..Default::default()
    }
}

async fn update(ctx: &mut Ctx, req: UpdateNodeRequest) -> anyhow::Result<()> {
    let node = req.node.clone();
    ctx.client
        .call(|mut c| {
            let req = req.clone();
            async move { c.update_node(req).await }
        })
        .await
        .with_context(|| format!("update node {node}"))?;
    Ok(())
}

/// `k=v` sets, `k-` removes; anything else is a usage error.
fn parse_labels(args: &[String]) -> Result<UpdateNodeRequest, UsageError> {
    let mut set = HashMap::new();
    let mut remove = Vec::new();
    for a in args {
        if let Some((k, v)) = a.split_once('=') {
            if k.is_empty() {
                return Err(UsageError(format!("label {a:?} has no key: use k=v or k-")));
            }
            set.insert(k.to_string(), v.to_string());
        } else if let Some(k) = a.strip_suffix('-').filter(|k| !k.is_empty()) {
            remove.push(k.to_string());
        } else {
            return Err(UsageError(format!(
                "label {a:?}: use k=v to set or k- to remove"
            )));
        }
    }
    Ok(UpdateNodeRequest {
        set_labels: set,
        remove_labels: remove,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_set_and_remove_and_refuse_nonsense() {
        let req = parse_labels(&["zone=eu".into(), "disk-".into()]).unwrap();
        assert_eq!(req.set_labels.get("zone").map(String::as_str), Some("eu"));
        assert_eq!(req.remove_labels, vec!["disk".to_string()]);
        assert!(parse_labels(&["=x".into()]).is_err());
        assert!(parse_labels(&["zone".into()]).is_err());
        assert!(parse_labels(&["-".into()]).is_err());
    }
}
