//! `shoal deploy`'s result: the generations the controller gave the stack's services.

use serde_json::{json, Value};
use shoal_proto::pb::DeployReply;

/// `{"stack","services":[{"name","generation","changed"}]}`
pub fn json(r: &DeployReply) -> Value {
    let services: Vec<Value> = r
        .services
        .iter()
        .map(|s| json!({"name": s.service, "generation": s.generation, "changed": s.changed}))
        .collect();
    json!({"stack": r.stack, "services": services})
}

/// `web generation 3 (changed), worker generation 1 (unchanged)`.
pub fn summary(r: &DeployReply) -> String {
    r.services
        .iter()
        .map(|s| {
            let what = if s.changed { "changed" } else { "unchanged" };
            format!("{} generation {} ({what})", s.service, s.generation)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::pb::ServiceGeneration;

    fn reply() -> DeployReply {
        DeployReply {
            stack: "hello".into(),
            services: vec![
                ServiceGeneration {
                    service: "web".into(),
                    generation: 3,
                    changed: true,
                },
                ServiceGeneration {
                    service: "worker".into(),
                    generation: 1,
                    changed: false,
                },
            ],
        }
    }

    #[test]
    fn json_and_summary() {
        assert_eq!(
            json(&reply()),
            serde_json::json!({
                "stack": "hello",
                "services": [
                    {"name": "web", "generation": 3, "changed": true},
                    {"name": "worker", "generation": 1, "changed": false}
                ]
            })
        );
        assert_eq!(
            summary(&reply()),
            "web generation 3 (changed), worker generation 1 (unchanged)"
        );
    }
}
