//! One module per subcommand. Each takes its parsed arguments and returns an
//! `anyhow::Result`; `main` turns failures into exit codes.

pub mod agent;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod deploy;
pub mod events;
pub mod image;
pub mod login;
pub mod logs;
pub mod node;
pub mod nodes;
pub mod passphrase;
pub mod ps;
pub mod rebalance;
pub mod rm;
pub mod rollback;
pub mod scale;
pub mod secret;
pub mod services;
pub mod stats;
pub mod token;
pub mod up;
pub mod volume;

use crate::args::{Cli, ClusterCommand, Command, Format, GlobalArgs, DEFAULT_ADDR};
use crate::client::Client;
use crate::login::Resolved;

/// What every client command needs: the output format and a connection to the cluster.
pub struct Ctx {
    pub format: Format,
    pub client: Client,
}

impl Ctx {
    /// The client presents the resolved credentials ([`crate::login::resolve`]); a
    /// missing or broken credentials dir fails the first call, saying what to do. The
    /// saved address is used when neither `--addr` nor `SHOAL_ADDR` names one.
    fn new(global: &GlobalArgs) -> Ctx {
        Ctx::with(global, crate::login::resolve(global.credentials.as_deref()))
    }

    /// [`Ctx::new`], having renewed the credentials first when they are due.
    async fn ready(global: &GlobalArgs) -> Ctx {
        let resolved = crate::login::resolve(global.credentials.as_deref());
        let renew = resolved.as_ref().ok().cloned();
        let mut ctx = Ctx::with(global, resolved);
        if let Some(r) = renew {
            crate::login::renew_if_due(&mut ctx.client, &r).await;
        }
        ctx
    }

    pub(crate) fn with(global: &GlobalArgs, resolved: anyhow::Result<Resolved>) -> Ctx {
        let mut addrs = global.addr.clone();
        if let Ok(r) = &resolved {
            tracing::debug!(dir = %r.dir.display(), "credentials");
            let defaulted = addrs.0 == [DEFAULT_ADDR] && std::env::var_os("SHOAL_ADDR").is_none();
            if let (true, Some(saved)) = (defaulted, &r.addr) {
                if let Ok(a) = crate::args::parse_addrs(saved) {
                    addrs = a;
                }
            }
        }
        Ctx {
            format: global.format,
            client: Client::with_tls(
                &addrs,
                resolved.map(|r| r.tls).map_err(|e| format!("{e:#}")),
            ),
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Controller(args) => controller::run(args, || Ctx::new(&global)).await,
        Command::Agent(args) => agent::run(args, &global.addr).await,
        Command::Config(args) => config::run(args, global.format),
        Command::Deploy(args) => deploy::run(args, &mut Ctx::ready(&global).await).await,
        Command::Ps(args) => ps::run(args, &mut Ctx::ready(&global).await).await,
        Command::Services => services::run(&mut Ctx::ready(&global).await).await,
        Command::Stats(args) => stats::run(args, &mut Ctx::ready(&global).await).await,
        Command::Nodes => nodes::run(&mut Ctx::ready(&global).await).await,
        Command::Cluster {
            command: ClusterCommand::Status,
        } => cluster::run(&mut Ctx::ready(&global).await).await,
        Command::Cluster {
            command:
                ClusterCommand::Backup {
                    file,
                    passphrase_file,
                },
        } => {
            cluster::backup(
                &mut Ctx::ready(&global).await,
                &file,
                passphrase_file.as_deref(),
            )
            .await
        }
        Command::Logs(args) => logs::run(args, &mut Ctx::ready(&global).await).await,
        Command::Events(args) => events::run(args, &mut Ctx::ready(&global).await).await,
        Command::Scale(args) => scale::run(args, &mut Ctx::ready(&global).await).await,
        Command::Rm(args) => rm::run(args, &mut Ctx::ready(&global).await).await,
        Command::Rollback(args) => rollback::run(args, &mut Ctx::ready(&global).await).await,
        Command::Node { command } => node::run(command, &mut Ctx::ready(&global).await).await,
        Command::Rebalance(args) => rebalance::run(args, &mut Ctx::ready(&global).await).await,
        Command::Token { command } => token::run(command, &mut Ctx::ready(&global).await).await,
        Command::Secret { command } => secret::run(command, &mut Ctx::ready(&global).await).await,
        Command::Volume { command } => volume::run(command, &mut Ctx::ready(&global).await).await,
        Command::Image { command } => image::run(command, &mut Ctx::ready(&global).await).await,
        Command::Dashboard(args) => crate::dashboard::run(args, global).await,
        Command::Install(args) => crate::install::install(args),
        Command::Uninstall(args) => crate::install::uninstall(args),
        Command::Login => {
            let addr = global.addr.0.join(",");
            login::run(
                &mut Ctx::ready(&global).await,
                global.credentials.as_deref(),
                &addr,
            )
            .await
        }
    }
}

/// The machine's hostname, the default node name.
pub fn hostname() -> anyhow::Result<String> {
    let name = hostname::get().map_err(|e| anyhow::anyhow!("read this machine's hostname: {e}"))?;
    let name = name.to_string_lossy().into_owned();
    anyhow::ensure!(
        !name.is_empty(),
        "this machine's hostname is empty: pass --name"
    );
    Ok(name)
}

/// Where the agent's GPUs come from: `--gpu-inventory FILE`, checked now so that a bad
/// file is a usage error (exit 2) naming the file and the problem, else NVML.
pub fn gpu_source(
    inventory: Option<&std::path::Path>,
) -> anyhow::Result<shoal_agent::gpu::GpuSource> {
    let Some(file) = inventory else {
        return Ok(shoal_agent::gpu::GpuSource::Nvml);
    };
    match shoal_agent::gpu::file::FileInventory::load(file) {
        Ok(gpus) => {
            tracing::info!(file = %file.display(), gpus = gpus.len(), "GPUs from the inventory file");
            Ok(shoal_agent::gpu::GpuSource::File(file.to_path_buf()))
        }
        Err(e) => Err(crate::error::UsageError(e.to_string()).into()),
    }
}
