//! What one metric reads now: the value the decision compares with its target, whether
//! it covers every running replica, or why it cannot be read.

use shoal_proto::autoscale::Metric;

use crate::autoscale::quantile::histogram_quantile;
use crate::autoscale::signals::{NodeTotals, FRESH_MS};
use crate::autoscale::words;

/// One metric's reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// gauge and prometheus: the total; histogram: the quantile; cpu and memory: the
    /// average fraction of the limit over the replicas read.
    Value {
        value: f64,
        /// Every running replica was read: a partial reading may only scale up (what
        /// was not read could be anything).
        complete: bool,
        /// Said after the reading (`2 of 3 replicas read: ...`, `no observations in
        /// 2m0s`).
        note: Option<String>,
    },
    /// Cannot be read, and why: the count holds (never scales down on missing data).
    Missing(String),
}

impl Reading {
    /// A value that covers every running replica.
    pub fn complete(value: f64) -> Reading {
        Reading::Value {
            value,
            complete: true,
            note: None,
        }
    }

    /// A value that covers only some of the running replicas.
    pub fn partial(value: f64, note: impl Into<String>) -> Reading {
        Reading::Value {
            value,
            complete: false,
            note: Some(note.into()),
        }
    }

    pub fn missing(why: impl Into<String>) -> Reading {
        Reading::Missing(why.into())
    }

    /// A `prometheus` metric's reading from the query's answer
    /// ([`crate::autoscale::prometheus::query`]).
    pub fn from_prometheus(answer: Result<f64, String>) -> Reading {
        match answer {
            Ok(v) => Reading::complete(v),
            Err(why) => Reading::Missing(why),
        }
    }

