//! Log requests from the controller: stream each asked-for task's container output as
//! [`LogChunk`]s, ending every task with an `eof` chunk. Requests run concurrently and can
//! be cancelled by id.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::model::{LogChunk, LogRequest};
use crate::runtime::ContainerRuntime;

/// The log requests of one session.
pub struct LogStreams {
    runtime: Arc<dyn ContainerRuntime>,
    out: mpsc::Sender<LogChunk>,
    active: HashMap<u64, CancellationToken>,
}

impl LogStreams {
    pub fn new(runtime: Arc<dyn ContainerRuntime>, out: mpsc::Sender<LogChunk>) -> LogStreams {
        LogStreams {
            runtime,
            out,
            active: HashMap::new(),
        }
    }

    /// Serve `req`; `containers` maps task ids to their container on this node.
    pub fn start(&mut self, req: LogRequest, containers: &BTreeMap<String, String>) {
        self.active.retain(|_, t| !t.is_cancelled());
        let token = CancellationToken::new();
        if let Some(old) = self.active.insert(req.request_id, token.clone()) {
            old.cancel();
        }
        let mut tasks = Vec::new();
        for task_id in &req.task_ids {
            let runtime = self.runtime.clone();
            let out = self.out.clone();
            let container = containers.get(task_id).cloned();
            let (request_id, task_id, follow, tail) =
                (req.request_id, task_id.clone(), req.follow, req.tail);
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = stream_task(&*runtime, &out, request_id, &task_id, container, follow, tail) => {}
                }
            }));
        }
        // The request is over when all its tasks are.
        tokio::spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
            token.cancel();
        });
    }

    pub fn cancel(&mut self, request_id: u64) {
        if let Some(t) = self.active.remove(&request_id) {
            t.cancel();
        }
    }

    pub fn cancel_all(&mut self) {
        for (_, t) in self.active.drain() {
            t.cancel();
        }
    }
}

impl Drop for LogStreams {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

async fn stream_task(
    runtime: &dyn ContainerRuntime,
    out: &mpsc::Sender<LogChunk>,
    request_id: u64,
    task_id: &str,
    container: Option<String>,
    follow: bool,
    tail: Option<u64>,
) {
    let chunk = |data: Bytes, stderr: bool, eof: bool, error: Option<String>| LogChunk {
        request_id,
        task_id: task_id.to_string(),
        data,
        stderr,
        eof,
        error,
    };
    let Some(container) = container else {
        let error = format!("task {task_id} has no container on this node");
        let _ = out
            .send(chunk(Bytes::new(), false, true, Some(error)))
            .await;
        return;
    };
    let mut error = None;
    match runtime.logs(&container, follow, tail).await {
        Ok(mut frames) => {
            while let Some(frame) = frames.next().await {
                match frame {
                    Ok(f) => {
                        if out
                            .send(chunk(f.data, f.stderr, false, None))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        error = Some(format!("read logs of task {task_id}: {e}"));
                        break;
                    }
                }
            }
        }
        Err(e) => error = Some(format!("read logs of task {task_id}: {e}")),
    }
    debug!(request_id, task = %task_id, "log stream ended");
    let _ = out.send(chunk(Bytes::new(), false, true, error)).await;
}
