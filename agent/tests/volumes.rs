//! The volume data plane and reports against the recording fake (each fake volume has a
//! real directory) and a stand-in leader serving `VolumeData` on 127.0.0.1: export,
//! import, refusals and failures that must leave no partial copy, freeze, and the
//! reports on the session.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// Only its `Leader` is used here: this file serves it next to `VolumeData`.
#[allow(dead_code)]
mod common;
use common::{until, Leader};

use futures::Stream;
use shoal_agent::model::{TransferDirection, TransferDone, VolumeTransfer};
use shoal_agent::runtime::fake::{Call, FakeRuntime, Op};
use shoal_agent::runtime::{ContainerRequest, ContainerRuntime, MountRequest};
use shoal_agent::volumes::standby::Standbys;
use shoal_agent::volumes::{report, transfer};
use shoal_proto::pb;
use shoal_proto::pb::agent_message::Msg;
use shoal_proto::pb::agent_session_server::AgentSessionServer;
use shoal_proto::pb::volume_data_client::VolumeDataClient;
use shoal_proto::pb::volume_data_server::{VolumeData, VolumeDataServer};
use shoal_proto::spec::MountKind;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// How long a condition of these tests may take.
const WAIT: Duration = Duration::from_secs(10);

type Served = Vec<Result<pb::VolumeChunk, Status>>;

/// The leader's data plane: keeps uploads, serves downloads it was given.
#[derive(Clone, Default)]
struct Data {
    uploads: Arc<Mutex<BTreeMap<u64, Vec<pb::VolumeChunk>>>>,
    downloads: Arc<Mutex<BTreeMap<u64, Served>>>,
}

#[tonic::async_trait]
impl VolumeData for Data {
    async fn upload(
        &self,
        req: Request<Streaming<pb::VolumeChunk>>,
    ) -> Result<Response<pb::UploadReply>, Status> {
        let mut s = req.into_inner();
        while let Some(c) = s.message().await? {
            self.uploads
                .lock()
                .unwrap()
                .entry(c.transfer_id)
                .or_default()
                .push(c);
        }
        Ok(Response::new(pb::UploadReply {}))
    }

    type DownloadStream = Pin<Box<dyn Stream<Item = Result<pb::VolumeChunk, Status>> + Send>>;

    async fn download(
        &self,
        req: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let id = req.into_inner().transfer_id;
        let items = self
            .downloads
            .lock()
            .unwrap()
            .remove(&id)
            .ok_or_else(|| Status::not_found(format!("no transfer {id}")))?;
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }
}

impl Data {
    fn uploaded(&self, id: u64) -> Vec<pb::VolumeChunk> {
        self.uploads
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    fn serve_download(&self, id: u64, chunks: Vec<pb::VolumeChunk>) {
        self.serve_items(id, chunks.into_iter().map(Ok).collect());
    }

    fn serve_items(&self, id: u64, items: Served) {
        self.downloads.lock().unwrap().insert(id, items);
    }
}

/// Serve `data` (and `leader`'s sessions) on 127.0.0.1; returns the address.
async fn serve(data: Data, leader: Leader, stop: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(VolumeDataServer::new(data))
            .add_service(AgentSessionServer::new(leader))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned()),
    );
    addr
}

