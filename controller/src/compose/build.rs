//! `build:` and `pull_policy` of a service: how the deploying machine builds the image,
//! and when a node pulls it.
//!
//! The loader only describes the build; `shoal deploy` runs it on the deploying machine's
//! engine. So a context that is not on this machine (missing, or a URL / git context) is
//! a warning here, `shoal config` still prints the model, and [`BuildSpec::context_missing`]
//! lets `shoal deploy` refuse it before anything is built or sent.

use std::path::Path;

use shoal_proto::spec::{BuildSpec, PullPolicy};

use super::diag::Sink;
use super::mounts::host_path;
use super::service::{extra_hosts, size, Ctx};
use super::value::{boolean, entries, list_or_dict, string_list, string_map, text};
use super::yaml::{Key, Node, Value};
use super::{Disposition, KeyReport};

/// Why shoal accepts but does not use a `build:` sub-key.
fn ignored_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "ssh" => {
            "shoal's build forwards no SSH agent or keys; `RUN --mount=type=ssh` steps get none"
        }
        "secrets" => {
            "shoal's build passes no build secrets; `RUN --mount=type=secret` steps get none"
        }
        "cache_from" => {
            "the deploying engine's own build cache is used; external caches are not read"
        }
        "cache_to" => "the deploying engine's own build cache is used; no cache is exported",
        "additional_contexts" => {
            "only the main context is sent to the builder; stages that name another context fail"
        }
        "isolation" => "isolation modes are Windows-only; the engine's default is used",
        "privileged" => "build steps run unprivileged",
        "ulimits" => "build steps run with the engine's default ulimits",
        "entitlements" => "no extra entitlements are granted to the build",
        "no_cache_filter" => {
            "the cache is used for every stage; set no_cache: true to rebuild them all"
        }
        "provenance" | "sbom" => {
            "no attestations are made: the image goes to the cluster's store, not to a registry"
        }
        _ => return None,
    })
}

/// `build:` of `service` (its key and value) in its string form (the context) or long
/// form; `None` when it is wrong (the errors are in the sink).
pub(crate) fn convert(
    service: &str,
    key: &Key,
    node: &Node,
    ctx: &mut Ctx<'_>,
    keys: &mut Vec<KeyReport>,
) -> Option<BuildSpec> {
    let path = format!("services.{service}.build");
    let mut report = |key: &str, d: Disposition| {
        keys.push(KeyReport {
            service: service.to_string(),
            key: key.to_string(),
            disposition: d,
        })
    };
    report("build", Disposition::Honored);
    let at = format!("{}:{}", ctx.sink.file(key.pos.file).display(), key.pos.line);
    let mut spec = BuildSpec {
        at,
        ..Default::default()
    };
    // The context as written and the node it was written at (for its file and line).
    let (context, context_node) = match &node.value {
        Value::Map(_) => {
            long_form(node, ctx, &path, &mut spec, &mut report);
            match node.get("context") {
                Some(c) => (text(c, ctx.sink, &format!("{path}.context"))?, c),
                // Compose's default: the directory the file is in.
                None => (".".to_string(), node),
            }
        }
        Value::Scalar(..) if !node.is_null() => (text(node, ctx.sink, &path)?, node),
        _ => {
            ctx.sink.error(
                node.pos,
                &path,
                format!(
                    "must be a string (the build context) or a mapping, not {}",
                    node.type_name()
                ),
            );
            return None;
        }
    };
    let context_path = if node.as_map().is_some() {
        format!("{path}.context")
    } else {
        path.clone()
    };
    if context.is_empty() {
        ctx.sink.error(
            context_node.pos,
            &context_path,
            "the build context must not be empty: give a directory, e.g. `.`",
        );
        return None;
    }
    if is_remote(&context) {
        ctx.sink.warn(
            context_node.pos,
            &context_path,
            format!("build context {context} is a URL or git context: shoal deploy builds only from a directory on this machine and will refuse it"),
        );
        spec.context = context;
        spec.context_missing = true;
        return Some(spec);
    }
    spec.context = host_path(&context, context_node, ctx);
    let dir = Path::new(&spec.context);
    if !dir.is_dir() {
        let what = if dir.exists() {
            "is not a directory"
        } else {
            "is not there"
        };
        ctx.sink.warn(
            context_node.pos,
            &context_path,
            format!(
                "build context {context} ({}) {what}: shoal deploy builds on this machine and will refuse it",
                spec.context
            ),
        );
        spec.context_missing = true;
    } else if spec.dockerfile_inline.is_none() {
        check_dockerfile(node, ctx.sink, &path, &spec);
    }
    Some(spec)
}

