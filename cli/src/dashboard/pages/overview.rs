//! `/`: every node and every service (`STACK/SERVICE`) with its replica counts, and the
//! cluster's leader in a line. DESIGN.md's contract: outside checks read this page.

use maud::{html, Markup};
use shoal_proto::pb;

use super::{badge, note, service_link, Section};

pub fn render(
    nodes: &[pb::NodeRow],
    services: &[pb::ServiceRow],
    cluster: &Section<pb::ClusterStatusReply>,
) -> Markup {
    let ready = nodes.iter().filter(|n| n.status == "ready").count();
    html! {
        section aria-labelledby="h-cluster" {
            h2 id="h-cluster" { "Cluster" }
            @match cluster {
                Ok(c) => {
                    @let reachable = c.members.iter().filter(|m| m.reachable).count();
                    p { "Leader: controller " (c.leader) ", term " (c.term) "; "
                        (reachable) " of " (c.members.len()) " controllers reachable; "
                        (ready) " of " (nodes.len()) " nodes ready. "
                        a href="/cluster" { "Details" } }
                }
                Err(f) => { (note(f)) }
            }
        }
        section aria-labelledby="h-nodes" {
            h2 id="h-nodes" { "Nodes" }
            @if nodes.is_empty() {
                p { "No nodes have joined." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Node" } th scope="col" { "Status" } th scope="col" { "Availability" } } }
                    tbody {
                        @for n in nodes {
                            tr data-node=(n.name) {
                                th scope="row" { (n.name) }
                                td { (badge(&n.status)) }
                                td { (n.availability) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-services" {
            h2 id="h-services" { "Services" }
            @if services.is_empty() {
                p { "No services are deployed." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Service" } th scope="col" { "Replicas (running/desired)" } th scope="col" { "Rollout" } } }
                    tbody {
                        @for s in services {
                            tr data-service={(s.stack) "/" (s.name)} {
                                th scope="row" { (service_link(&s.stack, &s.name)) }
                                td class="replicas" { (s.running) "/" (s.desired) }
                                td { @if !s.rollout.is_empty() { (badge(&s.rollout)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}
