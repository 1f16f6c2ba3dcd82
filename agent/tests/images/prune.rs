//! Removing the images the agent loaded once nothing needs them: the fake engine, the
//! in-memory store, and sweeps run by hand (`Pruner::sweep`).

use std::path::Path;
use std::sync::Arc;

use shoal_agent::images::{Ensured, ImageSource, Images, Pruner};
use shoal_agent::runtime::fake::{Call, FakeRuntime};
use shoal_agent::runtime::{ContainerRequest, ContainerRuntime};
use shoal_proto::spec::PullPolicy;

use crate::store::{image, layer, Store, TestImage};

struct Node {
    fake: FakeRuntime,
    store: Store,
    images: Arc<Images>,
    pruner: Pruner,
    dir: tempfile::TempDir,
}

fn images_in(store: &Store, dir: &Path) -> Arc<Images> {
    let source: Arc<dyn ImageSource> = Arc::new(store.clone());
    Arc::new(Images::new(Some(source), dir, Default::default()))
}

fn node() -> Node {
    let store = Store::default();
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRuntime::new();
    let images = images_in(&store, dir.path());
    let pruner = Pruner::new(images.clone(), Arc::new(fake.clone()));
    Node {
        fake,
        store,
        images,
        pruner,
        dir,
    }
}

impl Node {
    /// The node restarts its agent: a new `Images` and pruner on the same data dir.
    fn restart(&mut self) {
        self.images = images_in(&self.store, self.dir.path());
        self.pruner = Pruner::new(self.images.clone(), Arc::new(self.fake.clone()));
    }

    async fn load(&self, image: &TestImage) {
        self.store.put(image);
        let reference = &image.manifest.reference;
        let got = self
            .images
            .ensure(&self.fake, reference, PullPolicy::Missing)
            .await
            .unwrap();
        assert!(matches!(got, Ensured::Loaded { .. }), "{got:?}");
    }

    fn assign(&self, refs: &[&str]) {
        self.images.set_assigned(refs.iter().map(|r| r.to_string()));
    }

    /// Sweep; the references removed.
    async fn sweep(&mut self) -> Vec<String> {
        let removed = self.pruner.sweep().await;
        removed.into_iter().map(|i| i.reference).collect()
    }

    async fn on_engine(&self, reference: &str) -> bool {
        self.fake.image(reference).await.unwrap().is_some()
    }

    fn removals(&self) -> Vec<Call> {
        self.fake
            .calls()
            .into_iter()
            .filter(|c| matches!(c, Call::RemoveImage(_)))
            .collect()
    }
}

fn app(tag: &str) -> TestImage {
    image(&format!("app:{tag}"), &[layer(1, 300), layer(2, 40)], tag)
}

#[tokio::test]
async fn a_loaded_image_is_removed_only_when_unassigned_and_gone_from_the_store() {
    let mut n = node();
    let one = app("1");
    n.load(&one).await;
    let recorded = n.images.loaded_images();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].reference.as_str(), recorded[0].id.as_str()),
        ("app:1", one.manifest.id.as_str())
    );

    // Before the supervisor's first assignments nothing is known unused.
    n.store.forget("app:1");
    assert!(n.sweep().await.is_empty());
    assert!(n.store.asked().iter().all(|r| r == "app:1"));
    let asked_before = n.store.asked().len();

    // Assigned (the store has forgotten it): kept, and the store is not even asked.
    n.assign(&["app:1", "web:1"]);
    assert!(n.sweep().await.is_empty());
    assert_eq!(n.store.asked().len(), asked_before);

    // Unassigned, but still in the store: kept.
    n.store.put(&one);
    n.assign(&["web:1"]);
    assert!(n.sweep().await.is_empty());
    assert!(n.on_engine("app:1").await);

    // Unassigned and gone from the store: removed, and forgotten.
    n.store.forget("app:1");
    assert_eq!(n.sweep().await, vec!["app:1".to_string()]);
    assert!(!n.on_engine("app:1").await);
    assert_eq!(n.removals(), vec![Call::RemoveImage("app:1".into())]);
    assert!(n.images.loaded_images().is_empty());
    assert!(n.sweep().await.is_empty());
    assert_eq!(n.removals().len(), 1);
}

