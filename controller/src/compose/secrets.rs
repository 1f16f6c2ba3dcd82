//! `secrets:` and `configs:`: the top-level definitions (where each one's contents come
//! from) and each service's use of them (which file in its containers). Both become
//! read-only files in the container; they differ in where (`/run/secrets/NAME`, or
//! `/NAME` for a config) and in the sources allowed (a config may be inline `content:`).
//!
//! Loading only records the sources, so `shoal config` works on a machine without the
//! files; [`contents`] reads them when the stack is deployed. The contents never enter
//! the [`StackSpec`](shoal_proto::spec::StackSpec): they travel beside it in
//! `DeployRequest.secrets`/`configs` and are sealed by the controller.

use std::collections::BTreeMap;
use std::path::PathBuf;

use shoal_proto::spec::SecretRef;

use super::diag::{Diagnostic, LoadError, Severity, Sink};
use super::service::Ctx;
use super::value::{entries, string_map, text};
use super::yaml::{Node, Value};

/// Docker's limit for one secret (Swarm refuses larger ones too); configs share it.
pub const MAX_SECRET_BYTES: usize = 500 * 1024;

/// Which of the two sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Secret,
    Config,
}

impl FileKind {
    fn section(self) -> &'static str {
        match self {
            FileKind::Secret => "secrets",
            FileKind::Config => "configs",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Config => "config",
        }
    }

    /// A target as the container sees it: secrets' bare names are under
    /// `/run/secrets/` (kept bare, see `SecretRef::path`), configs' at the root.
    fn target(self, t: &str) -> String {
        match self {
            FileKind::Config if !t.starts_with('/') => format!("/{t}"),
            _ => t.to_string(),
        }
    }
}

/// Where a top-level secret's contents come from, and where it was defined.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSource {
    pub kind: SourceKind,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// `secrets.NAME`.
    pub key: String,
}

#[derive(Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// `file:`, resolved against the directory of the Compose file that names it.
    File(PathBuf),
    /// `environment:`: the variable and its value in the loader's environment.
    Environment { var: String, value: Option<String> },
    /// `content:` (configs): the text itself, interpolated.
    Content(String),
    /// `external: true`: a secret kept outside the stack, by the cluster (`shoal secret
    /// create`), under this name (`name:`, `external.name` or the key).
    External(String),
    /// Neither `file:`, `environment:` nor `external:`.
    Missing,
}

// Hand-written so that a value read from the environment is never printed.
impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            SourceKind::File(p) => format!("file {}", p.display()),
            SourceKind::Environment { var, .. } => format!("environment {var}"),
            SourceKind::Content(c) => format!("{} bytes of content", c.len()),
            SourceKind::External(n) => format!("external {n}"),
            SourceKind::Missing => "no source".into(),
        };
        write!(f, "SecretSource({} at {}: {kind})", self.key, self.place())
    }
}

impl SecretSource {
    fn place(&self) -> String {
        format!("{}:{}:{}", self.file.display(), self.line, self.column)
    }

    fn error(&self, message: String) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            line: Some(self.line),
            column: Some(self.column),
            key: self.key.clone(),
            message,
            severity: Severity::Error,
        }
    }
}

