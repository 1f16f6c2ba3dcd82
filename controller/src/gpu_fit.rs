//! GPU placement, pure: which of a node's GPUs a task gets, or why it cannot get any.
//!
//! GPUs are exclusive: a GPU held by a live task (not complete, failed, shut down or
//! orphaned) is never handed to another. A service's requests (`spec.gpus`, from
//! `gpus:`, `deploy.resources.reservations.devices` and `x-shoal-gpu`) are served one
//! after the other from the node's free GPUs:
//!
//! - `count: N`: N free GPUs that meet the constraints, lowest index first;
//! - `count: all` (no count, no ids): every GPU of the node that meets the constraints,
//!   at least one, and all of them free;
//! - `device_ids`: exactly those GPUs, by UUID or index, each free and meeting the
//!   constraints;
//! - `driver`: only `nvidia` GPUs are discovered, so another driver fits nowhere;
//! - `x-shoal-gpu`: `min_memory` (bytes) and `model`, a glob matched case-insensitively
//!   against the model name with or without its `NVIDIA ` prefix (`H100*` matches
//!   `NVIDIA H100 80GB HBM3`).
//!
//! [`choose`] also says how many free GPUs the node keeps afterwards; the scheduler
//! prefers the node that keeps the fewest, so whole nodes stay free for large jobs.

use std::collections::BTreeSet;

use shoal_proto::spec::GpuRequest;

use crate::state::{ClusterState, Gpu, Node, NodeId};

/// The GPUs picked for one task on one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuChoice {
    /// UUIDs, in the order the requests asked for them.
    pub gpus: Vec<String>,
    /// Free GPUs the node has left once these are taken.
    pub left_over: usize,
}

/// UUIDs of the GPUs of `node` held by live tasks.
pub fn in_use(state: &ClusterState, node: &NodeId) -> BTreeSet<String> {
    state
        .tasks
        .values()
        .filter(|t| t.node.as_ref() == Some(node) && !t.state.is_terminal())
        .flat_map(|t| t.gpus.iter().cloned())
        .collect()
}

/// Picks GPUs of `node` for `requests` among those not in `used`; `Err` says why the
/// node cannot serve them, in words that follow the node's name ("has 1 free").
pub fn choose(
    node: &Node,
    used: &BTreeSet<String>,
    requests: &[GpuRequest],
) -> Result<GpuChoice, String> {
    if requests.is_empty() {
        return Ok(GpuChoice::default());
    }
    if node.gpus.is_empty() {
        return Err("has no GPUs".into());
    }
    let mut taken: BTreeSet<String> = used.clone();
    let mut picked: Vec<String> = Vec::new();
    for req in requests {
        for g in pick(node, &taken, req)? {
            taken.insert(g.uuid.clone());
            picked.push(g.uuid.clone());
        }
    }
    let left_over = node
        .gpus
        .iter()
        .filter(|g| !taken.contains(&g.uuid))
        .count();
    Ok(GpuChoice {
        gpus: picked,
        left_over,
    })
}

/// Whether `node` could ever serve `requests` (every GPU free): for global services,
/// which run one replica on each node that can run it.
pub fn could_fit(node: &Node, requests: &[GpuRequest]) -> bool {
    choose(node, &BTreeSet::new(), requests).is_ok()
}

fn pick<'a>(
    node: &'a Node,
    taken: &BTreeSet<String>,
    req: &GpuRequest,
) -> Result<Vec<&'a Gpu>, String> {
    if let Some(d) = req.driver.as_deref() {
        if !d.eq_ignore_ascii_case("nvidia") {
            return Err(format!("has no GPUs for driver {d} (only nvidia)"));
        }
    }
    let free = |g: &&Gpu| !taken.contains(&g.uuid);
    if !req.device_ids.is_empty() {
        let mut out = Vec::new();
        for id in &req.device_ids {
            let Some(g) = node
                .gpus
                .iter()
                .find(|g| &g.uuid == id || g.index.to_string() == *id)
            else {
                return Err(format!("has no GPU {id}"));
            };
            if let Some(why) = unmet(req, g) {
                return Err(format!("has GPU {id} but it {why}"));
            }
            if !free(&g) || out.iter().any(|o: &&Gpu| o.uuid == g.uuid) {
                return Err(format!("has GPU {id} in use"));
            }
            out.push(g);
        }
        return Ok(out);
    }
    let mut matching: Vec<&Gpu> = node
        .gpus
        .iter()
        .filter(|g| unmet(req, g).is_none())
        .collect();
    matching.sort_by_key(|g| g.index);
    let Some(n) = req.count else {
        // `all`: every GPU that meets the constraints, at least one, none in use.
        if matching.is_empty() {
            return Err(format!("has no GPU{}", constraints(req)));
        }
        let busy = matching.iter().filter(|g| !free(g)).count();
        if busy > 0 {
            return Err(format!(
                "has {busy} of its {} GPUs{} in use",
                matching.len(),
                constraints(req)
            ));
        }
        return Ok(matching);
    };
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    let free_matching: Vec<&Gpu> = matching.into_iter().filter(free).collect();
    if free_matching.len() >= n {
        return Ok(free_matching.into_iter().take(n).collect());
    }
    let free_all: Vec<&Gpu> = node.gpus.iter().filter(free).collect();
    let m = free_matching.len();
    Err(if free_all.len() == m {
        format!("has {m} free")
    } else if m == 0 {
        format!("has {} free of {}", free_all.len(), summary(req, &free_all))
    } else {
        format!("has {m} free that match, {} free in all", free_all.len())
    })
}

