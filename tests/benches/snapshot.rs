//! Raft snapshots of a large state, printed (not asserted):
//! `cargo bench -p shoal-tests --bench snapshot`.
//!
//! A state machine on a temp dir applies, as committed entries, what a cluster of 1,000
//! nodes running one service of 100,000 replicas went through: the nodes registering, the
//! deploy, the reconciler's decisions until it has nothing left to say, and every task
//! reported running. Then, on that state:
//!
//! 1. The format alone: the snapshot's bytes, the time to clone the applied state, to
//!    encode it into memory (`encode_snapshot`) and streamed to a file
//!    (`encode_snapshot_to`), and to decode it from memory and from a file.
//! 2. The state machine's own paths: `build_snapshot`, three times, while entries keep
//!    being applied, with the longest an apply waited (what a build's hold of the state's
//!    lock costs the log; the state machine's log line says how long it held it), a
//!    follower receiving the snapshot (copied in chunks, as openraft's transport does)
//!    and installing it, and a restart loading it.
//!
//! The peak RSS growth of each step is measured by returning freed memory to the system
//! (`malloc_trim`) and resetting the process's high-water mark (`/proc/self/clear_refs`)
//! before it; "n/a" where that is not allowed.
//!
//! `cargo test --benches` runs it small (1,000 replicas on 10 nodes) so the bench stays
//! compiled and working without costing the test suite much.

use std::io::{BufReader, BufWriter, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use shoal_controller::raft::state_machine::{
    decode_snapshot, decode_snapshot_from, encode_snapshot, encode_snapshot_to, Applied,
};
use shoal_controller::raft::{StateMachine, TypeConfig};
use shoal_controller::state::{Availability, ClusterState, Command, Node, NodeStatus, TaskUpdate};
use shoal_proto::spec::{ServiceSpec, StackSpec};
use shoal_proto::task::{Desired, TaskState};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Feeds commands to a state machine as committed entries of term 1.
struct Feeder {
    sm: StateMachine,
    next: u64,
}

impl Feeder {
    fn entry(&mut self, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
        self.next += 1;
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.next),
            payload,
        }
    }

    async fn apply(&mut self, commands: Vec<Command>) {
        let entries: Vec<_> = commands
            .into_iter()
            .map(|c| self.entry(EntryPayload::Normal(c)))
            .collect();
        self.sm.apply(entries).await.expect("apply");
    }

    async fn blank(&mut self) {
        let entry = self.entry(EntryPayload::Blank);
        self.sm.apply([entry]).await.expect("apply");
    }
}

fn node(id: String) -> Node {
    Node {
        address: format!("10.1.{}.{}", id.len(), id.len()),
        id,
        nano_cpus: 64_000_000_000,
        memory_bytes: 256 << 30,
        labels: [("zone".to_string(), "eu-1".to_string())].into(),
        status: NodeStatus::Ready,
        availability: Availability::Active,
        gpus: Vec::new(),
        devices: Default::default(),
        platform: "linux/amd64".into(),
        manager: false,
        conflicts: Vec::new(),
    }
}

fn deploy(replicas: u64) -> Command {
    let web = ServiceSpec {
        name: "web".into(),
        image: "registry.example.com/team/web:1.42.0".into(),
        replicas,
        ..Default::default()
    };
    Command::DeployStack {
        spec: StackSpec {
            name: "bench".into(),
            services: [("web".to_string(), web)].into_iter().collect(),
            volumes: Default::default(),
            secrets: Vec::new(),
            configs: Vec::new(),
            networks: Default::default(),
        },
        now_ms: 1_000,
        secrets: Default::default(),
    }
}

/// Applies what a cluster of `nodes` nodes running `replicas` replicas went through.
async fn populate(f: &mut Feeder, nodes: usize, replicas: u64) {
    let register = (0..nodes)
        .map(|i| Command::RegisterNode {
            node: node(format!("node-{i:04}")),
        })
        .collect();
    f.apply(register).await;
    f.apply(vec![deploy(replicas)]).await;
    for pass in 0.. {
        assert!(pass < 100, "the reconciler did not settle");
        let decisions = {
            let state = f.sm.handle();
            let state = state.read();
            shoal_controller::reconciler::reconcile(&state, 2_000 + pass)
        };
        if decisions.is_empty() {
            break;
        }
        f.apply(vec![Command::Reconcile {
            decisions,
            now_ms: 2_000 + pass,
        }])
        .await;
    }
    let reports = running_reports(&f.sm.handle().snapshot());
    f.apply(reports).await;
}

