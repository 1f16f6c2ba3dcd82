//! Events one controller sees itself, not derived from entries (index 0): leader
//! changes as its Raft metrics show them, and certificates it issues on renewal. Each
//! controller has its own; their times are its clock.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Event, EventLog};
use crate::api::control::now_ms;
use crate::raft::{Raft, RaftNodeId};

/// `leader.changed`, worded from a leader id, its address (if the membership names
/// it), the term and the previous leader.
pub fn leader_changed(
    leader: RaftNodeId,
    addr: Option<&str>,
    term: u64,
    previous: Option<RaftNodeId>,
    time_ms: u64,
) -> Event {
    let at = addr.map(|a| format!(" ({a})")).unwrap_or_default();
    let before = match previous {
        Some(p) => format!("; controller {p} led before"),
        None => String::new(),
    };
    Event {
        time_ms,
        kind: "leader.changed".into(),
        message: format!("controller {leader}{at} leads in term {term}{before}"),
        ..Default::default()
    }
}

/// Pushes `leader.changed` whenever this controller sees a new leader (or a new term
/// of one), until `stop`.
pub async fn watch_leader(raft: Raft, log: Arc<EventLog>, stop: CancellationToken) {
    let mut metrics = raft.metrics();
    let mut last: Option<(RaftNodeId, u64)> = None;
    loop {
        let seen = {
            let m = metrics.borrow_and_update();
            m.current_leader.map(|leader| {
                let addr = m
                    .membership_config
                    .membership()
                    .get_node(&leader)
                    .map(|n| n.addr.clone());
                (leader, m.current_term, addr)
            })
        };
        if let Some((leader, term, addr)) = seen {
            if last != Some((leader, term)) {
                let previous = last.map(|(l, _)| l).filter(|l| *l != leader);
                log.push_local(leader_changed(
                    leader,
                    addr.as_deref(),
                    term,
                    previous,
                    now_ms(),
                ));
                last = Some((leader, term));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

/// `cert.renewed`: this controller issued a new certificate to `identity` (role and
/// name) valid for `ttl`.
pub fn cert_renewed(role: &str, name: &str, ttl: std::time::Duration, time_ms: u64) -> Event {
    let days = ttl.as_secs() / 86_400;
    let valid = if days > 0 {
        format!("{days} days")
    } else {
        format!("{} s", ttl.as_secs())
    };
    Event {
        time_ms,
        kind: "cert.renewed".into(),
        node: if role == "agent" {
            name.to_string()
        } else {
            String::new()
        },
        message: format!("renewed the certificate of {role} {name}: valid for {valid}"),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            leader_changed(2, Some("10.0.0.2:7370"), 5, Some(1), 7).message,
            "controller 2 (10.0.0.2:7370) leads in term 5; controller 1 led before"
        );
        let e = cert_renewed(
            "agent",
            "n1",
            std::time::Duration::from_secs(90 * 86_400),
            7,
        );
        assert_eq!(
            (e.kind.as_str(), e.node.as_str(), e.message.as_str()),
            (
                "cert.renewed",
                "n1",
                "renewed the certificate of agent n1: valid for 90 days"
            )
        );
    }
}
