//! Images on a Docker engine: pulled from their registry, listed with their layers,
//! loaded from a `docker save` tar streamed from a file, removed; and which image store
//! the engine has (classic graphdriver or containerd's), which decides what a load needs.
//!
//! Listing asks the engine for each image's layers once: an image id is the digest of its
//! config, so its layers never change, and the layers are cached by id (the periodic
//! image report then costs one `GET /images/json`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bollard::image::{
    CreateImageOptions, ImportImageOptions, ListImagesOptions, RemoveImageOptions,
};
use bollard::models::{ImageInspect, SystemInfo};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use super::{engine, split_reference, status_of};
use crate::runtime::{ImageInfo, RuntimeError, RuntimeResult};

/// Bytes read from the tar file per chunk sent to the engine.
const LOAD_CHUNK: usize = 256 << 10;

/// How long a load may take until the engine starts answering: it unpacks the whole tar
/// before its first word, longer than the client's usual timeout for a large image.
const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Layers (diff ids) by image id.
#[derive(Debug, Default)]
pub struct LayerCache(Mutex<HashMap<String, Vec<String>>>);

impl LayerCache {
    fn get(&self, id: &str) -> Option<Vec<String>> {
        self.lock().get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Docker's name for "no tag".
const NO_TAG: &str = "<none>:<none>";

fn tags(repo_tags: impl IntoIterator<Item = String>) -> Vec<String> {
    repo_tags.into_iter().filter(|t| t != NO_TAG).collect()
}

fn from_inspect(i: ImageInspect) -> ImageInfo {
    ImageInfo {
        id: i.id.unwrap_or_default(),
        tags: tags(i.repo_tags.unwrap_or_default()),
        layers: i.root_fs.and_then(|r| r.layers).unwrap_or_default(),
        size: i.size.map_or(0, |s| u64::try_from(s).unwrap_or(0)),
    }
}

/// Pull `image` from its registry; the registry's words on failure.
pub async fn pull(docker: &Docker, image: &str) -> RuntimeResult<()> {
    let pull_error = |reason: String| RuntimeError::Pull {
        image: image.to_string(),
        reason,
    };
    let (repo, tag) = split_reference(image);
    let options = CreateImageOptions {
        from_image: repo,
        tag,
        ..Default::default()
    };
    let mut pull = docker.create_image(Some(options), None, None);
    while let Some(item) = pull.next().await {
        match item {
            Ok(info) => {
                if let Some(err) = info.error.or(info.error_detail.and_then(|d| d.message)) {
                    return Err(pull_error(err));
                }
            }
            Err(e) => {
                return Err(pull_error(match engine(e) {
                    RuntimeError::NotFound(m) | RuntimeError::Engine(m) => m,
                    other => other.to_string(),
                }))
            }
        }
    }
    Ok(())
}

/// Every image, with its layers (from `cache`, else inspected once and cached).
pub async fn list(docker: &Docker, cache: &LayerCache) -> RuntimeResult<Vec<ImageInfo>> {
    let summaries = docker
        .list_images(Some(ListImagesOptions::<String> {
            all: false,
            ..Default::default()
        }))
        .await
        .map_err(engine)?;
    let mut images = Vec::with_capacity(summaries.len());
    for s in summaries {
        let layers = match cache.get(&s.id) {
            Some(l) => l,
            None => match docker.inspect_image(&s.id).await {
                Ok(i) => {
                    let layers = from_inspect(i).layers;
                    cache.lock().insert(s.id.clone(), layers.clone());
                    layers
                }
                // Removed since it was listed.
                Err(e) if status_of(&e) == Some(404) => continue,
                Err(e) => return Err(engine(e)),
            },
        };
        images.push(ImageInfo {
            id: s.id,
            tags: tags(s.repo_tags),
            layers,
            size: u64::try_from(s.size).unwrap_or(0),
        });
    }
    // Forget removed images: the cache stays as large as the engine's list.
    let present: std::collections::HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
    cache.lock().retain(|id, _| present.contains(id.as_str()));
    Ok(images)
}

/// The image `reference` names, if the engine has it.
pub async fn inspect(docker: &Docker, reference: &str) -> RuntimeResult<Option<ImageInfo>> {
    match docker.inspect_image(reference).await {
        Ok(i) => Ok(Some(from_inspect(i))),
        Err(e) if status_of(&e) == Some(404) => Ok(None),
        Err(e) => Err(engine(e)),
    }
}

/// `POST /images/load` with the file's bytes streamed as they are read (bollard's
/// `import_image_stream`: the tar is never held in memory).
pub async fn load(docker: &Docker, tar: &Path) -> RuntimeResult<()> {
    let file = tokio::fs::File::open(tar)
        .await
        .map_err(|e| RuntimeError::Engine(format!("open {}: {e}", tar.display())))?;
    // The body stream cannot carry an error: a read error ends it (the engine then sees
    // a truncated tar) and is reported instead of the engine's complaint about that.
    let read_error: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = read_error.clone();
    let body =
        tokio_util::io::ReaderStream::with_capacity(file, LOAD_CHUNK).scan((), move |_, chunk| {
            let next = match chunk {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    None
                }
            };
            std::future::ready(next)
        });
    // Not quiet: the engine then reports each layer's progress, so it answers as soon as
    // the tar is unpacked rather than once every layer is registered.
    let docker = docker.clone().with_timeout(LOAD_TIMEOUT);
    let mut out = docker.import_image_stream(ImportImageOptions { quiet: false }, body, None);
    let mut refused = None;
    while let Some(item) = out.next().await {
        match item {
            Ok(info) => {
                if let Some(e) = info.error.or(info.error_detail.and_then(|d| d.message)) {
                    refused = Some(e);
                    break;
                }
            }
            Err(e) => {
                refused = Some(match engine(e) {
                    RuntimeError::NotFound(m) | RuntimeError::Engine(m) => m,
                    other => other.to_string(),
                });
                break;
            }
        }
    }
    if let Some(e) = read_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(RuntimeError::Engine(format!("read {}: {e}", tar.display())));
    }
    match refused {
        Some(e) => Err(RuntimeError::Engine(format!("docker load: {e}"))),
        None => Ok(()),
    }
}

