//! The plain-HTTP `/metrics` endpoint both daemons serve (`shoal controller --metrics`,
//! `shoal agent --metrics`): HTTP/1.1 with hyper, the page rendered on each request by
//! the caller (a `prometheus-client` registry's OpenMetrics text). It lives here because
//! it is plumbing the controller and the agent share, like their TLS; anything but
//! `GET /metrics` is a 404 naming the right path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// The content type of `prometheus-client`'s text encoding.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the page for one scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `addr`, saying which address could not be bound.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind the metrics address {addr}"))
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, render: Render, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving metrics on /metrics");
    }
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "metrics accept failed");
                    continue;
                }
            },
        };
        let render = render.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let render = render.clone();
                async move { Ok::<_, Infallible>(answer(&req, &render)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                r = conn => if let Err(e) = r {
                    debug!(%peer, error = %e, "metrics connection failed");
                },
            }
        });
    }
}

fn answer<B>(req: &Request<B>, render: &Render) -> Response<Full<Bytes>> {
    let reply = |status, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(StatusCode::OK, CONTENT_TYPE, render()),
        (_, "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET is served on /metrics\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the metrics are on /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn renders_on_each_get_of_metrics_and_refuses_the_rest() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = n.clone();
        let render: Render = Arc::new(move || {
            let v = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            format!("scrapes_total {v}\n# EOF\n")
        });
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, render, stop.clone()));
        let first = get(addr, "GET", "/metrics").await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(first.contains(CONTENT_TYPE), "{first}");
        assert!(first.ends_with("scrapes_total 0\n# EOF\n"), "{first}");
        assert!(get(addr, "GET", "/metrics")
            .await
            .ends_with("scrapes_total 1\n# EOF\n"));
        let other = get(addr, "GET", "/").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        assert!(other.contains("/metrics"), "{other}");
        assert!(get(addr, "POST", "/metrics")
            .await
            .starts_with("HTTP/1.1 405"));
        stop.cancel();
    }

    #[tokio::test]
    async fn a_taken_address_is_named() {
        let taken = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err();
        assert!(format!("{err:#}").contains(&addr.to_string()), "{err:#}");
    }
}
