//! Merging Compose trees: several `-c` files, `extends` and `include`, following the
//! compose-spec merge rules.
//!
//! Mappings merge recursively and scalars are replaced. `command`, `entrypoint` and
//! `healthcheck.test` are replaced whole. `environment`, `labels` and the other
//! list-or-mapping keys merge by variable name, `depends_on` and service `networks` by
//! service or network name, `ports` by host IP + published + target + protocol,
//! `volumes` by target, `secrets`/`configs` by source; other lists are appended without
//! duplicates. `!override` replaces whatever was there, `!reset` removes it (see
//! [`strip_resets`]).

use super::yaml::{Key, Node, ScalarKind, Tag, Value};

/// Merge `over` onto `base`. `path` is where the two nodes sit in the document.
pub fn merge(base: Node, over: Node, path: &[String]) -> Node {
    if over.tag.is_some() {
        // `!override` (and `!reset`, removed later) replace the inherited value.
        return over;
    }
    let (base, over) = match path {
        [s, _, b] if s == "services" && b == "build" => (build_as_map(base), build_as_map(over)),
        _ => (base, over),
    };
    let rule = rule_for(path);
    match rule {
        Rule::Replace => return over,
        Rule::ByName => {
            let b = to_map(base, path);
            let o = to_map(over, path);
            return merge_maps(b, o, path);
        }
        Rule::Keyed(keyfn) => return merge_keyed(base, over, keyfn),
        Rule::Default => {}
    }
    match (base.value, over.value) {
        (Value::Map(b), Value::Map(o)) => merge_maps(
            Node {
                value: Value::Map(b),
                pos: base.pos,
                tag: base.tag,
            },
            Node {
                value: Value::Map(o),
                pos: over.pos,
                tag: None,
            },
            path,
        ),
        (Value::Seq(mut b), Value::Seq(o)) => {
            for item in o {
                let dup = item.as_scalar().is_some()
                    && b.iter().any(|x| x.as_scalar() == item.as_scalar());
                if !dup {
                    b.push(item);
                }
            }
            Node {
                value: Value::Seq(b),
                pos: over.pos,
                tag: None,
            }
        }
        (_, value) => Node {
            value,
            pos: over.pos,
            tag: None,
        },
    }
}

/// `build: DIR` is `build: {context: DIR}`, as Compose reads it, so that a later file
/// can add a `target` to a string-form build (or change the context of a long one).
fn build_as_map(n: Node) -> Node {
    match &n.value {
        Value::Scalar(_, kind) if *kind != ScalarKind::Null => {
            let pos = n.pos;
            let key = Key {
                name: "context".to_string(),
                pos,
                non_string: false,
            };
            Node::new(Value::Map(vec![(key, n)]), pos)
        }
        _ => n,
    }
}

fn merge_maps(base: Node, over: Node, path: &[String]) -> Node {
    let pos = over.pos;
    let (Value::Map(mut b), Value::Map(o)) = (base.value, over.value) else {
        return Node::new(Value::Map(Vec::new()), pos);
    };
    for (k, v) in o {
        let mut child = path.to_vec();
        child.push(k.name.clone());
        match b.iter().position(|(bk, _)| bk.name == k.name) {
            Some(i) => {
                let (_, old) = b.remove(i);
                let merged = merge(old, v, &child);
                b.insert(i, (k, merged));
            }
            None => b.push((k, v)),
        }
    }
    Node::new(Value::Map(b), pos)
}

type KeyFn = fn(&Node) -> String;

enum Rule {
    Default,
    Replace,
    /// Lists of `K=V`/names and mappings both, merged by name.
    ByName,
    Keyed(KeyFn),
}

fn rule_for(path: &[String]) -> Rule {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["services", _, "command" | "entrypoint"] => Rule::Replace,
        ["services", _, "healthcheck", "test"] => Rule::Replace,
        ["services", _, "environment" | "labels" | "annotations" | "sysctls" | "extra_hosts"] => {
            Rule::ByName
        }
        ["services", _, "depends_on" | "networks"] => Rule::ByName,
        ["services", _, "build", "args" | "labels"] => Rule::ByName,
        ["services", _, "deploy", "labels"] => Rule::ByName,
        ["services", _, "ports"] => Rule::Keyed(port_key),
        ["services", _, "volumes"] => Rule::Keyed(volume_key),
        ["services", _, "secrets" | "configs"] => Rule::Keyed(source_key),
        _ => Rule::Default,
    }
}

