//! A container's figures from the engine: the one-shot stats
//! (`GET /containers/{id}/stats?stream=false&one-shot=true`, API 1.41: one sample,
//! without the engine's second read a second later) for CPU time, memory and network
//! counters, and its inspect for what the stats lack (restart count, memory limit),
//! both asked at once.

use bollard::container::{
    InspectContainerOptions, MemoryStats, MemoryStatsStats, Stats, StatsOptions,
};
use bollard::models::ContainerInspectResponse;
use bollard::Docker;
use futures::StreamExt;

use super::engine;
use crate::runtime::{ContainerStats, RuntimeError, RuntimeResult};

/// One sample of container `id`.
pub(super) async fn read(docker: &Docker, id: &str) -> RuntimeResult<ContainerStats> {
    let options = StatsOptions {
        stream: false,
        one_shot: true,
    };
    let sample = async {
        let mut stream = docker.stats(id, Some(options));
        match stream.next().await {
            Some(Ok(stats)) => Ok(stats),
            Some(Err(e)) => Err(engine(e)),
            None => Err(RuntimeError::Engine(format!(
                "the engine sent no stats for container {id}"
            ))),
        }
    };
    let inspect = async {
        docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(engine)
    };
    let (stats, inspected) = tokio::try_join!(sample, inspect)?;
    Ok(from_stats(&stats, &inspected))
}

fn from_stats(s: &Stats, inspected: &ContainerInspectResponse) -> ContainerStats {
    let (net_rx_bytes, net_tx_bytes) = s
        .networks
        .iter()
        .flat_map(|n| n.values())
        .fold((0u64, 0u64), |(rx, tx), n| {
            (rx.saturating_add(n.rx_bytes), tx.saturating_add(n.tx_bytes))
        });
    let non_negative = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    ContainerStats {
        cpu_ns: s.cpu_stats.cpu_usage.total_usage,
        memory_bytes: memory_in_use(&s.memory_stats),
        memory_limit_bytes: non_negative(inspected.host_config.as_ref().and_then(|h| h.memory)),
        net_rx_bytes,
        net_tx_bytes,
        restarts: non_negative(inspected.restart_count),
    }
}

