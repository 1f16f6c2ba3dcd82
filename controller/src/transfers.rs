//! Volume contents moving between nodes (and to or from a CLI), through the leader.
//!
//! An exporting agent uploads a tar stream with `VolumeData.Upload`; an importing agent
//! downloads it with `VolumeData.Download`; the leader pipes one into the other in
//! memory, a few chunks at a time (bounded channels: the slower side sets the pace). A
//! CLI backup takes the download side, a CLI restore the upload side. Why through the
//! leader rather than agent to agent: agents open no port and hold no server
//! certificate, every byte still travels over the cluster's mTLS, and a node only needs
//! to reach the controllers, as for everything else. The cost is a second hop.
//!
//! [`drive`] runs a move on the leader: it waits for the replicas using the copy to stop
//! (the reconciler stops them, [`crate::reconciler`]), asks both agents to transfer,
//! checks that both ends agree on the SHA-256 of the stream, and writes the outcome
//! through Raft ([`Command::MoveProgress`]). The source copy is never written; on any
//! failure the partial copy is removed by its agent and the source stays live.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::pb;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api::control::now_ms;
use crate::api::Shared;
use crate::state::{Command, MovePhase, NodeStatus, VolumeMove};

/// Chunks buffered between the two ends of a pipe.
const PIPE_DEPTH: usize = 16;
/// How long the replicas using a copy may take to stop before a move gives up.
const STOP_WAIT: Duration = Duration::from_secs(600);
/// How long an agent may stay silent on a transfer before it counts as failed.
const IDLE_WAIT: Duration = Duration::from_secs(120);

/// One agent's word that its side of a transfer ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Done {
    pub error: String,
    pub bytes: u64,
    pub sha256: String,
    /// Export with freeze: how long the containers were paused.
    pub frozen_ms: u64,
    /// The agent said so (else the leader gave up on it: its node went away, ...).
    pub reported: bool,
}

/// A transfer that failed: the first failure's words, and whether the receiving side
/// said it ended (then it removed its partial copy itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub error: String,
    pub receiver_reported: bool,
}

struct Pipe {
    tx: Option<mpsc::Sender<pb::VolumeChunk>>,
    rx: Option<mpsc::Receiver<pb::VolumeChunk>>,
    /// Bytes that went through, for progress.
    bytes: Arc<AtomicU64>,
    /// Cancelled when the transfer is closed: both ends stop, so a side whose peer is
    /// lost (a node cut mid-copy) is not left blocked on a full pipe.
    cancel: CancellationToken,
}

/// The writing end of a pipe.
pub struct PipeSender {
    pub tx: mpsc::Sender<pb::VolumeChunk>,
    pub bytes: Arc<AtomicU64>,
    pub cancel: CancellationToken,
}

impl PipeSender {
    /// Sends one chunk (counting its bytes); Err when the reader or the transfer is gone.
    pub async fn send(&self, chunk: pb::VolumeChunk) -> Result<(), &'static str> {
        self.bytes
            .fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
        tokio::select! {
            r = self.tx.send(chunk) => r.map_err(|_| "the receiving side went away"),
            _ = self.cancel.cancelled() => Err("the transfer was cancelled"),
        }
    }
}

/// The leader's open pipes and the transfers waiting for their agents.
#[derive(Default)]
pub struct Transfers {
    next: AtomicU64,
    pipes: Mutex<HashMap<u64, Pipe>>,
    done: Mutex<HashMap<(u64, String), oneshot::Sender<Done>>>,
    /// Bytes copied by the move under way, by move id.
    progress: Mutex<HashMap<u64, Arc<AtomicU64>>>,
    /// Volumes (`STACK/NAME`) whose move or restore this controller drives.
    driving: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Transfers {
    /// A new transfer id (unique across leaders: time-based) and its pipe.
    pub fn open(&self) -> (u64, Arc<AtomicU64>) {
        let id = (now_ms() << 16) | (self.next.fetch_add(1, Ordering::Relaxed) & 0xffff);
        let (tx, rx) = mpsc::channel(PIPE_DEPTH);
        let bytes = Arc::new(AtomicU64::new(0));
        lock(&self.pipes).insert(
            id,
            Pipe {
                tx: Some(tx),
                rx: Some(rx),
                bytes: bytes.clone(),
                cancel: CancellationToken::new(),
            },
        );
        (id, bytes)
    }

    /// The writing end of pipe `id` (once).
    pub fn sender(&self, id: u64) -> Option<PipeSender> {
        let mut pipes = lock(&self.pipes);
        let p = pipes.get_mut(&id)?;
        Some(PipeSender {
            tx: p.tx.take()?,
            bytes: p.bytes.clone(),
            cancel: p.cancel.clone(),
        })
    }

    /// The reading end of pipe `id` (once), as a stream that ends when the transfer is
    /// closed.
    pub fn receiver(
        &self,
        id: u64,
    ) -> Option<impl futures::Stream<Item = pb::VolumeChunk> + Send + 'static> {
        use futures::StreamExt;
        let mut pipes = lock(&self.pipes);
        let p = pipes.get_mut(&id)?;
        let rx = p.rx.take()?;
        Some(
            tokio_stream::wrappers::ReceiverStream::new(rx)
                .take_until(p.cancel.clone().cancelled_owned()),
        )
    }

