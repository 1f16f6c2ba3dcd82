//! The command line: every subcommand and flag of `shoal`, and the strict parsers for
//! values clap cannot check by itself (`--addr` lists, `SERVICE=N`, `k=v` labels).
//!
//! A value that does not parse is a usage error: clap prints it and exits 2.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where client commands look for the cluster when neither `--addr` nor `SHOAL_ADDR` says.
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
    /// List nodes.
    Nodes,
    /// The controllers' Raft group.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Print a service's logs.
    Logs(LogsArgs),
    /// Set the number of replicas of services.
    Scale(ScaleArgs),
    /// Remove a stack: its tasks are stopped and its services deleted.
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

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Data directory (controller state in D/controller, agent state in D/agent).
    /// Default: $XDG_DATA_HOME/shoal, else ~/.local/share/shoal.
    #[arg(long, value_name = "D")]
    pub data_dir: Option<PathBuf>,
    /// Address the controller serves gRPC on.
    #[arg(long, default_value = DEFAULT_ADDR, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// This node's name. Default: the machine's hostname.
    #[arg(long, value_name = "NODE")]
    pub name: Option<String>,
    /// Docker engine to use (e.g. unix:///var/run/docker.sock). Default: the local engine.
    #[arg(long, value_name = "URI")]
    pub docker: Option<String>,
    /// JSON (or .toml) file listing this node's GPUs, standing in for NVML.
    #[arg(long, value_name = "FILE")]
    pub gpu_inventory: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("bootstrap").required(true).args(["init", "join"])),
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct ControllerArgs {
    /// Manage the controllers of a running cluster instead of running one.
    #[command(subcommand)]
    pub command: Option<ControllerCommand>,
    /// Directory for the Raft log, vote, snapshots and state.
    #[arg(long, value_name = "D", required = true)]
    pub data_dir: Option<PathBuf>,
    /// Address to serve gRPC on (CLI, agents and Raft peers share it).
    #[arg(long, value_name = "ADDR", required = true)]
    pub listen: Option<SocketAddr>,
    /// host:port other members, agents and clients reach this controller at.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<String>,
    /// Create a cluster of one (unless the data dir already holds one).
    #[arg(long)]
    pub init: bool,
    /// Join the cluster that ADDR belongs to.
    #[arg(long, value_name = "ADDR")]
    pub join: Option<String>,
    /// Controller join token, with --join (`shoal token show controller`).
    #[arg(long, value_name = "T", env = "SHOAL_TOKEN")]
    pub token: Option<String>,
    /// Lifetime of the node certificates this controller issues (e.g. 90d, 12h, 30s).
    #[arg(long, value_name = "DUR", default_value = "90d", value_parser = parse_duration, hide = true)]
    pub cert_ttl: std::time::Duration,
    /// Raft leader heartbeat period.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Election timeout. A follower that stops hearing its leader waits out the leader's
    /// lease (1.25*MS) and then a random MS to 1.25*MS before it starts an election, so a
    /// lost leader is replaced after about 2.25-2.5*MS.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub election_timeout_ms: u64,
    /// How long an agent may stay silent before its node is declared down and its
    /// replicas are placed elsewhere (agents heartbeat every 250 ms).
    #[arg(long, value_name = "MS", default_value_t = 1500)]
    pub node_grace_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum ControllerCommand {
    /// Take a controller out of the cluster (it no longer votes or receives the log).
    Remove {
        /// The controller's id, as `shoal cluster status` shows it.
        id: u64,
    },
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name (what `node.hostname` and `node.id` constraints match).
    /// Default: the machine's hostname.
    #[arg(long, value_name = "NODE")]
    pub name: Option<String>,
    /// Directory for the agent's local state.
    #[arg(long, value_name = "D")]
    pub data_dir: PathBuf,
    /// Docker engine to use (e.g. unix:///var/run/docker.sock). Default: the local engine.
    #[arg(long, value_name = "URI")]
    pub docker: Option<String>,
    /// Address other nodes reach this node's containers and ingress ports at.
    #[arg(long, value_name = "IP")]
    pub advertise: Option<String>,
    /// Node labels, for `node.labels.K` placement constraints.
    #[arg(long, value_parser = parse_labels, value_name = "k=v,..")]
    pub labels: Option<Labels>,
    /// JSON (or .toml) file listing this node's GPUs, standing in for NVML:
    /// [{"uuid":"GPU-…","index":0,"model":"…","memory_bytes":N}]. Reread every 30 s.
    #[arg(long, value_name = "FILE")]
    pub gpu_inventory: Option<PathBuf>,
    /// Serve Prometheus metrics (per-GPU memory and utilization) on ADDR, path /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Agent join token, needed the first time this node joins (`shoal token show
    /// agent`); later starts reuse the certificate in DATA_DIR/tls.
    #[arg(long, value_name = "T", env = "SHOAL_TOKEN")]
    pub token: Option<String>,
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

/// `A[,B..]`: split on commas, trimmed, none empty.
pub fn parse_addrs(s: &str) -> Result<Addrs, String> {
    let addrs: Vec<String> = s.split(',').map(|a| a.trim().to_string()).collect();
    if addrs.iter().any(String::is_empty) {
        return Err(format!(
            "`{s}` is not a list of addresses: expected HOST:PORT[,HOST:PORT..]"
        ));
    }
    Ok(Addrs(addrs))
}

/// `SERVICE=N` with SERVICE `NAME` or `STACK/NAME` and N a non-negative integer.
pub fn parse_scale(s: &str) -> Result<ScaleTarget, String> {
    let Some((service, n)) = s.split_once('=') else {
        return Err(format!("`{s}` is not SERVICE=N (e.g. web=3)"));
    };
    let parts: Vec<&str> = service.split('/').collect();
    let valid_name = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if parts.len() > 2 || !parts.iter().all(|p| valid_name(p)) {
        return Err(format!(
            "`{service}` is not a service name: expected SERVICE or STACK/SERVICE"
        ));
    }
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{n}` in `{s}` is not a number of replicas: expected a non-negative integer"
        ));
    }
    let replicas = n
        .parse::<u64>()
        .map_err(|_| format!("`{n}` in `{s}` is too large a number of replicas"))?;
    Ok(ScaleTarget {
        service: service.to_string(),
        replicas,
    })
}

/// `N` followed by `s`, `m`, `h` or `d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: expected e.g. 30s, 10m, 12h or 90d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "`{s}` is not a duration: the unit must be s, m, h or d"
            ))
        }
    };
    if n == 0 {
        return Err(format!(
            "`{s}` is not a usable lifetime: it must be more than 0"
        ));
    }
    Ok(std::time::Duration::from_secs(n.saturating_mul(secs)))
}

