//! `x-shoal-volume` on a top-level volume: how the cluster keeps it.
//!
//! ```yaml
//! volumes:
//!   pgdata: {}                                   # bound: replicas stay with their copy
//!   cache:
//!     x-shoal-volume: {policy: ephemeral}        # disposable: a new copy anywhere
//!   db:
//!     x-shoal-volume: {replicas: 2, every: 30s}  # a standby copy on another node
//! ```

use shoal_proto::spec::VolumePolicy;

use super::diag::Sink;
use super::service::duration;
use super::value::uint;
use super::yaml::{Node, Value};

const HOW: &str = "use {policy: bound|ephemeral, replicas: N, every: DURATION}";

pub(crate) fn convert(n: &Node, sink: &mut Sink, path: &str) -> VolumePolicy {
    let mut policy = VolumePolicy::default();
    let Value::Map(entries) = &n.value else {
        sink.error(
            n.pos,
            path,
            format!("must be a mapping, not {}: {HOW}", n.type_name()),
        );
        return policy;
    };
    for (k, v) in entries {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "policy" => match v.as_scalar() {
                Some("ephemeral") => policy.ephemeral = true,
                Some("bound") => policy.ephemeral = false,
                _ => sink.error(v.pos, &p, "must be bound or ephemeral"),
            },
            "replicas" => match uint(v, sink, &p) {
                Some(0) => sink.error(v.pos, &p, "must be at least 1"),
                Some(r) => policy.replicas = Some(r.min(u32::MAX as u64) as u32),
                None => {}
            },
            "every" => match duration(v, sink, &p) {
                Some(0) => sink.error(v.pos, &p, "must be longer than 0s"),
                Some(ms) => policy.every_ms = Some(ms),
                None => {}
            },
            other => sink.error(
                k.pos,
                &p,
                format!("unknown x-shoal-volume key `{other}`: {HOW}"),
            ),
        }
    }
    if policy.ephemeral && policy.replicas.is_some_and(|r| r > 1) {
        sink.error(
            n.pos,
            path,
            "an ephemeral volume has no standby copies: drop replicas or the policy",
        );
    }
    policy
}
