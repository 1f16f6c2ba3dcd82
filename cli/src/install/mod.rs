//! `shoal install controller|agent [FLAGS]` and `shoal uninstall [controller|agent]`:
//! run a role as a systemd service on this machine.
//!
//! - [`flags`]: the role's flags, checked with `shoal controller`/`shoal agent`'s own
//!   clap definitions, plus the service defaults (pure).
//! - [`unit`]: the unit and environment file texts (pure).
//! - [`systemd`]: the steps (write, remove, `systemctl`) planned purely and applied.
//!
//! Installing writes `/etc/shoal/ROLE.env` (mode 0600: `SHOAL_ARGS`, the flags, and
//! `SHOAL_TOKEN`) and `/etc/systemd/system/shoal-ROLE.service` (running this very
//! binary, by its absolute path), then `systemctl daemon-reload` and `enable --now`.
//! `--root DIR` writes under DIR and runs no `systemctl` (packaging, tests); `--dry-run`
//! prints the files. Where systemd is not the init system nothing is written: the error
//! (exit 1) shows the files to adapt to the service manager in use. The environment
//! variable `SHOAL_SYSTEMD_RUN_DIR` (test hook) replaces `/run/systemd/system` in that
//! check. Uninstalling never touches data directories.

mod flags;
mod systemd;
mod unit;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::error::UsageError;
use systemd::Installed;

/// The roles that run as a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Controller,
    Agent,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Controller => "controller",
            Role::Agent => "agent",
        })
    }
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Write the files under DIR instead of / and run no systemctl (packaging, tests).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print the files that would be written, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// `controller` or `agent`, then the flags of `shoal controller` or `shoal agent`
    /// (see their --help) as the service will run it. Defaults: controller --data-dir
    /// /var/lib/shoal/controller --listen 0.0.0.0:7370; agent --data-dir
    /// /var/lib/shoal/agent --name HOSTNAME. --root and --dry-run may also stand here.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ROLE [FLAGS]"
    )]
    pub role_and_flags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Only this role (default: both).
    pub role: Option<Role>,
    /// Remove the files under DIR instead of / and run no systemctl.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// `shoal install`.
pub fn install(args: InstallArgs) -> anyhow::Result<()> {
    let (rest, root, dry_run) = flags::take_install_options(&args.role_and_flags)?;
    let (root, dry_run) = (root.or(args.root), dry_run || args.dry_run);
    let Some((role, given)) = rest.split_first() else {
        return Err(UsageError("shoal install needs a role: controller or agent".into()).into());
    };
    let role = Role::from_str(role, false).map_err(|_| {
        UsageError(format!(
            "shoal install: `{role}` is not a role: give controller or agent, then its flags"
        ))
    })?;
    // `shoal install agent --help` shows the flags the service can be given.
    if let Err(e) = flags::parse_as(role, given, None) {
        if matches!(
            e.kind(),
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
        ) {
            e.print().context("print help")?;
            return Ok(());
        }
    }
    let hostname = match role {
        Role::Agent => crate::commands::hostname()?,
        Role::Controller => String::new(),
    };
    let service = flags::resolve(role, given, &hostname)?;
    let exe = std::env::current_exe().context("find the path of the running shoal binary")?;
    let files = unit::render(role, &exe, &service);
    let stdout = &mut std::io::stdout().lock();

    if dry_run {
        let root = root.as_deref().unwrap_or(Path::new("/"));
        write!(stdout, "{}", show(role, &files, root))?;
        return Ok(());
    }
    let systemctl = match &root {
        Some(_) => false,
        None if systemd::running() => true,
        None => {
            let token = match &service.token {
                Some(t) => format!("SHOAL_TOKEN={t} "),
                None => String::new(),
            };
            return Err(anyhow::anyhow!(
                "systemd is not running on this machine: run `{token}{} {role} {}` under \
                 your service manager; the unit shoal would install is:\n\n{}",
                exe.display(),
                service.args.join(" "),
                show(role, &files, Path::new("/"))
            ));
        }
    };
    let root = root.unwrap_or_else(|| PathBuf::from("/"));
    let replacing = root.join(unit::unit_path(role)).exists();
    let steps = systemd::plan_install(role, &files, &root, systemctl, replacing);
    systemd::apply(&steps, &mut systemd::Real, stdout)
        .with_context(|| format!("install shoal {role}"))?;
    let name = unit::unit_name(role);
    if systemctl {
        writeln!(
            stdout,
            "{name} is enabled and started: `systemctl status {name}`, `journalctl -u {name} -f`"
        )?;
    } else {
        writeln!(stdout, "systemctl was not run (--root)")?;
    }
    writeln!(
        stdout,
        "it runs {} {role} with data in {}",
        exe.display(),
        service.data_dir.display()
    )?;
    Ok(())
}

