//! The autoscaler's decisions (issue 16), by exact counts: a table of inputs -> desired
//! replicas, scenarios over simulated time (stabilization, a new leader, a flapping
//! signal over an hour), and properties (never outside min..=max, missing data never
//! lowers the count, step limits hold).

use proptest::prelude::*;
use shoal_controller::autoscale::{Autoscaler, Decision, Reading};
use shoal_proto::autoscale::{Autoscale, Behavior, Metric};

const KEY: &str = "app/infer";
const S: u64 = 1_000;
const MIN: u64 = 60 * S;

fn gauge(per_replica: f64) -> Metric {
    Metric::Gauge {
        port: 9100,
        path: "/metrics".into(),
        name: "inference_queue_depth".into(),
        per_replica,
    }
}

fn p95(above: f64) -> Metric {
    Metric::Histogram {
        port: 9100,
        path: "/metrics".into(),
        name: "inference_duration_seconds".into(),
        quantile: 0.95,
        window_ms: 2 * MIN,
        above,
    }
}

fn cpu(target: f64) -> Metric {
    Metric::Cpu { target }
}

fn memory(target: f64) -> Metric {
    Metric::Memory { target }
}

fn prometheus(per_replica: f64) -> Metric {
    Metric::Prometheus {
        url: "http://prom:9090".into(),
        query: "sum(inference_queue_depth)".into(),
        per_replica,
    }
}

fn behavior(stabilization_ms: u64, max_step: Option<u64>) -> Behavior {
    Behavior {
        stabilization_ms,
        max_step,
    }
}

/// 2..=20, no windows and no step limits unless a case sets them.
fn spec(metrics: Vec<Metric>) -> Autoscale {
    Autoscale {
        min: 2,
        max: 20,
        metrics,
        scale_up: behavior(0, None),
        scale_down: behavior(0, None),
    }
}

/// The issue's example: up at once by at most 4, down after 5 minutes by at most 1.
fn issue_spec(metrics: Vec<Metric>) -> Autoscale {
    Autoscale {
        scale_up: behavior(0, Some(4)),
        scale_down: behavior(5 * MIN, Some(1)),
        ..spec(metrics)
    }
}

fn v(value: f64) -> Reading {
    Reading::complete(value)
}

fn partial(value: f64) -> Reading {
    Reading::partial(value, "2 of 3 replicas read")
}

fn missing(why: &str) -> Reading {
    Reading::missing(why)
}

struct Case {
    name: &'static str,
    spec: Autoscale,
    current: u64,
    readings: Vec<Reading>,
    desired: u64,
    /// The exact cause, where the case is about it.
    cause: Option<&'static str>,
}

fn case(
    name: &'static str,
    spec: Autoscale,
    current: u64,
    readings: Vec<Reading>,
    desired: u64,
) -> Case {
    Case {
        name,
        spec,
        current,
        readings,
        desired,
        cause: None,
    }
}

/// One decision by a leader that has watched for long and a service seen for the first
/// time: with a scale-down window, the first decision cannot scale down (it has not
/// watched the window), which the table's cases without a window do not meet.
fn once(spec: &Autoscale, current: u64, readings: &[Reading]) -> Decision {
    Autoscaler::new().evaluate(KEY, spec, current, readings, 100 * MIN, 0)
}

