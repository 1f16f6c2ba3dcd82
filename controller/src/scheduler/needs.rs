//! What a service needs of the node itself, beside resources and constraints: the
//! device paths of `devices:`, the `platform:`, and a replica of each service it
//! shares a namespace with (`network_mode`/`ipc`/`pid: service:NAME`) on the same node.
//!
//! A service that asks none of these costs a few field checks per node, so the
//! scheduler's cost does not change for it.

use shoal_proto::container::{ContainerOptions, NetworkMode};
use shoal_proto::spec::ServiceSpec;

use super::Refusal;
use crate::state::Node;

/// The first thing of the node's own that `spec` needs and `node` lacks: its platform,
/// then each device path in the order written.
pub(super) fn node_lacks(node: &Node, spec: &ServiceSpec) -> Option<Refusal> {
    let c = &spec.container;
    if let Some(want) = &c.platform {
        if !platform_matches(&node.platform, want) {
            return Some(Refusal::Platform {
                want: want.clone(),
                have: node.platform.clone(),
            });
        }
    }
    if c.devices.is_empty() {
        return None;
    }
    // Agents report what is under /dev; a path elsewhere is the engine's to check.
    c.device_paths()
        .map(normal_path)
        .filter(|p| p.starts_with("/dev/"))
        .find(|p| !node.devices.contains(*p))
        .map(|p| Refusal::Device(p.to_string()))
}

/// `/dev/dri/` names the same path as `/dev/dri`.
fn normal_path(p: &str) -> &str {
    match p.trim_end_matches('/') {
        "" => "/",
        t => t,
    }
}

/// The first service `spec` must share a node with that has no replica meant to keep
/// running there, asked through `runs_here(STACK/NAME)`. `service` is the placed
/// service's own `STACK/NAME`: partners are of the same stack.
pub(super) fn missing_partner(
    service: &str,
    spec: &ServiceSpec,
    runs_here: impl Fn(&str) -> bool,
) -> Option<Refusal> {
    let c = &spec.container;
    if c.network_mode.is_none() && c.ipc.is_none() && c.pid.is_none() {
        return None;
    }
    let stack = service.split_once('/').map_or(service, |(s, _)| s);
    c.colocated_with().into_iter().find_map(|name| {
        let partner = format!("{stack}/{name}");
        (!runs_here(&partner)).then(|| Refusal::Colocated {
            why: shared_by(c, name),
            service: partner,
        })
    })
}

/// The Compose key that makes a replica share `name`'s namespace, as written.
fn shared_by(c: &ContainerOptions, name: &str) -> String {
    if matches!(&c.network_mode, Some(NetworkMode::Service(s)) if s == name) {
        return format!("network_mode: service:{name}");
    }
    let wanted = format!("service:{name}");
    if c.ipc.as_deref() == Some(wanted.as_str()) {
        format!("ipc: {wanted}")
    } else {
        format!("pid: {wanted}")
    }
}

/// Whether a node of platform `have` (as its agent reported it; empty: unknown) runs
/// images of platform `want` (a service's `platform:`). OS and architecture must be
/// the same, in Docker's words or the kernel's (`x86_64` is `amd64`); a variant
/// (`arm/v7`) counts only when both name one, and the default ones (`arm64/v8`,
/// `amd64/v1`) are no variant. A node of unknown platform matches nothing.
pub fn platform_matches(have: &str, want: &str) -> bool {
    if have.is_empty() {
        return false;
    }
    let (ho, ha, hv) = parts(have);
    let (wo, wa, wv) = parts(want);
    ho == wo && (wa.is_empty() || ha == wa) && (hv.is_empty() || wv.is_empty() || hv == wv)
}

/// (os, arch, variant), lower case, architecture and variant in Docker's words.
fn parts(platform: &str) -> (String, String, String) {
    let lower = platform.trim().to_ascii_lowercase();
    let mut it = lower.split('/');
    let os = it.next().unwrap_or_default().to_string();
    let arch = match it.next().unwrap_or_default() {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" => "arm",
        a => a,
    }
    .to_string();
    let variant = match (arch.as_str(), it.next().unwrap_or_default()) {
        ("arm64", "v8") | ("amd64", "v1") => "",
        (_, v) => v,
    }
    .to_string();
    (os, arch, variant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_match_by_os_arch_and_named_variants() {
        assert!(platform_matches("linux/amd64", "linux/amd64"));
        assert!(platform_matches("linux/amd64", "linux/x86_64"));
        assert!(platform_matches("linux/arm64", "linux/arm64/v8"));
        assert!(platform_matches("linux/arm64", "Linux/aarch64"));
        assert!(platform_matches("linux/arm/v7", "linux/arm"));
        assert!(platform_matches("linux/arm/v7", "linux/arm/v7"));
        assert!(platform_matches("linux/amd64", "linux"));
        assert!(!platform_matches("linux/arm/v6", "linux/arm/v7"));
        assert!(!platform_matches("linux/amd64", "linux/arm64"));
        assert!(!platform_matches("windows/amd64", "linux/amd64"));
        assert!(!platform_matches("", "linux/amd64"));
    }

    #[test]
    fn partners_are_named_with_the_key_that_asks_for_them() {
        let mut spec = ServiceSpec::default();
        assert_eq!(missing_partner("shop/app", &spec, |_| false), None);
        spec.container.ipc = Some("host".into());
        assert_eq!(missing_partner("shop/app", &spec, |_| false), None);
        spec.container.ipc = Some("service:db".into());
        spec.container.network_mode = Some(NetworkMode::Service("vpn".into()));
        assert_eq!(
            missing_partner("shop/app", &spec, |_| false),
            Some(Refusal::Colocated {
                service: "shop/db".into(),
                why: "ipc: service:db".into()
            })
        );
        assert_eq!(
            missing_partner("shop/app", &spec, |s| s == "shop/db"),
            Some(Refusal::Colocated {
                service: "shop/vpn".into(),
                why: "network_mode: service:vpn".into()
            })
        );
        assert_eq!(missing_partner("shop/app", &spec, |_| true), None);
    }
}