/// Usage less the inactive page cache, as the Docker CLI's `docker stats` computes it:
/// `total_inactive_file` on cgroup v1, `inactive_file` on v2 (when below the usage).
fn memory_in_use(m: &MemoryStats) -> u64 {
    let usage = m.usage.unwrap_or(0);
    let inactive = match &m.stats {
        Some(MemoryStatsStats::V1(v1)) => v1.total_inactive_file,
        Some(MemoryStatsStats::V2(v2)) => v2.inactive_file,
        None => 0,
    };
    if inactive < usage {
        usage - inactive
    } else {
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot answer of Docker 20.10 (API 1.41) on cgroup v1, trimmed of nothing
    /// the engine sends.
    const V1: &str = r#"{
        "read": "2026-12-06T18:25:11.585735178Z", "preread": "0001-01-01T00:00:00Z",
        "pids_stats": {"current": 1},
        "blkio_stats": {"io_service_bytes_recursive": [], "io_serviced_recursive": [],
            "io_queue_recursive": [], "io_service_time_recursive": [],
            "io_wait_time_recursive": [], "io_merged_recursive": [], "io_time_recursive": [],
            "sectors_recursive": []},
        "num_procs": 0, "storage_stats": {},
        "cpu_stats": {"cpu_usage": {"total_usage": 24407770, "percpu_usage": [22786385, 1621385],
            "usage_in_kernelmode": 0, "usage_in_usermode": 10000000},
            "system_cpu_usage": 2213590000000, "online_cpus": 2,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
        "precpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
            "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
        "memory_stats": {"usage": 2170880, "max_usage": 3821568, "stats": {
            "active_anon": 4096, "active_file": 0, "cache": 1507328, "dirty": 0,
            "hierarchical_memory_limit": 9223372036854771712,
            "hierarchical_memsw_limit": 9223372036854771712, "inactive_anon": 53248,
            "inactive_file": 1507328, "mapped_file": 1073152, "pgfault": 1050,
            "pgmajfault": 20, "pgpgin": 1131, "pgpgout": 749, "rss": 57344, "rss_huge": 0,
            "total_active_anon": 4096, "total_active_file": 0, "total_cache": 1507328,
            "total_dirty": 0, "total_inactive_anon": 53248, "total_inactive_file": 1507000,
            "total_mapped_file": 1073152, "total_pgfault": 1050, "total_pgmajfault": 20,
            "total_pgpgin": 1131, "total_pgpgout": 749, "total_rss": 57344,
            "total_rss_huge": 0, "total_unevictable": 0, "total_writeback": 0,
            "unevictable": 0, "writeback": 0}, "limit": 25276182528},
        "name": "/probe", "id": "1dd6e1b9e7e4",
        "networks": {"eth0": {"rx_bytes": 486, "rx_packets": 5, "rx_errors": 0,
            "rx_dropped": 0, "tx_bytes": 0, "tx_packets": 0, "tx_errors": 0, "tx_dropped": 0},
            "eth1": {"rx_bytes": 1200, "rx_packets": 9, "rx_errors": 0,
            "rx_dropped": 0, "tx_bytes": 90, "tx_packets": 1, "tx_errors": 0, "tx_dropped": 0}}
    }"#;

    /// What the inspect gives: its restarts and memory limit (0 or absent: none).
    fn inspected(restarts: Option<i64>, memory: Option<i64>) -> ContainerInspectResponse {
        ContainerInspectResponse {
            restart_count: restarts,
            host_config: Some(bollard::models::HostConfig {
                memory,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cgroup_v1_counts_usage_less_the_total_inactive_file_and_every_interface() {
        let stats: Stats = serde_json::from_str(V1).expect("a v1 answer parses");
        assert_eq!(
            from_stats(&stats, &inspected(Some(3), Some(64 << 20))),
            ContainerStats {
                cpu_ns: 24_407_770,
                memory_bytes: 2_170_880 - 1_507_000,
                memory_limit_bytes: 64 << 20,
                net_rx_bytes: 486 + 1_200,
                net_tx_bytes: 90,
                restarts: 3,
            }
        );
    }

    #[test]
    fn cgroup_v2_counts_usage_less_the_inactive_file() {
        let v2 = serde_json::json!({
            "anon": 1, "file": 2, "kernel_stack": 0, "slab": 0, "sock": 0, "shmem": 0,
            "file_mapped": 0, "file_dirty": 0, "file_writeback": 0, "anon_thp": 0,
            "inactive_anon": 0, "active_anon": 0, "inactive_file": 4000, "active_file": 0,
            "unevictable": 0, "slab_reclaimable": 0, "slab_unreclaimable": 0, "pgfault": 0,
            "pgmajfault": 0, "workingset_refault": 0, "workingset_activate": 0,
            "workingset_nodereclaim": 0, "pgrefill": 0, "pgscan": 0, "pgsteal": 0,
            "pgactivate": 0, "pgdeactivate": 0, "pglazyfree": 0, "pglazyfreed": 0,
            "thp_fault_alloc": 0, "thp_collapse_alloc": 0
        });
        let mut json: serde_json::Value = serde_json::from_str(V1).expect("parses");
        json["memory_stats"]["stats"] = v2;
        json["memory_stats"]["usage"] = 10_000.into();
        let stats: Stats = serde_json::from_value(json).expect("a v2 answer parses");
        let figures = from_stats(&stats, &inspected(None, Some(0)));
        assert_eq!(figures.memory_bytes, 6_000);
        // No limit, no restart count: zeros.
        assert_eq!((figures.memory_limit_bytes, figures.restarts), (0, 0));
        // More inactive cache than usage (the counters are read apart): the usage.
        let m = MemoryStats {
            usage: Some(3_000),
            ..stats.memory_stats
        };
        assert_eq!(memory_in_use(&m), 3_000);
    }

    #[test]
    fn a_container_without_a_network_of_its_own_has_no_network_bytes() {
        // `network_mode: host` or `container:`: the engine sends no `networks`.
        let mut json: serde_json::Value = serde_json::from_str(V1).expect("parses");
        json.as_object_mut().expect("an object").remove("networks");
        let stats: Stats = serde_json::from_value(json).expect("parses without networks");
        let figures = from_stats(&stats, &inspected(Some(0), None));
        assert_eq!((figures.net_rx_bytes, figures.net_tx_bytes), (0, 0));
        assert_eq!(figures.cpu_ns, 24_407_770);
    }
}