/// The merge identity of a port entry: host IP, published, target and protocol.
pub fn port_key(n: &Node) -> String {
    if let Some(s) = n.as_scalar() {
        let (body, proto) = match s.rsplit_once('/') {
            Some((b, p)) => (b, p),
            None => (s, "tcp"),
        };
        let parts: Vec<&str> = body.rsplitn(3, ':').collect();
        let (target, published, ip) = match parts.as_slice() {
            [t] => (*t, "", ""),
            [t, p] => (*t, *p, ""),
            [t, p, ip] => (*t, *p, *ip),
            _ => (s, "", ""),
        };
        return format!("{ip}:{published}:{target}/{proto}");
    }
    let f = |k: &str| n.get(k).and_then(Node::as_scalar).unwrap_or("").to_string();
    let proto = n.get("protocol").and_then(Node::as_scalar).unwrap_or("tcp");
    format!(
        "{}:{}:{}/{}",
        f("host_ip"),
        f("published"),
        f("target"),
        proto
    )
}

/// The merge identity of a volume entry: its target path.
pub fn volume_key(n: &Node) -> String {
    if let Some(s) = n.as_scalar() {
        let parts: Vec<&str> = s.split(':').collect();
        return match parts.as_slice() {
            [only] => only.to_string(),
            [_, target, ..] => target.to_string(),
            [] => String::new(),
        };
    }
    n.get("target")
        .and_then(Node::as_scalar)
        .unwrap_or("")
        .to_string()
}

fn source_key(n: &Node) -> String {
    n.as_scalar()
        .or_else(|| n.get("source").and_then(Node::as_scalar))
        .unwrap_or("")
        .to_string()
}

fn merge_keyed(base: Node, over: Node, key: KeyFn) -> Node {
    let pos = over.pos;
    let (Value::Seq(mut b), Value::Seq(o)) = (base.value, over.value.clone()) else {
        return over;
    };
    for item in o {
        let k = key(&item);
        match b.iter().position(|x| key(x) == k) {
            Some(i) => b[i] = item,
            None => b.push(item),
        }
    }
    Node::new(Value::Seq(b), pos)
}

/// A list-or-mapping value as a mapping: `K=V` / `K` entries for environment-like keys,
/// bare names for `depends_on` and `networks`.
pub fn to_map(n: Node, path: &[String]) -> Node {
    let Value::Seq(items) = n.value else {
        return n;
    };
    let names_only = matches!(
        path.last().map(String::as_str),
        Some("depends_on" | "networks")
    );
    let sep = if path.last().map(String::as_str) == Some("extra_hosts") {
        ['=', ':']
    } else {
        ['=', '=']
    };
    let mut entries: Vec<(Key, Node)> = Vec::new();
    for item in items {
        let Some(text) = item.as_scalar().map(str::to_string) else {
            continue;
        };
        let (k, v) = if names_only {
            let v = if path.last().map(String::as_str) == Some("depends_on") {
                Node::new(
                    Value::Map(vec![(
                        Key {
                            name: "condition".into(),
                            pos: item.pos,
                            non_string: false,
                        },
                        Node::str("service_started", item.pos),
                    )]),
                    item.pos,
                )
            } else {
                Node::new(Value::Scalar(String::new(), ScalarKind::Null), item.pos)
            };
            (text, v)
        } else {
            match text.split_once(sep) {
                Some((k, v)) => (k.to_string(), Node::str(v, item.pos)),
                None => (
                    text,
                    Node::new(Value::Scalar(String::new(), ScalarKind::Null), item.pos),
                ),
            }
        };
        entries.retain(|(e, _)| e.name != k);
        entries.push((
            Key {
                name: k,
                pos: item.pos,
                non_string: false,
            },
            v,
        ));
    }
    Node::new(Value::Map(entries), n.pos)
}