/// The top-level `secrets:` or `configs:` section.
pub(crate) fn top_level(
    n: &Node,
    sink: &mut Sink,
    kind: FileKind,
) -> BTreeMap<String, SecretSource> {
    let mut out = BTreeMap::new();
    for (k, v) in entries(n, sink, kind.section()) {
        let path = format!("{}.{}", kind.section(), k.name);
        let dir = sink
            .file(k.pos.file)
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let mut source = SourceKind::Missing;
        let mut external_name = None;
        for (vk, vv) in entries(v, sink, &path) {
            let p = format!("{path}.{}", vk.name);
            match vk.name.as_str() {
                "file" => {
                    if let Some(f) = text(vv, sink, &p) {
                        source = SourceKind::File(resolve(&dir, &f));
                    }
                }
                "environment" => {
                    if let Some(var) = text(vv, sink, &p) {
                        source = SourceKind::Environment { var, value: None };
                    }
                }
                "content" => {
                    if let Some(c) = text(vv, sink, &p) {
                        source = SourceKind::Content(c);
                    }
                }
                "external" => {
                    let external = match &vv.value {
                        Value::Map(_) => {
                            if let Some(n) = vv.get("name") {
                                external_name = text(n, sink, &format!("{p}.name"));
                            }
                            true
                        }
                        _ => super::value::boolean(vv, sink, &p).unwrap_or(false),
                    };
                    if external {
                        source = SourceKind::External(String::new());
                    }
                }
                "name" => {
                    if let Some(n) = text(vv, sink, &p) {
                        external_name.get_or_insert(n);
                    }
                }
                "labels" => {
                    string_map(vv, sink, &p);
                }
                x if x.starts_with("x-") => {}
                other => sink.warn(
                    vk.pos,
                    &p,
                    format!(
                        "ignored: {} option `{other}` is not supported; the contents come from file: or environment:",
                        kind.noun()
                    ),
                ),
            }
        }
        if let SourceKind::External(n) = &mut source {
            *n = external_name.unwrap_or_else(|| k.name.clone());
        }
        out.insert(
            k.name.clone(),
            SecretSource {
                kind: source,
                file: sink.file(k.pos.file),
                line: k.pos.line,
                column: k.pos.col,
                key: path,
            },
        );
    }
    out
}

/// Fill in environment-sourced values from the loader's environment.
pub(crate) fn resolve_environment(
    sources: &mut BTreeMap<String, SecretSource>,
    env: &BTreeMap<String, String>,
) {
    for s in sources.values_mut() {
        if let SourceKind::Environment { var, value } = &mut s.kind {
            *value = env.get(var.as_str()).cloned();
        }
    }
}

fn resolve(dir: &std::path::Path, file: &str) -> PathBuf {
    let expanded = match file.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(rest))
            .unwrap_or_else(|| PathBuf::from(file)),
        None => PathBuf::from(file),
    };
    let joined = if expanded.is_absolute() {
        expanded
    } else {
        dir.join(expanded)
    };
    // `./x` is shown as `x` in messages.
    joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// A service's `secrets:` or `configs:` (short names or `{source, target, uid, gid,
/// mode}`).
pub(crate) fn service(n: &Node, ctx: &mut Ctx<'_>, path: &str, kind: FileKind) -> Vec<SecretRef> {
    let items = super::value::list(n, ctx.sink, path);
    let mut out: Vec<SecretRef> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(mut r) = one(item, ctx.sink, &p) else {
            continue;
        };
        r.target = kind.target(&r.target);
        let defined = match kind {
            FileKind::Secret => ctx.secrets,
            FileKind::Config => ctx.configs,
        };
        if let (FileKind::Secret, Some(SourceKind::External(n))) =
            (kind, defined.get(&r.source).map(|s| &s.kind))
        {
            r.external = Some(n.clone());
        }
        if !defined.contains_key(&r.source) {
            ctx.sink.error(
                item.pos,
                &p,
                format!(
                    "refers to undefined {} {}: declare it under the top-level {}: key",
                    kind.noun(),
                    r.source,
                    kind.section()
                ),
            );
            continue;
        }
        if out.iter().any(|o| o.path() == r.path()) {
            ctx.sink.error(
                item.pos,
                &p,
                format!("two {} are mounted at {}", kind.section(), r.path()),
            );
            continue;
        }
        if r.target.contains("..") || (!r.target.starts_with('/') && r.target.contains('/')) {
            ctx.sink.error(
                item.pos,
                &p,
                format!(
                    "target `{}` must be a file name or an absolute path without `..`",
                    r.target
                ),
            );
            continue;
        }
        out.push(r);
    }
    out
}