/// `k=v[,k=v..]`; keys non-empty and not repeated, values may be empty.
pub fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut labels = BTreeMap::new();
    for item in s.split(',') {
        let item = item.trim();
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("`{item}` is not a label: expected k=v"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("`{item}` has an empty label key"));
        }
        if labels.insert(k.to_string(), v.trim().to_string()).is_some() {
            return Err(format!("label `{k}` is given twice"));
        }
    }
    Ok(Labels(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shoal").chain(args.iter().copied()))
    }

    fn addrs(v: &[&str]) -> Addrs {
        Addrs(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("s").is_err());
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
    fn labels() {
        let l = parse_labels("zone=a, gpu=,tier=db").unwrap();
        assert_eq!(
            l.0,
            BTreeMap::from([
                ("gpu".to_string(), String::new()),
                ("tier".to_string(), "db".to_string()),
                ("zone".to_string(), "a".to_string()),
            ])
        );
        assert!(parse_labels("zone").is_err());
        assert!(parse_labels("=a").is_err());
        assert!(parse_labels("a=1,a=2").is_err());
    }

    #[test]
    fn server_roles() {
        let c = parse(&[
            "controller",
            "--data-dir",
            "/d",
            "--listen",
            "0.0.0.0:7370",
            "--join",
            "10.0.0.1:7370",
        ])
        .unwrap();
        let Command::Controller(c) = c.command else {
            panic!("not controller")
        };
        assert_eq!(c.join.as_deref(), Some("10.0.0.1:7370"));
        assert!(!c.init);
        // --init and --join exclude each other, and one of them is required.
        let both = [
            "controller",
            "--data-dir",
            "/d",
            "--listen",
            "0.0.0.0:7370",
            "--init",
            "--join",
            "x:1",
        ];
        assert_eq!(parse(&both).unwrap_err().exit_code(), 2);
        let neither = ["controller", "--data-dir", "/d", "--listen", "0.0.0.0:7370"];
        assert_eq!(parse(&neither).unwrap_err().exit_code(), 2);

        let a = parse(&[
            "agent",
            "--addr",
            "c1:7370,c2:7370",
            "--name",
            "node-a",
            "--data-dir",
            "/d",
            "--labels",
            "zone=a",
            "--gpu-inventory",
            "/g.json",
        ])
        .unwrap();
        assert_eq!(a.global.addr, addrs(&["c1:7370", "c2:7370"]));
        let Command::Agent(a) = a.command else {
            panic!("not agent")
        };
        assert_eq!(a.name.as_deref(), Some("node-a"));
        assert_eq!(
            a.labels,
            Some(Labels(BTreeMap::from([("zone".into(), "a".into())])))
        );
        assert!(parse(&["agent", "--data-dir", "/d", "--labels", "zone"]).is_err());
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
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