async fn client(addr: &str) -> VolumeDataClient<Channel> {
    VolumeDataClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// Standby copies for transfers that make none.
fn no_standbys() -> Standbys {
    Standbys::new(std::env::temp_dir().join("shoal-test-no-standbys"))
}

fn shoal_labels(stack: &str, name: &str, node: &str) -> BTreeMap<String, String> {
    [
        ("io.shoal.stack", stack),
        ("io.shoal.volume", name),
        ("io.shoal.node", node),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn transfer(id: u64, direction: TransferDirection) -> VolumeTransfer {
    VolumeTransfer {
        transfer_id: id,
        direction,
        docker_name: "shop_data".into(),
        stack: "shop".into(),
        name: "data".into(),
        sha256: None,
        freeze: false,
    }
}

/// A volume of shop's `data` on `fake` with a few files (700 kB: several chunks).
fn filled_volume(fake: &FakeRuntime, node: &str) -> std::path::PathBuf {
    let dir = fake.insert_volume("shop_data", shoal_labels("shop", "data", node));
    std::fs::create_dir_all(dir.join("base/1")).unwrap();
    std::fs::write(dir.join("PG_VERSION"), "16\n").unwrap();
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("base/1/1259"), big).unwrap();
    std::os::unix::fs::symlink("base/1/1259", dir.join("current")).unwrap();
    dir
}

fn assert_same_tree(a: &Path, b: &Path) {
    assert_eq!(
        std::fs::read(a.join("PG_VERSION")).unwrap(),
        std::fs::read(b.join("PG_VERSION")).unwrap()
    );
    assert_eq!(
        std::fs::read(a.join("base/1/1259")).unwrap(),
        std::fs::read(b.join("base/1/1259")).unwrap()
    );
    assert_eq!(
        std::fs::read_link(b.join("current")).unwrap(),
        Path::new("base/1/1259")
    );
}

/// Export `shop_data` from `fake` under transfer `id`; the chunks the leader got.
async fn export(fake: &FakeRuntime, data: &Data, addr: &str, id: u64) -> Vec<pb::VolumeChunk> {
    let done = transfer::run(
        fake,
        client(addr).await,
        "node-a",
        &no_standbys(),
        &Default::default(),
        &transfer(id, TransferDirection::Export),
    )
    .await;
    assert_eq!(done.error, None);
    let chunks = data.uploaded(id);
    let last = chunks.last().unwrap();
    assert_eq!(done.sha256, last.sha256);
    assert_eq!(
        done.bytes,
        chunks.iter().map(|c| c.data.len() as u64).sum::<u64>()
    );
    chunks
}

#[tokio::test]
async fn a_volume_is_exported_and_imported_on_another_node_with_its_checksum() {
    let data = Data::default();
    let addr = serve(data.clone(), Leader::default(), CancellationToken::new()).await;
    let a = FakeRuntime::new();
    let src = filled_volume(&a, "node-a");

    let chunks = export(&a, &data, &addr, 1).await;
    assert!(
        chunks.len() >= 3,
        "700 kB in 256 KiB chunks: {}",
        chunks.len()
    );
    assert!(chunks
        .iter()
        .all(|c| c.transfer_id == 1 && c.error.is_empty()));
    let (last, rest) = chunks.split_last().unwrap();
    assert!(last.last && last.sha256.len() == 64);
    assert!(rest
        .iter()
        .all(|c| !c.last && c.sha256.is_empty() && c.data.len() == transfer::CHUNK_BYTES));

    let b = FakeRuntime::new();
    data.serve_download(2, chunks.clone());
    let t = VolumeTransfer {
        sha256: Some(last.sha256.clone()),
        ..transfer(2, TransferDirection::Import)
    };
    let done = transfer::run(
        &b,
        client(&addr).await,
        "node-b",
        &no_standbys(),
        &Default::default(),
        &t,
    )
    .await;
    assert_eq!(
        done,
        TransferDone {
            transfer_id: 2,
            error: None,
            bytes: chunks.iter().map(|c| c.data.len() as u64).sum(),
            sha256: last.sha256.clone(),
            frozen_ms: 0,
        }
    );
    let copies = b.volumes();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].name, "shop_data");
    assert_eq!(copies[0].labels, shoal_labels("shop", "data", "node-b"));
    assert_same_tree(&src, copies[0].mountpoint.as_ref().unwrap());

    // The copy is reported with the size of its files.
    let seen = report::collect(
        &(Arc::new(b.clone()) as Arc<dyn ContainerRuntime>),
        "node-b",
    )
    .await
    .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].stack.as_str(), seen[0].name.as_str()),
        ("shop", "data")
    );
    assert_eq!(seen[0].size_bytes, 3 + 700_000);
}

