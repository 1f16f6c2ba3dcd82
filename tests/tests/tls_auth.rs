//! Mutual TLS, join tokens and roles, against real controllers in this process.
//!
//! Every certificate here is either issued by the cluster (joins) or minted by the
//! test with the harness's CA ([`Cluster::ca`]) or with a CA of another cluster.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_agent::runtime::fake::{Call, FakeRuntime};
use shoal_agent::AgentConfig;
use shoal_controller::pki::ClusterCa;
use shoal_proto::pb::{self, agent_message::Msg};
use shoal_tests::cluster::{channel, eventually, mint, stack, Cluster, Options};
use shoal_tls::{ClientTls, CredentialFiles, Identity, JoinToken, Role};
use tokio_util::sync::CancellationToken;
use tonic::Code;

const IMAGE: &str = "shoal-test/busybox:latest";

/// No client certificate, but the cluster CA trusted (so only the server is checked).
fn anonymous(ca: &ClusterCa) -> ClientTls {
    let mut roots = rustls::RootCertStore::empty();
    for c in shoal_tls::parse_certs(ca.cert_pem()).unwrap() {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(shoal_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![shoal_tls::ALPN_H2.to_vec()];
    ClientTls::new(config)
}

/// The server's verdict on `tls`'s client certificate, read off the TLS stream itself.
///
/// In TLS 1.3 the client's handshake ends before the server has judged its certificate;
/// the server's refusal is an alert that follows. A gRPC client writing its preface at
/// that moment may see only a broken pipe, so the verdict is read here without writing:
/// `Ok` when the server keeps the connection open, the alert otherwise.
async fn server_verdict(tls: &ClientTls, addr: &str) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let (host, _) = addr.rsplit_once(':').unwrap();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls.current())
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    // An accepted client is sent the server's HTTP/2 settings, a refused one an alert.
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed without an alert".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => panic!("the server neither answered nor refused within 10 s"),
    }
}

/// What each service answers `tls` (connect failures count as "no answer": `None`).
async fn answers(tls: &ClientTls, addr: &str) -> Vec<(&'static str, Result<(), (Code, String)>)> {
    let Ok(ch) = channel(tls, addr).await else {
        return vec![(
            "connect",
            Err((Code::Unavailable, "handshake refused".into())),
        )];
    };
    let st = |s: tonic::Status| (s.code(), s.message().to_string());
    let mut out = Vec::new();
    let r = pb::control_client::ControlClient::new(ch.clone())
        .nodes(pb::NodesRequest {})
        .await;
    out.push(("Control.Nodes", r.map(|_| ()).map_err(st)));
    let r = pb::raft_peer_client::RaftPeerClient::new(ch.clone())
        .vote(pb::RaftPayload {
            json: b"{}".to_vec(),
        })
        .await;
    out.push(("RaftPeer.Vote", r.map(|_| ()).map_err(st)));
    let r = pb::pki_client::PkiClient::new(ch.clone())
        .show_token(pb::TokenRequest {
            role: "agent".into(),
        })
        .await;
    out.push(("Pki.ShowToken", r.map(|_| ()).map_err(st)));
    let r = pb::pki_client::PkiClient::new(ch.clone())
        .renew(pb::RenewRequest { csr_der: vec![] })
        .await;
    out.push(("Pki.Renew", r.map(|_| ()).map_err(st)));
    let hello = pb::AgentMessage {
        msg: Some(Msg::Hello(pb::Hello {
            name: "n1".into(),
            ..Default::default()
        })),
    };
    let r = pb::agent_session_client::AgentSessionClient::new(ch)
        .session(tokio_stream::iter(vec![hello]))
        .await;
    out.push(("AgentSession", r.map(|_| ()).map_err(st)));
    out
}

fn agent_cfg(cl: &Cluster, name: &str, token: Option<String>) -> AgentConfig {
    AgentConfig {
        controllers: cl.addrs(),
        name: name.to_string(),
        data_dir: cl.agent_dir(name),
        heartbeat_interval: Duration::from_millis(100),
        token,
        ..AgentConfig::default()
    }
}

