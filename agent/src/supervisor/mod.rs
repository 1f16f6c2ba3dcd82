//! The local reconciler: makes the container runtime match the controller's assignments
//! and reports every task state transition.
//!
//! One tokio task owns all state (intent, observed containers, in-flight operations, last
//! reports). It observes the runtime every `poll_interval`, asks [`crate::reconcile::plan`]
//! what to do, and runs each runtime operation as its own task so that a slow pull does
//! not hold the others up. It never restarts a container: an ended task stays ended until
//! the controller replaces it with a new task.
//!
//! [`modes`]: `service:NAME` network, IPC and PID modes are resolved on the node before
//! the create; a container whose network namespace's owner went is stopped and failed
//! (its replacement joins the current owner); `dns:` servers become the upstreams of
//! the container's addresses in the agent's DNS server, kept in step with what runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::labels;
use shoal_proto::task::TaskState;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use crate::disconnect::{self, Contact};
use crate::model::{AssignmentSet, TaskReport};
use crate::net::node::{ingress_targets, NodeNet};
use crate::proxy::{ingress_routes, mesh_routes, Proxy, Route};
use crate::reconcile::{is_ours, plan, Action, AfterStop, Local};
use crate::runtime::{ContainerInfo, ContainerRuntime, ContainerState, RuntimeError};

mod config;
mod modes;
pub use config::SupervisorConfig;
pub(crate) mod networks;
mod ops;
pub use modes::JOINED;
use ops::{remove_container, start_task, stop_container, StartNet};

/// The longest a stopping replica waits for its ingress connections to finish.
const DRAIN_MAX: Duration = Duration::from_secs(10);

/// What the supervisor tells the session, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A task changed state.
    Report(TaskReport),
    /// Answer to [`SupervisorHandle::sync`]: every task's current state after fencing.
    /// Reports queued before it are older than it.
    Snapshot(Vec<TaskReport>),
    /// Volumes were removed from the engine: the node's volumes should be reported again.
    VolumesChanged,
}

enum Command {
    Assign(AssignmentSet),
    Sync,
    Containers(oneshot::Sender<BTreeMap<String, String>>),
}

/// Talks to a running supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    commands: mpsc::UnboundedSender<Command>,
    /// Closed once the supervisor has stopped (and cleaned the host's network up).
    done: tokio::sync::watch::Receiver<()>,
}

impl SupervisorHandle {
    /// Wait until the supervisor has stopped after its shutdown, the host's routes and
    /// filters removed.
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        while done.changed().await.is_ok() {}
    }

    /// The controller's full set of tasks for this node.
    pub fn assign(&self, set: AssignmentSet) {
        let _ = self.commands.send(Command::Assign(set));
    }

    /// Observe, fence what is known not to be assigned, and answer with
    /// [`Event::Snapshot`]. Called when a session opens, before its Hello.
    pub fn sync(&self) {
        let _ = self.commands.send(Command::Sync);
    }

    /// Container id by task id, for tasks that have a container.
    pub async fn containers(&self) -> BTreeMap<String, String> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Containers(tx)).is_err() {
            return BTreeMap::new();
        }
        rx.await.unwrap_or_default()
    }
}

enum OpEvent {
    Report(TaskReport),
    /// The operation on the task ended; `container` is what it left behind, if anything.
    Done {
        task_id: String,
        removed: Option<String>,
        container: Option<ContainerInfo>,
    },
    /// A removal asked by `AssignmentSet::remove_volumes` ended; `gone`: the volume is
    /// no longer on the engine.
    VolumeRemoval {
        name: String,
        gone: bool,
    },
}

