//! A randomized fault test of the control plane: three controllers and two fake agents
//! while a client deploys and scales, and controllers are killed, restarted and
//! partitioned (never more than one of three at a time, so a majority can always make
//! progress). At the end everything is healed and every acknowledged change must be in
//! the state, and nothing that was never sent.
//!
//! Seeded: the seed is printed; `SHOAL_SEED=N` replays its sequence of faults and
//! writes (which controller leads, and so which one "kill the leader" hits, still depends
//! on timing). Bounded: `ROUNDS` rounds and at most `TIME_BOUND` of faults.
//!
//! The check, per field (a service's image; its replicas): the client is sequential
//! (one request at a time), so the final value must be the last acknowledged write's,
//! or that of a write whose outcome is unknown (an error other than a clean refusal)
//! sent after it. With a single sequential client Raft cannot order an earlier
//! unknown-outcome write after a later acknowledged one: the earlier entry is either in
//! the log before the later one, or it is truncated.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_tests::cluster::{eventually, is_not_leader, stack, Cluster, Options};
use tonic::Code;

const ROUNDS: usize = 50;
const TIME_BOUND: Duration = Duration::from_secs(75);
const STACKS: usize = 4;
const MAX_REPLICAS: u64 = 3;

/// What came of one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    /// Certainly not applied (refused before proposing, or rejected when applied).
    Refused,
    /// Unknown: it may or may not have committed.
    Unknown,
}

/// The writes to one field, in the order they were sent.
#[derive(Debug, Default)]
struct History<V> {
    writes: Vec<(V, Outcome, usize)>,
}

impl<V: Clone + PartialEq + std::fmt::Debug> History<V> {
    fn record(&mut self, v: V, o: Outcome, op: usize) {
        self.writes.push((v, o, op));
    }

    /// The values the field may hold at the end; `None` stands for "never written".
    fn allowed(&self) -> Vec<Option<V>> {
        let last_ack = self.writes.iter().rposition(|w| w.1 == Outcome::Acked);
        let mut allowed = match last_ack {
            Some(i) => vec![Some(self.writes[i].0.clone())],
            None => vec![None],
        };
        let after = last_ack.map_or(0, |i| i + 1);
        allowed.extend(
            self.writes[after..]
                .iter()
                .filter(|w| w.1 == Outcome::Unknown)
                .map(|w| Some(w.0.clone())),
        );
        allowed
    }
}

