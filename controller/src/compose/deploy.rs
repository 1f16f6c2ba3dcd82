//! `deploy:`, `scale:`, `gpus:`, `x-shoal-gpu` and `depends_on` of a service
//! (`deploy.update_config` and `rollback_config` are in `update`).

use std::collections::BTreeMap;

use shoal_proto::spec::{
    Constraint, ConstraintField, Dependency, DependencyCondition, GpuRequest, Limits,
    RestartCondition, RestartPolicy, ServiceMode, ServiceSpec,
};

use super::diag::Sink;
use super::service::{duration, size};
use super::units::parse_nano_cpus;
use super::update;
use super::value::{boolean, entries, int, string_list, text, uint};
use super::yaml::{Node, Value};
use super::{Disposition, KeyReport};

/// Replicas as written (`deploy.replicas`, else `scale`, else 1), for warnings only.
pub(crate) fn replica_count(service: &Node) -> u64 {
    service
        .get("deploy")
        .and_then(|d| d.get("replicas"))
        .or_else(|| service.get("scale"))
        .and_then(Node::as_scalar)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

pub(crate) fn convert(
    service: &Node,
    sink: &mut Sink,
    base: &str,
    spec: &mut ServiceSpec,
    keys: &mut Vec<KeyReport>,
) {
    let service_name = spec.name.clone();
    let mut report = |key: &str, d: Disposition| {
        keys.push(KeyReport {
            service: service_name.clone(),
            key: key.to_string(),
            disposition: d,
        })
    };
    let scale = service
        .get("scale")
        .and_then(|s| uint(s, sink, &format!("{base}.scale")));
    if let Some(s) = scale {
        spec.replicas = s;
    }
    let dpath = format!("{base}.deploy");
    if let Some(deploy) = service.get("deploy") {
        for (k, v) in entries(deploy, sink, &dpath) {
            let p = format!("{dpath}.{}", k.name);
            let rkey = format!("deploy.{}", k.name);
            match k.name.as_str() {
                "mode" => {
                    spec.mode = match text(v, sink, &p).as_deref() {
                        Some("replicated") | None => ServiceMode::Replicated,
                        Some("global") => ServiceMode::Global,
                        Some("replicated-job") => ServiceMode::ReplicatedJob,
                        Some("global-job") => ServiceMode::GlobalJob,
                        Some(other) => {
                            sink.error(v.pos, &p, format!("unknown mode `{other}`: use replicated, global, replicated-job or global-job"));
                            ServiceMode::Replicated
                        }
                    };
                    report(&rkey, Disposition::Honored);
                }
                "replicas" => {
                    if let Some(r) = uint(v, sink, &p) {
                        if scale.is_some_and(|s| s != r) {
                            sink.error(
                                v.pos,
                                &p,
                                format!(
                                    "`scale` and `deploy.replicas` disagree ({} vs {r}); keep one",
                                    scale.unwrap_or_default()
                                ),
                            );
                        }
                        spec.replicas = r;
                    }
                    report(&rkey, Disposition::Honored);
                }
                "resources" => {
                    resources(v, sink, &p, spec);
                    report(&rkey, Disposition::Honored);
                }
                "placement" => {
                    placement(v, sink, &p, spec);
                    report(&rkey, Disposition::Honored);
                }
                "restart_policy" => {
                    spec.restart = restart_policy(v, sink, &p);
                    report(&rkey, Disposition::Honored);
                }
                "update_config" => {
                    spec.update = update::update_config(v, sink, &p);
                    report(&rkey, Disposition::Honored);
                }
                "rollback_config" => {
                    spec.rollback = update::rollback_config(v, sink, &p);
                    report(&rkey, Disposition::Honored);
                }
                "labels" => {
                    let why = "shoal has no service object to label; put labels under the service's labels:";
                    sink.warn(k.pos, &p, format!("ignored: {why}"));
                    report(&rkey, Disposition::Ignored(why.into()));
                }
                "endpoint_mode" => {
                    let why = "shoal routes published ports through its own ingress; service names resolve on the networks services share";
                    sink.warn(k.pos, &p, format!("ignored: {why}"));
                    report(&rkey, Disposition::Ignored(why.into()));
                }
                x if x.starts_with("x-") => {
                    report(&rkey, Disposition::Ignored("extension field".into()))
                }
                other => sink.error(k.pos, &p, format!("unknown deploy key `{other}`")),
            }
        }
    }
    if matches!(spec.mode, ServiceMode::Global | ServiceMode::GlobalJob)
        && (scale.is_some()
            || service
                .get("deploy")
                .and_then(|d| d.get("replicas"))
                .is_some())
    {
        sink.warn(
            service.pos,
            base,
            "replicas are ignored in global mode: one replica runs on every node",
        );
    }
    if let Some(g) = service.get("gpus") {
        gpus(g, sink, &format!("{base}.gpus"), &mut spec.gpus);
    }
    if let Some(x) = service.get("x-shoal-gpu") {
        shoal_gpu(x, sink, &format!("{base}.x-shoal-gpu"), &mut spec.gpus);
    }
}

fn cpus(v: &Node, sink: &mut Sink, p: &str) -> Option<i64> {
    let t = text(v, sink, p)?;
    match parse_nano_cpus(&t) {
        Ok(n) => Some(n),
        Err(e) => {
            sink.error(v.pos, p, e);
            None
        }
    }
}

fn limits(n: &Node, sink: &mut Sink, path: &str, into: &mut Limits, gpus: &mut Vec<GpuRequest>) {
    for (k, v) in entries(n, sink, path) {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "cpus" => into.nano_cpus = cpus(v, sink, &p),
            "memory" => into.memory_bytes = text(v, sink, &p).and_then(|t| size(&t, v, sink, &p)),
            "pids" => into.pids = int(v, sink, &p),
            "devices" => devices(v, sink, &p, gpus),
            "generic_resources" => sink.warn(
                k.pos,
                &p,
                "ignored: generic resources are not supported; GPUs go in devices",
            ),
            x if x.starts_with("x-") => {}
            other => sink.error(k.pos, &p, format!("unknown resource key `{other}`")),
        }
    }
}

