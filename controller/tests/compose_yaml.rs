//! The Compose YAML parser against Compose's own (go-yaml v3): each fixture in
//! `tests/fixtures/yaml/` with the tree go-yaml builds from it, written out, and the
//! files go-yaml refuses with the error and its file:line. It started with the Sentry
//! self-hosted `docker-compose.yml` (flow collections across lines), which Compose
//! loads and yaml-rust2 refused with "invalid indentation".
//!
//! Trees are compared as JSON: strings, integers as numbers (their value, as go-yaml
//! decodes them), floats as `{"float": TEXT}`, booleans, null.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value as J};
use shoal_controller::compose::yaml::{parse, Node, ScalarKind, Value};
use shoal_controller::compose::{load, LoadError, LoadOptions, Loaded};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/yaml")
}

fn read(name: &str) -> String {
    let p = fixtures().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn tree(n: &Node) -> J {
    match &n.value {
        Value::Scalar(_, ScalarKind::Null) => J::Null,
        Value::Scalar(s, ScalarKind::Bool) => J::Bool(s.eq_ignore_ascii_case("true")),
        Value::Scalar(s, ScalarKind::Int) => {
            serde_json::from_str(s).unwrap_or_else(|e| panic!("integer `{s}` is not decimal: {e}"))
        }
        Value::Scalar(s, ScalarKind::Float) => json!({ "float": s }),
        Value::Scalar(s, ScalarKind::Str) => J::String(s.clone()),
        Value::Seq(items) => J::Array(items.iter().map(tree).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.name.clone(), tree(v)))
                .collect(),
        ),
    }
}

/// Every document of a source, which must parse without problems.
fn docs_of(src: &str) -> Vec<J> {
    let (docs, problems) = parse(src, 0).unwrap_or_else(|e| panic!("should parse: {e:?}"));
    assert!(problems.is_empty(), "unexpected problems: {problems:?}");
    docs.iter().map(tree).collect()
}

fn one(name: &str) -> J {
    let mut docs = docs_of(&read(name));
    assert_eq!(docs.len(), 1, "{name}: one document");
    docs.remove(0)
}

/// The parse error of a source that must not parse, as `LINE:COL: MESSAGE`.
fn refused(src: &str) -> String {
    match parse(src, 0) {
        Ok((docs, problems)) => panic!("should be refused: {docs:?} {problems:?}"),
        Err(e) => format!("{}:{}: {}", e.pos.line, e.pos.col, e.message),
    }
}

/// The problems of a source that parses, as `LINE:COL: KEY: MESSAGE`.
fn problems(src: &str) -> Vec<String> {
    let (_, problems) = parse(src, 0).unwrap_or_else(|e| panic!("should parse: {e:?}"));
    problems
        .iter()
        .map(|p| format!("{}:{}: {}: {}", p.pos.line, p.pos.col, p.key, p.message))
        .collect()
}

fn load_fixture(name: &str, env: &[(&str, &str)]) -> Result<Loaded, LoadError> {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load(&LoadOptions {
        files: vec![fixtures().join(name)],
        project_name: Some("yaml".into()),
        env,
        ..Default::default()
    })
}

/// The errors of a fixture that `shoal config` refuses, relative to the fixtures folder.
fn load_errors(name: &str) -> Vec<String> {
    let prefix = format!("{}/", fixtures().display());
    match load_fixture(name, &[]) {
        Ok(l) => panic!("{name} should be refused, loaded {:#?}", l.stack),
        Err(e) => e
            .diagnostics
            .iter()
            .map(|d| d.to_string().replace(&prefix, ""))
            .collect(),
    }
}

#[test]
fn sentry_flow_collections_across_lines_load_as_in_compose() {
    let l = load_fixture(
        "sentry-flow-across-lines.yaml",
        &[("HEALTHCHECK_INTERVAL", "30s")],
    )
    .unwrap_or_else(|e| panic!("shoal config must accept what Compose accepts:\n{e}"));
    let web = &l.stack.services["web"];
    assert_eq!(
        web.command,
        Some(vec!["run".to_string(), "web".to_string()])
    );
    let hc = web.healthcheck.as_ref().expect("web has a healthcheck");
    assert_eq!(
        hc.test,
        vec![
            "CMD-SHELL".to_string(),
            "http_proxy='' wget -q -O- http://web:9340/healthz || exit 1".to_string()
        ]
    );
    assert_eq!(hc.interval_ms, Some(30_000));
    assert_eq!(hc.timeout_ms, Some(20_000));
    assert_eq!(hc.retries, Some(30));
    let worker = &l.stack.services["worker"];
    assert_eq!(
        worker.command,
        Some(vec!["run".to_string(), "worker".to_string()])
    );
    assert_eq!(
        worker.environment,
        [
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "2".to_string())
        ]
        .into()
    );

    let t = one("sentry-flow-across-lines.yaml");
    assert_eq!(
        t["services"],
        json!({
            "web": {
                "restart": "unless-stopped",
                "image": "nginx",
                "command": ["run", "web"],
                "healthcheck": {
                    "interval": "$HEALTHCHECK_INTERVAL",
                    "retries": 30,
                    "test": [
                        "CMD-SHELL",
                        "http_proxy='' wget -q -O- http://web:9340/healthz || exit 1"
                    ],
                    "timeout": "20s"
                }
            },
            "worker": {
                "restart": "unless-stopped",
                "image": "nginx",
                "command": ["run", "worker"],
                "environment": {"A": "1", "B": "2"}
            }
        })
    );
}

