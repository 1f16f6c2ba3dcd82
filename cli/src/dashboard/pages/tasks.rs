//! `/tasks`: the tasks (`Ps`), current ones or all with `?all=1`.

use maud::{html, Markup};
use shoal_proto::pb;

use super::{badge, service_link, time};

pub fn render(tasks: &[pb::TaskRow], all: bool) -> Markup {
    html! {
        p {
            @if all { a href="/tasks" { "Only current tasks" } }
            @else { a href="/tasks?all=1" { "Include tasks that ended" } }
        }
        (table(tasks))
    }
}

/// The tasks table, also on a service's and a stack's page.
pub fn table(tasks: &[pb::TaskRow]) -> Markup {
    html! {
        @if tasks.is_empty() {
            p { "No tasks." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Service" } th scope="col" { "Slot" } th scope="col" { "Node" }
                    th scope="col" { "State" } th scope="col" { "Desired" } th scope="col" { "Generation" }
                    th scope="col" { "Container" } th scope="col" { "Updated" } th scope="col" { "Error" }
                } }
                tbody {
                    @for t in tasks {
                        tr data-task=(t.id) {
                            td { (service_link(&t.stack, &t.service)) }
                            td { (t.slot) }
                            td { (t.node) }
                            td { (badge(&t.state)) }
                            td { (t.desired) }
                            td { (t.generation) }
                            td class="mono" { (t.container.chars().take(12).collect::<String>()) }
                            td { (time(u64::try_from(t.updated_at_ms).unwrap_or(0))) }
                            td { (t.error) }
                        }
                    }
                }
            }
        }
    }
}
