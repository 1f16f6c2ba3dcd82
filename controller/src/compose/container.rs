//! The service keys Compose passes straight to the engine's container create request
//! (`privileged`, `devices`, `shm_size`, `sysctls`, `network_mode`, `logging`, ...),
//! read into [`ContainerOptions`].
//!
//! Values are checked here as the engine would check them at create time, so a mistake
//! is an error with file:line before anything is deployed, not a failed task on a node.

use shoal_proto::container::{
    Blkio, ContainerOptions, DeviceMapping, DeviceRate, DeviceWeight, Logging, NetworkMode,
};

use super::diag::Sink;
use super::service::size;
use super::units::parse_duration_ms;
use super::value::{boolean, entries, int, list_or_dict, string_list, string_map, text};
use super::yaml::{Key, Node, Value};

/// The keys read here; each is honored.
pub(crate) const KEYS: &[&str] = &[
    "privileged",
    "devices",
    "device_cgroup_rules",
    "shm_size",
    "sysctls",
    "security_opt",
    "read_only",
    "ipc",
    "pid",
    "uts",
    "userns_mode",
    "cgroup",
    "cgroup_parent",
    "group_add",
    "dns",
    "dns_search",
    "dns_opt",
    "domainname",
    "mac_address",
    "logging",
    "runtime",
    "oom_score_adj",
    "oom_kill_disable",
    "mem_swappiness",
    "memswap_limit",
    "cpu_shares",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpuset",
    "blkio_config",
    "storage_opt",
    "annotations",
    "tty",
    "stdin_open",
    "platform",
    "network_mode",
];

/// Read every key of [`KEYS`] that `map` (a service) has into `out`.
pub(crate) fn convert(
    map: &[(Key, Node)],
    sink: &mut Sink,
    base: &str,
    out: &mut ContainerOptions,
) {
    for (k, v) in map {
        let path = format!("{base}.{}", k.name);
        let p = path.as_str();
        match k.name.as_str() {
            "privileged" => out.privileged = boolean(v, sink, p).unwrap_or(false),
            "devices" => out.devices = devices(v, sink, p),
            "device_cgroup_rules" => {
                out.device_cgroup_rules = string_list(v, sink, p);
                for (i, rule) in out.device_cgroup_rules.iter().enumerate() {
                    if !valid_cgroup_rule(rule) {
                        sink.error(v.pos, &format!("{p}[{i}]"), format!("invalid device cgroup rule `{rule}`: use TYPE MAJOR:MINOR PERMS, e.g. `c 188:* rwm`"));
                    }
                }
            }
            "shm_size" => out.shm_size = bytes(v, sink, p),
            "sysctls" => out.sysctls = string_map(v, sink, p),
            "security_opt" => out.security_opt = string_list(v, sink, p),
            "read_only" => out.read_only = boolean(v, sink, p).unwrap_or(false),
            "ipc" => out.ipc = mode(v, sink, p, &["private", "shareable", "host", "none"]),
            "pid" => out.pid = mode(v, sink, p, &["host"]),
            "uts" => out.uts = mode(v, sink, p, &["host"]),
            "userns_mode" => out.userns_mode = text(v, sink, p),
            "cgroup" => out.cgroup = mode(v, sink, p, &["host", "private"]),
            "cgroup_parent" => out.cgroup_parent = text(v, sink, p),
            "group_add" => out.group_add = string_list(v, sink, p),
            "dns" => out.dns = string_list(v, sink, p),
            "dns_search" => out.dns_search = string_list(v, sink, p),
            "dns_opt" => out.dns_opt = string_list(v, sink, p),
            "domainname" => out.domainname = text(v, sink, p),
            "mac_address" => {
                out.mac_address = text(v, sink, p);
                if let Some(mac) = out.mac_address.as_deref().filter(|m| !valid_mac(m)) {
                    sink.error(v.pos, p, format!("invalid MAC address `{mac}`: use six hex pairs, e.g. 02:42:ac:11:00:02"));
                }
            }
            "logging" => out.logging = logging(v, sink, p),
            "runtime" => out.runtime = text(v, sink, p),
            "oom_score_adj" => {
                out.oom_score_adj = int(v, sink, p);
                if out
                    .oom_score_adj
                    .is_some_and(|x| !(-1000..=1000).contains(&x))
                {
                    sink.error(v.pos, p, "must be between -1000 and 1000");
                }
            }
            "oom_kill_disable" => out.oom_kill_disable = boolean(v, sink, p),
            "mem_swappiness" => {
                out.mem_swappiness = int(v, sink, p);
                if out.mem_swappiness.is_some_and(|x| !(0..=100).contains(&x)) {
                    sink.error(v.pos, p, "must be between 0 and 100 (a percentage)");
                }
            }
            "memswap_limit" => out.memswap_limit = bytes(v, sink, p),
            "cpu_shares" => out.cpu.shares = int(v, sink, p),
            "cpu_period" => out.cpu.period = micros(v, sink, p),
            "cpu_quota" => out.cpu.quota = micros(v, sink, p),
            "cpu_rt_period" => out.cpu.rt_period = micros(v, sink, p),
            "cpu_rt_runtime" => out.cpu.rt_runtime = micros(v, sink, p),
            "cpuset" => out.cpu.cpuset = text(v, sink, p),
            "blkio_config" => out.blkio = blkio(v, sink, p),
            "storage_opt" => out.storage_opt = string_map(v, sink, p),
            "annotations" => out.annotations = string_map(v, sink, p),
            "tty" => out.tty = boolean(v, sink, p).unwrap_or(false),
            "stdin_open" => out.stdin_open = boolean(v, sink, p).unwrap_or(false),
            "platform" => {
                out.platform = text(v, sink, p);
                if let Some(pl) = out.platform.as_deref().filter(|pl| !valid_platform(pl)) {
                    sink.error(
                        v.pos,
                        p,
                        format!("invalid platform `{pl}`: use OS/ARCH[/VARIANT], e.g. linux/arm64"),
                    );
                }
            }
            "network_mode" => out.network_mode = network_mode(v, sink, p),
            _ => {}
        }
    }
}

