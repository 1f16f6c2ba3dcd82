//! `shoal events` lines: one per event, as it arrives (a stream has no table to align).
//!
//! - JSON lines, DESIGN.md's contract: `{"time","kind","stack","service","node","task",
//!   "message"}`, `time` RFC 3339 UTC with milliseconds.
//! - Text: `TIME  KIND  STACK/SERVICE  NODE  MESSAGE`, with `-` for what does not apply;
//!   columns padded to widths that fit the usual values.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use shoal_proto::pb;

use crate::args::Format;

/// `2026-01-02T03:04:05.678Z`.
pub fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The contract's keys, in its order.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    kind: &'a str,
    stack: &'a str,
    service: &'a str,
    node: &'a str,
    task: &'a str,
    message: &'a str,
}

/// One JSON object, no newline.
pub fn json(e: &pb::Event) -> String {
    let line = Line {
        time: time(e.time_ms),
        kind: &e.kind,
        stack: &e.stack,
        service: &e.service,
        node: &e.node,
        task: &e.task,
        message: &e.message,
    };
    // A struct of strings always serializes.
    serde_json::to_string(&line).unwrap_or_default()
}

/// `STACK/SERVICE`, `STACK` alone, or `-`.
fn target(e: &pb::Event) -> String {
    match (e.stack.as_str(), e.service.as_str()) {
        ("", "") => "-".into(),
        (stack, "") => stack.into(),
        ("", service) => service.into(),
        (stack, service) => format!("{stack}/{service}"),
    }
}

/// One text line, no newline.
pub fn text(e: &pb::Event) -> String {
    let node = if e.node.is_empty() { "-" } else { &e.node };
    format!(
        "{}  {:<19}  {:<16}  {:<8}  {}",
        time(e.time_ms),
        e.kind,
        target(e),
        node,
        e.message
    )
}

/// The line for `format`, with its newline.
pub fn line(format: Format, e: &pb::Event) -> String {
    let mut s = match format {
        Format::Json => json(e),
        Format::Table => text(e),
    };
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> pb::Event {
        pb::Event {
            time_ms: 1_767_225_600_123,
            kind: "task.assigned".into(),
            stack: "app".into(),
            service: "web".into(),
            node: "n3".into(),
            task: "00000000ab".into(),
            message: "web slot 2 assigned to n3 (replaces the task on n1, which is down)".into(),
            index: 41,
            seq: 2,
        }
    }

    #[test]
    fn json_lines_have_the_contract_keys_in_order() {
        assert_eq!(
            line(Format::Json, &event()),
            "{\"time\":\"2026-01-01T00:00:00.123Z\",\"kind\":\"task.assigned\",\"stack\":\"app\",\
             \"service\":\"web\",\"node\":\"n3\",\"task\":\"00000000ab\",\"message\":\"web slot 2 \
             assigned to n3 (replaces the task on n1, which is down)\"}\n"
        );
    }

    #[test]
    fn text_lines_name_what_applies_and_dash_the_rest() {
        assert_eq!(
            line(Format::Table, &event()),
            "2026-01-01T00:00:00.123Z  task.assigned        app/web           n3        web slot 2 assigned to n3 (replaces the task on n1, which is down)\n"
        );
        let node = pb::Event {
            time_ms: 1_767_225_600_000,
            kind: "node.down".into(),
            node: "n1".into(),
            message: "node n1 is down".into(),
            ..Default::default()
        };
        assert_eq!(
            text(&node),
            "2026-01-01T00:00:00.000Z  node.down            -                 n1        node n1 is down"
        );
        let stack = pb::Event {
            kind: "stack.removed".into(),
            stack: "app".into(),
            ..Default::default()
        };
        assert!(
            text(&stack).contains("  app               -  "),
            "{}",
            text(&stack)
        );
    }
}
