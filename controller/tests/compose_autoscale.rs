//! `x-shoal-autoscale` in the Compose loader: the exact `Autoscale` each form gives, the
//! defaults, the starting replica count, merging, interpolation and anchors (errors:
//! `compose_autoscale_errors.rs`).

mod autoscale_yaml;

use autoscale_yaml::*;

#[test]
fn the_issue_example_loads_to_the_exact_value() {
    let l = ok(FULL);
    let infer = &l.stack.services["infer"];
    assert_eq!(infer.autoscale, Some(full_autoscale()));
    assert_eq!(infer.replicas, 4, "deploy.replicas within 2..=20 is kept");
    assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
    assert!(l.keys.iter().any(|k| k.service == "infer"
        && k.key == "x-shoal-autoscale"
        && k.disposition == Disposition::Honored));
}

#[test]
fn shoal_config_shows_the_normalized_extension() {
    let out = render(&ok(FULL));
    for want in [
        "autoscale:",
        "min: 2",
        "max: 20",
        "name: inference_queue_depth",
        "window_ms: 120000",
        "above: 0.8",
        "target: 0.7",
        "url: http://prom:9090",
        "stabilization_ms: 300000",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.contains("x-shoal-autoscale") && l.ends_with("honored")),
        "{out}"
    );
}

#[test]
fn defaults_path_window_behaviors_and_replicas() {
    let s = web(&with_limits(
        "min: 3\nmax: 9\nmetrics:\n  - scrape: {port: 8080, histogram: req_seconds, quantile: 0.99, above: 0.25}\n  - scrape: {port: 8080, gauge: queue, per_replica: 2.5}\n",
    ));
    assert_eq!(
        s.autoscale,
        Some(Autoscale {
            min: 3,
            max: 9,
            metrics: vec![
                Metric::Histogram {
                    port: 8080,
                    path: "/metrics".into(),
                    name: "req_seconds".into(),
                    quantile: 0.99,
                    window_ms: 120_000,
                    above: 0.25,
                },
                Metric::Gauge {
                    port: 8080,
                    path: "/metrics".into(),
                    name: "queue".into(),
                    per_replica: 2.5,
                },
            ],
            scale_up: Behavior::up(),
            scale_down: Behavior::down(),
        })
    );
    assert_eq!(s.replicas, 3, "no replica count given: min");
    assert_eq!(Behavior::up().stabilization_ms, 0);
    assert_eq!(Behavior::down().stabilization_ms, 300_000);

    // A behavior given in part keeps the other default.
    let s = web(&with_limits(
        "min: 1\nmax: 2\nmetrics: [{cpu: 50%}]\nscale_up: {max_step: 2}\nscale_down: {max_step: 1}\n",
    ));
    let a = s.autoscale.expect("autoscale");
    assert_eq!(
        a.scale_up,
        Behavior {
            stabilization_ms: 0,
            max_step: Some(2)
        }
    );
    assert_eq!(
        a.scale_down,
        Behavior {
            stabilization_ms: 300_000,
            max_step: Some(1)
        }
    );
    assert_eq!(a.metrics, vec![Metric::Cpu { target: 0.5 }]);
}

#[test]
fn thresholds_durations_and_numbers() {
    let above = |v: &str| {
        let s = web(&with_metric(&format!(
            "scrape: {{port: 9100, histogram: h, quantile: 0.5, window: 30s, above: {v}}}"
        )));
        match &s.autoscale.expect("autoscale").metrics[0] {
            Metric::Histogram {
                above, window_ms, ..
            } => {
                assert_eq!(*window_ms, 30_000);
                *above
            }
            other => panic!("not a histogram: {other:?}"),
        }
    };
    assert_eq!(above("800ms"), 0.8);
    assert_eq!(above("1.5s"), 1.5);
    assert_eq!(above("250us"), 0.00025);
    assert_eq!(above("0.8"), 0.8, "a plain number is taken as is");
    assert_eq!(above("250"), 250.0, "a plain number is taken as is");

    let target = |metric: &str| {
        web(&with_metric(metric))
            .autoscale
            .expect("autoscale")
            .metrics
    };
    assert_eq!(target("cpu: 150%"), vec![Metric::Cpu { target: 1.5 }]);
    assert_eq!(
        target("memory: \"80%\""),
        vec![Metric::Memory { target: 0.8 }]
    );
    assert_eq!(target("cpu: 1000%"), vec![Metric::Cpu { target: 10.0 }]);
    assert_eq!(
        target("scrape: {port: 1, path: /stats/prom, gauge: \"ns:queue\", per_replica: 1}"),
        vec![Metric::Gauge {
            port: 1,
            path: "/stats/prom".into(),
            name: "ns:queue".into(),
            per_replica: 1.0
        }]
    );
    assert_eq!(
        target("prometheus: {url: \"https://user@prom.example.com:9443/base\", query: up, per_replica: 0.5}"),
        vec![Metric::Prometheus {
            url: "https://user@prom.example.com:9443/base".into(),
            query: "up".into(),
            per_replica: 0.5
        }]
    );
}

