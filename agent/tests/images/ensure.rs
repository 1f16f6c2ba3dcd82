//! `Images::ensure` with the fake engine and the in-memory store.

use std::sync::Arc;

use shoal_agent::images::{ensure::tmp_dir, EnsureError, Ensured, ImageSource, Images};
use shoal_agent::runtime::fake::{Call, FakeRuntime};
use shoal_agent::runtime::ContainerRuntime;
use shoal_proto::spec::PullPolicy;

use crate::store::{image, layer, Store, TestImage};

struct Node {
    fake: FakeRuntime,
    store: Store,
    images: Images,
    dir: tempfile::TempDir,
}

fn node() -> Node {
    let store = Store::default();
    let dir = tempfile::tempdir().unwrap();
    let source: Arc<dyn ImageSource> = Arc::new(store.clone());
    let images = Images::new(Some(source), dir.path(), Default::default());
    Node {
        fake: FakeRuntime::new(),
        store,
        images,
        dir,
    }
}

impl Node {
    async fn ensure(&self, reference: &str, policy: PullPolicy) -> Result<Ensured, EnsureError> {
        self.images.ensure(&self.fake, reference, policy).await
    }

    /// No load tar is left behind.
    fn assert_no_tars(&self) {
        let tmp = tmp_dir(self.dir.path());
        let left = std::fs::read_dir(&tmp).map_or(0, |d| d.count());
        assert_eq!(left, 0, "tars left in {}", tmp.display());
    }

    fn pulls(&self) -> Vec<Call> {
        self.fake
            .calls()
            .into_iter()
            .filter(|c| matches!(c, Call::EnsureImage(_) | Call::PullImage(_)))
            .collect()
    }
}

/// A base image (two layers) and an app built on it (two more).
fn base_and_app() -> (TestImage, TestImage) {
    let base_layers = [layer(1, 5000), layer(2, 300)];
    let base = image("base:1", &base_layers, "base");
    let mut app_layers = base_layers.to_vec();
    app_layers.extend([layer(3, 2200), layer(4, 10)]);
    (base, image("app:1", &app_layers, "app"))
}

#[tokio::test]
async fn only_the_layers_the_engine_lacks_are_fetched_and_loaded() {
    let n = node();
    let (base, app) = base_and_app();
    n.fake.insert_image(base.info("base:1"));
    n.store.put(&app);

    let got = n.ensure("app:1", PullPolicy::Missing).await.unwrap();
    let bytes = 2200 + 10 + app.config.len() as u64;
    assert_eq!(
        got,
        Ensured::Loaded {
            layers_sent: 2,
            layers: 4,
            bytes
        }
    );
    // The engine has it now, by its id.
    let loaded = n.fake.image("app:1").await.unwrap().unwrap();
    assert_eq!(loaded.id, app.manifest.id);
    // One load, of a tar without the base's layers.
    let loads = n.fake.loads();
    assert_eq!(loads.len(), 1);
    assert!(
        (loads[0].len() as u64) < bytes + 8 * 1024,
        "{} bytes",
        loads[0].len()
    );
    assert_eq!(
        n.store.fetched(),
        vec![app.digest(2), app.digest(3), app.config_digest()]
    );
    assert_eq!(n.images.counters().bytes_received(), bytes);
    assert_eq!(n.images.counters().images_loaded(), 1);
    assert!(n.pulls().is_empty(), "no registry: {:?}", n.pulls());
    n.assert_no_tars();

    // Present now: neither the store nor the engine's loader is asked again.
    assert_eq!(
        n.ensure("app:1", PullPolicy::Missing).await,
        Ok(Ensured::Present)
    );
    assert_eq!(n.store.asked(), vec!["app:1".to_string()]);
    assert_eq!(n.fake.loads().len(), 1);
}

#[tokio::test]
async fn an_empty_engine_gets_every_layer() {
    let n = node();
    let (_, app) = base_and_app();
    n.store.put(&app);
    let got = n.ensure("app:1", PullPolicy::Missing).await.unwrap();
    assert!(
        matches!(
            got,
            Ensured::Loaded {
                layers_sent: 4,
                layers: 4,
                ..
            }
        ),
        "{got:?}"
    );
    assert_eq!(
        n.fake.image("app:1").await.unwrap().unwrap().id,
        app.manifest.id
    );
}