fn resources(n: &Node, sink: &mut Sink, path: &str, spec: &mut ServiceSpec) {
    for (k, v) in entries(n, sink, path) {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "limits" => {
                let mut ignored = Vec::new();
                limits(v, sink, &p, &mut spec.resources.limits, &mut ignored);
                if !ignored.is_empty() {
                    sink.warn(v.pos, &p, "ignored: devices belong under reservations");
                }
            }
            "reservations" => limits(
                v,
                sink,
                &p,
                &mut spec.resources.reservations,
                &mut spec.gpus,
            ),
            _ => {}
        }
    }
}

fn devices(n: &Node, sink: &mut Sink, path: &str, gpus: &mut Vec<GpuRequest>) {
    let items = super::value::list(n, sink, path);
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        let Some(caps) = item.get("capabilities") else {
            sink.error(item.pos, &ipath, "missing property 'capabilities'");
            continue;
        };
        let caps = string_list(caps, sink, &format!("{ipath}.capabilities"));
        if let Some(req) = gpu_request(item, sink, &ipath, caps.clone()) {
            if caps.iter().any(|c| c == "gpu") {
                gpus.push(req);
            } else {
                sink.warn(
                    item.pos,
                    &ipath,
                    format!(
                        "ignored: only GPU device requests are supported (capabilities: {})",
                        caps.join(", ")
                    ),
                );
            }
        }
    }
}

/// `count`/`device_ids`/`driver` of a device request or a `gpus:` entry.
fn gpu_request(
    item: &Node,
    sink: &mut Sink,
    ipath: &str,
    capabilities: Vec<String>,
) -> Option<GpuRequest> {
    let mut req = GpuRequest {
        capabilities,
        ..Default::default()
    };
    let mut ok = true;
    for (k, v) in entries(item, sink, ipath) {
        let p = format!("{ipath}.{}", k.name);
        match k.name.as_str() {
            "count" => match text(v, sink, &p).as_deref() {
                Some("all") | Some("-1") => req.count = None,
                Some(t) => match t.parse::<u64>() {
                    Ok(c) => req.count = Some(c),
                    Err(_) => {
                        sink.error(v.pos, &p, format!("invalid value \"{t}\", the only value allowed is 'all' or a number"));
                        ok = false;
                    }
                },
                None => ok = false,
            },
            "device_ids" => req.device_ids = string_list(v, sink, &p),
            "driver" => req.driver = text(v, sink, &p),
            "capabilities" => {}
            "options" => sink.warn(
                k.pos,
                &p,
                "ignored: driver options are not passed to the GPU runtime",
            ),
            _ => {}
        }
    }
    let has_count = item.get("count").is_some();
    if has_count && item.get("device_ids").is_some() {
        sink.error(
            item.pos,
            ipath,
            "\"count\" and \"device_ids\" attributes are exclusive",
        );
        ok = false;
    }
    ok.then_some(req)
}

