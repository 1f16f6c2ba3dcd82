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
    if args.passphrase_file.is_some() && args.restore.is_none() {
        return Err(UsageError(
            "--passphrase-file goes with --restore FILE (the backup it opens)".into(),
        )
        .into());
    }
    let holds_controller = shoal_controller::membership::stored_id(&data_dir)?.is_some();
    let bootstrap = match (args.join, args.restore, args.force_new_cluster) {
        (Some(addr), _, _) => Bootstrap::Join(addr),
        // A data dir that holds a controller resumes; the backup is not read.
        (None, Some(file), _) if holds_controller => {
            tracing::warn!(dir = %data_dir.display(), backup = %file.display(), "the data dir already holds a controller: resuming it; --restore is not applied (give a new data dir to restore)");
            Bootstrap::Init
        }
        (None, Some(file), _) => Bootstrap::Restore(Box::new(super::cluster::open_backup(
            &file,
            args.passphrase_file.as_deref(),
        )?)),
        (None, None, true) => Bootstrap::ForceNewCluster,
        (None, None, false) => Bootstrap::Init,
    };
    if args.force_new_cluster && !holds_controller {
        return Err(UsageError(format!(
            "{} holds no controller: --force-new-cluster needs the data dir of a controller that survived (to start from a backup, use --restore FILE)",
            data_dir.display()
        ))
        .into());
    }
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
    cfg.metrics = args.metrics;
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
