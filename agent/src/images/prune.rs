//! Images this agent loaded that nothing needs any more, removed from its engine.
//!
//! The controllers forget an image from the cluster's store once no service's spec (nor
//! previous spec, for rollbacks) has named it for `--image-retention` (default 24 h).
//! Every [`PRUNE_INTERVAL`] the agent removes from its engine each image it loaded from
//! that store itself ([`super::loaded`]) when both hold:
//!
//! - (a) no task assigned to this node names it (ended tasks the controller still lists
//!   included; before the supervisor's first assignments nothing is removed);
//! - (b) the store no longer has it ([`ImageSource::manifest`] says `None`, or names
//!   another image under that reference): the store's sweep is the retention, so a node
//!   keeps an image as long as the cluster could send it again.
//!
//! [`decide`] is that rule, pure. A removal is never forced: an image some container
//! still uses (shoal's or not) stays, and is tried again at the next sweep (said once at
//! info, then at debug). An image the agent did not load (pulled, built here or put there
//! by the operator) is never in the record, so never removed; one the operator has since
//! named otherwise is forgotten, not removed.
//!
//! [`ImageSource::manifest`]: super::ImageSource::manifest

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ensure::normalized;
use super::loaded::LoadedImage;
use super::Images;
use crate::runtime::{ContainerRuntime, ImageInfo, RuntimeError};

/// How often the engine is swept.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// What the cluster's store said of a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSays {
    /// It has the image of this id (the store's id: its config's digest).
    Has(String),
    /// It has no image of that reference.
    Lacks,
    /// It could not be asked.
    Unknown,
}

/// What a sweep does with one image the agent loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave it: in use, still in the store, or the store could not be asked.
    Keep,
    /// Unused: whether it goes depends on the store, which must be asked.
    Ask,
    /// No longer on the engine as the agent loaded it (removed, or named by someone
    /// else since): forget it, never remove it.
    Forget,
    /// Remove this from the engine: the reference the agent loaded it under, or the id
    /// of the image when nothing names it any more.
    Remove(String),
}

/// What to do with `image`, loaded by this agent, given the references the node's
/// assignments name (normalized: [`normalized`]), the engine's images, and what the
/// store said of its reference (`None`: not asked yet).
pub fn decide(
    image: &LoadedImage,
    assigned: &BTreeSet<String>,
    engine: &[ImageInfo],
    store: Option<&StoreSays>,
) -> Decision {
    let reference = normalized(&image.reference);
    if assigned.contains(&reference) {
        return Decision::Keep;
    }
    let Some(on_engine) = engine.iter().find(|i| i.id == image.id) else {
        return Decision::Forget;
    };
    let target = if on_engine.tags.contains(&reference) {
        reference
    } else if on_engine.tags.is_empty() {
        image.id.clone()
    } else {
        return Decision::Forget;
    };
    match store {
        None => Decision::Ask,
        Some(StoreSays::Has(id)) if *id == image.store_id => Decision::Keep,
        Some(StoreSays::Unknown) => Decision::Keep,
        Some(StoreSays::Has(_) | StoreSays::Lacks) => Decision::Remove(target),
    }
}

/// Sweeps the engine of the images its agent loaded and nothing needs.
pub struct Pruner {
    images: Arc<Images>,
    runtime: Arc<dyn ContainerRuntime>,
    /// Images (reference, engine id) the engine refused to remove, already said at
    /// info or warn: said again only at debug.
    refused: BTreeSet<(String, String)>,
}

impl Pruner {
    pub fn new(images: Arc<Images>, runtime: Arc<dyn ContainerRuntime>) -> Pruner {
        Pruner {
            images,
            runtime,
            refused: BTreeSet::new(),
        }
    }

