//! One measuring pass over the node's replicas: each replica read (its metrics
//! endpoints, each `port`+`path` once, and its container's stats when `cpu` or
//! `memory` is asked), [`CONCURRENCY`] replicas at a time, then folded into the report
//! ([`super::report::fold`]).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shoal_proto::autoscale::Metric;
use tokio::time::Instant;

use super::replicas::Replica;
use super::report::{fold, Memory, Raw, ReplicaRead, ServiceReport};
use super::scrape;
use crate::runtime::{ContainerRuntime, ContainerStats};

/// Replicas read at once: 100 replicas whose endpoints all time out take
/// 2 x [`scrape::TIMEOUT`], within one interval.
pub const CONCURRENCY: usize = 64;

/// Measures this node's replicas, remembering what rates and windows need between
/// passes.
pub struct Measurer {
    runtime: Arc<dyn ContainerRuntime>,
    memory: Memory,
    timeout: Duration,
}

impl Measurer {
    pub fn new(runtime: Arc<dyn ContainerRuntime>) -> Measurer {
        Measurer {
            runtime,
            memory: Memory::default(),
            timeout: scrape::TIMEOUT,
        }
    }

    /// How long one endpoint read may take (default [`scrape::TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Measurer {
        self.timeout = timeout;
        self
    }

    /// Read every replica of `replicas` and report per service and generation, the
    /// reads counted as made at `now`. Replicas not among them are forgotten.
    pub async fn measure(&mut self, replicas: &[Replica], now: Instant) -> Vec<ServiceReport> {
        let runtime = &*self.runtime;
        let timeout = self.timeout;
        // Made up front (not in a `map` closure) so that the pass stays `Send`.
        let pending: Vec<_> = replicas.iter().map(|r| read(runtime, r, timeout)).collect();
        let reads: Vec<ReplicaRead> = futures::stream::iter(pending)
            .buffered(CONCURRENCY)
            .collect()
            .await;
        fold(&mut self.memory, replicas, &reads, now)
    }

    /// What is remembered between passes.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }
}

/// Read one replica: every metric measured on nodes, each endpoint fetched once.
async fn read(runtime: &dyn ContainerRuntime, r: &Replica, timeout: Duration) -> ReplicaRead {
    let Some(autoscale) = &r.spec.autoscale else {
        return ReplicaRead::default();
    };
    let mut pages: BTreeMap<(u16, &str), Result<prometheus_parse::Scrape, String>> =
        BTreeMap::new();
    let mut stats: Option<Result<ContainerStats, String>> = None;
    let mut read = ReplicaRead::default();
    for (index, metric) in autoscale.measured_on_nodes() {
        let value = match metric {
            Metric::Gauge {
                port, path, name, ..
            }
            | Metric::Histogram {
                port, path, name, ..
            } => {
                let key = (*port, path.as_str());
                if let Entry::Vacant(slot) = pages.entry(key) {
                    slot.insert(fetch(r, *port, path, timeout).await);
                }
                let Some(page) = pages.get(&key) else {
                    continue;
                };
                let url = || match &r.address {
                    Ok(ip) => scrape::url(*ip, *port, path),
                    Err(_) => path.clone(),
                };
                match page {
                    Err(e) => Err(e.clone()),
                    Ok(page) if matches!(metric, Metric::Gauge { .. }) => scrape::gauge(page, name)
                        .map(Raw::Gauge)
                        .map_err(|e| format!("GET {}: {e}", url())),
                    Ok(page) => scrape::buckets(page, name)
                        .map(Raw::Buckets)
                        .map_err(|e| format!("GET {}: {e}", url())),
                }
            }
            Metric::Cpu { .. } | Metric::Memory { .. } => {
                if stats.is_none() {
                    stats = Some(
                        runtime
                            .stats(&r.container_id)
                            .await
                            .map_err(|e| format!("the engine's stats: {e}")),
                    );
                }
                match &stats {
                    Some(Ok(s)) => Ok(Raw::Stats(*s)),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err("not read".to_string()),
                }
            }
            Metric::Prometheus { .. } => continue,
        };
        read.values.insert(index, value);
    }
    read
}

/// The replica's endpoint parsed, or why not (`GET URL: reason`).
async fn fetch(
    r: &Replica,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<prometheus_parse::Scrape, String> {
    let ip = r.address.as_ref().map_err(Clone::clone)?;
    let url = scrape::url(*ip, port, path);
    let text = scrape::get(*ip, port, path, timeout)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    Ok(scrape::parse(&text))
}
