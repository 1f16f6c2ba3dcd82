//! `docker save` of one image, read into the blobs the cluster's store keeps: each
//! layer as its uncompressed tar, named by its diff id (the sha256 of that tar), and
//! the config, named by the image id (the sha256 of the config).
//!
//! Two layouts of the saved tar are read, both described by its `manifest.json`:
//! the legacy one (Docker before 25: `<id>/layer.tar`, config `<hex>.json`) and the OCI
//! one of newer engines (`blobs/sha256/<hex>` paths). A layer stored gzip-compressed
//! (an OCI engine may keep the registry's compressed blobs) is decompressed, since
//! blobs are named by diff id. Every layer's digest is checked against the config's
//! `rootfs.diff_ids`, and the config's against the image id, before anything is sent.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, Context as _};
use futures::TryStreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shoal_proto::pb;

use super::engine::{words, Engine};

/// The saved image: its manifest for the store and where each blob is on disk. The
/// files live in a temporary directory removed when this is dropped.
#[derive(Debug)]
pub struct SavedImage {
    pub manifest: pb::ImageManifest,
    /// By sha256 hex: the layers' uncompressed tars and the config.
    blobs: BTreeMap<String, Blob>,
    _dir: tempfile::TempDir,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Blob {
    path: PathBuf,
    size: u64,
}

impl SavedImage {
    /// Every blob the image needs, each once: its layers base first, then its config.
    pub fn digests(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let layers = self.manifest.layers.iter().map(|l| l.digest.clone());
        for d in layers.chain(std::iter::once(self.config_digest().to_string())) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }

    /// The config's sha256 hex (the image id without its prefix).
    pub fn config_digest(&self) -> &str {
        let id = &self.manifest.id;
        id.strip_prefix("sha256:").unwrap_or(id)
    }

    /// The file holding blob `digest` and its size.
    pub fn blob(&self, digest: &str) -> Option<(&Path, u64)> {
        self.blobs.get(digest).map(|b| (b.path.as_path(), b.size))
    }
}

/// Saves `reference` from this machine's engine. The engine not having it is an error
/// that says so.
pub async fn save(engine: &Engine, reference: &str) -> anyhow::Result<SavedImage> {
    let image = engine.image(reference).await?.ok_or_else(|| {
        anyhow!(
            "this machine's engine ({}) has no image {reference}",
            engine.place()
        )
    })?;
    let dir = tempfile::Builder::new()
        .prefix("shoal-save-")
        .tempdir()
        .context("make a temporary directory for docker save")?;
    let unpacked = dir.path().join("saved");
    let work = dir.path().join("blobs");
    fs::create_dir_all(&unpacked).context("make a temporary directory for docker save")?;
    fs::create_dir_all(&work).context("make a temporary directory for docker save")?;
    // The export streams straight into the unpacker: the tar is never kept whole.
    let docker = engine.long_running();
    let bytes = docker
        .export_image(&image.id)
        .map_err(|e| io::Error::other(words(&e)));
    let reader = tokio_util::io::StreamReader::new(Box::pin(bytes));
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let place = engine.place().to_string();
    let (id, reference_owned) = (image.id.clone(), reference.to_string());
    let (manifest, blobs) = tokio::task::spawn_blocking(move || {
        tar::Archive::new(bridge).unpack(&unpacked).map_err(|e| {
            anyhow!("docker save of {reference_owned} on this machine's engine ({place}): {e}")
        })?;
        read_layout(&unpacked, &work, &reference_owned, Some(&id))
    })
    .await
    .context("read the saved image")??;
    Ok(SavedImage {
        manifest,
        blobs,
        _dir: dir,
    })
}

/// One image of a saved tar's `manifest.json`.
#[derive(Debug, Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Reads an unpacked `docker save` in `dir` (either layout), writing decompressed
/// layers to `work`. `expected_id` (`sha256:HEX`) is checked against the config.
fn read_layout(
    dir: &Path,
    work: &Path,
    reference: &str,
    expected_id: Option<&str>,
) -> anyhow::Result<(pb::ImageManifest, BTreeMap<String, Blob>)> {
    let text = fs::read(dir.join("manifest.json"))
        .context("the saved image has no readable manifest.json")?;
    let entries: Vec<ManifestEntry> =
        serde_json::from_slice(&text).context("the saved image's manifest.json is not valid")?;
    let entry = match entries.as_slice() {
        [one] => one,
        other => anyhow::bail!(
            "the saved image's manifest.json lists {} images, not one",
            other.len()
        ),
    };
    let config_path = inside(dir, &entry.config)?;
    let config_bytes = fs::read(&config_path)
        .with_context(|| format!("read the saved image's config {}", entry.config))?;
    let config_hex = hex::encode(Sha256::digest(&config_bytes));
    let id = format!("sha256:{config_hex}");
    if let Some(expected) = expected_id {
        anyhow::ensure!(
            id == expected,
            "the saved config of {reference} has digest {id}, the engine's image id is {expected}"
        );
    }
    let config: Config = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("the saved config of {reference} has no rootfs.diff_ids"))?;
    anyhow::ensure!(
        config.rootfs.diff_ids.len() == entry.layers.len(),
        "the saved image {reference} has {} layers, its config names {}",
        entry.layers.len(),
        config.rootfs.diff_ids.len()
    );
    let mut blobs = BTreeMap::new();
    let mut layers = Vec::new();
    for (i, (path, diff_id)) in entry.layers.iter().zip(&config.rootfs.diff_ids).enumerate() {
        let want = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        let blob = match blobs.get(want) {
            Some(b) => Blob::clone(b),
            None => {
                let (digest, blob) = layer_blob(&inside(dir, path)?, work)
                    .with_context(|| format!("read layer {} of {reference} ({path})", i + 1))?;
                anyhow::ensure!(
                    digest == want,
                    "layer {} of {reference} ({path}) has digest sha256:{digest}, its config says {diff_id}",
                    i + 1
                );
                blobs.insert(digest, blob.clone());
                blob
            }
        };
        layers.push(pb::BlobRef {
            digest: want.to_string(),
            size: blob.size,
        });
    }
    blobs.insert(
        config_hex,
        Blob {
            path: config_path,
            size: config_bytes.len() as u64,
        },
    );
    let manifest = pb::ImageManifest {
        reference: reference.to_string(),
        id,
        layers,
        config_size: config_bytes.len() as u64,
        holders: Vec::new(),
    };
    Ok((manifest, blobs))
}

