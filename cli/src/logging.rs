//! Logs go to stderr; `SHOAL_LOG`, else `RUST_LOG`, picks the filter. Server roles log
//! at `info` by default, client commands only at `warn` so their output stays clean.

use tracing_subscriber::EnvFilter;

pub fn init(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter = ["SHOAL_LOG", "RUST_LOG"].iter().find_map(|var| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (var, v))
    });
    let filter = match filter {
        Some((var, spec)) => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("warning: ignoring {var}={spec}: {e}");
            EnvFilter::new(default)
        }),
        None => EnvFilter::new(default),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(server)
        .init();
}
