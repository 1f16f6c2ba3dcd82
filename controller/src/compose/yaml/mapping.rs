//! A mapping's entries from its parsed keys and values: duplicate keys refused and `<<`
//! merge keys applied, with go-yaml v3's rules and messages.

use super::{Key, Node, ParseProblem, ScalarKind, Value};

/// `items` alternates keys and values; a key's flag says it is a merge key (`<<`).
pub(super) fn build(
    items: Vec<(Node, bool)>,
    problems: &mut Vec<ParseProblem>,
) -> Vec<(Key, Node)> {
    let mut entries: Vec<(Key, Node)> = Vec::new();
    let mut merged: Vec<Node> = Vec::new();
    // Every key seen, merge keys included: go-yaml refuses a second `<<` as well.
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut it = items.into_iter();
    while let Some((k, merge_key)) = it.next() {
        let Some((v, _)) = it.next() else { break };
        let (name, kind) = match &k.value {
            Value::Scalar(s, kind) => (s.clone(), *kind),
            _ => {
                problems.push(ParseProblem {
                    pos: k.pos,
                    key: String::new(),
                    message: format!("a mapping key must be a string, not {}", k.type_name()),
                });
                continue;
            }
        };
        if let Some((_, line)) = seen.iter().find(|(n, _)| *n == name) {
            problems.push(ParseProblem {
                pos: k.pos,
                key: name.clone(),
                message: format!("mapping key {name:?} already defined at line {line}"),
            });
            continue;
        }
        seen.push((name.clone(), k.pos.line));
        if merge_key {
            merge_sources(v, &mut merged, problems);
            continue;
        }
        entries.push((
            Key {
                name,
                pos: k.pos,
                non_string: kind != ScalarKind::Str,
            },
            v,
        ));
    }
    // Explicit keys win over merged ones; among merged mappings, the first wins.
    for m in merged {
        if let Value::Map(mentries) = m.value {
            for (k, v) in mentries {
                if !entries.iter().any(|(e, _)| e.name == k.name) {
                    entries.push((k, v));
                }
            }
        }
    }
    entries
}

/// The mappings a `<<` value brings: itself, or each item of a list.
fn merge_sources(v: Node, merged: &mut Vec<Node>, problems: &mut Vec<ParseProblem>) {
    const WANT: &str = "map merge requires a mapping or a list of mappings as the value";
    match v.value {
        Value::Map(_) => merged.push(v),
        Value::Seq(list) => {
            for m in list {
                if m.as_map().is_some() {
                    merged.push(m);
                } else {
                    problems.push(ParseProblem {
                        pos: m.pos,
                        key: "<<".into(),
                        message: format!("{WANT}, not a list holding {}", m.type_name()),
                    });
                }
            }
        }
        _ => problems.push(ParseProblem {
            pos: v.pos,
            key: "<<".into(),
            message: format!("{WANT}, not {}", v.type_name()),
        }),
    }
}
