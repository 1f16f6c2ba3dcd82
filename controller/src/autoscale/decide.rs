//! The decision: how many replicas a service should run now, and why.
//!
//! As the HPA (`normalizeDesiredReplicasWithBehaviors`): the metrics' recommendation
//! ([`recommend`]) is stabilized over the windows ([`History::stabilize`]), then limited
//! to `scale_up.max_step` more or `scale_down.max_step` fewer replicas per decision, then
//! bounded to `min..=max` (a count outside them goes to the bound at once, whatever the
//! windows and steps say).
//!
//! [`Autoscaler`] keeps each service's recommendations in the leader's memory; the
//! decided count and its cause are the caller's to write (a Raft write), so a leader
//! change loses no decision; a new leader starts with empty histories and does not scale
//! down before it has watched a whole scale-down window.

use std::collections::HashMap;

use shoal_proto::autoscale::Autoscale;

use crate::autoscale::reading::Reading;
use crate::autoscale::recommend::{recommend, Recommendation, Why};
use crate::autoscale::stabilize::{History, Stabilized};
use crate::autoscale::words;
use crate::state::ServiceKey;

/// What a service should run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The replica count (the current one when nothing changes).
    pub desired: u64,
    /// For a change, the metric that drove it and its reading
    /// (`inference_queue_depth 41 (13.7/15 per replica) above target`); for a hold, why
    /// (`within tolerance`, `scale-down stabilization: ...`, `holding: ... cannot be
    /// read: ...`, `at max 20`).
    pub cause: String,
    /// One per metric, in words (`cpu 35%/70%`, `memory: cannot be read: ...`).
    pub readings: Vec<String>,
}

/// The recommendations of every autoscaled service, in the leader's memory.
#[derive(Debug, Default)]
pub struct Autoscaler {
    histories: HashMap<ServiceKey, History>,
}

impl Autoscaler {
    pub fn new() -> Autoscaler {
        Autoscaler::default()
    }

    /// Decides for the service `key` (`STACK/SERVICE`) running `current` replicas, from
    /// one reading per metric of `spec` (by index), at `now_ms`, on a leader that has led
    /// since `watching_since_ms`; remembers the recommendation.
    pub fn evaluate(
        &mut self,
        key: &str,
        spec: &Autoscale,
        current: u64,
        readings: &[Reading],
        now_ms: u64,
        watching_since_ms: u64,
    ) -> Decision {
        let rec = recommend(spec, current, readings);
        let history = self
            .histories
            .entry(key.to_string())
            .or_insert_with(|| History::new(now_ms));
        let st = history.stabilize(spec, current, rec.count, now_ms, watching_since_ms);
        decide(spec, current, &rec, &st)
    }

    /// Forgets a service's recommendations (it was removed, or is no longer autoscaled).
    pub fn forget(&mut self, key: &str) {
        self.histories.remove(key);
    }

    /// Keeps only the services `keep` says to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.histories.retain(|key, _| keep(key));
    }

    /// A service's remembered `(time, recommendation)`, oldest first.
    pub fn history(&self, key: &str) -> Vec<(u64, u64)> {
        self.histories
            .get(key)
            .map(|h| h.recommendations().collect())
            .unwrap_or_default()
    }
}

/// The decision from a recommendation and what the windows allow (pure): step limits,
/// bounds and the cause.
pub fn decide(spec: &Autoscale, current: u64, rec: &Recommendation, st: &Stabilized) -> Decision {
    let stepped = step(spec, current, st.count);
    let desired = spec.bound(stepped);
    let cause = cause(spec, current, rec, st, stepped, desired);
    Decision {
        desired,
        cause,
        readings: rec.readings.clone(),
    }
}

/// `stabilized` limited to `scale_up.max_step` more or `scale_down.max_step` fewer than
/// `current`.
pub fn step(spec: &Autoscale, current: u64, stabilized: u64) -> u64 {
    if stabilized > current {
        match spec.scale_up.max_step {
            Some(n) => stabilized.min(current.saturating_add(n)),
            None => stabilized,
        }
    } else {
        match spec.scale_down.max_step {
            Some(n) => stabilized.max(current.saturating_sub(n)),
            None => stabilized,
        }
    }
}

