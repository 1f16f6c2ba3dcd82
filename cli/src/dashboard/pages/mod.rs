//! The dashboard's pages: which page a path names ([`Page`]), what each reads from the
//! cluster ([`load`]), and how it renders ([`fragment`] for the part that live updates
//! replace, [`document`] for the whole page around it).
//!
//! Rendering is pure (rows and `now` in, HTML out), so it is unit tested without a
//! cluster. Every page is usable without JavaScript; with it, the `data-live` region is
//! replaced by each message of its `/live/...` stream.

mod cluster;
mod events;
mod nodes;
mod overview;
mod services;
mod tasks;

use maud::{html, Markup, DOCTYPE};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use shoal_proto::pb;

use super::source::{Failure, Kind, Section, Source};

pub use events::event_row;

/// What a path segment keeps as is; the rest is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// One page of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    Overview,
    Cluster,
    Nodes,
    Services,
    Service { stack: String, name: String },
    Tasks { all: bool },
    Events { stack: String },
    Stack { name: String },
}

/// One path segment, encoded for a URL.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

fn dec(s: &str) -> Option<String> {
    let d = percent_decode_str(s).decode_utf8().ok()?;
    (!d.is_empty()).then(|| d.into_owned())
}

/// The value of `key` in a query string (`a=1&b=2`), decoded.
pub fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| {
            percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

impl Page {
    /// The page at `path` (`query` without its `?`), `None` if there is none.
    pub fn parse(path: &str, query: &str) -> Option<Page> {
        let segs: Vec<&str> = path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .split('/')
            .collect();
        Some(match segs.as_slice() {
            [""] => Page::Overview,
            ["cluster"] => Page::Cluster,
            ["nodes"] => Page::Nodes,
            ["services"] => Page::Services,
            ["services", stack, name] => Page::Service {
                stack: dec(stack)?,
                name: dec(name)?,
            },
            ["tasks"] => Page::Tasks {
                all: query_value(query, "all").is_some_and(|v| v == "1" || v == "true"),
            },
            ["events"] => Page::Events {
                stack: query_value(query, "stack").unwrap_or_default(),
            },
            ["stacks", name] => Page::Stack { name: dec(name)? },
            _ => return None,
        })
    }

    /// The page's own URL (path and query), encoded.
    pub fn url(&self) -> String {
        match self {
            Page::Overview => "/".into(),
            Page::Cluster => "/cluster".into(),
            Page::Nodes => "/nodes".into(),
            Page::Services => "/services".into(),
            Page::Service { stack, name } => format!("/services/{}/{}", enc(stack), enc(name)),
            Page::Tasks { all: false } => "/tasks".into(),
            Page::Tasks { all: true } => "/tasks?all=1".into(),
            Page::Events { stack } if stack.is_empty() => "/events".into(),
            Page::Events { stack } => format!("/events?stack={}", enc(stack)),
            Page::Stack { name } => format!("/stacks/{}", enc(name)),
        }
    }

    pub fn title(&self) -> String {
        match self {
            Page::Overview => "Overview".into(),
            Page::Cluster => "Cluster".into(),
            Page::Nodes => "Nodes".into(),
            Page::Services => "Services".into(),
            Page::Service { stack, name } => format!("Service {stack}/{name}"),
            Page::Tasks { .. } => "Tasks".into(),
            Page::Events { stack } if stack.is_empty() => "Events".into(),
            Page::Events { stack } => format!("Events of stack {stack}"),
            Page::Stack { name } => format!("Stack {name}"),
        }
    }

    /// Whether the page has a region that `/live` streams replace (the events page
    /// appends instead).
    pub fn is_live(&self) -> bool {
        !matches!(self, Page::Events { .. })
    }

    /// The nav entry this page belongs under.
    fn section(&self) -> &'static str {
        match self {
            Page::Overview => "/",
            Page::Cluster => "/cluster",
            Page::Nodes => "/nodes",
            Page::Services | Page::Service { .. } | Page::Stack { .. } => "/services",
            Page::Tasks { .. } => "/tasks",
            Page::Events { .. } => "/events",
        }
    }
}

