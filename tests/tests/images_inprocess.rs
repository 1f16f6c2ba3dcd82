//! The cluster's image store in one process: three controllers and fake agents, real
//! gRPC and mTLS on 127.0.0.1. A push sends only the blobs the store lacks and is
//! refused when a blob or the config does not check out; every controller copies the
//! image; with the controller that took the push killed, the others still serve it and
//! replicas' agents load it (the fake registry has none of these images); `image rm` is refused while a service runs the image; an
//! image nothing runs is forgotten after the retention.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};
use shoal_agent::runtime::ContainerRuntime;
use shoal_proto::pb;
use shoal_proto::pb::image_push_client::ImagePushClient;
use shoal_proto::pb::image_store_client::ImageStoreClient;
use shoal_proto::spec::{ServiceSpec, StackSpec};
use shoal_tests::cluster::{channel, eventually, Cluster, Options};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

/// A test image: two layer tars and a config naming them, as `docker save` gives them.
struct Image {
    reference: String,
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

impl Image {
    fn new(reference: &str, top: &[u8]) -> Image {
        Image::on_base(reference, 7, top)
    }

    fn on_base(reference: &str, base: u8, top: &[u8]) -> Image {
        let base = vec![base; 300_000];
        let layers = vec![layer(&[("base.bin", &base)]), layer(&[("top.txt", top)])];
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| format!("sha256:{}", sha(l)))
            .collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["sleep", "1000"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        Image {
            reference: reference.into(),
            config,
            layers,
        }
    }

    fn id(&self) -> String {
        format!("sha256:{}", sha(&self.config))
    }

    fn manifest(&self) -> pb::ImageManifest {
        pb::ImageManifest {
            reference: self.reference.clone(),
            id: self.id(),
            layers: self
                .layers
                .iter()
                .map(|l| pb::BlobRef {
                    digest: sha(l),
                    size: l.len() as u64,
                })
                .collect(),
            config_size: self.config.len() as u64,
            holders: Vec::new(),
        }
    }

