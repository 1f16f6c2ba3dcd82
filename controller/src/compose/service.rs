//! One Compose service to a [`ServiceSpec`], with a report of what happened to each key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shoal_proto::spec::{
    HealthcheckSpec, RestartCondition, RestartPolicy, ServiceSpec, Ulimit, VolumeSpec,
};

use super::deploy;
use super::diag::Sink;
use super::dotenv;
use super::mounts::mounts;
use super::ports::ports;
use super::units::{parse_bytes, parse_duration_ms, parse_nano_cpus};
use super::value::{
    boolean, entries, int, list_or_dict, opt_text, string_list, string_map, text, uint,
};
use super::yaml::{Node, Value};
use super::{Disposition, KeyReport};

/// What conversion needs besides the service's own node.
pub(crate) struct Ctx<'a> {
    pub sink: &'a mut Sink,
    /// Interpolation environment: the process environment over `.env`.
    pub env: &'a BTreeMap<String, String>,
    /// Top-level `volumes:`, to check named volumes against.
    pub volumes: &'a BTreeMap<String, VolumeSpec>,
    /// Top-level `secrets:`, to check the services' secrets against.
    pub secrets: &'a BTreeMap<String, super::secrets::SecretSource>,
    /// Top-level `configs:`, likewise.
    pub configs: &'a BTreeMap<String, super::secrets::SecretSource>,
    /// The stack's name, and its top-level `networks:` by Compose name.
    pub stack: &'a str,
    pub networks: &'a BTreeMap<String, shoal_proto::spec::NetworkSpec>,
}

impl Ctx<'_> {
    pub(crate) fn dir_of(&self, n: &Node) -> PathBuf {
        self.sink
            .file(n.pos.file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// Why shoal accepts but does not act on a service key.
fn ignored_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "expose" => "ports are reachable by every service sharing a network with it; expose only documents them",
        "links" => "services reach each other by name on the networks they share",
        "external_links" => "containers outside the stack are not linked; reach them by address",
        "develop" => "watch/develop mode is for local development, not for a cluster",
        "attach" => "replicas run detached; read their output with `shoal logs`",
        "cpu_count" | "cpu_percent" => "a Windows-only engine option; Linux engines ignore it (use cpus: or deploy.resources)",
        "isolation" | "credential_spec" => "a Windows-only engine option",
        "volumes_from" => "replicas of two services may run on different nodes; share data through a named volume instead",
        "profiles" => return None,
        _ => return None,
    })
}

const HONORED: &[&str] = &[
    "image",
    "build",
    "pull_policy",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "working_dir",
    "user",
    "hostname",
    "labels",
    "ports",
    "volumes",
    "healthcheck",
    "restart",
    "stop_grace_period",
    "stop_signal",
    "init",
    "cap_add",
    "cap_drop",
    "tmpfs",
    "ulimits",
    "extra_hosts",
    "deploy",
    "scale",
    "depends_on",
    "gpus",
    "networks",
    "profiles",
    "extends",
    "x-shoal-gpu",
    "x-shoal-disconnect",
    "x-shoal-autoscale",
    "mem_limit",
    "mem_reservation",
    "cpus",
    "pids_limit",
    "secrets",
    "configs",
];

fn honored(key: &str) -> bool {
    HONORED.contains(&key) || super::container::KEYS.contains(&key)
}