/// `rel` (from manifest.json) under `dir`, refusing paths that leave it.
fn inside(dir: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(rel);
    anyhow::ensure!(
        p.components().all(|c| matches!(c, Component::Normal(_))),
        "the saved image names a file outside it: {rel}"
    );
    Ok(dir.join(p))
}

/// A layer file as an uncompressed tar: its sha256 hex and where it is. A gzip layer
/// is decompressed into `work`; an uncompressed one is used where it is.
fn layer_blob(path: &Path, work: &Path) -> anyhow::Result<(String, Blob)> {
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut fs::File::open(path)?, &mut magic)?;
    let magic = &magic[..n];
    if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        anyhow::bail!("it is zstd-compressed, which shoal does not read: save it from an engine storing uncompressed or gzip layers");
    }
    let file = fs::File::open(path)?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        let tmp = tempfile::NamedTempFile::new_in(work)?;
        let (digest, size) = copy_hashing(flate2::read::GzDecoder::new(file), tmp.as_file())?;
        let dest = work.join(&digest);
        tmp.persist(&dest).map_err(|e| e.error)?;
        return Ok((digest, Blob { path: dest, size }));
    }
    let (digest, size) = copy_hashing(file, io::sink())?;
    Ok((
        digest,
        Blob {
            path: path.to_path_buf(),
            size,
        },
    ))
}

/// Copies `from` into `to`, returning the sha256 hex and length of what was copied.
fn copy_hashing(mut from: impl Read, mut to: impl Write) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        size += n as u64;
    }
    to.flush()?;
    Ok((hex::encode(hasher.finalize()), size))
}

