//! Issue 17's dashboard in a real browser: `shoal dashboard` on three test hosts
//! (`scripts/hosts.sh`), driven through headless Chromium by WebDriver (Debian's
//! `chromium` and `chromium-driver`, the `fantoccini` client).
//!
//! What a person would see, without reloading: the nodes page lists n1..n3; a deploy
//! started from the CLI (`--detach`) shows its rollout progressing on the services page;
//! a line a replica prints after the service's page loaded appears in its live logs; a
//! power-cut node turns `down` on the nodes page (the delay after `shoal nodes` said so
//! is printed); a stack that does not exist gets its 404 page. A screenshot of each
//! page is saved under target/dashboard-screenshots/ (the README's docs/dashboard.png is
//! one of them, copied by hand: a test run leaves the source tree alone).
//!
//! The browser's state is read with small scripts; "without reload" is checked with a
//! marker set on the page's `window` after it loaded, which a reload would clear.
//! Needs root, iproute2, iptables, nsenter, dockerd, the test image, chromium and
//! chromedriver (scripts/test.sh installs them).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use shoal_tests::hosts::Hosts;
use shoal_tests::*;

const WAIT: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A child process in its own process group, killed with its whole group on drop
/// (chromedriver's Chromium processes with it).
struct Group {
    child: Child,
}

