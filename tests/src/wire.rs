//! The assignment set a raw test session holds, as the wire describes it: the session's
//! first message is the whole set, later ones are deltas against the one before (issue
//! 18). Tests that speak the agent protocol themselves read whole sets from here; the
//! agent's own application of deltas is `shoal_agent::model::AssignmentSet::apply`.

use shoal_proto::pb;

/// Brings `held` (`None` before the first message) to what `msg` says; panics on a delta
/// against another version than the one held, which the controller must never send.
pub fn apply(held: &mut Option<pb::Assignments>, msg: pb::Assignments) {
    if msg.base == 0 {
        *held = Some(msg);
        return;
    }
    let set = held.as_mut().expect("a delta before any set");
    assert_eq!(set.version, msg.base, "a delta against a version not held");
    set.version = msg.version;
    set.tasks.retain(|t| {
        !msg.removed_tasks.contains(&t.task_id) && !msg.tasks.iter().any(|n| n.task_id == t.task_id)
    });
    set.tasks.extend(msg.tasks);
    set.remove_volumes = msg.remove_volumes;
    if let Some(mesh) = msg.mesh {
        set.mesh = Some(mesh);
    } else if let Some(delta) = msg.mesh_delta {
        let mesh = set.mesh.get_or_insert_with(Default::default);
        for change in delta.names {
            let at = mesh
                .names
                .iter()
                .position(|n| n.network == change.network && n.name == change.name);
            if change.gone {
                if let Some(at) = at {
                    mesh.names.remove(at);
                }
                continue;
            }
            let entry = match at {
                Some(at) => &mut mesh.names[at],
                None => {
                    mesh.names.push(pb::DnsName {
                        network: change.network.clone(),
                        name: change.name.clone(),
                        ips: Vec::new(),
                    });
                    mesh.names.last_mut().expect("just pushed")
                }
            };
            entry.ips.retain(|ip| !change.removed.contains(ip));
            entry.ips.extend(change.added);
        }
        if delta.ports_changed {
            mesh.ports = delta.ports;
        }
    }
}
