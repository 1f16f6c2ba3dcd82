//! Several test hosts on one machine, from Rust: a thin wrapper over `scripts/hosts.sh`
//! (network namespaces, each with its own address, Docker engine and `shoal agent`;
//! three `shoal controller` processes on the host's bridge address).
//!
//! [`Hosts::up`] picks a free instance id (`SHOAL_HOSTS_ID`), so two test processes never
//! share a bridge, subnet or state directory. Dropping a [`Hosts`] runs `hosts.sh down`
//! (also when the test panics, after printing the tail of every log). Needs root,
//! iproute2, iptables, nsenter and dockerd; when one is missing, `up` panics saying which.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{eventually, shoal_bin, text, workspace};

/// The script's exit code for "this instance id is in use".
const ID_IN_USE: i32 = 3;

/// A running set of test hosts `n1..nN` and three controllers.
pub struct Hosts {
    id: u32,
    /// Nodes `n1..n<agents>` run agents; the rest only engines.
    agents: usize,
    addr: String,
    /// The admin credentials dir (controller 1's `admin/`), for every CLI call.
    credentials: String,
    up: bool,
    /// Extra environment of every `hosts.sh` call (`SHOAL_HOSTS_AGENT_ARGS_<i>`, ..), so
    /// `revive` restarts an agent with the flags it was started with.
    env: Vec<(String, String)>,
}

impl Hosts {
    /// `hosts.sh up n`: nodes `n1..nN`, each ready in `shoal nodes`.
    pub fn up(nodes: usize) -> Hosts {
        Hosts::up_with_agent_args(nodes, &[])
    }

    /// Like [`Hosts::up`], node `i` (1-based) also given the agent flags `args`
    /// (`SHOAL_HOSTS_AGENT_ARGS_<i>`, split on whitespace by the script), e.g.
    /// `(2, "--gpu-inventory /tmp/x.json")`; they apply again on `revive`.
    pub fn up_with_agent_args(nodes: usize, args: &[(usize, &str)]) -> Hosts {
        let env: Vec<(String, String)> = args
            .iter()
            .map(|(i, a)| (format!("SHOAL_HOSTS_AGENT_ARGS_{i}"), a.to_string()))
            .collect();
        Hosts::up_with_env(nodes, env)
    }

    /// Like [`Hosts::up`], every controller and agent also serving `/metrics`
    /// (`SHOAL_HOSTS_METRICS`): see [`Hosts::controller_metrics`], [`Hosts::agent_metrics`].
    pub fn up_with_metrics(nodes: usize) -> Hosts {
        Hosts::up_with_env(nodes, vec![("SHOAL_HOSTS_METRICS".into(), "1".into())])
    }

    /// `nodes` nodes with agents, then `engines` more (`n<nodes+1>`..) that run only an
    /// engine: machines that deploy (build, push) without being nodes. Every agent gets
    /// `agent_args` (`SHOAL_HOSTS_AGENT_ARGS`).
    pub fn up_with_engines(nodes: usize, engines: usize, agent_args: &str) -> Hosts {
        let only: Vec<String> = (nodes + 1..=nodes + engines)
            .map(|i| i.to_string())
            .collect();
        let mut hosts = Hosts::up_with_env(
            nodes + engines,
            vec![
                ("SHOAL_HOSTS_ENGINE_ONLY".to_string(), only.join(" ")),
                ("SHOAL_HOSTS_AGENT_ARGS".to_string(), agent_args.to_string()),
            ],
        );
        hosts.agents = nodes;
        hosts
    }

    /// Like [`Hosts::up`], every controller and agent running `bin` (e.g. an older
    /// shoal, for an upgrade) until [`Hosts::set_bin`] says otherwise.
    pub fn up_with_bin(nodes: usize, bin: &std::path::Path) -> Hosts {
        Hosts::up_with_env(
            nodes,
            vec![("SHOAL_BIN".to_string(), bin.display().to_string())],
        )
    }

    /// Controllers and agents started from now on run `bin`.
    pub fn set_bin(&mut self, bin: &std::path::Path) {
        self.env.retain(|(k, _)| k != "SHOAL_BIN");
        self.env
            .push(("SHOAL_BIN".to_string(), bin.display().to_string()));
    }

