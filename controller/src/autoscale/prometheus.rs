//! A `prometheus` metric's value: the instant query `GET {url}/api/v1/query?query=...`
//! of Prometheus' HTTP API, the values of the result summed.
//!
//! Plain `http://` only (hyper's HTTP/1 client over a TCP stream): an `https://` URL is
//! refused with an error that says so. Credentials in the URL are not sent either.
//! Errors are in words, ready for a decision's cause: `GET http://prom:9090/api/v1/query:
//! connection refused`, `Prometheus says: bad_data: ...`, `the query returned no series`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;

/// The most of an answer that is read (a vector of many series is still small).
const MAX_BODY: usize = 4 << 20;

/// The sum of the values of `query`'s result at Prometheus `url` (`http://HOST[:PORT][/PREFIX]`),
/// within `timeout`.
#[tracing::instrument(level = "debug", skip(timeout))]
pub async fn query(url: &str, query: &str, timeout: Duration) -> Result<f64, String> {
    let base = url.trim_end_matches('/');
    let endpoint = format!("{base}/api/v1/query");
    let target = format!(
        "{endpoint}?query={}",
        utf8_percent_encode(query, NON_ALPHANUMERIC)
    );
    let answer = tokio::time::timeout(timeout, get(&target, &endpoint))
        .await
        .map_err(|_| format!("GET {endpoint}: no answer within {timeout:?}"))??;
    parse(&answer.body, answer.status)
}

struct Answer {
    status: hyper::StatusCode,
    body: Bytes,
}

/// `GET target` (errors name `endpoint`, without the query).
async fn get(target: &str, endpoint: &str) -> Result<Answer, String> {
    let fail = |why: String| format!("GET {endpoint}: {why}");
    let uri: Uri = target
        .parse()
        .map_err(|e| fail(format!("not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(fail(
                "https is not supported: give an http:// URL (e.g. a Prometheus reachable on the cluster network)".into(),
            ))
        }
        _ => return Err(fail("the URL must start with http://".into())),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| fail("the URL has no host".into()))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail(io_words(&e)))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(e.to_string()))?;
    // The connection is driven beside the request, and dropped with it (on a timeout too).
    let driver = tokio::spawn(conn);
    let _abort = AbortOnDrop(driver.abort_handle());
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let request = Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, "shoal-autoscaler")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| fail(format!("reading the answer: {e}")))?
        .to_bytes();
    Ok(Answer { status, body })
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn io_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

/// The API's envelope: `{"status": "success"|"error", "data": ..., "errorType", "error"}`.
#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// One series of a vector: `{"metric": {...}, "value": [TIME, "VALUE"]}` (a native
/// histogram has `histogram` instead of `value`).
#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    value: Option<(serde_json::Value, String)>,
}

/// The summed value of an answer to an instant query.
fn parse(body: &[u8], status: hyper::StatusCode) -> Result<f64, String> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) if status.is_success() => {
            return Err(format!("the answer is not Prometheus' API: {e}"))
        }
        Err(_) => return Err(format!("Prometheus answered HTTP {status}")),
    };
    if envelope.status != "success" {
        let error = envelope.error.unwrap_or_else(|| format!("HTTP {status}"));
        return Err(match envelope.error_type {
            Some(t) if !t.is_empty() => format!("Prometheus says: {t}: {error}"),
            _ => format!("Prometheus says: {error}"),
        });
    }
    let data = envelope
        .data
        .ok_or_else(|| "the answer has no data".to_string())?;
    let value = match data.result_type.as_str() {
        "scalar" => {
            let (_, v): (serde_json::Value, String) = serde_json::from_value(data.result)
                .map_err(|e| format!("the scalar result is not [time, value]: {e}"))?;
            number(&v)?
        }
        "vector" => {
            let series: Vec<Series> = serde_json::from_value(data.result)
                .map_err(|e| format!("the vector result is not a list of series: {e}"))?;
            if series.is_empty() {
                return Err("the query returned no series".into());
            }
            let mut sum = 0.0;
            for s in &series {
                let Some((_, v)) = &s.value else {
                    return Err(
                        "the query returned a native histogram: wrap it in histogram_quantile(...) or histogram_count(...)".into(),
                    );
                };
                sum += number(v)?;
            }
            sum
        }
        other => {
            return Err(format!(
                "the query returned a {other}, not an instant vector or a scalar"
            ))
        }
    };
    if value.is_nan() {
        return Err("the query's value is NaN".into());
    }
    Ok(value)
}

