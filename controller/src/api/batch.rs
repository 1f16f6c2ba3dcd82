//! Group commit of the agent sessions' task statuses: one Raft entry for many sessions.
//!
//! openraft 0.9 appends each client write as its own log entry and waits for it to be
//! flushed before it takes the next, so 1,000 sessions each proposing their statuses
//! cost 1,000 flushes in a row: in a burst (100,000 replicas starting within a second)
//! proposals waited more than the 10 s propose timeout. Here every command that arrives
//! while earlier ones are being proposed goes, in arrival order, into one
//! [`Command::Batch`]; at most [`IN_FLIGHT`] such proposals are under way at once.
//!
//! Order per session holds because a session has one proposal in flight at a time
//! (`agent_session::propose_statuses`); a batch applies its commands in the order they
//! arrived here, each as if it were its own entry.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::api::Shared;
use crate::state::{Command, CommandResult};

/// How many batches may be proposed at once: one being flushed while the next is
/// appended keeps the log busy without one huge entry.
pub const IN_FLIGHT: usize = 2;
/// The most commands one batch carries.
pub const MAX_COMMANDS: usize = 256;
/// The most task statuses one batch carries (an entry of a few MiB at most).
pub const MAX_UPDATES: usize = 16_384;

type Reply = oneshot::Sender<Result<CommandResult, Status>>;

/// Where sessions hand their commands ([`Batcher::propose`]).
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<(Command, Reply)>,
}

/// What [`run`] takes commands from.
pub struct Batched(mpsc::UnboundedReceiver<(Command, Reply)>);

/// A batcher and the queue its [`run`] reads.
pub fn channel() -> (Batcher, Batched) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Batcher { tx }, Batched(rx))
}

impl Batcher {
    /// Proposes `cmd` with whatever else is waiting, and answers what applying `cmd`
    /// answered (or why the batch was not committed).
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, Status> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((cmd, reply))
            .map_err(|_| Status::unavailable("the controller is shutting down"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("the controller is shutting down"))?
    }
}

/// Proposes what the sessions hand the [`Batcher`] of `ctx` until `shutdown`.
pub async fn run(ctx: Shared, queue: Batched, shutdown: CancellationToken) {
    let proposer = ctx.clone();
    let propose = move |cmd: Command| {
        let ctx = proposer.clone();
        async move { ctx.propose(cmd).await }
    };
    // An older controller cannot read a batch: one entry per command then.
    let can_batch = move || ctx.controllers_behind(Command::BATCH_PROTOCOL).is_empty();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = drain(queue, propose, can_batch) => {}
    }
}

/// Takes the queue's commands in arrival order, at most [`MAX_COMMANDS`] and about
/// [`MAX_UPDATES`] statuses at a time, and proposes each group through `propose`, as
/// one batch when `can_batch` says every controller reads one, at most [`IN_FLIGHT`]
/// groups at once. Ends when every [`Batcher`] is dropped.
async fn drain<F, Fut, B>(mut queue: Batched, propose: F, can_batch: B)
where
    F: Fn(Command) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<CommandResult, Status>> + Send,
    B: Fn() -> bool,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        // A slot first: what arrives while every slot is busy joins the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.0.recv().await else {
            return;
        };
        let mut updates = statuses(&first.0);
        let mut group = vec![first];
        while group.len() < MAX_COMMANDS && updates < MAX_UPDATES {
            let Ok(next) = queue.0.try_recv() else { break };
            updates += statuses(&next.0);
            group.push(next);
        }
        let batch = group.len() > 1 && can_batch();
        let propose = propose.clone();
        tokio::spawn(async move {
            if batch {
                propose_batch(group, propose).await;
            } else {
                // One entry each, in order.
                for (cmd, reply) in group {
                    let _ = reply.send(propose(cmd).await);
                }
            }
            drop(slot);
        });
    }
}

/// Proposes `group` as one [`Command::Batch`] and gives each sender its command's answer.
async fn propose_batch<F, Fut>(group: Vec<(Command, Reply)>, propose: F)
where
    F: Fn(Command) -> Fut,
    Fut: std::future::Future<Output = Result<CommandResult, Status>>,
{
    let (commands, replies): (Vec<Command>, Vec<Reply>) = group.into_iter().unzip();
    match propose(Command::Batch { commands }).await {
        Ok(result) if result.batch.len() == replies.len() => {
            for (reply, one) in replies.into_iter().zip(result.batch) {
                let _ = reply.send(Ok(one));
            }
        }
        Ok(result) => {
            let wrong = Status::internal(format!(
                "a batch of {} commands answered {} results",
                replies.len(),
                result.batch.len()
            ));
            answer_all(replies, &Err(wrong));
        }
        Err(e) => answer_all(replies, &Err(e)),
    }
}

/// Gives every sender the same answer.
fn answer_all(replies: Vec<Reply>, result: &Result<CommandResult, Status>) {
    for reply in replies {
        let _ = reply.send(result.clone());
    }
}

