//! The ring of recent events every controller keeps in memory.
//!
//! Each event gets a position (this controller's count of events pushed, from 0); the
//! ring keeps the last [`CAPACITY`]. A reader remembers the next position it wants:
//! when the ring has moved past it, [`Read::missed`] says how many it lost, so a slow
//! follower is told instead of silently skipping events.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::watch;

use super::Event;

/// How many events a controller keeps: at ~300 bytes each, about 3 MB. A deploy of
/// 1,000 replicas makes about 4,000 (assigned, starting, running...), so the ring holds
/// the last few rollouts of a busy cluster; older events are dropped.
pub const CAPACITY: usize = 10_000;

/// The events kept, oldest first, and the position of the next one.
struct Ring {
    events: VecDeque<Event>,
    /// Position of the next event pushed; the oldest kept is `next - events.len()`.
    next: u64,
    /// Sequence of local events (index 0), so each has its own `seq`.
    local_seq: u64,
}

pub struct EventLog {
    ring: Mutex<Ring>,
    capacity: usize,
    /// The position of the next event, published after every push: followers wait on it.
    pushed: watch::Sender<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::with_capacity(CAPACITY)
    }
}

/// What [`EventLog::read`] found from a position.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// Events from the asked position (or the oldest kept), in order.
    pub events: Vec<Event>,
    /// Events between the asked position and the oldest kept: dropped before being read.
    pub missed: u64,
    /// The position to read from next time.
    pub next: u64,
}

impl EventLog {
    /// A ring keeping the last `capacity` events (at least one).
    pub fn with_capacity(capacity: usize) -> EventLog {
        EventLog {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                next: 0,
                local_seq: 0,
            }),
            capacity: capacity.max(1),
            pushed: watch::channel(0).0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A push panicking halfway leaves whole events only: read on.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The events of log entry `index`, numbered `seq` 0.. in order.
    pub fn push_entry(&self, index: u64, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let next = {
            let mut ring = self.lock();
            for (seq, mut e) in events.into_iter().enumerate() {
                e.index = index;
                e.seq = seq as u64;
                self.push_locked(&mut ring, e);
            }
            ring.next
        };
        self.pushed.send_replace(next);
    }

    /// An event this controller saw itself (index 0).
    pub fn push_local(&self, mut event: Event) {
        let next = {
            let mut ring = self.lock();
            ring.local_seq += 1;
            event.index = 0;
            event.seq = ring.local_seq;
            self.push_locked(&mut ring, event);
            ring.next
        };
        self.pushed.send_replace(next);
    }

    fn push_locked(&self, ring: &mut Ring, event: Event) {
        if ring.events.len() == self.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event);
        ring.next += 1;
    }

    /// Up to `max` events from position `from`.
    pub fn read(&self, from: u64, max: usize) -> Read {
        let ring = self.lock();
        let oldest = ring.next - ring.events.len() as u64;
        let start = from.max(oldest);
        let skip = (start - oldest) as usize;
        let events: Vec<Event> = ring.events.iter().skip(skip).take(max).cloned().collect();
        Read {
            missed: start - from.min(start),
            next: start + events.len() as u64,
            events,
        }
    }

    /// The position of the oldest event kept (where a reader of everything starts).
    pub fn oldest(&self) -> u64 {
        let ring = self.lock();
        ring.next - ring.events.len() as u64
    }

    /// Changes whenever events are pushed (its value: the next position).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.pushed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str) -> Event {
        Event {
            kind: kind.into(),
            ..Default::default()
        }
    }

    fn kinds(r: &Read) -> Vec<&str> {
        r.events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn entries_are_numbered_and_the_oldest_dropped() {
        let log = EventLog::with_capacity(3);
        log.push_entry(7, vec![ev("a"), ev("b")]);
        log.push_local(ev("leader"));
        let all = log.read(0, 10);
        assert_eq!(kinds(&all), ["a", "b", "leader"]);
        assert_eq!(
            all.events
                .iter()
                .map(|e| (e.index, e.seq))
                .collect::<Vec<_>>(),
            [(7, 0), (7, 1), (0, 1)]
        );
        assert_eq!((all.missed, all.next), (0, 3));
        log.push_entry(9, vec![ev("c"), ev("d")]);
        assert_eq!(log.oldest(), 2);
        // A reader at 1 lost "b" (position 1): dropped before it read it.
        let late = log.read(1, 10);
        assert_eq!(kinds(&late), ["leader", "c", "d"]);
        assert_eq!((late.missed, late.next), (1, 5));
        let chunk = log.read(2, 2);
        assert_eq!(kinds(&chunk), ["leader", "c"]);
        assert_eq!((chunk.missed, chunk.next), (0, 4));
        assert_eq!(
            log.read(5, 10),
            Read {
                events: vec![],
                missed: 0,
                next: 5
            }
        );
        assert_eq!(*log.subscribe().borrow(), 5);
    }
}
