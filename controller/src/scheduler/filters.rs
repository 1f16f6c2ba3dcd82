//! The filters: why a node cannot take one more replica ([`fits`]), each refusal a
//! [`Refusal`] that [`super::reason`] turns into words.

use shoal_proto::spec::{Constraint, ConstraintField, PortMode, Protocol, ServiceSpec};

use super::{needs, Load, Refusal, Request};
use crate::state::{Availability, Node, NodeStatus};

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// Why `node` cannot take `req`; Ok when it can.
pub(super) fn fits(node: &Node, load: &Load, req: &Request<'_>) -> Result<(), Refusal> {
    match node.status {
        NodeStatus::Ready => {}
        NodeStatus::Down => return Err(Refusal::Down),
        NodeStatus::Unknown => return Err(Refusal::NotReported),
    }
    if node.availability == Availability::Drain {
        return Err(Refusal::Drained);
    }
    if let Some(c) = unmet_constraint(node, req.spec) {
        return Err(Refusal::Constraint(c.to_string()));
    }
    if let Some(lacks) = needs::node_lacks(node, req.spec) {
        return Err(lacks);
    }
    if let Some(why) = req.nodes.as_ref().and_then(|f| f.refuses(&node.id)) {
        return Err(Refusal::Other(why));
    }
    let mine = load.of_service(&req.service);
    if let Some(max) = req.spec.placement.max_replicas_per_node {
        if mine >= max {
            return Err(Refusal::MaxReplicas { max });
        }
    }
    if let Some(missing) = needs::missing_partner(&req.service, req.spec, |s| load.keeps(s)) {
        return Err(missing);
    }
    for p in &req.spec.ports {
        let Some(published) = p.published else {
            continue;
        };
        match load.ports.get(&(published, p.protocol)) {
            // Replicas of one service share an ingress port through the agent's proxy;
            // a host-mode port belongs to one container.
            Some(owner) if owner == &req.service && p.mode == PortMode::Ingress => {}
            Some(owner) => {
                return Err(Refusal::Port {
                    port: format!("{published}/{}", proto_name(p.protocol)),
                    owner: owner.clone(),
                })
            }
            None => {}
        }
    }
    let want_cpu = req.spec.resources.requested_nano_cpus();
    if want_cpu > 0 {
        let free = node.nano_cpus - load.nano_cpus;
        if want_cpu > free {
            return Err(Refusal::Cpus {
                free: free.max(0),
                want: want_cpu,
            });
        }
    }
    let want_mem = req.spec.resources.requested_memory();
    if want_mem > 0 {
        let free = node.memory_bytes - load.memory;
        if want_mem > free {
            return Err(Refusal::Memory {
                free: free.max(0),
                want: want_mem,
            });
        }
    }
    Ok(())
}

/// The first placement constraint of `spec` that `node` does not satisfy.
pub(super) fn unmet_constraint<'a>(node: &Node, spec: &'a ServiceSpec) -> Option<&'a Constraint> {
    spec.placement.constraints.iter().find(|c| {
        let actual = match &c.field {
            ConstraintField::Hostname | ConstraintField::Id => Some(node.id.as_str()),
            ConstraintField::Label(k) => node.labels.get(k).map(String::as_str),
            ConstraintField::Role => Some(node.role()),
        };
        (actual == Some(c.value.as_str())) != c.equal
    })
}
