//! The cluster network glue of one agent: applies each new [`Mesh`] to the host
//! ([`super::host`]) and to the DNS servers ([`super::dns`]), off the supervisor's task.
//! One worker applies the latest mesh only: a burst of updates costs one application,
//! and an older mesh is never applied after a newer one. On shutdown the worker removes
//! the routes and filters it installed ([`HostNet::clear`]); [`NodeNet::stopped`]
//! waits for that.

use std::sync::Arc;

use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;

use super::dns::{Dns, Names};
use super::host::HostNet;
use super::upstream::Upstreams;
use crate::model::Mesh;

pub struct NodeNet {
    dns: Arc<Mutex<Dns>>,
    /// The DNS servers' upstreams by asker, set by the supervisor without waiting for
    /// the lock a mesh application holds.
    upstreams: Arc<Upstreams>,
    latest: watch::Sender<Arc<Mesh>>,
    worker: tokio::task::JoinHandle<()>,
}

impl NodeNet {
    pub fn new(shutdown: CancellationToken) -> NodeNet {
        NodeNet::with_host(HostNet::default(), shutdown)
    }

    /// [`NodeNet::new`] on `host` (tests give it a recording shell).
    pub fn with_host(host: HostNet, shutdown: CancellationToken) -> NodeNet {
        let dns = Dns::new(shutdown.clone());
        let upstreams = dns.upstreams();
        let dns = Arc::new(Mutex::new(dns));
        let (latest, rx) = watch::channel(Arc::new(Mesh::default()));
        let worker = tokio::spawn(apply_latest(rx, dns.clone(), host, shutdown));
        NodeNet {
            dns,
            upstreams,
            latest,
            worker,
        }
    }

    /// Stop applying meshes (if shutdown was not asked already) and wait until the host
    /// is cleaned up.
    pub async fn stopped(self) {
        let NodeNet { latest, worker, .. } = self;
        // Closing the channel ends the worker even without a cancelled shutdown.
        drop(latest);
        let _ = worker.await;
    }

    /// The DNS servers, for a starting container to be given one.
    pub fn dns(&self) -> Arc<Mutex<Dns>> {
        self.dns.clone()
    }

    /// Where each container's questions for non-cluster names go ([`Upstreams`]).
    pub fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams.clone()
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
    mut host: HostNet,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = rx.changed() => if changed.is_err() { break },
        }
        let mesh = rx.borrow_and_update().clone();
        {
            let mut dns = dns.lock().await;
            dns.set_names(Names {
                names: mesh.names.clone(),
                members: mesh.members.clone(),
            });
            for stack in dns.stacks() {
                if !mesh.subnets.contains_key(&stack) {
                    dns.stop(&stack);
                }
            }
            // After an agent restart the containers still point at these addresses.
            for (network, (subnet, _)) in &mesh.subnets {
                if !dns.stacks().contains(network) {
                    dns.serve(network, subnet.gateway()).await;
                }
            }
        }
        host.apply(&mesh).await;
    }
    host.clear().await;
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;
    use crate::net::host::fake::FakeHost;

    #[tokio::test]
    async fn stopping_removes_what_the_mesh_installed_on_the_host() {
        let fake = Arc::new(FakeHost::default());
        let shutdown = CancellationToken::new();
        let mut net = NodeNet::with_host(HostNet::with_shell(fake.clone()), shutdown.clone());
        let s = |x: &str| x.parse::<crate::net::Subnet>().unwrap();
        let mesh = Mesh {
            pool: Some(s("10.208.0.0/12")),
            // 192.0.2.0/24 is not this host's: the DNS server cannot bind, as without root.
            subnets: [(
                "app".to_string(),
                (s("192.0.2.0/24"), vec![s("192.0.2.0/24")]),
            )]
            .into_iter()
            .collect(),
            routes: [(s("10.208.0.0/24"), Ipv4Addr::new(10, 77, 7, 12))]
                .into_iter()
                .collect(),
            ..Mesh::default()
        };
        net.update(&Arc::new(mesh));
        let installed = async {
            while fake.state.lock().unwrap().routes.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), installed)
            .await
            .expect("the route installed");
        // SIGTERM / Ctrl-C: the agent's shutdown token.
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), net.stopped())
            .await
            .expect("stopped");
        let st = fake.state.lock().unwrap();
        assert!(st.routes.is_empty(), "routes left: {:?}", st.routes);
        assert!(st.chains.is_empty(), "chains left: {:?}", st.chains);
        assert_eq!(st.jumps.values().sum::<usize>(), 0);
    }
}
