//! Make a task's image present on the engine, by its `pull_policy`:
//!
//! - `always`: pull from its registry; when that fails and the cluster's store has the
//!   image, load it from there; else the pull's error.
//! - `missing` (and `build`, whose image the deploying machine built and pushed): the
//!   engine's own copy; else the cluster's store's; else (`never` stops here with an
//!   error) a pull from the registry, whose failure also says the store lacks it.
//!
//! At most one pull or load of a reference runs at a time: a second task needing it
//! waits and then finds it on the engine.
//!
//! A load sends only the layers the engine lacks, except on an engine with containerd's
//! image store ([`ContainerRuntime::loads_need_every_layer`]), whose loader needs them
//! all. Each image loaded is recorded ([`super::loaded`]): those are the only images the
//! agent may later remove ([`super::prune`]).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use shoal_proto::spec::PullPolicy;
use tokio::sync::Notify;
use tracing::{info, instrument, warn};

use super::loaded::{record_path, LoadedImage, LoadedRecord};
use super::source::{ImageManifest, ImageSource};
use super::{archive, plan, EnsureError, Ensured, ImageCounters};
use crate::runtime::{ContainerRuntime, ImageInfo, RuntimeError};

/// What the cluster's store said of a reference.
enum InStore {
    Has(ImageManifest),
    Lacks,
    Unasked(String),
}

/// The node's way to its images; shared by the supervisor's operations.
pub struct Images {
    /// `None`: no cluster store (a supervisor without a session, in tests).
    pub(super) source: Option<Arc<dyn ImageSource>>,
    /// Where load tars are written (`DATA_DIR/images/tmp`).
    tmp: PathBuf,
    counters: Arc<ImageCounters>,
    /// One lock per reference being pulled or loaded.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Notified after each load, so the node's images are reported again.
    loaded: Arc<Notify>,
    /// The images loaded from the store (`DATA_DIR/images/loaded.json`).
    record: Mutex<LoadedRecord>,
    /// The images (normalized references) the node's current assignments name, ended
    /// tasks' included; `None` until the supervisor got its first assignments, when
    /// nothing is known not to be in use.
    assigned: Mutex<Option<BTreeSet<String>>>,
}

impl Default for Images {
    fn default() -> Self {
        Images {
            source: None,
            tmp: std::env::temp_dir().join("shoal-images"),
            counters: Default::default(),
            flights: Default::default(),
            loaded: Default::default(),
            record: Default::default(),
            assigned: Default::default(),
        }
    }
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Images")
            .field("store", &self.source.is_some())
            .field("tmp", &self.tmp)
            .finish()
    }
}

/// The directory of load tars under the agent's data dir.
pub fn tmp_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images").join("tmp")
}

/// `reference` as the engine lists it among an image's tags (`REPO` is `REPO:latest`);
/// an id or a digest reference as it is.
pub fn normalized(reference: &str) -> String {
    repo_tag(reference).unwrap_or_else(|| reference.to_string())
}

/// Whether `image`, on the engine after a load, is the store's `m`: the same id, or, on
/// containerd's store (`every_layer`), which names an image by its manifest's digest
/// rather than its config's, the same layers.
fn is_loaded(image: &ImageInfo, m: &ImageManifest, every_layer: bool) -> bool {
    image.id == m.id
        || (every_layer
            && image.layers.len() == m.layers.len()
            && image
                .layers
                .iter()
                .zip(&m.layers)
                .all(|(l, b)| *l == b.diff_id()))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `REPO:TAG` for the load's manifest (a name without a tag is `:latest`, as engines
/// read it); `None` for an id or a digest reference, which a load cannot name.
fn repo_tag(reference: &str) -> Option<String> {
    if reference.contains('@') || reference.starts_with("sha256:") {
        return None;
    }
    let name = reference.rsplit('/').next().unwrap_or(reference);
    Some(if name.contains(':') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    })
}

fn words(e: RuntimeError) -> String {
    match e {
        RuntimeError::Pull { reason, .. } => reason,
        other => other.to_string(),
    }
}