impl Group {
    fn spawn(cmd: &mut Command) -> Group {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        Group { child }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `shoal dashboard --listen 127.0.0.1:0` for the hosts' cluster; its URL.
fn start_dashboard(hosts: &Hosts) -> (Group, String) {
    let creds = hosts.controller_dir(1).join("admin");
    let mut group = Group::spawn(
        Command::new(shoal_bin())
            .args([
                "dashboard",
                "--listen",
                "127.0.0.1:0",
                "--addr",
                hosts.addr(),
            ])
            .env("SHOAL_CREDENTIALS", &creds)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let stdout = group.child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("shoal dashboard printed its URL");
    let url = line
        .trim()
        .strip_prefix("dashboard: ")
        .unwrap_or_else(|| panic!("shoal dashboard printed {line:?}, not `dashboard: URL`"))
        .trim_end_matches('/')
        .to_string();
    (group, url)
}

/// Headless Chromium through chromedriver; the session and both processes end on drop.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<fantoccini::Client>,
    _driver: Group,
    base: String,
}

impl Browser {
    fn start(base: &str) -> Browser {
        let port = free_port();
        let driver = Group::spawn(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        // chromedriver answers HTTP/1.1 only; listening is enough, the session waits.
        eventually(WAIT, "chromedriver listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                            "--disable-gpu", "--window-size=1280,900"]}),
        );
        let client = rt
            .block_on(
                fantoccini::ClientBuilder::new(
                    hyper_util::client::legacy::connect::HttpConnector::new(),
                )
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
            )
            .expect("a WebDriver session in headless Chromium");
        Browser {
            rt,
            client: Some(client),
            _driver: driver,
            base: base.to_string(),
        }
    }

    fn client(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("session open")
    }

    /// Opens `path` and marks the page, so [`Browser::not_reloaded`] can tell.
    fn open(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.rt
            .block_on(self.client().goto(&url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
        self.js("window.__shoalMark = 'loaded once'; return null;");
    }

    fn not_reloaded(&self) -> bool {
        self.js("return window.__shoalMark || null;") == json!("loaded once")
    }

    fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.client().execute(script, vec![]))
            .unwrap_or_else(|e| panic!("run {script}: {e}"))
    }

    /// The text of the first element matching `css`, if any.
    fn text(&self, css: &str) -> Option<String> {
        let v = self.js(&format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            json!(css)
        ));
        v.as_str().map(str::to_string)
    }

    fn body(&self) -> String {
        self.text("body").unwrap_or_default()
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .rt
            .block_on(self.client().screenshot())
            .expect("screenshot");
        let dir = workspace().join("target/dashboard-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
    }
}

#[test]
fn the_dashboard_shows_the_cluster_live_in_a_browser() {
    ensure_test_image();
    let hosts = Hosts::up(3);
    hosts.all_ready();
    let (_dashboard, base) = start_dashboard(&hosts);
    let browser = Browser::start(&base);

    // The nodes page lists the three nodes, ready.
    browser.open("/nodes");
    for node in hosts.names() {
        let status = eventually(WAIT, &format!("{node} on the nodes page"), || {
            browser.text(&format!("[data-node=\"{node}\"] .status"))
        });
        assert!(status.contains("ready"), "{node}: {status}");
    }

    // A deploy from the CLI, followed on the services page without reload. Replicas
    // become healthy ~3 s after they start, so the rollout is seen in progress.
    let dir = tempfile::tempdir().unwrap();
    let msg = dir.path().join("msg");
    std::fs::create_dir_all(&msg).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    std::fs::set_permissions(&msg, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let file = write_services(
        dir.path(),
        "dash",
        &format!(
            r#"  web:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "(sleep 3; touch /tmp/ready) & echo web started; while true; do if [ -f /msg/line ]; then cat /msg/line; rm -f /msg/line; fi; sleep 1; done"]
    volumes: ["{msg}:/msg"]
    healthcheck: {{ test: ["CMD", "test", "-f", "/tmp/ready"], interval: 1s, retries: 30 }}
    stop_grace_period: 1s
    deploy: {{ replicas: 3 }}
"#,
            msg = msg.display()
        ),
    );
    browser.open("/services");
    browser.js(
        "window.__seen = [];
         const live = document.getElementById('live');
         const rec = () => {
           const row = live.querySelector('[data-service=\"dash/web\"]');
           const t = row ? row.textContent.replace(/\\s+/g, ' ').trim() : '';
           if (window.__seen[window.__seen.length - 1] !== t) window.__seen.push(t);
         };
         rec();
         new MutationObserver(rec).observe(live, {childList: true, subtree: true, characterData: true});
         return null;",
    );
    hosts.deploy_detached(&file);
    let done = eventually(WAIT, "dash/web at 3/3, completed, on the page", || {
        let row = browser.text("[data-service=\"dash/web\"]")?;
        (row.contains("3/3") && row.contains("completed")).then_some(row)
    });
    let seen: Vec<String> = serde_json::from_value(browser.js("return window.__seen;")).unwrap();
    println!("services page states of dash/web: {seen:#?}");
    assert!(browser.not_reloaded(), "the services page was reloaded");
    // The row did not exist when the page loaded: every state seen came live, the
    // rollout's word and counts changing in order.
    assert_eq!(seen.first().map(String::as_str), Some(""), "{seen:?}");
    let updating = seen.iter().position(|s| s.contains("updating"));
    let completed = seen
        .iter()
        .position(|s| s.contains("3/3") && s.contains("completed"));
    assert!(
        matches!((updating, completed), (Some(u), Some(c)) if u < c),
        "the rollout was not shown in progress then completed: {seen:?} (then {done:?})"
    );
    browser.screenshot("services");

    // The service's page streams a line printed after it loaded.
    browser.open("/services/dash/web");
    eventually(WAIT, "the first log lines", || {
        browser.text("#logs").filter(|t| t.contains("web started"))
    });
    let marker = format!("dashboard-marker-{}", now_ms());
    assert!(!browser.body().contains(&marker));
    std::fs::write(msg.join("line.tmp"), format!("{marker}\n")).unwrap();
    std::fs::rename(msg.join("line.tmp"), msg.join("line")).unwrap();
    eventually(WAIT, "the marker line in the live logs", || {
        browser.text("#logs").filter(|t| t.contains(&marker))
    });
    assert!(browser.not_reloaded(), "the service page was reloaded");
    let tasks = browser.text("#live").unwrap_or_default();
    assert!(
        tasks.contains("running") || tasks.contains("healthy"),
        "{tasks}"
    );
    browser.screenshot("service");
    browser.js("document.getElementById('logs').scrollIntoView(); return null;");
    browser.screenshot("service-logs");

    // The overview names every node and every service with its replica counts.
    browser.open("/");
    let overview = eventually(WAIT, "the overview with dash/web", || {
        let body = browser.body();
        body.contains("dash/web").then_some(body)
    });
    for node in hosts.names() {
        assert!(
            overview.contains(&node),
            "{node} missing from the overview:\n{overview}"
        );
    }
    assert_eq!(
        browser
            .text("[data-service=\"dash/web\"] .replicas")
            .as_deref(),
        Some("3/3")
    );
    browser.screenshot("overview");

    for (path, name, expect) in [
        ("/cluster", "cluster", "Commit index"),
        ("/tasks", "tasks", "dash/web"),
        ("/events", "events", "dash"),
    ] {
        browser.open(path);
        let body = browser.body();
        // The events page says so where the controllers have no `Events` yet.
        let unavailable =
            path == "/events" && body.contains("not available from this cluster version");
        assert!(
            body.contains(expect) || unavailable,
            "{path} lacks {expect:?}:\n{body}"
        );
        browser.screenshot(name);
    }

    // A stack that does not exist.
    browser.open("/stacks/nope");
    let body = browser.body();
    assert!(body.contains("no stack named nope"), "{body}");
    assert_eq!(
        browser.js("return document.querySelector('.problem a[href=\"/\"]') !== null;"),
        json!(true),
        "the 404 page links back to the overview"
    );
    browser.screenshot("no-such-stack");

    // A power cut: the nodes page shows n3 down without reload. The page records when.
    browser.open("/nodes");
    browser.js(
        "window.__downAt = null;
         const live = document.getElementById('live');
         const rec = () => {
           const s = live.querySelector('[data-node=\"n3\"] .status');
           if (window.__downAt === null && s && s.textContent.includes('down')) window.__downAt = Date.now();
         };
         new MutationObserver(rec).observe(live, {childList: true, subtree: true, characterData: true});
         return null;",
    );
    let cut_at = hosts.cut("n3");
    let known_at = eventually(WAIT, "shoal nodes to say n3 is down", || {
        let down = hosts
            .node_status()
            .iter()
            .any(|(n, s, _)| n == "n3" && s == "down");
        down.then(now_ms)
    });
    let shown_at = eventually(
        Duration::from_secs(30),
        "the nodes page to show n3 down",
        || browser.js("return window.__downAt;").as_u64(),
    );
    println!(
        "power cut of n3: shoal nodes said down {} ms after the cut; the page showed it {} ms \
         after shoal nodes did (negative: before)",
        known_at.saturating_sub(cut_at),
        shown_at as i64 - known_at as i64
    );
    assert!(
        shown_at < known_at + 10_000,
        "the page showed n3 down {} ms after shoal nodes did",
        shown_at - known_at
    );
    assert!(browser.not_reloaded(), "the nodes page was reloaded");
    browser.screenshot("nodes");
}
