//! The nodes' latest metrics reports, in the leader's memory, and their sums per service
//! and metric.
//!
//! Each agent sends one report every [`INTERVAL_MS`] with every service it runs replicas
//! of; a report replaces the node's previous one whole (a service missing from it has no
//! replica measured there any more). Nothing here is replicated: a new leader starts
//! empty and its [`crate::autoscale::Autoscaler`] does not scale down before it has
//! watched a whole scale-down window, so starting empty cannot cut a window short.
//!
//! Which reports count, for a service at generation G (the one the leader asks with):
//! - fresh ones only: received within [`FRESH_MS`] (three intervals: one lost or late
//!   report does not make a node's replicas vanish from the sums, a dead node's do after
//!   15 s);
//! - a value read with generation G; or with another generation whose metric at the same
//!   index measured the same thing (same kind, and for a scrape the same port, path, name
//!   and, for a histogram, window: the thresholds `per_replica`, `target`, `above` and
//!   `quantile` are applied here, so changing them keeps the values). What a generation's
//!   metrics were is known when the leader asked about it before ([`Signals::readings`]
//!   remembers the last few) or was told ([`Signals::remember`], e.g. a rollout's previous
//!   spec). A deploy that leaves the metrics alone (a new image) therefore loses no
//!   signal while agents catch up or a rollout runs, and a deploy that changes them never
//!   reads a value as another metric's (an index can move).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use shoal_proto::autoscale::{Autoscale, Metric, INTERVAL_MS};

use crate::api::metrics_report::ServiceReport;
use crate::state::{service_key, ServiceKey};

/// How long a node's report counts after it was received.
pub const FRESH_MS: u64 = 3 * INTERVAL_MS;

/// How many generations' metrics are remembered per service.
const GENERATIONS_KEPT: usize = 4;

/// One metric (measured on nodes) of one service, summed over the nodes whose fresh
/// reports count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeTotals {
    /// How many nodes' values were summed.
    pub nodes: usize,
    /// Their running replicas of the service.
    pub replicas: u64,
    /// How many of those were read.
    pub read: u64,
    /// gauge: the total; cpu/memory: the fractions of the replicas read, summed.
    pub sum: f64,
    /// histogram: each bucket's growth summed by `le`, sorted by `le`.
    pub buckets: Vec<(f64, f64)>,
    /// histogram: the shortest window of the nodes that read a replica (0: none did).
    pub window_ms: u64,
    /// The first node's error (by node name), as `NODE: ERROR`.
    pub error: Option<String>,
}

/// The nodes' reports, shared as `Arc<Signals>` by the agent sessions (which record) and
/// the leader's loop (which reads).
#[derive(Debug, Default)]
pub struct Signals {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By node name: sorted, so "the first error" is the same on every call.
    nodes: BTreeMap<String, NodeReport>,
    /// Per service, the metrics of its last few generations.
    generations: HashMap<ServiceKey, BTreeMap<u64, Vec<Metric>>>,
}

#[derive(Debug)]
struct NodeReport {
    received_ms: u64,
    services: HashMap<ServiceKey, ServiceReport>,
}

impl Signals {
    pub fn new() -> Signals {
        Signals::default()
    }

    /// `node`'s report, received at `now_ms`: replaces its previous one.
    pub fn record(&self, node: &str, report: Vec<ServiceReport>, now_ms: u64) {
        let services = report
            .into_iter()
            .map(|r| (service_key(&r.stack, &r.service), r))
            .collect();
        self.lock().nodes.insert(
            node.to_string(),
            NodeReport {
                received_ms: now_ms,
                services,
            },
        );
    }

    /// Drops `node`'s report (the node left, or its session ended for good).
    pub fn forget_node(&self, node: &str) {
        self.lock().nodes.remove(node);
    }

    /// Drops what is remembered of a service's generations (it was removed).
    pub fn forget_service(&self, stack: &str, service: &str) {
        self.lock().generations.remove(&service_key(stack, service));
    }

    /// Remembers the metrics of a service's `generation`, so values read with it count
    /// where they measure what the current spec's do (see the module's doc).
    pub fn remember(&self, stack: &str, service: &str, generation: u64, spec: &Autoscale) {
        remember(
            &mut self.lock(),
            service_key(stack, service),
            generation,
            spec,
        );
    }

