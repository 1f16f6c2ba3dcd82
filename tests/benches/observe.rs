//! What watching the cluster costs its controller, printed (not asserted):
//! `scripts/bench/observe.sh` (or `cargo build --release -p shoal-cli` then
//! `cargo bench -p shoal-tests --bench observe`).
//!
//! One controller and 10 fake agents run 1,000 tasks in this process; the controller
//! serves `/metrics` and the agents report their replicas' figures every 5 s.
//!
//! 1. `/metrics`: scrapes back to back for a while: the controller's CPU per scrape (this
//!    process's CPU time over the scrapes, less the same span idle: the fake agents'
//!    heartbeats and reports run either way), the page's size, and RSS before and after.
//!    The scraping client runs in this process too, so the figure is an upper bound.
//! 2. The dashboard's live updates: `shoal dashboard` as its own process, against this
//!    controller, with browsers' live streams open on the overview, services, tasks and
//!    nodes pages (each re-rendered every second from the controller's answers): this
//!    process's CPU over those seconds against the same seconds with none, and its RSS.
//!
//! `cargo test --benches` runs it small (100 tasks, short spans) so it stays working.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_proto::spec::{ServiceSpec, StackSpec};
use shoal_tests::cluster::{Cluster, Options};
use shoal_tests::rss_kib;

/// This process's CPU time (user + system) so far, in seconds (clock ticks of 10 ms).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at its closing ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 of `rest`.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks as f64 / 100.0
}

/// CPU seconds this process spends over `span` while `during` runs alongside.
async fn cpu_over(span: Duration, during: impl std::future::Future<Output = ()>) -> f64 {
    let before = cpu_secs();
    let wait = tokio::time::sleep(span);
    tokio::pin!(wait);
    tokio::pin!(during);
    let mut done = false;
    loop {
        tokio::select! {
            _ = &mut wait => break,
            _ = &mut during, if !done => done = true,
        }
    }
    cpu_secs() - before
}

fn stack(replicas: u64) -> StackSpec {
    let web = ServiceSpec {
        name: "web".into(),
        image: "shoal-test/busybox:latest".into(),
        replicas,
        ..Default::default()
    };
    StackSpec {
        name: "watched".into(),
        services: [("web".to_string(), web)].into_iter().collect(),
        volumes: Default::default(),
        secrets: Vec::new(),
        configs: Vec::new(),
        networks: Default::default(),
    }
}

