//! `shoal volume move STACK/NAME --to NODE [--detach] [--timeout D]`: start the move,
//! then poll `MoveStatus` (bounded) showing each phase and, on a terminal, the bytes
//! copied so far.

use std::io::{IsTerminal as _, Write};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use shoal_proto::pb::{MoveStatusReply, MoveStatusRequest, MoveVolumeRequest};
use tokio::time::{Instant, MissedTickBehavior};
use tonic::Code;

use super::super::Ctx;
use crate::args::{Format, VolumeMoveArgs};
use crate::error::ApiError;
use crate::output;
use crate::output::volumes::{move_done, move_failed, move_json, move_phase, move_progress};

const POLL: Duration = Duration::from_millis(300);

pub async fn run(args: VolumeMoveArgs, ctx: &mut Ctx) -> anyhow::Result<()> {
    let req = MoveVolumeRequest {
        volume: args.volume.to_string(),
        to: args.to.clone(),
    };
    let started = ctx
        .client
        .call(|mut c| {
            let req = req.clone();
            async move { c.move_volume(req).await }
        })
        .await
        .with_context(|| format!("move volume {} to {}", args.volume, args.to))?;
    if args.detach {
        return output::emit(ctx.format, move_json(&started), || {
            format!(
                "moving {} from {} to {} (it goes on; see shoal volume ls {})\n",
                started.volume, started.from, started.to, args.volume.stack
            )
        });
    }
    let last = follow(ctx, started, args.timeout, POLL).await?;
    output::emit(ctx.format, move_json(&last), || {
        format!("{}\n", move_done(&last))
    })
}

/// Polls until the move is done (its last status) or failed, or `timeout` passed (errors).
async fn follow(
    ctx: &mut Ctx,
    started: MoveStatusReply,
    timeout: Duration,
    poll: Duration,
) -> anyhow::Result<MoveStatusReply> {
    let deadline = Instant::now() + timeout;
    let mut screen = Screen::new(ctx.format);
    let mut watch = Watch::default();
    let mut last = started;
    let mut poll_error: Option<String> = None;
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let req = MoveStatusRequest { id: last.id };
    loop {
        screen.show(watch.update(&last));
        match last.phase.as_str() {
            "done" => {
                screen.end();
                return Ok(last);
            }
            "failed" => {
                screen.end();
                return Err(anyhow!(move_failed(&last)));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            screen.end();
            let why = poll_error
                .map(|e| format!("; the last poll failed: {e}"))
                .unwrap_or_default();
            return Err(anyhow!(
                "{} is still moving after {} (phase {}, {} copied): the move goes on; \
                 see shoal volume ls {}{why}",
                last.volume,
                humantime::format_duration(timeout),
                last.phase,
                output::volumes::human_bytes(last.bytes),
                last.volume.split('/').next().unwrap_or_default(),
            ));
        }
        ticks.tick().await;
        match ctx
            .client
            .call(|mut c| async move { c.move_status(req).await })
            .await
        {
            Ok(status) => {
                last = status;
                poll_error = None;
            }
            Err(e) if forgotten(&e) => {
                screen.end();
                return Err(e.context(format!(
                    "follow the move of {} (the controller no longer knows it: see shoal volume ls)",
                    last.volume
                )));
            }
            // The leader may change during a move: keep polling until the deadline.
            Err(e) => {
                let msg = format!("{e:#}");
                if poll_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, "polling the move failed; retrying");
                }
                poll_error = Some(msg);
            }
        }
    }
}

/// The controller answered that it knows no such move.
fn forgotten(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<ApiError>())
        .any(|a| a.code == Code::NotFound)
}

/// What to show after a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Show {
    /// A line kept on screen: the move entered a phase.
    Line(String),
    /// The copy's progress, replacing the previous one (terminals only).
    Progress(String),
}

/// What was shown of a move so far: decides, purely, what a new status adds.
#[derive(Debug, Default)]
pub struct Watch {
    phase: String,
    bytes: u64,
    /// The move's elapsed time when the copy was first seen (for the copy's rate).
    copy_start_ms: Option<u64>,
}

