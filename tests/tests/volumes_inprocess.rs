//! Named volumes in one process: three controllers, three fake agents (each fake engine
//! keeps its volumes in real directories), real gRPC and mTLS on 127.0.0.1. A copy is
//! known where its replica runs; a lost node's replica waits for its copy; a move copies
//! the contents through the leader, byte for byte, and rebinds; a move onto a node that
//! holds foreign data fails without touching either side; backup and restore go through
//! the CLI's streams; a replicated volume fails over to its standby.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use shoal_proto::pb;
use shoal_proto::spec::{MountKind, MountSpec, ServiceSpec, StackSpec, VolumePolicy, VolumeSpec};
use shoal_tests::cluster::{eventually, Cluster};

const WAIT: Duration = Duration::from_secs(30);

fn stack(name: &str, policy: VolumePolicy) -> StackSpec {
    let db = ServiceSpec {
        name: "db".into(),
        image: "img:1".into(),
        replicas: 1,
        stop_grace_period_ms: Some(100),
        volumes: vec![MountSpec {
            kind: MountKind::Volume,
            source: Some("data".into()),
            target: "/data".into(),
            read_only: false,
            relative: false,
        }],
        ..Default::default()
    };
    StackSpec {
        name: name.into(),
        services: BTreeMap::from([("db".to_string(), db)]),
        volumes: BTreeMap::from([(
            "data".to_string(),
            VolumeSpec {
                policy,
                ..Default::default()
            },
        )]),
        ..Default::default()
    }
}

async fn db_running(cl: &Cluster, stack: &str) -> String {
    eventually(WAIT, &format!("{stack}/db running"), || async {
        cl.client()
            .ps(stack)
            .await
            .ok()?
            .into_iter()
            .find(|t| t.desired == "running" && t.state == "running")
            .map(|t| t.node)
    })
    .await
}

async fn volumes(cl: &Cluster, stack: &str) -> Vec<pb::VolumeRow> {
    let stack = stack.to_string();
    cl.client()
        .call(|mut c| {
            let stack = stack.clone();
            async move { c.volumes(pb::VolumesRequest { stack }).await }
        })
        .await
        .expect("volumes")
        .volumes
}

/// (node, state) of each copy.
async fn copies(cl: &Cluster, stack: &str) -> Vec<(String, String)> {
    let mut v: Vec<_> = volumes(cl, stack)
        .await
        .into_iter()
        .map(|r| (r.node, r.state))
        .collect();
    v.sort();
    v
}

/// The directory of `docker_name` in `node`'s fake engine.
fn dir_of(cl: &Cluster, node: &str, docker_name: &str) -> Option<PathBuf> {
    cl.agents[node]
        .fake
        .volumes()
        .into_iter()
        .find(|v| v.name == docker_name)
        .and_then(|v| v.mountpoint)
}

/// Every file under `dir` with its contents' digest, by relative path.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                out.insert(format!("{rel}/"), String::new());
                todo.push(p);
            } else {
                let data = std::fs::read(&p).expect("read file");
                out.insert(rel, hex::encode(Sha256::digest(&data)));
            }
        }
    }
    out
}

