//! Test support for code that uses the real Docker engine (always there in CI): unique
//! names, throwaway build contexts, and removal of the tags a test made.

use std::path::Path;

use bollard::image::RemoveImageOptions;
use shoal_proto::spec::{BuildSpec, ServiceSpec};

use super::engine::Engine;

/// The base image the test builds start from (scripts/build-test-image.sh).
pub const BASE: &str = "shoal-test/busybox:latest";

/// A name no other test run uses: `shoaltest-PID-NANOS-N`.
pub fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "shoaltest{what}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Writes `files` (path, contents) under `dir`.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
}

/// A `build:` service named `web` with its context at `dir`.
pub fn service(dir: &Path, at: &str) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        build: Some(BuildSpec {
            context: dir.display().to_string(),
            at: at.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Removes the tags `names` from the engine (the image goes with its last tag).
pub async fn untag(engine: &Engine, names: &[String]) {
    for name in names {
        let opts = RemoveImageOptions {
            force: false,
            noprune: false,
        };
        if let Err(e) = engine.docker().remove_image(name, Some(opts), None).await {
            eprintln!("test cleanup: remove {name}: {e}");
        }
    }
}
