//! Test support for shoal's end-to-end tests: run the real `shoal` binary (`shoal up`
//! on the local Docker engine), call its CLI, inspect Docker, and wait with bounded
//! polling instead of fixed sleeps.
//!
//! Every process and container a test starts is owned by a guard that cleans up on drop,
//! also when the test fails.
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

/// The in-process HA cluster: several controllers and fake agents on 127.0.0.1.
pub mod cluster;
/// Several test hosts on one machine (`scripts/hosts.sh`): netns, engines, agents.
pub mod hosts;
pub mod wire;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The image the Docker tests run (built by `scripts/build-test-image.sh`).
pub const TEST_IMAGE: &str = "shoal-test/busybox:latest";

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `shoal` binary built next to this test executable (scripts/test.sh builds it).
pub fn shoal_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/e2e-xxxx -> target/debug/shoal
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("shoal");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p shoal-cli` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// This process's resident memory in KiB (`VmRSS`; 0 where /proc does not say), for
/// benchmarks that print it.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Polls `f` until it returns Some, at most `timeout`; panics with `what` otherwise.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `docker ARGS` and returns stdout; panics on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Container ids (running or not) that carry `label=value`.
pub fn containers_with(label: &str, value: &str, all: bool) -> Vec<String> {
    let filter = format!("label={label}={value}");
    let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &filter];
    if all {
        args.push("-a");
    }
    docker(&args).lines().map(str::to_string).collect()
}

/// Container ids (any state) of one service of one stack.
pub fn service_containers(stack: &str, service: &str) -> Vec<String> {
    let stack = format!("label=io.shoal.stack={stack}");
    let service = format!("label=io.shoal.service={service}");
    docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &stack,
        "--filter",
        &service,
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// The IP addresses of the running containers of one service of one stack.
pub fn running_service_ips(stack: &str, service: &str) -> Vec<String> {
    let stack = format!("label=io.shoal.stack={stack}");
    let service = format!("label=io.shoal.service={service}");
    let ids: Vec<String> = docker(&["ps", "-q", "--filter", &stack, "--filter", &service])
        .lines()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec![
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
    ];
    args.extend(ids.iter().map(String::as_str));
    // A container may go between the two calls: then inspect fails for it alone.
    let out = std::process::Command::new("docker")
        .args(&args)
        .output()
        .expect("run docker inspect");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Makes sure the test image exists (runs the builder script once).
pub fn ensure_test_image() {
    let ok = Command::new("docker")
        .args(["image", "inspect", TEST_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let status = Command::new("bash")
            .arg(workspace().join("scripts/build-test-image.sh"))
            .status()
            .expect("run scripts/build-test-image.sh");
        assert!(status.success(), "building the test image failed");
    }
}

/// `shoal up` running in the background on the local Docker, with its own data dir,
/// port and node name. Dropping it kills the process and removes its containers.
pub struct ShoalUp {
    pub addr: String,
    pub node: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    /// More `shoal up` flags (e.g. `--gpu-inventory FILE`).
    extra: Vec<String>,
    /// `XDG_CONFIG_HOME` of this instance's `shoal up` and CLI calls, so the CLI
    /// config `up` writes (pointing at its admin credentials) is this test's own.
    pub config_home: PathBuf,
    /// `--secrets-dir`: the agent mounts a tmpfs there; unmounted on drop.
    pub secrets_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl ShoalUp {
    /// Starts `shoal up` on a fresh data dir and waits until the node is ready.
    pub fn start(node: &str) -> ShoalUp {
        ShoalUp::start_with(node, &[])
    }

    /// Like [`ShoalUp::start`], with more `shoal up` flags.
    pub fn start_with(node: &str, extra: &[&str]) -> ShoalUp {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut up = ShoalUp {
            addr: format!("127.0.0.1:{}", free_port()),
            node: node.to_string(),
            data_dir,
            child: None,
            log: tmp.path().join("shoal-up.log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            config_home: tmp.path().join("config"),
            secrets_dir: tmp.path().join("secrets"),
            _tmp: Some(tmp),
        };
        remove_node_containers(node);
        up.spawn();
        up
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(shoal_bin())
            .args([
                "up",
                "--listen",
                &self.addr,
                "--name",
                &self.node,
                "--data-dir",
            ])
            .arg(&self.data_dir)
            .arg("--secrets-dir")
            .arg(&self.secrets_dir)
            .args(&self.extra)
            .env("SHOAL_LOG", "info,shoal_controller=debug,shoal_agent=debug")
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env_remove("SHOAL_CREDENTIALS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn shoal up");
        self.child = Some(child);
        let node = self.node.clone();
        eventually(Duration::from_secs(30), "the node to be ready", || {
            let out = self.shoal(&["nodes", "--format", "json"]);
            if !out.status.success() {
                return None;
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            v.as_array()?
                .iter()
                .any(|n| n["name"] == node.as_str() && n["status"] == "ready")
                .then_some(())
        });
    }

    /// Stops `shoal up` with SIGTERM (as a service manager would) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same data dir.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs a client command against this cluster.
    pub fn shoal(&self, args: &[&str]) -> Output {
        Command::new(shoal_bin())
            .args(args)
            .args(["--addr", &self.addr])
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env_remove("SHOAL_CREDENTIALS")
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    }

    /// Runs a client command in `dir` (for relative compose paths and .env files).
    pub fn shoal_in(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(shoal_bin())
            .current_dir(dir)
            .args(args)
            .args(["--addr", &self.addr])
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env_remove("SHOAL_CREDENTIALS")
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    }

    /// `shoal ps --format json` as values.
    pub fn ps(&self, stack: &str) -> Vec<serde_json::Value> {
        let out = self.shoal(&["ps", stack, "--format", "json"]);
        assert!(
            out.status.success(),
            "ps failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .expect("ps prints JSON")
            .as_array()
            .cloned()
            .expect("ps prints an array")
    }

    /// The log of the `shoal up` process, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ShoalUp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- shoal up log ----\n{}", self.log());
        }
        remove_node_containers(&self.node);
        // The tmpfs a killed agent could not unmount.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.secrets_dir)
            .output();
        // Stack networks the agent had no time to remove (unused ones only).
        let _ = Command::new("docker")
            .args(["network", "prune", "-f", "--filter", "label=io.shoal.stack"])
            .output();
    }
}

/// Force-removes every container an agent named `node` started.
pub fn remove_node_containers(node: &str) {
    let ids = containers_with("io.shoal.node", node, true);
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        let _ = Command::new("docker").args(&args).output();
    }
}

/// Writes `DIR/STACK.yaml`: `name: STACK` and `services:` with `services` (indented
/// YAML), and returns its path.
pub fn write_services(dir: &Path, stack: &str, services: &str) -> String {
    let file = dir.join(format!("{stack}.yaml"));
    std::fs::write(&file, format!("name: {stack}\nservices:\n{services}")).unwrap();
    file.display().to_string()
}

/// Output as text, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An HTTP GET on 127.0.0.1:port with a plain TCP socket; the body on a 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_at(&format!("127.0.0.1:{port}"), path)
}

/// An HTTP GET on `addr` (`ip:port`) with a plain TCP socket; the body on a 200.
pub fn http_get_at(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    if !buf.starts_with("HTTP/1.0 200") && !buf.starts_with("HTTP/1.1 200") {
        return None;
    }
    // The body follows the first empty line (CGI scripts may end headers with bare \n).
    let at = [("\r\n\r\n", 4), ("\n\n", 2)]
        .iter()
        .filter_map(|(sep, len)| buf.find(sep).map(|i| i + len))
        .min()?;
    Some(buf[at..].to_string())
}

/// Every file under `dir` holding `needle` in clear or as hex (how the cluster state
/// writes bytes), for checks that a secret is on no disk.
pub fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
    let mut hits = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                let found = [needle.as_bytes(), hex.as_bytes()]
                    .iter()
                    .any(|n| bytes.windows(n.len()).any(|w| w == *n));
                if found {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}
