//! The reconciler: a pure function from a state snapshot and `now` to the decisions that
//! move the cluster toward what its services ask for. It runs on the leader, which
//! proposes its decisions through Raft; nothing here reads a clock or does I/O.
//!
//! Per service it keeps one live task per slot (replicated: slots 1..=replicas; global:
//! one slot per eligible node), replaces tasks of an older spec generation, replaces
//! ended tasks as the restart policy says (after its delay, up to `max_attempts`),
//! shuts down tasks of removed slots and services, forgets old history, holds tasks
//! back until their `depends_on` conditions hold, moves replicas of services being
//! rebalanced ([`crate::rebalance`]), and places the rest with
//! [`crate::scheduler::place`].
//!
//! Global services have one slot per eligible node ([`scheduler::eligible_nodes`]:
//! ready, active, matching the constraints), recomputed every pass: a node that joins,
//! returns or is labelled into the constraints gets a replica; one that goes down, is
//! drained or labelled out loses it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use shoal_proto::spec::{
    DependencyCondition, FailureAction, RestartCondition, ServiceMode, UpdateOrder,
};
use shoal_proto::task::{Desired, TaskState};

use crate::scheduler::{self, Request};
use crate::state::{
    Availability, ClusterState, Decision, NodeId, NodeStatus, Service, ServiceKey, Task, TaskId,
};

/// Ended tasks kept per slot, so `ps --all` shows recent failures.
pub const HISTORY_PER_SLOT: usize = 3;

/// Everything that should change, given the state and the time.
pub fn reconcile(state: &ClusterState, now_ms: u64) -> Vec<Decision> {
    reconcile_in(state, now_ms, Scope::All).decisions
}

/// The services a pass looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    All,
    /// These services (the others decide nothing: see [`reconcile_in`]).
    Services(&'a BTreeSet<ServiceKey>),
}

/// What a pass decided, and which of the services it looked at must be looked at again
/// even if nothing changes them.
#[derive(Debug, Default)]
pub struct Outcome {
    pub decisions: Vec<Decision>,
    pub unsettled: BTreeSet<ServiceKey>,
}

/// How far ahead a pass looks to tell whether time alone would make a service decide
/// something (a restart delay, a monitor period, a health deadline): a century.
const LATER_MS: u64 = 100 * 365 * 24 * 3_600_000;

/// [`reconcile`] of the services in `scope` only. It decides the same as [`reconcile`]
/// when `scope` holds every service changed since the last pass ([`super::state::changes`])
/// and every service that pass found unsettled, provided no node, volume or move changed
/// since (then the scope is `All`). A service is settled when it decides nothing now,
/// would decide nothing at any later time, and nothing of it waits on another
/// service's tasks; only a change to it can then make it decide.
pub fn reconcile_in(state: &ClusterState, now_ms: u64, scope: Scope<'_>) -> Outcome {
    let mut out = Vec::new();
    let mut unsettled = BTreeSet::new();
    let in_scope: Option<HashSet<(&str, &str)>> = match scope {
        Scope::All => None,
        Scope::Services(keys) => Some(
            keys.iter()
                .filter_map(|k| state.services.get(k))
                .map(|s| (s.stack.as_str(), s.name.as_str()))
                .collect(),
        ),
    };
    // One pass over the tasks, not one per service: the lost ones, the pending ones,
    // and every one of a service in scope by service.
    let mut by_service: HashMap<(&str, &str), Vec<&Task>> = HashMap::new();
    let mut pending = Vec::new();
    if in_scope.as_ref().is_none_or(|s| !s.is_empty()) {
        for t in state.tasks.values() {
            let key = (t.stack.as_str(), t.service.as_str());
            if in_scope.as_ref().is_some_and(|s| !s.contains(&key)) {
                continue;
            }
            if lost(state, t) {
                out.push(Decision::Orphan { task: t.id.clone() });
                unsettled.insert(t.service_key());
            }
            if t.state == TaskState::Pending && t.desired == Desired::Running {
                pending.push(t);
            }
            by_service.entry(key).or_default().push(t);
        }
    }
    for svc in state.services.values() {
        let key = (svc.stack.as_str(), svc.name.as_str());
        if in_scope.as_ref().is_some_and(|s| !s.contains(&key)) {
            continue;
        }
        let tasks = by_service.remove(&key).unwrap_or_default();
        let before = out.len();
        if svc.removing {
            remove_service(svc, &tasks, &mut out);
        } else {
            converge_service(state, svc, &tasks, now_ms, &mut out);
        }
        if out.len() > before || !settled(state, svc, &tasks, now_ms) {
            unsettled.insert(svc.key());
        }
    }
    for stack in state.stacks.values() {
        if stack.removing && !state.services.values().any(|s| s.stack == stack.name) {
            out.push(Decision::DropStack {
                stack: stack.name.clone(),
            });
        }
    }
    stop_for_moves(state, &mut out);
    let promoted = scheduler::volumes::promotions(state);
    if !promoted.is_empty() {
        // Placed on the next pass, once the promoted copy is live.
        out.extend(promoted);
        return Outcome {
            decisions: out,
            unsettled,
        };
    }
    schedule_pending(state, &pending, &mut out);
    Outcome {
        decisions: out,
        unsettled,
    }
}

