//! `x-shoal-autoscale` in the Compose loader: the exact `Autoscale` each form gives, the
//! defaults, the starting replica count, merging, interpolation and anchors, and errors
//! that name the file, line and key and say what to write.

use std::collections::BTreeMap;
use std::path::PathBuf;

use shoal_controller::compose::{
    load, render, Diagnostic, Disposition, LoadError, LoadOptions, Loaded, Severity,
};
use shoal_proto::autoscale::{Autoscale, Behavior, Metric};
use shoal_proto::spec::ServiceSpec;

/// Writes `files` (name, contents) to a new directory and loads them in order.
fn load_files(
    files: &[(&str, &str)],
    env: &[(&str, &str)],
) -> (tempfile::TempDir, Vec<PathBuf>, Result<Loaded, LoadError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for (name, yaml) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).expect("write compose file");
        paths.push(path);
    }
    let o = LoadOptions {
        files: paths.clone(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    };
    let r = load(&o);
    (dir, paths, r)
}

fn ok(yaml: &str) -> Loaded {
    let (_dir, _, r) = load_files(&[("compose.yaml", yaml)], &[]);
    r.unwrap_or_else(|e| panic!("should load:\n{e}"))
}

fn web(yaml: &str) -> ServiceSpec {
    ok(yaml).stack.services["web"].clone()
}

/// The errors of a file that must not load, and the file's path.
fn errors(yaml: &str) -> (PathBuf, Vec<Diagnostic>) {
    let (_dir, paths, r) = load_files(&[("compose.yaml", yaml)], &[]);
    match r {
        Ok(l) => panic!(
            "should fail, loaded {:#?}",
            l.stack.services.get("web").map(|s| &s.autoscale)
        ),
        Err(e) => (paths[0].clone(), e.diagnostics),
    }
}