/// One `TaskStatus` per node, reporting each of its tasks running.
fn running_reports(state: &ClusterState) -> Vec<Command> {
    let mut by_node: std::collections::BTreeMap<String, Vec<TaskUpdate>> = Default::default();
    for t in state.tasks.values() {
        let Some(node) = &t.node else { continue };
        if t.desired != Desired::Running {
            continue;
        }
        by_node.entry(node.clone()).or_default().push(TaskUpdate {
            task: t.id.clone(),
            state: TaskState::Running,
            container_id: format!("{:064x}", fxhash(&t.id)),
            exit_code: None,
            error: String::new(),
            ip: None,
            ips: Default::default(),
        });
    }
    by_node
        .into_iter()
        .map(|(node, updates)| Command::TaskStatus {
            node,
            updates,
            now_ms: 10_000,
        })
        .collect()
}

/// A container id's worth of hex from a task id (Docker's ids are 64 hex digits).
fn fxhash(s: &str) -> u128 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u128, |h, b| {
        (h ^ u128::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Returns the memory the allocator keeps of what was freed (so a step's growth is what
/// it allocates, not what an earlier step left free for it to reuse) and resets this
/// process's peak RSS (VmHWM) to its current RSS; false if that is not allowed.
fn reset_peak() -> bool {
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe { libc::malloc_trim(0) };
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `step`, returning its result, its time and the growth of the peak RSS over it.
async fn measured<T>(step: impl std::future::Future<Output = T>) -> (T, Duration, String) {
    let peak_known = reset_peak();
    let before = status_kib("VmRSS:");
    let start = Instant::now();
    let out = step.await;
    let took = start.elapsed();
    let growth = if peak_known {
        let grown = status_kib("VmHWM:").saturating_sub(before);
        format!("+{} MiB", grown / 1024)
    } else {
        "n/a".to_string()
    };
    (out, took, growth)
}

fn row(what: &str, took: Duration, peak: &str) {
    println!(
        "{what:<48} {:>9.1} ms   peak RSS {peak}",
        took.as_secs_f64() * 1e3
    );
}

fn open_db(dir: &Path) -> sled::Db {
    sled::Config::new()
        .path(dir.join("raft"))
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .expect("open sled")
}

/// Runs `step` `TRIALS` times (dropping what it returns outside the time): the first
/// run's time and peak RSS growth, and the best time.
fn trials<T>(what: &str, mut step: impl FnMut() -> T) -> T {
    const TRIALS: usize = 3;
    let mut times = Vec::new();
    let mut first_peak = String::new();
    let mut out = None;
    for i in 0..TRIALS {
        let peak_known = reset_peak();
        let before = status_kib("VmRSS:");
        let start = Instant::now();
        drop(out.take());
        let value = step();
        times.push(start.elapsed());
        if i == 0 {
            first_peak = if peak_known {
                let grown = status_kib("VmHWM:").saturating_sub(before);
                format!("+{} MiB", grown / 1024)
            } else {
                "n/a".to_string()
            };
        }
        out = Some(value);
    }
    let best = times.iter().min().copied().unwrap_or_default();
    println!(
        "{what:<48} {:>9.1} ms   (best of {TRIALS} {:>7.1} ms)   first run's peak RSS {first_peak}",
        times[0].as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3
    );
    out.expect("ran")
}

/// The format alone: clone, encode and decode in memory and through a file.
fn format_alone(applied: &Applied, dir: &Path) {
    drop(trials("clone the applied state", || applied.clone()));
    let bytes = trials("encode_snapshot (into memory)", || {
        encode_snapshot(applied).expect("encode")
    });
    println!(
        "snapshot: {} bytes ({:.1} MiB)",
        bytes.len(),
        mib(bytes.len() as u64)
    );

    let path = dir.join("format.json");
    trials("encode_snapshot_to (a BufWriter on a file)", || {
        let file = std::fs::File::create(&path).expect("create");
        let mut w = BufWriter::with_capacity(1 << 20, file);
        encode_snapshot_to(&mut w, applied).expect("encode");
        w.flush().expect("flush");
    });

    let decoded = trials("decode_snapshot (from memory)", || {
        decode_snapshot(&bytes).expect("decode")
    });
    assert_eq!(&decoded, applied);
    drop((decoded, bytes));

    let decoded = trials("decode_snapshot_from (a BufReader on a file)", || {
        let file = std::fs::File::open(&path).expect("open");
        decode_snapshot_from(BufReader::with_capacity(1 << 20, file)).expect("decode")
    });
    assert_eq!(&decoded, applied);
    drop(decoded);

    let decoded = trials("read the file whole, then decode_snapshot", || {
        let bytes = std::fs::read(&path).expect("read");
        decode_snapshot(&bytes).expect("decode")
    });
    assert_eq!(&decoded, applied);
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `build_snapshot` while entries keep being applied: its time, and the longest apply.
async fn build_while_applying(f: &mut Feeder) {
    let mut builder = f.sm.get_snapshot_builder().await;
    let peak_known = reset_peak();
    let before = status_kib("VmRSS:");
    let start = Instant::now();
    let build = tokio::spawn(async move { builder.build_snapshot().await });
    let (mut applies, mut longest) = (0u32, Duration::ZERO);
    while !build.is_finished() {
        let t = Instant::now();
        f.blank().await;
        longest = longest.max(t.elapsed());
        applies += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let snapshot = build.await.expect("join").expect("build_snapshot");
    let took = start.elapsed();
    let peak = if peak_known {
        format!(
            "+{} MiB",
            status_kib("VmHWM:").saturating_sub(before) / 1024
        )
    } else {
        "n/a".to_string()
    };
    row("build_snapshot (to the store)", took, &peak);
    println!(
        "  {applies} entries applied meanwhile; the longest apply waited {:.1} ms \
         (the build's hold of the state's lock)",
        longest.as_secs_f64() * 1e3
    );
    println!("  built {}", snapshot.meta);
}

/// A follower receives the leader's current snapshot in 1 MiB chunks and installs it.
async fn receive_and_install(leader: &mut StateMachine, follower: &mut StateMachine) {
    let (_, took, peak) = measured(async {
        let mut current = leader
            .get_current_snapshot()
            .await
            .expect("get_current_snapshot")
            .expect("a snapshot");
        let mut incoming = follower
            .begin_receiving_snapshot()
            .await
            .expect("begin_receiving_snapshot");
        let mut chunk = vec![0u8; 1024 * 1024];
        loop {
            let n = current.snapshot.read(&mut chunk).await.expect("read chunk");
            if n == 0 {
                break;
            }
            incoming.write_all(&chunk[..n]).await.expect("write chunk");
        }
        incoming.shutdown().await.expect("shutdown");
        follower
            .install_snapshot(&current.meta, incoming)
            .await
            .expect("install_snapshot");
    })
    .await;
    row("follower: receive (1 MiB chunks) and install", took, &peak);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    // The state machine's own account of each build (`lock_ms`: its hold of the lock).
    tracing_subscriber::fmt()
        .with_env_filter("shoal_controller::raft::state_machine=info")
        .without_time()
        .with_ansi(false)
        .with_target(false)
        .init();
    let (nodes, replicas) = if quick { (10, 1_000) } else { (1_000, 100_000) };
    let dir = tempfile::tempdir().expect("temp dir");
    let leader_dir = dir.path().join("leader");
    let follower_dir = dir.path().join("follower");

    let db = open_db(&leader_dir);
    let mut f = Feeder {
        sm: StateMachine::open(&db, &leader_dir).expect("open state machine"),
        next: 0,
    };
    let start = Instant::now();
    populate(&mut f, nodes, replicas).await;
    let applied = f.sm.handle().applied();
    let running = applied
        .state
        .tasks
        .values()
        .filter(|t| t.state == TaskState::Running)
        .count();
    println!(
        "state: {} nodes, {} tasks ({running} running), {} entries, built in {:.1} s",
        applied.state.nodes.len(),
        applied.state.tasks.len(),
        f.next,
        start.elapsed().as_secs_f64()
    );

    format_alone(&applied, dir.path());
    drop(applied);

    for _ in 0..3 {
        build_while_applying(&mut f).await;
    }

    let follower_db = open_db(&follower_dir);
    let mut follower = StateMachine::open(&follower_db, &follower_dir).expect("open follower");
    receive_and_install(&mut f.sm, &mut follower).await;
    assert_eq!(
        follower.handle().snapshot().tasks.len(),
        f.sm.handle().snapshot().tasks.len()
    );

    drop(follower);
    drop(follower_db);
    let (loaded, took, peak) = measured(async {
        let db = open_db(&follower_dir);
        let sm = StateMachine::open(&db, &follower_dir).expect("reopen");
        sm.handle().snapshot().tasks.len()
    })
    .await;
    row("restart: open the state machine (load)", took, &peak);
    assert_eq!(loaded, f.sm.handle().snapshot().tasks.len());
    println!("process peak RSS {} MiB", status_kib("VmHWM:") / 1024);
}