/// Whether nothing but a change to `svc` (or to nodes, volumes and moves, after which
/// every service is looked at) can make it decide something: see [`reconcile_in`].
fn settled(state: &ClusterState, svc: &Service, tasks: &[&Task], now_ms: u64) -> bool {
    // Removing and rebalancing wait on other tasks and nodes; a pending task on its
    // dependencies and on room elsewhere; a global service sharing a namespace on where
    // its partners run.
    if svc.removing
        || svc.rebalancing
        || tasks
            .iter()
            .any(|t| t.state == TaskState::Pending && t.desired == Desired::Running)
        || matches!(svc.spec.mode, ServiceMode::Global | ServiceMode::GlobalJob)
            && !svc.spec.container.colocated_with().is_empty()
    {
        return false;
    }
    // Every wait on time is a `now >= since + delay`: what a pass would decide much
    // later is what some later pass decides, if nothing changes before.
    let mut later = Vec::new();
    converge_service(
        state,
        svc,
        tasks,
        now_ms.saturating_add(LATER_MS),
        &mut later,
    );
    later.is_empty()
}
/// A volume move copies once the replicas using the volume on its source node stopped:
/// they are shut down here, and their replacements wait for the move
/// ([`scheduler::binding`]).
fn stop_for_moves(state: &ClusterState, out: &mut Vec<Decision>) {
    for m in state.moves.values() {
        if m.phase != crate::state::MovePhase::Stopping {
            continue;
        }
        for t in state.tasks_blocking_move(m) {
            if t.desired == Desired::Running {
                out.push(Decision::Shutdown { task: t.id.clone() });
            }
        }
    }
}

/// How many replicas a service should have running.
pub fn desired_replicas(state: &ClusterState, svc: &Service) -> u64 {
    match svc.spec.mode {
        ServiceMode::Replicated | ServiceMode::ReplicatedJob => svc.replicas,
        ServiceMode::Global | ServiceMode::GlobalJob => {
            scheduler::eligible_nodes(state, &svc.key(), &svc.spec).len() as u64
        }
    }
}

/// The task's node is down or gone, and the task has not ended.
fn lost(state: &ClusterState, t: &Task) -> bool {
    let Some(node) = &t.node else { return false };
    let gone = state
        .nodes
        .get(node)
        .is_none_or(|n| n.status == NodeStatus::Down);
    gone && !t.state.is_terminal()
}

fn remove_service(svc: &Service, tasks: &[&Task], out: &mut Vec<Decision>) {
    let mut all_gone = true;
    for t in tasks {
        if t.desired == Desired::Running {
            out.push(Decision::Shutdown { task: t.id.clone() });
        }
        if !container_gone(t) {
            all_gone = false;
        }
    }
    if all_gone {
        out.push(Decision::DropService { service: svc.key() });
    }
}

