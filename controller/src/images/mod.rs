//! The cluster's image store (issue 13).
//!
//! - [`store`]: the blobs on this controller's disk (content-addressed, outside Raft).
//! - [`gc`]: the leader's pure sweep: images no service runs any more are forgotten
//!   after the retention period.
//! - [`replicate`]: every controller copies the images it lacks from a controller that
//!   holds them and tells the leader, so losing one controller loses no image; blobs no
//!   record names are removed.
//!
//! The services that take pushes and serve blobs are in [`crate::api::images`].
// Statuses are what tonic streams carry, as the other services do.
#![allow(clippy::result_large_err)]

pub mod gc;
pub mod replicate;
pub mod store;

use futures::stream::BoxStream;
use futures::StreamExt;
use shoal_proto::pb;
use tonic::transport::Channel;

use crate::api::Shared;
pub use store::BlobStore;

/// How long an unused image is kept by default (`shoal controller --image-retention`).
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The advertised address of controller `id`, from the Raft membership.
pub fn controller_addr(ctx: &Shared, id: u64) -> Option<String> {
    let metrics = ctx.node.raft.metrics();
    let m = metrics.borrow();
    m.membership_config
        .membership()
        .get_node(&id)
        .map(|n| n.addr.clone())
}

/// A channel to controller `id`, authenticated with this controller's certificate.
pub fn controller_channel(ctx: &Shared, id: u64) -> Option<Channel> {
    let addr = controller_addr(ctx, id)?;
    let endpoint = shoal_tls::client::endpoint(&addr).ok()?;
    Some(ctx.pki.client.connect_lazy(endpoint))
}

/// The bytes of blob `digest` read from one of `holders` (other than this controller),
/// trying each in turn until one answers.
pub async fn fetch_from_peers(
    ctx: &Shared,
    holders: &[u64],
    digest: &str,
) -> Result<BoxStream<'static, Result<bytes::Bytes, tonic::Status>>, tonic::Status> {
    let mut last =
        tonic::Status::unavailable(format!("no controller holding blob {digest} is known"));
    for &id in holders.iter().filter(|&&id| id != ctx.node.id) {
        let Some(channel) = controller_channel(ctx, id) else {
            continue;
        };
        let mut client = pb::image_store_client::ImageStoreClient::new(channel)
            .max_decoding_message_size(store::CHUNK * 2);
        let req = pb::BlobRequest {
            digest: digest.to_string(),
        };
        match client.blob(req).await {
            Ok(resp) => {
                let stream = resp
                    .into_inner()
                    .map(|chunk| chunk.map(|c| bytes::Bytes::from(c.data)));
                return Ok(stream.boxed());
            }
            Err(e) => {
                tracing::debug!(controller = id, digest, error = %e, "blob not read from this controller");
                last = e;
            }
        }
    }
    Err(last)
}