fn fill(dir: &Path) {
    std::fs::create_dir_all(dir.join("base/16384")).unwrap();
    std::fs::write(dir.join("PG_VERSION"), b"15\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("base/16384/2619"), &big).unwrap();
    std::os::unix::fs::symlink("base/16384/2619", dir.join("link")).unwrap();
}

async fn move_to(cl: &Cluster, volume: &str, to: &str) -> pb::MoveStatusReply {
    let (volume, to) = (volume.to_string(), to.to_string());
    let started = cl
        .client()
        .call(|mut c| {
            let req = pb::MoveVolumeRequest {
                volume: volume.clone(),
                to: to.clone(),
            };
            async move { c.move_volume(req).await }
        })
        .await
        .expect("move started");
    eventually(WAIT, "the move over", || async {
        let id = started.id;
        let r = cl
            .client()
            .call(|mut c| async move { c.move_status(pb::MoveStatusRequest { id }).await })
            .await
            .ok()?;
        (r.phase == "done" || r.phase == "failed").then_some(r)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_stay_with_their_data_move_back_up_and_fail_over() {
    let mut cl = Cluster::start(3, &["v1", "v2", "v3"]).await;
    cl.wait_nodes_ready().await;
    let client = cl.client();

    // A copy where the replica runs, created with shoal's labels, reported with its size.
    client
        .deploy(&stack("app", VolumePolicy::default()))
        .await
        .expect("deploy");
    let home = db_running(&cl, "app").await;
    let dir = dir_of(&cl, &home, "app_data").expect("the volume on its node");
    fill(&dir);
    let want = tree(&dir);
    let labels = cl.agents[&home]
        .fake
        .volumes()
        .into_iter()
        .find(|v| v.name == "app_data")
        .unwrap()
        .labels;
    assert_eq!(
        labels.get("io.shoal.volume").map(String::as_str),
        Some("data")
    );
    assert_eq!(labels.get("io.shoal.node"), Some(&home));
    eventually(WAIT, "the copy measured", || async {
        volumes(&cl, "app")
            .await
            .into_iter()
            .find(|r| r.node == home && r.state == "live" && r.size_bytes >= 3_000_000)
    })
    .await;

    // Its node lost: the replica waits for it, saying why, and nothing is created elsewhere.
    let fake = cl.kill_agent(&home).await;
    let why = eventually(WAIT, "db pending", || async {
        cl.client()
            .ps("app")
            .await
            .ok()?
            .into_iter()
            .find(|t| t.desired == "running" && t.state == "pending" && !t.error.is_empty())
            .map(|t| t.error)
            .filter(|e| e.contains("app_data"))
    })
    .await;
    assert!(
        why.starts_with(&format!("volume app_data is on {home}, which is down")),
        "{why}"
    );
    for (name, a) in &cl.agents {
        assert!(
            !a.fake.volumes().iter().any(|v| v.name == "app_data"),
            "a new copy on {name}"
        );
    }
    cl.revive_agent(&home, fake);
    assert_eq!(db_running(&cl, "app").await, home);

    // A move: the contents arrive byte for byte; the source is set aside.
    let to = if home == "v1" { "v2" } else { "v1" }.to_string();
    let r = move_to(&cl, "app/data", &to).await;
    assert_eq!(r.phase, "done", "{r:?}");
    assert_eq!(r.sha256.len(), 64);
    assert_eq!(db_running(&cl, "app").await, to);
    let moved = dir_of(&cl, &to, "app_data").expect("the copy on the target");
    assert_eq!(tree(&moved), want, "the same files, the same bytes");
    assert_eq!(
        std::fs::read_link(moved.join("link")).unwrap(),
        PathBuf::from("base/16384/2619")
    );
    let mut expect = vec![
        (home.clone(), "set-aside".to_string()),
        (to.clone(), "live".to_string()),
    ];
    expect.sort();
    assert_eq!(copies(&cl, "app").await, expect);
    assert_eq!(tree(&dir), want, "the source copy untouched");

    // A node holding foreign data under that name: the move fails, neither side is
    // touched, and the replica runs again on its copy.
    let third = ["v1", "v2", "v3"]
        .into_iter()
        .find(|n| **n != home && **n != to)
        .unwrap()
        .to_string();
    let foreign = cl.agents[&third]
        .fake
        .insert_volume("app_data", BTreeMap::new());
    std::fs::write(foreign.join("mine"), b"do not touch").unwrap();
    let r = move_to(&cl, "app/data", &third).await;
    assert_eq!(r.phase, "failed", "{r:?}");
    assert!(
        r.error
            .contains("already has a volume app_data holding data"),
        "{}",
        r.error
    );
    assert_eq!(
        std::fs::read(foreign.join("mine")).unwrap(),
        b"do not touch"
    );
    assert_eq!(db_running(&cl, "app").await, to);
    assert_eq!(tree(&moved), want);
    eventually(WAIT, "the failed move's record gone", || async {
        (!copies(&cl, "app").await.iter().any(|(n, _)| *n == third)).then_some(())
    })
    .await;
    std::fs::remove_file(foreign.join("mine")).unwrap();

    // Backup through the CLI's stream, removal, restore on another node.
    let chunks: Vec<pb::VolumeChunk> = cl
        .client()
        .call(|mut c| async move {
            c.backup_volume(pb::BackupVolumeRequest {
                volume: "app/data".into(),
                node: String::new(),
            })
            .await
        })
        .await
        .expect("backup")
        .collect_all()
        .await;
    let last = chunks.last().expect("chunks");
    assert!(last.last && last.error.is_empty(), "{:?}", last.error);
    let data: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
    assert_eq!(hex::encode(Sha256::digest(&data)), last.sha256);
    client.scale("app/db", 0).await.expect("scale 0");
    eventually(WAIT, "db stopped", || async {
        cl.client()
            .ps("app")
            .await
            .ok()?
            .iter()
            .all(|t| ["shutdown", "complete", "failed", "orphaned"].contains(&t.state.as_str()))
            .then_some(())
    })
    .await;
    for (node, _) in copies(&cl, "app").await {
        let req = pb::RemoveVolumeRequest {
            volume: "app/data".into(),
            node,
        };
        cl.client()
            .call(|mut c| {
                let req = req.clone();
                async move { c.remove_volume(req).await }
            })
            .await
            .expect("volume rm");
    }
    eventually(WAIT, "every copy removed", || async {
        copies(&cl, "app").await.is_empty().then_some(())
    })
    .await;
    assert!(
        dir_of(&cl, &to, "app_data").is_none(),
        "removed from the engine"
    );
    let mut upload = vec![pb::VolumeChunk {
        volume: "app/data".into(),
        node: third.clone(),
        ..Default::default()
    }];
    for part in data.chunks(256 * 1024) {
        upload.push(pb::VolumeChunk {
            data: part.to_vec(),
            ..Default::default()
        });
    }
    upload.push(pb::VolumeChunk {
        last: true,
        sha256: last.sha256.clone(),
        ..Default::default()
    });
    let reply = cl
        .client()
        .call(|mut c| {
            let upload = upload.clone();
            async move { c.restore_volume(tokio_stream::iter(upload)).await }
        })
        .await
        .expect("restore");
    assert_eq!(
        (reply.node.as_str(), reply.sha256.as_str()),
        (third.as_str(), last.sha256.as_str())
    );
    client.scale("app/db", 1).await.expect("scale 1");
    assert_eq!(db_running(&cl, "app").await, third);
    let restored = dir_of(&cl, &third, "app_data").expect("restored copy");
    assert_eq!(tree(&restored), want);

    // A replicated volume: a standby refreshed, the primary lost, the replica on the
    // standby's node with the data, the old copy set aside when it returns.
    client
        .deploy(&stack(
            "repl",
            VolumePolicy {
                replicas: Some(2),
                every_ms: Some(500),
                ..Default::default()
            },
        ))
        .await
        .expect("deploy repl");
    let primary = db_running(&cl, "repl").await;
    fill(&dir_of(&cl, &primary, "repl_data").expect("repl volume"));
    let want = tree(&dir_of(&cl, &primary, "repl_data").unwrap());
    let written = now_ms();
    let standby = eventually(WAIT, "a standby refreshed after the write", || async {
        volumes(&cl, "repl")
            .await
            .into_iter()
            .find(|r| r.state == "standby" && r.synced_ms > written)
            .map(|r| r.node)
    })
    .await;
    let fake = cl.kill_agent(&primary).await;
    let now_on = eventually(WAIT, "db running off the lost node", || async {
        cl.client()
            .ps("repl")
            .await
            .ok()?
            .into_iter()
            .find(|t| t.desired == "running" && t.state == "running" && t.node != primary)
            .map(|t| t.node)
    })
    .await;
    assert_eq!(now_on, standby, "failed over to the standby");
    let promoted = dir_of(&cl, &standby, "repl_data").expect("the promoted copy");
    assert_eq!(tree(&promoted), want, "the data up to the last refresh");
    cl.revive_agent(&primary, fake);
    eventually(WAIT, "the old copy set aside", || async {
        copies(&cl, "repl")
            .await
            .contains(&(primary.clone(), "set-aside".to_string()))
            .then_some(())
    })
    .await;
    assert_eq!(db_running(&cl, "repl").await, standby);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Drains a server stream into a Vec (bounded by the test's own timeouts).
trait CollectAll {
    async fn collect_all(self) -> Vec<pb::VolumeChunk>;
}

impl CollectAll for tonic::Streaming<pb::VolumeChunk> {
    async fn collect_all(mut self) -> Vec<pb::VolumeChunk> {
        let mut out = Vec::new();
        while let Ok(Some(c)) = self.message().await {
            let last = c.last || !c.error.is_empty();
            out.push(c);
            if last {
                break;
            }
        }
        out
    }
}
