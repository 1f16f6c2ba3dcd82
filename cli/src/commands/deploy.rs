//! `shoal deploy`: load the Compose files, build and ship the stack's images
//! ([`crate::images::deploy`]), hand the stack to the controller, then (unless
//! `--detach`) poll `Services` and `Ps` until [`progress`] says it converged, failed or
//! the timeout passed.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, Context};
use shoal_proto::pb::{DeployReply, DeployRequest, PsRequest, ServicesRequest};
use tokio::time::{Instant, MissedTickBehavior};

use super::Ctx;
use crate::args::{DeployArgs, Format};
use crate::images::deploy::LazyEngine;
use crate::output;
use crate::progress::{prior_failures, progress, Generations, Progress, ServiceProgress};

const POLL_INTERVAL: Duration = Duration::from_millis(300);

pub async fn run(args: DeployArgs, ctx: &mut Ctx) -> anyhow::Result<()> {
    run_with(args, ctx, &mut LazyEngine::from_env()).await
}

/// [`run`] with this machine's engine given (tests point it elsewhere).
pub async fn run_with(
    args: DeployArgs,
    ctx: &mut Ctx,
    engine: &mut LazyEngine,
) -> anyhow::Result<()> {
    let mut loaded = super::config::load_stack(&args.compose)?;
    let stack = loaded.stack.name.clone();
    // Read now, not at load: `shoal config` works without the secret files.
    let secrets = shoal_controller::compose::secret_contents(&loaded)
        .map_err(|e| super::config::refuse(&e))?
        .into_iter()
        .collect();
    let configs = shoal_controller::compose::config_contents(&loaded)
        .map_err(|e| super::config::refuse(&e))?
        .into_iter()
        .collect();
    // Build and ship the images before the stack is sent: a failure here deploys nothing.
    crate::images::deploy::prepare(&mut loaded.stack, &mut ctx.client, engine).await?;
    let stack_json = serde_json::to_vec(&loaded.stack).context("serialize the stack")?;
    let req = DeployRequest {
        stack_json,
        secrets,
        configs,
    };
    let reply = ctx
        .client
        .call(|mut c| {
            let req = req.clone();
            async move { c.deploy(req).await }
        })
        .await
        .with_context(|| format!("deploy stack {stack}"))?;

    if args.detach {
        return output::emit(ctx.format, output::deploy::json(&reply), || {
            format!(
                "stack {} accepted: {}\n",
                reply.stack,
                output::deploy::summary(&reply)
            )
        });
    }
    let lines = follow(&reply, ctx, Duration::from_secs(args.timeout)).await?;
    let done: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
    output::emit(ctx.format, output::deploy::json(&reply), || {
        format!("stack {} deployed: {}\n", reply.stack, done.join(", "))
    })
}

/// Polls until the rollout converges (its final lines), fails or times out (errors).
async fn follow(
    reply: &DeployReply,
    ctx: &mut Ctx,
    timeout: Duration,
) -> anyhow::Result<Vec<ServiceProgress>> {
    let mut generations = Generations::from(reply);
    let mut first_poll = true;
    let deadline = Instant::now() + timeout;
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Vec<ServiceProgress> = Vec::new();
    let mut poll_error: Option<String> = None;
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ps = PsRequest {
        stack: reply.stack.clone(),
        all: true,
    };
    loop {
        ticks.tick().await;
        match poll(ctx, &ps, &mut generations, &mut first_poll).await {
            Ok(Progress::Failed(reason)) => {
                let outcome = if reason.contains("; ") {
                    String::new() // The rollout's outcome is already in the reason.
                } else {
                    rollout_outcome(ctx, &reply.stack).await
                };
                return Err(anyhow!("deploy failed: {reason}{outcome}"));
            }
            Ok(Progress::Converged(lines)) => {
                show_changes(ctx.format, &mut shown, &lines);
                return Ok(lines);
            }
            Ok(Progress::Waiting(lines)) => {
                show_changes(ctx.format, &mut shown, &lines);
                last = lines;
                poll_error = None;
            }
            // The leader may move during a rollout: keep polling until the deadline.
            Err(e) => {
                let msg = format!("{e:#}");
                if poll_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, "polling the rollout failed; retrying");
                }
                poll_error = Some(msg);
            }
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(timeout_message(
                &reply.stack,
                timeout,
                &last,
                poll_error.as_deref()
            )));
        }
    }
}

