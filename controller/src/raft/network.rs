//! The sending side of the Raft RPCs: openraft's [`RaftNetworkFactory`] over the
//! `RaftPeer` gRPC service.
//!
//! One tonic [`Channel`] per peer, created lazily (`connect_lazy`: nothing is dialed until
//! the first RPC, and tonic reconnects on its own after a failure) and reused by every
//! replication stream openraft opens to that peer. A peer that changes its address gets
//! a new channel.
//!
//! Snapshots go through openraft's default chunked transport (`install_snapshot` per
//! chunk of `Config::snapshot_max_chunk_size` bytes), each chunk one gRPC message.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesResponse, InstallSnapshotResponse, VoteResponse};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_proto::pb::raft_peer_client::RaftPeerClient;
use shoal_proto::pb::RaftPayload;
use tonic::transport::{Channel, Endpoint};

use super::codec::{self, AppendRequest, SnapshotRequest, VoteReq};
use super::{RaftNodeId, TypeConfig};
use crate::faults::Faults;

/// Largest Raft message accepted or sent (an append of many entries, a snapshot chunk).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// When each peer last answered an RPC from this member (what `cluster status` calls
/// reachable), and the wire protocol it answered with (0: a shoal from before protocols
/// were numbered). Only a leader talks to every peer, so only its view is complete.
#[derive(Debug, Clone, Default)]
pub struct Contacts(Arc<Mutex<HashMap<RaftNodeId, (Instant, u32)>>>);

impl Contacts {
    fn record(&self, peer: RaftNodeId, protocol: u32) {
        self.lock().insert(peer, (Instant::now(), protocol));
    }

    /// Whether `peer` answered within `within`.
    pub fn recent(&self, peer: RaftNodeId, within: Duration) -> bool {
        self.lock()
            .get(&peer)
            .is_some_and(|(t, _)| t.elapsed() < within)
    }

    /// The protocol `peer` last answered with, if it answered this member.
    pub fn protocol(&self, peer: RaftNodeId) -> Option<u32> {
        self.lock().get(&peer).map(|(_, p)| *p)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RaftNodeId, (Instant, u32)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The protocol a Raft reply's metadata names; 0 when it names none (an older shoal).
fn answered_protocol(metadata: &tonic::metadata::MetadataMap) -> u32 {
    metadata
        .get(shoal_proto::protocol::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Makes the per-peer clients openraft asks for; owns the reused channels.
#[derive(Default)]
pub struct Network {
    /// Per peer: the address its channel dials, and the channel.
    channels: HashMap<RaftNodeId, (String, Channel)>,
    /// When isolated, every RPC fails as unreachable (tests' partitions).
    faults: Arc<Faults>,
    contacts: Contacts,
    /// The controller's client TLS (its controller certificate); `None` dials plaintext,
    /// which only in-process tests of the Raft RPCs themselves do.
    tls: Option<shoal_tls::ClientTls>,
}

impl Network {
    pub fn new() -> Network {
        Network::default()
    }

    pub fn with_faults(faults: Arc<Faults>, contacts: Contacts) -> Network {
        Network {
            channels: HashMap::new(),
            faults,
            contacts,
            tls: None,
        }
    }

    /// Dials peers over mutual TLS with `tls`.
    pub fn with_tls(mut self, tls: Option<shoal_tls::ClientTls>) -> Network {
        self.tls = tls;
        self
    }

    fn channel(&mut self, target: RaftNodeId, addr: &str) -> Result<Channel, String> {
        if let Some((known, channel)) = self.channels.get(&target) {
            if known == addr {
                return Ok(channel.clone());
            }
        }
        let endpoint = endpoint(addr)?;
        let channel = match &self.tls {
            Some(tls) => tls.connect_lazy(endpoint),
            None => endpoint.connect_lazy(),
        };
        self.channels
            .insert(target, (addr.to_string(), channel.clone()));
        Ok(channel)
    }
}

/// The gRPC endpoint of a peer advertised as `host:port` (or a full `http(s)://` URI).
fn endpoint(addr: &str) -> Result<Endpoint, String> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| format!("peer address {addr:?} is not a valid address: {e}"))?
        .user_agent(shoal_proto::protocol::user_agent())
        .map_err(|e| format!("user agent: {e}"))?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: RaftNodeId, node: &BasicNode) -> PeerClient {
        let client = self.channel(target, &node.addr).map(|channel| {
            RaftPeerClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        });
        if let Err(e) = &client {
            tracing::warn!(target, error = %e, "raft peer has an unusable address");
        }
        PeerClient {
            target,
            node: node.clone(),
            client,
            faults: self.faults.clone(),
            contacts: self.contacts.clone(),
        }
    }
}

/// The connection to one peer.
pub struct PeerClient {
    target: RaftNodeId,
    node: BasicNode,
    /// `Err` when the peer's address does not parse: every RPC reports it unreachable.
    client: Result<RaftPeerClient<Channel>, String>,
    faults: Arc<Faults>,
    contacts: Contacts,
}

/// A message as an error type, for openraft's `Unreachable`/`NetworkError` constructors.
#[derive(Debug, thiserror::Error)]
#[error("raft peer {target} ({addr}): {msg}")]
struct PeerError {
    target: RaftNodeId,
    addr: String,
    msg: String,
}

impl PeerClient {
    fn error(&self, msg: impl Into<String>) -> PeerError {
        PeerError {
            target: self.target,
            addr: self.node.addr.clone(),
            msg: msg.into(),
        }
    }

