//! The cluster network glue of one agent: applies each new [`Mesh`] to the host
//! ([`super::host`]) and to the DNS servers ([`super::dns`]), off the supervisor's task.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::dns::{Dns, Names};
use super::host::HostNet;
use crate::model::Mesh;

pub struct NodeNet {
    dns: Arc<Mutex<Dns>>,
    host: Arc<Mutex<HostNet>>,
    applied: Option<Arc<Mesh>>,
}

impl NodeNet {
    pub fn new(shutdown: CancellationToken) -> NodeNet {
        NodeNet {
            dns: Arc::new(Mutex::new(Dns::new(shutdown))),
            host: Default::default(),
            applied: None,
        }
    }

    /// The DNS servers, for a starting container to be given one.
    pub fn dns(&self) -> Arc<Mutex<Dns>> {
        self.dns.clone()
    }

    /// Apply `mesh` (in the background; a newer mesh waits for the one being applied).
    pub fn update(&mut self, mesh: &Arc<Mesh>) {
        if self.applied.as_ref() == Some(mesh) {
            return;
        }
        self.applied = Some(mesh.clone());
        let (mesh, dns, host) = (mesh.clone(), self.dns.clone(), self.host.clone());
        tokio::spawn(async move {
            {
                let mut dns = dns.lock().await;
                let names: Names = mesh.names.clone();
                dns.set_names(names);
                for stack in dns.stacks() {
                    if !mesh.subnets.contains_key(&stack) {
                        dns.stop(&stack);
                    }
                }
                // After an agent restart the containers still point at these addresses.
                for (stack, (subnet, _)) in &mesh.subnets {
                    if !dns.stacks().contains(stack) {
                        dns.serve(stack, subnet.gateway()).await;
                    }
                }
            }
            host.lock().await.apply(&mesh).await;
        });
    }
}

/// Ports a replica of a service with these specs may receive mesh connections on.
pub fn ingress_targets(spec: &shoal_proto::spec::ServiceSpec) -> Vec<u16> {
    use shoal_proto::spec::{PortMode, Protocol};
    spec.ports
        .iter()
        .filter(|p| {
            p.published.is_some() && p.mode == PortMode::Ingress && p.protocol == Protocol::Tcp
        })
        .map(|p| p.target)
        .collect()
}
