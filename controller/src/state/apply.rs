use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_proto::spec::ServiceMode;
use shoal_proto::task::{Desired, TaskState};

use super::model::*;

/// The answer to a committed command, returned to whoever proposed it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// For `DeployStack`: (service, generation, changed) per service.
    #[serde(default)]
    pub generations: Vec<(String, u64, bool)>,
    /// A command that was valid when proposed but not when applied (e.g. unknown service).
    #[serde(default)]
    pub error: Option<String>,
    /// How many things the command touched (tasks shut down, services removed...).
    #[serde(default)]
    pub count: u64,
    /// For `Batch`: each command's result, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<CommandResult>,
}

impl CommandResult {
    pub(super) fn error(msg: impl Into<String>) -> Self {
        CommandResult {
            error: Some(msg.into()),
            ..Default::default()
        }
    }
}

impl ClusterState {
    /// Applies one committed command. Deterministic: no clock, no I/O.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        let touched = self.touched_by(cmd);
        let result = self.apply_command(cmd);
        let services = self.services.len();
        self.changes.record(touched, services);
        result
    }

    fn apply_batch(&mut self, commands: &[Command]) -> CommandResult {
        CommandResult {
            batch: commands.iter().map(|c| self.apply(c)).collect(),
            ..Default::default()
        }
    }

    fn apply_command(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            Command::DeployStack { spec, secrets, .. } => {
                self.secrets.extend(secrets.clone());
                let result = self.deploy_stack(spec);
                self.prune_secrets();
                result
            }
            Command::RemoveStack { stack, volumes } => {
                let result = self.remove_stack(stack);
                if *volumes && result.error.is_none() {
                    self.remove_stack_volumes(stack);
                }
                result
            }
            Command::VolumeReport {
                node,
                volumes,
                now_ms,
            } => self.volume_report(node, volumes, *now_ms),
            Command::RemoveVolume { stack, name, node } => {
                self.remove_volume(stack, name, node.as_deref())
            }
            Command::StartMove {
                stack,
                name,
                to,
                restore,
                now_ms,
            } => {
                let id = self.next_move + 1;
                let result = self.start_move(id, stack, name, to, *restore, *now_ms);
                if result.error.is_none() {
                    self.next_move = id;
                }
                result
            }
            Command::StandbySynced {
                stack,
                name,
                node,
                docker_name,
                bytes,
                frozen_ms,
                at_ms,
            } => self.standby_synced(stack, name, node, *bytes, *frozen_ms, *at_ms, docker_name),
            Command::MoveProgress {
                id,
                phase,
                error,
                bytes,
                sha256,
                now_ms,
                partial,
            } => self.move_progress(*id, *phase, error, *bytes, sha256, *now_ms, *partial),
            Command::CreateSecret {
                name,
                digest,
                sealed,
                now_ms,
            } => self.create_secret(name, digest, sealed, *now_ms),
            Command::RemoveSecret { name } => self.remove_secret(name),
            Command::ImagePushed { image, now_ms } => self.image_pushed(image, *now_ms),
            Command::ImageHeld {
                reference,
                id,
                controller,
            } => self.image_held(reference, id, *controller),
            Command::RemoveImage { reference } => self.remove_image(reference),
            Command::SweepImages { sweep } => self.sweep_images(sweep),
            Command::NodeImages { node, images } => self.node_images(node, images),
            Command::Batch { commands } => self.apply_batch(commands),
            Command::Revoke {
                identity,
                before_ms,
            } => {
                let at = self.revoked.entry(identity.clone()).or_default();
                *at = (*at).max(*before_ms);
                CommandResult::default()
            }
            Command::Scale { service, replicas } => self.scale(service, *replicas),
            Command::Autoscale {
                service,
                from,
                to,
                cause,
                at_ms,
            } => self.autoscale(service, *from, *to, cause, *at_ms),
            Command::Rollback { service } => self.roll_back(service, None),
            Command::SetAvailability { node, availability } => match self.nodes.get_mut(node) {
                Some(n) => {
                    n.availability = *availability;
                    CommandResult::default()
                }
                None => CommandResult::error(format!("no node named {node}")),
            },
            Command::LabelNode { node, labels } => match self.nodes.get_mut(node) {
                Some(n) => {
                    for (k, v) in labels {
                        match v {
                            Some(v) => n.labels.insert(k.clone(), v.clone()),
                            None => n.labels.remove(k),
                        };
                    }
                    CommandResult::default()
                }
                None => CommandResult::error(format!("no node named {node}")),
            },
            Command::RemoveNode { node } => {
                if self.nodes.remove(node).is_none() {
                    return CommandResult::error(format!("no node named {node}"));
                }
                self.node_images.remove(node);
                // Its tasks are lost with it; the reconciler replaces them elsewhere.
                let mut count = 0;
                for t in self.tasks.values_mut() {
                    if t.node.as_deref() == Some(node.as_str()) && !t.state.is_terminal() {
                        t.state = TaskState::Orphaned;
                        t.error = format!("node {node} was removed from the cluster");
                        count += 1;
                    }
                }
                CommandResult {
                    count,
                    ..Default::default()
                }
            }
            Command::RegisterNode { node } => {
                let entry = self
                    .nodes
                    .entry(node.id.clone())
                    .or_insert_with(|| node.clone());
                // Availability and labels set with `shoal node` outlive a reconnect; the
                // agent's own `--labels` are laid over them.
                let availability = entry.availability;
                let mut labels = std::mem::take(&mut entry.labels);
                labels.extend(node.labels.clone());
                *entry = node.clone();
                entry.availability = availability;
                entry.labels = labels;
                entry.status = NodeStatus::Ready;
                CommandResult::default()
            }
            Command::SetNodeStatus { node, status, .. } => match self.nodes.get_mut(node) {
                Some(n) => {
                    n.status = *status;
                    CommandResult::default()
                }
                None => CommandResult::error(format!("unknown node {node}")),
            },
            Command::Rebalance { service } => self.rebalance(service),
            Command::Reconcile { decisions, now_ms } => {
                let mut count = 0;
                for d in decisions {
                    if self.decide(d, *now_ms) {
                        count += 1;
                    }
                }
                if decisions
                    .iter()
                    .any(|d| matches!(d, Decision::DropService { .. }))
                {
                    self.prune_secrets();
                }
                CommandResult {
                    count,
                    ..Default::default()
                }
            }
            Command::TaskStatus {
                node,
                updates,
                now_ms,
            } => {
                let mut count = 0;
                for u in updates {
                    if self.task_update(node, u, *now_ms) {
                        count += 1;
                    }
                }
                CommandResult {
                    count,
                    ..Default::default()
                }
            }
            Command::SetNodeGpus { node, gpus } => match self.nodes.get_mut(node) {
                Some(n) => {
                    n.gpus = gpus.clone();
                    CommandResult::default()
                }
                None => CommandResult::error(format!("unknown node {node}")),
            },
            Command::SetNodeDevices { node, devices } => self.set_node_devices(node, devices),
            Command::SetNodeConflicts { node, conflicts } => {
                self.set_node_conflicts(node, conflicts)
            }
            Command::SetNodeRole { node, manager } => self.set_node_role(node, *manager),
            Command::SetPool { pool } => match super::subnets::Pool::parse(pool) {
                Err(e) => CommandResult::error(e),
                Ok(p) if self.subnets.is_empty() || self.pool() == p => {
                    self.pool = Some(p.to_string());
                    CommandResult::default()
                }
                Ok(p) => CommandResult::error(format!(
                    "the address pool is {}: it cannot become {p} once networks have subnets",
                    self.pool()
                )),
            },
            Command::SetPki { record } => {
                if self.pki.is_none() && self.next_task == 0 && self.tasks.is_empty() {
                    self.next_task = first_task_number(record);
                }
                self.pki = Some(record.clone());
                CommandResult::default()
            }
            Command::Restore { state } => {
                if self.pki.is_some() {
                    return CommandResult::error(
                        "this cluster already has a state: a restore only seeds a new cluster",
                    );
                }
                *self = (**state).clone();
                CommandResult::default()
            }
        }
    }

    fn deploy_stack(&mut self, spec: &shoal_proto::spec::StackSpec) -> CommandResult {
        let mut generations = Vec::new();
        for (name, svc) in &spec.services {
            let key = service_key(&spec.name, name);
            match self.services.get_mut(&key) {
                Some(existing) => {
                    let same = same_spec(&spec.name, &existing.spec, svc);
                    if same && existing.spec != *svc {
                        // Stored before services had networks: now it lists them.
                        existing.spec = svc.clone();
                    }
                    let changed = !same || existing.removing;
                    if changed {
                        existing.generation += 1;
                        existing.previous =
                            Some(std::mem::replace(&mut existing.spec, svc.clone()));
                        existing.rolled_back = false;
                        existing.rollback_cause.clear();
                        existing.rollout_complete = false;
                    }
                    existing.replicas = match (&existing.spec.autoscale, &existing.autoscaled) {
                        // The autoscaler's count stays, within the new bounds.
                        (Some(a), Some(_)) if !existing.removing => a.bound(existing.replicas),
                        _ => svc.replicas,
                    };
                    if existing.spec.autoscale.is_none() {
                        existing.autoscaled = None;
                    }
                    existing.removing = false;
                    generations.push((name.clone(), existing.generation, changed));
                }
                None => {
                    self.services.insert(
                        key,
                        Service {
                            stack: spec.name.clone(),
                            name: name.clone(),
                            spec: svc.clone(),
                            generation: 1,
                            replicas: svc.replicas,
                            removing: false,
                            previous: None,
                            rolled_back: false,
                            rollback_cause: String::new(),
                            rollout_complete: false,
                            rebalancing: false,
                            autoscaled: None,
                        },
                    );
                    generations.push((name.clone(), 1, true));
                }
            }
        }
        // Services the new file no longer has are removed with their tasks.
        let mut pruned = 0;
        for svc in self.services.values_mut() {
            if svc.stack == spec.name && !spec.services.contains_key(&svc.name) && !svc.removing {
                svc.removing = true;
                pruned += 1;
            }
        }
        self.stacks.insert(
            spec.name.clone(),
            Stack {
                name: spec.name.clone(),
                spec: spec.clone(),
                removing: false,
            },
        );
        CommandResult {
            generations,
            count: pruned,
            ..Default::default()
        }
    }

    fn remove_stack(&mut self, stack: &str) -> CommandResult {
        let Some(s) = self.stacks.get_mut(stack) else {
            return CommandResult::error(format!("no stack named {stack}"));
        };
        s.removing = true;
        for svc in self.services.values_mut().filter(|s| s.stack == stack) {
            svc.removing = true;
        }
        // What `shoal rm` reports: the tasks that will be stopped.
        let count = self
            .tasks
            .values()
            .filter(|t| t.stack == stack && t.desired == Desired::Running && !t.state.is_terminal())
            .count() as u64;
        CommandResult {
            count,
            ..Default::default()
        }
    }

    fn scale(&mut self, service: &str, replicas: u64) -> CommandResult {
        let Some(svc) = self.services.get_mut(service) else {
            return CommandResult::error(format!("no service named {service}"));
        };
        if svc.removing {
            return CommandResult::error(format!("service {service} is being removed"));
        }
        if let Some(a) = &svc.spec.autoscale {
            return CommandResult::error(autoscaled_words(service, a));
        }
        match svc.spec.mode {
            ServiceMode::Replicated | ServiceMode::ReplicatedJob => {
                svc.replicas = replicas;
                CommandResult::default()
            }
            mode => CommandResult::error(format!(
                "service {service} runs in {} mode: one replica per node, it cannot be scaled",
                mode.as_str()
            )),
        }
    }

    fn autoscale(
        &mut self,
        service: &str,
        from: u64,
        to: u64,
        cause: &str,
        at_ms: u64,
    ) -> CommandResult {
        let Some(svc) = self.services.get_mut(service) else {
            return CommandResult::error(format!("no service named {service}"));
        };
        let Some(a) = &svc.spec.autoscale else {
            return CommandResult::error(format!("service {service} is not autoscaled"));
        };
        if svc.removing {
            return CommandResult::error(format!("service {service} is being removed"));
        }
        if svc.replicas != from {
            return CommandResult::error(format!(
                "service {service} runs {} replicas, not {from}: the decision is stale",
                svc.replicas
            ));
        }
        let to = a.bound(to);
        svc.replicas = to;
        svc.autoscaled = Some(Autoscaled {
            from,
            to,
            cause: cause.to_string(),
            at_ms,
        });
        CommandResult::default()
    }

    fn rebalance(&mut self, service: &str) -> CommandResult {
        let Some(svc) = self.services.get_mut(service) else {
            return CommandResult::error(format!("no service named {service}"));
        };
        if svc.removing {
            return CommandResult::error(format!("service {service} is being removed"));
        }
        match svc.spec.mode {
            ServiceMode::Replicated => {
                svc.rebalancing = true;
                CommandResult::default()
            }
            mode => CommandResult::error(format!(
                "service {service} runs in {} mode: there is nothing to rebalance",
                mode.as_str()
            )),
        }
    }

    /// Returns `service` to its previous spec as a new generation. With `generation` (a
    /// reconciler decision taken on a snapshot), only if that is still the current one
    /// and not itself a rollback: a rollback that fails pauses, it never bounces back.
    fn roll_back(&mut self, service: &str, generation: Option<u64>) -> CommandResult {
        let Some(svc) = self.services.get_mut(service) else {
            return CommandResult::error(format!("no service named {service}"));
        };
        if generation.is_some_and(|g| g != svc.generation || svc.rolled_back) {
            return CommandResult::error(format!(
                "{service} changed since the rollback was decided"
            ));
        }
        if svc.previous.is_none() {
            return CommandResult::error(format!(
                "{service} has no previous version to roll back to"
            ));
        }
        // An automatic rollback says which replica failed, and why.
        let cause = match generation {
            Some(g) => {
                let mut failed: Vec<&Task> = self
                    .tasks
                    .values()
                    .filter(|t| t.stack == svc.stack && t.service == svc.name)
                    .filter(|t| t.generation == g)
                    .filter(|t| matches!(t.state, TaskState::Failed | TaskState::Unhealthy))
                    .collect();
                failed.sort_by_key(|t| (t.slot, t.updated_at_ms));
                failed.first().map(|t| failure_words(t)).unwrap_or_default()
            }
            None => String::new(),
        };
        let Some(svc) = self.services.get_mut(service) else {
            return CommandResult::error(format!("no service named {service}"));
        };
        svc.rollback_cause = cause;
        let Some(previous) = svc.previous.take() else {
            return CommandResult::error(format!(
                "{service} has no previous version to roll back to"
            ));
        };
        svc.previous = Some(std::mem::replace(&mut svc.spec, previous));
        // `previous` is always generation G-1's spec, so replicas still on G-1 already run
        // what the rollback asks for: they become current and are left alone.
        let restored = svc.generation - 1;
        svc.generation += 1;
        svc.rolled_back = true;
        svc.rollout_complete = false;
        let (stack, name, generation) = (svc.stack.clone(), svc.name.clone(), svc.generation);
        for t in self.tasks.values_mut() {
            if t.stack == stack && t.service == name && t.generation == restored {
                t.generation = generation;
            }
        }
        let svc = &self.services[service];
        CommandResult {
            generations: vec![(svc.name.clone(), svc.generation, true)],
            ..Default::default()
        }
    }

    /// Applies one reconciler decision; false when it no longer applies.
    fn decide(&mut self, d: &Decision, now_ms: u64) -> bool {
        match d {
            Decision::CreateTask {
                service,
                slot,
                generation,
                node,
            } => {
                let Some(svc) = self.services.get(service) else {
                    return false;
                };
                if svc.removing || svc.generation != *generation {
                    return false;
                }
                self.next_task += 1;
                let id = format!("{:010x}", self.next_task);
                let task = Task {
                    id: id.clone(),
                    stack: svc.stack.clone(),
                    service: svc.name.clone(),
                    slot: *slot,
                    generation: *generation,
                    node: None,
                    desired: Desired::Running,
                    state: TaskState::Pending,
                    error: String::new(),
                    container_id: String::new(),
                    exit_code: None,
                    created_at_ms: now_ms,
                    updated_at_ms: now_ms,
                    pinned: node.clone(),
                    image: svc.spec.image.clone(),
                    gpus: Vec::new(),
                    ips: BTreeMap::new(),
                    legacy_ip: None,
                };
                self.tasks.insert(id, task);
                true
            }
            Decision::Assign { task, node } => {
                let Some(t) = self.tasks.get_mut(task) else {
                    return false;
                };
                if t.state != TaskState::Pending || t.desired != Desired::Running {
                    return false;
                }
                if !self.nodes.contains_key(node) {
                    return false;
                }
                t.node = Some(node.clone());
                t.state = TaskState::Assigned;
                t.error.clear();
                t.updated_at_ms = now_ms;
                let service = t.service_key();
                let (stack, name, slot) = (t.stack.clone(), t.service.clone(), t.slot);
                self.allocate_subnets(&service, node);
                self.record_copies(&stack, &name, slot, node, now_ms);
                true
            }
            Decision::Pending { task, reason } => {
                let Some(t) = self.tasks.get_mut(task) else {
                    return false;
                };
                if t.state != TaskState::Pending {
                    return false;
                }
                t.error = reason.clone();
                true
            }
            Decision::Shutdown { task } => {
                let Some(t) = self.tasks.get_mut(task) else {
                    return false;
                };
                t.desired = Desired::Shutdown;
                if t.node.is_none() && !t.state.is_terminal() {
                    t.state = TaskState::Shutdown;
                    t.updated_at_ms = now_ms;
                }
                true
            }
            Decision::Orphan { task } => {
                let Some(t) = self.tasks.get_mut(task) else {
                    return false;
                };
                if t.state.is_terminal() {
                    return false;
                }
                t.state = TaskState::Orphaned;
                t.error = format!("node {} was lost", t.node.as_deref().unwrap_or("(none)"));
                t.updated_at_ms = now_ms;
                true
            }
            Decision::Fail { task, reason } => {
                let Some(t) = self.tasks.get_mut(task) else {
                    return false;
                };
                if t.state.is_terminal() {
                    return false;
                }
                t.state = TaskState::Failed;
                t.desired = Desired::Shutdown;
                t.error = reason.clone();
                t.updated_at_ms = now_ms;
                true
            }
            Decision::Forget { task } => self.tasks.remove(task).is_some(),
            Decision::DropService { service } => {
                let gone = self.services.remove(service).is_some();
                self.tasks.retain(|_, t| &t.service_key() != service);
                gone
            }
            Decision::RollBack {
                service,
                generation,
            } => self.roll_back(service, Some(*generation)).error.is_none(),
            Decision::CompleteRollout {
                service,
                generation,
            } => match self.services.get_mut(service) {
                Some(s) if s.generation == *generation && !s.rollout_complete => {
                    s.rollout_complete = true;
                    true
                }
                _ => false,
            },
            Decision::AssignGpus { task, node, gpus } => self.assign_gpus(task, node, gpus, now_ms),
            Decision::CompleteRebalance { service } => match self.services.get_mut(service) {
                Some(s) if s.rebalancing => {
                    s.rebalancing = false;
                    true
                }
                _ => false,
            },
            Decision::PromoteStandby { stack, name, node } => {
                self.promote_standby(stack, name, node, now_ms)
            }
            Decision::DropStack { stack } => {
                let gone = self.stacks.remove(stack).is_some();
                self.services.retain(|_, s| &s.stack != stack);
                self.tasks.retain(|_, t| &t.stack != stack);
                self.free_unused_subnets();
                gone
            }
        }
    }

    /// Give every network of `service` a subnet on `node` (those it has keep theirs).
    fn allocate_subnets(&mut self, service: &str, node: &str) {
        let Some(svc) = self.services.get(service) else {
            return;
        };
        let size = self.pool().size();
        for a in shoal_proto::network::attachments(&svc.stack, &svc.spec).iter() {
            crate::state::subnets::allocate(&mut self.subnets, &a.key, node, size);
        }
    }

    /// Free the subnets of networks no service and no task uses any more (a removed
    /// stack's own networks; an external network once no stack declares it).
    fn free_unused_subnets(&mut self) {
        let mut used: BTreeSet<String> = BTreeSet::new();
        for svc in self.services.values() {
            used.extend(
                shoal_proto::network::attachments(&svc.stack, &svc.spec)
                    .iter()
                    .map(|a| a.key.clone()),
            );
        }
        for t in self.tasks.values() {
            used.extend(t.ips.keys().cloned());
        }
        self.subnets.retain(|key, _| used.contains(key));
    }

    /// `Assign` that also hands the task `gpus`. Refused (the task stays pending and is
    /// placed again on the next pass) unless every GPU is on the node and held by no
    /// other live task: exclusivity holds whatever the snapshot the decision came from.
    fn assign_gpus(&mut self, task: &str, node: &str, gpus: &[String], now_ms: u64) -> bool {
        let Some(n) = self.nodes.get(node) else {
            return false;
        };
        if !gpus
            .iter()
            .all(|g| n.gpus.iter().any(|have| &have.uuid == g))
        {
            return false;
        }
        let taken = self.tasks.values().any(|t| {
            t.id != task
                && t.node.as_deref() == Some(node)
                && !t.state.is_terminal()
                && t.gpus.iter().any(|g| gpus.contains(g))
        });
        if taken {
            return false;
        }
        let assign = Decision::Assign {
            task: task.to_string(),
            node: node.to_string(),
        };
        if !self.decide(&assign, now_ms) {
            return false;
        }
        if let Some(t) = self.tasks.get_mut(task) {
            t.gpus = gpus.to_vec();
        }
        true
    }

    /// An agent's report about one of its tasks. Agents speak only for their own node.
    fn task_update(&mut self, node: &str, u: &TaskUpdate, now_ms: u64) -> bool {
        let Some(t) = self.tasks.get_mut(&u.task) else {
            return false;
        };
        if t.node.as_deref() != Some(node) {
            return false;
        }
        if u.state == TaskState::Shutdown {
            // The container is gone. A task that had already ended keeps the state it
            // ended in (failed, complete...), so `ps` still says why.
            t.container_id.clear();
            if !t.state.is_terminal() {
                t.state = TaskState::Shutdown;
                t.updated_at_ms = now_ms;
            }
            return true;
        }
        if t.state.is_terminal() && !u.state.is_terminal() {
            // A late report about a task that ended (or was orphaned) does not revive it.
            return false;
        }
        if t.state != u.state {
            t.updated_at_ms = now_ms;
        }
        t.state = u.state;
        if !u.container_id.is_empty() {
            t.container_id = u.container_id.clone();
        }
        if u.exit_code.is_some() {
            t.exit_code = u.exit_code;
        }
        if !u.ips.is_empty() {
            t.ips = u.ips.clone();
            t.legacy_ip = None;
        } else if let Some(ip) = u.ip {
            // An agent that reports one address: its stack's default network.
            t.ips = [(t.stack.clone(), ip)].into_iter().collect();
            t.legacy_ip = None;
        }
        t.error = u.error.clone();
        true
    }
}

