//! The `docker load` tar: exactly the needed layers, the config and the manifest.

use shoal_agent::images::archive;

use crate::store::{image, layer, tar_files, Store};

#[tokio::test]
async fn the_tar_holds_the_layers_from_the_first_missing_one_the_config_and_the_manifest() {
    let app = image(
        "app:1",
        &[layer(1, 2500), layer(2, 10), layer(3, 4000), layer(4, 1)],
        "app",
    );
    let store = Store::default();
    store.put(&app);
    let dir = tempfile::tempdir().unwrap();
    let counted = std::sync::atomic::AtomicU64::new(0);
    let received = |n: u64| {
        counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    };
    let tar = archive::write(
        &store,
        &app.manifest,
        Some("app:1"),
        2,
        dir.path(),
        &received,
    )
    .await
    .unwrap();
    let bytes = std::fs::read(tar.path()).unwrap();
    assert_eq!(bytes.len() % 512, 0);
    let files = tar_files(&bytes);
    let id_hex = app.config_digest();
    let want: Vec<String> = vec![
        format!("{}/layer.tar", app.digest(2)),
        format!("{}/layer.tar", app.digest(3)),
        format!("{id_hex}.json"),
        "manifest.json".to_string(),
    ];
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), want_sorted);
    assert_eq!(files[&want[0]], app.layers[2]);
    assert_eq!(files[&want[1]], app.layers[3]);
    assert_eq!(files[&want[2]], app.config);
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let layers: Vec<String> = (0..4)
        .map(|i| format!("{}/layer.tar", app.digest(i)))
        .collect();
    assert_eq!(
        manifest,
        serde_json::json!([{"Config": format!("{id_hex}.json"), "RepoTags": ["app:1"], "Layers": layers}])
    );
    assert_eq!(tar.layers_sent, 2);
    let sent = (4000 + 1 + app.config.len()) as u64;
    assert_eq!(tar.bytes_received, sent);
    assert_eq!(counted.load(std::sync::atomic::Ordering::Relaxed), sent);
    // Only what the tar needs was asked of the store.
    assert_eq!(
        store.fetched(),
        vec![app.digest(2), app.digest(3), app.config_digest()]
    );

    // Dropping it removes the file.
    let path = tar.path().to_path_buf();
    drop(tar);
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_layer_twice_in_the_image_is_written_once() {
    let app = image("app:1", &[layer(1, 700), layer(2, 3), layer(1, 700)], "dup");
    let store = Store::default();
    store.put(&app);
    let dir = tempfile::tempdir().unwrap();
    let tar = archive::write(&store, &app.manifest, Some("app:1"), 0, dir.path(), &|_| {})
        .await
        .unwrap();
    let files = tar_files(&std::fs::read(tar.path()).unwrap());
    assert_eq!(files.len(), 4, "{:?}", files.keys());
    assert_eq!(tar.layers_sent, 2);
}

#[tokio::test]
async fn a_blob_that_is_not_its_digest_is_refused_and_nothing_is_left() {
    let app = image("app:1", &[layer(1, 2500), layer(2, 3000)], "bad");
    let store = Store::default();
    store.put(&app);
    store.tamper(&app.digest(1));
    let dir = tempfile::tempdir().unwrap();
    let e = archive::write(&store, &app.manifest, Some("app:1"), 0, dir.path(), &|_| {})
        .await
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains(&app.digest(1)) && e.contains("refused"), "{e}");
    // Not fetched again: a wrong blob is an error, not a hiccup.
    assert_eq!(store.fetched(), vec![app.digest(0), app.digest(1)]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // A config that is not the image id is refused too.
    let store = Store::default();
    store.put(&app);
    store.tamper(&app.config_digest());
    let e = archive::write(&store, &app.manifest, Some("app:1"), 0, dir.path(), &|_| {})
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("config blob"), "{e:#}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_broken_stream_is_fetched_again_and_the_tar_has_no_trace_of_it() {
    let app = image("app:1", &[layer(1, 2500), layer(2, 3000)], "retry");
    let store = Store::default();
    store.put(&app);
    store.break_once(&app.digest(0));
    let dir = tempfile::tempdir().unwrap();
    let tar = archive::write(&store, &app.manifest, Some("app:1"), 0, dir.path(), &|_| {})
        .await
        .unwrap();
    let files = tar_files(&std::fs::read(tar.path()).unwrap());
    assert_eq!(
        files[&format!("{}/layer.tar", app.digest(0))],
        app.layers[0]
    );
    assert_eq!(files.len(), 4);
    assert_eq!(
        store.fetched(),
        vec![
            app.digest(0),
            app.digest(0),
            app.digest(1),
            app.config_digest()
        ]
    );
    // The broken attempt's bytes count as received too.
    assert_eq!(
        tar.bytes_received,
        1000 + 2500 + 3000 + app.config.len() as u64
    );
}