#[test]
fn the_starting_count_is_the_files_clamped_else_min() {
    let count = |replicas: &str| {
        let yaml = format!(
            "services:\n  web:\n    image: busybox\n    {replicas}\n    x-shoal-autoscale: {{min: 2, max: 5, metrics: [{{scrape: {{port: 9100, gauge: q, per_replica: 1}}}}]}}\n"
        );
        let l = ok(&yaml);
        (l.stack.services["web"].replicas, l.diagnostics)
    };
    let (n, d) = count("deploy: {replicas: 4}");
    assert_eq!((n, d.len()), (4, 0));
    let (n, d) = count("scale: 3");
    assert_eq!((n, d.len()), (3, 0));
    let (n, d) = count("deploy: {replicas: 1}");
    assert_eq!(n, 2, "raised to min");
    assert!(
        d.iter().any(|d| d.severity == Severity::Warning
            && d.key == "services.web.deploy.replicas"
            && d.line == Some(4)
            && d.message.contains("the service starts with 2 replicas")),
        "{d:?}"
    );
    let (n, d) = count("scale: 30");
    assert_eq!(n, 5, "lowered to max");
    assert!(
        d.iter()
            .any(|d| d.key == "services.web.scale" && d.message.contains("outside")),
        "{d:?}"
    );
    let (n, _) = count("labels: {a: b}");
    assert_eq!(n, 2, "no count given: min");
}

#[test]
fn cpu_and_memory_accept_any_limit_or_reservation() {
    let metrics = "x-shoal-autoscale: {min: 1, max: 4, metrics: [{cpu: 70%}, {memory: 80%}]}";
    for resources in [
        "cpus: 0.5\n    mem_limit: 256m",
        "deploy: {resources: {reservations: {cpus: \"0.25\", memory: 128M}}}",
        "deploy: {resources: {limits: {cpus: \"0.25\"}, reservations: {memory: 128M}}}",
    ] {
        let s = web(&format!(
            "services:\n  web:\n    image: busybox\n    {resources}\n    {metrics}\n"
        ));
        assert_eq!(
            s.autoscale.expect("autoscale").metrics,
            vec![Metric::Cpu { target: 0.7 }, Metric::Memory { target: 0.8 }],
            "{resources}"
        );
    }
}

#[test]
fn several_files_interpolation_and_anchors() {
    let base = "\
services:
  web:
    image: busybox
    x-shoal-autoscale:
      min: 2
      max: ${MAX:-20}
      metrics:
        - scrape: {port: 9100, gauge: queue, per_replica: 15}
";
    let prod = "\
services:
  web:
    x-shoal-autoscale:
      max: 30
      scale_down: {stabilization: 10m}
";
    let (_dir, _, r) = load_files(&[("compose.yaml", base), ("compose.prod.yaml", prod)], &[]);
    let l = r.unwrap_or_else(|e| panic!("should load:\n{e}"));
    let a = l.stack.services["web"]
        .autoscale
        .clone()
        .expect("autoscale");
    assert_eq!((a.min, a.max), (2, 30), "the later file's max wins");
    assert_eq!(a.scale_down.stabilization_ms, 600_000);
    assert_eq!(a.metrics.len(), 1);

    let (_dir, _, r) = load_files(&[("compose.yaml", base)], &[("MAX", "12")]);
    let l = r.unwrap_or_else(|e| panic!("should load:\n{e}"));
    assert_eq!(
        l.stack.services["web"].autoscale.as_ref().map(|a| a.max),
        Some(12)
    );
    let (_dir, _, r) = load_files(&[("compose.yaml", base)], &[]);
    let l = r.unwrap_or_else(|e| panic!("should load:\n{e}"));
    assert_eq!(
        l.stack.services["web"].autoscale.as_ref().map(|a| a.max),
        Some(20)
    );

    // An error in the override is placed in the override file.
    let bad = "services:\n  web:\n    x-shoal-autoscale:\n      max: 1\n";
    let (_dir, paths, r) = load_files(&[("compose.yaml", base), ("compose.bad.yaml", bad)], &[]);
    let e = r.expect_err("max below min");
    let d = e
        .diagnostics
        .iter()
        .find(|d| d.key == "services.web.x-shoal-autoscale.max")
        .unwrap_or_else(|| panic!("{e}"));
    assert_eq!((d.file.clone(), d.line), (paths[1].clone(), Some(4)), "{e}");

    let anchors = "\
x-scaling: &scaling
  min: 2
  max: 8
  metrics: [{scrape: {port: 9100, gauge: queue, per_replica: 15}}]
services:
  web:
    image: busybox
    x-shoal-autoscale: *scaling
  worker:
    image: busybox
    x-shoal-autoscale:
      <<: *scaling
      max: 40
";
    let l = ok(anchors);
    let max = |s: &str| l.stack.services[s].autoscale.as_ref().map(|a| a.max);
    assert_eq!((max("web"), max("worker")), (Some(8), Some(40)));
}
