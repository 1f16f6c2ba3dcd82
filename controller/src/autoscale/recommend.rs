//! Each metric's proposal and the recommended count: the HPA's replica calculator, pure.
//!
//! - gauge and prometheus (`per_replica`, the HPA's external `AverageValue`): the count
//!   stays when `total / (current * per_replica)` is within [`TOLERANCE`] of 1, else
//!   `ceil(total / per_replica)`;
//! - histogram (`above`), cpu and memory (`target`): `ratio = value / target`; the count
//!   stays when `|ratio - 1| <= TOLERANCE`, else `ceil(current * ratio)`;
//! - a partial reading (not every running replica read) may only propose more;
//! - the recommendation is the largest proposal; when a metric cannot be read and no
//!   proposal is above the current count, it is the current count (missing data never
//!   scales down); then bounded to `min..=max`.

use shoal_proto::autoscale::{Autoscale, Metric};

use crate::autoscale::reading::Reading;
use crate::autoscale::words::{num, percent};

/// The HPA's default tolerance: a ratio within 10% of the target changes nothing.
pub const TOLERANCE: f64 = 0.1;

/// One metric's proposed count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    pub count: u64,
    pub why: Why,
}

/// How a proposal came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// From the value and the target.
    Computed,
    /// The ratio is within [`TOLERANCE`]: the current count.
    Tolerance,
    /// A partial reading that would have lowered the count: the current count.
    PartialHolds,
}

/// What the metrics recommend now.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// Before `min..=max`.
    pub raw: u64,
    /// `raw` within `min..=max`: what the stabilization windows remember.
    pub count: u64,
    /// Per metric: its proposal (`None`: it cannot be read).
    pub proposals: Vec<Option<Proposal>>,
    /// Per metric, in words: `inference_queue_depth 41 (13.7/15 per replica)`,
    /// `cpu: cannot be read: ...`.
    pub readings: Vec<String>,
    /// The metric with the largest proposal (the first of equals).
    pub driver: Option<usize>,
    /// The first metric that cannot be read: `LABEL cannot be read: WHY`.
    pub missing: Option<String>,
    /// The count holds because of `missing`.
    pub held: bool,
}

/// The recommendation for a service running `current` replicas, from one reading per
/// metric of `spec` (a reading left out counts as missing).
pub fn recommend(spec: &Autoscale, current: u64, readings: &[Reading]) -> Recommendation {
    let mut proposals: Vec<Option<Proposal>> = Vec::with_capacity(spec.metrics.len());
    let mut words = Vec::with_capacity(spec.metrics.len());
    let mut driver: Option<usize> = None;
    let mut missing: Option<String> = None;
    for (i, metric) in spec.metrics.iter().enumerate() {
        let reading = match readings.get(i) {
            None => Reading::missing("not read"),
            Some(Reading::Value { value, .. }) if !value.is_finite() => {
                Reading::missing(format!("it reads {value}"))
            }
            Some(r) => r.clone(),
        };
        words.push(describe(metric, current, &reading));
        match reading {
            Reading::Value {
                value, complete, ..
            } => {
                let p = propose(metric, current, value, complete);
                let larger = match driver {
                    None => true,
                    Some(d) => proposals[d].is_some_and(|q: Proposal| p.count > q.count),
                };
                if larger {
                    driver = Some(i);
                }
                proposals.push(Some(p));
            }
            Reading::Missing(why) => {
                missing.get_or_insert_with(|| format!("{} cannot be read: {why}", metric.label()));
                proposals.push(None);
            }
        }
    }
    let largest = driver
        .and_then(|d| proposals[d])
        .map_or(current, |p| p.count);
    let held = missing.is_some() && largest <= current;
    let raw = if held { current } else { largest };
    Recommendation {
        raw,
        count: spec.bound(raw),
        proposals,
        readings: words,
        driver,
        missing,
        held,
    }
}

