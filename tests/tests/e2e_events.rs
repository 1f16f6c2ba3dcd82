//! Issue 17 on three test hosts (`scripts/hosts.sh`): `shoal events -f --format json`
//! shows, in order, a deploy's task transitions (assigned, starting, running), a node's
//! power cut (`node.down`) and its replicas replaced elsewhere, each saying why.
//!
//! Needs root, iproute2, iptables, nsenter, dockerd and the test image (scripts/test.sh).

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use shoal_tests::hosts::Hosts;
use shoal_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// `shoal events -f --format json` as a child process, its lines collected as they
/// come; killed on drop (also when the test panics).
struct Follow {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follow {
    fn start(hosts: &Hosts) -> Follow {
        let mut child = Command::new(shoal_bin())
            .args(["events", "-f", "--format", "json", "--addr", hosts.addr()])
            .env("SHOAL_CREDENTIALS", hosts.controller_dir(1).join("admin"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run shoal events -f");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        // Ends when the child's stdout closes (it exits or is killed).
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Follow { child, lines }
    }

    /// Every event printed so far, parsed (a line that is not JSON fails the test).
    fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kind(e: &Value) -> &str {
    e["kind"].as_str().unwrap_or("")
}

/// Where the first event matching `f` is, after position `from`.
fn position(events: &[Value], from: usize, what: &str, f: impl Fn(&Value) -> bool) -> usize {
    events
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, e)| f(e))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no {what} after event {from}:\n{}", show(events)))
}

fn show(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("{} {} {} {}", e["time"], kind(e), e["node"], e["message"]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn events_follow_a_deploy_a_power_cut_and_the_replacements() {
    ensure_test_image();
    let hosts = Hosts::up(3);
    let mut follow = Follow::start(&hosts);
    // Connected once the controller's own leader change is printed.
    eventually(WAIT, "shoal events -f to print the leader", || {
        follow
            .events()
            .iter()
            .any(|e| kind(e) == "leader.changed")
            .then_some(())
    });

    let dir = tempfile::tempdir().unwrap();
    let file = write_services(
        dir.path(),
        "ev",
        &format!(
            "  web:\n    image: {TEST_IMAGE}\n    command: [\"sleep\", \"3600\"]\n    stop_grace_period: 1s\n    deploy: {{replicas: 3}}\n"
        ),
    );
    hosts.deploy_detached(&file);
    let placed = eventually(WAIT, "3 replicas running, one per node", || {
        let tasks = hosts.json(&["ps", "ev"])?.as_array()?.clone();
        let running: Vec<(String, String)> = tasks
            .iter()
            .filter(|t| t["state"] == "running")
            .map(|t| {
                (
                    t["id"].as_str().unwrap_or("").to_string(),
                    t["node"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        (running.len() == 3).then_some(running)
    });
    let (lost_task, _) = placed
        .iter()
        .find(|(_, node)| node == "n2")
        .cloned()
        .unwrap_or_else(|| panic!("no replica on n2: {placed:?}"));

    hosts.cut("n2");
    let replacement = eventually(WAIT, "3 replicas running without n2", || {
        let tasks = hosts.json(&["ps", "ev"])?.as_array()?.clone();
        let running: Vec<&Value> = tasks
            .iter()
            .filter(|t| t["state"] == "running" && t["node"] != "n2")
            .collect();
        if running.len() != 3 {
            return None;
        }
        running
            .iter()
            .find(|t| !placed.iter().any(|(id, _)| t["id"] == id.as_str()))
            .map(|t| t["id"].as_str().unwrap_or("").to_string())
    });
    // The replacement's `task.running` is the last event this test waits for.
    eventually(WAIT, "the replacement's task.running printed", || {
        follow
            .events()
            .iter()
            .any(|e| kind(e) == "task.running" && e["task"] == replacement.as_str())
            .then_some(())
    });
    follow.stop();
    let events = follow.events();
    eprintln!("{}", show(&events));

    // The deploy: its rollout, then each replica assigned, starting, running, in order.
    let started = position(&events, 0, "rollout.started", |e| {
        kind(e) == "rollout.started" && e["stack"] == "ev" && e["service"] == "web"
    });
    let mut deployed = 0;
    for (id, node) in &placed {
        let of = |k: &'static str| move |e: &Value| kind(e) == k && e["task"] == id.as_str();
        let assigned = position(&events, started, "task.assigned", of("task.assigned"));
        let starting = position(&events, assigned, "task.starting", of("task.starting"));
        let running = position(&events, starting, "task.running", of("task.running"));
        assert_eq!(events[assigned]["node"], node.as_str());
        assert_eq!(events[running]["stack"], "ev");
        assert!(
            events[running]["message"]
                .as_str()
                .unwrap_or("")
                .ends_with(&format!("running on {node}")),
            "{}",
            events[running]
        );
        deployed = deployed.max(running);
    }
    // The power cut: n2 down, its replica orphaned, replaced on another node.
    let down = position(&events, deployed, "node.down of n2", |e| {
        kind(e) == "node.down" && e["node"] == "n2"
    });
    assert!(events[down]["message"]
        .as_str()
        .unwrap_or("")
        .contains("its replicas are replaced on other nodes"));
    let orphaned = position(&events, down, "the lost task orphaned", |e| {
        kind(e) == "task.orphaned" && e["task"] == lost_task.as_str()
    });
    assert!(
        events[orphaned]["message"]
            .as_str()
            .unwrap_or("")
            .contains("n2, which is down"),
        "{}",
        events[orphaned]
    );
    let assigned = position(&events, orphaned, "the replacement assigned", |e| {
        kind(e) == "task.assigned" && e["task"] == replacement.as_str()
    });
    let message = events[assigned]["message"].as_str().unwrap_or("");
    assert!(
        message.ends_with("(replaces the task on n2, which is down)"),
        "the replacement says why: {message}"
    );
    assert_ne!(events[assigned]["node"], "n2");
    position(&events, assigned, "the replacement running", |e| {
        kind(e) == "task.running" && e["task"] == replacement.as_str()
    });
    // Another controller has the same events of the stack (derived from the same
    // entries), and `--stack` keeps only them.
    let out = Command::new(shoal_bin())
        .args(["events", "--stack", "ev", "--format", "json"])
        .args(["--addr", &hosts.controller_addr(2)])
        .env("SHOAL_CREDENTIALS", hosts.controller_dir(1).join("admin"))
        .stdin(Stdio::null())
        .output()
        .expect("run shoal events");
    assert!(out.status.success(), "{}", text(&out));
    let other: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ours: Vec<&Value> = events.iter().filter(|e| e["stack"] == "ev").collect();
    assert!(other.iter().all(|e| e["stack"] == "ev"), "{}", show(&other));
    assert_eq!(
        other.iter().take(ours.len()).collect::<Vec<_>>(),
        ours,
        "controller 2 says the same, in the same order"
    );
    // Every line has the contract's keys, with RFC 3339 UTC millisecond times.
    for e in &events {
        let keys: Vec<&String> = e.as_object().expect("an object").keys().collect();
        assert_eq!(keys.len(), 7, "{e}");
        for k in [
            "time", "kind", "stack", "service", "node", "task", "message",
        ] {
            assert!(e[k].is_string(), "{k} in {e}");
        }
        let time = e["time"].as_str().unwrap_or("");
        assert!(
            time.len() == 24 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
            "{time}"
        );
    }
}
