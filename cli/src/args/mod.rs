//! The command line: every subcommand and flag of `shoal` (the server roles' flags in
//! [`roles`], the strict value parsers clap cannot check by itself in [`values`]).
//!
//! A value that does not parse is a usage error: clap prints it and exits 2.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where client commands look for the cluster when neither `--addr` nor `SHOAL_ADDR` says.
mod image;
mod roles;
mod values;
mod volume;
pub use image::*;
pub use roles::*;
pub use values::*;
pub use volume::*;

pub const DEFAULT_ADDR: &str = "127.0.0.1:7370";

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "A lightweight multi-node container scheduler: a Compose file in, containers across nodes out."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts, before or after its name.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Controller address(es), comma-separated; each is tried in turn until one answers.
    #[arg(
        long,
        global = true,
        env = "SHOAL_ADDR",
        default_value = DEFAULT_ADDR,
        value_parser = parse_addrs,
        value_name = "ADDR[,ADDR..]"
    )]
    pub addr: Addrs,
    /// Directory holding ca.pem, cert.pem and key.pem (the cluster CA, a certificate and
    /// its key). Default: what `shoal login` or `shoal up` wrote to ~/.config/shoal/config.
    #[arg(long, global = true, env = "SHOAL_CREDENTIALS", value_name = "DIR")]
    pub credentials: Option<PathBuf>,
    /// Output format of client commands.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A non-empty list of controller addresses, in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addrs(pub Vec<String>);

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a one-node cluster (a controller and an agent on the local Docker) in the foreground.
    Up(UpArgs),
    /// Run a controller (a member of the Raft group).
    Controller(ControllerArgs),
    /// Run an agent: register this node with the controllers (`--addr`) and run its tasks.
    Agent(AgentArgs),
    /// Validate Compose files and print the normalized model (nothing is sent anywhere).
    Config(ConfigArgs),
    /// Deploy (or update) a stack from Compose files and follow the rollout.
    Deploy(DeployArgs),
    /// List tasks.
    Ps(PsArgs),
    /// List services with their desired and running replicas.
    Services,
    /// CPU, memory and network of every replica (and the GPUs), like `docker stats`.
    Stats(crate::commands::stats::StatsArgs),
    /// List nodes.
    Nodes,
    /// The controllers' Raft group.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Print a service's logs.
    Logs(LogsArgs),
    /// What happened in the cluster and why: task transitions, nodes, rollouts, scaling,
    /// leader changes (`-f` follows).
    Events(crate::commands::events::EventsArgs),
    /// Set the number of replicas of services.
    Scale(ScaleArgs),
    /// Remove a stack: its tasks are stopped and its services deleted (its volumes are
    /// kept unless `--volumes`).
    Rm(RmArgs),
    /// Return a service to its previous spec (rolled out like an update).
    Rollback(RollbackArgs),
    /// Manage nodes: drain, activate, label, remove.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Move a service's replicas (start-first, update_config.parallelism at a time) until
    /// they are spread as evenly as placement allows, e.g. after a node came back.
    Rebalance(RebalanceArgs),
    /// Show or rotate the join tokens agents and controllers join with.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Point this CLI at a cluster: check `--addr` and `--credentials` work and save them
    /// to ~/.config/shoal/config (or $XDG_CONFIG_HOME/shoal/config).
    Login,
    /// Secrets the cluster keeps, for Compose secrets declared `external: true`.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// The stacks' named volumes: list, inspect, remove, move to another node, back up
    /// and restore.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// The cluster's own images (no registry needed): push from this machine's engine,
    /// list, remove.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Serve a web dashboard of the cluster on this machine (loopback only), using this
    /// CLI's credentials; prints its URL.
    Dashboard(crate::dashboard::DashboardArgs),
    /// Run a controller or an agent as a systemd service on this machine: write its unit
    /// and environment file, enable and start it.
    Install(crate::install::InstallArgs),
    /// Stop, disable and remove what `shoal install` installed (data directories are kept).
    Uninstall(crate::install::UninstallArgs),
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Keep a secret: its contents from FILE, or standard input without FILE (or with
    /// `-`). A secret cannot be changed; create a new one and point the stack at it.
    Create {
        name: String,
        file: Option<std::path::PathBuf>,
    },
    /// List the kept secrets (names, never contents) and the services using each.
    Ls,
    /// Forget a secret no service uses.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print the current join token for a role.
    Show { role: TokenRole },
    /// Replace a role's join token: the old one stops working (nodes that joined stay).
    Rotate { role: TokenRole },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenRole {
    Agent,
    Controller,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Agent => "agent",
            TokenRole::Controller => "controller",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Move the node's replicas elsewhere (update_config.parallelism at a time) and place
    /// nothing new on it.
    Drain { node: String },
    /// Let the node take work again (existing replicas are not moved back).
    Activate { node: String },
    /// Set labels (`k=v`) or remove them (`k-`); placement constraints match them.
    Label {
        node: String,
        #[arg(required = true, value_name = "k=v|k-")]
        labels: Vec<String>,
    },
    /// Forget a node that is gone; its replicas are replaced elsewhere.
    Rm {
        node: String,
        /// Also when the node is still ready.
        #[arg(long)]
        force: bool,
    },
}

impl Command {
    /// Server roles log at `info` by default, client commands at `warn`.
    pub fn is_server(&self) -> bool {
        matches!(
            self,
            Command::Up(_) | Command::Controller(_) | Command::Agent(_)
        )
    }
}

/// `--labels k=v,..` as parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels(pub BTreeMap<String, String>);

/// Which Compose files to load, shared by `config` and `deploy`.
#[derive(Debug, Args)]
pub struct ComposeArgs {
    /// Compose file; several are merged in order.
    #[arg(short = 'c', long = "file", required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Enable a Compose profile (repeatable).
    #[arg(long = "profile", value_name = "P")]
    pub profiles: Vec<String>,
    /// Stack name. Default: the Compose `name:`, else the first file's directory name.
    #[arg(long, value_name = "NAME")]
    pub stack: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub compose: ComposeArgs,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub compose: ComposeArgs,
    /// Return once the controller has accepted the stack, without following the rollout.
    #[arg(long)]
    pub detach: bool,
    /// Give up following the rollout after this many seconds (exit 1).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only this stack's tasks.
    pub stack: Option<String>,
    /// Include tasks that ended (shut down, failed, complete).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, commit index and members.
    Status,
    /// Write an encrypted backup of the cluster (its whole state, CA, sealed secrets and
    /// cluster key), taken online; restore it with `shoal controller --restore FILE`.
    Backup {
        /// Where to write it (replaced if it exists).
        file: PathBuf,
        /// Read the passphrase from this file (its first line) instead of asking.
        #[arg(long, value_name = "F")]
        passphrase_file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// `STACK/SERVICE`, or `SERVICE` alone where that is unambiguous.
    pub service: String,
    /// Keep streaming new output (Ctrl-C ends it).
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each task.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// `SERVICE=N`, where SERVICE is `STACK/SERVICE` or `SERVICE`.
    #[arg(required = true, value_parser = parse_scale, value_name = "SERVICE=N")]
    pub targets: Vec<ScaleTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleTarget {
    pub service: String,
    pub replicas: u64,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    pub stack: String,
    /// Also remove the stack's named volumes (on every node), as `docker compose down -v`.
    #[arg(long)]
    pub volumes: bool,
}

#[derive(Debug, Args)]
pub struct RebalanceArgs {
    /// `STACK/SERVICE`, or `SERVICE` alone where unambiguous.
    pub service: String,
    /// Return once the rebalance is started instead of waiting for it to finish.
    #[arg(long)]
    pub detach: bool,
    /// How long to wait for the rebalance to finish before giving up (it goes on).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// `STACK/SERVICE`, or `SERVICE` alone where unambiguous.
    pub service: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    pub(super) fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shoal").chain(args.iter().copied()))
    }

    pub(super) fn addrs(v: &[&str]) -> Addrs {
        Addrs(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn token_commands() {
        let c = parse(&["token", "rotate", "agent"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Token {
                command: TokenCommand::Rotate {
                    role: TokenRole::Agent
                }
            }
        ));
        assert!(parse(&["token", "show", "admin"]).is_err());
    }

    #[test]
    fn global_flags_before_and_after_the_subcommand() {
        let before = parse(&["--addr", "10.0.0.1:7370", "--format", "json", "ps"]).unwrap();
        let after = parse(&["ps", "--addr", "10.0.0.1:7370", "--format", "json"]).unwrap();
        for cli in [before, after] {
            assert_eq!(cli.global.addr, addrs(&["10.0.0.1:7370"]));
            assert_eq!(cli.global.format, Format::Json);
            assert!(matches!(
                cli.command,
                Command::Ps(PsArgs {
                    stack: None,
                    all: false
                })
            ));
        }
        let nested = parse(&["cluster", "status", "--format", "json"]).unwrap();
        assert_eq!(nested.global.format, Format::Json);
        let creds = parse(&["nodes", "--credentials", "/tmp/c"]).unwrap();
        assert_eq!(creds.global.credentials, Some(PathBuf::from("/tmp/c")));
    }

    #[test]
    fn defaults() {
        let cli = parse(&["services"]).unwrap();
        // SHOAL_ADDR may be set by whoever runs the tests; only check it when it is not.
        if std::env::var_os("SHOAL_ADDR").is_none() {
            assert_eq!(cli.global.addr, addrs(&["127.0.0.1:7370"]));
        }
        assert_eq!(cli.global.format, Format::Table);
        let up = parse(&["up"]).unwrap();
        let Command::Up(up) = up.command else {
            panic!("not up")
        };
        assert_eq!(up.listen, "127.0.0.1:7370".parse::<SocketAddr>().unwrap());
        assert_eq!(up.data_dir, None);
        let Command::Deploy(d) = parse(&["deploy", "-c", "a.yaml"]).unwrap().command else {
            panic!("not deploy")
        };
        assert_eq!(d.timeout, 300);
        assert!(!d.detach);
    }

    #[test]
    fn addr_lists_are_split() {
        let cli = parse(&["ps", "--addr", "a:1, b:2,c:3"]).unwrap();
        assert_eq!(cli.global.addr, addrs(&["a:1", "b:2", "c:3"]));
        assert_eq!(parse_addrs("h:7370"), Ok(addrs(&["h:7370"])));
        assert!(parse_addrs("a:1,,b:2").is_err());
        assert!(parse_addrs("").is_err());
        let err = parse(&["ps", "--addr", "a:1,"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn scale_targets() {
        assert_eq!(
            parse_scale("web=3"),
            Ok(ScaleTarget {
                service: "web".into(),
                replicas: 3
            })
        );
        assert_eq!(
            parse_scale("hello/web=0"),
            Ok(ScaleTarget {
                service: "hello/web".into(),
                replicas: 0
            })
        );
        for bad in [
            "web",
            "web=x",
            "web=",
            "=3",
            "web=-1",
            "web=+1",
            "web= 3",
            "web=3 ",
            "a/b/c=1",
            "/web=1",
            "web/=1",
            "we b=1",
            "web=1=2",
            "web=99999999999999999999",
        ] {
            assert!(parse_scale(bad).is_err(), "{bad} parsed");
        }
        let cli = parse(&["scale", "web=3", "hello/worker=1"]).unwrap();
        let Command::Scale(s) = cli.command else {
            panic!("not scale")
        };
        assert_eq!(
            s.targets,
            vec![
                ScaleTarget {
                    service: "web".into(),
                    replicas: 3
                },
                ScaleTarget {
                    service: "hello/worker".into(),
                    replicas: 1
                },
            ]
        );
        assert_eq!(parse(&["scale", "web=x"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["scale"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn compose_flags() {
        let cli = parse(&[
            "deploy",
            "-c",
            "a.yaml",
            "-c",
            "b.yaml",
            "--profile",
            "debug",
            "--stack",
            "s",
            "--detach",
            "--timeout",
            "5",
        ])
        .unwrap();
        let Command::Deploy(d) = cli.command else {
            panic!("not deploy")
        };
        assert_eq!(
            d.compose.files,
            vec![PathBuf::from("a.yaml"), PathBuf::from("b.yaml")]
        );
        assert_eq!(d.compose.profiles, vec!["debug".to_string()]);
        assert_eq!(d.compose.stack.as_deref(), Some("s"));
        assert!(d.detach);
        assert_eq!(d.timeout, 5);
        assert_eq!(parse(&["config"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn logs_flags() {
        let Command::Logs(l) = parse(&["logs", "-f", "--tail", "10", "hello/web"])
            .unwrap()
            .command
        else {
            panic!("not logs")
        };
        assert_eq!(l.service, "hello/web");
        assert!(l.follow);
        assert_eq!(l.tail, Some(10));
    }

    #[test]
    fn image_commands() {
        let Command::Image {
            command: ImageCommand::Push { images },
        } = parse(&["image", "push", "web:1", "api:2"]).unwrap().command
        else {
            panic!("not image push")
        };
        assert_eq!(images, vec!["web:1".to_string(), "api:2".to_string()]);
        assert_eq!(parse(&["image", "push"]).unwrap_err().exit_code(), 2);
        let ls = parse(&["image", "ls", "--format", "json"]).unwrap();
        assert_eq!(ls.global.format, Format::Json);
        assert!(matches!(
            ls.command,
            Command::Image {
                command: ImageCommand::Ls
            }
        ));
        let Command::Image {
            command: ImageCommand::Rm { image },
        } = parse(&["image", "rm", "web:1"]).unwrap().command
        else {
            panic!("not image rm")
        };
        assert_eq!(image, "web:1");
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