#[tokio::test]
async fn an_import_never_touches_a_volume_that_holds_data() {
    let data = Data::default();
    let addr = serve(data.clone(), Leader::default(), CancellationToken::new()).await;
    let a = FakeRuntime::new();
    filled_volume(&a, "node-a");
    let chunks = export(&a, &data, &addr, 1).await;

    let b = FakeRuntime::new();
    let dir = b.insert_volume("shop_data", BTreeMap::new());
    std::fs::write(dir.join("mine"), "precious").unwrap();
    data.serve_download(2, chunks);
    let done = transfer::run(
        &b,
        client(&addr).await,
        "node-b",
        &no_standbys(),
        &Default::default(),
        &transfer(2, TransferDirection::Import),
    )
    .await;
    assert_eq!(
        done.error.as_deref(),
        Some("node-b already has a volume shop_data holding data: remove it first")
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("mine")).unwrap(),
        "precious"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    assert!(b.calls().is_empty(), "{:?}", b.calls());

    // An empty one is used (and keeps being the node's volume).
    let c = FakeRuntime::new();
    let empty = c.insert_volume("shop_data", shoal_labels("shop", "data", "node-c"));
    data.serve_download(3, data.uploaded(1));
    let done = transfer::run(
        &c,
        client(&addr).await,
        "node-c",
        &no_standbys(),
        &Default::default(),
        &transfer(3, TransferDirection::Import),
    )
    .await;
    assert_eq!(done.error, None);
    assert!(empty.join("base/1/1259").exists());
}

/// Import `items` into a new node; its error, checking no volume is left.
async fn failed_import(data: &Data, addr: &str, t: VolumeTransfer, items: Served) -> String {
    let b = FakeRuntime::new();
    data.serve_items(t.transfer_id, items);
    let done = transfer::run(
        &b,
        client(addr).await,
        "node-b",
        &no_standbys(),
        &Default::default(),
        &t,
    )
    .await;
    assert!(
        b.volumes().is_empty(),
        "partial copy left: {:?}",
        b.volumes()
    );
    assert!(b.calls().contains(&Call::RemoveVolume("shop_data".into())));
    done.error.expect("the import fails")
}

#[tokio::test]
async fn a_broken_stream_leaves_no_partial_copy() {
    let data = Data::default();
    let addr = serve(data.clone(), Leader::default(), CancellationToken::new()).await;
    let a = FakeRuntime::new();
    filled_volume(&a, "node-a");
    let chunks = export(&a, &data, &addr, 1).await;
    let import = |id| transfer(id, TransferDirection::Import);

    let mut flipped = chunks.clone();
    flipped[1].data[1000] ^= 1;
    let error = failed_import(
        &data,
        &addr,
        import(10),
        flipped.into_iter().map(Ok).collect(),
    )
    .await;
    assert!(error.starts_with("checksum mismatch"), "{error}");

    let t = VolumeTransfer {
        sha256: Some("00".repeat(32)),
        ..import(11)
    };
    let error = failed_import(&data, &addr, t, chunks.iter().cloned().map(Ok).collect()).await;
    assert!(
        error.starts_with("checksum mismatch: expected 0000"),
        "{error}"
    );

    let cut: Served = chunks[..chunks.len() - 1].iter().cloned().map(Ok).collect();
    let error = failed_import(&data, &addr, import(12), cut).await;
    assert_eq!(error, "the stream ended before its last chunk");

    let mut failing: Served = chunks[..1].iter().cloned().map(Ok).collect();
    failing.push(Ok(pb::VolumeChunk {
        transfer_id: 13,
        error: "disk on fire".into(),
        ..Default::default()
    }));
    let error = failed_import(&data, &addr, import(13), failing).await;
    assert_eq!(error, "the sender failed: disk on fire");

    let mut broken: Served = chunks[..1].iter().cloned().map(Ok).collect();
    broken.push(Err(Status::unavailable("leader lost")));
    let error = failed_import(&data, &addr, import(14), broken).await;
    assert_eq!(error, "download: leader lost");

    // Not a tar stream at all, with a matching checksum.
    let junk = vec![0x5a_u8; 4096];
    let sha = shoal_agent::volumes::archive::sha256_hex(&junk);
    let items = vec![Ok(pb::VolumeChunk {
        transfer_id: 15,
        data: junk,
        last: true,
        sha256: sha,
        ..Default::default()
    })];
    let error = failed_import(&data, &addr, import(15), items).await;
    assert!(error.starts_with("unpack:"), "{error}");
}

