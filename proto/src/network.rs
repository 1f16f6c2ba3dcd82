//! Cluster networks: how a Compose network of a stack is named across the cluster.
//!
//! A network's *key* identifies it in the replicated state (its subnets, the tasks'
//! addresses) and on the wire:
//!
//! - a stack's implicit `default` network is `STACK` (what the single stack network was
//!   called before stacks had several, so older states read unchanged);
//! - any other network `NET` of the stack is `STACK.NET` (stack names have no dots);
//! - an `external: true` network is `ext:NAME` whatever the stack: every stack that
//!   declares it shares it (Docker network names have no colons).
//!
//! On each node the key maps to one Docker network ([`docker_name`]).

use std::borrow::Cow;

use crate::spec::{ServiceNetwork, ServiceSpec};

/// The network a service joins when it lists none.
pub const DEFAULT: &str = "default";
const EXTERNAL_PREFIX: &str = "ext:";

/// The key of `stack`'s own network `net`.
pub fn local_key(stack: &str, net: &str) -> String {
    if net == DEFAULT {
        stack.to_string()
    } else {
        format!("{stack}.{net}")
    }
}

/// The key of the external network named `name` (shared by every stack declaring it).
pub fn external_key(name: &str) -> String {
    format!("{EXTERNAL_PREFIX}{name}")
}

/// `Some(NAME)` for the key of an external network.
pub fn external_name(key: &str) -> Option<&str> {
    key.strip_prefix(EXTERNAL_PREFIX)
}

/// The Docker network of a key on every node: `shoal-STACK`, `shoal-STACK.NET`, or the
/// external network's own name.
pub fn docker_name(key: &str) -> String {
    match external_name(key) {
        Some(name) => name.to_string(),
        None => format!("shoal-{key}"),
    }
}

/// The key of a Docker network shoal made ([`docker_name`] backwards): `shoal-KEY` is
/// a stack's own network, any other name an external one.
pub fn key_of_docker_name(name: &str) -> String {
    match name.strip_prefix("shoal-") {
        Some(key) => key.to_string(),
        None => external_key(name),
    }
}

/// The stack whose own network `key` is (`None` for external networks).
pub fn stack_of(key: &str) -> Option<&str> {
    if external_name(key).is_some() {
        return None;
    }
    Some(key.split_once('.').map_or(key, |(s, _)| s))
}

/// The networks a service of `stack` is attached to, in attachment order (the first one
/// is the one it is created on). A spec without any (stored before services had
/// several) is on the stack's default network. A service with a `network_mode` (`host`,
/// `none`, `service:NAME`, `container:NAME`) is on none: it gets no subnet, no name and
/// no cluster network, its replicas live in another network namespace.
pub fn attachments<'a>(stack: &str, spec: &'a ServiceSpec) -> Cow<'a, [ServiceNetwork]> {
    if spec.container.network_mode.is_some() {
        Cow::Borrowed(&[])
    } else if spec.networks.is_empty() {
        Cow::Owned(vec![ServiceNetwork {
            name: DEFAULT.to_string(),
            key: local_key(stack, DEFAULT),
            aliases: Vec::new(),
        }])
    } else {
        Cow::Borrowed(&spec.networks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_docker_networks_and_say_whose_they_are() {
        assert_eq!(local_key("shop", "default"), "shop");
        assert_eq!(local_key("shop", "back"), "shop.back");
        assert_eq!(external_key("shared"), "ext:shared");
        assert_eq!(docker_name("shop"), "shoal-shop");
        assert_eq!(docker_name("shop.back"), "shoal-shop.back");
        assert_eq!(docker_name("ext:shared"), "shared");
        assert_eq!(stack_of("shop.back"), Some("shop"));
        assert_eq!(stack_of("shop"), Some("shop"));
        assert_eq!(stack_of("ext:shared"), None);
        assert_eq!(external_name("ext:shared"), Some("shared"));
        for key in ["shop", "shop.back", "ext:shared"] {
            assert_eq!(key_of_docker_name(&docker_name(key)), key);
        }
    }

    #[test]
    fn a_spec_without_networks_is_on_the_default_one() {
        let spec = ServiceSpec::default();
        let a = attachments("shop", &spec);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].key, "shop");
        assert_eq!(a[0].name, "default");
    }

    #[test]
    fn a_service_with_a_network_mode_is_on_no_cluster_network() {
        use crate::container::{ContainerOptions, NetworkMode};
        for mode in [
            NetworkMode::Host,
            NetworkMode::None,
            NetworkMode::Service("vpn".into()),
            NetworkMode::Container("x".into()),
        ] {
            let spec = ServiceSpec {
                container: ContainerOptions {
                    network_mode: Some(mode.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            assert!(attachments("shop", &spec).is_empty(), "{mode:?}");
        }
    }
}