    fn up_with_env(nodes: usize, env: Vec<(String, String)>) -> Hosts {
        let first = std::process::id() % 90 + 1;
        for k in 0..20 {
            let id = (first + k) % 99 + 1;
            let out = script(id, &env, &["up", &nodes.to_string()]);
            if out.status.code() == Some(ID_IN_USE) {
                continue;
            }
            assert!(
                out.status.success(),
                "scripts/hosts.sh up {nodes} failed (instance {id}); the test hosts need \
                 root, iproute2, iptables, nsenter and dockerd:\n{}",
                text(&out)
            );
            let mut hosts = Hosts {
                id,
                agents: nodes,
                addr: String::new(),
                credentials: String::new(),
                up: true,
                env: env.clone(),
            };
            hosts.addr = hosts.run(&["addr"]).trim().to_string();
            hosts.credentials = hosts.run(&["credentials"]).trim().to_string();
            return hosts;
        }
        panic!("no free test-host instance id (every SHOAL_HOSTS_ID tried is in use)");
    }

    /// The controllers' addresses, for `--addr`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The Docker socket of the node's engine, for scripts run with [`Hosts::exec`].
    pub fn docker_sock(&self, node: &str) -> String {
        format!("/tmp/shoal-hosts/{}/{node}/docker.sock", self.id)
    }

    /// The instance id (`SHOAL_HOSTS_ID`) this set runs as.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Names of the nodes with agents, `n1..nN`.
    pub fn names(&self) -> Vec<String> {
        (1..=self.agents).map(|i| format!("n{i}")).collect()
    }

    /// SIGKILL of controller `k` (1..3).
    pub fn kill_controller(&self, k: usize) {
        self.run(&["kill-controller", &k.to_string()]);
    }

    /// The controllers' ids and roles, once a leader is known and `voters` vote.
    pub fn members(&self, voters: usize) -> Vec<(u64, String)> {
        eventually(
            Duration::from_secs(60),
            &format!("{voters} voting controllers with a leader"),
            || {
                let status = self.json(&["cluster", "status"])?;
                if status["leader"].as_u64().unwrap_or(0) == 0 {
                    return None;
                }
                let members: Vec<(u64, String)> = status["members"]
                    .as_array()?
                    .iter()
                    .map(|m| {
                        let role = m["role"].as_str().unwrap_or("").to_string();
                        (m["id"].as_u64().unwrap_or(0), role)
                    })
                    .collect();
                let voting = members
                    .iter()
                    .filter(|(_, r)| r == "leader" || r == "follower")
                    .count();
                (voting == voters).then_some(members)
            },
        )
    }

    /// Waits until every node with an agent is ready.
    pub fn all_ready(&self) {
        let want = self.names().len();
        eventually(Duration::from_secs(60), "every node ready", || {
            let nodes = self.node_status();
            (nodes.len() == want && nodes.iter().all(|(_, s, _)| s == "ready")).then_some(())
        });
    }

