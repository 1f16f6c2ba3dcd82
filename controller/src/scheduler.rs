//! Placement: a pure function from a state snapshot and the tasks to place to one
//! decision per task, `Assign` or `Pending` with a reason a person can act on.
//!
//! Filters ([`fits`]), in order: the node is ready and active, matches the service's
//! placement constraints (`node.role` included), is of the service's `platform:` and
//! has every path of its `devices:` ([`needs`]), stays under `max_replicas_per_node`,
//! runs a replica of each service whose namespace the replica shares
//! (`network_mode`/`ipc`/`pid: service:NAME`), has its published ports free, and has
//! the CPUs and memory the replica reserves.
//!
//! Scoring, among the nodes left:
//! 1. `preferences: - spread: node.labels.X`: replicas go to the value of X (nodes
//!    without the label form one more group, as in Swarm) that runs the fewest replicas
//!    of the service, then likewise for the next spread label, within that value;
//! 2. then the node running the fewest replicas of the service, and among those a node
//!    whose engine already holds the service's image (fewer bytes to move; never
//!    before spread);
//! 3. then the node with the smallest fraction of its CPUs or memory reserved (the
//!    larger of the two), so big nodes take more;
//! 4. then the node running the fewest tasks, then the name (so the result is
//!    deterministic).
//!
//! A task that asks for GPUs also needs free GPUs that meet its request
//! ([`crate::gpu_fit`]); it is placed by a scan of every node (GPU services have few
//! replicas), gets `AssignGpus` with the UUIDs picked, and the node left with the fewest
//! free GPUs wins before anything else (tight packing, so whole nodes stay free).
//!
//! Cost: loads are computed once per call (one pass over the tasks); the requests of one
//! service are then placed from a heap per spread group, each placement O(log nodes)
//! plus the number of spread values, so 100,000 replicas on 1,000 nodes take well under
//! a second (`cargo bench -p shoal-controller --bench scheduler`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use shoal_proto::spec::{Protocol, ServiceSpec};
use shoal_proto::task::Desired;

use crate::gpu_fit;
use crate::state::{
    Availability, ClusterState, Decision, Node, NodeId, NodeStatus, ServiceKey, TaskId,
};

mod filters;
mod needs;
mod reason;
pub mod volumes;
use filters::{fits, unmet_constraint};
pub use needs::platform_matches;
pub use reason::Refusal;
pub use volumes::{binding, Binding, NodeFilter};

/// One task to place.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub task: TaskId,
    pub service: ServiceKey,
    pub spec: &'a ServiceSpec,
    /// Global services: the only node this task may run on.
    pub pinned: Option<NodeId>,
    /// Where its volumes let it run ([`volumes::binding`]); None: anywhere.
    pub nodes: Option<std::sync::Arc<NodeFilter>>,
}

/// What is already placed on a node.
#[derive(Debug, Clone, Default)]
pub struct Load {
    nano_cpus: i64,
    memory: i64,
    tasks: u64,
    per_service: HashMap<ServiceKey, u64>,
    /// (published port, protocol) -> service using it.
    ports: BTreeMap<(u16, Protocol), ServiceKey>,
    /// GPU UUIDs held by live tasks.
    gpus: BTreeSet<String>,
    /// Of `per_service`, the replicas told to stop (they no longer anchor co-located
    /// replicas).
    stopping: HashMap<ServiceKey, u64>,
}

impl Load {
    fn add(&mut self, service: &ServiceKey, spec: &ServiceSpec) {
        self.nano_cpus += spec.resources.requested_nano_cpus();
        self.memory += spec.resources.requested_memory();
        self.tasks += 1;
        *self.per_service.entry(service.clone()).or_default() += 1;
        for p in &spec.ports {
            if let Some(published) = p.published {
                self.ports.insert((published, p.protocol), service.clone());
            }
        }
    }

    fn of_service(&self, service: &ServiceKey) -> u64 {
        self.per_service.get(service).copied().unwrap_or(0)
    }

