//! The cluster network glue of one agent: applies each new [`Mesh`] to the host
//! ([`super::host`]) and to the DNS servers ([`super::dns`]), off the supervisor's task.
//! One worker applies the latest mesh only: a burst of updates costs one application,
//! and an older mesh is never applied after a newer one.

use std::sync::Arc;

use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;

use super::dns::Dns;
use super::host::HostNet;
use crate::model::Mesh;

pub struct NodeNet {
    dns: Arc<Mutex<Dns>>,
    latest: watch::Sender<Arc<Mesh>>,
}

impl NodeNet {
    pub fn new(shutdown: CancellationToken) -> NodeNet {
        let dns = Arc::new(Mutex::new(Dns::new(shutdown.clone())));
        let (latest, rx) = watch::channel(Arc::new(Mesh::default()));
        tokio::spawn(apply_latest(rx, dns.clone(), shutdown));
        NodeNet { dns, latest }
    }

    /// The DNS servers, for a starting container to be given one.
    pub fn dns(&self) -> Arc<Mutex<Dns>> {
        self.dns.clone()
    }

    /// Apply `mesh` (in the background).
    pub fn update(&mut self, mesh: &Arc<Mesh>) {
        self.latest.send_if_modified(|m| {
            let changed = **m != **mesh;
            if changed {
                *m = mesh.clone();
            }
            changed
        });
    }
}

async fn apply_latest(
    mut rx: watch::Receiver<Arc<Mesh>>,
    dns: Arc<Mutex<Dns>>,
    shutdown: CancellationToken,
) {
    let mut host = HostNet::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let mesh = rx.borrow_and_update().clone();
        {
            let mut dns = dns.lock().await;
            dns.set_names(mesh.names.clone());
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
        host.apply(&mesh).await;
    }
}

/// Ports a replica of a service with this spec may receive mesh connections on.
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