fn read_up_to(file: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// A small layer tar holding one file.
    fn layer(name: &str, text: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, text.as_bytes()).unwrap();
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn config(diff_ids: &[String]) -> Vec<u8> {
        let ids: Vec<String> = diff_ids.iter().map(|d| format!("sha256:{d}")).collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": ids},
        }))
        .unwrap()
    }

    /// The OCI layout of newer engines: blobs by digest, a gzip layer decompressed and
    /// named by its diff id, a repeated layer stored once.
    #[test]
    fn oci_layout_with_a_gzip_layer() {
        let dir = tempfile::tempdir().unwrap();
        let (saved, work) = (dir.path().join("saved"), dir.path().join("work"));
        fs::create_dir_all(saved.join("blobs/sha256")).unwrap();
        fs::create_dir_all(&work).unwrap();
        let base = layer("bin/sh", "#!");
        let app = layer("app/index.html", "hello");
        let app_gz = gzip(&app);
        let cfg = config(&[sha(&base), sha(&app), sha(&base)]);
        for data in [&base, &app_gz, &cfg] {
            fs::write(saved.join("blobs/sha256").join(sha(data)), data).unwrap();
        }
        let manifest = serde_json::json!([{
            "Config": format!("blobs/sha256/{}", sha(&cfg)),
            "RepoTags": ["web:1"],
            "Layers": [
                format!("blobs/sha256/{}", sha(&base)),
                format!("blobs/sha256/{}", sha(&app_gz)),
                format!("blobs/sha256/{}", sha(&base)),
            ],
        }]);
        fs::write(saved.join("manifest.json"), manifest.to_string()).unwrap();
        let id = format!("sha256:{}", sha(&cfg));
        let (m, blobs) = read_layout(&saved, &work, "web:1", Some(&id)).unwrap();
        assert_eq!(m.id, id);
        assert_eq!(m.reference, "web:1");
        assert_eq!(m.config_size, cfg.len() as u64);
        let layers: Vec<(String, u64)> = m
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.size))
            .collect();
        assert_eq!(
            layers,
            vec![
                (sha(&base), base.len() as u64),
                (sha(&app), app.len() as u64),
                (sha(&base), base.len() as u64),
            ]
        );
        assert_eq!(blobs.len(), 3, "two layers and the config");
        assert_eq!(
            fs::read(&blobs[&sha(&app)].path).unwrap(),
            app,
            "stored uncompressed"
        );
        assert_eq!(fs::read(&blobs[&sha(&cfg)].path).unwrap(), cfg);
    }

    /// The legacy layout: `<id>/layer.tar` (possibly a link to another's), `<hex>.json`.
    #[test]
    fn legacy_layout() {
        let dir = tempfile::tempdir().unwrap();
        let (saved, work) = (dir.path().join("saved"), dir.path().join("work"));
        fs::create_dir_all(saved.join("aaa")).unwrap();
        fs::create_dir_all(saved.join("bbb")).unwrap();
        fs::create_dir_all(&work).unwrap();
        let base = layer("etc/os-release", "x");
        fs::write(saved.join("aaa/layer.tar"), &base).unwrap();
        std::os::unix::fs::symlink("../aaa/layer.tar", saved.join("bbb/layer.tar")).unwrap();
        let cfg = config(&[sha(&base), sha(&base)]);
        fs::write(saved.join(format!("{}.json", sha(&cfg))), &cfg).unwrap();
        let manifest = serde_json::json!([{
            "Config": format!("{}.json", sha(&cfg)),
            "RepoTags": null,
            "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
        }]);
        fs::write(saved.join("manifest.json"), manifest.to_string()).unwrap();
        let (m, blobs) = read_layout(&saved, &work, "base:1", None).unwrap();
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.layers[0], m.layers[1]);
        assert_eq!(blobs[&sha(&base)].path, saved.join("aaa/layer.tar"));
    }

    #[test]
    fn a_layer_that_does_not_match_its_config_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (saved, work) = (dir.path().join("saved"), dir.path().join("work"));
        fs::create_dir_all(saved.join("aaa")).unwrap();
        fs::create_dir_all(&work).unwrap();
        let real = layer("a", "1");
        fs::write(saved.join("aaa/layer.tar"), &real).unwrap();
        let cfg = config(&[sha(b"something else")]);
        fs::write(saved.join("c.json"), &cfg).unwrap();
        let manifest = serde_json::json!([{"Config": "c.json", "Layers": ["aaa/layer.tar"]}]);
        fs::write(saved.join("manifest.json"), manifest.to_string()).unwrap();
        let err = read_layout(&saved, &work, "x:1", None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "layer 1 of x:1 (aaa/layer.tar) has digest sha256:{}, its config says sha256:{}",
                sha(&real),
                sha(b"something else")
            )
        );
        let err = read_layout(&saved, &work, "x:1", Some("sha256:00"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the saved config of x:1 has digest"),
            "{err}"
        );
        let bad = serde_json::json!([{"Config": "../c.json", "Layers": []}]);
        fs::write(saved.join("manifest.json"), bad.to_string()).unwrap();
        let err = read_layout(&saved, &work, "x:1", None)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "the saved image names a file outside it: ../c.json");
    }
}
