//! Validation of a Compose tree against the Compose Specification's JSON schema
//! (compose-go's copy, embedded), with positions and key suggestions.
//!
//! Only the keywords that schema uses are implemented: `$ref`, `type`, `enum`,
//! `properties`, `patternProperties`, `additionalProperties`, `required`, `items`,
//! `oneOf`/`anyOf`, `minimum`/`maximum`. Runs after interpolation, on each file alone.

use std::sync::OnceLock;

use serde_json::Value as Json;

use super::yaml::{Node, Pos, ScalarKind, Value};

const SCHEMA_TEXT: &str = include_str!("compose-spec.json");

fn schema() -> &'static Json {
    static SCHEMA: OnceLock<Json> = OnceLock::new();
    // The schema is part of the binary and tested; failing to parse it is a build bug.
    SCHEMA.get_or_init(|| serde_json::from_str(SCHEMA_TEXT).expect("embedded compose schema"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub pos: Pos,
    pub path: String,
    pub message: String,
}

/// Validate a whole Compose document.
pub fn validate(doc: &Node) -> Vec<SchemaError> {
    let mut errs = Vec::new();
    let root = schema();
    check(doc, root, root, "", &mut errs);
    errs
}

/// The keys the schema allows in a service, for `shoal config`'s table and suggestions.
pub fn service_keys() -> Vec<String> {
    let root = schema();
    root.pointer("/$defs/service/properties")
        .and_then(Json::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn resolve<'a>(s: &'a Json, root: &'a Json) -> &'a Json {
    match s.get("$ref").and_then(Json::as_str) {
        Some(r) => match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
            Some(t) => resolve(t, root),
            None => s,
        },
        None => s,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind_matches(node: &Node, ty: &str) -> bool {
    matches!(
        (&node.value, ty),
        (Value::Map(_), "object")
            | (Value::Seq(_), "array")
            | (Value::Scalar(_, ScalarKind::Str), "string")
            | (Value::Scalar(_, ScalarKind::Int), "integer" | "number")
            | (Value::Scalar(_, ScalarKind::Float), "number")
            | (Value::Scalar(_, ScalarKind::Bool), "boolean")
            | (Value::Scalar(_, ScalarKind::Null), "null")
    )
}

fn type_word(ty: &str) -> &str {
    match ty {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "null" => "null",
        other => other,
    }
}

fn types_of(s: &Json) -> Option<Vec<&str>> {
    match s.get("type")? {
        Json::String(t) => Some(vec![t.as_str()]),
        Json::Array(ts) => Some(ts.iter().filter_map(Json::as_str).collect()),
        _ => None,
    }
}

/// The types a (sub)schema accepts at its top, `None` for "any".
fn accepted(s: &Json, root: &Json) -> Option<Vec<String>> {
    let s = resolve(s, root);
    if let Some(t) = types_of(s) {
        return Some(t.into_iter().map(str::to_string).collect());
    }
    let branches = s.get("oneOf").or_else(|| s.get("anyOf"))?.as_array()?;
    let mut all = Vec::new();
    for b in branches {
        all.extend(accepted(b, root)?);
    }
    Some(all)
}

fn words(types: &[String]) -> String {
    let mut w: Vec<&str> = Vec::new();
    for t in types {
        let word = type_word(t);
        if !w.contains(&word) {
            w.push(word);
        }
    }
    match w.len() {
        0 => String::new(),
        1 => w[0].to_string(),
        n => format!("{} or {}", w[..n - 1].join(", "), w[n - 1]),
    }
}

fn pattern_matches(pat: &str, key: &str) -> bool {
    match pat {
        "^x-" => key.starts_with("x-"),
        "^.+$" | ".+" => !key.is_empty(),
        "^[a-zA-Z0-9._-]+$" => {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        }
        "^[a-z]+$" => !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase()),
        _ => true,
    }
}

/// The closest of `candidates` to `key`, when it is near (edit distance 2 or less).
pub fn suggest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::levenshtein(key, c), c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| c)
}

fn check(node: &Node, s: &Json, root: &Json, path: &str, errs: &mut Vec<SchemaError>) {
    let s = resolve(s, root);
    let err = |errs: &mut Vec<SchemaError>, pos: Pos, path: &str, message: String| {
        errs.push(SchemaError {
            pos,
            path: path.to_string(),
            message,
        })
    };
    if let Some(types) = types_of(s) {
        if !types.iter().any(|t| kind_matches(node, t)) {
            let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
            err(
                errs,
                node.pos,
                path,
                format!("must be {}, not {}", words(&types), node.type_name()),
            );
            return;
        }
    }
    if let Some(branches) = s
        .get("oneOf")
        .or_else(|| s.get("anyOf"))
        .and_then(Json::as_array)
    {
        let mut tries: Vec<Vec<SchemaError>> = Vec::new();
        for b in branches {
            let mut e = Vec::new();
            check(node, b, root, path, &mut e);
            if e.is_empty() {
                tries.clear();
                break;
            }
            tries.push(e);
        }
        if !tries.is_empty() {
            let fitting: Vec<usize> = branches
                .iter()
                .enumerate()
                .filter(|(_, b)| {
                    accepted(b, root).is_none_or(|ts| ts.iter().any(|t| kind_matches(node, t)))
                })
                .map(|(i, _)| i)
                .collect();
            if fitting.is_empty() {
                let all: Vec<String> = branches
                    .iter()
                    .filter_map(|b| accepted(b, root))
                    .flatten()
                    .collect();
                err(
                    errs,
                    node.pos,
                    path,
                    format!("must be {}, not {}", words(&all), node.type_name()),
                );
            } else {
                let best = fitting
                    .into_iter()
                    .min_by_key(|i| tries[*i].len())
                    .unwrap_or(0);
                errs.append(&mut tries[best]);
            }
        }
    }
    if let Some(options) = s.get("enum").and_then(Json::as_array) {
        if let Some(text) = node.as_scalar() {
            let ok = options.iter().any(|o| match o {
                Json::String(v) => v == text,
                other => serde_json::to_string(other).ok().as_deref() == Some(text),
            });
            if !ok {
                let list: Vec<String> = options
                    .iter()
                    .map(|o| o.as_str().map_or(o.to_string(), str::to_string))
                    .collect();
                err(
                    errs,
                    node.pos,
                    path,
                    format!("`{text}` is not one of: {}", list.join(", ")),
                );
            }
        }
    }
    if let Value::Scalar(text, ScalarKind::Int | ScalarKind::Float) = &node.value {
        if let Ok(n) = text.parse::<f64>() {
            if let Some(min) = s.get("minimum").and_then(Json::as_f64) {
                if n < min {
                    err(errs, node.pos, path, format!("must be at least {min}"));
                }
            }
            if let Some(max) = s.get("maximum").and_then(Json::as_f64) {
                if n > max {
                    err(errs, node.pos, path, format!("must be at most {max}"));
                }
            }
        }
    }
    match &node.value {
        Value::Map(entries) => check_map(node, entries, s, root, path, errs),
        Value::Seq(items) => {
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item, item_schema, root, &format!("{path}[{i}]"), errs);
                }
            }
        }
        Value::Scalar(..) => {}
    }
}

