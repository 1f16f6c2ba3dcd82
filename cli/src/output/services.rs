//! `shoal services`: one row per service.

use serde_json::{json, Value};
use shoal_proto::pb::ServiceRow;

/// `[{"stack","name","image","mode","desired","running","healthy","generation"}]`
pub fn json(services: &[ServiceRow]) -> Value {
    Value::Array(
        services
            .iter()
            .map(|s| {
                json!({
                    "stack": s.stack,
                    "name": s.name,
                    "image": s.image,
                    "mode": s.mode,
                    "desired": s.desired,
                    "running": s.running,
                    "healthy": s.healthy,
                    "generation": s.generation,
                })
            })
            .collect(),
    )
}

pub fn table(services: &[ServiceRow]) -> String {
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let healthy = if s.has_healthcheck {
                format!(" ({} healthy)", s.healthy)
            } else {
                String::new()
            };
            vec![
                format!("{}/{}", s.stack, s.name),
                s.mode.clone(),
                format!("{}/{}{healthy}", s.running, s.desired),
                s.generation.to_string(),
                s.image.clone(),
            ]
        })
        .collect();
    super::table(
        &["SERVICE", "MODE", "REPLICAS", "GENERATION", "IMAGE"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ServiceRow {
        ServiceRow {
            stack: "hello".into(),
            name: "web".into(),
            image: "shoal-test/busybox:latest".into(),
            mode: "replicated".into(),
            desired: 2,
            running: 2,
            healthy: 1,
            generation: 4,
            has_healthcheck: true,
        }
    }

    #[test]
    fn json_has_exactly_the_contract_keys() {
        assert_eq!(
            json(&[row()]),
            serde_json::json!([{
                "stack": "hello",
                "name": "web",
                "image": "shoal-test/busybox:latest",
                "mode": "replicated",
                "desired": 2,
                "running": 2,
                "healthy": 1,
                "generation": 4
            }])
        );
    }

    #[test]
    fn table_rows() {
        let mut worker = row();
        worker.name = "worker".into();
        worker.has_healthcheck = false;
        worker.desired = 1;
        worker.running = 0;
        assert_eq!(
            table(&[row(), worker]),
            "SERVICE       MODE        REPLICAS         GENERATION  IMAGE\n\
             hello/web     replicated  2/2 (1 healthy)  4           shoal-test/busybox:latest\n\
             hello/worker  replicated  0/1              4           shoal-test/busybox:latest\n"
        );
    }
}