#[tokio::test]
async fn exporting_a_missing_volume_tells_the_leader() {
    let data = Data::default();
    let addr = serve(data.clone(), Leader::default(), CancellationToken::new()).await;
    let a = FakeRuntime::new();
    let done = transfer::run(
        &a,
        client(&addr).await,
        "node-a",
        &no_standbys(),
        &Default::default(),
        &transfer(1, TransferDirection::Export),
    )
    .await;
    let error = done.error.expect("fails");
    assert!(error.starts_with("inspect volume shop_data"), "{error}");
    let got = data.uploaded(1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].error, error);
}

/// Every entry of `dir` (and `dir`) modified long ago, so that the second pass of a
/// frozen export sends only what changes after the first.
fn age(dir: &Path) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(1_500_000_000, 0);
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                dirs.push(path.clone());
            }
            utimensat(None, &path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
        }
        utimensat(None, &d, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
    }
}

/// The paths in a tar stream, in order (the root is "").
fn stream_paths(chunks: &[pb::VolumeChunk]) -> Vec<String> {
    let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
    let mut archive = tar::Archive::new(&bytes[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path().unwrap().into_owned();
            path.components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .collect::<std::path::PathBuf>()
                .display()
                .to_string()
        })
        .collect()
}

fn volume_container(name: &str, volume: &str) -> ContainerRequest {
    ContainerRequest {
        name: name.into(),
        labels: [("io.shoal.task".to_string(), name.to_string())].into(),
        mounts: vec![MountRequest {
            kind: MountKind::Volume,
            source: Some(volume.into()),
            target: "/data".into(),
            read_only: false,
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_frozen_export_pauses_only_around_its_second_pass_which_sends_what_changed() {
    let data = Data::default();
    let addr = serve(data.clone(), Leader::default(), CancellationToken::new()).await;
    let a = FakeRuntime::new();
    let src = filled_volume(&a, "node-a");
    age(&src);
    let db = a
        .create(&volume_container("db", "shop_data"))
        .await
        .unwrap();
    a.start(&db).await.unwrap();
    let other = a
        .create(&volume_container("other", "shop_cache"))
        .await
        .unwrap();
    a.start(&other).await.unwrap();
    a.clear_calls();
    a.hang(Op::Pause);
    a.hang(Op::Unpause);

    let t = VolumeTransfer {
        freeze: true,
        ..transfer(1, TransferDirection::Export)
    };
    let exporting = {
        let (a, addr) = (a.clone(), addr.clone());
        tokio::spawn(async move {
            transfer::run(
                &a,
                client(&addr).await,
                "node-a",
                &no_standbys(),
                &Default::default(),
                &t,
            )
            .await
        })
    };
    // The pause is asked for once the first pass has read the whole volume: what the
    // database does now is for the second pass.
    until(WAIT, "the pause", || {
        a.calls() == vec![Call::Pause(db.clone())]
    })
    .await;
    assert!(!a.is_paused("db"), "ran during the first pass");
    std::fs::remove_file(src.join("PG_VERSION")).unwrap();
    let newer: Vec<u8> = (0..700_000u32).map(|i| (i % 13) as u8).collect();
    std::fs::write(src.join("base/1/1259"), &newer).unwrap();
    std::fs::write(src.join("new"), "fresh").unwrap();
    a.release(Op::Pause);
    until(WAIT, "the resume", || a.calls().len() == 2).await;
    assert_eq!(
        a.calls(),
        vec![Call::Pause(db.clone()), Call::Unpause(db.clone())]
    );
    assert!(
        a.is_paused("db"),
        "paused until the second pass has read the volume"
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    a.release(Op::Unpause);
    let done = exporting.await.unwrap();
    assert_eq!(done.error, None);
    assert!(!a.is_paused("db"));
    assert!(done.frozen_ms >= 30, "{}", done.frozen_ms);
    let chunks = data.uploaded(1);
    assert_eq!(done.sha256, chunks.last().unwrap().sha256);

    // Pass 1: the root, PG_VERSION, base, base/1, base/1/1259, current; then only what
    // changed (the root, whose entries changed), and the paths present.
    let paths = stream_paths(&chunks);
    assert_eq!(
        paths[6..],
        ["", "new", "base/1/1259", ".shoal-freeze-paths"],
        "{paths:?}"
    );

    // Imported elsewhere: the volume as it was while frozen.
    let b = FakeRuntime::new();
    data.serve_download(2, chunks);
    let done = transfer::run(
        &b,
        client(&addr).await,
        "node-b",
        &no_standbys(),
        &Default::default(),
        &transfer(2, TransferDirection::Import),
    )
    .await;
    assert_eq!(done.error, None);
    let copy = b.volumes()[0].mountpoint.clone().unwrap();
    assert!(
        !copy.join("PG_VERSION").exists(),
        "deleted before the freeze"
    );
    assert_eq!(std::fs::read(copy.join("base/1/1259")).unwrap(), newer);
    assert_eq!(std::fs::read_to_string(copy.join("new")).unwrap(), "fresh");
    assert!(!copy.join(".shoal-freeze-paths").exists());
    assert_eq!(
        std::fs::read_link(copy.join("current")).unwrap(),
        Path::new("base/1/1259")
    );
}

#[tokio::test]
async fn a_frozen_export_resumes_the_containers_when_it_fails() {
    let data = Data::default();
    let addr = serve(data.clone(), Leader::default(), CancellationToken::new()).await;
    let a = FakeRuntime::new();
    let src = filled_volume(&a, "node-a");
    let db = a
        .create(&volume_container("db", "shop_data"))
        .await
        .unwrap();
    a.start(&db).await.unwrap();
    a.clear_calls();
    let t = VolumeTransfer {
        freeze: true,
        ..transfer(1, TransferDirection::Export)
    };

    // The second pass fails (the volume went away under it): resumed all the same.
    a.hang(Op::Pause);
    let exporting = {
        let (a, addr, t) = (a.clone(), addr.clone(), t.clone());
        tokio::spawn(async move {
            transfer::run(
                &a,
                client(&addr).await,
                "node-a",
                &no_standbys(),
                &Default::default(),
                &t,
            )
            .await
        })
    };
    until(WAIT, "the pause", || !a.calls().is_empty()).await;
    std::fs::rename(&src, src.with_extension("gone")).unwrap();
    a.release(Op::Pause);
    let done = exporting.await.unwrap();
    let error = done.error.expect("fails");
    assert!(error.starts_with("read "), "{error}");
    assert_eq!(
        a.calls(),
        vec![Call::Pause(db.clone()), Call::Unpause(db.clone())]
    );
    assert!(!a.is_paused("db"));
    assert_eq!(
        data.uploaded(1).last().unwrap().error,
        error,
        "the leader is told"
    );
    std::fs::rename(src.with_extension("gone"), &src).unwrap();

    // A container cannot be paused (here: someone paused it already): the ones paused
    // are resumed, the export fails.
    let db2 = a
        .create(&volume_container("db2", "shop_data"))
        .await
        .unwrap();
    a.start(&db2).await.unwrap();
    a.pause(&db2).await.unwrap();
    a.clear_calls();
    let done = transfer::run(
        &a,
        client(&addr).await,
        "node-a",
        &no_standbys(),
        &Default::default(),
        &VolumeTransfer {
            transfer_id: 2,
            ..t
        },
    )
    .await;
    let error = done.error.expect("fails");
    assert!(
        error.starts_with(&format!("pause container {db2}")),
        "{error}"
    );
    assert_eq!(
        a.calls(),
        vec![
            Call::Pause(db.clone()),
            Call::Pause(db2.clone()),
            Call::Unpause(db.clone())
        ]
    );
    assert!(!a.is_paused("db"));
    assert_eq!(data.uploaded(2).last().unwrap().error, error);
}

/// Standby copies kept under a fresh data dir.
fn standbys_in(data: &tempfile::TempDir) -> Standbys {
    Standbys::in_data_dir(data.path())
}

#[tokio::test]
async fn a_standby_refresh_is_swapped_in_only_when_whole_and_verified() {
    let data = Data::default();
    let addr = serve(data.clone(), Leader::default(), CancellationToken::new()).await;
    let a = FakeRuntime::new();
    let src = filled_volume(&a, "node-a");
    let first = export(&a, &data, &addr, 1).await;

    let b = FakeRuntime::new();
    let dir = tempfile::tempdir().unwrap();
    let standbys = standbys_in(&dir);
    let standby = |id: u64| transfer(id, TransferDirection::Standby);
    let copy = dir.path().join("standby/shop_data");
    data.serve_download(2, first.clone());
    let done = transfer::run(
        &b,
        client(&addr).await,
        "node-b",
        &standbys,
        &Default::default(),
        &standby(2),
    )
    .await;
    assert_eq!(
        done,
        TransferDone {
            transfer_id: 2,
            error: None,
            bytes: first.iter().map(|c| c.data.len() as u64).sum(),
            sha256: first.last().unwrap().sha256.clone(),
            frozen_ms: 0,
        }
    );
    assert_same_tree(&src, &copy.join("current"));
    assert!(b.volumes().is_empty(), "a standby is not an engine volume");
    assert!(b.calls().is_empty(), "{:?}", b.calls());

    // The source changes; a broken refresh leaves the previous copy and no `next`.
    std::fs::write(src.join("PG_VERSION"), "17\n").unwrap();
    let second = export(&a, &data, &addr, 3).await;
    let mut flipped = second.clone();
    flipped[1].data[1000] ^= 1;
    let cut: Served = second[..second.len() - 1].iter().cloned().map(Ok).collect();
    let mut junk = second.clone();
    junk[0].data = vec![0x5a; junk[0].data.len()];
    let sha = shoal_agent::volumes::archive::sha256_hex(
        &junk
            .iter()
            .flat_map(|c| c.data.clone())
            .collect::<Vec<u8>>(),
    );
    junk.last_mut().unwrap().sha256 = sha;
    let broken: Vec<(u64, Served, &str)> = vec![
        (
            4,
            flipped.into_iter().map(Ok).collect(),
            "checksum mismatch",
        ),
        (5, cut, "the stream ended before its last chunk"),
        (6, junk.into_iter().map(Ok).collect(), "unpack:"),
    ];
    for (id, items, error) in broken {
        data.serve_items(id, items);
        let done = transfer::run(
            &b,
            client(&addr).await,
            "node-b",
            &standbys,
            &Default::default(),
            &standby(id),
        )
        .await;
        let got = done.error.expect("fails");
        assert!(got.starts_with(error), "{got}");
        assert_eq!(
            std::fs::read_to_string(copy.join("current/PG_VERSION")).unwrap(),
            "16\n",
            "the previous copy is intact"
        );
        assert!(!copy.join("next").exists(), "no partial copy left");
    }

    // A good one replaces it.
    data.serve_download(7, second);
    let done = transfer::run(
        &b,
        client(&addr).await,
        "node-b",
        &standbys,
        &Default::default(),
        &standby(7),
    )
    .await;
    assert_eq!(done.error, None);
    assert_eq!(
        std::fs::read_to_string(copy.join("current/PG_VERSION")).unwrap(),
        "17\n"
    );
    let left: Vec<_> = std::fs::read_dir(&copy)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec!["current"]);
}

#[tokio::test]
async fn reports_list_this_nodes_volumes_only() {
    let fake = FakeRuntime::new();
    let dir = fake.insert_volume("shop_data", shoal_labels("shop", "data", "node-a"));
    std::fs::write(dir.join("f"), vec![1u8; 1234]).unwrap();
    fake.insert_volume("elsewhere", shoal_labels("shop", "data", "node-b"));
    fake.insert_volume("not-shoal", BTreeMap::new());
    let gone = fake.insert_volume("shop_logs", shoal_labels("shop", "logs", "node-a"));
    std::fs::remove_dir_all(&gone).unwrap();
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(fake.clone());
    let seen = report::collect(&runtime, "node-a").await.unwrap();
    let rows: Vec<_> = seen
        .iter()
        .map(|v| {
            (
                v.docker_name.as_str(),
                v.stack.as_str(),
                v.name.as_str(),
                v.size_bytes,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("shop_data", "shop", "data", 1234),
            ("shop_logs", "shop", "logs", -1),
        ]
    );
    assert!(seen.iter().all(|v| v.created_ms > 0));
}

#[tokio::test]
async fn the_session_reports_volumes_and_runs_transfers() {
    let data = Data::default();
    let leader = Leader::default();
    let stop = CancellationToken::new();
    let addr = serve(data.clone(), leader.clone(), stop.clone()).await;
    let fake = FakeRuntime::new();
    filled_volume(&fake, "node-a");
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let cfg = shoal_agent::AgentConfig {
        controllers: vec![addr],
        name: "node-a".into(),
        data_dir: dir.path().join("agent"),
        heartbeat_interval: Duration::from_millis(50),
        plaintext: true,
        ..shoal_agent::AgentConfig::default()
    };
    let agent = tokio::spawn(shoal_agent::run_with_runtime(
        cfg,
        Arc::new(fake.clone()),
        shutdown.clone(),
    ));
    let got = leader.got.clone();
    until(WAIT, "a volume report", || {
        got.lock()
            .unwrap()
            .iter()
            .any(|m| matches!(m, Msg::Volumes(_)))
    })
    .await;
    {
        let got = got.lock().unwrap();
        assert!(matches!(got[0], Msg::Hello(_)), "Hello first: {:?}", got[0]);
        let report = got
            .iter()
            .find_map(|m| match m {
                Msg::Volumes(r) => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            report.volumes,
            vec![pb::VolumeSeen {
                docker_name: "shop_data".into(),
                stack: "shop".into(),
                name: "data".into(),
                size_bytes: 3 + 700_000,
                created_ms: fake.volumes()[0].created_ms,
            }]
        );
    }

    let to_agent = leader.to_agent.lock().unwrap().clone().unwrap();
    let ask = |id: u64, direction: &str| pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::VolumeTransfer(
            pb::VolumeTransfer {
                transfer_id: id,
                direction: direction.into(),
                docker_name: "shop_data".into(),
                stack: "shop".into(),
                name: "data".into(),
                ..Default::default()
            },
        )),
    };
    to_agent.send(Ok(ask(7, "export"))).await.unwrap();
    to_agent.send(Ok(ask(8, "sideways"))).await.unwrap();
    let done = |id: u64| {
        let got = got.clone();
        move || {
            got.lock().unwrap().iter().find_map(|m| match m {
                Msg::TransferDone(d) if d.transfer_id == id => Some(d.clone()),
                _ => None,
            })
        }
    };
    let (done7, done8) = (done(7), done(8));
    until(WAIT, "both transfers end", || {
        done7().is_some() && done8().is_some()
    })
    .await;
    let d = done7().unwrap();
    assert_eq!(d.error, "");
    assert_eq!(d.sha256, data.uploaded(7).last().unwrap().sha256);
    assert!(done8()
        .unwrap()
        .error
        .contains("unknown transfer direction"));

    // A standby refresh lands under the agent's data dir, not in the engine.
    data.serve_download(9, data.uploaded(7));
    to_agent.send(Ok(ask(9, "standby"))).await.unwrap();
    let done9 = done(9);
    until(WAIT, "the standby refresh", || done9().is_some()).await;
    let d = done9().unwrap();
    assert_eq!(d.error, "");
    assert_eq!(d.sha256, data.uploaded(7).last().unwrap().sha256);
    let current = dir.path().join("agent/standby/shop_data/current");
    assert_same_tree(fake.volumes()[0].mountpoint.as_ref().unwrap(), &current);
    assert_eq!(fake.volumes().len(), 1);

    shutdown.cancel();
    agent.await.unwrap().unwrap();
    stop.cancel();
}
