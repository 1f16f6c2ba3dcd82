//! The flags an installed service runs with: what the user gave after `shoal install
//! controller|agent`, checked with the very clap definitions `shoal controller` and
//! `shoal agent` parse (so a flag added there works here with no change), plus the
//! defaults a machine-wide service needs. Pure: no file is read or written.

use std::path::{Path, PathBuf};

use clap::Parser;

use super::Role;
use crate::args::{Cli, Command};
use crate::error::UsageError;

/// Where an installed controller keeps its Raft log and state unless `--data-dir` says.
pub const CONTROLLER_DATA_DIR: &str = "/var/lib/shoal/controller";
/// Where an installed agent keeps its state unless `--data-dir` says.
pub const AGENT_DATA_DIR: &str = "/var/lib/shoal/agent";
/// An installed controller serves other machines, so it listens on every address.
pub const CONTROLLER_LISTEN: &str = "0.0.0.0:7370";

/// The command line of an installed service, split the way the environment file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFlags {
    /// Every flag but the token, in order: the defaults shoal added, then the user's.
    pub args: Vec<String>,
    /// `--token T`, kept out of `args` so that it is passed as `SHOAL_TOKEN` (which both
    /// roles read) and never shows in the process's command line (`ps`).
    pub token: Option<String>,
    /// The data directory the service uses, for `shoal uninstall` to say it is kept.
    pub data_dir: PathBuf,
}

/// Checks `flags` as `shoal ROLE FLAGS` and adds the service defaults: a usage error
/// (exit 2) names the flag and what to do. `hostname` names an agent that was given no
/// `--name`, so that the node keeps its name if the machine's hostname changes later.
pub fn resolve(role: Role, flags: &[String], hostname: &str) -> anyhow::Result<ServiceFlags> {
    if let Some(bad) = flags.iter().find(|f| !word_safe(f)) {
        return Err(UsageError(format!(
            "shoal install {role}: `{bad}` holds a space, a quote or a backslash: systemd \
             splits the service's flags at spaces, so no flag or value may contain one"
        ))
        .into());
    }
    let mut args: Vec<String> = Vec::new();
    let mut default = |flag: &str, value: &str| {
        if !has_flag(flags, flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    };
    match role {
        Role::Controller => {
            default("--data-dir", CONTROLLER_DATA_DIR);
            default("--listen", CONTROLLER_LISTEN);
        }
        Role::Agent => {
            default("--data-dir", AGENT_DATA_DIR);
            default("--name", hostname);
        }
    }
    let (user, token) = take_token(flags)?;
    args.extend(user);

    let parsed = parse_as(role, &args, token.as_deref()).map_err(|e| {
        // clap's own text (what is wrong, the usage line) without its `error: ` prefix,
        // which `main` adds.
        let text = e.to_string();
        let text = text.trim_start_matches("error: ").trim_end();
        UsageError(format!("shoal install {role}: {text}"))
    })?;
    let data_dir = match (role, parsed) {
        (Role::Controller, Command::Controller(c)) => {
            if c.join.is_some() && token.is_none() {
                return usage(
                    role,
                    "--join needs --token T among the flags (`shoal token show controller`): \
                     the service does not see your shell's SHOAL_TOKEN",
                );
            }
            let everywhere = c.listen.is_some_and(|l| l.ip().is_unspecified());
            if everywhere && c.advertise.is_none() {
                return usage(
                    role,
                    "a controller listening on every address needs --advertise HOST:PORT, \
                     the address other machines reach it at",
                );
            }
            c.data_dir
                .unwrap_or_else(|| PathBuf::from(CONTROLLER_DATA_DIR))
        }
        (Role::Agent, Command::Agent(a)) => {
            if !has_flag(&args, "--addr") {
                return usage(
                    role,
                    "--addr ADDR[,ADDR..] is needed: the controllers this agent registers with",
                );
            }
            for p in [a.gpu_inventory.as_deref(), a.secrets_dir.as_deref()]
                .into_iter()
                .flatten()
            {
                absolute(role, p)?;
            }
            a.data_dir
        }
        _ => return usage(role, "the flags did not parse as this role's"),
    };
    absolute(role, &data_dir)?;
    Ok(ServiceFlags {
        args,
        token,
        data_dir,
    })
}

/// Parses `shoal ROLE ARGS [--token T]` with the CLI's own definitions. Help and
/// version requests come back as errors too: the caller prints them.
pub fn parse_as(role: Role, args: &[String], token: Option<&str>) -> Result<Command, clap::Error> {
    let token = token.map(|t| ["--token".to_string(), t.to_string()]);
    let argv = ["shoal".to_string(), role.to_string()]
        .into_iter()
        .chain(args.iter().cloned())
        .chain(token.into_iter().flatten());
    Cli::try_parse_from(argv).map(|cli| cli.command)
}

/// `--root DIR` and `--dry-run` taken out of the flags wherever they stand: clap leaves
/// them among the role's flags once those have begun. Neither role has such a flag.
pub fn take_install_options(
    flags: &[String],
) -> anyhow::Result<(Vec<String>, Option<PathBuf>, bool)> {
    let (mut rest, mut root, mut dry_run) = (Vec::new(), None, false);
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        if f == "--dry-run" {
            dry_run = true;
        } else if f == "--root" {
            let dir = it
                .next()
                .ok_or_else(|| UsageError("shoal install: --root needs a directory".into()))?;
            root = Some(PathBuf::from(dir));
        } else if let Some(dir) = f.strip_prefix("--root=") {
            root = Some(PathBuf::from(dir));
        } else {
            rest.push(f.clone());
        }
    }
    Ok((rest, root, dry_run))
}