/// Convert one (merged, profile-selected) service.
pub(crate) fn convert(name: &str, node: &Node, ctx: &mut Ctx<'_>) -> (ServiceSpec, Vec<KeyReport>) {
    let base = format!("services.{name}");
    let mut spec = ServiceSpec {
        name: name.to_string(),
        replicas: 1,
        ..Default::default()
    };
    let mut keys: Vec<KeyReport> = Vec::new();
    let report = |keys: &mut Vec<KeyReport>, key: &str, d: Disposition| {
        keys.push(KeyReport {
            service: name.to_string(),
            key: key.to_string(),
            disposition: d,
        })
    };
    let Some(map) = node.as_map() else {
        ctx.sink.error(
            node.pos,
            &base,
            format!("must be a mapping, not {}", node.type_name()),
        );
        return (spec, keys);
    };
    let get = |k: &str| map.iter().find(|(key, _)| key.name == k).map(|(_, v)| v);

    for (k, _) in map {
        let key = k.name.as_str();
        let path = format!("{base}.{key}");
        if honored(key) {
            match key {
                "deploy" => {} // reported per sub-key by `deploy::convert`
                "build" => {}  // reported with its ignored sub-keys by `build::convert`
                "restart"
                    if get("deploy")
                        .and_then(|d| d.get("restart_policy"))
                        .is_some() =>
                {
                    let why = "deploy.restart_policy is given and takes precedence";
                    ctx.sink.warn(k.pos, &path, format!("ignored: {why}"));
                    report(&mut keys, key, Disposition::Ignored(why.into()));
                }
                "ports" if get("network_mode").and_then(|n| n.as_scalar()) == Some("host") => {
                    let why = "with network_mode: host the replica listens on the node's own ports directly";
                    ctx.sink.warn(k.pos, &path, format!("ignored: {why}"));
                    report(&mut keys, key, Disposition::Ignored(why.into()));
                }
                _ => report(&mut keys, key, Disposition::Honored),
            }
            continue;
        }
        if key.starts_with("x-") {
            report(
                &mut keys,
                key,
                Disposition::Ignored("extension field".into()),
            );
            continue;
        }
        match key {
            "container_name" => {
                let why = if deploy::replica_count(node) > 1 {
                    "a container name cannot be unique with more than one replica; shoal names containers STACK_SERVICE.SLOT"
                } else {
                    "shoal names containers STACK_SERVICE.SLOT so that replicas can move between nodes"
                };
                ctx.sink.warn(k.pos, &path, format!("ignored: {why}"));
                report(&mut keys, key, Disposition::Ignored(why.into()));
            }
            _ => {
                let why = ignored_reason(key).map(str::to_string).unwrap_or_else(|| {
                    format!("`{key}` is not supported by shoal yet; the container runs without it")
                });
                ctx.sink.warn(k.pos, &path, format!("ignored: {why}"));
                report(&mut keys, key, Disposition::Ignored(why));
            }
        }
    }

    if get("network_mode").is_some() && get("networks").is_some() {
        ctx.sink.error(
            node.pos,
            &base,
            format!("service {name} declares mutually exclusive `network_mode` and `networks`"),
        );
    }

    // With `build:`, `image:` names the built image; without it the CLI names it.
    match get("image") {
        Some(img) => spec.image = text(img, ctx.sink, &format!("{base}.image")).unwrap_or_default(),
        None if get("build").is_none() => ctx.sink.error(
            node.pos,
            &base,
            format!("service {name} has no image: add image: (the image to run) or build: (how to build it)"),
        ),
        None => {}
    }
    if let Some((k, b)) = map.iter().find(|(k, _)| k.name == "build") {
        spec.build = super::build::convert(name, k, b, ctx, &mut keys);
    }
    if let Some(p) = get("pull_policy") {
        let path = format!("{base}.pull_policy");
        spec.pull_policy = super::build::pull_policy(p, get("build").is_some(), ctx.sink, &path);
    }
    if let Some(c) = get("command") {
        spec.command = command(c, ctx.sink, &format!("{base}.command"));
    }
    if let Some(c) = get("entrypoint") {
        spec.entrypoint = command(c, ctx.sink, &format!("{base}.entrypoint"));
    }
    if let Some(f) = get("env_file") {
        env_files(f, ctx, &format!("{base}.env_file"), &mut spec.environment);
    }
    if let Some(e) = get("environment") {
        for (k, v, _) in list_or_dict(e, ctx.sink, &format!("{base}.environment")) {
            match v.or_else(|| ctx.env.get(&k).cloned()) {
                Some(v) => {
                    spec.environment.insert(k, v);
                }
                None => {
                    spec.environment.remove(&k);
                }
            }
        }
    }
    let opt = |ctx: &mut Ctx<'_>, k: &str| {
        get(k).and_then(|v| opt_text(v, ctx.sink, &format!("{base}.{k}")))
    };
    spec.working_dir = opt(ctx, "working_dir");
    spec.user = opt(ctx, "user");
    spec.hostname = opt(ctx, "hostname");
    spec.stop_signal = opt(ctx, "stop_signal");
    if let Some(l) = get("labels") {
        spec.labels = string_map(l, ctx.sink, &format!("{base}.labels"));
    }
    if let Some(p) = get("ports") {
        spec.ports = ports(p, ctx.sink, &format!("{base}.ports"));
    }
    if let Some(v) = get("volumes") {
        spec.volumes = mounts(v, ctx, &format!("{base}.volumes"));
    }
    if let Some(h) = get("healthcheck") {
        spec.healthcheck = healthcheck(h, ctx.sink, &format!("{base}.healthcheck"));
    }
    if let Some(r) = get("restart") {
        if let Some(p) = restart(r, ctx.sink, &format!("{base}.restart")) {
            spec.restart = p;
        }
    }
    if let Some(g) = get("stop_grace_period") {
        let path = format!("{base}.stop_grace_period");
        spec.stop_grace_period_ms = duration(g, ctx.sink, &path);
    }
    if let Some(i) = get("init") {
        spec.init = boolean(i, ctx.sink, &format!("{base}.init"));
    }
    if let Some(c) = get("cap_add") {
        spec.cap_add = string_list(c, ctx.sink, &format!("{base}.cap_add"));
    }
    if let Some(c) = get("cap_drop") {
        spec.cap_drop = string_list(c, ctx.sink, &format!("{base}.cap_drop"));
    }
    if let Some(t) = get("tmpfs") {
        spec.tmpfs = string_list(t, ctx.sink, &format!("{base}.tmpfs"));
    }
    if let Some(u) = get("ulimits") {
        spec.ulimits = ulimits(u, ctx.sink, &format!("{base}.ulimits"));
    }
    if let Some(h) = get("extra_hosts") {
        spec.extra_hosts = extra_hosts(h, ctx.sink, &format!("{base}.extra_hosts"));
    }
    if let Some(n) = get("secrets") {
        let path = format!("{base}.secrets");
        spec.secrets = super::secrets::service(n, ctx, &path, super::secrets::FileKind::Secret);
    }
    if let Some(n) = get("configs") {
        let path = format!("{base}.configs");
        spec.configs = super::secrets::service(n, ctx, &path, super::secrets::FileKind::Config);
    }
    spec.networks = super::networks::attachments(
        get("networks"),
        ctx.networks,
        ctx.stack,
        ctx.sink,
        &format!("{base}.networks"),
    );
    if let Some(d) = get("depends_on") {
        spec.depends_on = deploy::depends_on(d, ctx.sink, &format!("{base}.depends_on"));
    }
    if let Some(d) = get("x-shoal-disconnect") {
        let path = format!("{base}.x-shoal-disconnect");
        if let Some(policy) = super::disconnect::convert(d, ctx.sink, &path) {
            spec.disconnect = policy;
        }
    }
    super::container::convert(&map[..], ctx.sink, &base, &mut spec.container);
    namespace_checks(&map[..], &mut spec, ctx.sink, &base);
    legacy_resources(&map[..], ctx.sink, &base, &mut spec);
    deploy::convert(node, ctx.sink, &base, &mut spec, &mut keys);
    // After `deploy`: it checks the mode and the resources, and sets the replica count.
    if let Some((k, a)) = map.iter().find(|(k, _)| k.name == "x-shoal-autoscale") {
        super::autoscale::apply(k, a, node, ctx.sink, &base, &mut spec);
    }
    (spec, keys)
}