/// A size in bytes (`2gb`, `512m`, or a number); `-1` stays -1 (unlimited).
fn bytes(n: &Node, sink: &mut Sink, path: &str) -> Option<i64> {
    let t = text(n, sink, path)?;
    if t.trim() == "-1" {
        return Some(-1);
    }
    size(&t, n, sink, path)
}

/// Microseconds: a number, or a duration (`400ms`), as Compose reads CPU periods.
fn micros(n: &Node, sink: &mut Sink, path: &str) -> Option<i64> {
    let t = text(n, sink, path)?;
    if let Ok(us) = t.trim().parse::<i64>() {
        return Some(us);
    }
    match parse_duration_ms(&t) {
        Ok(ms) => Some(i64::try_from(ms.saturating_mul(1000)).unwrap_or(i64::MAX)),
        Err(e) => {
            sink.error(
                n.pos,
                path,
                format!("must be microseconds or a duration: {e}"),
            );
            None
        }
    }
}

/// A namespace mode: one of `words`, `container:NAME` or `service:NAME`.
fn mode(n: &Node, sink: &mut Sink, path: &str, words: &[&str]) -> Option<String> {
    let t = text(n, sink, path)?;
    let shared = ["container:", "service:"]
        .iter()
        .any(|prefix| t.strip_prefix(prefix).is_some_and(|name| !name.is_empty()));
    if !words.contains(&t.as_str()) && !shared {
        sink.error(
            n.pos,
            path,
            format!(
                "invalid mode `{t}`: use {}, container:NAME or service:NAME",
                words.join(", ")
            ),
        );
        return None;
    }
    Some(t)
}

fn network_mode(n: &Node, sink: &mut Sink, path: &str) -> Option<NetworkMode> {
    let t = text(n, sink, path)?;
    let mode = match t.as_str() {
        "host" => NetworkMode::Host,
        "none" => NetworkMode::None,
        // Compose's default: the service's networks, as if the key were not there.
        "bridge" | "default" => return None,
        other => match other.split_once(':') {
            Some(("service", name)) if !name.is_empty() => NetworkMode::Service(name.into()),
            Some(("container", name)) if !name.is_empty() => NetworkMode::Container(name.into()),
            _ => {
                sink.error(n.pos, path, format!("invalid network_mode `{other}`: use host, none, bridge, service:NAME or container:NAME (the stack's networks are declared with networks:)"));
                return None;
            }
        },
    };
    Some(mode)
}