fn cause(
    spec: &Autoscale,
    current: u64,
    rec: &Recommendation,
    st: &Stabilized,
    stepped: u64,
    desired: u64,
) -> String {
    let (lo, hi) = (spec.bound(0), spec.bound(u64::MAX));
    let driver = rec.driver.map(|d| &rec.readings[d]);
    if desired > current {
        // Raised by `min` (past the windows and the step, or the recommendation itself).
        if stepped < desired || rec.raw < desired {
            return format!("below min {lo}");
        }
        let mut parts = vec![format!(
            "{} above target",
            driver.map_or("the metrics", String::as_str)
        )];
        if st.count < rec.count {
            parts.push(format!(
                "{} recommended, {} the least over the last {}",
                rec.count,
                st.up,
                words::duration(spec.scale_up.stabilization_ms)
            ));
        }
        if stepped < st.count {
            parts.push(format!(
                "{} wanted, at most +{} at a time (scale_up.max_step)",
                st.count,
                stepped - current
            ));
        }
        return parts.join("; ");
    }
    if desired < current {
        // Lowered by `max`.
        if stepped > desired || rec.raw > desired {
            return format!("above max {hi}");
        }
        let mut parts = vec![format!(
            "{} below target",
            driver.map_or("the metrics", String::as_str)
        )];
        if st.count > rec.count {
            parts.push(format!(
                "{} recommended, {} the most over the last {}",
                rec.count,
                st.down,
                words::duration(spec.scale_down.stabilization_ms)
            ));
        }
        if stepped > st.count {
            parts.push(format!(
                "{} wanted, at most -{} at a time (scale_down.max_step)",
                st.count,
                current - stepped
            ));
        }
        return parts.join("; ");
    }
    // A hold.
    if rec.held {
        if let Some(m) = &rec.missing {
            return format!("holding: {m}");
        }
    }
    if rec.raw > current && current == hi {
        return format!("at max {hi}");
    }
    if rec.raw < current && current == lo {
        return format!("at min {lo}");
    }
    if rec.count < current {
        if st.count == current {
            if let Some(w) = st.watched_ms {
                return format!(
                    "scale-down stabilization: {} recommended, watched for {} of {}",
                    rec.count,
                    words::duration(w),
                    words::duration(spec.scale_down.stabilization_ms)
                );
            }
            return format!(
                "scale-down stabilization: {} recommended, {} within the last {}",
                rec.count,
                st.down,
                words::duration(spec.scale_down.stabilization_ms)
            );
        }
        return format!("{} recommended, scale_down.max_step is 0", st.count);
    }
    if rec.count > current {
        if st.count == current {
            return format!(
                "scale-up stabilization: {} recommended, {} within the last {}",
                rec.count,
                st.up,
                words::duration(spec.scale_up.stabilization_ms)
            );
        }
        return format!("{} recommended, scale_up.max_step is 0", st.count);
    }
    let Some(d) = rec.driver else {
        return "no metrics".into();
    };
    match rec.proposals[d].map(|p| p.why) {
        Some(Why::Tolerance) => "within tolerance".into(),
        Some(Why::PartialHolds) => format!(
            "holding: {}: a partial reading may only scale up",
            rec.readings[d]
        ),
        _ => format!("on target: {}", rec.readings[d]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::autoscale::{Behavior, Metric};

    fn spec() -> Autoscale {
        Autoscale {
            min: 2,
            max: 20,
            metrics: vec![Metric::Gauge {
                port: 9100,
                path: "/metrics".into(),
                name: "inference_queue_depth".into(),
                per_replica: 15.0,
            }],
            scale_up: Behavior {
                stabilization_ms: 0,
                max_step: Some(4),
            },
            scale_down: Behavior {
                stabilization_ms: 300_000,
                max_step: Some(1),
            },
        }
    }

    /// A leader of long standing, and a history that has watched the whole window.
    fn fresh(a: &mut Autoscaler, current: u64, total: f64, now: u64) -> Decision {
        a.evaluate(
            "app/infer",
            &spec(),
            current,
            &[Reading::complete(total)],
            now,
            0,
        )
    }

    #[test]
    fn causes() {
        let mut a = Autoscaler::new();
        let d = fresh(&mut a, 3, 41.0, 0);
        assert_eq!((d.desired, d.cause.as_str()), (3, "within tolerance"));
        assert_eq!(
            d.readings,
            vec!["inference_queue_depth 41 (13.7/15 per replica)"]
        );

        let d = fresh(&mut a, 3, 150.0, 5_000);
        assert_eq!(
            (d.desired, d.cause.as_str()),
            (
                7,
                "inference_queue_depth 150 (50/15 per replica) above target; 10 wanted, at most +4 at a time (scale_up.max_step)"
            )
        );
        let d = fresh(&mut a, 7, 30.0, 10_000);
        assert_eq!(
            (d.desired, d.cause.as_str()),
            (
                7,
                "scale-down stabilization: 2 recommended, 10 within the last 5m0s"
            )
        );
        let d = fresh(&mut a, 7, 30.0, 300_000);
        assert_eq!(
            (d.desired, d.cause.as_str()),
            (
                7,
                "scale-down stabilization: 2 recommended, 10 within the last 5m0s"
            )
        );
        let d = fresh(&mut a, 7, 30.0, 305_000);
        assert_eq!(
            (d.desired, d.cause.as_str()),
            (
                6,
                "inference_queue_depth 30 (4.29/15 per replica) below target; 2 wanted, at most -1 at a time (scale_down.max_step)"
            )
        );
        let d = fresh(&mut a, 20, 600.0, 310_000);
        assert_eq!((d.desired, d.cause.as_str()), (20, "at max 20"));
        let d = fresh(&mut a, 25, 600.0, 315_000);
        assert_eq!((d.desired, d.cause.as_str()), (20, "above max 20"));
        let d = fresh(&mut a, 1, 0.0, 320_000);
        assert_eq!((d.desired, d.cause.as_str()), (2, "below min 2"));
        let d = a.evaluate(
            "app/infer",
            &spec(),
            5,
            &[Reading::missing("no node has reported it in the last 15s")],
            325_000,
            0,
        );
        assert_eq!(
            (d.desired, d.cause.as_str()),
            (
                5,
                "holding: inference_queue_depth cannot be read: no node has reported it in the last 15s"
            )
        );
    }

    #[test]
    fn a_new_leader_says_it_has_not_watched_long_enough() {
        let mut a = Autoscaler::new();
        let eval = |a: &mut Autoscaler, now| {
            a.evaluate(
                "app/infer",
                &spec(),
                7,
                &[Reading::complete(30.0)],
                now,
                990_000,
            )
        };
        eval(&mut a, 1_000_000);
        let d = eval(&mut a, 1_010_000);
        assert_eq!(
            (d.desired, d.cause.as_str()),
            (
                7,
                "scale-down stabilization: 2 recommended, watched for 10s of 5m0s"
            )
        );
        assert_eq!(eval(&mut a, 1_299_999).desired, 7);
        assert_eq!(eval(&mut a, 1_300_000).desired, 6);
        assert_eq!(a.history("app/infer").last(), Some(&(1_300_000, 2)));
        a.forget("app/infer");
        assert!(a.history("app/infer").is_empty());
    }
}