fn one(item: &Node, sink: &mut Sink, path: &str) -> Option<SecretRef> {
    if let Some(name) = item.as_scalar() {
        return Some(SecretRef {
            source: name.to_string(),
            target: name.to_string(),
            ..SecretRef::default()
        });
    }
    let mut r = SecretRef::default();
    for (k, v) in entries(item, sink, path) {
        let p = format!("{path}.{}", k.name);
        match k.name.as_str() {
            "source" => r.source = text(v, sink, &p)?,
            "target" => r.target = text(v, sink, &p)?,
            "uid" => r.uid = id(v, sink, &p),
            "gid" => r.gid = id(v, sink, &p),
            "mode" => r.mode = mode(v, sink, &p),
            x if x.starts_with("x-") => {}
            other => sink.warn(k.pos, &p, format!("ignored: `{other}` is not supported")),
        }
    }
    if r.source.is_empty() {
        sink.error(item.pos, path, "needs a source:");
        return None;
    }
    if r.target.is_empty() {
        r.target = r.source.clone();
    }
    Some(r)
}

fn id(n: &Node, sink: &mut Sink, path: &str) -> Option<u32> {
    let t = text(n, sink, path)?;
    match t.trim().parse::<u32>() {
        Ok(v) => Some(v),
        Err(_) => {
            sink.error(
                n.pos,
                path,
                format!("must be a numeric user or group id, not `{t}`"),
            );
            None
        }
    }
}

/// `0o440`, `0440` (octal, as YAML 1.1 and Compose read it) or a decimal number.
fn mode(n: &Node, sink: &mut Sink, path: &str) -> Option<u32> {
    let t = text(n, sink, path)?;
    let t = t.trim();
    let parsed = if let Some(oct) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        u32::from_str_radix(oct, 8).ok()
    } else if t.len() > 1 && t.starts_with('0') {
        u32::from_str_radix(&t[1..], 8).ok()
    } else {
        t.parse::<u32>().ok()
    };
    match parsed {
        Some(m) if m <= 0o7777 => Some(m),
        _ => {
            sink.error(
                n.pos,
                path,
                format!("must be a file mode such as 0440, not `{t}`"),
            );
            None
        }
    }
}

/// The contents of every secret the stack's services use, read now (at deploy): a file
/// that cannot be read, a variable that is not set, an external secret or one over
/// [`MAX_SECRET_BYTES`] is an error at the secret's definition.
pub fn contents(loaded: &super::Loaded) -> Result<BTreeMap<String, Vec<u8>>, LoadError> {
    read_all(
        &loaded.stack.secrets,
        &loaded.secret_sources,
        FileKind::Secret,
    )
}

/// [`contents`] for configs.
pub fn config_contents(loaded: &super::Loaded) -> Result<BTreeMap<String, Vec<u8>>, LoadError> {
    read_all(
        &loaded.stack.configs,
        &loaded.config_sources,
        FileKind::Config,
    )
}

fn read_all(
    names: &[String],
    sources: &BTreeMap<String, SecretSource>,
    kind: FileKind,
) -> Result<BTreeMap<String, Vec<u8>>, LoadError> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    let noun = kind.noun();
    for name in names {
        let Some(source) = sources.get(name) else {
            continue;
        };
        let read = match &source.kind {
            SourceKind::File(path) => std::fs::read(path)
                .map_err(|e| format!("cannot read the {noun}'s file {}: {e}", path.display())),
            SourceKind::Environment { var, value } => value
                .as_ref()
                .map(|v| v.as_bytes().to_vec())
                .ok_or_else(|| format!("the environment variable {var} is not set")),
            SourceKind::Content(c) => Ok(c.as_bytes().to_vec()),
            // The cluster has its contents (`shoal secret create`); the controller checks.
            SourceKind::External(_) if kind == FileKind::Secret => continue,
            SourceKind::External(_) => Err(
                "external configs are not supported: give it file:, environment: or content:"
                    .to_string(),
            ),
            SourceKind::Missing => Err(match kind {
                FileKind::Secret => "a secret needs file: or environment:".to_string(),
                FileKind::Config => "a config needs file:, environment: or content:".to_string(),
            }),
        };
        match read {
            Ok(bytes) if bytes.len() > MAX_SECRET_BYTES => errors.push(source.error(format!(
                "the {noun} is {} bytes; at most {MAX_SECRET_BYTES} are allowed",
                bytes.len()
            ))),
            Ok(bytes) => {
                out.insert(name.clone(), bytes);
            }
            Err(message) => errors.push(source.error(message)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(LoadError {
            diagnostics: errors,
        })
    }
}