    fn blobs(&self) -> Vec<(String, &[u8])> {
        std::iter::once(&self.config)
            .chain(&self.layers)
            .map(|b| (sha(b), b.as_slice()))
            .collect()
    }
}

async fn leader_channel(cl: &Cluster) -> Channel {
    let i = cl.wait_leader().await;
    channel(&cl.admin_tls(), &cl.addr(i))
        .await
        .expect("channel to the leader")
}

/// Pushes the blobs `Missing` names, then the image; returns the reply.
async fn push(
    cl: &Cluster,
    img: &Image,
    corrupt: bool,
) -> Result<pb::ImagePushReply, tonic::Status> {
    let mut client = ImagePushClient::new(leader_channel(cl).await);
    let missing = client
        .missing(pb::MissingBlobsRequest {
            digests: img.blobs().into_iter().map(|(d, _)| d).collect(),
        })
        .await?
        .into_inner()
        .digests;
    let mut chunks = Vec::new();
    for (digest, data) in img.blobs() {
        if !missing.contains(&digest) {
            continue;
        }
        chunks.push(pb::ImagePushChunk {
            msg: Some(pb::image_push_chunk::Msg::Start(pb::BlobStart {
                digest: digest.clone(),
                size: data.len() as u64,
            })),
        });
        let mut data = data.to_vec();
        if corrupt {
            data[0] ^= 1;
        }
        for part in data.chunks(64 * 1024) {
            chunks.push(pb::ImagePushChunk {
                msg: Some(pb::image_push_chunk::Msg::Data(part.to_vec())),
            });
        }
    }
    chunks.push(pb::ImagePushChunk {
        msg: Some(pb::image_push_chunk::Msg::Image(img.manifest())),
    });
    client
        .push(tokio_stream::iter(chunks))
        .await
        .map(|r| r.into_inner())
}

async fn image_rows(cl: &Cluster) -> Vec<pb::ImageRow> {
    cl.client()
        .call(|mut c| async move { c.images(pb::ImagesRequest {}).await })
        .await
        .expect("images")
        .images
}

async fn read_blob(addr: &str, cl: &Cluster, digest: &str) -> Result<Vec<u8>, tonic::Status> {
    let ch = channel(&cl.admin_tls(), addr)
        .await
        .map_err(tonic::Status::unavailable)?;
    let mut s = ImageStoreClient::new(ch)
        .blob(pb::BlobRequest {
            digest: digest.into(),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(c) = s.message().await? {
        out.extend_from_slice(&c.data);
    }
    Ok(out)
}

fn stack(image: &str, replicas: u64) -> StackSpec {
    StackSpec {
        name: "app".into(),
        services: BTreeMap::from([(
            "web".to_string(),
            ServiceSpec {
                name: "web".into(),
                image: image.into(),
                replicas,
                stop_grace_period_ms: Some(100),
                ..Default::default()
            },
        )]),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_takes_only_missing_blobs_copies_everywhere_and_survives_a_controller() {
    let cl = Cluster::start_with(
        3,
        &["a", "b"],
        Options {
            image_retention: Duration::from_secs(1),
            ..Options::default()
        },
    )
    .await;
    // No registry has these images: the agents can only get them from the store.
    for name in ["a", "b"] {
        for image in ["app-web:shoal-1", "app-web:shoal-2"] {
            cl.agents[name].fake.fail_pull(image, "no registry here");
        }
    }
    let v1 = Image::new("app-web:shoal-1", b"version 1");
    let total: u64 = v1.blobs().iter().map(|(_, b)| b.len() as u64).sum();
    // The service runs v1 from the start, so the sweep never takes it.
    cl.client()
        .deploy(&stack("app-web:shoal-1", 2))
        .await
        .expect("deploy v1");

    // A corrupted blob is refused and nothing is recorded.
    let err = push(&cl, &v1, true).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    assert!(err.message().contains("corrupted"), "{}", err.message());
    assert!(image_rows(&cl)
        .await
        .iter()
        .all(|r| r.controllers.is_empty()));

    // A config that names other layers than the push is refused.
    let mut lying = Image::on_base("lying:1", 9, b"x");
    lying.layers.pop();
    let err = push(&cl, &lying, false).await.unwrap_err();
    assert!(
        err.message().contains("its config names layers"),
        "{}",
        err.message()
    );

    let reply = push(&cl, &v1, false).await.expect("push");
    assert_eq!(reply.bytes, total, "everything is new: every blob is sent");
    assert!(
        reply.holders.len() >= 2,
        "a push returns once a second controller holds the image: {:?}",
        reply.holders
    );
    let ids: Vec<u64> = (0..3).map(|i| cl.id(i)).collect();
    eventually(WAIT, "every controller holds the image", || async {
        let rows = image_rows(&cl).await;
        let row = rows.iter().find(|r| r.image == "app-web:shoal-1")?;
        let mut held = row.controllers.clone();
        held.sort();
        (held == ids).then_some(())
    })
    .await;

    // A second version shares the base layer: only the top layer and config are sent.
    let v2 = Image::new("app-web:shoal-2", b"version 2, changed");
    cl.client()
        .deploy(&stack("app-web:shoal-2", 2))
        .await
        .expect("deploy v2");
    let reply = push(&cl, &v2, false).await.expect("push v2");
    let changed = (v2.config.len() + v2.layers[1].len()) as u64;
    assert_eq!(
        reply.bytes, changed,
        "only the changed layer and the config cross the wire"
    );
    // An image nothing runs: forgotten after the retention (1 s here).
    push(&cl, &Image::on_base("old:1", 3, b"old"), false)
        .await
        .expect("push old");
    eventually(WAIT, "v2 is on every controller", || async {
        let rows = image_rows(&cl).await;
        (rows
            .iter()
            .find(|r| r.image == "app-web:shoal-2")?
            .controllers
            .len()
            == 3)
            .then_some(())
    })
    .await;

    // Kill the controller that took the pushes: the others serve the blobs.
    let mut cl = cl;
    let leader = cl.wait_leader().await;
    cl.kill(leader).await;
    let survivor = cl.live()[0];
    for (digest, data) in v2.blobs() {
        let got = read_blob(&cl.addr(survivor), &cl, &digest)
            .await
            .expect("blob from a survivor");
        assert_eq!(got, data, "blob {digest} read back byte for byte");
    }
    let bogus = read_blob(&cl.addr(survivor), &cl, &"0".repeat(64))
        .await
        .unwrap_err();
    assert_eq!(bogus.code(), tonic::Code::NotFound);
    let bad = read_blob(&cl.addr(survivor), &cl, "../../etc/passwd")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // With that controller gone, agents whose engines lack v2 load it from the others:
    // every layer (their engines hold nothing), each blob checked on arrival.
    let mut other = stack("app-web:shoal-2", 2);
    other.name = "other".into();
    cl.client().deploy(&other).await.expect("deploy other");
    eventually(WAIT, "both replicas of other/web run", || async {
        let ps = cl.client().ps("other").await.ok()?;
        (ps.iter().filter(|t| t.state == "running").count() == 2).then_some(())
    })
    .await;
    let v2_bytes: u64 = v2.blobs().iter().map(|(_, b)| b.len() as u64).sum();
    for name in ["a", "b"] {
        let fake = &cl.agents[name].fake;
        let loaded: u64 = fake.loads().iter().map(|l| l.len() as u64).sum();
        assert!(
            loaded >= v2_bytes,
            "agent {name} loaded every blob of v2 from the cluster ({loaded} < {v2_bytes})"
        );
        let images = fake.images().await.expect("the fake's images");
        assert!(
            images.iter().any(|i| i.id == v2.id()),
            "agent {name}'s engine holds v2 by its id: {images:?}"
        );
    }

    // A service runs v2 (and v1 for a rollback): removing it is refused.
    let err = cl
        .client()
        .call(|mut c| async move {
            c.remove_image(pb::RemoveImageRequest {
                image: "app-web:shoal-2".into(),
            })
            .await
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("is used by app/web"),
        "{}",
        err.message()
    );
    eventually(
        WAIT,
        "the unused image is forgotten after the retention",
        || async {
            let rows = image_rows(&cl).await;
            let names: Vec<&str> = rows.iter().map(|r| r.image.as_str()).collect();
            (!names.contains(&"old:1")
                && names.contains(&"app-web:shoal-1")
                && names.contains(&"app-web:shoal-2"))
            .then_some(())
        },
    )
    .await;
    let rows = image_rows(&cl).await;
    let row = rows.iter().find(|r| r.image == "app-web:shoal-2").unwrap();
    assert_eq!(
        row.services,
        vec!["app/web".to_string(), "other/web".to_string()]
    );
    assert_eq!(row.id, v2.id());
    assert_eq!(
        row.size_bytes,
        v2.blobs().iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
}
