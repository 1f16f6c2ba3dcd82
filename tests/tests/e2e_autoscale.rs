//! Issue 16 on three test hosts (`scripts/hosts.sh`): `x-shoal-autoscale` scales services
//! on what their replicas serve at `/metrics` (a gauge, a histogram's p95), on the CPU
//! they burn, and on what a real Prometheus server (Debian's `prometheus`) answers; the
//! count stays within min and max, scale-downs wait their window, `shoal scale` refuses
//! an autoscaled service, and a leader killed while scaling neither loses nor repeats a
//! step. The same Prometheus also scrapes shoal's own `/metrics` on every controller and
//! agent (issue 17), and the figures it stores follow the cluster.
//!
//! The replicas are busybox `httpd`s serving a directory of the host that the test
//! rewrites (the test hosts share the host's /tmp). The scenarios share one set of hosts
//! and run in sequence. Needs root, iproute2, iptables, nsenter, dockerd, the test image
//! and `prometheus` (scripts/test.sh installs them).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::hosts::Hosts;
use shoal_tests::*;

const WAIT: Duration = Duration::from_secs(90);

/// Rewrites the `metrics` file every replica of a service serves (atomically: a reader
/// never sees half of it).
fn serve(www: &Path, metrics: &str) {
    let tmp = www.join(".metrics.tmp");
    std::fs::write(&tmp, metrics).unwrap();
    std::fs::rename(&tmp, www.join("metrics")).unwrap();
}

/// A busybox httpd serving `www` on port 9100, autoscaled by `autoscale` (YAML lines
/// under the key, indented by 6).
fn httpd(name: &str, www: &Path, extra: &str, autoscale: &str) -> String {
    format!(
        r#"  {name}:
    image: {TEST_IMAGE}
    command: ["httpd", "-f", "-p", "9100", "-h", "/www"]
    volumes: ["{www}:/www:ro"]
    stop_grace_period: 1s
{extra}    x-shoal-autoscale:
{autoscale}"#,
        www = www.display()
    )
}

fn www(dir: &Path, name: &str) -> std::path::PathBuf {
    let www = dir.join(name);
    std::fs::create_dir_all(&www).unwrap();
    // The replicas' httpd runs as root but the directory is the test's: readable by all.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    www
}

/// The `shoal services --format json` row of `stack/service`.
fn service(hosts: &Hosts, stack: &str, name: &str) -> Option<Value> {
    hosts
        .json(&["services"])?
        .as_array()?
        .iter()
        .find(|s| s["stack"] == stack && s["name"] == name)
        .cloned()
}

/// Waits until the autoscaler of `stack/name` wants `want` replicas and that many run;
/// returns the row.
fn scaled_to(hosts: &Hosts, stack: &str, name: &str, want: u64) -> Value {
    eventually(
        WAIT,
        &format!("{stack}/{name} at {want} running replicas"),
        || {
            let s = service(hosts, stack, name)?;
            (s["autoscale"]["desired"] == want && s["running"] == want).then_some(s)
        },
    )
}

fn nodes_running(hosts: &Hosts, stack: &str, service: &str) -> BTreeSet<String> {
    hosts
        .ps(stack)
        .iter()
        .filter(|t| t["service"] == service && t["state"] == "running")
        .filter_map(|t| t["node"].as_str().map(str::to_string))
        .collect()
}

/// A real Prometheus server on the host, scraping each job's targets every second;
/// killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(jobs: &[(&str, Vec<String>)]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
        for (job, targets) in jobs {
            let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
            config += &format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            );
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run prometheus (Debian's package; scripts/test.sh installs it)");
        let prom = Prometheus {
            child,
            port,
            _dir: dir,
        };
        eventually(WAIT, "prometheus answering", || {
            http_get(port, "/-/ready").filter(|b| b.contains("Ready"))
        });
        prom
    }
}

