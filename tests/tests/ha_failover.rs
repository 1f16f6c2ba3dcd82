//! High availability of the control plane, on the in-process cluster
//! ([`shoal_tests::cluster`]): three controllers and fake agents over real gRPC on
//! 127.0.0.1. Leader loss, restarts, partitions and membership changes must never lose
//! an acknowledged write, and agents must keep their containers through all of it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shoal_tests::cluster::{eventually, is_not_leader, leader_hint, stack, Client, Cluster};

/// The other two controllers of three.
fn others(i: usize) -> Vec<usize> {
    (0..3).filter(|j| *j != i).collect()
}

/// Deploys `name` (one service `web` on `image`) and panics unless it is acknowledged.
async fn deploy_ok(client: &Client, name: &str, image: &str, replicas: u64) {
    if let Err(e) = client.deploy(&stack(name, image, replicas)).await {
        panic!("deploy of {name} was not acknowledged: {e}");
    }
}

/// Waits until a linearizable read shows exactly `want` (stack/service -> image, replicas).
async fn wait_services(client: &Client, want: &BTreeMap<String, (String, u64)>, what: &str) {
    eventually(Duration::from_secs(20), what, || async {
        let have = client.service_table().await.ok()?;
        (&have == want).then_some(())
    })
    .await;
}