/// What a page shows, as read from the cluster.
pub enum Data {
    Overview {
        nodes: Vec<pb::NodeRow>,
        services: Vec<pb::ServiceRow>,
        cluster: Section<pb::ClusterStatusReply>,
    },
    Cluster(pb::ClusterStatusReply),
    Nodes {
        nodes: Vec<pb::NodeRow>,
        stats: Section<pb::StatsReply>,
    },
    Services(Vec<pb::ServiceRow>),
    Service {
        row: Box<pb::ServiceRow>,
        tasks: Vec<pb::TaskRow>,
        stats: Section<pb::StatsReply>,
    },
    Tasks(Vec<pb::TaskRow>),
    Events(Section<Vec<pb::Event>>),
    Stack {
        services: Vec<pb::ServiceRow>,
        tasks: Vec<pb::TaskRow>,
    },
}

/// How many events the events page starts with.
pub const EVENTS_SHOWN: usize = 200;

/// Reads what `page` shows. A failure of its main data fails the page; secondary
/// sections (statistics, the cluster summary) carry their own failure.
pub async fn load(page: &Page, src: &mut Source) -> Result<Data, Failure> {
    Ok(match page {
        Page::Overview => Data::Overview {
            nodes: src.nodes().await?,
            services: src.services().await?,
            cluster: src.cluster().await,
        },
        Page::Cluster => Data::Cluster(src.cluster().await?),
        Page::Nodes => {
            let nodes = src.nodes().await?;
            let stats = src.stats("").await;
            Data::Nodes { nodes, stats }
        }
        Page::Services => Data::Services(src.services().await?),
        Page::Service { stack, name } => {
            let row = src
                .services()
                .await?
                .into_iter()
                .find(|s| s.stack == *stack && s.name == *name)
                .ok_or_else(|| Failure::not_found(format!("no service named {stack}/{name}")))?;
            let tasks = src
                .tasks(stack, false)
                .await?
                .into_iter()
                .filter(|t| t.service == *name)
                .collect();
            let stats = src.stats(&format!("{stack}/{name}")).await;
            Data::Service {
                row: Box::new(row),
                tasks,
                stats,
            }
        }
        Page::Tasks { all } => Data::Tasks(src.tasks("", *all).await?),
        Page::Events { stack } => Data::Events(src.events(stack, EVENTS_SHOWN).await),
        Page::Stack { name } => {
            let services: Vec<pb::ServiceRow> = src
                .services()
                .await?
                .into_iter()
                .filter(|s| s.stack == *name)
                .collect();
            if services.is_empty() {
                return Err(Failure::not_found(format!("no stack named {name}")));
            }
            let tasks = src.tasks(name, false).await?;
            Data::Stack { services, tasks }
        }
    })
}

/// The HTTP status of a page that loaded as `loaded`.
pub fn status(loaded: &Result<Data, Failure>) -> u16 {
    match loaded {
        Ok(_) => 200,
        Err(f) if f.kind == Kind::NotFound => 404,
        Err(_) => 503,
    }
}

/// The part of `page` that live updates replace.
pub fn fragment(page: &Page, loaded: &Result<Data, Failure>, now_ms: u64, addrs: &str) -> Markup {
    match loaded {
        Err(f) => problem(f, addrs),
        Ok(data) => match data {
            Data::Overview {
                nodes,
                services,
                cluster,
            } => overview::render(nodes, services, cluster),
            Data::Cluster(c) => cluster::render(c),
            Data::Nodes { nodes, stats } => nodes::render(nodes, stats, now_ms),
            Data::Services(rows) => services::list(rows),
            Data::Service { row, tasks, stats } => services::detail(row, tasks, stats, now_ms),
            Data::Tasks(rows) => tasks::render(rows, matches!(page, Page::Tasks { all: true })),
            Data::Events(events) => events::render(page, events),
            Data::Stack { services, tasks } => services::stack(services, tasks),
        },
    }
}

