//! The `metrics:` of `x-shoal-autoscale`: each entry names one signal (`scrape:` is
//! read in `scrape.rs`).
//!
//! ```yaml
//! metrics:
//!   - scrape: { port: 9100, path: /metrics, gauge: inference_queue_depth, per_replica: 15 }
//!   - scrape: { port: 9100, histogram: inference_duration_seconds, quantile: 0.95, window: 2m, above: 800ms }
//!   - cpu: 70%
//!   - memory: 80%
//!   - prometheus: { url: http://prom:9090, query: "sum(inference_queue_depth)", per_replica: 15 }
//! ```

use shoal_proto::autoscale::{trim_float, Metric};
use shoal_proto::spec::{Limits, ServiceSpec};

use super::super::diag::Sink;
use super::super::value::text;
use super::super::yaml::{Key, Node, Value};
use super::{errors, positive, shown, Here};

const KINDS: &str = "scrape, cpu, memory or prometheus";
const PROMETHEUS_HOW: &str = "use {url: http://HOST:9090, query: PROMQL, per_replica: N}";

/// The whole list; errors are reported and the entries in error left out.
pub(super) fn list(n: &Node, spec: &ServiceSpec, sink: &mut Sink, path: &str) -> Vec<Metric> {
    let Value::Seq(items) = &n.value else {
        sink.error(
            n.pos,
            path,
            format!(
                "must be a list, not {}: e.g. metrics: [{{cpu: 70%}}]",
                n.type_name()
            ),
        );
        return Vec::new();
    };
    if items.is_empty() {
        sink.error(
            n.pos,
            path,
            format!("must list at least one metric: {KINDS}"),
        );
    }
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| entry(item, spec, sink, &format!("{path}[{i}]")))
        .collect()
}

/// One entry: a mapping with exactly one of the metric kinds.
fn entry(n: &Node, spec: &ServiceSpec, sink: &mut Sink, path: &str) -> Option<Metric> {
    let m = match &n.value {
        Value::Map(m) if !m.is_empty() => m,
        _ => {
            sink.error(
                n.pos,
                path,
                format!(
                    "must be a mapping with one of {KINDS}, not {}",
                    match &n.value {
                        Value::Map(_) => "an empty mapping".to_string(),
                        _ => shown(n),
                    }
                ),
            );
            return None;
        }
    };
    let mut found: Option<(&Key, &Node)> = None;
    let mut ok = true;
    for (k, v) in m {
        match k.name.as_str() {
            "scrape" | "cpu" | "memory" | "prometheus" => match found {
                Some((first, _)) => {
                    sink.error(
                        k.pos,
                        path,
                        format!(
                            "has both `{}` and `{}`: give each metric its own list entry",
                            first.name, k.name
                        ),
                    );
                    ok = false;
                }
                None => found = Some((k, v)),
            },
            other => {
                sink.error(
                    k.pos,
                    &format!("{path}.{other}"),
                    format!("unknown metric `{other}`: use {KINDS}"),
                );
                ok = false;
            }
        }
    }
    let (k, v) = found?;
    let p = format!("{path}.{}", k.name);
    let metric = match k.name.as_str() {
        "scrape" => super::scrape::scrape(v, sink, &p),
        "prometheus" => prometheus(v, sink, &p),
        _ => share(k, v, spec, sink, &p),
    };
    metric.filter(|_| ok)
}

/// `cpu: 70%` / `memory: 80%`, against a limit or reservation the service has.
fn share(k: &Key, v: &Node, spec: &ServiceSpec, sink: &mut Sink, path: &str) -> Option<Metric> {
    let target = percent(v, sink, path);
    let r = &spec.resources;
    let (has, what, key): (fn(&Limits) -> bool, _, _) = if k.name == "cpu" {
        (|l| l.nano_cpus.is_some_and(|c| c > 0), "CPU", "cpus")
    } else {
        (
            |l| l.memory_bytes.is_some_and(|b| b > 0),
            "memory",
            "memory",
        )
    };
    if !has(&r.limits) && !has(&r.reservations) {
        sink.error(
            k.pos,
            path,
            format!(
                "{} is a percentage of the replicas' {what} limit or reservation, and the service has neither: add deploy.resources.limits.{key} (or deploy.resources.reservations.{key})",
                k.name
            ),
        );
        return None;
    }
    let target = target?;
    Some(if k.name == "cpu" {
        Metric::Cpu { target }
    } else {
        Metric::Memory { target }
    })
}

