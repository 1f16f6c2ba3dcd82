//! `networks:`: the stack's top-level networks and each service's attachments.
//!
//! Every Compose network of a stack is its own network in shoal (its own subnets, its
//! own Docker network per node, isolated from the others); a service that lists none
//! is on the implicit `default`, as in Compose. An `external: true` network is keyed
//! by its name, so stacks declaring the same one share it (shoal creates it on first
//! use: there is no `docker network create` across nodes). `internal: true` is honoured
//! (no route or NAT out of the cluster's pool); `driver`, `ipam` and the other knobs
//! are accepted with a warning saying why they change nothing.

use std::collections::BTreeMap;

use shoal_proto::network::{self, DEFAULT};
use shoal_proto::spec::{NetworkSpec, ServiceNetwork};

use super::diag::Sink;
use super::value::{boolean, entries, int, string_list, text};
use super::yaml::{Node, Value};

/// The top-level `networks:` of `stack`, by Compose name.
pub(crate) fn top_level(n: &Node, stack: &str, sink: &mut Sink) -> BTreeMap<String, NetworkSpec> {
    let mut out = BTreeMap::new();
    for (k, v) in entries(n, sink, "networks") {
        let path = format!("networks.{}", k.name);
        let mut external = false;
        let mut name: Option<String> = None;
        let mut internal = false;
        for (vk, vv) in entries(v, sink, &path) {
            let p = format!("{path}.{}", vk.name);
            match vk.name.as_str() {
                "external" => match &vv.value {
                    Value::Map(_) => {
                        external = true;
                        if let Some(n) = vv
                            .get("name")
                            .and_then(|n| text(n, sink, &format!("{p}.name")))
                        {
                            sink.warn(vv.pos, &p, "external.name is deprecated: use name:");
                            name = Some(n);
                        }
                    }
                    _ => external = boolean(vv, sink, &p).unwrap_or(false),
                },
                "name" => name = text(vv, sink, &p),
                "internal" => internal = boolean(vv, sink, &p).unwrap_or(false),
                "driver" => {
                    if let Some(d) = text(vv, sink, &p) {
                        if d != "bridge" && d != "overlay" {
                            sink.warn(vv.pos, &p, format!("ignored: driver `{d}`: every shoal network is a bridge on each node, routed between nodes by shoal"));
                        }
                    }
                }
                "ipam" => sink.warn(
                    vv.pos,
                    &p,
                    format!(
                        "ignored: shoal gives each network its subnets from the cluster pool {}",
                        crate::state::subnets::POOL
                    ),
                ),
                "enable_ipv6" => {
                    if boolean(vv, sink, &p) == Some(true) {
                        sink.warn(
                            vv.pos,
                            &p,
                            "ignored: shoal's cluster networks are IPv4 only",
                        );
                    }
                }
                "enable_ipv4" => {
                    if boolean(vv, sink, &p) == Some(false) {
                        sink.warn(vv.pos, &p, "ignored: shoal's cluster networks are IPv4");
                    }
                }
                "driver_opts" | "labels" | "attachable" => sink.warn(
                    vv.pos,
                    &p,
                    format!("ignored: `{}` has no effect on shoal's networks", vk.name),
                ),
                _ if vk.name.starts_with("x-") => {}
                _ => sink.warn(
                    vv.pos,
                    &p,
                    format!("ignored: `{}` is not supported for networks", vk.name),
                ),
            }
        }
        let key = if external {
            network::external_key(name.as_deref().unwrap_or(&k.name))
        } else {
            if name.is_some() {
                let why = format!(
                    "ignored: shoal names the network {} on every node",
                    network::docker_name(&network::local_key(stack, &k.name))
                );
                sink.warn(k.pos, &format!("{path}.name"), why);
            }
            network::local_key(stack, &k.name)
        };
        if external && internal {
            sink.warn(
                k.pos,
                &format!("{path}.internal"),
                "ignored: an external network's settings are not the stack's to give",
            );
            internal = false;
        }
        out.insert(
            k.name.clone(),
            NetworkSpec {
                key,
                external,
                internal,
            },
        );
    }
    out
}

/// The implicit `default` network of `stack` when the file does not declare one.
pub(crate) fn implicit_default(stack: &str) -> NetworkSpec {
    NetworkSpec {
        key: network::local_key(stack, DEFAULT),
        external: false,
        internal: false,
    }
}

/// A service's `networks:` (`None`: it lists none, so it is on `default`), checked
/// against the declared networks. In attachment order: highest `priority` first, then
/// as written.
pub(crate) fn attachments(
    n: Option<&Node>,
    declared: &BTreeMap<String, NetworkSpec>,
    stack: &str,
    sink: &mut Sink,
    path: &str,
) -> Vec<ServiceNetwork> {
    let key_of = |name: &str| {
        declared
            .get(name)
            .map(|d| d.key.clone())
            .unwrap_or_else(|| network::local_key(stack, name))
    };
    let Some(n) = n else {
        return vec![ServiceNetwork {
            name: DEFAULT.to_string(),
            key: key_of(DEFAULT),
            aliases: Vec::new(),
        }];
    };
    let mut out: Vec<(i64, ServiceNetwork)> = Vec::new();
    let check = |sink: &mut Sink, node: &Node, name: &str| {
        if name != DEFAULT && !declared.contains_key(name) {
            sink.error(
                node.pos,
                &format!("{path}.{name}"),
                format!(
                    "refers to undefined network {name}: declare it under the top-level networks:"
                ),
            );
        }
    };
    match &n.value {
        Value::Seq(items) => {
            for item in items {
                let Some(name) = text(item, sink, path) else {
                    continue;
                };
                check(sink, item, &name);
                if out.iter().all(|(_, a)| a.name != name) {
                    out.push((
                        0,
                        ServiceNetwork {
                            key: key_of(&name),
                            name,
                            aliases: Vec::new(),
                        },
                    ));
                }
            }
        }
        _ => {
            for (k, v) in entries(n, sink, path) {
                let p = format!("{path}.{}", k.name);
                check(sink, v, &k.name);
                let mut priority = 0;
                let mut aliases = Vec::new();
                for (vk, vv) in entries(v, sink, &p) {
                    let vp = format!("{p}.{}", vk.name);
                    match vk.name.as_str() {
                        "aliases" => {
                            for a in string_list(vv, sink, &vp) {
                                if !aliases.contains(&a) {
                                    aliases.push(a);
                                }
                            }
                        }
                        "priority" => priority = int(vv, sink, &vp).unwrap_or(0),
                        _ if vk.name.starts_with("x-") => {}
                        other => sink.warn(vv.pos, &vp, format!("ignored: `{other}`: shoal gives each replica its address from the network's subnet on its node")),
                    }
                }
                out.push((
                    priority,
                    ServiceNetwork {
                        name: k.name.clone(),
                        key: key_of(&k.name),
                        aliases,
                    },
                ));
            }
        }
    }
    out.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
    out.into_iter().map(|(_, a)| a).collect()
}
