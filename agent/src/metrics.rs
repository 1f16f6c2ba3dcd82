//! `shoal agent --metrics ADDR`: Prometheus text on `GET /metrics`, with this node's
//! GPUs (total memory always; utilization and memory used where NVML gives them) and
//! what it received from the cluster's image store. The GPU figures are the last
//! rediscovery's ([`crate::gpu::watch`] keeps them current without re-reporting to the
//! controller). [`render`] and [`render_images`] are the pure part.

use std::fmt::Write as _;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::gpu::GpuDevice;
use crate::images::ImageCounters;

/// A per-GPU gauge: its name, its help text and its value for one GPU (if known).
type Gauge = (&'static str, &'static str, fn(&GpuDevice) -> Option<u64>);

/// The metrics page for node `node` with `gpus`, in Prometheus' text format.
pub fn render(node: &str, gpus: &[GpuDevice]) -> String {
    let mut out = String::new();
    let label = |g: &GpuDevice| {
        format!(
            "node=\"{}\",uuid=\"{}\",index=\"{}\",model=\"{}\"",
            escape(node),
            escape(&g.uuid),
            g.index,
            escape(&g.model)
        )
    };
    let _ = writeln!(out, "# HELP shoal_gpus GPUs this node has.");
    let _ = writeln!(out, "# TYPE shoal_gpus gauge");
    let _ = writeln!(
        out,
        "shoal_gpus{{node=\"{}\"}} {}",
        escape(node),
        gpus.len()
    );
    let gauges: [Gauge; 3] = [
        (
            "shoal_gpu_memory_total_bytes",
            "Total memory of the GPU.",
            |g| Some(g.memory_bytes),
        ),
        (
            "shoal_gpu_memory_used_bytes",
            "Memory in use on the GPU (NVML).",
            |g| g.memory_used_bytes,
        ),
        (
            "shoal_gpu_utilization_percent",
            "Percent of time a kernel ran over NVML's last sample period.",
            |g| g.utilization_percent.map(u64::from),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for g in gpus {
            if let Some(v) = value(g) {
                let _ = writeln!(out, "{name}{{{}}} {v}", label(g));
            }
        }
    }
    out
}

/// The image transfer counters of node `node`, in Prometheus' text format.
pub fn render_images(node: &str, images: &ImageCounters) -> String {
    let mut out = String::new();
    let counters = [
        (
            "shoal_agent_image_bytes_received_total",
            "Bytes of image blobs received from the cluster's image store.",
            images.bytes_received(),
        ),
        (
            "shoal_agent_images_loaded_total",
            "Images loaded into the engine from the cluster's image store.",
            images.images_loaded(),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name}{{node=\"{}\"}} {value}", escape(node));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` on `listener` until `shutdown`; anything else is a 404.
pub async fn serve(
    listener: TcpListener,
    node: String,
    gpus: watch::Receiver<Vec<GpuDevice>>,
    images: std::sync::Arc<ImageCounters>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving metrics on /metrics");
    }
    loop {
        let (mut conn, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "metrics accept failed");
                    continue;
                }
            },
        };
        let page = render(&node, &gpus.borrow()) + &render_images(&node, &images);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if path == "/metrics" {
                ("200 OK", page)
            } else {
                (
                    "404 Not Found",
                    "not found: the metrics are on /metrics\n".to_string(),
                )
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = conn.write_all(reply.as_bytes()).await {
                debug!(%peer, error = %e, "metrics reply failed");
            }
        });
    }
}

/// Binds `addr` for [`serve`], saying which address could not be bound.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind the metrics address {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(i: u32, used: Option<u64>, util: Option<u32>) -> GpuDevice {
        GpuDevice {
            uuid: format!("GPU-{i}"),
            index: i,
            model: "NVIDIA A10".into(),
            memory_bytes: 24 << 30,
            utilization_percent: util,
            memory_used_bytes: used,
        }
    }

    #[test]
    fn renders_every_gpu_and_the_figures_nvml_gave() {
        let page = render("n1", &[gpu(0, Some(1024), Some(37)), gpu(1, None, None)]);
        let l0 = "node=\"n1\",uuid=\"GPU-0\",index=\"0\",model=\"NVIDIA A10\"";
        let l1 = "node=\"n1\",uuid=\"GPU-1\",index=\"1\",model=\"NVIDIA A10\"";
        for line in [
            "shoal_gpus{node=\"n1\"} 2".to_string(),
            format!("shoal_gpu_memory_total_bytes{{{l0}}} 25769803776"),
            format!("shoal_gpu_memory_total_bytes{{{l1}}} 25769803776"),
            format!("shoal_gpu_memory_used_bytes{{{l0}}} 1024"),
            format!("shoal_gpu_utilization_percent{{{l0}}} 37"),
        ] {
            assert!(page.lines().any(|l| l == line), "missing {line} in\n{page}");
        }
        // No figure where NVML gave none.
        assert!(!page.contains(&format!("shoal_gpu_memory_used_bytes{{{l1}}}")));
        assert!(!page.contains(&format!("shoal_gpu_utilization_percent{{{l1}}}")));
    }

    #[test]
    fn image_counters_are_counters_by_node() {
        let images = ImageCounters::default();
        images.received(10);
        images.received(5);
        images.loaded();
        let page = render_images("n1", &images);
        assert!(page.contains("# TYPE shoal_agent_image_bytes_received_total counter\n"));
        assert!(page.contains("shoal_agent_image_bytes_received_total{node=\"n1\"} 15\n"));
        assert!(page.contains("shoal_agent_images_loaded_total{node=\"n1\"} 1\n"));
    }

    #[test]
    fn no_gpus_is_a_zero_count() {
        let page = render("cpu-only", &[]);
        assert!(page.contains("shoal_gpus{node=\"cpu-only\"} 0"));
        assert!(!page.contains("uuid="));
    }

    #[tokio::test]
    async fn serves_the_page_on_metrics_and_404_elsewhere() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(vec![gpu(0, Some(5), Some(9))]);
        let stop = CancellationToken::new();
        let images = std::sync::Arc::new(ImageCounters::default());
        tokio::spawn(serve(
            listener,
            "n1".into(),
            rx,
            images.clone(),
            stop.clone(),
        ));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let page = get("/metrics").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("shoal_gpu_utilization_percent{"), "{page}");
        assert!(page.contains("} 9\n"), "{page}");
        // New figures from a rediscovery show on the next scrape.
        tx.send_replace(vec![gpu(0, Some(5), Some(80))]);
        assert!(get("/metrics").await.contains("} 80\n"));
        // Image transfers show too.
        images.received(4096);
        let page = get("/metrics").await;
        assert!(
            page.contains("shoal_agent_image_bytes_received_total{node=\"n1\"} 4096\n"),
            "{page}"
        );
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
    }
}
