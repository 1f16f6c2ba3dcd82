//! Named volumes the cluster knows: one [`VolumeCopy`] per (stack, volume, node), and
//! the moves under way ([`VolumeMove`]).
//!
//! A copy is recorded when a task that mounts the volume is assigned to a node (before
//! its agent can create it, so a node lost right after its first write still holds a
//! known copy), and when an agent reports a shoal volume on its engine that the state
//! does not know (a cluster re-created over the same engines adopts what it finds).
//! Copies record the slots that ran with them: the scheduler puts those slots back
//! where their copy is ([`crate::volumes::binding`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_proto::spec::{MountKind, ServiceSpec, StackSpec, VolumeSpec};

use super::apply::CommandResult;
use super::model::{ClusterState, NodeId, NodeStatus};

/// `STACK/NAME@NODE`: the key of one copy in [`ClusterState::volumes`].
pub fn copy_key(stack: &str, name: &str, node: &str) -> String {
    format!("{stack}/{name}@{node}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeCopy {
    pub stack: String,
    /// The Compose name of the volume.
    pub name: String,
    pub node: NodeId,
    /// The engine's name for it on the node.
    pub docker_name: String,
    pub created_ms: u64,
    /// As the agent last measured it (None: not yet).
    #[serde(default)]
    pub size_bytes: Option<u64>,
    pub last_used_ms: u64,
    /// The slots that ran with this copy, by service name: they are placed where it is.
    #[serde(default)]
    pub slots: BTreeMap<String, BTreeSet<u64>>,
    pub state: CopyState,
    /// Why it is in that state, for a person.
    #[serde(default)]
    pub note: String,
    /// The agent has reported it on its engine (a copy recorded at assignment may not
    /// exist yet).
    #[serde(default)]
    pub seen: bool,
    /// Disposable (`x-shoal-volume: {policy: ephemeral}`): it binds no replica.
    #[serde(default)]
    pub ephemeral: bool,
    /// A standby copy: when its last complete refresh was taken (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_ms: Option<u64>,
    /// How long the replicas were paused for the last refresh's final pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyState {
    /// The copy replicas use.
    Live,
    /// Being written by a move or a restore; nothing runs with it yet.
    Incoming,
    /// An older copy kept after a move: never used, never deleted but by `volume rm`.
    SetAside,
    /// Its node is to remove it; the record goes when the agent reports it gone.
    Removing,
    /// A copy refreshed from the live one every period (`x-shoal-volume: {replicas}`),
    /// kept by its agent outside the engine; promoted to live when the live copy's node
    /// is lost.
    Standby,
}

impl CopyState {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyState::Live => "live",
            CopyState::Incoming => "incoming",
            CopyState::SetAside => "set-aside",
            CopyState::Removing => "removing",
            CopyState::Standby => "standby",
        }
    }
}

/// `shoal volume move` (or a restore, with `from` empty) under way or finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMove {
    pub id: u64,
    pub stack: String,
    pub name: String,
    /// The node holding the copy (empty for a restore from a file).
    pub from: NodeId,
    pub to: NodeId,
    pub phase: MovePhase,
    pub started_ms: u64,
    pub updated_ms: u64,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MovePhase {
    /// The replicas using the copy are being stopped.
    Stopping,
    Copying,
    Done,
    Failed,
}

impl MovePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            MovePhase::Stopping => "stopping",
            MovePhase::Copying => "copying",
            MovePhase::Done => "done",
            MovePhase::Failed => "failed",
        }
    }

    pub fn is_over(self) -> bool {
        matches!(self, MovePhase::Done | MovePhase::Failed)
    }
}

/// One shoal volume an agent found on its engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSeen {
    pub docker_name: String,
    pub stack: String,
    pub name: String,
    pub size_bytes: Option<u64>,
    pub created_ms: u64,
}

/// The named volumes a service mounts, with their top-level definitions, external ones
/// included (what its agent needs to mount them).
pub fn named_volumes<'a>(
    stack: &'a StackSpec,
    spec: &'a ServiceSpec,
) -> impl Iterator<Item = (&'a str, &'a VolumeSpec)> + 'a {
    spec.volumes
        .iter()
        .filter(|m| m.kind == MountKind::Volume)
        .filter_map(|m| m.source.as_deref())
        .filter_map(move |src| stack.volumes.get(src).map(|v| (src, v)))
}