/// What the controller made of a failed rollout (paused, rolling back), as a suffix for
/// the failure message. It decides within a reconcile pass; wait a little for it.
async fn rollout_outcome(ctx: &mut Ctx, stack: &str) -> String {
    for _ in 0..10 {
        let services = ctx
            .client
            .call(|mut c| async move { c.services(ServicesRequest {}).await })
            .await;
        if let Ok(reply) = services {
            let decided: Vec<String> = reply
                .services
                .iter()
                .filter(|s| s.stack == stack)
                .filter(|s| {
                    s.rollout.starts_with("paused") || s.rollout.starts_with("rolling back")
                })
                .map(|s| match s.rollout.as_str() {
                    "rolling back" => format!(
                        "{}: rolling back to its previous spec (generation {})",
                        s.name, s.generation
                    ),
                    other => format!("{}: {other}", s.name),
                })
                .collect();
            if !decided.is_empty() {
                return format!("\n{}", decided.join("\n"));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    String::new()
}

/// One look at the rollout; the first one that succeeds also records prior failures.
async fn poll(
    ctx: &mut Ctx,
    ps: &PsRequest,
    generations: &mut Generations,
    first: &mut bool,
) -> anyhow::Result<Progress> {
    let services = ctx
        .client
        .call(|mut c| async move { c.services(ServicesRequest {}).await })
        .await
        .context("list services")?;
    let tasks = ctx
        .client
        .call(|mut c| {
            let ps = ps.clone();
            async move { c.ps(ps).await }
        })
        .await
        .context("list tasks")?;
    if std::mem::take(first) {
        generations.prior_failures = prior_failures(&tasks.tasks, generations);
    }
    Ok(progress(&services.services, &tasks.tasks, generations))
}

/// Prints each line that differs from what was last shown for its service: on stdout,
/// or on stderr when stdout is reserved for the JSON result.
fn show_changes(format: Format, shown: &mut BTreeMap<String, String>, lines: &[ServiceProgress]) {
    let mut out: Box<dyn Write> = match format {
        Format::Table => Box::new(std::io::stdout().lock()),
        Format::Json => Box::new(std::io::stderr().lock()),
    };
    for l in changed(shown, lines) {
        // A closed pipe must not abort the rollout watch.
        let _ = writeln!(out, "{l}");
    }
    let _ = out.flush();
}

/// The lines that differ from the last ones shown, recording them as shown.
fn changed(shown: &mut BTreeMap<String, String>, lines: &[ServiceProgress]) -> Vec<String> {
    let mut out = Vec::new();
    for l in lines {
        if shown.get(&l.service) != Some(&l.line) {
            shown.insert(l.service.clone(), l.line.clone());
            out.push(l.line.clone());
        }
    }
    out
}

fn timeout_message(
    stack: &str,
    timeout: Duration,
    last: &[ServiceProgress],
    poll_error: Option<&str>,
) -> String {
    let waiting: Vec<&str> = last
        .iter()
        .filter(|l| !l.done)
        .map(|l| l.line.as_str())
        .collect();
    let mut msg = format!(
        "deploy of stack {stack} timed out after {}s",
        timeout.as_secs()
    );
    if !waiting.is_empty() {
        msg.push_str(&format!(" waiting for {}", waiting.join("; ")));
    }
    if let Some(e) = poll_error {
        msg.push_str(&format!(" (last poll failed: {e})"));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::tests::p;

    #[test]
    fn only_changes_are_shown() {
        let mut shown = BTreeMap::new();
        let first = [
            p("web", "web: 0/2 healthy", false),
            p("worker", "worker: 0/1 running", false),
        ];
        assert_eq!(
            changed(&mut shown, &first),
            vec![
                "web: 0/2 healthy".to_string(),
                "worker: 0/1 running".to_string()
            ]
        );
        assert_eq!(changed(&mut shown, &first), Vec::<String>::new());
        let second = [
            p("web", "web: 1/2 healthy (1 starting)", false),
            p("worker", "worker: 0/1 running", false),
        ];
        assert_eq!(
            changed(&mut shown, &second),
            vec!["web: 1/2 healthy (1 starting)".to_string()]
        );
    }

    #[test]
    fn timeouts_list_what_was_awaited() {
        let last = [
            p("web", "web: 2/2 healthy", true),
            p(
                "worker",
                "worker: 0/1 running (1 pending: no node fits)",
                false,
            ),
        ];
        assert_eq!(
            timeout_message("hello", Duration::from_secs(5), &last, None),
            "deploy of stack hello timed out after 5s waiting for worker: 0/1 running (1 pending: no node fits)"
        );
        assert_eq!(
            timeout_message("hello", Duration::from_secs(5), &[], Some("cannot reach")),
            "deploy of stack hello timed out after 5s (last poll failed: cannot reach)"
        );
    }
}

#[cfg(test)]
mod image_tests;
