//! `shoal volume ls|inspect|move`: one row per copy of a named volume, and the lines
//! that follow a move.
//!
//! Times are given as values (`now`) so that "x ago" is testable.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use shoal_proto::pb::{MoveStatusReply, VolumeRow};

/// `[{"stack","name","node","slot","size_bytes","used_by","state","docker_name",
/// "created","last_used","policy","note","bound_slots"}]`: the contract's keys, then
/// shoal's additions; times are RFC 3339 (empty when unknown).
pub fn json(rows: &[VolumeRow]) -> Value {
    Value::Array(rows.iter().map(row_json).collect())
}

fn row_json(r: &VolumeRow) -> Value {
    json!({
        "stack": r.stack,
        "name": r.name,
        "node": r.node,
        "slot": r.slot,
        "size_bytes": r.size_bytes,
        "used_by": r.used_by,
        "state": r.state,
        "docker_name": r.docker_name,
        "created": rfc3339(r.created_ms),
        "last_used": rfc3339(r.last_used_ms),
        "policy": r.policy,
        "note": r.note,
        "bound_slots": r.bound_slots,
        "synced_ms": r.synced_ms,
        "frozen_ms": r.frozen_ms,
    })
}

/// STACK/NAME, NODE, SIZE, STATE, USED BY, NOTE.
pub fn table(rows: &[VolumeRow]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                volume_column(r),
                r.node.clone(),
                size(r.size_bytes),
                r.state.clone(),
                dash_if_empty(r.used_by.join(",")),
                r.note.clone(),
            ]
        })
        .collect();
    super::table(
        &["STACK/NAME", "NODE", "SIZE", "STATE", "USED BY", "NOTE"],
        &rows,
    )
}

/// Every copy of one volume as a block of `key: value` lines, times both as RFC 3339
/// and as "x ago".
pub fn inspect(rows: &[VolumeRow], now: SystemTime) -> String {
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{} on {}\n", volume_column(r), r.node));
        let slot = if r.slot == 0 {
            "- (one copy for the node's replicas)".to_string()
        } else {
            r.slot.to_string()
        };
        let fields = [
            ("state", r.state.clone()),
            ("size", size(r.size_bytes)),
            ("slot", slot),
            ("used by", dash_if_empty(r.used_by.join(", "))),
            ("bound slots", dash_if_empty(r.bound_slots.join(", "))),
            ("policy", dash_if_empty(r.policy.clone())),
            ("docker name", dash_if_empty(r.docker_name.clone())),
            ("created", when(r.created_ms, now)),
            ("last used", when(r.last_used_ms, now)),
            ("note", dash_if_empty(r.note.clone())),
        ];
        let standby = [
            ("last copy", when(r.synced_ms, now)),
            ("frozen for", format!("{} ms", r.frozen_ms)),
        ];
        let fields = fields
            .into_iter()
            .chain(standby.into_iter().filter(|_| r.synced_ms > 0));
        for (k, v) in fields {
            out.push_str(&format!("  {:<13}{v}\n", format!("{k}:")));
        }
    }
    out
}

/// `realapp/pgdata`, with ` [slot N]` for a copy that belongs to one slot.
fn volume_column(r: &VolumeRow) -> String {
    if r.slot == 0 {
        format!("{}/{}", r.stack, r.name)
    } else {
        format!("{}/{} [slot {}]", r.stack, r.name, r.slot)
    }
}

