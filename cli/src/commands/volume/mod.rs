//! `shoal volume ls|inspect|rm|move|backup|restore`: the stacks' named volumes, one copy
//! per node (or per slot). Listing and removal are here; a move is followed in
//! [`moving`], backups are received in [`backup`] and restores sent in [`restore`].

pub mod backup;
pub mod moving;
pub mod restore;

use anyhow::{anyhow, Context as _};
use shoal_proto::pb::{self, VolumeRow};

use super::Ctx;
use crate::args::{VolumeCommand, VolumeRef};
use crate::output;

pub async fn run(cmd: VolumeCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    match cmd {
        VolumeCommand::Ls { stack } => {
            let rows = list(ctx, stack.as_deref().unwrap_or_default()).await?;
            output::emit(ctx.format, output::volumes::json(&rows), || {
                output::volumes::table(&rows)
            })
        }
        VolumeCommand::Inspect { volume } => {
            let rows = copies(ctx, &volume).await?;
            output::emit(ctx.format, output::volumes::json(&rows), || {
                output::volumes::inspect(&rows, std::time::SystemTime::now())
            })
        }
        VolumeCommand::Rm { volume, node } => remove(ctx, &volume, node).await,
        VolumeCommand::Move(args) => moving::run(args, ctx).await,
        VolumeCommand::Backup { volume, file, node } => {
            backup::run(ctx, &volume, &file, node).await
        }
        VolumeCommand::Restore { volume, file, node } => {
            restore::run(ctx, &volume, &file, node).await
        }
    }
}

/// Every copy the cluster knows, of one stack's volumes or (`""`) of all.
pub async fn list(ctx: &mut Ctx, stack: &str) -> anyhow::Result<Vec<VolumeRow>> {
    let req = pb::VolumesRequest {
        stack: stack.to_string(),
    };
    let reply = ctx
        .client
        .call(|mut c| {
            let req = req.clone();
            async move { c.volumes(req).await }
        })
        .await
        .context("list volumes")?;
    Ok(reply.volumes)
}

/// Every copy of `volume`, on every node; none is an error (exit 1).
async fn copies(ctx: &mut Ctx, volume: &VolumeRef) -> anyhow::Result<Vec<VolumeRow>> {
    let rows: Vec<VolumeRow> = list(ctx, &volume.stack)
        .await?
        .into_iter()
        .filter(|r| r.stack == volume.stack && r.name == volume.name)
        .collect();
    if rows.is_empty() {
        return Err(anyhow!("no volume {volume}: see shoal volume ls"));
    }
    Ok(rows)
}

async fn remove(ctx: &mut Ctx, volume: &VolumeRef, node: Option<String>) -> anyhow::Result<()> {
    let req = pb::RemoveVolumeRequest {
        volume: volume.to_string(),
        node: node.unwrap_or_default(),
    };
    let reply = ctx
        .client
        .call(|mut c| {
            let req = req.clone();
            async move { c.remove_volume(req).await }
        })
        .await
        .with_context(|| format!("remove volume {volume}"))?;
    let json = serde_json::json!({"volume": volume.to_string(), "nodes": reply.nodes});
    output::emit(ctx.format, json, || removed_line(volume, &reply.nodes))
}

fn removed_line(volume: &VolumeRef, nodes: &[String]) -> String {
    if nodes.is_empty() {
        format!("{volume}: no copy to remove\n")
    } else {
        format!("{volume} removed from {}\n", nodes.join(", "))
    }
}

#[cfg(test)]
mod tests;
