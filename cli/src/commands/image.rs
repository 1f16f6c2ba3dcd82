//! `shoal image push|ls|rm`: the cluster's own image store. A push reads the image
//! from this machine's engine and sends only the layers the store lacks
//! ([`crate::images`]); listing and removal ask the controllers.

use anyhow::Context as _;
use shoal_proto::pb;

use super::Ctx;
use crate::args::ImageCommand;
use crate::images::deploy::LazyEngine;
use crate::output;

pub async fn run(cmd: ImageCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Push { images } => push(ctx, &images, &mut LazyEngine::from_env()).await,
        ImageCommand::Ls => {
            let rows = list(ctx).await?;
            output::emit(ctx.format, output::images::json(&rows), || {
                output::images::table(&rows)
            })
        }
        ImageCommand::Rm { image } => remove(ctx, &image).await,
    }
}

/// Pushes each image in turn from this machine's engine; one the engine lacks is an
/// error (exit 1) naming the engine. Each push's line goes to stderr; with `--format
/// json` stdout gets `[{"image","id","layers","layers_sent","bytes","controllers"}]`.
pub async fn push(ctx: &mut Ctx, images: &[String], engine: &mut LazyEngine) -> anyhow::Result<()> {
    let engine = engine
        .get()
        .await
        .map_err(|why| anyhow::anyhow!("push {}: {why}", images.join(", ")))?;
    let mut done = Vec::new();
    for image in images {
        let saved = crate::images::save::save(engine, image).await?;
        let pushed = crate::images::push::push(&mut ctx.client, &saved).await?;
        eprintln!("{pushed}");
        done.push(pushed);
    }
    let json = serde_json::Value::Array(done.iter().map(|p| p.json()).collect());
    output::emit(ctx.format, json, String::new)
}

pub async fn list(ctx: &mut Ctx) -> anyhow::Result<Vec<pb::ImageRow>> {
    let reply = ctx
        .client
        .call(|mut c| async move { c.images(pb::ImagesRequest {}).await })
        .await
        .context("list images")?;
    Ok(reply.images)
}

/// Forgets `image` in the cluster's store; the controller's refusal (a service still
/// runs it) is shown in its own words.
async fn remove(ctx: &mut Ctx, image: &str) -> anyhow::Result<()> {
    let req = pb::RemoveImageRequest {
        image: image.to_string(),
    };
    ctx.client
        .call(|mut c| {
            let req = req.clone();
            async move { c.remove_image(req).await }
        })
        .await
        .with_context(|| format!("remove image {image}"))?;
    let json = serde_json::json!({ "image": image });
    output::emit(ctx.format, json, || {
        format!("{image} removed from the cluster's store\n")
    })
}

#[cfg(test)]
mod tests;