/// One metric's proposal for `current` replicas from its `value`.
pub fn propose(metric: &Metric, current: u64, value: f64, complete: bool) -> Proposal {
    let c = current as f64;
    let by_ratio = |ratio: f64| -> Proposal {
        if current == 0 {
            computed(ceil_count(ratio))
        } else if within_tolerance(ratio) {
            Proposal {
                count: current,
                why: Why::Tolerance,
            }
        } else {
            computed(ceil_count(c * ratio))
        }
    };
    let p = match metric {
        Metric::Gauge { per_replica, .. } | Metric::Prometheus { per_replica, .. } => {
            if current > 0 && within_tolerance(value / (c * per_replica)) {
                Proposal {
                    count: current,
                    why: Why::Tolerance,
                }
            } else {
                computed(ceil_count(value / per_replica))
            }
        }
        Metric::Histogram { above, .. } => by_ratio(value / above),
        Metric::Cpu { target } | Metric::Memory { target } => by_ratio(value / target),
    };
    if !complete && p.count < current {
        return Proposal {
            count: current,
            why: Why::PartialHolds,
        };
    }
    p
}

/// A metric's reading in words, for `current` replicas.
pub fn describe(metric: &Metric, current: u64, reading: &Reading) -> String {
    let label = metric.label();
    let (value, note) = match reading {
        Reading::Missing(why) => return format!("{label}: cannot be read: {why}"),
        Reading::Value { value, note, .. } => (*value, note.as_deref()),
    };
    let mut parts: Vec<String> = Vec::new();
    let head = match metric {
        Metric::Gauge { per_replica, .. } | Metric::Prometheus { per_replica, .. } => {
            parts.push(if current == 0 {
                format!("no replica; {} per replica", num(*per_replica))
            } else {
                format!(
                    "{}/{} per replica",
                    num(value / current as f64),
                    num(*per_replica)
                )
            });
            format!("{label} {}", num(value))
        }
        Metric::Histogram { above, .. } => format!("{label} {}/{}", num(value), num(*above)),
        Metric::Cpu { target } | Metric::Memory { target } => {
            format!("{label} {}/{}", percent(value), percent(*target))
        }
    };
    parts.extend(note.map(str::to_string));
    if parts.is_empty() {
        head
    } else {
        format!("{head} ({})", parts.join("; "))
    }
}

fn computed(count: u64) -> Proposal {
    Proposal {
        count,
        why: Why::Computed,
    }
}

fn within_tolerance(ratio: f64) -> bool {
    (ratio - 1.0).abs() <= TOLERANCE
}

