//! The CLI's connection to the cluster: tries each `--addr` in turn until one answers,
//! follows a follower's leader hint (at most [`MAX_HOPS`] times), and remembers the
//! controller that answered so later calls of the same command go straight to it.

use std::future::Future;
use std::time::Duration;

use shoal_proto::pb::control_client::ControlClient;
use shoal_proto::pb::image_push_client::ImagePushClient;
use shoal_proto::pb::pki_client::PkiClient;
use shoal_tls::ClientTls;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::args::Addrs;
use crate::error::ApiError;
use crate::leader::{leader_hint, no_leader};

/// Redirects followed from one starting address.
pub const MAX_HOPS: usize = 3;
/// How long a command waits for the controllers to elect a leader before giving up.
pub const ELECTION_WAIT: Duration = Duration::from_secs(15);
const ELECTION_POLL: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Until the reply's headers arrive (a log stream may then run for as long as it likes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Client {
    addrs: Vec<String>,
    /// The controller that answered last, tried first.
    current: Option<(String, Channel)>,
    /// The credentials to present (`Err`: why there are none, said at the first call).
    /// Plaintext (`Ok(None)`) only reaches the in-process fakes of unit tests.
    tls: Result<Option<ClientTls>, String>,
}

/// Why one address did not give an answer.
enum Miss {
    /// Nothing answered there: try the next address.
    Unreachable(String),
    /// A controller answered but cannot serve now: try the next address.
    Unavailable(anyhow::Error),
    /// No leader right now (an election is under way); the request was not acted on, so
    /// the whole call is retried for a while.
    NoLeader(anyhow::Error),
    /// A definite answer: stop.
    Refused(ApiError),
}

/// The message for a cluster none of whose addresses answered.
pub fn unreachable_message(addrs: &[String]) -> String {
    format!(
        "cannot reach the controller at {}: is `shoal up` running?",
        addrs.join(", ")
    )
}