fn gpus(n: &Node, sink: &mut Sink, path: &str, out: &mut Vec<GpuRequest>) {
    match &n.value {
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let ipath = format!("{path}[{i}]");
                let mut caps = item
                    .get("capabilities")
                    .map(|c| string_list(c, sink, &format!("{ipath}.capabilities")))
                    .unwrap_or_default();
                if !caps.iter().any(|c| c == "gpu") {
                    caps.insert(0, "gpu".to_string());
                }
                if let Some(r) = gpu_request(item, sink, &ipath, caps) {
                    out.push(r);
                }
            }
        }
        _ => match text(n, sink, path).as_deref() {
            Some("all") => out.push(GpuRequest {
                capabilities: vec!["gpu".into()],
                ..Default::default()
            }),
            Some(other) => sink.error(
                n.pos,
                path,
                format!("invalid gpus value `{other}`: use all or a list of requests"),
            ),
            None => {}
        },
    }
}

fn shoal_gpu(n: &Node, sink: &mut Sink, path: &str, gpus: &mut [GpuRequest]) {
    let mut min_memory = None;
    let mut model = None;
    for (k, v) in entries(n, sink, path) {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "min_memory" => {
                min_memory = text(v, sink, &p)
                    .and_then(|t| size(&t, v, sink, &p))
                    .map(|b| b as u64)
            }
            "model" => model = text(v, sink, &p),
            other => sink.error(
                k.pos,
                &p,
                format!("unknown x-shoal-gpu key `{other}`: use min_memory or model"),
            ),
        }
    }
    if gpus.is_empty() {
        sink.warn(n.pos, path, "ignored: the service requests no GPU; add gpus: or deploy.resources.reservations.devices");
    }
    for g in gpus.iter_mut() {
        g.min_memory_bytes = min_memory;
        g.model = model.clone();
    }
}

fn restart_policy(n: &Node, sink: &mut Sink, path: &str) -> RestartPolicy {
    let mut p = RestartPolicy::default();
    for (k, v) in entries(n, sink, path) {
        let kp = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "condition" => match text(v, sink, &kp).as_deref() {
                Some("none") => p.condition = RestartCondition::None,
                Some("on-failure") => p.condition = RestartCondition::OnFailure,
                Some("any") => p.condition = RestartCondition::Any,
                Some(other) => sink.error(
                    v.pos,
                    &kp,
                    format!("unknown condition `{other}`: use none, on-failure or any"),
                ),
                None => {}
            },
            "delay" => {
                if let Some(d) = duration(v, sink, &kp) {
                    p.delay_ms = d;
                }
            }
            "max_attempts" => p.max_attempts = uint(v, sink, &kp),
            "window" => p.window_ms = duration(v, sink, &kp),
            _ => {}
        }
    }
    p
}

/// `node.hostname==x`, `node.id != y`, `node.labels.zone==eu`, `node.role==manager`.
pub fn parse_constraint(s: &str) -> Result<Constraint, String> {
    let (field, equal, value) = if let Some((f, v)) = s.split_once("==") {
        (f, true, v)
    } else if let Some((f, v)) = s.split_once("!=") {
        (f, false, v)
    } else {
        return Err(format!(
            "invalid constraint `{s}`: expected FIELD==VALUE or FIELD!=VALUE"
        ));
    };
    let (field, value) = (field.trim(), value.trim());
    let field = match field {
        "node.hostname" => ConstraintField::Hostname,
        "node.id" => ConstraintField::Id,
        // A manager runs a controller too; Swarm's words, so its files read unchanged.
        "node.role" => match value {
            "manager" | "worker" => ConstraintField::Role,
            _ => {
                return Err(format!(
                    "invalid constraint `{s}`: node.role is manager (the node also runs a controller) or worker"
                ))
            }
        },
        f => match f.strip_prefix("node.labels.") {
            Some(label) if !label.is_empty() => ConstraintField::Label(label.to_string()),
            _ => {
                return Err(format!(
                    "unsupported constraint `{s}`: shoal matches node.hostname, node.id, node.role and node.labels.KEY"
                ))
            }
        },
    };
    if value.is_empty() {
        return Err(format!("invalid constraint `{s}`: the value is empty"));
    }
    Ok(Constraint {
        field,
        equal,
        value: value.to_string(),
    })
}

