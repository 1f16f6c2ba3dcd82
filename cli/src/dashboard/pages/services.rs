//! `/services` (replicas, rollout, autoscale), `/services/STACK/SERVICE` (its tasks,
//! live figures, an hour of CPU and memory, live logs) and `/stacks/STACK`.

use maud::{html, Markup};
use shoal_proto::pb;

use super::{badge, bytes, enc, note, service_link, tasks, Section};
use crate::dashboard::chart::chart;

pub fn list(services: &[pb::ServiceRow]) -> Markup {
    html! {
        @if services.is_empty() {
            p { "No services are deployed." }
        } @else {
            (table(services))
        }
    }
}

fn table(services: &[pb::ServiceRow]) -> Markup {
    let autoscaled = services.iter().any(|s| s.autoscale.is_some());
    html! {
        table {
            thead { tr {
                th scope="col" { "Service" } th scope="col" { "Mode" }
                th scope="col" { "Replicas (running/desired)" } th scope="col" { "Rollout" }
                th scope="col" { "Generation" } th scope="col" { "Image" }
                @if autoscaled { th scope="col" { "Autoscale" } }
            } }
            tbody {
                @for s in services {
                    tr data-service={(s.stack) "/" (s.name)} {
                        th scope="row" { (service_link(&s.stack, &s.name)) }
                        td { (s.mode) }
                        td class="replicas" { (replicas(s)) }
                        td class="rollout" { @if !s.rollout.is_empty() { (badge(&s.rollout)) } }
                        td { (s.generation) @if s.previous_generation > 0 { " (previous " (s.previous_generation) ")" } }
                        td class="mono" { (s.image) }
                        @if autoscaled { td { @if let Some(a) = &s.autoscale { (autoscale(a)) } } }
                    }
                }
            }
        }
    }
}

/// `2/3` with a progress bar, and the healthy count where there is a healthcheck.
fn replicas(s: &pb::ServiceRow) -> Markup {
    let label = format!("{} of {} replicas running", s.running, s.desired);
    html! {
        progress value=(s.running.min(s.desired)) max=(s.desired.max(1)) aria-label=(label) {}
        " "
        span class="count" { (s.running) "/" (s.desired) }
        @if s.has_healthcheck { " (" (s.healthy) " healthy)" }
    }
}

fn autoscale(a: &pb::AutoscaleRow) -> Markup {
    html! {
        (a.desired) " (" (a.min) "–" (a.max) ")"
        @if !a.cause.is_empty() { br; small { (a.cause) } }
        @for r in &a.readings { br; small { (r) } }
    }
}

pub fn detail(
    s: &pb::ServiceRow,
    tasks: &[pb::TaskRow],
    stats: &Section<pb::StatsReply>,
    now_ms: u64,
) -> Markup {
    html! {
        p { "Stack " a href=(format!("/stacks/{}", enc(&s.stack))) { (s.stack) } }
        (table(std::slice::from_ref(s)))
        section aria-labelledby="h-tasks" {
            h2 id="h-tasks" { "Tasks" }
            (tasks::table(tasks))
        }
        section aria-labelledby="h-usage" {
            h2 id="h-usage" { "Resource use" }
            @match stats {
                Err(f) => { (note(f)) }
                Ok(st) => { (usage(s, st, now_ms)) }
            }
        }
    }
}

fn usage(s: &pb::ServiceRow, st: &pb::StatsReply, now_ms: u64) -> Markup {
    let replicas: Vec<&pb::ReplicaStats> = st
        .replicas
        .iter()
        .filter(|r| r.stack == s.stack && r.service == s.name)
        .collect();
    let series = st
        .services
        .iter()
        .find(|x| x.stack == s.stack && x.service == s.name);
    let now = super::nodes::at(st, now_ms);
    let cpu: Vec<(u64, f64)> = series
        .map(|x| x.points.iter().map(|p| (p.at_ms, p.cpu_percent)).collect())
        .unwrap_or_default();
    let mem: Vec<(u64, f64)> = series
        .map(|x| {
            x.points
                .iter()
                .map(|p| (p.at_ms, p.memory_bytes as f64))
                .collect()
        })
        .unwrap_or_default();
    html! {
        div class="charts" {
            (chart("CPU (% of one CPU, all replicas)", &cpu, now, 100.0, |v| format!("{v:.1} %")))
            (chart("Memory (all replicas)", &mem, now, 1.0, |v| bytes(v as u64)))
        }
        @if replicas.is_empty() {
            p { "No figures for its replicas yet." }
        } @else {
            table {
                caption { "Replicas now" }
                thead { tr {
                    th scope="col" { "Slot" } th scope="col" { "Node" } th scope="col" { "CPU" }
                    th scope="col" { "Memory" } th scope="col" { "Network in/out" } th scope="col" { "Restarts" }
                } }
                tbody {
                    @for r in replicas {
                        tr {
                            th scope="row" { (r.slot) }
                            td { (r.node) }
                            td { (format!("{:.1} %", r.cpu_percent)) }
                            td { (bytes(r.memory_bytes)) @if r.memory_limit_bytes > 0 { " of " (bytes(r.memory_limit_bytes)) } }
                            td { (bytes(r.net_rx_bytes)) " / " (bytes(r.net_tx_bytes)) }
                            td { (r.restarts) }
                        }
                    }
                }
            }
        }
    }
}

/// The live logs of the service, outside the replaced region so lines stay.
pub fn logs_section(stack: &str, name: &str) -> Markup {
    let url = format!("/logs/{}/{}", enc(stack), enc(name));
    html! {
        section aria-labelledby="h-logs" {
            h2 id="h-logs" { "Logs" }
            div class="logs" data-scroll tabindex="0" {
                div id="logs" role="log" aria-live="polite" data-append=(url) data-max="2000" {}
            }
        }
    }
}

pub fn stack(services: &[pb::ServiceRow], tasks: &[pb::TaskRow]) -> Markup {
    let name = services
        .first()
        .map(|s| s.stack.clone())
        .unwrap_or_default();
    html! {
        p { a href=(format!("/events?stack={}", enc(&name))) { "Events of this stack" } }
        section aria-labelledby="h-svc" {
            h2 id="h-svc" { "Services" }
            (table(services))
        }
        section aria-labelledby="h-tasks" {
            h2 id="h-tasks" { "Tasks" }
            (tasks::table(tasks))
        }
    }
}