/// `http://` unless the address already names a scheme.
pub fn endpoint_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl Client {
    /// A plaintext client, for the in-process fake controllers of unit tests only.
    #[cfg(test)]
    pub fn new(addrs: &Addrs) -> Client {
        Client {
            addrs: addrs.0.clone(),
            current: None,
            tls: Ok(None),
        }
    }

    /// A client presenting `tls` (or failing every call with the reason there is none).
    pub fn with_tls(addrs: &Addrs, tls: Result<ClientTls, String>) -> Client {
        Client {
            addrs: addrs.0.clone(),
            current: None,
            tls: tls.map(Some),
        }
    }

    /// Runs one request: `f` is called with a client for each controller tried.
    pub async fn call<T, F, Fut>(&mut self, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut(ControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_channel(Some(REQUEST_TIMEOUT), |ch| f(ControlClient::new(ch)))
            .await
    }

    /// Like [`Client::call`], for a request whose reply comes only once the client has
    /// sent its whole stream (`RestoreVolume`): the reply is not bounded by
    /// [`REQUEST_TIMEOUT`], only by the transport's own failures.
    pub async fn call_upload<T, F, Fut>(&mut self, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut(ControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_channel(None, |ch| f(ControlClient::new(ch)))
            .await
    }

    /// Like [`Client::call`], for the `Pki` service (tokens).
    pub async fn call_pki<T, F, Fut>(&mut self, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut(PkiClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_channel(Some(REQUEST_TIMEOUT), |ch| f(PkiClient::new(ch)))
            .await
    }

    /// Like [`Client::call`], for the `ImagePush` service's short calls (`Missing`).
    /// The leader serves it; a follower's hint is followed as for `Control`.
    pub async fn call_image_push<T, F, Fut>(&mut self, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut(ImagePushClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_channel(Some(REQUEST_TIMEOUT), |ch| f(ImagePushClient::new(ch)))
            .await
    }

    /// `ImagePush.Push`: like [`Client::call_upload`], the reply comes once every blob
    /// is sent, so no request timeout bounds it.
    pub async fn upload_image<T, F, Fut>(&mut self, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut(ImagePushClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_channel(None, |ch| f(ImagePushClient::new(ch)))
            .await
    }

    async fn call_channel<T, F, Fut>(
        &mut self,
        timeout: Option<Duration>,
        mut f: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + ELECTION_WAIT;
        let mut said = false;
        loop {
            match self.call_once(timeout, &mut f).await {
                Err(Miss::NoLeader(e)) if tokio::time::Instant::now() < deadline => {
                    if !said {
                        eprintln!("shoal: no controller leads right now; waiting for an election");
                        said = true;
                    }
                    tracing::debug!(error = %e, "no leader; retrying");
                    tokio::time::sleep(ELECTION_POLL).await;
                }
                Err(Miss::NoLeader(e)) | Err(Miss::Unavailable(e)) => return Err(e),
                Err(Miss::Unreachable(list)) => return Err(anyhow::anyhow!(list)),
                Err(Miss::Refused(e)) => return Err(e.into()),
                Ok(v) => return Ok(v),
            }
        }
    }

    /// One pass over the addresses. `Unreachable` carries the message naming them all.
    async fn call_once<T, F, Fut>(
        &mut self,
        timeout: Option<Duration>,
        f: &mut F,
    ) -> Result<T, Miss>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut candidates = Vec::new();
        if let Some((addr, _)) = &self.current {
            candidates.push(addr.clone());
        }
        for a in &self.addrs {
            if !candidates.contains(a) {
                candidates.push(a.clone());
            }
        }
        let mut unreachable = Vec::new();
        let mut unavailable = None;
        let mut no_leader = None;
        for addr in candidates {
            match self.call_at(addr, timeout, f).await {
                Ok(v) => return Ok(v),
                Err(Miss::Unreachable(a)) => unreachable.push(a),
                Err(Miss::Unavailable(e)) => unavailable = Some(e),
                Err(Miss::NoLeader(e)) => no_leader = Some(e),
                Err(Miss::Refused(e)) => return Err(Miss::Refused(e)),
            }
        }
        match (no_leader, unavailable) {
            (Some(e), _) => Err(Miss::NoLeader(e)),
            (None, Some(e)) => Err(Miss::Unavailable(e)),
            (None, None) => Err(Miss::Unreachable(unreachable_message(&unreachable))),
        }
    }

    async fn call_at<T, F, Fut>(
        &mut self,
        addr: String,
        timeout: Option<Duration>,
        f: &mut F,
    ) -> Result<T, Miss>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let origin = addr.clone();
        let mut target = addr;
        let mut hops = 0;
        loop {
            let channel = match self.channel(&target).await {
                Ok(c) => c,
                // A follower named a leader that is gone: its view is stale while the
                // survivors elect a new one.
                Err(Miss::Unreachable(gone)) if hops > 0 => {
                    return Err(Miss::NoLeader(anyhow::anyhow!(
                        "{origin} named {gone} as the leader, which does not answer: \
                         an election may be under way, try again in a few seconds"
                    )))
                }
                Err(e) => return Err(e),
            };
            let answer = match timeout {
                Some(t) => tokio::time::timeout(t, f(channel.clone())).await,
                None => Ok(f(channel.clone()).await),
            };
            let status = match answer {
                Ok(Ok(reply)) => {
                    self.current = Some((target, channel));
                    return Ok(reply.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    self.forget(&target);
                    return Err(Miss::Unavailable(anyhow::anyhow!(
                        "the controller at {target} did not answer within {}s",
                        timeout.unwrap_or(REQUEST_TIMEOUT).as_secs()
                    )));
                }
            };
            if let Some(leader) = leader_hint(&status) {
                if hops < MAX_HOPS && leader != target {
                    tracing::debug!(from = %target, to = %leader, "following the leader hint");
                    hops += 1;
                    target = leader;
                    continue;
                }
                return Err(Miss::Unavailable(anyhow::anyhow!(
                    "no leader found: {target} points to {leader} after {hops} redirects"
                )));
            }
            if no_leader(&status) {
                return Err(Miss::NoLeader(ApiError::from(status).into()));
            }
            if status.code() == Code::Unavailable {
                self.forget(&target);
                // A transport failure carries its cause; a controller's own answer does not.
                if std::error::Error::source(&status).is_some() {
                    tracing::debug!(addr = %target, error = %status, "controller unreachable");
                    return Err(Miss::Unreachable(target));
                }
                return Err(Miss::Unavailable(ApiError::from(status).into()));
            }
            return Err(Miss::Refused(status.into()));
        }
    }

    async fn channel(&mut self, addr: &str) -> Result<Channel, Miss> {
        if let Some((a, ch)) = &self.current {
            if a == addr {
                return Ok(ch.clone());
            }
        }
        let endpoint = Endpoint::from_shared(endpoint_uri(addr)).map_err(|e| {
            Miss::Refused(ApiError {
                code: Code::InvalidArgument,
                message: format!("`{addr}` is not a controller address: {e}"),
            })
        })?;
        let endpoint = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .user_agent(shoal_proto::protocol::user_agent())
            .map_err(|e| {
                Miss::Refused(ApiError {
                    code: Code::Internal,
                    message: format!("user agent: {e}"),
                })
            })?;
        let connected = match &self.tls {
            Ok(Some(tls)) => tls.connect(endpoint).await,
            Ok(None) => endpoint.connect().await,
            Err(why) => {
                return Err(Miss::Refused(ApiError {
                    code: Code::Unauthenticated,
                    message: why.clone(),
                }))
            }
        };
        connected.map_err(|e| {
            let chain = shoal_tls::join::error_chain(&e);
            tracing::debug!(addr, error = %chain, "connect failed");
            // A TLS refusal is an answer: retrying elsewhere will not change it.
            if chain.contains("certificate") || chain.contains("alert") {
                Miss::Refused(ApiError {
                    code: Code::Unauthenticated,
                    message: format!(
                        "TLS with {addr} failed ({chain}): are these credentials for this cluster, and still valid?"
                    ),
                })
            } else {
                Miss::Unreachable(addr.to_string())
            }
        })
    }

    fn forget(&mut self, addr: &str) {
        if self.current.as_ref().is_some_and(|(a, _)| a == addr) {
            self.current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(endpoint_uri("127.0.0.1:7370"), "http://127.0.0.1:7370");
        assert_eq!(endpoint_uri("https://c:7370"), "https://c:7370");
    }

    #[test]
    fn unreachable_names_every_address() {
        assert_eq!(
            unreachable_message(&["a:1".into(), "b:2".into()]),
            "cannot reach the controller at a:1, b:2: is `shoal up` running?"
        );
    }

    use crate::fake_control::{serve, Role};
    use tokio_util::sync::CancellationToken;

    async fn service_name(client: &mut Client) -> anyhow::Result<String> {
        let reply = client
            .call(|mut c| async move { c.services(shoal_proto::pb::ServicesRequest {}).await })
            .await?;
        Ok(reply.services[0].name.clone())
    }

    fn free_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn follows_the_leader_hint() {
        let stop = CancellationToken::new();
        let leader = serve(
            Role::Leader {
                name: "leader".into(),
            },
            stop.clone(),
        )
        .await;
        let follower = serve(
            Role::Follower {
                code: Code::FailedPrecondition,
                leader: Some(leader.clone()),
            },
            stop.clone(),
        )
        .await;
        let mut client = Client::new(&Addrs(vec![follower]));
        assert_eq!(service_name(&mut client).await.unwrap(), "leader");
        // The leader is remembered.
        assert_eq!(client.current.as_ref().map(|c| c.0.clone()), Some(leader));
        assert_eq!(service_name(&mut client).await.unwrap(), "leader");
        stop.cancel();
    }

    #[tokio::test]
    async fn waits_out_an_election_instead_of_failing() {
        let stop = CancellationToken::new();
        let refusals = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(3));
        let electing = serve(
            Role::Electing {
                name: "elected".into(),
                refusals: refusals.clone(),
            },
            stop.clone(),
        )
        .await;
        let mut client = Client::new(&Addrs(vec![electing]));
        assert_eq!(service_name(&mut client).await.unwrap(), "elected");
        assert_eq!(refusals.load(std::sync::atomic::Ordering::SeqCst), 0);
        stop.cancel();
    }

    #[tokio::test]
    async fn tries_each_address_in_turn() {
        let stop = CancellationToken::new();
        let up = serve(
            Role::Leader {
                name: "second".into(),
            },
            stop.clone(),
        )
        .await;
        let down = free_addr();
        let mut client = Client::new(&Addrs(vec![down, up]));
        assert_eq!(service_name(&mut client).await.unwrap(), "second");
        stop.cancel();
    }

    #[tokio::test]
    async fn redirects_are_bounded() {
        let stop = CancellationToken::new();
        // Four followers in a chain, each pointing at the next: more hops than allowed.
        let mut next = serve(Role::Leader { name: "far".into() }, stop.clone()).await;
        for _ in 0..=MAX_HOPS {
            next = serve(
                Role::Follower {
                    code: Code::Unavailable,
                    leader: Some(next),
                },
                stop.clone(),
            )
            .await;
        }
        let mut client = Client::new(&Addrs(vec![next]));
        let err = service_name(&mut client).await.unwrap_err();
        assert!(err.to_string().starts_with("no leader found"), "{err}");
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_FAILED);
        stop.cancel();
    }

    #[tokio::test]
    async fn refusals_are_final_and_keep_their_code() {
        let stop = CancellationToken::new();
        let leader = serve(Role::Leader { name: "l".into() }, stop.clone()).await;
        let other = serve(
            Role::Leader {
                name: "other".into(),
            },
            stop.clone(),
        )
        .await;
        let mut client = Client::new(&Addrs(vec![leader, other]));
        let err = client
            .call(|mut c| async move {
                c.scale(shoal_proto::pb::ScaleRequest {
                    service: "nope".into(),
                    replicas: 1,
                })
                .await
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "no service named nope");
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_USAGE);
        // A follower without a hint is not a leader: its refusal stands.
        let lost = serve(
            Role::Follower {
                code: Code::FailedPrecondition,
                leader: None,
            },
            stop.clone(),
        )
        .await;
        let mut client = Client::new(&Addrs(vec![lost]));
        let err = service_name(&mut client).await.unwrap_err();
        assert_eq!(err.to_string(), "not the leader");
        stop.cancel();
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable() {
        // Bind then drop to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut client = Client::new(&Addrs(vec![addr.clone()]));
        let err = client
            .call(|mut c| async move { c.services(shoal_proto::pb::ServicesRequest {}).await })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), unreachable_message(&[addr]));
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_FAILED);
    }
}
