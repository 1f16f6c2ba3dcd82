//! The work only the leader does: run the reconciler and declare lost nodes down.
//!
//! Each pass takes a snapshot of the applied state, asks the pure
//! [`crate::reconciler::reconcile`] what to change, and proposes the decisions as one
//! `Reconcile` command. A pass runs after every applied change and at least every
//! `TICK`, since restart delays and liveness depend on time passing. A pass that only
//! time woke (nothing was applied) checks liveness every tick but reconciles only while
//! that takes at most a tenth of the time: at 100,000 tasks, where reading them all takes
//! about 100 ms, a cluster at rest would otherwise spend half a core on it.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::api::control::now_ms;
use crate::api::Shared;
use crate::liveness::Liveness;
use crate::state::Command;

const TICK: Duration = Duration::from_millis(250);
/// A pass that time alone woke reconciles only when this many times the last
/// reconciliation's duration has passed since it began (every tick below 25 ms).
const AT_REST_SHARE: u32 = 10;
/// How long a pass waits after the change that woke it, so that the changes of a burst
/// are decided on in one pass rather than one pass each (each reads every task).
const COALESCE: Duration = Duration::from_millis(20);

/// Runs until `shutdown`; does nothing while this controller is not the leader.
pub async fn run(ctx: Shared, grace: Duration, shutdown: CancellationToken) {
    let mut applied = ctx.node.state.subscribe();
    let mut metrics = ctx.node.raft.metrics();
    let mut leading = false;
    let mut due = true;
    // Whether the pass is due to an applied change (or leadership), not to time alone.
    let mut changed = true;
    // When a pass that time woke may reconcile again, and how long the last one took.
    let mut next_at_rest = Instant::now();
    let mut took = Duration::ZERO;
    // An interval, not a sleep per loop: frequent metrics changes must not starve the tick.
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let is_leader = metrics.borrow().current_leader == Some(ctx.node.id);
        if is_leader && !leading {
            tracing::info!(id = ctx.node.id, "became leader: reconciling");
            // Every node gets a full grace period to reach the new leader.
            *ctx.lock_liveness() = Liveness::new(grace, Instant::now());
            due = true;
        } else if !is_leader && leading {
            tracing::info!(id = ctx.node.id, "no longer the leader: reconciler paused");
        }
        leading = is_leader;
        if leading && due {
            let started = Instant::now();
            let reconcile = changed || started >= next_at_rest;
            match pass(&ctx, reconcile).await {
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "reconcile pass failed; retrying")
                }
                Ok(Some(reconciled)) => {
                    took = reconciled;
                    next_at_rest = started + took * AT_REST_SHARE;
                }
                Ok(None) => {}
            }
            ctx.observe
                .reconcile
                .observe(started.elapsed().as_secs_f64());
        }
        // Pass again after an applied change or a tick; metrics changes (heartbeats,
        // replication progress) only re-check leadership.
        (due, changed) = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = applied.changed() => (true, true),
            _ = metrics.changed() => (false, false),
            _ = tick.tick() => (true, false),
        };
        if due && leading {
            // Changes arriving meanwhile (a burst of task statuses) are decided on
            // together; the wait is at least as long as the last reconciliation took.
            tokio::time::sleep(COALESCE.max(took)).await;
        }
    }
}

/// One pass: node liveness, volume moves, then (with `reconcile`) the reconciler's
/// decisions. Returns how long reconciling took, if it ran.
async fn pass(ctx: &Shared, reconcile: bool) -> anyhow::Result<Option<Duration>> {
    if let Err(e) = crate::membership::promote(&ctx.node.raft).await {
        tracing::warn!(error = %format!("{e:#}"), "promoting learners failed; retrying");
    }
    // Read under the state's lock, never copied whole: a copy of 100,000 tasks costs more
    // than deciding on them. Nothing here awaits while the lock is held.
    let transitions = {
        let state = ctx.node.state.read();
        let now = Instant::now();
        ctx.lock_liveness().transitions(&state, now)
    };
    for (node, status) in transitions {
        tracing::info!(%node, status = status.as_str(), "node status changed");
        ctx.propose(Command::SetNodeStatus {
            node,
            status,
            now_ms: now_ms(),
        })
        .await?;
    }
    if let Err(e) = crate::transfers::tend(ctx).await {
        tracing::warn!(error = %e, "volume moves could not be tended; retrying");
    }
    if !reconcile {
        return Ok(None);
    }
    let now = now_ms();
    let started = Instant::now();
    // Decided on what the status changes just made, not on the state before them.
    let decisions = crate::reconciler::reconcile(&ctx.node.state.read(), now);
    let took = started.elapsed();
    if decisions.is_empty() {
        return Ok(Some(took));
    }
    tracing::debug!(count = decisions.len(), ?decisions, "reconcile decisions");
    let tally = crate::observe::Tally::of(&decisions);
    ctx.propose(Command::Reconcile {
        decisions,
        now_ms: now,
    })
    .await?;
    ctx.observe.count(&tally);
    Ok(Some(took))
}