/// Remove an image, not forced: a container using it keeps it ([`RuntimeError::InUse`]).
pub async fn remove(docker: &Docker, reference: &str) -> RuntimeResult<()> {
    let options = RemoveImageOptions {
        force: false,
        noprune: false,
    };
    match docker.remove_image(reference, Some(options), None).await {
        Ok(_) => Ok(()),
        Err(e) if status_of(&e) == Some(409) => Err(RuntimeError::InUse(engine(e).to_string())),
        Err(e) => Err(engine(e)),
    }
}

/// The `DriverStatus` entry by which an engine says it keeps images in containerd's
/// store (`docker info` prints it under "Storage Driver").
const DRIVER_TYPE: &str = "driver-type";
const CONTAINERD_SNAPSHOTTER: &str = "io.containerd.snapshotter.v1";

/// Storage drivers that exist only as containerd snapshotters (no graphdriver has these
/// names; `fuse-overlayfs`, `btrfs` and `zfs` are both, so only `DriverStatus` tells).
const SNAPSHOTTER_ONLY: &[&str] = &["overlayfs", "native", "stargz", "nydus", "devmapper"];

/// Whether the engine `info` describes keeps images in containerd's store: its
/// `DriverStatus` has `["driver-type", "io.containerd.snapshotter.v1"]` (what Docker 24+
/// reports with the containerd snapshotter), or its storage driver is a name only a
/// containerd snapshotter has.
pub fn containerd_store(info: &SystemInfo) -> bool {
    let typed = info.driver_status.iter().flatten().any(|pair| {
        pair.len() == 2 && pair[0] == DRIVER_TYPE && pair[1].starts_with(CONTAINERD_SNAPSHOTTER)
    });
    let by_name = info
        .driver
        .as_deref()
        .is_some_and(|d| SNAPSHOTTER_ONLY.contains(&d));
    typed || by_name
}

/// Whether the engine's loads need every layer (containerd's store), asked once and
/// kept in `known`. When the engine cannot be asked, every layer is sent (that load
/// works on either store: the classic loader skips the files it does not need) and the
/// engine is asked again next time.
pub async fn loads_need_every_layer(docker: &Docker, known: &OnceCell<bool>) -> bool {
    let asked = known
        .get_or_try_init(|| async {
            let info = docker.info().await?;
            let containerd = containerd_store(&info);
            let driver = info.driver.unwrap_or_default();
            if containerd {
                info!(%driver, "the engine keeps images in containerd's store: loads from the cluster's store carry every layer");
            } else {
                info!(%driver, "the engine keeps images in the classic store: loads from the cluster's store carry only the layers it lacks");
            }
            Ok::<bool, bollard::errors::Error>(containerd)
        })
        .await;
    match asked {
        Ok(every) => *every,
        Err(e) => {
            warn!(error = %e, "cannot ask the engine which image store it has: this load carries every layer");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(driver: &str, status: &[[&str; 2]]) -> SystemInfo {
        SystemInfo {
            driver: Some(driver.to_string()),
            driver_status: Some(
                status
                    .iter()
                    .map(|p| p.iter().map(|s| s.to_string()).collect())
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn the_containerd_store_is_told_by_its_driver_type() {
        let containerd = [["driver-type", "io.containerd.snapshotter.v1"]];
        assert!(containerd_store(&info("overlayfs", &containerd)));
        // A containerd snapshotter that shares its name with a graphdriver.
        assert!(containerd_store(&info("fuse-overlayfs", &containerd)));
        assert!(containerd_store(&info("zfs", &containerd)));
        // No DriverStatus at all, but a name only a snapshotter has.
        assert!(containerd_store(&SystemInfo {
            driver: Some("overlayfs".into()),
            ..Default::default()
        }));
    }

    #[test]
    fn graphdrivers_are_the_classic_store() {
        let overlay2 = [
            ["Backing Filesystem", "extfs"],
            ["Supports d_type", "true"],
            ["Using metacopy", "false"],
            ["Native Overlay Diff", "true"],
            ["userxattr", "false"],
        ];
        assert!(!containerd_store(&info("overlay2", &overlay2)));
        // This machine's engine: the fuse-overlayfs graphdriver.
        assert!(!containerd_store(&info("fuse-overlayfs", &[])));
        assert!(!containerd_store(&info("vfs", &[])));
        assert!(!containerd_store(&SystemInfo::default()));
    }
}
