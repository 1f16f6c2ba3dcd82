//! The dashboard's side of the cluster: the RPCs each page reads, through the CLI's own
//! [`Client`] (credentials, addresses, leader following), and what a failure means for
//! the person looking at the page.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_proto::pb;
use tonic::Code;

use crate::args::GlobalArgs;
use crate::client::Client;
use crate::error::ApiError;

/// How long a live page reuses a `Stats` reply: its history moves a point a minute, and
/// the agents measure every few seconds.
const STATS_TTL: Duration = Duration::from_secs(5);

/// What every request and stream starts from: the global flags, and the client of the
/// last successful call (whose remembered leader the next call tries first).
pub struct Shared {
    global: GlobalArgs,
    /// `None` while the credentials do not resolve: they are looked for again at each
    /// request, so running `shoal up` or `shoal login` fixes an open dashboard.
    base: Mutex<Option<Client>>,
}

impl Shared {
    pub fn new(global: GlobalArgs) -> Shared {
        Shared {
            global,
            base: Mutex::new(None),
        }
    }

    /// Calls go through `client` (the plaintext client of the unit tests' fakes).
    #[cfg(test)]
    pub fn with_client(global: GlobalArgs, client: Client) -> Shared {
        Shared {
            global,
            base: Mutex::new(Some(client)),
        }
    }

    /// `--credentials`, as given.
    pub fn credentials(&self) -> Option<&Path> {
        self.global.credentials.as_deref()
    }

    /// The addresses the dashboard was told (for the messages).
    pub fn addrs(&self) -> String {
        self.global.addr.0.join(",")
    }

    /// A client like every command's ([`crate::commands::Ctx`]), sharing the last good
    /// one's connection.
    pub fn client(&self) -> Client {
        let mut base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = &*base {
            return c.clone();
        }
        let resolved = crate::login::resolve(self.global.credentials.as_deref());
        let ok = resolved.is_ok();
        let client = crate::commands::Ctx::with(&self.global, resolved).client;
        if ok {
            *base = Some(client.clone());
        }
        client
    }

    fn remember(&self, client: &Client) {
        let mut base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        if base.is_some() {
            *base = Some(client.clone());
        }
    }
}

/// Why a read failed, sorted by what the person must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// No credentials, or the cluster refused them (TLS, UNAUTHENTICATED, PERMISSION_DENIED).
    Credentials,
    /// No controller answered, or none leads.
    Unreachable,
    /// The controllers do not have this RPC (UNIMPLEMENTED): an older version.
    Unavailable,
    /// No such stack or service.
    NotFound,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl Failure {
    pub fn not_found(message: String) -> Failure {
        Failure {
            kind: Kind::NotFound,
            message,
        }
    }

    /// Sorts an error of [`Client::call`].
    pub fn from_error(err: &anyhow::Error) -> Failure {
        let api = err.chain().find_map(|c| c.downcast_ref::<ApiError>());
        let Some(api) = api else {
            // The client's own errors: nothing answered, no leader, a timeout.
            return Failure {
                kind: Kind::Unreachable,
                message: format!("{err:#}"),
            };
        };
        let kind = match api.code {
            Code::Unauthenticated | Code::PermissionDenied => Kind::Credentials,
            Code::Unimplemented => Kind::Unavailable,
            Code::NotFound => Kind::NotFound,
            Code::Unavailable | Code::DeadlineExceeded => Kind::Unreachable,
            _ => Kind::Other,
        };
        Failure {
            kind,
            message: api.message.clone(),
        }
    }

    /// A heading for the page that cannot be shown.
    pub fn title(&self) -> &'static str {
        match self.kind {
            Kind::Credentials => "The dashboard cannot sign in to the cluster",
            Kind::Unreachable => "The cluster does not answer",
            Kind::Unavailable => "Not available from this cluster version",
            Kind::NotFound => "Not found",
            Kind::Other => "The cluster refused the request",
        }
    }

    /// What to do about it.
    pub fn advice(&self, addrs: &str) -> String {
        match self.kind {
            Kind::Credentials => "Run `shoal up` on this machine (it saves admin credentials for the CLI), \
                 or start `shoal dashboard` with --credentials DIR (or SHOAL_CREDENTIALS=DIR) naming a \
                 directory that holds this cluster's admin ca.pem, cert.pem and key.pem, or run \
                 `shoal login --addr ADDR --credentials DIR` once. `shoal controller --init` writes \
                 admin credentials to DATA_DIR/admin."
                .to_string(),
            Kind::Unreachable => format!(
                "Check that the controllers run and that --addr (or SHOAL_ADDR) names them; the \
                 dashboard asks {addrs}. This page retries every second."
            ),
            Kind::Unavailable => "Upgrade the controllers to this CLI's version.".to_string(),
            Kind::NotFound => "Check the name on the overview page.".to_string(),
            Kind::Other => "The message above is the controller's.".to_string(),
        }
    }

    /// One line for the terminal.
    pub fn explain_line(&self, addrs: &str) -> String {
        format!("{}: {}. {}", self.title(), self.message, self.advice(addrs))
    }
}

