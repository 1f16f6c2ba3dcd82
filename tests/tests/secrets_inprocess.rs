//! Compose secrets in one process: three controllers, two fake agents, real gRPC and
//! mTLS on 127.0.0.1. A secret reaches only the node running a task that uses it, as a
//! read-only file bind-mounted at its path; it is sealed in the Raft state (no
//! controller's data dir holds it in clear) and absent from `ps` and `services`; new
//! contents roll the service out and a rollback brings the old contents back.

use std::path::Path;
use std::time::Duration;

use shoal_agent::runtime::fake::Call;
use shoal_agent::runtime::MountRequest;
use shoal_proto::pb;
use shoal_proto::spec::{
    Constraint, ConstraintField, MountKind, SecretRef, ServiceSpec, StackSpec,
};
use shoal_tests::cluster::{eventually, Cluster};
use shoal_tests::files_holding;
use tonic::Code;

const STACK: &str = "vault";
const OLD: &str = "correct-horse-battery-staple";
const NEW: &str = "tr0ub4dor-and-3-more-words";
const CONF: &[(&str, &[u8])] = &[("app_conf", b"listen 8080\n")];

fn on(node: &str) -> Constraint {
    Constraint {
        field: ConstraintField::Hostname,
        equal: true,
        value: node.into(),
    }
}