/// The task ended and no container of it is left on its node (or the node is lost).
fn container_gone(t: &Task) -> bool {
    match t.state {
        TaskState::Orphaned => true,
        s if s.is_terminal() => {
            t.container_id.is_empty() || t.desired == Desired::Shutdown && t.node.is_none()
        }
        TaskState::Pending => t.desired == Desired::Shutdown,
        _ => false,
    }
}

/// A slot: a replica index, or for global services the node the replica belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Index(u64),
    Node(NodeId),
}

fn slot_of(t: &Task) -> Slot {
    match &t.pinned {
        Some(n) => Slot::Node(n.clone()),
        None => Slot::Index(t.slot),
    }
}

fn converge_service(
    state: &ClusterState,
    svc: &Service,
    tasks: &[&Task],
    now_ms: u64,
    out: &mut Vec<Decision>,
) {
    let wanted: Vec<Slot> = match svc.spec.mode {
        ServiceMode::Replicated | ServiceMode::ReplicatedJob => {
            (1..=svc.replicas).map(Slot::Index).collect()
        }
        ServiceMode::Global | ServiceMode::GlobalJob => {
            scheduler::eligible_nodes(state, &svc.key(), &svc.spec)
                .into_iter()
                .map(Slot::Node)
                .collect()
        }
    };
    let mut by_slot: BTreeMap<Slot, Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        by_slot.entry(slot_of(t)).or_default().push(t);
    }
    for list in by_slot.values_mut() {
        list.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    }

    let mut outdated = Vec::new();
    let mut in_flight = 0u64;
    let mut moving = 0u64;
    // For a rebalance: live replicas by node, and the ready ones that may move.
    let mut counted: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut movable: BTreeMap<NodeId, Vec<(Slot, String)>> = BTreeMap::new();
    for slot in &wanted {
        let list = by_slot.get(slot).map(Vec::as_slice).unwrap_or(&[]);
        let status = converge_slot(state, svc, slot, list, now_ms, out);
        let newest = list
            .iter()
            .rev()
            .find(|t| t.desired == Desired::Running && !t.state.is_terminal());
        if let Some(node) = newest.and_then(|t| t.node.as_ref()) {
            *counted.entry(node.clone()).or_default() += 1;
        }
        match status {
            SlotStatus::Outdated(old) => outdated.push((slot.clone(), old)),
            SlotStatus::Updating => in_flight += 1,
            SlotStatus::Moving => {
                in_flight += 1;
                moving += 1;
            }
            SlotStatus::Current => {
                if let Some(t) = newest.filter(|t| t.node.is_some() && is_ready(svc, t, now_ms)) {
                    let node = t.node.clone().unwrap_or_default();
                    movable
                        .entry(node)
                        .or_default()
                        .push((slot.clone(), t.id.clone()));
                }
            }
        }
    }
    if !svc.rollout_complete && !svc.spec.mode.is_job() {
        let ready = tasks
            .iter()
            .filter(|t| t.generation == svc.generation && t.desired == Desired::Running)
            .filter(|t| is_ready(svc, t, now_ms))
            .count();
        if outdated.is_empty() && in_flight == 0 && ready >= wanted.len() && !wanted.is_empty() {
            out.push(Decision::CompleteRollout {
                service: svc.key(),
                generation: svc.generation,
            });
        } else if rollout_paused(svc, tasks).is_some() && svc.rolls_back_when_paused() {
            out.push(Decision::RollBack {
                service: svc.key(),
                generation: svc.generation,
            });
            return;
        }
    }
    roll_out(svc, tasks, &outdated, in_flight, now_ms, out);
    if svc.rebalancing {
        rebalance(
            state, svc, tasks, &outdated, in_flight, moving, &counted, &movable, out,
        );
    }
    let wanted: BTreeSet<&Slot> = wanted.iter().collect();
    for (slot, list) in &by_slot {
        let keep = if wanted.contains(slot) {
            HISTORY_PER_SLOT
        } else {
            // A slot that was scaled away: stop what runs, forget what ended.
            for t in list {
                if t.desired == Desired::Running {
                    out.push(Decision::Shutdown { task: t.id.clone() });
                }
            }
            0
        };
        forget_history(list, keep, out);
    }
}

