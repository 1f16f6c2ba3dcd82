//! `x-shoal-autoscale`: how many replicas a service runs, decided from what its
//! replicas say (a gauge or a histogram they serve in the Prometheus text format), what
//! the engine sees (CPU, memory) or what a Prometheus server answers.
//!
//! The keys and their meaning are the contract in `../shared/DESIGN.md`; the Compose
//! loader reads them into [`Autoscale`], the agents measure the `scrape`, `cpu` and
//! `memory` metrics of their replicas, and the leader decides (HPA's rule).

use serde::{Deserialize, Serialize};

/// How often agents measure their replicas and the leader decides.
pub const INTERVAL_MS: u64 = 5_000;
/// `window` of a histogram metric when the file gives none (as in `rate(..[2m])`).
pub const DEFAULT_WINDOW_MS: u64 = 120_000;
/// `scale_down.stabilization` when the file gives none (the HPA's 5 minutes).
pub const DEFAULT_DOWN_STABILIZATION_MS: u64 = 300_000;
/// The path a `scrape` reads when the file gives none.
pub const DEFAULT_PATH: &str = "/metrics";

/// A service's `x-shoal-autoscale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Autoscale {
    /// Never fewer replicas (at least 1).
    pub min: u64,
    /// Never more replicas.
    pub max: u64,
    /// Each proposes a count; the largest wins.
    pub metrics: Vec<Metric>,
    #[serde(default = "Behavior::up")]
    pub scale_up: Behavior,
    #[serde(default = "Behavior::down")]
    pub scale_down: Behavior,
}

impl Autoscale {
    /// `count` kept within `min..=max`.
    pub fn bound(&self, count: u64) -> u64 {
        count.clamp(self.min, self.max.max(self.min))
    }

    /// The metrics agents measure on their replicas (`scrape`, `cpu`, `memory`), with
    /// their index in [`Autoscale::metrics`].
    pub fn measured_on_nodes(&self) -> impl Iterator<Item = (usize, &Metric)> {
        self.metrics
            .iter()
            .enumerate()
            .filter(|(_, m)| m.on_nodes())
    }
}

/// `scale_up` / `scale_down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behavior {
    /// A change in this direction takes the least (up) or the most (down) of the counts
    /// recommended over this long, so a noisy signal does not make the count flap.
    pub stabilization_ms: u64,
    /// The most replicas one decision adds (up) or removes (down); `None`: no limit.
    #[serde(default)]
    pub max_step: Option<u64>,
}

impl Behavior {
    /// The default of `scale_up`: at once, without a step limit.
    pub fn up() -> Behavior {
        Behavior {
            stabilization_ms: 0,
            max_step: None,
        }
    }

    /// The default of `scale_down`: after 5 minutes of lower recommendations.
    pub fn down() -> Behavior {
        Behavior {
            stabilization_ms: DEFAULT_DOWN_STABILIZATION_MS,
            max_step: None,
        }
    }
}

/// One entry of `metrics:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `scrape: {port, path, gauge, per_replica}`: the gauge summed over the replicas
    /// (every series of that name), against `per_replica` times the count.
    Gauge {
        port: u16,
        path: String,
        name: String,
        per_replica: f64,
    },
    /// `scrape: {port, path, histogram, quantile, window, above}`: the quantile of the
    /// observations of the last `window`, from the `NAME_bucket` counters of every
    /// replica (as `histogram_quantile(q, sum by (le) (rate(NAME_bucket[window])))`),
    /// against `above` (in the histogram's unit: `800ms` is 0.8 for seconds).
    Histogram {
        port: u16,
        path: String,
        name: String,
        quantile: f64,
        window_ms: u64,
        above: f64,
    },
    /// `cpu: 70%`: the replicas' average CPU use, as a fraction (0.7) of their limit
    /// (`deploy.resources.limits.cpus`, else the reservation).
    Cpu { target: f64 },
    /// `memory: 80%`: the replicas' average memory use, as a fraction of their limit
    /// (else the reservation).
    Memory { target: f64 },
    /// `prometheus: {url, query, per_replica}`: the leader runs the instant query (the
    /// values of the result summed) against `per_replica` times the count.
    Prometheus {
        url: String,
        query: String,
        per_replica: f64,
    },
}

impl Metric {
    /// Measured by the agents on their replicas (the others by the leader).
    pub fn on_nodes(&self) -> bool {
        !matches!(self, Metric::Prometheus { .. })
    }

    /// A short name for tables and causes: `inference_queue_depth`,
    /// `p95 inference_duration_seconds`, `cpu`, `memory`, `prometheus`.
    pub fn label(&self) -> String {
        match self {
            Metric::Gauge { name, .. } => name.clone(),
            Metric::Histogram { name, quantile, .. } => {
                format!("p{} {name}", trim_float(quantile * 100.0))
            }
            Metric::Cpu { .. } => "cpu".into(),
            Metric::Memory { .. } => "memory".into(),
            Metric::Prometheus { .. } => "prometheus".into(),
        }
    }
}

/// `95`, `99.9`: a number without a trailing `.0`.
pub fn trim_float(v: f64) -> String {
    let s = format!("{:.3}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}
