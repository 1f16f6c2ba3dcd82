//! Passphrases for cluster backups: from `--passphrase-file F` (its first line), or
//! asked at the terminal without echo.

use std::io::IsTerminal;
use std::path::Path;

use crate::error::UsageError;

/// The passphrase; `confirm` asks twice at a terminal (when one is being chosen).
pub fn read(file: Option<&Path>, confirm: bool) -> anyhow::Result<String> {
    let passphrase = match file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| {
                UsageError(format!("cannot read the passphrase file {}: {e}", f.display()))
            })?;
            text.lines().next().unwrap_or_default().to_string()
        }
        None if std::io::stdin().is_terminal() => {
            let first = rpassword::prompt_password("Backup passphrase: ")?;
            if confirm && rpassword::prompt_password("Again: ")? != first {
                return Err(UsageError("the two passphrases differ".into()).into());
            }
            first
        }
        None => {
            return Err(UsageError(
                "a backup needs a passphrase: give --passphrase-file F, or run this at a terminal to be asked".into(),
            )
            .into())
        }
    };
    if passphrase.chars().count() < shoal_controller::backup::MIN_PASSPHRASE {
        let from = file.map_or("the passphrase".to_string(), |f| {
            format!("the passphrase in {}", f.display())
        });
        return Err(UsageError(format!(
            "{from} is too short: a backup's passphrase has at least {} characters",
            shoal_controller::backup::MIN_PASSPHRASE
        ))
        .into());
    }
    Ok(passphrase)
}
