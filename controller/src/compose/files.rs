//! Reading one Compose file into a checked tree: parse, interpolate, validate against
//! the schema, then resolve `include` and `extends` (which read further files).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::diag::Sink;
use super::interpolate::interpolate;
use super::merge::merge;
use super::schema;
use super::yaml::{self, Key, Node, ScalarKind, Value};

pub(crate) struct FileLoader<'a> {
    pub sink: &'a mut Sink,
    pub env: &'a BTreeMap<String, String>,
    /// Files being read, outermost first, to name include / extends cycles.
    pub stack: Vec<PathBuf>,
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

impl FileLoader<'_> {
    /// The file's tree, or `None` when it could not be read at all (errors recorded).
    pub fn load_file(&mut self, path: &Path) -> Option<Node> {
        let canon = canonical(path);
        if let Some(i) = self.stack.iter().position(|p| *p == canon) {
            let mut chain: Vec<String> = self.stack[i..]
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            chain.push(canon.display().to_string());
            self.sink.file_error(
                path,
                "include",
                format!("include cycle detected: {}", chain.join(" -> ")),
            );
            return None;
        }
        let src = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                self.sink
                    .file_error(path, "", format!("cannot read the Compose file: {e}"));
                return None;
            }
        };
        let id = self.sink.add_file(path.to_path_buf());
        let (docs, problems) = match yaml::parse(&src, id) {
            Ok(x) => x,
            Err(p) => {
                self.sink.error(p.pos, &p.key, p.message);
                return None;
            }
        };
        for p in problems {
            self.sink.error(p.pos, &p.key, p.message);
        }
        let docs: Vec<Node> = docs.into_iter().filter(|d| !d.is_null()).collect();
        if docs.is_empty() {
            self.sink.file_error(
                path,
                "",
                "the file is empty: a Compose file needs a services: section",
            );
            return None;
        }
        let mut tree: Option<Node> = None;
        for mut doc in docs {
            if doc.as_map().is_none() {
                self.sink.error(
                    doc.pos,
                    "",
                    format!(
                        "top-level object must be a mapping, not {}",
                        doc.type_name()
                    ),
                );
                continue;
            }
            self.interpolate_tree(&mut doc, "");
            for e in schema::validate(&doc) {
                self.sink.error(e.pos, &e.path, e.message);
            }
            tree = Some(match tree {
                None => doc,
                Some(t) => merge(t, doc, &[]),
            });
        }
        let mut tree = tree?;
        self.stack.push(canon);
        if let Some(inc) = take_key(&mut tree, "include") {
            if let Some(included) = self.includes(&inc, path) {
                tree = merge(included, tree, &[]);
            }
        }
        self.resolve_extends(&mut tree, path);
        self.stack.pop();
        Some(tree)
    }

    fn interpolate_tree(&mut self, n: &mut Node, path: &str) {
        match &mut n.value {
            Value::Scalar(s, ScalarKind::Str) => {
                if !s.contains('$') {
                    return;
                }
                let env = self.env;
                match interpolate(s, &|k| env.get(k).cloned()) {
                    Ok(out) => {
                        for var in out.unset {
                            self.sink.warn(
                                n.pos,
                                path,
                                format!("variable {var} is not set; using an empty string"),
                            );
                        }
                        *s = out.value;
                    }
                    Err(e) => self.sink.error(n.pos, path, e.to_string()),
                }
            }
            Value::Scalar(..) => {}
            Value::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.interpolate_tree(item, &format!("{path}[{i}]"));
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries.iter_mut() {
                    let p = if path.is_empty() {
                        k.name.clone()
                    } else {
                        format!("{path}.{}", k.name)
                    };
                    self.interpolate_tree(v, &p);
                }
            }
        }
    }

    fn includes(&mut self, inc: &Node, from: &Path) -> Option<Node> {
        let dir = from.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut paths = Vec::new();
        for item in inc.as_seq().into_iter().flatten() {
            match &item.value {
                Value::Map(_) => {
                    if let Some(p) = item.get("path") {
                        match &p.value {
                            Value::Seq(ps) => paths
                                .extend(ps.iter().filter_map(Node::as_scalar).map(str::to_string)),
                            _ => paths.extend(p.as_scalar().map(str::to_string)),
                        }
                    }
                    for extra in ["project_directory", "env_file"] {
                        if let Some(e) = item.get(extra) {
                            self.sink.warn(e.pos, &format!("include.{extra}"), "ignored: included files are read with the stack's own directory and environment");
                        }
                    }
                }
                _ => paths.extend(item.as_scalar().map(str::to_string)),
            }
        }
        let mut out: Option<Node> = None;
        for p in paths {
            if let Some(t) = self.load_file(&dir.join(&p)) {
                out = Some(match out {
                    None => t,
                    Some(o) => merge(o, t, &[]),
                });
            }
        }
        out
    }

    fn resolve_extends(&mut self, tree: &mut Node, file: &Path) {
        let Some(services) = tree.get("services").and_then(Node::as_map).cloned() else {
            return;
        };
        let names: Vec<String> = services.iter().map(|(k, _)| k.name.clone()).collect();
        let mut resolved: BTreeMap<String, Node> = BTreeMap::new();
        for name in &names {
            let mut visiting = Vec::new();
            self.resolve_one(name, &services, &mut resolved, &mut visiting, file);
        }
        if let Some(Value::Map(entries)) = tree_services_mut(tree) {
            for (k, v) in entries.iter_mut() {
                if let Some(r) = resolved.remove(&k.name) {
                    *v = r;
                }
            }
        }
    }

    fn resolve_one(
        &mut self,
        name: &str,
        services: &[(Key, Node)],
        resolved: &mut BTreeMap<String, Node>,
        visiting: &mut Vec<String>,
        file: &Path,
    ) -> Option<Node> {
        if let Some(r) = resolved.get(name) {
            return Some(r.clone());
        }
        let node = services
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(_, v)| v.clone())?;
        if visiting.iter().any(|v| v == name) {
            visiting.push(name.to_string());
            self.sink.error(
                node.pos,
                &format!("services.{name}.extends"),
                format!("extends cycle detected: {}", visiting.join(" -> ")),
            );
            return None;
        }
        let mut node = node;
        let Some(ext) = take_key(&mut node, "extends") else {
            resolved.insert(name.to_string(), node.clone());
            return Some(node);
        };
        let path = format!("services.{name}.extends");
        let (base_name, base_file) = match &ext.value {
            Value::Map(_) => (
                ext.get("service")
                    .and_then(Node::as_scalar)
                    .map(str::to_string),
                ext.get("file")
                    .and_then(Node::as_scalar)
                    .map(str::to_string),
            ),
            _ => (ext.as_scalar().map(str::to_string), None),
        };
        let Some(base_name) = base_name else {
            self.sink
                .error(ext.pos, &path, "extends needs the name of a service");
            return None;
        };
        visiting.push(name.to_string());
        let base = match base_file {
            Some(f) => {
                let dir = self
                    .sink
                    .file(ext.pos.file)
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                let other = dir.join(&f);
                let t = self.load_file(&other);
                let b = t
                    .as_ref()
                    .and_then(|t| t.get("services"))
                    .and_then(|s| s.get(&base_name))
                    .cloned();
                if t.is_some() && b.is_none() {
                    self.sink.error(
                        ext.pos,
                        &path,
                        format!(
                            "cannot extend service `{base_name}`: {} has no such service",
                            other.display()
                        ),
                    );
                }
                b
            }
            None => {
                let b = self.resolve_one(&base_name, services, resolved, visiting, file);
                if b.is_none() && !services.iter().any(|(k, _)| k.name == base_name) {
                    self.sink.error(
                        ext.pos,
                        &path,
                        format!(
                            "cannot extend service `{base_name}`: no such service in {}",
                            file.display()
                        ),
                    );
                }
                b
            }
        };
        visiting.pop();
        let merged = match base {
            Some(b) if b.as_map().is_some() => {
                merge(b, node, &["services".into(), name.to_string()])
            }
            _ => node,
        };
        resolved.insert(name.to_string(), merged.clone());
        Some(merged)
    }
}

fn tree_services_mut(tree: &mut Node) -> Option<&mut Value> {
    let Value::Map(entries) = &mut tree.value else {
        return None;
    };
    entries
        .iter_mut()
        .find(|(k, _)| k.name == "services")
        .map(|(_, v)| &mut v.value)
}

/// Remove `key` from a mapping node and return its value.
pub(crate) fn take_key(n: &mut Node, key: &str) -> Option<Node> {
    let Value::Map(entries) = &mut n.value else {
        return None;
    };
    let i = entries.iter().position(|(k, _)| k.name == key)?;
    Some(entries.remove(i).1)
}
