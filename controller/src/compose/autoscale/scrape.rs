//! `scrape:` entries of `x-shoal-autoscale` metrics: a gauge or a histogram that the
//! replicas serve in the Prometheus text format.
//!
//! ```yaml
//! - scrape: { port: 9100, path: /metrics, gauge: inference_queue_depth, per_replica: 15 }
//! - scrape: { port: 9100, histogram: inference_duration_seconds, quantile: 0.95, window: 2m, above: 800ms }
//! ```

use shoal_proto::autoscale::{trim_float, Metric, DEFAULT_PATH, DEFAULT_WINDOW_MS, INTERVAL_MS};

use super::super::diag::Sink;
use super::super::service::duration;
use super::super::units::parse_duration_secs;
use super::super::value::text;
use super::super::yaml::{Key, Node, Value};
use super::{errors, positive, shown, Here};

const SCRAPE_HOW: &str = "use {port: N, gauge: NAME, per_replica: N} or {port: N, histogram: NAME, quantile: Q, above: THRESHOLD}";
/// The shortest histogram `window`: two readings apart at the least.
const MIN_WINDOW_MS: u64 = 2 * INTERVAL_MS;

/// `scrape:` of a gauge or a histogram.
pub(super) fn scrape(n: &Node, sink: &mut Sink, path: &str) -> Option<Metric> {
    let Value::Map(m) = &n.value else {
        sink.error(
            n.pos,
            path,
            format!("must be a mapping, not {}: {SCRAPE_HOW}", n.type_name()),
        );
        return None;
    };
    let before = errors(sink);
    let mut here = Here::new(n.pos, path);
    let get = |name: &str| m.iter().find(|(k, _)| k.name == name);
    for (k, _) in m {
        let known = [
            "port",
            "path",
            "gauge",
            "per_replica",
            "histogram",
            "quantile",
            "window",
            "above",
        ];
        if !known.contains(&k.name.as_str()) {
            sink.error(
                k.pos,
                &format!("{path}.{}", k.name),
                format!(
                    "unknown scrape key `{}`: use port, path, gauge and per_replica, or port, path, histogram, quantile, window and above",
                    k.name
                ),
            );
        }
    }
    let port = match get("port") {
        Some((_, v)) => port(v, sink, &format!("{path}.port")),
        None => {
            here.add(
                "missing required key `port`: add port: N (where the replicas serve their metrics)",
            );
            None
        }
    };
    let mpath = match get("path") {
        None => Some(DEFAULT_PATH.to_string()),
        Some((_, v)) => {
            let p = format!("{path}.path");
            text(v, sink, &p).filter(|t| {
                let ok = t.starts_with('/');
                if !ok {
                    sink.error(
                        v.pos,
                        &p,
                        format!("must start with `/`, e.g. /metrics, not `{t}`"),
                    );
                }
                ok
            })
        }
    };
    let metric = match (get("gauge"), get("histogram")) {
        (Some((_, g)), None) => gauge(g, &get, &mut here, sink, path),
        (None, Some((_, h))) => histogram(h, &get, &mut here, sink, path),
        (Some(_), Some((hk, _))) => {
            sink.error(
                hk.pos,
                path,
                "has both gauge and histogram: one scrape entry reads one metric; give the other its own entry",
            );
            None
        }
        (None, None) => {
            here.add("needs gauge: NAME (a value to keep at per_replica per replica) or histogram: NAME (a quantile to keep below above)");
            None
        }
    };
    here.report(sink);
    if errors(sink) > before {
        return None;
    }
    let (port, mpath) = (port?, mpath?);
    Some(match metric? {
        Metric::Gauge {
            name, per_replica, ..
        } => Metric::Gauge {
            port,
            path: mpath,
            name,
            per_replica,
        },
        Metric::Histogram {
            name,
            quantile,
            window_ms,
            above,
            ..
        } => Metric::Histogram {
            port,
            path: mpath,
            name,
            quantile,
            window_ms,
            above,
        },
        other => other,
    })
}

type Get<'a> = dyn Fn(&str) -> Option<&'a (Key, Node)> + 'a;

/// The gauge's own keys; `port` and `path` are filled in by [`scrape`].
fn gauge(g: &Node, get: &Get<'_>, here: &mut Here, sink: &mut Sink, path: &str) -> Option<Metric> {
    for other in ["quantile", "window", "above"] {
        if let Some((k, _)) = get(other) {
            sink.error(
                k.pos,
                &format!("{path}.{other}"),
                "belongs to a histogram, not a gauge: remove it, or use histogram: NAME",
            );
        }
    }
    let name = metric_name(g, sink, &format!("{path}.gauge"));
    let per_replica = match get("per_replica") {
        Some((_, v)) => positive(v, sink, &format!("{path}.per_replica")),
        None => {
            here.add("missing required key `per_replica`: add per_replica: N (the gauge's value one replica should carry)");
            None
        }
    };
    Some(Metric::Gauge {
        port: 0,
        path: String::new(),
        name: name?,
        per_replica: per_replica?,
    })
}