/// Why `g` does not meet the constraints of `req` ("has 24 GiB"), if it does not.
fn unmet(req: &GpuRequest, g: &Gpu) -> Option<String> {
    if let Some(min) = req.min_memory_bytes {
        if g.memory_bytes < min {
            return Some(format!("has {}", gib(g.memory_bytes)));
        }
    }
    if let Some(pattern) = &req.model {
        if !model_matches(pattern, &g.model) {
            return Some(format!("is a {}", g.model));
        }
    }
    None
}

/// What the free GPUs that did not match are, for the constraints that were asked.
fn summary(req: &GpuRequest, free: &[&Gpu]) -> String {
    let mut parts = Vec::new();
    if req.min_memory_bytes.is_some() {
        let lo = free.iter().map(|g| g.memory_bytes).min().unwrap_or(0);
        let hi = free.iter().map(|g| g.memory_bytes).max().unwrap_or(0);
        parts.push(if lo == hi {
            gib(lo)
        } else {
            format!("{}-{}", gib_number(lo), gib(hi))
        });
    }
    if req.model.is_some() {
        let models: BTreeSet<&str> = free.iter().map(|g| g.model.as_str()).collect();
        parts.push(format!(
            "model {}",
            models.into_iter().collect::<Vec<_>>().join(" / ")
        ));
    }
    parts.join(", ")
}

fn constraints(req: &GpuRequest) -> String {
    let mut s = String::new();
    if let Some(min) = req.min_memory_bytes {
        s.push_str(&format!(" with >= {}", gib(min)));
    }
    if let Some(m) = &req.model {
        s.push_str(&format!(" of model {m}"));
    }
    s
}

/// What a service asks for, in words: "2 GPUs with >= 40 GiB".
pub fn describe(requests: &[GpuRequest]) -> String {
    requests
        .iter()
        .map(|r| {
            let what = if !r.device_ids.is_empty() {
                let s = if r.device_ids.len() == 1 { "" } else { "s" };
                format!("GPU{s} {}", r.device_ids.join(", "))
            } else {
                match r.count {
                    None => "all GPUs".to_string(),
                    Some(1) => "1 GPU".to_string(),
                    Some(n) => format!("{n} GPUs"),
                }
            };
            let driver = match r.driver.as_deref() {
                Some(d) if !d.eq_ignore_ascii_case("nvidia") => format!(" (driver {d})"),
                _ => String::new(),
            };
            format!("{what}{}{driver}", constraints(r))
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

fn gib_number(bytes: u64) -> String {
    let g = bytes as f64 / (1u64 << 30) as f64;
    format!("{g:.1}")
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

fn gib(bytes: u64) -> String {
    format!("{} GiB", gib_number(bytes))
}

/// `pattern` (with `*` and `?`) against the model name, with or without `NVIDIA `.
pub fn model_matches(pattern: &str, model: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let full = model.to_lowercase();
    let short = full.strip_prefix("nvidia ").unwrap_or(&full).to_string();
    [full.clone(), short]
        .iter()
        .any(|m| glob(&p, &m.chars().collect::<Vec<_>>()))
}

/// Iterative wildcard match with backtracking to the last `*`.
fn glob(p: &[char], t: &[char]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(model_matches("H100*", "NVIDIA H100 80GB HBM3"));
        assert!(model_matches("nvidia h100*", "NVIDIA H100 80GB HBM3"));
        assert!(model_matches("*80GB*", "NVIDIA H100 80GB HBM3"));
        assert!(model_matches("A?0", "NVIDIA A10"));
        assert!(!model_matches("A100*", "NVIDIA H100 80GB HBM3"));
        assert!(!model_matches("H100", "NVIDIA H100 80GB HBM3"));
        assert!(model_matches("*", "anything"));
    }

    #[test]
    fn descriptions() {
        let r = GpuRequest {
            count: Some(2),
            min_memory_bytes: Some(40 << 30),
            ..Default::default()
        };
        assert_eq!(describe(&[r]), "2 GPUs with >= 40 GiB");
        let all = GpuRequest::default();
        assert_eq!(describe(&[all]), "all GPUs");
        let ids = GpuRequest {
            device_ids: vec!["0".into(), "GPU-b".into()],
            model: Some("H100*".into()),
            ..Default::default()
        };
        assert_eq!(describe(&[ids]), "GPUs 0, GPU-b of model H100*");
        assert_eq!(gib(85899345920), "80 GiB");
        assert_eq!(gib(85520809984), "79.6 GiB");
    }
}