    /// Forgets transfer `id` without stopping its ends (what is in the pipe is still
    /// delivered).
    pub fn forget(&self, id: u64) {
        lock(&self.pipes).remove(&id);
    }

    /// Ends transfer `id`: both ends of its pipe stop.
    pub fn close(&self, id: u64) {
        if let Some(p) = lock(&self.pipes).remove(&id) {
            p.cancel.cancel();
        }
    }

    /// Waits for `node`'s word on transfer `id`.
    pub fn expect(&self, id: u64, node: &str) -> oneshot::Receiver<Done> {
        let (tx, rx) = oneshot::channel();
        lock(&self.done).insert((id, node.to_string()), tx);
        rx
    }

    /// An agent's word on its side of transfer `id`.
    pub fn finish(&self, id: u64, node: &str, done: Done) {
        if let Some(tx) = lock(&self.done).remove(&(id, node.to_string())) {
            let _ = tx.send(Done {
                reported: true,
                ..done
            });
        }
    }

    /// Bytes copied so far by move `id` (None: not driven here).
    pub fn progress(&self, id: u64) -> Option<u64> {
        lock(&self.progress)
            .get(&id)
            .map(|b| b.load(Ordering::Relaxed))
    }

    /// Counts `bytes` as move `id`'s progress until [`Transfers::untrack`].
    pub fn track(&self, id: u64, bytes: Arc<AtomicU64>) {
        lock(&self.progress).insert(id, bytes);
    }

    pub fn untrack(&self, id: u64) {
        lock(&self.progress).remove(&id);
    }

    /// Claims the volume's move for this controller; false if already driven here.
    pub fn claim(&self, volume: &str) -> bool {
        lock(&self.driving).insert(volume.to_string())
    }

    pub fn release(&self, volume: &str) {
        lock(&self.driving).remove(volume);
    }

    pub fn is_driving(&self, volume: &str) -> bool {
        lock(&self.driving).contains(volume)
    }
}

/// What an agent is asked to do with a volume.
pub struct Ask<'a> {
    pub direction: &'a str,
    pub stack: &'a str,
    pub name: &'a str,
    pub docker_name: &'a str,
    pub freeze: bool,
}

/// Tells `node`'s agent to export or import a volume under transfer `id`.
pub async fn ask(ctx: &Shared, node: &str, id: u64, a: Ask<'_>) -> Result<(), String> {
    let Some(session) = ctx.sessions.get(node) else {
        return Err(format!("{node}'s agent is not connected to the leader"));
    };
    let msg = pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::VolumeTransfer(
            pb::VolumeTransfer {
                transfer_id: id,
                direction: a.direction.to_string(),
                docker_name: a.docker_name.to_string(),
                stack: a.stack.to_string(),
                name: a.name.to_string(),
                sha256: String::new(),
                freeze: a.freeze,
            },
        )),
    };
    session
        .tx
        .send(Ok(msg))
        .await
        .map_err(|_| format!("{node}'s session closed"))
}

