//! `shoal config -c FILE..`: load the Compose files as `deploy` would and print the
//! normalized model. Also home of [`load_stack`], which `deploy` shares.

use std::collections::BTreeMap;

use anyhow::Context;
use shoal_controller::compose;

use crate::args::{ComposeArgs, ConfigArgs, Format};
use crate::error::UsageError;
use crate::output;

pub fn run(args: ConfigArgs, format: Format) -> anyhow::Result<()> {
    let loaded = load_stack(&args.compose)?;
    let json = serde_json::to_value(&loaded.stack).context("serialize the stack")?;
    output::emit(format, json, || {
        let mut text = compose::render(&loaded);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    })
}

/// Loads the stack; warnings go to stderr. On errors every diagnostic goes to stderr and
/// the result is a [`UsageError`] (exit 2).
/// Print the errors and say the input is refused (a usage error: exit code 2).
pub fn refuse(err: &compose::LoadError) -> anyhow::Error {
    for d in &err.diagnostics {
        eprintln!("{d}");
    }
    let n = err.diagnostics.len();
    UsageError(format!(
        "the Compose input is invalid ({n} error{}): fix {} and retry",
        if n == 1 { "" } else { "s" },
        if n == 1 { "it" } else { "them" }
    ))
    .into()
}

pub fn load_stack(args: &ComposeArgs) -> anyhow::Result<compose::Loaded> {
    let opts = compose::LoadOptions {
        files: args.files.clone(),
        project_name: args.stack.clone(),
        profiles: args.profiles.clone(),
        env: std::env::vars().collect::<BTreeMap<_, _>>(),
    };
    match compose::load(&opts) {
        Ok(loaded) => {
            for d in &loaded.diagnostics {
                eprintln!("{d}");
            }
            Ok(loaded)
        }
        Err(err) => Err(refuse(&err)),
    }
}