#[test]
fn flow_collections_span_lines_with_comments_inside() {
    assert_eq!(
        one("flow-across-lines.yaml"),
        json!({
            "environment": {"A": "1", "B": "2"},
            "labels": {"one": 1, "two": "two"},
            "nested": {"ports": ["80:80", "443:443"], "empty": {}},
            // Inside a flow collection indentation does not count, even left of the key.
            "outer": {"closing_left_of_key": ["far left"], "after": 1}
        })
    );
}

#[test]
fn multi_line_plain_and_quoted_scalars_fold_into_one_line() {
    assert_eq!(
        one("multiline-plain.yaml"),
        json!({
            "command": "run --flag value",
            "paragraphs": "first line\nsecond line",
            "in_flow": ["a b", "c"],
            "double": "one two",
            "single": "one\ntwo"
        })
    );
}

#[test]
fn block_scalars_with_chomping_and_indentation_indicators() {
    assert_eq!(
        one("block-scalars.yaml"),
        json!({
            "literal": "line1\n  indented\nline2\n",
            "folded": "one two\nthree\n",
            "strip": "folded text",
            "keep": "kept\n\n",
            "indicator": "  two more than the base\nbase\n",
            "indicator_strip": "  more\nbase",
            "last": "end"
        })
    );
}

#[test]
fn anchors_on_sequences_and_scalars_and_aliases_to_them() {
    assert_eq!(
        one("anchors.yaml"),
        json!({
            "x-ports": ["80:80", "443:443"],
            "x-cmd": ["run", "--fast"],
            "x-name": "web",
            "services": {
                "a": {"ports": ["80:80", "443:443"], "command": ["run", "--fast"], "hostname": "web"},
                "b": {"ports": ["80:80", "443:443"]}
            },
            // An anchor defined again names the later node from there on, as in go-yaml.
            "x-redefined": "other",
            "after": "other"
        })
    );
}

#[test]
fn merge_keys_single_list_and_inline() {
    let t = one("merge-keys.yaml");
    assert_eq!(t["single"], json!({"image": "custom", "restart": "always"}));
    // In a list the first mapping that has a key wins; explicit keys win over all.
    assert_eq!(
        t["list"],
        json!({"hostname": "h", "restart": "no", "logging": {"driver": "json-file"}, "image": "nginx"})
    );
    assert_eq!(t["inline"], json!({"user": "app"}));
    // A quoted `<<` is an ordinary key.
    assert_eq!(t["quoted_is_a_key"], json!({"<<": "not a merge"}));
}

#[test]
fn merge_keys_that_are_not_mappings_are_reported() {
    assert_eq!(
        problems("a:\n  <<: 1\nb:\n  <<: [{x: 1}, 2]\n"),
        vec![
            "2:7: <<: map merge requires a mapping or a list of mappings as the value, not an integer",
            "4:16: <<: map merge requires a mapping or a list of mappings as the value, not a list holding an integer",
        ]
    );
}

#[test]
fn tabs_are_whitespace_after_values_in_flow_and_inside_scalars() {
    assert_eq!(
        one("tabs.yaml"),
        json!({
            "after_value": "x",
            "sep": "value",
            "flow": ["a", "b"],
            "plain": "a\tb",
            "double": "a\tb",
            "literal_tab": "a\tb",
            "block": "a\tb\n",
            "comment": "x"
        })
    );
}

#[test]
fn a_tab_as_indentation_is_refused_with_file_and_line() {
    assert_eq!(
        load_errors("tab-indentation.yaml"),
        vec!["tab-indentation.yaml:2:1: error: invalid YAML: while scanning for the next token, found character that cannot start any token"]
    );
    // A tab that indents the continuation of a plain scalar (go-yaml's own message).
    assert_eq!(
        refused("a:\n  b: c\n\td\n"),
        "2:6: invalid YAML: while scanning a plain scalar, found a tab character that violates indentation (line 3, column 1)"
    );
}

#[test]
fn document_start_and_end_markers() {
    assert_eq!(
        one("document-markers.yaml"),
        json!({"services": {"web": {"image": "nginx"}}})
    );
    assert_eq!(
        docs_of("%YAML 1.1\n---\na: 1\n...\n"),
        vec![json!({"a": 1})]
    );
    // go-yaml v3 refuses every version directive but 1.1 (libyaml reads 1.2 too).
    assert_eq!(
        refused("%YAML 1.2\n---\na: 1\n"),
        "1:1: invalid YAML: found incompatible YAML document (%YAML 1.2: Compose reads only %YAML 1.1)"
    );
}