/// What sharing another container's namespaces implies: Docker refuses a network of its
/// own (ports, hostname, DNS, hosts entries, MAC) beside `network_mode: container:` or
/// `service:`, and Compose starts the service named after the one it names.
fn namespace_checks(
    map: &[(super::yaml::Key, Node)],
    spec: &mut ServiceSpec,
    sink: &mut Sink,
    base: &str,
) {
    use shoal_proto::container::NetworkMode;
    let shared = matches!(
        spec.container.network_mode,
        Some(NetworkMode::Service(_) | NetworkMode::Container(_))
    );
    if shared {
        for (k, _) in map {
            if matches!(
                k.name.as_str(),
                "ports"
                    | "hostname"
                    | "domainname"
                    | "dns"
                    | "dns_search"
                    | "dns_opt"
                    | "extra_hosts"
                    | "mac_address"
            ) {
                sink.error(
                    k.pos,
                    &format!("{base}.{}", k.name),
                    format!("conflicts with network_mode: the container shares another container's network, which sets its {}", k.name),
                );
            }
        }
    }
    if spec.container.network_mode.is_some() {
        // Not on the stack's networks at all (not even its default one).
        spec.networks.clear();
    }
    if spec.container.network_mode == Some(NetworkMode::Host) {
        // Reported ignored with the other keys.
        spec.ports.clear();
        if let Some((k, _)) = map.iter().find(|(k, _)| k.name == "mac_address") {
            sink.error(
                k.pos,
                &format!("{base}.mac_address"),
                "conflicts with network_mode: host: the replica uses the node's own interfaces",
            );
        }
    }
    let names: Vec<String> = spec
        .container
        .colocated_with()
        .into_iter()
        .map(str::to_string)
        .collect();
    for name in names {
        if name == spec.name {
            let pos = map
                .iter()
                .find(|(k, _)| matches!(k.name.as_str(), "network_mode" | "ipc" | "pid"))
                .map(|(k, _)| k.pos)
                .unwrap_or_default();
            sink.error(
                pos,
                base,
                format!("service {name} cannot share its own namespaces (service:{name})"),
            );
            continue;
        }
        spec.depends_on.entry(name).or_default();
    }
}

