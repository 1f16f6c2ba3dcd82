//! A container's CPU time and memory from the engine's one-shot stats
//! (`GET /containers/{id}/stats?stream=false&one-shot=true`, API 1.41): one sample,
//! without the engine's second read a second later.

use bollard::container::{MemoryStats, MemoryStatsStats, Stats, StatsOptions};
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
    let mut stream = docker.stats(id, Some(options));
    match stream.next().await {
        Some(Ok(stats)) => Ok(from_stats(&stats)),
        Some(Err(e)) => Err(engine(e)),
        None => Err(RuntimeError::Engine(format!(
            "the engine sent no stats for container {id}"
        ))),
    }
}

fn from_stats(s: &Stats) -> ContainerStats {
    ContainerStats {
        cpu_ns: s.cpu_stats.cpu_usage.total_usage,
        memory_bytes: memory_in_use(&s.memory_stats),
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
            "rx_dropped": 0, "tx_bytes": 0, "tx_packets": 0, "tx_errors": 0, "tx_dropped": 0}}
    }"#;

    #[test]
    fn cgroup_v1_counts_usage_less_the_total_inactive_file() {
        let stats: Stats = serde_json::from_str(V1).expect("a v1 answer parses");
        assert_eq!(
            from_stats(&stats),
            ContainerStats {
                cpu_ns: 24_407_770,
                memory_bytes: 2_170_880 - 1_507_000,
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
        assert_eq!(from_stats(&stats).memory_bytes, 6_000);
        // More inactive cache than usage (the counters are read apart): the usage.
        let m = MemoryStats {
            usage: Some(3_000),
            ..stats.memory_stats
        };
        assert_eq!(memory_in_use(&m), 3_000);
    }
}
