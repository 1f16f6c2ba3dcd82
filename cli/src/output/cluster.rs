//! `shoal cluster status`: the Raft group as the answering controller sees it.

use serde_json::{json, Value};
use shoal_proto::pb::ClusterStatusReply;

/// `{"leader","term","commit_index","members":[{"id","address","role","reachable"}]}`
pub fn json(s: &ClusterStatusReply) -> Value {
    let members: Vec<Value> = s
        .members
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "address": m.address,
                "role": m.role,
                "reachable": m.reachable,
            })
        })
        .collect();
    json!({
        "leader": s.leader,
        "term": s.term,
        "commit_index": s.commit_index,
        "members": members,
    })
}

pub fn table(s: &ClusterStatusReply) -> String {
    let mut out = format!(
        "leader: {}  term: {}  commit index: {}  last applied: {}  snapshot: {}\n\n",
        s.leader, s.term, s.commit_index, s.last_applied, s.snapshot_index
    );
    let rows: Vec<Vec<String>> = s
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.address.clone(),
                m.role.clone(),
                if m.reachable { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    out.push_str(&super::table(
        &["ID", "ADDRESS", "ROLE", "REACHABLE"],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::pb::MemberRow;

    fn status() -> ClusterStatusReply {
        ClusterStatusReply {
            leader: 2,
            term: 7,
            commit_index: 120,
            last_applied: 119,
            snapshot_index: 100,
            members: vec![
                MemberRow {
                    id: 1,
                    address: "10.0.0.1:7370".into(),
                    role: "follower".into(),
                    reachable: false,
                },
                MemberRow {
                    id: 2,
                    address: "10.0.0.2:7370".into(),
                    role: "leader".into(),
                    reachable: true,
                },
            ],
        }
    }

    #[test]
    fn json_has_exactly_the_contract_keys() {
        assert_eq!(
            json(&status()),
            serde_json::json!({
                "leader": 2,
                "term": 7,
                "commit_index": 120,
                "members": [
                    {"id": 1, "address": "10.0.0.1:7370", "role": "follower", "reachable": false},
                    {"id": 2, "address": "10.0.0.2:7370", "role": "leader", "reachable": true}
                ]
            })
        );
    }

    #[test]
    fn table_rows() {
        assert_eq!(
            table(&status()),
            "leader: 2  term: 7  commit index: 120  last applied: 119  snapshot: 100\n\n\
             ID  ADDRESS        ROLE      REACHABLE\n\
             1   10.0.0.1:7370  follower  no\n\
             2   10.0.0.2:7370  leader    yes\n"
        );
    }
}