/// Runs an agent that is expected to give up; its error.
async fn agent_error(cfg: AgentConfig) -> String {
    let run =
        shoal_agent::run_with_runtime(cfg, Arc::new(FakeRuntime::new()), CancellationToken::new());
    match tokio::time::timeout(Duration::from_secs(40), run).await {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(())) => panic!("the agent ran without credentials"),
        Err(_) => panic!("the agent neither joined nor gave up"),
    }
}

async fn rotate(cl: &Cluster, role: &str) -> String {
    let ch = channel(&cl.admin_tls(), &cl.addr(0)).await.unwrap();
    pb::pki_client::PkiClient::new(ch)
        .rotate_token(pb::TokenRequest { role: role.into() })
        .await
        .unwrap()
        .into_inner()
        .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_rotated_token_is_refused_with_a_clear_error() {
    let cl = Cluster::start(1, &[]).await;
    let old = cl.token(Role::Agent).await;
    let new = rotate(&cl, "agent").await;
    assert_ne!(old, new);
    assert_eq!(
        cl.token(Role::Agent).await,
        new,
        "show gives the rotated token"
    );

    let err = agent_error(agent_cfg(&cl, "late", Some(old.clone()))).await;
    assert!(err.contains("refused to let this node join"), "{err}");
    assert!(err.contains("wrong or was rotated"), "{err}");
    assert!(err.contains("shoal token show agent"), "{err}");

    let mut wrong: JoinToken = new.parse().unwrap();
    wrong.secret = "0".repeat(32);
    let err = agent_error(agent_cfg(&cl, "late", Some(wrong.to_string()))).await;
    assert!(err.contains("wrong or was rotated"), "{err}");

    // The controller token is not an agent token.
    let controller = cl.token(Role::Controller).await;
    let err = agent_error(agent_cfg(&cl, "late", Some(controller))).await;
    assert!(err.contains("not valid for a agent"), "{err}");

    let err = agent_error(agent_cfg(&cl, "late", Some("SHOAL-1-nonsense".into()))).await;
    assert!(err.contains("not a shoal join token"), "{err}");

    let err = agent_error(agent_cfg(&cl, "late", None)).await;
    assert!(err.contains("pass --token"), "{err}");

    // Nothing was stored by the refused joins; the current token works.
    assert!(CredentialFiles::load(&cl.agent_dir("late").join("tls"))
        .unwrap()
        .is_none());
    let stop = CancellationToken::new();
    let agent = tokio::spawn(shoal_agent::run_with_runtime(
        agent_cfg(&cl, "late", Some(new)),
        Arc::new(FakeRuntime::new()),
        stop.clone(),
    ));
    eventually(
        Duration::from_secs(20),
        "the node joined with the new token",
        || async {
            let nodes = cl.client().nodes().await.ok()?;
            nodes
                .iter()
                .any(|n| n.name == "late" && n.status == "ready")
                .then_some(())
        },
    )
    .await;
    stop.cancel();
    let _ = agent.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_shown_another_ca_refuses_to_continue() {
    let cl = Cluster::start(1, &[]).await;
    let real: JoinToken = cl.token(Role::Agent).await.parse().unwrap();
    let other = ClusterCa::generate().unwrap();
    let pinned = JoinToken {
        digest: other.digest(),
        secret: real.secret.clone(),
    };
    let err = agent_error(agent_cfg(&cl, "n9", Some(pinned.to_string()))).await;
    let want = format!(
        "the cluster's CA digest is {} but the token pins {}: refusing to join",
        cl.ca.digest(),
        other.digest()
    );
    assert!(err.contains(&want), "{err}");
    assert!(CredentialFiles::load(&cl.agent_dir("n9").join("tls"))
        .unwrap()
        .is_none());
    // The secret never reached the cluster: the node is unknown.
    let nodes = cl.client().nodes().await.unwrap();
    assert!(nodes.iter().all(|n| n.name != "n9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_certificate_or_another_cas_certificate_gets_no_answer() {
    let cl = Cluster::start(1, &[]).await;
    let addr = cl.addr(0);

    for (rpc, answer) in answers(&anonymous(&cl.ca), &addr).await {
        let (code, msg) = answer.expect_err(rpc);
        assert_eq!(code, Code::Unauthenticated, "{rpc}: {msg}");
        assert!(msg.contains("client certificate"), "{rpc}: {msg}");
    }

    // An admin certificate of another cluster: the handshake itself is refused.
    let other = ClusterCa::generate().unwrap();
    let foreign = mint(
        &other,
        Identity::new(Role::Admin, "admin"),
        SystemTime::now(),
        Duration::from_secs(3600),
    );
    for (rpc, answer) in answers(&foreign, &addr).await {
        let (code, msg) = answer.expect_err(rpc);
        assert_eq!(code, Code::Unavailable, "{rpc}: {msg}");
    }
    // The same with the foreign certificate trusting the real CA: the server refuses it.
    let (cert_pem, key_pem) = other
        .issue_with_key(
            &Identity::new(Role::Admin, "admin"),
            &[],
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .unwrap();
    let foreign = ClientTls::from_credentials(&CredentialFiles {
        ca_pem: cl.ca.cert_pem().to_string(),
        cert_pem,
        key_pem,
    })
    .unwrap();
    let e = server_verdict(&foreign, &addr)
        .await
        .expect_err("a foreign certificate was accepted");
    // Both CAs are named "shoal cluster CA": the server finds the issuer by name and
    // the signature does not verify under the real CA's key.
    assert!(e.contains("DecryptError"), "{e}");
    let r = pb::control_client::ControlClient::new(match channel(&foreign, &addr).await {
        Ok(c) => c,
        Err(e) => {
            assert!(e.contains("alert") || e.contains("certificate"), "{e}");
            return;
        }
    })
    .nodes(pb::NodesRequest {})
    .await;
    // An answer would have been the node list: an admin may list nodes. rustls ends
    // the connection during the handshake instead (with an alert, or just closing it).
    r.expect_err("a foreign certificate got an answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_certificate_can_only_open_a_session_for_its_own_node() {
    let cl = Cluster::start(1, &[]).await;
    let addr = cl.addr(0);
    let n2 = mint(
        &cl.ca,
        Identity::new(Role::Agent, "n2"),
        SystemTime::now(),
        Duration::from_secs(3600),
    );
    for (rpc, answer) in answers(&n2, &addr).await {
        let (code, msg) = answer.expect_err(rpc);
        match rpc {
            // The session is the agent's to open, but the hello says n1.
            "AgentSession" => {
                assert_eq!(code, Code::PermissionDenied, "{msg}");
                assert!(
                    msg.contains("speaks for agent \"n2\", not for node \"n1\""),
                    "{msg}"
                );
            }
            // An agent may renew; this junk CSR is refused for what it is.
            "Pki.Renew" => {
                assert_eq!(code, Code::InvalidArgument, "{msg}");
                assert!(msg.contains("certificate signing request"), "{msg}");
            }
            _ => {
                assert_eq!(code, Code::PermissionDenied, "{rpc}: {msg}");
                assert!(
                    msg.contains("a agent certificate may not call this API"),
                    "{rpc}: {msg}"
                );
            }
        }
    }
    let nodes = cl.client().nodes().await.unwrap();
    assert!(
        nodes.iter().all(|n| n.name != "n1"),
        "no node registered: {nodes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let cl = Cluster::start(1, &[]).await;
    let hour = Duration::from_secs(3600);
    let expired = mint(
        &cl.ca,
        Identity::new(Role::Admin, "admin"),
        SystemTime::now() - 3 * hour,
        hour,
    );
    let e = server_verdict(&expired, &cl.addr(0))
        .await
        .expect_err("an expired certificate was accepted");
    assert!(e.contains("CertificateExpired"), "{e}");
    // Through gRPC it gets no answer either (the alert, or a broken pipe if the
    // preface was on its way).
    if let Ok(ch) = channel(&expired, &cl.addr(0)).await {
        pb::control_client::ControlClient::new(ch)
            .nodes(pb::NodesRequest {})
            .await
            .expect_err("an expired certificate got an answer");
    }
    // The same identity, unexpired, is answered.
    let fresh = mint(
        &cl.ca,
        Identity::new(Role::Admin, "admin"),
        SystemTime::now(),
        hour,
    );
    server_verdict(&fresh, &cl.addr(0)).await.unwrap();
    let ch = channel(&fresh, &cl.addr(0)).await.unwrap();
    pb::control_client::ControlClient::new(ch)
        .nodes(pb::NodesRequest {})
        .await
        .expect("a valid admin certificate is answered");
}

fn not_after(dir: &std::path::Path) -> SystemTime {
    let creds = CredentialFiles::require(&dir.join("tls")).unwrap();
    shoal_tls::identity::cert_info_pem(&creds.cert_pem)
        .unwrap()
        .not_after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_certificates_are_renewed_while_the_session_stays_up() {
    // Certificates live 6 s (renewed at 4 s, a minute's backdating aside); the test
    // runs past several lifetimes.
    let opts = Options {
        cert_ttl: Duration::from_secs(6),
        ..Options::default()
    };
    let cl = Cluster::start_with(1, &["n1"], opts).await;
    let client = cl.client();
    client.deploy(&stack("renew", IMAGE, 1)).await.unwrap();
    let task = eventually(Duration::from_secs(20), "the replica running", || async {
        let ps = client.ps("renew").await.ok()?;
        ps.iter()
            .find(|t| t.state == "running")
            .map(|t| t.id.clone())
    })
    .await;
    let fake = cl.agents["n1"].fake.clone();
    fake.clear_calls();
    let first_agent = not_after(&cl.agent_dir("n1"));
    let first_controller = not_after(&cl.data_dir(0));
    let started = std::time::Instant::now();

    // Until both have renewed twice and the first certificates are long expired, the
    // node stays ready and the task untouched.
    let mut agent_seen = vec![first_agent];
    let mut controller_seen = vec![first_controller];
    while started.elapsed() < Duration::from_secs(40) {
        let a = not_after(&cl.agent_dir("n1"));
        let c = not_after(&cl.data_dir(0));
        if !agent_seen.contains(&a) {
            agent_seen.push(a);
        }
        if !controller_seen.contains(&c) {
            controller_seen.push(c);
        }
        let nodes = client.nodes().await.unwrap();
        assert!(
            nodes.iter().any(|n| n.name == "n1" && n.status == "ready"),
            "the node went {nodes:?} during renewal"
        );
        if agent_seen.len() >= 3
            && controller_seen.len() >= 3
            && SystemTime::now() > first_agent + Duration::from_secs(2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        agent_seen.len() >= 3,
        "agent certificate renewed {} times",
        agent_seen.len() - 1
    );
    assert!(
        controller_seen.len() >= 3,
        "controller certificate renewed {} times",
        controller_seen.len() - 1
    );
    assert!(
        SystemTime::now() > first_agent,
        "the first certificate has expired"
    );

    let ps = client.ps("renew").await.unwrap();
    let running: Vec<_> = ps.iter().filter(|t| t.state == "running").collect();
    assert_eq!(running.len(), 1, "{ps:?}");
    assert_eq!(running[0].id, task, "the same task runs");
    let disturbing: Vec<Call> = fake
        .calls()
        .into_iter()
        .filter(|c| {
            matches!(
                c,
                Call::Create(_) | Call::Start(_) | Call::Stop { .. } | Call::Remove(_)
            )
        })
        .collect();
    assert!(
        disturbing.is_empty(),
        "containers were touched: {disturbing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_demands_a_client_certificate_and_refuses_plaintext() {
    let cl = Cluster::start(1, &[]).await;
    let addr = cl.addr(0);
    let ca_file = cl.data_dir(0).join("admin").join("ca.pem");

    // openssl's view of the handshake: a server certificate from the cluster CA and a
    // request for a client certificate naming that CA.
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr, "-CAfile"])
        .arg(&ca_file)
        .args(["-alpn", "h2", "-brief"])
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("openssl s_client finished")
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Verification: OK"), "{text}");
    assert!(text.contains("OU = controller, O = shoal"), "{text}");
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr, "-CAfile"])
        .arg(&ca_file)
        .args(["-alpn", "h2"])
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("Acceptable client certificate CA names"),
        "{text}"
    );
    assert!(text.contains("shoal cluster CA"), "{text}");

    // A plaintext gRPC call gets no answer.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let result = match plain.connect().await {
        Ok(ch) => pb::control_client::ControlClient::new(ch)
            .nodes(pb::NodesRequest {})
            .await
            .map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(result.is_err(), "a plaintext call was answered");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_key_is_sealed_and_survives_the_loss_of_the_controller_that_made_it() {
    let mut cl = Cluster::start(3, &[]).await;
    // The key's base64 body, as a PEM file would hold it.
    let key_pem = cl.ca.key_pem();
    let body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(body.len() > 40);
    for i in 0..3 {
        for f in files_under(&cl.data_dir(i)) {
            let bytes = std::fs::read(&f).unwrap();
            let text = String::from_utf8_lossy(&bytes).replace(['\n', '\r'], "");
            assert!(
                !text.contains(&body),
                "the CA key is in clear in {}",
                f.display()
            );
        }
        assert!(cl.data_dir(i).join("cluster.key").exists());
    }

    // Without the controller that ran --init, the others still sign: a node joins.
    cl.kill(0).await;
    let token = cl.token(Role::Agent).await;
    let stop = CancellationToken::new();
    let agent = tokio::spawn(shoal_agent::run_with_runtime(
        agent_cfg(&cl, "after", Some(token)),
        Arc::new(FakeRuntime::new()),
        stop.clone(),
    ));
    eventually(
        Duration::from_secs(30),
        "a node joined after the loss",
        || async {
            let nodes = cl.client_of(&[1, 2]).nodes().await.ok()?;
            nodes
                .iter()
                .any(|n| n.name == "after" && n.status == "ready")
                .then_some(())
        },
    )
    .await;
    stop.cancel();
    let _ = agent.await;
}

/// Runs a controller that joins `cl` with `token`; its error.
async fn controller_join_error(cl: &Cluster, token: Option<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = shoal_controller::ControllerConfig::new(dir.path().join("c"), addr);
    cfg.advertise = Some(addr.to_string());
    cfg.bootstrap = shoal_controller::Bootstrap::Join(cl.addr(0));
    cfg.token = token;
    let run = shoal_controller::serve(cfg, listener, CancellationToken::new());
    let err = match tokio::time::timeout(Duration::from_secs(40), run).await {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(())) => panic!("the controller joined"),
        Err(_) => panic!("the controller neither joined nor gave up"),
    };
    assert!(
        !dir.path().join("c").join("node-id").exists(),
        "a refused controller stored an id"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_needs_the_controller_token_to_join() {
    let cl = Cluster::start(1, &[]).await;
    let err = controller_join_error(&cl, None).await;
    assert!(err.contains("--join needs --token"), "{err}");
    let agent_token = cl.token(Role::Agent).await;
    let err = controller_join_error(&cl, Some(agent_token)).await;
    assert!(err.contains("not valid for a controller"), "{err}");
    let status = cl.client().cluster_status().await.unwrap();
    assert_eq!(status.members.len(), 1, "no member was added: {status:?}");
}

/// Every request carries the sender's wire protocol (`user-agent`); a controller
/// refuses a peer it cannot work with, saying which side to upgrade, and serves one a
/// version apart (a rolling upgrade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_an_incompatible_wire_protocol_is_refused_saying_why() {
    use shoal_proto::pb::control_client::ControlClient;
    use shoal_proto::protocol::{MIN_PROTOCOL, PROTOCOL};
    let cl = Cluster::start(1, &[]).await;
    let addr = cl.addr(0);
    let status = |agent: String| {
        let tls = cl.admin_tls();
        let addr = addr.clone();
        async move {
            let endpoint = shoal_tls::client::endpoint(&addr)
                .unwrap()
                .user_agent(agent)
                .unwrap();
            let channel = tls.connect(endpoint).await.unwrap();
            ControlClient::new(channel)
                .cluster_status(pb::ClusterStatusRequest {})
                .await
        }
    };
    let next = PROTOCOL + 1;
    status(format!("shoal/9.9.9 protocol/{next} min/{PROTOCOL}"))
        .await
        .expect("a peer one protocol newer that still works with this one is served");
    let far = PROTOCOL + 2;
    let e = status(format!("shoal/9.9.9 protocol/{far} min/{next}"))
        .await
        .expect_err("a peer that no longer works with this protocol is refused");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains(&format!(
            "shoal 9.9.9 speaks wire protocol {far} and works only with {next} and newer"
        )) && e.message().contains("upgrade this controller first"),
        "{}",
        e.message()
    );
    if MIN_PROTOCOL > 0 {
        let old = MIN_PROTOCOL - 1;
        let e = status(format!("shoal/0.0.1 protocol/{old} min/{old}"))
            .await
            .expect_err("a peer older than this shoal works with is refused");
        assert!(e.message().contains("upgrade it"), "{}", e.message());
    }
}
