//! Pushing a saved image to the cluster's store: `ImagePush.Missing` with every blob's
//! digest, then one `ImagePush.Push` stream carrying only the blobs the store lacks
//! (a `start` chunk, then data chunks of [`CHUNK`] bytes each) and last the `image`
//! chunk that registers the reference. Both go to the leader, following a follower's
//! hint like every other call ([`crate::client::Client`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures::Stream;
use shoal_proto::pb::{self, image_push_chunk::Msg};
use tokio::io::AsyncReadExt;

use super::save::SavedImage;
use crate::client::Client;

/// Bytes of blob data per chunk (the controllers accept messages up to 4 MiB).
pub const CHUNK: usize = 1 << 20;

/// What one push did, for the line on stderr and `--format json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub reference: String,
    pub id: String,
    /// Distinct layers of the image, and how many of them the store lacked.
    pub layers: usize,
    pub layers_sent: usize,
    /// Bytes of blobs the leader received.
    pub bytes: u64,
    /// Controllers holding every blob once the push was registered.
    pub holders: Vec<u64>,
}

impl fmt::Display for Pushed {
    /// `pushed REF: N of M layers, B bytes sent (held by controllers 1, 2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = match self.holders.as_slice() {
            [] => "held by no controller yet".to_string(),
            [one] => format!("held by controller {one}"),
            many => format!(
                "held by controllers {}",
                many.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        write!(
            f,
            "pushed {}: {} of {} layers, {} bytes sent ({held})",
            self.reference, self.layers_sent, self.layers, self.bytes
        )
    }
}

impl Pushed {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "image": self.reference,
            "id": self.id,
            "layers": self.layers,
            "layers_sent": self.layers_sent,
            "bytes": self.bytes,
            "controllers": self.holders,
        })
    }
}

/// Sends `saved` to the cluster's store: only the blobs it lacks.
pub async fn push(client: &mut Client, saved: &SavedImage) -> anyhow::Result<Pushed> {
    let reference = saved.manifest.reference.clone();
    let digests = saved.digests();
    let req = pb::MissingBlobsRequest {
        digests: digests.clone(),
    };
    let missing = client
        .call_image_push(|mut c| {
            let req = req.clone();
            async move { c.missing(req).await }
        })
        .await
        .with_context(|| format!("ask the cluster's store which blobs of {reference} it lacks"))?
        .digests;
    // In image order, each once; a digest the store names but the image lacks is not ours.
    let to_send: Vec<(String, PathBuf, u64)> = digests
        .iter()
        .filter(|d| missing.contains(d))
        .filter_map(|d| {
            saved
                .blob(d)
                .map(|(path, size)| (d.clone(), path.to_path_buf(), size))
        })
        .collect();
    let layer_digests: Vec<&String> = {
        let mut v: Vec<&String> = Vec::new();
        for l in &saved.manifest.layers {
            if !v.contains(&&l.digest) {
                v.push(&l.digest);
            }
        }
        v
    };
    let layers_sent = layer_digests.iter().filter(|d| missing.contains(d)).count();
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let result = client
        .upload_image(|mut c| {
            let chunks = chunks(to_send.clone(), saved.manifest.clone(), failure.clone());
            async move { c.push(chunks).await }
        })
        .await;
    let reply = match result {
        Ok(r) => r,
        Err(e) => {
            // A blob this side could not read explains the leader's complaint best.
            let read = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(match read {
                Some(why) => anyhow::anyhow!(why),
                None => e,
            })
            .with_context(|| format!("push {reference} to the cluster's store"));
        }
    };
    Ok(Pushed {
        reference: if reply.reference.is_empty() {
            reference
        } else {
            reply.reference
        },
        id: saved.manifest.id.clone(),
        layers: layer_digests.len(),
        layers_sent,
        bytes: reply.bytes,
        holders: reply.holders,
    })
}

/// Where the push stream is.
enum Step {
    /// Next: the `start` chunk of blob `i`.
    Start(usize),
    /// Reading blob `i`.
    Data(usize, tokio::fs::File),
    /// Every blob sent: the `image` chunk.
    Image,
    Done,
}

/// The push stream: each blob's start and data, then the image. A blob that cannot be
/// read ends the stream early (the leader then refuses the push) and `failure` says why.
fn chunks(
    blobs: Vec<(String, PathBuf, u64)>,
    manifest: pb::ImageManifest,
    failure: Arc<Mutex<Option<String>>>,
) -> impl Stream<Item = pb::ImagePushChunk> + Send + 'static {
    let blobs: Arc<[(String, PathBuf, u64)]> = blobs.into();
    let manifest = Arc::new(manifest);
    let after = {
        let blobs = blobs.clone();
        move |i: usize| {
            if i + 1 < blobs.len() {
                Step::Start(i + 1)
            } else {
                Step::Image
            }
        }
    };
    let first = if blobs.is_empty() {
        Step::Image
    } else {
        Step::Start(0)
    };
    futures::stream::unfold(first, move |mut step| {
        let (blobs, manifest, failure, after) = (
            blobs.clone(),
            manifest.clone(),
            failure.clone(),
            after.clone(),
        );
        async move {
            let chunk = |msg| pb::ImagePushChunk { msg: Some(msg) };
            let fail = |why: String| {
                *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            };
            loop {
                match step {
                    Step::Start(i) => {
                        let (digest, path, size) = &blobs[i];
                        let file = match tokio::fs::File::open(path).await {
                            Ok(f) => f,
                            Err(e) => {
                                fail(format!("open blob {digest} ({}): {e}", path.display()));
                                return None;
                            }
                        };
                        let start = pb::BlobStart {
                            digest: digest.clone(),
                            size: *size,
                        };
                        return Some((chunk(Msg::Start(start)), Step::Data(i, file)));
                    }
                    Step::Data(i, mut file) => {
                        let mut buf = vec![0u8; CHUNK];
                        let mut filled = 0;
                        while filled < CHUNK {
                            match file.read(&mut buf[filled..]).await {
                                Ok(0) => break,
                                Ok(n) => filled += n,
                                Err(e) => {
                                    let (digest, path, _) = &blobs[i];
                                    fail(format!("read blob {digest} ({}): {e}", path.display()));
                                    return None;
                                }
                            }
                        }
                        if filled == 0 {
                            step = after(i);
                            continue;
                        }
                        buf.truncate(filled);
                        return Some((chunk(Msg::Data(buf)), Step::Data(i, file)));
                    }
                    Step::Image => {
                        let image = pb::ImageManifest::clone(&manifest);
                        return Some((chunk(Msg::Image(image)), Step::Done));
                    }
                    Step::Done => return None,
                }
            }
        }
    })
}