/// A secondary part of a page: its data, or why it is missing.
pub type Section<T> = Result<T, Failure>;

/// One request's (or one live stream's) connection to the cluster.
pub struct Source {
    shared: Arc<Shared>,
    client: Client,
    /// The last `Stats` reply, by the service it was asked for.
    stats: Option<(Instant, String, Section<pb::StatsReply>)>,
}

impl Source {
    pub fn new(shared: Arc<Shared>) -> Source {
        let client = shared.client();
        Source {
            shared,
            client,
            stats: None,
        }
    }

    /// A cheap read that fails the way every page would.
    pub async fn check(&mut self) -> Result<(), Failure> {
        self.nodes().await.map(|_| ())
    }

    fn done<T>(&mut self, result: anyhow::Result<T>) -> Result<T, Failure> {
        match result {
            Ok(v) => {
                self.shared.remember(&self.client);
                Ok(v)
            }
            Err(e) => {
                let failure = Failure::from_error(&e);
                if failure.kind == Kind::Credentials {
                    // Look for credentials again on the next request.
                    *self.shared.base.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                Err(failure)
            }
        }
    }

    pub async fn nodes(&mut self) -> Result<Vec<pb::NodeRow>, Failure> {
        let r = self
            .client
            .call(|mut c| async move { c.nodes(pb::NodesRequest {}).await })
            .await;
        self.done(r).map(|r| r.nodes)
    }

    pub async fn services(&mut self) -> Result<Vec<pb::ServiceRow>, Failure> {
        let r = self
            .client
            .call(|mut c| async move { c.services(pb::ServicesRequest {}).await })
            .await;
        self.done(r).map(|r| r.services)
    }

    pub async fn tasks(&mut self, stack: &str, all: bool) -> Result<Vec<pb::TaskRow>, Failure> {
        let req = pb::PsRequest {
            stack: stack.to_string(),
            all,
        };
        let r = self
            .client
            .call(|mut c| {
                let req = req.clone();
                async move { c.ps(req).await }
            })
            .await;
        self.done(r).map(|r| r.tasks)
    }

    pub async fn cluster(&mut self) -> Result<pb::ClusterStatusReply, Failure> {
        let r = self
            .client
            .call(|mut c| async move { c.cluster_status(pb::ClusterStatusRequest {}).await })
            .await;
        self.done(r)
    }

    /// `Stats` with the last hour, for `service` (empty: every service), reused for
    /// [`STATS_TTL`].
    pub async fn stats(&mut self, service: &str) -> Section<pb::StatsReply> {
        if let Some((at, s, reply)) = &self.stats {
            if s == service && at.elapsed() < STATS_TTL {
                return reply.clone();
            }
        }
        let req = pb::StatsRequest {
            service: service.to_string(),
            history: true,
        };
        let r = self
            .client
            .call(|mut c| {
                let req = req.clone();
                async move { c.stats(req).await }
            })
            .await;
        let reply = self.done(r);
        self.stats = Some((Instant::now(), service.to_string(), reply.clone()));
        reply
    }

    /// The events kept (no follow), oldest first, at most the last `limit`.
    pub async fn events(&mut self, stack: &str, limit: usize) -> Section<Vec<pb::Event>> {
        let stream = self.events_stream(stack, 0, false).await?;
        let mut stream = stream;
        let mut out = std::collections::VecDeque::new();
        loop {
            match stream.message().await {
                Ok(Some(e)) => {
                    if out.len() == limit {
                        out.pop_front();
                    }
                    out.push_back(e);
                }
                Ok(None) => break,
                Err(status) => return Err(Failure::from_error(&ApiError::from(status).into())),
            }
        }
        Ok(out.into())
    }

    pub async fn events_stream(
        &mut self,
        stack: &str,
        since_ms: u64,
        follow: bool,
    ) -> Section<tonic::Streaming<pb::Event>> {
        let req = pb::EventsRequest {
            since_ms,
            stack: stack.to_string(),
            follow,
        };
        let r = self
            .client
            .call(|mut c| {
                let req = req.clone();
                async move { c.events(req).await }
            })
            .await;
        self.done(r)
    }

    pub async fn logs(
        &mut self,
        service: &str,
        tail: i64,
    ) -> Section<tonic::Streaming<pb::LogLine>> {
        let req = pb::LogsRequest {
            service: service.to_string(),
            follow: true,
            tail,
        };
        let r = self
            .client
            .call(|mut c| {
                let req = req.clone();
                async move { c.logs(req).await }
            })
            .await;
        self.done(r)
    }
}
