//! A YAML tree that keeps source positions, built from `yaml-rust2`'s marked events.
//!
//! Anchors and aliases are expanded and `<<` merge keys (a mapping or a list of
//! mappings) are applied while the tree is built, so later passes never see them.
//! Plain scalars are typed with the YAML 1.2 core schema, as Compose's Go parser does
//! (`yes`/`no` stay strings).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag as YamlTag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Index into the loader's table of files.
pub type FileId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub file: FileId,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub col: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarKind {
    Null,
    Bool,
    Int,
    Float,
    Str,
}

/// Compose's own tags: `!reset` drops an inherited value, `!override` replaces it whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    Reset,
    Override,
    Other(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
    /// The key was a number, boolean or null in the source (Compose refuses those).
    pub non_string: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(String, ScalarKind),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
    pub tag: Option<Tag>,
}

impl Node {
    pub fn new(value: Value, pos: Pos) -> Node {
        Node {
            value,
            pos,
            tag: None,
        }
    }

    pub fn str(s: impl Into<String>, pos: Pos) -> Node {
        Node::new(Value::Scalar(s.into(), ScalarKind::Str), pos)
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Scalar(_, ScalarKind::Null))
    }

    pub fn as_map(&self) -> Option<&Vec<(Key, Node)>> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&Vec<Node>> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a non-null scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(_, ScalarKind::Null) => None,
            Value::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// A human word for the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar(_, ScalarKind::Null) => "null",
            Value::Scalar(_, ScalarKind::Bool) => "a boolean",
            Value::Scalar(_, ScalarKind::Int) => "an integer",
            Value::Scalar(_, ScalarKind::Float) => "a number",
            Value::Scalar(_, ScalarKind::Str) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A YAML syntax problem, or a structural one found while building the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseProblem {
    pub pos: Pos,
    pub key: String,
    pub message: String,
}

/// Parse every document of `src`. Syntax errors stop the parse; duplicate keys and bad
/// merge keys are reported and the parse goes on.
pub fn parse(src: &str, file: FileId) -> Result<(Vec<Node>, Vec<ParseProblem>), ParseProblem> {
    let mut b = Builder {
        file,
        stack: Vec::new(),
        anchors: HashMap::new(),
        docs: Vec::new(),
        problems: Vec::new(),
    };
    let mut parser = Parser::new_from_str(src);
    parser.load(&mut b, true).map_err(|e| ParseProblem {
        pos: Pos {
            file,
            line: e.marker().line(),
            col: e.marker().col() + 1,
        },
        key: String::new(),
        message: format!("invalid YAML: {}", e.info()),
    })?;
    Ok((b.docs, b.problems))
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        tag: Option<Tag>,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        tag: Option<Tag>,
        /// Alternating keys and values.
        items: Vec<(Node, Option<TScalarStyle>)>,
    },
}

struct Builder {
    file: FileId,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
    problems: Vec<ParseProblem>,
}

fn convert_tag(tag: Option<YamlTag>) -> (Option<Tag>, Option<&'static str>) {
    match tag {
        None => (None, None),
        Some(t) if t.handle == "tag:yaml.org,2002:" => {
            let core = match t.suffix.as_str() {
                "str" => Some("str"),
                "int" => Some("int"),
                "float" => Some("float"),
                "bool" => Some("bool"),
                "null" => Some("null"),
                _ => None,
            };
            (None, core)
        }
        Some(t) if t.handle == "!" && t.suffix == "reset" => (Some(Tag::Reset), None),
        Some(t) if t.handle == "!" && t.suffix == "override" => (Some(Tag::Override), None),
        Some(t) => (Some(Tag::Other(format!("{}{}", t.handle, t.suffix))), None),
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
pub fn resolve_plain(s: &str) -> ScalarKind {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return ScalarKind::Bool,
        ".inf" | "-.inf" | "+.inf" | ".Inf" | "-.Inf" | "+.Inf" | ".INF" | "-.INF" | "+.INF"
        | ".nan" | ".NaN" | ".NAN" => return ScalarKind::Float,
        _ => {}
    }
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        return ScalarKind::Int;
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return ScalarKind::Int;
        }
    }
    if let Some(oct) = s.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return ScalarKind::Int;
        }
    }
    // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
    let (mant, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mant_ok =
        match mant.split_once('.') {
            Some((a, b)) => {
                a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
                    && !(a.is_empty() && b.is_empty())
            }
            None => false,
        } || (exp.is_some() && !mant.is_empty() && mant.bytes().all(|c| c.is_ascii_digit()));
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit())
    });
    if mant_ok && exp_ok {
        return ScalarKind::Float;
    }
    ScalarKind::Str
}

impl Builder {
    fn pos(&self, m: Marker) -> Pos {
        Pos {
            file: self.file,
            line: m.line(),
            col: m.col() + 1,
        }
    }

