//! `shoal stats [SERVICE] [-f]`: CPU, memory and network of every replica as its agent
//! last measured it, and the GPUs, like `docker stats`. Prints once and exits; `-f`
//! prints again every [`shoal_proto::STATS_INTERVAL_MS`] (as often as agents measure)
//! until SIGINT/SIGTERM.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use shoal_proto::pb::{StatsReply, StatsRequest};

use super::Ctx;
use crate::args::Format;
use crate::output;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// `STACK/SERVICE`, or `SERVICE` alone where that is unambiguous. Default: every service.
    pub service: Option<String>,
    /// Keep printing fresh figures every 5 s (Ctrl-C ends it). With `--format json`, one
    /// JSON array per line.
    #[arg(short, long)]
    pub follow: bool,
}

pub async fn run(args: StatsArgs, ctx: &mut Ctx) -> anyhow::Result<()> {
    let req = StatsRequest {
        service: args.service.clone().unwrap_or_default(),
        history: false,
    };
    if !args.follow {
        let reply = fetch(ctx, &req).await?;
        return output::emit(ctx.format, output::stats::json(&reply.replicas), || {
            output::stats::table(&reply)
        });
    }
    let clear = ctx.format == Format::Table && std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(shoal_proto::STATS_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = crate::signal::terminated();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tick.tick() => {}
        }
        let reply = tokio::select! {
            _ = &mut stop => return Ok(()),
            r = fetch(ctx, &req) => r?,
        };
        let text = refresh(ctx.format, &reply, clear)?;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("write the stats")?;
    }
}

/// One refresh of `-f`: a JSON array on one line, or the table (after clearing a
/// terminal's screen, else after a blank line).
pub fn refresh(format: Format, reply: &StatsReply, clear: bool) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => {
            let mut line = serde_json::to_string(&output::stats::json(&reply.replicas))?;
            line.push('\n');
            line
        }
        Format::Table if clear => format!("\x1b[2J\x1b[H{}", output::stats::table(reply)),
        Format::Table => format!("{}\n", output::stats::table(reply)),
    })
}

/// The leader's figures (NOT_FOUND names an unknown service).
pub async fn fetch(ctx: &mut Ctx, req: &StatsRequest) -> anyhow::Result<StatsReply> {
    let what = match req.service.as_str() {
        "" => "read the cluster's stats".to_string(),
        s => format!("read the stats of {s}"),
    };
    ctx.client
        .call(|mut c| {
            let req = req.clone();
            async move { c.stats(req).await }
        })
        .await
        .context(what)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shoal_proto::pb::{self, ReplicaStats};

    use super::*;
    use crate::error::{exit_code, render, EXIT_USAGE};
    use crate::fake_control::{lock, served, FakeVolumes};

    fn replica(service: &str, slot: u64) -> ReplicaStats {
        ReplicaStats {
            stack: "app".into(),
            service: service.into(),
            task: format!("t{slot}"),
            slot,
            node: "node-a".into(),
            cpu_percent: 3.0,
            memory_bytes: 1 << 20,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn asks_the_leader_for_the_named_service_and_prints_its_rows() {
        let fake = Arc::new(FakeVolumes::default());
        *lock(&fake.stats) = pb::StatsReply {
            replicas: vec![replica("web", 1), replica("web", 2)],
            ..Default::default()
        };
        // Through a follower, which points at the leader.
        let mut f = served(fake, true).await;
        let req = StatsRequest {
            service: "web".into(),
            history: false,
        };
        let reply = fetch(&mut f.ctx, &req).await.unwrap();
        assert_eq!(reply.replicas.len(), 2);
        assert_eq!(lock(&f.fake.stats_asked).as_slice(), &[req]);
        let args = StatsArgs {
            service: Some("web".into()),
            follow: false,
        };
        run(args, &mut f.ctx).await.unwrap();
        let line = refresh(Format::Json, &reply, false).unwrap();
        assert_eq!(line.lines().count(), 1);
        let rows: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(rows[1]["slot"], 2);
        assert_eq!(rows[1]["memory_bytes"], 1 << 20);
        let table = refresh(Format::Table, &reply, true).unwrap();
        assert!(table.starts_with("\x1b[2J\x1b[HSERVICE"), "{table:?}");
        assert!(table.contains("app/web  total  1 node"), "{table}");
    }

    #[tokio::test]
    async fn an_unknown_service_is_a_usage_error_naming_it() {
        let fake = Arc::new(FakeVolumes::default());
        let mut f = served(fake, false).await;
        let args = StatsArgs {
            service: Some("nope".into()),
            follow: false,
        };
        let err = run(args, &mut f.ctx).await.unwrap_err();
        assert_eq!(exit_code(&err), EXIT_USAGE);
        assert_eq!(
            render(&err),
            "error: read the stats of nope: no service named nope"
        );
    }
}
