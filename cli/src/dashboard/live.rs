//! Server-sent event streams: a page's live region re-rendered every second (sent only
//! when it changed), a service's log lines, and new events. Each runs as a task feeding
//! a bounded channel that is the response body; it ends when the browser goes away.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use maud::html;
use shoal_proto::pb;
use tokio::sync::mpsc;

use super::pages::{self, Page};
use super::source::{Kind, Shared, Source};

/// How often a live region is read again.
pub const TICK: Duration = Duration::from_secs(1);
/// A comment this often when nothing else was sent, so a browser gone away is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long to wait before asking again after a failure or an ended log stream.
const RETRY: Duration = Duration::from_secs(2);
/// Lines of each task a log page starts with.
const LOG_TAIL: i64 = 200;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One server-sent event carrying `data` (each of its lines a `data:` field).
pub fn event_bytes(data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 16);
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.trim_end_matches('\r'));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// The sending end of a stream.
pub struct Tx(mpsc::Sender<Bytes>);

impl Tx {
    /// Sends `data` as an event; false once the browser is gone.
    async fn event(&self, data: &str) -> bool {
        self.0.send(event_bytes(data)).await.is_ok()
    }

    async fn comment(&self) -> bool {
        self.0
            .send(Bytes::from_static(b": keep-alive\n\n"))
            .await
            .is_ok()
    }

    /// Waits `d`, or returns false at once when the browser leaves.
    async fn wait(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.0.closed() => false,
        }
    }
}

/// Runs `f` as the task behind a stream, returning the response body's receiver.
pub fn spawn<F, Fut>(f: F) -> mpsc::Receiver<Bytes>
where
    F: FnOnce(Tx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    // Reconnect after 2 s when the connection drops (the browser's default is 3 s).
    let _ = tx.try_send(Bytes::from_static(b"retry: 2000\n\n"));
    tokio::spawn(f(Tx(tx)));
    rx
}

/// `page`'s live region, re-rendered every [`TICK`] and sent when it changed.
pub async fn fragments(shared: Arc<Shared>, page: Page, tx: Tx) {
    let mut src = Source::new(shared.clone());
    let mut last = String::new();
    let mut quiet = Duration::ZERO;
    loop {
        let loaded = pages::load(&page, &mut src).await;
        if matches!(&loaded, Err(f) if f.kind == Kind::Credentials) {
            // The credentials are looked for again by a new source.
            src = Source::new(shared.clone());
        }
        let html = pages::fragment(&page, &loaded, now_ms(), &shared.addrs()).into_string();
        let alive = if html != last {
            last = html;
            quiet = Duration::ZERO;
            tx.event(&last).await
        } else if quiet >= KEEPALIVE {
            quiet = Duration::ZERO;
            tx.comment().await
        } else {
            quiet += TICK;
            true
        };
        if !alive || !tx.wait(TICK).await {
            return;
        }
    }
}

/// Log output cut into whole lines per task and stream, rendered as HTML lines.
#[derive(Default)]
pub struct Lines {
    partial: BTreeMap<(String, bool), (String, Vec<u8>)>,
}

impl Lines {
    /// The lines `chunk` completes.
    pub fn push(&mut self, chunk: &pb::LogLine) -> Vec<String> {
        let key = (chunk.task_id.clone(), chunk.stderr);
        let (source, buf) = self.partial.entry(key).or_insert_with(|| {
            let source = if chunk.task_id.is_empty() {
                "shoal".to_string()
            } else {
                format!("{}.{}@{}", chunk.service, chunk.slot, chunk.node)
            };
            (source, Vec::new())
        });
        buf.extend_from_slice(&chunk.data);
        let mut out = Vec::new();
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            out.push(render_line(source, &line[..line.len() - 1], chunk.stderr));
        }
        out
    }

    /// What is left of unfinished lines.
    pub fn finish(&mut self) -> Vec<String> {
        std::mem::take(&mut self.partial)
            .into_iter()
            .filter(|(_, (_, buf))| !buf.is_empty())
            .map(|((_, stderr), (source, buf))| render_line(&source, &buf, stderr))
            .collect()
    }
}

fn render_line(source: &str, bytes: &[u8], stderr: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches('\r');
    let class = if stderr { "line err" } else { "line" };
    html! { div class=(class) { span class="src" { (source) } " " (text) } }.into_string()
}

fn note_line(text: &str) -> String {
    html! { div class="line note" { "shoal: " (text) } }.into_string()
}

/// The service's logs (`Logs` with follow), then, when every task's stream ended (its
/// tasks were replaced), the new tasks' logs: the streams of tasks already shown are
/// skipped so no line is sent twice.
pub async fn logs(shared: Arc<Shared>, stack: String, name: String, tx: Tx) {
    let service = format!("{stack}/{name}");
    let mut src = Source::new(shared.clone());
    let mut ended: HashSet<String> = HashSet::new();
    let mut tail = LOG_TAIL;
    let mut said = String::new();
    loop {
        match src.logs(&service, tail).await {
            Err(f) => {
                if f.message != said {
                    said = f.message.clone();
                    if !tx
                        .event(&note_line(&format!("{}: {}", f.title(), f.message)))
                        .await
                    {
                        return;
                    }
                }
                if f.kind == Kind::Credentials {
                    src = Source::new(shared.clone());
                }
            }
            Ok(mut stream) => {
                let mut lines = Lines::default();
                let mut seen = HashSet::new();
                loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        _ = tokio::time::sleep(KEEPALIVE) => {
                            if !tx.comment().await { return; }
                            continue;
                        }
                    };
                    let Ok(Some(chunk)) = msg else { break };
                    if ended.contains(&chunk.task_id) {
                        continue;
                    }
                    seen.insert(chunk.task_id.clone());
                    for line in lines.push(&chunk) {
                        if !tx.event(&line).await {
                            return;
                        }
                    }
                }
                for line in lines.finish() {
                    if !tx.event(&line).await {
                        return;
                    }
                }
                ended.extend(seen.into_iter().filter(|t| !t.is_empty()));
                tail = -1;
            }
        }
        if !tx.wait(RETRY).await {
            return;
        }
    }
}

/// New events (`Events` with follow) from `since_ms`, each as a table row to append.
pub async fn events(shared: Arc<Shared>, stack: String, since_ms: u64, tx: Tx) {
    let mut src = Source::new(shared.clone());
    let mut since = since_ms;
    let mut said = String::new();
    loop {
        match src.events_stream(&stack, since, true).await {
            Err(f) => {
                if f.message != said {
                    said = f.message.clone();
                    let text = match f.kind {
                        Kind::Unavailable => "not available from this cluster version".to_string(),
                        _ => format!("{}: {}", f.title(), f.message),
                    };
                    let row = html! { tr class="note" { td colspan="5" { (text) } } };
                    if !tx.event(&row.into_string()).await {
                        return;
                    }
                }
                if f.kind == Kind::Credentials {
                    src = Source::new(shared.clone());
                }
                if f.kind == Kind::Unavailable {
                    // Asking again will not change the answer: keep the page as it is.
                    while tx.wait(KEEPALIVE).await {
                        if !tx.comment().await {
                            return;
                        }
                    }
                    return;
                }
            }
            Ok(mut stream) => loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tokio::time::sleep(KEEPALIVE) => {
                        if !tx.comment().await { return; }
                        continue;
                    }
                };
                let Ok(Some(e)) = msg else { break };
                since = since.max(e.time_ms + 1);
                if !tx.event(&pages::event_row(&e).into_string()).await {
                    return;
                }
            },
        }
        if !tx.wait(RETRY).await {
            return;
        }
    }
}