    fn finish(&mut self, node: Node, anchor: usize, key_style: Option<TScalarStyle>) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { items, .. }) => items.push((node, key_style)),
            None => self.docs.push(node),
        }
    }

    fn build_map(&mut self, items: Vec<(Node, Option<TScalarStyle>)>) -> Vec<(Key, Node)> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        let mut merged: Vec<Node> = Vec::new();
        let mut it = items.into_iter();
        while let Some((k, style)) = it.next() {
            let Some((v, _)) = it.next() else { break };
            let (name, kind) = match &k.value {
                Value::Scalar(s, kind) => (s.clone(), *kind),
                _ => {
                    self.problems.push(ParseProblem {
                        pos: k.pos,
                        key: String::new(),
                        message: format!("a mapping key must be a string, not {}", k.type_name()),
                    });
                    continue;
                }
            };
            if name == "<<" && style == Some(TScalarStyle::Plain) {
                match &v.value {
                    Value::Map(_) => merged.push(v),
                    Value::Seq(list) => {
                        for m in list {
                            if m.as_map().is_some() {
                                merged.push(m.clone());
                            } else {
                                self.problems.push(ParseProblem {
                                    pos: m.pos,
                                    key: "<<".into(),
                                    message: format!(
                                        "a merge key takes mappings, not {}",
                                        m.type_name()
                                    ),
                                });
                            }
                        }
                    }
                    _ => self.problems.push(ParseProblem {
                        pos: v.pos,
                        key: "<<".into(),
                        message: format!(
                            "a merge key takes a mapping or a list of mappings, not {}",
                            v.type_name()
                        ),
                    }),
                }
                continue;
            }
            if let Some((first, _)) = entries.iter().find(|(e, _)| e.name == name) {
                self.problems.push(ParseProblem {
                    pos: k.pos,
                    key: name.clone(),
                    message: format!(
                        "key `{name}` is defined twice in this mapping (first on line {})",
                        first.pos.line
                    ),
                });
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
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = self.pos(mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let (tag, core) = convert_tag(tag);
                let kind = match core {
                    Some("str") => ScalarKind::Str,
                    Some("int") => ScalarKind::Int,
                    Some("float") => ScalarKind::Float,
                    Some("bool") => ScalarKind::Bool,
                    Some("null") => ScalarKind::Null,
                    _ if style == TScalarStyle::Plain => resolve_plain(&text),
                    _ => ScalarKind::Str,
                };
                let node = Node {
                    value: Value::Scalar(text, kind),
                    pos,
                    tag,
                };
                self.finish(node, anchor, Some(style));
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(n) => n.clone(),
                    None => Node::new(Value::Scalar(String::new(), ScalarKind::Null), pos),
                };
                self.finish(node, 0, None);
            }
            Event::SequenceStart(anchor, tag) => self.stack.push(Frame::Seq {
                pos,
                anchor,
                tag: convert_tag(tag).0,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, tag) => self.stack.push(Frame::Map {
                pos,
                anchor,
                tag: convert_tag(tag).0,
                items: Vec::new(),
            }),
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    pos,
                    anchor,
                    tag,
                    items,
                }) = self.stack.pop()
                {
                    let node = Node {
                        value: Value::Seq(items),
                        pos,
                        tag,
                    };
                    self.finish(node, anchor, None);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    pos,
                    anchor,
                    tag,
                    items,
                }) = self.stack.pop()
                {
                    // A block mapping's start event is marked late (at its first value);
                    // its first key is where a reader looks for it.
                    let pos = match items.first() {
                        Some((k, _)) if (k.pos.line, k.pos.col) < (pos.line, pos.col) => k.pos,
                        _ => pos,
                    };
                    let entries = self.build_map(items);
                    let node = Node {
                        value: Value::Map(entries),
                        pos,
                        tag,
                    };
                    self.finish(node, anchor, None);
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Node {
        let (docs, problems) = parse(src, 0).expect("parses");
        assert!(problems.is_empty(), "{problems:?}");
        docs.into_iter().next().expect("a document")
    }

    fn keys(n: &Node) -> Vec<&str> {
        n.as_map()
            .expect("map")
            .iter()
            .map(|(k, _)| k.name.as_str())
            .collect()
    }

    #[test]
    fn plain_scalars_use_the_core_schema() {
        assert_eq!(resolve_plain("no"), ScalarKind::Str);
        assert_eq!(resolve_plain("true"), ScalarKind::Bool);
        assert_eq!(resolve_plain("~"), ScalarKind::Null);
        assert_eq!(resolve_plain("-12"), ScalarKind::Int);
        assert_eq!(resolve_plain("0x1F"), ScalarKind::Int);
        assert_eq!(resolve_plain("1.5"), ScalarKind::Float);
        assert_eq!(resolve_plain("1e3"), ScalarKind::Float);
        assert_eq!(resolve_plain("8080:80"), ScalarKind::Str);
        assert_eq!(resolve_plain("1.2.3"), ScalarKind::Str);
    }

    #[test]
    fn merge_keys_apply_in_order_and_explicit_keys_win() {
        let n = one("a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n");
        let c = n.get("c").expect("c");
        assert_eq!(keys(c), vec!["z", "x", "y"]);
        assert_eq!(c.get("y").and_then(Node::as_scalar), Some("1"));
        assert_eq!(c.get("z").and_then(Node::as_scalar), Some("3"));
    }

    #[test]
    fn positions_are_one_based() {
        let n = one("services:\n  web:\n    image: nginx\n");
        let img = n
            .get("services")
            .and_then(|s| s.get("web"))
            .and_then(|w| w.get("image"));
        let img = img.expect("image");
        assert_eq!((img.pos.line, img.pos.col), (3, 12));
        let (k, _) = &n
            .get("services")
            .and_then(|s| s.get("web"))
            .and_then(Node::as_map)
            .expect("map")[0];
        assert_eq!((k.pos.line, k.pos.col), (3, 5));
    }

    #[test]
    fn duplicate_keys_and_tabs_are_reported() {
        let (_, problems) = parse("a: 1\na: 2\n", 0).expect("parses");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].pos.line, 2);
        assert!(parse("a:\n\tb: 1\n", 0).is_err());
    }

    #[test]
    fn reset_and_override_tags_are_kept() {
        let n = one("a: !reset []\nb: !override {x: 1}\n");
        assert_eq!(n.get("a").and_then(|a| a.tag.clone()), Some(Tag::Reset));
        assert_eq!(n.get("b").and_then(|a| a.tag.clone()), Some(Tag::Override));
    }
}
