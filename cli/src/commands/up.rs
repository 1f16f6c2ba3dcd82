//! `shoal up`: a one-node cluster in one process: a controller (`--init`) and an agent
//! on the local Docker, until SIGINT/SIGTERM. Containers keep running after it stops.
//! The controller's admin credentials (`D/controller/admin`) become the local CLI's
//! (~/.config/shoal/config), and the agent joins with the agent token.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use shoal_controller::{Bootstrap, ControllerConfig};
use shoal_tls::{ClientTls, CredentialFiles, Role};
use tokio_util::sync::CancellationToken;

use crate::args::{UpArgs, DEFAULT_ADDR};
use crate::signal;

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let name = match args.name {
        Some(n) => n,
        None => super::hostname()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("create the data directory {}", data_dir.display()))?;
    let local = local_addr(args.listen);
    let mut controller = ControllerConfig::new(data_dir.join("controller"), args.listen);
    controller.pool = args.pool.clone();
    controller.metrics = args.metrics;
    controller.bootstrap = Bootstrap::Init;
    let agent = shoal_agent::AgentConfig {
        controllers: vec![local.to_string()],
        name: name.clone(),
        data_dir: data_dir.join("agent"),
        docker: args.docker,
        advertise: None,
        labels: BTreeMap::new(),
        gpus: super::gpu_source(args.gpu_inventory.as_deref())?,
        secrets_dir: args.secrets_dir,
        metrics: args.agent_metrics,
        ..shoal_agent::AgentConfig::default()
    };
    let addr_flag = if local.to_string() == DEFAULT_ADDR {
        String::new()
    } else {
        format!(" --addr {local}")
    };
    // Bind before saying anything: a port in use is the most common first mistake.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "listen on {}: is another shoal already running? (choose another with --listen)",
                args.listen
            )
        })?;
    println!(
        "shoal is starting on {} as node {name} (data in {}); deploy with: shoal{addr_flag} deploy -c compose.yaml",
        args.listen,
        data_dir.display()
    );
    let shutdown = CancellationToken::new();
    let admin_dir = data_dir.join("controller").join("admin");
    let agent_run = run_agent(agent, admin_dir, local.to_string(), shutdown.clone());
    signal::supervise(
        vec![
            (
                "controller",
                shoal_controller::serve(controller, listener, shutdown.clone()).boxed(),
            ),
            ("agent", agent_run.boxed()),
        ],
        shutdown,
    )
    .await
}

/// How long `up` waits for its controller to write the admin credentials and answer.
const CONTROLLER_READY: Duration = Duration::from_secs(30);

/// The agent, once the controller can hand it a join token (first start only; later
/// it reuses its certificate). Also points the local CLI at the admin credentials.
async fn run_agent(
    mut agent: shoal_agent::AgentConfig,
    admin_dir: PathBuf,
    addr: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    let admin = loop {
        if let Ok(Some(c)) = CredentialFiles::load(&admin_dir) {
            break c;
        }
        if start.elapsed() > CONTROLLER_READY {
            anyhow::bail!(
                "the controller wrote no admin credentials to {} within {CONTROLLER_READY:?}",
                admin_dir.display()
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    configure_cli(&admin_dir, &addr);
    let agent_tls = agent.data_dir.join(shoal_agent::credentials::TLS_DIR);
    if CredentialFiles::load(&agent_tls)?.is_none() {
        let tls = ClientTls::from_credentials(&admin)?;
        let addrs = [addr];
        let token = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            t = shoal_tls::join::show_token(&addrs, &tls, Role::Agent, CONTROLLER_READY) => t?,
        };
        agent.token = Some(token);
    }
    shoal_agent::run(agent, shutdown).await
}

/// Saves the CLI config pointing at `admin_dir`, unless it points at another cluster.
fn configure_cli(admin_dir: &Path, addr: &str) {
    let dir = std::fs::canonicalize(admin_dir).unwrap_or_else(|_| admin_dir.to_path_buf());
    match crate::login::load_config() {
        Ok(Some(c)) if c.credentials != dir => {
            println!(
                "the CLI config points at other credentials ({}); use this cluster with --credentials {}",
                c.credentials.display(),
                dir.display()
            );
            return;
        }
        Err(e) => {
            println!(
                "{e:#}; use this cluster with --credentials {}",
                dir.display()
            );
            return;
        }
        _ => {}
    }
    let cfg = crate::login::CliConfig {
        addr: Some(addr.to_string()),
        credentials: dir.clone(),
    };
    match crate::login::save_config(&cfg) {
        Ok(path) => println!(
            "admin credentials in {}; the CLI uses them ({})",
            dir.display(),
            path.display()
        ),
        Err(e) => println!(
            "{e:#}; use this cluster with --credentials {}",
            dir.display()
        ),
    }
}

/// `$XDG_DATA_HOME/shoal`, else `~/.local/share/shoal`.
fn default_data_dir() -> anyhow::Result<PathBuf> {
    data_dir_from(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
}

fn data_dir_from(
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> anyhow::Result<PathBuf> {
    if let Some(x) = xdg.filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("shoal"));
    }
    match home.filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/shoal")),
        None => anyhow::bail!("neither XDG_DATA_HOME nor HOME is set: pass --data-dir"),
    }
}

/// The address a local client reaches a listener at (`0.0.0.0` means loopback).
fn local_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_defaults() {
        assert_eq!(
            data_dir_from(Some("/x".into()), Some("/home/u".into())).unwrap(),
            PathBuf::from("/x/shoal")
        );
        assert_eq!(
            data_dir_from(Some("".into()), Some("/home/u".into())).unwrap(),
            PathBuf::from("/home/u/.local/share/shoal")
        );
        assert!(data_dir_from(None, None).is_err());
    }

    #[test]
    fn local_addresses() {
        assert_eq!(
            local_addr("0.0.0.0:7370".parse().unwrap()),
            "127.0.0.1:7370".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            local_addr("[::]:1".parse().unwrap()),
            "[::1]:1".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            local_addr("10.0.0.1:7370".parse().unwrap()),
            "10.0.0.1:7370".parse::<SocketAddr>().unwrap()
        );
    }
}