fn placement(n: &Node, sink: &mut Sink, path: &str, spec: &mut ServiceSpec) {
    for (k, v) in entries(n, sink, path) {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "constraints" => {
                let items: Vec<&Node> = v
                    .as_seq()
                    .map(|s| s.iter().collect())
                    .unwrap_or_else(|| vec![v]);
                for (i, item) in items.into_iter().enumerate() {
                    let ip = format!("{p}[{i}]");
                    if let Some(t) = text(item, sink, &ip) {
                        match parse_constraint(&t) {
                            Ok(c) => spec.placement.constraints.push(c),
                            Err(e) => sink.error(item.pos, &ip, e),
                        }
                    }
                }
            }
            "preferences" => {
                for (i, item) in v.as_seq().into_iter().flatten().enumerate() {
                    let ip = format!("{p}[{i}]");
                    match item
                        .get("spread")
                        .and_then(|s| text(s, sink, &format!("{ip}.spread")))
                    {
                        Some(s) => match s.strip_prefix("node.labels.") {
                            Some(l) if !l.is_empty() => spec.placement.spread.push(l.to_string()),
                            _ => sink.error(
                                item.pos,
                                &ip,
                                format!(
                                    "unsupported spread `{s}`: shoal spreads over node.labels.KEY"
                                ),
                            ),
                        },
                        None => sink.error(
                            item.pos,
                            &ip,
                            "a preference must be `spread: node.labels.KEY`",
                        ),
                    }
                }
            }
            "max_replicas_per_node" => spec.placement.max_replicas_per_node = uint(v, sink, &p),
            _ => {}
        }
    }
}

pub(crate) fn depends_on(n: &Node, sink: &mut Sink, path: &str) -> BTreeMap<String, Dependency> {
    let mut out = BTreeMap::new();
    match &n.value {
        Value::Seq(_) => {
            for name in string_list(n, sink, path) {
                out.insert(name, Dependency::default());
            }
        }
        _ => {
            for (k, v) in entries(n, sink, path) {
                let p = format!("{path}.{}", k.name);
                let mut d = Dependency::default();
                if let Some(c) = v.get("condition") {
                    match text(c, sink, &format!("{p}.condition")).as_deref() {
                        Some("service_started") => {
                            d.condition = DependencyCondition::ServiceStarted
                        }
                        Some("service_healthy") => {
                            d.condition = DependencyCondition::ServiceHealthy
                        }
                        Some("service_completed_successfully") => {
                            d.condition = DependencyCondition::ServiceCompletedSuccessfully
                        }
                        Some(other) => sink.error(
                            c.pos,
                            &format!("{p}.condition"),
                            format!("unknown condition `{other}`"),
                        ),
                        None => {}
                    }
                }
                if let Some(r) = v.get("required") {
                    d.required = boolean(r, sink, &format!("{p}.required")).unwrap_or(true);
                }
                out.insert(k.name.clone(), d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints() {
        assert_eq!(
            parse_constraint("node.hostname==x"),
            Ok(Constraint {
                field: ConstraintField::Hostname,
                equal: true,
                value: "x".into()
            })
        );
        assert_eq!(
            parse_constraint("node.id != y"),
            Ok(Constraint {
                field: ConstraintField::Id,
                equal: false,
                value: "y".into()
            })
        );
        assert_eq!(
            parse_constraint("node.labels.zone==eu"),
            Ok(Constraint {
                field: ConstraintField::Label("zone".into()),
                equal: true,
                value: "eu".into()
            })
        );
        assert_eq!(
            parse_constraint("node.role==manager"),
            Ok(Constraint {
                field: ConstraintField::Role,
                equal: true,
                value: "manager".into()
            })
        );
        assert_eq!(
            parse_constraint("node.role != worker"),
            Ok(Constraint {
                field: ConstraintField::Role,
                equal: false,
                value: "worker".into()
            })
        );
        assert!(parse_constraint("node.role==leader")
            .unwrap_err()
            .contains("node.role is manager (the node also runs a controller) or worker"));
        assert!(parse_constraint("engine.labels.x==y")
            .unwrap_err()
            .contains("unsupported constraint `engine.labels.x==y`"));
        assert!(parse_constraint("node.hostname=x").is_err());
    }
}