/// The histogram's own keys; `port` and `path` are filled in by [`scrape`].
fn histogram(
    h: &Node,
    get: &Get<'_>,
    here: &mut Here,
    sink: &mut Sink,
    path: &str,
) -> Option<Metric> {
    if let Some((k, _)) = get("per_replica") {
        sink.error(
            k.pos,
            &format!("{path}.per_replica"),
            "belongs to a gauge, not a histogram: remove it and give the threshold as above: (e.g. above: 800ms)",
        );
    }
    let hpath = format!("{path}.histogram");
    let name = metric_name(h, sink, &hpath);
    if let Some(stem) = name.as_deref().and_then(|t| t.strip_suffix("_bucket")) {
        sink.warn(
            h.pos,
            &hpath,
            format!("shoal reads the series NAME_bucket: write histogram: {stem}, unless the series are really named {stem}_bucket_bucket"),
        );
    }
    let quantile = match get("quantile") {
        Some((_, v)) => quantile(v, sink, &format!("{path}.quantile")),
        None => {
            here.add("missing required key `quantile`: add quantile: Q between 0 and 1 (e.g. 0.95 for p95)");
            None
        }
    };
    let above = match get("above") {
        Some((_, v)) => threshold(v, sink, &format!("{path}.above")),
        None => {
            here.add("missing required key `above`: add above: THRESHOLD in the histogram's unit (e.g. 800ms, or 0.8 for seconds)");
            None
        }
    };
    let window_ms = match get("window") {
        None => Some(DEFAULT_WINDOW_MS),
        Some((_, v)) => {
            let p = format!("{path}.window");
            duration(v, sink, &p).filter(|ms| {
                let ok = *ms >= MIN_WINDOW_MS;
                if !ok {
                    sink.error(
                        v.pos,
                        &p,
                        format!(
                            "must be at least 10s (replicas are read every 5s), not {}: e.g. window: 2m",
                            shown(v)
                        ),
                    );
                }
                ok
            })
        }
    };
    Some(Metric::Histogram {
        port: 0,
        path: String::new(),
        name: name?,
        quantile: quantile?,
        window_ms: window_ms?,
        above: above?,
    })
}

fn port(n: &Node, sink: &mut Sink, path: &str) -> Option<u16> {
    let p = n
        .as_scalar()
        .and_then(|t| t.trim().parse::<u16>().ok())
        .filter(|p| *p > 0);
    if p.is_none() {
        sink.error(
            n.pos,
            path,
            format!("must be a port from 1 to 65535, not {}", shown(n)),
        );
    }
    p
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn metric_name(n: &Node, sink: &mut Sink, path: &str) -> Option<String> {
    let t = text(n, sink, path)?;
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let ok = t
        .chars()
        .next()
        .is_some_and(|c| word(c) && !c.is_ascii_digit())
        && t.chars().all(word);
    if !ok {
        sink.error(
            n.pos,
            path,
            format!("`{t}` is not a Prometheus metric name: use letters, digits, `_` and `:`, not starting with a digit"),
        );
        return None;
    }
    Some(t)
}

/// Strictly between 0 and 1.
fn quantile(n: &Node, sink: &mut Sink, path: &str) -> Option<f64> {
    let q = n
        .as_scalar()
        .and_then(|t| t.trim().parse::<f64>().ok())
        .filter(|q| q.is_finite());
    let message = match q {
        Some(q) if q > 0.0 && q < 1.0 => return Some(q),
        Some(q) if q > 1.0 && q < 100.0 => format!(
            "must be between 0 and 1 (exclusive), not `{}`: write {} for p{}",
            trim_float(q),
            fraction(q / 100.0),
            trim_float(q)
        ),
        _ => format!(
            "must be between 0 and 1 (exclusive), e.g. 0.95 for p95, not {}",
            shown(n)
        ),
    };
    sink.error(n.pos, path, message);
    None
}

/// `0.95`, `0.999`: up to 6 decimals, without trailing zeros.
fn fraction(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `above`: a duration in seconds (`800ms` is 0.8), or a number as it is.
fn threshold(n: &Node, sink: &mut Sink, path: &str) -> Option<f64> {
    let v = n.as_scalar().and_then(|t| {
        let t = t.trim();
        t.parse::<f64>()
            .ok()
            .or_else(|| parse_duration_secs(t).ok())
    });
    let message = match v {
        Some(v) if v.is_finite() && v > 0.0 => return Some(v),
        Some(_) => format!("must be above 0, not {}: e.g. above: 800ms", shown(n)),
        None => format!(
            "must be a duration (e.g. 800ms, 1.5s: taken in seconds) or a number in the histogram's unit, not {}",
            shown(n)
        ),
    };
    sink.error(n.pos, path, message);
    None
}
