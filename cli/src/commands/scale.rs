//! `shoal scale SERVICE=N [SERVICE=N..]`.

use anyhow::Context;
use serde_json::json;
use shoal_proto::pb::ScaleRequest;

use super::Ctx;
use crate::args::{ScaleArgs, ScaleTarget};
use crate::error::UsageError;
use crate::output;

pub async fn run(args: ScaleArgs, ctx: &mut Ctx) -> anyhow::Result<()> {
    check_unique(&args.targets)?;
    let mut done = Vec::new();
    for target in &args.targets {
        let req = ScaleRequest {
            service: target.service.clone(),
            replicas: target.replicas,
        };
        let reply = ctx
            .client
            .call(|mut c| {
                let req = req.clone();
                async move { c.scale(req).await }
            })
            .await
            .with_context(|| format!("scale {} to {}", target.service, target.replicas))?;
        done.push(reply);
    }
    let json = serde_json::Value::Array(
        done.iter()
            .map(|r| json!({"service": r.service, "replicas": r.replicas}))
            .collect(),
    );
    output::emit(ctx.format, json, || {
        done.iter()
            .map(|r| format!("{} scaled to {}\n", r.service, r.replicas))
            .collect()
    })
}

/// Naming a service twice is a mistake, not "the last one wins".
fn check_unique(targets: &[ScaleTarget]) -> Result<(), UsageError> {
    for (i, t) in targets.iter().enumerate() {
        if targets[..i].iter().any(|o| o.service == t.service) {
            return Err(UsageError(format!(
                "{} is given twice: scale each service once",
                t.service
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str, n: u64) -> ScaleTarget {
        ScaleTarget {
            service: s.into(),
            replicas: n,
        }
    }

    #[test]
    fn duplicates_are_refused() {
        assert!(check_unique(&[t("web", 1), t("worker", 2)]).is_ok());
        let err = check_unique(&[t("web", 1), t("web", 2)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "web is given twice: scale each service once"
        );
        let err = anyhow::Error::new(err);
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_USAGE);
    }
}