/// Plans the moves of a rebalance (start-first, `parallelism` at a time, after any
/// rollout), or says it is over when nothing is left to move or in flight.
#[allow(clippy::too_many_arguments)]
fn rebalance(
    state: &ClusterState,
    svc: &Service,
    tasks: &[&Task],
    outdated: &[(Slot, String)],
    in_flight: u64,
    moving: u64,
    counted: &BTreeMap<NodeId, u64>,
    movable: &BTreeMap<NodeId, Vec<(Slot, String)>>,
    out: &mut Vec<Decision>,
) {
    // Replicas bound to their volumes' copies stay where the copies are.
    let bound = state.stacks.get(&svc.stack).is_some_and(|st| {
        crate::state::volumes::mounted_volumes(&st.spec, &svc.spec).any(|(_, v)| v.is_bound())
    });
    if svc.spec.mode != ServiceMode::Replicated || bound {
        out.push(Decision::CompleteRebalance { service: svc.key() });
        return;
    }
    // A rollout goes first; a paused one holds the rebalance too.
    if !outdated.is_empty() || rollout_paused(svc, tasks).is_some() {
        return;
    }
    let update = svc.update_config();
    // Parallelism 0 moves a whole batch at once, and plans the next once it is done:
    // planning on top of moves in flight would plan against placements not yet made.
    let budget = match update.parallelism {
        0 if in_flight > 0 => 0,
        0 => usize::MAX,
        p => p.saturating_sub(in_flight) as usize,
    };
    if budget == 0 {
        return;
    }
    let ids: BTreeMap<NodeId, Vec<TaskId>> = movable
        .iter()
        .map(|(n, v)| (n.clone(), v.iter().map(|(_, id)| id.clone()).collect()))
        .collect();
    let chosen = crate::rebalance::moves(state, svc, counted, &ids, budget);
    if chosen.is_empty() {
        if moving == 0 {
            out.push(Decision::CompleteRebalance { service: svc.key() });
        }
        return;
    }
    let slots: HashMap<&str, &Slot> = movable
        .values()
        .flatten()
        .map(|(slot, id)| (id.as_str(), slot))
        .collect();
    for id in chosen {
        if let Some(slot) = slots.get(id.as_str()) {
            // Start-first: the replica moved stops once its replacement is ready.
            create_in(svc, slot, out);
        }
    }
}

/// Where a slot stands with respect to the service's current spec.
enum SlotStatus {
    /// Runs an older generation: the rollout replaces it when its turn comes.
    Outdated(String),
    /// Its replacement of the current generation runs but is not ready yet.
    Updating,
    /// A replica being moved (drain, rebalance) waits for its replacement to be ready.
    Moving,
    /// Nothing to roll out here.
    Current,
}

/// Whether a replica of the current spec counts as updated: healthy when the service has
/// a healthcheck, else running for the update's monitor period.
pub fn is_ready(svc: &Service, t: &Task, now_ms: u64) -> bool {
    if svc.spec.has_healthcheck() {
        t.state == TaskState::Healthy
    } else {
        t.state.is_up() && now_ms >= t.updated_at_ms + svc.spec.update.monitor_ms
    }
}

/// Why a running replica of the current spec counts as failed because it did not become
/// healthy in time (only while its generation rolls out: afterwards Docker's own
/// `unhealthy` says it).
fn health_timed_out(svc: &Service, t: &Task, now_ms: u64) -> Option<String> {
    if svc.rollout_complete || t.state != TaskState::Running {
        return None;
    }
    let deadline = svc.spec.health_deadline_ms()?;
    (now_ms >= t.updated_at_ms + deadline).then(|| {
        format!(
            "not healthy {} after it started (healthcheck start period, retries and monitor)",
            human_ms(deadline)
        )
    })
}