fn legacy_resources(
    map: &[(super::yaml::Key, Node)],
    sink: &mut Sink,
    base: &str,
    spec: &mut ServiceSpec,
) {
    for (k, v) in map {
        let path = format!("{base}.{}", k.name);
        match k.name.as_str() {
            "mem_limit" => {
                spec.resources.limits.memory_bytes =
                    text(v, sink, &path).and_then(|t| size(&t, v, sink, &path))
            }
            "mem_reservation" => {
                spec.resources.reservations.memory_bytes =
                    text(v, sink, &path).and_then(|t| size(&t, v, sink, &path))
            }
            "cpus" => {
                spec.resources.limits.nano_cpus =
                    text(v, sink, &path).and_then(|t| match parse_nano_cpus(&t) {
                        Ok(n) => Some(n),
                        Err(e) => {
                            sink.error(v.pos, &path, e);
                            None
                        }
                    })
            }
            "pids_limit" => spec.resources.limits.pids = int(v, sink, &path),
            _ => {}
        }
    }
}

pub(crate) fn size(t: &str, n: &Node, sink: &mut Sink, path: &str) -> Option<i64> {
    match parse_bytes(t) {
        Ok(b) => Some(b),
        Err(e) => {
            sink.error(n.pos, path, e);
            None
        }
    }
}

pub(crate) fn duration(n: &Node, sink: &mut Sink, path: &str) -> Option<u64> {
    let t = text(n, sink, path)?;
    match parse_duration_ms(&t) {
        Ok(ms) => Some(ms),
        Err(e) => {
            sink.error(n.pos, path, e);
            None
        }
    }
}

fn command(n: &Node, sink: &mut Sink, path: &str) -> Option<Vec<String>> {
    match &n.value {
        Value::Seq(_) => Some(string_list(n, sink, path)),
        _ if n.is_null() => None,
        _ => {
            let t = text(n, sink, path)?;
            match shell_words::split(&t) {
                Ok(words) => Some(words),
                Err(e) => {
                    sink.error(
                        n.pos,
                        path,
                        format!("cannot split `{t}` like a shell would: {e}"),
                    );
                    None
                }
            }
        }
    }
}

fn env_files(n: &Node, ctx: &mut Ctx<'_>, path: &str, env: &mut BTreeMap<String, String>) {
    let items: Vec<&Node> = match &n.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![n],
    };
    for (i, item) in items.into_iter().enumerate() {
        let ipath = if n.as_seq().is_some() {
            format!("{path}[{i}]")
        } else {
            path.to_string()
        };
        let (file, required) = match &item.value {
            Value::Map(_) => {
                let Some(p) = item.get("path") else {
                    ctx.sink
                        .error(item.pos, &ipath, "missing required key `path`");
                    continue;
                };
                let required = item
                    .get("required")
                    .and_then(|r| boolean(r, ctx.sink, &format!("{ipath}.required")))
                    .unwrap_or(true);
                (text(p, ctx.sink, &format!("{ipath}.path")), required)
            }
            _ => (text(item, ctx.sink, &ipath), true),
        };
        let Some(file) = file else { continue };
        let full = ctx.dir_of(item).join(&file);
        match std::fs::read_to_string(&full) {
            Ok(src) => {
                let look = |k: &str| ctx.env.get(k).cloned();
                match dotenv::parse(&src, &look) {
                    Ok(vars) => env.extend(vars),
                    Err(e) => ctx.sink.error(
                        item.pos,
                        &ipath,
                        format!("env_file {}:{}: {}", full.display(), e.line, e.message),
                    ),
                }
            }
            Err(e) if required => ctx.sink.error(
                item.pos,
                &ipath,
                format!("env_file {} cannot be read: {e}", full.display()),
            ),
            Err(_) => ctx.sink.warn(
                item.pos,
                &ipath,
                format!("optional env_file {} not found; skipped", full.display()),
            ),
        }
    }
}