#[tokio::test]
async fn images_the_agent_did_not_load_are_never_removed() {
    let mut n = node();
    // Pulled from a registry (the fake's pull adds no image: it is put there as the
    // engine would have it), and one the operator built or loaded by hand.
    let pulled = app("pulled");
    assert_eq!(
        n.images
            .ensure(&n.fake, "app:pulled", PullPolicy::Missing)
            .await,
        Ok(Ensured::Pulled)
    );
    n.fake.insert_image(pulled.info("app:pulled"));
    let by_hand = app("hand");
    n.fake.insert_image(by_hand.info("app:hand"));
    // The store does not have them, and nothing is assigned.
    n.assign(&[]);
    assert!(n.sweep().await.is_empty());
    assert!(n.on_engine("app:pulled").await && n.on_engine("app:hand").await);
    assert!(n.removals().is_empty());
    assert!(n.images.loaded_images().is_empty());

    // An image the agent loaded that the operator then named too keeps that name.
    let one = app("1");
    n.load(&one).await;
    n.fake.insert_image(one.info("mine:1"));
    n.store.forget("app:1");
    assert_eq!(n.sweep().await, vec!["app:1".to_string()]);
    assert!(!n.on_engine("app:1").await);
    let kept = n.fake.image("mine:1").await.unwrap().unwrap();
    assert_eq!(kept.id, one.manifest.id);
    assert_eq!(kept.tags, vec!["mine:1".to_string()]);
}

#[tokio::test]
async fn the_record_survives_a_restart() {
    let mut n = node();
    let one = app("1");
    n.load(&one).await;
    let before = n.images.loaded_images();
    n.restart();
    assert_eq!(n.images.loaded_images(), before);
    // The new agent removes what the old one loaded.
    n.store.forget("app:1");
    n.assign(&[]);
    assert_eq!(n.sweep().await, vec!["app:1".to_string()]);
    assert!(!n.on_engine("app:1").await);
    n.restart();
    assert!(n.images.loaded_images().is_empty());
}

#[tokio::test]
async fn an_image_a_container_uses_is_kept_and_tried_again() {
    let mut n = node();
    let one = app("1");
    n.load(&one).await;
    // A container shoal does not manage runs it.
    let other = ContainerRequest {
        name: "someone-elses".into(),
        image: "app:1".into(),
        ..Default::default()
    };
    let id = n.fake.create(&other).await.unwrap();
    n.store.forget("app:1");
    n.assign(&[]);
    assert!(n.sweep().await.is_empty());
    assert!(n.sweep().await.is_empty());
    assert!(n.on_engine("app:1").await);
    assert_eq!(n.removals().len(), 2, "tried at each sweep");
    assert_eq!(n.images.loaded_images().len(), 1, "still recorded");

    // Once that container is gone, the next sweep removes it.
    n.fake.remove(&id).await.unwrap();
    assert_eq!(n.sweep().await, vec!["app:1".to_string()]);
    assert!(!n.on_engine("app:1").await);
    assert!(n.images.loaded_images().is_empty());
}

#[tokio::test]
async fn an_image_removed_by_someone_else_is_forgotten() {
    let mut n = node();
    let one = app("1");
    n.load(&one).await;
    n.fake.remove_image("app:1").await.unwrap();
    n.fake.clear_calls();
    n.assign(&[]);
    assert!(n.sweep().await.is_empty());
    assert!(n.images.loaded_images().is_empty());
    assert!(n.removals().is_empty());
    assert!(n.store.asked().iter().all(|r| r == "app:1"));
}

#[tokio::test]
async fn a_store_that_cannot_be_asked_keeps_everything() {
    let mut n = node();
    n.load(&app("1")).await;
    n.store.set_unreachable(true);
    n.assign(&[]);
    assert!(n.sweep().await.is_empty());
    assert!(n.on_engine("app:1").await);
    assert!(n.removals().is_empty());
}