/// `1500` -> "1.5s", `90000` -> "1m30s".
pub fn human_ms(ms: u64) -> String {
    if ms < 60_000 {
        let s = format!("{:.1}", ms as f64 / 1000.0);
        return format!("{}s", s.trim_end_matches(".0"));
    }
    let (m, s) = (ms / 60_000, (ms % 60_000) / 1000);
    if s == 0 {
        format!("{m}m")
    } else {
        format!("{m}m{s}s")
    }
}

fn create_in(svc: &Service, slot: &Slot, out: &mut Vec<Decision>) {
    let (index, node) = match slot {
        Slot::Index(i) => (*i, None),
        Slot::Node(n) => (0, Some(n.clone())),
    };
    out.push(Decision::CreateTask {
        service: svc.key(),
        slot: index,
        generation: svc.generation,
        node,
    });
}

/// Why `t` can no longer run: a GPU it holds is not on its (ready) node any more.
fn lost_gpu(state: &ClusterState, t: &Task) -> Option<String> {
    if t.gpus.is_empty() {
        return None;
    }
    let name = t.node.as_ref()?;
    let node = state.nodes.get(name)?;
    if node.status != crate::state::NodeStatus::Ready {
        return None;
    }
    let gone = t
        .gpus
        .iter()
        .find(|u| !node.gpus.iter().any(|g| &g.uuid == *u))?;
    Some(format!(
        "GPU {gone} is gone from node {name} (its last GPU discovery did not find it)"
    ))
}

fn drained(state: &ClusterState, t: &Task) -> bool {
    t.node
        .as_ref()
        .and_then(|n| state.nodes.get(n))
        .is_some_and(|n| n.availability == Availability::Drain)
}

fn converge_slot(
    state: &ClusterState,
    svc: &Service,
    slot: &Slot,
    list: &[&Task],
    now_ms: u64,
    out: &mut Vec<Decision>,
) -> SlotStatus {
    let live: Vec<&Task> = list
        .iter()
        .copied()
        .filter(|t| t.desired == Desired::Running && !t.state.is_terminal())
        .collect();
    // A GPU it holds is gone from its node (the agent's last discovery no longer found
    // it): the replica fails, and its replacement is placed on GPUs that are there.
    if let Some((t, reason)) = live
        .iter()
        .find_map(|t| lost_gpu(state, t).map(|r| (*t, r)))
    {
        out.push(Decision::Fail {
            task: t.id.clone(),
            reason,
        });
        return SlotStatus::Updating;
    }
    // A replica on a drained node is moved like an outdated one (rolled, `parallelism`
    // at a time): its replacement is placed elsewhere.
    if let Some(t) = live.last().filter(|t| drained(state, t)) {
        return SlotStatus::Outdated(t.id.clone());
    }
    let (current, old): (Vec<&Task>, Vec<&Task>) =
        live.iter().partition(|t| t.generation >= svc.generation);
    if let Some((newest, dupes)) = current.split_last() {
        if let Some(reason) = health_timed_out(svc, newest, now_ms) {
            out.push(Decision::Fail {
                task: newest.id.clone(),
                reason,
            });
            return SlotStatus::Updating;
        }
        // Start-first: the old replica (of an older spec, or one being moved off a node)
        // goes once its replacement is ready.
        let ready = is_ready(svc, newest, now_ms);
        if ready {
            for t in dupes.iter().chain(&old) {
                out.push(Decision::Shutdown { task: t.id.clone() });
            }
        }
        return match (ready, dupes.is_empty()) {
            (true, _) => SlotStatus::Current,
            (false, true) => SlotStatus::Updating,
            (false, false) => SlotStatus::Moving,
        };
    }
    if let Some((newest, older)) = old.split_last() {
        for t in older {
            out.push(Decision::Shutdown { task: t.id.clone() });
        }
        return SlotStatus::Outdated(newest.id.clone());
    }

    let Some(last) = list.last() else {
        create_in(svc, slot, out);
        return SlotStatus::Current;
    };
    if last.generation < svc.generation || last.desired == Desired::Shutdown {
        if last.desired == Desired::Running {
            out.push(Decision::Shutdown {
                task: last.id.clone(),
            });
        }
        create_in(svc, slot, out);
        return SlotStatus::Current;
    }
    // The slot's task of the current spec ended while it should run.
    if should_restart(svc, last, list, now_ms)
        && (now_ms >= last.updated_at_ms + svc.spec.restart.delay_ms
            || last.state == TaskState::Orphaned)
    {
        out.push(Decision::Shutdown {
            task: last.id.clone(),
        });
        create_in(svc, slot, out);
    }
    SlotStatus::Current
}

