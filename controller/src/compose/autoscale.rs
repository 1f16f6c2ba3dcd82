//! `x-shoal-autoscale` of a service: the bounds the leader keeps its replica count in,
//! how fast it may move, and on which signals (each `metrics:` entry is read in
//! `autoscale/metrics.rs`, `scrape:` in `autoscale/scrape.rs`).
//!
//! ```yaml
//! x-shoal-autoscale:
//!   min: 2
//!   max: 20
//!   metrics:
//!     - scrape: { port: 9100, gauge: inference_queue_depth, per_replica: 15 }
//!     - cpu: 70%
//!   scale_down: { stabilization: 5m, max_step: 1 }
//! ```
//!
//! Only replicated services autoscale. The service starts with its `deploy.replicas`
//! (or `scale`) brought within `min..=max`, else with `min`.

mod metrics;
mod scrape;

use shoal_proto::autoscale::{Autoscale, Behavior};
use shoal_proto::spec::{ServiceMode, ServiceSpec};

use super::diag::{Severity, Sink};
use super::service::duration;
use super::yaml::{Key, Node, Pos, Value};

const HOW: &str = "use {min: N, max: N, metrics: [..], scale_up: {..}, scale_down: {..}}";

/// Read the service's `x-shoal-autoscale` (`key: n`) into `spec.autoscale` and set its
/// starting replica count. Runs after `deploy:` and the legacy resource keys, since it
/// checks the mode and the resources they set.
pub(crate) fn apply(
    key: &Key,
    n: &Node,
    service: &Node,
    sink: &mut Sink,
    base: &str,
    spec: &mut ServiceSpec,
) {
    let path = format!("{base}.x-shoal-autoscale");
    let mut here = Here::new(key.pos, &path);
    if spec.mode != ServiceMode::Replicated {
        here.add(format!(
            "only replicated services autoscale, and this one is deploy.mode: {}: remove x-shoal-autoscale or deploy.mode",
            spec.mode.as_str()
        ));
    }
    let Some(a) = convert(here, n, spec, sink, &path) else {
        return;
    };
    spec.replicas = starting_count(&a, service, spec.replicas, sink, base);
    spec.autoscale = Some(a);
}

fn convert(
    mut here: Here,
    n: &Node,
    spec: &ServiceSpec,
    sink: &mut Sink,
    path: &str,
) -> Option<Autoscale> {
    let Value::Map(entries) = &n.value else {
        here.report(sink);
        sink.error(
            n.pos,
            path,
            format!("must be a mapping, not {}: {HOW}", n.type_name()),
        );
        return None;
    };
    let before = errors(sink);
    let (mut min, mut max, mut metrics) = (None, None, None);
    let (mut up, mut down) = (Behavior::up(), Behavior::down());
    for (k, v) in entries {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "min" => {
                min = match count(v, sink, &p) {
                    Some(0) => {
                        sink.error(
                            v.pos,
                            &p,
                            "min: 0 is not supported yet (scaling to zero and back on demand): use min: 1 or more",
                        );
                        None
                    }
                    m => m,
                }
            }
            "max" => max = count(v, sink, &p).map(|m| (m, v)),
            "metrics" => metrics = Some(metrics::list(v, spec, sink, &p)),
            "scale_up" => behavior(v, &mut up, sink, &p, "scale_up"),
            "scale_down" => behavior(v, &mut down, sink, &p, "scale_down"),
            other => sink.error(
                k.pos,
                &p,
                format!("unknown x-shoal-autoscale key `{other}`: {HOW}"),
            ),
        }
    }
    let has = |name: &str| entries.iter().any(|(k, _)| k.name == name);
    for (name, what) in [
        ("min", "add min: N (the fewest replicas, at least 1)"),
        ("max", "add max: N (the most replicas)"),
        (
            "metrics",
            "add metrics: [..] with at least one of scrape, cpu, memory or prometheus",
        ),
    ] {
        if !has(name) {
            here.add(format!("missing required key `{name}`: {what}"));
        }
    }
    here.report(sink);
    if let (Some(lo), Some((hi, v))) = (min, max) {
        if hi < lo {
            sink.error(
                v.pos,
                &format!("{path}.max"),
                format!("must be at least min ({lo}), not {hi}: use max: {lo} or more"),
            );
        }
    }
    if errors(sink) > before {
        return None;
    }
    Some(Autoscale {
        min: min?,
        max: max?.0,
        metrics: metrics?,
        scale_up: up,
        scale_down: down,
    })
}

