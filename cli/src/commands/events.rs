//! `shoal events [-f] [--since DURATION] [--stack S]`: what happened in the cluster and
//! why, one line per event (`--format json`: JSON lines).
//!
//! Any controller answers (each keeps the same events). Following, a controller that
//! goes away (stopped, killed, its machine lost) is replaced by another of `--addr`:
//! the CLI asks again and skips what it printed already, by the events' `(index, seq)`
//! (the same on every controller for an entry's events) and, for a controller's own
//! events, by time. Ctrl-C ends it.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;
use shoal_proto::pb::{self, EventsRequest};
use tonic::Code;

use super::Ctx;
use crate::client::Client;
use crate::error::ApiError;

/// How long a follow keeps trying to reach a controller before it gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(60);
/// Between two rounds of reconnection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Keep printing new events as they happen (Ctrl-C ends it); another controller of
    /// --addr takes over if this one goes away.
    #[arg(short, long)]
    pub follow: bool,
    /// Only events of the last DURATION: `30s`, `10m`, `2h`, `1d`.
    #[arg(long, value_name = "DURATION", value_parser = parse_since)]
    pub since: Option<Duration>,
    /// Only the events of this stack (node and controller events have none).
    #[arg(long, value_name = "STACK")]
    pub stack: Option<String>,
}

/// A positive duration (`30s`, `10m`, `2h`, `1d`; a bare number is seconds).
pub fn parse_since(s: &str) -> Result<Duration, String> {
    let digits: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
    if !digits.is_empty() && digits.bytes().all(|b| b == b'0') {
        return Err(format!(
            "`{s}` looks back over nothing: give a duration above 0, e.g. 10m"
        ));
    }
    crate::args::parse_duration(s)
}

/// The request for `args` at `now_ms`.
pub fn request(args: &EventsArgs, now_ms: u64) -> EventsRequest {
    EventsRequest {
        since_ms: args
            .since
            .map_or(0, |d| now_ms.saturating_sub(d.as_millis() as u64).max(1)),
        stack: args.stack.clone().unwrap_or_default(),
        follow: args.follow,
    }
}

pub async fn run(args: EventsArgs, ctx: &mut Ctx) -> anyhow::Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let req = request(&args, now_ms);
    let format = ctx.format;
    let mut print = |e: &pb::Event| -> anyhow::Result<()> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(crate::output::events::line(format, e).as_bytes())
            .and_then(|()| out.flush())
            .context("write the events")
    };
    stream(&mut ctx.client, req, &mut print, tokio::signal::ctrl_c()).await
}

/// What was printed, so that a reconnect prints nothing twice.
#[derive(Debug, Default)]
struct Printed {
    /// `(index, seq)` of the last entry event.
    entry: Option<(u64, u64)>,
    /// The latest time of any event.
    latest_ms: u64,
    /// Set from the second connection on: local events older than what was printed
    /// are the new controller's past, not news.
    reconnected: bool,
}

impl Printed {
    fn fresh(&mut self, e: &pb::Event) -> bool {
        let fresh = if e.index > 0 {
            self.entry.is_none_or(|last| (e.index, e.seq) > last)
        } else {
            !self.reconnected || e.time_ms >= self.latest_ms || e.kind == "events.missed"
        };
        if fresh {
            if e.index > 0 {
                self.entry = Some((e.index, e.seq));
            }
            self.latest_ms = self.latest_ms.max(e.time_ms);
        }
        fresh
    }
}

/// Whether a failed call is worth trying again while following: the controllers did
/// not answer or could not serve, rather than refusing the request.
fn transient(err: &anyhow::Error) -> bool {
    match err.chain().find_map(|c| c.downcast_ref::<ApiError>()) {
        Some(api) => matches!(
            api.code,
            Code::Unavailable
                | Code::Cancelled
                | Code::Unknown
                | Code::Aborted
                | Code::DeadlineExceeded
        ),
        None => true,
    }
}