/// The named volumes a service mounts that the cluster keeps (external ones are the
/// user's).
pub fn mounted_volumes<'a>(
    stack: &'a StackSpec,
    spec: &'a ServiceSpec,
) -> impl Iterator<Item = (&'a str, &'a VolumeSpec)> + 'a {
    named_volumes(stack, spec).filter(|(_, v)| !v.external)
}

/// How many finished moves are kept for `volume move` to read back.
const MOVES_KEPT: usize = 32;

impl ClusterState {
    /// Copies of `stack`'s volume `name`, on any node.
    pub fn copies_of<'a>(
        &'a self,
        stack: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a VolumeCopy> + 'a {
        let from = format!("{stack}/{name}@");
        self.volumes
            .range(from.clone()..)
            .take_while(move |(k, _)| k.starts_with(&from))
            .map(|(_, c)| c)
    }

    /// The move of this volume under way, if any.
    pub fn move_of(&self, stack: &str, name: &str) -> Option<&VolumeMove> {
        self.moves
            .values()
            .find(|m| m.stack == stack && m.name == name && !m.phase.is_over())
    }

    /// Services whose tasks that are not over mount the copy, with their nodes.
    pub fn users_of(&self, stack: &str, name: &str, node: Option<&str>) -> BTreeSet<String> {
        self.tasks_mounting(stack, name, node)
            .map(|t| t.service_key())
            .collect()
    }

    /// Placed tasks that are not over whose service mounts `stack`'s volume `name`, on
    /// `node` or anywhere.
    fn tasks_mounting<'a>(
        &'a self,
        stack: &'a str,
        name: &'a str,
        node: Option<&'a str>,
    ) -> impl Iterator<Item = &'a super::model::Task> + 'a {
        let st = self.stacks.get(stack);
        self.tasks
            .values()
            .filter(move |t| t.stack == stack && !t.state.is_terminal() && t.node.is_some())
            .filter(move |t| node.is_none() || t.node.as_deref() == node)
            .filter(move |t| {
                st.zip(self.services.get(&t.service_key()))
                    .is_some_and(|(st, s)| {
                        mounted_volumes(&st.spec, &s.spec).any(|(v, _)| v == name)
                    })
            })
    }

    /// A task of `service` (slot `slot`) was assigned to `node`: record the copies of
    /// the volumes it mounts there.
    pub(super) fn record_copies(
        &mut self,
        stack: &str,
        service: &str,
        slot: u64,
        node: &str,
        now_ms: u64,
    ) {
        let Some(st) = self.stacks.get(stack) else {
            return;
        };
        let Some(svc) = self
            .services
            .get(&super::model::service_key(stack, service))
        else {
            return;
        };
        let mounts: Vec<(String, VolumeSpec)> = mounted_volumes(&st.spec, &svc.spec)
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        for (name, spec) in mounts {
            let copy = self
                .volumes
                .entry(copy_key(stack, &name, node))
                .or_insert_with(|| VolumeCopy {
                    stack: stack.to_string(),
                    name: name.clone(),
                    node: node.to_string(),
                    docker_name: spec.docker_name(stack, &name),
                    created_ms: now_ms,
                    size_bytes: None,
                    last_used_ms: now_ms,
                    slots: BTreeMap::new(),
                    state: CopyState::Live,
                    note: String::new(),
                    seen: false,
                    ephemeral: spec.policy.ephemeral,
                    synced_ms: None,
                    frozen_ms: None,
                });
            copy.ephemeral = spec.policy.ephemeral;
            copy.last_used_ms = now_ms;
            copy.slots
                .entry(service.to_string())
                .or_default()
                .insert(slot);
        }
    }

    /// Whether applying `node`'s report `seen` would change anything: agents report
    /// every 10 s, and an unchanged report must not cost a Raft write (each write makes
    /// every agent session look at its assignments again).
    pub fn volume_report_changes(&self, node: &str, seen: &[VolumeSeen]) -> bool {
        let names: BTreeSet<&str> = seen.iter().map(|s| s.docker_name.as_str()).collect();
        let dropped = self
            .volumes
            .values()
            .any(|c| gone_from_engine(c, node, &names));
        dropped
            || seen
                .iter()
                .filter(|s| !s.stack.is_empty() && !s.name.is_empty())
                .any(
                    |s| match self.volumes.get(&copy_key(&s.stack, &s.name, node)) {
                        None => true,
                        Some(c) => {
                            !c.seen
                                || c.size_bytes != s.size_bytes
                                || (s.created_ms > 0 && c.created_ms != s.created_ms)
                        }
                    },
                )
    }

    /// An agent's list of the shoal volumes on its engine.
    pub(super) fn volume_report(
        &mut self,
        node: &str,
        seen: &[VolumeSeen],
        now_ms: u64,
    ) -> CommandResult {
        let names: BTreeSet<&str> = seen.iter().map(|s| s.docker_name.as_str()).collect();
        // Copies the engine no longer has: removed ones go; a live one that was there
        // and is gone was removed by hand on the node.
        self.volumes
            .retain(|_, c| !gone_from_engine(c, node, &names));
        for s in seen {
            if s.stack.is_empty() || s.name.is_empty() {
                continue;
            }
            let key = copy_key(&s.stack, &s.name, node);
            let ephemeral = self
                .stacks
                .get(&s.stack)
                .and_then(|st| st.spec.volumes.get(&s.name))
                .is_some_and(|v| v.policy.ephemeral);
            let copy = self.volumes.entry(key).or_insert_with(|| VolumeCopy {
                stack: s.stack.clone(),
                name: s.name.clone(),
                node: node.to_string(),
                docker_name: s.docker_name.clone(),
                created_ms: if s.created_ms > 0 {
                    s.created_ms
                } else {
                    now_ms
                },
                size_bytes: None,
                last_used_ms: 0,
                slots: BTreeMap::new(),
                state: CopyState::Live,
                note: format!("found on {node}'s engine"),
                seen: true,
                ephemeral,
                synced_ms: None,
                frozen_ms: None,
            });
            copy.seen = true;
            copy.size_bytes = s.size_bytes;
            if s.created_ms > 0 {
                copy.created_ms = s.created_ms;
            }
        }
        CommandResult::default()
    }

    /// `shoal volume rm STACK/NAME [--node N]`: the copies are removed by their agents.
    pub(super) fn remove_volume(
        &mut self,
        stack: &str,
        name: &str,
        node: Option<&str>,
    ) -> CommandResult {
        let targets: Vec<String> = self
            .copies_of(stack, name)
            .filter(|c| node.is_none_or(|n| c.node == n))
            .map(|c| copy_key(&c.stack, &c.name, &c.node))
            .collect();
        if targets.is_empty() {
            return CommandResult::error(match node {
                Some(n) => format!("{n} holds no copy of volume {stack}/{name}"),
                None => format!("no volume {stack}/{name}: see shoal volume ls"),
            });
        }
        if let Some(m) = self.move_of(stack, name) {
            return CommandResult::error(format!(
                "volume {stack}/{name} is being moved from {} to {}: wait for the move to end",
                m.from, m.to
            ));
        }
        for key in &targets {
            let c = &self.volumes[key];
            if c.state == CopyState::Live {
                let users = self.users_of(stack, name, Some(&c.node));
                if !users.is_empty() {
                    return CommandResult::error(format!(
                        "volume {stack}/{name} on {} is used by {}: stop it first (shoal scale {}=0, or shoal rm {stack})",
                        c.node,
                        users.iter().cloned().collect::<Vec<_>>().join(", "),
                        users.iter().next().map(String::as_str).unwrap_or_default(),
                    ));
                }
            }
        }
        for key in &targets {
            if let Some(c) = self.volumes.get_mut(key) {
                c.state = CopyState::Removing;
                c.note = "removed by shoal volume rm".into();
            }
        }
        CommandResult {
            count: targets.len() as u64,
            ..Default::default()
        }
    }

    /// `shoal rm STACK --volumes`: every copy of the stack's volumes goes once its
    /// containers are gone (agents skip a volume still mounted and retry).
    pub(super) fn remove_stack_volumes(&mut self, stack: &str) {
        let prefix = format!("{stack}/");
        for (_, c) in self
            .volumes
            .range_mut(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            if c.stack == stack {
                c.state = CopyState::Removing;
                c.note = format!("removed with shoal rm {stack} --volumes");
            }
        }
    }

    /// `shoal volume move`, or a restore into `to` when `from` is empty.
    pub(super) fn start_move(
        &mut self,
        id: u64,
        stack: &str,
        name: &str,
        to: &str,
        restore: bool,
        now_ms: u64,
    ) -> CommandResult {
        if let Some(m) = self.move_of(stack, name) {
            return CommandResult::error(format!(
                "volume {stack}/{name} is already being {} {} (move {})",
                if m.from.is_empty() {
                    "restored on"
                } else {
                    "moved to"
                },
                m.to,
                m.id
            ));
        }
        match self.nodes.get(to) {
            None => return CommandResult::error(format!("no node named {to}")),
            Some(n) if n.status != NodeStatus::Ready => {
                return CommandResult::error(format!(
                    "{to} is {}: it cannot take the volume",
                    n.status.as_str()
                ))
            }
            Some(_) => {}
        }
        let copies: Vec<&VolumeCopy> = self.copies_of(stack, name).collect();
        if let Some(c) = copies.iter().find(|c| c.node == to) {
            return CommandResult::error(format!(
                "{to} already holds a copy of {stack}/{name} ({}): remove it first with shoal volume rm {stack}/{name} --node {to}",
                c.state.as_str()
            ));
        }
        let live: Vec<&VolumeCopy> = copies
            .iter()
            .copied()
            .filter(|c| c.state == CopyState::Live)
            .collect();
        let (from, docker_name, ephemeral) = if restore {
            if let Some(c) = live.first() {
                return CommandResult::error(format!(
                    "volume {stack}/{name} has a copy on {}: remove it first (shoal volume rm {stack}/{name}), then restore",
                    c.node
                ));
            }
            let spec = self
                .stacks
                .get(stack)
                .and_then(|s| s.spec.volumes.get(name));
            let docker =
                spec.map_or_else(|| format!("{stack}_{name}"), |v| v.docker_name(stack, name));
            (
                String::new(),
                docker,
                spec.is_some_and(|v| v.policy.ephemeral),
            )
        } else {
            let c = match live.as_slice() {
                [] => return CommandResult::error(format!("no volume {stack}/{name}: see shoal volume ls")),
                [c] => *c,
                many => {
                    return CommandResult::error(format!(
                        "volume {stack}/{name} has a copy on each of {} (one per node, as Compose shares a volume among a node's replicas): remove the ones you do not want first",
                        many.iter().map(|c| c.node.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                }
            };
            if let Some(n) = self.nodes.get(&c.node) {
                if n.status != NodeStatus::Ready {
                    return CommandResult::error(format!(
                        "{} is {}: its copy cannot be read; bring it back first",
                        c.node,
                        n.status.as_str()
                    ));
                }
            }
            (c.node.clone(), c.docker_name.clone(), c.ephemeral)
        };
        self.volumes.insert(
            copy_key(stack, name, to),
            VolumeCopy {
                stack: stack.to_string(),
                name: name.to_string(),
                node: to.to_string(),
                docker_name,
                created_ms: now_ms,
                size_bytes: None,
                last_used_ms: 0,
                slots: BTreeMap::new(),
                state: CopyState::Incoming,
                note: if restore {
                    format!("being restored (move {id})")
                } else {
                    format!("being copied from {from} (move {id})")
                },
                seen: false,
                ephemeral,
                synced_ms: None,
                frozen_ms: None,
            },
        );
        self.moves.insert(
            id,
            VolumeMove {
                id,
                stack: stack.to_string(),
                name: name.to_string(),
                from,
                to: to.to_string(),
                phase: if restore {
                    MovePhase::Copying
                } else {
                    MovePhase::Stopping
                },
                started_ms: now_ms,
                updated_ms: now_ms,
                error: String::new(),
                bytes: 0,
                sha256: String::new(),
            },
        );
        while self.moves.values().filter(|m| m.phase.is_over()).count() > MOVES_KEPT {
            let Some(oldest) = self
                .moves
                .values()
                .find(|m| m.phase.is_over())
                .map(|m| m.id)
            else {
                break;
            };
            self.moves.remove(&oldest);
        }
        CommandResult {
            count: id,
            ..Default::default()
        }
    }

    /// The leader's word on a move: copying, or over (done or failed; `partial`: the
    /// target's agent is to remove what it may have written).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn move_progress(
        &mut self,
        id: u64,
        phase: MovePhase,
        error: &str,
        bytes: u64,
        sha256: &str,
        now_ms: u64,
        partial: bool,
    ) -> CommandResult {
        let Some(m) = self.moves.get_mut(&id) else {
            return CommandResult::error(format!("no move {id}"));
        };
        if m.phase.is_over() {
            return CommandResult::error(format!("move {id} is over ({})", m.phase.as_str()));
        }
        m.phase = phase;
        m.updated_ms = now_ms;
        m.error = error.to_string();
        m.bytes = bytes;
        m.sha256 = sha256.to_string();
        let m = m.clone();
        let to_key = copy_key(&m.stack, &m.name, &m.to);
        let from_key = copy_key(&m.stack, &m.name, &m.from);
        match phase {
            MovePhase::Stopping | MovePhase::Copying => {}
            MovePhase::Done => {
                let slots = if m.from.is_empty() {
                    BTreeMap::new()
                } else {
                    self.volumes
                        .get(&from_key)
                        .map(|c| c.slots.clone())
                        .unwrap_or_default()
                };
                if let Some(c) = self.volumes.get_mut(&to_key) {
                    c.state = CopyState::Live;
                    c.slots = slots;
                    c.size_bytes = Some(bytes);
                    c.last_used_ms = now_ms;
                    c.note = if m.from.is_empty() {
                        format!("restored from a backup (sha256 {})", short(sha256))
                    } else {
                        format!("moved from {} (sha256 {})", m.from, short(sha256))
                    };
                }
                if let Some(c) = self.volumes.get_mut(&from_key) {
                    c.state = CopyState::SetAside;
                    c.note = format!(
                        "moved to {}; kept until you remove it (shoal volume rm {}/{} --node {})",
                        m.to, m.stack, m.name, m.from
                    );
                }
            }
            MovePhase::Failed if partial => {
                if let Some(c) = self.volumes.get_mut(&to_key) {
                    c.state = CopyState::Removing;
                    c.note = format!("partial copy of failed move {id}");
                }
            }
            MovePhase::Failed => {
                if self
                    .volumes
                    .get(&to_key)
                    .is_some_and(|c| c.state == CopyState::Incoming)
                {
                    self.volumes.remove(&to_key);
                }
            }
        }
        CommandResult::default()
    }

    /// Tasks to stop so that a move can copy: live tasks on its source node that mount
    /// the volume.
    pub fn tasks_blocking_move<'a>(&'a self, m: &'a VolumeMove) -> Vec<&'a super::model::Task> {
        self.tasks_mounting(&m.stack, &m.name, Some(&m.from))
            .collect()
    }

    /// Engine names of the volumes `node` must remove.
    pub fn volumes_to_remove(&self, node: &str) -> Vec<String> {
        self.volumes_to_remove_by_node()
            .remove(node)
            .unwrap_or_default()
    }

    /// [`ClusterState::volumes_to_remove`] of every node, in one pass.
    pub fn volumes_to_remove_by_node(&self) -> std::collections::HashMap<&str, Vec<String>> {
        let mut by_node: std::collections::HashMap<&str, Vec<String>> = Default::default();
        for c in self.volumes.values() {
            if c.state == CopyState::Removing {
                by_node
                    .entry(c.node.as_str())
                    .or_default()
                    .push(c.docker_name.clone());
            }
        }
        by_node
    }
}

/// A copy on `node` that its engine no longer lists (`names`) and whose record goes: a
/// removed one, or a live or set-aside one that was there and was removed by hand.
/// Incoming and standby copies are no engine volume (yet).
fn gone_from_engine(c: &VolumeCopy, node: &str, names: &BTreeSet<&str>) -> bool {
    c.node == node
        && !names.contains(c.docker_name.as_str())
        && match c.state {
            CopyState::Removing => true,
            CopyState::Live | CopyState::SetAside => c.seen,
            CopyState::Incoming | CopyState::Standby => false,
        }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
