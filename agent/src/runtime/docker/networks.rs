//! The engine's networks in shoal's words ([`NetworkInfo`]): what the supervisor's
//! network GC and the pool conflict scan read.

use bollard::network::ListNetworksOptions;
use bollard::Docker;

use super::engine;
use crate::net::Subnet;
use crate::runtime::{NetworkInfo, RuntimeResult};

/// The bridge driver's option naming the host interface (`docker0` for `bridge`).
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// Every network of the engine.
pub(super) async fn list(docker: &Docker) -> RuntimeResult<Vec<NetworkInfo>> {
    let list = docker
        .list_networks(None::<ListNetworksOptions<String>>)
        .await
        .map_err(engine)?;
    Ok(list.into_iter().map(from_network).collect())
}

fn from_network(n: bollard::models::Network) -> NetworkInfo {
    let id = n.id.unwrap_or_default();
    let subnets = n
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.subnet?.parse::<Subnet>().ok())
        .collect();
    let options = n.options.unwrap_or_default();
    NetworkInfo {
        name: n.name.unwrap_or_default(),
        bridge: bridge_interface(n.driver.as_deref(), &id, options.get(BRIDGE_NAME_OPTION)),
        id,
        labels: n.labels.unwrap_or_default().into_iter().collect(),
        subnets,
    }
}

/// The host interface of a bridge network: the one its options name, else Docker's
/// `br-` and the first 12 digits of its id.
fn bridge_interface(driver: Option<&str>, id: &str, named: Option<&String>) -> Option<String> {
    if driver != Some("bridge") {
        return None;
    }
    if let Some(name) = named.filter(|n| !n.is_empty()) {
        return Some(name.clone());
    }
    (!id.is_empty()).then(|| format!("br-{}", &id[..id.len().min(12)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{Ipam, IpamConfig, Network};

    #[test]
    fn a_bridge_network_is_read_with_its_interface_subnets_and_labels() {
        let n = Network {
            name: Some("shoal-shop".into()),
            id: Some("0123456789abcdef0123".into()),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                config: Some(vec![
                    IpamConfig {
                        subnet: Some("10.208.3.0/24".into()),
                        ..Default::default()
                    },
                    IpamConfig {
                        subnet: Some("fd00::/64".into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            labels: Some([("io.shoal.stack".to_string(), "shop".to_string())].into()),
            ..Default::default()
        };
        let info = from_network(n);
        assert_eq!(info.bridge.as_deref(), Some("br-0123456789ab"));
        assert_eq!(info.subnets, vec!["10.208.3.0/24".parse().unwrap()]);
        assert_eq!(info.shoal_key().as_deref(), Some("shop"));
        assert_eq!(info.cluster(), None);
    }

    #[test]
    fn bridge_interfaces_follow_the_name_option_and_only_bridges_have_one() {
        let docker0 = "docker0".to_string();
        assert_eq!(
            bridge_interface(Some("bridge"), "abc", Some(&docker0)).as_deref(),
            Some("docker0")
        );
        assert_eq!(bridge_interface(Some("host"), "abc", None), None);
        assert_eq!(bridge_interface(Some("macvlan"), "abc", None), None);
        assert_eq!(
            bridge_interface(Some("bridge"), "abc", None).as_deref(),
            Some("br-abc")
        );
    }
}
