//! `cpu` and `memory` of a replica (pure), from what the engine measures of its
//! container ([`ContainerStats`]), as fractions of its limit (else its reservation):
//! CPU use is the CPU time it used between two samples over the wall time between them,
//! so a container's first sample gives none yet.

use shoal_proto::spec::ServiceSpec;
use tokio::time::Instant;

use crate::runtime::ContainerStats;

/// A container's CPU time when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    pub at: Instant,
    pub cpu_ns: u64,
}

/// The CPU cores a replica may use: `deploy.resources.limits.cpus`, else the
/// reservation; `None` when neither is set.
pub fn cpu_cores(spec: &ServiceSpec) -> Option<f64> {
    let r = &spec.resources;
    r.limits
        .nano_cpus
        .filter(|n| *n > 0)
        .or(r.reservations.nano_cpus.filter(|n| *n > 0))
        .map(|n| n as f64 / 1e9)
}

/// The memory a replica may use (bytes): the limit, else the reservation.
pub fn memory_bytes(spec: &ServiceSpec) -> Option<f64> {
    let r = &spec.resources;
    r.limits
        .memory_bytes
        .filter(|n| *n > 0)
        .or(r.reservations.memory_bytes.filter(|n| *n > 0))
        .map(|n| n as f64)
}

/// Cores used between `before` and `now`; `None` when no time passed or the counter
/// went back (not the same container's).
pub fn cores_used(before: CpuSample, now: CpuSample) -> Option<f64> {
    let wall = now.at.saturating_duration_since(before.at).as_nanos();
    if wall == 0 || now.cpu_ns < before.cpu_ns {
        return None;
    }
    Some((now.cpu_ns - before.cpu_ns) as f64 / wall as f64)
}

/// Memory in use as a fraction of `limit` bytes.
pub fn memory_fraction(stats: &ContainerStats, limit: f64) -> f64 {
    stats.memory_bytes as f64 / limit
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::spec::{Limits, Resources};
    use std::time::Duration;

    fn spec(limits: Limits, reservations: Limits) -> ServiceSpec {
        ServiceSpec {
            resources: Resources {
                limits,
                reservations,
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_limit_counts_else_the_reservation() {
        let half = Limits {
            nano_cpus: Some(500_000_000),
            memory_bytes: Some(256 << 20),
            pids: None,
        };
        let two = Limits {
            nano_cpus: Some(2_000_000_000),
            memory_bytes: Some(1 << 30),
            pids: None,
        };
        assert_eq!(cpu_cores(&spec(two, half)), Some(2.0));
        assert_eq!(memory_bytes(&spec(two, half)), Some((1u64 << 30) as f64));
        assert_eq!(cpu_cores(&spec(Limits::default(), half)), Some(0.5));
        assert_eq!(
            memory_bytes(&spec(Limits::default(), half)),
            Some((256u64 << 20) as f64)
        );
        assert_eq!(cpu_cores(&spec(Limits::default(), Limits::default())), None);
        assert_eq!(
            memory_bytes(&spec(Limits::default(), Limits::default())),
            None
        );
    }

    #[test]
    fn cpu_use_is_cpu_time_over_wall_time() {
        let t0 = Instant::now();
        let before = CpuSample {
            at: t0,
            cpu_ns: 1_000_000_000,
        };
        let now = CpuSample {
            at: t0 + Duration::from_secs(5),
            cpu_ns: 8_500_000_000,
        };
        assert_eq!(cores_used(before, now), Some(1.5));
        assert_eq!(cores_used(now, now), None, "no time passed");
        assert_eq!(cores_used(now, before), None, "the counter went back");
    }

    #[test]
    fn memory_is_a_fraction_of_the_limit() {
        let stats = ContainerStats {
            memory_bytes: 192 << 20,
            ..Default::default()
        };
        assert_eq!(memory_fraction(&stats, (256u64 << 20) as f64), 0.75);
    }
}
