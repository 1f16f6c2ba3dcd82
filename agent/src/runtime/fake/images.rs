//! The fake engine's images: found by id or name, tagged, removed as `docker rmi` does,
//! and loaded as Docker 20.10's legacy loader loads a tar: a layer whose chain (it and
//! every layer under it) some image already has is skipped without reading its file;
//! any other layer's file must be in the tar and hash to its diff id; the image id is
//! the digest of the config.
//!
//! With containerd's image store ([`super::FakeRuntime::set_loads_need_every_layer`])
//! every layer's file must be in the tar, and the image id is the digest of the image's
//! manifest (here: of a manifest the fake makes up), not of its config, as Docker's
//! containerd image store names images.

use std::collections::HashMap;
use std::io::Read as _;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::State;
use crate::runtime::{ImageInfo, RuntimeError, RuntimeResult};

/// Where the real engine unpacks a load, for errors worded like its own.
const UNPACKED: &str = "/var/lib/docker/tmp/docker-import-fake";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// `REPO` as the engine names it: `REPO:latest` (ids and tagged names are left alone).
pub(super) fn with_tag(reference: &str) -> String {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    if reference.starts_with("sha256:") || reference.contains('@') || name.contains(':') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

fn refused(m: String) -> RuntimeError {
    RuntimeError::Engine(m)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The images a load of `tar` adds to an engine holding `images`, or the engine's error.
/// `containerd`: the engine keeps images in containerd's store.
pub(super) fn load(
    images: &[ImageInfo],
    tar: &[u8],
    containerd: bool,
) -> RuntimeResult<Vec<ImageInfo>> {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|e| refused(format!("unpack the tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| refused(format!("unpack the tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| refused(format!("unpack the tar: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| refused(format!("unpack the tar: {e}")))?;
        files.insert(path, data);
    }
    let open = |path: &str| {
        files
            .get(path)
            .ok_or_else(|| refused(format!("open {UNPACKED}/{path}: no such file or directory")))
    };
    let manifest: Vec<Entry> = serde_json::from_slice(open("manifest.json")?)
        .map_err(|e| refused(format!("invalid manifest.json: {e}")))?;
    let mut loaded: Vec<ImageInfo> = Vec::new();
    for m in manifest {
        let config_bytes = open(&m.config)?;
        let config: Config = serde_json::from_slice(config_bytes)
            .map_err(|e| refused(format!("invalid image config {}: {e}", m.config)))?;
        let diff_ids = config.rootfs.diff_ids;
        if m.layers.len() != diff_ids.len() {
            return Err(refused(format!(
                "invalid manifest, layers length mismatch: expected {}, got {}",
                m.layers.len(),
                diff_ids.len()
            )));
        }
        let mut size = 0u64;
        for (i, diff_id) in diff_ids.iter().enumerate() {
            let chain = &diff_ids[..=i];
            let held = !containerd
                && images
                    .iter()
                    .chain(&loaded)
                    .any(|img| img.layers.starts_with(chain));
            if held {
                continue;
            }
            let layer = open(&m.layers[i])?;
            let got = sha256(layer);
            if got != *diff_id {
                return Err(refused(format!(
                    "invalid diffID for layer {i}: expected {diff_id:?}, got {got:?}"
                )));
            }
            size += layer.len() as u64;
        }
        let id = if containerd {
            let made_up = serde_json::json!({
                "config": sha256(config_bytes),
                "layers": diff_ids,
            });
            sha256(made_up.to_string().as_bytes())
        } else {
            sha256(config_bytes)
        };
        loaded.push(ImageInfo {
            id,
            tags: m.repo_tags.iter().map(|t| with_tag(t)).collect(),
            layers: diff_ids,
            size,
        });
    }
    Ok(loaded)
}

impl State {
    /// Where the image `reference` (an id, or a name with or without its tag) is.
    pub(super) fn find_image(&self, reference: &str) -> Option<usize> {
        let tagged = with_tag(reference);
        self.images.iter().position(|i| {
            i.id == reference
                || i.id.strip_prefix("sha256:") == Some(reference)
                || i.tags.contains(&tagged)
        })
    }

    /// Add `image` (or give the one of its id its tags), taking its tags from others.
    pub(super) fn add_image(&mut self, mut image: ImageInfo) {
        image.tags = image.tags.iter().map(|t| with_tag(t)).collect();
        for other in self.images.iter_mut().filter(|o| o.id != image.id) {
            other.tags.retain(|t| !image.tags.contains(t));
        }
        match self.images.iter_mut().find(|o| o.id == image.id) {
            Some(same) => {
                for t in image.tags {
                    if !same.tags.contains(&t) {
                        same.tags.push(t);
                    }
                }
            }
            None => self.images.push(image),
        }
    }

    /// The engine's `docker rmi` without force: a tag of an image with several is only
    /// untagged; an image a container uses stays.
    pub(super) fn remove_image(&mut self, reference: &str) -> RuntimeResult<()> {
        let Some(i) = self.find_image(reference) else {
            return Err(RuntimeError::NotFound(format!(
                "No such image: {reference}"
            )));
        };
        let tagged = with_tag(reference);
        let image = &mut self.images[i];
        if image.tags.len() > 1 && image.tags.contains(&tagged) {
            image.tags.retain(|t| *t != tagged);
            return Ok(());
        }
        let names: Vec<String> = image
            .tags
            .iter()
            .cloned()
            .chain([image.id.clone()])
            .collect();
        let user = self.containers.values().find(|c| {
            let used = with_tag(&c.image);
            names.iter().any(|n| *n == used || *n == c.image)
        });
        if let Some(c) = user {
            return Err(RuntimeError::InUse(format!(
                "conflict: unable to remove repository reference \"{reference}\" (must force) - container {} is using its referenced image {}",
                c.info.id, self.images[i].id
            )));
        }
        self.images.remove(i);
        Ok(())
    }
}
