//! Reading a replica's metrics endpoint: one HTTP/1.1 `GET` (hyper's connection API,
//! bounded in time and size), its Prometheus text parsed with `prometheus-parse`, and
//! from it a gauge's value or a histogram's `le` counters.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, CONNECTION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use prometheus_parse::{Scrape, Value};

use super::window::{merge, Buckets};

/// How long one read of an endpoint may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The largest answer read (a larger one is an error rather than memory spent).
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// `http://IP:PORT/PATH`.
pub fn url(ip: IpAddr, port: u16, path: &str) -> String {
    format!("http://{}{path}", SocketAddr::new(ip, port))
}

/// The text at `http://ip:port/path`, within `timeout`; the error says what failed
/// (`connection refused`, `HTTP 404 Not Found`, `timed out after 2 s`).
pub async fn get(ip: IpAddr, port: u16, path: &str, timeout: Duration) -> Result<String, String> {
    match tokio::time::timeout(timeout, get_unbounded(ip, port, path)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}", human(timeout))),
    }
}

async fn get_unbounded(ip: IpAddr, port: u16, path: &str) -> Result<String, String> {
    let addr = SocketAddr::new(ip, port);
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => format!("connect: {e}"),
        })?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .header(ACCEPT, "text/plain;version=0.0.4")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad path {path:?}: {e}"))?;
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        // The connection ends once the answer is read.
        drop(sender);
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| format!("read the answer: {e}"))?
            .to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    // The connection is driven here, so nothing outlives a timed-out read.
    let (answer, _) = tokio::join!(exchange, conn);
    answer
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The text format parsed. A line the parser cannot read is skipped: a broken line
/// loses only itself, not the whole answer.
pub fn parse(text: &str) -> Scrape {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    // Reading from strings cannot fail.
    Scrape::parse(lines).unwrap_or(Scrape {
        docs: Default::default(),
        samples: Vec::new(),
    })
}

/// Every sample of metric `name` added up (all label sets); an error when there is
/// none, or it is not a number.
pub fn gauge(scrape: &Scrape, name: &str) -> Result<f64, String> {
    let mut sum = 0.0;
    let mut found = false;
    for s in scrape.samples.iter().filter(|s| s.metric == name) {
        match s.value {
            Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => {
                sum += v;
                found = true;
            }
            Value::Histogram(_) | Value::Summary(_) => {
                return Err(format!("{name} is a histogram or summary, not a gauge"))
            }
        }
    }
    if !found {
        return Err(format!("no metric named {name}"));
    }
    if !sum.is_finite() {
        return Err(format!("{name} is {sum}"));
    }
    Ok(sum)
}

/// The cumulative `NAME_bucket` counters by `le`, added up over the other labels.
/// Read whether or not the text declares `# TYPE NAME histogram`.
pub fn buckets(scrape: &Scrape, name: &str) -> Result<Buckets, String> {
    let name = name.strip_suffix("_bucket").unwrap_or(name);
    let series = format!("{name}_bucket");
    let mut pairs: Vec<(f64, f64)> = Vec::new();
    for s in &scrape.samples {
        match &s.value {
            Value::Histogram(counts) if s.metric == name => {
                pairs.extend(counts.iter().map(|c| (c.less_than, c.count)));
            }
            Value::Counter(v) | Value::Untyped(v) | Value::Gauge(v) if s.metric == series => {
                if let Some(le) = s.labels.get("le").and_then(parse_le) {
                    pairs.push((le, *v));
                }
            }
            _ => {}
        }
    }
    if pairs.is_empty() {
        return Err(format!("no histogram named {name} (no {series} series)"));
    }
    Ok(merge(pairs))
}

/// An `le` label: a float, `+Inf`.
fn parse_le(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP inference_queue_depth Requests waiting.
# TYPE inference_queue_depth gauge
inference_queue_depth{model=\"a\"} 3
inference_queue_depth{model=\"b\"} 4.5
# TYPE inference_duration_seconds histogram
inference_duration_seconds_bucket{model=\"a\",le=\"0.1\"} 2
inference_duration_seconds_bucket{model=\"a\",le=\"0.5\"} 5
inference_duration_seconds_bucket{model=\"a\",le=\"+Inf\"} 6
inference_duration_seconds_bucket{model=\"b\",le=\"0.1\"} 1
inference_duration_seconds_bucket{model=\"b\",le=\"0.5\"} 1
inference_duration_seconds_bucket{model=\"b\",le=\"+Inf\"} 3
inference_duration_seconds_sum{model=\"a\"} 1.9
inference_duration_seconds_count{model=\"a\"} 6
this line is not a sample {
";

    #[test]
    fn a_gauge_is_every_series_of_its_name_added_up() {
        let s = parse(TEXT);
        assert_eq!(gauge(&s, "inference_queue_depth"), Ok(7.5));
        assert_eq!(gauge(&s, "queue"), Err("no metric named queue".to_string()));
        assert_eq!(
            gauge(
                &parse("untyped_depth 2\nuntyped_depth{a=\"1\"} 1\n"),
                "untyped_depth"
            ),
            Ok(3.0)
        );
        assert!(gauge(&parse("nan_depth NaN\n"), "nan_depth").is_err());
    }

    #[test]
    fn a_histogram_is_its_bucket_counters_by_bound_over_every_other_label() {
        let want = vec![(0.1, 3.0), (0.5, 6.0), (f64::INFINITY, 9.0)];
        let s = parse(TEXT);
        assert_eq!(buckets(&s, "inference_duration_seconds"), Ok(want.clone()));
        assert_eq!(
            buckets(&s, "inference_duration_seconds_bucket"),
            Ok(want.clone())
        );
        // Without its `# TYPE` line.
        let untyped: String = TEXT
            .lines()
            .filter(|l| !l.starts_with("# TYPE inference_duration"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            buckets(&parse(&untyped), "inference_duration_seconds"),
            Ok(want)
        );
        assert_eq!(
            buckets(&s, "latency"),
            Err("no histogram named latency (no latency_bucket series)".to_string())
        );
    }

    #[test]
    fn urls_name_the_address_port_and_path() {
        assert_eq!(
            url("10.208.1.5".parse().expect("ip"), 9100, "/metrics"),
            "http://10.208.1.5:9100/metrics"
        );
        assert_eq!(
            url("::1".parse().expect("ip"), 9100, "/m"),
            "http://[::1]:9100/m"
        );
    }
}
