//! [`GrpcSource`] against a stand-in `ImageStore` on 127.0.0.1 (plaintext), serving the
//! in-memory store: manifests, NOT_FOUND, streamed blobs, and moving on from a
//! controller that is down.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use shoal_agent::images::{Ensured, GrpcSource, ImageSource, Images};
use shoal_agent::runtime::fake::FakeRuntime;
use shoal_agent::runtime::ContainerRuntime;
use shoal_proto::pb;
use shoal_proto::pb::image_store_server::{ImageStore, ImageStoreServer};
use shoal_proto::spec::PullPolicy;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::store::{image, layer, Store, CHUNK};

struct StandIn(Store);

type Chunks = Pin<Box<dyn Stream<Item = Result<pb::BlobChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ImageStore for StandIn {
    async fn manifest(
        &self,
        req: Request<pb::ManifestRequest>,
    ) -> Result<Response<pb::ImageManifest>, Status> {
        let reference = req.into_inner().reference;
        let m = self
            .0
            .manifest_of(&reference)
            .ok_or_else(|| Status::not_found(format!("no image {reference}")))?;
        Ok(Response::new(pb::ImageManifest {
            reference: m.reference,
            id: m.id,
            layers: m
                .layers
                .into_iter()
                .map(|l| pb::BlobRef {
                    digest: l.digest,
                    size: l.size,
                })
                .collect(),
            config_size: m.config_size,
            holders: vec![1],
        }))
    }

    type BlobStream = Chunks;

    async fn blob(&self, req: Request<pb::BlobRequest>) -> Result<Response<Chunks>, Status> {
        let digest = req.into_inner().digest;
        let (bytes, _) = self
            .0
            .serve_blob(&digest)
            .ok_or_else(|| Status::not_found(format!("no blob {digest}")))?;
        let chunks: Vec<pb::BlobChunk> = bytes
            .chunks(CHUNK)
            .map(|c| pb::BlobChunk { data: c.to_vec() })
            .collect();
        Ok(Response::new(futures::stream::iter(chunks).map(Ok).boxed()))
    }

    async fn held(
        &self,
        _req: Request<pb::HeldRequest>,
    ) -> Result<Response<pb::HeldReply>, Status> {
        Err(Status::unimplemented("controllers only"))
    }
}

async fn serve(store: Store, stop: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ImageStoreServer::new(StandIn(store)))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned()),
    );
    addr
}

/// An address nothing listens on.
async fn dead_address() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn the_source_reads_manifests_and_blobs_and_skips_a_dead_controller() {
    let store = Store::default();
    let app = image("app:1", &[layer(1, 2500), layer(2, 7)], "grpc");
    store.put(&app);
    let stop = CancellationToken::new();
    let live = serve(store.clone(), stop.clone()).await;
    let source = GrpcSource::new(vec![dead_address().await, live], None);

    let m = source.manifest("app:1").await.unwrap().unwrap();
    assert_eq!(m, app.manifest);
    assert_eq!(source.manifest("ghost:1").await.unwrap(), None);

    let mut blob = source.blob(&app.digest(0)).await.unwrap();
    let mut bytes = Vec::new();
    let mut chunks = 0;
    while let Some(c) = blob.next().await {
        bytes.extend_from_slice(&c.unwrap());
        chunks += 1;
    }
    assert_eq!(bytes, app.layers[0]);
    assert_eq!(chunks, 3);
    stop.cancel();
}

#[tokio::test]
async fn no_controller_answering_is_an_error_naming_them() {
    let dead = dead_address().await;
    let source = GrpcSource::new(vec![dead.clone()], None);
    let e = format!("{:#}", source.manifest("app:1").await.unwrap_err());
    assert!(
        e.contains("no controller answered") && e.contains(&dead),
        "{e}"
    );
}

#[tokio::test]
async fn a_node_loads_an_image_through_the_grpc_source() {
    let store = Store::default();
    let base = image("base:1", &[layer(1, 4000)], "base");
    let app = image("app:2", &[layer(1, 4000), layer(9, 1500)], "app");
    store.put(&app);
    let stop = CancellationToken::new();
    let addr = serve(store.clone(), stop.clone()).await;
    let fake = FakeRuntime::new();
    fake.insert_image(base.info("base:1"));
    let dir = tempfile::tempdir().unwrap();
    let source: Arc<dyn ImageSource> = Arc::new(GrpcSource::new(vec![addr], None));
    let images = Images::new(Some(source), dir.path(), Default::default());
    let got = images
        .ensure(&fake, "app:2", PullPolicy::Missing)
        .await
        .unwrap();
    assert_eq!(
        got,
        Ensured::Loaded {
            layers_sent: 1,
            layers: 2,
            bytes: 1500 + app.config.len() as u64
        }
    );
    assert_eq!(
        fake.image("app:2").await.unwrap().unwrap().id,
        app.manifest.id
    );
    stop.cancel();
}
