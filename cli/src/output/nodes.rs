//! `shoal nodes`: one row per node, with its GPUs.

use serde_json::{json, Map, Value};
use shoal_proto::pb::NodeRow;

/// `[{"id","name","address","status","availability","labels","cpus","memory_bytes",
/// "gpus":[{"uuid","index","model","memory_bytes","assigned_to"}]}]`, labels an object.
/// A GPU whose node reports figures (NVML, or an inventory file that lists them) also
/// has `utilization_percent` and `memory_used_bytes`, shoal's addition to the contract,
/// as is each node's `conflicts`: what on it overlaps the cluster's address pool, one
/// sentence each (empty: nothing).
pub fn json(nodes: &[NodeRow]) -> Value {
    Value::Array(
        nodes
            .iter()
            .map(|n| {
                // Sorted by key, whatever order the map came in.
                let labels: std::collections::BTreeMap<&String, &String> =
                    n.labels.iter().collect();
                let labels: Map<String, Value> = labels
                    .into_iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                let gpus: Vec<Value> = n
                    .gpus
                    .iter()
                    .map(|g| {
                        let mut v = json!({
                            "uuid": g.uuid,
                            "index": g.index,
                            "model": g.model,
                            "memory_bytes": g.memory_bytes,
                            "assigned_to": g.assigned_to,
                        });
                        if let Some(u) = g.utilization_percent {
                            v["utilization_percent"] = json!(u);
                        }
                        if let Some(m) = g.memory_used_bytes {
                            v["memory_used_bytes"] = json!(m);
                        }
                        v
                    })
                    .collect();
                json!({
                    "id": n.id,
                    "name": n.name,
                    "address": n.address,
                    "status": n.status,
                    "availability": n.availability,
                    "labels": labels,
                    "cpus": n.cpus,
                    "memory_bytes": n.memory_bytes,
                    "gpus": gpus,
                    "conflicts": n.conflicts,
                })
            })
            .collect(),
    )
}

/// `2/4 used`, then the mean utilization and the memory in use where figures exist.
fn gpu_column(n: &NodeRow, used: usize) -> String {
    if n.gpus.is_empty() {
        return "-".to_string();
    }
    let mut out = format!("{used}/{} used", n.gpus.len());
    let utils: Vec<u32> = n
        .gpus
        .iter()
        .filter_map(|g| g.utilization_percent)
        .collect();
    if !utils.is_empty() {
        let mean = utils.iter().sum::<u32>() / utils.len() as u32;
        out.push_str(&format!(", {mean}% busy"));
    }
    let mem: Vec<u64> = n.gpus.iter().filter_map(|g| g.memory_used_bytes).collect();
    if !mem.is_empty() {
        let used = i64::try_from(mem.iter().sum::<u64>()).unwrap_or(i64::MAX);
        out.push_str(&format!(", {} in use", super::bytes(used)));
    }
    out
}

/// Below the table, one line per conflict, naming its node.
fn conflict_lines(nodes: &[NodeRow]) -> String {
    let lines: Vec<String> = nodes
        .iter()
        .flat_map(|n| {
            n.conflicts
                .iter()
                .map(move |c| format!("  {}: {c}\n", n.name))
        })
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "\nOverlapping the cluster's address pool (traffic to these addresses may go astray):\n{}",
        lines.concat()
    )
}

