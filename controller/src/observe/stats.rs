//! What the agents measure of their replicas' containers and GPUs (`StatsReport`, every
//! [`shoal_proto::STATS_INTERVAL_MS`]), kept in the leader's memory for `shoal stats`
//! and the dashboard; never written through Raft.
//!
//! Per node: its latest report, replaced by each new one and dropped when its session
//! ends or it is declared down. History: per service (its replicas summed over every
//! node's latest report) and per GPU, one point per minute over the last hour
//! ([`super::history`]). Memory is bounded by the nodes' replicas and GPUs and by
//! [`super::history::MAX_POINTS`] per series; series not fed for an hour are dropped.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Mutex;

use shoal_proto::pb;

use super::history::Series;
use super::stats_wire::{gpu_row, point, replica_row};
use crate::state::{ClusterState, NodeId, NodeStatus, ServiceKey, TaskId};

/// One replica's container figures, as its agent measured them.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaFigures {
    pub task: TaskId,
    /// `STACK/SERVICE` as the agent named it (the state's task is authoritative in replies).
    pub service: ServiceKey,
    pub container: String,
    /// Percent of one CPU over the last interval.
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    /// 0: no limit.
    pub memory_limit_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub restarts: u64,
    pub at_ms: u64,
}

/// One GPU's live figures; `None` where NVML gave none (an inventory file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuFigures {
    pub uuid: String,
    pub index: u32,
    pub model: String,
    pub utilization_percent: Option<u32>,
    pub memory_used_bytes: Option<u64>,
}

/// A node's report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeReport {
    pub replicas: Vec<ReplicaFigures>,
    pub gpus: Vec<GpuFigures>,
}

/// A node's latest report and its replicas summed per service.
#[derive(Debug)]
struct Held {
    report: NodeReport,
    sums: BTreeMap<ServiceKey, (f64, u64)>,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: BTreeMap<NodeId, Held>,
    services: BTreeMap<ServiceKey, Series>,
    /// By node, then GPU UUID.
    gpus: BTreeMap<NodeId, BTreeMap<String, Series>>,
}

impl Inner {
    /// `service` summed over every node's latest report.
    fn total(&self, service: &str) -> (f64, u64) {
        self.nodes
            .values()
            .filter_map(|h| h.sums.get(service))
            .fold((0.0, 0), |(c, m), (cpu, mem)| {
                (c + cpu, m.saturating_add(*mem))
            })
    }

    /// Adds a sample of each of `services`' totals to its history.
    fn sample(&mut self, services: BTreeSet<ServiceKey>, now_ms: u64) {
        for key in services {
            let (cpu, mem) = self.total(&key);
            self.services.entry(key).or_default().add(now_ms, cpu, mem);
        }
    }
}

/// The leader's stats of the cluster; see the module header.
#[derive(Debug, Default)]
pub struct StatsStore {
    inner: Mutex<Inner>,
}

impl StatsStore {
    /// Keeps `report` as `node`'s latest and adds it to the history.
    pub fn record(&self, node: &str, report: NodeReport, now_ms: u64) {
        let mut sums: BTreeMap<ServiceKey, (f64, u64)> = BTreeMap::new();
        for r in &report.replicas {
            let s = sums.entry(r.service.clone()).or_default();
            s.0 += r.cpu_percent;
            s.1 = s.1.saturating_add(r.memory_bytes);
        }
        let mut inner = self.lock();
        let gpus = inner.gpus.entry(node.to_string()).or_default();
        for g in &report.gpus {
            if g.utilization_percent.is_none() && g.memory_used_bytes.is_none() {
                continue;
            }
            gpus.entry(g.uuid.clone()).or_default().add(
                now_ms,
                f64::from(g.utilization_percent.unwrap_or(0)),
                g.memory_used_bytes.unwrap_or(0),
            );
        }
        let mut touched: BTreeSet<ServiceKey> = sums.keys().cloned().collect();
        let held = Held { report, sums };
        if let Some(old) = inner.nodes.insert(node.to_string(), held) {
            touched.extend(old.sums.into_keys());
        }
        inner.sample(touched, now_ms);
    }

