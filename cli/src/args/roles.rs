//! The flags of the server roles: `shoal up`, `shoal controller`, `shoal agent`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{parse_duration, parse_labels, Labels, DEFAULT_ADDR};

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
    /// Where tasks' secrets are kept (a tmpfs is mounted there if it is on a disk).
    /// Default: /run/shoal/secrets/NODE-HASH.
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// The cluster's address pool for container subnets (each network on each node
    /// takes a /24 of it); default 10.208.0.0/12. Pick one no machine or LAN uses.
    #[arg(long, value_name = "CIDR", value_parser = parse_pool)]
    pub pool: Option<String>,
    /// Serve the controller's Prometheus metrics (Raft, nodes, tasks, rollouts,
    /// scheduler) on ADDR, path /metrics. Default: off.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Serve the agent's Prometheus metrics (every task's CPU, memory, network,
    /// restarts; GPUs) on ADDR, path /metrics. Default: off.
    #[arg(long, value_name = "ADDR")]
    pub agent_metrics: Option<SocketAddr>,
}

#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("bootstrap").required(true).args(["init", "join", "restore", "force_new_cluster"])),
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
    /// The cluster's address pool for container subnets (each network on each node
    /// takes a /24 of it); default 10.208.0.0/12; with --init only. Pick one no machine or LAN uses.
    #[arg(long, value_name = "CIDR", value_parser = parse_pool)]
    pub pool: Option<String>,
    /// Start a new cluster from a backup (`shoal cluster backup`) on a new data dir,
    /// keeping the cluster's identity: its agents reconnect and keep their containers.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["init", "join", "force_new_cluster"])]
    pub restore: Option<PathBuf>,
    /// With --restore: read the backup's passphrase from this file instead of asking.
    #[arg(long, value_name = "F", requires = "restore")]
    pub passphrase_file: Option<PathBuf>,
    /// When the majority of controllers is lost for good: make this controller (on its
    /// data dir) the only member of a new cluster with its state and identity. Refused
    /// while a quorum of the old controllers answers. Run it once, then start the
    /// controller as before; new controllers join it with a token.
    #[arg(long, conflicts_with_all = ["init", "join"])]
    pub force_new_cluster: bool,
    /// Controller join token, with --join (`shoal token show controller`).
    #[arg(long, value_name = "T", env = "SHOAL_TOKEN")]
    pub token: Option<String>,
    /// Lifetime of the node certificates this controller issues (e.g. 90d, 12h, 30s).
    #[arg(long, value_name = "DUR", default_value = "90d", value_parser = parse_duration, hide = true)]
    pub cert_ttl: std::time::Duration,
    /// How long an image no service runs stays in the cluster's image store (e.g. 24h, 7d).
    #[arg(long, value_name = "DUR", default_value = "24h", value_parser = parse_duration)]
    pub image_retention: std::time::Duration,
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
    /// Serve Prometheus metrics (Raft, nodes, tasks, rollouts, scheduler) on ADDR, path
    /// /metrics. Every controller can: a follower shows its own Raft view. Default: off.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
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
    /// Serve Prometheus metrics (GPUs, every task's CPU, memory, network) on ADDR, path /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Name GPUs to Docker as CDI devices, KIND=UUID (default kind nvidia.com/gpu;
    /// Docker 25+ with CDI specs from `nvidia-ctk cdi generate`) instead of through the
    /// NVIDIA runtime's device request.
    #[arg(long, value_name = "KIND", num_args = 0..=1, default_missing_value = "nvidia.com/gpu")]
    pub gpu_cdi: Option<String>,
    /// Where tasks' secrets are kept (a tmpfs is mounted there if it is on a disk).
    /// Default: /run/shoal/secrets/NODE-HASH.
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Agent join token, needed the first time this node joins (`shoal token show
    /// agent`); later starts reuse the certificate in DATA_DIR/tls.
    #[arg(long, value_name = "T", env = "SHOAL_TOKEN")]
    pub token: Option<String>,
}

/// `--pool CIDR`, checked as the controller will (IPv4, /8 to /24, no host bits).
fn parse_pool(s: &str) -> Result<String, String> {
    shoal_controller::state::subnets::Pool::parse(s).map(|p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{addrs, parse};
    use super::super::*;

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
        assert_eq!(a.gpu_cdi, None);
        assert_eq!(a.secrets_dir, None);
    }

    #[test]
    fn gpu_cdi_takes_an_optional_kind() {
        let cdi = |args: &[&str]| {
            let mut all = vec!["agent", "--data-dir", "/d"];
            all.extend_from_slice(args);
            match parse(&all).unwrap().command {
                Command::Agent(a) => a.gpu_cdi,
                _ => panic!("not agent"),
            }
        };
        assert_eq!(cdi(&["--gpu-cdi"]).as_deref(), Some("nvidia.com/gpu"));
        assert_eq!(
            cdi(&["--gpu-cdi", "example.com/gpu"]).as_deref(),
            Some("example.com/gpu")
        );
        assert_eq!(cdi(&[]), None);
    }
}
