//! `shoal dashboard`: a web dashboard of the cluster, served from the CLI process.
//!
//! The dashboard is a view over the same `Control` RPCs the other client commands call,
//! made with this CLI's own credentials and addresses ([`crate::commands::Ctx`]), so it
//! adds no network-facing authentication of its own. That is also why it listens only on
//! loopback: anyone who can reach it reads the cluster as its admin.
//!
//! - [`server`]: the HTTP/1.1 server (hyper), routing, static files, the `Host` check.
//! - [`source`]: the cluster side: one [`crate::client::Client`] cloned per request or
//!   stream (following the leader as every command does), failures sorted into what a
//!   person must do about them.
//! - [`pages`]: each page's data loading and its rendering (maud, on the server).
//! - [`live`]: server-sent events: re-rendered live regions every second, log lines and
//!   events as they come.
//! - [`chart`]: inline SVG charts, pure.
//!
//! The browser side is `static/dashboard.js` (EventSource, replace or append HTML) and
//! `static/dashboard.css`, both embedded in the binary.

mod chart;
mod live;
mod pages;
mod server;
mod source;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pure;

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;

use crate::args::GlobalArgs;
use crate::error::UsageError;

/// Where the dashboard listens unless told otherwise (next to the controllers' 7370).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7380";

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Address to serve the dashboard on: a loopback address (127.0.0.1, ::1 or
    /// localhost) and a port, 0 for any free one.
    #[arg(long, default_value = DEFAULT_LISTEN, value_parser = parse_listen, value_name = "ADDR")]
    pub listen: SocketAddr,
}

/// `HOST:PORT` with HOST an IP address or `localhost` (127.0.0.1).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let spelled = match s.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => s.to_string(),
    };
    spelled.parse().map_err(|_| {
        format!("`{s}` is not an address to listen on: write HOST:PORT, e.g. 127.0.0.1:7380")
    })
}

/// Refuses an address other machines could reach: the dashboard has no login.
pub fn check_loopback(addr: SocketAddr) -> Result<(), UsageError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    Err(UsageError(format!(
        "--listen {addr} is not a loopback address: the dashboard reads the cluster with \
         this CLI's admin credentials and has no login of its own, so it listens only on \
         127.0.0.1, ::1 or localhost; to see it from another machine, tunnel it \
         (ssh -L {port}:127.0.0.1:{port} THIS-HOST)",
        port = addr.port()
    )))
}

/// Serves the dashboard until Ctrl-C or SIGTERM.
pub async fn run(args: DashboardArgs, global: GlobalArgs) -> anyhow::Result<()> {
    check_loopback(args.listen)?;
    let shared = Arc::new(source::Shared::new(global));
    // Renew the certificate when due, as every client command does first.
    if let Ok(resolved) = crate::login::resolve(shared.credentials()) {
        let mut client = shared.client();
        crate::login::renew_if_due(&mut client, &resolved).await;
    }
    // Say at once what is wrong with the credentials or the cluster; the pages say it
    // too, and recover by themselves once it is fixed.
    if let Err(failure) = source::Source::new(shared.clone()).check().await {
        eprintln!("shoal: warning: {}", failure.explain_line(&shared.addrs()));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                ": pass --listen 127.0.0.1:0 for any free port"
            } else {
                ""
            };
            anyhow::anyhow!("listen on {}: {e}{hint}", args.listen)
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| anyhow::anyhow!("the dashboard's listening address: {e}"))?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "dashboard: http://{local}/")?;
        out.flush()?;
    }
    tokio::select! {
        served = server::serve(listener, shared) => served,
        _ = crate::signal::terminated() => Ok(()),
    }
}
