//! The dashboard's HTTP/1.1 server (hyper): routes, pages, the embedded static files
//! and the server-sent event streams of [`super::live`].
//!
//! Only GET (and HEAD) is served: the dashboard changes nothing in the cluster. A
//! request whose `Host` is not a loopback name is refused, so a web page elsewhere
//! cannot read the dashboard through DNS rebinding.

use std::convert::Infallible;
use std::sync::Arc;

use futures::StreamExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::live;
use super::pages::{self, Page};
use super::source::{Shared, Source};

pub type Body = BoxBody<Bytes, Infallible>;

const CSS: &str = include_str!("static/dashboard.css");
const JS: &str = include_str!("static/dashboard.js");
/// Scripts, styles and everything else only from the dashboard itself.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

/// Accepts connections until the process ends; one task per connection.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "the dashboard could not accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&req, shared).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "dashboard connection ended");
            }
        });
    }
}

/// Whether `host` (a `Host` header) names this machine's loopback.
pub fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Answers one request.
pub async fn handle<B>(req: &Request<B>, shared: Arc<Shared>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard only reads: use GET\n",
        );
    }
    if let Some(host) = req.headers().get(HOST) {
        let host = host.to_str().unwrap_or("");
        if !loopback_host(host) {
            return text(
                StatusCode::FORBIDDEN,
                &format!(
                    "the dashboard answers only at a loopback address, not at Host {host:?}\n"
                ),
            );
        }
    }
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    match path {
        "/static/dashboard.css" => file(CSS, "text/css; charset=utf-8"),
        "/static/dashboard.js" => file(JS, "text/javascript; charset=utf-8"),
        "/events/stream" => {
            let stack = pages::query_value(query, "stack").unwrap_or_default();
            let since = pages::query_value(query, "since")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            sse(live::spawn(move |tx| {
                live::events(shared, stack, since, tx)
            }))
        }
        p if p.starts_with("/logs/") => {
            match Page::parse(&format!("/services/{}", &p["/logs/".len()..]), "") {
                Some(Page::Service { stack, name }) => {
                    sse(live::spawn(move |tx| live::logs(shared, stack, name, tx)))
                }
                _ => not_found(p),
            }
        }
        p if p == "/live" || p.starts_with("/live/") => {
            let inner = if p == "/live" {
                "/"
            } else {
                &p["/live".len()..]
            };
            match Page::parse(inner, query) {
                Some(page) if page.is_live() => {
                    sse(live::spawn(move |tx| live::fragments(shared, page, tx)))
                }
                _ => not_found(p),
            }
        }
        p => match Page::parse(p, query) {
            Some(page) => {
                let mut src = Source::new(shared.clone());
                let loaded = pages::load(&page, &mut src).await;
                let doc = pages::document(&page, &loaded, live::now_ms(), &shared.addrs());
                let status = StatusCode::from_u16(pages::status(&loaded))
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                html(status, doc.into_string())
            }
            None => not_found(p),
        },
    }
}

fn not_found(path: &str) -> Response<Body> {
    html(
        StatusCode::NOT_FOUND,
        pages::no_such_page(path).into_string(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    res
}

fn full(s: String) -> Body {
    Full::new(Bytes::from(s)).boxed()
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", full(body))
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", full(body.to_string()))
}

fn file(body: &'static str, content_type: &'static str) -> Response<Body> {
    respond(
        StatusCode::OK,
        content_type,
        Full::new(Bytes::from_static(body.as_bytes())).boxed(),
    )
}

/// A `text/event-stream` response fed by `rx`; it ends when the stream's task does, and
/// the task ends when the browser leaves (the receiver is dropped).
fn sse(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    respond(
        StatusCode::OK,
        "text/event-stream; charset=utf-8",
        BodyExt::boxed(StreamBody::new(frames)),
    )
}