/// The fake engine is as strict as Docker's loader: a tar that leaves out a layer the
/// engine lacks is refused, so the tests above prove the agent sends what is needed.
#[tokio::test]
async fn the_fake_engine_refuses_a_tar_without_a_layer_it_lacks() {
    let (_, app) = base_and_app();
    let store = Store::default();
    store.put(&app);
    let dir = tempfile::tempdir().unwrap();
    let tar = shoal_agent::images::archive::write(
        &store,
        &app.manifest,
        Some("app:1"),
        2,
        dir.path(),
        &|_| {},
    )
    .await
    .unwrap();
    let fake = FakeRuntime::new();
    let e = fake.load_image(tar.path()).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("{}/layer.tar: no such file", app.digest(0))),
        "{e}"
    );
    assert_eq!(fake.image("app:1").await.unwrap(), None);
}

#[tokio::test]
async fn a_tampered_layer_is_refused_before_the_engine_sees_it() {
    let n = node();
    let (base, app) = base_and_app();
    n.fake.insert_image(base.info("base:1"));
    n.store.put(&app);
    n.store.tamper(&app.digest(3));
    let e = n.ensure("app:1", PullPolicy::Missing).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("load image app:1 from the cluster's store: "),
        "{text}"
    );
    assert!(text.contains("refused"), "{text}");
    assert!(n.fake.loads().is_empty());
    assert_eq!(n.fake.image("app:1").await.unwrap(), None);
    assert_eq!(n.images.counters().images_loaded(), 0);
    n.assert_no_tars();
}

#[tokio::test]
async fn never_uses_the_engine_or_the_store_and_never_a_registry() {
    let n = node();
    let (_, app) = base_and_app();
    let e = n.ensure("ghost:1", PullPolicy::Never).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "image ghost:1 is not on this node's engine nor in the cluster's store (pull_policy: never)"
    );
    n.store.put(&app);
    assert!(matches!(
        n.ensure("app:1", PullPolicy::Never).await,
        Ok(Ensured::Loaded { .. })
    ));
    assert_eq!(
        n.ensure("app:1", PullPolicy::Never).await,
        Ok(Ensured::Present)
    );
    n.store.set_unreachable(true);
    let e = n.ensure("other:1", PullPolicy::Never).await.unwrap_err();
    assert!(matches!(e, EnsureError::NeverUnasked { .. }), "{e}");
    assert!(n.pulls().is_empty(), "{:?}", n.pulls());
}

#[tokio::test]
async fn missing_pulls_what_neither_the_engine_nor_the_store_has() {
    let n = node();
    assert_eq!(
        n.ensure("web:1", PullPolicy::Missing).await,
        Ok(Ensured::Pulled)
    );
    assert_eq!(n.pulls(), vec![Call::EnsureImage("web:1".into())]);

    n.fake
        .fail_pull("ghost:1", "manifest for ghost:1 not found");
    let e = n.ensure("ghost:1", PullPolicy::Missing).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "pull image ghost:1: manifest for ghost:1 not found; the cluster's image store does not have it either: shoal image push ghost:1, or deploy with build:"
    );

    // A store that cannot be asked does not stop a pull, and is named when it fails.
    n.store.set_unreachable(true);
    assert_eq!(
        n.ensure("web:2", PullPolicy::Missing).await,
        Ok(Ensured::Pulled)
    );
    let e = n.ensure("ghost:1", PullPolicy::Missing).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("manifest for ghost:1 not found; the cluster's image store could not be asked either: no controller answered"),
        "{text}"
    );
}

#[tokio::test]
async fn always_pulls_first_and_falls_back_to_the_store() {
    let n = node();
    let (base, app) = base_and_app();
    n.fake.insert_image(base.info("base:1"));
    n.store.put(&app);
    // The registry answers: it wins, even though the store has it.
    assert_eq!(
        n.ensure("app:1", PullPolicy::Always).await,
        Ok(Ensured::Pulled)
    );
    assert_eq!(n.pulls(), vec![Call::PullImage("app:1".into())]);
    assert!(n.fake.loads().is_empty());

    // No registry: the store's copy.
    n.fake
        .fail_pull("app:1", "dial tcp: lookup registry: no such host");
    let got = n.ensure("app:1", PullPolicy::Always).await.unwrap();
    assert!(
        matches!(got, Ensured::Loaded { layers_sent: 2, .. }),
        "{got:?}"
    );
    // Pulled again next time (the engine having it does not matter).
    let _ = n.ensure("app:1", PullPolicy::Always).await;
    assert_eq!(n.pulls().len(), 3);

    // Neither: the pull's own error.
    n.fake.fail_pull("ghost:1", "manifest unknown");
    let e = n.ensure("ghost:1", PullPolicy::Always).await.unwrap_err();
    assert_eq!(e.to_string(), "pull image ghost:1: manifest unknown");
}

