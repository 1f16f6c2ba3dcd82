//! `/nodes`: each node's status, availability, resources, labels and GPUs (with their
//! utilization from the last heartbeat), and each GPU's last hour (`Stats`).

use maud::{html, Markup};
use shoal_proto::pb;

use super::{badge, bytes, note, Section};
use crate::dashboard::chart::chart;

pub fn render(nodes: &[pb::NodeRow], stats: &Section<pb::StatsReply>, now_ms: u64) -> Markup {
    let any_gpu = nodes.iter().any(|n| !n.gpus.is_empty());
    html! {
        @if nodes.is_empty() {
            p { "No nodes have joined." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Node" } th scope="col" { "Status" } th scope="col" { "Availability" }
                    th scope="col" { "CPUs" } th scope="col" { "Memory" } th scope="col" { "Address" }
                    th scope="col" { "Labels" } th scope="col" { "GPUs" }
                } }
                tbody {
                    @for n in nodes {
                        tr data-node=(n.name) {
                            th scope="row" { (n.name) }
                            td class="status" { (badge(&n.status)) }
                            td { (badge(&n.availability)) }
                            td { (n.cpus) }
                            td { (bytes(u64::try_from(n.memory_bytes).unwrap_or(0))) }
                            td { (n.address) }
                            td { @for (k, v) in &n.labels { code { (k) "=" (v) } " " } }
                            td { @if n.gpus.is_empty() { "none" } @else {
                                ul class="plain" { @for g in &n.gpus { li { (gpu_line(g)) } } }
                            } }
                        }
                    }
                }
            }
        }
        @if any_gpu {
            section aria-labelledby="h-gpu" {
                h2 id="h-gpu" { "GPU utilization, last hour" }
                @match stats {
                    Err(f) => { (note(f)) }
                    Ok(s) if s.gpus.is_empty() => { p { "No GPU figures yet." } }
                    Ok(s) => {
                        div class="charts" {
                            @for g in &s.gpus {
                                @let pts: Vec<(u64, f64)> = g.history.iter().map(|p| (p.at_ms, p.cpu_percent)).collect();
                                (chart(&format!("{} GPU {} ({})", g.node, g.index, g.model), &pts, at(s, now_ms), 100.0, |v| format!("{v:.0} %")))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// When the figures were taken: the leader's time when it says, else ours.
pub fn at(s: &pb::StatsReply, now_ms: u64) -> u64 {
    if s.at_ms > 0 {
        s.at_ms
    } else {
        now_ms
    }
}

fn gpu_line(g: &pb::GpuRow) -> String {
    let mut s = format!("{}: {}", g.index, g.model);
    if let Some(u) = g.utilization_percent {
        s.push_str(&format!(", {u} % busy"));
    }
    if let Some(m) = g.memory_used_bytes {
        s.push_str(&format!(
            ", {} of {} used",
            bytes(m),
            bytes(u64::try_from(g.memory_bytes).unwrap_or(0))
        ));
    }
    if !g.assigned_to.is_empty() {
        s.push_str(&format!(", for {}", g.assigned_to));
    }
    s
}