/// The value of `--data-dir` in a command line as the environment file holds it.
pub fn data_dir_in(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--data-dir" {
            return it.next().map(PathBuf::from);
        }
        if let Some(d) = a.strip_prefix("--data-dir=") {
            return Some(PathBuf::from(d));
        }
    }
    None
}

/// The flags without `--token T` / `--token=T`, and the token.
fn take_token(flags: &[String]) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let (mut rest, mut token) = (Vec::new(), None);
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        if f == "--token" {
            let t = it
                .next()
                .ok_or_else(|| UsageError("shoal install: --token needs a value".into()))?;
            token = Some(t.clone());
        } else if let Some(t) = f.strip_prefix("--token=") {
            token = Some(t.to_string());
        } else {
            rest.push(f.clone());
        }
    }
    Ok((rest, token))
}

fn has_flag(flags: &[String], flag: &str) -> bool {
    flags
        .iter()
        .any(|f| f == flag || f.strip_prefix(flag).is_some_and(|r| r.starts_with('=')))
}

/// Whether systemd's whitespace splitting of `$SHOAL_ARGS` gives `word` back unchanged
/// (newer systemd also removes quotes and backslashes there, older does not).
fn word_safe(word: &str) -> bool {
    !word.is_empty()
        && !word
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'))
}

fn absolute(role: Role, path: &Path) -> anyhow::Result<()> {
    if path.is_relative() {
        return usage(
            role,
            &format!(
                "{} is a relative path: the service runs in /, give an absolute one",
                path.display()
            ),
        );
    }
    Ok(())
}

