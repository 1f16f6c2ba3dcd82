//! `shoal secret create|ls|rm`: the secrets the cluster keeps (sealed in its state), for
//! Compose secrets declared `external: true`.

use std::io::Read as _;

use anyhow::Context as _;
use shoal_proto::pb;

use super::Ctx;
use crate::args::SecretCommand;
use crate::error::UsageError;
use crate::output;

pub async fn run(cmd: SecretCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Create { name, file } => {
            let data = match file.as_deref() {
                None => read_stdin()?,
                Some(p) if p.as_os_str() == "-" => read_stdin()?,
                Some(p) => std::fs::read(p).map_err(|e| {
                    UsageError(format!(
                        "cannot read the secret's file {}: {e}",
                        p.display()
                    ))
                })?,
            };
            let req = pb::CreateSecretRequest {
                name: name.clone(),
                data,
            };
            ctx.client
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.create_secret(req).await }
                })
                .await
                .with_context(|| format!("create secret {name}"))?;
            output::emit(ctx.format, serde_json::json!({ "name": name }), || {
                format!("secret {name} created\n")
            })
        }
        SecretCommand::Ls => {
            let reply = ctx
                .client
                .call(|mut c| async move { c.list_secrets(pb::ListSecretsRequest {}).await })
                .await
                .context("list secrets")?;
            output::emit(ctx.format, json(&reply.secrets), || table(&reply.secrets))
        }
        SecretCommand::Rm { name } => {
            ctx.client
                .call(|mut c| {
                    let name = name.clone();
                    async move { c.remove_secret(pb::RemoveSecretRequest { name }).await }
                })
                .await
                .with_context(|| format!("remove secret {name}"))?;
            output::emit(ctx.format, serde_json::json!({ "name": name }), || {
                format!("secret {name} removed\n")
            })
        }
    }
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .context("read the secret from standard input")?;
    Ok(data)
}

/// `[{"name","created_ms","used_by"}]`.
fn json(rows: &[pb::SecretRow]) -> serde_json::Value {
    rows.iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "created_ms": r.created_ms,
                "used_by": r.used_by,
            })
        })
        .collect()
}

fn table(rows: &[pb::SecretRow]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let created = std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.created_ms);
            vec![
                r.name.clone(),
                humantime::format_rfc3339_seconds(created).to_string(),
                if r.used_by.is_empty() {
                    "-".to_string()
                } else {
                    r.used_by.join(",")
                },
            ]
        })
        .collect();
    output::table(&["NAME", "CREATED", "USED BY"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_as_json_and_table() {
        let rows = vec![pb::SecretRow {
            name: "db_password".into(),
            created_ms: 0,
            used_by: vec!["shop/api".into()],
        }];
        assert_eq!(
            json(&rows),
            serde_json::json!([{"name": "db_password", "created_ms": 0, "used_by": ["shop/api"]}])
        );
        assert_eq!(
            table(&rows),
            "NAME         CREATED               USED BY\ndb_password  1970-01-01T00:00:00Z  shop/api\n"
        );
    }
}
