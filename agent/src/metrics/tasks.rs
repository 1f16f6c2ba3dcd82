//! Every replica's container figures from the newest measuring pass
//! ([`crate::stats::Measured`]), labelled `stack`, `service`, `slot`, `task` and `node`.
//! A replica gone from the pass is gone from the page.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tokio::sync::watch;

use super::encode::{bytes, counters, gauges, Labels};
use crate::stats::{Measured, ReplicaFigures};

/// `shoal_task_*` of one node's replicas.
#[derive(Debug)]
pub struct TaskCollector {
    pub node: String,
    pub measured: watch::Receiver<Arc<Measured>>,
}

type Figure<T> = fn(&ReplicaFigures) -> T;

const GAUGES: [(&str, &str, Figure<i64>); 2] = [
    (
        "shoal_task_memory_bytes",
        "Memory the task's container uses, without the reclaimable page cache.",
        |r| bytes(r.memory_bytes),
    ),
    (
        "shoal_task_memory_limit_bytes",
        "Memory limit of the task's container (0: none).",
        |r| bytes(r.memory_limit_bytes),
    ),
];

const COUNTERS: [(&str, &str, Figure<u64>); 3] = [
    (
        "shoal_task_network_receive_bytes",
        "Bytes the task's container received on all its interfaces since it started.",
        |r| r.net_rx_bytes,
    ),
    (
        "shoal_task_network_transmit_bytes",
        "Bytes the task's container sent on all its interfaces since it started.",
        |r| r.net_tx_bytes,
    ),
    (
        "shoal_task_restarts",
        "Times the engine restarted the task's container.",
        |r| r.restarts,
    ),
];

impl TaskCollector {
    fn labels<'a>(&'a self, r: &'a ReplicaFigures) -> Labels<'a> {
        vec![
            ("stack", r.stack.as_str().into()),
            ("service", r.service.as_str().into()),
            ("slot", r.slot.to_string().into()),
            ("task", r.task.as_str().into()),
            ("node", self.node.as_str().into()),
        ]
    }
}

impl Collector for TaskCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let measured = self.measured.borrow().clone();
        let replicas = &measured.replicas;
        // Left out until a container's second sample: no interval to count over yet.
        gauges(
            &mut encoder,
            "shoal_task_cpu_percent",
            "Percent of one CPU the task's container used over the last interval.",
            replicas
                .iter()
                .filter_map(|r| r.cpu_percent.map(|v| (self.labels(r), v))),
        )?;
        for (name, help, value) in GAUGES {
            let series = replicas.iter().map(|r| (self.labels(r), value(r)));
            gauges(&mut encoder, name, help, series)?;
        }
        for (name, help, value) in COUNTERS {
            let series = replicas.iter().map(|r| (self.labels(r), value(r)));
            counters(&mut encoder, name, help, series)?;
        }
        Ok(())
    }
}
