//! Why a node refuses a replica, and the pending reason `ps` shows when every node does:
//! nodes refusing for the same reason are named together, at most [`NAMES`] of them,
//! resources first and nodes out of service last, e.g. `no node can run it: a has 0.5
//! CPUs free, b has 0.25 (needs 1.5); d, e are drained; c is down`. When every node
//! lacks the same device, platform or co-located replica, one sentence says so:
//! `no node has device /dev/ttyUSB0 (3 nodes checked)`.

use std::collections::BTreeMap;

/// Nodes named per reason before the rest are counted.
pub const NAMES: usize = 5;

/// One filter's refusal of one node. The order of the variants is the order of the
/// reason's parts: the nodes closest to fitting (short of resources) first, then those
/// the service's own settings exclude, then those out of service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    Cpus {
        free: i64,
        want: i64,
    },
    Memory {
        free: i64,
        want: i64,
    },
    /// Any other filter's words (e.g. "has no GPU free").
    Other(String),
    /// No replica of `service` (`STACK/NAME`), whose namespace the replica would
    /// share (`why`: the Compose key, e.g. `network_mode: service:vpn`), runs there.
    Colocated {
        service: String,
        why: String,
    },
    Port {
        port: String,
        owner: String,
    },
    MaxReplicas {
        max: u64,
    },
    /// A `devices:` path the node does not have.
    Device(String),
    /// The node is of platform `have` (empty: unknown), the service wants `want`.
    Platform {
        want: String,
        have: String,
    },
    /// The first placement constraint the node does not match, as written.
    Constraint(String),
    Drained,
    NotReported,
    Down,
}

impl From<String> for Refusal {
    fn from(s: String) -> Refusal {
        Refusal::Other(s)
    }
}

impl Refusal {
    /// Refusals grouped under one phrase share this key.
    fn group(&self) -> Refusal {
        match self {
            Refusal::Cpus { want, .. } => Refusal::Cpus {
                free: 0,
                want: *want,
            },
            Refusal::Memory { want, .. } => Refusal::Memory {
                free: 0,
                want: *want,
            },
            Refusal::Platform { want, .. } => Refusal::Platform {
                want: want.clone(),
                have: String::new(),
            },
            r => r.clone(),
        }
    }

    /// `node` and what stops it, for one node.
    pub fn phrase(&self, node: &str) -> String {
        self.group().words(&[node], &[self.detail()])
    }

    /// The phrase for `nodes` (names already joined) refusing for this reason.
    fn words(&self, nodes: &[&str], detail: &[String]) -> String {
        let many = nodes.len() > 1;
        let names = names(nodes);
        let (is, has, does, runs) = if many {
            ("are", "have", "do", "run")
        } else {
            ("is", "has", "does", "runs")
        };
        match self {
            Refusal::Down => format!("{names} {is} down"),
            Refusal::NotReported => format!("{names} {has} not reported yet"),
            Refusal::Drained => format!("{names} {is} drained"),
            Refusal::Constraint(c) => format!("{names} {does} not match {c}"),
            Refusal::MaxReplicas { max } => {
                let replicas = if *max == 1 { "replica" } else { "replicas" };
                let each = if many { " each" } else { "" };
                format!(
                    "{names} already {runs} {max} {replicas}{each} (max_replicas_per_node: {max})"
                )
            }
            Refusal::Port { port, owner } => {
                format!("{names} {has} port {port} taken by {owner}")
            }
            Refusal::Cpus { want, .. } => {
                format!(
                    "{} (needs {})",
                    free_list(nodes, detail, "CPUs"),
                    cpus(*want)
                )
            }
            Refusal::Memory { want, .. } => {
                format!(
                    "{} (needs {})",
                    free_list(nodes, detail, "memory"),
                    mib(*want)
                )
            }
            Refusal::Other(why) => format!("{names}: {why}"),
            Refusal::Colocated { service, why } => {
                format!("{names} {runs} no replica of {service} ({why})")
            }
            Refusal::Device(path) => format!("{names} {has} no device {path}"),
            Refusal::Platform { want, .. } => {
                format!("{names} {is} {}, not {want}", platforms(detail, " or "))
            }
        }
    }

    fn detail(&self) -> String {
        match self {
            Refusal::Cpus { free, .. } => cpus(*free),
            Refusal::Memory { free, .. } => mib(*free),
            Refusal::Platform { have, .. } => have.clone(),
            _ => String::new(),
        }
    }
}

/// `a, b, c` or `a, b, c, d, e and 7 more`.
fn names(nodes: &[&str]) -> String {
    if nodes.len() <= NAMES {
        nodes.join(", ")
    } else {
        format!(
            "{} and {} more",
            nodes[..NAMES].join(", "),
            nodes.len() - NAMES
        )
    }
}

/// `a has 0.5 CPUs free, b has 0.25` (capped like [`names`]).
fn free_list(nodes: &[&str], detail: &[String], what: &str) -> String {
    let mut parts: Vec<String> = nodes
        .iter()
        .zip(detail)
        .take(NAMES)
        .enumerate()
        .map(|(i, (n, d))| {
            if i == 0 {
                format!("{n} has {d} {what} free")
            } else {
                format!("{n} has {d}")
            }
        })
        .collect();
    if nodes.len() > NAMES {
        parts.push(format!("and {} more with too few", nodes.len() - NAMES));
    }
    parts.join(", ")
}

/// The distinct platforms among `detail` (empty: unknown), in first-seen order.
fn platforms(detail: &[String], sep: &str) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for d in detail {
        let d = if d.is_empty() { "unknown" } else { d.as_str() };
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    seen.join(sep)
}

/// The pending reason for refusals by every node: grouped by reason, in filter order.
pub fn summarize(refusals: &[(&str, Refusal)]) -> String {
    let mut groups: BTreeMap<Refusal, (Vec<&str>, Vec<String>)> = BTreeMap::new();
    for (node, r) in refusals {
        let g = groups.entry(r.group()).or_default();
        g.0.push(node);
        g.1.push(r.detail());
    }
    if let (1, Some((r, (nodes, detail)))) = (groups.len(), groups.iter().next()) {
        if let Some(one) = all_nodes_lack(r, nodes.len(), detail) {
            return one;
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(r, (nodes, detail))| r.words(nodes, detail))
        .collect();
    format!("no node can run it: {}", parts.join("; "))
}

/// One sentence for every node lacking the same thing the service itself asks for.
fn all_nodes_lack(r: &Refusal, nodes: usize, detail: &[String]) -> Option<String> {
    let checked = if nodes == 1 { "node" } else { "nodes" };
    match r {
        Refusal::Device(path) => Some(format!(
            "no node has device {path} ({nodes} {checked} checked)"
        )),
        Refusal::Platform { want, .. } => {
            let is = if nodes == 1 { "node is" } else { "nodes are" };
            Some(format!(
                "no node has platform {want} ({is} {})",
                platforms(detail, ", ")
            ))
        }
        Refusal::Colocated { service, why } => Some(format!(
            "waits for a replica of {service} on the same node ({why})"
        )),
        _ => None,
    }
}

pub fn cpus(nano: i64) -> String {
    let c = nano as f64 / 1e9;
    format!("{c:.2}")
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

pub fn mib(bytes: i64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}