fn healthcheck(n: &Node, sink: &mut Sink, path: &str) -> Option<HealthcheckSpec> {
    let mut h = HealthcheckSpec::default();
    for (k, v) in entries(n, sink, path) {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "test" => {
                h.test = match &v.value {
                    Value::Seq(_) => string_list(v, sink, &p),
                    _ => match text(v, sink, &p) {
                        Some(t) if t.is_empty() => Vec::new(),
                        Some(t) => vec!["CMD-SHELL".to_string(), t],
                        None => Vec::new(),
                    },
                };
                if let Some(first) = h.test.first() {
                    if !matches!(first.as_str(), "CMD" | "CMD-SHELL" | "NONE") {
                        sink.error(v.pos, &p, format!("a healthcheck test list starts with CMD, CMD-SHELL or NONE, not `{first}`"));
                    }
                }
            }
            "interval" => h.interval_ms = duration(v, sink, &p),
            "timeout" => h.timeout_ms = duration(v, sink, &p),
            "start_period" => h.start_period_ms = duration(v, sink, &p),
            "start_interval" => h.start_interval_ms = duration(v, sink, &p),
            "retries" => h.retries = uint(v, sink, &p),
            "disable" => h.disable = boolean(v, sink, &p).unwrap_or(false),
            other if other.starts_with("x-") => {}
            other => sink.error(k.pos, &p, format!("unknown healthcheck key `{other}`")),
        }
    }
    if h.test.first().map(String::as_str) == Some("NONE") {
        h.disable = true;
    }
    if h.disable {
        h.test = vec!["NONE".to_string()];
    }
    Some(h)
}

fn restart(n: &Node, sink: &mut Sink, path: &str) -> Option<RestartPolicy> {
    let t = text(n, sink, path)?;
    let mut p = RestartPolicy::default();
    match t.as_str() {
        "no" | "none" => p.condition = RestartCondition::None,
        "always" | "unless-stopped" => p.condition = RestartCondition::Any,
        "on-failure" => p.condition = RestartCondition::OnFailure,
        other => match other.strip_prefix("on-failure:").map(str::parse::<u64>) {
            Some(Ok(n)) => {
                p.condition = RestartCondition::OnFailure;
                p.max_attempts = Some(n);
            }
            _ => {
                sink.error(n.pos, path, format!("invalid restart policy `{other}`: use no, always, on-failure[:N] or unless-stopped"));
                return None;
            }
        },
    }
    Some(p)
}

fn ulimits(n: &Node, sink: &mut Sink, path: &str) -> BTreeMap<String, Ulimit> {
    let mut out = BTreeMap::new();
    for (k, v) in entries(n, sink, path) {
        let p = format!("{path}.{}", k.name);
        let limit = if v.as_map().is_some() {
            let soft = v
                .get("soft")
                .and_then(|s| int(s, sink, &format!("{p}.soft")));
            let hard = v
                .get("hard")
                .and_then(|s| int(s, sink, &format!("{p}.hard")));
            match (soft, hard) {
                (Some(soft), Some(hard)) => Some(Ulimit { soft, hard }),
                _ => {
                    sink.error(v.pos, &p, "needs both soft and hard");
                    None
                }
            }
        } else {
            int(v, sink, &p).map(|x| Ulimit { soft: x, hard: x })
        };
        if let Some(l) = limit {
            out.insert(k.name.clone(), l);
        }
    }
    out
}

pub(crate) fn extra_hosts(n: &Node, sink: &mut Sink, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    match &n.value {
        Value::Map(m) => {
            for (k, v) in m {
                for ip in string_list(v, sink, &format!("{path}.{}", k.name)) {
                    out.push(format!(
                        "{}:{}",
                        k.name,
                        ip.trim_start_matches('[').trim_end_matches(']')
                    ));
                }
            }
        }
        _ => {
            for (i, entry) in string_list(n, sink, path).into_iter().enumerate() {
                match entry.split_once(['=', ':']) {
                    Some((h, ip)) => out.push(format!(
                        "{h}:{}",
                        ip.trim_start_matches('[').trim_end_matches(']')
                    )),
                    None => sink.error(
                        n.pos,
                        &format!("{path}[{i}]"),
                        format!("invalid extra host `{entry}`: use HOST:IP or HOST=IP"),
                    ),
                }
            }
        }
    }
    out
}
