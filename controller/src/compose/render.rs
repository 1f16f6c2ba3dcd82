//! `shoal config`: the normalized model as YAML, then what shoal does with each key.

use std::fmt::Write as _;

use shoal_proto::spec::RestartCondition;

use super::{Disposition, Loaded};

pub fn render(loaded: &Loaded) -> String {
    let mut out = String::new();
    // Unset fields (null, empty lists and maps) are left out so the model reads like
    // the Compose file it came from.
    let model = serde_json::to_value(&loaded.stack).map(prune);
    match model
        .map_err(|e| e.to_string())
        .and_then(|m| serde_yaml::to_string(&m).map_err(|e| e.to_string()))
    {
        Ok(y) => out.push_str(&y),
        Err(e) => {
            let _ = writeln!(out, "# the model could not be written as YAML: {e}");
        }
    }
    for (name, svc) in &loaded.stack.services {
        let _ = writeln!(out, "\n# service {name}");
        let width = loaded
            .keys
            .iter()
            .filter(|k| &k.service == name)
            .map(|k| k.key.len())
            .max()
            .unwrap_or(0)
            .max(3);
        let mut has_restart = false;
        for k in loaded.keys.iter().filter(|k| &k.service == name) {
            has_restart |= k.key == "restart" || k.key == "deploy.restart_policy";
            let what = match &k.disposition {
                Disposition::Honored => "honored".to_string(),
                Disposition::Ignored(why) => format!("ignored: {why}"),
            };
            let _ = writeln!(out, "#   {:width$}  {what}", k.key);
        }
        if !has_restart {
            let _ = writeln!(
                out,
                "#   {:width$}  default: condition {} (neither restart nor deploy.restart_policy given), delay {}ms",
                "restart",
                match svc.restart.condition {
                    RestartCondition::None => "none",
                    RestartCondition::OnFailure => "on-failure",
                    RestartCondition::Any => "any",
                },
                svc.restart.delay_ms
            );
        }
    }
    for d in &loaded.diagnostics {
        let _ = writeln!(out, "# {d}");
    }
    out
}

fn prune(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, prune(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Array(a) => !a.is_empty(),
                    Value::Object(o) => !o.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(prune).collect()),
        other => other,
    }
}