/// How many task statuses `cmd` carries (1 for any other command).
fn statuses(cmd: &Command) -> usize {
    match cmd {
        Command::TaskStatus { updates, .. } => updates.len().max(1),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::state::TaskUpdate;

    fn status(node: &str, task: &str) -> Command {
        Command::TaskStatus {
            node: node.into(),
            updates: vec![TaskUpdate {
                task: task.into(),
                state: shoal_proto::task::TaskState::Running,
                container_id: String::new(),
                exit_code: None,
                error: String::new(),
                ip: None,
                ips: Default::default(),
            }],
            now_ms: 1,
        }
    }

    type Proposed =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<CommandResult, Status>> + Send>>;

    /// A proposer that records what it was given, holds the first [`IN_FLIGHT`]
    /// proposals until `release` fires (so what arrives meanwhile waits in the queue),
    /// and answers each status with its task id's length as `count`.
    type Seen = Arc<Mutex<Vec<Command>>>;

    fn recording() -> (
        Seen,
        tokio::sync::watch::Sender<bool>,
        impl Fn(Command) -> Proposed + Clone + Send + 'static,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (release, released) = tokio::sync::watch::channel(false);
        let log = seen.clone();
        let propose = move |cmd: Command| -> Proposed {
            let log = log.clone();
            let mut released = released.clone();
            Box::pin(async move {
                let held = {
                    let mut log = log.lock().unwrap();
                    log.push(cmd.clone());
                    log.len() <= IN_FLIGHT
                };
                if held {
                    let _ = released.wait_for(|r| *r).await;
                }
                let answer = |c: &Command| CommandResult {
                    count: match c {
                        Command::TaskStatus { updates, .. } => updates[0].task.len() as u64,
                        _ => 0,
                    },
                    ..Default::default()
                };
                match &cmd {
                    Command::Batch { commands } => Ok(CommandResult {
                        batch: commands.iter().map(answer).collect(),
                        ..Default::default()
                    }),
                    one => Ok(answer(one)),
                }
            })
        };
        (seen, release, propose)
    }

    /// Sends `count` statuses through `batcher` while the first [`IN_FLIGHT`] are held,
    /// releases them, and checks each sender got its own answer.
    async fn send_held(
        batcher: &Batcher,
        seen: &Arc<Mutex<Vec<Command>>>,
        release: tokio::sync::watch::Sender<bool>,
        count: usize,
    ) {
        let mut waiting = Vec::new();
        for i in 0..count {
            let b = batcher.clone();
            // Task ids of different lengths: each answer says whose it is.
            let task = "t".repeat(i + 1);
            waiting.push(tokio::spawn(async move {
                b.propose(status(&format!("n{i}"), &task)).await
            }));
            // The spawned sender reaches the queue before the next is sent.
            tokio::task::yield_now().await;
            if i + 1 == IN_FLIGHT {
                // Both slots busy before anything else is sent.
                for _ in 0..1000 {
                    if seen.lock().unwrap().len() == IN_FLIGHT {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                assert_eq!(seen.lock().unwrap().len(), IN_FLIGHT);
            }
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        release.send_replace(true);
        for (i, w) in waiting.into_iter().enumerate() {
            assert_eq!(w.await.unwrap().unwrap().count, i as u64 + 1, "answer {i}");
        }
    }

    /// The nodes of the statuses in `proposed`, batches opened, in order.
    fn nodes(proposed: &[Command]) -> Vec<usize> {
        let mut out = Vec::new();
        for cmd in proposed {
            let one = |c: &Command| match c {
                Command::TaskStatus { node, .. } => node[1..].parse::<usize>().unwrap(),
                other => panic!("{other:?}"),
            };
            match cmd {
                Command::Batch { commands } => {
                    assert!(commands.len() > 1 && commands.len() <= MAX_COMMANDS);
                    let inner: Vec<usize> = commands.iter().map(one).collect();
                    assert!(
                        inner.windows(2).all(|w| w[0] < w[1]),
                        "arrival order: {inner:?}"
                    );
                    out.extend(inner);
                }
                single => out.push(one(single)),
            }
        }
        out
    }

    /// `count` statuses through a batcher whose first proposals are held
    /// ([`send_held`]), `can_batch` answering as given: what was proposed, in order.
    async fn held_run(can_batch: bool, count: usize) -> Vec<Command> {
        let (seen, release, propose) = recording();
        let (batcher, queue) = channel();
        let run = tokio::spawn(drain(queue, propose, move || can_batch));
        send_held(&batcher, &seen, release, count).await;
        drop(batcher);
        run.await.unwrap();
        let seen = seen.lock().unwrap().clone();
        seen
    }

    #[tokio::test]
    async fn what_waits_goes_in_one_batch_in_arrival_order_and_each_gets_its_answer() {
        let seen = held_run(true, 300).await;
        // The two held went alone; the 298 that waited went in ceil(298 / 256) batches.
        assert_eq!(seen.len(), IN_FLIGHT + 2, "{seen:?}");
        assert!(seen[IN_FLIGHT..]
            .iter()
            .all(|c| matches!(c, Command::Batch { .. })));
        let mut all = nodes(&seen);
        all.sort_unstable();
        assert_eq!(all, (0..300).collect::<Vec<_>>(), "each exactly once");
    }

    #[tokio::test]
    async fn a_controller_that_cannot_read_a_batch_gets_one_entry_per_command() {
        let seen = held_run(false, 6).await;
        assert!(
            seen.iter().all(|c| matches!(c, Command::TaskStatus { .. })),
            "no batch proposed: {seen:?}"
        );
        // Each command on its own, in arrival order.
        assert_eq!(nodes(&seen), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_batch_is_bounded_by_statuses_too() {
        let big = Command::TaskStatus {
            node: "n".into(),
            updates: vec![
                match status("n", "t") {
                    Command::TaskStatus { updates, .. } => updates[0].clone(),
                    _ => unreachable!(),
                };
                1024
            ],
            now_ms: 1,
        };
        assert_eq!(statuses(&big), 1024);
        assert_eq!(
            statuses(&Command::Rollback {
                service: "s/w".into()
            }),
            1
        );
    }
}
