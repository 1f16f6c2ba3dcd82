//! Node liveness, kept in the leader's memory only: heartbeats never go through Raft.
//! Only transitions (ready -> down, down -> ready) are written, by the leader loop.
//!
//! A new leader starts every node's clock at its own start, so each node gets one full
//! grace period to reach it before being declared down, plus [`FIRST_CONTACT`] until it
//! has heard from the node once: after an outage of every controller (a restore, a
//! reboot of all machines) agents retry at their slowest backoff.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::state::{ClusterState, NodeId, NodeStatus};

/// How long a node may stay silent before it is declared down, tuned for a LAN: six
/// agent heartbeats (`shoal_agent::HEARTBEAT_INTERVAL`, 250 ms), so one or two lost or
/// late ones never take a node down, while a dead node's replicas are placed elsewhere
/// within about 2 s (the leader checks every 250 ms). `--node-grace-ms` changes it.
pub const DEFAULT_NODE_GRACE: Duration = Duration::from_millis(1500);

/// What a node the leader has not heard from yet gets on top of the grace: the agents'
/// longest backoff between two rounds of their controller list (`session::BACKOFF_MAX`,
/// 2 s) and a round of connection attempts.
pub const FIRST_CONTACT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct Liveness {
    grace: Duration,
    since: Instant,
    last_seen: HashMap<NodeId, Instant>,
    /// Each node's latest per-GPU figures, from its heartbeats, by GPU UUID.
    gpu_usage: HashMap<NodeId, HashMap<String, GpuUsage>>,
}

/// What a heartbeat says of one GPU's use, where NVML gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpuUsage {
    pub utilization_percent: Option<u32>,
    pub memory_used_bytes: Option<u64>,
}

impl Liveness {
    pub fn new(grace: Duration, now: Instant) -> Liveness {
        Liveness {
            grace,
            since: now,
            last_seen: HashMap::new(),
            gpu_usage: HashMap::new(),
        }
    }

    /// The figures of `node`'s latest heartbeat (replacing the previous ones).
    pub fn gpu_usage_seen(&mut self, node: &str, usage: HashMap<String, GpuUsage>) {
        self.gpu_usage.insert(node.to_string(), usage);
    }

    /// `node`'s latest figures for GPU `uuid`, while the node is heard from.
    pub fn gpu_usage(&self, node: &str, uuid: &str, now: Instant) -> GpuUsage {
        let fresh = self
            .last_seen
            .get(node)
            .is_some_and(|t| now.saturating_duration_since(*t) < self.grace);
        if !fresh {
            return GpuUsage::default();
        }
        self.gpu_usage
            .get(node)
            .and_then(|g| g.get(uuid))
            .copied()
            .unwrap_or_default()
    }

    /// The node's agent said something (hello, heartbeat, status).
    pub fn seen(&mut self, node: &str, now: Instant) {
        // Thousands of times a second at 1,000 nodes: no allocation once known.
        match self.last_seen.get_mut(node) {
            Some(last) => *last = now,
            None => {
                self.last_seen.insert(node.to_string(), now);
            }
        }
    }

    /// The status changes the leader should write, given what the state says now.
    pub fn transitions(&self, state: &ClusterState, now: Instant) -> Vec<(NodeId, NodeStatus)> {
        let mut out = Vec::new();
        for node in state.nodes.values() {
            let alive = match self.last_seen.get(&node.id) {
                Some(last) => now.saturating_duration_since((*last).max(self.since)) < self.grace,
                None => now.saturating_duration_since(self.since) < self.grace + FIRST_CONTACT,
            };
            match (node.status, alive) {
                (NodeStatus::Ready | NodeStatus::Unknown, false) => {
                    out.push((node.id.clone(), NodeStatus::Down))
                }
                (NodeStatus::Down | NodeStatus::Unknown, true)
                    if self
                        .last_seen
                        .get(&node.id)
                        .is_some_and(|t| *t >= self.since) =>
                {
                    out.push((node.id.clone(), NodeStatus::Ready))
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Availability, Node};

    fn state_with(status: NodeStatus) -> ClusterState {
        let mut s = ClusterState::default();
        s.nodes.insert(
            "a".into(),
            Node {
                id: "a".into(),
                address: "10.0.0.1".into(),
                nano_cpus: 1,
                memory_bytes: 1,
                labels: Default::default(),
                status,
                availability: Availability::Active,
                gpus: Vec::new(),
                devices: Default::default(),
                platform: String::new(),
                manager: false,
                conflicts: Vec::new(),
            },
        );
        s
    }

    #[test]
    fn a_new_leader_gives_every_node_a_grace_period_and_time_to_find_it() {
        let t0 = Instant::now();
        let l = Liveness::new(Duration::from_secs(2), t0);
        let s = state_with(NodeStatus::Ready);
        let first = Duration::from_secs(2) + FIRST_CONTACT;
        assert!(l
            .transitions(&s, t0 + first - Duration::from_millis(100))
            .is_empty());
        assert_eq!(
            l.transitions(&s, t0 + first + Duration::from_millis(100)),
            vec![("a".to_string(), NodeStatus::Down)]
        );
    }

    #[test]
    fn a_node_heard_once_gets_the_grace_only() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(2), t0);
        l.seen("a", t0 + Duration::from_millis(500));
        let s = state_with(NodeStatus::Ready);
        assert!(l
            .transitions(&s, t0 + Duration::from_millis(2400))
            .is_empty());
        assert_eq!(
            l.transitions(&s, t0 + Duration::from_millis(2600)),
            vec![("a".to_string(), NodeStatus::Down)]
        );
    }

    #[test]
    fn heartbeats_keep_a_node_ready_and_bring_it_back() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(2), t0);
        l.seen("a", t0 + Duration::from_secs(3));
        let ready = state_with(NodeStatus::Ready);
        assert!(l
            .transitions(&ready, t0 + Duration::from_secs(4))
            .is_empty());
        let down = state_with(NodeStatus::Down);
        assert_eq!(
            l.transitions(&down, t0 + Duration::from_secs(4)),
            vec![("a".to_string(), NodeStatus::Ready)]
        );
        assert_eq!(
            l.transitions(&ready, t0 + Duration::from_secs(6)),
            vec![("a".to_string(), NodeStatus::Down)]
        );
    }
}