    fn client<E: Error>(
        &self,
    ) -> Result<RaftPeerClient<Channel>, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>>>
    {
        if self.faults.is_isolated() {
            return Err(RPCError::Unreachable(Unreachable::new(
                &self.error("this controller is partitioned"),
            )));
        }
        match &self.client {
            Ok(c) => Ok(c.clone()),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(
                &self.error(e.clone()),
            ))),
        }
    }

    fn request<T: Serialize, E: Error>(
        &self,
        what: &'static str,
        rpc: &T,
        option: &RPCOption,
    ) -> Result<
        tonic::Request<RaftPayload>,
        RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>>,
    > {
        let payload = codec::encode(what, rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&self.error(e.to_string()))))?;
        let mut request = tonic::Request::new(payload);
        request.set_timeout(option.hard_ttl());
        Ok(request)
    }

    /// Maps the gRPC outcome to openraft's: transport failures are `Unreachable` (openraft
    /// backs off) or `NetworkError` (it retries); a remote Raft error is `RemoteError`.
    fn reply<R, E>(
        &self,
        what: &'static str,
        reply: Result<tonic::Response<RaftPayload>, tonic::Status>,
    ) -> Result<R, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>>>
    where
        R: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let payload = match reply {
            Ok(r) => {
                self.contacts
                    .record(self.target, answered_protocol(r.metadata()));
                r.into_inner()
            }
            Err(status) => {
                let err = self.error(format!("{what}: {}: {}", status.code(), status.message()));
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                        RPCError::Unreachable(Unreachable::new(&err))
                    }
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
            }
        };
        let decoded: Result<R, RaftError<RaftNodeId, E>> = codec::decode(what, &payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&self.error(e.to_string()))))?;
        decoded.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

/// Waits before the i-th retry to an unreachable peer: 50 ms doubling, capped at 1 s, so
/// a restarted member is found again quickly and a dead one is not hammered.
pub fn backoff_delays() -> impl Iterator<Item = Duration> + Send + 'static {
    (0u32..).map(|i| Duration::from_millis((50u64 << i.min(5)).min(1_000)))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(backoff_delays())
    }

    async fn append_entries(
        &mut self,
        rpc: AppendRequest,
        option: RPCOption,
    ) -> Result<
        AppendEntriesResponse<RaftNodeId>,
        RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId>>,
    > {
        let mut client = self.client()?;
        let request = self.request("append_entries", &rpc, &option)?;
        let reply = client.append_entries(request).await;
        self.reply("append_entries", reply)
    }

    async fn install_snapshot(
        &mut self,
        rpc: SnapshotRequest,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftNodeId>,
        RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, InstallSnapshotError>>,
    > {
        let mut client = self.client()?;
        let request = self.request("install_snapshot", &rpc, &option)?;
        let reply = client.install_snapshot(request).await;
        self.reply("install_snapshot", reply)
    }

    async fn vote(
        &mut self,
        rpc: VoteReq,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftNodeId>, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId>>>
    {
        let mut client = self.client()?;
        let request = self.request("vote", &rpc, &option)?;
        let reply = client.vote(request).await;
        self.reply("vote", reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_second() {
        let d: Vec<u64> = backoff_delays()
            .take(8)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(d, vec![50, 100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn endpoints_from_advertised_addresses() {
        assert_eq!(
            endpoint("10.0.0.1:7370").unwrap().uri().to_string(),
            "http://10.0.0.1:7370/"
        );
        assert_eq!(
            endpoint("https://ctl-1:7370").unwrap().uri().to_string(),
            "https://ctl-1:7370/"
        );
        assert!(endpoint("not an address").is_err());
    }

    #[tokio::test]
    async fn channels_are_reused_per_peer() {
        let mut net = Network::new();
        let _ = net.new_client(2, &BasicNode::new("127.0.0.1:1")).await;
        let _ = net.new_client(2, &BasicNode::new("127.0.0.1:1")).await;
        assert_eq!(net.channels.len(), 1);
        let _ = net.new_client(2, &BasicNode::new("127.0.0.1:2")).await;
        assert_eq!(net.channels[&2].0, "127.0.0.1:2");
    }

    #[tokio::test]
    async fn unreachable_peer_is_reported_unreachable() {
        let mut net = Network::new();
        // Port 1 on localhost: nothing listens there.
        let mut client = net.new_client(2, &BasicNode::new("127.0.0.1:1")).await;
        let rpc = VoteReq::new(openraft::Vote::new(1, 1), None);
        let err = client
            .vote(rpc, RPCOption::new(Duration::from_secs(2)))
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn bad_address_is_unreachable() {
        let mut net = Network::new();
        let mut client = net.new_client(3, &BasicNode::new("not an address")).await;
        let rpc = VoteReq::new(openraft::Vote::new(1, 1), None);
        let err = client
            .vote(rpc, RPCOption::new(Duration::from_secs(1)))
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    }
}
