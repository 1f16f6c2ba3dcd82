//! The omit-layers load on the REAL host engine (`DOCKER_HOST` or the local socket):
//! an image built on `shoal-test/busybox:latest` with one more layer is saved, removed,
//! and loaded back from a tar the agent wrote with only that layer (the base's chain is
//! the engine's through the test image). Its id must be the same. Unused and forgotten
//! by the store, the agent's sweep removes it again.

use std::process::Command;
use std::sync::Arc;

use shoal_agent::images::{archive, Ensured, ImageSource, Images, Pruner};
use shoal_agent::runtime::docker::DockerRuntime;
use shoal_agent::runtime::{ContainerRuntime, RuntimeError};
use shoal_proto::spec::PullPolicy;

use crate::store::{sha, tar_files, Store, TestImage};

const BASE: &str = "shoal-test/busybox:latest";

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("run the docker CLI")
}

fn ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the test's image however the test ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.0]);
    }
}

/// The image as `docker save` wrote it, as the cluster's store would hold it.
fn saved(tar: &[u8], reference: &str) -> TestImage {
    let files = tar_files(tar);
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config = files[manifest[0]["Config"].as_str().unwrap()].clone();
    let layers: Vec<Vec<u8>> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| files[p.as_str().unwrap()].clone())
        .collect();
    let diff_ids: serde_json::Value =
        serde_json::from_slice::<serde_json::Value>(&config).unwrap()["rootfs"]["diff_ids"].clone();
    for (l, d) in layers.iter().zip(diff_ids.as_array().unwrap()) {
        assert_eq!(format!("sha256:{}", sha(l)), d.as_str().unwrap());
    }
    TestImage::from_parts(reference, config, layers)
}

#[tokio::test]
async fn the_real_engine_loads_an_image_from_only_its_missing_layer() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/build-test-image.sh"
    );
    let status = Command::new("bash").arg(script).status().unwrap();
    assert!(status.success(), "building {BASE} failed");

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("shoal-test/imgload-{}-{nanos:x}:1", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("marker"), format!("{name}\n")).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {BASE}\nCOPY marker /marker\n"),
    )
    .unwrap();
    ok(&["build", "-q", "-t", &name, dir.path().to_str().unwrap()]);
    let built_id = ok(&["image", "inspect", "--format", "{{.Id}}", &name]);
    let save = dir.path().join("saved.tar");
    ok(&["save", "-o", save.to_str().unwrap(), &name]);
    let image = saved(&std::fs::read(&save).unwrap(), &name);
    assert_eq!(image.manifest.id, built_id);
    let base_layers = ok(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        BASE,
    ]);
    assert_eq!(
        image.layers.len(),
        base_layers.parse::<usize>().unwrap() + 1
    );
    ok(&["rmi", &name]);

    let engine = DockerRuntime::connect(None).await.unwrap();
    assert_eq!(engine.image(&name).await.unwrap(), None);
    let store = Store::default();
    store.put(&image);

    // The engine's own words when a tar lacks a layer it does not have.
    let top_only = image.layers.len();
    let bad = archive::write(
        &store,
        &image.manifest,
        Some(&name),
        top_only,
        dir.path(),
        &|_| {},
    )
    .await
    .unwrap();
    let e = engine.load_image(bad.path()).await.unwrap_err().to_string();
    let missing = format!(
        "{}/layer.tar: no such file or directory",
        image.digest(top_only - 1)
    );
    assert!(e.contains(&missing), "{e}");
    drop(bad);
    assert_eq!(engine.image(&name).await.unwrap(), None);

    // The agent's way: only the layer over the base crosses.
    let source: Arc<dyn ImageSource> = Arc::new(store.clone());
    let images = Arc::new(Images::new(
        Some(source),
        &dir.path().join("agent"),
        Default::default(),
    ));
    let before = store.fetched().len();
    let got = images
        .ensure(&engine, &name, PullPolicy::Never)
        .await
        .unwrap();
    let top = image.layers.len() - 1;
    assert_eq!(
        got,
        Ensured::Loaded {
            layers_sent: 1,
            layers: image.layers.len(),
            bytes: (image.layers[top].len() + image.config.len()) as u64,
        }
    );
    assert_eq!(
        store.fetched()[before..],
        [image.digest(top), image.config_digest()]
    );
    let back = engine.image(&name).await.unwrap().expect("loaded");
    assert_eq!(back.id, built_id);
    assert_eq!(back.tags, vec![name.clone()]);
    let listed = engine.images().await.unwrap();
    let row = listed.iter().find(|i| i.id == built_id).expect("listed");
    assert_eq!(row.layers, back.layers);
    assert_eq!(row.tags, vec![name.clone()]);

    // Unassigned and forgotten by the store: the agent removes it (not forced).
    images.set_assigned([]);
    store.forget(&name);
    let mut pruner = Pruner::new(images.clone(), Arc::new(engine.clone()));
    let removed = pruner.sweep().await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].id, built_id);
    assert_eq!(engine.image(&name).await.unwrap(), None);
    assert!(images.loaded_images().is_empty());
    assert!(matches!(
        engine.remove_image(&name).await,
        Err(RuntimeError::NotFound(_))
    ));
}

/// The engine's image store is told as the docker CLI tells it (`docker info` prints
/// `driver-type: io.containerd.snapshotter.v1` under the storage driver on containerd's
/// store); the omit-layers test above needs the classic one.
#[tokio::test]
async fn the_engines_image_store_is_detected_as_docker_reports_it() {
    let status = ok(&["info", "--format", "{{json .DriverStatus}}"]);
    let containerd = status.contains("io.containerd.snapshotter.v1");
    let engine = DockerRuntime::connect(None).await.unwrap();
    assert_eq!(
        engine.loads_need_every_layer().await,
        containerd,
        "{status}"
    );
    // Asked once: the second answer is the same.
    assert_eq!(engine.loads_need_every_layer().await, containerd);
}
