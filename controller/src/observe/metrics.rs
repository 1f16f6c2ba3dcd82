//! `shoal controller --metrics ADDR`: the Prometheus page, served on `/metrics` by
//! [`shoal_tls::metrics_http`].
//!
//! The registry holds the counters and histograms the controller updates as it works
//! (proposal latency, leader changes, decisions, reconcile passes) and one collector
//! that reads, at each scrape, openraft's metrics and the applied state: nothing is
//! copied or kept between scrapes, and the state's read lock is held only while
//! [`super::figures::count`] runs.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use shoal_proto::task::TaskState;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::figures::{self, RolloutPhase, AVAILABILITIES, NODE_STATUSES};
use crate::api::{Context, Shared};

/// Serves the controller's page on `listener` (bound by the caller with
/// [`shoal_tls::metrics_http::bind`], which names an address it cannot bind) until
/// `shutdown`.
pub fn serve(
    ctx: &Shared,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let registry = registry(ctx);
    let render: shoal_tls::metrics_http::Render = Arc::new(move || render(&registry));
    tokio::spawn(shoal_tls::metrics_http::serve(listener, render, shutdown))
}

/// The page: OpenMetrics text of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding the metrics failed");
        let _ = writeln!(out, "# encoding failed: {e}\n# EOF");
    }
    out
}

/// Every figure of this controller. The collector holds the context weakly: the
/// registry lives in the metrics server's task, and must not keep a stopped controller
/// alive.
pub fn registry(ctx: &Shared) -> Registry {
    let mut r = Registry::default();
    let o = &ctx.observe;
    r.register(
        "shoal_raft_leader_changes",
        "Times this controller saw the Raft leader change (the first leader it learns counts)",
        o.leader_changes.clone(),
    );
    r.register(
        "shoal_raft_proposal_duration_seconds",
        "Seconds from proposing a change to its being applied on this controller (committed proposals)",
        ctx.node.instruments.proposals.clone(),
    );
    r.register(
        "shoal_scheduler_decisions",
        "Decisions of the reconciler and scheduler committed by this controller while it led, by kind",
        o.decisions.clone(),
    );
    r.register(
        "shoal_reconcile_duration_seconds",
        "Seconds per leader pass: liveness, reconcile, and proposing its decisions",
        o.reconcile.clone(),
    );
    r.register_collector(Box::new(Live {
        ctx: Arc::downgrade(ctx),
    }));
    r
}

/// Reads the figures computed at scrape time.
struct Live {
    ctx: Weak<Context>,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Live { .. }")
    }
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let Some(ctx) = self.ctx.upgrade() else {
            return Ok(());
        };
        raft_figures(&ctx, &mut enc)?;
        gauge(
            &mut enc,
            "shoal_agent_sessions",
            "Agent sessions open on this controller (only the leader holds any)",
            ctx.sessions.len() as i64,
        )?;
        let state = ctx.node.state.read();
        cluster_figures(&figures::count(&state), &mut enc)
    }
}

fn raft_figures(ctx: &Context, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let (term, leader, applied) = {
        let m = ctx.node.raft.metrics();
        let m = m.borrow();
        (
            m.current_term,
            m.current_leader,
            m.last_applied.map_or(0, |l| l.index),
        )
    };
    let committed = ctx.node.instruments.committed_index().max(applied);
    gauge(
        enc,
        "shoal_raft_term",
        "This controller's current Raft term",
        term as i64,
    )?;
    gauge(
        enc,
        "shoal_raft_is_leader",
        "1 while this controller is the Raft leader",
        i64::from(leader == Some(ctx.node.id)),
    )?;
    gauge(
        enc,
        "shoal_raft_commit_index",
        "The last Raft log index this controller knows committed",
        committed as i64,
    )?;
    gauge(
        enc,
        "shoal_raft_applied_index",
        "The last Raft log index applied to this controller's state",
        applied as i64,
    )?;
    gauge(
        enc,
        "shoal_raft_apply_lag",
        "Committed entries not yet applied on this controller",
        committed.saturating_sub(applied) as i64,
    )?;
    gauge(
        enc,
        "shoal_raft_snapshot_bytes",
        "Size of the last snapshot this controller built, installed or started from",
        ctx.node.state.snapshot_bytes() as i64,
    )
}

fn cluster_figures(
    f: &figures::ClusterFigures<'_>,
    enc: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    family(
        enc,
        "shoal_nodes",
        "Nodes by status, from the applied state",
        NODE_STATUSES
            .iter()
            .zip(f.nodes)
            .map(|(s, n)| ([("status", s.as_str())], n)),
    )?;
    family(
        enc,
        "shoal_nodes_availability",
        "Nodes by availability (active, drain)",
        AVAILABILITIES
            .iter()
            .zip(f.availability)
            .map(|(a, n)| ([("availability", a.as_str())], n)),
    )?;
    family(
        enc,
        "shoal_tasks",
        "Tasks the state keeps, by state (finished ones included until forgotten)",
        TaskState::ALL
            .iter()
            .zip(f.tasks)
            .map(|(s, n)| ([("state", s.as_str())], n)),
    )?;
    gauge(
        enc,
        "shoal_services",
        "Services deployed (not being removed)",
        f.services.len() as i64,
    )?;
    family(
        enc,
        "shoal_rollouts",
        "Services by the phase of their current generation's rollout",
        RolloutPhase::ALL
            .iter()
            .zip(f.rollouts)
            .map(|(p, n)| ([("phase", p.as_str())], n)),
    )?;
    family(
        enc,
        "shoal_service_replicas",
        "A service's replicas: desired, running (up), healthy",
        f.services.iter().flat_map(|s| {
            [
                ("desired", s.desired),
                ("running", s.running),
                ("healthy", s.healthy),
            ]
            .map(|(kind, n)| ([("stack", s.stack), ("service", s.name), ("kind", kind)], n))
        }),
    )?;
    family(
        enc,
        "shoal_service_rollout_phase",
        "1 for the phase of each service's current rollout",
        f.services.iter().map(|s| {
            (
                [
                    ("stack", s.stack),
                    ("service", s.name),
                    ("phase", s.phase.as_str()),
                ],
                1,
            )
        }),
    )?;
    family(
        enc,
        "shoal_service_generation",
        "A service's spec generation (bumped by each deploy that changes it)",
        f.services
            .iter()
            .map(|s| ([("stack", s.stack), ("service", s.name)], s.generation)),
    )
}

fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> fmt::Result {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// A gauge with a row per label set.
fn family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(&labels)?
            .encode_gauge(&i64::try_from(v).unwrap_or(i64::MAX))?;
    }
    Ok(())
}
