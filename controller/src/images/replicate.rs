//! Every controller's image loop: copy the images this controller lacks from one that
//! holds them and tell the leader ([`crate::api::images`]'s `Held`); remove blobs no
//! record names; and, on the leader, sweep the images nothing runs ([`super::gc`]).
//! Copies go one blob at a time, each checked against its digest before it is kept.

use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_proto::pb;
use tokio_util::sync::CancellationToken;

use crate::api::control::now_ms;
use crate::api::Shared;
use crate::state::images::StoredImage;
use crate::state::Command;

/// How often the loop looks again when nothing was applied (a holder that could not be
/// reached is tried again then).
const TICK: Duration = Duration::from_secs(2);
/// How often unreferenced blobs are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// A blob no record names is kept this long: a push stores its blobs before its record
/// is committed.
const PRUNE_GRACE: Duration = Duration::from_secs(600);

/// Runs until `shutdown`.
pub async fn run(ctx: Shared, retention: Duration, shutdown: CancellationToken) {
    let mut applied = ctx.node.state.subscribe();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = Instant::now();
    // The sweep reads every service: at most once per tick, not per applied entry.
    let mut last_sweep: Option<Instant> = None;
    let mut failing: Option<String> = None;
    loop {
        match copy_missing(&ctx).await {
            Ok(()) => failing = None,
            Err(e) => {
                let e = format!("{e:#}");
                if failing.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, "images could not be copied to this controller; retrying");
                    failing = Some(e);
                }
            }
        }
        let leading = ctx.node.raft.metrics().borrow().current_leader == Some(ctx.node.id);
        if leading && last_sweep.is_none_or(|t| t.elapsed() >= TICK) {
            last_sweep = Some(Instant::now());
            let sweep = super::gc::sweep(&ctx.node.state.read(), now_ms(), retention);
            if !sweep.is_empty() {
                for r in &sweep.forget {
                    tracing::info!(image = %r, "image unused for longer than the retention: forgotten");
                }
                if let Err(e) = ctx.propose(Command::SweepImages { sweep }).await {
                    tracing::debug!(error = %e, "image sweep not committed; retrying");
                }
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            let removed = {
                let state = ctx.node.state.read();
                ctx.blobs.prune(&state.referenced_blobs(), PRUNE_GRACE)
            };
            if removed > 0 {
                tracing::info!(removed, "removed image blobs no image names");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = applied.changed() => {}
            _ = tick.tick() => {}
        }
    }
}

/// Copies every image some controller holds and this one does not.
async fn copy_missing(ctx: &Shared) -> anyhow::Result<()> {
    let me = ctx.node.id;
    let todo: Vec<StoredImage> = ctx
        .node
        .state
        .read()
        .images
        .values()
        .filter(|i| !i.holders.contains(&me) && !i.holders.is_empty())
        .cloned()
        .collect();
    for img in todo {
        let holders: Vec<u64> = img.holders.iter().copied().collect();
        let mut copied = 0u64;
        for (digest, size) in img.blobs() {
            if !ctx.blobs.has(digest) {
                copy_blob(ctx, &holders, digest, size).await?;
                copied += size;
            }
        }
        announce_held(ctx, &img).await?;
        tracing::info!(image = %img.reference, bytes = copied, "image copied to this controller");
    }
    Ok(())
}

async fn copy_blob(ctx: &Shared, holders: &[u64], digest: &str, size: u64) -> anyhow::Result<()> {
    let mut stream = super::fetch_from_peers(ctx, holders, digest)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "read blob {digest} from controllers {holders:?}: {}",
                e.message()
            )
        })?;
    let mut w = ctx.blobs.writer(digest, size)?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("read blob {digest}: {}", e.message()))?;
        w.write(&chunk)?;
    }
    w.finish()?;
    Ok(())
}

/// Records that this controller holds `img`: directly on the leader, else by asking it.
async fn announce_held(ctx: &Shared, img: &StoredImage) -> anyhow::Result<()> {
    let leader = ctx.node.raft.metrics().borrow().current_leader;
    match leader {
        Some(l) if l == ctx.node.id => {
            ctx.propose(Command::ImageHeld {
                reference: img.reference.clone(),
                id: img.id.clone(),
                controller: ctx.node.id,
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        }
        Some(l) => {
            let channel = super::controller_channel(ctx, l)
                .ok_or_else(|| anyhow::anyhow!("the leader ({l}) has no known address"))?;
            pb::image_store_client::ImageStoreClient::new(channel)
                .held(pb::HeldRequest {
                    reference: img.reference.clone(),
                    id: img.id.clone(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("tell the leader: {}", e.message()))?;
        }
        None => anyhow::bail!("no leader to tell"),
    }
    Ok(())
}
