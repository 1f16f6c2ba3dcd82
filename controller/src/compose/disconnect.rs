//! `x-shoal-disconnect` of a service: what a node does with the service's replicas while
//! it cannot reach any controller.
//!
//! ```yaml
//! x-shoal-disconnect: keep                 # the default: they keep running
//! x-shoal-disconnect: stop                 # stopped after 5 s without a controller
//! x-shoal-disconnect: {stop_after: 2s}     # stopped after 2 s
//! ```

use shoal_proto::spec::DisconnectPolicy;

use super::diag::Sink;
use super::service::duration;
use super::yaml::{Node, Value};

const HOW: &str = "use keep, stop or {stop_after: DURATION}";

pub(crate) fn convert(n: &Node, sink: &mut Sink, path: &str) -> Option<DisconnectPolicy> {
    match &n.value {
        Value::Map(entries) => {
            let mut policy = DisconnectPolicy {
                stop_after_ms: Some(DisconnectPolicy::DEFAULT_STOP_AFTER_MS),
            };
            for (k, v) in entries {
                let p = format!("{path}.{}", k.name);
                match k.name.as_str() {
                    "stop_after" => match duration(v, sink, &p)? {
                        0 => {
                            sink.error(v.pos, &p, "must be longer than 0s");
                            return None;
                        }
                        ms => policy.stop_after_ms = Some(ms),
                    },
                    other => {
                        sink.error(
                            k.pos,
                            &p,
                            format!("unknown x-shoal-disconnect key `{other}`: {HOW}"),
                        );
                        return None;
                    }
                }
            }
            Some(policy)
        }
        _ => match n.as_scalar() {
            Some("keep") => Some(DisconnectPolicy::default()),
            Some("stop") => Some(DisconnectPolicy {
                stop_after_ms: Some(DisconnectPolicy::DEFAULT_STOP_AFTER_MS),
            }),
            Some(other) => {
                sink.error(n.pos, path, format!("unknown policy `{other}`: {HOW}"));
                None
            }
            None => {
                sink.error(
                    n.pos,
                    path,
                    format!("must be a word or a mapping, not {}: {HOW}", n.type_name()),
                );
                None
            }
        },
    }
}
