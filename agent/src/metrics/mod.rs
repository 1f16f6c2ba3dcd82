//! `shoal agent --metrics ADDR`: this node's figures on `GET /metrics`, a
//! `prometheus-client` registry in the OpenMetrics text format, served by the endpoint
//! the controller shares ([`shoal_tls::metrics_http`]).
//!
//! Every figure is owned elsewhere and read at scrape time by a collector:
//! - [`node::NodeCollector`]: the GPUs from the last rediscovery ([`crate::gpu::watch`]
//!   keeps them current without re-reporting to the controller) and the image transfer
//!   counters: `shoal_gpus{node}`, `shoal_gpu_memory_total_bytes`,
//!   `shoal_gpu_memory_used_bytes`, `shoal_gpu_utilization_percent` (labels node, uuid,
//!   index, model), `shoal_agent_image_bytes_received_total{node}`,
//!   `shoal_agent_images_loaded_total{node}`;
//! - [`tasks::TaskCollector`]: every replica's container from the newest measuring
//!   pass ([`crate::stats`]): `shoal_task_cpu_percent`, `shoal_task_memory_bytes`,
//!   `shoal_task_memory_limit_bytes`, `shoal_task_network_receive_bytes_total`,
//!   `shoal_task_network_transmit_bytes_total`, `shoal_task_restarts_total` (labels
//!   stack, service, slot, task, node).
//!
//! [`registry`] and [`render`] are the part tests call without HTTP.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub mod encode;
pub mod node;
pub mod tasks;

pub use shoal_tls::metrics_http::bind;

use crate::gpu::GpuDevice;
use crate::images::ImageCounters;
use crate::stats::Measured;

/// Where the page's figures come from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub node: String,
    pub gpus: watch::Receiver<Vec<GpuDevice>>,
    pub images: Arc<ImageCounters>,
    pub tasks: watch::Receiver<Arc<Measured>>,
}

/// The agent's registry: its collectors, reading `sources` on each scrape.
pub fn registry(sources: Sources) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(node::NodeCollector {
        node: sources.node.clone(),
        gpus: sources.gpus,
        images: sources.images,
    }));
    registry.register_collector(Box::new(tasks::TaskCollector {
        node: sources.node,
        measured: sources.tasks,
    }));
    registry
}

/// The page of one scrape.
pub fn render(registry: &Registry) -> String {
    let mut page = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut page, registry) {
        // Writing to a String fails only if a collector does, which none of ours do.
        warn!(error = %e, "the metrics page could not be written whole");
    }
    page
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, sources: Sources, shutdown: CancellationToken) {
    let registry = registry(sources);
    let render: shoal_tls::metrics_http::Render = Arc::new(move || render(&registry));
    shoal_tls::metrics_http::serve(listener, render, shutdown).await
}

#[cfg(test)]
mod tests;
