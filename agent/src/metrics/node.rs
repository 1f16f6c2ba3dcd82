//! The node's own figures, read at scrape time: its GPUs as the GPU watch last saw them
//! (total memory always; utilization and memory used where NVML gives them) and what it
//! received from the cluster's image store.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tokio::sync::watch;

use super::encode::{bytes, counters, gauges, Labels};
use crate::gpu::GpuDevice;
use crate::images::ImageCounters;

/// `shoal_gpus`, `shoal_gpu_*` and `shoal_agent_image*` of one node.
#[derive(Debug)]
pub struct NodeCollector {
    pub node: String,
    pub gpus: watch::Receiver<Vec<GpuDevice>>,
    pub images: Arc<ImageCounters>,
}

/// A per-GPU gauge: its name, its help text and its value for one GPU (if known).
type PerGpu = (&'static str, &'static str, fn(&GpuDevice) -> Option<i64>);

const PER_GPU: [PerGpu; 3] = [
    (
        "shoal_gpu_memory_total_bytes",
        "Total memory of the GPU.",
        |g| Some(bytes(g.memory_bytes)),
    ),
    (
        "shoal_gpu_memory_used_bytes",
        "Memory in use on the GPU (NVML).",
        |g| g.memory_used_bytes.map(bytes),
    ),
    (
        "shoal_gpu_utilization_percent",
        "Percent of time a kernel ran over NVML's last sample period.",
        |g| g.utilization_percent.map(i64::from),
    ),
];

impl NodeCollector {
    fn node_label(&self) -> Labels<'_> {
        vec![("node", self.node.as_str().into())]
    }

    fn gpu_labels<'a>(&'a self, g: &'a GpuDevice) -> Labels<'a> {
        vec![
            ("node", self.node.as_str().into()),
            ("uuid", g.uuid.as_str().into()),
            ("index", g.index.to_string().into()),
            ("model", g.model.as_str().into()),
        ]
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let gpus = self.gpus.borrow().clone();
        gauges(
            &mut encoder,
            "shoal_gpus",
            "GPUs this node has.",
            [(self.node_label(), gpus.len() as i64)],
        )?;
        for (name, help, value) in PER_GPU {
            let series = gpus
                .iter()
                .filter_map(|g| value(g).map(|v| (self.gpu_labels(g), v)));
            gauges(&mut encoder, name, help, series)?;
        }
        counters(
            &mut encoder,
            "shoal_agent_image_bytes_received",
            "Bytes of image blobs received from the cluster's image store.",
            [(self.node_label(), self.images.bytes_received())],
        )?;
        counters(
            &mut encoder,
            "shoal_agent_images_loaded",
            "Images loaded into the engine from the cluster's image store.",
            [(self.node_label(), self.images.images_loaded())],
        )
    }
}