/// Replaces outdated replicas, `parallelism` at a time, in `order`, waiting `delay`
/// between batches, and pausing when more replicas of the new spec failed than
/// `max_failure_ratio` allows (unless `failure_action: continue`).
fn roll_out(
    svc: &Service,
    tasks: &[&Task],
    outdated: &[(Slot, String)],
    in_flight: u64,
    now_ms: u64,
    out: &mut Vec<Decision>,
) {
    if outdated.is_empty() {
        return;
    }
    let update = svc.update_config();
    if rollout_paused(svc, tasks).is_some() {
        return;
    }
    if in_flight == 0 && update.delay_ms > 0 {
        let last_ready = tasks
            .iter()
            .filter(|t| t.generation == svc.generation && t.desired == Desired::Running)
            .filter(|t| is_ready(svc, t, now_ms))
            .map(|t| t.updated_at_ms)
            .max();
        if last_ready.is_some_and(|at| now_ms < at + update.delay_ms) {
            return;
        }
    }
    let budget = if update.parallelism == 0 {
        outdated.len()
    } else {
        update.parallelism.saturating_sub(in_flight) as usize
    };
    for (slot, old) in outdated.iter().take(budget) {
        if update.order == UpdateOrder::StopFirst {
            out.push(Decision::Shutdown { task: old.clone() });
        }
        create_in(svc, slot, out);
    }
}

/// Why the rollout of `svc`'s current spec is paused, if it is.
pub fn rollout_paused(svc: &Service, tasks: &[&Task]) -> Option<String> {
    let update = svc.update_config();
    if svc.rollout_complete || update.failure_action == FailureAction::Continue {
        return None;
    }
    let (failed, allowed) = rollout_failures(svc, tasks);
    (failed > allowed).then(|| {
        format!(
            "rollout of generation {} paused: {failed} new replica(s) failed \
             (max_failure_ratio {}); fix the service and deploy again",
            svc.generation, update.max_failure_ratio
        )
    })
}

/// How many replicas of `svc`'s current generation failed (exited, failed to start, or
/// their healthcheck fails) and how many its `max_failure_ratio` allows before the
/// rollout pauses.
pub fn rollout_failures(svc: &Service, tasks: &[&Task]) -> (usize, usize) {
    let failed = tasks
        .iter()
        .filter(|t| t.generation == svc.generation)
        .filter(|t| {
            t.state == TaskState::Failed
                || (t.state == TaskState::Unhealthy && t.desired == Desired::Running)
        })
        .count();
    let update = svc.update_config();
    let allowed = (update.max_failure_ratio as f64 * svc.replicas.max(1) as f64).floor() as usize;
    (failed, allowed)
}

/// Whether an ended task of the current generation is replaced, per the restart policy.
fn should_restart(svc: &Service, last: &Task, list: &[&Task], now_ms: u64) -> bool {
    let policy = &svc.spec.restart;
    let job = svc.spec.mode.is_job();
    let wanted = match last.state {
        // A lost node is never the replica's fault: replace it whatever the policy.
        TaskState::Orphaned => return true,
        TaskState::Complete => !job && policy.condition == RestartCondition::Any,
        TaskState::Failed | TaskState::Shutdown => policy.condition != RestartCondition::None,
        _ => false,
    };
    if !wanted {
        return false;
    }
    let Some(max) = policy.max_attempts else {
        return true;
    };
    let since = policy.window_ms.map_or(0, |w| now_ms.saturating_sub(w));
    let restarts = list
        .iter()
        .filter(|t| t.generation == svc.generation)
        .filter(|t| {
            matches!(
                t.state,
                TaskState::Failed | TaskState::Complete | TaskState::Shutdown
            )
        })
        .filter(|t| t.updated_at_ms >= since)
        .count() as u64;
    // The first run is not a restart: `max_attempts: 2` allows three runs in all.
    restarts <= max
}

