//! Revocation: removing a node (or a controller) revokes its certificate. Its open
//! session ends at once, the certificate opens no new one and cannot be renewed; the
//! node's agent stops its containers and exits saying how to come back; the node is
//! accepted again once it joins with a token.

use std::time::{Duration, SystemTime};

use shoal_proto::pb::{self, agent_message::Msg};
use shoal_tests::cluster::{channel, eventually, mint, Cluster};
use shoal_tls::{ClientTls, CredentialFiles, Identity, Role};
use tokio::sync::mpsc;
use tonic::{Code, Status};

const HOUR: Duration = Duration::from_secs(3600);

/// Opens `node`'s session with `tls`; the stream of what the controller sends.
async fn open_session(
    tls: &ClientTls,
    addr: &str,
    node: &str,
) -> Result<
    (
        tonic::Streaming<pb::ControllerMessage>,
        mpsc::Sender<pb::AgentMessage>,
    ),
    Status,
> {
    let ch = channel(tls, addr).await.map_err(Status::unavailable)?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::AgentMessage {
        msg: Some(Msg::Hello(pb::Hello {
            name: node.into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let down = pb::agent_session_client::AgentSessionClient::new(ch)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((down, tx))
}

async fn remove_node(cl: &Cluster, node: &str) {
    cl.client()
        .call(|mut c| {
            let node = node.to_string();
            async move {
                c.remove_node(pb::RemoveNodeRequest { node, force: true })
                    .await
            }
        })
        .await
        .expect("node rm");
}

fn assert_revoked(status: &Status) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    assert!(status.message().contains("was revoked"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_s_certificate_is_revoked_until_it_joins_again() {
    let cl = Cluster::start(1, &[]).await;
    let addr = cl.addr(0);
    let r2 = mint(
        &cl.ca,
        Identity::new(Role::Agent, "r2"),
        SystemTime::now(),
        HOUR,
    );

    // A session up and answered (its first assignments arrive).
    let (mut down, _up) = open_session(&r2, &addr, "r2").await.expect("session");
    let first = tokio::time::timeout(Duration::from_secs(10), down.message()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "{first:?}");

    remove_node(&cl, "r2").await;

    // The open session ends with the reason.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match down.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the session ended without a status"),
                Err(s) => return s,
            }
        }
    })
    .await
    .expect("the session was not cut");
    assert_revoked(&end);

    // The certificate opens no new session and is not renewed.
    let again = open_session(&r2, &addr, "r2").await.map(|_| ());
    assert_revoked(&again.expect_err("a revoked certificate opened a session"));
    let ch = channel(&r2, &addr).await.unwrap();
    let renew = pb::pki_client::PkiClient::new(ch)
        .renew(pb::RenewRequest { csr_der: vec![] })
        .await
        .expect_err("a revoked certificate renewed");
    assert_revoked(&renew);

    // Other nodes' certificates are untouched.
    let r3 = mint(
        &cl.ca,
        Identity::new(Role::Agent, "r3"),
        SystemTime::now(),
        HOUR,
    );
    open_session(&r3, &addr, "r3")
        .await
        .expect("another node's session");

    // Joining again: a real agent on r2's name, with the token, is accepted.
    let mut cl = cl;
    cl.add_agent("r2", &[]);
    eventually(Duration::from_secs(30), "r2 ready again", || async {
        let nodes = cl.client().nodes().await.ok()?;
        nodes
            .iter()
            .any(|n| n.name == "r2" && n.status == "ready")
            .then_some(())
    })
    .await;
    let creds = CredentialFiles::require(&cl.agent_dir("r2").join("tls")).unwrap();
    let info = shoal_tls::identity::cert_info_pem(&creds.cert_pem).unwrap();
    assert_eq!(info.identity, Identity::new(Role::Agent, "r2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_s_agent_stops_its_containers_and_says_how_to_come_back() {
    let mut cl = Cluster::start(1, &["gone", "stays"]).await;
    cl.wait_nodes_ready().await;
    cl.client()
        .deploy(&shoal_tests::cluster::stack("rev", "img:1", 4))
        .await
        .expect("deploy");
    eventually(
        Duration::from_secs(30),
        "replicas on both nodes",
        || async {
            let ps = cl.client().ps("rev").await.ok()?;
            let on = |n: &str| {
                ps.iter()
                    .filter(|t| t.node == n && t.state == "running")
                    .count()
            };
            (on("gone") > 0 && on("stays") > 0).then_some(())
        },
    )
    .await;

    remove_node(&cl, "gone").await;
    let (result, fake) = cl
        .agent_exit("gone", Duration::from_secs(60))
        .await
        .expect("the removed node's agent did not stop");
    let err = format!(
        "{:#}",
        result.expect_err("the agent ended without an error")
    );
    assert!(err.contains("was revoked"), "{err}");
    assert!(err.contains("its containers were stopped"), "{err}");
    assert!(err.contains("join token"), "{err}");
    assert!(
        fake.containers().is_empty(),
        "containers left: {:?}",
        fake.containers()
    );
    // Its replicas run on the node that stays.
    eventually(
        Duration::from_secs(30),
        "4 replicas on the other node",
        || async {
            let ps = cl.client().ps("rev").await.ok()?;
            let running = ps
                .iter()
                .filter(|t| t.desired == "running" && t.state == "running")
                .collect::<Vec<_>>();
            (running.len() == 4 && running.iter().all(|t| t.node == "stays")).then_some(())
        },
    )
    .await;
}
