//! [`Client`]: a `Control` client of the cluster under test that follows leader hints
//! and waits out elections the way the CLI does, with the admin credentials.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_proto::pb::{self, control_client::ControlClient};
use shoal_proto::spec::StackSpec;
use shoal_tls::ClientTls;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::{CALL_BOUND, LEADER_HINT, POLL};

/// One `Control` client of `addr` over mutual TLS.
pub(super) async fn connect(addr: &str, tls: &ClientTls) -> Result<ControlClient<Channel>, Status> {
    let endpoint = shoal_tls::client::endpoint(addr)
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(15));
    let channel = tls.connect(endpoint).await.map_err(|e| {
        Status::unavailable(format!(
            "connect to {addr}: {}",
            shoal_tls::join::error_chain(&e)
        ))
    })?;
    Ok(ControlClient::new(channel))
}

/// The leader a refusal points at, if any.
pub fn leader_hint(status: &Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_HINT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Whether `status` is a follower's "not the leader" refusal: the request was not acted
/// on, so it is safe to send it elsewhere.
pub fn is_not_leader(status: &Status) -> bool {
    let follower = status.code() == Code::FailedPrecondition
        && status.message().contains("not the raft leader");
    // No leader known at all (an election is under way): also refused before acting.
    let electing = status.code() == Code::Unavailable
        && status
            .metadata()
            .get(shoal_controller::api::NO_LEADER)
            .is_some();
    follower || electing
}

/// A `Control` client of a set of controllers, following leader hints like the CLI.
///
/// Writes are resent elsewhere only when they were certainly not acted on (the
/// controller was not reachable, or it refused as a follower); any other error is
/// returned, since a write that timed out may still commit.
#[derive(Debug, Clone)]
pub struct Client {
    addrs: Vec<String>,
    /// How long one call keeps looking for a leader.
    bound: Duration,
    /// Where the next call starts: the controller that answered last, moved on after a
    /// failure (so a client does not keep sending to an isolated old leader).
    first: Arc<std::sync::atomic::AtomicUsize>,
    /// The credentials it calls with.
    tls: ClientTls,
}

impl Client {
    pub fn new(addrs: Vec<String>, tls: ClientTls) -> Client {
        Client {
            addrs,
            tls,
            bound: CALL_BOUND,
            first: Arc::default(),
        }
    }

    /// The same client, giving up looking for a leader after `bound` (for calls that
    /// are expected to fail).
    pub fn with_bound(mut self, bound: Duration) -> Client {
        self.bound = bound;
        self
    }

    /// Runs `f` against the cluster: through leader hints and over every address, until
    /// it answers with anything but "not reachable" / "not the leader", or its bound.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, Status>
    where
        F: FnMut(ControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        use std::sync::atomic::Ordering;
        let start = Instant::now();
        let first = self.first.load(Ordering::Relaxed);
        let mut next = first;
        let mut round = 0usize;
        let mut hint: Option<String> = None;
        let mut last = Status::unavailable("no controller address");
        while start.elapsed() < self.bound {
            let addr = match hint.take() {
                Some(h) => h,
                None => {
                    let a = self.addrs[next % self.addrs.len()].clone();
                    next += 1;
                    // A whole round without an answer: give the election time.
                    round += 1;
                    if round == self.addrs.len() {
                        round = 0;
                        tokio::time::sleep(POLL).await;
                    }
                    a
                }
            };
            let slot = self.addrs.iter().position(|a| *a == addr).unwrap_or(0);
            let client = match connect(&addr, &self.tls).await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match f(client).await {
                Ok(r) => {
                    self.first.store(slot, Ordering::Relaxed);
                    return Ok(r.into_inner());
                }
                Err(status) if is_not_leader(&status) => {
                    hint = leader_hint(&status).filter(|h| self.addrs.contains(h));
                    last = status;
                }
                Err(status) => {
                    self.first.store(slot + 1, Ordering::Relaxed);
                    return Err(status);
                }
            }
        }
        Err(last)
    }

    /// Like [`Client::call`], retrying every error until the bound (for reads).
    pub async fn read<T, F, Fut>(&self, mut f: F) -> Result<T, Status>
    where
        F: FnMut(ControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let start = Instant::now();
        loop {
            match self.call(&mut f).await {
                Ok(v) => return Ok(v),
                Err(e) if start.elapsed() > self.bound => return Err(e),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    pub async fn deploy(&self, stack: &StackSpec) -> Result<pb::DeployReply, Status> {
        self.deploy_with_files(stack, &[], &[]).await
    }

    /// Deploy `stack` with the contents of its secrets and configs, as `shoal deploy`
    /// sends them.
    pub async fn deploy_with_files(
        &self,
        stack: &StackSpec,
        secrets: &[(&str, &[u8])],
        configs: &[(&str, &[u8])],
    ) -> Result<pb::DeployReply, Status> {
        let json = serde_json::to_vec(stack).expect("a stack spec serializes");
        let map = |list: &[(&str, &[u8])]| -> std::collections::HashMap<String, Vec<u8>> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect()
        };
        let (secrets, configs) = (map(secrets), map(configs));
        self.call(|mut c| {
            let req = pb::DeployRequest {
                stack_json: json.clone(),
                secrets: secrets.clone(),
                configs: configs.clone(),
            };
            async move { c.deploy(req).await }
        })
        .await
    }

    pub async fn scale(&self, service: &str, replicas: u64) -> Result<pb::ScaleReply, Status> {
        self.call(|mut c| {
            let service = service.to_string();
            async move { c.scale(pb::ScaleRequest { service, replicas }).await }
        })
        .await
    }

    pub async fn services(&self) -> Result<Vec<pb::ServiceRow>, Status> {
        self.call(|mut c| async move { c.services(pb::ServicesRequest {}).await })
            .await
            .map(|r| r.services)
    }

    /// Every service as `STACK/SERVICE -> (image, desired replicas)`, read linearizably.
    pub async fn service_table(&self) -> Result<BTreeMap<String, (String, u64)>, Status> {
        Ok(self
            .services()
            .await?
            .into_iter()
            .map(|s| (format!("{}/{}", s.stack, s.name), (s.image, s.desired)))
            .collect())
    }

    pub async fn ps(&self, stack: &str) -> Result<Vec<pb::TaskRow>, Status> {
        self.call(|mut c| {
            let stack = stack.to_string();
            async move { c.ps(pb::PsRequest { stack, all: false }).await }
        })
        .await
        .map(|r| r.tasks)
    }

    pub async fn nodes(&self) -> Result<Vec<pb::NodeRow>, Status> {
        self.call(|mut c| async move { c.nodes(pb::NodesRequest {}).await })
            .await
            .map(|r| r.nodes)
    }

    pub async fn update_node(&self, req: pb::UpdateNodeRequest) -> Result<(), Status> {
        self.call(|mut c| {
            let req = req.clone();
            async move { c.update_node(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn rebalance(&self, service: &str) -> Result<pb::RebalanceReply, Status> {
        self.call(|mut c| {
            let service = service.to_string();
            async move { c.rebalance(pb::RebalanceRequest { service }).await }
        })
        .await
    }

    pub async fn rebalance_status(&self, service: &str) -> Result<pb::RebalanceReply, Status> {
        self.call(|mut c| {
            let service = service.to_string();
            async move { c.rebalance_status(pb::RebalanceRequest { service }).await }
        })
        .await
    }

    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusReply, Status> {
        self.call(|mut c| async move { c.cluster_status(pb::ClusterStatusRequest {}).await })
            .await
    }

    pub async fn remove_controller(&self, id: u64) -> Result<(), Status> {
        self.call(|mut c| async move {
            c.remove_controller(pb::RemoveControllerRequest { id })
                .await
        })
        .await
        .map(|_| ())
    }
}