fn usage<T>(role: Role, msg: &str) -> anyhow::Result<T> {
    Err(UsageError(format!("shoal install {role}: {msg}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn usage_text(r: anyhow::Result<ServiceFlags>) -> String {
        let e = r.unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
        format!("{e:#}")
    }

    #[test]
    fn controller_defaults_come_first_and_the_token_is_taken_out() {
        let f = resolve(
            Role::Controller,
            &v(&[
                "--advertise",
                "10.0.0.2:7370",
                "--join",
                "10.0.0.1:7370",
                "--token=T1",
            ]),
            "host",
        )
        .unwrap();
        assert_eq!(
            f.args,
            v(&[
                "--data-dir",
                CONTROLLER_DATA_DIR,
                "--listen",
                CONTROLLER_LISTEN,
                "--advertise",
                "10.0.0.2:7370",
                "--join",
                "10.0.0.1:7370"
            ])
        );
        assert_eq!(f.token.as_deref(), Some("T1"));
        assert_eq!(f.data_dir, PathBuf::from(CONTROLLER_DATA_DIR));
    }

    #[test]
    fn given_flags_replace_the_defaults() {
        let f = resolve(
            Role::Controller,
            &v(&["--data-dir=/srv/c", "--listen", "10.0.0.1:7370", "--init"]),
            "host",
        )
        .unwrap();
        assert_eq!(
            f.args,
            v(&["--data-dir=/srv/c", "--listen", "10.0.0.1:7370", "--init"])
        );
        assert_eq!(f.data_dir, PathBuf::from("/srv/c"));
        let a = resolve(
            Role::Agent,
            &v(&[
                "--addr",
                "c1:7370,c2:7370",
                "--token",
                "T2",
                "--labels",
                "zone=a",
            ]),
            "host-a",
        )
        .unwrap();
        assert_eq!(
            a.args,
            v(&[
                "--data-dir",
                AGENT_DATA_DIR,
                "--name",
                "host-a",
                "--addr",
                "c1:7370,c2:7370",
                "--labels",
                "zone=a"
            ])
        );
        assert_eq!(a.token.as_deref(), Some("T2"));
    }

    #[test]
    fn what_the_service_could_not_run_with_is_refused() {
        let cases: &[(Role, &[&str], &str)] = &[
            (Role::Controller, &["--init", "--bogus"], "--bogus"),
            (Role::Controller, &["--listen", "10.0.0.1:7370"], "--init"),
            (Role::Controller, &["--join", "a:1"], "--join needs --token"),
            (Role::Controller, &["--init"], "needs --advertise"),
            (
                Role::Controller,
                &["--init", "--listen", "x", "--advertise", "a:1"],
                "--listen",
            ),
            // `remove` is a client command; --data-dir and --listen (defaults) exclude it.
            (
                Role::Controller,
                &["remove", "3"],
                "subcommand 'remove' cannot be used",
            ),
            (Role::Agent, &["--name", "n"], "--addr"),
            (
                Role::Agent,
                &["--addr", "a:1", "--labels", "k=a b"],
                "a space",
            ),
            (
                Role::Agent,
                &["--addr", "a:1", "--data-dir", "rel"],
                "relative",
            ),
            (
                Role::Agent,
                &["--addr", "a:1", "--gpu-inventory", "g.json"],
                "relative",
            ),
        ];
        for (role, flags, says) in cases {
            let msg = usage_text(resolve(*role, &v(flags), "h"));
            assert!(msg.contains(says), "{flags:?}: {msg}");
        }
    }

    #[test]
    fn install_options_are_found_anywhere() {
        let (rest, root, dry) = take_install_options(&v(&[
            "--init",
            "--root",
            "/tmp/r",
            "--advertise",
            "a:1",
            "--dry-run",
        ]))
        .unwrap();
        assert_eq!(rest, v(&["--init", "--advertise", "a:1"]));
        assert_eq!(root, Some(PathBuf::from("/tmp/r")));
        assert!(dry);
        let (_, root, dry) = take_install_options(&v(&["--root=/x"])).unwrap();
        assert_eq!((root, dry), (Some(PathBuf::from("/x")), false));
        assert!(take_install_options(&v(&["--root"])).is_err());
    }

    #[test]
    fn data_dir_is_read_back() {
        assert_eq!(
            data_dir_in(&v(&["--name", "n", "--data-dir", "/d"])),
            Some("/d".into())
        );
        assert_eq!(data_dir_in(&v(&["--data-dir=/e"])), Some("/e".into()));
        assert_eq!(data_dir_in(&v(&["--name", "n"])), None);
    }
}