/// `devices:` entries: `HOST[:CONTAINER[:PERMS]]`, a CDI name, or `{source, target,
/// permissions}`.
fn devices(n: &Node, sink: &mut Sink, path: &str) -> Vec<DeviceMapping> {
    let items = super::value::list(n, sink, path);
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        let device = match &item.value {
            Value::Map(_) => {
                let field = |sink: &mut Sink, key: &str| {
                    item.get(key)
                        .and_then(|v| text(v, sink, &format!("{ipath}.{key}")))
                        .unwrap_or_default()
                };
                let source = field(sink, "source");
                if source.is_empty() {
                    sink.error(item.pos, &ipath, "missing required key `source`");
                    continue;
                }
                DeviceMapping {
                    source,
                    target: field(sink, "target"),
                    permissions: field(sink, "permissions"),
                }
            }
            _ => {
                let Some(t) = text(item, sink, &ipath) else {
                    continue;
                };
                match parse_device(&t) {
                    Ok(d) => d,
                    Err(e) => {
                        sink.error(item.pos, &ipath, e);
                        continue;
                    }
                }
            }
        };
        if !device.permissions.is_empty()
            && !device
                .permissions
                .chars()
                .all(|c| matches!(c, 'r' | 'w' | 'm'))
        {
            sink.error(
                item.pos,
                &ipath,
                format!(
                    "invalid device permissions `{}`: use some of r, w and m",
                    device.permissions
                ),
            );
            continue;
        }
        if device.is_path() && !device.target.is_empty() && !device.target.starts_with('/') {
            sink.error(
                item.pos,
                &ipath,
                format!(
                    "the device's path in the container must be absolute, not `{}`",
                    device.target
                ),
            );
            continue;
        }
        out.push(device);
    }
    out
}

/// The short syntax, as `docker run --device` reads it.
pub(crate) fn parse_device(s: &str) -> Result<DeviceMapping, String> {
    if !s.starts_with('/') {
        // A CDI name, `vendor.com/class=name`.
        return match s.split_once('=') {
            Some((kind, name)) if kind.contains('/') && !name.is_empty() => Ok(DeviceMapping {
                source: s.to_string(),
                ..Default::default()
            }),
            _ => Err(format!("invalid device `{s}`: use /dev/PATH[:CONTAINER_PATH[:PERMISSIONS]] or a CDI name (vendor.com/class=name)")),
        };
    }
    let parts: Vec<&str> = s.split(':').collect();
    let perms = |p: &str| !p.is_empty() && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    let (source, target, permissions) = match parts.as_slice() {
        [src] => (*src, "", ""),
        [src, p] if perms(p) => (*src, "", *p),
        [src, dst] => (*src, *dst, ""),
        [src, dst, p] => (*src, *dst, *p),
        _ => return Err(format!("invalid device `{s}`: too many `:`")),
    };
    Ok(DeviceMapping {
        source: source.to_string(),
        target: target.to_string(),
        permissions: permissions.to_string(),
    })
}

fn valid_cgroup_rule(rule: &str) -> bool {
    let parts: Vec<&str> = rule.split_whitespace().collect();
    let num = |x: &str| x == "*" || x.parse::<u32>().is_ok();
    match parts.as_slice() {
        ["a"] => true,
        [kind, majmin, perms] => {
            matches!(*kind, "a" | "b" | "c")
                && majmin
                    .split_once(':')
                    .is_some_and(|(maj, min)| num(maj) && num(min))
                && !perms.is_empty()
                && perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        }
        _ => false,
    }
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn valid_platform(p: &str) -> bool {
    let parts: Vec<&str> = p.split('/').collect();
    (2..=3).contains(&parts.len()) && parts.iter().all(|x| !x.is_empty())
}

fn logging(n: &Node, sink: &mut Sink, path: &str) -> Option<Logging> {
    let mut out = Logging::default();
    for (k, v) in entries(n, sink, path) {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "driver" => out.driver = text(v, sink, &p),
            "options" => {
                out.options = list_or_dict(v, sink, &p)
                    .into_iter()
                    .filter_map(|(k, v, _)| Some((k, v?)))
                    .collect()
            }
            _ => {}
        }
    }
    Some(out)
}