fn dash_if_empty(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// The table's size: `-` while not measured (-1).
fn size(n: i64) -> String {
    if n < 0 {
        "-".into()
    } else {
        super::bytes(n)
    }
}

/// RFC 3339 for a time in ms since the epoch; empty when unknown (0).
pub fn rfc3339(ms: u64) -> String {
    if ms == 0 {
        return String::new();
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `2024-05-01T10:00:00Z (3 h ago)`, or `-` when unknown.
fn when(ms: u64, now: SystemTime) -> String {
    if ms == 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    match now.duration_since(t) {
        Ok(d) => format!("{} ({})", rfc3339(ms), ago(d)),
        // The controller's clock is ahead of ours.
        Err(_) => rfc3339(ms),
    }
}

/// `just now`, `42 s ago`, `5 min ago`, `3 h ago`, `2 days ago`.
pub fn ago(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "just now".into(),
        1..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ if s < 2 * 86_400 => "1 day ago".into(),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// `412.0 MiB`, `512 B`: sizes in sentences.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `38.2 MiB/s`: `bytes` over `ms` (`-` when no time has passed).
pub fn rate(bytes: u64, ms: u64) -> String {
    if ms == 0 {
        return "- MiB/s".into();
    }
    let per_sec = (bytes as f64 * 1000.0 / ms as f64) as u64;
    format!("{}/s", human_bytes(per_sec))
}

/// The line shown when a move enters a phase.
pub fn move_phase(r: &MoveStatusReply) -> String {
    match r.phase.as_str() {
        "stopping" => format!("stopping the replicas using {} on {}", r.volume, r.from),
        "copying" => format!("copying {} {} -> {}", r.volume, r.from, r.to),
        "starting" => format!(
            "copied {} to {} ({}); starting its replicas there",
            r.volume,
            r.to,
            human_bytes(r.bytes)
        ),
        other => format!("{} {} -> {}: {other}", r.volume, r.from, r.to),
    }
}

/// `copying realapp/pgdata n2 -> n3: 412.0 MiB (38.2 MiB/s)`, the rate over `copy_ms`.
pub fn move_progress(r: &MoveStatusReply, copy_ms: u64) -> String {
    format!(
        "copying {} {} -> {}: {} ({})",
        r.volume,
        r.from,
        r.to,
        human_bytes(r.bytes),
        rate(r.bytes, copy_ms)
    )
}

/// `moved realapp/pgdata from n2 to n3: 1.0 GiB in 27.1 s (37.8 MiB/s), sha256 ab12..`.
pub fn move_done(r: &MoveStatusReply) -> String {
    let mut line = format!(
        "moved {} from {} to {}: {} in {:.1} s ({})",
        r.volume,
        r.from,
        r.to,
        human_bytes(r.bytes),
        r.elapsed_ms as f64 / 1000.0,
        rate(r.bytes, r.elapsed_ms)
    );
    if !r.sha256.is_empty() {
        line.push_str(&format!(", sha256 {}", r.sha256));
    }
    line
}

/// Why a move failed, and that the source is intact.
pub fn move_failed(r: &MoveStatusReply) -> String {
    let error = if r.error.is_empty() {
        "the controller gave no reason"
    } else {
        r.error.as_str()
    };
    format!(
        "moving {} from {} to {} failed: {error}; the copy on {} is untouched; run the move again",
        r.volume, r.from, r.to, r.from
    )
}

/// `{"id","volume","from","to","phase","bytes","error","sha256","elapsed_ms"}`.
pub fn move_json(r: &MoveStatusReply) -> Value {
    json!({
        "id": r.id,
        "volume": r.volume,
        "from": r.from,
        "to": r.to,
        "phase": r.phase,
        "bytes": r.bytes,
        "error": r.error,
        "sha256": r.sha256,
        "elapsed_ms": r.elapsed_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn row() -> VolumeRow {
        VolumeRow {
            stack: "realapp".into(),
            name: "pgdata".into(),
            node: "n2".into(),
            slot: 0,
            size_bytes: 1536 * 1024 * 1024,
            used_by: vec!["realapp/db".into()],
            state: "live".into(),
            docker_name: "realapp_pgdata".into(),
            created_ms: 1_700_000_000_000,
            last_used_ms: 0,
            policy: "bound".into(),
            note: String::new(),
            bound_slots: vec!["realapp/db.1".into()],
            synced_ms: 0,
            frozen_ms: 0,
        }
    }

    #[test]
    fn json_has_the_contract_keys_and_no_nulls() {
        assert_eq!(
            json(&[row()]),
            serde_json::json!([{
                "stack": "realapp",
                "name": "pgdata",
                "node": "n2",
                "slot": 0,
                "size_bytes": 1610612736i64,
                "used_by": ["realapp/db"],
                "state": "live",
                "docker_name": "realapp_pgdata",
                "created": "2023-11-14T22:13:20Z",
                "last_used": "",
                "policy": "bound",
                "note": "",
                "bound_slots": ["realapp/db.1"],
                "synced_ms": 0,
                "frozen_ms": 0,
            }])
        );
        let empty = json(&[VolumeRow {
            size_bytes: -1,
            ..Default::default()
        }]);
        for (k, v) in empty[0].as_object().unwrap() {
            assert!(!v.is_null(), "{k} is null");
        }
        assert_eq!(empty[0]["size_bytes"], -1);
        assert_eq!(empty[0]["created"], "");
        assert_eq!(json(&[]), serde_json::json!([]));
    }

    #[test]
    fn table_rows() {
        let mut other = row();
        other.node = "n3".into();
        other.slot = 2;
        other.size_bytes = -1;
        other.used_by = Vec::new();
        other.state = "set-aside".into();
        other.note = "stale after n3 came back".into();
        assert_eq!(
            table(&[row(), other]),
            "STACK/NAME               NODE  SIZE    STATE      USED BY     NOTE\n\
             realapp/pgdata           n2    1.5GiB  live       realapp/db\n\
             realapp/pgdata [slot 2]  n3    -       set-aside  -           stale after n3 came back\n"
        );
    }

    #[test]
    fn inspect_shows_every_field() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + 3 * 3600 * 1000);
        let text = inspect(&[row(), row()], now);
        let first: Vec<&str> = text.split("\n\n").next().unwrap().lines().collect();
        assert_eq!(
            first,
            vec![
                "realapp/pgdata on n2",
                "  state:       live",
                "  size:        1.5GiB",
                "  slot:        - (one copy for the node's replicas)",
                "  used by:     realapp/db",
                "  bound slots: realapp/db.1",
                "  policy:      bound",
                "  docker name: realapp_pgdata",
                "  created:     2023-11-14T22:13:20Z (3 h ago)",
                "  last used:   -",
                "  note:        -",
            ]
        );
        assert_eq!(text.matches("realapp/pgdata on n2").count(), 2);
    }

    #[test]
    fn ages_and_sizes() {
        assert_eq!(ago(Duration::from_secs(0)), "just now");
        assert_eq!(ago(Duration::from_secs(42)), "42 s ago");
        assert_eq!(ago(Duration::from_secs(300)), "5 min ago");
        assert_eq!(ago(Duration::from_secs(86_400 + 5)), "1 day ago");
        assert_eq!(ago(Duration::from_secs(3 * 86_400)), "3 days ago");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(412 * 1024 * 1024), "412.0 MiB");
        assert_eq!(rate(0, 0), "- MiB/s");
        assert_eq!(rfc3339(0), "");
    }

    fn status(phase: &str) -> MoveStatusReply {
        MoveStatusReply {
            id: 7,
            volume: "realapp/pgdata".into(),
            from: "n2".into(),
            to: "n3".into(),
            phase: phase.into(),
            bytes: 1024 * 1024 * 1024,
            error: String::new(),
            sha256: "ab12".into(),
            elapsed_ms: 27_100,
        }
    }

    #[test]
    fn move_lines() {
        let mut copying = status("copying");
        copying.bytes = 412 * 1024 * 1024;
        assert_eq!(
            move_progress(&copying, 10_000),
            "copying realapp/pgdata n2 -> n3: 412.0 MiB (41.2 MiB/s)"
        );
        assert_eq!(
            move_done(&status("done")),
            "moved realapp/pgdata from n2 to n3: 1.0 GiB in 27.1 s (37.8 MiB/s), sha256 ab12"
        );
        let mut failed = status("failed");
        failed.error = "n3 went down".into();
        assert_eq!(
            move_failed(&failed),
            "moving realapp/pgdata from n2 to n3 failed: n3 went down; the copy on n2 is \
             untouched; run the move again"
        );
        assert_eq!(
            move_phase(&status("stopping")),
            "stopping the replicas using realapp/pgdata on n2"
        );
        assert_eq!(move_json(&failed)["error"], "n3 went down");
        assert_eq!(move_json(&status("done"))["phase"], "done");
    }
}
