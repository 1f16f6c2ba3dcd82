//! Typed reads of tree nodes for the conversion passes: each reports a wrong type as an
//! error at the node's position and key path, and returns `None` so conversion goes on
//! and finds the other errors too.

use std::collections::BTreeMap;

use super::diag::Sink;
use super::yaml::{Node, ScalarKind, Value};

pub(crate) fn text(n: &Node, sink: &mut Sink, path: &str) -> Option<String> {
    match &n.value {
        Value::Scalar(s, kind) if *kind != ScalarKind::Null => Some(s.clone()),
        _ => {
            sink.error(
                n.pos,
                path,
                format!("must be a string, not {}", n.type_name()),
            );
            None
        }
    }
}

/// Text of a scalar, `None` (silently) for null.
pub(crate) fn opt_text(n: &Node, sink: &mut Sink, path: &str) -> Option<String> {
    if n.is_null() {
        return None;
    }
    text(n, sink, path)
}

pub(crate) fn uint(n: &Node, sink: &mut Sink, path: &str) -> Option<u64> {
    let t = text(n, sink, path)?;
    match t.trim().parse::<u64>() {
        Ok(v) => Some(v),
        Err(_) => {
            sink.error(n.pos, path, format!("must be a whole number, not `{t}`"));
            None
        }
    }
}

pub(crate) fn int(n: &Node, sink: &mut Sink, path: &str) -> Option<i64> {
    let t = text(n, sink, path)?;
    match t.trim().parse::<i64>() {
        Ok(v) => Some(v),
        Err(_) => {
            sink.error(n.pos, path, format!("must be an integer, not `{t}`"));
            None
        }
    }
}

pub(crate) fn boolean(n: &Node, sink: &mut Sink, path: &str) -> Option<bool> {
    let t = text(n, sink, path)?;
    match t.as_str() {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => {
            sink.error(n.pos, path, format!("must be true or false, not `{t}`"));
            None
        }
    }
}

/// The items of a list; an error (and none) when it is something else.
pub(crate) fn list<'a>(n: &'a Node, sink: &mut Sink, path: &str) -> &'a [Node] {
    match &n.value {
        Value::Seq(items) => items,
        _ => {
            sink.error(
                n.pos,
                path,
                format!("must be a list, not {}", n.type_name()),
            );
            &[]
        }
    }
}

/// A string or a list of strings, as a list.
pub(crate) fn string_list(n: &Node, sink: &mut Sink, path: &str) -> Vec<String> {
    match &n.value {
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, x)| text(x, sink, &format!("{path}[{i}]")))
            .collect(),
        Value::Scalar(_, ScalarKind::Null) => Vec::new(),
        Value::Scalar(..) => text(n, sink, path).into_iter().collect(),
        Value::Map(_) => {
            sink.error(
                n.pos,
                path,
                "must be a string or a list of strings, not a mapping",
            );
            Vec::new()
        }
    }
}

/// A list of `K=V` strings or a mapping, as `(key, value-or-None, node)` in order.
pub(crate) fn list_or_dict<'a>(
    n: &'a Node,
    sink: &mut Sink,
    path: &str,
) -> Vec<(String, Option<String>, &'a Node)> {
    match &n.value {
        Value::Map(entries) => entries
            .iter()
            .filter_map(|(k, v)| match &v.value {
                Value::Scalar(_, ScalarKind::Null) => Some((k.name.clone(), None, v)),
                Value::Scalar(s, _) => Some((k.name.clone(), Some(s.clone()), v)),
                _ => {
                    sink.error(
                        v.pos,
                        &format!("{path}.{}", k.name),
                        format!(
                            "must be a string, number, boolean or null, not {}",
                            v.type_name()
                        ),
                    );
                    None
                }
            })
            .collect(),
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, x)| {
                let t = text(x, sink, &format!("{path}[{i}]"))?;
                Some(match t.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string()), x),
                    None => (t, None, x),
                })
            })
            .collect(),
        Value::Scalar(_, ScalarKind::Null) => Vec::new(),
        Value::Scalar(..) => {
            sink.error(
                n.pos,
                path,
                format!("must be a mapping or a list, not {}", n.type_name()),
            );
            Vec::new()
        }
    }
}

/// `labels`-style values: missing values become "".
pub(crate) fn string_map(n: &Node, sink: &mut Sink, path: &str) -> BTreeMap<String, String> {
    list_or_dict(n, sink, path)
        .into_iter()
        .map(|(k, v, _)| (k, v.unwrap_or_default()))
        .collect()
}

/// The entries of a mapping; an error (and none) when it is something else.
pub(crate) fn entries<'a>(
    n: &'a Node,
    sink: &mut Sink,
    path: &str,
) -> &'a [(super::yaml::Key, Node)] {
    match &n.value {
        Value::Map(m) => m,
        Value::Scalar(_, ScalarKind::Null) => &[],
        _ => {
            sink.error(
                n.pos,
                path,
                format!("must be a mapping, not {}", n.type_name()),
            );
            &[]
        }
    }
}
