//! Helpers of the `x-shoal-autoscale` loader tests (`compose_autoscale*.rs`): files
//! written and loaded, errors asserted at their line, the example.
#![allow(dead_code, unused_imports)]

pub use std::collections::BTreeMap;
pub use std::path::PathBuf;

pub use shoal_controller::compose::{
    load, render, Diagnostic, Disposition, LoadError, LoadOptions, Loaded, Severity,
};
pub use shoal_proto::autoscale::{Autoscale, Behavior, Metric};
pub use shoal_proto::spec::ServiceSpec;

/// Writes `files` (name, contents) to a new directory and loads them in order.
pub fn load_files(
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

pub fn ok(yaml: &str) -> Loaded {
    let (_dir, _, r) = load_files(&[("compose.yaml", yaml)], &[]);
    r.unwrap_or_else(|e| panic!("should load:\n{e}"))
}

pub fn web(yaml: &str) -> ServiceSpec {
    ok(yaml).stack.services["web"].clone()
}

/// The errors of a file that must not load, and the file's path.
pub fn errors(yaml: &str) -> (PathBuf, Vec<Diagnostic>) {
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
pub fn with_limits(body: &str) -> String {
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
pub fn with_metric(metric: &str) -> String {
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
pub fn error_at(yaml: &str, key: &str, line: usize, needle: &str) {
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

pub const FULL: &str = "\
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

pub fn full_autoscale() -> Autoscale {
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
