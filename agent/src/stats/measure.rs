//! One measuring pass, its pure parts: which of the engine's containers are this node's
//! running replicas ([`targets`]), and what the engine's figures of each make
//! ([`figures`]), CPU use computed as autoscaling computes it
//! ([`crate::autoscale::stats::cores_used`]) from the previous pass's sample.

use std::collections::HashMap;

use shoal_proto::labels;
use tokio::time::Instant;

use crate::autoscale::stats::{cores_used, CpuSample};
use crate::reconcile::is_ours;
use crate::runtime::{ContainerInfo, ContainerState, ContainerStats};

/// A running replica's container to measure, known by its labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub stack: String,
    pub service: String,
    pub slot: u64,
    pub task: String,
    pub container: String,
}

/// One replica's container as last measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaFigures {
    pub stack: String,
    pub service: String,
    pub slot: u64,
    pub task: String,
    pub container: String,
    /// Percent of one CPU (200: two CPUs busy) between the previous pass and this one;
    /// `None` on a container's first sample, or when its CPU counter went back (the
    /// engine restarted it).
    pub cpu_percent: Option<f64>,
    pub memory_bytes: u64,
    /// 0: no limit.
    pub memory_limit_bytes: u64,
    /// Since the container (last) started.
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    /// The engine's restart count of the container.
    pub restarts: u64,
}

/// The node's running replicas among the engine's `containers`: those of this node
/// and cluster ([`is_ours`]) whose process runs, in (stack, service, slot, task)
/// order.
pub fn targets(containers: &[ContainerInfo], node: &str, cluster: Option<&str>) -> Vec<Target> {
    let label = |c: &ContainerInfo, key: &str| c.labels.get(key).cloned().unwrap_or_default();
    let mut out: Vec<Target> = containers
        .iter()
        .filter(|c| c.state == ContainerState::Running && is_ours(c, node, cluster))
        .filter_map(|c| {
            Some(Target {
                task: c.task_id()?.to_string(),
                stack: label(c, labels::STACK),
                service: label(c, labels::SERVICE),
                slot: label(c, labels::SLOT).parse().unwrap_or(0),
                container: c.id.clone(),
            })
        })
        .collect();
    out.sort();
    out
}

/// The figures of each target whose stats were read (`reads[i]` of `targets[i]`: the
/// engine's figures and when they were read, or `None`: the read failed, e.g. the
/// container went meanwhile), updating `cpu` (each container's last CPU sample;
/// containers no longer among `targets` are forgotten).
pub fn figures(
    cpu: &mut HashMap<String, CpuSample>,
    targets: &[Target],
    reads: &[Option<(ContainerStats, Instant)>],
) -> Vec<ReplicaFigures> {
    let alive: std::collections::HashSet<&str> =
        targets.iter().map(|t| t.container.as_str()).collect();
    cpu.retain(|c, _| alive.contains(c.as_str()));
    targets
        .iter()
        .zip(reads)
        .filter_map(|(t, read)| {
            let (s, at) = read.as_ref()?;
            let now = CpuSample {
                at: *at,
                cpu_ns: s.cpu_ns,
            };
            let cpu_percent = cpu
                .insert(t.container.clone(), now)
                .and_then(|before| cores_used(before, now))
                .map(|cores| cores * 100.0);
            Some(ReplicaFigures {
                stack: t.stack.clone(),
                service: t.service.clone(),
                slot: t.slot,
                task: t.task.clone(),
                container: t.container.clone(),
                cpu_percent,
                memory_bytes: s.memory_bytes,
                memory_limit_bytes: s.memory_limit_bytes,
                net_rx_bytes: s.net_rx_bytes,
                net_tx_bytes: s.net_tx_bytes,
                restarts: s.restarts,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::test_container;
    use std::time::Duration;

    fn container(id: &str, task: &str, service: &str, slot: u64) -> ContainerInfo {
        let mut c = test_container(id, task, ContainerState::Running);
        for (k, v) in [
            (labels::STACK, "shop"),
            (labels::SERVICE, service),
            (labels::NODE, "n1"),
        ] {
            c.labels.insert(k.into(), v.into());
        }
        c.labels.insert(labels::SLOT.into(), slot.to_string());
        c
    }

    fn target(container: &str, task: &str, service: &str, slot: u64) -> Target {
        Target {
            stack: "shop".into(),
            service: service.into(),
            slot,
            task: task.into(),
            container: container.into(),
        }
    }

    #[test]
    fn running_containers_of_this_node_and_cluster_are_measured_in_order() {
        let mut exited = container("c3", "t3", "web", 3);
        exited.state = ContainerState::Exited;
        let mut elsewhere = container("c4", "t4", "web", 4);
        elsewhere.labels.insert(labels::NODE.into(), "n2".into());
        let mut other_cluster = container("c5", "t5", "web", 5);
        other_cluster
            .labels
            .insert(labels::CLUSTER.into(), "theirs".into());
        let containers = vec![
            container("c2", "t2", "web", 2),
            container("c9", "t9", "api", 1),
            exited,
            elsewhere,
            other_cluster,
            container("c1", "t1", "web", 1),
        ];
        assert_eq!(
            targets(&containers, "n1", Some("ours")),
            vec![
                target("c9", "t9", "api", 1),
                target("c1", "t1", "web", 1),
                target("c2", "t2", "web", 2),
            ]
        );
    }

    #[test]
    fn cpu_is_known_from_the_second_sample_and_gone_replicas_are_forgotten() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(5);
        let stats = |cpu_ns: u64| ContainerStats {
            cpu_ns,
            memory_bytes: 100 << 20,
            memory_limit_bytes: 256 << 20,
            net_rx_bytes: 1_000,
            net_tx_bytes: 2_000,
            restarts: 1,
        };
        let both = vec![target("c1", "t1", "web", 1), target("c2", "t2", "web", 2)];
        let mut cpu = HashMap::new();
        let first = figures(&mut cpu, &both, &[Some((stats(1_000_000_000), t0)), None]);
        assert_eq!(
            first,
            vec![ReplicaFigures {
                stack: "shop".into(),
                service: "web".into(),
                slot: 1,
                task: "t1".into(),
                container: "c1".into(),
                cpu_percent: None,
                memory_bytes: 100 << 20,
                memory_limit_bytes: 256 << 20,
                net_rx_bytes: 1_000,
                net_tx_bytes: 2_000,
                restarts: 1,
            }],
            "a replica whose read failed is left out"
        );
        // 2.5 s of CPU time over 5 s: half a CPU.
        let second = figures(
            &mut cpu,
            &both,
            &[
                Some((stats(3_500_000_000), t1)),
                Some((stats(7_000_000_000), t1)),
            ],
        );
        assert_eq!(
            second
                .iter()
                .map(|f| (f.task.as_str(), f.cpu_percent))
                .collect::<Vec<_>>(),
            vec![("t1", Some(50.0)), ("t2", None)]
        );
        // Its counter went back (restarted): unknown for that interval.
        let third = figures(
            &mut cpu,
            &both[..1],
            &[Some((stats(1_000), t1 + Duration::from_secs(5)))],
        );
        assert_eq!(third[0].cpu_percent, None);
        assert_eq!(cpu.len(), 1, "replica 2's sample forgotten");
    }
}