fn forget_history(list: &[&Task], keep: usize, out: &mut Vec<Decision>) {
    let ended: Vec<&&Task> = list
        .iter()
        .filter(|t| t.desired == Desired::Shutdown && container_gone(t))
        .collect();
    if ended.len() > keep {
        for t in &ended[..ended.len() - keep] {
            out.push(Decision::Forget { task: t.id.clone() });
        }
    }
}

/// Pending tasks whose dependencies hold are placed; the others say what they wait for.
fn schedule_pending(state: &ClusterState, pending: &[&Task], out: &mut Vec<Decision>) {
    if pending.is_empty() {
        // Counting the nodes' loads reads every task.
        return;
    }
    let mut requests = Vec::new();
    // Per service, not per task: a dependency's check reads every task.
    let mut waits: HashMap<(&str, &str), Option<String>> = HashMap::new();
    for t in pending {
        let Some(svc) = state.services.get(&t.service_key()) else {
            continue;
        };
        if svc.removing || t.generation < svc.generation {
            continue;
        }
        let wait = waits
            .entry((svc.stack.as_str(), svc.name.as_str()))
            .or_insert_with(|| unmet_dependency(state, svc));
        if let Some(reason) = wait.clone() {
            if t.error != reason {
                out.push(Decision::Pending {
                    task: t.id.clone(),
                    reason,
                });
            }
            continue;
        }
        let nodes = match scheduler::binding(state, svc, t.slot) {
            scheduler::Binding::Free => None,
            scheduler::Binding::Nodes(f) => Some(std::sync::Arc::new(f)),
            scheduler::Binding::Wait(reason) => {
                if t.error != reason {
                    out.push(Decision::Pending {
                        task: t.id.clone(),
                        reason,
                    });
                }
                continue;
            }
        };
        requests.push(Request {
            task: t.id.clone(),
            service: svc.key(),
            spec: &svc.spec,
            pinned: t.pinned.clone(),
            nodes,
        });
    }
    for d in scheduler::place(state, &requests) {
        if let Decision::Pending { task, reason } = &d {
            if state.tasks.get(task).is_some_and(|t| &t.error == reason) {
                continue;
            }
        }
        out.push(d);
    }
}

/// Why `svc` may not start yet, or None when every `depends_on` condition holds.
pub fn unmet_dependency(state: &ClusterState, svc: &Service) -> Option<String> {
    for (name, dep) in &svc.spec.depends_on {
        let Some(d) = state
            .services
            .get(&crate::state::service_key(&svc.stack, name))
        else {
            if dep.required {
                return Some(format!("waiting for {name}, which is not deployed"));
            }
            continue;
        };
        let want = desired_replicas(state, d);
        let current: Vec<&Task> = state
            .tasks
            .values()
            .filter(|t| t.stack == d.stack && t.service == d.name)
            .filter(|t| t.generation == d.generation && t.desired == Desired::Running)
            .collect();
        let (ok, what) = match dep.condition {
            DependencyCondition::ServiceStarted => (
                current.iter().filter(|t| t.state.is_up()).count() as u64,
                "started",
            ),
            DependencyCondition::ServiceHealthy => {
                let healthy = |t: &&Task| {
                    t.state == TaskState::Healthy
                        || (!d.spec.has_healthcheck() && t.state == TaskState::Running)
                };
                (
                    current.iter().filter(|t| healthy(t)).count() as u64,
                    "healthy",
                )
            }
            DependencyCondition::ServiceCompletedSuccessfully => (
                current
                    .iter()
                    .filter(|t| t.state == TaskState::Complete && t.exit_code.unwrap_or(0) == 0)
                    .count() as u64,
                "completed successfully",
            ),
        };
        if ok < want.max(1) {
            return Some(format!(
                "waiting for {name} to be {what} ({ok}/{} replicas)",
                want.max(1)
            ));
        }
    }
    None
}
