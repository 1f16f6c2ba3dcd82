//! The work only the leader does: run the reconciler and declare lost nodes down.
//!
//! Each pass takes a snapshot of the applied state, asks the pure
//! [`crate::reconciler::reconcile`] what to change, and proposes the decisions as one
//! `Reconcile` command. A pass runs after every applied change and at least every
//! `TICK`, since restart delays and liveness depend on time passing.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::api::control::now_ms;
use crate::api::Shared;
use crate::liveness::Liveness;
use crate::state::Command;

const TICK: Duration = Duration::from_millis(250);
/// How long a pass waits after the change that woke it, so that the changes of a burst
/// are decided on in one pass rather than one pass each (each reads every task).
const COALESCE: Duration = Duration::from_millis(20);

/// Runs until `shutdown`; does nothing while this controller is not the leader.
pub async fn run(ctx: Shared, grace: Duration, shutdown: CancellationToken) {
    let mut applied = ctx.node.state.subscribe();
    let mut metrics = ctx.node.raft.metrics();
    let mut leading = false;
    let mut due = true;
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
            if let Err(e) = pass(&ctx).await {
                tracing::warn!(error = %format!("{e:#}"), "reconcile pass failed; retrying");
            }
            ctx.observe
                .reconcile
                .observe(started.elapsed().as_secs_f64());
        }
        // Pass again after an applied change or a tick; metrics changes (heartbeats,
        // replication progress) only re-check leadership.
        due = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = applied.changed() => true,
            _ = metrics.changed() => false,
            _ = tick.tick() => true,
        };
        if due && leading {
            // Changes arriving meanwhile (a burst of task statuses) are decided on together.
            tokio::time::sleep(COALESCE).await;
        }
    }
}

async fn pass(ctx: &Shared) -> anyhow::Result<()> {
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
    let now = now_ms();
    // Decided on what the status changes just made, not on the state before them.
    let decisions = crate::reconciler::reconcile(&ctx.node.state.read(), now);
    if decisions.is_empty() {
        return Ok(());
    }
    tracing::debug!(count = decisions.len(), ?decisions, "reconcile decisions");
    let tally = crate::observe::Tally::of(&decisions);
    ctx.propose(Command::Reconcile {
        decisions,
        now_ms: now,
    })
    .await?;
    ctx.observe.count(&tally);
    Ok(())
}