/// `70%` as 0.7: above 0 and at most 1000%.
fn percent(n: &Node, sink: &mut Sink, path: &str) -> Option<f64> {
    let t = n.as_scalar().map(str::trim);
    let number = |s: &str| s.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    let message = match t {
        Some(t) => match t.strip_suffix('%').map(number) {
            Some(Some(p)) if p > 0.0 && p <= 1000.0 => return Some(p / 100.0),
            Some(Some(_)) => format!("must be above 0% and at most 1000%, not `{t}`"),
            Some(None) => format!("must be a percentage like `70%`, not `{t}`"),
            None => match number(t) {
                Some(v) => {
                    let pct = if v <= 1.0 { v * 100.0 } else { v };
                    format!(
                        "a bare number is not a target: write `{}%` (a percentage of the replicas' limit or reservation)",
                        trim_float(pct)
                    )
                }
                None => format!("must be a percentage like `70%`, not `{t}`"),
            },
        },
        None => format!("must be a percentage like `70%`, not {}", shown(n)),
    };
    sink.error(n.pos, path, message);
    None
}

/// `prometheus: {url, query, per_replica}`.
fn prometheus(n: &Node, sink: &mut Sink, path: &str) -> Option<Metric> {
    let Value::Map(m) = &n.value else {
        sink.error(
            n.pos,
            path,
            format!("must be a mapping, not {}: {PROMETHEUS_HOW}", n.type_name()),
        );
        return None;
    };
    let before = errors(sink);
    let mut here = Here::new(n.pos, path);
    let (mut url, mut query, mut per_replica) = (None, None, None);
    for (k, v) in m {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "url" => {
                url = text(v, sink, &p).filter(|u| {
                    let ok = valid_url(u);
                    if !ok {
                        sink.error(v.pos, &p, format!("must be an http:// or https:// URL with a host, e.g. http://prometheus:9090, not `{u}`"));
                    }
                    ok
                })
            }
            "query" => {
                query = text(v, sink, &p).filter(|q| {
                    let ok = !q.trim().is_empty();
                    if !ok {
                        sink.error(
                            v.pos,
                            &p,
                            "must not be empty: write a PromQL query, e.g. sum(inference_queue_depth)",
                        );
                    }
                    ok
                })
            }
            "per_replica" => per_replica = positive(v, sink, &p),
            other => sink.error(
                k.pos,
                &p,
                format!("unknown prometheus key `{other}`: {PROMETHEUS_HOW}"),
            ),
        }
    }
    for (name, what) in [
        ("url", "add url: http://HOST:9090 (the Prometheus server)"),
        (
            "query",
            "add query: PROMQL (an instant query; the values of its result are summed)",
        ),
        (
            "per_replica",
            "add per_replica: N (the query's value one replica should carry)",
        ),
    ] {
        if !m.iter().any(|(k, _)| k.name == name) {
            here.add(format!("missing required key `{name}`: {what}"));
        }
    }
    here.report(sink);
    if errors(sink) > before {
        return None;
    }
    Some(Metric::Prometheus {
        url: url?,
        query: query?,
        per_replica: per_replica?,
    })
}

/// `http://HOST[:PORT][/PATH]` or `https://..`, with a host and a valid port.
fn valid_url(u: &str) -> bool {
    let lower = u.to_ascii_lowercase();
    let Some(rest) = ["http://", "https://"]
        .iter()
        .find_map(|s| lower.strip_prefix(s))
    else {
        return false;
    };
    if rest.chars().any(char::is_whitespace) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return false,
        },
        None => match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    let port_ok = match port {
        None => true,
        Some(p) => p.parse::<u16>().is_ok_and(|p| p > 0),
    };
    !host.is_empty() && port_ok
}