impl Images {
    /// Images from `source`, with load tars under `data_dir` (what an earlier run left
    /// there is removed now), the record of loaded images there too, and transfers
    /// counted in `counters`.
    pub fn new(
        source: Option<Arc<dyn ImageSource>>,
        data_dir: &Path,
        counters: Arc<ImageCounters>,
    ) -> Images {
        let tmp = tmp_dir(data_dir);
        if let Err(e) = std::fs::remove_dir_all(&tmp) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(dir = %tmp.display(), error = %e, "cannot remove leftover image tars");
            }
        }
        Images {
            source,
            tmp,
            counters,
            record: Mutex::new(LoadedRecord::open(record_path(data_dir))),
            ..Default::default()
        }
    }

    /// The images this agent loaded from the cluster's store and has not removed.
    pub fn loaded_images(&self) -> Vec<LoadedImage> {
        self.lock_record().images().to_vec()
    }

    /// The node's current assignments name these images (every task's, ended or not).
    pub fn set_assigned(&self, references: impl IntoIterator<Item = String>) {
        let set = references.into_iter().map(|r| normalized(&r)).collect();
        *self.assigned.lock().unwrap_or_else(|p| p.into_inner()) = Some(set);
    }

    /// The normalized references the current assignments name; `None` before the first.
    pub fn assigned(&self) -> Option<BTreeSet<String>> {
        self.assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn lock_record(&self) -> std::sync::MutexGuard<'_, LoadedRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn counters(&self) -> &Arc<ImageCounters> {
        &self.counters
    }

    /// Notified after each load from the cluster's store.
    pub fn loaded(&self) -> Arc<Notify> {
        self.loaded.clone()
    }

    /// Make `reference` present on `runtime`'s engine by `policy`.
    #[instrument(skip_all, fields(image = %reference, ?policy))]
    pub async fn ensure(
        &self,
        runtime: &dyn ContainerRuntime,
        reference: &str,
        policy: PullPolicy,
    ) -> Result<Ensured, EnsureError> {
        if policy != PullPolicy::Always && self.on_engine(runtime, reference).await? {
            return Ok(Ensured::Present);
        }
        let flight = self
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reference.to_string())
            .or_default()
            .clone();
        let one_at_a_time = flight.lock().await;
        let result = match policy {
            PullPolicy::Always => self.always(runtime, reference).await,
            PullPolicy::Never => self.missing(runtime, reference, false).await,
            PullPolicy::Missing | PullPolicy::Build => self.missing(runtime, reference, true).await,
        };
        drop(one_at_a_time);
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        // Nobody else holds or waits for it: forget the lock.
        if Arc::strong_count(&flight) == 2 {
            flights.remove(reference);
        }
        result
    }

    async fn on_engine(
        &self,
        runtime: &dyn ContainerRuntime,
        reference: &str,
    ) -> Result<bool, EnsureError> {
        match runtime.image(reference).await {
            Ok(found) => Ok(found.is_some()),
            Err(e) => Err(EnsureError::Engine {
                image: reference.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    async fn in_store(&self, reference: &str) -> InStore {
        let Some(source) = &self.source else {
            return InStore::Lacks;
        };
        match source.manifest(reference).await {
            Ok(Some(m)) => InStore::Has(m),
            Ok(None) => InStore::Lacks,
            Err(e) => InStore::Unasked(format!("{e:#}")),
        }
    }

    async fn always(
        &self,
        runtime: &dyn ContainerRuntime,
        reference: &str,
    ) -> Result<Ensured, EnsureError> {
        let reason = match runtime.pull_image(reference).await {
            Ok(()) => return Ok(Ensured::Pulled),
            Err(e) => words(e),
        };
        let pull_failed = |hint: String| EnsureError::Pull {
            image: reference.to_string(),
            reason: reason.clone(),
            hint,
        };
        match self.in_store(reference).await {
            InStore::Has(m) => {
                info!(error = %reason, "the pull failed; loading the image from the cluster's store");
                self.load(runtime, reference, &m).await
            }
            InStore::Lacks => Err(pull_failed(String::new())),
            InStore::Unasked(store) => Err(pull_failed(format!(
                "; the cluster's image store could not be asked either: {store}"
            ))),
        }
    }

    async fn missing(
        &self,
        runtime: &dyn ContainerRuntime,
        reference: &str,
        may_pull: bool,
    ) -> Result<Ensured, EnsureError> {
        // Another task may have brought it while this one waited its turn.
        if self.on_engine(runtime, reference).await? {
            return Ok(Ensured::Present);
        }
        let image = reference.to_string();
        let hint = match self.in_store(reference).await {
            InStore::Has(m) => return self.load(runtime, reference, &m).await,
            InStore::Lacks if !may_pull => return Err(EnsureError::Never { image }),
            InStore::Unasked(store) if !may_pull => {
                return Err(EnsureError::NeverUnasked { image, store })
            }
            InStore::Lacks => format!(
                "; the cluster's image store does not have it either: shoal image push {reference}, or deploy with build:"
            ),
            InStore::Unasked(store) => {
                format!("; the cluster's image store could not be asked either: {store}")
            }
        };
        match runtime.ensure_image(reference).await {
            Ok(()) => Ok(Ensured::Pulled),
            Err(e) => Err(EnsureError::Pull {
                image,
                reason: words(e),
                hint,
            }),
        }
    }

    /// Load `m` from the cluster's store, sending only the layers the engine lacks.
    async fn load(
        &self,
        runtime: &dyn ContainerRuntime,
        reference: &str,
        m: &ImageManifest,
    ) -> Result<Ensured, EnsureError> {
        let failed = |reason: String| EnsureError::Load {
            image: reference.to_string(),
            reason,
        };
        let source = self
            .source
            .as_deref()
            .ok_or_else(|| failed("this agent has no cluster store".into()))?;
        let every_layer = runtime.loads_need_every_layer().await;
        let from = if every_layer {
            0
        } else {
            let local = runtime.images().await.map_err(|e| failed(e.to_string()))?;
            let wanted: Vec<String> = m.layers.iter().map(|l| l.diff_id()).collect();
            plan::first_missing(&wanted, local.iter().map(|i| i.layers.as_slice()))
        };
        let tag = repo_tag(reference);
        let counters = self.counters.clone();
        let received = move |n: u64| counters.received(n);
        let tar = archive::write(source, m, tag.as_deref(), from, &self.tmp, &received)
            .await
            .map_err(|e| failed(format!("{e:#}")))?;
        let loaded = runtime.load_image(tar.path()).await;
        let (layers_sent, bytes) = (tar.layers_sent, tar.bytes_received);
        drop(tar);
        loaded.map_err(|e| failed(e.to_string()))?;
        self.loaded.notify_one();
        let engine_id = match runtime.image(reference).await {
            Ok(Some(i)) if is_loaded(&i, m, every_layer) => i.id,
            Ok(Some(i)) => {
                return Err(failed(format!(
                    "after the load the engine's {reference} is {}, not the store's {}",
                    i.id, m.id
                )))
            }
            Ok(None) => {
                return Err(failed(format!(
                    "the engine has no {reference} after the load"
                )))
            }
            Err(e) => return Err(failed(e.to_string())),
        };
        let record = LoadedImage {
            reference: reference.to_string(),
            id: engine_id,
            store_id: m.id.clone(),
            loaded_ms: now_ms(),
        };
        if let Err(e) = self.lock_record().add(record) {
            warn!(error = %format!("{e:#}"), "cannot save the record of loaded images: after a restart this image is not removed when unused");
        }
        self.counters.loaded();
        info!(
            "loaded image {reference} from the cluster: {layers_sent} of {} layers, {bytes} bytes",
            m.layers.len()
        );
        Ok(Ensured::Loaded {
            layers_sent,
            layers: m.layers.len(),
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_names_the_image_with_its_tag() {
        assert_eq!(repo_tag("app").as_deref(), Some("app:latest"));
        assert_eq!(repo_tag("app:v2").as_deref(), Some("app:v2"));
        assert_eq!(
            repo_tag("localhost:5000/team/app").as_deref(),
            Some("localhost:5000/team/app:latest")
        );
        assert_eq!(repo_tag("app@sha256:00"), None);
        assert_eq!(repo_tag("sha256:00"), None);
    }
}