/// Waits for `rx` while `node` stays ready; an agent silent for [`IDLE_WAIT`] with no
/// byte moving fails the transfer.
pub async fn wait_done(
    ctx: &Shared,
    node: &str,
    mut rx: oneshot::Receiver<Done>,
    bytes: &AtomicU64,
) -> Done {
    let mut last = (bytes.load(Ordering::Relaxed), tokio::time::Instant::now());
    loop {
        tokio::select! {
            done = &mut rx => {
                return done.unwrap_or_else(|_| Done {
                    error: format!("the transfer on {node} was abandoned"),
                    ..Done::default()
                })
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let down = ctx
            .node
            .state
            .read()
            .nodes
            .get(node)
            .is_none_or(|n| n.status != NodeStatus::Ready);
        if down || ctx.sessions.get(node).is_none() {
            return Done {
                error: format!("{node} went away during the transfer"),
                ..Done::default()
            };
        }
        let now = bytes.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, tokio::time::Instant::now());
        } else if last.1.elapsed() > IDLE_WAIT {
            return Done {
                error: format!("{node} sent nothing for {} s", IDLE_WAIT.as_secs()),
                ..Done::default()
            };
        }
    }
}

/// Waits for both ends of transfer `id`: the sender `a` and the receiver `b`, each named
/// by what it does (e.g. "export on n1"). When one fails, the transfer is closed so the
/// other stops too, and the first failure is the error (the other side's is only its
/// consequence).
pub async fn wait_both(
    ctx: &Shared,
    id: u64,
    (a_what, a_node, a): (&str, &str, oneshot::Receiver<Done>),
    (b_what, b_node, b): (&str, &str, oneshot::Receiver<Done>),
    bytes: &AtomicU64,
) -> Result<(Done, Done), Failed> {
    let fa = wait_done(ctx, a_node, a, bytes);
    let fb = wait_done(ctx, b_node, b, bytes);
    tokio::pin!(fa, fb);
    let failed = |what: &str, node: &str, d: &Done| format!("{what} on {node}: {}", d.error);
    let (da, db) = tokio::select! {
        da = &mut fa => {
            if da.error.is_empty() {
                (da, fb.await)
            } else {
                ctx.transfers.close(id);
                let db = tokio::time::timeout(AFTER_FAILURE, fb).await.unwrap_or_default();
                return Err(Failed { error: failed(a_what, a_node, &da), receiver_reported: db.reported });
            }
        }
        db = &mut fb => {
            if db.error.is_empty() {
                (fa.await, db)
            } else {
                ctx.transfers.close(id);
                let _ = tokio::time::timeout(AFTER_FAILURE, fa).await;
                return Err(Failed { error: failed(b_what, b_node, &db), receiver_reported: db.reported });
            }
        }
    };
    if !da.error.is_empty() {
        return Err(Failed {
            error: failed(a_what, a_node, &da),
            receiver_reported: db.reported,
        });
    }
    if !db.error.is_empty() {
        return Err(Failed {
            error: failed(b_what, b_node, &db),
            receiver_reported: db.reported,
        });
    }
    Ok((da, db))
}

/// How long the other side of a failed transfer gets to say it stopped.
const AFTER_FAILURE: Duration = Duration::from_secs(10);

/// The leader's side of each move: resume the ones waiting for replicas to stop, fail
/// the ones whose copy was under way on a controller that no longer leads; and refresh
/// the standby copies of replicated volumes that are due.
pub async fn tend(ctx: &Shared) -> anyhow::Result<()> {
    for due in syncs_due(&ctx.node.state.read(), now_ms()) {
        let claim = format!("sync:{}/{}", due.stack, due.name);
        if ctx.transfers.claim(&claim) {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Err(e) = sync(&ctx, &due).await {
                    tracing::warn!(volume = %format!("{}/{}", due.stack, due.name), to = %due.to, error = %e, "standby refresh failed");
                }
                ctx.transfers.release(&claim);
            });
        }
    }
    let moves: Vec<VolumeMove> = ctx
        .node
        .state
        .read()
        .moves
        .values()
        .filter(|m| !m.phase.is_over())
        .cloned()
        .collect();
    for m in moves {
        let volume = format!("{}/{}", m.stack, m.name);
        if ctx.transfers.is_driving(&volume) {
            continue;
        }
        if m.phase == MovePhase::Copying {
            ctx.propose(Command::MoveProgress {
                id: m.id,
                phase: MovePhase::Failed,
                error:
                    "the leader changed during the copy; the source copy is untouched: run it again"
                        .into(),
                bytes: 0,
                sha256: String::new(),
                now_ms: now_ms(),
                partial: true,
            })
            .await?;
            continue;
        }
        if ctx.transfers.claim(&volume) {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let id = m.id;
                let result = drive(&ctx, m).await;
                ctx.transfers.release(&volume);
                ctx.transfers.untrack(id);
                if let Err(e) = result {
                    tracing::warn!(move_id = id, error = %e, "volume move could not record its outcome");
                }
            });
        }
    }
    Ok(())
}

