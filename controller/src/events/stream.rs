//! The `Events` RPC's stream: the kept events that match, in order, then (following)
//! each new one as it is pushed, until the client goes or the controller shuts down.
//!
//! The reader keeps its position in the ring ([`super::EventLog`]); when the ring moved
//! past it (a client reading slower than events come), it sends one `events.missed`
//! event saying how many were lost, then goes on from the oldest kept.

use std::sync::Arc;

use shoal_proto::pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{Event, EventLog};

/// Events read from the ring under one lock.
const BATCH: usize = 256;
/// Events queued for the client before the reader waits for it.
const BUFFER: usize = 256;

/// Which events a client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// At or after this time (ms since the epoch); 0: all.
    pub since_ms: u64,
    /// Only this stack's events (node and controller events have none); empty: all.
    pub stack: String,
}

impl Filter {
    pub fn matches(&self, e: &Event) -> bool {
        e.time_ms >= self.since_ms && (self.stack.is_empty() || e.stack == self.stack)
    }
}

impl From<&pb::EventsRequest> for Filter {
    fn from(req: &pb::EventsRequest) -> Filter {
        Filter {
            since_ms: req.since_ms,
            stack: req.stack.clone(),
        }
    }
}

/// The stream of events for one client; its reader runs until the client goes, the
/// events are sent (not following) or `shutdown`.
pub fn open(
    log: Arc<EventLog>,
    filter: Filter,
    follow: bool,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Result<pb::Event, Status>> {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(read(log, filter, follow, shutdown, tx));
    rx
}

/// The event telling a reader that `n` events were dropped before it read them.
pub fn missed(n: u64, capacity: usize, now_ms: u64) -> Event {
    Event {
        time_ms: now_ms,
        kind: "events.missed".into(),
        message: format!(
            "{n} events were dropped before they could be sent: this reader fell behind the last {capacity} events the controller keeps"
        ),
        ..Default::default()
    }
}

async fn read(
    log: Arc<EventLog>,
    filter: Filter,
    follow: bool,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Result<pb::Event, Status>>,
) {
    // Subscribed before the first read: nothing pushed in between goes unnoticed.
    let mut pushed = log.subscribe();
    let mut next = log.oldest();
    loop {
        loop {
            let read = log.read(next, BATCH);
            if read.missed > 0 {
                let marker = missed(read.missed, log.capacity(), crate::api::control::now_ms());
                if !send(&tx, marker, &shutdown).await {
                    return;
                }
            }
            next = read.next;
            if read.events.is_empty() {
                break;
            }
            for e in read.events.into_iter().filter(|e| filter.matches(e)) {
                if !send(&tx, e, &shutdown).await {
                    return;
                }
            }
        }
        if !follow {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tx.closed() => return,
            changed = pushed.changed() => if changed.is_err() { return },
        }
    }
}

/// Sends one event; false when the client went or the controller stops.
async fn send(
    tx: &mpsc::Sender<Result<pb::Event, Status>>,
    e: Event,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        sent = tx.send(Ok(e.into())) => sent.is_ok(),
        _ = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, time_ms: u64, stack: &str) -> Event {
        Event {
            kind: kind.into(),
            time_ms,
            stack: stack.into(),
            ..Default::default()
        }
    }

    async fn kinds(rx: &mut mpsc::Receiver<Result<pb::Event, Status>>, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let e = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("an event within 5 s")
                .expect("the stream is open")
                .expect("an event, not an error");
            out.push(e.kind);
        }
        out
    }

    #[tokio::test]
    async fn filters_then_follows_then_ends_on_shutdown() {
        let log = Arc::new(EventLog::with_capacity(100));
        log.push_entry(
            1,
            vec![ev("a", 10, "web"), ev("b", 20, "db"), ev("c", 30, "web")],
        );
        let stop = CancellationToken::new();
        let filter = Filter {
            since_ms: 15,
            stack: "web".into(),
        };
        let mut rx = open(log.clone(), filter, true, stop.clone());
        assert_eq!(kinds(&mut rx, 1).await, ["c"]);
        log.push_entry(2, vec![ev("d", 40, "db"), ev("e", 50, "web")]);
        log.push_entry(3, vec![ev("f", 60, "web")]);
        assert_eq!(kinds(&mut rx, 2).await, ["e", "f"]);
        stop.cancel();
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await;
        assert!(matches!(end, Ok(None)), "the stream ends on shutdown");
    }

    #[tokio::test]
    async fn without_follow_ends_after_the_kept_events() {
        let log = Arc::new(EventLog::with_capacity(100));
        log.push_entry(1, vec![ev("a", 10, ""), ev("b", 20, "")]);
        let mut rx = open(log, Filter::default(), false, CancellationToken::new());
        assert_eq!(kinds(&mut rx, 2).await, ["a", "b"]);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_told() {
        let log = Arc::new(EventLog::with_capacity(4));
        let stop = CancellationToken::new();
        let mut rx = open(log.clone(), Filter::default(), true, stop.clone());
        log.push_entry(1, vec![ev("e0", 0, "")]);
        assert_eq!(kinds(&mut rx, 1).await, ["e0"]);
        // Nine more while the reader waits: the ring keeps the last four.
        for i in 1..10u64 {
            log.push_entry(i + 1, vec![ev(&format!("e{i}"), i, "")]);
        }
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("open")
            .expect("an event");
        assert_eq!(first.kind, "events.missed");
        assert_eq!(
            first.message,
            "5 events were dropped before they could be sent: this reader fell behind the last 4 events the controller keeps"
        );
        assert_eq!(kinds(&mut rx, 4).await, ["e6", "e7", "e8", "e9"]);
        stop.cancel();
    }
}
