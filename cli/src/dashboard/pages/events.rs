//! `/events`: what happened and why (`Events`), oldest first; new events are appended
//! by the `/events/stream` stream (the `Events` RPC with `follow`).

use maud::{html, Markup};
use shoal_proto::pb;

use super::{enc, note, time, Page, Section};

pub fn render(page: &Page, events: &Section<Vec<pb::Event>>) -> Markup {
    let stack = match page {
        Page::Events { stack } => stack.as_str(),
        _ => "",
    };
    match events {
        Err(f) => note(f),
        Ok(events) => {
            let since = events.last().map_or(0, |e| e.time_ms + 1);
            let stream = format!("/events/stream?stack={}&since={since}", enc(stack));
            html! {
                table class="events" {
                    thead { tr {
                        th scope="col" { "Time" } th scope="col" { "Kind" } th scope="col" { "Service" }
                        th scope="col" { "Node" } th scope="col" { "What happened" }
                    } }
                    tbody id="events" data-append=(stream) data-max="1000" aria-live="polite" {
                        @if events.is_empty() {
                            tr data-placeholder { td colspan="5" { "No events yet." } }
                        }
                        @for e in events { (event_row(e)) }
                    }
                }
            }
        }
    }
}

/// One event as a table row (also what the stream appends).
pub fn event_row(e: &pb::Event) -> Markup {
    html! {
        tr data-kind=(e.kind) {
            td { time datetime=(time(e.time_ms)) { (time(e.time_ms)) } }
            td { (e.kind) }
            td { @if !e.stack.is_empty() {
                @if e.service.is_empty() { (e.stack) } @else { (super::service_link(&e.stack, &e.service)) }
            } }
            td { (e.node) }
            td { (e.message) }
        }
    }
}
