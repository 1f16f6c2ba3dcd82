//! `/cluster`: the controllers' Raft group (`ClusterStatus`).

use maud::{html, Markup};
use shoal_proto::pb;

use super::badge;

pub fn render(c: &pb::ClusterStatusReply) -> Markup {
    let leader = c.members.iter().find(|m| m.id == c.leader);
    html! {
        dl class="facts" {
            dt { "Leader" }
            dd { @match leader {
                Some(m) => { "controller " (m.id) " at " (m.address) }
                None => { "none known (an election may be under way)" }
            } }
            dt { "Term" } dd { (c.term) }
            dt { "Commit index" } dd { (c.commit_index) }
            dt { "Last applied" } dd { (c.last_applied) }
            dt { "Snapshot index" } dd { (c.snapshot_index) }
        }
        table {
            caption { "Controllers" }
            thead { tr {
                th scope="col" { "ID" } th scope="col" { "Address" }
                th scope="col" { "Role" } th scope="col" { "Reachable" }
            } }
            tbody {
                @for m in &c.members {
                    tr data-member=(m.id) {
                        th scope="row" { (m.id) }
                        td { (m.address) }
                        td { (badge(&m.role)) }
                        td { (badge(if m.reachable { "yes" } else { "no" })) }
                    }
                }
            }
        }
    }
}