    /// A metric measured on nodes, from the nodes' totals
    /// ([`crate::autoscale::Signals::readings`]), for a service with `running` replicas
    /// running (as the state says).
    pub fn from_totals(metric: &Metric, totals: Option<&NodeTotals>, running: u64) -> Reading {
        let Some(t) = totals else {
            return Reading::Missing(if running == 0 {
                "no replica is running".into()
            } else {
                format!(
                    "no node has reported it in the last {}",
                    words::duration(FRESH_MS)
                )
            });
        };
        if t.read == 0 {
            let of = t.replicas.max(running);
            return Reading::Missing(match &t.error {
                Some(e) => format!("none of the {of} replicas could be read: {e}"),
                None if of == 0 => "no replica is running".into(),
                None => format!("none of the {of} replicas was read yet"),
            });
        }
        let complete = t.read == t.replicas && t.read >= running;
        let mut notes: Vec<String> = Vec::new();
        if !complete {
            let mut n = format!("{} of {} replicas read", t.read, t.replicas.max(running));
            if let Some(e) = &t.error {
                n.push_str(&format!(": {e}"));
            }
            notes.push(n);
        }
        let value = match metric {
            Metric::Gauge { .. } => t.sum,
            Metric::Cpu { .. } | Metric::Memory { .. } => t.sum / t.read as f64,
            Metric::Histogram {
                name,
                quantile,
                window_ms,
                ..
            } => {
                if t.window_ms == 0 {
                    return Reading::Missing("not measured over a window yet".into());
                }
                if t.buckets.is_empty() {
                    return Reading::Missing(format!("no {name}_bucket series"));
                }
                if t.window_ms < *window_ms {
                    notes.push(format!(
                        "over {} of {}",
                        words::duration(t.window_ms),
                        words::duration(*window_ms)
                    ));
                }
                let observations = t.buckets.iter().map(|(_, c)| *c).fold(0.0_f64, f64::max);
                if observations == 0.0 {
                    // No traffic is no latency pressure.
                    notes.push(format!(
                        "no observations in {}",
                        words::duration(t.window_ms.min(*window_ms))
                    ));
                    0.0
                } else {
                    match histogram_quantile(*quantile, &t.buckets) {
                        Some(v) => v,
                        None => {
                            return Reading::Missing(format!(
                                "{name}_bucket has no le=\"+Inf\" bucket"
                            ))
                        }
                    }
                }
            }
            Metric::Prometheus { .. } => {
                return Reading::Missing("measured by the leader, not by the nodes".into())
            }
        };
        Reading::Value {
            value,
            complete,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    fn totals(replicas: u64, read: u64, sum: f64) -> NodeTotals {
        NodeTotals {
            nodes: 1,
            replicas,
            read,
            sum,
            ..NodeTotals::default()
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

    #[test]
    fn gauge_cpu_and_memory() {
        let gauge = Metric::Gauge {
            port: 9100,
            path: "/metrics".into(),
            name: "queue".into(),
            per_replica: 15.0,
        };
        assert_eq!(
            Reading::from_totals(&gauge, Some(&totals(3, 3, 41.0)), 3),
            Reading::complete(41.0)
        );
        let cpu = Metric::Cpu { target: 0.7 };
        assert_eq!(
            Reading::from_totals(&cpu, Some(&totals(3, 3, 1.5)), 3),
            Reading::complete(0.5)
        );
        let mut t = totals(3, 2, 1.5);
        t.error = Some("b: no stats".into());
        assert_eq!(
            Reading::from_totals(&Metric::Memory { target: 0.8 }, Some(&t), 3),
            Reading::partial(0.75, "2 of 3 replicas read: b: no stats")
        );
        // A node that has not reported: its replicas are missing from the totals.
        assert_eq!(
            Reading::from_totals(&cpu, Some(&totals(2, 2, 1.0)), 3),
            Reading::partial(0.5, "2 of 3 replicas read")
        );
    }

    #[test]
    fn missing() {
        let cpu = Metric::Cpu { target: 0.7 };
        assert_eq!(
            Reading::from_totals(&cpu, None, 3),
            Reading::missing("no node has reported it in the last 15s")
        );
        assert_eq!(
            Reading::from_totals(&cpu, None, 0),
            Reading::missing("no replica is running")
        );
        let mut t = totals(2, 0, 0.0);
        t.error = Some("a: GET http://10.0.0.2:9100/metrics: connection refused".into());
        assert_eq!(
            Reading::from_totals(&cpu, Some(&t), 2),
            Reading::missing(
                "none of the 2 replicas could be read: a: GET http://10.0.0.2:9100/metrics: connection refused"
            )
        );
        assert_eq!(
            Reading::from_prometheus(Err("the query returned no series".into())),
            Reading::missing("the query returned no series")
        );
        assert_eq!(Reading::from_prometheus(Ok(4.0)), Reading::complete(4.0));
    }

    #[test]
    fn histograms() {
        let mut t = totals(2, 2, 0.0);
        t.window_ms = 120_000;
        t.buckets = vec![
            (0.1, 10.0),
            (0.25, 30.0),
            (0.5, 70.0),
            (1.0, 90.0),
            (INF, 100.0),
        ];
        assert_eq!(
            Reading::from_totals(&histogram(), Some(&t), 2),
            Reading::complete(1.0)
        );

        t.window_ms = 40_000;
        t.buckets = vec![(0.5, 0.0), (INF, 0.0)];
        assert_eq!(
            Reading::from_totals(&histogram(), Some(&t), 2),
            Reading::Value {
                value: 0.0,
                complete: true,
                note: Some("over 40s of 2m0s; no observations in 40s".into())
            }
        );

        t.buckets = vec![(0.5, 3.0)];
        assert_eq!(
            Reading::from_totals(&histogram(), Some(&t), 2),
            Reading::missing("latency_seconds_bucket has no le=\"+Inf\" bucket")
        );
        t.buckets = vec![];
        assert_eq!(
            Reading::from_totals(&histogram(), Some(&t), 2),
            Reading::missing("no latency_seconds_bucket series")
        );
        t.window_ms = 0;
        assert_eq!(
            Reading::from_totals(&histogram(), Some(&t), 2),
            Reading::missing("not measured over a window yet")
        );
    }
}
