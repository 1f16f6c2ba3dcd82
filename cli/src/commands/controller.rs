//! `shoal controller`: one member of the Raft group, until SIGINT/SIGTERM.

use anyhow::Context;
use futures::FutureExt;
use shoal_controller::{Bootstrap, ControllerConfig};
use tokio_util::sync::CancellationToken;

use crate::args::ControllerArgs;
use crate::signal;

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    if args.token.is_some() {
        tracing::warn!("--token is accepted but not checked yet (join tokens come with mTLS)");
    }
    let bootstrap = match args.join {
        Some(addr) => Bootstrap::Join(addr),
        None => Bootstrap::Init,
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create the data directory {}", args.data_dir.display()))?;
    // `new` fills what the command line does not set (e.g. the node grace period).
    let mut cfg = ControllerConfig::new(args.data_dir, args.listen);
    cfg.advertise = args.advertise;
    cfg.bootstrap = bootstrap;
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
