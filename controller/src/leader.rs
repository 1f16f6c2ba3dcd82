//! The work only the leader does: run the reconciler and declare lost nodes down.
//!
//! Each pass reads the applied state, asks the pure [`crate::reconciler::reconcile_in`]
//! what to change, and proposes the decisions as one `Reconcile` command. A pass runs
//! after every applied change and at least every `TICK`, since restart delays and
//! liveness depend on time passing.
//!
//! A pass looks only at the services that changed since the last one (the state's
//! [`crate::state::changes`]) and at those the last one found unsettled (waiting on
//! time or on other services); any change to nodes, volumes or moves, a new leader and
//! a full pass every `FULL_EVERY` look at every service. A pass that only time woke runs
//! while it takes at most a tenth of the time: at 100,000 tasks of one service still
//! rolling out, where reading them all takes about 100 ms, a cluster waiting on time
//! would otherwise spend half a core on it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::api::control::now_ms;
use crate::api::Shared;
use crate::liveness::Liveness;
use crate::reconciler::Scope;
use crate::state::changes::Changed;
use crate::state::{Command, ServiceKey};

const TICK: Duration = Duration::from_millis(250);
/// A pass that time alone woke runs only when this many times the last pass's duration
/// has passed since it began (every tick below 25 ms).
const AT_REST_SHARE: u32 = 10;
/// How long a pass waits after the change that woke it, so that the changes of a burst
/// are decided on in one pass rather than one pass each.
const COALESCE: Duration = Duration::from_millis(20);
/// A pass over every service at least this often (or `AT_REST_SHARE` times its
/// duration): a safety net under the changes the other passes follow.
const FULL_EVERY: Duration = Duration::from_secs(10);

/// Where the reconciler stands between passes.
struct Follow {
    /// The state's change cursor the last pass read ([`crate::state::changes`]).
    cursor: u64,
    /// Services the last pass looked at and must look at again.
    unsettled: BTreeSet<ServiceKey>,
    /// When a pass over every service is due.
    next_full: Instant,
    /// When a pass that time woke may run, and how long the last one took.
    next_at_rest: Instant,
    took: Duration,
}

/// Runs until `shutdown`; does nothing while this controller is not the leader.
pub async fn run(ctx: Shared, grace: Duration, shutdown: CancellationToken) {
    let mut applied = ctx.node.state.subscribe();
    let mut metrics = ctx.node.raft.metrics();
    let mut leading = false;
    let mut due = true;
    // Whether the pass is due to an applied change (or leadership), not to time alone.
    let mut changed = true;
    let mut follow = Follow {
        cursor: 0,
        unsettled: BTreeSet::new(),
        next_full: Instant::now(),
        next_at_rest: Instant::now(),
        took: Duration::ZERO,
    };
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
            follow.next_full = Instant::now();
        } else if !is_leader && leading {
            tracing::info!(id = ctx.node.id, "no longer the leader: reconciler paused");
        }
        leading = is_leader;
        if leading && due {
            let started = Instant::now();
            let full = started >= follow.next_full;
            let reconcile = full || changed || started >= follow.next_at_rest;
            match pass(&ctx, reconcile.then_some(full), &mut follow).await {
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "reconcile pass failed; retrying")
                }
                Ok(None) => {}
                Ok(Some(took)) => {
                    follow.took = took;
                    follow.next_at_rest = started + took * AT_REST_SHARE;
                    if full {
                        follow.next_full = started + FULL_EVERY.max(took * AT_REST_SHARE);
                    }
                }
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
            // together; the wait is at least as long as the last pass took.
            tokio::time::sleep(COALESCE.max(follow.took)).await;
        }
    }
}

/// One pass: node liveness, volume moves, then (with `reconcile`: whether over every
/// service) the reconciler's decisions. Returns how long reconciling took, if it ran.
async fn pass(
    ctx: &Shared,
    reconcile: Option<bool>,
    follow: &mut Follow,
) -> anyhow::Result<Option<Duration>> {
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
    let Some(full) = reconcile else {
        return Ok(None);
    };
    let now = now_ms();
    let started = Instant::now();
    // Decided on what the status changes just made, not on the state before them.
    let (cursor, outcome) = {
        let state = ctx.node.state.read();
        let cursor = state.changes.cursor();
        let outcome = match state.changes.since(follow.cursor) {
            Changed::Services(mut keys) if !full => {
                keys.extend(follow.unsettled.iter().cloned());
                crate::reconciler::reconcile_in(&state, now, Scope::Services(&keys))
            }
            _ => crate::reconciler::reconcile_in(&state, now, Scope::All),
        };
        (cursor, outcome)
    };
    let took = started.elapsed();
    let decisions = outcome.decisions;
    if !decisions.is_empty() {
        tracing::debug!(count = decisions.len(), ?decisions, "reconcile decisions");
        let tally = crate::observe::Tally::of(&decisions);
        // On failure the cursor stays: the next pass looks at the same services again.
        ctx.propose(Command::Reconcile {
            decisions,
            now_ms: now,
        })
        .await?;
        ctx.observe.count(&tally);
    }
    follow.cursor = cursor;
    follow.unsettled = outcome.unsettled;
    Ok(Some(took))
}