#[test]
fn table_of_decisions() {
    let cases = vec![
        // Gauges: ceil(total / per_replica), unless within 10% of current * per_replica.
        Case {
            cause: Some("inference_queue_depth 41 (20.5/15 per replica) above target"),
            ..case("gauge scales up", spec(vec![gauge(15.0)]), 2, vec![v(41.0)], 3)
        },
        case("gauge 100 at 3", spec(vec![gauge(15.0)]), 3, vec![v(100.0)], 7),
        Case {
            cause: Some("within tolerance"),
            ..case("gauge within tolerance", spec(vec![gauge(15.0)]), 3, vec![v(41.0)], 3)
        },
        case("gauge just inside the band", spec(vec![gauge(15.0)]), 3, vec![v(49.0)], 3),
        case("gauge just outside the band", spec(vec![gauge(15.0)]), 3, vec![v(50.0)], 4),
        Case {
            cause: Some("inference_queue_depth 30 (6/15 per replica) below target"),
            ..case("gauge scales down", spec(vec![gauge(15.0)]), 5, vec![v(30.0)], 2)
        },
        case("prometheus like a gauge", spec(vec![prometheus(15.0)]), 3, vec![v(90.0)], 6),
        // Histograms: ratio = quantile / above.
        Case {
            cause: Some("p95 inference_duration_seconds 1.2/0.8 above target"),
            ..case("p95 scales up", spec(vec![p95(0.8)]), 4, vec![v(1.2)], 6)
        },
        case("p95 within tolerance", spec(vec![p95(0.8)]), 4, vec![v(0.85)], 4),
        case("p95 without traffic reads 0", spec(vec![p95(0.8)]), 4, vec![v(0.0)], 2),
        case("p95 halves", spec(vec![p95(0.8)]), 8, vec![v(0.4)], 4),
        // cpu and memory: ratio = average / target.
        Case {
            cause: Some("cpu 105%/70% above target"),
            ..case("cpu scales up", spec(vec![cpu(0.7)]), 3, vec![v(1.05)], 5)
        },
        case("cpu scales down", spec(vec![cpu(0.7)]), 4, vec![v(0.35)], 2),
        case("cpu within tolerance", spec(vec![cpu(0.7)]), 4, vec![v(0.75)], 4),
        case("memory scales up", spec(vec![memory(0.8)]), 2, vec![v(1.0)], 3),
        // The largest proposal wins.
        Case {
            cause: Some("cpu 140%/70% above target"),
            ..case(
                "cpu above a quiet queue",
                spec(vec![gauge(15.0), cpu(0.7)]),
                3,
                vec![v(10.0), v(1.4)],
                6,
            )
        },
        case(
            "queue above an idle cpu",
            spec(vec![gauge(15.0), cpu(0.7)]),
            3,
            vec![v(150.0), v(0.1)],
            10,
        ),
        // Step limits, then min..=max.
        Case {
            cause: Some(
                "inference_queue_depth 300 (100/15 per replica) above target; 20 wanted, at most +4 at a time (scale_up.max_step)",
            ),
            ..case("up at most 4 at a time", issue_spec(vec![gauge(15.0)]), 3, vec![v(300.0)], 7)
        },
        Case {
            spec: Autoscale {
                scale_down: behavior(0, Some(1)),
                ..spec(vec![gauge(15.0)])
            },
            ..case("down at most 1 at a time", spec(vec![]), 10, vec![v(15.0)], 9)
        },
        case("never above max", spec(vec![gauge(15.0)]), 5, vec![v(1000.0)], 20),
        case("never below min", spec(vec![gauge(15.0)]), 5, vec![v(0.0)], 2),
        Case {
            cause: Some("at max 20"),
            ..case("at max", spec(vec![gauge(15.0)]), 20, vec![v(1000.0)], 20)
        },
        Case {
            cause: Some("at min 2"),
            ..case("at min", spec(vec![gauge(15.0)]), 2, vec![v(0.0)], 2)
        },
        Case {
            spec: Autoscale {
                min: 8,
                ..issue_spec(vec![gauge(15.0)])
            },
            cause: Some("below min 8"),
            ..case("below min: to min at once, past the step", spec(vec![]), 1, vec![v(0.0)], 8)
        },
        Case {
            cause: Some("above max 20"),
            ..case(
                "above max: to max at once, past the window and the step",
                issue_spec(vec![gauge(15.0)]),
                30,
                vec![v(0.0)],
                20,
            )
        },
        // Missing data holds, and never scales down.
        Case {
            cause: Some("holding: inference_queue_depth cannot be read: no node has reported it in the last 15s"),
            ..case(
                "missing holds",
                spec(vec![gauge(15.0)]),
                5,
                vec![missing("no node has reported it in the last 15s")],
                5,
            )
        },
        Case {
            cause: Some("holding: p95 inference_duration_seconds cannot be read: not measured over a window yet"),
            ..case(
                "missing holds though another metric says fewer",
                spec(vec![cpu(0.7), p95(0.8)]),
                5,
                vec![v(0.1), missing("not measured over a window yet")],
                5,
            )
        },
        case(
            "missing does not stop another metric scaling up",
            spec(vec![gauge(15.0), cpu(0.7)]),
            5,
            vec![v(150.0), missing("no stats")],
            10,
        ),
        case("a reading left out is missing", spec(vec![gauge(15.0), cpu(0.7)]), 5, vec![v(0.0)], 5),
        Case {
            cause: Some("holding: prometheus cannot be read: GET http://prom:9090/api/v1/query: connection refused"),
            ..case(
                "prometheus unreachable holds",
                spec(vec![prometheus(15.0)]),
                4,
                vec![missing("GET http://prom:9090/api/v1/query: connection refused")],
                4,
            )
        },
        case("missing below min still goes to min", spec(vec![gauge(15.0)]), 1, vec![missing("x")], 2),
        // A partial reading may only scale up.
        Case {
            cause: Some("holding: cpu 10%/70% (2 of 3 replicas read): a partial reading may only scale up"),
            ..case("partial low holds", spec(vec![cpu(0.7)]), 5, vec![partial(0.1)], 5)
        },
        case("partial high scales up", spec(vec![cpu(0.7)]), 3, vec![partial(1.4)], 6),
        case("partial gauge high scales up", spec(vec![gauge(15.0)]), 2, vec![partial(100.0)], 7),
        case("partial gauge low holds", spec(vec![gauge(15.0)]), 6, vec![partial(15.0)], 6),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let d = once(&c.spec, c.current, &c.readings);
        if d.desired != c.desired || c.cause.is_some_and(|cause| cause != d.cause) {
            failures.push(format!(
                "{}: from {} wanted {} ({:?}), got {} ({:?})",
                c.name, c.current, c.desired, c.cause, d.desired, d.cause
            ));
        }
        assert_eq!(d.readings.len(), c.spec.metrics.len(), "{}", c.name);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn readings_in_words() {
    let s = spec(vec![
        gauge(15.0),
        p95(0.8),
        cpu(0.7),
        memory(0.8),
        prometheus(15.0),
    ]);
    let d = once(
        &s,
        3,
        &[v(41.0), v(0.42), v(0.35), missing("no stats"), v(41.0)],
    );
    assert_eq!(
        d.readings,
        vec![
            "inference_queue_depth 41 (13.7/15 per replica)",
            "p95 inference_duration_seconds 0.42/0.8",
            "cpu 35%/70%",
            "memory: cannot be read: no stats",
            "prometheus 41 (13.7/15 per replica)",
        ]
    );
    assert_eq!(
        (d.desired, d.cause.as_str()),
        (3, "holding: memory cannot be read: no stats")
    );
}

/// Runs `signal(t)` (one reading per metric) every 5 s from `from` to `to`, the count
/// following each decision; returns `(time, new count)` of every change.
fn simulate(
    a: &mut Autoscaler,
    spec: &Autoscale,
    start: u64,
    (from, to): (u64, u64),
    watching_since: u64,
    mut signal: impl FnMut(u64, u64) -> Vec<Reading>,
) -> (u64, Vec<(u64, u64)>) {
    let mut current = start;
    let mut changes = Vec::new();
    let mut t = from;
    while t < to {
        let d = a.evaluate(KEY, spec, current, &signal(t, current), t, watching_since);
        if d.desired != current {
            changes.push((t, d.desired));
            current = d.desired;
        }
        t += 5 * S;
    }
    (current, changes)
}

#[test]
fn scale_down_keeps_the_most_recommended_over_the_window() {
    let s = Autoscale {
        min: 2,
        max: 20,
        metrics: vec![gauge(15.0)],
        scale_up: behavior(0, None),
        scale_down: behavior(5 * MIN, None),
    };
    // The queue falls in steps: recommendations 10 (within tolerance at 10) until 55s,
    // 6 from 60s, 4 from 120s, 2 from 200s.
    let total = |t: u64| match t {
        t if t < 60 * S => 150.0,
        t if t < 120 * S => 90.0,
        t if t < 200 * S => 60.0,
        _ => 30.0,
    };
    let mut a = Autoscaler::new();
    let (end, changes) = simulate(&mut a, &s, 10, (0, 20 * MIN), 0, |t, _| vec![v(total(t))]);
    // Each lower count once the higher recommendations are 5 minutes old: 10 was last
    // recommended at 55s, 6 at 115s, 4 at 195s.
    assert_eq!(changes, vec![(355 * S, 6), (415 * S, 4), (495 * S, 2)]);
    assert_eq!(end, 2);
}

#[test]
fn scale_up_stabilization_takes_the_least_over_its_window() {
    let s = Autoscale {
        scale_up: behavior(MIN, None),
        ..spec(vec![gauge(15.0)])
    };
    // The queue wants 5, but for one spike at 30s that wants 20: the spike is never the
    // least of the last minute.
    let mut a = Autoscaler::new();
    let (_, changes) = simulate(&mut a, &s, 2, (0, 5 * MIN), 0, |t, _| {
        vec![v(if t == 30 * S { 300.0 } else { 75.0 })]
    });
    assert_eq!(changes, vec![(0, 5)]);

    // Lower first, then higher: the higher count waits a minute.
    let mut a = Autoscaler::new();
    let (_, changes) = simulate(&mut a, &s, 2, (0, 5 * MIN), 0, |t, _| {
        vec![v(if t < 30 * S { 75.0 } else { 120.0 })]
    });
    // 5 at once; 8 once the last 5 (at 25s) is a minute old.
    assert_eq!(changes, vec![(0, 5), (85 * S, 8)]);
}

#[test]
fn a_new_leader_does_not_scale_down_before_its_window() {
    let s = issue_spec(vec![gauge(15.0)]);
    // The old leader scaled to 10; the queue is now quiet. A new leader takes over at
    // 1h: it has no history, and must not read its empty window as "nothing higher".
    let elected = 60 * MIN;
    let mut a = Autoscaler::new();
    let (end, changes) = simulate(
        &mut a,
        &s,
        10,
        (elected, elected + 10 * MIN),
        elected,
        |_, _| vec![v(15.0)],
    );
    // First step down once it has watched 5 minutes, then one per decision (max_step 1).
    assert_eq!(changes[0], (elected + 5 * MIN, 9));
    assert_eq!(changes.len(), 8);
    assert_eq!(changes[7], (elected + 5 * MIN + 35 * S, 2));
    assert_eq!(end, 2);

    // It scales up at once, though.
    let mut a = Autoscaler::new();
    let d = a.evaluate(KEY, &s, 3, &[v(100.0)], elected, elected);
    assert_eq!(d.desired, 7);

    // A leader that became leader long ago but sees the service for the first time
    // (just deployed, or just autoscaled) waits the window too.
    let mut a = Autoscaler::new();
    let d = a.evaluate(KEY, &s, 10, &[v(15.0)], elected, 0);
    assert_eq!(d.desired, 10);
    assert_eq!(
        d.cause,
        "scale-down stabilization: 2 recommended, watched for 0s of 5m0s"
    );
}

/// xorshift64: a fixed noisy sequence.
struct Noise(u64);

impl Noise {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

#[test]
fn a_flapping_signal_changes_the_count_at_most_once_per_window() {
    // A queue of 45 +- 30% every 5 s for an hour: around 3 replicas' target of 15 each.
    let hour = 60 * MIN;
    let run = |spec: &Autoscale| {
        let mut noise = Noise(0x5eed_1234_abcd_0042);
        let mut a = Autoscaler::new();
        simulate(&mut a, spec, 3, (0, hour), 0, |_, _| {
            vec![v(45.0 * (1.0 + 0.3 * noise.next()))]
        })
    };
    let (_, unstabilized) = run(&Autoscale {
        scale_down: behavior(0, Some(1)),
        ..issue_spec(vec![gauge(15.0)])
    });
    assert!(
        unstabilized.len() > 50,
        "without a window the signal flaps ({} changes): the test's signal is noisy enough",
        unstabilized.len()
    );

    let window = 5 * MIN;
    let (_, changes) = run(&issue_spec(vec![gauge(15.0)]));
    assert!(!changes.is_empty(), "the noise crosses the target");
    for pair in changes.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= window,
            "two changes within one window: {pair:?} (all: {changes:?})"
        );
    }
    assert!(changes.len() as u64 <= hour / window, "{changes:?}");
}

/// A reading on the scale of `high` (the gauge's total, the p95 in seconds, the cpu
/// fraction): mostly complete, sometimes partial or missing.
fn arb_reading(high: f64) -> impl Strategy<Value = Reading> {
    prop_oneof![
        3 => (0.0..high).prop_map(Reading::complete),
        1 => (0.0..high).prop_map(|x| Reading::partial(x, "some replicas read")),
        1 => Just(Reading::missing("no node has reported it")),
    ]
}

fn arb_spec() -> impl Strategy<Value = Autoscale> {
    (
        1u64..5,
        0u64..20,
        prop_oneof![Just(0u64), Just(30 * S), Just(MIN)],
        proptest::option::of(0u64..5),
        prop_oneof![Just(0u64), Just(MIN), Just(5 * MIN)],
        proptest::option::of(0u64..3),
    )
        .prop_map(
            |(min, span, up_ms, up_step, down_ms, down_step)| Autoscale {
                min,
                max: min + span,
                metrics: vec![gauge(15.0), p95(0.8), cpu(0.7)],
                scale_up: behavior(up_ms, up_step),
                scale_down: behavior(down_ms, down_step),
            },
        )
}

/// One decision's inputs: time since the last, the readings, and a count set from
/// outside (`shoal scale`, a spec change) instead of the last decision's.
fn arb_step() -> impl Strategy<Value = (u64, Vec<Reading>, Option<u64>)> {
    (
        1u64..(2 * MIN),
        (arb_reading(300.0), arb_reading(2.0), arb_reading(2.0))
            .prop_map(|(a, b, c)| vec![a, b, c]),
        proptest::option::weighted(0.15, 0u64..40),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decisions_keep_their_promises(
        spec in arb_spec(),
        start in 0u64..40,
        watching_since in 0u64..(10 * MIN),
        steps in proptest::collection::vec(arb_step(), 1..40),
    ) {
        let mut a = Autoscaler::new();
        let mut now = watching_since;
        let mut current = start;
        for (dt, readings, set) in steps {
            now += dt;
            if let Some(n) = set {
                current = n;
            }
            let d = a.evaluate(KEY, &spec, current, &readings, now, watching_since);
            let in_bounds = spec.min <= current && current <= spec.max;
            prop_assert!(
                spec.min <= d.desired && d.desired <= spec.max,
                "{} outside {}..={}", d.desired, spec.min, spec.max
            );
            prop_assert_eq!(d.readings.len(), 3);
            if in_bounds && readings.iter().any(|r| matches!(r, Reading::Missing(_))) {
                prop_assert!(d.desired >= current, "missing data lowered {} to {}: {}", current, d.desired, d.cause);
            }
            if in_bounds && readings.iter().all(|r| matches!(r, Reading::Value { complete: false, .. })) {
                prop_assert!(d.desired >= current, "partial readings lowered {} to {}: {}", current, d.desired, d.cause);
            }
            if in_bounds {
                if let Some(n) = spec.scale_up.max_step {
                    prop_assert!(d.desired <= current + n, "up {} -> {} past max_step {}", current, d.desired, n);
                }
                if let Some(n) = spec.scale_down.max_step {
                    prop_assert!(d.desired + n >= current, "down {} -> {} past max_step {}", current, d.desired, n);
                }
            }
            if d.desired < current && in_bounds {
                // Never down before a whole window was watched by this leader.
                prop_assert!(now - watching_since >= spec.scale_down.stabilization_ms);
            }
            current = d.desired;
        }
    }
}