    /// Each running container of `stack` on every node: `NODE/ID` -> its start time
    /// (`State.StartedAt`), to show that none was restarted.
    pub fn started(&self, stack: &str) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        let filter = format!("label=io.shoal.stack={stack}");
        for node in self.names() {
            let ids = self.docker(&node, &["ps", "-q", "--no-trunc", "--filter", &filter]);
            for id in ids.lines().filter(|l| !l.is_empty()) {
                let at = self.docker(&node, &["inspect", "-f", "{{.State.StartedAt}}", id]);
                out.insert(format!("{node}/{id}"), at.trim().to_string());
            }
        }
        out
    }

    /// Controller `k` (1..3) started again on its data dir and address; with `args`
    /// (e.g. `--restore FILE`) in place of its `--init`/`--join` when not empty.
    pub fn start_controller(&self, k: usize, args: &[&str]) {
        let mut all = vec!["start-controller".to_string(), k.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.run(&all);
    }

    /// SIGKILL of controller `k` and its data dir deleted: the machine lost for good.
    pub fn wipe_controller(&self, k: usize) {
        self.run(&["wipe-controller", &k.to_string()]);
    }

    /// Controller `k`'s data dir.
    pub fn controller_dir(&self, k: usize) -> PathBuf {
        PathBuf::from(format!("/tmp/shoal-hosts/{}/c{k}", self.id))
    }

    /// Controller `k`'s address.
    pub fn controller_addr(&self, k: usize) -> String {
        self.addr
            .split(',')
            .nth(k - 1)
            .unwrap_or_else(|| panic!("no controller {k} in {}", self.addr))
            .to_string()
    }

    /// Where controller `k` serves `/metrics` ([`Hosts::up_with_metrics`]).
    pub fn controller_metrics(&self, k: usize) -> String {
        let addr = self.controller_addr(k);
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        format!("{host}:{}", 9369 + k)
    }

    /// Where the agent of `node` serves `/metrics` ([`Hosts::up_with_metrics`]).
    pub fn agent_metrics(&self, node: &str) -> String {
        format!("{}:9370", self.ip(node))
    }

    /// The admin credentials every CLI call uses from now on.
    pub fn use_credentials(&mut self, dir: &std::path::Path) {
        self.credentials = dir.display().to_string();
    }

    /// SIGTERM of the node's agent (its containers keep running), waiting until it exits.
    pub fn stop_agent(&self, node: &str) {
        self.run(&["stop-agent", node]);
    }

    /// The node's agent started again on its data dir.
    pub fn start_agent(&self, node: &str) {
        self.run(&["start-agent", node]);
    }

    /// The same machines given a new cluster (`hosts.sh new-cluster`): controllers and
    /// agents killed and their data dirs deleted, the engines kept with everything on
    /// them; returns once every node is ready in the new cluster, whose admin
    /// credentials every CLI call uses from then on.
    pub fn new_cluster(&mut self) {
        self.run(&["new-cluster"]);
        self.credentials = self.run(&["credentials"]).trim().to_string();
    }

    /// Everything the node's agent logged (every run of it, appended).
    pub fn agent_log(&self, node: &str) -> String {
        let path = format!("/tmp/shoal-hosts/{}/{node}/agent.log", self.id);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    /// Power cut: the node's containers, agent and engine are killed and its link goes
    /// down. Returns when it happened, in ms since the Unix epoch.
    pub fn cut(&self, node: &str) -> u64 {
        let out = self.run(&["cut", node]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("hosts.sh cut printed {out:?}, not a time"))
    }

    /// Link up, engine and agent restarted on the same data dirs; returns once the node
    /// is ready again.
    pub fn revive(&self, node: &str) {
        self.run(&["revive", node]);
    }

    /// A character device `/dev/shoal-test/NAME` (like /dev/null) on `node` only (each
    /// test host has its own mount namespace, shared by its engine and agent).
    pub fn mknod(&self, node: &str, name: &str) {
        self.run(&["mknod", node, name]);
    }

    /// Removes what [`Hosts::mknod`] made.
    pub fn rmdev(&self, node: &str, name: &str) {
        self.run(&["rmdev", node, name]);
    }

    /// The node's link goes down; its processes keep running.
    pub fn partition(&self, node: &str) {
        self.run(&["partition", node]);
    }

    pub fn heal(&self, node: &str) {
        self.run(&["heal", node]);
    }

    /// `docker ARGS` against the node's engine; panics on failure.
    pub fn docker(&self, node: &str, args: &[&str]) -> String {
        let mut all = vec!["docker", node];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// A command inside the node's network namespace (its output, whatever the exit).
    pub fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        let mut all = vec!["exec", node];
        all.extend_from_slice(cmd);
        script(self.id, &self.env, &all)
    }

    /// Services (`io.shoal.service`) of the node's running containers of `stack`, one
    /// entry per container, sorted.
    pub fn running(&self, node: &str, stack: &str) -> Vec<String> {
        self.containers(node, stack, false)
    }

    /// Like [`Hosts::running`], containers in any state.
    pub fn containers(&self, node: &str, stack: &str, all: bool) -> Vec<String> {
        let filter = format!("label=io.shoal.stack={stack}");
        let mut args = vec![
            "ps",
            "--filter",
            &filter,
            "--format",
            "{{.Label \"io.shoal.service\"}}",
        ];
        if all {
            args.push("-a");
        }
        let mut v: Vec<String> = self
            .docker(node, &args)
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// A client command against the controllers.
    pub fn shoal(&self, args: &[&str]) -> Output {
        Command::new(shoal_bin())
            .args(args)
            .args(["--addr", &self.addr])
            .env("SHOAL_CREDENTIALS", &self.credentials)
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    }

    /// `shoal deploy -c FILE --detach`, which must succeed.
    pub fn deploy_detached(&self, file: &str) {
        let out = self.shoal(&["deploy", "-c", file, "--detach"]);
        assert!(out.status.success(), "deploy {file}: {}", crate::text(&out));
    }

    /// A client command in `dir` with extra environment (e.g. `DOCKER_HOST`: the engine
    /// `shoal deploy` builds with).
    pub fn shoal_env(&self, dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Output {
        Command::new(shoal_bin())
            .current_dir(dir)
            .args(args)
            .args(["--addr", &self.addr])
            .env("SHOAL_CREDENTIALS", &self.credentials)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    }

    /// The node's address on the hosts' bridge.
    pub fn ip(&self, node: &str) -> String {
        self.run(&["ip", node]).trim().to_string()
    }

    /// A client command in `dir` (relative compose paths).
    pub fn shoal_in(&self, dir: &std::path::Path, args: &[&str]) -> Output {
        Command::new(shoal_bin())
            .current_dir(dir)
            .args(args)
            .args(["--addr", &self.addr])
            .env("SHOAL_CREDENTIALS", &self.credentials)
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    }

    /// `shoal ARGS --format json`, `None` when it fails or prints no JSON.
    pub fn json(&self, args: &[&str]) -> Option<Value> {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        let out = self.shoal(&all);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `shoal ARGS --format json`, or what went wrong (the exit status and stderr).
    pub fn try_json(&self, args: &[&str]) -> Result<Value, String> {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        let started = std::time::Instant::now();
        let out = self.shoal(&all);
        let took = started.elapsed();
        if !out.status.success() {
            return Err(format!(
                "shoal {} exited {:?} after {took:?}: {}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "shoal {} printed no JSON ({e}): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout).trim()
            )
        })
    }

    /// `shoal ps STACK` (current tasks). Panics after 20 s of failures, with the last.
    pub fn ps(&self, stack: &str) -> Vec<Value> {
        let started = std::time::Instant::now();
        loop {
            let last = match self.try_json(&["ps", stack]).map(|v| v.as_array().cloned()) {
                Ok(Some(rows)) => return rows,
                Ok(None) => "shoal ps printed no array".to_string(),
                Err(e) => e,
            };
            if started.elapsed() > Duration::from_secs(20) {
                panic!("shoal ps {stack} did not answer within 20 s; the last try: {last}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `shoal nodes`: status by name.
    pub fn node_status(&self) -> Vec<(String, String, String)> {
        eventually(Duration::from_secs(20), "shoal nodes to answer", || {
            let v = self.json(&["nodes"])?;
            Some(
                v.as_array()?
                    .iter()
                    .map(|n| {
                        (
                            n["name"].as_str().unwrap_or("").to_string(),
                            n["status"].as_str().unwrap_or("").to_string(),
                            n["availability"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect(),
            )
        })
    }

    /// The tail of every log of the instance (controllers, agents, engines).
    pub fn logs(&self) -> String {
        let dir = PathBuf::from(format!("/tmp/shoal-hosts/{}", self.id));
        let mut out = String::new();
        let mut files: Vec<PathBuf> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    for name in ["agent.log", "dockerd.log"] {
                        files.push(p.join(name));
                    }
                } else if p.extension().is_some_and(|x| x == "log") {
                    files.push(p);
                }
            }
        }
        files.sort();
        for f in files {
            let Ok(s) = std::fs::read_to_string(&f) else {
                continue;
            };
            let lines: Vec<&str> = s.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!("---- {} ----\n{}\n", f.display(), tail.join("\n")));
        }
        out
    }

    /// Runs `hosts.sh ARGS` on this instance; panics with its output on failure.
    fn run(&self, args: &[&str]) -> String {
        let out = script(self.id, &self.env, args);
        assert!(
            out.status.success(),
            "scripts/hosts.sh {args:?} failed (instance {}):\n{}",
            self.id,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `hosts.sh down`; also what Drop does.
    pub fn down(&mut self) {
        if std::mem::take(&mut self.up) {
            let out = script(self.id, &self.env, &["down"]);
            if !out.status.success() {
                eprintln!("hosts.sh down failed:\n{}", text(&out));
            }
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- test hosts {} logs ----\n{}", self.id, self.logs());
        }
        self.down();
    }
}

fn script(id: u32, env: &[(String, String)], args: &[&str]) -> Output {
    Command::new("bash")
        .arg(workspace().join("scripts/hosts.sh"))
        .args(args)
        .env("SHOAL_BIN", shoal_bin())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SHOAL_HOSTS_ID", id.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/hosts.sh")
}
