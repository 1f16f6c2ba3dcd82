//! Routes log chunks coming up agent sessions to the CLI streams that asked for them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;

/// One piece of a container's output, as an agent sent it.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub task_id: String,
    pub data: Vec<u8>,
    pub stderr: bool,
    pub eof: bool,
    pub error: String,
}

#[derive(Debug, Default)]
pub struct LogRouter {
    next: AtomicU64,
    routes: Mutex<HashMap<u64, mpsc::Sender<Chunk>>>,
}

impl LogRouter {
    /// A new request id and the receiver its chunks arrive on.
    pub fn open(&self) -> (u64, mpsc::Receiver<Chunk>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(256);
        self.lock().insert(id, tx);
        (id, rx)
    }

    pub fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Hands a chunk to its request; false when nobody listens any more.
    pub async fn deliver(&self, id: u64, chunk: Chunk) -> bool {
        let tx = self.lock().get(&id).cloned();
        match tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Chunk>>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }
}
