//! The leader's sweep of the image store (pure): an image no service's spec or previous
//! spec runs is marked unused, and forgotten once it stayed unused for the retention
//! period; one that is run again loses its mark. Controllers then remove the blobs no
//! record names ([`super::replicate`]). Nodes' engines keep what they loaded.

use std::time::Duration;

use crate::state::images::ImageSweep;
use crate::state::ClusterState;

/// What to change now; empty when nothing is due.
pub fn sweep(state: &ClusterState, now_ms: u64, retention: Duration) -> ImageSweep {
    let used = state.images_in_use();
    let retention_ms = retention.as_millis() as u64;
    let mut out = ImageSweep::default();
    for img in state.images.values() {
        let in_use = used.contains_key(img.reference.as_str());
        match (in_use, img.unused_since_ms) {
            (true, Some(_)) => out.unused.push((img.reference.clone(), None)),
            (false, None) => out.unused.push((img.reference.clone(), Some(now_ms))),
            (false, Some(since)) if now_ms.saturating_sub(since) >= retention_ms => {
                out.forget.push(img.reference.clone())
            }
            _ => {}
        }
    }
    out
}

impl ImageSweep {
    pub fn is_empty(&self) -> bool {
        self.unused.is_empty() && self.forget.is_empty()
    }
}
