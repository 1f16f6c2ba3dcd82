//! `deploy.update_config` to an [`UpdateConfig`], and `deploy.rollback_config`, which is
//! accepted and ignored until automatic rollback exists.
//!
//! The schema has already checked types and the `order` enum; this pass checks meaning
//! (ranges, `failure_action`) and reports each mistake at its own key.

use shoal_proto::spec::{FailureAction, UpdateConfig, UpdateOrder};

use super::diag::Sink;
use super::service::duration;
use super::value::{entries, text};
use super::yaml::Node;

/// Why `rollback_config` is accepted and not acted on (shown by `shoal config` too).
pub(crate) const ROLLBACK_IGNORED: &str =
    "automatic rollback is not implemented yet; a failed update pauses or continues as update_config.failure_action says";

/// `deploy.update_config` at `path`; keys not given keep [`UpdateConfig::default`].
pub(crate) fn update_config(n: &Node, sink: &mut Sink, path: &str) -> UpdateConfig {
    let mut u = UpdateConfig::default();
    for (k, v) in entries(n, sink, path) {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "parallelism" => {
                if let Some(x) = parallelism(v, sink, &p) {
                    u.parallelism = x;
                }
            }
            "delay" => {
                if let Some(ms) = duration(v, sink, &p) {
                    u.delay_ms = ms;
                }
            }
            "monitor" => {
                if let Some(ms) = duration(v, sink, &p) {
                    u.monitor_ms = ms;
                }
            }
            "order" => match text(v, sink, &p).as_deref() {
                Some("stop-first") => u.order = UpdateOrder::StopFirst,
                Some("start-first") => u.order = UpdateOrder::StartFirst,
                Some(other) => sink.error(
                    v.pos,
                    &p,
                    format!("unknown order `{other}`: use stop-first or start-first"),
                ),
                None => {}
            },
            "failure_action" => match text(v, sink, &p).as_deref() {
                Some("pause") => u.failure_action = FailureAction::Pause,
                Some("continue") => u.failure_action = FailureAction::Continue,
                Some("rollback") => {
                    u.failure_action = FailureAction::Rollback;
                    sink.warn(
                        v.pos,
                        &p,
                        "automatic rollback is not implemented yet: a failed update pauses instead; deploy the previous file to roll back",
                    );
                }
                Some(other) => sink.error(
                    v.pos,
                    &p,
                    format!("unknown failure_action `{other}`: use pause, continue or rollback"),
                ),
                None => {}
            },
            "max_failure_ratio" => {
                if let Some(r) = ratio(v, sink, &p) {
                    u.max_failure_ratio = r;
                }
            }
            // Unknown keys are schema errors already; `x-` keys are extensions.
            _ => {}
        }
    }
    u
}

fn parallelism(v: &Node, sink: &mut Sink, p: &str) -> Option<u64> {
    let t = text(v, sink, p)?;
    match t.trim().parse::<u64>() {
        Ok(x) => Some(x),
        Err(_) => {
            sink.error(
                v.pos,
                p,
                format!(
                    "must be a whole number of replicas, 0 or more (0: all at once), not `{t}`"
                ),
            );
            None
        }
    }
}

fn ratio(v: &Node, sink: &mut Sink, p: &str) -> Option<f32> {
    let t = text(v, sink, p)?;
    match t.trim().parse::<f32>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Some(r),
        _ => {
            sink.error(
                v.pos,
                p,
                format!("must be a number from 0 to 1 (the fraction of replicas allowed to fail), not `{t}`"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::diag::Severity;
    use crate::compose::yaml;

    /// Convert `src` (the body of an `update_config:` block) and return the result with
    /// the diagnostics as `LINE:KEY: MESSAGE`.
    fn run(src: &str) -> (UpdateConfig, Vec<String>) {
        let mut sink = Sink::default();
        let file = sink.add_file("u.yaml".into());
        let (docs, problems) = yaml::parse(src, file).expect("test YAML parses");
        assert!(problems.is_empty(), "{problems:?}");
        let u = update_config(&docs[0], &mut sink, "u");
        let diags = sink
            .diags
            .iter()
            .map(|d| {
                let sev = match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                format!("{}:{sev}:{}: {}", d.line.unwrap_or(0), d.key, d.message)
            })
            .collect();
        (u, diags)
    }

    #[test]
    fn every_field_maps() {
        let (u, diags) = run(
            "parallelism: 2\ndelay: 1m30s\norder: start-first\nmonitor: 500ms\nfailure_action: continue\nmax_failure_ratio: 0.25\nx-note: hi\n",
        );
        assert_eq!(
            u,
            UpdateConfig {
                parallelism: 2,
                delay_ms: 90_000,
                order: UpdateOrder::StartFirst,
                monitor_ms: 500,
                failure_action: FailureAction::Continue,
                max_failure_ratio: 0.25,
            }
        );
        assert_eq!(diags, Vec::<String>::new());
    }

    #[test]
    fn an_empty_block_keeps_the_defaults() {
        let (u, diags) = run("{}\n");
        assert_eq!(u, UpdateConfig::default());
        assert_eq!(u.parallelism, 1);
        assert_eq!(u.monitor_ms, 5_000);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(run("~\n").0, UpdateConfig::default());
    }

    #[test]
    fn zero_parallelism_means_all_at_once_and_bounds_are_inclusive() {
        let (u, diags) = run("parallelism: 0\nmax_failure_ratio: 1\ndelay: 0\n");
        assert_eq!(
            (u.parallelism, u.max_failure_ratio, u.delay_ms),
            (0, 1.0, 0)
        );
        assert!(diags.is_empty(), "{diags:?}");
    }

    #[test]
    fn rollback_is_kept_with_a_warning() {
        let (u, diags) = run("failure_action: rollback\n");
        assert_eq!(u.failure_action, FailureAction::Rollback);
        assert_eq!(
            diags,
            vec!["1:warning:u.failure_action: automatic rollback is not implemented yet: a failed update pauses instead; deploy the previous file to roll back"]
        );
    }

    #[test]
    fn bad_values_are_errors_at_their_key_and_keep_the_default() {
        let (u, diags) = run(
            "parallelism: -1\ndelay: soon\norder: sideways\nmonitor: 5\nfailure_action: retry\nmax_failure_ratio: 1.5\n",
        );
        assert_eq!(u, UpdateConfig::default());
        assert_eq!(
            diags,
            vec![
                "1:error:u.parallelism: must be a whole number of replicas, 0 or more (0: all at once), not `-1`",
                "2:error:u.delay: invalid duration `soon`: use a number with a unit, e.g. 10s, 1m30s, 500ms",
                "3:error:u.order: unknown order `sideways`: use stop-first or start-first",
                "4:error:u.monitor: invalid duration `5`: use a number with a unit, e.g. 10s, 1m30s, 500ms",
                "5:error:u.failure_action: unknown failure_action `retry`: use pause, continue or rollback",
                "6:error:u.max_failure_ratio: must be a number from 0 to 1 (the fraction of replicas allowed to fail), not `1.5`",
            ]
        );
        let (_, diags) = run("max_failure_ratio: lots\n");
        assert_eq!(diags.len(), 1, "{diags:?}");
        let (_, diags) = run("max_failure_ratio: nan\n");
        assert_eq!(diags.len(), 1, "{diags:?}");
    }
}