pub fn table(nodes: &[NodeRow]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let mut labels: Vec<String> =
                n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let gpus_used = n.gpus.iter().filter(|g| !g.assigned_to.is_empty()).count();
            vec![
                n.name.clone(),
                n.address.clone(),
                n.status.clone(),
                n.availability.clone(),
                format!("{}", n.cpus),
                super::bytes(n.memory_bytes),
                gpu_column(n, gpus_used),
                labels.join(","),
            ]
        })
        .collect();
    let table = super::table(
        &[
            "NAME",
            "ADDRESS",
            "STATUS",
            "AVAILABILITY",
            "CPUS",
            "MEMORY",
            "GPUS",
            "LABELS",
        ],
        &rows,
    );
    table + &conflict_lines(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::pb::GpuRow;

    fn node() -> NodeRow {
        NodeRow {
            id: "node-a".into(),
            name: "node-a".into(),
            address: "10.0.0.5".into(),
            status: "ready".into(),
            availability: "active".into(),
            labels: [
                ("zone".to_string(), "a".to_string()),
                ("gpu".to_string(), "h100".to_string()),
            ]
            .into_iter()
            .collect(),
            cpus: 8.0,
            memory_bytes: 17179869184,
            gpus: vec![
                GpuRow {
                    uuid: "GPU-1".into(),
                    index: 0,
                    model: "NVIDIA H100 80GB HBM3".into(),
                    memory_bytes: 85899345920,
                    assigned_to: "t-3".into(),
                    utilization_percent: None,
                    memory_used_bytes: None,
                },
                GpuRow {
                    uuid: "GPU-2".into(),
                    index: 1,
                    model: "NVIDIA H100 80GB HBM3".into(),
                    memory_bytes: 85899345920,
                    assigned_to: String::new(),
                    utilization_percent: None,
                    memory_used_bytes: None,
                },
            ],
            conflicts: Vec::new(),
        }
    }

    #[test]
    fn json_has_exactly_the_contract_keys() {
        assert_eq!(
            json(&[node()]),
            serde_json::json!([{
                "id": "node-a",
                "name": "node-a",
                "address": "10.0.0.5",
                "status": "ready",
                "availability": "active",
                "labels": {"gpu": "h100", "zone": "a"},
                "cpus": 8.0,
                "memory_bytes": 17179869184_i64,
                "gpus": [
                    {"uuid": "GPU-1", "index": 0, "model": "NVIDIA H100 80GB HBM3",
                     "memory_bytes": 85899345920_i64, "assigned_to": "t-3"},
                    {"uuid": "GPU-2", "index": 1, "model": "NVIDIA H100 80GB HBM3",
                     "memory_bytes": 85899345920_i64, "assigned_to": ""}
                ],
                "conflicts": []
            }])
        );
        let mut bare = node();
        bare.labels.clear();
        bare.gpus.clear();
        let v = json(&[bare]);
        assert_eq!(v[0]["labels"], serde_json::json!({}));
        assert_eq!(v[0]["gpus"], serde_json::json!([]));
    }

    #[test]
    fn gpu_figures_show_where_the_node_reports_them() {
        let mut n = node();
        n.gpus[0].utilization_percent = Some(80);
        n.gpus[0].memory_used_bytes = Some(40 << 30);
        n.gpus[1].utilization_percent = Some(10);
        let v = json(&[n.clone()]);
        assert_eq!(v[0]["gpus"][0]["utilization_percent"], 80);
        assert_eq!(v[0]["gpus"][0]["memory_used_bytes"], 40_u64 << 30);
        assert_eq!(v[0]["gpus"][1]["utilization_percent"], 10);
        assert!(v[0]["gpus"][1].get("memory_used_bytes").is_none());
        assert!(table(&[n]).contains("1/2 used, 45% busy, 40.0GiB in use"));
    }

    #[test]
    fn table_rows() {
        assert_eq!(
            table(&[node()]),
            "NAME    ADDRESS   STATUS  AVAILABILITY  CPUS  MEMORY   GPUS      LABELS\n\
             node-a  10.0.0.5  ready   active        8     16.0GiB  1/2 used  gpu=h100,zone=a\n"
        );
    }

    #[test]
    fn conflicts_show_in_json_and_under_the_table() {
        let mut n = node();
        n.name = "n2".into();
        n.conflicts =
            vec!["route 10.208.77.0/24 dev eth0 overlaps the cluster pool 10.208.0.0/12".into()];
        let v = json(&[n.clone(), node()]);
        assert_eq!(
            v[0]["conflicts"],
            serde_json::json!([
                "route 10.208.77.0/24 dev eth0 overlaps the cluster pool 10.208.0.0/12"
            ])
        );
        assert_eq!(v[1]["conflicts"], serde_json::json!([]));
        let t = table(&[n, node()]);
        assert!(
            t.ends_with(
                "\nOverlapping the cluster's address pool (traffic to these addresses may go astray):\n  \
                 n2: route 10.208.77.0/24 dev eth0 overlaps the cluster pool 10.208.0.0/12\n"
            ),
            "{t}"
        );
        assert!(!table(&[node()]).contains("Overlapping"));
    }
}
