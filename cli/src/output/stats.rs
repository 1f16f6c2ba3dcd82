//! `shoal stats`: a row per replica, a total per service of several replicas, and the
//! GPUs, like `docker stats`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use shoal_proto::pb::{NodeGpuStats, ReplicaStats, StatsReply};

use super::bytes;

/// `[{"stack","service","slot","task","node","container","cpu_percent","memory_bytes",
/// "memory_limit_bytes","net_rx_bytes","net_tx_bytes","restarts"}]`
pub fn json(replicas: &[ReplicaStats]) -> Value {
    Value::Array(
        replicas
            .iter()
            .map(|r| {
                json!({
                    "stack": r.stack,
                    "service": r.service,
                    "slot": r.slot,
                    "task": r.task,
                    "node": r.node,
                    "container": r.container,
                    "cpu_percent": r.cpu_percent,
                    "memory_bytes": r.memory_bytes,
                    "memory_limit_bytes": r.memory_limit_bytes,
                    "net_rx_bytes": r.net_rx_bytes,
                    "net_tx_bytes": r.net_tx_bytes,
                    "restarts": r.restarts,
                })
            })
            .collect(),
    )
}

const HEADERS: [&str; 8] = [
    "SERVICE",
    "SLOT",
    "NODE",
    "CPU %",
    "MEM USAGE / LIMIT",
    "MEM %",
    "NET I/O",
    "RESTARTS",
];

/// The replicas' table (a `total` row after each service with several replicas), then
/// the GPUs' when there are any.
pub fn table(reply: &StatsReply) -> String {
    let mut by_service: BTreeMap<(&str, &str), Vec<&ReplicaStats>> = BTreeMap::new();
    for r in &reply.replicas {
        by_service
            .entry((r.stack.as_str(), r.service.as_str()))
            .or_default()
            .push(r);
    }
    let mut rows = Vec::new();
    for ((stack, service), list) in &by_service {
        let name = format!("{stack}/{service}");
        for r in list {
            rows.push(row(
                name.clone(),
                r.slot.to_string(),
                r.node.clone(),
                &Figures::of(std::slice::from_ref(r)),
            ));
        }
        if list.len() > 1 {
            let nodes: std::collections::BTreeSet<&str> =
                list.iter().map(|r| r.node.as_str()).collect();
            let on = match nodes.len() {
                1 => "1 node".to_string(),
                n => format!("{n} nodes"),
            };
            rows.push(row(name, "total".into(), on, &Figures::of(list)));
        }
    }
    let mut out = super::table(&HEADERS, &rows);
    if !reply.gpus.is_empty() {
        out.push('\n');
        out.push_str(&gpus(&reply.gpus));
    }
    out
}

/// Figures of one replica, or summed over several.
struct Figures {
    cpu: f64,
    memory: u64,
    /// 0 when any replica has no limit (the sum would mean nothing).
    limit: u64,
    rx: u64,
    tx: u64,
    restarts: u64,
}

impl Figures {
    fn of<R: std::borrow::Borrow<ReplicaStats>>(list: &[R]) -> Figures {
        let all_limited = list.iter().all(|r| r.borrow().memory_limit_bytes > 0);
        let mut f = Figures {
            cpu: 0.0,
            memory: 0,
            limit: 0,
            rx: 0,
            tx: 0,
            restarts: 0,
        };
        for r in list {
            let r = r.borrow();
            f.cpu += r.cpu_percent;
            f.memory = f.memory.saturating_add(r.memory_bytes);
            if all_limited {
                f.limit = f.limit.saturating_add(r.memory_limit_bytes);
            }
            f.rx = f.rx.saturating_add(r.net_rx_bytes);
            f.tx = f.tx.saturating_add(r.net_tx_bytes);
            f.restarts = f.restarts.saturating_add(r.restarts);
        }
        f
    }
}

