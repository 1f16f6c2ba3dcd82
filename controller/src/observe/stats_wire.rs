//! `StatsReport` (from agents) into the domain figures of [`super::stats`], and those
//! figures back into the `Stats` reply: the only place this subsystem knows prost types.

use shoal_proto::pb;

use super::history::Point;
use super::stats::{GpuFigures, NodeReport, ReplicaFigures};

/// A figure an agent sent that cannot be right, naming the replica or GPU and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stats report: {0}")]
pub struct InvalidStats(pub String);

impl TryFrom<&pb::StatsReport> for NodeReport {
    type Error = InvalidStats;

    fn try_from(r: &pb::StatsReport) -> Result<NodeReport, InvalidStats> {
        let replicas = r
            .replicas
            .iter()
            .map(ReplicaFigures::try_from)
            .collect::<Result<_, _>>()?;
        let gpus = r
            .gpus
            .iter()
            .map(GpuFigures::try_from)
            .collect::<Result<_, _>>()?;
        Ok(NodeReport { replicas, gpus })
    }
}

impl TryFrom<&pb::ReplicaStats> for ReplicaFigures {
    type Error = InvalidStats;

    fn try_from(r: &pb::ReplicaStats) -> Result<ReplicaFigures, InvalidStats> {
        if r.task.is_empty() {
            return Err(InvalidStats(format!(
                "a replica of {}/{} slot {} names no task",
                r.stack, r.service, r.slot
            )));
        }
        if !r.cpu_percent.is_finite() || r.cpu_percent < 0.0 {
            return Err(InvalidStats(format!(
                "task {}: cpu_percent {} is not a percentage",
                r.task, r.cpu_percent
            )));
        }
        Ok(ReplicaFigures {
            task: r.task.clone(),
            service: crate::state::service_key(&r.stack, &r.service),
            container: r.container.clone(),
            cpu_percent: r.cpu_percent,
            memory_bytes: r.memory_bytes,
            memory_limit_bytes: r.memory_limit_bytes,
            net_rx_bytes: r.net_rx_bytes,
            net_tx_bytes: r.net_tx_bytes,
            restarts: r.restarts,
            at_ms: r.at_ms,
        })
    }
}

impl TryFrom<&pb::NodeGpuStats> for GpuFigures {
    type Error = InvalidStats;

    fn try_from(g: &pb::NodeGpuStats) -> Result<GpuFigures, InvalidStats> {
        if g.uuid.is_empty() {
            return Err(InvalidStats(format!("GPU {} has no UUID", g.index)));
        }
        if g.utilization_percent.is_some_and(|u| u > 100) {
            return Err(InvalidStats(format!(
                "GPU {}: utilization {}% is over 100%",
                g.uuid,
                g.utilization_percent.unwrap_or_default()
            )));
        }
        Ok(GpuFigures {
            uuid: g.uuid.clone(),
            index: g.index,
            model: g.model.clone(),
            utilization_percent: g.utilization_percent,
            memory_used_bytes: g.memory_used_bytes,
        })
    }
}

/// A replica's row; `stack`, `service`, `slot` and `node` as the state has them.
pub fn replica_row(
    r: &ReplicaFigures,
    stack: &str,
    service: &str,
    slot: u64,
    node: &str,
) -> pb::ReplicaStats {
    pb::ReplicaStats {
        stack: stack.to_string(),
        service: service.to_string(),
        task: r.task.clone(),
        slot,
        node: node.to_string(),
        container: r.container.clone(),
        cpu_percent: r.cpu_percent,
        memory_bytes: r.memory_bytes,
        memory_limit_bytes: r.memory_limit_bytes,
        net_rx_bytes: r.net_rx_bytes,
        net_tx_bytes: r.net_tx_bytes,
        restarts: r.restarts,
        at_ms: r.at_ms,
    }
}

pub fn gpu_row(g: &GpuFigures, node: &str, history: Vec<Point>) -> pb::NodeGpuStats {
    pb::NodeGpuStats {
        node: node.to_string(),
        uuid: g.uuid.clone(),
        index: g.index,
        model: g.model.clone(),
        utilization_percent: g.utilization_percent,
        memory_used_bytes: g.memory_used_bytes,
        history: history.iter().map(point).collect(),
    }
}

pub fn point(p: &Point) -> pb::SeriesPoint {
    pb::SeriesPoint {
        at_ms: p.at_ms,
        cpu_percent: p.cpu_percent,
        memory_bytes: p.memory_bytes,
    }
}