fn blkio(n: &Node, sink: &mut Sink, path: &str) -> Blkio {
    let mut out = Blkio::default();
    for (k, v) in entries(n, sink, path) {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "weight" => out.weight = weight(v, sink, &p),
            "weight_device" => {
                out.weight_device = device_list(v, sink, &p, "weight")
                    .into_iter()
                    .filter_map(|(path, n, p)| {
                        Some(DeviceWeight {
                            path,
                            weight: weight(n, sink, &p)?,
                        })
                    })
                    .collect()
            }
            "device_read_bps" => out.device_read_bps = rates(v, sink, &p, bytes),
            "device_write_bps" => out.device_write_bps = rates(v, sink, &p, bytes),
            "device_read_iops" => out.device_read_iops = rates(v, sink, &p, int),
            "device_write_iops" => out.device_write_iops = rates(v, sink, &p, int),
            _ => {}
        }
    }
    out
}

/// `[{path, rate}]` entries, each rate read by `read` (bytes or a count per second).
fn rates(
    n: &Node,
    sink: &mut Sink,
    path: &str,
    read: fn(&Node, &mut Sink, &str) -> Option<i64>,
) -> Vec<DeviceRate> {
    device_list(n, sink, path, "rate")
        .into_iter()
        .filter_map(|(path, n, p)| {
            let rate = read(n, sink, &p)?;
            Some(DeviceRate {
                path,
                rate: u64::try_from(rate).ok()?,
            })
        })
        .collect()
}

/// `[{path, FIELD}]` entries as (path, FIELD's node, FIELD's key path).
fn device_list<'a>(
    n: &'a Node,
    sink: &mut Sink,
    path: &str,
    field: &str,
) -> Vec<(String, &'a Node, String)> {
    let items = super::value::list(n, sink, path);
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        let dev = item
            .get("path")
            .and_then(|p| text(p, sink, &format!("{ipath}.path")));
        match (dev, item.get(field)) {
            (Some(dev), Some(v)) => out.push((dev, v, format!("{ipath}.{field}"))),
            _ => sink.error(item.pos, &ipath, format!("needs both path and {field}")),
        }
    }
    out
}

fn weight(n: &Node, sink: &mut Sink, path: &str) -> Option<u16> {
    let w = int(n, sink, path)?;
    match u16::try_from(w) {
        Ok(w) if w == 0 || (10..=1000).contains(&w) => Some(w),
        _ => {
            sink.error(
                n.pos,
                path,
                format!("a block IO weight is between 10 and 1000, not {w}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_short_syntax_reads_like_docker_run() {
        let d = |s: &str| parse_device(s).unwrap();
        assert_eq!(d("/dev/ttyUSB0").source, "/dev/ttyUSB0");
        assert_eq!(d("/dev/ttyUSB0").target, "");
        let full = d("/dev/ttyUSB0:/dev/ttyACM0:rw");
        assert_eq!(
            (
                full.source.as_str(),
                full.target.as_str(),
                full.permissions.as_str()
            ),
            ("/dev/ttyUSB0", "/dev/ttyACM0", "rw")
        );
        let perms_only = d("/dev/sda:r");
        assert_eq!(
            (perms_only.target.as_str(), perms_only.permissions.as_str()),
            ("", "r")
        );
        assert!(!d("nvidia.com/gpu=all").is_path());
        assert!(parse_device("ttyUSB0").is_err());
        assert!(parse_device("/a:/b:rw:x").is_err());
    }

    #[test]
    fn cgroup_rules_macs_and_platforms_are_checked() {
        assert!(valid_cgroup_rule("c 188:* rmw"));
        assert!(valid_cgroup_rule("b 8:0 r"));
        assert!(valid_cgroup_rule("a"));
        assert!(!valid_cgroup_rule("c 188 rmw"));
        assert!(!valid_cgroup_rule("x 1:2 r"));
        assert!(valid_mac("02:42:ac:11:00:02"));
        assert!(!valid_mac("02:42:ac:11:00"));
        assert!(valid_platform("linux/arm/v7"));
        assert!(!valid_platform("arm64"));
    }
}