/// Runs one move from its stopping phase to its end.
#[tracing::instrument(skip_all, fields(move_id = m.id, volume = %format!("{}/{}", m.stack, m.name), from = %m.from, to = %m.to))]
async fn drive(ctx: &Shared, m: VolumeMove) -> Result<(), tonic::Status> {
    let fail = |error: String| Command::MoveProgress {
        id: m.id,
        phase: MovePhase::Failed,
        error,
        bytes: 0,
        sha256: String::new(),
        now_ms: now_ms(),
        partial: false,
    };
    // 1. The replicas using the copy stop (the reconciler shuts them down).
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    loop {
        let blocking = {
            let state = ctx.node.state.read();
            if state.moves.get(&m.id).is_none_or(|x| x.phase.is_over()) {
                return Ok(());
            }
            state.tasks_blocking_move(&m).len()
        };
        if blocking == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            ctx.propose(fail(format!(
                "{blocking} replica(s) using the volume did not stop within {} s",
                STOP_WAIT.as_secs()
            )))
            .await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let docker_name = {
        let state = ctx.node.state.read();
        state
            .volumes
            .get(&crate::state::copy_key(&m.stack, &m.name, &m.from))
            .map(|c| c.docker_name.clone())
    };
    let Some(docker_name) = docker_name else {
        ctx.propose(fail(format!("{} no longer holds the copy", m.from)))
            .await?;
        return Ok(());
    };
    ctx.propose(Command::MoveProgress {
        id: m.id,
        phase: MovePhase::Copying,
        error: String::new(),
        bytes: 0,
        sha256: String::new(),
        now_ms: now_ms(),
        partial: false,
    })
    .await?;
    // 2. Export on the source, import on the target, through a pipe here.
    let (tid, bytes) = ctx.transfers.open();
    ctx.transfers.track(m.id, bytes.clone());
    let export = ctx.transfers.expect(tid, &m.from);
    let import = ctx.transfers.expect(tid, &m.to);
    let started = std::time::Instant::now();
    let outcome = async {
        let what = |direction| Ask {
            direction,
            stack: &m.stack,
            name: &m.name,
            docker_name: &docker_name,
            freeze: false,
        };
        let unasked = |error| Failed {
            error,
            receiver_reported: false,
        };
        ask(ctx, &m.to, tid, what("import"))
            .await
            .map_err(unasked)?;
        ask(ctx, &m.from, tid, what("export"))
            .await
            .map_err(unasked)?;
        let (a, b) = wait_both(
            ctx,
            tid,
            ("export", &m.from, export),
            ("import", &m.to, import),
            &bytes,
        )
        .await?;
        if a.sha256 != b.sha256 || a.sha256.is_empty() {
            return Err(Failed {
                error: format!(
                    "checksums differ: {} sent sha256 {}, {} received {}",
                    m.from, a.sha256, m.to, b.sha256
                ),
                receiver_reported: false,
            });
        }
        Ok(b)
    }
    .await;
    ctx.transfers.close(tid);
    // 3. Rebind (the state machine moves the slots to the new copy) or give up.
    match outcome {
        Ok(done) => {
            let secs = started.elapsed().as_secs_f64().max(0.001);
            tracing::info!(
                bytes = done.bytes,
                seconds = secs,
                mib_per_s = done.bytes as f64 / secs / (1024.0 * 1024.0),
                "volume copied"
            );
            ctx.propose(Command::MoveProgress {
                id: m.id,
                phase: MovePhase::Done,
                error: String::new(),
                bytes: done.bytes,
                sha256: done.sha256,
                now_ms: now_ms(),
                partial: false,
            })
            .await?;
        }
        Err(e) => {
            tracing::warn!(error = %e.error, "volume move failed; the source copy stays live");
            ctx.propose(Command::MoveProgress {
                id: m.id,
                phase: MovePhase::Failed,
                error: e.error,
                bytes: 0,
                sha256: String::new(),
                now_ms: now_ms(),
                // The target's agent removed what it wrote when it said it failed.
                partial: !e.receiver_reported,
            })
            .await?;
        }
    }
    Ok(())
}

/// A standby refresh to run: from the live copy on `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncDue {
    pub stack: String,
    pub name: String,
    pub docker_name: String,
    pub from: String,
    pub to: String,
}

