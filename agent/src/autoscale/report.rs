//! The node's report (pure): what each replica's read gave, folded per service and
//! metric into the compact aggregates the leader adds up over nodes
//! ([`ServiceReport`]), with what must be remembered between reads ([`Memory`]: each
//! replica's histogram samples and its last CPU sample) and forgotten once the replica
//! is gone.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use shoal_proto::autoscale::Metric;
use tokio::time::Instant;

use super::replicas::Replica;
use super::stats::{cores_used, cpu_cores, memory_bytes, memory_fraction, CpuSample};
use super::window::{merge, Buckets, Window};
use crate::runtime::ContainerStats;

/// What one read of a replica gave for one metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    /// The gauge's series added up.
    Gauge(f64),
    /// The histogram's cumulative counters now.
    Buckets(Buckets),
    /// The engine's figures of its container (`cpu`, `memory`).
    Stats(ContainerStats),
}

/// One replica's read: by the metric's index in its service's `metrics`, the value or
/// why there is none (`GET http://10.208.1.5:9100/metrics: connection refused`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplicaRead {
    pub values: BTreeMap<usize, Result<Raw, String>>,
}

/// The metrics of one service (one generation of its spec) on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceReport {
    pub stack: String,
    pub service: String,
    pub generation: u64,
    pub values: Vec<MetricReport>,
}

/// One metric over the node's replicas of a service (see `MetricValue` in
/// `shoal.proto`, the contract with the leader).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricReport {
    pub index: u32,
    /// Running replicas, and how many of them gave a value.
    pub replicas: u32,
    pub read: u32,
    /// Gauge: the values added up; cpu/memory: the fractions of the limit added up.
    pub sum: f64,
    /// Histogram: the growth of each bucket over `window_ms`, added up.
    pub buckets: Buckets,
    /// Histogram: the longest span a replica's growth covers.
    pub window_ms: u64,
    /// Why a replica gave no value (the first such reason, in slot order).
    pub error: Option<String>,
}

/// A histogram of one replica, as its service's spec names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HistogramKey {
    container: String,
    port: u16,
    path: String,
    name: String,
}

/// What is kept between reads.
#[derive(Debug, Default)]
pub struct Memory {
    windows: HashMap<HistogramKey, Window>,
    cpu: HashMap<String, CpuSample>,
}

