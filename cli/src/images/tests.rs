//! Building and saving against the real Docker engine of this machine (CI has one, with
//! `shoal-test/busybox:latest` built by scripts/build-test-image.sh). Every image made
//! here has a unique tag and is removed at the end.

use sha2::{Digest as _, Sha256};

use super::build::build;
use super::engine::Engine;
use super::save::save;
use super::testing::{service, unique, untag, write_files, BASE};

/// A build from a context with a `.dockerignore`, saved with our code: the layers are
/// exactly the engine's `RootFS.Layers`, the config is the image id, and the blob files
/// hold what their digests say.
#[tokio::test]
async fn a_built_image_saves_with_the_engines_digests() {
    let engine = Engine::connect_to(crate::images::engine::docker_host())
        .await
        .expect("the test engine");
    let dir = tempfile::tempdir().unwrap();
    let stamp = unique("page");
    write_files(
        dir.path(),
        &[
            (
                "Dockerfile",
                &format!("FROM {BASE}\nCOPY . /site/\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/site\"]\n"),
            ),
            ("index.html", &stamp),
            ("notes.md", "left out"),
            (".dockerignore", "*.md\n"),
        ],
    );
    let stack = unique("build");
    let svc = service(dir.path(), "compose.yaml:3");
    let mut out = Vec::new();
    let built = build(&engine, &stack, &svc, &mut out).await.expect("build");
    let log = String::from_utf8_lossy(&out).into_owned();
    assert!(log.contains("Step 2/3 : COPY . /site/"), "{log}");
    assert_eq!(built.reference, svc.built_reference(&stack, &built.id));

    let inspect = engine
        .image(&built.reference)
        .await
        .unwrap()
        .expect("tagged");
    assert_eq!(inspect.id, built.id);
    let saved = save(&engine, &built.reference).await.expect("save");
    assert_eq!(saved.manifest.reference, built.reference);
    assert_eq!(saved.manifest.id, built.id);
    let layers: Vec<String> = saved
        .manifest
        .layers
        .iter()
        .map(|l| format!("sha256:{}", l.digest))
        .collect();
    assert_eq!(layers, inspect.layers);
    assert_eq!(layers.len(), 2, "the base layer and the COPY");
    for layer in &saved.manifest.layers {
        let (path, size) = saved.blob(&layer.digest).expect("a blob per layer");
        let data = std::fs::read(path).unwrap();
        assert_eq!(data.len() as u64, size);
        assert_eq!(size, layer.size);
        assert_eq!(hex::encode(Sha256::digest(&data)), layer.digest);
    }
    let (config, size) = saved.blob(saved.config_digest()).expect("the config blob");
    assert_eq!(size, saved.manifest.config_size);
    let config = std::fs::read(config).unwrap();
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&config))),
        built.id
    );

    // The COPY layer holds the page and not what .dockerignore left out.
    let top = saved.manifest.layers.last().unwrap();
    let (path, _) = saved.blob(&top.digest).unwrap();
    let mut names = Vec::new();
    for entry in tar::Archive::new(std::fs::File::open(path).unwrap())
        .entries()
        .unwrap()
    {
        names.push(entry.unwrap().path().unwrap().display().to_string());
    }
    assert!(names.iter().any(|n| n == "site/index.html"), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with("notes.md")), "{names:?}");
    assert_eq!(saved.digests().len(), 3);
    untag(&engine, &[built.reference]).await;
}

/// A Dockerfile that fails gives the builder's own words, where `build:` is written.
#[tokio::test]
async fn a_failing_dockerfile_gives_the_builders_error() {
    let engine = Engine::connect_to(crate::images::engine::docker_host())
        .await
        .expect("the test engine");
    let dir = tempfile::tempdir().unwrap();
    let marker = unique("fail");
    write_files(
        dir.path(),
        &[(
            "Dockerfile",
            &format!("FROM {BASE}\nRUN echo {marker} && exit 3\n"),
        )],
    );
    let stack = unique("fail");
    let svc = service(dir.path(), "compose.yaml:7");
    let mut out = Vec::new();
    let err = build(&engine, &stack, &svc, &mut out)
        .await
        .expect_err("the RUN step fails");
    assert_eq!(
        err.to_string(),
        format!(
            "build of {stack}/web (compose.yaml:7) failed: The command '/bin/sh -c echo {marker} && exit 3' returned a non-zero code: 3"
        )
    );
    // The step's own output reached the stream before the error.
    assert!(String::from_utf8_lossy(&out).contains(&marker));
}

/// `docker save` of an image the engine lacks says which engine lacks it.
#[tokio::test]
async fn saving_an_absent_image_names_the_engine() {
    let engine = Engine::connect_to(crate::images::engine::docker_host())
        .await
        .expect("the test engine");
    let name = format!("{}:never", unique("absent"));
    let err = save(&engine, &name).await.expect_err("no such image");
    assert_eq!(
        err.to_string(),
        format!(
            "this machine's engine ({}) has no image {name}",
            engine.place()
        )
    );
}
