//! `shoal services`: one row per service.

use serde_json::{json, Value};
use shoal_proto::pb::{AutoscaleRow, ServiceRow};

/// `[{"stack","name","image","mode","desired","running","healthy","generation"}]`, and
/// `"autoscale": {"min","max","desired","cause","readings"}` for an autoscaled service.
pub fn json(services: &[ServiceRow]) -> Value {
    Value::Array(
        services
            .iter()
            .map(|s| {
                let mut row = json!({
                    "stack": s.stack,
                    "name": s.name,
                    "image": s.image,
                    "mode": s.mode,
                    "desired": s.desired,
                    "running": s.running,
                    "healthy": s.healthy,
                    "generation": s.generation,
                });
                if let (Some(a), Some(obj)) = (&s.autoscale, row.as_object_mut()) {
                    obj.insert(
                        "autoscale".into(),
                        json!({
                            "min": a.min,
                            "max": a.max,
                            "desired": a.desired,
                            "cause": a.cause,
                            "readings": a.readings,
                        }),
                    );
                }
                row
            })
            .collect(),
    )
}

/// `3 (2-20): inference_queue_depth 41 (13.7/15 per replica)`: the count, its bounds
/// and what the metrics read now (else why the count is what it is).
fn autoscale_cell(a: &AutoscaleRow) -> String {
    let why = if a.readings.is_empty() {
        a.cause.clone()
    } else {
        a.readings.join(", ")
    };
    let bounds = format!("{} ({}-{})", a.desired, a.min, a.max);
    if why.is_empty() {
        bounds
    } else {
        format!("{bounds}: {why}")
    }
}

pub fn table(services: &[ServiceRow]) -> String {
    // The column appears only where some service autoscales.
    let autoscaled = services.iter().any(|s| s.autoscale.is_some());
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
            let mut row = vec![
                format!("{}/{}", s.stack, s.name),
                s.mode.clone(),
                format!("{}/{}{healthy}", s.running, s.desired),
                generation,
                s.image.clone(),
                s.rollout.clone(),
            ];
            if autoscaled {
                row.push(s.autoscale.as_ref().map(autoscale_cell).unwrap_or_default());
            }
            row
        })
        .collect();
    let mut headers = vec![
        "SERVICE",
        "MODE",
        "REPLICAS",
        "GENERATION",
        "IMAGE",
        "ROLLOUT",
    ];
    if autoscaled {
        headers.push("AUTOSCALE");
    }
    super::table(&headers, &rows)
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
            autoscale: None,
        }
    }

    #[test]
    fn an_autoscaled_service_shows_its_bounds_and_readings() {
        let mut web = row();
        web.autoscale = Some(AutoscaleRow {
            min: 2,
            max: 20,
            desired: 3,
            cause: "inference_queue_depth 41 (13.7/15 per replica) above target".into(),
            readings: vec!["inference_queue_depth 41 (13.7/15 per replica)".into()],
            changed_ms: 1,
        });
        let mut worker = row();
        worker.name = "worker".into();
        let table = table(&[web.clone(), worker]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].ends_with("ROLLOUT    AUTOSCALE"), "{table}");
        assert!(
            lines[1]
                .ends_with("completed  3 (2-20): inference_queue_depth 41 (13.7/15 per replica)"),
            "{table}"
        );
        assert!(lines[2].ends_with("completed"), "{table}");
        let j = json(&[web.clone()]);
        assert_eq!(
            j[0]["autoscale"],
            serde_json::json!({
                "min": 2, "max": 20, "desired": 3,
                "cause": "inference_queue_depth 41 (13.7/15 per replica) above target",
                "readings": ["inference_queue_depth 41 (13.7/15 per replica)"],
            })
        );
        if let Some(a) = web.autoscale.as_mut() {
            a.readings.clear();
        }
        assert_eq!(
            autoscale_cell(web.autoscale.as_ref().expect("set")),
            "3 (2-20): inference_queue_depth 41 (13.7/15 per replica) above target"
        );
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