/// Prints (through `sink`) the events `req` asks for; following, until `stop`.
pub async fn stream(
    client: &mut Client,
    req: EventsRequest,
    sink: &mut dyn FnMut(&pb::Event) -> anyhow::Result<()>,
    stop: impl Future,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let mut printed = Printed::default();
    let mut outage: Option<Instant> = None;
    loop {
        let opened = tokio::select! {
            _ = &mut stop => return Ok(()),
            opened = client.call(|mut c| {
                let req = req.clone();
                async move { c.events(req).await }
            }) => opened,
        };
        let mut events = match opened {
            Ok(events) => events,
            Err(e) if req.follow && transient(&e) => {
                let since = *outage.get_or_insert_with(Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    return Err(e.context(format!(
                        "follow the cluster's events: no controller answered for {}s",
                        RECONNECT_FOR.as_secs()
                    )));
                }
                tracing::debug!(error = %format!("{e:#}"), "no controller to follow yet");
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
                }
                continue;
            }
            Err(e) => return Err(e.context("read the cluster's events")),
        };
        if outage.take().is_some() {
            eprintln!("shoal: following the events again");
        }
        loop {
            let next = tokio::select! {
                _ = &mut stop => return Ok(()),
                next = events.message() => next,
            };
            match next {
                Ok(Some(e)) => {
                    if printed.fresh(&e) {
                        sink(&e)?;
                    }
                }
                Ok(None) => break,
                Err(status) if req.follow => {
                    tracing::debug!(%status, "the event stream broke");
                    break;
                }
                Err(status) => {
                    return Err(anyhow::Error::from(ApiError::from(status)))
                        .context("read the cluster's events")
                }
            }
        }
        if !req.follow {
            return Ok(());
        }
        eprintln!("shoal: the controller stopped sending events; reconnecting");
        printed.reconnected = true;
        outage = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Addrs, Cli, Command};
    use crate::fake_control::{lock, serve_scripted, EventsScript, Role};
    use clap::Parser;
    use tokio_util::sync::CancellationToken;

    fn ev(index: u64, seq: u64, time_ms: u64, kind: &str) -> pb::Event {
        pb::Event {
            time_ms,
            kind: kind.into(),
            stack: "app".into(),
            service: "web".into(),
            message: format!("{kind} at {index}.{seq}"),
            index,
            seq,
            ..Default::default()
        }
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shoal").chain(args.iter().copied()))
    }

    #[test]
    fn flags_make_the_request() {
        let Command::Events(args) = parse(&["events", "-f", "--since", "10m", "--stack", "app"])
            .unwrap()
            .command
        else {
            panic!("not events")
        };
        assert_eq!(
            request(&args, 1_000_000_000),
            EventsRequest {
                since_ms: 1_000_000_000 - 600_000,
                stack: "app".into(),
                follow: true,
            }
        );
        let Command::Events(all) = parse(&["events"]).unwrap().command else {
            panic!("not events")
        };
        assert_eq!(request(&all, 5), EventsRequest::default());
    }

    #[test]
    fn bad_durations_are_usage_errors() {
        for (bad, says) in [
            ("5w", "the unit must be s, m, h or d"),
            ("ten", "is not a duration"),
            ("0s", "looks back over nothing"),
        ] {
            let err = parse(&["events", "--since", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn reconnects_print_nothing_twice() {
        let mut p = Printed::default();
        assert!(p.fresh(&ev(3, 0, 100, "a")));
        assert!(p.fresh(&ev(0, 1, 110, "leader.changed")));
        assert!(p.fresh(&ev(3, 1, 100, "b")));
        p.reconnected = true;
        assert!(!p.fresh(&ev(3, 0, 100, "a")), "an entry event seen");
        assert!(
            !p.fresh(&ev(0, 7, 50, "leader.changed")),
            "the new controller's past"
        );
        assert!(p.fresh(&ev(4, 0, 105, "c")));
        assert!(p.fresh(&ev(0, 8, 120, "leader.changed")));
    }

    /// Collects what the command prints; stops once `want` events were printed.
    async fn follow(client: &mut Client, req: EventsRequest, want: usize) -> Vec<String> {
        let stop = CancellationToken::new();
        let mut lines = Vec::new();
        let mut sink = |e: &pb::Event| -> anyhow::Result<()> {
            lines.push(crate::output::events::line(crate::args::Format::Json, e));
            if lines.len() == want {
                stop.cancel();
            }
            Ok(())
        };
        let bounded = tokio::time::timeout(
            Duration::from_secs(20),
            stream(client, req, &mut sink, stop.cancelled()),
        );
        bounded.await.expect("within 20 s").expect("no error");
        lines
    }

    #[tokio::test]
    async fn prints_the_kept_events_and_exits() {
        let stop = CancellationToken::new();
        let (addr, fake) = serve_scripted(
            Role::Leader { name: "c1".into() },
            vec![EventsScript::ends(vec![
                ev(1, 0, 1_000, "rollout.started"),
                ev(2, 0, 2_000, "task.assigned"),
            ])],
            stop.clone(),
        )
        .await;
        let mut client = Client::new(&Addrs(vec![addr]));
        let mut lines = Vec::new();
        let req = EventsRequest {
            since_ms: 500,
            stack: "app".into(),
            follow: false,
        };
        stream(
            &mut client,
            req.clone(),
            &mut |e| {
                lines.push(crate::output::events::line(crate::args::Format::Table, e));
                Ok(())
            },
            std::future::pending::<()>(),
        )
        .await
        .unwrap();
        assert_eq!(
            lines,
            [
                "1970-01-01T00:00:01.000Z  rollout.started      app/web           -         rollout.started at 1.0\n",
                "1970-01-01T00:00:02.000Z  task.assigned        app/web           -         task.assigned at 2.0\n",
            ]
        );
        assert_eq!(*lock(&fake.events_asked), [req]);
        stop.cancel();
    }

    #[tokio::test]
    async fn a_follow_moves_to_another_controller_when_its_own_goes() {
        let stop = CancellationToken::new();
        // The first controller sends two events, then its stream breaks (it went away);
        // asked again, it answers UNAVAILABLE.
        let (first, first_fake) = serve_scripted(
            Role::Leader { name: "c1".into() },
            vec![EventsScript {
                items: vec![
                    Ok(ev(1, 0, 1_000, "rollout.started")),
                    Ok(ev(2, 0, 2_000, "task.assigned")),
                    Err(tonic::Status::unavailable(
                        "the controller is shutting down",
                    )),
                ],
                hang: false,
            }],
            stop.clone(),
        )
        .await;
        // The second has the same entries' events, its own leader change (older, then
        // newer) and what came since.
        let (second, second_fake) = serve_scripted(
            Role::Leader { name: "c2".into() },
            vec![EventsScript {
                items: vec![
                    Ok(ev(0, 1, 500, "leader.changed")),
                    Ok(ev(1, 0, 1_000, "rollout.started")),
                    Ok(ev(2, 0, 2_000, "task.assigned")),
                    Ok(ev(3, 0, 3_000, "task.running")),
                    Ok(ev(0, 2, 3_500, "leader.changed")),
                ],
                hang: true,
            }],
            stop.clone(),
        )
        .await;
        let mut client = Client::new(&Addrs(vec![first, second]));
        let req = EventsRequest {
            since_ms: 0,
            stack: String::new(),
            follow: true,
        };
        let lines = follow(&mut client, req.clone(), 4).await;
        let kinds: Vec<String> = lines
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "rollout.started",
                "task.assigned",
                "task.running",
                "leader.changed"
            ]
        );
        assert_eq!(lock(&first_fake.events_asked).len(), 2, "asked again first");
        assert_eq!(*lock(&second_fake.events_asked), [req]);
        stop.cancel();
    }
}
