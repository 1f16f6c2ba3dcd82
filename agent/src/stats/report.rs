//! The node's figures sent to the leader on the session (`AgentMessage.stats`), one
//! report per measuring pass: every replica's container ([`Measured`]) and the node's
//! GPUs as the GPU watch last saw them (utilization and memory used where NVML gives
//! them; `history` is the leader's to keep).

use std::sync::Arc;

use shoal_proto::pb;
use tokio::sync::{mpsc, watch};
use tracing::instrument;

use super::Measured;
use crate::gpu::GpuDevice;

/// The report of node `node` for `measured` and `gpus`; `None` when it has neither
/// replicas nor GPUs (nothing to say).
pub fn stats_message(
    node: &str,
    measured: &Measured,
    gpus: &[GpuDevice],
) -> Option<pb::AgentMessage> {
    if measured.replicas.is_empty() && gpus.is_empty() {
        return None;
    }
    let replicas = measured
        .replicas
        .iter()
        .map(|r| pb::ReplicaStats {
            stack: r.stack.clone(),
            service: r.service.clone(),
            task: r.task.clone(),
            slot: r.slot,
            node: node.to_string(),
            container: r.container.clone(),
            // Unknown on a container's first sample: none counted yet.
            cpu_percent: r.cpu_percent.unwrap_or(0.0),
            memory_bytes: r.memory_bytes,
            memory_limit_bytes: r.memory_limit_bytes,
            net_rx_bytes: r.net_rx_bytes,
            net_tx_bytes: r.net_tx_bytes,
            restarts: r.restarts,
            at_ms: measured.at_ms,
        })
        .collect();
    let gpus = gpus
        .iter()
        .map(|g| pb::NodeGpuStats {
            node: node.to_string(),
            uuid: g.uuid.clone(),
            index: g.index,
            model: g.model.clone(),
            utilization_percent: g.utilization_percent,
            memory_used_bytes: g.memory_used_bytes,
            history: Vec::new(),
        })
        .collect();
    Some(pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Stats(pb::StatsReport {
            replicas,
            gpus,
        })),
    })
}

/// Sends a report on `out` after every measuring pass (and at once the last pass's, if
/// there was one), until `out` or the measurements close. One runs per session.
#[instrument(name = "stats_report", skip_all, fields(node = %node))]
pub async fn run_reporter(
    node: String,
    mut measured: watch::Receiver<Arc<Measured>>,
    gpus: watch::Receiver<Vec<GpuDevice>>,
    out: mpsc::Sender<pb::AgentMessage>,
) {
    let mut last = measured.borrow_and_update().clone();
    loop {
        if last.at_ms > 0 {
            let msg = stats_message(&node, &last, &gpus.borrow());
            if let Some(msg) = msg {
                if out.send(msg).await.is_err() {
                    return;
                }
            }
        }
        if measured.changed().await.is_err() {
            return;
        }
        last = measured.borrow_and_update().clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ReplicaFigures;
    use pb::agent_message::Msg;

    fn replica(cpu_percent: Option<f64>) -> ReplicaFigures {
        ReplicaFigures {
            stack: "shop".into(),
            service: "web".into(),
            slot: 2,
            task: "t2".into(),
            container: "c2".into(),
            cpu_percent,
            memory_bytes: 100,
            memory_limit_bytes: 200,
            net_rx_bytes: 300,
            net_tx_bytes: 400,
            restarts: 5,
        }
    }

    fn gpu(util: Option<u32>, used: Option<u64>) -> GpuDevice {
        GpuDevice {
            uuid: "GPU-0".into(),
            index: 0,
            model: "NVIDIA A10".into(),
            memory_bytes: 24 << 30,
            utilization_percent: util,
            memory_used_bytes: used,
        }
    }

    fn report(msg: Option<pb::AgentMessage>) -> pb::StatsReport {
        match msg.and_then(|m| m.msg) {
            Some(Msg::Stats(r)) => r,
            other => panic!("not a stats report: {other:?}"),
        }
    }

    #[test]
    fn every_figure_reaches_the_wire() {
        let measured = Measured {
            at_ms: 1_700_000_000_000,
            replicas: vec![replica(Some(12.5))],
        };
        let r = report(stats_message(
            "n1",
            &measured,
            &[gpu(Some(40), Some(1 << 30))],
        ));
        assert_eq!(
            r.replicas,
            vec![pb::ReplicaStats {
                stack: "shop".into(),
                service: "web".into(),
                task: "t2".into(),
                slot: 2,
                node: "n1".into(),
                container: "c2".into(),
                cpu_percent: 12.5,
                memory_bytes: 100,
                memory_limit_bytes: 200,
                net_rx_bytes: 300,
                net_tx_bytes: 400,
                restarts: 5,
                at_ms: 1_700_000_000_000,
            }]
        );
        assert_eq!(
            r.gpus,
            vec![pb::NodeGpuStats {
                node: "n1".into(),
                uuid: "GPU-0".into(),
                index: 0,
                model: "NVIDIA A10".into(),
                utilization_percent: Some(40),
                memory_used_bytes: Some(1 << 30),
                history: Vec::new(),
            }]
        );
    }

    #[test]
    fn gpus_alone_are_reported_and_nothing_is_not() {
        let empty = Measured {
            at_ms: 5,
            replicas: Vec::new(),
        };
        let r = report(stats_message("n1", &empty, &[gpu(None, None)]));
        assert!(r.replicas.is_empty());
        assert_eq!(r.gpus.len(), 1);
        assert_eq!(
            r.gpus[0].utilization_percent, None,
            "an inventory file gives none"
        );
        assert!(stats_message("n1", &empty, &[]).is_none());
        // A first sample's CPU is not known yet: 0 on the wire.
        let first = Measured {
            at_ms: 5,
            replicas: vec![replica(None)],
        };
        assert_eq!(
            report(stats_message("n1", &first, &[])).replicas[0].cpu_percent,
            0.0
        );
    }

    #[tokio::test]
    async fn a_report_follows_every_pass_until_the_session_closes() {
        let (tx, rx) = watch::channel(Arc::new(Measured::default()));
        let (_gpus_tx, gpus) = watch::channel(Vec::new());
        let (out, mut got) = mpsc::channel(8);
        let reporter = tokio::spawn(run_reporter("n1".into(), rx, gpus, out));
        for at_ms in [10, 20] {
            tx.send_replace(Arc::new(Measured {
                at_ms,
                replicas: vec![replica(None)],
            }));
            let r = report(got.recv().await);
            assert_eq!(r.replicas[0].at_ms, at_ms);
        }
        // A pass with nothing to say sends nothing.
        tx.send_replace(Arc::new(Measured {
            at_ms: 30,
            replicas: Vec::new(),
        }));
        tx.send_replace(Arc::new(Measured {
            at_ms: 40,
            replicas: vec![replica(None)],
        }));
        assert_eq!(report(got.recv().await).replicas[0].at_ms, 40);
        drop(got);
        tx.send_replace(Arc::new(Measured {
            at_ms: 50,
            replicas: vec![replica(None)],
        }));
        tokio::time::timeout(std::time::Duration::from_secs(10), reporter)
            .await
            .expect("the reporter ends with its session")
            .expect("joined");
    }
}