impl Prometheus {
    /// The value of an instant query whose answer is one sample (None: no answer yet,
    /// or not exactly one sample).
    fn value(&self, query: &str) -> Option<f64> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let body = http_get(self.port, &format!("/api/v1/query?query={encoded}"))?;
        let answer: Value = serde_json::from_str(&body).ok()?;
        let result = answer["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` answers `want`.
    fn wait_for(&self, query: &str, want: f64) {
        eventually(WAIT, &format!("prometheus: {query} == {want}"), || {
            (self.value(query)? == want).then_some(())
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn services_scale_on_gauges_p95_cpu_and_prometheus_across_nodes() {
    ensure_test_image();
    let hosts = Hosts::up_with_metrics(3);
    let dir = tempfile::tempdir().unwrap();

    // 1. A queue gauge: from min 2 up to max 5 as it rises, spread over the nodes; max
    //    holds; `shoal scale` refuses; down to min 2 once it falls, not before the window.
    let queue = www(dir.path(), "queue");
    serve(&queue, "# TYPE queue_depth gauge\nqueue_depth 0\n");
    let file = write_services(dir.path(),
        "auto",
        &httpd(
            "infer",
            &queue,
            "",
            "      min: 2\n      max: 5\n      metrics:\n        - scrape: { port: 9100, gauge: queue_depth, per_replica: 10 }\n      scale_down: { stabilization: 20s }\n",
        ),
    );
    hosts.deploy_detached(&file);
    let start = scaled_to(&hosts, "auto", "infer", 2);
    assert_eq!(start["autoscale"]["min"], 2, "{start}");
    assert_eq!(start["autoscale"]["max"], 5, "{start}");

    // Every replica serves 30: 60 over 2 replicas against 10 each wants 6, held at 5.
    serve(&queue, "# TYPE queue_depth gauge\nqueue_depth 30\n");
    let up = scaled_to(&hosts, "auto", "infer", 5);
    let cause = up["autoscale"]["cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains("queue_depth"),
        "the cause names the gauge: {up}"
    );
    let nodes = nodes_running(&hosts, "auto", "infer");
    assert_eq!(
        nodes.len(),
        3,
        "5 replicas spread over the 3 nodes: {nodes:?}"
    );
    let table = text(&hosts.shoal(&["services"]));
    assert!(
        table.contains("AUTOSCALE") && table.contains("5 (2-5)"),
        "the table shows the count and its bounds:\n{table}"
    );
    let refused = hosts.shoal(&["scale", "auto/infer=3"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("autoscaled between 2 and 5"),
        "`shoal scale` says why it does nothing: {}",
        text(&refused)
    );
    // A decision taken on all 5 replicas' 150 (against 50) wants 15: still 5.
    let held = eventually(WAIT, "a decision on 5 replicas' readings", || {
        let s = service(&hosts, "auto", "infer")?;
        let readings = s["autoscale"]["readings"].as_array()?;
        readings
            .iter()
            .any(|r| {
                r.as_str()
                    .is_some_and(|r| r.starts_with("queue_depth 150 "))
            })
            .then_some(s)
    });
    assert_eq!(held["autoscale"]["desired"], 5, "max holds: {held}");

    serve(&queue, "# TYPE queue_depth gauge\nqueue_depth 0\n");
    let fell = Instant::now();
    let down = scaled_to(&hosts, "auto", "infer", 2);
    // The last high recommendation may predate the fall by up to one 5 s interval (a
    // decision on the last report read before it): the window then ends 15 s after it.
    assert!(
        fell.elapsed() >= Duration::from_secs(15),
        "the scale-down waited its 20 s window: {:?}",
        fell.elapsed()
    );
    assert_eq!(down["autoscale"]["min"], 2, "{down}");

    // 2. p95 of a histogram: observations between 0.5 s and 1 s, against 0.5 s.
    let lat = www(dir.path(), "lat");
    let histogram = |n: u64| {
        format!(
            "# TYPE lat_seconds histogram\nlat_seconds_bucket{{le=\"0.1\"}} 0\nlat_seconds_bucket{{le=\"0.5\"}} 0\nlat_seconds_bucket{{le=\"1\"}} {n}\nlat_seconds_bucket{{le=\"+Inf\"}} {n}\nlat_seconds_sum {}\nlat_seconds_count {n}\n",
            n as f64 * 0.9
        )
    };
    serve(&lat, &histogram(0));
    let file = write_services(dir.path(),
        "lat",
        &httpd(
            "api",
            &lat,
            "",
            "      min: 1\n      max: 3\n      metrics:\n        - scrape: { port: 9100, histogram: lat_seconds, quantile: 0.95, window: 30s, above: 500ms }\n",
        ),
    );
    hosts.deploy_detached(&file);
    scaled_to(&hosts, "lat", "api", 1);
    let mut observed = 0;
    let p95 = eventually(WAIT, "the p95 to scale lat/api up", || {
        observed += 50;
        serve(&lat, &histogram(observed));
        std::thread::sleep(Duration::from_secs(1));
        let s = service(&hosts, "lat", "api")?;
        (s["autoscale"]["desired"].as_u64()? >= 2).then_some(s)
    });
    let cause = p95["autoscale"]["cause"].as_str().unwrap_or_default();
    assert!(cause.contains("p95 lat_seconds"), "{p95}");

    // 3. CPU: replicas that burn their whole limit, against 50% of it.
    let file = write_services(
        dir.path(),
        "burn",
        &format!(
            r#"  hot:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "while :; do :; done"]
    stop_grace_period: 1s
    deploy:
      resources:
        limits: {{ cpus: "0.05" }}
    x-shoal-autoscale:
      min: 1
      max: 2
      metrics:
        - cpu: 50%
"#
        ),
    );
    hosts.deploy_detached(&file);
    let hot = scaled_to(&hosts, "burn", "hot", 2);
    assert!(
        hot["autoscale"]["cause"]
            .as_str()
            .unwrap_or_default()
            .contains("cpu"),
        "{hot}"
    );
    assert!(hosts.shoal(&["rm", "burn"]).status.success());

    // 4. A real Prometheus scraping the service's published port on n1 (the leader
    //    queries it on the host, where the controllers run), and shoal's own `/metrics`
    //    on every controller and agent.
    let prom_www = www(dir.path(), "prom");
    serve(&prom_www, "# TYPE queue_depth gauge\nqueue_depth 25\n");
    let published = 19_100;
    let names = hosts.names();
    let prometheus = Prometheus::start(&[
        ("app", vec![format!("{}:{published}", hosts.ip("n1"))]),
        (
            "controller",
            (1..=3).map(|k| hosts.controller_metrics(k)).collect(),
        ),
        (
            "agent",
            names.iter().map(|n| hosts.agent_metrics(n)).collect(),
        ),
    ]);
    let file = write_services(dir.path(),
        "promq",
        &httpd(
            "q",
            &prom_www,
            &format!("    ports: [\"{published}:9100\"]\n"),
            &format!(
                "      min: 1\n      max: 3\n      metrics:\n        - prometheus: {{ url: \"http://127.0.0.1:{}\", query: \"sum(queue_depth)\", per_replica: 10 }}\n",
                prometheus.port
            ),
        ),
    );
    hosts.deploy_detached(&file);
    // 25 against 10 per replica: 3.
    let q = scaled_to(&hosts, "promq", "q", 3);
    assert!(
        q["autoscale"]["cause"]
            .as_str()
            .unwrap_or_default()
            .contains("prometheus"),
        "{q}"
    );
    // shoal's own figures, as Prometheus scraped and parsed them: every controller and
    // agent up, one leader, three nodes ready (on every controller), and the agents'
    // per-task figures of the service just scaled, labelled with its stack and nodes.
    prometheus.wait_for("sum(up{job=\"controller\"})", 3.0);
    prometheus.wait_for("sum(up{job=\"agent\"})", 3.0);
    prometheus.wait_for("sum(shoal_raft_is_leader)", 1.0);
    prometheus.wait_for("min(shoal_nodes{status=\"ready\"})", 3.0);
    prometheus.wait_for(
        "count(shoal_task_memory_bytes{stack=\"promq\",service=\"q\"} > 0)",
        3.0,
    );
    prometheus.wait_for("min(shoal_tasks{state=\"running\"}) >= bool 3", 1.0);
    drop(prometheus);

    // 5. The leader killed while a service steps up one replica at a time: the count
    //    only rises, one step per decision, and reaches max on the new leader.
    let steps = www(dir.path(), "steps");
    serve(&steps, "# TYPE queue_depth gauge\nqueue_depth 100\n");
    let file = write_services(dir.path(),
        "steps",
        &httpd(
            "w",
            &steps,
            "",
            "      min: 1\n      max: 4\n      metrics:\n        - scrape: { port: 9100, gauge: queue_depth, per_replica: 10 }\n      scale_up: { max_step: 1 }\n",
        ),
    );
    hosts.deploy_detached(&file);
    eventually(WAIT, "steps/w at 2", || {
        let s = service(&hosts, "steps", "w")?;
        (s["autoscale"]["desired"].as_u64()? >= 2).then_some(())
    });
    let members = hosts.members(3);
    let leader = members
        .iter()
        .find(|(_, role)| role == "leader")
        .map(|(id, _)| *id)
        .expect("a leader");
    hosts.kill_controller(leader as usize);
    let mut seen = vec![];
    eventually(WAIT, "steps/w at 4 on the new leader", || {
        let s = service(&hosts, "steps", "w")?;
        let desired = s["autoscale"]["desired"].as_u64()?;
        if seen.last() != Some(&desired) {
            seen.push(desired);
        }
        (desired == 4).then_some(())
    });
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "one step at a time, never back: {seen:?}"
    );
}
