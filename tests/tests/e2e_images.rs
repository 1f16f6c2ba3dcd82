//! Images built by `shoal deploy` and shipped with no registry, on three test hosts and a
//! fourth engine that is not a node (the deploying machine, `n4`). One harness is shared
//! by the scenarios, in order:
//!
//! 1. broken input, with nothing deployed: a Dockerfile that fails (exit 1, the builder's
//!    words), a missing build context (`config` warns; `deploy` exits 2 with file:line),
//!    an image no engine and not the cluster has (exit 1, where it was looked for);
//! 2. the fixture stack (`tests/fixtures/images`: `web` and `worker`, both `build:`)
//!    deploys from n4; every replica runs; `worker` runs on every node; no node pulled
//!    anything (their engines' events show loads, no pull, and the images carry no
//!    registry digest);
//! 3. a rebuild that changes one file: the bytes the agents received are within 10% of
//!    the changed layer's size per node, not the image's;
//! 4. a controller is killed, the deploying engine stopped and a node running `web`
//!    power-cut: `web` starts on the node that never had its image; `image ls` says
//!    where the images are.
//!
//! Needs root, iproute2, iptables, nsenter, dockerd and the test image.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use shoal_tests::hosts::Hosts;
use shoal_tests::*;

const WAIT: Duration = Duration::from_secs(120);
const METRICS_PORT: u16 = 9464;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// `len` bytes that do not compress (so no layer is smaller than its file).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The fixture's services, with `web` kept off nodes labelled `web=no` (n3 at first),
/// so the node that takes it after the power cut never had its image.
const STACK: &str = r#"name: images
services:
  web:
    build: ./web
    ports:
      - "8080:8080"
    deploy:
      replicas: 2
      placement:
        max_replicas_per_node: 1
        constraints: [node.labels.web != no]
  worker:
    build:
      context: ./worker
      args:
        GREETING: hello from the worker
    deploy:
      replicas: 3
      placement:
        max_replicas_per_node: 1
"#;

/// The page of `web`: a marker line, then `size` bytes of hex noise.
fn write_page(dir: &Path, marker: &str, size: usize, seed: u64) {
    let mut page = format!("{marker}\n").into_bytes();
    page.extend(hex::encode(noise(size / 2, seed)).into_bytes());
    std::fs::write(dir.join("web/index.html"), page).unwrap();
}

struct Laptop<'h> {
    hosts: &'h Hosts,
    dir: PathBuf,
    docker_host: String,
}

impl Laptop<'_> {
    fn shoal(&self, args: &[&str]) -> std::process::Output {
        self.shoal_in(&self.dir, args)
    }

    fn shoal_in(&self, dir: &Path, args: &[&str]) -> std::process::Output {
        self.hosts
            .shoal_env(dir, &[("DOCKER_HOST", &self.docker_host)], args)
    }

    /// Writes `yaml` as `dir/compose.yaml` and deploys it from here.
    fn deploy_yaml(&self, dir: &Path, yaml: &str) -> std::process::Output {
        std::fs::write(dir.join("compose.yaml"), yaml).unwrap();
        self.shoal_in(dir, &["deploy", "-c", "compose.yaml"])
    }
}

