//! The dashboard's pure parts: failure sorting, `--listen` and `Host` checks, page URLs,
//! server-sent event framing, log lines, and sections a cluster lacks.

use shoal_proto::pb;

use super::source::{Failure, Kind};
use super::tests::{scripted, NOW};
use super::*;

#[test]
fn sections_the_cluster_lacks_say_so() {
    let unavailable = Failure {
        kind: Kind::Unavailable,
        message: "stats: not built yet".into(),
    };
    let loaded = Ok(pages::Data::Nodes {
        nodes: vec![scripted().nodes.unwrap()[1].clone()],
        stats: Err(unavailable.clone()),
    });
    let html = pages::fragment(&pages::Page::Nodes, &loaded, NOW, "").into_string();
    assert!(
        html.contains("not available from this cluster version"),
        "{html}"
    );
    let events = pages::fragment(
        &pages::Page::Events { stack: "".into() },
        &Ok(pages::Data::Events(Err(unavailable))),
        NOW,
        "",
    )
    .into_string();
    assert!(
        events.contains("not available from this cluster version"),
        "{events}"
    );
}

#[test]
fn failures_are_sorted_by_what_to_do() {
    let api = |code, m: &str| {
        anyhow::Error::new(crate::error::ApiError {
            code,
            message: m.into(),
        })
    };
    use tonic::Code;
    assert_eq!(
        Failure::from_error(&api(Code::Unauthenticated, "x")).kind,
        Kind::Credentials
    );
    assert_eq!(
        Failure::from_error(&api(Code::PermissionDenied, "x")).kind,
        Kind::Credentials
    );
    assert_eq!(
        Failure::from_error(&api(Code::Unimplemented, "x")).kind,
        Kind::Unavailable
    );
    assert_eq!(
        Failure::from_error(&api(Code::NotFound, "x")).kind,
        Kind::NotFound
    );
    assert_eq!(
        Failure::from_error(&api(Code::Internal, "x")).kind,
        Kind::Other
    );
    let unreachable = Failure::from_error(&anyhow::anyhow!("cannot reach the controller at a:1"));
    assert_eq!(unreachable.kind, Kind::Unreachable);
    assert_eq!(unreachable.message, "cannot reach the controller at a:1");
}

#[test]
fn listen_addresses_are_loopback_only() {
    assert_eq!(
        parse_listen("localhost:0").unwrap().to_string(),
        "127.0.0.1:0"
    );
    assert_eq!(
        parse_listen("[::1]:7380").unwrap().to_string(),
        "[::1]:7380"
    );
    assert!(parse_listen("7380").is_err());
    assert!(parse_listen("example.com:7380").is_err());
    assert!(check_loopback(parse_listen(DEFAULT_LISTEN).unwrap()).is_ok());
    let err = check_loopback(parse_listen("0.0.0.0:7380").unwrap()).unwrap_err();
    assert!(err.0.contains("not a loopback address"), "{}", err.0);
    assert_eq!(
        crate::error::exit_code(&err.into()),
        crate::error::EXIT_USAGE
    );
    for ok in [
        "127.0.0.1:7380",
        "localhost:7380",
        "LOCALHOST",
        "[::1]:80",
        "127.1.2.3",
    ] {
        assert!(server::loopback_host(ok), "{ok}");
    }
    for bad in [
        "evil.example",
        "10.0.0.1:7380",
        "localhost.evil.example:7380",
        "[::2]:1",
    ] {
        assert!(!server::loopback_host(bad), "{bad}");
    }
}

#[test]
fn pages_round_trip_through_their_urls() {
    use pages::Page;
    for page in [
        Page::Overview,
        Page::Cluster,
        Page::Nodes,
        Page::Services,
        Page::Service {
            stack: "a b".into(),
            name: "w/x".into(),
        },
        Page::Tasks { all: true },
        Page::Tasks { all: false },
        Page::Events { stack: "s".into() },
        Page::Events { stack: "".into() },
        Page::Stack {
            name: "hello".into(),
        },
    ] {
        let url = page.url();
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        assert_eq!(Page::parse(path, query), Some(page), "{url}");
    }
    assert_eq!(Page::parse("/services/a", ""), None);
    assert_eq!(Page::parse("/stacks/%FF", ""), None);
}

#[test]
fn events_carry_each_line_as_data() {
    assert_eq!(
        &live::event_bytes("<p>a</p>\n<p>b</p>")[..],
        b"data: <p>a</p>\ndata: <p>b</p>\n\n"
    );
    let mut lines = live::Lines::default();
    let chunk = |data: &str, stderr| pb::LogLine {
        task_id: "t".into(),
        service: "web".into(),
        slot: 2,
        node: "n3".into(),
        data: data.as_bytes().to_vec(),
        stderr,
    };
    assert!(lines.push(&chunk("par", false)).is_empty());
    assert_eq!(
        lines.push(&chunk("tial\r\nnext\n", false)),
        vec![
            r#"<div class="line"><span class="src">web.2@n3</span> partial</div>"#,
            r#"<div class="line"><span class="src">web.2@n3</span> next</div>"#,
        ]
    );
    assert!(lines.push(&chunk("oops", true)).is_empty());
    assert_eq!(
        lines.finish(),
        vec![r#"<div class="line err"><span class="src">web.2@n3</span> oops</div>"#]
    );
}