struct Supervisor {
    cfg: SupervisorConfig,
    runtime: Arc<dyn ContainerRuntime>,
    events: mpsc::UnboundedSender<Event>,
    intent: Option<AssignmentSet>,
    containers: BTreeMap<String, ContainerInfo>,
    busy: BTreeSet<String>,
    reported: BTreeMap<String, TaskReport>,
    ingress_errors: BTreeMap<String, String>,
    /// Networks (keys) this supervisor made sure of, and this cluster's networks found
    /// on the engine at start ([`networks::left_on_engine`]): removed once unused.
    networks: BTreeSet<String>,
    /// Starts hold it shared from making sure of their networks until their container
    /// runs (attached); a removal of an unused network holds it alone, so it never
    /// removes a network between a start's check and its container's start.
    network_gate: Arc<tokio::sync::RwLock<()>>,
    proxy: Option<Proxy>,
    /// The cluster network on this node (with the proxy: only on a real runtime).
    net: Option<NodeNet>,
    routes: BTreeMap<crate::proxy::RouteKey, Route>,
    ops: JoinSet<()>,
    op_tx: mpsc::UnboundedSender<OpEvent>,
    /// When a controller was last heard from, for the disconnect policy; `None`: the
    /// policy is off (the supervisor runs without a session).
    contact: Option<Contact>,
    /// Volume removals in flight.
    volumes_removing: BTreeSet<String>,
    /// Volumes removed while the controller still lists them (not asked again).
    volumes_removed: BTreeSet<String>,
    /// Containers of another cluster on this engine, last warned about.
    foreign: BTreeSet<String>,
}