/// Sum over the nodes of the bytes their agents received from the cluster's store.
fn agent_bytes(hosts: &Hosts) -> u64 {
    hosts
        .names()
        .iter()
        .map(|n| {
            let addr = format!("{}:{METRICS_PORT}", hosts.ip(n));
            let body = eventually(Duration::from_secs(10), "agent metrics", || {
                http_get_at(&addr, "/metrics")
            });
            body.lines()
                .find(|l| l.starts_with("shoal_agent_image_bytes_received_total"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no image bytes counter on {n}:\n{body}"))
        })
        .sum()
}

fn running(hosts: &Hosts, stack: &str, service: &str) -> Vec<(String, String)> {
    hosts
        .ps(stack)
        .into_iter()
        .filter(|t| t["service"] == service && t["state"] == "running")
        .map(|t| {
            (
                t["node"].as_str().unwrap_or("").to_string(),
                t["image"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The image references services of `stack` run, from `shoal services`.
fn service_images(hosts: &Hosts, stack: &str) -> Vec<(String, String)> {
    let v = hosts.json(&["services"]).expect("services");
    v.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stack"] == stack)
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["image"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn wait_converged(hosts: &Hosts, web: usize, worker: usize, web_image: &str) {
    eventually(WAIT, "web and worker running", || {
        let w = running(hosts, "images", "web");
        let k = running(hosts, "images", "worker");
        (w.len() == web && k.len() == worker && w.iter().all(|(_, i)| i == web_image)).then_some(())
    });
}

/// Image actions of node `n`'s engine since `since` (seconds since the epoch).
fn image_events(hosts: &Hosts, n: &str, since: u64) -> Vec<String> {
    let until = now_s() + 1;
    hosts
        .docker(
            n,
            &[
                "events",
                "--since",
                &since.to_string(),
                "--until",
                &until.to_string(),
                "--filter",
                "type=image",
                "--format",
                "{{.Action}}",
            ],
        )
        .lines()
        .map(str::to_string)
        .collect()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Size of the layer tar that `COPY index.html` made in `reference` on n4: its size in
/// a `docker save` of the image.
fn page_layer_size(hosts: &Hosts, reference: &str, dir: &Path) -> u64 {
    let file = dir.join("saved.tar");
    hosts.docker("n4", &["save", "-o", file.to_str().unwrap(), reference]);
    let mut archive = tar::Archive::new(std::fs::File::open(&file).unwrap());
    let mut layers: Vec<(String, u64)> = Vec::new();
    let mut manifest = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().to_string();
        if path == "manifest.json" {
            std::io::Read::read_to_end(&mut entry, &mut manifest).unwrap();
        } else if entry.header().entry_type().is_file() {
            layers.push((path, entry.size()));
        }
    }
    std::fs::remove_file(&file).unwrap();
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let last = m[0]["Layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    layers
        .into_iter()
        .find(|(p, _)| *p == last)
        .map(|(_, s)| s)
        .expect("the top layer in the save")
}

#[test]
fn built_images_reach_every_node_without_a_registry_and_survive_the_deployer() {
    ensure_test_image();
    let hosts = Hosts::up_with_engines(3, 1, &format!("--metrics 0.0.0.0:{METRICS_PORT}"));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("stack");
    copy_dir(&workspace().join("tests/fixtures/images"), &dir);
    // 3 MiB of assets that stay the same, a 1 MiB page that changes.
    std::fs::write(dir.join("web/assets/big.bin"), noise(3 << 20, 1)).unwrap();
    write_page(&dir, "version one", 1 << 20, 2);
    std::fs::write(dir.join("compose.yaml"), STACK).unwrap();
    let out = hosts.shoal(&["node", "label", "n3", "web=no"]);
    assert!(out.status.success(), "{}", text(&out));
    let laptop = Laptop {
        hosts: &hosts,
        dir: dir.clone(),
        docker_host: format!("unix://{}", hosts.docker_sock("n4")),
    };

    // 1. Broken input: nothing deployed.
    let broken = work.path().join("broken");
    std::fs::create_dir_all(broken.join("bad")).unwrap();
    std::fs::write(
        broken.join("bad/Dockerfile"),
        "FROM shoal-test/busybox:latest\nRUN echo about to fail && exit 3\n",
    )
    .unwrap();
    let out = laptop.deploy_yaml(
        &broken,
        "name: broken\nservices:\n  bad:\n    build: ./bad\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("build of broken/bad (") && err.contains("compose.yaml:4) failed"),
        "{}",
        text(&out)
    );
    assert!(
        err.contains("returned a non-zero code: 3"),
        "the builder's own words: {}",
        text(&out)
    );

    std::fs::write(
        broken.join("compose.yaml"),
        "name: broken\nservices:\n  gone:\n    build: ./not-there\n",
    )
    .unwrap();
    let out = laptop
        .hosts
        .shoal_env(&broken, &[], &["config", "-c", "compose.yaml"]);
    assert!(out.status.success(), "config accepts it: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("compose.yaml:4"),
        "{}",
        text(&out)
    );
    let out = laptop.shoal_in(&broken, &["deploy", "-c", "compose.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("compose.yaml:4"),
        "{}",
        text(&out)
    );

    let out = laptop.deploy_yaml(
        &broken,
        "name: broken\nservices:\n  ghost:\n    image: nowhere/ghost:1\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nowhere/ghost:1"), "{}", text(&out));
    assert!(err.contains("not in the cluster's store"), "{}", text(&out));
    assert!(
        service_images(&hosts, "broken").is_empty(),
        "nothing was deployed"
    );

    // 2. The fixture stack from n4; every replica runs, nothing pulled.
    let since = now_s();
    let before = agent_bytes(&hosts);
    let out = laptop.shoal(&["deploy", "-c", "compose.yaml", "--timeout", "240"]);
    assert!(out.status.success(), "{}", text(&out));
    let images: std::collections::BTreeMap<String, String> =
        service_images(&hosts, "images").into_iter().collect();
    let web_v1 = images["web"].clone();
    assert!(web_v1.starts_with("images-web:shoal-"), "{web_v1}");
    assert!(
        images["worker"].starts_with("images-worker:shoal-"),
        "{images:?}"
    );
    wait_converged(&hosts, 2, 3, &web_v1);
    let workers: std::collections::BTreeSet<String> = running(&hosts, "images", "worker")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(workers.len(), 3, "a worker on every node: {workers:?}");
    let web_nodes: Vec<String> = running(&hosts, "images", "web")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for n in &web_nodes {
        let page = eventually(Duration::from_secs(30), "web answers", || {
            http_get_at(&format!("{}:8080", hosts.ip(n)), "/index.html")
        });
        assert!(
            page.starts_with("version one"),
            "{}",
            &page[..20.min(page.len())]
        );
    }
    let first_bytes = agent_bytes(&hosts) - before;
    assert!(
        first_bytes > 3 << 20,
        "the nodes received the images ({first_bytes} bytes)"
    );
    for n in hosts.names() {
        let events = image_events(&hosts, &n, since);
        assert!(
            !events.iter().any(|a| a == "pull"),
            "{n} pulled: {events:?}"
        );
        assert!(events.iter().any(|a| a == "load"), "{n} loaded: {events:?}");
        let digests = hosts.docker(
            &n,
            &[
                "image",
                "inspect",
                "-f",
                "{{json .RepoDigests}}",
                &images["worker"],
            ],
        );
        assert_eq!(
            digests.trim(),
            "[]",
            "{n}: no registry digest on {}",
            images["worker"]
        );
    }

    // 3. One file changed: about one layer per node crosses the wire.
    write_page(&dir, "version two", 1 << 20, 3);
    let mid = agent_bytes(&hosts);
    let out = laptop.shoal(&["deploy", "-c", "compose.yaml", "--timeout", "240"]);
    assert!(out.status.success(), "{}", text(&out));
    let web_v2 = service_images(&hosts, "images")
        .into_iter()
        .find(|(s, _)| s == "web")
        .unwrap()
        .1;
    assert_ne!(web_v2, web_v1, "a changed build is a new reference");
    wait_converged(&hosts, 2, 3, &web_v2);
    let layer = page_layer_size(&hosts, &web_v2, work.path());
    let per_node = (agent_bytes(&hosts) - mid) as f64 / web_nodes.len() as f64;
    println!("one-layer change: {per_node:.0} bytes per node, layer {layer} bytes");
    assert!(
        (per_node - layer as f64).abs() <= layer as f64 * 0.10,
        "bytes per node {per_node} are not within 10% of the changed layer ({layer})"
    );

    // 4. A controller killed, the deploying engine stopped, a web node power-cut.
    hosts.kill_controller(1);
    hosts.cut("n4");
    let fresh = "n3".to_string();
    assert!(!running(&hosts, "images", "web")
        .iter()
        .any(|(n, _)| *n == fresh));
    let out = hosts.shoal(&["node", "label", "n3", "web=yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let never = hosts.docker(&fresh, &["images", "-q", &web_v2]);
    assert!(never.trim().is_empty(), "{fresh} never had {web_v2}");
    let victim = running(&hosts, "images", "web")[0].0.clone();
    let since = now_s();
    hosts.cut(&victim);
    eventually(
        WAIT,
        "web runs on the node that never had its image",
        || {
            running(&hosts, "images", "web")
                .iter()
                .any(|(n, i)| *n == fresh && *i == web_v2)
                .then_some(())
        },
    );
    let events = image_events(&hosts, &fresh, since);
    assert!(
        events.iter().any(|a| a == "load") && !events.iter().any(|a| a == "pull"),
        "{events:?}"
    );

    let ls = hosts.json(&["image", "ls"]).expect("image ls");
    let row = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["image"] == web_v2.as_str())
        .unwrap_or_else(|| panic!("{web_v2} in image ls: {ls}"));
    let nodes: Vec<&str> = row["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(
        nodes.contains(&fresh.as_str()),
        "image ls says {fresh} has it: {row}"
    );
    assert_eq!(row["services"], serde_json::json!(["images/web"]));
    assert!(row["size_bytes"].as_u64().unwrap() > layer);
}