/// Remove every value tagged `!reset` (after all merging is done).
pub fn strip_resets(n: &mut Node) {
    match &mut n.value {
        Value::Map(entries) => {
            entries.retain(|(_, v)| v.tag != Some(Tag::Reset));
            for (_, v) in entries.iter_mut() {
                strip_resets(v);
            }
        }
        Value::Seq(items) => {
            items.retain(|v| v.tag != Some(Tag::Reset));
            for v in items.iter_mut() {
                strip_resets(v);
            }
        }
        Value::Scalar(..) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::yaml::parse;

    fn doc(src: &str) -> Node {
        parse(src, 0).expect("parses").0.remove(0)
    }

    fn merged(a: &str, b: &str) -> Node {
        let mut m = merge(doc(a), doc(b), &[]);
        strip_resets(&mut m);
        m
    }

    fn web(n: &Node) -> &Node {
        n.get("services").and_then(|s| s.get("web")).expect("web")
    }

    fn scalars(n: Option<&Node>) -> Vec<String> {
        n.and_then(Node::as_seq)
            .expect("list")
            .iter()
            .map(|x| x.as_scalar().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn mappings_merge_and_scalars_are_replaced() {
        let m = merged(
            "services:\n  web:\n    image: a\n    user: u\n",
            "services:\n  web:\n    image: b\n  db:\n    image: pg\n",
        );
        assert_eq!(web(&m).get("image").and_then(Node::as_scalar), Some("b"));
        assert_eq!(web(&m).get("user").and_then(Node::as_scalar), Some("u"));
        assert!(m.get("services").and_then(|s| s.get("db")).is_some());
    }

    #[test]
    fn command_is_replaced_and_environment_merges_by_name() {
        let m = merged(
            "services:\n  web:\n    command: [a, b]\n    environment: [A=1, B=2]\n",
            "services:\n  web:\n    command: [c]\n    environment:\n      B: 3\n      C: 4\n",
        );
        assert_eq!(scalars(web(&m).get("command")), vec!["c"]);
        let env = web(&m).get("environment").expect("env");
        let pairs: Vec<(String, String)> = env
            .as_map()
            .expect("map")
            .iter()
            .map(|(k, v)| (k.name.clone(), v.as_scalar().unwrap_or("").to_string()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "3".into()),
                ("C".into(), "4".into())
            ]
        );
    }

    #[test]
    fn ports_merge_by_identity_and_volumes_by_target() {
        let m = merged(
            "services:\n  web:\n    ports: [\"8080:80\", \"9000:9000\"]\n    volumes: [\"a:/data\", \"/logs\"]\n    expose: [\"1\"]\n",
            "services:\n  web:\n    ports: [\"8080:80\", \"8081:81\"]\n    volumes: [\"b:/data:ro\"]\n    expose: [\"1\", \"2\"]\n",
        );
        assert_eq!(
            scalars(web(&m).get("ports")),
            vec!["8080:80", "9000:9000", "8081:81"]
        );
        assert_eq!(scalars(web(&m).get("volumes")), vec!["b:/data:ro", "/logs"]);
        assert_eq!(scalars(web(&m).get("expose")), vec!["1", "2"]);
    }

    #[test]
    fn reset_and_override_tags() {
        let m = merged(
            "services:\n  web:\n    ports: [\"80:80\"]\n    environment: {A: 1, B: 2}\n",
            "services:\n  web:\n    ports: !reset []\n    environment: !override {C: 3}\n",
        );
        assert!(web(&m).get("ports").is_none());
        let env = web(&m)
            .get("environment")
            .and_then(Node::as_map)
            .expect("env");
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].0.name, "C");
    }

    #[test]
    fn depends_on_list_and_map_merge() {
        let m = merged(
            "services:\n  web:\n    depends_on: [db]\n",
            "services:\n  web:\n    depends_on:\n      cache:\n        condition: service_healthy\n",
        );
        let d = web(&m)
            .get("depends_on")
            .and_then(Node::as_map)
            .expect("map");
        let names: Vec<&str> = d.iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, vec!["db", "cache"]);
    }
}
