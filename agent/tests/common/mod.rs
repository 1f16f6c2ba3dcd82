//! A stand-in controller for the agent's integration tests: real gRPC on 127.0.0.1,
//! and an assignment builder. Each test crate uses a part of it (`#[allow(dead_code)]`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use shoal_proto::pb;
use shoal_proto::pb::agent_message::Msg;
use shoal_proto::pb::agent_session_server::{AgentSession, AgentSessionServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

pub type ToAgent = mpsc::Sender<Result<pb::ControllerMessage, Status>>;
pub type Out = Pin<Box<dyn Stream<Item = Result<pb::ControllerMessage, Status>> + Send>>;

/// A controller: records what agents send; `to_agent` feeds the newest session.
#[derive(Clone, Default)]
pub struct Leader {
    pub got: Arc<Mutex<Vec<Msg>>>,
    pub to_agent: Arc<Mutex<Option<ToAgent>>>,
}

impl Leader {
    /// What the agents sent so far that `pick` keeps, in order.
    #[allow(dead_code)]
    pub fn sent<T>(&self, pick: impl Fn(&Msg) -> Option<T>) -> Vec<T> {
        self.got.lock().unwrap().iter().filter_map(pick).collect()
    }
}

#[tonic::async_trait]
impl AgentSession for Leader {
    type SessionStream = Out;
    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Out>, Status> {
        let mut inbound = req.into_inner();
        let got = self.got.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(m) = m.msg {
                    got.lock().unwrap().push(m);
                }
            }
        });
        let (tx, rx) = mpsc::channel(16);
        *self.to_agent.lock().unwrap() = Some(tx);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

pub async fn serve<S: AgentSession>(svc: S, stop: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentSessionServer::new(svc))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned()),
    );
    addr
}

/// A replica of `STACK/SERVICE` (slot 1, image `img:1`) that should run.
pub fn assignment(id: &str, stack: &str, service: &str) -> shoal_agent::model::Assignment {
    use shoal_agent::runtime::TaskIdentity;
    shoal_agent::model::Assignment {
        task: TaskIdentity {
            task_id: id.into(),
            stack: stack.into(),
            service: service.into(),
            slot: 1,
            generation: 1,
        },
        desired: shoal_proto::task::Desired::Running,
        ended: false,
        gpus: Vec::new(),
        secrets: Vec::new(),
        volumes: Vec::new(),
        spec: Arc::new(shoal_proto::spec::ServiceSpec {
            name: service.into(),
            image: "img:1".into(),
            ..Default::default()
        }),
    }
}

/// An `Assignments` message of version `version`: `shop/web` with `spec` at generation
/// `generation` in each of `slots` (task ids `t<slot>`).
#[allow(dead_code)]
pub fn web_assignments(
    version: u64,
    spec: &shoal_proto::spec::ServiceSpec,
    generation: u64,
    slots: &[u64],
) -> pb::ControllerMessage {
    let spec_json = serde_json::to_vec(spec).expect("a spec in JSON");
    pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::Assignments(pb::Assignments {
            version,
            mesh: None,
            remove_volumes: Vec::new(),
            tasks: slots
                .iter()
                .map(|slot| pb::Assignment {
                    task_id: format!("t{slot}"),
                    stack: "shop".into(),
                    service: "web".into(),
                    slot: *slot,
                    desired: "running".into(),
                    generation,
                    spec_json: spec_json.clone(),
                    ended: false,
                    gpus: Vec::new(),
                    secrets: Vec::new(),
                    volumes: Vec::new(),
                })
                .collect(),
            ..Default::default()
        })),
    }
}

/// Polls `f` every 50 ms until it gives `Some`, at most `timeout` on tokio's clock (a
/// test with paused time advances it); panics naming `what` otherwise.
pub async fn eventually<T>(
    timeout: std::time::Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not within {timeout:?}: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// [`eventually`] for a condition.
pub async fn until(timeout: std::time::Duration, what: &str, mut done: impl FnMut() -> bool) {
    eventually(timeout, what, || done().then_some(())).await
}
