//! A YAML tree that keeps source positions, built from libyaml's events
//! (`libyaml-safer`, a safe Rust port of the C library that Compose's Go parser,
//! go-yaml v3, was itself ported from, so both accept the same files).
//!
//! Anchors and aliases are expanded and `<<` merge keys (a mapping or a list of
//! mappings) are applied while the tree is built, so later passes never see them.
//! Scalars are typed as go-yaml v3 types them ([`resolve`]): the YAML 1.2 core schema
//! (`yes`/`no` stay strings) with Go's integer syntax (`0x1F`, `0o17`, `0755`).
//! Duplicate keys are refused with go-yaml's message.

mod mapping;
mod resolve;

use std::collections::HashMap;

use libyaml_safer::{Event, EventData, Mark, ScalarStyle};

pub use resolve::resolve_plain;

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
    /// The text is the decimal value (`0x1F` becomes `31`), as Compose sees it.
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

/// Parse every document of `src`. Syntax errors, aliases to unknown anchors and
/// runaway alias expansion stop the parse (go-yaml fails there too); duplicate keys,
/// bad merge keys and values that do not fit their tag are reported and the parse goes on.
pub fn parse(src: &str, file: FileId) -> Result<(Vec<Node>, Vec<ParseProblem>), ParseProblem> {
    let mut input = src.as_bytes();
    let mut parser = libyaml_safer::Parser::new();
    parser.set_input_string(&mut input);
    let mut b = Builder::new(file);
    loop {
        let ev = parser.parse().map_err(|e| syntax_error(&e, file))?;
        if b.event(ev)? {
            return Ok((b.docs, b.problems));
        }
    }
}

fn pos_of(m: Mark, file: FileId) -> Pos {
    Pos {
        file,
        line: usize::try_from(m.line)
            .unwrap_or(usize::MAX)
            .saturating_add(1),
        col: usize::try_from(m.column)
            .unwrap_or(usize::MAX)
            .saturating_add(1),
    }
}

/// libyaml's error, placed where go-yaml places it: at the construct being read (the
/// context) when there is one, else at the problem; the problem's own place is added
/// to the message when it differs, since that is where the fix usually goes.
fn syntax_error(e: &libyaml_safer::Error, file: FileId) -> ParseProblem {
    let problem = e.problem_mark().map(|m| pos_of(m, file));
    let context = e.context_mark().map(|m| pos_of(m, file));
    let mut message = match e.context() {
        Some(c) => format!("invalid YAML: {c}, {}", e.problem()),
        None => format!("invalid YAML: {}", e.problem()),
    };
    if let (Some(p), Some(c)) = (problem, context) {
        if (p.line, p.col) != (c.line, c.col) {
            message.push_str(&format!(" (line {}, column {})", p.line, p.col));
        }
    }
    ParseProblem {
        pos: context.or(problem).unwrap_or(Pos {
            file,
            line: 1,
            col: 1,
        }),
        key: String::new(),
        message,
    }
}

/// A collection whose end event has not come yet.
struct Frame {
    pos: Pos,
    anchor: Option<String>,
    tag: Option<Tag>,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    /// Alternating keys and values; the flag marks a key that is a merge key (`<<`).
    Map(Vec<(Node, bool)>),
}

/// More nodes than this copied out of aliases is an alias bomb, not a Compose file.
const MAX_ALIAS_NODES: usize = 1_000_000;

struct Builder {
    file: FileId,
    stack: Vec<Frame>,
    /// Anchored nodes with their size in nodes. Like go-yaml's decoder, anchors live
    /// across the documents of one file, and a later anchor of the same name wins.
    anchors: HashMap<String, (Node, usize)>,
    alias_nodes: usize,
    docs: Vec<Node>,
    problems: Vec<ParseProblem>,
}

/// A tag as libyaml resolved it: Compose's own tags, a core-schema type, or another.
fn convert_tag(tag: Option<String>) -> (Option<Tag>, Option<&'static str>) {
    let Some(t) = tag else { return (None, None) };
    if let Some(suffix) = t.strip_prefix("tag:yaml.org,2002:") {
        let core = match suffix {
            "str" => Some("str"),
            "int" => Some("int"),
            "float" => Some("float"),
            "bool" => Some("bool"),
            "null" => Some("null"),
            "merge" => Some("merge"),
            _ => None,
        };
        return (None, core);
    }
    match t.as_str() {
        // The non-specific tag: the node is a string (go-yaml, YAML 1.2).
        "!" => (None, Some("str")),
        "!reset" => (Some(Tag::Reset), None),
        "!override" => (Some(Tag::Override), None),
        _ => (Some(Tag::Other(t)), None),
    }
}