/// `ceil(x)` as a count: 0 for nothing (or NaN), saturating for the absurd. A relative
/// 1e-12 is taken off first, so that floating-point noise (`2 * 1.5000000000000002`)
/// does not add a replica.
fn ceil_count(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    (x * (1.0 - 1e-12)).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::autoscale::Behavior;

    fn gauge() -> Metric {
        Metric::Gauge {
            port: 9100,
            path: "/metrics".into(),
            name: "inference_queue_depth".into(),
            per_replica: 15.0,
        }
    }

    fn spec(metrics: Vec<Metric>) -> Autoscale {
        Autoscale {
            min: 2,
            max: 20,
            metrics,
            scale_up: Behavior::up(),
            scale_down: Behavior::down(),
        }
    }

    #[test]
    fn proposals() {
        let cpu = Metric::Cpu { target: 0.7 };
        let cases = [
            // 41 / 15 = 2.73: 3 replicas; 41 / 45 = 0.91: within tolerance at 3.
            (gauge(), 2, 41.0, true, 3, Why::Computed),
            (gauge(), 3, 41.0, true, 3, Why::Tolerance),
            (gauge(), 4, 41.0, true, 3, Why::Computed),
            (gauge(), 4, 41.0, false, 4, Why::PartialHolds),
            (gauge(), 0, 41.0, true, 3, Why::Computed),
            (gauge(), 3, 0.0, true, 0, Why::Computed),
            // 0.35 / 0.7 = 0.5: half of 4.
            (cpu.clone(), 4, 0.35, true, 2, Why::Computed),
            (cpu.clone(), 4, 0.75, true, 4, Why::Tolerance),
            // 1.4 / 0.7 = 2: twice 3.
            (cpu.clone(), 3, 1.4, false, 6, Why::Computed),
            // 0.76 / 0.7 = 1.086: within; 0.78 / 0.7 = 1.114: 10 * 1.114 = 11.14.
            (cpu.clone(), 10, 0.76, true, 10, Why::Tolerance),
            (cpu, 10, 0.78, true, 12, Why::Computed),
        ];
        for (metric, current, value, complete, count, why) in cases {
            assert_eq!(
                propose(&metric, current, value, complete),
                Proposal { count, why },
                "{} at {current} reading {value}",
                metric.label()
            );
        }
    }

    #[test]
    fn no_noise_replica() {
        // 5 * (0.14 / 0.1) is 7.000000000000001 in floating point: 7 replicas, not 8.
        assert_eq!(
            propose(&Metric::Memory { target: 0.1 }, 5, 0.14, true).count,
            7
        );
    }

    #[test]
    fn missing_data_holds_unless_another_metric_scales_up() {
        let s = spec(vec![gauge(), Metric::Cpu { target: 0.7 }]);
        let r = recommend(
            &s,
            5,
            &[Reading::complete(15.0), Reading::missing("no stats")],
        );
        assert_eq!((r.raw, r.count, r.held), (5, 5, true));
        assert_eq!(r.missing.as_deref(), Some("cpu cannot be read: no stats"));
        assert_eq!(
            r.readings,
            vec![
                "inference_queue_depth 15 (3/15 per replica)".to_string(),
                "cpu: cannot be read: no stats".to_string()
            ]
        );
        let r = recommend(
            &s,
            5,
            &[Reading::complete(150.0), Reading::missing("no stats")],
        );
        assert_eq!((r.raw, r.count, r.held, r.driver), (10, 10, false, Some(0)));
        // Bounded: 300 / 15 = 20 ... 600 / 15 = 40 > max.
        let r = recommend(&s, 5, &[Reading::complete(600.0), Reading::complete(0.7)]);
        assert_eq!((r.raw, r.count), (40, 20));
    }

    #[test]
    fn words() {
        let h = Metric::Histogram {
            port: 9100,
            path: "/metrics".into(),
            name: "inference_duration_seconds".into(),
            quantile: 0.95,
            window_ms: 120_000,
            above: 0.8,
        };
        let p = Metric::Prometheus {
            url: "http://prom:9090".into(),
            query: "sum(q)".into(),
            per_replica: 15.0,
        };
        let cases = [
            (gauge(), Reading::complete(41.0), "inference_queue_depth 41 (13.7/15 per replica)"),
            (
                gauge(),
                Reading::partial(41.0, "2 of 3 replicas read"),
                "inference_queue_depth 41 (13.7/15 per replica; 2 of 3 replicas read)",
            ),
            (h.clone(), Reading::complete(0.42), "p95 inference_duration_seconds 0.42/0.8"),
            (Metric::Cpu { target: 0.7 }, Reading::complete(0.35), "cpu 35%/70%"),
            (Metric::Memory { target: 0.8 }, Reading::complete(0.5), "memory 50%/80%"),
            (p, Reading::complete(41.0), "prometheus 41 (13.7/15 per replica)"),
            (
                h,
                Reading::missing("no node has reported it in the last 15s"),
                "p95 inference_duration_seconds: cannot be read: no node has reported it in the last 15s",
            ),
        ];
        for (metric, reading, want) in cases {
            assert_eq!(describe(&metric, 3, &reading), want);
        }
    }
}