    /// One entry per metric of `spec` (by index): the fresh values of every node summed,
    /// `None` for a metric not measured on nodes (`prometheus`) or that no fresh report
    /// has. Remembers `spec` as `generation`'s.
    pub fn readings(
        &self,
        stack: &str,
        service: &str,
        spec: &Autoscale,
        generation: u64,
        now_ms: u64,
    ) -> Vec<Option<NodeTotals>> {
        let key = service_key(stack, service);
        let mut inner = self.lock();
        remember(&mut inner, key.clone(), generation, spec);
        let known = inner.generations.get(&key);
        let mut totals: Vec<Option<NodeTotals>> = vec![None; spec.metrics.len()];
        let mut shortest: Vec<Option<u64>> = vec![None; spec.metrics.len()];
        for (node, report) in &inner.nodes {
            if now_ms.saturating_sub(report.received_ms) > FRESH_MS {
                continue;
            }
            let Some(service) = report.services.get(&key) else {
                continue;
            };
            for value in &service.values {
                let Some(metric) = spec.metrics.get(value.index) else {
                    continue;
                };
                if !metric.on_nodes() {
                    continue;
                }
                let counts = service.generation == generation
                    || known
                        .and_then(|g| g.get(&service.generation))
                        .and_then(|metrics| metrics.get(value.index))
                        .is_some_and(|then| same_measure(then, metric));
                if !counts {
                    continue;
                }
                let t = totals[value.index].get_or_insert_with(NodeTotals::default);
                t.nodes += 1;
                t.replicas += u64::from(value.replicas);
                t.read += u64::from(value.read);
                t.sum += value.sum;
                t.buckets.extend_from_slice(&value.buckets);
                if value.read > 0 {
                    let w = &mut shortest[value.index];
                    *w = Some(w.map_or(value.window_ms, |w| w.min(value.window_ms)));
                }
                if t.error.is_none() {
                    t.error = value.error.as_ref().map(|e| format!("{node}: {e}"));
                }
            }
        }
        for (t, w) in totals.iter_mut().zip(shortest) {
            if let Some(t) = t {
                t.buckets = merge_by_le(std::mem::take(&mut t.buckets));
                t.window_ms = w.unwrap_or(0);
            }
        }
        totals
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn remember(inner: &mut Inner, key: ServiceKey, generation: u64, spec: &Autoscale) {
    let gens = inner.generations.entry(key).or_default();
    if gens.get(&generation) != Some(&spec.metrics) {
        gens.insert(generation, spec.metrics.clone());
    }
    while gens.len() > GENERATIONS_KEPT {
        gens.pop_first();
    }
}

/// Whether values read for `a` are values of `b`: what the agents measure is the same.
pub fn same_measure(a: &Metric, b: &Metric) -> bool {
    match (a, b) {
        (
            Metric::Gauge {
                port, path, name, ..
            },
            Metric::Gauge {
                port: p2,
                path: path2,
                name: n2,
                ..
            },
        ) => port == p2 && path == path2 && name == n2,
        (
            Metric::Histogram {
                port,
                path,
                name,
                window_ms,
                ..
            },
            Metric::Histogram {
                port: p2,
                path: path2,
                name: n2,
                window_ms: w2,
                ..
            },
        ) => port == p2 && path == path2 && name == n2 && window_ms == w2,
        (Metric::Cpu { .. }, Metric::Cpu { .. }) => true,
        (Metric::Memory { .. }, Metric::Memory { .. }) => true,
        _ => false,
    }
}

/// Buckets sorted by `le`, the counts of equal bounds summed.
fn merge_by_le(mut buckets: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (le, count) in buckets {
        match out.last_mut() {
            Some(last) if last.0 == le => last.1 += count,
            _ => out.push((le, count)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::metrics_report::Measured;
    use shoal_proto::autoscale::Behavior;

    const INF: f64 = f64::INFINITY;

    fn gauge(name: &str, per_replica: f64) -> Metric {
        Metric::Gauge {
            port: 9100,
            path: "/metrics".into(),
            name: name.into(),
            per_replica,
        }
    }

    fn histogram() -> Metric {
        Metric::Histogram {
            port: 9100,
            path: "/metrics".into(),
            name: "latency_seconds".into(),
            quantile: 0.95,
            window_ms: 120_000,
            above: 0.8,
        }
    }

    fn spec(metrics: Vec<Metric>) -> Autoscale {
        Autoscale {
            min: 1,
            max: 10,
            metrics,
            scale_up: Behavior::up(),
            scale_down: Behavior::down(),
        }
    }

    fn value(index: usize, replicas: u32, read: u32, sum: f64) -> Measured {
        Measured {
            index,
            replicas,
            read,
            sum,
            buckets: vec![],
            window_ms: 0,
            error: None,
        }
    }

    fn report(generation: u64, values: Vec<Measured>) -> Vec<ServiceReport> {
        vec![ServiceReport {
            stack: "app".into(),
            service: "infer".into(),
            generation,
            values,
        }]
    }

    fn prometheus() -> Metric {
        Metric::Prometheus {
            url: "http://prom:9090".into(),
            query: "sum(q)".into(),
            per_replica: 15.0,
        }
    }

    #[test]
    fn sums_the_fresh_reports_of_every_node() {
        let s = Signals::new();
        let spec = spec(vec![
            gauge("queue", 15.0),
            histogram(),
            prometheus(),
            Metric::Cpu { target: 0.7 },
        ]);
        let mut a = value(1, 2, 2, 0.0);
        a.buckets = vec![(0.5, 3.0), (INF, 4.0), (0.1, 1.0)];
        a.window_ms = 120_000;
        let mut b = value(1, 1, 1, 0.0);
        b.buckets = vec![(0.1, 2.0), (0.5, 2.0), (INF, 5.0)];
        b.window_ms = 40_000;
        let mut b_queue = value(0, 1, 0, 0.0);
        b_queue.error = Some("GET http://10.0.0.3:9100/metrics: connection refused".into());
        s.record("b", report(3, vec![b_queue, b]), 10_000);
        s.record("a", report(3, vec![value(0, 2, 2, 30.0), a]), 11_000);
        s.record("c", report(3, vec![value(0, 1, 1, 11.0)]), 11_000);

        let got = s.readings("app", "infer", &spec, 3, 12_000);
        assert_eq!(
            got,
            vec![
                Some(NodeTotals {
                    nodes: 3,
                    replicas: 4,
                    read: 3,
                    sum: 41.0,
                    buckets: vec![],
                    window_ms: 0,
                    error: Some("b: GET http://10.0.0.3:9100/metrics: connection refused".into()),
                }),
                Some(NodeTotals {
                    nodes: 2,
                    replicas: 3,
                    read: 3,
                    sum: 0.0,
                    buckets: vec![(0.1, 3.0), (0.5, 5.0), (INF, 9.0)],
                    window_ms: 40_000,
                    error: None,
                }),
                None,
                None,
            ]
        );
    }

    #[test]
    fn stale_and_forgotten_nodes_do_not_count() {
        let s = Signals::new();
        let spec = spec(vec![gauge("queue", 15.0)]);
        s.record("a", report(1, vec![value(0, 1, 1, 10.0)]), 0);
        s.record("b", report(1, vec![value(0, 1, 1, 5.0)]), 5_000);
        let sum = |now| {
            s.readings("app", "infer", &spec, 1, now)[0]
                .as_ref()
                .map(|t| t.sum)
        };
        assert_eq!(sum(FRESH_MS), Some(15.0));
        assert_eq!(
            sum(FRESH_MS + 1),
            Some(5.0),
            "a's report is older than 15 s"
        );
        s.forget_node("b");
        assert_eq!(sum(FRESH_MS), Some(10.0));
        // A new report replaces the node's whole report: without the service, nothing.
        s.record("a", vec![], FRESH_MS);
        assert_eq!(sum(FRESH_MS), None);
    }

    #[test]
    fn other_generations_count_only_where_they_measured_the_same() {
        let s = Signals::new();
        let v1 = spec(vec![gauge("queue", 15.0), Metric::Cpu { target: 0.7 }]);
        // Generation 2 changes the target only; generation 3 puts memory first.
        let v2 = spec(vec![gauge("queue", 10.0), Metric::Cpu { target: 0.5 }]);
        let v3 = spec(vec![
            Metric::Memory { target: 0.8 },
            Metric::Cpu { target: 0.5 },
        ]);
        s.readings("app", "infer", &v1, 1, 0);
        s.record(
            "a",
            report(1, vec![value(0, 1, 1, 12.0), value(1, 1, 1, 0.4)]),
            0,
        );
        let sums = |spec: &Autoscale, g| -> Vec<Option<f64>> {
            s.readings("app", "infer", spec, g, 1_000)
                .into_iter()
                .map(|t| t.map(|t| t.sum))
                .collect()
        };
        assert_eq!(sums(&v2, 2), vec![Some(12.0), Some(0.4)]);
        assert_eq!(sums(&v3, 3), vec![None, Some(0.4)], "a gauge is not memory");
        // A generation the leader never saw: nothing is known of what it measured.
        s.record(
            "a",
            report(7, vec![value(0, 1, 1, 12.0), value(1, 1, 1, 0.4)]),
            0,
        );
        assert_eq!(sums(&v3, 3), vec![None, None]);
        s.remember("app", "infer", 7, &v3);
        assert_eq!(sums(&v3, 3), vec![Some(12.0), Some(0.4)]);
    }

    #[test]
    fn measures_the_same() {
        let mut other_window = histogram();
        let mut other_quantile = histogram();
        if let Metric::Histogram { window_ms, .. } = &mut other_window {
            *window_ms = 60_000;
        }
        if let Metric::Histogram {
            quantile, above, ..
        } = &mut other_quantile
        {
            *quantile = 0.99;
            *above = 2.0;
        }
        assert!(same_measure(&histogram(), &other_quantile));
        assert!(!same_measure(&histogram(), &other_window));
        assert!(same_measure(&gauge("q", 1.0), &gauge("q", 2.0)));
        assert!(!same_measure(&gauge("q", 1.0), &gauge("r", 1.0)));
        assert!(!same_measure(
            &Metric::Cpu { target: 0.5 },
            &Metric::Memory { target: 0.5 }
        ));
        assert!(!same_measure(&prometheus(), &prometheus()));
    }
}
