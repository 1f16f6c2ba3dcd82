//! The node's images, reported on the session (`ImageReport`): at once when a session
//! opens, then when they changed, looked at every [`REPORT_INTERVAL`] and after each
//! load from the cluster's store. The controller knows from it which nodes hold which
//! images (placement prefers them; `shoal image ls` shows them).

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::pb;
use tokio::sync::{mpsc, Notify};
use tracing::debug;

use crate::runtime::{ContainerRuntime, ImageInfo};

/// How often the engine's images are looked at.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// What a report says of an image: the layers are the agent's own business.
fn reported(mut images: Vec<ImageInfo>) -> Vec<ImageInfo> {
    for i in &mut images {
        i.layers.clear();
        i.tags.sort();
    }
    images.sort_by(|a, b| a.id.cmp(&b.id));
    images
}

/// Report the engine's images on `out` now and whenever they changed since the last
/// report (looked at every [`REPORT_INTERVAL`] and when `wake` is notified), until
/// `out` closes. One runs per session, so a new session always gets a report.
pub async fn run_reporter(
    runtime: Arc<dyn ContainerRuntime>,
    out: mpsc::Sender<pb::AgentMessage>,
    wake: Arc<Notify>,
) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Vec<ImageInfo>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        let images = match runtime.images().await {
            Ok(i) => reported(i),
            Err(e) => {
                debug!(error = %e, "cannot list images");
                continue;
            }
        };
        if last.as_ref() == Some(&images) {
            continue;
        }
        let msg = super::convert::image_report_message(&images);
        if out.send(msg).await.is_err() {
            return;
        }
        last = Some(images);
    }
}
