//! `shoal volume ...`: the named volumes the cluster knows (`STACK/NAME`, one copy per
//! node, or per slot).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use super::parse_duration;

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List the volumes the cluster knows: one row per copy (stack, volume, node).
    Ls {
        /// Only this stack's volumes.
        stack: Option<String>,
    },
    /// Every copy of one volume, on every node, with all that is known about it.
    Inspect {
        /// The volume (see `shoal volume ls`).
        #[arg(value_parser = parse_volume_ref, value_name = "STACK/NAME")]
        volume: VolumeRef,
    },
    /// Remove a volume's copies (refused while a replica uses it).
    Rm {
        /// The volume (see `shoal volume ls`).
        #[arg(value_parser = parse_volume_ref, value_name = "STACK/NAME")]
        volume: VolumeRef,
        /// Only the copy on this node.
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
    },
    /// Move a volume to another node: stop the replicas using it, copy it (checksummed;
    /// the source is kept), start the replicas on the new node.
    Move(VolumeMoveArgs),
    /// Write a volume's contents (a tar stream) to FILE (`-`: standard output).
    Backup {
        /// The volume (see `shoal volume ls`).
        #[arg(value_parser = parse_volume_ref, value_name = "STACK/NAME")]
        volume: VolumeRef,
        /// Where to write the tar (`-`: standard output).
        file: PathBuf,
        /// Read the copy on this node (default: the one in use).
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
    },
    /// Put a tar written by `shoal volume backup` (FILE, `-`: standard input) into a volume.
    Restore {
        /// The volume (see `shoal volume ls`).
        #[arg(value_parser = parse_volume_ref, value_name = "STACK/NAME")]
        volume: VolumeRef,
        /// The tar to restore (`-`: standard input).
        file: PathBuf,
        /// Restore on this node (default: where the volume is).
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct VolumeMoveArgs {
    /// The volume (see `shoal volume ls`).
    #[arg(value_parser = parse_volume_ref, value_name = "STACK/NAME")]
    pub volume: VolumeRef,
    /// The node to move it to.
    #[arg(long, value_name = "NODE")]
    pub to: String,
    /// Return once the controller started the move, without following it.
    #[arg(long)]
    pub detach: bool,
    /// Stop following the move after this long (it goes on), e.g. 90s, 30m, 2h.
    #[arg(long, default_value = "30m", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// `STACK/NAME`: a volume as Compose names it, in its stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRef {
    pub stack: String,
    pub name: String,
}

impl fmt::Display for VolumeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stack, self.name)
    }
}

/// `STACK/NAME`, each part non-empty and made of letters, digits, `-`, `_` and `.`.
pub fn parse_volume_ref(s: &str) -> Result<VolumeRef, String> {
    let valid = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match s.split_once('/') {
        Some((stack, name)) if valid(stack) && valid(name) => Ok(VolumeRef {
            stack: stack.to_string(),
            name: name.to_string(),
        }),
        _ => Err(format!(
            "`{s}` is not a volume: expected STACK/NAME (e.g. realapp/pgdata; see `shoal volume ls`)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::super::{Command, Format};
    use super::*;

    fn volume(args: &[&str]) -> VolumeCommand {
        let mut all = vec!["volume"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Command::Volume { command } => command,
            other => panic!("not a volume command: {other:?}"),
        }
    }

    fn vref(s: &str, n: &str) -> VolumeRef {
        VolumeRef {
            stack: s.into(),
            name: n.into(),
        }
    }

    #[test]
    fn volume_refs() {
        assert_eq!(
            parse_volume_ref("realapp/pgdata"),
            Ok(vref("realapp", "pgdata"))
        );
        assert_eq!(parse_volume_ref("a-b/c_d.1"), Ok(vref("a-b", "c_d.1")));
        for bad in ["pgdata", "/pgdata", "realapp/", "a/b/c", "a b/c", "", "/"] {
            assert!(parse_volume_ref(bad).is_err(), "{bad} parsed");
        }
        assert_eq!(vref("realapp", "pgdata").to_string(), "realapp/pgdata");
    }

    #[test]
    fn ls_and_inspect() {
        assert!(matches!(volume(&["ls"]), VolumeCommand::Ls { stack: None }));
        let cli = parse(&["volume", "ls", "realapp", "--format", "json"]).unwrap();
        assert_eq!(cli.global.format, Format::Json);
        assert!(matches!(
            cli.command,
            Command::Volume { command: VolumeCommand::Ls { stack: Some(s) } } if s == "realapp"
        ));
        assert!(matches!(
            volume(&["inspect", "realapp/pgdata"]),
            VolumeCommand::Inspect { volume } if volume == vref("realapp", "pgdata")
        ));
        assert_eq!(
            parse(&["volume", "inspect", "pgdata"])
                .unwrap_err()
                .exit_code(),
            2
        );
        assert_eq!(parse(&["volume", "inspect"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn rm_takes_a_node() {
        assert!(matches!(
            volume(&["rm", "realapp/pgdata"]),
            VolumeCommand::Rm { node: None, .. }
        ));
        assert!(matches!(
            volume(&["rm", "realapp/pgdata", "--node", "n2"]),
            VolumeCommand::Rm { volume, node: Some(n) } if volume == vref("realapp", "pgdata") && n == "n2"
        ));
    }

    #[test]
    fn move_flags() {
        let VolumeCommand::Move(m) = volume(&["move", "realapp/pgdata", "--to", "n3"]) else {
            panic!("not move")
        };
        assert_eq!(m.volume, vref("realapp", "pgdata"));
        assert_eq!(m.to, "n3");
        assert!(!m.detach);
        assert_eq!(m.timeout, Duration::from_secs(30 * 60));
        let VolumeCommand::Move(m) = volume(&[
            "move",
            "realapp/pgdata",
            "--to",
            "n3",
            "--detach",
            "--timeout",
            "90s",
        ]) else {
            panic!("not move")
        };
        assert!(m.detach);
        assert_eq!(m.timeout, Duration::from_secs(90));
        // --to is required; a bad duration is a usage error.
        assert_eq!(
            parse(&["volume", "move", "realapp/pgdata"])
                .unwrap_err()
                .exit_code(),
            2
        );
        assert_eq!(
            parse(&["volume", "move", "a/b", "--to", "n", "--timeout", "5w"])
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn backup_and_restore() {
        assert!(matches!(
            volume(&["backup", "realapp/pgdata", "pg.tar"]),
            VolumeCommand::Backup { volume, file, node: None }
                if volume == vref("realapp", "pgdata") && file.as_os_str() == "pg.tar"
        ));
        assert!(matches!(
            volume(&["backup", "realapp/pgdata", "-", "--node", "n2"]),
            VolumeCommand::Backup { file, node: Some(n), .. } if file.as_os_str() == "-" && n == "n2"
        ));
        assert!(matches!(
            volume(&["restore", "realapp/pgdata", "pg.tar", "--node", "n3"]),
            VolumeCommand::Restore { file, node: Some(n), .. } if file.as_os_str() == "pg.tar" && n == "n3"
        ));
        assert_eq!(
            parse(&["volume", "backup", "realapp/pgdata"])
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn rm_stack_keeps_volumes_unless_asked() {
        let Command::Rm(rm) = parse(&["rm", "realapp"]).unwrap().command else {
            panic!("not rm")
        };
        assert!(!rm.volumes);
        let Command::Rm(rm) = parse(&["rm", "realapp", "--volumes"]).unwrap().command else {
            panic!("not rm")
        };
        assert_eq!(rm.stack, "realapp");
        assert!(rm.volumes);
    }
}