fn stack() -> StackSpec {
    let mut api = ServiceSpec {
        name: "api".into(),
        image: "img:1".into(),
        replicas: 1,
        secrets: vec![SecretRef {
            source: "db_password".into(),
            target: "db_password".into(),
            mode: Some(0o400),
            ..Default::default()
        }],
        configs: vec![SecretRef {
            source: "app_conf".into(),
            target: "/etc/app.conf".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    api.placement.constraints = vec![on("s1")];
    let mut web = ServiceSpec {
        name: "web".into(),
        image: "img:1".into(),
        replicas: 1,
        ..Default::default()
    };
    web.placement.constraints = vec![on("s2")];
    StackSpec {
        name: STACK.into(),
        services: [("api".to_string(), api), ("web".to_string(), web)]
            .into_iter()
            .collect(),
        networks: Default::default(),
        volumes: Default::default(),
        secrets: vec!["db_password".into()],
        configs: vec!["app_conf".into()],
    }
}

/// The bind mounts at `target` of every container `calls` created, in order.
fn mounts_at(calls: Vec<Call>, target: &str) -> Vec<MountRequest> {
    calls
        .into_iter()
        .filter_map(|c| match c {
            Call::Create(r) => Some(r.mounts),
            _ => None,
        })
        .flatten()
        .filter(|m| m.target == target)
        .collect()
}

fn secret_mounts(calls: Vec<Call>) -> Vec<MountRequest> {
    mounts_at(calls, "/run/secrets/db_password")
}

/// Neither `secret` nor its hex form (how the state writes bytes) is in a file under `dir`.
fn assert_not_on_disk(dir: &Path, secret: &str) {
    let hits = files_holding(dir, secret);
    assert!(hits.is_empty(), "{secret:?} in clear in {hits:?}");
}

async fn running(cl: &Cluster, service: &str, generation: u64) -> Option<pb::TaskRow> {
    cl.client().ps(STACK).await.ok()?.into_iter().find(|t| {
        t.service == service
            && t.generation == generation
            && t.desired == "running"
            && t.state == "running"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_only_its_node_in_memory_and_never_the_state_in_clear() {
    let cl = Cluster::start(3, &["s1", "s2"]).await;
    cl.wait_nodes_ready().await;
    let client = cl.client();

    // Without its contents the deploy is refused, and nothing is stored.
    let e = client.deploy(&stack()).await.expect_err("no contents");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("db_password"), "{e}");

    client
        .deploy_with_files(&stack(), &[("db_password", OLD.as_bytes())], CONF)
        .await
        .expect("deploy");
    let api = eventually(Duration::from_secs(30), "api running", || {
        running(&cl, "api", 1)
    })
    .await;
    assert_eq!(api.node, "s1");
    eventually(Duration::from_secs(30), "web running", || {
        running(&cl, "web", 1)
    })
    .await;

    // s1 created api's container with the secret as a read-only bind mount of a file
    // holding the contents, with the mode asked for.
    let mounts = secret_mounts(cl.agents["s1"].fake.calls());
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let m = &mounts[0];
    assert_eq!(
        (m.kind, m.target.as_str(), m.read_only),
        (MountKind::Bind, "/run/secrets/db_password", true)
    );
    let source = Path::new(m.source.as_deref().expect("a bind source"));
    assert!(source.starts_with(cl.secrets_dir("s1")), "{source:?}");
    assert_eq!(std::fs::read_to_string(source).unwrap(), OLD);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(source).unwrap().permissions().mode() & 0o777,
        0o400
    );
    assert!(shoal_agent::secrets::in_memory(source.parent().unwrap()).unwrap());

    // The config, likewise, at its absolute target.
    let conf = mounts_at(cl.agents["s1"].fake.calls(), "/etc/app.conf");
    assert_eq!(conf.len(), 1, "{conf:?}");
    assert!(conf[0].read_only);
    let conf_file = Path::new(conf[0].source.as_deref().unwrap());
    assert_eq!(std::fs::read(conf_file).unwrap(), b"listen 8080\n");

    // s2 runs no task that uses it: nothing there, and no mount.
    assert!(secret_mounts(cl.agents["s2"].fake.calls()).is_empty());
    assert!(files_holding(&cl.secrets_dir("s2"), OLD).is_empty());

    // Not in `ps` or `services`, nor on any controller's disk.
    let ps = format!("{:?}", client.ps(STACK).await.unwrap());
    let services = format!("{:?}", client.services().await.unwrap());
    assert!(!ps.contains(OLD) && !services.contains(OLD));
    for i in 0..cl.len() {
        assert_not_on_disk(&cl.data_dir(i), OLD);
    }

    // New contents: the service rolls out, and the new replica reads the new contents.
    let reply = client
        .deploy_with_files(&stack(), &[("db_password", NEW.as_bytes())], CONF)
        .await
        .expect("redeploy");
    let api_gen = reply
        .services
        .iter()
        .find(|s| s.service == "api")
        .expect("api in the reply");
    assert!(api_gen.changed && api_gen.generation == 2, "{reply:?}");
    let web_gen = reply.services.iter().find(|s| s.service == "web").unwrap();
    assert!(!web_gen.changed, "web does not use the secret: {reply:?}");
    eventually(Duration::from_secs(30), "api v2 running", || {
        running(&cl, "api", 2)
    })
    .await;
    let mounts = secret_mounts(cl.agents["s1"].fake.calls());
    let latest = Path::new(mounts.last().unwrap().source.as_deref().unwrap());
    assert_eq!(std::fs::read_to_string(latest).unwrap(), NEW);
    // The old task's files go once it no longer runs.
    eventually(
        Duration::from_secs(30),
        "old secret files removed",
        || async {
            files_holding(&cl.secrets_dir("s1"), OLD)
                .is_empty()
                .then_some(())
        },
    )
    .await;

    // A rollback returns to the previous spec, and with it the previous contents.
    client
        .call(|mut c| async move {
            c.rollback(pb::RollbackRequest {
                service: "api".into(),
            })
            .await
        })
        .await
        .expect("rollback");
    eventually(Duration::from_secs(30), "api v3 running", || {
        running(&cl, "api", 3)
    })
    .await;
    let mounts = secret_mounts(cl.agents["s1"].fake.calls());
    let latest = Path::new(mounts.last().unwrap().source.as_deref().unwrap());
    assert_eq!(std::fs::read_to_string(latest).unwrap(), OLD);
    for i in 0..cl.len() {
        assert_not_on_disk(&cl.data_dir(i), OLD);
        assert_not_on_disk(&cl.data_dir(i), NEW);
    }
}

async fn create_secret(cl: &Cluster, name: &str, data: &[u8]) -> Result<(), tonic::Status> {
    cl.client()
        .call(|mut c| {
            let req = pb::CreateSecretRequest {
                name: name.into(),
                data: data.to_vec(),
            };
            async move { c.create_secret(req).await }
        })
        .await
        .map(|_| ())
}

async fn list_secrets(cl: &Cluster) -> Vec<pb::SecretRow> {
    cl.client()
        .call(|mut c| async move { c.list_secrets(pb::ListSecretsRequest {}).await })
        .await
        .expect("list secrets")
        .secrets
}

async fn remove_secret(cl: &Cluster, name: &str) -> Result<(), tonic::Status> {
    cl.client()
        .call(|mut c| {
            let name = name.to_string();
            async move { c.remove_secret(pb::RemoveSecretRequest { name }).await }
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_secret_is_the_one_the_cluster_keeps() {
    const KEPT: &str = "kept-by-the-cluster-0451";
    let cl = Cluster::start(1, &["s1"]).await;
    cl.wait_nodes_ready().await;
    let mut stack = stack();
    stack.services.remove("web");
    stack.configs.clear();
    let api = stack.services.get_mut("api").unwrap();
    api.configs.clear();
    api.secrets[0].external = Some("prod_db".into());

    // Not there yet: the deploy says how to make it.
    let e = cl
        .client()
        .deploy(&stack)
        .await
        .expect_err("no such secret");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("shoal secret create prod_db"), "{e}");

    create_secret(&cl, "prod_db", KEPT.as_bytes())
        .await
        .unwrap();
    let again = create_secret(&cl, "prod_db", b"other").await.unwrap_err();
    assert!(again.message().contains("cannot be changed"), "{again}");
    let bad = create_secret(&cl, "../etc", b"x").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad}");

    // The deploy carries no contents: the kept ones are mounted.
    cl.client().deploy(&stack).await.expect("deploy");
    eventually(Duration::from_secs(30), "api running", || {
        running(&cl, "api", 1)
    })
    .await;
    let mounts = secret_mounts(cl.agents["s1"].fake.calls());
    let file = Path::new(mounts.last().unwrap().source.as_deref().unwrap());
    assert_eq!(std::fs::read_to_string(file).unwrap(), KEPT);

    // Listed by name with its users, never its contents; not removable while used.
    let rows = list_secrets(&cl).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].name.as_str(), rows[0].used_by.clone()),
        ("prod_db", vec![format!("{STACK}/api")])
    );
    assert!(!format!("{rows:?}").contains(KEPT));
    let used = remove_secret(&cl, "prod_db").await.unwrap_err();
    assert!(used.message().contains("in use by vault/api"), "{used}");
    assert_not_on_disk(&cl.data_dir(0), KEPT);

    // Once no service uses it, it goes.
    cl.client()
        .call(|mut c| async move {
            c.remove_stack(pb::RemoveStackRequest {
                stack: STACK.into(),
                volumes: false,
            })
            .await
        })
        .await
        .expect("rm the stack");
    eventually(Duration::from_secs(30), "the secret removable", || async {
        remove_secret(&cl, "prod_db").await.ok()
    })
    .await;
    assert!(list_secrets(&cl).await.is_empty());
}