/// The whole page: head, navigation, the live region and what is outside it.
pub fn document(page: &Page, loaded: &Result<Data, Failure>, now_ms: u64, addrs: &str) -> Markup {
    let body = fragment(page, loaded, now_ms, addrs);
    let live_url = format!("/live{}", page.url());
    let extra = match (page, loaded) {
        (Page::Service { stack, name }, Ok(_)) => Some(services::logs_section(stack, name)),
        _ => None,
    };
    layout(
        &page.title(),
        page.section(),
        html! {
            @if page.is_live() {
                div id="live" data-live=(live_url) aria-live="polite" { (body) }
            } @else {
                div id="static" { (body) }
            }
            @if let Some(extra) = extra { (extra) }
        },
    )
}

/// A page for a path that names none.
pub fn no_such_page(path: &str) -> Markup {
    let failure = Failure::not_found(format!("the dashboard has no page at {path}"));
    layout("Not found", "", problem(&failure, ""))
}

const NAV: [(&str, &str); 6] = [
    ("/", "Overview"),
    ("/cluster", "Cluster"),
    ("/nodes", "Nodes"),
    ("/services", "Services"),
    ("/tasks", "Tasks"),
    ("/events", "Events"),
];

fn layout(title: &str, section: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · shoal" }
                link rel="stylesheet" href="/static/dashboard.css";
                script src="/static/dashboard.js" defer {}
            }
            body {
                a class="skip" href="#content" { "Skip to content" }
                header {
                    span class="brand" { "shoal" }
                    nav aria-label="Dashboard" {
                        ul {
                            @for (href, name) in NAV {
                                li {
                                    @if href == section {
                                        a href=(href) aria-current="page" { (name) }
                                    } @else {
                                        a href=(href) { (name) }
                                    }
                                }
                            }
                        }
                    }
                    span id="conn" role="status" { "" }
                }
                main id="content" {
                    h1 { (title) }
                    (main)
                }
            }
        }
    }
}

/// What went wrong and what to do, in place of a page's data.
pub fn problem(f: &Failure, addrs: &str) -> Markup {
    html! {
        section class="problem" role="alert" {
            h2 { (f.title()) }
            p { (f.message) }
            p { strong { "What to do: " } (f.advice(addrs)) }
            @if f.kind == Kind::NotFound {
                p { a href="/" { "Back to the overview" } }
            }
        }
    }
}

/// A section's note when its data is missing.
pub fn note(f: &Failure) -> Markup {
    let text = match f.kind {
        Kind::Unavailable => "not available from this cluster version".to_string(),
        _ => format!("unavailable: {}", f.message),
    };
    html! { p class="note" { (text) } }
}

/// A status word with a mark, so it does not rest on color alone.
pub fn badge(word: &str) -> Markup {
    let class = match word {
        "ready" | "running" | "healthy" | "complete" | "completed" | "active" | "leader"
        | "yes" => "ok",
        "down" | "failed" | "unhealthy" | "orphaned" | "no" => "bad",
        w if w.starts_with("paused")
            || w.starts_with("rolling back")
            || w.starts_with("rolled back") =>
        {
            "bad"
        }
        _ => "mid",
    };
    let mark = match class {
        "ok" => "●",
        "bad" => "✖",
        _ => "◐",
    };
    html! { span class={"badge " (class)} data-status=(word) { span aria-hidden="true" { (mark) " " } (word) } }
}

/// `STACK/SERVICE` linked to its page.
pub fn service_link(stack: &str, name: &str) -> Markup {
    let url = Page::Service {
        stack: stack.to_string(),
        name: name.to_string(),
    }
    .url();
    html! { a href=(url) { (stack) "/" (name) } }
}

/// Time in ms since the epoch as `2026-12-06T21:14:03Z` (empty for 0).
pub fn time(ms: u64) -> String {
    if ms == 0 {
        return String::new();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn bytes(n: u64) -> String {
    crate::output::bytes(i64::try_from(n).unwrap_or(i64::MAX))
}
