//! Benchmark: write throughput of small commands through a three-controller Raft group.
//!
//! Three controllers run in this process (real gRPC and sled on 127.0.0.1, default LAN
//! timings). A one-service stack is deployed, then clients send `Scale` of that service
//! to the leader, one at a time per client, with 1 and with 64 concurrent clients (each
//! with its own connection). Every `Scale` is a linearizable read (`ensure_linearizable`)
//! followed by a Raft write committed by a majority and flushed by sled. The service is
//! scaled to the replica count it already has (0), so the reconciler has nothing to add
//! and the figures measure the write path alone.
//!
//! Every call is mutual TLS with the admin credentials, as in production.
//!
//! Prints ops/s and latency percentiles; asserts nothing.
//! Run: `cargo bench -p shoal-tests --bench raft_writes`
//! (`SHOAL_BENCH_SECS` sets the measuring time per run, default 5).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_controller::raft::RaftTimings;
use shoal_controller::{Bootstrap, ControllerConfig};
use shoal_proto::pb::{self, control_client::ControlClient};
use shoal_proto::spec::{ServiceSpec, StackSpec};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const STACK: &str = "bench";
const SERVICE: &str = "bench/web";
/// Bound on every wait for the cluster to form.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// The admin credentials controller 1's `--init` wrote; every client presents them.
static ADMIN: std::sync::OnceLock<shoal_tls::ClientTls> = std::sync::OnceLock::new();

fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("SHOAL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(Duration::from_secs(secs)))
}

async fn bench(duration: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let (addrs, servers) = start_cluster(dir.path(), &shutdown).await?;
    let leader = leader_addr(&addrs).await?;
    println!("three controllers on {}; leader {leader}", addrs.join(", "));

    let mut c = connect(&leader).await?;
    let web = ServiceSpec {
        name: "web".into(),
        image: "shoal-test/busybox:latest".into(),
        replicas: 0,
        ..Default::default()
    };
    let stack = StackSpec {
        name: STACK.into(),
        services: [("web".to_string(), web)].into_iter().collect(),
        volumes: Default::default(),
        secrets: Vec::new(),
        configs: Vec::new(),
        networks: Default::default(),
    };
    c.deploy(pb::DeployRequest {
        stack_json: serde_json::to_vec(&stack)?,
        ..Default::default()
    })
    .await?;

    println!(
        "{:>8} {:>8} {:>10} {:>9} {:>9} {:>9}",
        "clients", "ops", "ops/s", "p50 ms", "p99 ms", "max ms"
    );
    for clients in [1usize, 64] {
        // A short warm-up so connections and caches are in place.
        run(&leader, clients, Duration::from_millis(500)).await?;
        let r = run(&leader, clients, duration).await?;
        println!(
            "{:>8} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>9.2}",
            clients,
            r.latencies.len(),
            r.latencies.len() as f64 / r.elapsed.as_secs_f64(),
            percentile(&r.latencies, 0.50),
            percentile(&r.latencies, 0.99),
            percentile(&r.latencies, 1.0),
        );
        if r.errors > 0 {
            println!("{:>8} {} writes failed", "", r.errors);
        }
    }

    shutdown.cancel();
    for s in servers {
        let _ = tokio::time::timeout(Duration::from_secs(10), s).await;
    }
    Ok(())
}

struct RunResult {
    /// Latency of every acknowledged write, sorted.
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
}

/// `clients` concurrent clients, each writing in a loop until `duration` has passed.
async fn run(leader: &str, clients: usize, duration: Duration) -> anyhow::Result<RunResult> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(connect(leader).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<JoinHandle<(Vec<Duration>, usize)>> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let req = pb::ScaleRequest {
                        service: SERVICE.into(),
                        replicas: 0,
                    };
                    match tokio::time::timeout(Duration::from_secs(10), c.scale(req)).await {
                        Ok(Ok(_)) => lat.push(t.elapsed()),
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(RunResult {
        latencies,
        errors,
        elapsed,
    })
}

/// Milliseconds at quantile `q` of sorted `v` (0 when empty).
fn percentile(v: &[Duration], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// Starts controller 1 with `Init`, then two more with `Join`, one at a time, waiting
/// until each is a voter.
async fn start_cluster(
    dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Vec<String>, Vec<JoinHandle<anyhow::Result<()>>>)> {
    let mut addrs = Vec::new();
    let mut servers = Vec::new();
    for i in 0..3 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let mut cfg = ControllerConfig::new(dir.join(format!("controller-{i}")), addr);
        cfg.advertise = Some(addr.to_string());
        cfg.timings = RaftTimings::default();
        cfg.bootstrap = match addrs.first() {
            None => Bootstrap::Init,
            Some(first) => Bootstrap::Join(String::clone(first)),
        };
        if let Some(first) = addrs.first() {
            let admin = ADMIN.get().expect("controller 1 wrote admin credentials");
            cfg.token = Some(
                shoal_tls::join::show_token(
                    &[String::clone(first)],
                    admin,
                    shoal_tls::Role::Controller,
                    SETUP_TIMEOUT,
                )
                .await?,
            );
        }
        servers.push(tokio::spawn(shoal_controller::serve(
            cfg,
            listener,
            shutdown.clone(),
        )));
        addrs.push(addr.to_string());
        if i == 0 {
            let admin_dir = dir.join("controller-0").join("admin");
            let start = Instant::now();
            let creds = loop {
                if let Ok(Some(c)) = shoal_tls::CredentialFiles::load(&admin_dir) {
                    break c;
                }
                if start.elapsed() > SETUP_TIMEOUT {
                    anyhow::bail!("no admin credentials in {}", admin_dir.display());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let _ = ADMIN.set(shoal_tls::ClientTls::from_credentials(&creds)?);
        }
        wait_for_voters(&addrs).await?;
    }
    Ok((addrs, servers))
}

async fn wait_for_voters(addrs: &[String]) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(s) = status(addrs).await {
            let voters = s
                .members
                .iter()
                .filter(|m| m.role == "leader" || m.role == "follower")
                .count();
            if voters == addrs.len() {
                return Ok(());
            }
        }
        if start.elapsed() > SETUP_TIMEOUT {
            anyhow::bail!("{} controllers did not all become voters", addrs.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The cluster status from whichever of `addrs` leads (followers refuse to answer it).
async fn status(addrs: &[String]) -> anyhow::Result<pb::ClusterStatusReply> {
    for a in addrs {
        if let Ok(mut c) = connect(a).await {
            if let Ok(r) = c.cluster_status(pb::ClusterStatusRequest {}).await {
                let r = r.into_inner();
                if r.leader != 0 {
                    return Ok(r);
                }
            }
        }
    }
    anyhow::bail!("no leader among {}", addrs.join(", "))
}

async fn leader_addr(addrs: &[String]) -> anyhow::Result<String> {
    let s = status(addrs).await?;
    s.members
        .iter()
        .find(|m| m.id == s.leader)
        .map(|m| m.address.clone())
        .ok_or_else(|| anyhow::anyhow!("leader {} is not a member", s.leader))
}

async fn connect(addr: &str) -> anyhow::Result<ControlClient<Channel>> {
    let endpoint = shoal_tls::client::endpoint(addr)?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    let admin = ADMIN
        .get()
        .ok_or_else(|| anyhow::anyhow!("no admin credentials yet"))?;
    let channel = admin.connect(endpoint).await?;
    Ok(ControlClient::new(channel))
}