impl Memory {
    /// How many histogram windows and CPU samples are kept (for tests).
    pub fn len(&self) -> usize {
        self.windows.len() + self.cpu.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget what belongs to containers that are not among `replicas`.
    fn retain(&mut self, replicas: &[Replica]) {
        let alive: std::collections::HashSet<&str> =
            replicas.iter().map(|r| r.container_id.as_str()).collect();
        self.windows
            .retain(|k, _| alive.contains(k.container.as_str()));
        self.cpu.retain(|c, _| alive.contains(c.as_str()));
    }
}

/// Fold the reads (`reads[i]` of `replicas[i]`, made at `now`) into one report per
/// service and generation, updating `memory`. A replica whose histogram or CPU has its
/// first sample now gives no value yet (its growth or use needs two).
pub fn fold(
    memory: &mut Memory,
    replicas: &[Replica],
    reads: &[ReplicaRead],
    now: Instant,
) -> Vec<ServiceReport> {
    memory.retain(replicas);
    let mut groups: BTreeMap<(&str, &str, u64), Vec<Member<'_>>> = BTreeMap::new();
    for (r, read) in replicas.iter().zip(reads) {
        groups
            .entry((&r.task.stack, &r.task.service, r.task.generation))
            .or_default()
            .push((r, read));
    }
    let mut out = Vec::new();
    for ((stack, service, generation), mut members) in groups {
        members.sort_by(|a, b| {
            (a.0.task.slot, &a.0.task.task_id).cmp(&(b.0.task.slot, &b.0.task.task_id))
        });
        let cpu = cpu_use(memory, &members, now);
        let Some(autoscale) = members[0].0.spec.autoscale.clone() else {
            continue;
        };
        let values = autoscale
            .measured_on_nodes()
            .map(|(index, metric)| {
                let mut m = MetricReport {
                    index: index as u32,
                    replicas: members.len() as u32,
                    ..Default::default()
                };
                let mut grown: Vec<(f64, f64)> = Vec::new();
                for (i, (r, read)) in members.iter().enumerate() {
                    let value = match read.values.get(&index) {
                        None => Err("not read".to_string()),
                        Some(Err(e)) => Err(e.clone()),
                        Some(Ok(raw)) => one(memory, r, metric, raw, cpu[i], now),
                    };
                    match value {
                        Ok(Value::Sum(v)) => {
                            m.read += 1;
                            m.sum += v;
                        }
                        Ok(Value::Growth(buckets, covered)) => {
                            m.read += 1;
                            grown.extend(buckets);
                            m.window_ms = m.window_ms.max(covered.as_millis() as u64);
                        }
                        Err(e) => {
                            if m.error.is_none() {
                                m.error =
                                    Some(format!("{} slot {}: {e}", r.task.service, r.task.slot));
                            }
                        }
                    }
                }
                if matches!(metric, Metric::Histogram { .. }) {
                    m.buckets = merge(grown);
                }
                m
            })
            .collect();
        out.push(ServiceReport {
            stack: stack.to_string(),
            service: service.to_string(),
            generation,
            values,
        });
    }
    out
}

/// A replica and its read.
type Member<'a> = (&'a Replica, &'a ReplicaRead);

enum Value {
    Sum(f64),
    Growth(Buckets, Duration),
}

/// The cores each member used since its container's last sample (`None`: no earlier
/// sample, or no stats read now), remembering this sample for the next time.
fn cpu_use(memory: &mut Memory, members: &[Member<'_>], now: Instant) -> Vec<Option<f64>> {
    members
        .iter()
        .map(|(r, read)| {
            let stats = read.values.values().find_map(|v| match v {
                Ok(Raw::Stats(s)) => Some(*s),
                _ => None,
            })?;
            let sample = CpuSample {
                at: now,
                cpu_ns: stats.cpu_ns,
            };
            let before = memory.cpu.insert(r.container_id.clone(), sample)?;
            cores_used(before, sample)
        })
        .collect()
}

/// One replica's value of `metric`.
fn one(
    memory: &mut Memory,
    r: &Replica,
    metric: &Metric,
    raw: &Raw,
    cores: Option<f64>,
    now: Instant,
) -> Result<Value, String> {
    match (metric, raw) {
        (Metric::Gauge { .. }, Raw::Gauge(v)) => Ok(Value::Sum(*v)),
        (
            Metric::Histogram {
                port,
                path,
                name,
                window_ms,
                ..
            },
            Raw::Buckets(b),
        ) => {
            let key = HistogramKey {
                container: r.container_id.clone(),
                port: *port,
                path: path.clone(),
                name: name.clone(),
            };
            let window = memory.windows.entry(key).or_default();
            window.push(now, b.clone(), Duration::from_millis(*window_ms));
            let g = window.growth().ok_or_else(|| {
                format!("{name}: first sample, its growth is known from the next")
            })?;
            Ok(Value::Growth(g.buckets, g.covered))
        }
        (Metric::Cpu { .. }, Raw::Stats(_)) => {
            let limit = cpu_cores(&r.spec)
                .ok_or("cpu: no cpus limit or reservation (deploy.resources) to count against")?;
            let used = cores.ok_or("cpu: first sample, its use is known from the next")?;
            Ok(Value::Sum(used / limit))
        }
        (Metric::Memory { .. }, Raw::Stats(s)) => {
            let limit = memory_bytes(&r.spec).ok_or(
                "memory: no memory limit or reservation (deploy.resources) to count against",
            )?;
            Ok(Value::Sum(memory_fraction(s, limit)))
        }
        _ => Err("read as another kind of metric".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::TaskIdentity;
    use shoal_proto::autoscale::{Autoscale, Behavior};
    use shoal_proto::spec::{Limits, Resources, ServiceSpec};
    use std::sync::Arc;

    const INF: f64 = f64::INFINITY;

    fn spec() -> Arc<ServiceSpec> {
        Arc::new(ServiceSpec {
            name: "web".into(),
            resources: Resources {
                limits: Limits {
                    nano_cpus: Some(500_000_000),
                    memory_bytes: Some(1000),
                    pids: None,
                },
                reservations: Limits::default(),
            },
            autoscale: Some(Autoscale {
                min: 1,
                max: 10,
                metrics: vec![
                    Metric::Gauge {
                        port: 9100,
                        path: "/metrics".into(),
                        name: "queue".into(),
                        per_replica: 15.0,
                    },
                    Metric::Prometheus {
                        url: "http://prom:9090".into(),
                        query: "up".into(),
                        per_replica: 1.0,
                    },
                    Metric::Histogram {
                        port: 9100,
                        path: "/metrics".into(),
                        name: "latency".into(),
                        quantile: 0.95,
                        window_ms: 10_000,
                        above: 0.8,
                    },
                    Metric::Cpu { target: 0.7 },
                    Metric::Memory { target: 0.8 },
                ],
                scale_up: Behavior::up(),
                scale_down: Behavior::down(),
            }),
            ..Default::default()
        })
    }

    fn replica(slot: u64, container: &str) -> Replica {
        Replica {
            task: TaskIdentity {
                task_id: format!("t{slot}"),
                stack: "shop".into(),
                service: "web".into(),
                slot,
                generation: 3,
            },
            spec: spec(),
            container_id: container.into(),
            address: Ok("127.0.0.1".parse().expect("ip")),
        }
    }

    fn read(queue: f64, buckets: Buckets, cpu_ns: u64, mem: u64) -> ReplicaRead {
        let stats = Raw::Stats(ContainerStats {
            cpu_ns,
            memory_bytes: mem,
            ..Default::default()
        });
        ReplicaRead {
            values: [
                (0, Ok(Raw::Gauge(queue))),
                (2, Ok(Raw::Buckets(buckets))),
                (3, Ok(stats.clone())),
                (4, Ok(stats)),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn two_reads_give_sums_growth_and_fractions_per_metric() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(5);
        let mut memory = Memory::default();
        let replicas = [replica(1, "c1"), replica(2, "c2")];
        let first = fold(
            &mut memory,
            &replicas,
            &[
                read(3.0, vec![(0.5, 10.0), (INF, 20.0)], 1_000_000_000, 250),
                read(4.0, vec![(0.5, 5.0), (INF, 8.0)], 0, 500),
            ],
            t0,
        );
        assert_eq!(first.len(), 1);
        let r = &first[0];
        assert_eq!(
            (r.stack.as_str(), r.service.as_str(), r.generation),
            ("shop", "web", 3)
        );
        let indexes: Vec<u32> = r.values.iter().map(|v| v.index).collect();
        assert_eq!(indexes, vec![0, 2, 3, 4], "prometheus is the leader's");
        assert_eq!(
            r.values[0],
            MetricReport {
                index: 0,
                replicas: 2,
                read: 2,
                sum: 7.0,
                ..Default::default()
            }
        );
        assert_eq!(
            r.values[1],
            MetricReport {
                index: 2,
                replicas: 2,
                read: 0,
                error: Some(
                    "web slot 1: latency: first sample, its growth is known from the next".into()
                ),
                ..Default::default()
            }
        );
        assert_eq!(r.values[2].read, 0);
        assert_eq!(
            r.values[2].error.as_deref(),
            Some("web slot 1: cpu: first sample, its use is known from the next")
        );
        assert_eq!(
            r.values[3],
            MetricReport {
                index: 4,
                replicas: 2,
                read: 2,
                sum: 0.25 + 0.5,
                ..Default::default()
            }
        );

        let second = fold(
            &mut memory,
            &replicas,
            &[
                // 1.25 s of CPU in 5 s: 0.25 cores of 0.5.
                read(5.0, vec![(0.5, 14.0), (INF, 30.0)], 2_250_000_000, 250),
                // Its process restarted: its counters begin again.
                read(1.0, vec![(0.5, 1.0), (INF, 2.0)], 2_500_000_000, 500),
            ],
            t1,
        );
        let v = &second[0].values;
        assert_eq!(v[0].sum, 6.0);
        assert_eq!(
            v[1],
            MetricReport {
                index: 2,
                replicas: 2,
                read: 2,
                buckets: vec![(0.5, 4.0 + 1.0), (INF, 10.0 + 2.0)],
                window_ms: 5_000,
                ..Default::default()
            }
        );
        assert_eq!(
            v[2],
            MetricReport {
                index: 3,
                replicas: 2,
                read: 2,
                sum: 0.5 + 1.0,
                ..Default::default()
            }
        );
    }

    #[test]
    fn an_unread_replica_counts_with_its_reason_and_a_gone_one_is_forgotten() {
        let t0 = Instant::now();
        let mut memory = Memory::default();
        let replicas = [replica(2, "c2"), replica(1, "c1")];
        let failed = ReplicaRead {
            values: [
                (
                    0,
                    Err("GET http://127.0.0.1:9100/metrics: connection refused".into()),
                ),
                (
                    2,
                    Err("GET http://127.0.0.1:9100/metrics: connection refused".into()),
                ),
                (3, Err("stats: no such container".into())),
                (4, Err("stats: no such container".into())),
            ]
            .into_iter()
            .collect(),
        };
        let r = fold(
            &mut memory,
            &replicas,
            &[failed, read(3.0, vec![(INF, 1.0)], 1, 100)],
            t0,
        );
        assert_eq!(
            r[0].values[0],
            MetricReport {
                index: 0,
                replicas: 2,
                read: 1,
                sum: 3.0,
                error: Some(
                    "web slot 2: GET http://127.0.0.1:9100/metrics: connection refused".into()
                ),
                ..Default::default()
            }
        );
        assert_eq!(memory.len(), 2, "c1's histogram and CPU sample");
        // c1 goes, c3 comes: c1's samples are forgotten, c3 starts afresh.
        let r = fold(
            &mut memory,
            &[replica(3, "c3")],
            &[read(1.0, vec![(INF, 50.0)], 7, 100)],
            t0 + Duration::from_secs(5),
        );
        assert_eq!(r[0].values[1].read, 0, "no earlier sample of c3");
        assert_eq!(memory.len(), 2, "only c3's");
        assert!(fold(&mut memory, &[], &[], t0 + Duration::from_secs(10)).is_empty());
        assert!(memory.is_empty());
    }

    #[test]
    fn generations_are_reported_apart() {
        let t0 = Instant::now();
        let mut old = replica(1, "c1");
        old.task.generation = 2;
        let r = fold(
            &mut Memory::default(),
            &[old, replica(2, "c2")],
            &[read(1.0, vec![], 0, 0), read(2.0, vec![], 0, 0)],
            t0,
        );
        let got: Vec<(u64, f64)> = r.iter().map(|s| (s.generation, s.values[0].sum)).collect();
        assert_eq!(got, vec![(2, 1.0), (3, 2.0)]);
    }
}