/// `shoal uninstall`.
pub fn uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let roles = match args.role {
        Some(r) => vec![r],
        None => vec![Role::Controller, Role::Agent],
    };
    let stdout = &mut std::io::stdout().lock();
    let (installed, absent): (Vec<Installed>, Vec<Installed>) = roles
        .iter()
        .map(|r| Installed::look(*r, &root))
        .partition(|i| i.unit || i.env);
    for i in &absent {
        writeln!(
            stdout,
            "{} is not installed (no {})",
            unit::unit_name(i.role),
            root.join(unit::unit_path(i.role)).display()
        )?;
    }
    // Read before the files go: where each role kept its data.
    let kept: Vec<(Role, PathBuf)> = installed
        .iter()
        .map(|i| (i.role, data_dir_of(i.role, &root)))
        .collect();
    let systemctl = args.root.is_none() && systemd::running();
    if args.root.is_none() && !systemctl && !installed.is_empty() {
        writeln!(
            stdout,
            "systemd is not running on this machine: only the files are removed"
        )?;
    }
    let steps = systemd::plan_uninstall(&installed, &root, systemctl);
    systemd::apply(&steps, &mut systemd::Real, stdout).context("uninstall shoal")?;
    for (role, dir) in kept {
        writeln!(
            stdout,
            "kept the {role}'s data in {} (remove it yourself once it is no longer needed)",
            dir.display()
        )?;
    }
    Ok(())
}

/// The data directory in an installed role's environment file, else the default.
fn data_dir_of(role: Role, root: &Path) -> PathBuf {
    let from_env = std::fs::read_to_string(root.join(unit::env_path(role)))
        .ok()
        .and_then(|text| unit::args_in_env(&text))
        .and_then(|args| flags::data_dir_in(&args));
    from_env.unwrap_or_else(|| {
        PathBuf::from(match role {
            Role::Controller => flags::CONTROLLER_DATA_DIR,
            Role::Agent => flags::AGENT_DATA_DIR,
        })
    })
}

/// Both files with a `# PATH` header each, as `--dry-run` and the no-systemd error show.
fn show(role: Role, files: &unit::Files, root: &Path) -> String {
    format!(
        "# {}\n{}\n# {}\n{}",
        root.join(unit::unit_path(role)).display(),
        files.unit,
        root.join(unit::env_path(role)).display(),
        files.env
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uninstall_reads_the_data_dir_from_the_env_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            data_dir_of(Role::Agent, dir.path()),
            PathBuf::from(flags::AGENT_DATA_DIR)
        );
        let service = flags::ServiceFlags {
            args: vec![
                "--name".into(),
                "n".into(),
                "--data-dir".into(),
                "/srv/agent".into(),
            ],
            token: Some("t".into()),
            data_dir: PathBuf::from("/srv/agent"),
        };
        let files = unit::render(Role::Agent, Path::new("/s"), &service);
        let env = dir.path().join(unit::env_path(Role::Agent));
        std::fs::create_dir_all(env.parent().unwrap()).unwrap();
        std::fs::write(&env, files.env).unwrap();
        assert_eq!(
            data_dir_of(Role::Agent, dir.path()),
            PathBuf::from("/srv/agent")
        );
    }
}
