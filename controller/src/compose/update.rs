//! `deploy.update_config` and `deploy.rollback_config` to an [`UpdateConfig`] each: the
//! same keys, defaults and checks, for rolling a new spec out and for rolling back to the
//! previous one.
//!
//! The schema has already checked types and the `order` enum; this pass checks meaning
//! (ranges, `failure_action`) and reports each mistake at its own key.

use shoal_proto::spec::{FailureAction, UpdateConfig, UpdateOrder};

use super::diag::Sink;
use super::service::duration;
use super::value::{entries, text};
use super::yaml::Node;

/// Why `rollback_config.failure_action: rollback` is kept but does not act as written.
pub(crate) const ROLLBACK_OF_ROLLBACK: &str =
    "a rollback that fails pauses; it does not roll back again";

/// Which block is read: they differ only in what `failure_action: rollback` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Update,
    Rollback,
}

/// `deploy.update_config` at `path`; keys not given keep [`UpdateConfig::default`].
pub(crate) fn update_config(n: &Node, sink: &mut Sink, path: &str) -> UpdateConfig {
    config(n, sink, path, Block::Update)
}

/// `deploy.rollback_config` at `path`; keys not given keep [`UpdateConfig::default`].
pub(crate) fn rollback_config(n: &Node, sink: &mut Sink, path: &str) -> UpdateConfig {
    config(n, sink, path, Block::Rollback)
}

fn config(n: &Node, sink: &mut Sink, path: &str, block: Block) -> UpdateConfig {
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
                    // Kept as written; the reconciler treats it as pause during a rollback.
                    u.failure_action = FailureAction::Rollback;
                    if block == Block::Rollback {
                        sink.warn(v.pos, &p, ROLLBACK_OF_ROLLBACK);
                    }
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
    /// the diagnostics as `LINE:SEVERITY:KEY: MESSAGE`.
    fn run(src: &str) -> (UpdateConfig, Vec<String>) {
        run_as(src, Block::Update)
    }

    /// The same as [`run`] for the body of a `rollback_config:` block.
    fn run_rollback(src: &str) -> (UpdateConfig, Vec<String>) {
        run_as(src, Block::Rollback)
    }

    fn run_as(src: &str, block: Block) -> (UpdateConfig, Vec<String>) {
        let mut sink = Sink::default();
        let file = sink.add_file("u.yaml".into());
        let (docs, problems) = yaml::parse(src, file).expect("test YAML parses");
        assert!(problems.is_empty(), "{problems:?}");
        let u = match block {
            Block::Update => update_config(&docs[0], &mut sink, "u"),
            Block::Rollback => rollback_config(&docs[0], &mut sink, "u"),
        };
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
    fn update_failure_action_rollback_is_honored_without_a_warning() {
        let (u, diags) = run("failure_action: rollback\n");
        assert_eq!(u.failure_action, FailureAction::Rollback);
        assert_eq!(diags, Vec::<String>::new());
    }

    #[test]
    fn rollback_config_maps_every_field_like_update_config() {
        let src = "parallelism: 2\ndelay: 1m30s\norder: start-first\nmonitor: 500ms\nfailure_action: continue\nmax_failure_ratio: 0.25\nx-note: hi\n";
        let (r, diags) = run_rollback(src);
        assert_eq!(
            r,
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
        assert_eq!(run_rollback("{}\n"), (UpdateConfig::default(), vec![]));
    }

    #[test]
    fn a_rollback_that_rolls_back_is_kept_with_a_warning() {
        let (r, diags) = run_rollback("parallelism: 0\nfailure_action: rollback\n");
        assert_eq!(
            r,
            UpdateConfig {
                parallelism: 0,
                failure_action: FailureAction::Rollback,
                ..UpdateConfig::default()
            }
        );
        assert_eq!(
            diags,
            vec!["2:warning:u.failure_action: a rollback that fails pauses; it does not roll back again"]
        );
    }

    #[test]
    fn rollback_config_bad_values_are_errors_at_their_key() {
        let (r, diags) = run_rollback(
            "parallelism: many\ndelay: soon\nfailure_action: retry\nmax_failure_ratio: -0.5\n",
        );
        assert_eq!(r, UpdateConfig::default());
        assert_eq!(
            diags,
            vec![
                "1:error:u.parallelism: must be a whole number of replicas, 0 or more (0: all at once), not `many`",
                "2:error:u.delay: invalid duration `soon`: use a number with a unit, e.g. 10s, 1m30s, 500ms",
                "3:error:u.failure_action: unknown failure_action `retry`: use pause, continue or rollback",
                "4:error:u.max_failure_ratio: must be a number from 0 to 1 (the fraction of replicas allowed to fail), not `-0.5`",
            ]
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