impl Watch {
    pub fn update(&mut self, r: &MoveStatusReply) -> Vec<Show> {
        let mut out = Vec::new();
        if r.phase != self.phase {
            self.phase = r.phase.clone();
            if !matches!(r.phase.as_str(), "done" | "failed") {
                out.push(Show::Line(move_phase(r)));
            }
        }
        if r.phase == "copying" {
            let start = *self.copy_start_ms.get_or_insert(r.elapsed_ms);
            if r.bytes != self.bytes {
                let copy_ms = r.elapsed_ms.saturating_sub(start);
                out.push(Show::Progress(move_progress(r, copy_ms)));
            }
        }
        self.bytes = r.bytes;
        out
    }
}

/// Where progress goes: stdout, or stderr when stdout is reserved for the JSON result.
/// Progress lines are shown only on a terminal, each replacing the last.
struct Screen {
    format: Format,
    terminal: bool,
    /// A progress line is on screen without its newline.
    open: bool,
}

impl Screen {
    fn new(format: Format) -> Screen {
        let terminal = match format {
            Format::Table => std::io::stdout().is_terminal(),
            Format::Json => std::io::stderr().is_terminal(),
        };
        Screen {
            format,
            terminal,
            open: false,
        }
    }

    fn out(&self) -> Box<dyn Write> {
        match self.format {
            Format::Table => Box::new(std::io::stdout()),
            Format::Json => Box::new(std::io::stderr()),
        }
    }

    fn show(&mut self, items: Vec<Show>) {
        if items.is_empty() {
            return;
        }
        let mut out = self.out();
        // A closed pipe must not abort the move's watch.
        for item in items {
            match item {
                Show::Line(l) => {
                    if std::mem::take(&mut self.open) {
                        let _ = writeln!(out);
                    }
                    let _ = writeln!(out, "{l}");
                }
                Show::Progress(p) if self.terminal => {
                    let _ = write!(out, "\r\x1b[K{p}");
                    self.open = true;
                }
                Show::Progress(_) => {}
            }
        }
        let _ = out.flush();
    }

    /// Ends an open progress line.
    fn end(&mut self) {
        if std::mem::take(&mut self.open) {
            let mut out = self.out();
            let _ = writeln!(out);
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: &str, bytes: u64, elapsed_ms: u64) -> MoveStatusReply {
        MoveStatusReply {
            id: 1,
            volume: "realapp/pgdata".into(),
            from: "n2".into(),
            to: "n3".into(),
            phase: phase.into(),
            bytes,
            elapsed_ms,
            ..Default::default()
        }
    }

    #[test]
    fn phases_once_and_progress_while_bytes_grow() {
        let mib = 1024 * 1024;
        let mut w = Watch::default();
        assert_eq!(
            w.update(&status("stopping", 0, 100)),
            vec![Show::Line(
                "stopping the replicas using realapp/pgdata on n2".into()
            )]
        );
        assert_eq!(w.update(&status("stopping", 0, 400)), vec![]);
        assert_eq!(
            w.update(&status("copying", 0, 1000)),
            vec![Show::Line("copying realapp/pgdata n2 -> n3".into())]
        );
        assert_eq!(
            w.update(&status("copying", 100 * mib, 3000)),
            vec![Show::Progress(
                "copying realapp/pgdata n2 -> n3: 100.0 MiB (50.0 MiB/s)".into()
            )]
        );
        // Nothing new: nothing shown.
        assert_eq!(w.update(&status("copying", 100 * mib, 3300)), vec![]);
        assert_eq!(
            w.update(&status("starting", 200 * mib, 5000)),
            vec![Show::Line(
                "copied realapp/pgdata to n3 (200.0 MiB); starting its replicas there".into()
            )]
        );
        assert_eq!(w.update(&status("done", 200 * mib, 6000)), vec![]);
    }
}
