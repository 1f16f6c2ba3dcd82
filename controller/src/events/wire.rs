//! The domain [`Event`] on the wire (`pb::Event`).

use shoal_proto::pb;

use super::Event;

impl From<Event> for pb::Event {
    fn from(e: Event) -> pb::Event {
        pb::Event {
            time_ms: e.time_ms,
            kind: e.kind,
            stack: e.stack,
            service: e.service,
            node: e.node,
            task: e.task,
            message: e.message,
            index: e.index,
            seq: e.seq,
        }
    }
}