/// A sample value as Prometheus writes it (`"1.5"`, `"NaN"`, `"+Inf"`).
fn number(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .map_err(|_| format!("the sample value {v:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(5);

    /// Serves `status` and `body` to every connection on 127.0.0.1 and records the
    /// request lines.
    async fn serve(status: &'static str, body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                log.lock()
                    .unwrap()
                    .push(text.lines().next().unwrap_or("").to_string());
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn sums_a_vector_and_encodes_the_query() {
        let (url, seen) = serve(
            "200 OK",
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"instance":"a"},"value":[1700000000.1,"30"]},
                {"metric":{"instance":"b"},"value":[1700000000.1,"11.5"]}]}}"#,
        )
        .await;
        let got = query(
            &format!("{url}/"),
            "sum(inference_queue_depth{job=\"x\"})",
            T,
        )
        .await;
        assert_eq!(got, Ok(41.5));
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            ["GET /api/v1/query?query=sum%28inference%5Fqueue%5Fdepth%7Bjob%3D%22x%22%7D%29 HTTP/1.1"]
        );
    }

    #[tokio::test]
    async fn a_scalar_and_a_path_prefix() {
        let (url, seen) = serve(
            "200 OK",
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"0.25"]}}"#,
        )
        .await;
        assert_eq!(
            query(&format!("{url}/prom"), "scalar(x)", T).await,
            Ok(0.25)
        );
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            ["GET /prom/api/v1/query?query=scalar%28x%29 HTTP/1.1"]
        );
    }

    #[tokio::test]
    async fn errors_in_words() {
        let (url, _) = serve(
            "400 Bad Request",
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error: unclosed left parenthesis"}"#,
        )
        .await;
        assert_eq!(
            query(&url, "sum(", T).await,
            Err("Prometheus says: bad_data: invalid parameter \"query\": 1:5: parse error: unclosed left parenthesis".into())
        );

        let (url, _) = serve(
            "200 OK",
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        )
        .await;
        assert_eq!(
            query(&url, "absent_metric", T).await,
            Err("the query returned no series".into())
        );

        let (url, _) = serve(
            "200 OK",
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        )
        .await;
        assert_eq!(
            query(&url, "x[5m]", T).await,
            Err("the query returned a matrix, not an instant vector or a scalar".into())
        );

        let (url, _) = serve("404 Not Found", "404 page not found").await;
        assert_eq!(
            query(&url, "x", T).await,
            Err("Prometheus answered HTTP 404 Not Found".into())
        );

        let (url, _) = serve(
            "200 OK",
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#,
        )
        .await;
        assert_eq!(
            query(&url, "x", T).await,
            Err("the query's value is NaN".into())
        );
    }

    #[tokio::test]
    async fn unreachable_slow_and_https() {
        // A port nothing listens on any more.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("http://{addr}");
        assert_eq!(
            query(&url, "x", T).await,
            Err(format!("GET {url}/api/v1/query: connection refused"))
        );

        // Accepts and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        assert_eq!(
            query(&url, "x", Duration::from_millis(200)).await,
            Err(format!("GET {url}/api/v1/query: no answer within 200ms"))
        );
        hold.abort();

        assert_eq!(
            query("https://prom:9090", "x", T).await,
            Err("GET https://prom:9090/api/v1/query: https is not supported: give an http:// URL (e.g. a Prometheus reachable on the cluster network)".into())
        );
    }
}