#[test]
fn several_documents_merge_in_order_as_compose_go_does() {
    // compose-go decodes each document of a file and merges them in order; an empty
    // document (a trailing `---`) is skipped.
    assert_eq!(
        docs_of(&read("several-documents.yaml")),
        vec![
            json!({"services": {"app": {"image": "alpine"}}}),
            json!({"services": {"app": {"environment": {"HELLO": "WORLD"}}}}),
            J::Null,
        ]
    );
    let l = load_fixture("several-documents.yaml", &[])
        .unwrap_or_else(|e| panic!("several documents load:\n{e}"));
    let app = &l.stack.services["app"];
    assert_eq!(app.image, "alpine");
    assert_eq!(
        app.environment.get("HELLO").map(String::as_str),
        Some("WORLD")
    );
}

#[test]
fn quoted_keys_empty_values_and_nulls() {
    assert_eq!(
        one("keys-and-nulls.yaml"),
        json!({
            "double quoted key": 1,
            "single quoted key": 2,
            "8080": "quoted number key",
            "plain key with spaces": 3,
            "empty": null,
            "tilde": null,
            "null_word": null,
            "Null_word": null,
            "empty_string": "",
            "empty_list": [],
            "empty_map": {},
            // YAML 1.2, as go-yaml v3: `yes`, `on` and `off` are strings.
            "yes": "yes",
            "on": "off",
            "bool": true
        })
    );
    let (docs, _) = parse(&read("keys-and-nulls.yaml"), 0).expect("parses");
    let entries = docs[0].as_map().expect("a mapping");
    let non_string: Vec<(&str, bool)> = entries
        .iter()
        .take(3)
        .map(|(k, _)| (k.name.as_str(), k.non_string))
        .collect();
    // A quoted number is a string key; Compose refuses only real non-string keys.
    assert_eq!(
        non_string,
        vec![
            ("double quoted key", false),
            ("single quoted key", false),
            ("8080", false)
        ]
    );
    // An empty value sits right after its key's colon, where go-yaml places it.
    let empty = docs[0].get("empty").expect("empty");
    assert_eq!((empty.pos.line, empty.pos.col), (5, 7));
}

#[test]
fn integers_as_go_yaml_v3_types_them() {
    assert_eq!(
        one("numbers.yaml"),
        json!({
            "decimal": 42,
            "signed": 12,
            "negative": -7,
            "hex": 31,
            "octal": 15,
            // YAML 1.1's octal, which go-yaml v3 still reads: Compose sees 493.
            "legacy_octal": 493,
            "binary": 5,
            "underscores": 1000,
            "quoted": "0x1F",
            // Not an octal number; go-yaml falls back to its float syntax.
            "not_octal": {"float": "08"},
            "float": {"float": "1.5"},
            "exponent": {"float": "1e3"},
            "infinity": {"float": "-.inf"},
            "version": "1.2.3",
            "port": "8080:80",
            "tagged_int": 12,
            "tagged_str": "12"
        })
    );
    assert_eq!(
        problems("a: !!bool yes\nb: !!int x\n"),
        vec![
            "1:4: : cannot decode !!str `yes` as a !!bool",
            "2:4: : cannot decode !!str `x` as a !!int",
        ]
    );
}

#[test]
fn duplicate_keys_are_refused_naming_file_line_and_key() {
    assert_eq!(
        load_errors("duplicate-keys.yaml"),
        vec!["duplicate-keys.yaml:5:5: error: image: mapping key \"image\" already defined at line 3"]
    );
    // Merge keys count as keys: go-yaml refuses a second `<<` too.
    assert_eq!(
        problems("a: &a {x: 1}\nb:\n  <<: *a\n  <<: *a\n"),
        vec!["4:3: <<: mapping key \"<<\" already defined at line 3"]
    );
}

#[test]
fn bad_aliases_stop_the_parse_with_their_line() {
    assert_eq!(
        refused("services:\n  web: *nope\n"),
        "2:8: invalid YAML: unknown anchor 'nope' referenced"
    );
    assert_eq!(
        refused("a: &a [1, *a]\n"),
        "1:11: invalid YAML: anchor 'a' value contains itself"
    );
    // Nine levels of ten aliases each: a billion nodes if expanded.
    let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        let items = vec![format!("*a{p}"); 10].join(", ");
        src.push_str(&format!("a{i}: &a{i} [{items}]\n"));
    }
    assert!(
        refused(&src).ends_with("invalid YAML: document contains excessive aliasing"),
        "{}",
        refused(&src)
    );
}

#[test]
fn syntax_errors_carry_the_line_of_the_construct_and_of_the_problem() {
    assert_eq!(
        refused("services:\n  web:\n    image: nginx\n   ports: []\n"),
        "2:3: invalid YAML: while parsing a block mapping, did not find expected key (line 4, column 4)"
    );
    assert_eq!(
        refused("a: [1, 2\nb: 3\n"),
        "1:4: invalid YAML: while parsing a flow sequence, did not find expected ',' or ']' (line 2, column 2)"
    );
}

#[test]
fn every_fixture_is_checked_here() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixtures/yaml")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let src = include_str!("compose_yaml.rs");
    for n in names {
        assert!(
            src.contains(&format!("\"{n}\"")),
            "fixture {n} is not used by any test"
        );
    }
}