/// Start a supervisor; it runs until `shutdown` and leaves containers running then.
/// Without a [`Contact`] the disconnect policy is off.
pub fn spawn(
    cfg: SupervisorConfig,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> (SupervisorHandle, mpsc::UnboundedReceiver<Event>) {
    spawn_with_contact(cfg, runtime, None, shutdown)
}

/// [`spawn`], applying the disconnect policy ([`crate::disconnect`]) by `contact`.
pub fn spawn_with_contact(
    cfg: SupervisorConfig,
    runtime: Arc<dyn ContainerRuntime>,
    contact: Option<Contact>,
    shutdown: CancellationToken,
) -> (SupervisorHandle, mpsc::UnboundedReceiver<Event>) {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (events, event_rx) = mpsc::unbounded_channel();
    let (op_tx, op_rx) = mpsc::unbounded_channel();
    let proxy = cfg.ingress.then(|| Proxy::new(shutdown.child_token()));
    let net = cfg.ingress.then(|| NodeNet::new(shutdown.child_token()));
    let sup = Supervisor {
        cfg,
        runtime,
        events,
        intent: None,
        containers: BTreeMap::new(),
        busy: BTreeSet::new(),
        reported: BTreeMap::new(),
        ingress_errors: BTreeMap::new(),
        networks: BTreeSet::new(),
        network_gate: Arc::default(),
        proxy,
        net,
        routes: BTreeMap::new(),
        ops: JoinSet::new(),
        op_tx,
        contact,
        volumes_removing: BTreeSet::new(),
        volumes_removed: BTreeSet::new(),
        foreign: BTreeSet::new(),
    };
    let (done_tx, done) = tokio::sync::watch::channel(());
    tokio::spawn(async move {
        sup.run(command_rx, op_rx, shutdown).await;
        drop(done_tx);
    });
    (SupervisorHandle { commands, done }, event_rx)
}

impl Supervisor {
    #[instrument(name = "supervisor", skip_all, fields(node = %self.cfg.node))]
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut op_rx: mpsc::UnboundedReceiver<OpEvent>,
        shutdown: CancellationToken,
    ) {
        // Before anything else looks at the containers.
        crate::volumes::transfer::resume_leftovers(&*self.runtime, &self.cfg.node).await;
        self.networks = networks::left_on_engine(&*self.runtime, self.cfg.cluster.as_deref()).await;
        let mut tick = tokio::time::interval(self.cfg.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(ev) = op_rx.recv() => {
                    self.apply_op(ev);
                    // Operations that ended meanwhile are taken with it: one step for
                    // a burst (100 containers started) rather than one each.
                    while let Ok(ev) = op_rx.try_recv() {
                        self.apply_op(ev);
                    }
                }
                cmd = commands.recv() => match cmd {
                    None => break,
                    Some(Command::Assign(set)) => {
                        debug!(version = set.version, tasks = set.tasks.len(), "assignments");
                        self.ingress_errors.retain(|t, _| set.tasks.contains_key(t));
                        if let Some(net) = self.net.as_mut() {
                            net.update(&set.mesh);
                        }
                        // What the image pruner must keep: every assigned task's image.
                        self.cfg
                            .images
                            .set_assigned(set.tasks.values().map(|a| a.spec.image.clone()));
                        self.intent = Some(set);
                        self.observe().await;
                    }
                    Some(Command::Sync) => {
                        self.sync().await;
                        continue;
                    }
                    Some(Command::Containers(reply)) => {
                        let _ = reply.send(self.container_ids());
                        continue;
                    }
                },
                _ = tick.tick() => self.observe().await,
            }
            self.step().await;
        }
        // Dropping the op set aborts in-flight operations; containers stay as they are.
        self.ops.abort_all();
        if let Some(net) = self.net.take() {
            net.stopped().await;
        }
        debug!("supervisor stopped");
    }

    fn container_ids(&self) -> BTreeMap<String, String> {
        let mut ids = BTreeMap::new();
        for c in self.containers.values() {
            if let Some(t) = c.task_id() {
                ids.entry(t.to_string()).or_insert_with(|| c.id.clone());
            }
        }
        ids
    }

    /// Says once, for each new set, which containers of another cluster this engine
    /// holds: they are left alone (never adopted, stopped or removed), and the user may
    /// remove them.
    fn warn_foreign(&mut self, foreign: &[ContainerInfo]) {
        let now: BTreeSet<String> = foreign.iter().map(|c| c.id.clone()).collect();
        if now == self.foreign {
            return;
        }
        if !foreign.is_empty() {
            let names: Vec<String> = foreign
                .iter()
                .map(|c| {
                    let cluster = c.labels.get(shoal_proto::labels::CLUSTER);
                    format!(
                        "{} (cluster {})",
                        c.name,
                        cluster.map_or("?", String::as_str)
                    )
                })
                .collect();
            warn!(
                containers = %names.join(", "),
                "containers of another shoal cluster are on this engine; left alone (remove them with docker rm)"
            );
        }
        self.foreign = now;
    }

    /// Refresh the view of this node's containers. Containers that just exited are
    /// inspected once for their exit code and OOM flag.
    async fn observe(&mut self) {
        let list = match self.runtime.list_managed().await {
            Ok(list) => list,
            Err(e) => {
                warn!(error = %e, "cannot list containers");
                return;
            }
        };
        let mut next = BTreeMap::new();
        let (list, foreign): (Vec<_>, Vec<_>) = list
            .into_iter()
            .filter(|c| is_ours(c, &self.cfg.node, None))
            .partition(|c| is_ours(c, &self.cfg.node, self.cfg.cluster.as_deref()));
        self.warn_foreign(&foreign);
        for mut c in list {
            let was_exited = self
                .containers
                .get(&c.id)
                .is_some_and(|old| old.state == ContainerState::Exited);
            if c.state == ContainerState::Exited && !was_exited {
                match self.runtime.inspect(&c.id).await {
                    Ok(full) => c = full,
                    Err(RuntimeError::NotFound(_)) => continue,
                    Err(e) => debug!(error = %e, "cannot inspect exited container"),
                }
            } else if let Some(old) = self.containers.get(&c.id) {
                if c.state == ContainerState::Exited {
                    c.oom_killed = old.oom_killed;
                    c.exit_code = old.exit_code.or(c.exit_code);
                    c.error = old.error.clone();
                }
            }
            // Just resumed after a frozen export: the engine says unhealthy until its
            // next probe; the health before the pause stands until a probe passes.
            if c.health == crate::runtime::Health::Unhealthy && self.cfg.thawed.recently(&c.id) {
                if let Some(old) = self.containers.get(&c.id) {
                    c.health = old.health;
                }
            } else if c.health == crate::runtime::Health::Healthy {
                self.cfg.thawed.settled(&c.id);
            }
            next.insert(c.id.clone(), c);
        }
        self.containers = next;
    }

    /// At session start: observe, fence synchronously, then snapshot.
    async fn sync(&mut self) {
        self.observe().await;
        let fences: Vec<Action> = self
            .plan()
            .into_iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Stop {
                        then: AfterStop::Remove,
                        ..
                    }
                )
            })
            .collect();
        for action in fences {
            if let Action::Stop {
                task_id,
                container_id,
                running,
                grace,
                signal,
                ..
            } = action
            {
                info!(task = %task_id, container = %container_id, "fencing unassigned container");
                stop_container(
                    &*self.runtime,
                    &container_id,
                    running,
                    grace,
                    signal.as_deref(),
                )
                .await;
                remove_container(&*self.runtime, &container_id).await;
            }
        }
        self.observe().await;
        self.step().await;
        let snapshot = self.reported.values().cloned().collect();
        let _ = self.events.send(Event::Snapshot(snapshot));
    }

    fn plan(&self) -> Vec<Action> {
        let mut actions = plan(Local {
            intent: self.intent.as_ref(),
            containers: &self.containers,
            busy: &self.busy,
            reported: &self.reported,
            ingress_errors: &self.ingress_errors,
        });
        let stopping = stopped_tasks(&actions);
        let rejoins = modes::rejoins(
            self.intent.as_ref(),
            &self.containers,
            &self.busy,
            &self.reported,
        );
        for stop in rejoins {
            if let Action::Stop { task_id, .. } = &stop {
                if stopping.contains(task_id) {
                    continue;
                }
                info!(task = %task_id, "the container whose network it shares is gone: stopping it");
            }
            actions.push(stop);
        }
        if let Some(contact) = &self.contact {
            let stopping = stopped_tasks(&actions);
            let stops = disconnect::to_stop(
                self.intent.as_ref(),
                &self.containers,
                &self.busy,
                &self.reported,
                contact.silent_for(),
            );
            for stop in stops {
                if let Action::Stop { task_id, .. } = &stop {
                    if stopping.contains(task_id) {
                        continue;
                    }
                    warn!(task = %task_id, "no controller reachable: stopping (x-shoal-disconnect)");
                }
                actions.push(stop);
            }
        }
        actions
    }

    /// Plan and act until nothing changes without an operation finishing.
    async fn step(&mut self) {
        for _ in 0..4 {
            let actions = self.plan();
            // Routes first: a replica told to stop leaves the ingress before it stops.
            if actions.iter().any(|a| matches!(a, Action::Stop { .. })) {
                self.update_ingress().await;
            }
            let mut reported_only = true;
            for action in actions {
                match action {
                    Action::Report(r) => self.report(r),
                    other => {
                        reported_only = false;
                        self.launch(other);
                    }
                }
            }
            let errors_changed = self.update_ingress().await;
            if reported_only && !errors_changed {
                break;
            }
        }
        self.prune();
        self.remove_volumes();
        if let Some(net) = &self.net {
            net.upstreams()
                .set(modes::dns_upstreams(self.intent.as_ref(), &self.containers));
        }
    }

    /// Engine names of the volumes this node's containers, its starting tasks and the
    /// tasks it is to run mount.
    fn volumes_in_use(&self) -> BTreeSet<String> {
        let Some(intent) = &self.intent else {
            return BTreeSet::new();
        };
        let with_container = self.containers.values().filter_map(|c| c.task_id());
        let to_run = intent
            .tasks
            .values()
            .filter(|a| a.desired == shoal_proto::task::Desired::Running && !a.ended)
            .map(|a| a.task.task_id.as_str());
        let busy = self.busy.iter().map(String::as_str);
        with_container
            .chain(to_run)
            .chain(busy)
            .filter_map(|t| intent.tasks.get(t))
            .flat_map(|a| a.volumes.iter().map(|v| v.docker_name.clone()))
            .collect()
    }

    /// Remove the volumes the controller lists in `remove_volumes` that no container
    /// here uses, and the node's standby copies of them; one in use is tried again on a
    /// later pass (the engine refuses it too while any container, even a stopped one,
    /// mounts it). Done when neither the volume nor a standby copy is left.
    fn remove_volumes(&mut self) {
        let Some(intent) = &self.intent else {
            return;
        };
        let listed: BTreeSet<&String> = intent.remove_volumes.iter().collect();
        self.volumes_removed.retain(|v| listed.contains(v));
        if listed.is_empty() {
            return;
        }
        let used = self.volumes_in_use();
        let todo: Vec<String> = listed
            .into_iter()
            .filter(|v| {
                !used.contains(*v)
                    && !self.volumes_removing.contains(*v)
                    && !self.volumes_removed.contains(*v)
            })
            .cloned()
            .collect();
        for name in todo {
            self.volumes_removing.insert(name.clone());
            let runtime = self.runtime.clone();
            let tx = self.op_tx.clone();
            let standbys = self.cfg.standbys.clone();
            let node = self.cfg.node.clone();
            self.ops.spawn(async move {
                let standby_gone = match standbys {
                    None => true,
                    Some(s) => {
                        let n = name.clone();
                        match tokio::task::spawn_blocking(move || s.remove(&n)).await {
                            Ok(Ok(existed)) => {
                                if existed {
                                    info!(volume = %name, "standby copy removed");
                                }
                                true
                            }
                            Ok(Err(e)) => {
                                warn!(volume = %name, error = %e, "cannot remove the standby copy");
                                false
                            }
                            Err(e) => {
                                warn!(volume = %name, error = %e, "cannot remove the standby copy");
                                false
                            }
                        }
                    }
                };
                // Only a volume shoal made on this node: one the node's owner made under
                // that name (or another cluster's) is never deleted for the cluster.
                let ours = match runtime.inspect_volume(&name).await {
                    Ok(v) => {
                        v.labels.get(shoal_proto::labels::NODE).map(String::as_str)
                            == Some(node.as_str())
                    }
                    Err(_) => true,
                };
                if !ours {
                    warn!(volume = %name, "not removed: the engine's volume was not made by shoal on this node");
                    let _ = tx.send(OpEvent::VolumeRemoval { name, gone: true });
                    return;
                }
                let engine_gone = match runtime.remove_volume(&name).await {
                    Ok(()) => {
                        info!(volume = %name, "volume removed");
                        true
                    }
                    Err(RuntimeError::NotFound(_)) => true,
                    Err(RuntimeError::InUse(e)) => {
                        debug!(volume = %name, error = %e, "volume still in use; retrying later");
                        false
                    }
                    Err(e) => {
                        warn!(volume = %name, error = %e, "cannot remove volume");
                        false
                    }
                };
                let gone = standby_gone && engine_gone;
                let _ = tx.send(OpEvent::VolumeRemoval { name, gone });
            });
        }
    }

    fn report(&mut self, r: TaskReport) {
        let old = self.reported.get(&r.task_id);
        if old == Some(&r)
            || old.is_some_and(|o| o.state.is_terminal() && r.state != TaskState::Shutdown)
        {
            return;
        }
        info!(task = %r.task_id, state = %r.state, error = r.error.as_deref().unwrap_or(""), "task state");
        self.reported.insert(r.task_id.clone(), r.clone());
        let _ = self.events.send(Event::Report(r));
    }

    /// Forget reports of tasks that are neither assigned nor have a container, and
    /// networks no assigned task and no container needs any more.
    fn prune(&mut self) {
        if let (Some(store), Some(intent)) = (&self.cfg.secrets, &self.intent) {
            let keep: BTreeSet<String> = intent
                .tasks
                .values()
                .filter(|a| {
                    a.desired == shoal_proto::task::Desired::Running
                        && !a.ended
                        && !a.secrets.is_empty()
                })
                .map(|a| a.task.task_id.clone())
                .collect();
            store.retain(&keep);
        }
        let with_container: BTreeSet<String> = self
            .containers
            .values()
            .filter_map(|c| c.task_id().map(str::to_string))
            .collect();
        if let Some(intent) = &self.intent {
            self.reported.retain(|t, _| {
                intent.tasks.contains_key(t) || with_container.contains(t) || self.busy.contains(t)
            });
            let mut needed: BTreeSet<String> = BTreeSet::new();
            for a in intent.tasks.values() {
                let attached = shoal_proto::network::attachments(&a.task.stack, &a.spec);
                needed.extend(attached.iter().map(|n| n.key.clone()));
            }
            for c in self.containers.values() {
                needed.extend(c.labels.get(labels::STACK).cloned());
                needed.extend(
                    c.ips
                        .keys()
                        .map(|n| shoal_proto::network::key_of_docker_name(n)),
                );
            }
            let unused: Vec<String> = self
                .networks
                .iter()
                .filter(|s| !needed.contains(s.as_str()))
                .cloned()
                .collect();
            for network in unused {
                self.networks.remove(&network);
                let (runtime, cluster) = (self.runtime.clone(), self.cfg.cluster.clone());
                let gate = self.network_gate.clone();
                self.ops.spawn(async move {
                    let _alone = gate.write().await;
                    networks::remove_if_ours(runtime, network, cluster).await
                });
            }
        }
    }

    async fn update_ingress(&mut self) -> bool {
        let Some(proxy) = self.proxy.as_mut() else {
            return false;
        };
        let routes = match &self.intent {
            Some(intent) => mesh_routes(
                ingress_routes(intent, &self.containers),
                &intent.mesh,
                &self.containers,
            ),
            None => BTreeMap::new(),
        };
        if routes == self.routes {
            return false;
        }
        let errors = proxy.update(&routes).await;
        self.routes = routes;
        let mut changed = false;
        for (task, error) in errors {
            changed |= self.ingress_errors.insert(task, error.clone()).as_ref() != Some(&error);
        }
        changed
    }

    fn apply_op(&mut self, ev: OpEvent) {
        match ev {
            OpEvent::Report(r) => self.report(r),
            OpEvent::VolumeRemoval { name, gone } => {
                self.volumes_removing.remove(&name);
                if gone {
                    self.volumes_removed.insert(name);
                    let _ = self.events.send(Event::VolumesChanged);
                }
            }
            OpEvent::Done {
                task_id,
                removed,
                container,
            } => {
                self.busy.remove(&task_id);
                if let Some(id) = removed {
                    self.containers.remove(&id);
                }
                if let Some(c) = container {
                    self.containers.insert(c.id.clone(), c);
                }
            }
        }
    }

    fn launch(&mut self, action: Action) {
        let runtime = self.runtime.clone();
        let tx = self.op_tx.clone();
        match action {
            Action::Report(_) => {}
            Action::Start {
                assignment,
                existing,
            } => {
                let task_id = assignment.task.task_id.clone();
                self.busy.insert(task_id.clone());
                let attached =
                    shoal_proto::network::attachments(&assignment.task.stack, &assignment.spec);
                let mesh = self.intent.as_ref().map(|i| i.mesh.clone());
                let networks: Vec<(String, Option<crate::net::Subnet>)> = attached
                    .iter()
                    .map(|a| {
                        let subnet = mesh
                            .as_ref()
                            .and_then(|m| m.subnets.get(&a.key).map(|(s, _)| *s));
                        (a.key.clone(), subnet)
                    })
                    .collect();
                self.networks
                    .extend(networks.iter().map(|(k, _)| k.clone()));
                let node = self.cfg.node.clone();
                let net = StartNet {
                    network_gate: self.network_gate.clone(),
                    networks,
                    dns: self.net.as_ref().map(NodeNet::dns),
                    secrets: self.cfg.secrets.clone(),
                    gpu_mode: self.cfg.gpu_mode.clone(),
                    standbys: self.cfg.standbys.clone(),
                    images: self.cfg.images.clone(),
                    cluster: self.cfg.cluster.clone(),
                };
                self.ops.spawn(async move {
                    let container =
                        start_task(&*runtime, &assignment, existing, &node, &net, &tx).await;
                    let _ = tx.send(OpEvent::Done {
                        task_id,
                        removed: None,
                        container,
                    });
                });
            }
            Action::Stop {
                task_id,
                container_id,
                running,
                grace,
                signal,
                then,
            } => {
                self.busy.insert(task_id.clone());
                // Connections the ingress forwards to it finish first (bounded by its
                // grace period, at most DRAIN_MAX): a rolling update drops no request.
                let drain = self
                    .proxy
                    .as_ref()
                    .zip(self.containers.get(&container_id).and_then(|c| c.ip))
                    .filter(|_| running)
                    .map(|(p, ip)| (p.connections(), ip));
                // Other nodes' proxies may forward to it too: give them the time to hear
                // it left, then wait for the connections they opened (see net::drain).
                let mesh_ports: Vec<u16> = self
                    .intent
                    .as_ref()
                    .filter(|i| self.net.is_some() && running && i.mesh.nodes.len() > 1)
                    .and_then(|i| i.tasks.get(&task_id))
                    .map(|a| ingress_targets(&a.spec))
                    .unwrap_or_default();
                self.ops.spawn(async move {
                    if !mesh_ports.is_empty() {
                        tokio::time::sleep(crate::net::drain::PROPAGATION).await;
                    }
                    if let Some((connections, ip)) = drain {
                        let left = connections.drain(ip, grace.min(DRAIN_MAX)).await;
                        if left > 0 {
                            debug!(task = %task_id, left, "stopping with connections still open");
                        }
                    }
                    if !mesh_ports.is_empty() {
                        if let Some(pid) = runtime.container_pid(&container_id).await {
                            let bound = grace.min(DRAIN_MAX);
                            let left = crate::net::drain::wait(pid, &mesh_ports, bound).await;
                            if left > 0 {
                                debug!(task = %task_id, left, "stopping with mesh connections still open");
                            }
                        }
                    }
                    stop_container(&*runtime, &container_id, running, grace, signal.as_deref())
                        .await;
                    let done = match then {
                        AfterStop::Remove | AfterStop::RemoveAndReport => {
                            let removed = remove_container(&*runtime, &container_id).await;
                            if then == AfterStop::RemoveAndReport {
                                let r = TaskReport::new(&task_id, TaskState::Shutdown)
                                    .container(Some(&container_id));
                                let _ = tx.send(OpEvent::Report(r));
                            }
                            OpEvent::Done {
                                task_id,
                                removed: removed.then_some(container_id),
                                container: None,
                            }
                        }
                        AfterStop::Fail(error) => {
                            let r = TaskReport::new(&task_id, TaskState::Failed)
                                .container(Some(&container_id))
                                .error(error);
                            let _ = tx.send(OpEvent::Report(r));
                            OpEvent::Done {
                                task_id,
                                removed: None,
                                container: runtime.inspect(&container_id).await.ok(),
                            }
                        }
                    };
                    let _ = tx.send(done);
                });
            }
        }
    }
}

/// The tasks `actions` already stop.
fn stopped_tasks(actions: &[Action]) -> BTreeSet<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { task_id, .. } => Some(task_id.clone()),
            _ => None,
        })
        .collect()
}
