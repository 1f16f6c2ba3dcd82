//! `volumes:` of a service: named, anonymous, bind (resolved against the Compose file's
//! directory) and tmpfs mounts, short and long syntax.

use std::path::{Path, PathBuf};

use shoal_proto::spec::{MountKind, MountSpec};

use super::service::Ctx;
use super::units::split_volume_short;
use super::value::{boolean, opt_text, text};
use super::yaml::Node;

fn is_path(src: &str) -> bool {
    src.starts_with('/') || src.starts_with('.') || src.starts_with('~')
}

/// A host path as Compose resolves it: `~` is `$HOME`, a relative path is relative to
/// the directory of the file that wrote it. Bind sources and build contexts use it.
pub(crate) fn host_path(src: &str, item: &Node, ctx: &Ctx<'_>) -> String {
    let p = if let Some(rest) = src.strip_prefix("~/").or((src == "~").then_some("")) {
        let home = ctx.env.get("HOME").cloned().unwrap_or_default();
        PathBuf::from(home).join(rest)
    } else {
        ctx.dir_of(item).join(src)
    };
    normalize(&p)
}

/// `a/./b/../c` → `a/c`, without touching the disk (the path is on the nodes).
fn normalize(p: &Path) -> String {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.display().to_string()
}

fn check_named(name: &str, item: &Node, ctx: &mut Ctx<'_>, path: &str) {
    if !ctx.volumes.contains_key(name) {
        ctx.sink.error(
            item.pos,
            path,
            format!("service uses the undeclared volume `{name}`: declare it under the top-level volumes: key"),
        );
    }
}

pub(crate) fn mounts(n: &Node, ctx: &mut Ctx<'_>, path: &str) -> Vec<MountSpec> {
    let items = super::value::list(n, ctx.sink, path);
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        if item.as_map().is_none() {
            let Some(t) = text(item, ctx.sink, &ipath) else {
                continue;
            };
            let (src, target, opts) = match split_volume_short(&t) {
                Ok(x) => x,
                Err(e) => {
                    ctx.sink.error(item.pos, &ipath, e);
                    continue;
                }
            };
            let read_only = opts.contains(&"ro");
            let m = match src {
                None => MountSpec {
                    kind: MountKind::Volume,
                    source: None,
                    target: target.into(),
                    read_only,
                    relative: false,
                },
                Some(s) if is_path(s) => MountSpec {
                    kind: MountKind::Bind,
                    source: Some(host_path(s, item, ctx)),
                    target: target.into(),
                    read_only,
                    relative: !s.starts_with('/'),
                },
                Some(s) => {
                    check_named(s, item, ctx, &ipath);
                    MountSpec {
                        kind: MountKind::Volume,
                        source: Some(s.into()),
                        target: target.into(),
                        read_only,
                        relative: false,
                    }
                }
            };
            out.push(m);
            continue;
        }
        let kind_text = item
            .get("type")
            .and_then(|t| text(t, ctx.sink, &format!("{ipath}.type")));
        let kind = match kind_text.as_deref() {
            Some("volume") => MountKind::Volume,
            Some("bind") => MountKind::Bind,
            Some("tmpfs") => MountKind::Tmpfs,
            Some(other) => {
                ctx.sink.error(
                    item.pos,
                    &format!("{ipath}.type"),
                    format!("mount type `{other}` is not supported: use volume, bind or tmpfs"),
                );
                continue;
            }
            None => {
                ctx.sink
                    .error(item.pos, &ipath, "missing required key `type`");
                continue;
            }
        };
        let Some(target) = item
            .get("target")
            .and_then(|t| text(t, ctx.sink, &format!("{ipath}.target")))
        else {
            ctx.sink
                .error(item.pos, &ipath, "missing required key `target`");
            continue;
        };
        let source = item
            .get("source")
            .and_then(|s| opt_text(s, ctx.sink, &format!("{ipath}.source")))
            .filter(|s| !s.is_empty());
        let read_only = item
            .get("read_only")
            .and_then(|r| boolean(r, ctx.sink, &format!("{ipath}.read_only")))
            .unwrap_or(false);
        for opt in ["bind", "volume", "tmpfs", "consistency", "image"] {
            if let Some(o) = item.get(opt) {
                ctx.sink.warn(
                    o.pos,
                    &format!("{ipath}.{opt}"),
                    "ignored: mount options are not supported yet",
                );
            }
        }
        let relative =
            kind == MountKind::Bind && source.as_deref().is_some_and(|s| !s.starts_with('/'));
        let source = match kind {
            MountKind::Bind => {
                match source {
                    Some(s) => Some(host_path(&s, item, ctx)),
                    None => {
                        ctx.sink.error(item.pos, &ipath, "invalid mount config for type \"bind\": field Source must not be empty");
                        continue;
                    }
                }
            }
            MountKind::Volume => {
                if let Some(s) = &source {
                    check_named(s, item, ctx, &ipath);
                }
                source
            }
            MountKind::Tmpfs => None,
        };
        out.push(MountSpec {
            kind,
            source,
            target,
            read_only,
            relative,
        });
    }
    out
}
