//! The images part of the state (issue 13): the records of the cluster's image store and
//! what each node's engine holds. The blobs themselves live in each controller's data
//! dir ([`crate::images::BlobStore`]), outside the Raft log; a record says which
//! controllers hold every blob of an image. Applied deterministically like the rest of
//! [`ClusterState::apply`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::apply::CommandResult;
use super::model::*;

/// One blob of an image: the sha256 hex of its bytes (a layer's diff id) and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
}

/// An image of the cluster's store, by reference (`REPO:TAG`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    pub reference: String,
    /// `sha256:HEX` of the config blob: the engine's image id.
    pub id: String,
    /// Base first.
    pub layers: Vec<BlobRef>,
    pub config_size: u64,
    pub pushed_ms: u64,
    /// Controllers holding every blob (the config and the layers).
    pub holders: BTreeSet<u64>,
    /// Since when no service's spec (current or previous) runs it; None while one does.
    #[serde(default)]
    pub unused_since_ms: Option<u64>,
}

impl StoredImage {
    /// The config blob's digest (the id without `sha256:`).
    pub fn config_digest(&self) -> &str {
        self.id.strip_prefix("sha256:").unwrap_or(&self.id)
    }

    /// Every blob: the config, then the layers.
    pub fn blobs(&self) -> impl Iterator<Item = (&str, u64)> {
        std::iter::once((self.config_digest(), self.config_size))
            .chain(self.layers.iter().map(|l| (l.digest.as_str(), l.size)))
    }

    pub fn size(&self) -> u64 {
        self.blobs().map(|(_, s)| s).sum()
    }
}

/// An image on a node's engine, as its agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeImage {
    pub id: String,
    pub tags: Vec<String>,
    pub size: u64,
}

/// What the leader's image pass decided ([`crate::images::gc`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSweep {
    /// Images that became unused (with the time) or used again (None).
    pub unused: Vec<(String, Option<u64>)>,
    /// Images unused for longer than the retention: forgotten, if still unused.
    pub forget: Vec<String>,
}

impl ClusterState {
    /// A controller stored every blob of `image` (a push, `holder` the controller that
    /// took it). A push under a reference that names another id replaces the record: a
    /// tag moved.
    pub(super) fn image_pushed(&mut self, image: &StoredImage, now_ms: u64) -> CommandResult {
        let mut record = image.clone();
        record.pushed_ms = now_ms;
        record.unused_since_ms = None;
        match self.images.get_mut(&image.reference) {
            Some(old) if old.id == image.id => {
                old.holders.extend(image.holders.iter().copied());
                old.unused_since_ms = None;
            }
            _ => {
                self.images.insert(image.reference.clone(), record);
            }
        }
        CommandResult::default()
    }

    /// Controller `controller` now holds every blob of `reference` (if it still names `id`).
    pub(super) fn image_held(
        &mut self,
        reference: &str,
        id: &str,
        controller: u64,
    ) -> CommandResult {
        match self.images.get_mut(reference) {
            Some(img) if img.id == id => {
                img.holders.insert(controller);
                CommandResult::default()
            }
            _ => CommandResult::error(format!("the cluster has no image {reference} with id {id}")),
        }
    }

    /// `shoal image rm`: refused while a service runs it.
    pub(super) fn remove_image(&mut self, reference: &str) -> CommandResult {
        if !self.images.contains_key(reference) {
            return CommandResult::error(format!(
                "the cluster's image store has no image {reference}"
            ));
        }
        let users = self.image_users(reference);
        if !users.is_empty() {
            return CommandResult::error(format!(
                "image {reference} is used by {}: remove those services or deploy them with another image first",
                users.join(", ")
            ));
        }
        self.images.remove(reference);
        CommandResult::default()
    }

    /// The leader's sweep: marks are applied as decided; an image is forgotten only if
    /// no service runs it now (a deploy may have come in between).
    pub(super) fn sweep_images(&mut self, sweep: &ImageSweep) -> CommandResult {
        for (reference, since) in &sweep.unused {
            if let Some(img) = self.images.get_mut(reference) {
                img.unused_since_ms = *since;
            }
        }
        let mut count = 0;
        for reference in &sweep.forget {
            if self.images.contains_key(reference) && self.image_users(reference).is_empty() {
                self.images.remove(reference);
                count += 1;
            }
        }
        CommandResult {
            count,
            ..Default::default()
        }
    }

    /// What `node`'s engine holds now (its agent's report).
    pub(super) fn node_images(&mut self, node: &str, images: &[NodeImage]) -> CommandResult {
        let mut images = images.to_vec();
        images.sort();
        self.node_images.insert(node.to_string(), images);
        CommandResult::default()
    }

    /// Whether `images` differs from what is recorded for `node` (an unchanged report
    /// costs no Raft write).
    pub fn node_images_change(&self, node: &str, images: &[NodeImage]) -> bool {
        let mut sorted = images.to_vec();
        sorted.sort();
        self.node_images.get(node) != Some(&sorted)
    }

    /// Every image reference a service's spec or previous spec names, with its users.
    pub fn images_in_use(&self) -> BTreeMap<&str, Vec<String>> {
        let mut used: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for s in self.services.values() {
            let mut refs: BTreeSet<&str> = BTreeSet::new();
            refs.insert(s.spec.image.as_str());
            if let Some(p) = &s.previous {
                refs.insert(p.image.as_str());
            }
            for r in refs {
                used.entry(r)
                    .or_default()
                    .push(format!("{}/{}", s.stack, s.name));
            }
        }
        used
    }

    /// The services (`STACK/SERVICE`) whose spec or previous spec runs `reference`.
    pub fn image_users(&self, reference: &str) -> Vec<String> {
        self.images_in_use().remove(reference).unwrap_or_default()
    }

    /// The nodes whose engines hold `reference` (by tag, or by id for `sha256:` ids).
    pub fn nodes_holding(&self, reference: &str, id: Option<&str>) -> Vec<NodeId> {
        let wanted = normalize_reference(reference);
        self.node_images
            .iter()
            .filter(|(_, imgs)| {
                imgs.iter().any(|i| {
                    id.is_some_and(|id| i.id == id)
                        || i.id == reference
                        || i.tags.iter().any(|t| normalize_reference(t) == wanted)
                })
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Every blob digest some record of the store names.
    pub fn referenced_blobs(&self) -> BTreeSet<&str> {
        self.images
            .values()
            .flat_map(|i| i.blobs().map(|(d, _)| d))
            .collect()
    }
}

/// A reference as engines compare them: `:latest` when no tag or digest is given, and
/// Docker Hub's implied prefixes dropped (`docker.io/library/x` is `x`).
pub fn normalize_reference(reference: &str) -> String {
    let r = reference
        .strip_prefix("docker.io/")
        .or_else(|| reference.strip_prefix("index.docker.io/"))
        .unwrap_or(reference);
    let r = r.strip_prefix("library/").unwrap_or(r);
    let repo = shoal_proto::spec::image_repository(r);
    if repo.len() == r.len() {
        format!("{r}:latest")
    } else {
        r.to_string()
    }
}
