//! `shoal ps`: one row per task.

use serde_json::{json, Value};
use shoal_proto::pb::TaskRow;

/// `[{"id","stack","service","slot","node","desired","state","container","image","error",
/// "gpus"}]`; `gpus` (UUIDs the task holds) is shoal's addition to the contract.
pub fn json(tasks: &[TaskRow]) -> Value {
    Value::Array(
        tasks
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "stack": t.stack,
                    "service": t.service,
                    "slot": t.slot,
                    "node": t.node,
                    "desired": t.desired,
                    "state": t.state,
                    "container": t.container,
                    "image": t.image,
                    "error": t.error,
                    "gpus": t.gpus,
                })
            })
            .collect(),
    )
}

/// Services are shown as `STACK/SERVICE` unless a single stack was asked for.
pub fn table(tasks: &[TaskRow], one_stack: bool) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                short_id(&t.id).to_string(),
                if one_stack {
                    t.service.clone()
                } else {
                    format!("{}/{}", t.stack, t.service)
                },
                t.slot.to_string(),
                node_column(t),
                t.desired.clone(),
                t.state.clone(),
                t.image.clone(),
                t.error.clone(),
            ]
        })
        .collect();
    super::table(
        &[
            "ID", "SERVICE", "SLOT", "NODE", "DESIRED", "STATE", "IMAGE", "ERROR",
        ],
        &rows,
    )
}

/// The node, followed by the task's GPUs when it holds some: `node-a [GPU-1,GPU-2]`.
fn node_column(t: &TaskRow) -> String {
    if t.gpus.is_empty() {
        t.node.clone()
    } else {
        format!("{} [{}]", t.node, t.gpus.join(","))
    }
}

fn short_id(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskRow {
        TaskRow {
            id: "t-000000000042".into(),
            stack: "hello".into(),
            service: "web".into(),
            slot: 2,
            node: "node-a".into(),
            desired: "running".into(),
            state: "healthy".into(),
            container: "c0ffee".into(),
            image: "shoal-test/busybox:latest".into(),
            error: String::new(),
            generation: 3,
            has_exit_code: false,
            exit_code: 0,
            has_healthcheck: true,
            updated_at_ms: 17,
            gpus: Vec::new(),
        }
    }

    #[test]
    fn json_has_exactly_the_contract_keys() {
        assert_eq!(
            json(&[task()]),
            serde_json::json!([{
                "id": "t-000000000042",
                "stack": "hello",
                "service": "web",
                "slot": 2,
                "node": "node-a",
                "desired": "running",
                "state": "healthy",
                "container": "c0ffee",
                "image": "shoal-test/busybox:latest",
                "error": "",
                "gpus": []
            }])
        );
        assert_eq!(json(&[]), serde_json::json!([]));
    }

    #[test]
    fn a_task_shows_its_gpus() {
        let mut t = task();
        t.gpus = vec!["GPU-1".into(), "GPU-2".into()];
        assert_eq!(
            json(&[t.clone()])[0]["gpus"],
            serde_json::json!(["GPU-1", "GPU-2"])
        );
        let table = table(&[t], true);
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .contains("node-a [GPU-1,GPU-2]  running"),
            "{table}"
        );
    }

    #[test]
    fn table_rows() {
        let mut pending = task();
        pending.id = "t-7".into();
        pending.node = String::new();
        pending.state = "pending".into();
        pending.error = "no node has 2 GPUs free".into();
        let t = table(&[task(), pending.clone()], false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID"));
        assert!(
            lines[1].starts_with("t-0000000000  hello/web  2"),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with("pending  shoal-test/busybox:latest  no node has 2 GPUs free"));
        let t = table(&[pending], true);
        assert!(t.lines().nth(1).unwrap().starts_with("t-7  web"));
    }
}