/// Whether deploying `new` changes nothing in `old`. A spec stored before services had
/// networks (it lists none) is on its stack's default network, with no aliases: the
/// same as a new one saying so, so upgrading does not roll every service out again.
fn same_spec(
    stack: &str,
    old: &shoal_proto::spec::ServiceSpec,
    new: &shoal_proto::spec::ServiceSpec,
) -> bool {
    // The count and how the autoscaler sets it change no container: they never roll out.
    let unscaled = |s: &shoal_proto::spec::ServiceSpec| shoal_proto::spec::ServiceSpec {
        replicas: 1,
        autoscale: None,
        ..s.clone()
    };
    let (mut old, new) = (unscaled(old), unscaled(new));
    if old.networks.is_empty() && !new.networks.is_empty() {
        old.networks = shoal_proto::network::attachments(stack, &old).into_owned();
    }
    old == new
}

/// Why `shoal scale` does not change an autoscaled service.
pub fn autoscaled_words(service: &str, a: &shoal_proto::autoscale::Autoscale) -> String {
    format!(
        "service {service} is autoscaled between {} and {} replicas (x-shoal-autoscale): \
         its autoscaler sets the count; change min or max in the Compose file and deploy it",
        a.min, a.max
    )
}

/// `web slot 1 on node-a: its healthcheck fails`: one failed replica, in words.
fn failure_words(t: &Task) -> String {
    let node = t
        .node
        .as_deref()
        .map(|n| format!(" on {n}"))
        .unwrap_or_default();
    format!("{} slot {}{node}: {}", t.service, t.slot, t.failure())
}

/// Where a new cluster's task numbers start: a block of its own, derived from its CA
/// (so every controller applying `SetPki` computes the same), so that two clusters that
/// ran on the same machines never share a task id, and a container an earlier cluster
/// left on an engine is never taken for a task of this one (task ids name containers).
/// `{:010x}` ids have room for 2^40 tasks; this leaves more than 2^39 after any start.
fn first_task_number(record: &crate::pki::PkiRecord) -> u64 {
    let digest = record.digest().unwrap_or_default();
    let block = digest
        .get(..7)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    block << 8
}
