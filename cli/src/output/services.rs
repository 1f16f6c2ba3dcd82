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
            let generation = match s.previous_generation {
                0 => s.generation.to_string(),
                p => format!("{} (previous {p})", s.generation),
            };
            vec![
                format!("{}/{}", s.stack, s.name),
                s.mode.clone(),
                format!("{}/{}{healthy}", s.running, s.desired),
                generation,
                s.image.clone(),
                s.rollout.clone(),
            ]
        })
        .collect();
    super::table(
        &[
            "SERVICE",
            "MODE",
            "REPLICAS",
            "GENERATION",
            "IMAGE",
            "ROLLOUT",
        ],
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
            rollout: "completed".into(),
            previous_generation: 3,
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
            "SERVICE       MODE        REPLICAS         GENERATION      IMAGE                      ROLLOUT\n\
             hello/web     replicated  2/2 (1 healthy)  4 (previous 3)  shoal-test/busybox:latest  completed\n\
             hello/worker  replicated  0/1              4 (previous 3)  shoal-test/busybox:latest  completed\n"
        );
    }
}