async fn all_running(cl: &Cluster, replicas: u64, bound: Duration) -> bool {
    let client = cl.client();
    let start = Instant::now();
    while start.elapsed() < bound {
        if let Ok(rows) = client.ps("watched").await {
            let running = rows.iter().filter(|r| r.state == "running").count() as u64;
            if running == replicas {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// One GET of `path` on `addr`: the body's length (0 on any failure).
fn get(addr: std::net::SocketAddr, path: &str) -> usize {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    match text.find("\r\n\r\n") {
        Some(at) if text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200") => {
            buf.len() - at - 4
        }
        _ => 0,
    }
}

/// `shoal dashboard` against the cluster; killed when dropped.
struct Dashboard {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Dashboard {
    fn start(cl: &Cluster) -> Option<Dashboard> {
        // target/<profile>/deps/observe-xxxx -> target/<profile>/shoal
        let exe = std::env::current_exe().ok()?;
        let bin = exe.parent()?.parent()?.join("shoal");
        if !bin.exists() {
            println!(
                "dashboard: {} is missing: build it with `cargo build --release -p shoal-cli` \
                 (scripts/bench/observe.sh does)",
                bin.display()
            );
            return None;
        }
        let mut child = Command::new(&bin)
            .args(["--addr", &cl.addrs().join(",")])
            .arg("--credentials")
            .arg(cl.data_dir(0).join("admin"))
            .args(["dashboard", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut line = String::new();
        let read = child
            .stdout
            .take()
            .map(|out| BufReader::new(out).read_line(&mut line));
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.trim().trim_end_matches('/').parse().ok());
        match (read, addr) {
            (Some(Ok(_)), Some(addr)) => Some(Dashboard { child, addr }),
            _ => {
                println!("dashboard: did not print its address (got {line:?})");
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser's live stream of `path` (server-sent events), read until `stop`; counts
/// the bytes it received.
fn viewer(
    addr: std::net::SocketAddr,
    path: String,
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
        )
        .is_err()
        {
            return;
        }
        let mut buf = [0u8; 16 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (tasks, span, viewers_per_page) = if quick {
        (100, Duration::from_secs(2), 1)
    } else {
        (1_000, Duration::from_secs(20), 2)
    };
    let names: Vec<String> = (0..10).map(|i| format!("watch-n{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = Options {
        heartbeat_interval: Duration::from_millis(500),
        node_grace: Duration::from_secs(10),
        metrics: true,
        ..Options::default()
    };
    let cl = Cluster::start_with(1, &refs, opts).await;
    cl.client().deploy(&stack(tasks)).await.expect("deploy");
    if !all_running(&cl, tasks, Duration::from_secs(300)).await {
        println!("observe: {tasks} tasks did not all run within 300 s; no figures");
        cl.shutdown();
        return;
    }
    // Let the deploy's status traffic drain and the agents' first reports arrive.
    tokio::time::sleep(Duration::from_secs(6)).await;

    // 1. /metrics.
    let metrics = cl.metrics_addr(0);
    let idle = cpu_over(span, async {}).await;
    let rss_before = rss_kib();
    let scrapes = Arc::new(AtomicU64::new(0));
    let page_bytes = Arc::new(AtomicU64::new(0));
    let (n, b) = (scrapes.clone(), page_bytes.clone());
    let busy = cpu_over(span, async move {
        loop {
            let size = tokio::task::spawn_blocking(move || get(metrics, "/metrics"))
                .await
                .unwrap_or(0);
            if size == 0 {
                return;
            }
            n.fetch_add(1, Ordering::Relaxed);
            b.store(size as u64, Ordering::Relaxed);
        }
    })
    .await;
    let scraped = scrapes.load(Ordering::Relaxed);
    if scraped == 0 {
        println!("metrics: no scrape answered on {metrics}");
    } else {
        println!(
            "metrics: {tasks} tasks: {scraped} scrapes in {:.0} s, {:.2} ms of controller CPU \
             per scrape (process CPU {busy:.2} s vs {idle:.2} s idle), page {} bytes; rss \
             {rss_before} KiB before, {} KiB after",
            span.as_secs_f64(),
            (busy - idle).max(0.0) * 1000.0 / scraped as f64,
            page_bytes.load(Ordering::Relaxed),
            rss_kib()
        );
    }

    // 2. The dashboard's live updates.
    let Some(dashboard) = Dashboard::start(&cl) else {
        cl.shutdown();
        return;
    };
    let idle = cpu_over(span, async {}).await;
    let rss_before = rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let pages = ["/live/", "/live/services", "/live/tasks", "/live/nodes"];
    let mut threads = Vec::new();
    for page in pages {
        for _ in 0..viewers_per_page {
            threads.push(viewer(
                dashboard.addr,
                page.to_string(),
                stop.clone(),
                received.clone(),
            ));
        }
    }
    let busy = cpu_over(span, async {}).await;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    println!(
        "dashboard: {tasks} tasks, {} live pages open for {:.0} s: controller CPU {:.1}% of a \
         core (process CPU {busy:.2} s vs {idle:.2} s idle), {} KiB of updates sent; rss \
         {rss_before} KiB before, {} KiB after",
        pages.len() * viewers_per_page,
        span.as_secs_f64(),
        (busy - idle).max(0.0) * 100.0 / span.as_secs_f64(),
        received.load(Ordering::Relaxed) / 1024,
        rss_kib()
    );
    drop(dashboard);
    cl.shutdown();
}