fn row(service: String, slot: String, node: String, f: &Figures) -> Vec<String> {
    let (limit, percent) = match f.limit {
        0 => ("no limit".to_string(), "-".to_string()),
        l => (
            size(l),
            format!("{:.1}%", f.memory as f64 * 100.0 / l as f64),
        ),
    };
    vec![
        service,
        slot,
        node,
        format!("{:.1}%", f.cpu),
        format!("{} / {limit}", size(f.memory)),
        percent,
        format!("{} / {}", size(f.rx), size(f.tx)),
        f.restarts.to_string(),
    ]
}

fn gpus(gpus: &[NodeGpuStats]) -> String {
    let mut list: Vec<&NodeGpuStats> = gpus.iter().collect();
    list.sort_by(|a, b| (&a.node, a.index).cmp(&(&b.node, b.index)));
    let rows: Vec<Vec<String>> = list
        .into_iter()
        .map(|g| {
            vec![
                g.node.clone(),
                g.index.to_string(),
                g.model.clone(),
                g.utilization_percent
                    .map_or("-".into(), |u| format!("{u}%")),
                g.memory_used_bytes.map_or("-".into(), size),
            ]
        })
        .collect();
    super::table(&["NODE", "GPU", "MODEL", "UTIL", "MEMORY USED"], &rows)
}

fn size(n: u64) -> String {
    bytes(i64::try_from(n).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn replica(service: &str, slot: u64, node: &str, cpu: f64, mem: u64) -> ReplicaStats {
        ReplicaStats {
            stack: "app".into(),
            service: service.into(),
            task: format!("t{slot}"),
            slot,
            node: node.into(),
            container: format!("c{slot}"),
            cpu_percent: cpu,
            memory_bytes: mem,
            memory_limit_bytes: 1 << 30,
            net_rx_bytes: 1536,
            net_tx_bytes: 512,
            restarts: slot - 1,
            at_ms: 5,
        }
    }

    #[test]
    fn a_row_per_replica_and_a_total_per_service() {
        let mut db = replica("db", 1, "node-b", 1.25, 300 << 20);
        db.memory_limit_bytes = 0;
        let reply = StatsReply {
            replicas: vec![
                replica("web", 1, "node-a", 12.5, 100 << 20),
                replica("web", 2, "node-b", 7.5, 156 << 20),
                db,
            ],
            gpus: vec![NodeGpuStats {
                node: "node-a".into(),
                uuid: "GPU-1".into(),
                index: 0,
                model: "Tesla T4".into(),
                utilization_percent: Some(40),
                memory_used_bytes: Some(5 << 30),
                history: vec![],
            }],
            ..Default::default()
        };
        assert_eq!(
            table(&reply),
            "\
SERVICE  SLOT   NODE     CPU %  MEM USAGE / LIMIT    MEM %  NET I/O          RESTARTS
app/db   1      node-b   1.2%   300.0MiB / no limit  -      1.5KiB / 512B    0
app/web  1      node-a   12.5%  100.0MiB / 1.0GiB    9.8%   1.5KiB / 512B    0
app/web  2      node-b   7.5%   156.0MiB / 1.0GiB    15.2%  1.5KiB / 512B    1
app/web  total  2 nodes  20.0%  256.0MiB / 2.0GiB    12.5%  3.0KiB / 1.0KiB  1

NODE    GPU  MODEL     UTIL  MEMORY USED
node-a  0    Tesla T4  40%   5.0GiB
"
        );
    }

    #[test]
    fn json_rows_carry_the_contract_keys() {
        let v = json(&[replica("web", 2, "node-b", 7.5, 42)]);
        assert_eq!(
            v,
            serde_json::json!([{
                "stack": "app", "service": "web", "slot": 2, "task": "t2", "node": "node-b",
                "container": "c2", "cpu_percent": 7.5, "memory_bytes": 42,
                "memory_limit_bytes": 1073741824u64, "net_rx_bytes": 1536, "net_tx_bytes": 512,
                "restarts": 1
            }])
        );
    }

    #[test]
    fn nothing_reported_is_the_headers_alone() {
        assert_eq!(
            table(&StatsReply::default()),
            "SERVICE  SLOT  NODE  CPU %  MEM USAGE / LIMIT  MEM %  NET I/O  RESTARTS\n"
        );
    }
}
