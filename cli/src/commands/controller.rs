//! `shoal controller`: one member of the Raft group, until SIGINT/SIGTERM; and
//! `shoal controller remove ID`, a client command.

use anyhow::Context;
use futures::FutureExt;
use shoal_controller::raft::RaftTimings;
use shoal_controller::{Bootstrap, ControllerConfig};
use shoal_proto::pb::RemoveControllerRequest;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::args::{ControllerArgs, ControllerCommand};
use crate::error::UsageError;
use crate::signal;

pub async fn run(args: ControllerArgs, ctx: impl FnOnce() -> Ctx) -> anyhow::Result<()> {
    if let Some(ControllerCommand::Remove { id }) = args.command {
        return remove(id, &mut ctx()).await;
    }
    if args.join.is_some() && args.token.is_none() {
        return Err(UsageError(
            "shoal controller --join needs --token T: run `shoal token show controller` against the cluster".into(),
        )
        .into());
    }
    let (Some(data_dir), Some(listen)) = (args.data_dir, args.listen) else {
        return Err(UsageError("shoal controller needs --data-dir and --listen".into()).into());
    };
    if args.heartbeat_ms == 0 || args.election_timeout_ms <= args.heartbeat_ms {
        return Err(UsageError(format!(
            "--election-timeout-ms ({}) must be larger than --heartbeat-ms ({}), which must not be 0",
            args.election_timeout_ms, args.heartbeat_ms
        ))
        .into());
    }
    if args.node_grace_ms < 500 {
        return Err(UsageError(format!(
            "--node-grace-ms ({}) must be at least 500: agents heartbeat every 250 ms",
            args.node_grace_ms
        ))
        .into());
    }
    let bootstrap = match args.join {
        Some(addr) => Bootstrap::Join(addr),
        None => Bootstrap::Init,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("create the data directory {}", data_dir.display()))?;
    // `new` fills what the command line does not set (e.g. the node grace period).
    let mut cfg = ControllerConfig::new(data_dir, listen);
    cfg.advertise = args.advertise;
    cfg.bootstrap = bootstrap;
    cfg.node_grace = std::time::Duration::from_millis(args.node_grace_ms);
    cfg.token = args.token;
    cfg.cert_ttl = args.cert_ttl;
    cfg.image_retention = args.image_retention;
    if args.pool.is_some() && !args.init {
        return Err(UsageError(
            "--pool is the new cluster's address pool: give it with --init (a joining controller takes the cluster's)".into(),
        )
        .into());
    }
    cfg.pool = args.pool;
    // The first admin credentials last as long (shortened for tests alike); the CLI
    // renews them like nodes renew theirs.
    cfg.admin_cert_ttl = args.cert_ttl;
    cfg.timings = RaftTimings {
        heartbeat_ms: args.heartbeat_ms,
        election_timeout_min_ms: args.election_timeout_ms,
        election_timeout_max_ms: args.election_timeout_ms + args.election_timeout_ms / 4,
        ..RaftTimings::default()
    };
    tracing::info!(listen = %cfg.listen, data_dir = %cfg.data_dir.display(), "starting controller");
    let shutdown = CancellationToken::new();
    signal::supervise(
        vec![(
            "controller",
            shoal_controller::run(cfg, shutdown.clone()).boxed(),
        )],
        shutdown,
    )
    .await
}

async fn remove(id: u64, ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.client
        .call(|mut c| async move { c.remove_controller(RemoveControllerRequest { id }).await })
        .await
        .with_context(|| format!("remove controller {id}"))?;
    println!("controller {id} removed");
    Ok(())
}