    /// Drops `node`'s latest report (its session ended, or it is down); its services'
    /// totals fall accordingly. Its GPUs' history stays until it ages out.
    pub fn forget_node(&self, node: &str, now_ms: u64) {
        let mut inner = self.lock();
        if let Some(old) = inner.nodes.remove(node) {
            inner.sample(old.sums.into_keys().collect(), now_ms);
        }
    }

    /// The nodes with a report kept.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.lock().nodes.keys().cloned().collect()
    }

    /// Forgets every figure (this controller no longer leads: agents report elsewhere).
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }

    /// Drops history older than an hour, and series with nothing left.
    pub fn prune(&self, now_ms: u64) {
        let mut inner = self.lock();
        inner.services.retain(|_, s| s.trim(now_ms));
        for per_node in inner.gpus.values_mut() {
            per_node.retain(|_, s| s.trim(now_ms));
        }
        inner.gpus.retain(|_, per_node| !per_node.is_empty());
    }

    /// The `Stats` reply: replicas of tasks the state still has, on nodes not down,
    /// of `only` (`STACK/SERVICE`) or of every service; the GPUs (with `only`, those its
    /// replicas hold); with `history`, the hour of per-service and per-GPU points.
    pub fn reply(
        &self,
        state: &ClusterState,
        only: Option<&str>,
        history: bool,
        now_ms: u64,
    ) -> pb::StatsReply {
        let wanted = |stack: &str, service: &str| {
            only.is_none_or(|k| k.split_once('/') == Some((stack, service)))
        };
        // With a service named, the GPUs its live replicas hold, by (node, UUID).
        let held: Option<HashSet<(&str, &str)>> = only.map(|_| {
            state
                .tasks
                .values()
                .filter(|t| wanted(&t.stack, &t.service) && !t.state.is_terminal())
                .filter_map(|t| t.node.as_deref().map(|n| (n, t)))
                .flat_map(|(n, t)| t.gpus.iter().map(move |g| (n, g.as_str())))
                .collect()
        });
        let inner = self.lock();
        let mut reply = pb::StatsReply {
            at_ms: now_ms,
            ..Default::default()
        };
        for (node, h) in &inner.nodes {
            let up = state
                .nodes
                .get(node)
                .is_some_and(|n| n.status != NodeStatus::Down);
            if !up {
                continue;
            }
            for r in &h.report.replicas {
                let Some(t) = state.tasks.get(&r.task) else {
                    continue;
                };
                if wanted(&t.stack, &t.service) {
                    reply
                        .replicas
                        .push(replica_row(r, &t.stack, &t.service, t.slot, node));
                }
            }
            for g in &h.report.gpus {
                if held
                    .as_ref()
                    .is_some_and(|set| !set.contains(&(node.as_str(), g.uuid.as_str())))
                {
                    continue;
                }
                let points = match inner.gpus.get(node).and_then(|s| s.get(&g.uuid)) {
                    Some(series) if history => series.points(now_ms),
                    _ => Vec::new(),
                };
                reply.gpus.push(gpu_row(g, node, points));
            }
        }
        reply.replicas.sort_by(|a, b| {
            (&a.stack, &a.service, a.slot, &a.node, &a.task)
                .cmp(&(&b.stack, &b.service, b.slot, &b.node, &b.task))
        });
        if history {
            reply.services = inner
                .services
                .iter()
                .filter_map(|(key, series)| {
                    let svc = state.services.get(key).filter(|s| !s.removing)?;
                    wanted(&svc.stack, &svc.name).then(|| pb::ServiceSeries {
                        stack: svc.stack.clone(),
                        service: svc.name.clone(),
                        points: series.points(now_ms).iter().map(point).collect(),
                    })
                })
                .collect();
        }
        reply
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