fn entry(name: &str, image: &str, replicas: u64) -> (String, (String, u64)) {
    (format!("{name}/web"), (image.to_string(), replicas))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_the_new_leader_accepts_a_deploy() {
    let mut cl = Cluster::start(3, &["n1"]).await;
    let old = cl.wait_leader().await;
    deploy_ok(&cl.client(), "before", "img:1", 1).await;

    let killed = Instant::now();
    cl.kill(old).await;
    // The survivors' client: the first deploy they acknowledge marks the recovery.
    let survivors = cl.client_of(&others(old));
    let reply = survivors.deploy(&stack("after", "img:2", 1)).await;
    let recovery = killed.elapsed();
    let reply = reply.unwrap_or_else(|e| panic!("no deploy accepted after the leader died: {e}"));
    assert_eq!(reply.stack, "after");
    eprintln!("leader loss to first accepted deploy: {recovery:?}");
    let new = cl.wait_leader().await;
    assert_ne!(new, old, "the killed controller cannot lead");
    assert!(
        recovery < Duration::from_secs(15),
        "recovery took {recovery:?}"
    );

    let want = BTreeMap::from([entry("before", "img:1", 1), entry("after", "img:2", 1)]);
    wait_services(&survivors, &want, "both deploys after failover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deploys_survive_the_loss_of_any_one_controller() {
    let mut cl = Cluster::start(3, &[]).await;
    let client = cl.client();
    let mut want = BTreeMap::new();
    deploy_ok(&client, "s0", "img:0", 1).await;
    want.extend([entry("s0", "img:0", 1)]);
    for lost in 0..3 {
        cl.kill(lost).await;
        let survivors = cl.client_of(&others(lost));
        wait_services(&survivors, &want, &format!("every deploy without {lost}")).await;
        let name = format!("s{}", lost + 1);
        deploy_ok(&survivors, &name, "img:1", 2).await;
        want.extend([entry(&name, "img:1", 2)]);
        cl.restart(lost).await;
        wait_services(
            &client,
            &want,
            &format!("every deploy after {lost} is back"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deploys_survive_a_full_restart() {
    let mut cl = Cluster::start(3, &["n1", "n2"]).await;
    let client = cl.client();
    let mut want = BTreeMap::new();
    for i in 0..3 {
        let name = format!("s{i}");
        deploy_ok(&client, &name, &format!("img:{i}"), i + 1).await;
        want.extend([entry(&name, &format!("img:{i}"), i + 1)]);
    }
    eventually(Duration::from_secs(20), "6 running tasks", || async {
        let rows = client.ps("").await.ok()?;
        (rows.iter().filter(|t| t.state == "running").count() == 6).then_some(())
    })
    .await;
    for i in 0..3 {
        cl.kill(i).await;
    }
    for i in 0..3 {
        cl.restart(i).await;
    }
    cl.wait_leader().await;
    wait_services(&client, &want, "every deploy after a full restart").await;
    let rows = client.ps("").await.expect("ps after restart");
    assert_eq!(
        rows.iter().filter(|t| t.state == "running").count(),
        6,
        "{rows:#?}"
    );
    deploy_ok(&client, "s3", "img:3", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_acknowledged_by_a_majority_survive_a_minority_partition() {
    let mut cl = Cluster::start(3, &[]).await;
    let client = cl.client();
    let leader = cl.wait_leader().await;
    let follower = others(leader)[0];
    let mut want = BTreeMap::new();

    // A follower is cut off: the leader and the other follower still commit.
    cl.isolate(follower);
    deploy_ok(&client, "while-follower-isolated", "img:1", 1).await;
    want.extend([entry("while-follower-isolated", "img:1", 1)]);
    cl.heal(follower);

    // Then the leader: the two others elect a new one, which must have the first write.
    cl.isolate(leader);
    let majority = cl.client_of(&others(leader));
    let new = eventually(
        Duration::from_secs(20),
        "a leader without the old one",
        || async { cl.leader().await.filter(|l| *l != leader) },
    )
    .await;
    wait_services(&majority, &want, "the first write on the new leader").await;
    deploy_ok(&majority, "while-leader-isolated", "img:2", 2).await;
    want.extend([entry("while-leader-isolated", "img:2", 2)]);
    cl.heal(leader);

    // After the heal every write is there, and the old leader follows the new one.
    wait_services(&client, &want, "both writes after heal").await;
    eventually(
        Duration::from_secs(20),
        "the old leader to follow",
        || async {
            let e = cl.status_of(leader).await.err()?;
            (is_not_leader(&e) && leader_hint(&e).is_some()).then_some(())
        },
    )
    .await;
    // Whoever leads next (maybe the healed old leader) still has every write.
    cl.kill(new).await;
    wait_services(&client, &want, "both writes after the new leader died").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_old_leader_cannot_acknowledge_a_write() {
    let cl = Cluster::start(3, &[]).await;
    let client = cl.client();
    deploy_ok(&client, "base", "img:1", 1).await;
    let old = cl.wait_leader().await;
    cl.isolate(old);

    // The old leader still answers its Control API, but can neither commit nor read.
    let mut direct = cl.direct(old).await.expect("the isolated leader answers");
    let ghost = serde_json::to_vec(&stack("ghost", "img:ghost", 1)).unwrap();
    let write = direct
        .deploy(shoal_proto::pb::DeployRequest {
            stack_json: ghost,
            ..Default::default()
        })
        .await;
    let err = write.expect_err("an isolated leader acknowledged a write");
    eprintln!("isolated old leader refused the write: {err}");
    let read = direct.services(shoal_proto::pb::ServicesRequest {}).await;
    assert!(read.is_err(), "an isolated leader served a read: {read:?}");

    // The majority goes on without it.
    let majority = cl.client_of(&others(old));
    deploy_ok(&majority, "real", "img:2", 1).await;
    cl.heal(old);

    // Once the old leader rejoined, the ghost write is not in the state: it was never
    // committed, and the new leader's log replaced it.
    eventually(
        Duration::from_secs(20),
        "the old leader to follow",
        || async {
            let e = cl.status_of(old).await.err()?;
            (is_not_leader(&e) && leader_hint(&e).is_some()).then_some(())
        },
    )
    .await;
    deploy_ok(&client, "after-heal", "img:3", 1).await;
    let want = BTreeMap::from([
        entry("base", "img:1", 1),
        entry("real", "img:2", 1),
        entry("after-heal", "img:3", 1),
    ]);
    wait_services(&client, &want, "the majority's writes and no ghost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_controller_can_no_longer_vote() {
    let mut cl = Cluster::start(3, &[]).await;
    let client = cl.client();
    let removed = cl.id(2);
    client
        .remove_controller(removed)
        .await
        .expect("remove controller 3");
    eventually(
        Duration::from_secs(20),
        "3 gone from cluster status",
        || async {
            let s = client.cluster_status().await.ok()?;
            let ids: Vec<u64> = s.members.iter().map(|m| m.id).collect();
            (ids == vec![cl.id(0), cl.id(1)]).then_some(())
        },
    )
    .await;
    deploy_ok(&client, "two-voters", "img:1", 1).await;

    // Controller 3 keeps running, but {1, 2} is the voter set: without 2 nothing commits.
    cl.kill(1).await;
    let rest = cl.client_of(&[0, 2]).with_bound(Duration::from_secs(6));
    for attempt in 0..2 {
        let write = rest.deploy(&stack("no-quorum", "img:x", 1)).await;
        assert!(
            write.is_err(),
            "attempt {attempt}: a write was acknowledged by controller 1 and the removed 3"
        );
    }

    // 2 comes back: the two voters commit again, and 3 is still not a member.
    cl.restart(1).await;
    let voters = cl.client_of(&[0, 1]);
    deploy_ok(&voters, "voters-back", "img:2", 1).await;
    let s = voters.cluster_status().await.expect("cluster status");
    let ids: Vec<u64> = s.members.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![cl.id(0), cl.id(1)], "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_keep_their_containers_across_failover() {
    let mut cl = Cluster::start(3, &["n1", "n2"]).await;
    let client = cl.client();
    deploy_ok(&client, "app", "img:1", 4).await;
    let running = |rows: &[shoal_proto::pb::TaskRow]| {
        rows.iter()
            .filter(|t| t.state == "running")
            .map(|t| (t.id.clone(), t.container.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let before = eventually(Duration::from_secs(20), "4 running replicas", || async {
        let r = running(&client.ps("app").await.ok()?);
        (r.len() == 4).then_some(r)
    })
    .await;
    let containers = |cl: &Cluster| -> BTreeMap<String, Vec<String>> {
        cl.agents
            .iter()
            .map(|(n, a)| {
                (
                    n.clone(),
                    a.fake.containers().into_iter().map(|c| c.id).collect(),
                )
            })
            .collect()
    };
    let creates = |cl: &Cluster| -> BTreeMap<String, usize> {
        cl.agents
            .iter()
            .map(|(n, a)| {
                let c = a
                    .fake
                    .calls()
                    .into_iter()
                    .filter(|c| matches!(c, shoal_agent::runtime::fake::Call::Create(_)));
                (n.clone(), c.count())
            })
            .collect()
    };
    let engines_before = containers(&cl);
    let creates_before = creates(&cl);
    assert_eq!(creates_before.values().sum::<usize>(), 4);

    let old = cl.wait_leader().await;
    cl.kill(old).await;
    let new = cl.wait_leader().await;
    assert_ne!(new, old);

    // The new leader reports the same tasks running in the same containers.
    let after = eventually(
        Duration::from_secs(20),
        "the same 4 replicas running",
        || async {
            let r = running(&client.ps("app").await.ok()?);
            (r == before).then_some(r)
        },
    )
    .await;
    assert_eq!(after, before);

    // Both agents have a session with the new leader: scaling up by two places one new
    // replica on each (spread), and nothing else is created, stopped or moved.
    client
        .scale("app/web", 6)
        .await
        .expect("scale after failover");
    let grown = eventually(Duration::from_secs(20), "6 running replicas", || async {
        let r = running(&client.ps("app").await.ok()?);
        (r.len() == 6).then_some(r)
    })
    .await;
    for (task, container) in &before {
        assert_eq!(grown.get(task), Some(container), "task {task} moved");
    }
    for (node, ids) in &engines_before {
        let now = containers(&cl);
        for id in ids {
            assert!(now[node].contains(id), "{node} lost container {id}");
        }
        assert_eq!(now[node].len(), ids.len() + 1, "{node}: {now:?}");
    }
    let creates_after = creates(&cl);
    for (node, n) in &creates_before {
        assert_eq!(creates_after[node], n + 1, "{node}: only the new replica");
    }
    let nodes = client.nodes().await.expect("nodes");
    assert!(nodes.iter().all(|n| n.status == "ready"), "{nodes:?}");
}

/// Regression: a stopping controller used to wait forever for its agent sessions (the
/// gRPC server's graceful shutdown waited for streams that never ended), and once that
/// was fixed, returned while openraft's detached tasks still held the sled lock, so a
/// controller restarted at once in the same process failed to open its data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_with_agents_stops_promptly_and_restarts_at_once() {
    let mut cl = Cluster::start(3, &["n1", "n2"]).await;
    let client = cl.client();
    for round in 0..3 {
        let leader = cl.wait_leader().await;
        let t = Instant::now();
        cl.kill(leader).await;
        let stopped = t.elapsed();
        cl.restart(leader).await;
        eventually(
            Duration::from_secs(20),
            "the restarted controller to serve",
            || async {
                assert!(
                    !cl.has_exited(leader),
                    "round {round}: controller {leader} failed to start again"
                );
                match cl.status_of(leader).await {
                    Ok(_) => Some(()),
                    Err(e) => is_not_leader(&e).then_some(()),
                }
            },
        )
        .await;
        eprintln!("round {round}: controller {leader} stopped in {stopped:?}");
        deploy_ok(&client, &format!("r{round}"), "img:1", 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_controllers_survive_the_loss_of_two_including_the_leader() {
    let mut cl = Cluster::start(5, &[]).await;
    let client = cl.client();
    deploy_ok(&client, "five", "img:1", 1).await;
    let leader = cl.wait_leader().await;
    let other = (0..5).find(|i| *i != leader).expect("a follower");
    cl.kill(leader).await;
    cl.kill(other).await;
    let survivors: Vec<usize> = (0..5).filter(|i| *i != leader && *i != other).collect();
    let three = cl.client_of(&survivors);
    deploy_ok(&three, "two-lost", "img:2", 1).await;
    let want = BTreeMap::from([entry("five", "img:1", 1), entry("two-lost", "img:2", 1)]);
    wait_services(&three, &want, "both deploys on the three survivors").await;

    // A third loss leaves no majority: nothing is acknowledged.
    cl.kill(survivors[0]).await;
    let two = cl.client_of(&survivors[1..]);
    let refused = two.deploy(&stack("no-quorum", "img:3", 1)).await;
    assert!(
        refused.is_err(),
        "two of five acknowledged a write: {refused:?}"
    );

    // The lost ones come back and catch up.
    for i in [leader, other, survivors[0]] {
        cl.restart(i).await;
    }
    wait_services(
        &cl.client(),
        &want,
        "the restarted controllers see both deploys",
    )
    .await;
}