fn check_map(
    node: &Node,
    entries: &[(super::yaml::Key, Node)],
    s: &Json,
    root: &Json,
    path: &str,
    errs: &mut Vec<SchemaError>,
) {
    let props = s.get("properties").and_then(Json::as_object);
    let patterns = s.get("patternProperties").and_then(Json::as_object);
    let additional = s.get("additionalProperties");
    for (k, v) in entries {
        let kpath = join(path, &k.name);
        if k.non_string {
            errs.push(SchemaError {
                pos: k.pos,
                path: kpath,
                message: format!(
                    "non-string key in {}: {}",
                    if path.is_empty() {
                        "the top level"
                    } else {
                        path
                    },
                    k.name
                ),
            });
            continue;
        }
        if let Some(p) = props.and_then(|p| p.get(&k.name)) {
            check(v, p, root, &kpath, errs);
            continue;
        }
        if let Some((_, p)) =
            patterns.and_then(|ps| ps.iter().find(|(pat, _)| pattern_matches(pat, &k.name)))
        {
            check(v, p, root, &kpath, errs);
            continue;
        }
        match additional {
            Some(Json::Bool(false)) => {
                let mut message = if patterns.is_some_and(|p| p.contains_key("^x-"))
                    && props.is_some()
                {
                    format!("unknown key `{}` (not in the Compose specification; extension keys start with `x-`)", k.name)
                } else {
                    format!("`{}` is not allowed here", k.name)
                };
                if let Some(best) =
                    props.and_then(|p| suggest(&k.name, p.keys().map(String::as_str)))
                {
                    message.push_str(&format!("; did you mean `{best}`?"));
                }
                errs.push(SchemaError {
                    pos: k.pos,
                    path: kpath,
                    message,
                });
            }
            Some(extra @ Json::Object(_)) => check(v, extra, root, &kpath, errs),
            _ => {}
        }
    }
    if let Some(req) = s.get("required").and_then(Json::as_array) {
        for r in req.iter().filter_map(Json::as_str) {
            if !entries.iter().any(|(k, _)| k.name == r) {
                errs.push(SchemaError {
                    pos: node.pos,
                    path: path.to_string(),
                    message: format!("missing required key `{r}`"),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::yaml::parse;

    fn errors(src: &str) -> Vec<(usize, String, String)> {
        let (docs, _) = parse(src, 0).expect("parses");
        validate(&docs[0])
            .into_iter()
            .map(|e| (e.pos.line, e.path, e.message))
            .collect()
    }

    #[test]
    fn a_valid_file_passes() {
        assert_eq!(
            errors("services:\n  web:\n    image: nginx\n    ports: [\"80:80\", {target: 81}]\n    x-foo: {a: 1}\nx-top: 1\n"),
            vec![]
        );
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        assert_eq!(
            errors("services:\n  web:\n    imagee: nginx\n"),
            vec![(
                3,
                "services.web.imagee".to_string(),
                "unknown key `imagee` (not in the Compose specification; extension keys start with `x-`); did you mean `image`?".to_string()
            )]
        );
    }

    #[test]
    fn wrong_types_are_named() {
        assert_eq!(
            errors("services:\n  web:\n    image: [a, b]\n"),
            vec![(
                3,
                "services.web.image".to_string(),
                "must be a string, not a list".to_string()
            )]
        );
        assert_eq!(
            errors("services:\n  web:\n    ports:\n      published: 80\n"),
            vec![(
                4,
                "services.web.ports".to_string(),
                "must be a list, not a mapping".to_string()
            )]
        );
    }

    #[test]
    fn one_of_descends_into_the_branch_that_fits() {
        let e = errors("services:\n  t:\n    volumes:\n      - type: tmpfs\n        target: /app\n        tmpfs:\n          size: -1\n");
        assert_eq!(
            e,
            vec![(
                7,
                "services.t.volumes[0].tmpfs.size".to_string(),
                "must be at least 0".to_string()
            )]
        );
    }
}