/// The keys of the long form besides `context`, into `spec`.
fn long_form(
    node: &Node,
    ctx: &mut Ctx<'_>,
    path: &str,
    spec: &mut BuildSpec,
    report: &mut dyn FnMut(&str, Disposition),
) {
    for (k, v) in entries(node, ctx.sink, path) {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "context" => {}
            "dockerfile" => spec.dockerfile = text(v, ctx.sink, &p),
            "dockerfile_inline" => spec.dockerfile_inline = text(v, ctx.sink, &p),
            "args" => {
                for (name, value, _) in list_or_dict(v, ctx.sink, &p) {
                    // A value-less arg takes the environment's value, as Compose does,
                    // and is left out (the Dockerfile's default applies) when unset.
                    if let Some(value) = value.or_else(|| ctx.env.get(&name).cloned()) {
                        spec.args.insert(name, value);
                    }
                }
            }
            "target" => spec.target = text(v, ctx.sink, &p),
            "labels" => spec.labels = string_map(v, ctx.sink, &p),
            "network" => spec.network = text(v, ctx.sink, &p),
            "extra_hosts" => spec.extra_hosts = extra_hosts(v, ctx.sink, &p),
            "shm_size" => {
                spec.shm_size = text(v, ctx.sink, &p)
                    .and_then(|t| size(&t, v, ctx.sink, &p))
                    .and_then(|b| u64::try_from(b).ok())
            }
            "platforms" => {
                spec.platforms = string_list(v, ctx.sink, &p);
                if let [first, _, ..] = spec.platforms.as_slice() {
                    ctx.sink.warn(
                        v.pos,
                        &p,
                        format!("the deploying engine builds one image, for {first} (the first platform); the others are not built"),
                    );
                }
            }
            "tags" => spec.tags = string_list(v, ctx.sink, &p),
            "no_cache" => spec.no_cache = boolean(v, ctx.sink, &p).unwrap_or(false),
            "pull" => spec.pull = boolean(v, ctx.sink, &p).unwrap_or(false),
            x if x.starts_with("x-") => report(
                &format!("build.{x}"),
                Disposition::Ignored("extension field".into()),
            ),
            other => {
                let why = ignored_reason(other).map(str::to_string).unwrap_or_else(|| {
                    format!("`{other}` is not supported by shoal's build; the image is built without it")
                });
                ctx.sink.warn(k.pos, &p, format!("ignored: {why}"));
                report(&format!("build.{other}"), Disposition::Ignored(why));
            }
        }
    }
    if let (Some(_), Some(inline)) = (node.get("dockerfile"), node.get("dockerfile_inline")) {
        ctx.sink.error(
            inline.pos,
            &format!("{path}.dockerfile_inline"),
            "`dockerfile` and `dockerfile_inline` are both given: keep one (dockerfile is a file in the context, dockerfile_inline the Dockerfile's text)",
        );
    }
}

/// A Dockerfile missing from an existing context: the build would fail, so say so now.
/// The context itself is fine, so `context_missing` stays false and the builder gives
/// its own error if the build is tried.
fn check_dockerfile(node: &Node, sink: &mut Sink, path: &str, spec: &BuildSpec) {
    let context = Path::new(&spec.context);
    let (given, found) = match &spec.dockerfile {
        Some(f) => (f.clone(), context.join(f).is_file()),
        // The docker CLI also takes a lowercase `dockerfile` when `Dockerfile` is absent.
        None => (
            "Dockerfile".to_string(),
            context.join("Dockerfile").is_file() || context.join("dockerfile").is_file(),
        ),
    };
    if found {
        return;
    }
    let (pos, key) = match node.get("dockerfile") {
        Some(d) => (d.pos, format!("{path}.dockerfile")),
        None => (node.pos, path.to_string()),
    };
    sink.warn(
        pos,
        &key,
        format!(
            "Dockerfile {given} ({}) is not there: the build will fail",
            context.join(&given).display()
        ),
    );
}

/// A context the docker CLI would fetch rather than read from disk (its `urlutil` rules):
/// shoal builds only local directories.
fn is_remote(context: &str) -> bool {
    [
        "http://",
        "https://",
        "git://",
        "ssh://",
        "git@",
        "github.com/",
    ]
    .iter()
    .any(|p| context.starts_with(p))
        || context.ends_with(".git")
        || context.contains(".git#")
}

/// `pull_policy`, checked against the service having `build:`.
pub(crate) fn pull_policy(n: &Node, has_build: bool, sink: &mut Sink, path: &str) -> PullPolicy {
    let Some(t) = text(n, sink, path) else {
        return PullPolicy::default();
    };
    match t.as_str() {
        "always" => PullPolicy::Always,
        "missing" | "if_not_present" => PullPolicy::Missing,
        "never" => PullPolicy::Never,
        "build" => {
            if !has_build {
                sink.error(
                    n.pos,
                    path,
                    "pull_policy: build needs a build: section saying how to build the image",
                );
            }
            PullPolicy::Build
        }
        other if is_refresh(other) => {
            sink.warn(
                n.pos,
                path,
                format!("`{other}`: shoal does not refresh images on a schedule; treated as `missing` (pulled only when not there)"),
            );
            PullPolicy::Missing
        }
        other => {
            sink.error(
                n.pos,
                path,
                format!("unknown pull_policy `{other}`: use always, missing (or if_not_present), never or build"),
            );
            PullPolicy::default()
        }
    }
}

/// Compose's scheduled refreshes: `refresh`, `daily`, `weekly`, `every_<duration>` with
/// the duration as Compose's schema writes it (`([0-9]+[wdhms])+`, e.g. `every_1d12h`).
fn is_refresh(policy: &str) -> bool {
    if matches!(policy, "refresh" | "daily" | "weekly") {
        return true;
    }
    let Some(mut rest) = policy.strip_prefix("every_") else {
        return false;
    };
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[digits..].chars().next();
        if digits == 0 || !matches!(unit, Some('w' | 'd' | 'h' | 'm' | 's')) {
            return false;
        }
        rest = &rest[digits + 1..];
    }
    true
}
