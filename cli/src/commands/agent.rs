//! `shoal agent`: this node's agent, until SIGINT/SIGTERM.

use anyhow::Context;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::args::{Addrs, AgentArgs};
use crate::signal;

pub async fn run(args: AgentArgs, controllers: &Addrs) -> anyhow::Result<()> {
    let name = match args.name {
        Some(n) => n,
        None => super::hostname()?,
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create the data directory {}", args.data_dir.display()))?;
    let cfg = shoal_agent::AgentConfig {
        controllers: controllers.0.clone(),
        name,
        data_dir: args.data_dir,
        docker: args.docker,
        advertise: args.advertise,
        labels: args.labels.map(|l| l.0).unwrap_or_default(),
        gpus: super::gpu_source(args.gpu_inventory.as_deref())?,
        token: args.token,
        metrics: args.metrics,
        gpu_mode: match args.gpu_cdi {
            Some(kind) => shoal_agent::runtime::GpuDeviceMode::Cdi(kind),
            None => shoal_agent::runtime::GpuDeviceMode::Nvidia,
        },
        secrets_dir: args.secrets_dir,
        // The agent's own defaults for what the command line does not set.
        ..shoal_agent::AgentConfig::default()
    };
    tracing::info!(node = %cfg.name, controllers = ?cfg.controllers, "starting agent");
    let shutdown = CancellationToken::new();
    signal::supervise(
        vec![("agent", shoal_agent::run(cfg, shutdown.clone()).boxed())],
        shutdown,
    )
    .await
}