    /// Sweep every [`PRUNE_INTERVAL`] (the first one interval after the start) until
    /// `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let start = tokio::time::Instant::now() + PRUNE_INTERVAL;
        let mut tick = tokio::time::interval_at(start, PRUNE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.sweep().await;
        }
    }

    /// One sweep: the images removed from the engine.
    pub async fn sweep(&mut self) -> Vec<LoadedImage> {
        let Some(assigned) = self.images.assigned() else {
            debug!("no assignments yet: no image is removed");
            return Vec::new();
        };
        let loaded = self.images.loaded_images();
        self.refused
            .retain(|(r, id)| loaded.iter().any(|i| i.reference == *r && i.id == *id));
        if loaded.is_empty() {
            return Vec::new();
        }
        let engine = match self.runtime.images().await {
            Ok(e) => e,
            Err(e) => {
                debug!(error = %e, "cannot list images: no image is removed this time");
                return Vec::new();
            }
        };
        let mut answers: BTreeMap<String, StoreSays> = BTreeMap::new();
        let mut removed = Vec::new();
        for image in loaded {
            let mut decision = decide(&image, &assigned, &engine, None);
            if decision == Decision::Ask {
                if !answers.contains_key(&image.reference) {
                    let said = self.ask_store(&image.reference).await;
                    answers.insert(image.reference.clone(), said);
                }
                decision = decide(&image, &assigned, &engine, answers.get(&image.reference));
            }
            match decision {
                Decision::Keep | Decision::Ask => {}
                Decision::Forget => {
                    debug!(image = %image.reference, id = %image.id,
                        "a loaded image is gone or named otherwise: forgotten");
                    self.forget(&image);
                }
                Decision::Remove(target) => {
                    if self.remove(&image, &target).await {
                        removed.push(image);
                    }
                }
            }
        }
        removed
    }

    async fn ask_store(&self, reference: &str) -> StoreSays {
        let Some(source) = &self.images.source else {
            return StoreSays::Unknown;
        };
        match source.manifest(reference).await {
            Ok(Some(m)) => StoreSays::Has(m.id),
            Ok(None) => StoreSays::Lacks,
            Err(e) => {
                debug!(image = %reference, error = %format!("{e:#}"),
                    "cannot ask the cluster's store: the image is kept");
                StoreSays::Unknown
            }
        }
    }

    /// Remove `target` for `image`; whether it is gone from the engine.
    async fn remove(&mut self, image: &LoadedImage, target: &str) -> bool {
        // Assignments may have come while the store was asked.
        let now_assigned = self.images.assigned().unwrap_or_default();
        if now_assigned.contains(&normalized(&image.reference)) {
            return false;
        }
        let key = (image.reference.clone(), image.id.clone());
        match self.runtime.remove_image(target).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {
                info!(image = %image.reference, id = %image.id,
                    "removed an image loaded from the cluster's store: no task here uses it and the store no longer has it");
                self.refused.remove(&key);
                self.forget(image);
                true
            }
            Err(e) => {
                let first = self.refused.insert(key);
                match (&e, first) {
                    (RuntimeError::InUse(_), true) => {
                        info!(image = %image.reference, error = %e,
                            "an unused image is still used by a container: kept, tried again later")
                    }
                    (_, true) => {
                        warn!(image = %image.reference, error = %e,
                            "cannot remove an unused image: kept, tried again later")
                    }
                    (_, false) => {
                        debug!(image = %image.reference, error = %e, "still cannot remove the image")
                    }
                }
                false
            }
        }
    }

    fn forget(&self, image: &LoadedImage) {
        if let Err(e) = self
            .images
            .lock_record()
            .forget(&image.reference, &image.id)
        {
            warn!(error = %format!("{e:#}"), "cannot save the record of loaded images");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: &str = "sha256:x";

    fn loaded(reference: &str) -> LoadedImage {
        LoadedImage {
            reference: reference.into(),
            id: X.into(),
            store_id: X.into(),
            loaded_ms: 0,
        }
    }

    fn on_engine(tags: &[&str]) -> Vec<ImageInfo> {
        vec![ImageInfo {
            id: X.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }]
    }

    fn set(refs: &[&str]) -> BTreeSet<String> {
        refs.iter().map(|r| normalized(r)).collect()
    }

    #[test]
    fn removed_only_when_unassigned_and_gone_from_the_store() {
        let image = loaded("app:1");
        let engine = on_engine(&["app:1"]);
        let lacks = Some(&StoreSays::Lacks);
        // Unassigned: the store decides.
        assert_eq!(decide(&image, &set(&[]), &engine, None), Decision::Ask);
        assert_eq!(
            decide(&image, &set(&["web:2"]), &engine, lacks),
            Decision::Remove("app:1".into())
        );
        let has = StoreSays::Has(X.into());
        assert_eq!(
            decide(&image, &set(&[]), &engine, Some(&has)),
            Decision::Keep
        );
        assert_eq!(
            decide(&image, &set(&[]), &engine, Some(&StoreSays::Unknown)),
            Decision::Keep
        );
        // The store's reference names another image now: this one is not in it.
        let other = StoreSays::Has("sha256:y".into());
        assert_eq!(
            decide(&image, &set(&[]), &engine, Some(&other)),
            Decision::Remove("app:1".into())
        );
        // Assigned (an ended task's too): kept whatever the store says.
        assert_eq!(
            decide(&image, &set(&["app:1"]), &engine, lacks),
            Decision::Keep
        );
    }

    #[test]
    fn a_reference_without_a_tag_is_latest() {
        let image = loaded("app");
        let engine = on_engine(&["app:latest"]);
        let lacks = Some(&StoreSays::Lacks);
        assert_eq!(
            decide(&image, &set(&["app:latest"]), &engine, lacks),
            Decision::Keep
        );
        assert_eq!(
            decide(&image, &set(&[]), &engine, lacks),
            Decision::Remove("app:latest".into())
        );
    }

    #[test]
    fn an_image_gone_or_named_by_someone_else_is_forgotten() {
        let image = loaded("app:1");
        let lacks = Some(&StoreSays::Lacks);
        assert_eq!(
            decide(&image, &set(&[]), &on_engine(&[]).split_off(1), lacks),
            Decision::Forget
        );
        // Retagged by the operator and its own tag moved away: theirs now.
        assert_eq!(
            decide(&image, &set(&[]), &on_engine(&["mine:1"]), lacks),
            Decision::Forget
        );
        // Left without a name (its tag went to a newer image): removed by id.
        assert_eq!(
            decide(&image, &set(&[]), &on_engine(&[]), lacks),
            Decision::Remove(X.into())
        );
        // Another name besides its own: only its own name goes (the engine untags).
        assert_eq!(
            decide(&image, &set(&[]), &on_engine(&["app:1", "mine:1"]), lacks),
            Decision::Remove("app:1".into())
        );
    }
}