#[tokio::test]
async fn two_tasks_needing_one_image_load_it_once() {
    let n = node();
    let (base, app) = base_and_app();
    n.fake.insert_image(base.info("base:1"));
    n.store.put(&app);
    n.store.hold();
    let release = async {
        // The first is fetching (and holds the image's turn); the second is waiting.
        n.store.blob_asked.notified().await;
        n.store.release();
    };
    let (first, second, ()) = tokio::join!(
        n.ensure("app:1", PullPolicy::Missing),
        n.ensure("app:1", PullPolicy::Missing),
        release
    );
    let mut got = [first.unwrap(), second.unwrap()];
    got.sort_by_key(|g| matches!(g, Ensured::Present));
    assert!(matches!(got[0], Ensured::Loaded { .. }), "{got:?}");
    assert_eq!(got[1], Ensured::Present);
    assert_eq!(n.fake.loads().len(), 1);
    assert_eq!(n.store.asked(), vec!["app:1".to_string()]);
}

#[tokio::test]
async fn build_is_missing_on_a_node() {
    let n = node();
    let (_, app) = base_and_app();
    n.store.put(&app);
    assert!(matches!(
        n.ensure("app:1", PullPolicy::Build).await,
        Ok(Ensured::Loaded { .. })
    ));
    assert!(n.pulls().is_empty());
}

#[tokio::test]
async fn an_untagged_reference_is_loaded_as_latest() {
    let n = node();
    let (_, app) = base_and_app();
    let mut latest = app.clone();
    latest.manifest.reference = "app".into();
    n.store.put(&latest);
    assert!(matches!(
        n.ensure("app", PullPolicy::Missing).await,
        Ok(Ensured::Loaded { .. })
    ));
    let info = n.fake.image("app:latest").await.unwrap().unwrap();
    assert_eq!(info.tags, vec!["app:latest".to_string()]);
}

/// Containerd's image store imports every blob the archive names: the agent sends every
/// layer even though the engine has the base, and takes the loaded image by its layers
/// (that store names it by a manifest digest, not by its config's).
#[tokio::test]
async fn an_engine_with_containerds_store_gets_every_layer() {
    let n = node();
    n.fake.set_loads_need_every_layer(true);
    let (base, app) = base_and_app();
    n.fake.insert_image(base.info("base:1"));
    n.store.put(&app);

    let got = n.ensure("app:1", PullPolicy::Missing).await.unwrap();
    let bytes = app.layers.iter().map(|l| l.len() as u64).sum::<u64>() + app.config.len() as u64;
    assert_eq!(
        got,
        Ensured::Loaded {
            layers_sent: 4,
            layers: 4,
            bytes
        }
    );
    assert_eq!(
        n.store.fetched(),
        vec![
            app.digest(0),
            app.digest(1),
            app.digest(2),
            app.digest(3),
            app.config_digest()
        ]
    );
    let loaded = n.fake.image("app:1").await.unwrap().unwrap();
    assert_ne!(
        loaded.id, app.manifest.id,
        "the fake names it as containerd does"
    );
    assert_eq!(loaded.layers, app.info("app:1").layers);
    // Recorded under the engine's id, with the store's beside it.
    let record = n.images.loaded_images();
    assert_eq!(record.len(), 1);
    assert_eq!(record[0].id, loaded.id);
    assert_eq!(record[0].store_id, app.manifest.id);
    n.assert_no_tars();
}

/// The containerd-store fake has teeth: the legacy omit-layers tar is refused there.
#[tokio::test]
async fn containerds_store_refuses_a_tar_without_the_layers_it_has() {
    let (base, app) = base_and_app();
    let store = Store::default();
    store.put(&app);
    let dir = tempfile::tempdir().unwrap();
    let tar = shoal_agent::images::archive::write(
        &store,
        &app.manifest,
        Some("app:1"),
        2,
        dir.path(),
        &|_| {},
    )
    .await
    .unwrap();
    let fake = FakeRuntime::new();
    fake.insert_image(base.info("base:1"));
    fake.set_loads_need_every_layer(true);
    let e = fake.load_image(tar.path()).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("{}/layer.tar: no such file", app.digest(0))),
        "{e}"
    );
    // The classic store takes the same tar.
    fake.set_loads_need_every_layer(false);
    fake.load_image(tar.path()).await.unwrap();
    assert_eq!(
        fake.image("app:1").await.unwrap().unwrap().id,
        app.manifest.id
    );
}