/// `scale_up` / `scale_down`: `into` holds the direction's defaults.
fn behavior(n: &Node, into: &mut Behavior, sink: &mut Sink, path: &str, name: &str) {
    let how = "use {stabilization: DURATION, max_step: N}";
    let entries = match &n.value {
        Value::Map(m) => m,
        _ if n.is_null() => return,
        _ => {
            sink.error(
                n.pos,
                path,
                format!("must be a mapping, not {}: {how}", n.type_name()),
            );
            return;
        }
    };
    for (k, v) in entries {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "stabilization" => {
                if let Some(ms) = duration(v, sink, &p) {
                    into.stabilization_ms = ms;
                }
            }
            "max_step" => match count(v, sink, &p) {
                Some(0) => sink.error(
                    v.pos,
                    &p,
                    "must be at least 1: leave max_step out for no limit",
                ),
                Some(s) => into.max_step = Some(s),
                None => {}
            },
            other => sink.error(k.pos, &p, format!("unknown {name} key `{other}`: {how}")),
        }
    }
}

/// The count the service starts with: what the file gives, within `min..=max` (a
/// warning when that changes it), else `min`.
fn starting_count(
    a: &Autoscale,
    service: &Node,
    replicas: u64,
    sink: &mut Sink,
    base: &str,
) -> u64 {
    let given = service
        .get("deploy")
        .and_then(|d| d.get("replicas"))
        .map(|n| (n, "deploy.replicas"))
        .or_else(|| service.get("scale").map(|n| (n, "scale")));
    let Some((n, key)) = given else {
        return a.min;
    };
    let start = a.bound(replicas);
    let as_written = n.as_scalar().and_then(|t| t.trim().parse::<u64>().ok());
    if start != replicas && as_written == Some(replicas) {
        sink.warn(
            n.pos,
            &format!("{base}.{key}"),
            format!(
                "{replicas} is outside x-shoal-autoscale's {}-{}: the service starts with {start} replicas",
                a.min, a.max
            ),
        );
    }
    start
}

/// Errors about a mapping as a whole, all at its place: reported as one, since the sink
/// keeps one error per place.
struct Here {
    pos: Pos,
    path: String,
    parts: Vec<String>,
}

impl Here {
    fn new(pos: Pos, path: &str) -> Here {
        Here {
            pos,
            path: path.to_string(),
            parts: Vec::new(),
        }
    }

    fn add(&mut self, message: impl Into<String>) {
        self.parts.push(message.into());
    }

    fn report(self, sink: &mut Sink) {
        if !self.parts.is_empty() {
            sink.error(self.pos, &self.path, self.parts.join("; "));
        }
    }
}

fn errors(sink: &Sink) -> usize {
    sink.diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count()
}

/// A node for messages: its text in backquotes, else its type.
fn shown(n: &Node) -> String {
    match n.as_scalar() {
        Some(t) => format!("`{t}`"),
        None => n.type_name().to_string(),
    }
}

/// A replica count (`min`, `max`, `max_step`).
fn count(n: &Node, sink: &mut Sink, path: &str) -> Option<u64> {
    let c = n.as_scalar().and_then(|t| t.trim().parse::<u64>().ok());
    if c.is_none() {
        sink.error(
            n.pos,
            path,
            format!(
                "must be a whole number of replicas, e.g. 2, not {}",
                shown(n)
            ),
        );
    }
    c
}

/// A number above 0 (`per_replica`).
fn positive(n: &Node, sink: &mut Sink, path: &str) -> Option<f64> {
    let v = n
        .as_scalar()
        .and_then(|t| t.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0);
    if v.is_none() {
        sink.error(
            n.pos,
            path,
            format!("must be a number above 0, e.g. 15, not {}", shown(n)),
        );
    }
    v
}