fn outcome(r: &Result<(), tonic::Status>) -> Outcome {
    match r {
        Ok(()) => Outcome::Acked,
        // A follower's refusal, or a name the leader did not know (checked on a
        // linearizable read before anything was proposed).
        Err(s) if is_not_leader(s) || s.code() == Code::NotFound => Outcome::Refused,
        Err(_) => Outcome::Unknown,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Killed,
    Isolated,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_never_lose_an_acknowledged_change() {
    let seed: u64 = match std::env::var("SHOAL_SEED") {
        Ok(s) => s.parse().expect("SHOAL_SEED must be a number"),
        Err(_) => rand::random(),
    };
    eprintln!("ha_random seed: {seed} (replay with SHOAL_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let opts = Options {
        propose_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let mut cl = Cluster::start_with(3, &["n1", "n2"], opts).await;
    let client = cl.client().with_bound(Duration::from_secs(8));

    let mut images: BTreeMap<usize, History<String>> = BTreeMap::new();
    let mut replicas: BTreeMap<usize, History<u64>> = BTreeMap::new();
    let mut fault: Option<(usize, Fault)> = None;
    let mut counts = BTreeMap::<&str, usize>::new();
    let mut op = 0usize;
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < ROUNDS && started.elapsed() < TIME_BOUND {
        rounds += 1;
        // One fault action per round, at most one controller faulty at a time.
        match fault {
            Some((i, kind)) if rng.gen_bool(0.5) => {
                match kind {
                    Fault::Killed => cl.restart(i).await,
                    Fault::Isolated => cl.heal(i),
                }
                *counts.entry("recover").or_default() += 1;
                fault = None;
            }
            Some(_) => {}
            None if rng.gen_bool(0.7) => {
                let target = if rng.gen_bool(0.5) {
                    cl.leader_within(Duration::from_secs(2))
                        .await
                        .unwrap_or_else(|| rng.gen_range(0..3))
                } else {
                    rng.gen_range(0..3)
                };
                match rng.gen_range(0..3) {
                    0 => {
                        cl.kill(target).await;
                        fault = Some((target, Fault::Killed));
                        *counts.entry("kill").or_default() += 1;
                    }
                    1 => {
                        cl.isolate(target);
                        fault = Some((target, Fault::Isolated));
                        *counts.entry("isolate").or_default() += 1;
                    }
                    _ => {
                        // A service manager restarting it: kill and start at once.
                        cl.kill(target).await;
                        cl.restart(target).await;
                        *counts.entry("bounce").or_default() += 1;
                    }
                }
            }
            None => {}
        }
        for _ in 0..rng.gen_range(1..=3) {
            op += 1;
            let k = rng.gen_range(0..STACKS);
            let n = rng.gen_range(0..=MAX_REPLICAS);
            if rng.gen_bool(0.6) {
                let image = format!("img:{k}-{op}");
                let r = client
                    .deploy(&stack(&format!("s{k}"), &image, n))
                    .await
                    .map(|_| ());
                let o = outcome(&r);
                images.entry(k).or_default().record(image, o, op);
                replicas.entry(k).or_default().record(n, o, op);
                *counts.entry(label("deploy", o)).or_default() += 1;
            } else {
                let r = client.scale(&format!("s{k}/web"), n).await.map(|_| ());
                // Scaling a service that does not exist changes nothing.
                let o = match &r {
                    Err(s) if s.code() == Code::FailedPrecondition && !is_not_leader(s) => {
                        Outcome::Refused
                    }
                    _ => outcome(&r),
                };
                replicas.entry(k).or_default().record(n, o, op);
                *counts.entry(label("scale", o)).or_default() += 1;
            }
        }
    }
    eprintln!(
        "{rounds} rounds, {op} writes in {:?}: {counts:?}",
        started.elapsed()
    );
    assert!(
        counts.get("deploy acked").copied().unwrap_or(0) > 0,
        "no deploy was acknowledged at all: {counts:?}"
    );

    // Heal everything and wait until the whole group is back.
    cl.heal_all();
    if let Some((i, Fault::Killed)) = fault {
        cl.restart(i).await;
    }
    let full = cl.client();
    eventually(
        Duration::from_secs(30),
        "three reachable voters",
        || async {
            let s = full.cluster_status().await.ok()?;
            (s.members.len() == 3 && s.members.iter().all(|m| m.reachable && m.role != "learner"))
                .then_some(())
        },
    )
    .await;

    let table = full.service_table().await.expect("read the final state");
    check(&table, &images, &replicas, seed);

    // Another leader must hold the same state: kill this one and read again.
    let leader = cl.wait_leader().await;
    cl.kill(leader).await;
    let again = full.service_table().await.expect("read after failover");
    assert_eq!(
        again, table,
        "seed {seed}: a new leader holds another state"
    );
    cl.restart(leader).await;

    // The data plane converges on the final state too.
    let want: u64 = table.values().map(|(_, r)| r).sum();
    eventually(
        Duration::from_secs(30),
        &format!("{want} running replicas"),
        || async {
            let rows = full.ps("").await.ok()?;
            let running = rows.iter().filter(|t| t.state == "running").count() as u64;
            let containers: usize = cl.agents.values().map(|a| a.fake.containers().len()).sum();
            (running == want && containers as u64 == want).then_some(())
        },
    )
    .await;
}

fn label(what: &str, o: Outcome) -> &'static str {
    match (what, o) {
        ("deploy", Outcome::Acked) => "deploy acked",
        ("deploy", Outcome::Refused) => "deploy refused",
        ("deploy", Outcome::Unknown) => "deploy unknown",
        (_, Outcome::Acked) => "scale acked",
        (_, Outcome::Refused) => "scale refused",
        (_, Outcome::Unknown) => "scale unknown",
    }
}

fn check(
    table: &BTreeMap<String, (String, u64)>,
    images: &BTreeMap<usize, History<String>>,
    replicas: &BTreeMap<usize, History<u64>>,
    seed: u64,
) {
    for key in table.keys() {
        let known = (0..STACKS).any(|k| key == &format!("s{k}/web"));
        assert!(known, "seed {seed}: service {key} was never deployed");
    }
    for k in 0..STACKS {
        let key = format!("s{k}/web");
        let row = table.get(&key);
        let image = row.map(|(i, _)| i.clone());
        let allowed = images.get(&k).map_or(vec![None], |h| h.allowed());
        assert!(
            allowed.contains(&image),
            "seed {seed}: {key} has image {image:?}, allowed {allowed:?}; history {:?}",
            images.get(&k)
        );
        // Replicas are only meaningful once the service exists.
        if let Some((_, n)) = row {
            let allowed: Vec<Option<u64>> = replicas.get(&k).map_or(vec![], |h| h.allowed());
            assert!(
                allowed.contains(&Some(*n)),
                "seed {seed}: {key} has {n} replicas, allowed {allowed:?}; history {:?}",
                replicas.get(&k)
            );
        }
    }
}

#[test]
fn the_checker_allows_the_last_ack_or_a_later_unknown_write_only() {
    let mut h = History::default();
    assert_eq!(h.allowed(), vec![None]);
    h.record(1, Outcome::Unknown, 1);
    assert_eq!(h.allowed(), vec![None, Some(1)]);
    h.record(2, Outcome::Acked, 2);
    h.record(3, Outcome::Refused, 3);
    assert_eq!(h.allowed(), vec![Some(2)]);
    h.record(4, Outcome::Unknown, 4);
    h.record(5, Outcome::Refused, 5);
    assert_eq!(h.allowed(), vec![Some(2), Some(4)]);
    h.record(6, Outcome::Acked, 6);
    assert_eq!(h.allowed(), vec![Some(6)]);
}
