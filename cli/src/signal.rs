//! Running server roles until SIGINT/SIGTERM.
//!
//! The first signal cancels the shared token and each role shuts down cleanly (the
//! containers keep running); a second one exits at once.

use anyhow::anyhow;
use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Resolves on SIGINT or SIGTERM.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops shoal");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs `roles` until a signal or until one of them stops; then cancels `shutdown` and
/// waits for all. A role that fails, or stops before shutdown was asked, is an error.
pub async fn supervise(
    roles: Vec<(&'static str, BoxFuture<'static, anyhow::Result<()>>)>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut set = JoinSet::new();
    for (name, role) in roles {
        set.spawn(async move { (name, role.await) });
    }
    let token = shutdown.clone();
    let signals = tokio::spawn(async move {
        tokio::select! {
            _ = terminated() => {}
            _ = token.cancelled() => return,
        }
        tracing::info!("shutting down (again to force)");
        token.cancel();
        terminated().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        let err = match joined {
            Ok((_, Ok(()))) if shutdown.is_cancelled() => None,
            Ok((name, Ok(()))) => Some(anyhow!("the {name} stopped unexpectedly")),
            Ok((name, Err(e))) => Some(e.context(format!("the {name} failed"))),
            Err(e) => Some(anyhow!("a role panicked: {e}")),
        };
        if let Some(e) = err {
            if first_error.is_none() {
                first_error = Some(e);
            }
            shutdown.cancel();
        }
    }
    signals.abort();
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn a_failing_role_stops_the_others() {
        let shutdown = CancellationToken::new();
        let waiter = shutdown.clone();
        let err = supervise(
            vec![
                (
                    "agent",
                    async { Err(anyhow!("docker is not running")) }.boxed(),
                ),
                (
                    "controller",
                    async move {
                        waiter.cancelled().await;
                        Ok(())
                    }
                    .boxed(),
                ),
            ],
            shutdown.clone(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "the agent failed: docker is not running"
        );
        assert!(shutdown.is_cancelled());
    }

    #[tokio::test]
    async fn cancelled_roles_end_cleanly() {
        let shutdown = CancellationToken::new();
        let waiter = shutdown.clone();
        shutdown.cancel();
        supervise(
            vec![(
                "controller",
                async move {
                    waiter.cancelled().await;
                    Ok(())
                }
                .boxed(),
            )],
            shutdown,
        )
        .await
        .unwrap();
    }
}
