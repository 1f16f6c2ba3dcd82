//! The whole load: files in order, `.env`, project name, profiles, top-level sections,
//! each service, and the checks that span services (depends_on targets and cycles).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use shoal_proto::spec::{StackSpec, VolumeSpec};

use super::diag::{LoadError, Severity, Sink};
use super::dotenv;
use super::files::FileLoader;
use super::merge::{merge, strip_resets};
use super::networks;
use super::service::{self, Ctx};
use super::value::{boolean, entries, list_or_dict, opt_text, string_list, string_map, text};
use super::yaml::{Node, Pos, Value};
use super::{LoadOptions, Loaded};

const DEFAULT_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// Load and check a stack. Every error found is returned, not just the first.
pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let mut sink = Sink::default();
    let cwd = std::env::current_dir().unwrap_or_default();
    let files: Vec<PathBuf> = if opts.files.is_empty() {
        match DEFAULT_FILES
            .iter()
            .map(|f| cwd.join(f))
            .find(|p| p.is_file())
        {
            Some(p) => vec![p],
            None => {
                sink.file_error(
                    &cwd,
                    "",
                    format!(
                        "no Compose file found: looked for {} here; pass -c FILE",
                        DEFAULT_FILES.join(", ")
                    ),
                );
                return Err(finish_err(sink));
            }
        }
    } else {
        opts.files.iter().map(|f| cwd.join(f)).collect()
    };
    let project_dir = files[0]
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.clone());

    // The interpolation environment: `.env` beside the first file, under the process's.
    let mut env = BTreeMap::new();
    let dotenv_path = project_dir.join(".env");
    if dotenv_path.is_file() {
        match std::fs::read_to_string(&dotenv_path) {
            Ok(src) => match dotenv::parse(&src, &|k| opts.env.get(k).cloned()) {
                Ok(vars) => env.extend(vars),
                Err(e) => {
                    let id = sink.add_file(dotenv_path.clone());
                    sink.error(
                        Pos {
                            file: id,
                            line: e.line,
                            col: 1,
                        },
                        "",
                        e.message,
                    );
                }
            },
            Err(e) => sink.file_error(&dotenv_path, "", format!("cannot read: {e}")),
        }
    }
    env.extend(opts.env.clone());

    let mut tree: Option<Node> = None;
    {
        let mut loader = FileLoader {
            sink: &mut sink,
            env: &env,
            stack: Vec::new(),
        };
        for f in &files {
            if let Some(t) = loader.load_file(f) {
                tree = Some(match tree {
                    None => t,
                    Some(base) => merge(base, t, &[]),
                });
            }
        }
    }
    let Some(mut tree) = tree else {
        return Err(finish_err(sink));
    };
    strip_resets(&mut tree);
    // Go on after schema and interpolation errors: the meaning checks below find more,
    // and `Sink` keeps only the first error per place.

    let first = files[0].clone();
    let name = project_name(opts, &env, &tree, &project_dir, &mut sink, &first);
    let mut stack = StackSpec {
        name,
        ..Default::default()
    };
    let mut keys = Vec::new();

    top_level(&tree, &mut sink);
    if let Some(v) = tree.get("volumes") {
        stack.volumes = volumes(v, &mut sink);
    }
    let mut secret_sources = tree
        .get("secrets")
        .map(|v| super::secrets::top_level(v, &mut sink, super::secrets::FileKind::Secret))
        .unwrap_or_default();
    super::secrets::resolve_environment(&mut secret_sources, &env);
    let mut config_sources = tree
        .get("configs")
        .map(|v| super::secrets::top_level(v, &mut sink, super::secrets::FileKind::Config))
        .unwrap_or_default();
    super::secrets::resolve_environment(&mut config_sources, &env);
    let declared = match tree.get("networks") {
        Some(n) => networks::top_level(n, &stack.name, &mut sink),
        None => BTreeMap::new(),
    };

    let services: Vec<(String, Node)> = tree
        .get("services")
        .and_then(Node::as_map)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    // Service-level findings point at the service's name.
                    let mut v = v.clone();
                    v.pos = k.pos;
                    (k.name.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    if services.is_empty() {
        sink.file_error(
            &first,
            "services",
            "no services defined: add a services: section with at least one service",
        );
        return Err(finish_err(sink));
    }

    let mut active: BTreeSet<String> = opts.profiles.iter().cloned().collect();
    if active.is_empty() {
        if let Some(p) = env.get("COMPOSE_PROFILES") {
            active.extend(
                p.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
    }
    let mut enabled: BTreeMap<String, bool> = BTreeMap::new();
    for (name, node) in &services {
        let profiles = node
            .get("profiles")
            .map(|p| string_list(p, &mut sink, &format!("services.{name}.profiles")))
            .unwrap_or_default();
        let on = profiles.is_empty()
            || active.contains("*")
            || profiles.iter().any(|p| active.contains(p));
        enabled.insert(name.clone(), on);
    }
    if !enabled.values().any(|on| *on) {
        sink.file_error(
            &first,
            "services",
            "no service is enabled: every service has profiles; enable one with --profile",
        );
    }

    for (name, node) in &services {
        if !enabled[name] {
            continue;
        }
        let mut ctx = Ctx {
            sink: &mut sink,
            env: &env,
            volumes: &stack.volumes,
            secrets: &secret_sources,
            configs: &config_sources,
            stack: &stack.name,
            networks: &declared,
        };
        let (spec, mut k) = service::convert(name, node, &mut ctx);
        check_depends(name, node, &spec.depends_on, &enabled, &mut sink);
        keys.append(&mut k);
        for a in &spec.networks {
            let net = declared
                .get(&a.name)
                .cloned()
                .unwrap_or_else(|| networks::implicit_default(&stack.name));
            stack.networks.insert(a.name.clone(), net);
        }
        stack.services.insert(name.clone(), spec);
    }
    check_cycles(&stack, &services, &mut sink);
    if sink.has_errors() {
        return Err(finish_err(sink));
    }
    let used: BTreeSet<String> = stack
        .services
        .values()
        .flat_map(|s| s.secrets.iter().map(|r| r.source.clone()))
        .collect();
    stack.secrets = used.into_iter().collect();
    let used: BTreeSet<String> = stack
        .services
        .values()
        .flat_map(|s| s.configs.iter().map(|r| r.source.clone()))
        .collect();
    stack.configs = used.into_iter().collect();
    Ok(Loaded {
        stack,
        diagnostics: sink.diags,
        keys,
        secret_sources,
        config_sources,
    })
}

fn finish_err(sink: Sink) -> LoadError {
    let mut diagnostics: Vec<_> = sink
        .diags
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    diagnostics.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    LoadError { diagnostics }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// `--stack`, else `COMPOSE_PROJECT_NAME`, else `name:`, else the first file's directory
/// name lowercased with everything but `[a-z0-9_-]` removed (as Compose does).
fn project_name(
    opts: &LoadOptions,
    env: &BTreeMap<String, String>,
    tree: &Node,
    dir: &Path,
    sink: &mut Sink,
    first: &Path,
) -> String {
    let explicit = |sink: &mut Sink, n: String, pos: Option<Pos>, what: &str| -> String {
        if !valid_name(&n) {
            let msg = format!("invalid project name `{n}` ({what}): use lowercase letters, digits, `-` and `_`, starting with a letter or digit");
            match pos {
                Some(p) => sink.error(p, "name", msg),
                None => sink.file_error(first, "name", msg),
            }
        }
        n
    };
    if let Some(n) = &opts.project_name {
        return explicit(sink, n.clone(), None, "--stack");
    }
    if let Some(n) = env.get("COMPOSE_PROJECT_NAME").filter(|n| !n.is_empty()) {
        return explicit(sink, n.clone(), None, "COMPOSE_PROJECT_NAME");
    }
    if let Some(n) = tree.get("name") {
        if let Some(t) = opt_text(n, sink, "name") {
            return explicit(sink, t, Some(n.pos), "name:");
        }
    }
    let base = dir
        .file_name()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name: String = base
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_')
        .collect();
    let name = name.trim_start_matches(['-', '_']).to_string();
    if name.is_empty() {
        sink.file_error(
            first,
            "name",
            "project name must not be empty: add name: or pass --stack NAME",
        );
    }
    name
}

fn top_level(tree: &Node, sink: &mut Sink) {
    for (k, v) in tree.as_map().into_iter().flatten() {
        match k.name.as_str() {
            "version" => sink.warn(
                k.pos,
                "version",
                "`version` is obsolete and ignored; the Compose Specification has no versions",
            ),
            "networks" => external_name_conflicts(v, sink, "networks"),
            "secrets" => external_name_conflicts(v, sink, "secrets"),
            "configs" => external_name_conflicts(v, sink, "configs"),
            "models" => sink.warn(k.pos, "models", "ignored: models are not supported"),
            _ => {}
        }
    }
}

fn external_name_conflicts(section: &Node, sink: &mut Sink, what: &str) {
    for (k, v) in section.as_map().into_iter().flatten() {
        let ext_name = v.get("external").and_then(|e| e.get("name"));
        if ext_name.is_some() && v.get("name").is_some() {
            sink.error(
                k.pos,
                &format!("{what}.{}", k.name),
                "name and external.name conflict; only use name",
            );
        }
    }
}

fn volumes(n: &Node, sink: &mut Sink) -> BTreeMap<String, VolumeSpec> {
    external_name_conflicts(n, sink, "volumes");
    let mut out = BTreeMap::new();
    for (k, v) in entries(n, sink, "volumes") {
        let path = format!("volumes.{}", k.name);
        let mut spec = VolumeSpec::default();
        for (vk, vv) in entries(v, sink, &path) {
            let p = format!("{path}.{}", vk.name);
            match vk.name.as_str() {
                "external" => match &vv.value {
                    Value::Map(_) => {
                        spec.external = true;
                        if let Some(n) = vv
                            .get("name")
                            .and_then(|n| text(n, sink, &format!("{p}.name")))
                        {
                            sink.warn(vv.pos, &p, "external.name is deprecated: use name:");
                            spec.name = Some(n);
                        }
                    }
                    _ => spec.external = boolean(vv, sink, &p).unwrap_or(false),
                },
                "name" => spec.name = text(vv, sink, &p),
                "driver" => spec.driver = text(vv, sink, &p),
                "driver_opts" => {
                    spec.driver_opts = list_or_dict(vv, sink, &p)
                        .into_iter()
                        .map(|(k, v, _)| (k, v.unwrap_or_default()))
                        .collect()
                }
                "labels" => spec.labels = string_map(vv, sink, &p),
                "x-shoal-volume" => spec.policy = super::volume_policy::convert(vv, sink, &p),
                x if x.starts_with("x-") => {}
                other => sink.warn(
                    vk.pos,
                    &p,
                    format!("ignored: volume option `{other}` is not supported"),
                ),
            }
        }
        if spec.external {
            if v.get("x-shoal-volume").is_some() {
                sink.error(
                    k.pos,
                    &path,
                    "an external volume is not the cluster's to keep: drop x-shoal-volume",
                );
            }
            for conflicting in ["driver", "driver_opts", "labels"] {
                if v.get(conflicting).is_some() {
                    sink.error(
                        k.pos,
                        &path,
                        format!(
                            "conflicting parameters \"external\" and \"{conflicting}\" specified"
                        ),
                    );
                }
            }
        }
        out.insert(k.name.clone(), spec);
    }
    out
}

fn dep_pos(node: &Node, dep: &str) -> (Pos, bool) {
    let d = node.get("depends_on");
    let pos = match d.map(|d| &d.value) {
        Some(Value::Map(m)) => m.iter().find(|(k, _)| k.name == dep).map(|(k, _)| k.pos),
        Some(Value::Seq(s)) => s.iter().find(|x| x.as_scalar() == Some(dep)).map(|x| x.pos),
        _ => None,
    };
    (pos.or(d.map(|d| d.pos)).unwrap_or(node.pos), true)
}

fn check_depends(
    name: &str,
    node: &Node,
    deps: &BTreeMap<String, shoal_proto::spec::Dependency>,
    enabled: &BTreeMap<String, bool>,
    sink: &mut Sink,
) {
    for (dep, d) in deps {
        let (pos, _) = dep_pos(node, dep);
        let key = format!("services.{name}.depends_on.{dep}");
        match enabled.get(dep) {
            None if d.required => sink.error(pos, &key, format!("service {name} depends on undefined service `{dep}`")),
            None => sink.warn(pos, &key, format!("optional dependency `{dep}` is not defined; ignored")),
            Some(false) if d.required => sink.error(
                pos,
                &key,
                format!("service {name} depends on `{dep}`, which is disabled by its profiles; enable one with --profile"),
            ),
            Some(false) => sink.warn(pos, &key, format!("optional dependency `{dep}` is disabled by profiles; ignored")),
            Some(true) => {}
        }
    }
}

fn check_cycles(stack: &StackSpec, services: &[(String, Node)], sink: &mut Sink) {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut reported: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    for start in stack.services.keys() {
        let mut path: Vec<String> = Vec::new();
        visit(
            start,
            stack,
            &mut path,
            &mut done,
            &mut |cycle: &[String]| {
                let members: BTreeSet<String> = cycle.iter().cloned().collect();
                if !reported.insert(members) {
                    return;
                }
                let first = &cycle[0];
                let pos = services
                    .iter()
                    .find(|(n, _)| n == first)
                    .map(|(_, node)| dep_pos(node, &cycle[1]).0)
                    .unwrap_or_default();
                sink.error(
                    pos,
                    &format!("services.{first}.depends_on"),
                    format!("dependency cycle detected: {}", cycle.join(" -> ")),
                );
            },
        );
    }
}

fn visit(
    name: &str,
    stack: &StackSpec,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
    on_cycle: &mut dyn FnMut(&[String]),
) {
    if let Some(i) = path.iter().position(|p| p == name) {
        let mut cycle: Vec<String> = path[i..].to_vec();
        cycle.push(name.to_string());
        on_cycle(&cycle);
        return;
    }
    if done.contains(name) {
        return;
    }
    let Some(svc) = stack.services.get(name) else {
        return;
    };
    path.push(name.to_string());
    for dep in svc.depends_on.keys() {
        visit(dep, stack, path, done, on_cycle);
    }
    path.pop();
    done.insert(name.to_string());
}
