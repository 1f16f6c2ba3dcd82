//! End to end with a highly available control plane: three `shoal controller` processes
//! and one `shoal agent` on the local Docker engine. The leader is killed with SIGKILL;
//! the two survivors elect a new one, accept a deploy, and the agent keeps the containers
//! it was running.
//!
//! Needs Docker and the test image (scripts/test.sh provides both).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::*;

const NODE: &str = "e2e-ha";
const LONG: Duration = Duration::from_secs(90);
/// How long a new leader waits for a node before declaring it down (the default).
const NODE_GRACE: Duration = Duration::from_secs(2);
/// Fast Raft timings, so the test spends its time on behaviour rather than waiting.
const TIMINGS: [&str; 4] = ["--heartbeat-ms", "50", "--election-timeout-ms", "300"];

/// One `shoal controller` or `shoal agent` process with its log file.
struct Proc {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(name: &str, args: Vec<String>, log: PathBuf) -> Proc {
        let mut p = Proc {
            name: name.to_string(),
            args,
            log,
            child: None,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(shoal_bin())
            .args(&self.args)
            .env("SHOAL_LOG", "info,shoal_controller=debug,shoal_agent=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL, as a crashed machine would.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Three controllers and one agent; dropping it kills every process and removes every
/// container the agent started (also when the test panics).
struct HaCluster {
    controllers: Vec<(String, Proc)>,
    agent: Option<Proc>,
    tmp: tempfile::TempDir,
}

impl HaCluster {
    fn start() -> HaCluster {
        remove_node_containers(NODE);
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut cluster = HaCluster {
            controllers: Vec::new(),
            agent: None,
            tmp,
        };
        let addrs: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        for (i, addr) in addrs.iter().enumerate() {
            let data = cluster.tmp.path().join(format!("controller-{i}"));
            let mut args = vec![
                "controller".to_string(),
                "--data-dir".to_string(),
                data.display().to_string(),
                "--listen".to_string(),
                addr.clone(),
                "--advertise".to_string(),
                addr.clone(),
            ];
            if i == 0 {
                args.push("--init".to_string());
            } else {
                let token = cluster.token(&addrs[..1], "controller");
                args.extend([
                    "--join".to_string(),
                    addrs[0].clone(),
                    "--token".to_string(),
                    token,
                ]);
            }
            args.extend(TIMINGS.iter().map(|s| s.to_string()));
            let log = cluster.tmp.path().join(format!("controller-{i}.log"));
            let proc = Proc::spawn(&format!("controller {addr}"), args, log);
            cluster.controllers.push((addr.clone(), proc));
            // Join one at a time: each joiner is added as a learner, then promoted.
            let members = i + 1;
            eventually(
                Duration::from_secs(30),
                &format!("{members} voting controllers"),
                || {
                    let s = cluster.status(&addrs[..members])?;
                    let voters = s["members"]
                        .as_array()?
                        .iter()
                        .filter(|m| m["role"] == "leader" || m["role"] == "follower")
                        .count();
                    (voters == members && s["leader"].as_u64()? != 0).then_some(())
                },
            );
        }

        let agent_data = cluster.tmp.path().join("agent");
        let agent_log = cluster.tmp.path().join("agent.log");
        let token = cluster.token(&addrs, "agent");
        let args = vec![
            "agent".to_string(),
            "--token".to_string(),
            token,
            "--addr".to_string(),
            addrs.join(","),
            "--name".to_string(),
            NODE.to_string(),
            "--data-dir".to_string(),
            agent_data.display().to_string(),
        ];
        cluster.agent = Some(Proc::spawn("agent", args, agent_log));
        eventually(Duration::from_secs(30), "the node to be ready", || {
            cluster.node_ready(&addrs).then_some(())
        });
        cluster
    }

    fn all_addrs(&self) -> Vec<String> {
        self.controllers.iter().map(|(a, _)| a.clone()).collect()
    }

    /// `shoal cluster status --format json` through `addrs`, if it answered.
    fn status(&self, addrs: &[String]) -> Option<Value> {
        let out = self.shoal_at(addrs, &["cluster", "status", "--format", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn node_ready(&self, addrs: &[String]) -> bool {
        let out = self.shoal_at(addrs, &["nodes", "--format", "json"]);
        let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
            return false;
        };
        v.as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .any(|n| n["name"] == NODE && n["status"] == "ready")
        })
    }

    /// The address of the current leader, as the cluster reports it.
    fn leader_addr(&self, addrs: &[String]) -> Option<String> {
        let s = self.status(addrs)?;
        let leader = s["leader"].as_u64()?;
        s["members"]
            .as_array()?
            .iter()
            .find(|m| m["id"].as_u64() == Some(leader))
            .and_then(|m| m["address"].as_str())
            .map(str::to_string)
    }

    fn kill9(&mut self, addr: &str) {
        let (_, proc) = self
            .controllers
            .iter_mut()
            .find(|(a, _)| a == addr)
            .unwrap_or_else(|| panic!("no controller at {addr}"));
        proc.kill9();
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        let procs = self.controllers.iter().map(|(_, p)| p).chain(&self.agent);
        for p in procs {
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            out.push_str(&format!("---- {} ----\n{log}\n", p.name));
        }
        out
    }
}

impl Drop for HaCluster {
    fn drop(&mut self) {
        // The agent first, so it cannot start anything while the containers go.
        if let Some(mut agent) = self.agent.take() {
            agent.kill9();
        }
        for (_, c) in &mut self.controllers {
            c.kill9();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        remove_node_containers(NODE);
        let _ = Command::new("docker")
            .args(["network", "prune", "-f", "--filter", "label=io.shoal.stack"])
            .output();
    }
}

impl HaCluster {
    /// Runs a client command with `--addr` set to `addrs` and the admin credentials
    /// the first controller's `--init` wrote.
    fn shoal_at(&self, addrs: &[String], args: &[&str]) -> Output {
        Command::new(shoal_bin())
            .args(args)
            .args(["--addr", &addrs.join(",")])
            .arg("--credentials")
            .arg(self.tmp.path().join("controller-0").join("admin"))
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    }

    /// `shoal token show ROLE`, once the first controller answers.
    fn token(&self, addrs: &[String], role: &str) -> String {
        eventually(Duration::from_secs(30), "a join token", || {
            let out = self.shoal_at(addrs, &["token", "show", role]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
    }
}

fn write_stack(dir: &Path, stack: &str, replicas: u32) -> PathBuf {
    let file = dir.join(format!("{stack}.yaml"));
    let compose = format!(
        r#"name: {stack}
services:
  app:
    image: {TEST_IMAGE}
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    deploy:
      replicas: {replicas}
"#
    );
    std::fs::write(&file, compose).expect("write compose file");
    file
}

fn running_containers(stack: &str) -> Vec<String> {
    let mut ids = containers_with("io.shoal.stack", stack, false);
    ids.sort();
    ids
}

#[test]
fn killing_the_leader_keeps_deploys_working_and_containers_running() {
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = HaCluster::start();
    let all = cluster.all_addrs();

    // A first stack, deployed through any controller.
    let first = "e2eha1";
    let file = write_stack(dir.path(), first, 2);
    let out = cluster.shoal_at(&all, &["deploy", "-c", file.to_str().unwrap()]);
    assert!(out.status.success(), "first deploy failed: {}", text(&out));
    let before = running_containers(first);
    assert_eq!(before.len(), 2, "two containers of {first}: {before:?}");

    // Kill the leader with SIGKILL.
    let leader = cluster.leader_addr(&all).expect("a leader");
    let survivors: Vec<String> = all.iter().filter(|a| **a != leader).cloned().collect();
    let killed_at = Instant::now();
    cluster.kill9(&leader);

    // At once, while the survivors may still be electing: `deploy` waits for a leader,
    // then exits 0 only once its replica runs, so the agent has followed the new leader.
    let second = "e2eha2";
    let file = write_stack(dir.path(), second, 1);
    let out = cluster.shoal_at(&survivors, &["deploy", "-c", file.to_str().unwrap()]);
    let deployed = killed_at.elapsed();
    assert!(
        out.status.success(),
        "deploy after failover failed: {}",
        text(&out)
    );
    assert_eq!(running_containers(second).len(), 1);

    // The survivors elected a new leader.
    let new_leader = eventually(Duration::from_secs(30), "a new leader", || {
        cluster.leader_addr(&survivors).filter(|l| *l != leader)
    });
    // It was elected before that deploy could return.
    let elected = deployed;
    assert!(
        survivors.contains(&new_leader),
        "{new_leader} is not a survivor"
    );

    // The node is still ready once the new leader's grace period for it (2 s, the
    // controller's default) is over: the agent heartbeats to the new leader.
    let grace_over = elected + NODE_GRACE + Duration::from_secs(1);
    eventually(LONG, "the node to be ready under the new leader", || {
        (killed_at.elapsed() > grace_over && cluster.node_ready(&survivors)).then_some(())
    });
    // Every replica of the first stack still runs, in the same containers.
    let out = cluster.shoal_at(&survivors, &["ps", first, "--format", "json"]);
    assert!(out.status.success(), "ps failed: {}", text(&out));
    let ps: Value = serde_json::from_slice(&out.stdout).expect("ps prints JSON");
    let mut listed: Vec<String> = ps
        .as_array()
        .expect("ps prints an array")
        .iter()
        .filter(|r| r["desired"] == "running" && r["state"] == "running")
        .filter_map(|r| r["container"].as_str().map(str::to_string))
        .collect();
    listed.sort();
    assert_eq!(listed, before, "ps after failover: {ps:#}");
    assert_eq!(
        running_containers(first),
        before,
        "the failover restarted containers"
    );

    println!(
        "failover: SIGKILL of leader {leader}; new leader {new_leader}; \
         deploy through the survivors, sent at once, exited 0 {} ms after SIGKILL",
        deployed.as_millis()
    );
}