fn size(n: &Node) -> usize {
    match &n.value {
        Value::Scalar(..) => 1,
        Value::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| 1 + size(v)).sum::<usize>(),
    }
}

impl Builder {
    fn new(file: FileId) -> Builder {
        Builder {
            file,
            stack: Vec::new(),
            anchors: HashMap::new(),
            alias_nodes: 0,
            docs: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn fatal(&self, pos: Pos, message: String) -> ParseProblem {
        ParseProblem {
            pos,
            key: String::new(),
            message,
        }
    }

    fn finish(&mut self, node: Node, anchor: Option<String>, merge_key: bool) {
        if let Some(a) = anchor {
            let n = size(&node);
            self.anchors.insert(a, (node.clone(), n));
        }
        match self.stack.last_mut() {
            Some(Frame {
                kind: FrameKind::Seq(items),
                ..
            }) => items.push(node),
            Some(Frame {
                kind: FrameKind::Map(items),
                ..
            }) => items.push((node, merge_key)),
            None => self.docs.push(node),
        }
    }

    /// Takes one event; true once the stream has ended.
    fn event(&mut self, ev: Event) -> Result<bool, ParseProblem> {
        let pos = pos_of(ev.start_mark, self.file);
        match ev.data {
            EventData::Scalar {
                anchor,
                tag,
                value,
                style,
                ..
            } => {
                let (tag, core) = convert_tag(tag);
                let plain = style == ScalarStyle::Plain;
                let merge_key =
                    value == "<<" && ((plain && core.is_none()) || core == Some("merge"));
                let core = core.filter(|c| *c != "merge");
                let (text, kind) = match resolve::typed(value.clone(), plain, core) {
                    Ok(t) => t,
                    Err(message) => {
                        self.problems.push(ParseProblem {
                            pos,
                            key: String::new(),
                            message,
                        });
                        (value, ScalarKind::Str)
                    }
                };
                let node = Node {
                    value: Value::Scalar(text, kind),
                    pos,
                    tag,
                };
                self.finish(node, anchor, merge_key);
            }
            EventData::Alias { anchor } => {
                if self
                    .stack
                    .iter()
                    .any(|f| f.anchor.as_deref() == Some(&anchor))
                {
                    return Err(self.fatal(
                        pos,
                        format!("invalid YAML: anchor '{anchor}' value contains itself"),
                    ));
                }
                let Some((node, n)) = self.anchors.get(&anchor) else {
                    return Err(self.fatal(
                        pos,
                        format!("invalid YAML: unknown anchor '{anchor}' referenced"),
                    ));
                };
                self.alias_nodes += n;
                if self.alias_nodes > MAX_ALIAS_NODES {
                    return Err(self.fatal(
                        pos,
                        "invalid YAML: document contains excessive aliasing".into(),
                    ));
                }
                let node = node.clone();
                self.finish(node, None, false);
            }
            EventData::SequenceStart { anchor, tag, .. } => self.stack.push(Frame {
                pos,
                anchor,
                tag: convert_tag(tag).0,
                kind: FrameKind::Seq(Vec::new()),
            }),
            EventData::MappingStart { anchor, tag, .. } => self.stack.push(Frame {
                pos,
                anchor,
                tag: convert_tag(tag).0,
                kind: FrameKind::Map(Vec::new()),
            }),
            EventData::SequenceEnd | EventData::MappingEnd => {
                if let Some(f) = self.stack.pop() {
                    let value = match f.kind {
                        FrameKind::Seq(items) => Value::Seq(items),
                        FrameKind::Map(items) => {
                            Value::Map(mapping::build(items, &mut self.problems))
                        }
                    };
                    let node = Node {
                        value,
                        pos: f.pos,
                        tag: f.tag,
                    };
                    self.finish(node, f.anchor, false);
                }
            }
            EventData::DocumentStart {
                version_directive: Some(v),
                ..
            } if (v.major, v.minor) != (1, 1) => {
                // libyaml also reads `%YAML 1.2`; go-yaml v3 refuses all but 1.1.
                return Err(self.fatal(
                    pos,
                    format!(
                        "invalid YAML: found incompatible YAML document (%YAML {}.{}: Compose reads only %YAML 1.1)",
                        v.major, v.minor
                    ),
                ));
            }
            EventData::StreamEnd => return Ok(true),
            EventData::StreamStart { .. }
            | EventData::DocumentStart { .. }
            | EventData::DocumentEnd { .. } => {}
        }
        Ok(false)
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
