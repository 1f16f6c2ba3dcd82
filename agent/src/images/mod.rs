//! Images from the cluster's own store, so that a node needs no registry.
//!
//! When a task's image is not on the node's engine, the supervisor asks
//! [`Images::ensure`]: with the service's `pull_policy`, it looks at the engine, then at
//! the cluster's store (any controller's `ImageStore`: [`source`]), then at the image's
//! registry. An image from the store is loaded with `docker load` from a tar that carries
//! only the layers the engine lacks ([`plan`] says which, [`archive`] writes it): the
//! engine's loader skips a layer whose chain it already holds without reading it, so a
//! one-layer change moves one layer's bytes. (An engine with containerd's image store
//! imports every blob a tar names: it gets every layer.)
//!
//! Images the agent loaded are recorded; once no task assigned here names one and the
//! store has forgotten it (the controllers' retention), it is removed from the engine.
//!
//! - [`plan`]: pure; which layers the engine lacks.
//! - [`archive`]: the `docker load` tar, blobs verified against their digests.
//! - [`source`]: [`ImageSource`] and [`GrpcSource`] (the controllers, over mTLS).
//! - [`ensure`]: the policy, one load per image at a time, counters and logs; its
//!   answers ([`Ensured`], [`EnsureError`]).
//! - [`report`]: the node's images, reported on the session when they change.
//! - [`loaded`]: the record of the images this agent loaded
//!   (`DATA_DIR/images/loaded.json`).
//! - [`prune`]: removing the loaded images nothing needs any more ([`prune::decide`],
//!   pure, and the periodic [`prune::Pruner`]).
//! - [`convert`]: the wire's image messages.
//!
//! What it must not do: load a blob whose digest it has not checked, leave temporary
//! tars behind (they live under `DATA_DIR/images/tmp/`), remove an image it did not load
//! itself, or force a removal.

use std::sync::atomic::{AtomicU64, Ordering};

pub mod archive;
pub mod convert;
pub mod ensure;
mod error;
pub mod loaded;
pub mod plan;
pub mod prune;
pub mod report;
pub mod source;

pub use ensure::Images;
pub use error::{EnsureError, Ensured};
pub use loaded::LoadedImage;
pub use prune::Pruner;
pub use source::{BlobRef, BlobStream, GrpcSource, ImageManifest, ImageSource};

/// What the agent's `/metrics` shows of image transfers, since the agent started.
#[derive(Debug, Default)]
pub struct ImageCounters {
    bytes_received: AtomicU64,
    images_loaded: AtomicU64,
}

impl ImageCounters {
    /// Bytes of blobs received from the cluster's store.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::Relaxed)
    }

    /// Images loaded into the engine from the cluster's store.
    pub fn images_loaded(&self) -> u64 {
        self.images_loaded.load(Ordering::Relaxed)
    }

    pub(crate) fn received(&self, bytes: u64) {
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn loaded(&self) {
        self.images_loaded.fetch_add(1, Ordering::Relaxed);
    }
}