    /// Whether a replica of `service` runs here and is meant to keep running.
    fn keeps(&self, service: &str) -> bool {
        let all = self.per_service.get(service).copied().unwrap_or(0);
        all > self.stopping.get(service).copied().unwrap_or(0)
    }

    /// The larger of the fractions of CPUs and memory reserved, in millionths.
    fn reserved_ppm(&self, node: &Node) -> u64 {
        let frac = |used: i64, total: i64| -> u64 {
            if total <= 0 || used <= 0 {
                0
            } else {
                (used as i128 * 1_000_000 / total as i128) as u64
            }
        };
        frac(self.nano_cpus, node.nano_cpus).max(frac(self.memory, node.memory_bytes))
    }
}

/// (replicas of the service, lacks the image (0/1), share reserved in millionths, tasks,
/// node index): lower wins.
type Score = (u64, u8, u64, u64, usize);

/// The nodes of a state (in name order) and what runs on each.
struct Loads<'s> {
    state: &'s ClusterState,
    nodes: Vec<&'s Node>,
    index: HashMap<&'s str, usize>,
    loads: Vec<Load>,
    /// Per node: whether its engine holds the image of the service being placed.
    has_image: Vec<bool>,
}

impl<'s> Loads<'s> {
    /// One pass over the tasks: everything not ended that sits on a node counts.
    fn of(state: &'s ClusterState) -> Loads<'s> {
        let nodes: Vec<&Node> = state.nodes.values().collect();
        let index: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let mut loads = vec![Load::default(); nodes.len()];
        let mut key_cache: HashMap<(&str, &str), ServiceKey> = HashMap::new();
        for t in state.tasks.values() {
            if t.state.is_terminal() {
                continue;
            }
            let Some(i) = t.node.as_deref().and_then(|n| index.get(n)) else {
                continue;
            };
            loads[*i].gpus.extend(t.gpus.iter().cloned());
            let key = key_cache
                .entry((t.stack.as_str(), t.service.as_str()))
                .or_insert_with(|| t.service_key());
            if let Some(svc) = state.services.get(key.as_str()) {
                loads[*i].add(key, &svc.spec);
                if t.desired == Desired::Shutdown {
                    *loads[*i].stopping.entry(key.clone()).or_default() += 1;
                }
            }
        }
        let has_image = vec![false; nodes.len()];
        Loads {
            state,
            nodes,
            index,
            loads,
            has_image,
        }
    }

    /// Notes which nodes hold `image` (the service placed next runs it).
    fn set_image(&mut self, image: &str) {
        let holding: BTreeSet<NodeId> = if self.state.node_images.is_empty() {
            BTreeSet::new()
        } else {
            self.state.nodes_holding(image, None).into_iter().collect()
        };
        for (i, n) in self.nodes.iter().enumerate() {
            self.has_image[i] = holding.contains(&n.id);
        }
    }

    /// Node `i`'s score for one more replica of `service`: lower is better.
    fn score(&self, i: usize, service: &ServiceKey) -> Score {
        let load = &self.loads[i];
        (
            load.of_service(service),
            u8::from(!self.has_image[i]),
            load.reserved_ppm(self.nodes[i]),
            load.tasks,
            i,
        )
    }
}

/// Places `requests` on the nodes of `state`, each placement counting against the next.
/// Returns one `Assign` or `Pending` per request, in the order of `requests`. Requests
/// are placed service by service, services in the order they first appear.
pub fn place(state: &ClusterState, requests: &[Request<'_>]) -> Vec<Decision> {
    let mut loads = Loads::of(state);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    for (i, r) in requests.iter().enumerate() {
        let g = *group_of.entry(r.service.as_str()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }

    let mut out: Vec<Option<Decision>> = vec![None; requests.len()];
    for group in groups {
        let first = &requests[group[0]];
        loads.set_image(&first.spec.image);
        let mut placer = ServicePlacer::new(&loads, first);
        for i in group {
            let req = &requests[i];
            let decision = match &req.pinned {
                // GPUs and volumes narrow the nodes per task: a scan of every node.
                _ if !req.spec.gpus.is_empty() || req.nodes.is_some() => {
                    place_gpus(&mut loads, req)
                }
                Some(p) => place_pinned(&mut loads, req, p),
                None => match placer.next(&loads, req) {
                    Ok(n) => {
                        placer.placed(n);
                        loads.loads[n].add(&req.service, req.spec);
                        placer.push(&loads, n, &req.service);
                        Decision::Assign {
                            task: req.task.clone(),
                            node: loads.nodes[n].id.clone(),
                        }
                    }
                    Err(reason) => Decision::Pending {
                        task: req.task.clone(),
                        reason,
                    },
                },
            };
            out[i] = Some(decision);
        }
    }
    out.into_iter().flatten().collect()
}

/// Places a task that asks for GPUs (or whose volumes narrow its nodes): every node (or
/// its pinned node) is tried, and the one left with the fewest free GPUs wins, then the
/// usual score.
fn place_gpus(loads: &mut Loads<'_>, req: &Request<'_>) -> Decision {
    let mut best: Option<((usize, Score), usize, Vec<String>)> = None;
    let mut refusals: Vec<String> = Vec::new();
    let mut refused: Vec<(&str, Refusal)> = Vec::new();
    for (i, node) in loads.nodes.iter().enumerate() {
        if req.pinned.as_ref().is_some_and(|p| *p != node.id) {
            continue;
        }
        let load = &loads.loads[i];
        if let Err(r) = fits(node, load, req) {
            refusals.push(r.phrase(&node.id));
            refused.push((node.id.as_str(), r));
            continue;
        }
        let choice = gpu_fit::choose(node, &load.gpus, &req.spec.gpus)
            .map_err(|why| format!("{} {why}", node.id));
        match choice {
            Ok(c) => {
                let score = (c.left_over, loads.score(i, &req.service));
                if best.as_ref().is_none_or(|(s, _, _)| score < *s) {
                    best = Some((score, i, c.gpus));
                }
            }
            Err(why) => refusals.push(why),
        }
    }
    let Some((_, i, gpus)) = best else {
        let reason = match (&req.pinned, refusals.is_empty()) {
            (Some(p), true) => format!("node {p} is not part of the cluster"),
            (None, true) => "no node has joined the cluster: start an agent".to_string(),
            (Some(_), false) if req.spec.gpus.is_empty() => {
                format!("cannot run on its node: {}", refusals.join("; "))
            }
            (None, false) if req.spec.gpus.is_empty() => reason::summarize(&refused),
            _ => format!(
                "needs {}: {}",
                gpu_fit::describe(&req.spec.gpus),
                refusals.join("; ")
            ),
        };
        return Decision::Pending {
            task: req.task.clone(),
            reason,
        };
    };
    let load = &mut loads.loads[i];
    load.add(&req.service, req.spec);
    load.gpus.extend(gpus.iter().cloned());
    let node = loads.nodes[i].id.clone();
    if gpus.is_empty() {
        Decision::Assign {
            task: req.task.clone(),
            node,
        }
    } else {
        Decision::AssignGpus {
            task: req.task.clone(),
            node,
            gpus,
        }
    }
}

fn place_pinned(loads: &mut Loads<'_>, req: &Request<'_>, pinned: &NodeId) -> Decision {
    let Some(&i) = loads.index.get(pinned.as_str()) else {
        return Decision::Pending {
            task: req.task.clone(),
            reason: format!("node {pinned} is not part of the cluster"),
        };
    };
    match fits(loads.nodes[i], &loads.loads[i], req) {
        Ok(()) => {
            loads.loads[i].add(&req.service, req.spec);
            Decision::Assign {
                task: req.task.clone(),
                node: pinned.clone(),
            }
        }
        Err(why) => Decision::Pending {
            task: req.task.clone(),
            reason: format!("cannot run on its node: {}", why.phrase(pinned)),
        },
    }
}

/// A node's place in the spread tree: its value of each spread label (None: missing).
pub fn spread_path(node: &Node, spread: &[String]) -> Vec<Option<String>> {
    spread.iter().map(|k| node.labels.get(k).cloned()).collect()
}

/// A group of nodes sharing the values of the first spread labels.
#[derive(Debug, Default)]
struct Group {
    /// Replicas of the service on the group's nodes.
    count: u64,
    /// Sub-groups by the next spread label's value (nodes without it last), or empty at
    /// the last level.
    children: BTreeMap<(bool, String), Group>,
    /// At the last level: candidate nodes by score (lazily updated: a popped entry is
    /// checked again before it is used).
    heap: BinaryHeap<Reverse<(Score, usize)>>,
    /// No node of the group can take another replica.
    exhausted: bool,
}

fn child_key(v: &Option<String>) -> (bool, String) {
    match v {
        Some(v) => (false, v.clone()),
        None => (true, String::new()),
    }
}

/// Places the replicas of one service: the spread tree over every node, with the nodes
/// that passed the filters in the heaps of its leaves.
struct ServicePlacer {
    root: Group,
    paths: Vec<Vec<(bool, String)>>,
    /// Set once nothing fits: loads only grow within a call, so it stays true.
    no_fit: Option<String>,
}

impl ServicePlacer {
    fn new(loads: &Loads<'_>, req: &Request<'_>) -> ServicePlacer {
        let spread = &req.spec.placement.spread;
        let mut root = Group::default();
        let mut paths = Vec::with_capacity(loads.nodes.len());
        for (i, node) in loads.nodes.iter().enumerate() {
            let path: Vec<(bool, String)> =
                spread_path(node, spread).iter().map(child_key).collect();
            let count = loads.loads[i].of_service(&req.service);
            let mut g = &mut root;
            g.count += count;
            for k in &path {
                g = g.children.entry(k.clone()).or_default();
                g.count += count;
            }
            if fits(node, &loads.loads[i], req).is_ok() {
                g.heap.push(Reverse((loads.score(i, &req.service), i)));
            }
            paths.push(path);
        }
        ServicePlacer {
            root,
            paths,
            no_fit: None,
        }
    }

    /// The best node for one more replica, or why there is none.
    fn next(&mut self, loads: &Loads<'_>, req: &Request<'_>) -> Result<usize, String> {
        if let Some(why) = &self.no_fit {
            return Err(why.clone());
        }
        // Bounded: every failed round removes a heap entry or exhausts a group.
        loop {
            if self.root.exhausted {
                let why = no_fit_reason(loads, req);
                self.no_fit = Some(why.clone());
                return Err(why);
            }
            let mut g = &mut self.root;
            let mut trail: Vec<(bool, String)> = Vec::new();
            while !g.children.is_empty() {
                let pick = g
                    .children
                    .iter()
                    .filter(|(_, c)| !c.exhausted)
                    .min_by_key(|(k, c)| (c.count, (*k).clone()))
                    .map(|(k, _)| k.clone());
                match pick {
                    Some(k) => {
                        trail.push(k.clone());
                        g = g.children.get_mut(&k).expect("picked child exists");
                    }
                    None => {
                        g.exhausted = true;
                        break;
                    }
                }
            }
            if g.exhausted {
                self.mark_exhausted(&trail);
                continue;
            }
            let mut found = None;
            while let Some(Reverse((score, i))) = g.heap.pop() {
                if fits(loads.nodes[i], &loads.loads[i], req).is_err() {
                    continue;
                }
                let now = loads.score(i, &req.service);
                if now != score {
                    g.heap.push(Reverse((now, i)));
                    continue;
                }
                found = Some(i);
                break;
            }
            match found {
                Some(i) => return Ok(i),
                None => {
                    g.exhausted = true;
                    self.mark_exhausted(&trail);
                }
            }
        }
    }

    /// Marks the groups above `trail`'s end exhausted where all their children are.
    fn mark_exhausted(&mut self, trail: &[(bool, String)]) {
        for depth in (0..trail.len()).rev() {
            let mut g = &mut self.root;
            for k in &trail[..depth] {
                g = g.children.get_mut(k).expect("trail exists");
            }
            if g.children.values().all(|c| c.exhausted) {
                g.exhausted = true;
            } else {
                return;
            }
        }
        if trail.is_empty() {
            self.root.exhausted = true;
        }
    }

    /// Counts a replica placed on node `i` in every group on its path.
    fn placed(&mut self, i: usize) {
        let mut g = &mut self.root;
        g.count += 1;
        for k in &self.paths[i] {
            g = g.children.get_mut(k).expect("node's path exists");
            g.count += 1;
        }
    }

    /// Puts node `i` back among the candidates with its new score.
    fn push(&mut self, loads: &Loads<'_>, i: usize, service: &ServiceKey) {
        let mut g = &mut self.root;
        for k in &self.paths[i] {
            g = g.children.get_mut(k).expect("node's path exists");
        }
        g.heap.push(Reverse((loads.score(i, service), i)));
    }
}

fn no_fit_reason(loads: &Loads<'_>, req: &Request<'_>) -> String {
    if loads.nodes.is_empty() {
        return "no node has joined the cluster: start an agent".to_string();
    }
    let refusals: Vec<(&str, Refusal)> = loads
        .nodes
        .iter()
        .zip(&loads.loads)
        .filter_map(|(n, l)| fits(n, l, req).err().map(|r| (n.id.as_str(), r)))
        .collect();
    reason::summarize(&refusals)
}

/// The set of node ids a replica of `service` could run on, ignoring load (for global
/// services): ready, active, matching its constraints, platform, devices and GPUs, and
/// running the replicas it must share a node with.
pub fn eligible_nodes(
    state: &ClusterState,
    service: &ServiceKey,
    spec: &ServiceSpec,
) -> BTreeSet<NodeId> {
    let partners = colocation_partners(state, spec);
    state
        .nodes
        .values()
        .filter(|n| n.status == NodeStatus::Ready && n.availability == Availability::Active)
        .filter(|n| unmet_constraint(n, spec).is_none())
        .filter(|n| needs::node_lacks(n, spec).is_none())
        .filter(|n| gpu_fit::could_fit(n, &spec.gpus))
        .filter(|n| {
            partners.as_ref().is_none_or(|p| {
                let here = p.get(n.id.as_str());
                needs::missing_partner(service, spec, |s| here.is_some_and(|h| h.contains(s)))
                    .is_none()
            })
        })
        .map(|n| n.id.clone())
        .collect()
}

/// Per node, the `STACK/NAME` of every task meant to keep running there, when `spec`
/// shares a namespace with another service (one pass over the tasks); `None` when it
/// shares none.
fn colocation_partners<'s>(
    state: &'s ClusterState,
    spec: &ServiceSpec,
) -> Option<BTreeMap<&'s str, BTreeSet<String>>> {
    if spec.container.colocated_with().is_empty() {
        return None;
    }
    let mut out: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for t in state.tasks.values() {
        if t.state.is_terminal() || t.desired == Desired::Shutdown {
            continue;
        }
        if let Some(node) = t.node.as_deref() {
            out.entry(node).or_default().insert(t.service_key());
        }
    }
    Some(out)
}

/// The nodes that could take one more replica of `service` now, loads counted (for
/// `shoal rebalance`, which moves replicas only where they fit).
pub fn fitting_nodes(
    state: &ClusterState,
    service: &ServiceKey,
    spec: &ServiceSpec,
) -> Vec<NodeId> {
    let loads = Loads::of(state);
    let req = Request {
        task: String::new(),
        service: service.clone(),
        spec,
        pinned: None,
        nodes: None,
    };
    loads
        .nodes
        .iter()
        .zip(&loads.loads)
        .filter(|(n, l)| {
            fits(n, l, &req).is_ok() && gpu_fit::choose(n, &l.gpus, &spec.gpus).is_ok()
        })
        .map(|(n, _)| n.id.clone())
        .collect()
}
