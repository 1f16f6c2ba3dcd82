//! Autoscaling (`x-shoal-autoscale`, issue 16) on the leader: how many replicas a service
//! should run, decided as Kubernetes' HPA decides.
//!
//! Map:
//! - [`signals`]: the nodes' latest [`MetricsReport`](crate::api::metrics_report)s in the
//!   leader's memory, summed per service and metric ([`NodeTotals`]).
//! - [`reading`]: what one metric reads now ([`Reading`]): from the nodes' totals, or from
//!   a Prometheus answer.
//! - [`quantile`]: `histogram_quantile` as Prometheus computes it.
//! - [`recommend`]: each metric's proposal and the recommended count (pure).
//! - [`stabilize`]: the recommendations of the last window and what they allow (pure).
//! - [`decide`]: [`Autoscaler`], the histories per service and the [`Decision`]: the
//!   recommendation stabilized, step-limited and bounded, with its cause.
//! - [`prometheus`]: the instant query of a `prometheus` metric (the only I/O here).
//! - [`words`]: numbers and durations as decisions print them.
//! - [`run`]: the leader's loop: readings, decisions, `Command::Autoscale` through Raft.
//!
//! Everything but [`prometheus`] and [`run`] is pure and takes `now_ms` as a value; only
//! [`run`] writes to the Raft state (the decided count).

pub mod decide;
pub mod prometheus;
pub mod quantile;
pub mod reading;
pub mod recommend;
pub mod run;
pub mod signals;
pub mod stabilize;
pub mod words;

pub use decide::{Autoscaler, Decision};
pub use quantile::histogram_quantile;
pub use reading::Reading;
pub use signals::{NodeTotals, Signals, FRESH_MS};