/// The standby refreshes due at `now` (pure): per replicated volume with one live copy
/// on a ready node and no move under way, a missing standby (placed by
/// [`crate::scheduler::volumes::standby_node`]), else the stalest one older than `every`.
pub fn syncs_due(state: &crate::state::ClusterState, now: u64) -> Vec<SyncDue> {
    use crate::state::CopyState;
    let mut out = Vec::new();
    for st in state.stacks.values() {
        if st.removing {
            continue;
        }
        for (name, spec) in &st.spec.volumes {
            let Some(replicas) = spec.policy.replicas.filter(|r| *r >= 2) else {
                continue;
            };
            if !spec.is_bound() || state.move_of(&st.name, name).is_some() {
                continue;
            }
            let every = spec.policy.every_ms.unwrap_or(DEFAULT_EVERY_MS);
            let copies: Vec<&crate::state::VolumeCopy> = state.copies_of(&st.name, name).collect();
            let live: Vec<_> = copies
                .iter()
                .filter(|c| c.state == CopyState::Live)
                .collect();
            let [primary] = live.as_slice() else {
                continue;
            };
            let ready = |n: &str| {
                state
                    .nodes
                    .get(n)
                    .is_some_and(|n| n.status == NodeStatus::Ready)
            };
            if !ready(&primary.node) || !primary.seen {
                continue;
            }
            let standbys: Vec<_> = copies
                .iter()
                .filter(|c| c.state == CopyState::Standby && ready(&c.node))
                .collect();
            let to = if standbys.len() + 1 < replicas as usize {
                crate::scheduler::volumes::standby_node(state, &st.name, name)
            } else {
                standbys
                    .iter()
                    .filter(|c| c.synced_ms.is_none_or(|t| now.saturating_sub(t) >= every))
                    .min_by_key(|c| c.synced_ms)
                    .map(|c| c.node.clone())
            };
            if let Some(to) = to {
                out.push(SyncDue {
                    stack: st.name.clone(),
                    name: name.clone(),
                    docker_name: primary.docker_name.clone(),
                    from: primary.node.clone(),
                    to,
                });
            }
        }
    }
    out
}

/// How often a standby copy is refreshed when `every` is not given.
pub const DEFAULT_EVERY_MS: u64 = 30_000;

/// One standby refresh: a frozen export on the live copy's node, a standby import on
/// the other; recorded through Raft only once both ends agree.
#[tracing::instrument(skip_all, fields(volume = %format!("{}/{}", due.stack, due.name), from = %due.from, to = %due.to))]
async fn sync(ctx: &Shared, due: &SyncDue) -> Result<(), String> {
    let (tid, bytes) = ctx.transfers.open();
    let export = ctx.transfers.expect(tid, &due.from);
    let import = ctx.transfers.expect(tid, &due.to);
    let started = now_ms();
    let outcome = async {
        let what = |direction, freeze| Ask {
            direction,
            stack: &due.stack,
            name: &due.name,
            docker_name: &due.docker_name,
            freeze,
        };
        ask(ctx, &due.to, tid, what("standby", false)).await?;
        ask(ctx, &due.from, tid, what("export", true)).await?;
        let both = wait_both(
            ctx,
            tid,
            ("export", &due.from, export),
            ("standby", &due.to, import),
            &bytes,
        )
        .await;
        let (a, b) = both.map_err(|f| f.error)?;
        if a.sha256 != b.sha256 || a.sha256.is_empty() {
            return Err(format!(
                "checksums differ: {} against {}",
                a.sha256, b.sha256
            ));
        }
        Ok((a, b))
    }
    .await;
    ctx.transfers.close(tid);
    let (a, b) = outcome?;
    tracing::info!(
        bytes = b.bytes,
        frozen_ms = a.frozen_ms,
        "standby refreshed"
    );
    ctx.propose(Command::StandbySynced {
        stack: due.stack.clone(),
        name: due.name.clone(),
        node: due.to.clone(),
        docker_name: due.docker_name.clone(),
        bytes: b.bytes,
        frozen_ms: a.frozen_ms,
        // Conservative: the copy is at least this recent (its frozen pass came later).
        at_ms: started,
    })
    .await
    .map_err(|e| e.message().to_string())?;
    Ok(())
}