/// A service `web` with CPU and memory limits, `x-shoal-autoscale` at line 7 and
/// `body` (indented under it) from line 8 on.
fn with_limits(body: &str) -> String {
    let mut s = String::from(
        "services:\n  web:\n    image: busybox\n    deploy:\n      resources:\n        limits: {cpus: \"1\", memory: 256M}\n    x-shoal-autoscale:\n",
    );
    for line in body.lines() {
        s.push_str("      ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// A body with `min`, `max` (lines 8, 9) and `metrics:` holding `metric` at line 11.
fn with_metric(metric: &str) -> String {
    let mut body = String::from("min: 2\nmax: 20\nmetrics:\n");
    let mut first = true;
    for line in metric.lines() {
        body.push_str(if first { "  - " } else { "    " });
        body.push_str(line);
        body.push('\n');
        first = false;
    }
    with_limits(&body)
}

/// Asserts that loading `yaml` fails with an error at `line` for `key` whose message
/// holds `needle`, printed as `FILE:LINE:COL: error: KEY: MESSAGE`.
#[track_caller]
fn error_at(yaml: &str, key: &str, line: usize, needle: &str) {
    let (file, diags) = errors(yaml);
    let found = diags.iter().find(|d| {
        d.severity == Severity::Error
            && d.key == key
            && d.line == Some(line)
            && d.message.contains(needle)
    });
    let all = diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let Some(d) = found else {
        panic!(
            "no error at line {line} for {key} containing {needle:?} in:\n{all}\n\nfile:\n{yaml}"
        );
    };
    let shown = d.to_string();
    let want = format!("{}:{line}:", file.display());
    assert!(
        shown.starts_with(&want) && shown.contains(&format!("error: {key}: ")),
        "{shown}"
    );
}

const FULL: &str = "\
services:
  infer:
    image: registry.example.com/infer:3
    deploy:
      replicas: 4
      resources:
        limits: {cpus: \"2\", memory: 4G}
    x-shoal-autoscale:
      min: 2
      max: 20
      metrics:
        - scrape: { port: 9100, path: /metrics, gauge: inference_queue_depth, per_replica: 15 }
        - scrape: { port: 9100, histogram: inference_duration_seconds, quantile: 0.95, window: 2m, above: 800ms }
        - cpu: 70%          # average over replicas, of their limit or reservation
        - memory: 80%
        - prometheus: { url: http://prom:9090, query: \"sum(inference_queue_depth)\", per_replica: 15 }
      scale_up: { stabilization: 0s, max_step: 4 }
      scale_down: { stabilization: 5m, max_step: 1 }
";

fn full_autoscale() -> Autoscale {
    Autoscale {
        min: 2,
        max: 20,
        metrics: vec![
            Metric::Gauge {
                port: 9100,
                path: "/metrics".into(),
                name: "inference_queue_depth".into(),
                per_replica: 15.0,
            },
            Metric::Histogram {
                port: 9100,
                path: "/metrics".into(),
                name: "inference_duration_seconds".into(),
                quantile: 0.95,
                window_ms: 120_000,
                above: 0.8,
            },
            Metric::Cpu { target: 0.7 },
            Metric::Memory { target: 0.8 },
            Metric::Prometheus {
                url: "http://prom:9090".into(),
                query: "sum(inference_queue_depth)".into(),
                per_replica: 15.0,
            },
        ],
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

#[test]
fn bounds_errors() {
    let a = "services.web.x-shoal-autoscale";
    error_at(
        &with_limits("max: 3\nmetrics: [{cpu: 50%}]\n"),
        a,
        7,
        "missing required key `min`: add min: N",
    );
    error_at(
        &with_limits("min: 3\nmetrics: [{cpu: 50%}]\n"),
        a,
        7,
        "missing required key `max`: add max: N",
    );
    error_at(
        &with_limits("min: 1\nmax: 3\n"),
        a,
        7,
        "missing required key `metrics`",
    );
    error_at(
        &with_limits("min: 0\nmax: 3\nmetrics: [{cpu: 50%}]\n"),
        &format!("{a}.min"),
        8,
        "min: 0 is not supported yet",
    );
    error_at(
        &with_limits("min: 0\nmax: 3\nmetrics: [{cpu: 50%}]\n"),
        &format!("{a}.min"),
        8,
        "use min: 1 or more",
    );
    error_at(
        &with_limits("min: two\nmax: 3\nmetrics: [{cpu: 50%}]\n"),
        &format!("{a}.min"),
        8,
        "must be a whole number of replicas, e.g. 2, not `two`",
    );
    error_at(
        &with_limits("min: 1.5\nmax: 3\nmetrics: [{cpu: 50%}]\n"),
        &format!("{a}.min"),
        8,
        "must be a whole number",
    );
    error_at(
        &with_limits("min: 4\nmax: 3\nmetrics: [{cpu: 50%}]\n"),
        &format!("{a}.max"),
        9,
        "must be at least min (4), not 3: use max: 4 or more",
    );
    error_at(
        &with_limits("min: 1\nmax: 3\nmetrics: [{cpu: 50%}]\nmaximum: 4\n"),
        &format!("{a}.maximum"),
        11,
        "unknown x-shoal-autoscale key `maximum`: use {min: N, max: N",
    );
    error_at(
        "services:\n  web:\n    image: busybox\n    x-shoal-autoscale: 3\n",
        a,
        4,
        "must be a mapping, not an integer: use {min: N, max: N",
    );
}

#[test]
fn only_replicated_services_autoscale() {
    for mode in ["global", "replicated-job", "global-job"] {
        let yaml = format!(
            "services:\n  web:\n    image: busybox\n    deploy: {{mode: {mode}}}\n    x-shoal-autoscale:\n      min: 1\n      max: 3\n      metrics: [{{scrape: {{port: 9100, gauge: q, per_replica: 1}}}}]\n"
        );
        error_at(
            &yaml,
            "services.web.x-shoal-autoscale",
            5,
            &format!("only replicated services autoscale, and this one is deploy.mode: {mode}"),
        );
    }
}

#[test]
fn metrics_list_errors() {
    let m = "services.web.x-shoal-autoscale.metrics";
    error_at(
        &with_limits("min: 1\nmax: 3\nmetrics: []\n"),
        m,
        10,
        "must list at least one metric: scrape, cpu, memory or prometheus",
    );
    error_at(
        &with_limits("min: 1\nmax: 3\nmetrics: {cpu: 50%}\n"),
        m,
        10,
        "must be a list, not a mapping: e.g. metrics: [{cpu: 70%}]",
    );
    error_at(
        &with_metric("cpu: 70%\nmemory: 80%"),
        &format!("{m}[0]"),
        12,
        "has both `cpu` and `memory`: give each metric its own list entry",
    );
    error_at(
        &with_metric("gpu: 50%"),
        &format!("{m}[0].gpu"),
        11,
        "unknown metric `gpu`: use scrape, cpu, memory or prometheus",
    );
    error_at(
        &with_limits("min: 1\nmax: 3\nmetrics:\n  - cpu\n"),
        &format!("{m}[0]"),
        11,
        "must be a mapping with one of scrape, cpu, memory or prometheus, not `cpu`",
    );
}

#[test]
fn scrape_errors() {
    let s = "services.web.x-shoal-autoscale.metrics[0].scrape";
    let block = |lines: &str| {
        with_metric(&format!(
            "scrape:\n{}",
            lines
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        ))
    };
    // `scrape:` is at line 11, its keys from line 12 on.
    error_at(
        &block("gauge: q\nper_replica: 1"),
        s,
        12,
        "missing required key `port`: add port: N",
    );
    error_at(
        &block("port: 0\ngauge: q\nper_replica: 1"),
        &format!("{s}.port"),
        12,
        "must be a port from 1 to 65535, not `0`",
    );
    error_at(
        &block("port: 70000\ngauge: q\nper_replica: 1"),
        &format!("{s}.port"),
        12,
        "must be a port from 1 to 65535, not `70000`",
    );
    error_at(
        &block("port: 9100\npath: metrics\ngauge: q\nper_replica: 1"),
        &format!("{s}.path"),
        13,
        "must start with `/`, e.g. /metrics, not `metrics`",
    );
    error_at(
        &block("port: 9100\nper_replica: 1"),
        s,
        12,
        "needs gauge: NAME",
    );
    error_at(
        &block("port: 9100\ngauge: q\nhistogram: h\nper_replica: 1"),
        s,
        14,
        "has both gauge and histogram",
    );
    error_at(
        &block("port: 9100\ngauge: q"),
        s,
        12,
        "missing required key `per_replica`: add per_replica: N",
    );
    error_at(
        &block("port: 9100\ngauge: q\nper_replica: 0"),
        &format!("{s}.per_replica"),
        14,
        "must be a number above 0, e.g. 15, not `0`",
    );
    error_at(
        &block("port: 9100\ngauge: q\nper_replica: lots"),
        &format!("{s}.per_replica"),
        14,
        "must be a number above 0",
    );
    error_at(
        &block("port: 9100\ngauge: 9q\nper_replica: 1"),
        &format!("{s}.gauge"),
        13,
        "`9q` is not a Prometheus metric name",
    );
    for extra in ["quantile: 0.9", "above: 1s", "window: 1m"] {
        let key = extra.split(':').next().unwrap_or_default();
        error_at(
            &block(&format!("port: 9100\ngauge: q\nper_replica: 1\n{extra}")),
            &format!("{s}.{key}"),
            15,
            "belongs to a histogram, not a gauge: remove it, or use histogram: NAME",
        );
    }
    let h = |rest: &str| block(&format!("port: 9100\nhistogram: h\n{rest}"));
    // The histogram's own keys start at line 14.
    error_at(
        &h("quantile: 0.9\nabove: 1s\nper_replica: 1"),
        &format!("{s}.per_replica"),
        16,
        "belongs to a gauge, not a histogram",
    );
    error_at(
        &h("above: 1s"),
        s,
        12,
        "missing required key `quantile`: add quantile: Q between 0 and 1",
    );
    error_at(
        &h("quantile: 1\nabove: 1s"),
        &format!("{s}.quantile"),
        14,
        "must be between 0 and 1 (exclusive), e.g. 0.95 for p95, not `1`",
    );
    error_at(
        &h("quantile: 0\nabove: 1s"),
        &format!("{s}.quantile"),
        14,
        "must be between 0 and 1 (exclusive)",
    );
    error_at(
        &h("quantile: 95\nabove: 1s"),
        &format!("{s}.quantile"),
        14,
        "not `95`: write 0.95 for p95",
    );
    error_at(
        &h("quantile: 0.9"),
        s,
        12,
        "missing required key `above`: add above: THRESHOLD",
    );
    error_at(
        &h("quantile: 0.9\nabove: soon"),
        &format!("{s}.above"),
        15,
        "must be a duration (e.g. 800ms, 1.5s: taken in seconds) or a number",
    );
    error_at(
        &h("quantile: 0.9\nabove: 0ms"),
        &format!("{s}.above"),
        15,
        "must be above 0",
    );
    error_at(
        &h("quantile: 0.9\nabove: 1s\nwindow: 5s"),
        &format!("{s}.window"),
        16,
        "must be at least 10s",
    );
    error_at(
        &h("quantile: 0.9\nabove: 1s\nwindow: 120"),
        &format!("{s}.window"),
        16,
        "invalid duration `120`: use a number with a unit",
    );
    error_at(
        &h("quantile: 0.9\nabove: 1s\nwindw: 2m"),
        &format!("{s}.windw"),
        16,
        "unknown scrape key `windw`",
    );
    error_at(
        &with_metric("scrape: 9100"),
        s,
        11,
        "must be a mapping, not an integer: use {port: N, gauge: NAME",
    );
}

#[test]
fn histogram_bucket_suffix_is_a_warning() {
    let l = ok(&with_metric(
        "scrape: {port: 9100, histogram: req_seconds_bucket, quantile: 0.9, above: 1s}",
    ));
    assert!(
        l.diagnostics.iter().any(|d| d.severity == Severity::Warning
            && d.line == Some(11)
            && d.message.contains("write histogram: req_seconds")),
        "{:?}",
        l.diagnostics
    );
}

#[test]
fn cpu_and_memory_errors() {
    let m = "services.web.x-shoal-autoscale.metrics[0]";
    error_at(
        &with_metric("cpu: 70"),
        &format!("{m}.cpu"),
        11,
        "write `70%`",
    );
    error_at(
        &with_metric("cpu: 0.7"),
        &format!("{m}.cpu"),
        11,
        "write `70%`",
    );
    error_at(
        &with_metric("memory: 80"),
        &format!("{m}.memory"),
        11,
        "write `80%`",
    );
    error_at(
        &with_metric("cpu: 0%"),
        &format!("{m}.cpu"),
        11,
        "must be above 0% and at most 1000%, not `0%`",
    );
    error_at(
        &with_metric("cpu: 1001%"),
        &format!("{m}.cpu"),
        11,
        "must be above 0% and at most 1000%",
    );
    error_at(
        &with_metric("cpu: lots%"),
        &format!("{m}.cpu"),
        11,
        "must be a percentage like `70%`, not `lots%`",
    );
    error_at(
        &with_metric("cpu: [70%]"),
        &format!("{m}.cpu"),
        11,
        "must be a percentage like `70%`, not a list",
    );

    let bare = |metric: &str| {
        format!(
            "services:\n  web:\n    image: busybox\n    x-shoal-autoscale:\n      min: 1\n      max: 3\n      metrics:\n        - {metric}\n"
        )
    };
    error_at(
        &bare("cpu: 70%"),
        &format!("{m}.cpu"),
        8,
        "add deploy.resources.limits.cpus (or deploy.resources.reservations.cpus)",
    );
    error_at(
        &bare("memory: 80%"),
        &format!("{m}.memory"),
        8,
        "add deploy.resources.limits.memory (or deploy.resources.reservations.memory)",
    );
    // A memory limit does not make a CPU target valid.
    let only_memory = "services:\n  web:\n    image: busybox\n    mem_limit: 1g\n    x-shoal-autoscale:\n      min: 1\n      max: 3\n      metrics:\n        - cpu: 70%\n";
    error_at(only_memory, &format!("{m}.cpu"), 9, "cpu is a percentage of the replicas' CPU limit or reservation, and the service has neither");
}

#[test]
fn prometheus_errors() {
    let p = "services.web.x-shoal-autoscale.metrics[0].prometheus";
    let block = |lines: &str| {
        with_metric(&format!(
            "prometheus:\n{}",
            lines
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        ))
    };
    let q = "query: sum(q)\nper_replica: 10";
    error_at(&block(&format!("url: ftp://prom:9090\n{q}")), &format!("{p}.url"), 12, "must be an http:// or https:// URL with a host, e.g. http://prometheus:9090, not `ftp://prom:9090`");
    error_at(
        &block(&format!("url: http://\n{q}")),
        &format!("{p}.url"),
        12,
        "must be an http:// or https:// URL with a host",
    );
    error_at(
        &block(&format!("url: http://:9090/\n{q}")),
        &format!("{p}.url"),
        12,
        "must be an http:// or https:// URL with a host",
    );
    error_at(
        &block(&format!("url: http://prom:port\n{q}")),
        &format!("{p}.url"),
        12,
        "must be an http:// or https:// URL with a host",
    );
    error_at(
        &block(&format!("url: prom:9090\n{q}")),
        &format!("{p}.url"),
        12,
        "must be an http:// or https:// URL",
    );
    error_at(
        &block("url: http://prom:9090\nquery: \" \"\nper_replica: 10"),
        &format!("{p}.query"),
        13,
        "must not be empty: write a PromQL query",
    );
    error_at(
        &block("url: http://prom:9090\nquery: sum(q)"),
        p,
        12,
        "missing required key `per_replica`: add per_replica: N",
    );
    error_at(
        &block("url: http://prom:9090\nper_replica: 10"),
        p,
        12,
        "missing required key `query`: add query: PROMQL",
    );
    error_at(
        &block(q),
        p,
        12,
        "missing required key `url`: add url: http://HOST:9090",
    );
    error_at(
        &block("url: http://prom:9090\nquery: sum(q)\nper_replica: -1"),
        &format!("{p}.per_replica"),
        14,
        "must be a number above 0",
    );
    error_at(&block(&format!("url: http://prom:9090\n{q}\ntimeout: 5s")), &format!("{p}.timeout"), 15, "unknown prometheus key `timeout`: use {url: http://HOST:9090, query: PROMQL, per_replica: N}");
    error_at(
        &with_metric("prometheus: http://prom:9090"),
        p,
        11,
        "must be a mapping, not a string",
    );
}

#[test]
fn behavior_errors() {
    let a = "services.web.x-shoal-autoscale";
    let body =
        |extra: &str| with_limits(&format!("min: 1\nmax: 3\nmetrics: [{{cpu: 50%}}]\n{extra}"));
    // `extra` starts at line 11.
    error_at(
        &body("scale_up:\n  stabilization: 30"),
        &format!("{a}.scale_up.stabilization"),
        12,
        "invalid duration `30`: use a number with a unit, e.g. 10s",
    );
    error_at(
        &body("scale_down:\n  max_step: 0"),
        &format!("{a}.scale_down.max_step"),
        12,
        "must be at least 1: leave max_step out for no limit",
    );
    error_at(
        &body("scale_down:\n  max_step: -2"),
        &format!("{a}.scale_down.max_step"),
        12,
        "must be a whole number of replicas",
    );
    error_at(
        &body("scale_down:\n  cooldown: 5m"),
        &format!("{a}.scale_down.cooldown"),
        12,
        "unknown scale_down key `cooldown`: use {stabilization: DURATION, max_step: N}",
    );
    error_at(
        &body("scale_up: fast"),
        &format!("{a}.scale_up"),
        11,
        "must be a mapping, not a string: use {stabilization: DURATION, max_step: N}",
    );
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let (_, diags) = errors(&with_limits(
        "min: 0\nmax: 3\nmetrics:\n  - cpu: 70\n  - scrape: {port: 0, gauge: q, per_replica: 1}\nscale_up: {max_step: 0}\n",
    ));
    let keys: Vec<&str> = diags.iter().map(|d| d.key.as_str()).collect();
    for want in [
        "services.web.x-shoal-autoscale.min",
        "services.web.x-shoal-autoscale.metrics[0].cpu",
        "services.web.x-shoal-autoscale.metrics[1].scrape.port",
        "services.web.x-shoal-autoscale.scale_up.max_step",
    ] {
        assert!(keys.contains(&want), "{want} missing from {keys:?}");
    }
}

#[test]
fn missing_keys_of_one_mapping_are_named_together() {
    // The loader keeps one error per place, so what is wrong with a mapping as a whole
    // is said in one message.
    let (_, diags) = errors(&with_metric("scrape: {gauge: q}"));
    let d = diags
        .iter()
        .find(|d| d.key == "services.web.x-shoal-autoscale.metrics[0].scrape")
        .unwrap_or_else(|| panic!("{diags:?}"));
    assert_eq!(d.line, Some(11));
    assert!(
        d.message.contains("missing required key `port`")
            && d.message.contains("missing required key `per_replica`"),
        "{}",
        d.message
    );

    let (_, diags) = errors(
        "services:\n  web:\n    image: busybox\n    deploy: {mode: global}\n    x-shoal-autoscale:\n      metrics: [{scrape: {port: 9100, gauge: q, per_replica: 1}}]\n",
    );
    let d = diags
        .iter()
        .find(|d| d.key == "services.web.x-shoal-autoscale")
        .unwrap_or_else(|| panic!("{diags:?}"));
    assert_eq!(d.line, Some(5));
    for want in [
        "only replicated services autoscale",
        "missing required key `min`",
        "missing required key `max`",
    ] {
        assert!(d.message.contains(want), "{want}: {}", d.message);
    }
}
